"""Shared fixtures: tiny datasets written by the tests themselves, and where ../shared/data lives."""

from __future__ import annotations

import os
import signal
from pathlib import Path

# One OpenMP/torch thread for every test, set before torch is imported: several tests assert exact equality of
# two runs in one process, which only one thread guarantees (test_resume.py).
os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import recbole_promptmm  # noqa: E402,F401  (applies the compatibility fixes)

torch.set_num_threads(1)

# Several tests stop a child process with SIGINT, as Ctrl-C does. A shell without job control starts a background
# command (`bash .ci/run &`) with SIGINT ignored, and an ignored signal stays ignored across exec: every child would
# then ignore Ctrl-C and those tests hang. Where pytest itself was started so, restore Python's own handler: the
# children then start with SIGINT at its default, whatever launched the suite.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROMPTMM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """RecBole writes ./log, ./log_tensorboard and ./saved relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def tiktok_dir() -> Path:
    return SHARED_DATA / "tiktok"


requires_tiktok = pytest.mark.skipif(
    not (SHARED_DATA / "tiktok" / "tiktok.train.inter").is_file(),
    reason=f"TikTok data not found at {SHARED_DATA}/tiktok (set PROMPTMM_SHARED_DATA to the folder holding tiktok/)",
)


def write_toy_dataset(root: Path, name: str = "toy", n_users: int = 30, n_items: int = 40, seed: int = 0,
                      per_user: int = 8) -> Path:
    """A small RecBole atomic dataset whose item tokens appear in shuffled order (so internal ids != tokens).

    Item tokens are 1..n_items; returns the dataset folder ``root/name``.
    """
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token"]
    for u in rng.permutation(n_users) + 1:
        for i in rng.choice(n_items, size=per_user, replace=False) + 1:
            lines.append(f"{u}\t{i}")
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    return folder


def token_features(n_rows: int, dim: int = 4) -> np.ndarray:
    """Row k = [k, k + 0.5, ...]: a feature row names its token by value."""
    return (np.arange(n_rows)[:, None] + 0.5 * np.arange(dim)[None, :]).astype(np.float32)


@pytest.fixture
def toy(tmp_path):
    """(data_path, dataset folder) of a toy dataset with an ``image`` feature file (row k = token k)."""
    folder = write_toy_dataset(tmp_path / "data")
    np.save(folder / "image_feat.npy", token_features(41))
    return tmp_path / "data", folder


@pytest.fixture
def mm_toy(tmp_path):
    """Data path of a toy dataset with random ``image`` (6-d) and ``audio`` (5-d) feature files."""
    folder = write_toy_dataset(tmp_path / "data", n_users=40, n_items=50, per_user=10)
    rng = np.random.default_rng(0)
    np.save(folder / "image_feat.npy", rng.normal(size=(51, 6)).astype(np.float32))
    np.save(folder / "audio_feat.npy", rng.normal(size=(51, 5)).astype(np.float32))
    return tmp_path / "data"


def toy_config(data_path: Path, **overrides):
    from recbole_promptmm import Config

    config = {
        "data_path": str(data_path),
        "load_col": {"inter": ["user_id", "item_id"]},
        "modality_features": {"image": "image_feat.npy"},
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["Recall", "NDCG"],
        "topk": [5],
        "valid_metric": "Recall@5",
        "show_progress": False,
        "epochs": 1,
    }
    config.update(overrides)
    return Config("BPR", "toy", config_dict=config)


TINY = {"embedding_size": 8, "epochs": 1, "train_batch_size": 64, "show_progress": False}


def toy_dict(data_path, **overrides) -> dict:
    """config_dict of a tiny run on the ``mm_toy`` dataset (two modalities, random 80/10/10 split)."""
    config = {
        "data_path": str(data_path),
        "load_col": {"inter": ["user_id", "item_id"]},
        "modality_features": {"image": "image_feat.npy", "audio": "audio_feat.npy"},
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["Recall", "NDCG"], "topk": [5], "valid_metric": "Recall@5", **TINY,
    }
    config.update(overrides)
    return config
