"""No hidden global state: the package never changes the working directory and edits the process environment only
where listed below (each with why); a run, a comparison run and a sweep trial write RecBole's ``log/``,
``log_tensorboard/`` and ``saved/`` into the folder they are given, and the working directory stays what it was."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from recbole_promptmm.experiments import compare as comparison
from recbole_promptmm.experiments.options import CompareOptions
from recbole_promptmm.experiments.trial import TrialRun, TrialSetup
from recbole_promptmm.quick_start import run
from tests.conftest import REPO

PACKAGE = REPO / "recbole_promptmm"
CHDIR = re.compile(r"\bos\.f?chdir\s*\(")
ENV_EDIT = re.compile(r"\bos\.environ\s*(\[[^\]]*\]\s*=(?!=)|\.(setdefault|update|pop|popitem|clear)\s*\()"
                      r"|\bdel\s+os\.environ|\bos\.(putenv|unsetenv)\s*\(")

# (file, line) -> why it stays. The test fails on any other edit, and on an entry that no longer matches a line.
ALLOWED_ENV_EDITS = {
    # RecBole's rule (gpu_id -> CUDA_VISIBLE_DEVICES), which RecBole's own Config._init_device applies in every other
    # branch; this branch (a CPU process of a multi-process run, its own spawned process) stands in for RecBole's.
    ("compat.py", 'os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id'),
    # A sweep's driver builds RecBole Configs, which write CUDA_VISIBLE_DEVICES (Ray reads it when it starts): these
    # two lines put the driver's own value back, undoing RecBole's edit.
    ("experiments/sweep.py", 'os.environ.pop("CUDA_VISIBLE_DEVICES", None)'),
    ("experiments/sweep.py", 'os.environ.update({} if saved is None else {"CUDA_VISIBLE_DEVICES": saved})'),
    # The tune command's main (the process entry point, not the library): Ray Tune reads its output engine and a
    # warning threshold from the driver's environment only; a value the user exported wins.
    ("experiments/cli.py", "os.environ.setdefault(key, value)"),
}


def _matches(pattern: re.Pattern) -> set[tuple[str, str]]:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0]
            if pattern.search(code):
                found.add((path.relative_to(PACKAGE).as_posix(), code.strip()))
    return found


def test_the_package_never_changes_the_working_directory():
    assert not _matches(CHDIR)


def test_the_package_edits_the_environment_only_where_allowed():
    found = _matches(ENV_EDIT)
    assert found - ALLOWED_ENV_EDITS == set(), "an environment edit not in ALLOWED_ENV_EDITS (pass the value instead)"
    assert ALLOWED_ENV_EDITS - found == set(), "ALLOWED_ENV_EDITS lists an edit that is gone: remove it"


def _recbole_folders(folder: Path) -> set[str]:
    return {"log", "log_tensorboard", "saved"} & {p.name for p in folder.iterdir()}


def test_run_writes_into_its_run_dir_and_keeps_the_working_directory(tmp_path):
    cwd, seen = os.getcwd(), []

    class Record:
        @staticmethod
        def on_epoch_end(trainer):
            seen.append(os.getcwd())

    folder = tmp_path / "elsewhere"
    result = run("BPR", "ml-100k", config_dict={"epochs": 1, "train_batch_size": 4096, "use_gpu": False,
                                                "checkpoint_dir": str(folder / "saved")},
                 callbacks=[Record], run_dir=str(folder))
    assert seen == [cwd] and os.getcwd() == cwd
    assert Path(result["log_file"]).parent == folder / "log" / "BPR"
    board = folder / "log_tensorboard" / Path(result["log_file"]).stem
    assert list(board.rglob("events.out.tfevents.*")), "TensorBoard goes next to the log, named after it"
    assert _recbole_folders(folder) == {"log", "log_tensorboard", "saved"}
    assert not _recbole_folders(Path(cwd)), "RecBole wrote into the working directory"


def test_a_comparison_run_writes_into_its_folder_and_keeps_the_working_directory(tmp_path, monkeypatch):
    """The body of a comparison's Ray task, called in this process: its files go to its run folder; the working
    directory is the same when the run starts and after it trained."""
    _, specs, *_ = comparison.plan(CompareOptions(dataset="ml-100k", models="Pop", seeds="2020",
                                                  overrides=["--epochs=1", "--use_gpu=False"]))
    run_dir = tmp_path / "runs" / specs[0].relative_dir()
    payload = comparison._payload(specs[0], str(run_dir), CompareOptions(cost_repeats=1))
    cwd, seen, real_run = os.getcwd(), [], comparison.run

    def observed_run(*args, after_fit, **kwargs):
        seen.append(os.getcwd())
        return real_run(*args, after_fit=lambda trainer, data: seen.append(os.getcwd()) or after_fit(trainer, data),
                        **kwargs)

    monkeypatch.setattr(comparison, "run", observed_run)
    threads = torch.get_num_threads()
    try:
        comparison.comparison_run(payload)
    finally:
        torch.set_num_threads(threads)
    assert seen == [cwd, cwd] and os.getcwd() == cwd
    assert {"config.json", "result.json", "log", "log_tensorboard", "saved"} <= {p.name for p in run_dir.iterdir()}
    assert not (Path(cwd) / "config.json").exists() and not _recbole_folders(Path(cwd))


def test_a_trial_writes_into_its_folder_and_keeps_the_working_directory(tmp_path):
    from recbole_promptmm import Config, create_dataset, data_preparation

    cpu = {"gpu_id": "", "use_gpu": False}
    config = Config("BPR", "ml-100k", config_dict={"train_batch_size": 4096, **cpu})
    train, valid, _ = data_preparation(config, create_dataset(config))
    cwd, seen, trial_dir = os.getcwd(), [], tmp_path / "trial_x"
    trial = TrialRun(TrialSetup("BPR", "ml-100k", fixed={"epochs": 1}), {}, train, valid, str(trial_dir), cpu)
    trial.fit(lambda metrics, folder: seen.append(os.getcwd()))
    assert seen == [cwd] and os.getcwd() == cwd
    assert _recbole_folders(trial_dir) == {"log", "log_tensorboard", "saved"}
    assert not _recbole_folders(Path(cwd))
