"""kNN item graphs (LATTICE, FREEDOM) against a hand-made example, FREEDOM's edge pruning, FREEDOM's eval graph."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recbole_promptmm import Config, create_dataset, data_preparation, get_model, run
from recbole_promptmm.model import item_graph
from recbole_promptmm.model.graph import lightgcn_adjacency, lightgcn_embeddings, prune_edges
from recbole_promptmm.model.item_graph import fill_missing, knn_graph, knn_matrix, knn_neighbours, knn_values
from tests.conftest import toy_dict

# the graphs are handed to torch with check_invariants=False (scipy's coo is valid); torch warns once otherwise
pytestmark = pytest.mark.filterwarnings("error:Sparse invariant checks")

# Row 0 is the padding item: a vector that would be every item's best neighbour if it were not excluded.
# Items 1..4 have cosines (3-4-5 triangles; item 2 is scaled by 5, which cosine ignores):
#        1     2     3     4
#  1   1.0   0.8   0.0  -0.6
#  2   0.8   1.0   0.6   0.0
#  3   0.0   0.6   1.0   0.8
#  4  -0.6   0.0   0.8   1.0
FEATURES = torch.tensor([[7.0, 7.0], [1.0, 0.0], [4.0, 3.0], [0.0, 1.0], [-0.6, 0.8]])

# k = 3 (the item itself included): 1 -> {1, 2, 3}, 2 -> {2, 1, 3}, 3 -> {3, 4, 2}, 4 -> {4, 3, 2}
# (item 1 takes item 3 at 0.0 over item 4 at -0.6; item 4 takes item 2 at 0.0 over item 1 at -0.6)
EXPECTED_NEIGHBOURS = [[1, 2, 3], [2, 1, 3], [3, 4, 2], [4, 3, 2]]
WEIGHTED_S = np.array([  # rows/cols 0..4, the kept similarities (clamped at 0)
    [0, 0, 0, 0, 0],
    [0, 1.0, 0.8, 0.0, 0],
    [0, 0.8, 1.0, 0.6, 0],
    [0, 0, 0.6, 1.0, 0.8],
    [0, 0, 0.0, 0.8, 1.0],
])
WEIGHTED_DEG = np.array([0, 1.8, 2.4, 2.4, 1.8])  # row sums: 1 + 0.8 + 0, 1 + 0.8 + 0.6, ...
BINARY_S = np.array([
    [0, 0, 0, 0, 0],
    [0, 1, 1, 1, 0],
    [0, 1, 1, 1, 0],
    [0, 0, 1, 1, 1],
    [0, 0, 1, 1, 1],
])
BINARY_DEG = np.array([0, 3, 3, 3, 3])


def normalised(s: np.ndarray, deg: np.ndarray) -> np.ndarray:
    inv = np.where(deg > 0, 1 / np.sqrt(np.where(deg > 0, deg, 1)), 0)
    return inv[:, None] * s * inv[None, :]


def test_knn_neighbours_match_the_hand_computed_example():
    idx, sims = knn_neighbours(FEATURES, 3)
    assert idx[1:].tolist() == EXPECTED_NEIGHBOURS
    expected_sims = [[1.0, 0.8, 0.0], [1.0, 0.8, 0.6], [1.0, 0.8, 0.6], [1.0, 0.8, 0.0]]
    assert torch.allclose(sims[1:], torch.tensor(expected_sims), atol=1e-6)
    assert 0 not in idx[1:].flatten().tolist(), "the padding item is nobody's neighbour"


@pytest.mark.parametrize("weighted, s, deg", [(True, WEIGHTED_S, WEIGHTED_DEG), (False, BINARY_S, BINARY_DEG)])
def test_knn_graph_is_symmetrically_normalised(weighted, s, deg):
    graph = knn_graph(FEATURES, 3, weighted=weighted).toarray()
    expected = normalised(s.astype(np.float64), deg.astype(np.float64))
    # e.g. weighted A_12 = 0.8 / sqrt(1.8 * 2.4) = 0.3849, A_23 = 0.6 / 2.4 = 0.25; binary 1/3 on every kept edge
    assert graph[1, 2] == pytest.approx(0.8 / np.sqrt(1.8 * 2.4) if weighted else 1 / 3, abs=1e-6)
    assert np.allclose(graph, expected, atol=1e-6)
    assert not graph[0].any() and not graph[:, 0].any(), "row and column 0 (padding) stay empty"
    if weighted:  # the zero-similarity edges 1->3 and 4->2 carry nothing (float32 rounding: 3e-9 is seen)
        assert graph[1, 3] == pytest.approx(0, abs=1e-6) and graph[4, 2] == pytest.approx(0, abs=1e-6)
    else:
        assert graph[1, 3] == pytest.approx(1 / 3) and graph[4, 2] == pytest.approx(1 / 3)


@pytest.mark.parametrize("block_entries", [1, 4, 7])
def test_chunking_gives_identical_graphs(block_entries):
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(31, 6)).astype(np.float32))
    idx, sims = knn_neighbours(x, 5)
    idx_c, sims_c = knn_neighbours(x, 5, block_entries=block_entries)
    assert torch.equal(idx, idx_c) and torch.allclose(sims, sims_c, atol=1e-6)
    for weighted in (True, False):
        full = knn_matrix(idx, knn_values(idx, sims, weighted)).toarray()
        chunked = knn_matrix(idx_c, knn_values(idx_c, sims_c, weighted)).toarray()
        assert np.allclose(full, chunked, atol=1e-6)
    small_idx, _ = knn_neighbours(FEATURES, 3, block_entries=block_entries)
    assert small_idx[1:].tolist() == EXPECTED_NEIGHBOURS


def test_knn_values_by_hand_on_any_degrees():
    # A directed kNN pattern with k = 2 whose row sums (degrees, weighted: similarities clamped at 0) are
    # 0.7 (row 1), exactly 1 (row 2) and 0 (row 3); row 0 (padding) is ignored whatever it holds.
    #   row 1 -> items [1, 3], s = [0.5, 0.2]:   deg 0.7
    #   row 2 -> items [2, 1], s = [1.0, 0 (-0.4)]: deg 1
    #   row 3 -> items [3, 2], s = [0 (-0.3), 0]:   deg 0, so D^-1/2 := 0 there
    # D^-1/2 = [0, 1/sqrt(0.7), 1, 0]; value (i, j) = d_i^-1/2 s_ij d_j^-1/2:
    #   row 1: [0.5 / 0.7, 0.2 * 1/sqrt(0.7) * 0] = [5/7, 0] (item 3 has degree 0: its in-edge carries nothing)
    #   row 2: [1 * 1 * 1, 0] = [1, 0];  row 3: [0, 0]
    indices = torch.tensor([[0, 0], [1, 3], [2, 1], [3, 2]])
    sims = torch.tensor([[5.0, 5.0], [0.5, 0.2], [1.0, -0.4], [-0.3, 0.0]])
    values = knn_values(indices, sims, weighted=True)
    assert torch.allclose(values, torch.tensor([[0, 0], [5 / 7, 0], [1, 0], [0, 0]]), atol=1e-6)
    # binary: s = 1 on every kept edge of rows 1..3, degree 2 each, value 1/sqrt(2) * 1 * 1/sqrt(2) = 1/2
    values = knn_values(indices, sims, weighted=False)
    assert torch.allclose(values, torch.tensor([[0, 0], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]), atol=1e-6)


def test_knn_matrix_keeps_the_square_shape():
    # k = 1: 1 -> 2 (0.5), 2 -> 1 (0.25), 3 -> 1 (0.75); nobody points at item 3, and row 0 holds a zero
    indices = torch.tensor([[0], [2], [1], [1]])
    values = torch.tensor([[0.0], [0.5], [0.25], [0.75]])
    m = knn_matrix(indices, values)
    assert m.shape == (4, 4) and m.nnz == 3
    assert m.toarray().tolist() == [[0, 0, 0, 0], [0, 0, 0.5, 0], [0, 0.25, 0, 0], [0, 0.75, 0, 0]]


# ------------------------------------------------------------------------------- approximate neighbours (faiss)

def clustered(n: int, d: int = 16, per_cluster: int = 20, noise: float = 1.0, seed: int = 0) -> torch.Tensor:
    """``n + 1`` rows (row 0 padding): a mixture of ``n // per_cluster`` Gaussians with N(0, 1) centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // per_cluster, d))
    x = centres[rng.integers(len(centres), size=n + 1)] + noise * rng.normal(size=(n + 1, d))
    return torch.from_numpy(x.astype(np.float32))


