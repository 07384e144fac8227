"""``serve`` and ``recommend`` refuse every bad parameter: the commands with exit status 2 and one line, before the
artefact or the dataset loads and writing nothing; the HTTP endpoint with a JSON error for every method and status,
echoing at most the start of a refused value, and it goes on answering after each bad request."""

from __future__ import annotations

import csv
import http.client
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import pytest

from recbole_promptmm.serving.http import RecommendationServer
from tests.conftest import REPO
from tests.test_checkpoint_errors import bpr  # noqa: F401  (the fixture: a 1-epoch BPR run on the toy data)
from tests.test_serving import _hand_artefact

PROG = "recbole-promptmm"
LONG = "x" * 10_000


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "recbole_promptmm", *args]


def _refused(returncode: int, stderr: str, command: str) -> str:
    """The one stderr line of a command refused with exit status 2 (no traceback, no usage block)."""
    assert returncode == 2, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(f"{PROG} {command}: error: "), lines[0]
    assert len(lines[0]) < 400, lines[0]  # a long value is never echoed in full
    return lines[0]


def _console(capsys, command: str, *args: str) -> tuple[int, str, str]:
    """``recbole-promptmm COMMAND ARGS`` in this process (the console script's ``main``; a process of its own
    takes half a minute to import torch, RecBole and Ray on a loaded machine): exit status, stdout, stderr."""
    from recbole_promptmm.cli import main

    try:
        code = main([command, *args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ serve: the command line
@pytest.fixture
def hand(tmp_path) -> str:
    _hand_artefact(tmp_path / "hand")
    return str(tmp_path / "hand")


def test_serve_port_out_of_range_is_one_line_in_its_own_process(tmp_path):
    proc = subprocess.run(_command("serve", "--artefact=missing", "--port=99999"), cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    line = _refused(proc.returncode, proc.stderr, "serve").replace("python -m recbole_promptmm", PROG)
    assert line.endswith("--port must be between 1 and 65535 (or 0: any free port), got 99999")
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option, message", [
    ("--port=65536", "--port must be between 1 and 65535 (or 0: any free port), got 65536"),
    ("--port=-1", "--port must be between 1 and 65535 (or 0: any free port), got -1"),
    ("--port=eighty", "argument --port: expected an integer, got 'eighty'"),
    (f"--port={LONG}", f"argument --port: expected an integer, got '{LONG[:40]}'... (10000 characters)"),
    ("--artefact=missing", "artefact missing does not exist"),
    ("--verbose=1", "unrecognized arguments: --verbose=1"),
], ids=["port_too_high", "port_negative", "port_not_a_number", "port_long", "artefact_missing", "unknown_option"])
def test_serve_refuses_a_bad_option_in_one_line(hand, capsys, monkeypatch, option, message):
    monkeypatch.setattr(RecommendationServer, "serve_forever", _must_not_serve)
    # --port is checked before the artefact loads: with --artefact=missing a port check after it would not show
    artefact = "missing" if option.startswith("--port") else hand
    args = [f"--artefact={artefact}", option] if not option.startswith("--artefact") else [option]
    code, out, err = _console(capsys, "serve", *args)
    assert message in _refused(code, err, "serve")
    assert out == ""


def _must_not_serve(self, *args) -> None:
    raise AssertionError("the server started")


def test_serve_refuses_a_port_in_use(hand, capsys, monkeypatch):
    monkeypatch.setattr(RecommendationServer, "serve_forever", _must_not_serve)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = _console(capsys, "serve", f"--artefact={hand}", f"--port={port}")
    assert f"cannot listen on '127.0.0.1' port {port}: Address already in use" in _refused(code, err, "serve")


# ------------------------------------------------------------------ serve: bad requests, one server for all
class Served(NamedTuple):
    proc: subprocess.Popen | None
    host: str
    port: int
    log: Path | None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``recbole-promptmm serve --port=0`` (any free port) over the hand-made artefact, in a process of its own."""
    folder = tmp_path_factory.mktemp("serve")
    _hand_artefact(folder / "hand")
    log = folder / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(_command("serve", f"--artefact={folder / 'hand'}", "--port=0"), cwd=folder,
                                env=_env(), stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        line = proc.stdout.readline()
        assert " on http://127.0.0.1:" in line, (line, log.read_text())
        url = urlparse(line.split(" on ", 1)[1].split()[0])
        yield Served(proc, url.hostname, url.port, log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _request(server: Served, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _raw(server: Served, data: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (a request http.client would not send); the status and body of the answer."""
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer[:500]
    return int(head.split()[1]), body


BAD_REQUESTS = {
    # id: (method, path or raw bytes, body, status, what the error says)
    "post": ("POST", "/recommend?user=u1", b"user=u1", 405, "method 'POST' not allowed; use GET"),
    "put": ("PUT", "/recommend?user=u1", b"{}", 405, "method 'PUT' not allowed"),
    "delete": ("DELETE", "/recommend", None, 405, "method 'DELETE' not allowed"),
    "patch": ("PATCH", "/health", None, 405, "method 'PATCH' not allowed"),
    "options": ("OPTIONS", "/recommend", None, 405, "method 'OPTIONS' not allowed"),
    "head": ("HEAD", "/recommend?user=u1", None, 405, None),
    "made_up_method": ("BREW", "/recommend", None, 405, "method 'BREW' not allowed"),
    "malformed_request_line": (None, b"NONSENSE\r\n\r\n", None, 400, "Bad request"),
    "http2": (None, b"GET /health HTTP/2.0\r\n\r\n", None, 505, "Invalid HTTP version"),
    "uri_too_long": (None, b"GET /recommend?user=" + b"x" * 65517, None, 414, "Request-URI Too Long"),
    "long_unknown_user": ("GET", f"/recommend?user={LONG}", None, 404,
                          f"unknown user '{LONG[:40]}'... (10000 characters)"),
    "unknown_users_named": ("GET", "/recommend?user=u1&user=a&user=b&user=c&user=d", None, 404,
                            "unknown user 'a', 'b', 'c' and 1 more: not in the training data of this model "
                            "(3 users, e.g. 'u1', 'u2', 'u3')"),
    "include_seen_maybe": ("GET", "/recommend?user=u1&include_seen=maybe", None, 400,
                           "include_seen must be one of 1, true, yes, 0, false, no, got 'maybe'"),
    "include_seen_long": ("GET", f"/recommend?user=u1&include_seen={LONG}", None, 400,
                          f"include_seen must be one of 1, true, yes, 0, false, no, got '{LONG[:40]}'..."),
    "unknown_parameter": ("GET", "/recommend?user=u1&top=5", None, 400,
                          "unknown parameter 'top' for /recommend; accepted: user, k, include_seen"),
    "parameter_on_health": ("GET", "/health?verbose=1", None, 400,
                            "unknown parameter 'verbose' for /health; accepted: none"),
    "k_twice": ("GET", "/recommend?user=u1&k=2&k=3", None, 400, "k given 2 times; give it once"),
    "k_not_a_number": ("GET", "/recommend?user=u1&k=ten", None, 400,
                       "k must be an integer from 1 to 1000, got 'ten'"),
    "k_zero": ("GET", "/recommend?user=u1&k=0", None, 400, "k must be an integer from 1 to 1000, got 0"),
    "k_too_high": ("GET", "/recommend?user=u1&k=1001", None, 400, "k must be an integer from 1 to 1000, got 1001"),
    "user_empty": ("GET", "/recommend?user=", None, 400, "user is empty"),
    "user_missing": ("GET", "/recommend?k=5", None, 400, "missing user=TOKEN"),
    "too_many_users": ("GET", "/recommend?" + "&".join(["user=u1"] * 1001), None, 400,
                       "1001 users in one request; at most 1000"),
    "unknown_route": ("GET", "/recommendations?user=u1", None, 404,
                      "no route '/recommendations'; routes: /health, /recommend (GET)"),
    "long_route": ("GET", "/" + LONG, None, 404, f"no route '/{LONG[:39]}'... (10001 characters)"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_a_bad_request_gets_a_json_error_and_the_server_goes_on(server, case):
    method, target, body, status, message = BAD_REQUESTS[case]
    if method is None:
        got, raw = _raw(server, target)
    else:
        got, headers, raw = _request(server, method, target, body)
        assert headers["Content-Type"] == "application/json"
        if status == 405:
            assert headers["Allow"] == "GET"
        if body:  # the body is never read: the connection must close rather than parse it as the next request
            assert headers["Connection"] == "close"
    assert got == status
    if method == "HEAD":
        assert raw == b""
    else:
        error = json.loads(raw)["error"]
        assert message in error
        assert len(error) < 300
    assert server.proc.poll() is None
    assert _request(server, "GET", "/health")[0] == 200
    assert _request(server, "GET", "/recommend?user=u1&k=2")[0] == 200


def test_k_above_the_number_of_items_is_capped_and_reported(server):
    status, _, raw = _request(server, "GET", "/recommend?user=u1&user=u2&k=10")
    answer = json.loads(raw)
    assert status == 200 and answer["k"] == 4  # the hand-made artefact has 4 items
    assert [len(r["items"]) for r in answer["recommendations"]] == [3, 4]  # u1 has seen one of them
    assert "Traceback" not in server.log.read_text()


def test_an_internal_error_is_a_json_500_and_the_server_goes_on(tmp_path, capsys):
    rec = _hand_artefact(tmp_path / "hand")
    server = RecommendationServer(rec, "127.0.0.1", 0)
    thread = server.start_background()
    served = Served(None, *server.server_address[:2], None)
    try:
        rec.recommend = lambda *a, **k: 1 / 0
        status, _, raw = _request(served, "GET", "/recommend?user=u1")
        assert status == 500
        assert json.loads(raw)["error"] == "internal error: ZeroDivisionError: division by zero"
        assert _request(served, "GET", "/health")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
    thread.join(timeout=10)
    assert "ZeroDivisionError" in capsys.readouterr().err  # the traceback goes to the server's console


# ------------------------------------------------------------------ recommend
@pytest.fixture(scope="module")
def checkpoint(bpr) -> str:
    """A BPR checkpoint on the toy dataset (30 users, 40 items, 1 epoch): the run of ``bpr``."""
    return bpr["checkpoint"]


MISSING = "--checkpoint=missing.pth"
EARLY = {  # refused before the checkpoint is read: the checkpoint given does not even exist
    "k_zero": ([MISSING, "--out=top.csv", "--k=0"], "--k must be >= 1, got 0"),
    "k_negative": ([MISSING, "--out=top.csv", "--k=-3"], "--k must be >= 1, got -3"),
    "k_not_a_number": ([MISSING, "--out=top.csv", "--k=ten"], "argument --k: expected an integer, got 'ten'"),
    "format_unknown": ([MISSING, "--out=top.csv", "--format=xml"], "--format must be one of csv, jsonl, got 'xml'"),
    "format_contradicts_out": ([MISSING, "--out=top.jsonl", "--format=csv"],
                               "--format=csv contradicts --out='top.jsonl' (a .jsonl file is jsonl)"),
    "out_without_format": ([MISSING, "--out=top.txt"], "--out='top.txt': its extension does not name a format"),
    "out_is_a_folder": ([MISSING, "--out=folder.csv"], "--out='folder.csv' is a folder"),
    "users_empty": ([MISSING, "--out=top.csv", "--users=,"], "--users names no user"),
    "include_seen_with_value": ([MISSING, "--out=top.csv", "--include_seen=maybe"],
                                "argument --include_seen: ignored explicit argument 'maybe'"),
    "checkpoint_not_given": (["--out=top.csv"], "the following arguments are required: --checkpoint"),
}


@pytest.mark.parametrize("case", EARLY)
def test_recommend_refuses_a_bad_option_before_loading(tmp_path, capsys, case):
    args, message = EARLY[case]
    (tmp_path / "folder.csv").mkdir()
    code, _, err = _console(capsys, "recommend", *args)
    assert message in _refused(code, err, "recommend")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.csv"]  # nothing written
    assert not any((tmp_path / "folder.csv").iterdir())


def test_recommend_names_unknown_users_and_writes_nothing(checkpoint, tmp_path, capsys):
    code, _, err = _console(capsys, "recommend", f"--checkpoint={checkpoint}", "--out=top.csv",
                            f"--users=1,nobody,{LONG},2")
    line = _refused(code, err, "recommend")
    assert f"unknown user 'nobody', '{LONG[:40]}'... (10000 characters): not in the training data" in line
    assert "(30 users, e.g. " in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("include_seen", [False, True])
def test_recommend_caps_k_at_the_items_and_reports_what_it_wrote(checkpoint, tmp_path, capsys, include_seen):
    args = [f"--checkpoint={checkpoint}", "--out=top.csv", "--k=1000000000", *(["--include_seen"] * include_seen)]
    if include_seen:
        code, out, err = _console(capsys, "recommend", *args)
    else:  # once in a process of its own, as a user runs it
        proc = subprocess.run(_command("recommend", *args), cwd=tmp_path, env=_env(), capture_output=True,
                              text=True, timeout=300)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    assert code == 0, err[-3000:]
    rows = list(csv.DictReader((tmp_path / "top.csv").open()))
    lengths = Counter(r["user"] for r in rows)
    assert len(lengths) == 30 and max(lengths.values()) <= 40
    line = out.strip().splitlines()[-1]
    written = "top-40 of 30 users written to top.csv (--k=1000000000 capped at the 40 items"
    if include_seen:
        assert set(lengths.values()) == {40}
        assert line == written + ")"
    else:  # each list holds every item but the user's training items
        assert max(lengths.values()) < 40
        assert line == written + f"; the shortest list has {min(lengths.values())} items: training items excluded)"


@pytest.mark.parametrize("command, args, expected", [
    ("run", ["--model"], "argument --model/-m: expected one argument"),
    ("compare", ["--max_concurrent=abc"], "argument --max_concurrent: invalid int value: 'abc'"),
    ("tune", ["--num_samples=x"], "argument --num_samples: invalid int value: 'x'"),
])
def test_every_command_line_parser_refuses_in_one_line(capsys, command, args, expected):
    code, out, err = _console(capsys, command, *args)
    prog = f"{PROG} run" if command == "run" else f"python -m recbole_promptmm.{command}"
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"{prog}: error: {expected}; -h lists the options"]
