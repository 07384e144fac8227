"""``recbole-promptmm serve`` in a process of its own, as a user starts it: it never imports torch or RecBole, it
answers a burst of 16 concurrent clients exactly as the artefact's own numpy scoring ranks, and Ctrl-C (or
SIGTERM) stops it with one line. Also: ``import recbole_promptmm`` is light and loads the package on first need."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import numpy as np
import pytest

from recbole_promptmm.serving.artefact import Recommender, write_artefact
from recbole_promptmm.serving.http import RecommendationServer
from tests.conftest import REPO

PROG = "recbole-promptmm"  # serve names itself so however it was started
HEAVY = ("torch", "recbole", "scipy", "pandas", "ray")


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def artefact(tmp_path_factory) -> str:
    """A random artefact: 60 users (user 7 without training interactions: the popularity fallback) x 80 items,
    d 8, each user with up to 10 training items."""
    rng = np.random.default_rng(0)
    n_users, n_items = 61, 81  # row 0 of each: RecBole's padding
    seen = [np.sort(rng.choice(np.arange(1, n_items), size=rng.integers(1, 10), replace=False))
            for _ in range(n_users)]
    seen[0], seen[7] = np.array([], int), np.array([], int)
    arrays = {"user": rng.standard_normal((n_users, 8), dtype=np.float32),
              "item": rng.standard_normal((n_items, 8), dtype=np.float32),
              "user_tokens": np.array(["[PAD]"] + [f"u{i}" for i in range(1, n_users)]),
              "item_tokens": np.array(["[PAD]"] + [f"i{i}" for i in range(1, n_items)]),
              "seen_indptr": np.concatenate([[0], np.cumsum([len(s) for s in seen])]),
              "seen_indices": np.concatenate(seen),
              "popularity": np.bincount(np.concatenate(seen), minlength=n_items)}
    folder = tmp_path_factory.mktemp("serve") / "artefact"
    write_artefact(str(folder), arrays, {"model": "Random", "dataset": "random"})
    return str(folder)


class Served(NamedTuple):
    proc: subprocess.Popen
    host: str
    port: int
    stderr: Path


def _start(artefact: str, folder: Path, *python_options: str) -> Served:
    """``python [OPTIONS] -m recbole_promptmm serve --artefact=... --port=0``, once it said where it listens."""
    stderr = folder / "stderr.txt"
    with open(stderr, "w") as err:
        proc = subprocess.Popen([sys.executable, *python_options, "-m", "recbole_promptmm", "serve",
                                 f"--artefact={artefact}", "--port=0"], cwd=folder, env=_env(),
                                stdout=subprocess.PIPE, stderr=err, text=True)
    line = proc.stdout.readline()
    if " on http://127.0.0.1:" not in line:
        proc.kill()
        pytest.fail(f"serve did not start: {line!r}, {stderr.read_text()[-2000:]}")
    url = urlparse(line.split(" on ", 1)[1].split()[0])
    return Served(proc, url.hostname, url.port, stderr)


def _stop(served: Served, signum: int = signal.SIGINT) -> tuple[int, list[str]]:
    """Send ``signum``; the exit status and serve's stderr lines."""
    served.proc.send_signal(signum)
    code = served.proc.wait(timeout=60)  # generous: a slow machine, not a promptness check
    served.proc.stdout.close()
    return code, served.stderr.read_text().splitlines()


def test_serve_never_imports_torch_or_recbole(artefact, tmp_path):
    """``-X importtime`` lists every module the serve process imported, on its stderr."""
    served = _start(artefact, tmp_path, "-X", "importtime")
    conn = http.client.HTTPConnection(served.host, served.port, timeout=30)
    conn.request("GET", "/recommend?user=u1&k=5")
    assert conn.getresponse().status == 200
    conn.close()
    code, lines = _stop(served)
    imported = {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}
    assert {"numpy", "http.server", "recbole_promptmm.serving.http"} <= imported  # the listing is complete
    assert not {name for name in imported if name.split(".")[0] in HEAVY}
    assert code == 0


def test_serve_path_imports_numpy_alone():
    """What the console command imports before it dispatches: its module, the package, the serving modules."""
    script = ("import sys; import recbole_promptmm.__main__, recbole_promptmm.cli, recbole_promptmm.serving.http; "
              f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}), 'numpy' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[]", "True"]


def _burst(served: Served, users: list[str], k: int, keep_alive: bool, requests: int = 4) -> list[tuple]:
    """16 threads started together, ``requests`` GETs each (a new connection for each, or one kept alive):
    (user, status, items) of every answer, or (user, error) where a request failed."""
    start_together, answers = threading.Barrier(16), []

    def client(c: int) -> None:
        conn = None
        start_together.wait()
        for r in range(requests):
            user = users[(c * requests + r) % len(users)]
            try:
                conn = conn or http.client.HTTPConnection(served.host, served.port, timeout=30)
                conn.request("GET", f"/recommend?user={user}&k={k}")
                response = conn.getresponse()
                body = json.loads(response.read())
                answers.append((user, response.status, body["recommendations"][0]["items"]))
            except (OSError, http.client.HTTPException, ValueError) as err:
                answers.append((user, repr(err)))
            if not keep_alive or len(answers[-1]) == 2:
                conn = conn.close() if conn else None
        if conn:
            conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


