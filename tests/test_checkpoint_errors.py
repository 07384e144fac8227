"""Every entry point that reads a checkpoint refuses a file that is not one (missing, truncated, random bytes, text,
a pickled object outside the allow-list, a dict without a checkpoint's keys) and a teacher checkpoint of the wrong
model: exit 2, one stderr line naming the file and what it holds, before the dataset loads, nothing written.
``export --result_json`` refuses a result file of another run, naming the first field that differs."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_promptmm import Config, run
from recbole_promptmm.checkpoint import CHECKPOINT_PROTOCOL, CheckpointError
from tests.conftest import REPO, write_toy_dataset
from tests.test_bad_input import TOY_DICT, _cli, _env, _toy_args, _written


def _fake_checkpoint(path: Path, model: str, data: Path) -> Path:
    """A checkpoint of ``model`` on the toy data as our trainers write it, without weights (the checks that run
    before the dataset loads read only its config)."""
    config = Config(model, "toy", config_dict={**TOY_DICT, "data_path": str(data),
                                               "modality_features": {"image": "image_feat.npy"}})
    torch.save({"config": config, "epoch": 0, "cur_step": 0, "best_valid_score": 0.0, "state_dict": {},
                "other_parameter": None, "optimizer": {}}, path, pickle_protocol=CHECKPOINT_PROTOCOL)
    return path


def _truncated(tmp_path: Path, data: Path) -> Path:
    whole = _fake_checkpoint(tmp_path / "whole.pth", "VBPR", data).read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[: len(whole) // 2])
    return tmp_path / "cut.pth"


def _random_bytes(tmp_path: Path, data: Path) -> Path:
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    return tmp_path / "random.pth"


def _text(tmp_path: Path, data: Path) -> Path:
    (tmp_path / "notes.pth").write_text("user_id\titem_id\n1\t2\n")
    return tmp_path / "notes.pth"


def _foreign_object(tmp_path: Path, data: Path) -> Path:
    torch.save({"config": argparse.Namespace(model="BPR"), "state_dict": {}}, tmp_path / "foreign.pth")
    return tmp_path / "foreign.pth"


def _no_checkpoint_keys(tmp_path: Path, data: Path) -> Path:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "weights.pth")
    return tmp_path / "weights.pth"


BAD_FILES = {
    # id: (make the file, what the message must say besides its path)
    "missing": (lambda tmp_path, data: tmp_path / "no" / "such.pth", ["does not exist"]),
    "truncated": (_truncated, ["is truncated", "zip archive"]),
    "random_bytes": (_random_bytes, ["is not a torch checkpoint", "4096 bytes of binary data"]),
    "text_file": (_text, ["is a text file", "'user_id\\titem_id'"]),
    "foreign_object": (_foreign_object, ["names argparse.Namespace", "no checkpoint holds"]),
    "no_checkpoint_keys": (_no_checkpoint_keys, ["without config and state_dict", "its keys: weights"]),
}


def _one_line(proc: subprocess.CompletedProcess, prog: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr[-3000:]
    assert "weights_only" not in lines[0] and "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def data(tmp_path) -> Path:
    folder = write_toy_dataset(tmp_path / "data")
    np.save(folder / "image_feat.npy", np.ones((41, 4), dtype=np.float32))
    return tmp_path / "data"


def _teacher_run(tmp_path: Path, data: Path, checkpoint: Path) -> subprocess.CompletedProcess:
    return _cli("--model=PromptMM", *_toy_args(f"--data_path={data}", "--modality_features={'image': 'image_feat.npy'}",
                                               f"--teacher_checkpoint={checkpoint}"), cwd=tmp_path)


# ------------------------------------------------------------------ run --teacher_checkpoint
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_teacher_checkpoint_that_is_no_checkpoint_is_refused_before_anything_runs(case, tmp_path, data):
    make, expected = BAD_FILES[case]
    path = make(tmp_path, data)
    proc = _teacher_run(tmp_path, data, path)
    message = _one_line(proc, "run_recbole.py")
    for part in [f"teacher_checkpoint {path}", *expected]:
        assert part in message, f"{part!r} not in {message!r}"
    assert proc.stdout == ""  # refused before the log's config dump
    assert _written(tmp_path) == []


def test_teacher_checkpoint_of_a_model_that_cannot_teach_suggests_only_teachers(tmp_path, data):
    path = _fake_checkpoint(tmp_path / "bpr.pth", "BPR", data)
    message = _one_line(_teacher_run(tmp_path, data, path), "run_recbole.py")
    assert f"teacher_checkpoint {path} holds a BPR model, which cannot be a teacher" in message
    assert "VBPR" in message and "PromptMMTeacher" in message
    assert "LightGCN" not in message and "PromptMMStudent" not in message and "--teacher_model=BPR" not in message
    assert _written(tmp_path) == []


def test_teacher_checkpoint_of_another_teacher_is_refused_before_the_config_dump(tmp_path, data):
    path = _fake_checkpoint(tmp_path / "vbpr.pth", "VBPR", data)
    proc = _teacher_run(tmp_path, data, path)
    message = _one_line(proc, "run_recbole.py")
    assert "holds a VBPR model, this run's teacher_model is PromptMMTeacher; pass --teacher_model=VBPR" in message
    assert proc.stdout == ""
    assert _written(tmp_path) == []


# ------------------------------------------------------------------ run --resume
@pytest.mark.parametrize("case", ["random_bytes", "truncated"])
def test_resume_file_that_is_no_checkpoint_is_refused(case, tmp_path, data):
    make, expected = BAD_FILES[case]
    path = make(tmp_path, data)
    message = _one_line(_cli(f"--resume={path}", cwd=tmp_path), "run_recbole.py")
    for part in [f"--resume: {path}", *expected]:
        assert part in message, f"{part!r} not in {message!r}"
    assert _written(tmp_path) == []


# ------------------------------------------------------------------ recommend / export --checkpoint
def _serving(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recbole_promptmm", command, *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("command,case", [("recommend", "random_bytes"), ("recommend", "text_file"),
                                          ("export", "truncated"), ("export", "foreign_object")])
def test_serving_checkpoint_that_is_no_checkpoint_is_refused(command, case, tmp_path, data):
    make, expected = BAD_FILES[case]
    path = make(tmp_path, data)
    out = tmp_path / ("top.csv" if command == "recommend" else "artefact")
    message = _one_line(_serving(command, f"--checkpoint={path}", f"--out={out}", cwd=tmp_path),
                        f"recbole-promptmm {command}")
    for part in [f"--checkpoint {path}", *expected]:
        assert part in message, f"{part!r} not in {message!r}"
    assert not out.exists() and _written(tmp_path) == []


# ------------------------------------------------------------------ library entry points
def test_load_data_and_model_refuses_before_recbole_writes_its_log(tmp_path, data):
    from recbole.quick_start import load_data_and_model

    path = _random_bytes(tmp_path, data)
    with pytest.raises(CheckpointError, match=f"model_file {path} is not a torch checkpoint"):
        load_data_and_model(str(path))
    assert _written(tmp_path) == []


# ------------------------------------------------------------------ export --result_json
@pytest.fixture(scope="module")
def bpr(tmp_path_factory) -> dict:
    """A 1-epoch BPR run on the toy data: its folder, checkpoint (absolute) and result file."""
    root = tmp_path_factory.mktemp("bpr")
    write_toy_dataset(root / "data")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        result = run("BPR", "toy", config_dict={**TOY_DICT, "data_path": str(root / "data")},
                     result_json=str(root / "result.json"))
    finally:
        os.chdir(cwd)
    return {"root": root, "checkpoint": str(root / result["checkpoint"]), "result": result}


def _edited_result(bpr: dict, tmp_path: Path, edit) -> Path:
    result = json.loads((bpr["root"] / "result.json").read_text())
    edit(result)
    (tmp_path / "result.json").write_text(json.dumps(result))
    return tmp_path / "result.json"


def _export_refusal(bpr: dict, tmp_path: Path, result_json: Path) -> str:
    """The one line of ``export`` refusing ``--result_json`` for the BPR run's checkpoint (exit 2, no artefact)."""
    out = tmp_path / "artefact"
    message = _one_line(_serving("export", f"--checkpoint={bpr['checkpoint']}", f"--out={out}",
                                 f"--result_json={result_json}", cwd=tmp_path), "recbole-promptmm export")
    assert not out.exists()
    return message


