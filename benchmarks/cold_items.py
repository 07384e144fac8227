"""Recall@20 on the users whose held-out item has no training interaction (prints figures; not a test).

    python benchmarks/cold_items.py --checkpoints='A.pth,B*.pth' [--split=test] [--k=20]

Each checkpoint (any of ours or RecBole's, PromptMM's ``-teacher.pth`` / ``-student.pth`` too; globs allowed) is
rebuilt with its own data and split (the package's ``load_run``). Every user of the split is ranked by the model's
own ``full_sort_predict`` (RecBole's history masked) and Recall@k is printed over all users and over the "cold"
users: those with a held-out item that has no training interaction (an ID-only model knows nothing of it; on TikTok
449 of 6,130 test and 223 of 3,051 validation users). Recall per user = hits / held-out items, averaged over users
(RecBole's definition: the "all users" figure is RecBole's Recall@k).
"""

import numpy as np
import torch

from _common import entry, load_runs, parser, top_k
from recbole_promptmm.serving.recommend import catalogue_of


@torch.no_grad()
def cold_recall(model, data, catalogue, k: int) -> tuple[float, float, int]:
    """(Recall@k over all users of ``data``, over its cold users, number of cold users); cold items: those the
    catalogue counts no training interaction of."""
    all_r, cold_r, cold_items = [], [], torch.from_numpy(catalogue.popularity == 0)
    for interaction, history_index, positive_u, positive_i in data:
        n, top = interaction.length, top_k(model, interaction, history_index, catalogue, k)
        hits = (top[positive_u] == positive_i.unsqueeze(1)).any(dim=1).float()
        per_user = torch.zeros(n).index_add_(0, positive_u, hits)
        count = torch.zeros(n).index_add_(0, positive_u, torch.ones_like(hits))
        is_cold = torch.zeros(n, dtype=torch.bool)
        is_cold[positive_u[cold_items[positive_i]]] = True
        recall, valid = per_user / count.clamp_min(1), count > 0
        all_r += recall[valid].tolist()
        cold_r += recall[valid & is_cold].tolist()
    return float(np.mean(all_r)), (float(np.mean(cold_r)) if cold_r else float("nan")), len(cold_r)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--checkpoints", required=True, help="comma-separated checkpoint paths or globs")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--k", type=int, default=20)
    args = p.parse_args()
    runs = load_runs((args.checkpoints, "--checkpoints", False))
    print(f"{args.split} Recall@{args.k}: all users / users whose held-out item has no training interaction")
    for path, run in runs:
        model = run.model.active() if hasattr(run.model, "active") else run.model
        data = run.valid_data if args.split == "valid" else run.test_data
        r_all, r_cold, n_cold = cold_recall(run.model, data, catalogue_of(run), args.k)
        print(f"{type(model).__name__:16s} {r_all:.4f} {r_cold:.4f} (cold users: {n_cold})  {path}", flush=True)


if __name__ == "__main__":
    entry(main)
