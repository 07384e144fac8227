"""``run``, ``compare`` and ``tune`` refuse, before training and before Ray starts, what used to fail late or train
blind: a split without validation data (an ``eval_args`` RS ratio of 0, an MMRec file with no ``x_label`` 1 row),
an output path that cannot be written (a folder for ``--result_json``, a file in the way of ``--out``), a model
name that is none, and bad data (NaN features): exit 2, one line on stderr naming the setting or the file, nothing
written and no Ray session. ``compare --models`` takes the variant labels ``--list_ablations`` prints.

The cases go through the console command's ``main`` in this process (``ray.is_initialized()`` says whether Ray
started); one per command also through ``python -m recbole_promptmm`` in a subprocess with its own ``RAY_TMPDIR``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import ray

from recbole_promptmm.cli import main
from recbole_promptmm.config import Config
from recbole_promptmm.validate import validate_config
from tests.conftest import REPO, write_toy_dataset
from tests.test_mmrec_layout import ROWS, write_mmrec

LOAD_COL = "--load_col={'inter': ['user_id', 'item_id']}"
NO_VALID_RATIO = "--eval_args={'split': {'RS': [0.9, 0.0, 0.1]}, 'group_by': 'user', 'order': 'RO', 'mode': 'full'}"
FAST = ("--epochs=1", "--show_progress=False")


@pytest.fixture
def data(tmp_path) -> Path:
    """``data/toy`` (with ``nan_feat.npy``: one NaN; ``feat.npy``: finite) and ``data/mm``, an MMRec-layout file
    without a validation row (x_label 1)."""
    folder = write_toy_dataset(tmp_path / "data")
    features = np.random.default_rng(0).normal(size=(41, 4)).astype(np.float32)
    np.save(folder / "feat.npy", features)
    features[5, 1] = np.nan
    np.save(folder / "nan_feat.npy", features)
    write_mmrec(tmp_path / "data", rows=[r for r in ROWS if r[2] != 1])
    return tmp_path / "data"


def _toy(data: Path, *extra: str) -> list[str]:
    return ["--dataset=toy", f"--data_path={data}", LOAD_COL, *FAST, *extra]


def _mm(data: Path) -> list[str]:
    return ["--dataset=mm", f"--data_path={data}", "--mmrec_inter_file=mm.inter", *FAST]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _refused(argv: list[str], capsys, root: Path, *expected: str) -> str:
    """``main(argv)`` exits 2 with one stderr line holding ``expected``, writes nothing under ``root`` (the working
    directory) and starts no Ray; returns the line."""
    before = _files(root)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], err
    for text in expected:
        assert text in lines[0], lines[0]
    assert _files(root) == before, sorted(_files(root) - before)
    assert not ray.is_initialized()
    return lines[0]


# -------------------------------------------------------------------------------------- no validation data
def _no_validation(data: Path) -> dict[str, tuple[list[str], list[str]]]:
    """case -> (data arguments, what the line must say)."""
    return {
        "rs_ratio_0": (_toy(data, NO_VALID_RATIO), ["no validation data", "RS': [0.9, 0.0, 0.1]",
                                                    "holds out no validation ratio"]),
        "mmrec_no_x_label_1": (_mm(data), ["no validation data", str(data / "mm" / "mm.inter"),
                                           "no row with x_label 1"]),
    }


@pytest.mark.parametrize("case", ["rs_ratio_0", "mmrec_no_x_label_1"])
def test_run_refuses_a_split_without_validation(case, data, tmp_path, capsys):
    args, expected = _no_validation(data)[case]
    _refused(["run", "--model=BPR", *args, f"--result_json={tmp_path / 'r.json'}"], capsys, tmp_path, *expected)


@pytest.mark.parametrize("case", ["rs_ratio_0", "mmrec_no_x_label_1"])
def test_compare_refuses_a_split_without_validation(case, data, tmp_path, capsys):
    args, expected = _no_validation(data)[case]
    if case == "rs_ratio_0":  # refused from the config alone (the protocol check), before the data is read
        expected = ["RS': [0.9, 0.0, 0.1]", "has no validation set"]
    _refused(["compare", "--models=Pop,BPR", "--seeds=1", f"--out={tmp_path / 'out'}", *args], capsys, tmp_path,
             *expected)


@pytest.mark.parametrize("case", ["rs_ratio_0", "mmrec_no_x_label_1"])
def test_tune_refuses_a_split_without_validation(case, data, tmp_path, capsys):
    """It used to fail in Ray with a ValueError traceback (exit 1), leaving sweep.json, sweep.log and trials/."""
    args, expected = _no_validation(data)[case]
    _refused(["tune", "--model=BPR", f"--out={tmp_path / 'out'}", *args], capsys, tmp_path, *expected)


# ------------------------------------------------------------------------------------------- output paths
def test_run_refuses_a_result_json_that_is_a_folder_before_training(data, tmp_path, capsys):
    """It used to train the whole run, then crash with IsADirectoryError."""
    (tmp_path / "results").mkdir()
    _refused(["run", "--model=BPR", *_toy(data), f"--result_json={tmp_path / 'results'}"], capsys, tmp_path,
             f"--result_json {tmp_path / 'results'} is a folder; expected a file path")


def test_run_refuses_a_result_json_under_a_file(data, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    _refused(["run", "--model=BPR", *_toy(data), f"--result_json={tmp_path / 'taken' / 'sub' / 'r.json'}"], capsys,
             tmp_path, f"cannot be created: {tmp_path / 'taken'} is a file")


def test_run_refuses_a_checkpoint_dir_that_is_a_file(data, tmp_path, capsys):
    (tmp_path / "saved").write_text("x")
    _refused(["run", "--model=BPR", *_toy(data)], capsys, tmp_path, "checkpoint_dir", "is a file; expected a folder")


@pytest.mark.parametrize("command", ["compare", "tune"])
def test_an_out_that_is_a_file_is_refused(command, data, tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    model = "--models=BPR" if command == "compare" else "--model=BPR"
    _refused([command, model, f"--out={tmp_path / 'out'}", *_toy(data)], capsys, tmp_path,
             f"--out {tmp_path / 'out'} is a file; expected a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_result_json_in_a_folder_without_write_permission(data, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        _refused(["run", "--model=BPR", *_toy(data), f"--result_json={locked / 'r.json'}"], capsys, tmp_path,
                 f"no permission to write in {locked}")
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------------------ eval_step: validate some epoch
@pytest.mark.parametrize("command, step", [("run", "0"), ("run", "2"), ("compare", "-1"), ("tune", "2")])
def test_an_eval_step_that_validates_no_epoch_is_refused(command, step, data, tmp_path, capsys):
    """RecBole validates after every eval_step-th epoch and never for eval_step <= 0: run used to train blind with
    eval_step 0, or above epochs (1 here), and test the last epoch. One check for run, compare and tune."""
    args = {"run": ["--model=BPR"], "compare": ["--models=Pop,BPR", "--seeds=1", f"--out={tmp_path / 'out'}"],
            "tune": ["--model=BPR", f"--out={tmp_path / 'out'}"]}[command]
    _refused([command, *args, *_toy(data, f"--eval_step={step}")], capsys, tmp_path, f"config key eval_step={step}",
             "expected an integer >= 1" if int(step) < 1 else "expected at most epochs=1")


def test_promptmm_eval_step_is_checked_against_each_stage(data, tmp_path, capsys):
    """The teacher's stage validates with teacher_eval_step (~: eval_step) within teacher_epochs (~: epochs)."""
    stages = ("--teacher_epochs=1", "--student_epochs=3", "--eval_step=2")
    _refused(["run", "--model=PromptMM", *_toy(data, "--modality_features={'image': 'feat.npy'}", *stages)], capsys,
             tmp_path, "config key eval_step=2", "expected at most teacher_epochs=1")
    config = Config("PromptMM", "toy", config_dict={"data_path": str(data), "epochs": 1, "teacher_eval_step": 1,
                                                    "student_epochs": 3, "eval_step": 2})
    validate_config(config)  # each stage validates: teacher after epoch 1, student after epoch 2


