"""Serving benchmark (prints figures; not a test): the exported student next to its teacher's full pipeline,
``serve`` under a bounded loopback load, and a synthetic large catalogue with exact and faiss search.

    OMP_NUM_THREADS=1 python benchmarks/serving.py --student=saved/PromptMM-...-student.pth \
        --teacher=saved/LATTICE-....pth [--k=20] [--requests=2000] [--time_limit=60] [--large_items=1000000]
    OMP_NUM_THREADS=1 python benchmarks/serving.py --artefact=ARTEFACT_FOLDER --large_items=0   # serve alone

Artefact: bytes, load seconds, all users' top-k next to a bare numpy matmul + top-k, and the users whose top-k
equals RecBole's ``full_sort_topk`` and the checkpoint model's own (as ``recbole-promptmm recommend`` ranks).
Teacher (the package's ``measure_cost``): bytes of its serving state, all users' top-k through its own pipeline from
a cold cache (median of 3). Serve: ``python -m recbole_promptmm serve`` in its own process on 127.0.0.1 (seconds
until ``/health`` answers, RSS, whether torch got loaded), then ``--requests`` requests each (``--time_limit``
seconds at most) from 1 and 8 keep-alive clients and 16 clients with a new connection per request or keep-alive,
all clients started together: p50 / p99 / max latency, requests/s, errors (every answer is checked against the
artefact's own numpy scoring), serve's CPU per request; then Ctrl-C: time to exit, exit status, last line; the
kernel's listen overflows meanwhile. Large catalogue: ``--large_items`` random items x d 64, 1,000 queries: exact
top-k, faiss IVF-Flat.
"""

import gc
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlparse

import numpy as np
import torch

from _common import entry, parser, seconds
from recbole.utils.case_study import full_sort_topk
from recbole_promptmm.model.accounting import measure_cost
from recbole_promptmm.serving.artefact import Recommender
from recbole_promptmm.serving.export import export, load_run
from recbole_promptmm.serving.recommend import catalogue_of, model_recommendations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bare_top_k(user: np.ndarray, item_t: np.ndarray, k: int, batch: int = 4096) -> np.ndarray:
    """What any server has to do at least: matmul, argpartition, sort of the k."""
    out = []
    for start in range(0, len(user), batch):
        scores = user[start:start + batch] @ item_t
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        out.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(out)


def artefact_top_k(rec: Recommender, k: int, batch: int = 4096) -> np.ndarray:
    users = np.arange(1, len(rec.user_tokens))
    return np.concatenate([rec.top_k(rec.scores(users[s:s + batch]), users[s:s + batch], k)[0]
                           for s in range(0, len(users), batch)])


def same_as_model(loaded, rec: Recommender, tokens: list[str], k: int, batch: int = 4096) -> float:
    """Fraction of ``tokens`` whose artefact top-k equals the one of the checkpoint's model (training items
    masked), both ranked by the package's ``Catalogue.top_k``: the artefact's scores are the model's."""
    catalogue, same = catalogue_of(loaded), 0
    for s in range(0, len(tokens), batch):
        chunk = tokens[s:s + batch]
        expected = model_recommendations(loaded, catalogue, chunk, k, include_seen=False)
        same += sum(a.items == b.items for a, b in zip(rec.recommend(chunk, k), expected))
    return same / len(tokens)


