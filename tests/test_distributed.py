"""One model trained over two processes through RecBole's multi-process path (``nproc``, gloo on the CPU): the
processes agree on the weights and on the gathered metrics, the metrics are within noise of one process's, only
rank 0 writes files, PromptMM's two stages run, and a Ctrl-C'd two-process run resumes to the uninterrupted run's
exact result."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recbole_promptmm import distributed, run
from recbole_promptmm.checkpoint import load_checkpoint
from recbole_promptmm.trainer.resume import RESUME_SUFFIX, read_resume_file
from tests.conftest import REPO, toy_dict

# BPR learns within 5 epochs at this rate; 2048 interactions a batch (1024 for each of two processes).
BPR = {"epochs": 5, "learning_rate": 0.01, "train_batch_size": 2048, "seed": 1, "show_progress": False}
BPR_ARGS = ["--model=BPR", "--dataset=ml-100k", *(f"--{k}={v}" for k, v in BPR.items())]
# Two processes see the same model, initial weights and global batch as one; what differs is which interactions
# share a batch (DistributedSampler's permutation) and the negatives each process draws: the noise of another
# shuffling seed. One process over seeds 1, 2, 3 gave test recall@20 0.3237, 0.3147, 0.3183 and ndcg@20 0.2646,
# 0.2658, 0.2550 (spread 0.009 and 0.011); two processes 0.3267 and 0.2668. Allowed: 0.03, about three spreads.
TOLERANCE = 0.03


def rank_view(trainer, train_data) -> dict:
    """``after_fit`` (it runs in every process): every rank's weight digest, training batches per epoch, training
    interactions and last validation result."""
    weights = hashlib.sha256()
    for name, tensor in sorted(trainer.model.state_dict().items()):
        weights.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"ranks": distributed.gather({"weights": weights.hexdigest(), "batches": len(train_data),
                                         "interactions": len(train_data._dataset), "valid": trainer.last_valid_result})}


def _files(folder: Path) -> list[str]:
    """The files under ``folder``, each run's stamp (time, pid, random suffix, config md5) and TensorBoard's event
    names replaced by placeholders."""
    names = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            name = re.sub(r"\w{3}-\d{2}-\d{4}_\d{2}-\d{2}-\d{2}-\d+-[0-9a-f]{8}(-[0-9a-f]{6})?", "STAMP",
                          str(path.relative_to(folder)))
            name = re.sub(r"/\d+\.\d+/", "/TIME/", name)  # add_hparams's folder
            names.append(re.sub(r"events\.out\.tfevents\..*", "EVENTS", name))
    return names


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """BPR on ml-100k in one process and in two (each in its own folder, writing a result JSON)."""
    out = {}
    here = os.getcwd()
    try:
        for nproc in (1, 2):
            folder = tmp_path_factory.mktemp(f"nproc{nproc}")
            os.chdir(folder)
            result = run("BPR", "ml-100k", config_dict={**BPR, "nproc": nproc}, result_json="r.json",
                         after_fit=rank_view)
            out[nproc] = (folder, result)
    finally:
        os.chdir(here)
    return out


def test_two_processes_agree_and_match_one_within_noise(runs):
    one, two = runs[1][1], runs[2][1]
    assert two["config"]["world_size"] == 2 and two["config"]["device"] == "cpu"
    ranks = two["ranks"]
    assert len(ranks) == 2 and len(one["ranks"]) == 1
    assert ranks[0]["weights"] == ranks[1]["weights"], "DDP should keep the processes' weights identical"
    assert ranks[0]["valid"] == ranks[1]["valid"], "every process should get the gathered validation result"
    assert ranks[0]["batches"] == ranks[1]["batches"] == one["ranks"][0]["batches"]  # half of each batch
    for metric in ("recall@20", "ndcg@20"):
        assert abs(two["test_result"][metric] - one["test_result"][metric]) <= TOLERANCE, metric
    assert two["test_result"]["recall@20"] > 0.25  # it learned (the untrained model: about 0.01)


def test_only_rank_0_writes(runs):
    """The two-process run writes exactly the files of the one-process run, all named after rank 0's process."""
    (one_dir, _), (two_dir, two) = runs[1], runs[2]
    assert _files(two_dir) == _files(one_dir)
    assert sorted(_files(two_dir)) == ["log/BPR/BPR-ml-100k-STAMP.log", "log_tensorboard/BPR-ml-100k-STAMP/EVENTS",
                                       "log_tensorboard/BPR-ml-100k-STAMP/TIME/EVENTS", "r.json", "saved/BPR-STAMP.pth"]
    pid = re.search(r"-(\d+)-[0-9a-f]{8}\.pth$", two["checkpoint"]).group(1)
    assert pid != str(os.getpid())  # written by a spawned process (rank 0), not by the launcher
    config = load_checkpoint(str(two_dir / two["checkpoint"]))["config"]  # loads in one process (recommend, export)
    assert config["single_spec"] is True and config["local_rank"] == 0 and config["world_size"] == 2
    written = [p.relative_to(two_dir) for p in two_dir.rglob("*") if p.is_file() and p.name != "r.json"]
    assert written and all(f"-{pid}-" in str(p) for p in written)


