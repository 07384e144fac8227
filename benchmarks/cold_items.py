"""Recall@20 on the users whose held-out item has no training interaction (prints figures; not a test).

    python benchmarks/cold_items.py --dataset=tiktok --data_path=../shared/data --checkpoints='A.pth,B*.pth' \
        [--config_files=a.yaml] [--split=test] [--k=20] [--key=value ...]

For each checkpoint (any of ours or RecBole's; PromptMM's ``-teacher.pth`` / ``-student.pth`` files too; globs
allowed), scores every user of the split with the model's own ``full_sort_predict``, masks the user's training
items, and prints Recall@k over all users of the split and over the "cold" users alone: those holding at least one
held-out item that has no training interaction (an ID-only model has learned nothing about such an item). On
TikTok 449 of 6,130 test users (223 of 3,051 validation users) are cold. Recall per user = hits / held-out items,
averaged over users (RecBole's definition), so the "all users" figure equals RecBole's Recall@k.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from teacher_headroom import load_model  # noqa: E402

import recbole_promptmm  # noqa: E402,F401  (compatibility fixes)
from recbole_promptmm import Config, create_dataset, data_preparation  # noqa: E402


def cold_recall(model, data, cold_items: torch.Tensor, k: int) -> tuple[float, float, int]:
    """(Recall@k over all users of ``data``, over its cold users, number of cold users)."""
    all_r, cold_r = [], []
    with torch.no_grad():
        for interaction, history_index, positive_u, positive_i in data:
            n = interaction.length
            scores = model.full_sort_predict(interaction).view(n, -1).clone()
            scores[:, 0] = -torch.inf
            if history_index is not None:
                scores[history_index] = -torch.inf
            top = scores.topk(k, dim=1).indices
            hit = torch.zeros_like(scores, dtype=torch.bool)
            hit[torch.arange(n).unsqueeze(1), top] = True
            hits = hit[positive_u, positive_i].float()
            per_user = torch.zeros(n).index_add_(0, positive_u, hits)
            count = torch.zeros(n).index_add_(0, positive_u, torch.ones_like(hits))
            is_cold = torch.zeros(n, dtype=torch.bool)
            is_cold[positive_u[cold_items[positive_i]]] = True
            recall = per_user / count.clamp_min(1)
            valid = count > 0
            all_r += recall[valid].tolist()
            cold_r += recall[valid & is_cold].tolist()
    return float(np.mean(all_r)), (float(np.mean(cold_r)) if cold_r else float("nan")), len(cold_r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="tiktok")
    parser.add_argument("--checkpoints", required=True, help="comma-separated checkpoint paths or globs")
    parser.add_argument("--config_files", default=None, help="yaml files of the dataset, comma-separated")
    parser.add_argument("--split", choices=("valid", "test"), default="test")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    files = args.config_files.split(",") if args.config_files else None
    config = Config("PromptMM", args.dataset, config_file_list=files, config_dict={"show_progress": False},
                    cmd_args=overrides)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    data = valid_data if args.split == "valid" else test_data
    degree = np.asarray(train_data._dataset.inter_matrix(form="csr").sum(axis=0)).ravel()
    cold_items = torch.from_numpy(degree == 0)
    paths = [p for pattern in args.checkpoints.split(",") for p in sorted(glob.glob(pattern))]
    print(f"{args.split} Recall@{args.k}: all users / users whose held-out item has no training interaction")
    for path in paths:
        name, model = load_model(path, train_data)
        label = type(model.active()).__name__ if name == "PromptMM" else name
        r_all, r_cold, n_cold = cold_recall(model, data, cold_items, args.k)
        print(f"{label:16s} {r_all:.4f} {r_cold:.4f} (cold users: {n_cold})  {path}", flush=True)


if __name__ == "__main__":
    main()