RESULT_MISMATCHES = {
    # id: (edit of the run's own result file, what the message must say)
    "model": (lambda r: r.update(model="LightGCN"), "model differs (the result file's checkpoints hold LightGCN; "
                                                    "this one holds BPR)"),
    "dataset": (lambda r: r.update(dataset="ml-100k"), "dataset differs ('ml-100k' in the result file, 'toy' in "
                                                       "the checkpoint)"),
    # another run of the same model and data: the 2-epoch result embedded in a 10-epoch artefact
    "config": (lambda r: r["config"].update(epochs=2), "config differs (epochs: 2 in the result file, 1 in the "
                                                       "checkpoint)"),
    "checkpoint": (lambda r: r.update(checkpoint="saved/BPR-another-run.pth"),
                   "checkpoint differs (the result file names saved/BPR-another-run.pth)"),
}


@pytest.mark.parametrize("case", list(RESULT_MISMATCHES))
def test_export_refuses_the_result_file_of_another_run(case, bpr, tmp_path):
    edit, expected = RESULT_MISMATCHES[case]
    result_json = _edited_result(bpr, tmp_path, edit)
    message = _export_refusal(bpr, tmp_path, result_json)
    assert f"--result_json {result_json} is not the result of --checkpoint {bpr['checkpoint']}: {expected}" in message


def test_export_refuses_a_result_file_that_is_not_json(bpr, tmp_path):
    (tmp_path / "result.json").write_text("best valid : {'recall@5': 0.2}\n")
    message = _export_refusal(bpr, tmp_path, tmp_path / "result.json")
    assert f"--result_json {tmp_path / 'result.json'} is not a JSON file" in message


def test_export_takes_the_metrics_of_its_own_result_file(bpr, tmp_path):
    from recbole_promptmm.serving.export import export

    meta = export(bpr["checkpoint"], str(tmp_path / "artefact"), result_json=str(bpr["root"] / "result.json"))
    assert meta["metrics"]["test"] == bpr["result"]["test_result"]
    assert meta["metrics"]["valid"] == bpr["result"]["best_valid_result"]