def edge_overlap(exact: torch.Tensor, approx: torch.Tensor) -> float:
    """Share of the exact graph's edges (rows 1..) that the approximate graph keeps."""
    return (exact[1:].unsqueeze(2) == approx[1:].unsqueeze(1)).any(dim=2).float().mean().item()


def test_approx_keeps_the_exact_edges_in_the_same_format():
    x = clustered(2000)
    idx, sims = knn_neighbours(x, 10, "exact")
    a_idx, a_sims = knn_neighbours(x, 10, "approx")
    assert a_idx.shape == idx.shape == (2001, 10) and a_idx.dtype == idx.dtype and a_sims.dtype == sims.dtype
    assert edge_overlap(idx, a_idx) >= 0.95
    assert not a_idx[0].any() and not a_sims[0].any(), "row 0 (padding) is all zeros"
    assert (a_idx[1:] >= 1).all(), "the padding item is nobody's neighbour"
    assert (a_idx[1:, 0] == torch.arange(1, 2001)).all(), "each item is its own best neighbour"
    assert (a_sims[1:, :-1] >= a_sims[1:, 1:]).all(), "best first"
    unit = torch.nn.functional.normalize(x, dim=-1)
    assert torch.allclose(a_sims[1:], (unit[1:].unsqueeze(1) * unit[a_idx[1:]]).sum(-1), atol=1e-5)
    again = knn_neighbours(x, 10, "approx")
    assert torch.equal(again[0], a_idx) and torch.equal(again[1], a_sims), "same features, same graph"


