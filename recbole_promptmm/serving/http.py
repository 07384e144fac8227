"""An HTTP endpoint over an artefact, on the standard library's ``http.server`` (no dependency to add; one
process serving each connection on a thread of its own (threads reused, :class:`_Workers`) is what a single-host
endpoint needs, and numpy's matmul releases the GIL). Put it behind a reverse proxy for TLS, authentication or many
hosts.

    GET /health                                   {"status": "ok", "model": ..., "dataset": ..., "users": ..., "items": ...}
    GET /recommend?user=U[&user=V...][&k=20][&include_seen=1]
        -> {"k": 20, "recommendations": [{"user": U, "items": [...], "scores": [...], "fallback": null}, ...]}

Every answer is JSON, errors included (``{"error": ...}``, a refused value cut to its first 40 characters): 400
for a bad, repeated or unknown parameter, 404 for an unknown user or route, 405 for any method but GET, and
http.server's own refusals (malformed request, URI too long, ...) too. ``k`` is capped at the number of items and
the answer's ``k`` says the length of the longest list. A bad request never stops the server.
Numpy and the standard library only, like :mod:`~recbole_promptmm.serving.artefact`.
"""

from __future__ import annotations

import json
import queue
import signal
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlparse

from recbole_promptmm.serving.artefact import Recommender, UnknownUserError, shorten

MAX_K = 1000
MAX_USERS = 1000  # per request: the score matrix is users x items
PARAMETERS = {"/health": (), "/recommend": ("user", "k", "include_seen")}  # route -> the query parameters it takes
BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


class BadRequest(ValueError):
    """A request the endpoint refuses with 400 (the message says which parameter and what it accepts)."""


def check_port(port: int) -> int:
    """``port`` if a server can listen on it (0: any free port, which the server then reports)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be between 1 and 65535 (or 0: any free port), got {port}")
    return port


def _parameters(route: str, query: str) -> dict[str, list[str]]:
    """The query string's parameters of ``route`` (name -> values, blank values kept); an unknown name, or a
    name other than ``user`` given twice, is a :class:`BadRequest`."""
    given = parse_qs(query, keep_blank_values=True)
    accepted = PARAMETERS[route]
    for name, values in given.items():
        if name not in accepted:
            names = ", ".join(accepted) if accepted else "none"
            raise BadRequest(f"unknown parameter {shorten(name)} for {route}; accepted: {names}")
        if name != "user" and len(values) > 1:
            raise BadRequest(f"{name} given {len(values)} times; give it once")
    return given


def _int_parameter(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer from {low} to {high}, got {shorten(text)}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}, got {value}")
    return value


def _bool_parameter(name: str, text: str) -> bool:
    if text.lower() not in BOOLEANS:
        raise BadRequest(f"{name} must be one of {', '.join(BOOLEANS)}, got {shorten(text)}")
    return BOOLEANS[text.lower()]


class _Handler(BaseHTTPRequestHandler):
    server: "RecommendationServer"
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    default_request_version = "HTTP/1.0"  # a malformed request line too gets a status line and JSON headers
    timeout = 120  # seconds a connection may stay silent before its thread gives it up
    # Headers and body leave in one send when http.server flushes after each request (unbuffered, each is a
    # send of its own: twice the system calls and loopback wake-ups per answer).
    wbufsize = 1 << 16

    def setup(self) -> None:
        super().setup()
        # Send each answer at once: with Nagle's algorithm the body waits for the client's delayed ACK of the
        # headers (about 40 ms per request on a keep-alive connection).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args) -> None:  # noqa: A002  (http.server's signature)
        if self.server.verbose:  # a request line can be 64 KiB: the log keeps its start
            super().log_message(format, *(a if not isinstance(a, str) or len(a) <= 200 else a[:200] + "..."
                                          for a in args))

    def _answer(self, status: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        request_headers = getattr(self, "headers", None)  # None: the request failed before its headers
        if request_headers is not None and (request_headers.get("Content-Length", "0").strip() not in ("", "0")
                                            or "Transfer-Encoding" in request_headers):
            self.close_connection = True  # its body is never read: it must not be taken for the next request
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (malformed request line, URI or header too long, HTTP/2, ...) as JSON too,
        their message cut (it may quote the whole request line)."""
        message = message or self.responses.get(code, ("error",))[0]
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self._answer(code, {"error": message if len(message) <= 200 else message[:200] + "..."})

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # every method but GET (POST, HEAD, PUT, DELETE, any word): 405
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        self._answer(405, {"error": f"method {shorten(self.command)} not allowed; use GET"}, {"Allow": "GET"})

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        try:
            status, payload = self._get()
        except Exception as err:  # a bug, not a bad request: say so, keep serving
            traceback.print_exc(file=sys.stderr)
            status, payload = 500, {"error": f"internal error: {type(err).__name__}: {str(err)[:200]}"}
        self._answer(status, payload)

    def _get(self) -> tuple[int, dict]:
        url = urlparse(self.path)
        if url.path not in PARAMETERS:
            return 404, {"error": f"no route {shorten(url.path)}; routes: {', '.join(PARAMETERS)} (GET)"}
        try:
            query = _parameters(url.path, url.query)
            if url.path == "/health":
                return 200, self.server.recommender.health()
            users = query.get("user", [])
            if not users:
                return 400, {"error": "missing user=TOKEN (repeat it for several users)"}
            if "" in users:
                return 400, {"error": "user is empty: give user=TOKEN"}
            if len(users) > MAX_USERS:
                return 400, {"error": f"{len(users)} users in one request; at most {MAX_USERS}"}
            k = _int_parameter("k", query.get("k", ["20"])[0], 1, MAX_K)
            include_seen = _bool_parameter("include_seen", query.get("include_seen", ["0"])[0])
        except BadRequest as err:
            return 400, {"error": str(err)}
        recommender = self.server.recommender
        try:
            recs = recommender.recommend(users, k=k, include_seen=include_seen)
        except UnknownUserError as err:
            return 404, {"error": str(err)}
        return 200, {"k": recommender.capped_k(k), "recommendations": [r.to_dict() for r in recs]}


