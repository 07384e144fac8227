"""kNN item graphs (LATTICE, FREEDOM) against a hand-made example, FREEDOM's edge pruning, FREEDOM's eval graph."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recbole_promptmm import Config, create_dataset, data_preparation, get_model
from recbole_promptmm.model.graph import lightgcn_adjacency, lightgcn_embeddings, prune_edges
from recbole_promptmm.model.item_graph import knn_graph, knn_matrix, knn_neighbours, knn_values

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
    if weighted:  # the zero-similarity edges 1->3 and 4->2 carry nothing
        assert graph[1, 3] == 0 and graph[4, 2] == 0
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
