"""How much could a student learn from its teacher? (an analysis that prints figures; not a test)

    python benchmarks/teacher_headroom.py \
        --teacher='results/tiktok/runs/PromptMM/seed2020-*/saved/*-teacher.pth' \
        --other='results/tiktok/runs/PromptMMStudent/seed2020-*/saved/PromptMMStudent-*.pth'

Loads a trained teacher (PromptMM's ``*-teacher.pth`` or any multimodal model's checkpoint) and another model of the
same data and split (any checkpoint; typically the student trained without KD, which KD must improve on), each
rebuilt with its data by the package's ``load_run``, and prints as a markdown table, for validation and test,
through RecBole's evaluator: Recall@20 / NDCG@20 of each alone; the overlap of their top-20 lists (mean Jaccard,
training items excluded); and the ensemble ``a * z(teacher) + (1 - a) * z(other)`` (scores standardised per user)
for ``a`` on a grid, ``a`` chosen on validation and its test figure read once. The ensemble roughly bounds what
distilling this teacher into a model like ``other`` can add: if even it barely beats ``other``, the teacher knows
little that ``other`` does not.
"""

import pandas as pd
import torch
from recbole.trainer import Trainer

from _common import entry, load_runs, parser, top_k
from recbole_promptmm.serving.recommend import catalogue_of

GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


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
def top_overlap(first, second, data, catalogue, k: int = 20) -> float:
    """Mean Jaccard of the two models' top-k lists over the users ``data`` evaluates, history masked."""
    total, users = 0.0, 0
    for interaction, history_index, _, _ in data:
        for a, b in zip(*(top_k(m, interaction, history_index, catalogue, k) for m in (first, second))):
            inter = len(set(a.tolist()) & set(b.tolist()))
            total, users = total + inter / (2 * k - inter), users + 1
    return total / max(users, 1)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--teacher", required=True, help="teacher checkpoint (a path, or a glob with one match)")
    p.add_argument("--other", required=True, help="checkpoint of the model to compare with (idem)")
    args = p.parse_args()
    (_, teacher_run), (_, other_run) = load_runs((args.teacher, "--teacher", True), (args.other, "--other", True))
    seen = [r.train_data._dataset.inter_matrix(form="csr") for r in (teacher_run, other_run)]
    if seen[0].shape != seen[1].shape or (seen[0] != seen[1]).nnz:
        raise ValueError(f"--other {args.other} was trained on other data or another split than --teacher")
    teacher, other, config = teacher_run.model, other_run.model, teacher_run.config
    catalogue = catalogue_of(teacher_run)
    o_name = "PromptMM student" if type(other).__name__ == "PromptMM" else type(other).__name__

    def evaluate(split, what, model, data):
        result = Trainer(config, model).evaluate(data, load_best_model=False, show_progress=False)
        return {"split": split, "what": what, "recall@20": float(result["recall@20"]),
                "ndcg@20": float(result["ndcg@20"])}

    rows = []
    for split, data in (("valid", teacher_run.valid_data), ("test", teacher_run.test_data)):
        rows += [evaluate(split, "teacher alone", teacher, data), evaluate(split, f"{o_name} alone", other, data),
                 {"split": split, "what": "top-20 overlap (Jaccard)",
                  "recall@20": top_overlap(teacher, other, data, catalogue)}]
    blends = [evaluate("valid", f"ensemble a={a} (a: teacher weight)", Blend(teacher, other, a),
                       teacher_run.valid_data) for a in GRID]
    best = max(GRID, key=lambda a: blends[GRID.index(a)]["recall@20"])
    rows += blends + [evaluate("test", f"ensemble a={best} (chosen on valid)", Blend(teacher, other, best),
                               teacher_run.test_data)]
    print(f"teacher: {args.teacher}\nother ({o_name}): {args.other}\n")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f", tablefmt="github", missingval=""))


if __name__ == "__main__":
    entry(main)
