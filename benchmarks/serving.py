"""Serving benchmark (prints figures; not a test): the exported student next to its teacher's full pipeline, the
HTTP endpoint under a bounded loopback load, and a synthetic large catalogue with exact and faiss search.

    OMP_NUM_THREADS=1 python benchmarks/serving.py --student=saved/PromptMM-...-student.pth \
        --teacher=saved/LATTICE-....pth [--k=20] [--requests=2000] [--time_limit=60] [--large_items=1000000]

* Artefact: bytes on disk, load seconds, top-k for all users (users/s) from ``Recommender.top_k`` next to a bare
  numpy matmul + ``argpartition`` + sort of the same shapes (no seen-item masking), and the fraction of users
  whose exported top-k equals RecBole's ``full_sort_topk`` on the model (the target: all, up to exact ties).
* Teacher: bytes of its serving state (parameters, feature matrices, graph buffers), and all users' top-k through
  its own pipeline (feature projection, graphs, forward, full-sort scoring) from a cold cache.
* HTTP: ``serve`` on 127.0.0.1, a fixed number of ``GET /recommend?user=...&k=...`` requests from 1 and from 8
  concurrent clients (keep-alive connections), stopped at ``--time_limit`` seconds: p50 / p99 latency, requests/s.
* Large catalogue: random user/item embeddings (``--large_items`` x d 64, 1,000 queries): exact top-k seconds, and
  faiss (IVF-Flat, inner product) build seconds, query seconds and recall@k against exact search.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import tempfile
import threading
import time

import numpy as np
import torch

import recbole_promptmm  # noqa: F401  (compatibility fixes)
from recbole_promptmm.serving.artefact import Recommender
from recbole_promptmm.serving.export import export, load_run
from recbole_promptmm.serving.http import RecommendationServer


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


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


@torch.no_grad()
def model_top_k_agreement(loaded, rec: Recommender, k: int, batch: int = 4096) -> float:
    """Fraction of all users whose artefact top-k equals the model's own scores' torch.topk (seen items masked)."""
    from recbole.data.interaction import Interaction

    model, users, same = loaded.model, np.arange(1, len(rec.user_tokens)), 0
    for s in range(0, len(users), batch):
        ids = users[s:s + batch]
        scores = model.full_sort_predict(Interaction({model.USER_ID: torch.as_tensor(ids)})).view(len(ids), -1)
        scores[:, 0] = -np.inf
        rows, cols = rec.seen_cells(ids)
        scores[torch.as_tensor(rows), torch.as_tensor(cols)] = -np.inf
        expected = torch.topk(scores, k).indices.numpy()
        same += int((rec.top_k(rec.scores(ids), ids, k)[0] == expected).all(axis=1).sum())
    return same / len(users)


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.no_grad()
def teacher_pipeline_seconds(checkpoint: str, k: int, batch: int = 4096) -> tuple[float, int, str]:
    """All users' top-k through the teacher's own forward from a cold cache; its serving bytes; its name."""
    from recbole.data.interaction import Interaction

    loaded = load_run(checkpoint)
    model = loaded.model
    users = torch.arange(1, loaded.train_data._dataset.user_num)

    def once():
        model.eval()  # drops the embedding cache: the forward (features, graphs) runs again
        for s in range(0, len(users), batch):
            scores = model.full_sort_predict(Interaction({model.USER_ID: users[s:s + batch]})).view(-1, model.n_items)
            torch.topk(scores, k)

    return best_of(once), int(model.serving_bytes()), type(model).__name__


def http_load(server: RecommendationServer, users: list[str], k: int, clients: int, requests: int,
              time_limit: float) -> dict:
    """``requests`` GETs spread over ``clients`` threads (each with its own keep-alive connection)."""
    host, port = server.server_address[:2]
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit
    per_client = requests // clients

    def client(c: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        mine = []
        for r in range(per_client):
            if time.monotonic() > deadline:
                break
            user = users[(c * per_client + r) % len(users)]
            start = time.perf_counter()
            conn.request("GET", f"/recommend?user={user}&k={k}")
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - start)
            assert response.status == 200, response.status
        conn.close()
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = sorted(x * 1000 for x in latencies)
    return {"requests": len(ms), "p50_ms": statistics.median(ms), "p99_ms": ms[int(0.99 * (len(ms) - 1))],
            "rps": len(ms) / wall}


def large_catalogue(n_items: int, k: int, d: int = 64, queries: int = 1000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    item = rng.standard_normal((n_items, d), dtype=np.float32)
    user = rng.standard_normal((queries, d), dtype=np.float32)
    item_t = np.ascontiguousarray(item.T)
    start = time.perf_counter()
    exact = bare_top_k(user, item_t, k, batch=256)
    exact_s = time.perf_counter() - start
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
    start = time.perf_counter()
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(item[rng.choice(n_items, size=min(n_items, 64 * nlist), replace=False)])
    index.add(item)
    build_s = time.perf_counter() - start
    for nprobe in (8, 32, 128, 512):
        index.nprobe = nprobe
        start = time.perf_counter()
        _, found = index.search(user, k)
        query_s = time.perf_counter() - start
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact)])
        print(f"  faiss IVF-Flat ({nlist} cells, nprobe {nprobe}; build {build_s:.1f} s): {query_s:.3f} s = "
              f"{queries / query_s:,.0f} queries/s ({exact_s / query_s:.1f}x exact), recall@{k} vs exact {recall:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", required=True, help="a dot-product checkpoint (PromptMM's -student.pth)")
    parser.add_argument("--teacher", default=None, help="the teacher checkpoint whose full pipeline is timed")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--time_limit", type=float, default=60.0)
    parser.add_argument("--large_items", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "artefact")
        start = time.perf_counter()
        export(args.student, folder)
        print(f"export: {time.perf_counter() - start:.1f} s (rebuilds the model from its data)")
        size = folder_bytes(folder)
        load_s = best_of(lambda: Recommender.load(folder))
        rec = Recommender.load(folder)
        n_users = len(rec.user_tokens) - 1
        ours = best_of(lambda: artefact_top_k(rec, args.k))
        bare = best_of(lambda: bare_top_k(rec.user_emb[1:], rec.item_emb_t, args.k))
        print(f"artefact ({rec.meta['model']}, {n_users:,} users x {rec.n_items - 1:,} items, d "
              f"{rec.user_emb.shape[1]}): {size / 2**20:.2f} MiB, load {load_s * 1000:.0f} ms")
        print(f"  top-{args.k} all users: {ours:.3f} s = {n_users / ours:,.0f} users/s; bare matmul + top-k "
              f"{bare:.3f} s = {n_users / bare:,.0f} users/s; ratio {ours / bare:.2f}x")

        from recbole.utils.case_study import full_sort_topk

        loaded = load_run(args.student)
        # full_sort_topk ranks the users its loader holds (history = training items): the validation users
        users = np.asarray(loaded.valid_data.uid_list)
        _, expected = full_sort_topk(users, loaded.model, loaded.valid_data, args.k)
        got = rec.top_k(rec.scores(users), users, args.k)[0]
        same = (got == expected.numpy()).all(axis=1).mean()
        print(f"  top-{args.k} lists identical to RecBole's full_sort_topk: {same:.4f} of the {len(users):,} "
              "validation users (any others differ only where two scores are equal to float32 rounding)")
        same_all = model_top_k_agreement(loaded, rec, args.k)
        print(f"  ... and to the model's own full_sort_predict + torch.topk (training items masked): {same_all:.4f} "
              f"of all {n_users:,} users")

        try:
            approx = Recommender.load(folder).use_faiss()
            tokens = rec.user_tokens[1:].tolist()
            start = time.perf_counter()
            got = approx.recommend(tokens, k=args.k)
            faiss_s = time.perf_counter() - start
            want = rec.recommend(tokens, k=args.k)
            recall = np.mean([len(set(a.items) & set(b.items)) / max(1, len(b.items)) for a, b in zip(got, want)])
            print(f"  Recommender.use_faiss() (HNSW M 32, efSearch 128): all users {faiss_s:.3f} s, recall@{args.k} "
                  f"vs exact {recall:.4f} (exact search is the right choice at this size)")
        except ImportError:
            print("  faiss: not installed")

        if args.teacher:
            teacher_s, teacher_bytes, name = teacher_pipeline_seconds(args.teacher, args.k)
            print(f"teacher {name}: serving state {teacher_bytes / 2**20:.2f} MiB (parameters, features, graphs); "
                  f"student artefact / teacher = {size / teacher_bytes:.2f}")
            print(f"  top-{args.k} all users through its pipeline (forward + scoring, cold cache): {teacher_s:.3f} s "
                  f"= {n_users / teacher_s:,.0f} users/s ({teacher_s / ours:.1f}x the artefact)")

        server = RecommendationServer(rec, "127.0.0.1", 0)
        server.start_background()
        try:
            tokens = rec.user_tokens[1:].tolist()
            for clients in (1, 8):
                r = http_load(server, tokens, args.k, clients, args.requests, args.time_limit)
                print(f"HTTP {clients} client(s): {r['requests']} requests, p50 {r['p50_ms']:.2f} ms, p99 "
                      f"{r['p99_ms']:.2f} ms, {r['rps']:,.0f} requests/s")
        finally:
            server.shutdown()
            server.server_close()

    if args.large_items:
        large_catalogue(args.large_items, args.k)


if __name__ == "__main__":
    main()