def test_approx_on_the_hand_example_is_exact():
    idx, sims = knn_neighbours(FEATURES, 3, "approx")
    assert idx[1:].tolist() == EXPECTED_NEIGHBOURS and not idx[0].any()
    assert torch.allclose(sims[1:], knn_neighbours(FEATURES, 3, "exact")[1][1:], atol=1e-6)


def test_missing_faiss_hits_are_filled_with_exact_neighbours():
    x = clustered(200)
    unit = torch.nn.functional.normalize(x[1:], dim=-1)
    exact = knn_neighbours(x, 4, "exact")[0][1:] - 1
    found = exact.clone()
    found[3, 2:] = -1  # faiss found only 2 of 4
    found[7] = -1  # nothing at all
    filled = fill_missing(found, unit)
    assert torch.equal(filled, exact) and (found[3, 2:] == -1).all(), "filled rows exact, the input untouched"
    assert fill_missing(exact, unit) is exact


def test_approx_fills_rows_where_faiss_comes_back_short(monkeypatch):
    """The whole path with a faiss index that returns -1 for every row's last hit."""
    faiss = pytest.importorskip("faiss")

    class ShortHNSW(faiss.IndexHNSWFlat):
        def search(self, data, k):
            dist, ids = super().search(data, k)
            ids[:, -1] = -1
            return dist, ids

    x = clustered(300)
    monkeypatch.setattr(item_graph.faiss, "IndexHNSWFlat", ShortHNSW)
    idx, sims = knn_neighbours(x, 5, "approx")
    exact_idx, exact_sims = knn_neighbours(x, 5, "exact")
    assert torch.equal(idx, exact_idx) and torch.allclose(sims, exact_sims, atol=1e-6)


