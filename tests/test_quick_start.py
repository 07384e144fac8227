"""End to end through run() and run_recbole.py: built-in models on today's stack, ml-100k and TikTok."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from recbole_promptmm import run
from tests.conftest import REPO, SHARED_DATA, requires_tiktok

FAST = {"epochs": 1, "show_progress": False, "train_batch_size": 4096}


@pytest.mark.parametrize("model", ["LightGCN", "NGCF"])
def test_builtin_graph_models_train_and_evaluate_on_ml100k(model, tmp_path):
    """LightGCN and NGCF need the scipy dok_matrix shim; reloading the best checkpoint needs torch.load fixes."""
    out = tmp_path / "result.json"
    result = run(model, "ml-100k", config_dict=FAST, result_json=str(out))
    assert json.loads(out.read_text())["test_result"] == result["test_result"]
    assert result["dataset"] == "ml-100k" and result["model"] == model
    assert 0.0 < result["test_result"]["recall@20"] <= 1.0
    assert set(result["best_valid_result"]) >= {"recall@10", "recall@20", "recall@50", "ndcg@20", "precision@20",
                                                  "hit@20"}
    assert result["config"]["modality_features"]["text"].startswith("builtin:")
    assert result["num_parameters"] > 0 and result["train_seconds"] > 0
    assert Path(result["checkpoint"]).is_file() and Path(result["log_file"]).is_file()


def test_same_seed_same_metrics():
    first = run("BPR", "ml-100k", config_dict=FAST, saved=False)
    second = run("BPR", "ml-100k", config_dict=FAST, saved=False)
    assert first["test_result"] == second["test_result"]


def test_bad_input_writes_nothing(tmp_path):
    with pytest.raises(Exception, match="missing.npy"):
        run("BPR", "ml-100k", config_dict={**FAST, "modality_features": {"text": "missing.npy"}},
            result_json=str(tmp_path / "r.json"))
    assert not (tmp_path / "r.json").exists()
    assert not (tmp_path / "saved").exists() and not (tmp_path / "log").exists()


@requires_tiktok
def test_tiktok_one_epoch(tmp_path):
    result = run("LightGCN", "tiktok", config_dict={**FAST, "data_path": str(SHARED_DATA)},
                 result_json=str(tmp_path / "r.json"))
    assert result["config"]["benchmark_filename"] == ["train", "valid", "test"]
    assert 0.0 < result["test_result"]["recall@20"] < 1.0


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "run_recbole.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_result_json(tmp_path):
    proc = _cli("--model=Pop", "--dataset=ml-100k", "--epochs=1", "--seed=7", "--show_progress=False",
                f"--result_json={tmp_path / 'out' / 'r.json'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "r.json").read_text())
    assert result["seed"] == 7 and result["config"]["epochs"] == 1 and result["model"] == "Pop"
    for key in ("best_valid_result", "test_result", "num_parameters", "train_seconds", "eval_seconds"):
        assert key in result
    assert list((tmp_path / "log" / "Pop").glob("*.log")), "RecBole's log file should be under ./log/Pop"


def test_cli_rejects_bad_arguments(tmp_path):
    proc = _cli("--model=NoSuchModel", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown model 'NoSuchModel'" in proc.stderr
    proc = _cli("--model=BPR", "epochs", cwd=tmp_path)
    assert proc.returncode == 2 and "'epochs' is not of the form --key=value" in proc.stderr


def test_wheel_ships_properties_and_data(tmp_path):
    """A regular (non-editable) install must find properties/ and the ml-100k text features."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("recbole_promptmm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "recbole_promptmm/properties/dataset/ml-100k.yaml" in names
    assert "recbole_promptmm/properties/dataset/tiktok.yaml" in names
    assert "recbole_promptmm/data/files/ml-100k/text_feat.npy" in names
