"""Recall@20 on the users whose held-out item has no training interaction (prints figures; not a test).

    python benchmarks/cold_items.py --dataset=tiktok --data_path=../shared/data --checkpoints='A.pth,B*.pth' \
        [--config_files=a.yaml] [--split=test] [--k=20] [--key=value ...]

For each checkpoint (any of ours or RecBole's, PromptMM's ``-teacher.pth`` / ``-student.pth`` too; globs allowed),
ranks every user of the split by the model's own ``full_sort_predict`` (training items masked) and prints Recall@k
over all users and over the "cold" users: those with a held-out item that has no training interaction (an ID-only
model knows nothing of it; on TikTok 449 of 6,130 test and 223 of 3,051 validation users). Recall per user = hits /
held-out items, averaged over users (RecBole's definition: the "all users" figure is RecBole's Recall@k).
"""

import numpy as np
import torch

from _common import checkpoint_files, entry, load_data, load_model, options, top_k


@torch.no_grad()
def cold_recall(model, data, cold_items: torch.Tensor, k: int) -> tuple[float, float, int]:
    """(Recall@k over all users of ``data``, over its cold users, number of cold users)."""
    all_r, cold_r = [], []
    for interaction, history_index, positive_u, positive_i in data:
        n, top = interaction.length, top_k(model, interaction, history_index, k)
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
    args, overrides = options(__doc__, config_files=True,
                              checkpoints={"required": True, "help": "comma-separated checkpoint paths or globs"},
                              split={"choices": ("valid", "test"), "default": "test"}, k={"type": int, "default": 20})
    files = checkpoint_files(args.checkpoints, "--checkpoints")
    _, _, train_data, valid_data, test_data = load_data(args, overrides)
    data = valid_data if args.split == "valid" else test_data
    cold_items = torch.from_numpy(np.asarray(train_data._dataset.inter_matrix(form="csr").sum(axis=0)).ravel() == 0)
    print(f"{args.split} Recall@{args.k}: all users / users whose held-out item has no training interaction")
    for path in files:
        name, model = load_model(path, train_data)
        label = type(model.active()).__name__ if name == "PromptMM" else name
        r_all, r_cold, n_cold = cold_recall(model, data, cold_items, args.k)
        print(f"{label:16s} {r_all:.4f} {r_cold:.4f} (cold users: {n_cold})  {path}", flush=True)


if __name__ == "__main__":
    entry(main)
