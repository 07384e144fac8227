"""An interrupted run continues from its resume file and ends exactly as an uninterrupted run with the same seed
(the file carries weights, optimizer, early-stopping state and every random-number state), for a built-in model
and for PromptMM in either stage; what cannot continue a run is refused with the reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recbole_promptmm import run
from recbole_promptmm.checkpoint import load_checkpoint
from recbole_promptmm.trainer.resume import RESUME_SUFFIX, ResumeError, RunInterrupted, read_resume_file
from tests.conftest import REPO

SMALL = {"train_batch_size": 4096, "eval_step": 1, "show_progress": False, "seed": 11}


@pytest.fixture(autouse=True)
def one_thread():
    """Exact equality holds for one torch thread: with more, torch's CPU kernels add in a varying order and two
    uninterrupted runs already differ in the 7th digit of some weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _stop_at(stage: str | None, epoch: int) -> list:
    """A trainer callback list raising KeyboardInterrupt (as Ctrl-C) at the end of training epoch ``epoch`` of
    ``stage`` (None: a one-stage run), after that epoch's resume file was written (``run(callbacks=...)``)."""

    class Stop:
        @staticmethod
        def on_epoch_end(trainer) -> None:
            if trainer.last_epoch == epoch and trainer.resume_stage == stage:
                raise KeyboardInterrupt

    return [Stop]


def _weights(path: str) -> dict:
    return load_checkpoint(path)["state_dict"]


def _same_weights(a: str, b: str) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("stage, epoch", [("teacher", 1), ("student", 1)])
def test_promptmm_resumed_in_either_stage_ends_as_uninterrupted(tmp_path, stage, epoch):
    cfg = {**SMALL, "epochs": 2, "student_epochs": 3}
    full = run("PromptMM", "ml-100k", config_dict=cfg)
    with pytest.raises(RunInterrupted) as caught:
        run("PromptMM", "ml-100k", config_dict=cfg, callbacks=_stop_at(stage, epoch))
    stop = caught.value
    assert (stop.stage, stop.epoch) == (stage, epoch)
    assert stop.resume_file.endswith(RESUME_SUFFIX) and os.path.isfile(stop.resume_file)
    assert f"--resume={stop.resume_file}" in stop.describe("prog")
    state = read_resume_file(stop.resume_file)
    assert (state["stage"], state["epoch"]) == (stage, epoch)

    resumed = run(resume=stop.resume_file)
    for key in ("best_valid_result", "test_result"):
        assert resumed[key] == full[key]
    assert resumed["teacher"]["test_result"] == full["teacher"]["test_result"]
    assert resumed["teacher"]["best_epoch"] == full["teacher"]["best_epoch"]
    # The interrupted run's files go on: same names, and the same weights as the uninterrupted run's.
    assert resumed["checkpoint"] == stop.resume_file[:-len(RESUME_SUFFIX)] + ".pth"
    assert _same_weights(resumed["checkpoint"], full["checkpoint"])
    assert _same_weights(resumed["student_checkpoint"], full["student_checkpoint"])
    assert not os.path.exists(stop.resume_file)  # finished: nothing left to resume


def _start(args: list[str], cwd: Path, stderr) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "run_recbole.py"), *args], cwd=cwd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=stderr)


def test_lightgcn_ctrl_c_then_resume_from_the_command_line(tmp_path):
    """A real SIGINT in a LightGCN run after an epoch: exit 130, one line naming the resume command; that command
    finishes the run with the result of an uninterrupted run (written to the result JSON the run started with)."""
    args = ["--model=LightGCN", "--dataset=ml-100k", "--epochs=4", "--train_batch_size=4096", "--seed=3",
            "--show_progress=False"]
    (tmp_path / "full").mkdir()
    (tmp_path / "cut").mkdir()
    with open(tmp_path / "full.err", "w") as err:
        reference = _start([*args, "--result_json=full.json"], tmp_path / "full", err)
    with open(tmp_path / "cut.err", "w") as err:
        proc = _start([*args, "--result_json=cut.json"], tmp_path / "cut", err)
        deadline = time.monotonic() + 300
        try:  # SIGINT once the resume file says epoch 1 or later (so epoch 0 has been trained and evaluated)
            while True:
                assert proc.poll() is None, (tmp_path / "cut.err").read_text()[-2000:]
                assert time.monotonic() < deadline, "no second epoch in 300 s"
                files = list((tmp_path / "cut" / "saved").glob(f"*{RESUME_SUFFIX}"))
                if files and read_resume_file(str(files[0]))["epoch"] >= 1:
                    break
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        finally:
            proc.kill()
    assert reference.wait(timeout=600) == 0, (tmp_path / "full.err").read_text()[-2000:]
    err = (tmp_path / "cut.err").read_text()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert " at epoch " in last and "resume with: run_recbole.py --resume=saved/" in last, last
    assert not (tmp_path / "cut" / "cut.json").exists()

    command = last.split("resume with: ", 1)[1].split()
    done = subprocess.run([sys.executable, str(REPO / command[0]), *command[1:]], cwd=tmp_path / "cut", env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    full = json.loads((tmp_path / "full" / "full.json").read_text())
    cut = json.loads((tmp_path / "cut" / "cut.json").read_text())
    assert cut["best_valid_result"] == full["best_valid_result"]
    assert cut["test_result"] == full["test_result"]
    assert _same_weights(str(tmp_path / "cut" / cut["checkpoint"]), str(tmp_path / "full" / full["checkpoint"]))


def test_what_cannot_resume_is_refused(tmp_path):
    """A best-model checkpoint, a missing file, other inputs than the run's and a changed config file are refused
    with the reason; an interruption before the first epoch ended says that nothing was saved."""
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("embedding_size: 16\n")
    cfg = {**SMALL, "epochs": 3}
    with pytest.raises(RunInterrupted) as caught:
        run("BPR", "ml-100k", config_file_list=[str(yaml_file)], config_dict=cfg, callbacks=_stop_at(None, 1))
    resume_file = caught.value.resume_file
    best_file = caught.value.best_model_file
    assert best_file and os.path.isfile(best_file)

    with pytest.raises(ResumeError, match="is not a resume file"):
        run(resume=best_file)
    with pytest.raises(ResumeError, match="does not exist"):
        run(resume=str(tmp_path / "nothing-resume.pth"))
    with pytest.raises(ResumeError, match="leave out model"):
        run("LightGCN", resume=resume_file)
    yaml_file.write_text("embedding_size: 32\n")
    with pytest.raises(ResumeError, match="embedding_size: then 16, now 32"):
        run(resume=resume_file)
    yaml_file.write_text("embedding_size: 16\n")
    assert run(resume=resume_file)["model"] == "BPR"  # the same file again: it continues

    with pytest.raises(RunInterrupted) as early:
        run("BPR", "ml-100k", config_dict=cfg, callbacks=_stop_at(None, 0))
    assert early.value.resume_file is None
    assert early.value.describe("prog") == "prog: interrupted (Ctrl-C) before the first epoch ended; nothing to resume from was saved"
