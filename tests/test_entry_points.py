"""RecBole's own entry points on our checkpoints and models, safe checkpoint loading, NCL, and the console command.

* ``recbole.quick_start.load_data_and_model`` (RecBole's ``torch.load`` with torch's default ``weights_only=True``,
  RecBole's ``get_model`` and ``create_dataset``) rebuilds a saved model that reproduces the test metrics of the
  run that saved it, for a built-in model and for ours.
* Checkpoints hold nothing outside the allow-list: ``torch.load(weights_only=True)`` reads them, and a file naming
  another global is refused (by torch and by ``checkpoint.load_checkpoint``, whatever its pickle protocol).
* ``python -m recbole_promptmm run`` works, ends with 130 and one line on Ctrl-C, and a non-editable install ships
  a working ``recbole-promptmm``.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from recbole.quick_start import load_data_and_model, run_recbole
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_promptmm import run
from recbole_promptmm.checkpoint import load_checkpoint, pickle_protocol
from recbole_promptmm.data import MultimodalDataset
from tests.conftest import REPO
from tests.conftest import toy_dict as conftest_toy_dict



def toy_dict(data_path, **overrides) -> dict:
    return conftest_toy_dict(data_path, **{"topk": [5, 10], **overrides})


def recbole_test_result(model_file: str) -> tuple[dict, object, object]:
    """RecBole's own way back: load_data_and_model, then RecBole's Trainer on the returned test data."""
    config, model, dataset, _, _, test_data = load_data_and_model(model_file)
    trainer = recbole_get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    return {k: float(v) for k, v in result.items()}, model, dataset


@pytest.mark.parametrize("model_name", ["LightGCN", "PromptMMStudent", "PromptMMTeacher"])
def test_load_data_and_model_reproduces_test_metrics(mm_toy, model_name):
    result = run(model_name, "toy", config_dict=toy_dict(mm_toy))
    assert pickle_protocol(result["checkpoint"]) == 2
    torch.load(result["checkpoint"], weights_only=True)  # nothing outside the allow-list
    test_result, model, dataset = recbole_test_result(result["checkpoint"])
    assert type(model).__name__ == model_name
    assert test_result == result["test_result"]
    if model_name == "PromptMMTeacher":  # RecBole's create_dataset builds ours for a multimodal model
        assert isinstance(dataset, MultimodalDataset) and set(dataset.modality_features) == {"image", "audio"}


def test_promptmm_checkpoint_and_student_file(mm_toy):
    """The whole PromptMM checkpoint and its -student.pth file (a PromptMMStudent checkpoint) both go through
    RecBole's load_data_and_model and score as the run's student did."""
    result = run("PromptMM", "toy", config_dict=toy_dict(mm_toy))
    test_result, model, _ = recbole_test_result(result["checkpoint"])
    assert type(model).__name__ == "PromptMM" and test_result == result["test_result"]

    assert pickle_protocol(result["student_checkpoint"]) == 2
    assert load_checkpoint(result["student_checkpoint"])["config"]["model"] == "PromptMMStudent"
    test_result, student, _ = recbole_test_result(result["student_checkpoint"])
    assert type(student).__name__ == "PromptMMStudent" and test_result == result["test_result"]


class _Opens:
    """Unpickles as ``open(target, "w")``: a stand-in for code that a checkpoint must never run."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return builtins.open, (self.target, "w")


