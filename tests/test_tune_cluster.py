"""A sweep and a comparison against a real Ray cluster: a head and one more node on 127.0.0.1, joined through ``--address``.

Placement is pinned, not left to Ray's timing: the head (where the driver connects) has no CPU and the other node
has one, so every trial and every run can only be placed on that node, and each result row must name it. (With
one CPU on each node nothing forces two short trials onto two nodes: Ray reuses a CPU freed by a finished trial.)

The cluster is started with ``ray start --block`` (one process per node, each in its own process group) and
stopped by signalling exactly those processes in the teardown, whatever happens: ``ray stop`` would also stop
every other Ray instance on the machine (other test runs included).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

RAY = Path(sys.executable).parent / "ray"
START_TIMEOUT_S = 90
SWEEP_TIMEOUT_S = 300


def reserved_port() -> int:
    """A port that no other process can take for about a minute, yet one Ray's gRPC servers can bind.

    Bound, listened on, and left with a closed connection in TCP TIME_WAIT on it (the accepted end closes first):
    until that expires, the kernel hands the port to no bind(port 0) and refuses it to any bind() without
    SO_REUSEADDR, while a server that sets SO_REUSEADDR (every gRPC server) binds it. So nothing can take the port
    between this function and the node's start, unlike a port that was merely free when it was looked at."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = server.accept()
            accepted.close()
    return port


# Every other port of a node is bound by the process that serves it (port 0) and published through the GCS, so no
# port is chosen here and none can collide with another Ray on this machine. Ray refuses 0 for the head's Ray
# Client server only (it starts one whenever ray[client] is installed): that one is reserved_port().
OWN_PORTS = ["--dashboard-agent-listen-port=0", "--min-worker-port=0", "--max-worker-port=0"]
ADDRESS_LINE = re.compile(r"ray start --address='[^']*:(\d+)'")  # printed by the head (and read by Ray's Java driver)


def start_node(cmd: list[str], log: Path, env: dict, ready: re.Pattern = re.compile("Ray runtime started")
               ) -> tuple[subprocess.Popen, re.Match]:
    """Start one ``ray start --block`` and wait until its output matches ``ready`` (the node is up)."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (found := ready.search(log.read_text())):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_node(proc)
            pytest.fail(f"ray node did not start ({' '.join(cmd)}):\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc, found


def stop_node(proc: subprocess.Popen) -> None:
    """SIGTERM the node's ``ray start`` (it stops its own processes), then SIGKILL what is left of its group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group holds only processes this node started
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


def cluster_nodes(address: str, env: dict) -> dict[str, float]:
    """``{node id: CPUs}`` of every live node of the cluster at ``address``, read by a separate driver process (this
    test process never joins a Ray cluster)."""
    script = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "
              "print(json.dumps({n['NodeID']: n['Resources'].get('CPU', 0) for n in ray.nodes() if n['Alive']}))")
    done = subprocess.run([sys.executable, "-c", script % address], env=env, capture_output=True, text=True,
                          timeout=START_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    """``(address, env, worker)`` of a 2-node Ray cluster on 127.0.0.1: a head with no CPU and one more node with one
    CPU, whose node id is ``worker``; stopped in the teardown."""
    temp_dir = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}  # a throwaway local cluster
    env.pop("RAY_ADDRESS", None)
    common = ["--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *OWN_PORTS]
    head = [str(RAY), "start", "--head", "--num-cpus=0", "--port=0", f"--ray-client-server-port={reserved_port()}",
            "--include-dashboard=false", "--dashboard-port=0", f"--temp-dir={temp_dir}", *common]
    tmp_path = tmp_path_factory.mktemp("cluster")
    nodes: list[subprocess.Popen] = []
    try:
        proc, found = start_node(head, tmp_path / "head.log", env, ready=ADDRESS_LINE)  # printed once it is up
        nodes.append(proc)
        address = f"127.0.0.1:{found.group(1)}"
        nodes.append(start_node([str(RAY), "start", f"--address={address}", "--num-cpus=1", *common],
                                tmp_path / "worker.log", env)[0])
        cpus = cluster_nodes(address, env)
        assert sorted(cpus.values()) == [0, 1], cpus  # both nodes registered: the head without a CPU
        yield address, env, next(node for node, n in cpus.items() if n == 1)
    finally:
        for proc in reversed(nodes):
            stop_node(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_two_trial_sweep_on_a_two_node_cluster(local_cluster, tmp_path):
    address, env, worker = local_cluster
    space = tmp_path / "lr.yaml"
    space.write_text("learning_rate: {grid: [0.01, 0.005]}\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "recbole_promptmm.tune", f"--address={address}", "--model=BPR",
           "--dataset=ml-100k", f"--search_space={space}", "--epochs=1", "--train_batch_size=4096",
           "--scheduler=fifo", f"--out={out}"]
    done = subprocess.run(cmd, cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=SWEEP_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"connected to {address}: 2 node(s), 1 CPU(s)" in done.stdout
    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}
    assert [r["node"] for r in rows] == [worker, worker], "the only CPU is the other node's: each row names it"
    assert (out / "best_config.yaml").is_file() and (out / "best_result.json").is_file()
    local = tmp_path / "local"
    done = subprocess.run([*cmd[:3], *cmd[4:-1], f"--out={local}", "--num_cpus=1"], cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    with open(local / "trials.csv", newline="") as f:
        by_lr = {r["config/learning_rate"]: r["best_valid_recall@20"] for r in csv.DictReader(f)}
    assert {r["config/learning_rate"]: r["best_valid_recall@20"] for r in rows} == by_lr


def _comparison(out: Path, env: dict, *extra: str) -> list[dict]:
    cmd = [sys.executable, "-m", "recbole_promptmm.compare", "--models=Pop,BPR", "--seeds=2020,2021", f"--out={out}",
           "--epochs=1", "--train_batch_size=4096", "--cost_repeats=1", *extra]
    done = subprocess.run(cmd, cwd=out.parent, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=SWEEP_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_comparison_on_a_two_node_cluster_equals_a_local_one(local_cluster, tmp_path):
    """A 2-model x 2-seed comparison through --address runs on the cluster's node with the CPU, not on the driver's
    (the head has none), each row names that node, and the results are those of the same comparison run locally."""
    address, env, worker = local_cluster
    remote = _comparison(tmp_path / "remote", env, f"--address={address}")
    assert [row["node"] for row in remote] == [worker] * 4
    local = _comparison(tmp_path / "local", env, "--max_concurrent=1")
    metrics = [k for k in remote[0] if k.startswith(("valid_", "test_")) and "@" in k]
    assert len(metrics) > 10
    for a, b in zip(remote, local):
        assert (a["label"], a["seed"], a["config_hash"]) == (b["label"], b["seed"], b["config_hash"])
        assert {k: a[k] for k in metrics} == {k: b[k] for k in metrics}, a["label"]