def http_load(host: str, port: int, expected: dict[str, list[str]], k: int, clients: int, requests: int,
              time_limit: float, keep_alive: bool = True) -> dict:
    """``requests`` GETs of ``/recommend?user=U&k=k`` spread over ``clients`` threads that start together, each
    on one keep-alive connection or a new connection per request; prints and returns the latency (p50, p99, max
    ms), requests/s and errors: a failed connection, a status other than 200, or items other than ``expected``
    (the artefact's own numpy scoring). Stops after ``time_limit`` seconds whatever is left."""
    users, per_client = list(expected), max(1, requests // clients)
    start_together, deadline = threading.Barrier(clients), time.monotonic() + time_limit

    def client(c: int) -> list[tuple[float, str, int, bytes]]:
        """(seconds, user, status, body) of each request; status 0: it failed."""
        mine, conn = [], None
        start_together.wait()
        for r in range(per_client):
            if time.monotonic() > deadline:
                break
            user, start = users[(c * per_client + r) % len(users)], time.perf_counter()
            try:
                conn = conn or http.client.HTTPConnection(host, port, timeout=30)
                conn.request("GET", f"/recommend?user={quote(user)}&k={k}")
                response = conn.getresponse()
                mine.append((time.perf_counter() - start, user, response.status, response.read()))
            except (OSError, http.client.HTTPException):
                mine.append((time.perf_counter() - start, user, 0, b""))
                conn = conn.close() if conn else None
            if not keep_alive and conn:
                conn = conn.close()
        if conn:
            conn.close()
        return mine

    def wrong(user: str, status: int, body: bytes) -> bool:  # checked after the load: no client CPU meanwhile
        try:
            return status != 200 or json.loads(body)["recommendations"][0]["items"] != expected[user]
        except (ValueError, KeyError, IndexError):
            return True

    with ThreadPoolExecutor(clients) as pool:
        results, wall = seconds(lambda: [x for mine in pool.map(client, range(clients)) for x in mine])
    ms = np.array([x[0] * 1000 for x in results])
    out = {"clients": clients, "keep_alive": keep_alive, "requests": len(ms),
           "errors": sum(wrong(*x[1:]) for x in results),
           "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
           "requests_per_s": len(ms) / wall}
    print(f"HTTP {clients} client(s), {'keep-alive' if keep_alive else 'new connection per request'}: "
          f"{out['requests']} requests, {out['errors']} errors, p50 {out['p50_ms']:.2f} ms, p99 {out['p99_ms']:.2f} "
          f"ms, max {out['max_ms']:.2f} ms, {out['requests_per_s']:,.0f} requests/s")
    return out


def _rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (``VmRSS`` of ``/proc/PID/status``; NaN where there is none)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:")), float("nan"))
    except OSError:
        return float("nan")


def _loaded_torch(pid: int) -> str:
    """Whether process ``pid`` mapped torch's shared library: "loaded", "not loaded" or "unknown" (not Linux)."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return "loaded" if any("libtorch" in line for line in maps) else "not loaded"
    except OSError:
        return "unknown"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (``/proc/PID/stat``; NaN where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def listen_overflows() -> int | None:
    """The kernel's count of connections dropped because a listen backlog was full (all sockets; Linux)."""
    try:
        with open("/proc/net/netstat") as f:
            names, values = [line.split() for line in f if line.startswith("TcpExt:")][:2]
        return int(values[names.index("ListenOverflows")])
    except (OSError, ValueError):
        return None


def start_serve(folder: str, log) -> tuple[subprocess.Popen, str, int]:
    """``python -m recbole_promptmm serve --artefact=FOLDER --port=0`` in a process of its own, as a user starts it
    (its request log to ``log``); prints the seconds from launch until ``/health`` answers, its resident memory
    then and whether it loaded torch."""
    command = [sys.executable, "-m", "recbole_promptmm", "serve", f"--artefact={folder}", "--port=0"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    line = proc.stdout.readline()
    if " on http://" not in line:
        proc.kill()
        raise RuntimeError(f"serve did not start: {line!r} (exit status {proc.wait()})")
    url = urlparse(line.split(" on ", 1)[1].split()[0])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    started = time.perf_counter() - start
    conn.close()
    print(f"serve: answers /health {started:.2f} s after launch, RSS {_rss_mib(proc.pid):.0f} MiB, "
          f"torch {_loaded_torch(proc.pid)}")
    return proc, url.hostname, url.port


def stop_serve(proc: subprocess.Popen, log_path: str) -> None:
    """Ctrl-C (SIGINT) ``serve``: prints how long it took to exit, its exit status and its last line."""
    start = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = f"killed after {proc.wait()} s"
    with open(log_path) as f:
        last = (f.read().strip().splitlines() or [""])[-1]
    print(f"serve: Ctrl-C (SIGINT) to exit {(time.perf_counter() - start) * 1000:.0f} ms, exit status {code}, "
          f"last line {last!r}")


def serve_under_load(folder: str, k: int, requests: int, time_limit: float) -> None:
    """``serve`` over the artefact at ``folder`` on 127.0.0.1: start time and memory, then ``requests`` requests
    each with 1 and 8 keep-alive clients and 16 clients with a new connection per request or keep-alive (every
    answer checked against the artefact's own numpy scoring), then Ctrl-C."""
    rec = Recommender.load(folder)
    expected = {r.user: r.items for r in rec.recommend(rec.user_tokens[1:].tolist(), k=k)}
    # This process holds torch and RecBole: a full garbage collection here takes ~0.2 s and would stall every
    # client thread, a pause of the client that the latencies would count as serve's (serve holds numpy alone).
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "serve.log")
        with open(log_path, "w") as log:
            proc, host, port = start_serve(folder, log)
        overflows = listen_overflows()
        try:
            for clients, keep_alive in ((1, True), (8, True), (16, False), (16, True)):
                cpu = cpu_seconds(proc.pid)
                done = http_load(host, port, expected, k, clients, requests, time_limit, keep_alive)["requests"]
                print(f"  serve's CPU: {(cpu_seconds(proc.pid) - cpu) / done * 1000:.2f} ms per request")
        finally:
            stop_serve(proc, log_path)
        if overflows is not None:
            print(f"listen overflows during the load (kernel counter, all sockets): {listen_overflows() - overflows}")


def large_catalogue(n_items: int, k: int, d: int = 64, queries: int = 1000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    item = rng.standard_normal((n_items, d), dtype=np.float32)
    user = rng.standard_normal((queries, d), dtype=np.float32)
    exact, exact_s = seconds(bare_top_k, user, np.ascontiguousarray(item.T), k, 256)
    print(f"large catalogue: {n_items:,} items x d {d}, {queries} queries, top-{k}")
    print(f"  exact (matmul + argpartition): {exact_s:.3f} s = {queries / exact_s:,.0f} queries/s")
    try:
        import faiss
    except ImportError:
        print("  faiss: not installed (pip install faiss-cpu)")
        return
    # IVF-Flat: k-means cells (trained on a sample), a query scans the nprobe nearest cells; builds in seconds
    # where HNSW takes many minutes on one thread at this size.
    nlist = 1024

    def build():
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(item[rng.choice(n_items, size=min(n_items, 64 * nlist), replace=False)])
        index.add(item)
        return index
    index, build_s = seconds(build)
    for nprobe in (8, 32, 128, 512):
        index.nprobe = nprobe
        (_, found), query_s = seconds(index.search, user, k)
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact)])
        print(f"  faiss IVF-Flat ({nlist} cells, nprobe {nprobe}; build {build_s:.1f} s): {query_s:.3f} s = "
              f"{queries / query_s:,.0f} queries/s ({exact_s / query_s:.1f}x exact), recall@{k} vs exact {recall:.3f}")