# ------------------------------------------------------------------------------------ models and bad data
@pytest.mark.parametrize("command", ["compare", "tune"])
def test_nan_features_are_refused_before_ray_starts(command, data, tmp_path, capsys):
    """compare used to start Ray and fail every run (exit 1, empty reports)."""
    model = "--models=Pop,BPR" if command == "compare" else "--model=BPR"
    _refused([command, model, f"--out={tmp_path / 'out'}", *_toy(data, "--modality_features={'image': 'nan_feat.npy'}"),
              *(["--seeds=1"] if command == "compare" else [])], capsys, tmp_path,
             str(data / "toy" / "nan_feat.npy"), "expected finite values", "1 NaN or inf")


def test_compare_refuses_an_unknown_model_naming_the_variant_labels(data, tmp_path, capsys):
    """An unknown name used to fail each of its runs (after Ray started)."""
    line = _refused(["compare", "--models=BPR,PromptMM-nokd", "--seeds=1", f"--out={tmp_path / 'out'}", *_toy(data)],
                    capsys, tmp_path, "unknown model 'PromptMM-nokd'", "PromptMM-no_kd")
    assert "--list_ablations" in line


def test_tune_refuses_a_variant_label_with_its_model_and_keys(data, tmp_path, capsys):
    _refused(["tune", "--model=PromptMM-no_kd", f"--out={tmp_path / 'out'}", *_toy(data)], capsys, tmp_path,
             "PromptMM-no_kd is a variant of compare", "--model=PromptMM", "--pair_kd_weight=0.0")