@pytest.mark.parametrize("keep_alive", [False, True], ids=["new_connection_per_request", "keep_alive"])
def test_sixteen_concurrent_clients_get_the_artefacts_own_answers(artefact, tmp_path, keep_alive):
    rec = Recommender.load(artefact)
    users = rec.user_tokens[1:].tolist()
    expected = {r.user: r.items for r in rec.recommend(users, k=10)}
    assert rec.recommend(["u7"], k=10)[0].fallback == "popularity"  # the burst covers the fallback too
    served = _start(artefact, tmp_path)
    try:
        answers = _burst(served, users, 10, keep_alive)
    finally:
        code, lines = _stop(served)
    assert len(answers) == 64
    assert [a for a in answers if len(a) != 3 or a[1] != 200] == []
    assert [a for a in answers if a[2] != expected[a[0]]] == []
    assert {a[0] for a in answers} == set(users)
    assert code == 0 and lines[-1] == f"{PROG} serve: stopped (Ctrl-C)"
    assert not [line for line in lines if "Traceback" in line or "Error" in line]


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "recommendation-worker"]


def test_idle_connections_never_hold_up_a_new_one_and_close_ends_the_workers(artefact):
    """40 connections that never send a request each hold a worker thread; the 41st is answered all the same.
    Once they hang up, server_close() ends every worker."""
    server = RecommendationServer(Recommender.load(artefact), "127.0.0.1", 0)
    thread = server.start_background()
    idle = [socket.create_connection(server.server_address[:2], timeout=30) for _ in range(40)]
    try:
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
        conn.request("GET", "/recommend?user=u3&k=3")
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["recommendations"][0]["items"] == \
            Recommender.load(artefact).recommend(["u3"], k=3)[0].items
        conn.close()
        assert len(_workers()) >= 40
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()
    thread.join(timeout=30)
    deadline = time.monotonic() + 30  # generous (not a promptness check), and below the workers' idle end (60 s)
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not thread.is_alive() and _workers() == []


@pytest.mark.parametrize("signum, said", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_ctrl_c_or_sigterm_stops_serve_with_one_line(artefact, tmp_path, signum, said):
    served = _start(artefact, tmp_path)
    code, lines = _stop(served, signum)
    assert (code, lines) == (0, [f"{PROG} serve: stopped ({said})"])


LAZY = """
import sys
import recbole_promptmm
assert not {"torch", "recbole"} & set(sys.modules), "import recbole_promptmm loaded torch or RecBole"
TRIGGER
import numpy as np
registry = sys.modules["recbole_promptmm.registry"]
assert "PromptMM" in registry.our_models()  # every model imported once, registered once
assert recbole_promptmm.get_model is registry.get_model, "a module ran twice"
assert sys.modules["recbole.model.general_recommender.lattice"] is sys.modules["recbole_promptmm.model.lattice"]
assert np.float_ is np.float64 and callable(recbole_promptmm.run)  # compat applied
assert sys.modules["torch"].__spec__.name == "torch" and type(sys.modules["torch"].__spec__.loader).__name__ != "_Loaded"
print("ok")
"""


@pytest.mark.parametrize("trigger", [
    "import torch",  # (or recbole: README's promise for RecBole's own load_data_and_model)
    "from recbole_promptmm.model.lattice import LATTICE",  # a submodule that loading itself imports
    "recbole_promptmm.config.load_yaml",  # an attribute, as `recbole-promptmm run` takes recbole_promptmm.run
])
def test_the_package_loads_on_first_need(trigger):
    """``import recbole_promptmm`` loads nothing heavy; torch, RecBole, a submodule or a public name then loads
    the whole package once (compatibility fixes, models, their registration with RecBole)."""
    proc = subprocess.run([sys.executable, "-c", LAZY.replace("TRIGGER", trigger)], capture_output=True, text=True,
                          timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


def test_without_torch_or_recbole_a_public_name_says_what_is_missing():
    """A serving host: the package imports, serve's modules work, ``recbole_promptmm.run`` is an ImportError that
    names what is missing (not a ModuleNotFoundError from deep inside)."""
    script = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'recbole'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name.split('.')[0])
sys.meta_path.insert(0, Block())
import recbole_promptmm
import recbole_promptmm.cli, recbole_promptmm.serving.http
try:
    recbole_promptmm.run
except ImportError as err:
    print(type(err).__name__, err)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ImportError recbole_promptmm.run needs recbole, which is not installed here")