@pytest.mark.parametrize("protocol", [2, 4])
def test_foreign_globals_are_refused(tmp_path, protocol):
    path, target = tmp_path / "evil.pth", tmp_path / "created"
    torch.save({"state_dict": {}, "payload": _Opens(target)}, path, pickle_protocol=protocol)
    with pytest.raises(Exception, match="open"):
        load_checkpoint(path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    assert not target.exists()


def test_run_recbole_reloads_its_best_model(mm_toy):
    """RecBole's run_recbole saves a checkpoint and loads it back (weights_only) for its test evaluation."""
    result = run_recbole("BPR", "toy", config_dict=toy_dict(mm_toy, modality_features=None))
    assert 0.0 <= result["test_result"]["recall@10"] <= 1.0
    (checkpoint,) = Path("saved").glob("BPR-*.pth")
    torch.load(checkpoint, weights_only=True)


def test_ncl_runs_one_epoch(mm_toy):
    """NCL needs faiss (faiss-cpu); its clusters must not outnumber the users (ml-100k: 943 < its default 1000)."""
    result = run("NCL", "toy", config_dict=toy_dict(mm_toy, num_clusters=10))
    assert 0.0 <= result["test_result"]["recall@10"] <= 1.0
    torch.load(result["checkpoint"], weights_only=True)
    assert recbole_test_result(result["checkpoint"])[0] == result["test_result"]


# ------------------------------------------------------------------------------------------------- command
def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def test_cli_dispatch(capsys):
    from recbole_promptmm.cli import main

    assert main([]) == 2
    assert main(["bogus"]) == 2 and "unknown command 'bogus'" in capsys.readouterr().err
    assert main(["--help"]) == 0 and "run,compare,tune" in capsys.readouterr().out
    assert main(["compare", "--list_ablations"]) == 0 and "with_list_kd" in capsys.readouterr().out
    assert main(["tune", "--model=BPR"]) == 2 and "missing --dataset" in capsys.readouterr().err
    assert main(["run", "--model=NoSuchModel"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recbole-promptmm run: error: ") and "NoSuchModel" in err and err.count("\n") == 1


def test_python_m_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "recbole_promptmm", "run", "--model=BPR", "--dataset=ml-100k",
                           "--epochs=1", f"--result_json={tmp_path / 'r.json'}"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["model"] == "BPR" and result["config"]["epochs"] == 1
    assert Path(tmp_path, result["checkpoint"]).is_file()


def test_ctrl_c_ends_run_with_130_and_one_line(mm_toy, tmp_path):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in toy_dict(mm_toy).items() if k != "modality_features"}))
    out, err_file = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as stdout, open(err_file, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "recbole_promptmm", "run", "--model=BPR", "--dataset=toy",
                                 f"--config_files={config}", "--epochs=100000", "--stopping_step=100000"],
                                cwd=tmp_path, env=_env(), stdout=stdout, stderr=stderr)
        deadline = time.monotonic() + 120
        try:  # interrupt once the first resume file is there (written atomically at the start of epoch 1 on): no
            # race with the end of epoch 0, where there is nothing to resume from yet
            while not list((tmp_path / "saved").glob("BPR-*-resume.pth")):
                assert proc.poll() is None, err_file.read_text()[-2000:]
                assert time.monotonic() < deadline, "no epoch logged in 120 s"
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            proc.kill()
    err = err_file.read_text()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    resume_files = list((tmp_path / "saved").glob("BPR-*-resume.pth"))
    assert len(resume_files) == 1
    assert last.startswith("python -m recbole_promptmm run: interrupted (Ctrl-C) at epoch "), last
    assert last.endswith(f"; resume with: python -m recbole_promptmm run --resume=saved/{resume_files[0].name}")


def test_console_script_of_a_regular_install(tmp_path):
    """``pip install .`` as a regular (non-editable) install: built as a wheel from setup.py, with its console script.

    Installed with ``--target`` and ``--no-deps`` so that the dependencies come from this venv (a fresh venv would
    download and install ray, torch, ... for minutes); the command then runs from PATH, in a folder outside the
    checkout, with the installed copy of recbole_promptmm first on the path (PYTHONPATH, before this checkout's
    editable install, whose finder comes after the path)."""
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-compile", "--target", str(target), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = _env(PATH=f"{target / 'bin'}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(target))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    assert shutil.which("recbole-promptmm", path=env["PATH"]) == str(target / "bin" / "recbole-promptmm")
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run(["recbole-promptmm", "run", "--model=Pop", "--dataset=ml-100k", "--epochs=1",
                           "--show_progress=False", f"--result_json={work / 'r.json'}"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the installed copy ran (installed without byte code: only an import writes it) ...
    assert list((target / "recbole_promptmm" / "__pycache__").glob("cli.*.pyc"))
    # ... and found its yaml defaults (properties/) and the shipped ml-100k text features
    result = json.loads((work / "r.json").read_text())
    assert result["config"]["modality_features"]["text"].startswith("builtin:")