def artefact_figures(student: str, folder: str, k: int, teacher: str | None) -> None:
    """Export ``student`` to ``folder``; print the artefact's size, load time, top-k speed next to a bare matmul,
    its agreement with RecBole's ``full_sort_topk`` and the model, faiss, and ``teacher``'s own pipeline."""
    print(f"export: {seconds(export, student, folder)[1]:.1f} s (rebuilds the model from its data)")
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    load_s = min(seconds(Recommender.load, folder)[1] for _ in range(3))
    rec = Recommender.load(folder)
    n_users, tokens = len(rec.user_tokens) - 1, rec.user_tokens[1:].tolist()
    ours = min(seconds(artefact_top_k, rec, k)[1] for _ in range(3))
    bare = min(seconds(bare_top_k, rec.user_emb[1:], rec.item_emb_t, k)[1] for _ in range(3))
    print(f"artefact ({rec.meta['model']}, {n_users:,} users x {rec.n_items - 1:,} items, d "
          f"{rec.user_emb.shape[1]}): {size / 2**20:.2f} MiB, load {load_s * 1000:.0f} ms")
    print(f"  top-{k} all users: {ours:.3f} s = {n_users / ours:,.0f} users/s; bare matmul + top-k "
          f"{bare:.3f} s = {n_users / bare:,.0f} users/s; ratio {ours / bare:.2f}x")

    loaded = load_run(student)
    # full_sort_topk ranks the users its loader holds (history = training items): the validation users
    users = np.asarray(loaded.valid_data.uid_list)
    _, expected = full_sort_topk(users, loaded.model, loaded.valid_data, k)
    same = (rec.top_k(rec.scores(users), users, k)[0] == expected.numpy()).all(axis=1).mean()
    print(f"  top-{k} lists identical to RecBole's full_sort_topk: {same:.4f} of the {len(users):,} "
          "validation users (any others differ only where two scores are equal to float32 rounding)")
    print(f"  ... and to the checkpoint's model (its full_sort_predict, training items masked): "
          f"{same_as_model(loaded, rec, tokens, k):.4f} of all {n_users:,} users")

    try:
        approx = Recommender.load(folder).use_faiss()
        got, faiss_s = seconds(approx.recommend, tokens, k)
        recall = np.mean([len(set(a.items) & set(b.items)) / max(1, len(b.items))
                          for a, b in zip(got, rec.recommend(tokens, k=k))])
        print(f"  Recommender.use_faiss() (HNSW M 32, efSearch 128): all users {faiss_s:.3f} s, recall@{k} "
              f"vs exact {recall:.4f} (exact search is the right choice at this size)")
    except ImportError:
        print("  faiss: not installed")

    if teacher:
        loaded_teacher = load_run(teacher)
        cost = measure_cost(loaded_teacher.model, loaded_teacher.train_data._dataset, users_per_batch=4096, topk=k)
        print(f"teacher {type(loaded_teacher.model).__name__}: serving state {cost.serving_bytes / 2**20:.2f} MiB "
              f"(parameters, features, graphs); student artefact / teacher = {size / cost.serving_bytes:.2f}")
        print(f"  top-{k} all users through its pipeline (forward + scoring, cold cache): "
              f"{cost.scoring_seconds:.3f} s = {n_users / cost.scoring_seconds:,.0f} users/s "
              f"({cost.scoring_seconds / ours:.1f}x the artefact)")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--student", default=None, help="a dot-product checkpoint (PromptMM's -student.pth)")
    p.add_argument("--artefact", default=None,
                   help="an exported artefact folder instead of --student: serve's measurements alone")
    p.add_argument("--teacher", default=None, help="the teacher checkpoint whose full pipeline is timed")
    for name, default in (("k", 20), ("requests", 2000), ("time_limit", 60.0), ("large_items", 1_000_000)):
        p.add_argument(f"--{name}", type=type(default), default=default)
    args = p.parse_args()
    if (args.student is None) == (args.artefact is None):
        raise ValueError("give one of --student=CHECKPOINT (export it, then serve it) or --artefact=FOLDER")
    print(f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.artefact or os.path.join(tmp, "artefact")
        if args.student:
            artefact_figures(args.student, folder, args.k, args.teacher)
        serve_under_load(folder, args.k, args.requests, args.time_limit)

    if args.large_items:
        large_catalogue(args.large_items, args.k)


if __name__ == "__main__":
    entry(main)
