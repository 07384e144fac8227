"""How much could a student learn from its teacher? (an analysis that prints figures; not a test)

    python benchmarks/teacher_headroom.py --dataset=tiktok --data_path=../shared/data \
        --teacher=results/tiktok/runs/PromptMM/seed2020-*/saved/*-teacher.pth \
        --other=results/tiktok/runs/PromptMMStudent/seed2020-*/saved/PromptMMStudent-*.pth [--key=value ...]

Loads a trained teacher (a ``*-teacher.pth`` of PromptMM, or a checkpoint of any multimodal model) and another trained
model of the same dataset (any RecBole or recbole_promptmm checkpoint; typically the student trained without KD,
i.e. the model KD must improve on), then prints, for validation and test, through RecBole's evaluator:

* Recall@20 / NDCG@20 of each model alone;
* how much the two top-20 lists overlap (mean Jaccard over the users of the split, training items excluded);
* the score ensemble ``a * z(teacher) + (1 - a) * z(other)`` (scores standardised per user), for ``a`` on a
  grid, with ``a`` chosen on validation only and its test figure read once.

The ensemble is a rough upper estimate of what distilling this teacher into a model like ``other`` can add:
if even the ensemble of the two barely beats ``other``, the teacher knows little that ``other`` does not.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import recbole_promptmm  # noqa: E402,F401  (compatibility fixes)
from recbole.data.interaction import Interaction  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402

from recbole_promptmm import Config, create_dataset, data_preparation, get_model  # noqa: E402
from recbole_promptmm.compat import load_checkpoint  # noqa: E402

GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def one_file(pattern: str) -> str:
    hits = sorted(glob.glob(pattern))
    if len(hits) != 1:
        raise SystemExit(f"{pattern!r}: expected one file, found {len(hits)}: {hits}")
    return hits[0]


def standardise(scores: torch.Tensor) -> torch.Tensor:
    return (scores - scores.mean(dim=1, keepdim=True)) / scores.std(dim=1, keepdim=True).clamp_min(1e-12)


class Blend(torch.nn.Module):
    """Full-sort scores ``a * z(first) + (1 - a) * z(second)`` for RecBole's evaluator."""

    def __init__(self, first: torch.nn.Module, second: torch.nn.Module, weight: float):
        super().__init__()
        self.first, self.second, self.weight = first, second, weight

    def full_sort_predict(self, interaction) -> torch.Tensor:
        n = interaction.length
        a = standardise(self.first.full_sort_predict(interaction).view(n, -1))
        b = standardise(self.second.full_sort_predict(interaction).view(n, -1))
        return (self.weight * a + (1.0 - self.weight) * b).view(-1)


def top_overlap(first, second, data, uid_field: str, k: int = 20) -> float:
    """Mean Jaccard of the two models' top-k lists over the users ``data`` evaluates, history masked."""
    total, users = 0.0, 0
    with torch.no_grad():
        for batch in data:
            interaction, history_index, _, _ = batch
            lists = []
            for model in (first, second):
                scores = model.full_sort_predict(interaction).view(interaction.length, -1).clone()
                scores[:, 0] = -torch.inf
                scores[history_index] = -torch.inf
                lists.append(scores.topk(k, dim=1).indices)
            for a, b in zip(*lists):
                inter = len(set(a.tolist()) & set(b.tolist()))
                total += inter / (2 * k - inter)
                users += 1
    return total / max(users, 1)


def load_model(path: str, train_data):
    """The model of a checkpoint, built from the config saved in it (a teacher file of PromptMM holds its teacher
    model's own config); the ``-student.pth`` file of PromptMM gives the PromptMM model serving its student."""
    saved = load_checkpoint(path)
    config = saved["config"]
    name = config["model"]
    model = get_model(name)(config, train_data._dataset)
    state = saved["state_dict"]
    if name == "PromptMM" and not any(k.startswith("teacher.") for k in state):  # a *-student.pth file
        model.student.load_state_dict(state)
        model.set_stage("student")
    else:
        model.load_state_dict(state)
        model.load_other_parameter(saved.get("other_parameter"))
    model.eval()
    return name, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="tiktok")
    parser.add_argument("--teacher", required=True, help="teacher checkpoint (glob with one match)")
    parser.add_argument("--other", required=True, help="checkpoint of the model to compare with (glob)")
    parser.add_argument("--config_files", default=None, help="yaml files of the dataset, comma-separated")
    parser.add_argument("--threads", type=int, default=1)
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)

    files = args.config_files.split(",") if args.config_files else None
    config = Config("PromptMM", args.dataset, config_file_list=files, config_dict={"show_progress": False},
                    cmd_args=overrides)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    t_name, teacher = load_model(one_file(args.teacher), train_data)
    o_name, other = load_model(one_file(args.other), train_data)
    o_name = o_name if o_name != "PromptMM" else "PromptMM student"

    def evaluate(model, data):
        trainer = Trainer(config, model)
        result = trainer.evaluate(data, load_best_model=False, show_progress=False)
        return float(result["recall@20"]), float(result["ndcg@20"])

    rows = []
    for split, data in (("valid", valid_data), ("test", test_data)):
        rows.append((split, "teacher alone", *evaluate(teacher, data)))
        rows.append((split, f"{o_name} alone", *evaluate(other, data)))
        rows.append((split, "top-20 overlap (Jaccard)", top_overlap(teacher, other, data, dataset.uid_field), None))
    blends = {a: evaluate(Blend(teacher, other, a), valid_data) for a in GRID}
    best = max(GRID, key=lambda a: blends[a][0])
    print(f"teacher: {args.teacher}\nother ({o_name}): {args.other}\n")
    print(f"{'split':6s} {'what':40s} {'recall@20':>10s} {'ndcg@20':>10s}")
    for split, what, r, n in rows:
        print(f"{split:6s} {what:40s} {r:10.4f} {'' if n is None else f'{n:10.4f}'}")
    for a in GRID:
        print(f"valid  {f'ensemble a={a} (a: teacher weight)':40s} {blends[a][0]:10.4f} {blends[a][1]:10.4f}")
    r, n = evaluate(Blend(teacher, other, best), test_data)
    print(f"test   {f'ensemble a={best} (chosen on valid)':40s} {r:10.4f} {n:10.4f}")


if __name__ == "__main__":
    main()
