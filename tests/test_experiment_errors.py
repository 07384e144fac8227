"""``compare`` and ``tune`` check every run's resolved config as ``run`` does, before Ray starts: bad input exits
with 2 and one line on stderr naming the key and where it was given, and nothing is written (no ``--out`` folder,
no Ray session). A comparison's console is quiet: one line per finished run and a closing table, Ray's tables only
with ``--verbose``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture
def ray_tmp():
    """Where a Ray session of the command would live (``RAY_TMPDIR``; short: Ray's socket paths must fit)."""
    folder = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _tool(tool: str, *args: str, ray_tmp: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "RAY_TMPDIR": str(ray_tmp)}
    return subprocess.run([sys.executable, "-m", f"recbole_promptmm.{tool}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _refused(done: subprocess.CompletedProcess, tool: str, out: Path, ray_tmp: Path, *expected: str) -> str:
    """Exit 2, one stderr line ``python -m recbole_promptmm.TOOL: error: ...`` holding ``expected``, no output
    folder and no Ray session; returns the line."""
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"python -m recbole_promptmm.{tool}: error: "), lines[0]
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    assert not any(ray_tmp.iterdir()), "Ray was started"
    return lines[0]


COMPARE = ("--models=Pop,BPR", "--seeds=1,2", "--epochs=1")


# ------------------------------------------------------------------------------------------------ compare
def test_compare_misspelled_key_on_the_command_line(tmp_path, ray_tmp):
    out = tmp_path / "out"
    done = _tool("compare", *COMPARE, f"--out={out}", "--learning_rte=1", ray_tmp=ray_tmp)
    line = _refused(done, "compare", out, ray_tmp, "unknown config key 'learning_rte'",
                    "from the command line (--learning_rte=1)", "closest known keys: learning_rate")
    assert "BPR:" not in line  # every run has it: said once, not per model


def test_compare_key_it_no_longer_knows(tmp_path, ray_tmp):
    out = tmp_path / "out"
    done = _tool("compare", *COMPARE, f"--out={out}", "--threads=1", ray_tmp=ray_tmp)
    _refused(done, "compare", out, ray_tmp, "unknown config key 'threads'", "(--threads=1)")


def test_compare_refuses_several_processes_per_run(tmp_path, ray_tmp):
    """--nproc is for run: a comparison's runs are one process each (it used to fail per run on pickling)."""
    out = tmp_path / "out"
    done = _tool("compare", *COMPARE, f"--out={out}", "--nproc=2", ray_tmp=ray_tmp)
    _refused(done, "compare", out, ray_tmp, "sets 'nproc'", "run_recbole.py --nproc")


def test_compare_misspelled_key_in_a_models_section(tmp_path, ray_tmp):
    config, out = tmp_path / "compare.yaml", tmp_path / "out"
    config.write_text("epochs: 1\nmodels:\n  BPR: {lerning_rate: 0.01}\n")
    done = _tool("compare", "--models=Pop,BPR", "--seeds=1", f"--out={out}", f"--config_files={config}",
                 ray_tmp=ray_tmp)
    line = _refused(done, "compare", out, ray_tmp, "unknown config key 'lerning_rate'",
                    f"from config file {config} (models: BPR)", "learning_rate")
    assert line.split(": error: ", 1)[1].startswith("BPR: ")  # Pop's runs are fine: the line says whose it is


def test_compare_label_section_bad_value(tmp_path, ray_tmp):
    """A label of its own (``model:`` key) layered over its model's section: the failing key names its section."""
    config, out = tmp_path / "compare.yaml", tmp_path / "out"
    config.write_text("models:\n  BPR: {embedding_size: 16}\n  BPR-fast: {model: BPR, learning_rate: 0}\n")
    done = _tool("compare", "--models=BPR,BPR-fast", "--seeds=1", f"--out={out}", f"--config_files={config}",
                 ray_tmp=ray_tmp)
    _refused(done, "compare", out, ray_tmp, "BPR-fast: config key learning_rate=0 (int) from config file "
             f"{config} (models: BPR-fast): expected a number > 0")


def test_compare_variant_with_a_bad_value(tmp_path, ray_tmp):
    out = tmp_path / "out"
    done = _tool("compare", "--models=BPR", "--variants=neg:pair_kd_weight=-1", "--seeds=1", "--epochs=1",
                 f"--out={out}", ray_tmp=ray_tmp)
    _refused(done, "compare", out, ray_tmp, "PromptMM-neg: config key pair_kd_weight=-1 (int) from variant "
             "PromptMM-neg: expected a number >= 0")


def test_compare_variant_with_a_misspelled_key(tmp_path, ray_tmp):
    out = tmp_path / "out"
    done = _tool("compare", "--variants=half:pair_kd_wieght=0.5", "--seeds=1", f"--out={out}", ray_tmp=ray_tmp)
    _refused(done, "compare", out, ray_tmp, "pair_kd_wieght", "PromptMM-half")


# --------------------------------------------------------------------------------------------------- tune
TUNE = ("--model=BPR", "--dataset=ml-100k", "--epochs=1")


def test_tune_misspelled_key_on_the_command_line(tmp_path, ray_tmp):
    out = tmp_path / "out"
    done = _tool("tune", *TUNE, f"--out={out}", "--learning_rte=1", ray_tmp=ray_tmp)
    _refused(done, "tune", out, ray_tmp, "unknown config key 'learning_rte'",
             "from the command line (--learning_rte=1)", "closest known keys: learning_rate")


def test_tune_refuses_several_processes_per_trial(tmp_path, ray_tmp):
    """--nproc is for run: a sweep's trials are one process each (it used to be ignored)."""
    out = tmp_path / "out"
    done = _tool("tune", *TUNE, f"--out={out}", "--nproc=2", ray_tmp=ray_tmp)
    _refused(done, "tune", out, ray_tmp, "nproc 2: a sweep trains each trial in one process", "run_recbole.py --nproc")


def test_tune_misspelled_key_in_a_models_section(tmp_path, ray_tmp):
    config, out = tmp_path / "my.yaml", tmp_path / "out"
    config.write_text("models:\n  BPR: {lerning_rate: 0.01}\n")
    done = _tool("tune", *TUNE, f"--out={out}", f"--config_files={config}", ray_tmp=ray_tmp)
    _refused(done, "tune", out, ray_tmp, "unknown config key 'lerning_rate'", f"config file {config} (models: BPR)")


def test_tune_search_space_misspelled_key(tmp_path, ray_tmp):
    space, out = tmp_path / "space.yaml", tmp_path / "out"
    space.write_text("lerning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n")
    done = _tool("tune", *TUNE, f"--out={out}", f"--search_space={space}", ray_tmp=ray_tmp)
    _refused(done, "tune", out, ray_tmp, f"search space {space}: key 'lerning_rate'", "learning_rate")


# ------------------------------------------------------------------------------------------ quiet console
def test_compare_console_is_one_line_per_run_and_a_table(tmp_path, ray_tmp):
    out = tmp_path / "out"
    done = _tool("compare", "--models=Pop", "--seeds=1", "--epochs=1", f"--out={out}", ray_tmp=ray_tmp, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = done.stdout + done.stderr
    lines = text.splitlines()
    for noise in ("Trial status", "Configuration for experiment", "Token authentication", "NaN or Inf",
                  "View detailed results", "Traceback"):
        assert noise not in text, text
    assert [line for line in lines if line.startswith("[1/1] Pop seed 1: ok, valid recall@20 ")], text
    assert any(line.startswith("| Pop ") for line in lines), text  # the closing table
    assert len(lines) <= 12, text
