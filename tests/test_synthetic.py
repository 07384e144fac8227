"""Synthetic scaling data (recbole_promptmm/data/synthetic.py): reproducible, power-law shaped, features that carry
the interactions' signal, and readable by the package as ``synthetic-<s>x``."""

from __future__ import annotations

import filecmp
import os

import numpy as np
import torch

from recbole_promptmm import Config, create_dataset, run
from recbole_promptmm.data.synthetic import SPLITS, dataset_name, generate, sizes, write_dataset

TINY = 0.04  # 1,862 users, 1,342 items, 2,749 interactions


def _files(folder: str) -> list[str]:
    name = os.path.basename(folder)
    return [f"{name}.{part}.inter" for part in SPLITS] + ["visual_feat.npy", "acoustic_feat.npy"]


def test_sizes_grow_as_documented():
    assert sizes(1) == (9308, 6710, 68722)
    assert sizes(64) == (9308 * 8, 6710 * 8, 68722 * 64)  # users and items x sqrt(64), interactions x 64
    assert dataset_name(16) == "synthetic-16x" and dataset_name(TINY) == "synthetic-0.04x"


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a, b, c = (write_dataset(str(tmp_path / d), TINY, seed) for d, seed in (("a", 3), ("b", 3), ("c", 4)))
    names = _files(a)
    assert filecmp.cmpfiles(a, b, names, shallow=False)[0] == names
    assert filecmp.cmpfiles(a, c, names, shallow=False)[0] == []


def test_power_law_counts_and_split():
    data = generate(1, seed=0)
    users, items, split = data["user"], data["item"], data["split"]
    assert len(users) == 68722 and users.max() + 1 == 9308 and items.max() < 6710
    assert len(np.unique(users * 6710 + items)) == len(users)  # no repeated pair
    item_counts = np.sort(np.bincount(items, minlength=6710))[::-1]
    user_counts = np.sort(np.bincount(users, minlength=9308))[::-1]
    assert item_counts[:671].sum() > 0.35 * len(items)   # top 10% of items: > 35% of interactions (uniform: 10%)
    assert user_counts[:931].sum() > 0.3 * len(users)    # top 10% of users likewise
    assert item_counts[0] > 20 * np.median(item_counts)  # a heavy head
    assert np.all(np.bincount(users[split == 0], minlength=9308) > 0)  # every user has a train interaction
    shares = np.bincount(split) / len(split)
    assert 0.84 < shares[0] < 0.9 and 0.03 < shares[1] < 0.06 and 0.06 < shares[2] < 0.11


def _cosine(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return float(np.mean(np.sum(unit[a] * unit[b], axis=1)))


def test_features_are_more_alike_for_items_the_same_users_consume():
    data = generate(1, seed=0)
    rng = np.random.default_rng(0)
    users, items = data["user"], data["item"]
    # co-consumed pairs: consecutive interactions of one user (users are grouped)
    same = np.flatnonzero(users[1:] == users[:-1])
    a, b = items[same], items[same + 1]
    r1, r2 = rng.integers(6710, size=len(a)), rng.integers(6710, size=len(a))
    for name, x in data["features"].items():
        x = x.astype(np.float64)
        co, random = _cosine(x, a, b), _cosine(x, r1, r2)
        assert co > random + 0.05, (name, co, random)  # visual about 0.2, acoustic 0.07 against 0.00
    assert _cosine(data["features"]["visual"].astype(np.float64), a, b) > \
        _cosine(data["features"]["acoustic"].astype(np.float64), a, b)  # acoustic is the noisier modality


def test_tiny_scale_loads_and_trains(tmp_path):
    write_dataset(str(tmp_path), TINY, seed=0)
    name = dataset_name(TINY)
    config = Config("FREEDOM", name, config_dict={"data_path": str(tmp_path)})
    assert config["benchmark_filename"] == ["train", "valid", "test"]  # properties/dataset/synthetic.yaml
    dataset = create_dataset(config)
    n_users, n_items, _ = sizes(TINY)
    assert dataset.item_num <= n_items + 1 and dataset.user_num == n_users + 1
    features = dataset.modality_features
    assert set(features) == {"visual", "acoustic"} and features["visual"].shape == (dataset.item_num, 128)
    tokens = dataset.field2id_token["item_id"]
    raw = np.load(tmp_path / name / "visual_feat.npy").astype(np.float32)
    assert torch.allclose(features["visual"][5], torch.from_numpy(raw[int(tokens[5])]))
    result = run("FREEDOM", name, config_dict={"data_path": str(tmp_path), "epochs": 1, "embedding_size": 8,
                                               "show_progress": False}, saved=False)
    assert result["best_valid_result"]["recall@20"] >= 0