class _Workers:
    """Daemon threads that each serve one connection at a time, then wait for the next: a connection goes to a
    waiting thread, or to a new one when none waits (a keep-alive connection never waits for another to end); a
    thread that waited ``idle_seconds`` in vain ends. Why not a thread per connection (``ThreadingMixIn``):
    ``Thread.start`` returns only once the new thread runs, and on a busy machine that held the accept loop
    ~1.3 ms per connection, a ceiling of ~800 new connections a second.

    ``waiting`` = threads waiting (or about to) - connections queued, never below 0: each queued connection has a
    waiting thread to take it."""

    def __init__(self, serve_one: Callable[..., None], idle_seconds: float = 60.0) -> None:
        self._serve_one, self._idle_seconds = serve_one, idle_seconds
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting = self._threads = 0

    def submit(self, *connection) -> None:
        with self._lock:
            start = self._waiting == 0
            self._waiting -= not start
            self._threads += start
        self._queue.put(connection)
        if start:
            threading.Thread(target=self._work, name="recommendation-worker", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                connection = self._queue.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._waiting > 0:  # more threads wait than connections are queued: this one can go
                        self._waiting, self._threads = self._waiting - 1, self._threads - 1
                        return
                continue
            if connection is None:  # close()
                return
            self._serve_one(*connection)
            with self._lock:
                self._waiting += 1

    def close(self) -> None:
        """Let every thread end once it is done with its connection (no more are submitted)."""
        with self._lock:
            for _ in range(self._threads):
                self._queue.put(None)


class RecommendationServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` answering from one :class:`Recommender`: each connection on a daemon thread of
    :class:`_Workers` (an idle keep-alive connection never delays the exit), and a listen backlog for bursts of new
    connections (socketserver's default of 5 made the kernel drop the SYNs of a 16-client burst: a dropped one is
    sent again after a second, hence p99 ~1 s)."""

    request_queue_size = 1024  # connections the kernel queues before accept (capped at net.core.somaxconn)

    def __init__(self, recommender: Recommender, host: str = "127.0.0.1", port: int = 8000,
                 verbose: bool = False) -> None:
        self.recommender, self.verbose = recommender, verbose
        self._workers = _Workers(self.process_request_thread)  # ThreadingMixIn's: handle, handle_error, close
        try:
            super().__init__((host, check_port(port)), _Handler)
        except OSError as err:  # address in use, a privileged port, an unknown host: one line, naming it
            raise OSError(f"cannot listen on {shorten(host)} port {port}: {err.strerror or err}") from None

    def process_request(self, request, client_address) -> None:
        self._workers.submit(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        self._workers.close()

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-answer is one line, not a traceback; the server goes on either way."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            if self.verbose:
                print(f"{client_address[0]}: connection lost ({error})", file=sys.stderr, flush=True)
        else:
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start_background(self) -> threading.Thread:
        """Serve in a daemon thread (tests, benchmarks); stop with ``shutdown()`` then ``server_close()``."""
        thread = threading.Thread(target=self.serve_forever, name="recommendation-server", daemon=True)
        thread.start()
        return thread


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def serve(artefact: str, host: str = "127.0.0.1", port: int = 8000, verbose: bool = True) -> None:
    """Load an artefact and answer requests until Ctrl-C or SIGTERM (the port is checked before the artefact
    loads); either raises ``KeyboardInterrupt`` (SIGTERM's says ``"SIGTERM"``) once the listening socket is closed
    (connections still open end with the process: their threads are daemons)."""
    check_port(port)
    server = RecommendationServer(Recommender.load(artefact), host, port, verbose)
    in_main = threading.current_thread() is threading.main_thread()  # only there can a signal handler be set
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None  # a service manager's stop
    try:
        print(f"serving {artefact} ({server.recommender.health()['model']}) on {server.url} "
              f"(GET /recommend?user=...&k=20, GET /health); Ctrl-C stops", flush=True)
        server.serve_forever()
    finally:
        server.server_close()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
