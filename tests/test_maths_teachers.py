"""The multimodal teachers' maths against hand-computed values on tests/hand_example.py's example: PromptMMTeacher
(both graph normalisations), LATTICE (the lambda mix of learned and fixed graphs, the softmax modality weights, the
item-graph layers, the loss) and FREEDOM (the fused frozen graph, computed here from the kNN sets, and the loss with
its modality BPR weight). Each test follows the formula of the model's class docstring.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.hand_example import FEATURES, R2, S, batch, bpr, build, put

# Layer-0 ID embeddings shared by the PromptMMTeacher tests (row 0: padding)
USER_0 = [[0, 0], [2, 0], [0, 2], [0, 0]]   # u1 [2,0], u2 [0,2], u3 [0,0]
ITEM_0 = [[0, 0], [0, 0], [2, 2], [2, 0]]   # i1 [0,0], i2 [2,2], i3 [2,0]


def rownorm(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def padded(rows) -> torch.Tensor:
    """Rows of users / items 1..3 with the padding row 0 (zero) in front."""
    return torch.tensor(np.vstack([np.zeros((1, 2)), np.asarray(rows, dtype=np.float64)]), dtype=torch.float32)


def diffs(users, items, triples) -> list[float]:
    """s(u, pos) - s(u, neg) for 1-based (u, pos, neg) triples on [3, d] tables (row k-1 = id k)."""
    users, items = np.asarray(users), np.asarray(items)
    return [float(users[u - 1] @ (items[p - 1] - items[n - 1])) for u, p, n in triples]


def l2(*rows) -> float:
    """The batch L2 by hand: sum of squared entries / (2 B), B = 2 here."""
    return sum(float(np.sum(np.square(r))) for r in rows) / (2 * 2)


TRIPLES = [(1, 2, 3), (2, 3, 1)]  # (u1, +i2, -i3), (u2, +i3, -i1)
BATCH = batch([1, 2], [2, 3], [3, 1])

# ----------------------------------------------------------------------------------------- PromptMMTeacher
# Features ('sparse.npy' as modality image): x1 = [0, 0], x2 = [4, 0], x3 = [0, 4]; Linear_image = identity, so
# Z = X. n_layers 1, model_cat_rate mu = 0.5, dropout 0.
#
# symmetric (A_ui = [[S, 1/2, 0], [0, 1/2, 1/2], [0, 0, S]], A_iu = A_ui^T):
#   F_U = A_ui Z:  u1 = 1/2 x2 = [2, 0];  u2 = 1/2 (x2 + x3) = [2, 2];  u3 = S x3 = [0, 2 sqrt2]
#   F_I = A_iu F_U: i1 = S u1 = [sqrt2, 0];  i2 = 1/2 (u1 + u2) = [2, 1];  i3 = 1/2 u2 + S u3 = [1, 1] + [0, 2] = [1, 3]
#   IDs, layer 1: u1 = S i1 + 1/2 i2 = [1, 1]; u2 = 1/2 (i2 + i3) = [2, 1]; u3 = S i3 = [sqrt2, 0]
#                 i1 = S u1 = [sqrt2, 0];  i2 = 1/2 (u1 + u2) = [1, 1];  i3 = 1/2 u2 + S u3 = [0, 1]
#   layer mean:   u [1.5, 0.5], [1, 1.5], [S, 0];   i [S, 0], [1.5, 1.5], [1, 0.5]
#   fused = mean + 0.5 rownorm(F): u1 = [1.5, 0.5] + 0.5 [1, 0] = [2, 0.5];  i2 = [1.5, 1.5] + 0.5 [2, 1]/sqrt5
#          = [1.947214, 1.723607];  i3 = [1, 0.5] + 0.5 [1, 3]/sqrt10 = [1.158114, 0.974342];  ...
#
# one_sided (each side's rows of R scaled by its own (degree)^-1/2):
#   A_ui = [[S, S, 0], [0, S, S], [0, 0, 1]]  (d_u = 2, 2, 1);  A_iu = [[1, 0, 0], [S, S, 0], [0, S, S]]  (d_i = 1, 2, 2)
#   F_U: u1 = S x2 = [2 sqrt2, 0]; u2 = S (x2 + x3) = [2 sqrt2, 2 sqrt2]; u3 = x3 = [0, 4]
#   F_I: i1 = u1 = [2 sqrt2, 0];  i2 = S (u1 + u2) = [4, 2];  i3 = S (u2 + u3) = [2, 2 + 2 sqrt2]
#   IDs, layer 1: u1 = S (i1 + i2) = [sqrt2, sqrt2]; u2 = S (i2 + i3) = [2 sqrt2, sqrt2]; u3 = i3 = [2, 0]
#                 i1 = u1 = [2, 0];  i2 = S (u1 + u2) = [sqrt2, sqrt2];  i3 = S (u2 + u3) = [0, sqrt2]
#   layer mean:   u [1 + S, S], [sqrt2, 1 + S], [1, 0];   i [1, 0], [1 + S, 1 + S], [1, S]
TEACHER = {
    "symmetric": dict(
        f_user=[[2, 0], [2, 2], [0, 2 * R2]], f_item=[[R2, 0], [2, 1], [1, 3]],
        mean_user=[[1.5, 0.5], [1, 1.5], [S, 0]], mean_item=[[S, 0], [1.5, 1.5], [1, 0.5]],
        # fused BPR: diffs 1.952832, 1.739680 -> 0.147214;  modality BPR: F_u1.(F_i2 - F_i3) = 4 - 2 = 2,
        # F_u2.(F_i3 - F_i1) = 8 - 2 sqrt2 = 5.171573 -> 0.066294;  L2(F): (4 + 8 + 5 + 10 + 10 + 2) / 4 = 9.75
        # loss = 0.147214 + 0.1 * 6 + 0.2 * 9.75 + 0.5 * 0.066294 = 2.730361
        loss=2.730361),
    "one_sided": dict(
        f_user=[[2 * R2, 0], [2 * R2, 2 * R2], [0, 4]], f_item=[[2 * R2, 0], [4, 2], [2, 2 + 2 * R2]],
        mean_user=[[1 + S, S], [R2, 1 + S], [1, 0]], mean_item=[[1, 0], [1 + S, 1 + S], [1, S]],
        # fused diffs 2.663977, 1.863372 -> 0.105790;  modality diffs 4 sqrt2, 8 sqrt2 -> 0.001750;
        # L2(F) = (8 + 16 + 20 + 4 + (2 + 2 sqrt2)^2 twice + 8) / 4 = 26.656854
        # loss = 0.105790 + 0.6 + 0.2 * 26.656854 + 0.5 * 0.001750 = 6.038036
        loss=6.038036),
}


@pytest.mark.parametrize("graph_norm", ["symmetric", "one_sided"])
def test_promptmm_teacher_encode_and_loss_by_hand(tmp_path, graph_norm):
    model, _ = build("PromptMMTeacher", tmp_path, modality_features={"image": "sparse.npy"}, prompt=False,
                     graph_norm=graph_norm, n_layers=1, dropout=0.0, model_cat_rate=0.5, reg_weight=0.1,
                     feat_reg_weight=0.2, modality_bpr_weight=0.5)
    put(model.reduce["image"].weight, [[1, 0], [0, 1]])
    put(model.reduce["image"].bias, [0, 0])
    put(model.user_embedding.weight, USER_0)
    put(model.item_embedding.weight, ITEM_0)
    hand = TEACHER[graph_norm]
    out = model.forward()
    assert torch.allclose(out.modality_user["image"], padded(hand["f_user"]), atol=1e-5)
    assert torch.allclose(out.modality_item["image"], padded(hand["f_item"]), atol=1e-5)
    fused_user = np.asarray(hand["mean_user"]) + 0.5 * rownorm(hand["f_user"])
    fused_item = np.asarray(hand["mean_item"]) + 0.5 * rownorm(hand["f_item"])
    if graph_norm == "symmetric":  # the comment's numbers
        assert fused_user[0].tolist() == pytest.approx([2, 0.5])
        assert fused_item[1].tolist() == pytest.approx([1.947214, 1.723607], abs=1e-6)
        assert fused_item[2].tolist() == pytest.approx([1.158114, 0.974342], abs=1e-6)
    assert torch.allclose(out.user, padded(fused_user), atol=1e-5)
    assert torch.allclose(out.item, padded(fused_item), atol=1e-5)

    layer0 = [np.asarray(USER_0)[1:][[0, 1]], np.asarray(ITEM_0)[1:][[1, 2]], np.asarray(ITEM_0)[1:][[2, 0]]]
    f_u, f_i = np.asarray(hand["f_user"]), np.asarray(hand["f_item"])
    expected = (bpr(diffs(fused_user, fused_item, TRIPLES)) + 0.1 * l2(*layer0)
                + 0.2 * l2(f_u[[0, 1]], f_i[[1, 2]], f_i[[2, 0]]) + 0.5 * bpr(diffs(f_u, f_i, TRIPLES)))
    assert l2(*layer0) == pytest.approx(6.0)
    assert expected == pytest.approx(hand["loss"], abs=1e-6)
    assert model.calculate_loss(BATCH).item() == pytest.approx(hand["loss"], abs=1e-5)


# ---------------------------------------------------------------------------------------------------- LATTICE
# k = 2 (each item keeps itself and its best other item), weighted graphs D^-1/2 S D^-1/2 (D: row sums of S).
# Fixed image graph, from the raw features x1 = [1,0], x2 = [4,3], x3 = [0,1] (cos 12: 0.8, 23: 0.6, 13: 0):
#   1 -> {1: 1, 2: 0.8}, 2 -> {2: 1, 1: 0.8}, 3 -> {3: 1, 2: 0.6}; degrees 1.8, 1.8, 1.6
#   rows [5/9, 4/9, 0], [4/9, 5/9, 0], [0, 0.6/sqrt(1.6*1.8) = S/2, 1/1.6 = 5/8]
# Learned image graph, from P = Linear(x) with W = diag(9, 16): p1 = [9,0], p2 = [36,48], p3 = [0,16]
#   (cos 12: 36/60 = 0.6, 23: 48/60 = 0.8, 13: 0): 1 -> {1, 2: 0.6}, 2 -> {2, 3: 0.8}, 3 -> {3, 2: 0.8};
#   degrees 1.6, 1.8, 1.8: rows [5/8, S/2, 0], [0, 5/9, 4/9], [0, 4/9, 5/9]
# Text: x1 = [1,0], x2 = [0,1], x3 = [0.6,0.8] and an identity projection, so learned = fixed:
#   1 -> {1, 3: 0.6}, 2 -> {2, 3: 0.8}, 3 -> {3, 2: 0.8}; rows [5/8, 0, S/2], [0, 5/9, 4/9], [0, 4/9, 5/9]
FIXED_IMAGE = np.array([[5 / 9, 4 / 9, 0], [4 / 9, 5 / 9, 0], [0, S / 2, 5 / 8]])
LEARNED_IMAGE = np.array([[5 / 8, S / 2, 0], [0, 5 / 9, 4 / 9], [0, 4 / 9, 5 / 9]])
TEXT_GRAPH = np.array([[5 / 8, 0, S / 2], [0, 5 / 9, 4 / 9], [0, 4 / 9, 5 / 9]])
LAMBDA = 0.75
# A^image = (1 - lambda) learned + lambda fixed = 0.25 learned + 0.75 fixed:
#   row 1: [0.25 * 5/8 + 0.75 * 5/9, 0.25 * S/2 + 0.75 * 4/9, 0] = [0.572917, 0.421722, 0]
#   row 2: [0.75 * 4/9, 5/9, 0.25 * 4/9] = [1/3, 5/9, 1/9]
#   row 3: [0, 0.25 * 4/9 + 0.75 * S/2, 0.25 * 5/9 + 0.75 * 5/8] = [0, 0.376276, 0.607639]
A_IMAGE = (1 - LAMBDA) * LEARNED_IMAGE + LAMBDA * FIXED_IMAGE
# modality weights alpha = softmax([log 3, 0]) = [3/4, 1/4]; A = 3/4 A^image + 1/4 A^text
ALPHA = [0.75, 0.25]
E_I = np.array([[1.0, 0], [0, 1], [1, 1]])     # layer-0 items i1, i2, i3
E_U = np.array([[1.0, 0], [0, 1], [1, -1]])    # layer-0 users u1, u2, u3
# A^image E = [[0.572917, 0.421722], [4/9, 2/3], [0.607639, 0.983915]];  A^text E = [[5/8 + S/2, S/2], [4/9, 1],
# [5/9, 1]];  h (1 layer) = 3/4 A^image E + 1/4 A^text E = [[0.674326, 0.404680], [4/9, 3/4], [0.594618, 0.987936]]
# e_i = E_I + rownorm(h) = [[1.857446, 0.514574], [0.509802, 1.860292], [1.515679, 1.856782]]; e_u = E_U (n_layers 0)
# loss: diffs u1.(e_i2 - e_i3) = -1.005877, u2.(e_i3 - e_i1) = 1.342207 -> BPR 0.774839;
#   L2 of u1, u2, i2, i3, i3, i1: (1 + 1 + 1 + 2 + 2 + 1) / 4 = 2, x 0.1 -> 0.974839
# two item-graph layers: h = A (A E) = [[0.588244, 0.561657], [0.531115, 0.709935], [0.528379, 0.882433]]
#   -> diffs -0.914688, 1.167383 -> BPR 0.761273, loss 0.961273
LATTICE_LOSS = {1: 0.974839, 2: 0.961273}


def lattice(tmp_path, layers: int):
    model, _ = build("LATTICE", tmp_path, modalities=("image", "text"), knn_k=2, lambda_coeff=LAMBDA,
                     item_graph_layers=layers, n_layers=0, reg_weight=0.1)
    put(model.projection["image"].weight, [[9, 0], [0, 16]])
    put(model.projection["image"].bias, [0, 0])
    put(model.projection["text"].weight, [[1, 0], [0, 1]])
    put(model.projection["text"].bias, [0, 0])
    put(model.modality_logits, [math.log(3), 0])
    put(model.user_embedding.weight, np.vstack([np.zeros((1, 2)), E_U]))
    put(model.item_embedding.weight, np.vstack([np.zeros((1, 2)), E_I]))
    model.eval()  # drops any cached learned neighbours: they are rebuilt from the projections set above
    return model


def test_lattice_graph_entries_of_the_comments():
    assert A_IMAGE[0].tolist() == pytest.approx([0.572917, 0.421722, 0], abs=1e-6)
    assert A_IMAGE[1].tolist() == pytest.approx([1 / 3, 5 / 9, 1 / 9], abs=1e-6)
    assert A_IMAGE[2].tolist() == pytest.approx([0, 0.376276, 0.607639], abs=1e-6)
    # the fixed and learned graphs are D^-1/2 S D^-1/2 of the kNN similarities listed above
    s_fixed = np.array([[1, 0.8, 0], [0.8, 1, 0], [0, 0.6, 1]])
    s_learned = np.array([[1, 0.6, 0], [0, 1, 0.8], [0, 0.8, 1]])
    for s, graph in [(s_fixed, FIXED_IMAGE), (s_learned, LEARNED_IMAGE)]:
        inv = 1 / np.sqrt(s.sum(axis=1))
        assert np.allclose(inv[:, None] * s * inv[None, :], graph)


def test_lattice_fixed_graph_and_softmax_weights(tmp_path):
    model = lattice(tmp_path, 1)
    assert torch.allclose(model.fixed_graph["image"].matrix.to_dense()[1:, 1:], torch.tensor(FIXED_IMAGE).float(),
                          atol=1e-6)
    assert torch.allclose(model.modality_weights(model.item_embedding.weight), torch.tensor(ALPHA), atol=1e-6)


def test_lattice_mixes_learned_and_fixed_graphs_with_lambda(tmp_path):
    model = lattice(tmp_path, 1)
    out = model.forward()
    image = A_IMAGE @ E_I
    assert image[0].tolist() == pytest.approx([0.572917, 0.421722], abs=1e-6)
    assert torch.allclose(out.modality_item["image"], padded(image), atol=1e-5)
    assert torch.allclose(out.modality_item["text"], padded(TEXT_GRAPH @ E_I), atol=1e-5)


@pytest.mark.parametrize("layers", [1, 2])
def test_lattice_item_graph_layers_and_loss(tmp_path, layers):
    model = lattice(tmp_path, layers)
    graph = ALPHA[0] * A_IMAGE + ALPHA[1] * TEXT_GRAPH
    h = np.linalg.matrix_power(graph, layers) @ E_I
    e_i = E_I + rownorm(h)
    if layers == 1:
        assert h[0].tolist() == pytest.approx([0.674326, 0.404680], abs=1e-6)
    out = model.forward()
    assert torch.allclose(out.user, padded(E_U), atol=1e-6)
    assert torch.allclose(out.item, padded(e_i), atol=1e-5)
    expected = bpr(diffs(E_U, e_i, TRIPLES)) + 0.1 * l2(E_U[[0, 1]], E_I[[1, 2]], E_I[[2, 0]])
    assert expected == pytest.approx(LATTICE_LOSS[layers], abs=1e-6)
    assert model.calculate_loss(BATCH).item() == pytest.approx(LATTICE_LOSS[layers], abs=1e-5)


# ---------------------------------------------------------------------------------------------------- FREEDOM
# Binary kNN graphs, k = 2, normalised D^-1/2 B D^-1/2 with D the row sums of B (all = k = 2): B / 2.
#   image (cos 12: 0.8, 23: 0.6, 13: 0): 1 -> {1, 2}, 2 -> {2, 1}, 3 -> {3, 2}
#   text  (cos 12: 0,   13: 0.6, 23: 0.8): 1 -> {1, 3}, 2 -> {2, 3}, 3 -> {3, 2}
B_IMAGE = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1]])
B_TEXT = np.array([[1, 0, 1], [0, 1, 1], [0, 1, 1]])
MM_WEIGHTS = [0.25, 0.75]
# S = 0.25 B_image / 2 + 0.75 B_text / 2:
#   row 1: [0.125 + 0.375, 0.125, 0.375] = [0.5, 0.125, 0.375]
#   row 2: [0.125, 0.125 + 0.375, 0.375] = [0.125, 0.5, 0.375]
#   row 3: [0, 0.125 + 0.375, 0.125 + 0.375] = [0, 0.5, 0.5]
FUSED = np.array([[0.5, 0.125, 0.375], [0.125, 0.5, 0.375], [0, 0.5, 0.5]])
F_USER = np.array([[1.0, 0], [0, 1], [0, 0]])   # layer-0 users u1, u2, u3 (items: E_I above)
# f^image = x W^T + b with W = I, b = 0: [1, 0], [4, 3], [0, 1]
# f^text with W = [[0, 1], [1, 0]] (swap), b = [1, 0]: [0, 1] + b = [1, 1], [1, 0] + b = [2, 0], [0.8, 0.6] + b = [1.8, 0.6]
F_IMAGE = np.array([[1.0, 0], [4, 3], [0, 1]])
F_TEXT = np.array([[1.0, 1], [2, 0], [1.8, 0.6]])
# one item-graph layer: h = S E_I = [[0.5 + 0.375, 0.125 + 0.375], [0.125 + 0.375, 0.5 + 0.375], [0.5, 0.5 + 0.5]]
#   = [[0.875, 0.5], [0.5, 0.875], [0.5, 1]];  e_i = E_I + h = [[1.875, 0.5], [0.5, 1.875], [1.5, 2]]
# loss: main diffs u1.(e_i2 - e_i3) = 0.5 - 1.5 = -1, u2.(e_i3 - e_i1) = 2 - 0.5 = 1.5 -> BPR 0.757337
#   image diffs 4 - 0 = 4, 1 - 0 = 1 -> 0.165706;  text diffs 2 - 1.8 = 0.2, 0.6 - 1 = -0.4 -> 0.755577
#   L2 (1 + 1 + 1 + 2 + 2 + 1) / 4 = 2
#   total = 0.757337 + 0.5 * (0.165706 + 0.755577) + 0.1 * 2 = 1.417979
# two layers: h = S (S E_I) = [[0.6875, 0.734375], [0.546875, 0.875], [0.5, 0.9375]] -> main BPR 0.770885,
#   total 1.431527
FREEDOM_LOSS = {1: 1.417979, 2: 1.431527}


def freedom(tmp_path, layers: int):
    model, _ = build("FREEDOM", tmp_path, modalities=("image", "text"), knn_k=2, mm_weights=MM_WEIGHTS,
                     mm_layers=layers, n_layers=0, modality_bpr_weight=0.5, reg_weight=0.1)
    put(model.projection["image"].weight, [[1, 0], [0, 1]])
    put(model.projection["image"].bias, [0, 0])
    put(model.projection["text"].weight, [[0, 1], [1, 0]])
    put(model.projection["text"].bias, [1, 0])
    put(model.user_embedding.weight, np.vstack([np.zeros((1, 2)), F_USER]))
    put(model.item_embedding.weight, np.vstack([np.zeros((1, 2)), E_I]))
    model.eval()
    return model


def test_freedom_fused_graph_is_the_weighted_sum_of_the_normalised_knn_graphs(tmp_path):
    # the kNN sets above, from the cosines by brute force
    for name, b in [("image", B_IMAGE), ("text", B_TEXT)]:
        x = rownorm(np.asarray(FEATURES[name][1:], dtype=np.float64))
        top2 = np.argsort(-(x @ x.T), axis=1)[:, :2]
        kept = np.zeros((3, 3), dtype=int)
        np.put_along_axis(kept, top2, 1, axis=1)
        assert kept.tolist() == b.tolist()
    assert np.allclose(MM_WEIGHTS[0] * B_IMAGE / 2 + MM_WEIGHTS[1] * B_TEXT / 2, FUSED)
    model = freedom(tmp_path, 1)
    graph = model.item_graph.matrix.to_dense()
    assert torch.allclose(graph[1:, 1:], torch.tensor(FUSED).float(), atol=1e-6)
    assert not graph[0].any() and not graph[:, 0].any(), "the padding item is in no graph"


@pytest.mark.parametrize("layers", [1, 2])
def test_freedom_encode_and_loss_by_hand(tmp_path, layers):
    model = freedom(tmp_path, layers)
    h = np.linalg.matrix_power(FUSED, layers) @ E_I
    if layers == 1:
        assert np.allclose(h, [[0.875, 0.5], [0.5, 0.875], [0.5, 1]])
    e_i = E_I + h
    out = model.forward()
    assert torch.allclose(out.user, padded(F_USER), atol=1e-6)
    assert torch.allclose(out.item, padded(e_i), atol=1e-6)
    assert torch.allclose(out.modality_item["image"][1:], torch.tensor(F_IMAGE).float(), atol=1e-6)
    assert torch.allclose(out.modality_item["text"][1:], torch.tensor(F_TEXT).float(), atol=1e-6)
    expected = (bpr(diffs(F_USER, e_i, TRIPLES))
                + 0.5 * (bpr(diffs(F_USER, F_IMAGE, TRIPLES)) + bpr(diffs(F_USER, F_TEXT, TRIPLES)))
                + 0.1 * l2(F_USER[[0, 1]], E_I[[1, 2]], E_I[[2, 0]]))
    assert expected == pytest.approx(FREEDOM_LOSS[layers], abs=1e-6)
    assert model.calculate_loss(BATCH).item() == pytest.approx(FREEDOM_LOSS[layers], abs=1e-5)


def test_freedom_modality_bpr_weight_scales_only_the_modality_terms(tmp_path):
    model = freedom(tmp_path, 1)
    model.modality_bpr_weight = 0.0
    # 0.757337 + 0.1 * 2
    assert model.calculate_loss(BATCH).item() == pytest.approx(0.957337, abs=1e-5)


# --------------------------------------------------------------- LATTICE: the learned graph's sparse machinery
# Pattern with indices [[1, 0], [2, 1], [1, 2]] (n = 3, k = 2); each row sorted: [[0, 1], [1, 2], [1, 2]].
#   CSR: crow = [0, 2, 4, 6], cols = [0, 1, 1, 2, 1, 2] (rows 0, 0, 1, 1, 2, 2)
#   transpose: column counts [1, 3, 2] -> crow_t = [0, 1, 4, 6]; perm = the stable order of cols by value
#   = [0, 1, 2, 4, 3, 5]; cols_t = rows[perm] = [0, 0, 1, 2, 1, 2]
# values V = [[1, 2], [3, 4], [5, 6]] in that layout: A = [[1, 2, 0], [0, 3, 4], [0, 5, 6]], A^T its transpose.
PATTERN = [[1, 0], [2, 1], [1, 2]]
V = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
A_V = [[1.0, 2.0, 0.0], [0.0, 3.0, 4.0], [0.0, 5.0, 6.0]]
U = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]


def test_knn_pattern_csr_structure_by_hand():
    from recbole_promptmm.model.lattice import KnnPattern

    p = KnnPattern(torch.tensor(PATTERN))
    assert p.indices.tolist() == [[0, 1], [1, 2], [1, 2]]
    assert p.crow.tolist() == [0, 2, 4, 6] and p.cols.tolist() == [0, 1, 1, 2, 1, 2]
    assert p.perm.tolist() == [0, 1, 2, 4, 3, 5]
    assert p.crow_t.tolist() == [0, 1, 4, 6] and p.cols_t.tolist() == [0, 0, 1, 2, 1, 2]
    assert p.crow_t.dtype == torch.long
    assert torch.equal(p.matrix(torch.tensor(V)).to_dense(), torch.tensor(A_V))
    assert torch.equal(p.matrix_t(torch.tensor(V)).to_dense(), torch.tensor(A_V).T)
    # a column nobody points to (2): counts [3, 3, 0] -> crow_t = [0, 3, 6, 6]; the matrices stay 3 x 3
    q = KnnPattern(torch.tensor([[0, 1], [0, 1], [1, 0]]))
    assert q.crow_t.tolist() == [0, 3, 6, 6] and q.cols_t.tolist() == [0, 1, 2, 0, 1, 2]
    assert q.matrix(torch.tensor(V)).shape == (3, 3) and q.matrix_t(torch.tensor(V)).shape == (3, 3)
    # k = 1: one entry per row, crow = [0, 1, 2, 3]; the transpose of the permutation (0)(1 2)
    r = KnnPattern(torch.tensor([[0], [2], [1]]))
    assert r.crow.tolist() == [0, 1, 2, 3] and r.crow_t.tolist() == [0, 1, 2, 3]
    assert torch.equal(r.matrix_t(torch.tensor([[1.0], [2.0], [3.0]])).to_dense(),
                       torch.tensor([[1.0, 0, 0], [0, 0, 3], [0, 2, 0]]))


def test_pair_dots_and_pattern_matmul_values_and_gradients_by_hand():
    from recbole_promptmm.model.lattice import KnnPattern, pair_dots, pattern_matmul

    p = KnnPattern(torch.tensor(PATTERN))
    # sampled products a_i . b_{indices[i, j]} with a = U, b = V: row 0 (cols 0, 1): 1, 3; row 1 (cols 1, 2):
    # 4, 6; row 2 (cols 1, 2): 3 + 4 = 7, 5 + 6 = 11
    assert torch.equal(p.sampled_dots(torch.tensor(U), torch.tensor(V)), torch.tensor([[1.0, 3], [4, 6], [7, 11]]))
    # pair_dots(U): u_i . u_{indices[i, j]}: [[1, 0], [1, 1], [1, 2]]; backward of sum(G * s) with G = V:
    # G u + G^T u = A U + A^T U = [[1, 2], [4, 7], [6, 11]] + [[1, 0], [7, 8], [6, 10]]
    u = torch.tensor(U, requires_grad=True)
    s = pair_dots(u, p)
    assert torch.equal(s.detach(), torch.tensor([[1.0, 0], [1, 1], [1, 2]]))
    (s * torch.tensor(V)).sum().backward()
    assert torch.equal(u.grad, torch.tensor([[2.0, 2], [11, 15], [12, 21]]))
    # pattern_matmul(V, E = U) = A U = [[1, 2], [4, 7], [6, 11]]; backward of sum(W * out), W = [[1, 0], [0, 2],
    # [1, -1]]: d/dV[i, j] = W_i . e_{indices[i, j]} = [[1, 0], [2, 2], [-1, 0]];
    # d/dE = A^T W = [[1, 0], [2 W0 + 3 W1 + 5 W2], [4 W1 + 6 W2]] = [[1, 0], [7, 1], [6, 2]]
    w = torch.tensor([[1.0, 0], [0, 2], [1, -1]])
    for need_values, need_e in [(True, True), (True, False), (False, True)]:
        values = torch.tensor(V, requires_grad=need_values)
        e = torch.tensor(U, requires_grad=need_e)
        out = pattern_matmul(values, e, p)
        assert torch.equal(out.detach(), torch.tensor([[1.0, 2], [4, 7], [6, 11]]))
        (out * w).sum().backward()
        if need_values:
            assert torch.equal(values.grad, torch.tensor([[1.0, 0], [2, 2], [-1, 0]]))
        if need_e:
            assert torch.equal(e.grad, torch.tensor([[1.0, 0], [7, 1], [6, 2]]))


# ------------------------------------------------------------------------ LATTICE: the learned-neighbour cache
# With the image projection set to the identity after the first training forward, the cached neighbour sets of
# W = diag(9, 16) (1 -> {1, 2}, 2 -> {2, 3}, 3 -> {2, 3}) stay for the epoch while their weights are recomputed
# from the new projections (the raw features: cos 12 = 0.8, 23 = 0.6):
#   S rows: [1, 0.8, 0], [0, 1, 0.6], [0, 0.6, 1]; degrees 1.8, 1.6, 1.6
#   learned = [[1/1.8, 0.8/sqrt(1.8 * 1.6) = sqrt2/3, 0], [0, 1/1.6, 0.6/1.6], [0, 0.6/1.6, 1/1.6]]
# A switch of mode (or a load_state_dict) drops the cache: the neighbours of the identity projection are the
# fixed graph's, so learned = FIXED_IMAGE and A^image = FIXED_IMAGE.
CACHED_LEARNED = np.array([[5 / 9, R2 / 3, 0], [0, 5 / 8, 3 / 8], [0, 3 / 8, 5 / 8]])


def test_lattice_learned_neighbours_are_cached_for_an_epoch(tmp_path):
    model = lattice(tmp_path, 1)
    model.train()
    assert model.training, "train() trains by default"
    image = model.forward().modality_item["image"]
    assert torch.allclose(image, padded(A_IMAGE @ E_I), atol=1e-5)
    put(model.projection["image"].weight, [[1, 0], [0, 1]])
    assert CACHED_LEARNED[0, 1] == pytest.approx(0.8 / math.sqrt(1.8 * 1.6))
    cached = (1 - LAMBDA) * CACHED_LEARNED + LAMBDA * FIXED_IMAGE
    assert torch.allclose(model.forward().modality_item["image"], padded(cached @ E_I), atol=1e-5)
    model.eval()
    assert torch.allclose(model.forward().modality_item["image"], padded(FIXED_IMAGE @ E_I), atol=1e-5)


def test_lattice_load_state_dict_drops_the_cached_neighbours(tmp_path):
    model = lattice(tmp_path, 1)
    model.forward()  # caches the neighbours of W = diag(9, 16)
    state = model.state_dict()
    state["projection.image.weight"] = torch.eye(2)
    del state["modality_logits"]
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["modality_logits"]
    assert torch.equal(model.projection["image"].weight.detach(), torch.eye(2))
    assert torch.allclose(model.forward().modality_item["image"], padded(FIXED_IMAGE @ E_I), atol=1e-5)


# The gradients of the loss: the model's sparse backward passes (pair_dots, pattern_matmul on the per-epoch
# pattern, whose padding row repeats column 0) against autograd of the formulas written densely, on the
# neighbour sets listed above (image with W = diag(9, 16): 1 -> {1, 2}, 2 -> {2, 3}, 3 -> {3, 2}; text:
# 1 -> {1, 3}, 2 -> {2, 3}, 3 -> {3, 2}).
def dense_lattice_loss(w_image, b_image, w_text, b_text, logits, e_u, e_i):
    neighbours = {"image": [[0, 1], [1, 2], [2, 1]], "text": [[0, 2], [1, 2], [2, 1]]}
    fixed = {"image": torch.tensor(FIXED_IMAGE).float(), "text": torch.tensor(TEXT_GRAPH).float()}
    projections = {"image": (w_image, b_image), "text": (w_text, b_text)}
    alpha = torch.softmax(logits, dim=0)
    h = 0
    for k, m in enumerate(["image", "text"]):
        w, b = projections[m]
        p = torch.nn.functional.normalize(torch.tensor(FEATURES[m][1:]).float() @ w.T + b, dim=-1)
        mask = torch.zeros(3, 3)
        for i, row in enumerate(neighbours[m]):
            mask[i, row] = 1.0
        sims = (p @ p.T).clamp_min(0) * mask
        deg = sims.sum(dim=1)
        learned = sims / torch.sqrt(deg[:, None] * deg[None, :])
        h = h + alpha[k] * ((1 - LAMBDA) * learned + LAMBDA * fixed[m]) @ e_i
    item = e_i + torch.nn.functional.normalize(h, dim=-1)
    u, pos, neg = torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([2, 0])
    bpr_term = -torch.nn.functional.logsigmoid((e_u[u] * (item[pos] - item[neg])).sum(-1)).mean()
    return bpr_term + 0.1 * (e_u[u].pow(2).sum() + e_i[pos].pow(2).sum() + e_i[neg].pow(2).sum()) / 4


def test_lattice_gradients_equal_autograd_of_the_dense_formulas(tmp_path):
    model = lattice(tmp_path, 1)
    model.train()
    loss = model.calculate_loss(BATCH)
    assert loss.item() == pytest.approx(LATTICE_LOSS[1], abs=1e-5)
    loss.backward()
    params = [model.projection["image"].weight, model.projection["image"].bias, model.projection["text"].weight,
              model.projection["text"].bias, model.modality_logits]
    ref = [x.detach().clone().requires_grad_() for x in params]
    e_u = torch.tensor(E_U).float().requires_grad_()
    e_i = torch.tensor(E_I).float().requires_grad_()
    dense = dense_lattice_loss(*ref, e_u, e_i)
    assert dense.item() == pytest.approx(LATTICE_LOSS[1], abs=1e-5)
    dense.backward()
    for got, want in zip(params, ref):
        assert want.grad.abs().sum() > 0
        assert torch.allclose(got.grad, want.grad, atol=1e-5)
    assert torch.allclose(model.item_embedding.weight.grad[1:], e_i.grad, atol=1e-5)
    assert torch.allclose(model.user_embedding.weight.grad[1:], e_u.grad, atol=1e-5)


# ------------------------------------------------------------------------ LATTICE: one modality, lambda's range
# Image alone: no softmax weights (alpha = [1]); h = A^image E_I = [[0.572917, 0.421722], [4/9, 2/3],
# [0.607639, 0.983915]]; |h| = 0.711395, 0.801234, 1.156423; h / |h| = [[0.805343, 0.592810],
# [0.554700, 0.832050], [0.525447, 0.850826]].
# n_layers 1 (A_ui = [[S, 1/2, 0], [0, 1/2, 1/2], [0, 0, S]]) on E_U = [1,0], [0,1], [1,-1] and E_I:
#   layer 1: u1 = S [1,0] + 1/2 [0,1] = [S, 1/2], u2 = 1/2 [0,1] + 1/2 [1,1] = [1/2, 1], u3 = S [1,1] = [S, S]
#            i1 = S [1,0] = [S, 0], i2 = 1/2 ([1,0] + [0,1]) = [1/2, 1/2], i3 = 1/2 [0,1] + S [1,-1] = [S, 1/2 - S]
#   mean: users [(1+S)/2, 1/4], [1/4, 1], [(1+S)/2, (S-1)/2]; items [(1+S)/2, 0], [1/4, 3/4], [(1+S)/2, 3/4 - S/2]
#   e_i = mean + h / |h| = [[1.658896, 0.592810], [0.804700, 1.582050], [1.379000, 1.247273]]
SINGLE_USER = np.array([[(1 + S) / 2, 0.25], [0.25, 1], [(1 + S) / 2, (S - 1) / 2]])
SINGLE_ITEM = np.array([[(1 + S) / 2, 0], [0.25, 0.75], [(1 + S) / 2, 0.75 - S / 2]])


def test_lattice_single_modality_by_hand(tmp_path):
    model, _ = build("LATTICE", tmp_path, modalities=("image",), knn_k=2, lambda_coeff=LAMBDA,
                     item_graph_layers=1, n_layers=1, reg_weight=0.1)
    assert model.modality_logits is None and "modality_logits" not in dict(model.named_parameters())
    assert torch.equal(model.modality_weights(model.item_embedding.weight), torch.tensor([1.0]))
    put(model.projection["image"].weight, [[9, 0], [0, 16]])
    put(model.projection["image"].bias, [0, 0])
    put(model.user_embedding.weight, np.vstack([np.zeros((1, 2)), E_U]))
    put(model.item_embedding.weight, np.vstack([np.zeros((1, 2)), E_I]))
    # a fresh model (no train() / eval() yet) builds its learned neighbours on the first forward
    e_i = SINGLE_ITEM + rownorm(A_IMAGE @ E_I)
    assert rownorm(A_IMAGE @ E_I)[2].tolist() == pytest.approx([0.525447, 0.850826], abs=1e-6)
    assert np.allclose(e_i, [[1.658896, 0.592810], [0.804700, 1.582050], [1.379000, 1.247273]], atol=1e-6)
    out = model.forward()
    assert torch.allclose(out.user, padded(SINGLE_USER), atol=1e-5)
    assert torch.allclose(out.item, padded(e_i), atol=1e-5)
    assert torch.allclose(out.modality_item["image"], padded(A_IMAGE @ E_I), atol=1e-5)
    expected = bpr(diffs(SINGLE_USER, e_i, TRIPLES)) + 0.1 * l2(E_U[[0, 1]], E_I[[1, 2]], E_I[[2, 0]])
    assert model.calculate_loss(BATCH).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("lam, graph", [(0.0, LEARNED_IMAGE), (1.0, FIXED_IMAGE)])
def test_lattice_lambda_ends_pick_one_graph(tmp_path, lam, graph):
    model, _ = build("LATTICE", tmp_path, modalities=("image",), knn_k=2, lambda_coeff=lam, n_layers=0)
    put(model.projection["image"].weight, [[9, 0], [0, 16]])
    put(model.projection["image"].bias, [0, 0])
    put(model.item_embedding.weight, np.vstack([np.zeros((1, 2)), E_I]))
    model.eval()
    assert torch.allclose(model.forward().modality_item["image"], padded(graph @ E_I), atol=1e-5)


@pytest.mark.parametrize("setting, message", [(dict(lambda_coeff=-0.1), "lambda_coeff must be in"),
                                              (dict(lambda_coeff=1.1), "lambda_coeff must be in"),
                                              (dict(item_graph_layers=0), "item_graph_layers must be at least 1")])
def test_lattice_bad_settings_are_refused(tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        build("LATTICE", tmp_path, **setting)


# ------------------------------------------------------------------------------------- FREEDOM: the settings
def test_freedom_modality_weights_by_hand():
    from recbole_promptmm.model.freedom import modality_weights

    assert modality_weights(None, ["image", "text"]) == [0.5, 0.5]
    assert modality_weights(None, ["image"]) == [1.0]
    assert modality_weights(2, ["image"]) == [2.0]
    got = modality_weights((1, 0), ["image", "text"])  # a zero weight is allowed; ints become floats
    assert got == [1.0, 0.0] and all(type(w) is float for w in got)
    with pytest.raises(ValueError, match="mm_weights has 1 value"):
        modality_weights([1.0], ["image", "text"])
    for bad in ([-1.0, 1.0], [math.inf, 1.0], [math.nan, 1.0], ["a", 1.0]):
        with pytest.raises(ValueError, match="mm_weights must be non-negative numbers"):
            modality_weights(bad, ["image", "text"])


@pytest.mark.parametrize("setting, message", [(dict(edge_dropout=1.0), r"edge_dropout must be in \[0, 1\)"),
                                              (dict(edge_dropout=-0.1), r"edge_dropout must be in \[0, 1\)"),
                                              (dict(mm_layers=0), "mm_layers must be at least 1")])
def test_freedom_bad_settings_are_refused(tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        build("FREEDOM", tmp_path, **setting)


# ------------------------------------------------------------------ FREEDOM: LightGCN on the full / pruned graph
# n_layers = 1 on the full graph (A_ui = [[S, 1/2, 0], [0, 1/2, 1/2], [0, 0, S]]), users F_USER, items E_I:
#   layer 1: u1 = S [1,0] + 1/2 [0,1] = [S, 1/2], u2 = 1/2 [0,1] + 1/2 [1,1] = [1/2, 1], u3 = S [1,1] = [S, S]
#            i1 = S u1_0 = [S, 0], i2 = 1/2 ([1,0] + [0,1]) = [1/2, 1/2], i3 = 1/2 [0,1] + S [0,0] = [0, 1/2]
#   mean: users [(1+S)/2, 1/4], [1/4, 1], [S/2, S/2];  items [(1+S)/2, 0], [1/4, 3/4], [1/2, 3/4] (+ h)
FULL_USER = np.array([[(1 + S) / 2, 0.25], [0.25, 1], [S / 2, S / 2]])
FULL_ITEM = np.array([[(1 + S) / 2, 0], [0.25, 0.75], [0.5, 0.75]])


def test_freedom_prunes_the_graph_in_training_only(tmp_path):
    model, _ = build("FREEDOM", tmp_path, modalities=("image", "text"), knn_k=2, mm_weights=MM_WEIGHTS,
                     mm_layers=1, n_layers=1, edge_dropout=0.4)
    put(model.user_embedding.weight, np.vstack([np.zeros((1, 2)), F_USER]))
    put(model.item_embedding.weight, np.vstack([np.zeros((1, 2)), E_I]))
    model.eval()
    h = FUSED @ E_I
    out = model.forward()
    assert torch.allclose(out.user, padded(FULL_USER), atol=1e-6)
    assert torch.allclose(out.item, padded(FULL_ITEM + h), atol=1e-6)

    model.train()  # a new epoch: round(0.6 * 5) = 3 of the 5 edges, normalised by their own degrees
    graph = model.adjacency()
    assert graph is model._epoch_graph[0] and graph is not model.full_adjacency
    dense = graph.matrix.to_dense().numpy()
    block = dense[:4, 4:]  # users (rows 0..3) x items (columns 4..7 of the [U + I] graph)
    edges = [(u, i) for u in range(4) for i in range(4) if block[u, i] != 0]
    assert len(edges) == 3 and set(edges) <= {(1, 1), (1, 2), (2, 2), (2, 3), (3, 3)}
    d_u = {u: sum(1 for e in edges if e[0] == u) for u, _ in edges}
    d_i = {i: sum(1 for e in edges if e[1] == i) for _, i in edges}
    for u, i in edges:
        assert block[u, i] == pytest.approx(1 / math.sqrt(d_u[u] * d_i[i]), abs=1e-6)
    assert np.allclose(dense[4:, :4], block.T)
    # LightGCN, one layer, on the kept edges: mean of layer 0 and one step
    layer0_u, layer0_i = np.vstack([np.zeros((1, 2)), F_USER]), np.vstack([np.zeros((1, 2)), E_I])
    out = model.forward()
    assert torch.allclose(out.user, torch.tensor((layer0_u + block @ layer0_i) / 2).float(), atol=1e-6)
    assert torch.allclose(out.item[1:], torch.tensor((layer0_i + block.T @ layer0_u)[1:] / 2 + h).float(), atol=1e-6)

    model.eval()  # evaluation: the full graph again
    assert model.adjacency() is model.full_adjacency
    assert torch.allclose(model.forward().user, padded(FULL_USER), atol=1e-6)

    model.train()  # the model moves after the epoch began ('meta' stands for another device): the graph follows
    model.item_embedding.to("meta")
    moved = model.adjacency()
    assert moved.matrix.device.type == "meta" and model._epoch_graph == (moved,)
    model.train()  # the next epoch's graph is drawn straight onto the model's device
    assert model._epoch_graph[0].matrix.device.type == "meta"


def test_freedom_without_dropout_keeps_every_edge(tmp_path):
    model, _ = build("FREEDOM", tmp_path, n_layers=1, edge_dropout=0.0)
    model.train()
    assert torch.equal(model.adjacency().matrix.to_dense(), model.full_adjacency.matrix.to_dense())
