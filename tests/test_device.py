"""The run names its device: the first console line and the summary say ``on cpu`` / ``on cuda:<i>``; asking for a GPU
where torch finds none is one warning line saying that the run is on the CPU (RecBole would run there silently)."""

from __future__ import annotations

import logging
import subprocess
import sys

import torch

from recbole_promptmm import run
from tests.conftest import REPO
from tests.test_bad_input import _env
from tests.test_run_summary import TOY

DEVICE = "cuda:0" if torch.cuda.is_available() else "cpu"


def test_use_gpu_on_the_command_line_names_the_device(toy, tmp_path):
    data_path, _ = toy
    proc = subprocess.run([sys.executable, str(REPO / "run_recbole.py"), "--model=Pop", "--dataset=toy",
                           f"--data_path={data_path}", *TOY, "--use_gpu=True"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert f"Pop on toy, on {DEVICE}: config, data and model in log/Pop/" in lines[0]
    summary = next(line for line in lines if "Summary: " in line)
    assert summary.endswith(f"Summary: Pop on toy, seed 2020, on {DEVICE}")
    warnings = [line for line in lines if "asks for a GPU" in line]
    if DEVICE == "cpu":
        assert len(warnings) == 1
        assert warnings[0].endswith("--use_gpu=True asks for a GPU, but torch finds no CUDA device on this machine: "
                                    "the run is on cpu")
    else:
        assert warnings == []


def test_device_in_config_dict_and_result(toy, caplog):
    """``device: cuda`` in config_dict is a request too (RecBole overwrites the key with the device it picks); RecBole's
    default ``use_gpu: True`` is none, and ``use_gpu: False`` keeps the run on the CPU."""
    data_path, _ = toy
    config = {"data_path": str(data_path), "load_col": {"inter": ["user_id", "item_id"]}, "metrics": ["Recall"],
              "topk": [5], "valid_metric": "Recall@5", "show_progress": False}
    with caplog.at_level(logging.INFO):
        asked = run("Pop", "toy", config_dict={**config, "device": "cuda"})
    assert asked["device"] == DEVICE
    notes = [r.getMessage() for r in caplog.records if "asks for a GPU" in r.getMessage()]
    assert notes == ([] if DEVICE != "cpu" else
                     ["device: cuda in config_dict asks for a GPU, but torch finds no CUDA device on this machine: "
                      "the run is on cpu"])
    caplog.clear()
    with caplog.at_level(logging.INFO):
        refused = run("Pop", "toy", config_dict={**config, "use_gpu": False})
    assert refused["device"] == "cpu"
    assert not [r for r in caplog.records if "asks for a GPU" in r.getMessage()]
    assert any(r.getMessage().startswith("Summary: Pop on toy, seed 2020, on cpu") for r in caplog.records)
