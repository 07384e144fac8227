"""RecBole's Pop, as :mod:`recbole_promptmm.compat` fixes it: an item's count is its number of training interactions.

RecBole 1.2.1 counted an item once per batch however often it appeared there (and counted the sampled negatives),
so its scores depended on ``train_batch_size``.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from recbole_promptmm import Config, create_dataset, data_preparation, get_model, run
from recbole_promptmm.checkpoint import load_checkpoint
from tests.conftest import write_toy_dataset

TRAIN = {"u1": ["a", "b", "c"], "u2": ["a", "b"], "u3": ["a", "d"], "u4": ["a", "b", "e"]}
"""The training interactions of the hand-made dataset: a 4, b 3, c 1, d 1, e 1."""
HAND_COUNT = {"a": 4, "b": 3, "c": 1, "d": 1, "e": 1}


def _write_split(folder, name: str = "hand") -> None:
    """A fixed train/valid/test split: TRAIN, then one valid and one test item per user (items f-i)."""
    folder.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id:token\n"
    rows = [f"{u}\t{i}" for u, items in TRAIN.items() for i in items]
    (folder / f"{name}.train.inter").write_text(header + "\n".join(rows) + "\n")
    (folder / f"{name}.valid.inter").write_text(header + "u1\tf\nu2\tg\nu3\th\nu4\ti\n")
    (folder / f"{name}.test.inter").write_text(header + "u1\tg\nu2\tf\nu3\ti\nu4\th\n")


def _trained_pop(data_path, name: str, batch_size: int):
    config = Config("Pop", name, config_dict={
        "data_path": str(data_path), "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"]}, "train_batch_size": batch_size, "metrics": ["Recall"],
        "topk": [2], "valid_metric": "Recall@2", "show_progress": False})
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    model = get_model("Pop")(config, train_data._dataset)
    for batch in train_data:
        model.calculate_loss(batch)
    return model, dataset


@pytest.mark.parametrize("batch_size", [2, 64])
def test_pop_counts_equal_a_hand_count(tmp_path, batch_size):
    """Every training interaction counted once, sampled negatives (label 0) not at all, whatever the batch size:
    at 64 the whole epoch is one batch in which a appears 4 times."""
    _write_split(tmp_path / "data" / "hand")
    model, dataset = _trained_pop(tmp_path / "data", "hand", batch_size)
    tokens = dataset.field2id_token["item_id"]
    counts = {tokens[i]: int(c) for i, c in enumerate(model.item_cnt[:, 0].tolist()) if i > 0 and c}
    assert counts == HAND_COUNT
    assert int(model.max_cnt) == 4
    assert Counter(i for items in TRAIN.values() for i in items) == HAND_COUNT


def test_pop_scores_do_not_depend_on_the_batch_size(tmp_path):
    """Two runs of Pop that differ only in train_batch_size (8: many batches; 4096: one) give the same counts and the
    same validation and test metrics."""
    write_toy_dataset(tmp_path / "data", n_users=40, n_items=15, per_user=6)  # items repeat within every batch
    config = {"data_path": str(tmp_path / "data"), "load_col": {"inter": ["user_id", "item_id"]},
              "metrics": ["Recall", "NDCG"], "topk": [5], "valid_metric": "Recall@5", "show_progress": False}
    small = run("Pop", "toy", config_dict={**config, "train_batch_size": 8})
    large = run("Pop", "toy", config_dict={**config, "train_batch_size": 4096})
    cnt_small = load_checkpoint(small["checkpoint"])["other_parameter"]["item_cnt"]
    cnt_large = load_checkpoint(large["checkpoint"])["other_parameter"]["item_cnt"]
    assert torch.equal(cnt_small, cnt_large)
    assert small["test_result"] == large["test_result"]
    assert small["best_valid_result"] == large["best_valid_result"]
