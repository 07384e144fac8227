"""The user-item graph maths of recbole_promptmm/model/graph.py against hand-computed values: the two bipartite
normalisations, LightGCN's adjacency and layer mean, the sparse propagation (forward, backward, bytes), the training
pair lookup and negative sampler, and FREEDOM's degree-sensitive edge pruning (its law, by counting draws).

The example is tests/hand_example.py's graph as RecBole hands it over (padding user 0 and item 0, empty), plus a
cold item 4 that nobody rated (an empty last column), so the matrices are not square::

          i0  i1  i2  i3  i4      user degrees  d_u = 0, 2, 2, 1
    u0     .   .   .   .   .      item degrees  d_i = 0, 1, 2, 2, 0
    u1     .   1   1   .   .
    u2     .   .   1   1   .
    u3     .   .   .   1   .

The input stores the edge (u1, i2) twice and (u2, i3) with value 3: both are still one edge of weight 1.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recbole_promptmm.model.graph import (Propagation, TrainingItems, bipartite_propagation, lightgcn_adjacency,
                                          lightgcn_embeddings, prune_edges)

# _to_torch passes check_invariants=False to say that scipy's coo is valid (torch warns once otherwise)
pytestmark = pytest.mark.filterwarnings("error:Sparse invariant checks")

S = 1 / math.sqrt(2)
R2 = math.sqrt(2)

ROWS = [1, 1, 1, 2, 2, 3]
COLS = [1, 2, 2, 2, 3, 3]
DATA = [1.0, 1.0, 1.0, 1.0, 3.0, 1.0]  # (u1, i2) twice, (u2, i3) with value 3


def inter() -> sp.coo_matrix:
    return sp.coo_matrix((np.array(DATA, dtype=np.float64), (ROWS, COLS)), shape=(4, 5))


# symmetric: entry 1 / sqrt(d_u d_i):  (u1,i1) 1/sqrt(2*1) = S, (u1,i2) 1/sqrt(2*2) = 1/2, (u2,i2) 1/2,
# (u2,i3) 1/2, (u3,i3) 1/sqrt(1*2) = S
SYM_UI = np.array([[0, 0, 0, 0, 0],
                   [0, S, 0.5, 0, 0],
                   [0, 0, 0.5, 0.5, 0],
                   [0, 0, 0, S, 0]])
# one_sided: A_ui = D_u^-1/2 R (rows of u1, u2 times 1/sqrt2, u3 times 1); A_iu = D_i^-1/2 R^T (i1 times 1,
# i2 and i3 times 1/sqrt2)
ONE_UI = np.array([[0, 0, 0, 0, 0],
                   [0, S, S, 0, 0],
                   [0, 0, S, S, 0],
                   [0, 0, 0, 1, 0]])
ONE_IU = np.array([[0, 0, 0, 0],
                   [0, 1, 0, 0],
                   [0, S, S, 0],
                   [0, 0, S, S],
                   [0, 0, 0, 0]])


def dense(p: Propagation) -> np.ndarray:
    return p.matrix.to_dense().numpy()


@pytest.mark.parametrize("norm, a_ui, a_iu", [("symmetric", SYM_UI, SYM_UI.T), ("one_sided", ONE_UI, ONE_IU)])
def test_bipartite_propagation_by_hand(norm, a_ui, a_iu):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # 0 ** -0.5 (or a negative base) would warn
        p_ui, p_iu = bipartite_propagation(inter(), norm)
    assert tuple(p_ui.shape) == (4, 5) and tuple(p_iu.shape) == (5, 4)
    assert p_ui.matrix.dtype == torch.float32 and p_ui.matrix.layout == torch.sparse_csr
    assert np.allclose(dense(p_ui), a_ui, atol=1e-6)
    assert np.allclose(dense(p_iu), a_iu, atol=1e-6)
    # applied to x = item values [0, 1, 2, 3, 4]: symmetric u1 = S*1 + 2/2 = 1 + S, u2 = (2 + 3)/2 = 2.5, u3 = 3S;
    # one_sided u1 = S (1 + 2) = 3S, u2 = S (2 + 3) = 5S, u3 = 3
    x = torch.arange(5, dtype=torch.float32).view(5, 1)
    expected = [0, 1 + S, 2.5, 3 * S] if norm == "symmetric" else [0, 3 * S, 5 * S, 3]
    assert p_ui(x).view(-1).tolist() == pytest.approx(expected, abs=1e-6)


def test_bipartite_propagation_default_and_bad_norm():
    p_ui, p_iu = bipartite_propagation(inter())  # default: symmetric
    assert np.allclose(dense(p_ui), SYM_UI, atol=1e-6) and np.allclose(dense(p_iu), SYM_UI.T, atol=1e-6)
    with pytest.raises(ValueError, match=r"^graph_norm must be one of \('symmetric', 'one_sided'\), got 'sym'$"):
        bipartite_propagation(inter(), "sym")


def test_lightgcn_adjacency_by_hand():
    # (4 + 5) x (4 + 5), users first: degrees are d_u then d_i, so the blocks are the symmetric A_ui and A_ui^T
    expected = np.zeros((9, 9))
    expected[:4, 4:] = SYM_UI
    expected[4:, :4] = SYM_UI.T
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        adj = lightgcn_adjacency(inter())
    assert tuple(adj.shape) == (9, 9)
    assert np.allclose(dense(adj), expected, atol=1e-6)
    assert dense(adj)[1, 5] == pytest.approx(S) and dense(adj)[6, 2] == pytest.approx(0.5)


def test_lightgcn_embeddings_by_hand():
    # 1-d embeddings: users [0, 1, 0, 2], items [0, 2, 0, 0, 3]
    #   layer 1: u1 = S i1 + i2/2 = 2S = sqrt2, u2 = (i2 + i3)/2 = 0, u3 = S i3 = 0;
    #            i1 = S u1 = S, i2 = (u1 + u2)/2 = 1/2, i3 = u2/2 + S u3 = 2S = sqrt2, i4 (cold) = 0
    #   layer 2: u1 = S S + 1/4 = 3/4, u2 = 1/4 + sqrt2/2 = 1/4 + S, u3 = S sqrt2 = 1;
    #            i1 = S sqrt2 = 1, i2 = (sqrt2 + 0)/2 = S, i3 = 0/2 + S * 0 = 0
    #   mean of the 3 layers
    adj = lightgcn_adjacency(inter())
    user = torch.tensor([[0.0], [1.0], [0.0], [2.0]])
    item = torch.tensor([[0.0], [2.0], [0.0], [0.0], [3.0]])
    e_u, e_i = lightgcn_embeddings(adj, user, item, 2)
    assert e_u.view(-1).tolist() == pytest.approx([0, (1 + R2 + 0.75) / 3, (0.25 + S) / 3, (2 + 0 + 1) / 3], abs=1e-6)
    assert e_i.view(-1).tolist() == pytest.approx([0, (2 + S + 1) / 3, (0.5 + S) / 3, R2 / 3, 1], abs=1e-6)
    # one layer: (E0 + A E0) / 2
    e_u, e_i = lightgcn_embeddings(adj, user, item, 1)
    assert e_u.view(-1).tolist() == pytest.approx([0, (1 + R2) / 2, 0, 1], abs=1e-6)
    assert e_i.view(-1).tolist() == pytest.approx([0, (2 + S) / 2, 0.25, R2 / 2, 1.5], abs=1e-6)


def test_propagation_forward_backward_and_bytes():
    p = Propagation(sp.csr_matrix(SYM_UI))
    assert tuple(p.shape) == (4, 5)  # the empty last column (cold item) is kept
    assert p.state_dict() == {}, "the graph is rebuilt from the data, never saved in a checkpoint"
    assert p.matrix.crow_indices().dtype == torch.int64 and p.matrix.col_indices().dtype == torch.int64
    # 5 stored entries: crow (4 + 1) * 8 bytes + col 5 * 8 + values 5 * 4 = 100
    assert p.nbytes() == 100
    assert torch.allclose(p.matrix_t.to_dense(), torch.tensor(SYM_UI.T, dtype=torch.float32))

    x = torch.arange(5, dtype=torch.float32).view(5, 1)
    w = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    assert not p(x).requires_grad
    xg = x.clone().requires_grad_(True)
    y = p(xg)
    assert y.view(-1).tolist() == pytest.approx([0, 1 + S, 2.5, 3 * S], abs=1e-6)
    (y * w).sum().backward()
    # dL/dx = A^T w: i1 = S*1, i2 = 1/2*1 + 1/2*2 = 1.5, i3 = 1/2*2 + S*3 = 1 + 3S
    assert xg.grad.view(-1).tolist() == pytest.approx([0, S, 1.5, 1 + 3 * S, 0], abs=1e-6)
    # the backward pass multiplies by the stored transpose: doubling it doubles the gradient
    p.matrix_t = p.matrix_t * 2
    xg = x.clone().requires_grad_(True)
    (p(xg) * w).sum().backward()
    assert xg.grad.view(-1).tolist() == pytest.approx([0, 2 * S, 3, 2 + 6 * S, 0], abs=1e-6)


def test_propagation_sums_duplicate_entries():
    # a coo input with the entry (0, 1) stored twice (1 + 2) is the matrix [[0, 3], [4, 0]]
    m = sp.coo_matrix((np.array([1.0, 2.0, 4.0]), ([0, 0, 1], [1, 1, 0])), shape=(2, 2))
    p = Propagation(m)
    assert p.matrix.to_dense().tolist() == [[0, 3], [4, 0]]
    assert p.matrix_t.to_dense().tolist() == [[0, 4], [3, 0]]


# ------------------------------------------------------------------------------------------------ TrainingItems

def test_training_items_contains():
    items = TrainingItems(inter())  # keys u * 5 + i: 6, 7, 12, 13, 18
    assert items.n_items == 5
    users = torch.tensor([1, 1, 2, 2, 3, 0, 1, 2, 3, 3, 1])
    cand = torch.tensor([1, 2, 2, 3, 3, 0, 3, 1, 4, 2, 0])
    # the training pairs, then (0,0) below every key, (1,3) and (2,1) between keys, (3,4) = 19 past the last key
    assert items.contains(users, cand).tolist() == [True] * 5 + [False] * 6



def test_training_items_contains_is_exact_for_huge_ids():
    # keys u * n_items + i past 2^53 (a float64 would round 2^54 + 1 and 2^54 + 2 to the same 2^54): only
    # the pair (2^26, 1) is a training pair of that user, not (2^26, 2) nor (2^26, 0)
    u, n = 2 ** 26, 2 ** 28
    items = TrainingItems(sp.coo_matrix((np.ones(2), ([u, 5], [1, 7])), shape=(u + 1, n)))
    assert items.contains(torch.tensor([u, u, u, 5, 5]), torch.tensor([1, 2, 0, 7, 8])).tolist() == \
        [True, False, False, True, False]

def sampler() -> TrainingItems:
    """Items 1..3 (0 padding): u1 rated 2 and 3 (its one negative is 1), u2 rated 1, u0 rated nothing,
    u3 rated 1, 2, 3 (no negative exists)."""
    r = sp.coo_matrix((np.ones(6), ([1, 1, 2, 3, 3, 3], [2, 3, 1, 1, 2, 3])), shape=(4, 4))
    return TrainingItems(r)


def test_sample_negatives_avoids_training_items_and_padding():
    neg = sampler().sample_negatives(torch.tensor([0, 1, 2]), 30, generator=torch.Generator().manual_seed(0))
    assert neg.shape == (3, 30) and neg.dtype == torch.int64
    assert set(neg[0].tolist()) == {1, 2, 3}, "uniform over 1..n_items-1, never the padding item 0"
    assert neg[1].tolist() == [1] * 30, "u1's redraws reach its only negative, item 1"
    assert set(neg[2].tolist()) == {2, 3}


def test_sample_negatives_follows_its_generator():
    users = torch.tensor([0, 1, 2])
    torch.manual_seed(1)
    a = sampler().sample_negatives(users, 30, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    b = sampler().sample_negatives(users, 30, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b), "the draws (first and redraws) come from the generator, not torch's global RNG"


def test_sample_negatives_gives_up_after_20_rounds():
    # u3 rated every item: every round redraws all k entries; the default stops after 20 rounds
    items, users = sampler(), torch.tensor([3])
    states = []
    for rounds in (None, 20, 19):
        g = torch.Generator().manual_seed(3)
        out = items.sample_negatives(users, 4, generator=g) if rounds is None else \
            items.sample_negatives(users, 4, generator=g, max_rounds=rounds)
        assert set(out.view(-1).tolist()) <= {1, 2, 3}
        states.append(g.get_state())
    assert torch.equal(states[0], states[1]) and not torch.equal(states[0], states[2])


# ------------------------------------------------------------------------------------------------- prune_edges

def test_pruning_law_by_counting():
    # u0 rated items 0..3 (d_u 4, d_i 1: p ~ 1/2), items 4 was rated by u2..u5 (d_u 1, d_i 4: p ~ 1/2), u1 - i5
    # (p ~ 1): keeping 1 of 9 edges is one categorical draw, P = p / sum p = (1/2) / 5 = 0.1 for each of the 8
    # hub edges and 1 / 5 = 0.2 for the pair edge
    rows = [0, 0, 0, 0, 2, 3, 4, 5, 1]
    cols = [0, 1, 2, 3, 4, 4, 4, 4, 5]
    graph = sp.coo_matrix((np.ones(9), (rows, cols)), shape=(6, 6))
    generator = torch.Generator().manual_seed(0)
    draws = 1000
    counts = {"user hub": 0, "item hub": 0, "pair": 0}
    for _ in range(draws):
        kept = prune_edges(graph, 1 / 9, generator=generator)
        assert kept.nnz == 1 and kept.dtype == np.float32 and kept.shape == (6, 6)
        col = int(kept.col[0])
        counts["user hub" if col < 4 else "item hub" if col == 4 else "pair"] += 1
    assert counts["user hub"] / draws == pytest.approx(0.4, abs=0.05)
    assert counts["item hub"] / draws == pytest.approx(0.4, abs=0.05)
    assert counts["pair"] / draws == pytest.approx(0.2, abs=0.05)


def test_pruning_follows_its_generator_and_keeping_all_draws_nothing():
    graph = inter()
    torch.manual_seed(1)
    a = prune_edges(graph, 0.6, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(2)
    b = prune_edges(graph, 0.6, generator=torch.Generator().manual_seed(4))
    assert a.nnz == 3 and np.array_equal(a.row, b.row) and np.array_equal(a.col, b.col)
    # keep_fraction 1: every distinct edge (5 of them), value 1, and no random number drawn
    g = torch.Generator().manual_seed(4)
    state, global_state = g.get_state(), torch.get_rng_state()
    full = prune_edges(graph, 1.0, generator=g)
    assert torch.equal(g.get_state(), state)
    full = prune_edges(graph, 1.0)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert full.toarray().tolist() == [[0, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 0]]
    for bad in (0.0, 1.5, -0.5):
        with pytest.raises(ValueError, match="keep_fraction"):
            prune_edges(graph, bad)