def test_compare_models_take_the_labels_list_ablations_prints(data):
    """``--models=PromptMM-no_kd`` is PromptMM with its ablation no_kd (it used to fail each run: unknown model)."""
    from recbole_promptmm.experiments.compare import plan
    from recbole_promptmm.experiments.options import CompareOptions
    from recbole_promptmm.experiments.plan import describe_ablations

    assert "PromptMM-no_kd" in describe_ablations()
    overrides = [f"--data_path={data}", LOAD_COL, "--modality_features={'image': 'feat.npy'}"]
    entries, specs, _, _, _ = plan(CompareOptions(dataset="toy", models="BPR,PromptMM-no_kd", seeds="1",
                                                  overrides=overrides))
    assert [(e.label, e.model, e.variant and e.variant.name) for e in entries] == [
        ("BPR", "BPR", None), ("PromptMM-no_kd", "PromptMM", "no_kd")]
    no_kd = specs[1].config
    assert no_kd["pair_kd_weight"] == no_kd["list_kd_weight"] == no_kd["emb_kd_weight"] == 0.0
    # given twice (as a label and by --ablations): one run; with --ablations=all: each ablation once
    entries, _, _, _, _ = plan(CompareOptions(dataset="toy", models="PromptMM-no_kd", ablations="no_kd,no_prompt",
                                              seeds="1", overrides=overrides))
    assert [e.label for e in entries] == ["PromptMM-no_kd", "PromptMM-no_prompt"]
    entries, _, _, _, _ = plan(CompareOptions(dataset="toy", models="PromptMM-no_kd", ablations="all", seeds="1",
                                              overrides=overrides))
    assert len(entries) == len({e.label for e in entries}) == 8


# ------------------------------------------------------------------------------- the console, end to end
@pytest.fixture
def ray_tmp():
    folder = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("command", ["run", "compare", "tune"])
def test_console_refuses_an_mmrec_file_without_validation_rows(command, data, tmp_path, ray_tmp):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "RAY_TMPDIR": str(ray_tmp)}
    args = {"run": ["--model=BPR"], "compare": ["--models=BPR", "--seeds=1", f"--out={tmp_path / 'out'}"],
            "tune": ["--model=BPR", f"--out={tmp_path / 'out'}"]}[command]
    before = _files(tmp_path)
    done = subprocess.run([sys.executable, "-m", "recbole_promptmm", command, *args, *_mm(data)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no validation data" in lines[0] and "no row with x_label 1" in lines[0], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert _files(tmp_path) == before
    assert not any(ray_tmp.iterdir()), "Ray was started"