def test_faiss_runs_with_torchs_thread_count(monkeypatch):
    threads = []
    monkeypatch.setattr(item_graph.faiss, "omp_set_num_threads", threads.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    knn_neighbours(clustered(100), 3, "approx")
    assert threads == [1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_approx_returns_to_the_features_device():
    idx, sims = knn_neighbours(clustered(300).cuda(), 5, "approx")
    assert idx.is_cuda and sims.is_cuda
    assert torch.equal(idx.cpu(), knn_neighbours(clustered(300), 5, "approx")[0])


def spy_on_approx(monkeypatch) -> list[int]:
    """Record the number of rows of every approximate search."""
    calls, approx_rows = [], item_graph.approx_rows

    def spy(unit, k):
        calls.append(unit.shape[0])
        return approx_rows(unit, k)

    monkeypatch.setattr(item_graph, "approx_rows", spy)
    return calls


def test_auto_is_exact_below_the_threshold_and_approx_from_it(monkeypatch):
    calls = spy_on_approx(monkeypatch)
    x = clustered(100)  # 101 rows with the padding
    knn_neighbours(x, 5)
    assert calls == [] and item_graph.APPROX_MIN_ITEMS > 101
    monkeypatch.setattr(item_graph, "APPROX_MIN_ITEMS", 101)
    knn_neighbours(x, 5)
    assert calls == [100]
    knn_neighbours(x, 5, "exact")
    assert calls == [100], "exact is exact whatever the size"
    with pytest.raises(ValueError, match="knn_search must be one of auto, exact, approx"):
        knn_neighbours(x, 5, "faiss")


@pytest.mark.parametrize("method, approx_calls", [("approx", 2), ("exact", 0)])
def test_freedom_trains_with_the_configured_knn_search(mm_toy, tmp_path, monkeypatch, method, approx_calls):
    calls = spy_on_approx(monkeypatch)
    result = run("FREEDOM", "toy", config_dict=toy_dict(mm_toy, knn_search=method),
                 result_json=str(tmp_path / "r.json"))
    assert len(calls) == approx_calls, "one approximate graph per modality (image, audio)"
    assert result["config"]["knn_search"] == method and 0 <= result["test_result"]["recall@5"] <= 1


# ----------------------------------------------------------------------------------------------- edge pruning

def star_and_pairs(n: int = 20) -> sp.coo_matrix:
    """User 0 rated items 0..n-1 (each item by user 0 alone); users 1..n each rated one item of its own."""
    rows = np.r_[np.zeros(n, dtype=int), np.arange(1, n + 1)]
    cols = np.r_[np.arange(n), np.arange(n, 2 * n)]
    return sp.coo_matrix((np.ones(2 * n, dtype=np.float32), (rows, cols)), shape=(n + 1, 2 * n))


def test_pruning_keeps_the_stated_fraction_of_existing_distinct_edges():
    rng = np.random.default_rng(0)
    dense = (rng.random((30, 40)) < 0.2).astype(np.float32)
    inter = sp.coo_matrix(dense)
    n_edges = int(dense.sum())
    for keep in (0.2, 0.5, 0.77, 1.0):
        pruned = prune_edges(inter, keep, generator=torch.Generator().manual_seed(1))
        assert pruned.shape == inter.shape
        pairs = list(zip(pruned.row.tolist(), pruned.col.tolist()))
        assert len(pairs) == round(keep * n_edges)
        assert len(set(pairs)) == len(pairs), "no edge twice"
        assert all(dense[u, i] == 1 for u, i in pairs), "only training edges"
        assert np.all(pruned.data == 1)
    # a duplicated input entry is still one edge
    doubled = sp.coo_matrix((np.r_[inter.data, inter.data[:1]], (np.r_[inter.row, inter.row[:1]],
                                                                   np.r_[inter.col, inter.col[:1]])), shape=inter.shape)
    assert prune_edges(doubled, 0.5).nnz == round(0.5 * n_edges)
    with pytest.raises(ValueError, match="keep_fraction"):
        prune_edges(inter, 0.0)


def test_pruning_prefers_low_degree_edges():
    inter = star_and_pairs(20)  # hub edges: p ~ 1/sqrt(20 * 1); pair edges: p ~ 1/sqrt(1 * 1)
    generator = torch.Generator().manual_seed(0)
    counts = np.zeros(40)
    for _ in range(200):
        pruned = prune_edges(inter, 0.3, generator=generator)
        counts[pruned.col] += 1
    hub, pairs = counts[:20].mean() / 200, counts[20:].mean() / 200
    assert pairs > 2 * hub, (hub, pairs)


def test_pruning_draws_one_edge_with_the_degree_sensitive_probability():
    # user 0 - items 0, 1 (deg_u 2), user 1 - item 2: p ~ [1/sqrt(2), 1/sqrt(2), 1]; keeping 1 of 3 edges is one
    # categorical draw, so P(item 2's edge) = 1 / (1 + sqrt(2)) = 0.4142
    inter = sp.coo_matrix((np.ones(3, dtype=np.float32), ([0, 0, 1], [0, 1, 2])), shape=(2, 3))
    generator = torch.Generator().manual_seed(0)
    draws = 1500
    hits = sum(int(prune_edges(inter, 1 / 3, generator=generator).col[0] == 2) for _ in range(draws))
    assert hits / draws == pytest.approx(1 / (1 + np.sqrt(2)), abs=0.04)  # uniform would give 1/3


def test_pruning_uses_the_global_rng_without_a_generator():
    inter = star_and_pairs(20)
    torch.manual_seed(5)
    a = prune_edges(inter, 0.5)
    torch.manual_seed(5)
    b = prune_edges(inter, 0.5)
    assert np.array_equal(a.col, b.col) and np.array_equal(a.row, b.row)


# -------------------------------------------------------------------------------- FREEDOM's evaluation graph

def build_freedom(data_path, **overrides):
    config = Config("FREEDOM", "toy", config_dict={
        "data_path": str(data_path), "load_col": {"inter": ["user_id", "item_id"]},
        "modality_features": {"image": "image_feat.npy", "audio": "audio_feat.npy"},
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "RO", "mode": "full"},
        "embedding_size": 8, "train_batch_size": 64, "show_progress": False, **overrides})
    train, _, _ = data_preparation(config, create_dataset(config))
    return get_model("FREEDOM")(config, train._dataset), train


def test_freedom_evaluates_on_the_full_graph(mm_toy):
    model, train = build_freedom(mm_toy)
    users = train._dataset.inter_feat[:6]
    model.train()  # epoch 1: a pruned graph
    model.eval()
    scores = model.full_sort_predict(users)
    # by hand: LightGCN on the full training graph, plus the frozen item graph over the item IDs
    adjacency = lightgcn_adjacency(train._dataset.inter_matrix(form="coo"))
    with torch.no_grad():
        e_u, e_i = lightgcn_embeddings(adjacency, model.user_embedding.weight, model.item_embedding.weight,
                                       model.n_layers)
        e_i = e_i + model.item_graph(model.item_embedding.weight)
    expected = (e_u[users[model.USER_ID]] @ e_i.T).view(-1)
    assert torch.allclose(scores, expected, atol=1e-5)

    model.train()  # another epoch, another pruned graph; the weights did not change
    model.eval()
    assert torch.equal(model.full_sort_predict(users), scores), "two evaluation passes agree"

    model.train()
    with torch.no_grad():
        first = model.forward().user.clone()
    model.train()
    with torch.no_grad():
        second = model.forward().user
    assert not torch.allclose(first, second), "each training epoch draws its own pruned graph"
    kept = model.adjacency().matrix.values().numel()
    assert kept == 2 * round((1 - model.edge_dropout) * train._dataset.inter_matrix(form="csr").nnz)
