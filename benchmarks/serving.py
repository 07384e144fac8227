"""Serving benchmark (prints figures; not a test): the exported student next to its teacher's full pipeline, the
HTTP endpoint under a bounded loopback load, and a synthetic large catalogue with exact and faiss search.

    OMP_NUM_THREADS=1 python benchmarks/serving.py --student=saved/PromptMM-...-student.pth \
        --teacher=saved/LATTICE-....pth [--k=20] [--requests=2000] [--time_limit=60] [--large_items=1000000]

Artefact: bytes, load seconds, all users' top-k next to a bare numpy matmul + top-k, and the users whose top-k
equals RecBole's ``full_sort_topk`` and the checkpoint model's own (as ``recbole-promptmm recommend`` ranks).
Teacher (the package's ``measure_cost``): bytes of its serving state, all users' top-k through its own pipeline from
a cold cache (median of 3). HTTP: ``serve`` on 127.0.0.1, 1 and 8 keep-alive clients: p50 / p99 latency,
requests/s. Large catalogue: ``--large_items`` random items x d 64, 1,000 queries: exact top-k, faiss IVF-Flat.
"""

import http.client
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from _common import entry, parser, seconds
from recbole.utils.case_study import full_sort_topk
from recbole_promptmm.model.accounting import measure_cost
from recbole_promptmm.serving.artefact import Recommender
from recbole_promptmm.serving.export import export, load_run
from recbole_promptmm.serving.http import RecommendationServer
from recbole_promptmm.serving.recommend import catalogue_of, model_recommendations


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


def http_load(server: RecommendationServer, users: list[str], k: int, clients: int, requests: int,
              time_limit: float) -> None:
    """``requests`` GETs spread over ``clients`` threads (each with its own keep-alive connection); prints latency."""
    host, port = server.server_address[:2]
    deadline, per_client = time.monotonic() + time_limit, requests // clients

    def client(c: int) -> list[float]:
        conn, mine = http.client.HTTPConnection(host, port, timeout=30), []
        for r in range(per_client):
            if time.monotonic() > deadline:
                break
            start = time.perf_counter()
            conn.request("GET", f"/recommend?user={users[(c * per_client + r) % len(users)]}&k={k}")
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - start)
            assert response.status == 200, response.status
        conn.close()
        return mine

    with ThreadPoolExecutor(clients) as pool:
        ms, wall = seconds(lambda: sorted(x * 1000 for mine in pool.map(client, range(clients)) for x in mine))
    print(f"HTTP {clients} client(s): {len(ms)} requests, p50 {statistics.median(ms):.2f} ms, p99 "
          f"{ms[int(0.99 * (len(ms) - 1))]:.2f} ms, {len(ms) / wall:,.0f} requests/s")


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


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--student", required=True, help="a dot-product checkpoint (PromptMM's -student.pth)")
    p.add_argument("--teacher", default=None, help="the teacher checkpoint whose full pipeline is timed")
    for name, default in (("k", 20), ("requests", 2000), ("time_limit", 60.0), ("large_items", 1_000_000)):
        p.add_argument(f"--{name}", type=type(default), default=default)
    args = p.parse_args()
    k = args.k
    print(f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "artefact")
        print(f"export: {seconds(export, args.student, folder)[1]:.1f} s (rebuilds the model from its data)")
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

        loaded = load_run(args.student)
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

        if args.teacher:
            teacher = load_run(args.teacher)
            cost = measure_cost(teacher.model, teacher.train_data._dataset, users_per_batch=4096, topk=k)
            print(f"teacher {type(teacher.model).__name__}: serving state {cost.serving_bytes / 2**20:.2f} MiB "
                  f"(parameters, features, graphs); student artefact / teacher = {size / cost.serving_bytes:.2f}")
            print(f"  top-{k} all users through its pipeline (forward + scoring, cold cache): "
                  f"{cost.scoring_seconds:.3f} s = {n_users / cost.scoring_seconds:,.0f} users/s "
                  f"({cost.scoring_seconds / ours:.1f}x the artefact)")

        server = RecommendationServer(rec, "127.0.0.1", 0)
        server.start_background()
        try:
            for clients in (1, 8):
                http_load(server, tokens, k, clients, args.requests, args.time_limit)
        finally:
            server.shutdown()
            server.server_close()

    if args.large_items:
        large_catalogue(args.large_items, k)


if __name__ == "__main__":
    entry(main)