def test_promptmm_both_stages_in_two_processes(mm_toy):
    """... with ``ddp_batch: per_process``: each process takes whole 64-interaction batches of its half."""
    result = run("PromptMM", "toy", config_dict=toy_dict(mm_toy, epochs=1, student_epochs=2, nproc=2,
                                                         ddp_batch="per_process"), after_fit=rank_view)
    ranks = result["ranks"]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    half = -(-ranks[0]["interactions"] // 2)  # DistributedSampler pads the shares to equal sizes
    assert ranks[0]["batches"] == ranks[1]["batches"] == -(-half // 64)  # RecBole's split: -(-half // 32)
    assert [s["stage"] for s in result["stages"]] == ["teacher", "student"]
    assert [s["epochs_run"] for s in result["stages"]] == [1, 2]
    assert result["teacher"]["test_result"] and result["test_result"]
    for key in ("checkpoint", "student_checkpoint"):
        assert Path(result[key]).is_file()
    assert Path(result["teacher"]["checkpoint"]).is_file()
    assert len(list(Path("log").rglob("*.log"))) == 1


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_ctrl_c_in_two_processes_then_resume(runs, tmp_path):
    """Ctrl-C (SIGINT to the launcher and its processes, as a terminal sends it) after an epoch: exit 130 and the
    resume line; the resume command finishes in two processes with the uninterrupted two-process run's result."""
    proc = subprocess.Popen([sys.executable, str(REPO / "run_recbole.py"), *BPR_ARGS, "--nproc=2",
                             "--result_json=r.json"], cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while True:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no second epoch in 300 s"
            files = list((tmp_path / "saved").glob(f"*{RESUME_SUFFIX}"))
            if files and read_resume_file(str(files[0]))["epoch"] >= 1:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert " at epoch " in last and "resume with: run_recbole.py --resume=saved/" in last, last
    assert not (tmp_path / "r.json").exists()
    state = read_resume_file(last.split("--resume=", 1)[1].strip())
    assert len(state["rng_per_rank"]) == 2

    command = last.split("resume with: ", 1)[1].split()
    done = subprocess.run([sys.executable, str(REPO / command[0]), *command[1:]], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((tmp_path / "r.json").read_text())
    reference = runs[2][1]
    assert resumed["config"]["world_size"] == 2
    assert resumed["best_valid_result"] == reference["best_valid_result"]
    assert resumed["test_result"] == reference["test_result"]
    weights = [torch.load(f, weights_only=False)["state_dict"] for f in (tmp_path / resumed["checkpoint"],
                                                                        runs[2][0] / reference["checkpoint"])]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not list((tmp_path / "saved").glob(f"*{RESUME_SUFFIX}"))


def test_launch_settings_are_checked():
    """Bad launch keys are refused before any process starts (bad input: exit 2 from the command line)."""
    with pytest.raises(ValueError, match="offset 2 with nproc 2"):
        run("BPR", "ml-100k", config_dict={**BPR, "nproc": 2, "world_size": 3, "offset": 2, "port": 29999})
    with pytest.raises(ValueError, match="give --port"):
        run("BPR", "ml-100k", config_dict={**BPR, "nproc": 1, "world_size": 2})
    assert not Path("log").exists() and not Path("saved").exists()
