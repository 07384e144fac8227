"""MMHCL: both hypergraphs, one propagation step and the loss against hand-computed values; the model's wiring
against dense formulas on the toy data. (End to end on ml-100k and as PromptMM's teacher: tests/test_teachers.py,
parametrised over every multimodal model.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recbole_promptmm import Config, create_dataset, data_preparation, get_model
from recbole_promptmm.model.mmhcl import (
    ItemHypergraph,
    UserHypergraph,
    hypergraph_infonce,
    item_hypergraph,
    knn_incidence,
    mmhcl_loss,
    user_hypergraph,
)
from recbole_promptmm.validate import ConfigError, validate_config
from tests.conftest import toy_dict

# ------------------------------------------------------------------------------ the hand-made 4-item example
# Row 0 is the padding item ([7, 7]: everybody's best neighbour if it were not excluded). Unit vectors, so the
# cosines are dot products. k = 2: each item keeps itself and its best other item.
# Modality a: 1 = [1, 0], 2 = [0.6, 0.8], 3 = [0, 1], 4 = [-0.8, 0.6]
#   cos(1,2) = 0.6, cos(1,3) = 0, cos(1,4) = -0.8, cos(2,3) = 0.8, cos(2,4) = -0.48 + 0.48 = 0, cos(3,4) = 0.6
#   1 -> {1, 2} (0.6); 2 -> {2, 3} (0.8 > 0.6); 3 -> {3, 2} (0.8 > 0.6); 4 -> {4, 3} (0.6 > 0)
# Modality b: 1 = [1, 0], 2 = [0, 1], 3 = [0.8, 0.6], 4 = [-0.6, 0.8]
#   cos(1,3) = 0.8, cos(2,4) = 0.8, cos(2,3) = 0.6, cos(1,2) = 0, cos(3,4) = 0, cos(1,4) = -0.6
#   1 -> {1, 3}; 2 -> {2, 4} (0.8 > 0.6); 3 -> {3, 1} (0.8 > 0.6); 4 -> {4, 2}
FEATURES_A = torch.tensor([[7.0, 7.0], [1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.8, 0.6]])
FEATURES_B = torch.tensor([[7.0, 7.0], [1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [-0.6, 0.8]])
B_A = np.array([[1, 1, 0, 0],   # rows and columns: items 1..4 (padding row / column 0 empty)
                [0, 1, 1, 0],
                [0, 1, 1, 0],
                [0, 0, 1, 1]])
B_B = np.array([[1, 0, 1, 0],
                [0, 1, 0, 1],
                [1, 0, 1, 0],
                [0, 1, 0, 1]])
# H = [B_A | B_B]; H H^T = B_A B_A^T + B_B B_B^T (row dot products: the kNN neighbours two items share)
#   B_A B_A^T: rows [1,1,0,0], [0,1,1,0], [0,1,1,0], [0,0,1,1] -> [[2,1,1,0],[1,2,2,1],[1,2,2,1],[0,1,1,2]]
#   B_B B_B^T: rows [1,0,1,0], [0,1,0,1], [1,0,1,0], [0,1,0,1] -> [[2,0,2,0],[0,2,0,2],[2,0,2,0],[0,2,0,2]]
ITEM_ADJ = np.array([[4, 1, 3, 0],
                     [1, 4, 2, 3],
                     [3, 2, 4, 1],
                     [0, 3, 1, 4]], dtype=np.float64)
ITEM_DEG = np.array([8, 10, 10, 8])  # row sums: 4+1+3+0, 1+4+2+3, 3+2+4+1, 0+3+1+4
S80 = 1 / math.sqrt(80)  # 1 / sqrt(8 * 10) = 0.111803
# D^-1/2 (H H^T) D^-1/2: (1,1) 4/8, (1,2) 1/sqrt(80), (1,3) 3/sqrt(80), (2,2) 4/10, (2,3) 2/10, (2,4) 3/sqrt(80),
# (3,3) 4/10, (3,4) 1/sqrt(80), (4,4) 4/8
ITEM_HYPERGRAPH = np.array([[0.5, S80, 3 * S80, 0.0],
                            [S80, 0.4, 0.2, 3 * S80],
                            [3 * S80, 0.2, 0.4, S80],
                            [0.0, 3 * S80, S80, 0.5]])

# 3 users (row 0 the padding user, column 0 the padding item): u1 {1, 2}, u2 {2, 3}, u3 {2, 3, 4}
INTER = sp.csr_matrix(np.array([[0, 0, 0, 0, 0],
                                [0, 1, 1, 0, 0],
                                [0, 0, 1, 1, 0],
                                [0, 0, 1, 1, 1]], dtype=np.float32))
# R R^T = [[2,1,1],[1,2,2],[1,2,3]] (shared items: u1-u2 item 2, u1-u3 item 2, u2-u3 items 2 and 3); the
# diagonal (the user degrees 2, 2, 3) removed: A = [[0,1,1],[1,0,2],[1,2,0]], row sums D = 2, 3, 3
USER_HYPERGRAPH = np.array([[0.0, 1 / 2, 1 / 2],
                            [1 / 3, 0.0, 2 / 3],
                            [1 / 3, 2 / 3, 0.0]])


def padded(m: np.ndarray) -> np.ndarray:
    out = np.zeros((m.shape[0] + 1, m.shape[1] + 1))
    out[1:, 1:] = m
    return out


def test_item_hypergraph_matches_the_hand_example():
    b_a, b_b = knn_incidence(FEATURES_A, 2), knn_incidence(FEATURES_B, 2)
    assert np.array_equal(b_a.toarray(), padded(B_A)) and np.array_equal(b_b.toarray(), padded(B_B))
    factors = item_hypergraph([b_a, b_b])
    # the factors: P^m = D^-1/2 B^m, and sum_m P^m P^m^T the normalised hypergraph
    inv_sqrt = padded(np.diag(1 / np.sqrt(ITEM_DEG))).diagonal()
    assert np.allclose(factors[0].toarray(), inv_sqrt[:, None] * padded(B_A), atol=1e-6)
    hypergraph = sum((p @ p.T).toarray() for p in factors)
    assert np.allclose(hypergraph, padded(ITEM_HYPERGRAPH), atol=1e-6)
    assert np.allclose(ITEM_HYPERGRAPH, ITEM_ADJ / np.sqrt(np.outer(ITEM_DEG, ITEM_DEG)))  # the comments' arithmetic
    assert hypergraph[1, 2] == pytest.approx(0.111803, abs=1e-6)
    assert hypergraph[2, 4] == pytest.approx(0.335410, abs=1e-6)


def test_user_hypergraph_matches_the_hand_example():
    left, right, self_weight = user_hypergraph(INTER)
    # D^-1 R: rows of R divided by 2, 3, 3; the self weights D^-1 d_U: 2/2, 2/3, 3/3
    assert np.allclose(self_weight, [0, 1.0, 2 / 3, 1.0])
    operator = (left @ right).toarray() - np.diag(self_weight)
    assert np.allclose(operator, padded(USER_HYPERGRAPH), atol=1e-6)
    assert right.shape == (5, 4) and left.shape == (4, 5)  # never U x U


def test_one_propagation_step_by_hand():
    # items (2-d, padding row [5, 5]): 1 = [1, 0], 2 = [0, 1], 3 = [1, 1], 4 = [2, 0]
    e = torch.tensor([[5.0, 5.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    step = ItemHypergraph(item_hypergraph([knn_incidence(FEATURES_A, 2), knn_incidence(FEATURES_B, 2)]))
    expected = torch.tensor([
        [0.0, 0.0],
        # 0.5 [1,0] + 0.111803 [0,1] + 0.335410 [1,1] = [0.835410, 0.447214]
        [0.5 + 3 * S80, S80 + 3 * S80],
        # 0.111803 [1,0] + 0.4 [0,1] + 0.2 [1,1] + 0.335410 [2,0] = [0.982624, 0.6]
        [S80 + 0.2 + 6 * S80, 0.6],
        # 0.335410 [1,0] + 0.2 [0,1] + 0.4 [1,1] + 0.111803 [2,0] = [0.959017, 0.6]
        [3 * S80 + 0.4 + 2 * S80, 0.6],
        # 0.335410 [0,1] + 0.111803 [1,1] + 0.5 [2,0] = [1.111803, 0.447214]
        [S80 + 1.0, 3 * S80 + S80],
    ])
    out = step(e)
    assert torch.allclose(out, expected, atol=1e-5)
    assert out[1].tolist() == pytest.approx([0.835410, 0.447214], abs=1e-5)
    assert torch.allclose(sum(step.shares(e)), out, atol=1e-6)  # the modality shares add up
    # users (padding row [9, 9]): u1 = [1, 0], u2 = [0, 1], u3 = [1, 1]
    h = torch.tensor([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    expected_u = torch.tensor([[0.0, 0.0],
                               [0.5, 1.0],        # 1/2 [0,1] + 1/2 [1,1]
                               [1.0, 2 / 3],      # 1/3 [1,0] + 2/3 [1,1]
                               [1 / 3, 2 / 3]])   # 1/3 [1,0] + 2/3 [0,1]
    assert torch.allclose(UserHypergraph(INTER)(h), expected_u, atol=1e-6)


# anchors z (fused) and positives h (second order) of two nodes; cosines after normalising:
# z1 = [1, 0], z2 = [0, 1]; h1 = [1, 0], h2 = [1, 1]/sqrt(2)
Z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
H = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
R2 = math.sqrt(2)  # cos 45 degrees / tau = 0.707107 / 0.5


def test_infonce_by_hand():
    # tau = 0.5. Anchor z: node 1: between cos(z1,h1) = 1, cos(z1,h2) = 0.7071; within cos(z1,z2) = 0
    #   l1 = -2 + log(e^2 + e^1.4142 + e^0) = -2 + log(7.389056 + 4.113250 + 1) = 0.525913
    # node 2: between cos(z2,h1) = 0, cos(z2,h2) = 0.7071; within cos(z2,z1) = 0
    #   l2 = -1.4142 + log(e^0 + e^1.4142 + e^0) = -1.414214 + log(6.113250) = 0.396245
    l1 = -2 + math.log(math.exp(2) + math.exp(R2) + 1)
    l2 = -R2 + math.log(1 + math.exp(R2) + 1)
    assert (l1 + l2) / 2 == pytest.approx(0.461079, abs=1e-6)
    assert hypergraph_infonce(Z, H, 0.5).item() == pytest.approx((l1 + l2) / 2, abs=1e-6)
    # anchored on h instead: node 1 between 1, 0 and within cos(h1,h2) = 0.7071 -> l1 again (0.525913);
    # node 2: between 0.7071, 0.7071, within 0.7071 -> -1.4142 + log(3 e^1.4142) = log 3
    assert hypergraph_infonce(H, Z, 0.5).item() == pytest.approx((l1 + math.log(3)) / 2, abs=1e-6)


def direct_infonce(anchor, positive, tau):
    """The formula as written, through autograd: the reference for the hand-written backward."""
    a = torch.nn.functional.normalize(anchor, dim=-1)
    p = torch.nn.functional.normalize(positive, dim=-1)
    between, within = a @ p.T / tau, a @ a.T / tau
    within = within.masked_fill(torch.eye(a.shape[0], dtype=torch.bool), float("-inf"))
    return (torch.logsumexp(torch.cat([between, within], dim=1), dim=1) - between.diagonal()).mean()


def test_infonce_gradients_equal_autograd_of_the_formula():
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(7, 5, generator=generator)
    for anchor0, positive0 in [(base, torch.randn(7, 5, generator=generator)), (base, base[[1, 0, 2, 2, 4, 6, 5]])]:
        results = []
        for f in (hypergraph_infonce, direct_infonce):
            anchor, positive = anchor0.clone().requires_grad_(), positive0.clone().requires_grad_()
            loss = f(anchor, positive, 0.3)
            (loss * 2.5).backward()  # an upstream factor other than 1
            results.append((loss.detach(), anchor.grad, positive.grad))
        for fast, slow in zip(*results):
            assert torch.allclose(fast, slow, atol=1e-5)


def test_loss_by_hand():
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[2.0, 1.0], [1.0, 1.0]])
    neg = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # BPR: score differences (2 - 0, 1 - 0) -> (log(1 + e^-2) + log(1 + e^-1)) / 2 = (0.126928 + 0.313262) / 2
    bpr = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    assert bpr == pytest.approx(0.220095, abs=1e-6)
    # L2: (|user|^2 + |pos|^2 + |neg|^2) / (2B) = (2 + 7 + 2) / 4 = 2.75
    # users contrasted (Z, H): 0.461079; items contrasted (H, Z): (0.525913 + log 3) / 2 = 0.812263
    cl_user = hypergraph_infonce(Z, H, 0.5).item()
    cl_item = hypergraph_infonce(H, Z, 0.5).item()
    assert cl_item == pytest.approx(0.812263, abs=1e-6)
    # total with lambda_U 0.1, lambda_I 0.2, reg 0.01: 0.220095 + 0.046108 + 0.162453 + 0.0275 = 0.456156
    loss = mmhcl_loss(user, pos, neg, (Z, H), (H, Z), 0.5, 0.1, 0.2, 0.01)
    assert loss.item() == pytest.approx(bpr + 0.1 * cl_user + 0.2 * cl_item + 0.01 * 2.75, abs=1e-6)
    assert loss.item() == pytest.approx(0.456156, abs=1e-5)
    # zero weights: BPR alone
    assert mmhcl_loss(user, pos, neg, (Z, H), (H, Z), 0.5, 0.0, 0.0, 0.0).item() == pytest.approx(bpr, abs=1e-6)


# ------------------------------------------------------------------------------------------ the model itself
def build(data_path, **overrides):
    config = Config("MMHCL", "toy", config_dict=toy_dict(data_path, **overrides))
    train, _, _ = data_preparation(config, create_dataset(config))
    return get_model("MMHCL")(config, train._dataset), train


def dense_knn(x: np.ndarray, k: int) -> np.ndarray:
    """Binary top-k cosine neighbours by brute force (padding row 0 left out)."""
    unit = x[1:] / np.linalg.norm(x[1:], axis=1, keepdims=True)
    sims = unit @ unit.T
    out = np.zeros((x.shape[0], x.shape[0]))
    for i, row in enumerate(sims):
        out[i + 1, np.argsort(-row)[:k] + 1] = 1
    return out


def test_model_matches_the_dense_formulas(mm_toy):
    model, train = build(mm_toy, user_layers=2, item_layers=2, n_layers=1, knn_k=3)
    model.eval()
    with torch.no_grad():
        out = model.forward()
    r = train._dataset.inter_matrix(form="coo").toarray().astype(np.float64)
    r[r > 0] = 1
    # u2u: D^-1 (R R^T - diag), i2i: D^-1/2 (sum_m B^m B^m^T) D^-1/2, LightGCN: symmetric normalised bipartite
    a_u = r @ r.T - np.diag(np.diag(r @ r.T))
    d_u = a_u.sum(1)
    hat_u = np.where(d_u[:, None] > 0, a_u / np.where(d_u > 0, d_u, 1)[:, None], 0)
    g = sum(b @ b.T for b in (dense_knn(model.raw_features(m).numpy(), 3) for m in model.modalities))
    d_i = g.sum(1)
    inv = np.where(d_i > 0, 1 / np.sqrt(np.where(d_i > 0, d_i, 1)), 0)
    hat_i = inv[:, None] * g * inv[None, :]
    adj = np.block([[np.zeros((r.shape[0],) * 2), r], [r.T, np.zeros((r.shape[1],) * 2)]])
    deg = adj.sum(1) + 1e-8
    adj = adj / np.sqrt(np.outer(deg, deg))
    layer0 = np.vstack([model.user_embedding.weight.detach().numpy(), model.item_embedding.weight.detach().numpy()])
    first = (layer0 + adj @ layer0) / 2
    h_u = hat_u @ hat_u @ model.user_hyper_embedding.weight.detach().numpy()
    h_i = hat_i @ hat_i @ model.item_hyper_embedding.weight.detach().numpy()

    def unit(x):
        n = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(n, 1e-12)

    n_users = r.shape[0]
    assert np.allclose(out.user.numpy(), first[:n_users] + unit(h_u), atol=1e-5)
    assert np.allclose(out.item.numpy(), first[n_users:] + unit(h_i), atol=1e-5)
    assert np.allclose(sum(out.modality_item.values()).numpy(), h_i, atol=1e-5)
    assert sorted(out.modality_item) == sorted(model.modalities)
    assert all(v.shape == (model.n_items, model.embedding_size) for v in out.modality_item.values())


@pytest.mark.parametrize("scope", ["batch", "all"])
def test_model_loss_is_the_batch_loss_and_reaches_every_parameter(mm_toy, scope):
    model, train = build(mm_toy, cl_scope=scope)
    model.train()
    batch = next(iter(train))
    loss = model.calculate_loss(batch)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"registered parameters without a gradient: {missing}"
    with torch.no_grad():
        out = model.forward()
        u, pos, neg = batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]
        if scope == "all":
            users, items = torch.arange(1, model.n_users), torch.arange(1, model.n_items)
        else:
            users, items = torch.unique(u), torch.unique(pos)
        expected = mmhcl_loss(out.user[u], out.item[pos], out.item[neg],
                              (out.user[users], out.extra["second_user"][users]),
                              (out.item[items], out.extra["second_item"][items]), 0.6, 0.03, 0.07, 1e-3)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_settings_are_refused(mm_toy):
    with pytest.raises(ConfigError, match="cl_scope.*expected one of batch, all"):
        validate_config(Config("MMHCL", "toy", config_dict=toy_dict(mm_toy, cl_scope="everything")))
    with pytest.raises(ValueError, match="item_layers must be at least 1"):
        build(mm_toy, item_layers=0)


# ------------------------------------------------------------------------------------ edge cases of the graphs
def test_knn_incidence_keeps_the_square_shape():
    # item 3 has no features: its cosines are all 0 and, with k = 1, nobody (itself included) picks it, so its
    # column stays empty; B is still [I, I]
    x = torch.tensor([[7.0, 7.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    b = knn_incidence(x, 1)
    assert b.shape == (4, 4)
    assert b.toarray()[1:3].tolist() == [[0, 1, 0, 0], [0, 0, 1, 0]]


def test_item_hypergraph_of_degree_one():
    # k = 1, one modality, distinct directions: B = I (padding empty), every degree 1, so P = B
    b = knn_incidence(FEATURES_A, 1)
    assert np.array_equal(b.toarray(), padded(np.eye(4)))
    (p,) = item_hypergraph([b])
    assert np.array_equal(p.toarray(), padded(np.eye(4)))


def test_user_hypergraph_with_a_lone_user():
    # u1 {1}, u2 {1, 2}, u3 {3}: u1 and u2 share item 1 (d = 1 each), u3 shares nothing (d = 0)
    inter = sp.csr_matrix(np.array([[0, 0, 0, 0],
                                    [0, 1, 0, 0],
                                    [0, 1, 1, 0],
                                    [0, 0, 0, 1]], dtype=np.float32))
    left, right, self_weight = user_hypergraph(inter)
    # left = D^-1 R: rows of R over d = 1, 1; u3 (d = 0) and the padding user get zero rows;
    # self weights D^-1 d_U = 1/1, 2/1, 0
    assert left.toarray().tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert self_weight.tolist() == [0.0, 1.0, 2.0, 0.0]
    # A_U: u1 -> u2, u2 -> u1, u3 -> nobody
    operator = (left @ right).toarray() - np.diag(self_weight)
    assert operator.tolist() == [[0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]


def test_user_hypergraph_is_no_checkpoint_state():
    # the fixed graph is rebuilt from the data: none of it goes into a state_dict
    assert list(UserHypergraph(INTER).state_dict()) == []


def test_infonce_at_a_low_temperature():
    # tau = 0.01; anchors a1 = [1, 0], a2 = [-1, 0], positives p1 = p2 = [-1, 0]
    # node 1: logits a1.p1, a1.p2, a1.a2 all -1/0.01 = -100 -> l1 = (-100 + log 3) - (-100) = log 3
    # node 2: a2.p1 = a2.p2 = 100, a2.a1 = -100 -> l2 = 100 + log(2 + e^-200) - 100 = log 2
    # (each row's own maximum is subtracted before exp: node 1's logits lie 200 below node 2's)
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    p = torch.tensor([[-1.0, 0.0], [-1.0, 0.0]])
    assert hypergraph_infonce(a, p, 0.01).item() == pytest.approx(math.log(6) / 2, abs=1e-5)


def test_loss_scores_each_pair():
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[2.0, 1.0], [1.0, 1.0]])
    neg = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    # scores: positives 2, 1; negatives 1, 3 -> BPR of (1, -2) = (log(1 + e^-1) + log(1 + e^2)) / 2
    bpr = (math.log1p(math.exp(-1)) + math.log1p(math.exp(2))) / 2
    assert bpr == pytest.approx(1.220095, abs=1e-6)
    assert mmhcl_loss(user, pos, neg, (Z, H), (H, Z), 0.5, 0.0, 0.0, 0.0).item() == pytest.approx(bpr, abs=1e-6)


# ------------------------------------------------------------------- the model on tests/hand_example.py by hand
# u1 {i1, i2}, u2 {i2, i3}, u3 {i3}; image x1 = [1, 0], x2 = [4, 3], x3 = [0, 1] (cos 12: 0.8, 23: 0.6, 13: 0).
# knn_k 2: B rows 1 -> {1, 2}, 2 -> {2, 1}, 3 -> {3, 2}: [[1,1,0],[1,1,0],[0,1,1]]; column sums [2, 3, 1];
# degrees B (B^T 1) = [2 + 3, 2 + 3, 3 + 1] = [5, 5, 4]; B B^T = [[2,2,1],[2,2,1],[1,1,2]]
# A_I = D^-1/2 B B^T D^-1/2 = [[2/5, 2/5, 1/sqrt20], [2/5, 2/5, 1/sqrt20], [1/sqrt20, 1/sqrt20, 1/2]]
# item_layers 1: h_I = A_I E^ii with E^ii = [1, 0], [0, 0], [0, 1]:
#   h1 = h2 = [2/5, 1/sqrt20] = [0.4, 0.223607], h3 = [1/sqrt20, 1/2] = [0.223607, 0.5]
# user_layers 0: h_U = E^uu = [1, 1], [0, 2], [3, 4] (unit: [S, S], [0, 1], [0.6, 0.8])
# n_layers 0: fused e_u = E_U + h_u / |h_u|, e_i = E_I + h_i / |h_i| (|h1| = sqrt(0.16 + 0.05) = 0.458258)
#   e_i1 = [1, 0] + [0.872872, 0.487950] = [1.872872, 0.487950], e_i2 = [0.872872, 1.487950],
#   e_i3 = [1, 1] + [0.408248, 0.912871] = [1.408248, 1.912871]  (|h3| = sqrt(0.05 + 0.25) = 0.547723)
HAND_A_I = np.array([[0.4, 0.4, 1 / math.sqrt(20)], [0.4, 0.4, 1 / math.sqrt(20)],
                     [1 / math.sqrt(20), 1 / math.sqrt(20), 0.5]])


def test_model_on_the_hand_example(tmp_path):
    from tests.hand_example import batch, bpr, build as hand_build, dot, put

    model, _ = hand_build("MMHCL", tmp_path, knn_k=2, user_layers=0, item_layers=1, n_layers=0,
                          user_cl_weight=0.0, item_cl_weight=0.0, reg_weight=0.1)
    e_u, e_i = np.array([[1.0, 0], [0, 1], [1, -1]]), np.array([[1.0, 0], [0, 1], [1, 1]])
    e_uu, e_ii = np.array([[1.0, 1], [0, 2], [3, 4]]), np.array([[1.0, 0], [0, 0], [0, 1]])
    for table, rows in [(model.user_embedding, e_u), (model.item_embedding, e_i),
                        (model.user_hyper_embedding, e_uu), (model.item_hyper_embedding, e_ii)]:
        put(table.weight, np.vstack([np.zeros((1, 2)), rows]))
    b = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1]])
    deg = b @ b.sum(axis=0)
    assert deg.tolist() == [5, 5, 4]
    assert np.allclose(b @ b.T / np.sqrt(np.outer(deg, deg)), HAND_A_I)
    h_i = HAND_A_I @ e_ii
    assert h_i[0].tolist() == pytest.approx([0.4, 0.223607], abs=1e-6)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    fused_u, fused_i = e_u + unit(e_uu), e_i + unit(h_i)
    assert fused_i[0].tolist() == pytest.approx([1.872872, 0.487950], abs=1e-6)
    assert fused_i[2].tolist() == pytest.approx([1.408248, 1.912871], abs=1e-6)
    model.eval()
    out = model.forward()
    assert torch.allclose(out.extra["second_user"][1:], torch.tensor(e_uu).float())
    assert torch.allclose(out.extra["second_item"][1:], torch.tensor(h_i).float(), atol=1e-6)
    assert torch.allclose(out.modality_item["image"][1:], torch.tensor(h_i).float(), atol=1e-6)
    assert torch.allclose(out.user[1:], torch.tensor(fused_u).float(), atol=1e-6)
    assert torch.allclose(out.item[1:], torch.tensor(fused_i).float(), atol=1e-6)
    # loss on (u1, +i2, -i3), (u2, +i3, -i1): BPR of the fused scores + 0.1 * sum of squares / (2 B)
    diffs = [dot(fused_u[0], fused_i[1] - fused_i[2]), dot(fused_u[1], fused_i[2] - fused_i[0])]
    l2 = sum(float(np.sum(r ** 2)) for r in (fused_u[[0, 1]], fused_i[[1, 2]], fused_i[[2, 0]])) / 4
    assert model.calculate_loss(batch([1, 2], [2, 3], [3, 1])).item() == pytest.approx(bpr(diffs) + 0.1 * l2,
                                                                                       abs=1e-5)


@pytest.mark.parametrize("setting, message", [(dict(user_layers=-1), "user_layers must be at least 0"),
                                              (dict(temperature=0.0), "temperature must be > 0"),
                                              (dict(cl_scope="everything"), "cl_scope must be one of")])
def test_model_refuses_bad_settings(tmp_path, setting, message):
    from tests.hand_example import build as hand_build

    with pytest.raises(ValueError, match=message):
        hand_build("MMHCL", tmp_path, **setting)
