"""An HTTP endpoint over an artefact, on the standard library's ``http.server`` (no dependency to add; one
process with a thread per connection is what a single-host endpoint needs, and numpy's matmul releases the GIL).
Put it behind a reverse proxy for TLS, authentication or many hosts.

    GET /health                                   {"status": "ok", "model": ..., "dataset": ..., "users": ..., "items": ...}
    GET /recommend?user=U[&user=V...][&k=20][&include_seen=1]
        -> {"k": 20, "recommendations": [{"user": U, "items": [...], "scores": [...], "fallback": null}, ...]}

Errors answer JSON ``{"error": ...}``: 400 for a bad parameter, 404 for an unknown user or route.
Numpy and the standard library only, like :mod:`~recbole_promptmm.serving.artefact`.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from recbole_promptmm.serving.artefact import Recommender, UnknownUserError

MAX_K = 1000


class _Handler(BaseHTTPRequestHandler):
    server: "RecommendationServer"
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection

    def setup(self) -> None:
        super().setup()
        # Send each answer at once: with Nagle's algorithm the body waits for the client's delayed ACK of the
        # headers (about 40 ms per request on a keep-alive connection).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args) -> None:  # noqa: A002  (http.server's signature)
        if self.server.verbose:
            super().log_message(format, *args)

    def _answer(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/health":
            return self._answer(200, self.server.recommender.health())
        if url.path != "/recommend":
            return self._answer(404, {"error": f"no route {url.path}; routes: /health, /recommend"})
        users = query.get("user", [])
        if not users:
            return self._answer(400, {"error": "missing user=TOKEN (repeat it for several users)"})
        try:
            k = int(query.get("k", ["20"])[0])
        except ValueError:
            return self._answer(400, {"error": f"k must be an integer, got {query['k'][0]!r}"})
        if not 1 <= k <= MAX_K:
            return self._answer(400, {"error": f"k must be between 1 and {MAX_K}, got {k}"})
        include_seen = query.get("include_seen", ["0"])[0].lower() in ("1", "true", "yes")
        try:
            recs = self.server.recommender.recommend(users, k=k, include_seen=include_seen)
        except UnknownUserError as err:
            return self._answer(404, {"error": str(err)})
        return self._answer(200, {"k": k, "recommendations": [r.to_dict() for r in recs]})


class RecommendationServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` answering from one :class:`Recommender`."""

    daemon_threads = True

    def __init__(self, recommender: Recommender, host: str = "127.0.0.1", port: int = 8000,
                 verbose: bool = False) -> None:
        self.recommender, self.verbose = recommender, verbose
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start_background(self) -> threading.Thread:
        """Serve in a daemon thread (tests, benchmarks); stop with ``shutdown()`` then ``server_close()``."""
        thread = threading.Thread(target=self.serve_forever, name="recommendation-server", daemon=True)
        thread.start()
        return thread


def serve(artefact: str, host: str = "127.0.0.1", port: int = 8000, verbose: bool = True) -> None:
    """Load an artefact and answer requests until Ctrl-C."""
    server = RecommendationServer(Recommender.load(artefact), host, port, verbose)
    print(f"serving {artefact} ({server.recommender.health()['model']}) on {server.url} "
          f"(GET /recommend?user=...&k=20, GET /health); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
