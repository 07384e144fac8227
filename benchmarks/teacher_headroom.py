"""How much could a student learn from its teacher? (an analysis that prints figures; not a test)

    python benchmarks/teacher_headroom.py --dataset=tiktok --data_path=../shared/data \
        --teacher=results/tiktok/runs/PromptMM/seed2020-*/saved/*-teacher.pth \
        --other=results/tiktok/runs/PromptMMStudent/seed2020-*/saved/PromptMMStudent-*.pth [--key=value ...]

Loads a trained teacher (PromptMM's ``*-teacher.pth`` or any multimodal model's checkpoint) and another model of the
same dataset (any checkpoint; typically the student trained without KD, which KD must improve on), and prints for
validation and test, through RecBole's evaluator: Recall@20 / NDCG@20 of each alone; the overlap of their top-20
lists (mean Jaccard, training items excluded); and the ensemble ``a * z(teacher) + (1 - a) * z(other)`` (scores
standardised per user) for ``a`` on a grid, ``a`` chosen on validation and its test figure read once. The ensemble
roughly bounds what distilling this teacher into a model like ``other`` can add: if even it barely beats
``other``, the teacher knows little that ``other`` does not.
"""

import torch

# first: applies the compatibility fixes
from _common import checkpoint_files, entry, load_data, load_model, options, top_k
from recbole.trainer import Trainer

GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def one_file(pattern: str, option: str) -> str:
    hits = checkpoint_files(pattern, option)
    if len(hits) != 1:
        raise FileNotFoundError(f"{option}: {pattern!r} must match one file, found {len(hits)}: {hits}")
    return hits[0]


class Blend(torch.nn.Module):
    """Full-sort scores ``a * z(first) + (1 - a) * z(second)`` for RecBole's evaluator."""

    def __init__(self, first: torch.nn.Module, second: torch.nn.Module, weight: float):
        super().__init__()
        self.first, self.second, self.weight = first, second, weight

    def full_sort_predict(self, interaction) -> torch.Tensor:
        a, b = (m.full_sort_predict(interaction).view(interaction.length, -1) for m in (self.first, self.second))
        a, b = ((s - s.mean(dim=1, keepdim=True)) / s.std(dim=1, keepdim=True).clamp_min(1e-12) for s in (a, b))
        return (self.weight * a + (1.0 - self.weight) * b).view(-1)


@torch.no_grad()
def top_overlap(first, second, data, k: int = 20) -> float:
    """Mean Jaccard of the two models' top-k lists over the users ``data`` evaluates, history masked."""
    total, users = 0.0, 0
    for interaction, history_index, _, _ in data:
        for a, b in zip(*(top_k(m, interaction, history_index, k) for m in (first, second))):
            inter = len(set(a.tolist()) & set(b.tolist()))
            total, users = total + inter / (2 * k - inter), users + 1
    return total / max(users, 1)


def main() -> None:
    args, overrides = options(__doc__, config_files=True,
                              teacher={"required": True, "help": "teacher checkpoint (glob with one match)"},
                              other={"required": True, "help": "checkpoint of the model to compare with (glob)"})
    teacher_file, other_file = one_file(args.teacher, "--teacher"), one_file(args.other, "--other")
    config, _, train_data, valid_data, test_data = load_data(args, overrides)
    _, teacher = load_model(teacher_file, train_data)
    o_name, other = load_model(other_file, train_data)
    o_name = o_name if o_name != "PromptMM" else "PromptMM student"

    def evaluate(model, data):
        result = Trainer(config, model).evaluate(data, load_best_model=False, show_progress=False)
        return float(result["recall@20"]), float(result["ndcg@20"])

    rows = []
    for split, data in (("valid", valid_data), ("test", test_data)):
        rows.append((split, "teacher alone", *evaluate(teacher, data)))
        rows.append((split, f"{o_name} alone", *evaluate(other, data)))
        rows.append((split, "top-20 overlap (Jaccard)", top_overlap(teacher, other, data), None))
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
    entry(main)
