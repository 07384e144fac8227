"""The soft prompt's maths (recbole_promptmm/model/prompt.py) and the models' feature view (``normalise_features``)
against hand-computed values: PCA hard tokens, user tokens through the graph, the soft prompts, the ID-space
injection (its sign), the feature-space injection, the prompt's BPR term; and the prompt inside PromptMMTeacher.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recbole_promptmm.model.graph import Propagation
from recbole_promptmm.model.multimodal import normalise_features
from recbole_promptmm.model.prompt import PromptAdapter, PromptVectors, hard_tokens, pca_tokens
from tests.hand_example import S, batch, bpr, build, put

# --------------------------------------------------------------------------------------------- hard tokens
# 5 rows (row 0, the padding item, counts like any other), offset [1, 2] so that centring matters.
# Centred: [0, 0], [3, 4], [-3, -4], [-0.8, 0.6], [0.8, -0.6]. Principal axes u = [0.6, 0.8] (projections 0, 5, -5,
# 0, 0: variance 50/4) and v = [-0.8, 0.6] (0, 0, 0, 1, -1: variance 2/4), so the tokens are
#   column 1: +-[0, 5, -5, 0, 0], column 2: +-[0, 0, 0, 1, -1]  (an SVD fixes each axis up to its sign)
IMAGE = torch.tensor([[0.0, 0], [3, 4], [-3, -4], [-0.8, 0.6], [0.8, -0.6]]) + torch.tensor([1.0, 2.0])
IMAGE_TOKENS = np.array([[0, 0], [5, 0], [-5, 0], [0, 1], [0, -1]], dtype=np.float64)
# One-dimensional text: [0, 2, 4, 6, 8], mean 4 -> centred [-4, -2, 0, 2, 4]; a 2-d token has a zero column 2
TEXT = torch.tensor([[0.0], [2], [4], [6], [8]])
TEXT_TOKENS = np.array([[-4, 0], [-2, 0], [0, 0], [2, 0], [4, 0]], dtype=np.float64)
# User tokens through A_ui (users 0..2 x items 0..4): u1 = i1 + 1/2 i3, u2 = 1/2 i2 + 1/2 i4
A_UI = np.array([[0, 0, 0, 0, 0], [0, 1, 0, 0.5, 0], [0, 0, 0.5, 0, 0.5]])


def signs(tokens: torch.Tensor, hand: np.ndarray) -> np.ndarray:
    """The +-1 per column that makes ``hand`` equal ``tokens`` (asserted), 1 for an all-zero column."""
    out = np.ones(hand.shape[1])
    for c in range(hand.shape[1]):
        if np.any(hand[:, c]):
            out[c] = 1.0 if np.allclose(tokens[:, c].numpy(), hand[:, c], atol=1e-5) else -1.0
    assert np.allclose(tokens.numpy(), hand * out, atol=1e-5), (tokens, hand)
    return out


def test_pca_tokens_by_hand():
    signs(pca_tokens(IMAGE, 2), IMAGE_TOKENS)
    # more components than feature columns: the missing ones are zero
    tokens = pca_tokens(IMAGE, 3)
    signs(tokens, np.hstack([IMAGE_TOKENS, np.zeros((5, 1))]))
    # fewer: the top ones only
    signs(pca_tokens(IMAGE, 1), IMAGE_TOKENS[:, :1])
    signs(pca_tokens(TEXT, 2), TEXT_TOKENS)


def test_pca_tokens_with_fewer_rows_than_components():
    """3 rows in 4-d, dim 4: an SVD of 3 rows has 3 components (the third one zero, centring costs a rank), the 4th
    token column is exactly zero (no component is made up for it)."""
    # Orthonormal a = [0.6, 0, 0.8, 0], b = [0, 0.6, 0, 0.8]; centred rows 2a + b, -2a + b, -2b:
    #   a-projections [2, -2, 0] (variance 8/2), b-projections [1, 1, -2] (variance 6/2): tokens +-[2, -2, 0], +-[1, 1, -2]
    centred = torch.tensor([[1.2, 0.6, 1.6, 0.8], [-1.2, 0.6, -1.6, 0.8], [0, -1.2, 0, -1.6]])
    tokens = pca_tokens(centred + torch.tensor([1.0, 2, 3, 4]), 4)
    signs(tokens, np.array([[2, 1, 0, 0], [-2, 1, 0, 0], [0, -2, 0, 0]], dtype=np.float64))
    assert torch.equal(tokens[:, 3], torch.zeros(3))


def test_hard_tokens_average_the_modalities_and_propagate_to_users():
    a_ui = Propagation(sp.csr_matrix(A_UI))
    h_u, h_i = hard_tokens({"image": IMAGE, "text": TEXT}, a_ui, 2)
    image = IMAGE_TOKENS * signs(pca_tokens(IMAGE, 2), IMAGE_TOKENS)
    text = TEXT_TOKENS * signs(pca_tokens(TEXT, 2), TEXT_TOKENS)
    # h_i = (image + text) / 2, e.g. with the signs as written: i1 = ([5, 0] + [-2, 0]) / 2 = [1.5, 0]
    expected_items = (image + text) / 2
    assert np.allclose(h_i.numpy(), expected_items, atol=1e-5)
    # h_u: u1 = h_i1 + 1/2 h_i3, u2 = 1/2 (h_i2 + h_i4)
    expected_users = np.stack([np.zeros(2), expected_items[1] + 0.5 * expected_items[3],
                               0.5 * (expected_items[2] + expected_items[4])])
    assert np.allclose(h_u.numpy(), expected_users, atol=1e-5)
    assert not h_i.requires_grad and not h_u.requires_grad


def adapter(weight_sp=0.5, weight_fp=0.25, weight_bpr=0.1) -> PromptAdapter:
    return PromptAdapter({"image": IMAGE, "text": TEXT}, Propagation(sp.csr_matrix(A_UI)), 2, weight_sp, weight_fp,
                         weight_bpr)


def test_checkpoints_hold_only_the_soft_prompt():
    """The hard tokens and the two cached products are rebuilt from the dataset: buffers, but not in a state dict."""
    prompt = adapter()
    assert sorted(prompt.state_dict()) == ["item.bias", "item.weight", "user.bias", "user.weight"]
    assert sorted(name for name, _ in prompt.named_buffers()) == ["h_i", "h_u", "htx_image", "htx_text", "sum_image",
                                                                   "sum_text"]


def test_soft_prompts_are_linear_in_the_hard_tokens():
    prompt = adapter()
    put(prompt.user.weight, [[1, 2], [0, -1]])
    put(prompt.user.bias, [0.5, 0])
    put(prompt.item.weight, [[0, 1], [1, 0]])
    put(prompt.item.bias, [0, 3])
    p = prompt()
    h_u, h_i = prompt.h_u.numpy(), prompt.h_i.numpy()
    # p_u = W_u h_u + b_u: [h1 + 2 h2 + 0.5, -h2]; p_i = W_i h_i + b_i: [h2, h1 + 3]
    assert np.allclose(p.user.detach().numpy(), np.stack([h_u[:, 0] + 2 * h_u[:, 1] + 0.5, -h_u[:, 1]], 1), atol=1e-5)
    assert np.allclose(p.item.detach().numpy(), np.stack([h_i[:, 1], h_i[:, 0] + 3], 1), atol=1e-5)


def test_inject_ids_adds_the_normalised_prompt():
    prompt = adapter(weight_sp=0.5)
    user = torch.tensor([[1.0, 0], [0, 1], [2, 2]])
    item = torch.tensor([[0.0, 0], [1, 1]])
    p = PromptVectors(user=torch.tensor([[3.0, 4], [0, -2], [1, 0]]), item=torch.tensor([[-5.0, 0], [0, 0.5]]))
    # users: rownorm(p_u) = [0.6, 0.8], [0, -1], [1, 0]; + 0.5 x that:
    #   [1 + 0.3, 0 + 0.4] = [1.3, 0.4];  [0, 1 - 0.5] = [0, 0.5];  [2 + 0.5, 2] = [2.5, 2]
    # items: rownorm(p_i) = [-1, 0], [0, 1]: [-0.5, 0], [1, 1.5]
    new_user, new_item = prompt.inject_ids(user, item, p)
    assert torch.allclose(new_user, torch.tensor([[1.3, 0.4], [0, 0.5], [2.5, 2]]), atol=1e-6)
    assert torch.allclose(new_item, torch.tensor([[-0.5, 0], [1, 1.5]]), atol=1e-6)
    # no ID-space weight: unchanged
    same_user, same_item = adapter(weight_sp=0.0).inject_ids(user, item, p)
    assert torch.equal(same_user, user) and torch.equal(same_item, item)


def test_inject_features_is_the_dense_formula():
    """X + lambda_fp rownorm(p_I (p_I^T X)), computed here with the dense products (the adapter caches two small
    ones instead)."""
    prompt = adapter(weight_fp=0.25)
    put(prompt.item.weight, [[0, 1], [1, 0]])
    put(prompt.item.bias, [0, 3])
    p = prompt()
    for name, x in {"image": IMAGE, "text": TEXT}.items():
        p_i = p.item.detach().double()
        expected = x.double() + 0.25 * F.normalize(p_i @ (p_i.T @ x.double()), dim=-1)
        assert torch.allclose(prompt.inject_features(name, x, p).double(), expected, atol=1e-5)
    assert torch.equal(adapter(weight_fp=0.0).inject_features("image", IMAGE, p), IMAGE)


def test_prompt_loss_by_hand():
    p = PromptVectors(user=torch.tensor([[0.0, 0], [1, 0], [0, 1]]),
                      item=torch.tensor([[0.0, 0], [2, 0], [0, 3], [1, 1]]))
    # (u1, +i1, -i3): 2 - 1 = 1;  (u2, +i2, -i3): 3 - 1 = 2
    # 0.1 x (log(1 + e^-1) + log(1 + e^-2)) / 2 = 0.1 x (0.313262 + 0.126928) / 2 = 0.022009
    assert bpr([1, 2]) == pytest.approx(0.220095, abs=1e-6)
    loss = adapter(weight_bpr=0.1).loss(p, torch.tensor([1, 2]), torch.tensor([1, 2]), torch.tensor([3, 3]))
    assert loss.item() == pytest.approx(0.1 * bpr([1, 2]), abs=1e-7)
    assert adapter(weight_bpr=0.0).loss(p, torch.tensor([1]), torch.tensor([1]), torch.tensor([3])).item() == 0


# ---------------------------------------------------------------------------------- the prompt in a model
def test_prompt_inside_the_teacher(tmp_path):
    """PromptMMTeacher with the prompt on (one_sided graph): user tokens through the teacher's own A_ui, the ID
    injection on the layer-0 embeddings that the model encodes, and the prompt's BPR term added to the loss."""
    model, _ = build("PromptMMTeacher", tmp_path, modalities=("image", "text"), prompt=True, graph_norm="one_sided",
                     prompt_weight_sp=0.5, prompt_weight_fp=0.0, prompt_weight_bpr=0.1, dropout=0.0)
    prompt = model.prompt
    # one_sided A_ui = [[S, S, 0], [0, S, S], [0, 0, 1]] (d_u = 2, 2, 1)
    h_i = prompt.h_i.numpy()[1:]
    expected_h_u = np.array([[S, S, 0], [0, S, S], [0, 0, 1]]) @ h_i
    assert np.allclose(prompt.h_u.numpy()[1:], expected_h_u, atol=1e-5)
    p = prompt()
    user, item = model.id_embeddings(p)
    assert torch.allclose(user, model.user_embedding.weight + 0.5 * F.normalize(p.user, dim=-1), atol=1e-6)
    assert torch.allclose(item, model.item_embedding.weight + 0.5 * F.normalize(p.item, dim=-1), atol=1e-6)
    model.eval()
    out = model.forward()
    direct = model.encode({m: model.raw_features(m) for m in model.modalities}, user, item)
    assert torch.allclose(out.user, direct.user, atol=1e-6) and torch.allclose(out.item, direct.item, atol=1e-6)
    b = batch([1, 2], [2, 3], [3, 1])
    pu, pi = out.prompt.user.detach(), out.prompt.item.detach()
    prompt_bpr = bpr([float(pu[1] @ (pi[2] - pi[3])), float(pu[2] @ (pi[3] - pi[1]))])
    assert model.calculate_loss(b).item() == pytest.approx(model.loss(b, out).item() + 0.1 * prompt_bpr, abs=1e-5)


# ------------------------------------------------------------------------------------------ feature view
def test_normalise_features_by_hand():
    # standardize, per column over rows 1..3 (mean, unbiased std):
    #   column 1 [1, 3, 5]: mean 3, std sqrt((4 + 0 + 4) / 2) = 2 -> [-1, 0, 1]
    #   column 2 [6, 3, 0]: mean 3, std sqrt((9 + 0 + 9) / 2) = 3 -> [1, 0, -1]
    x = torch.tensor([[0.0, 0], [1, 6], [3, 3], [5, 0]])
    out = normalise_features({"image": x}, "standardize")["image"]
    assert torch.allclose(out, torch.tensor([[0.0, 0], [-1, 1], [0, 0], [1, -1]]), atol=1e-6)
    assert torch.equal(x, torch.tensor([[0.0, 0], [1, 6], [3, 3], [5, 0]])), "the input is not changed"
    # l2, per row: [3, 4] / 5, [0, 2] / 2, [-5, 0] / 5; the padding row stays zero
    y = torch.tensor([[0.0, 0], [3, 4], [0, 2], [-5, 0]])
    out = normalise_features({"image": y, "text": x}, "l2")
    assert torch.allclose(out["image"], torch.tensor([[0.0, 0], [0.6, 0.8], [0, 1], [-1, 0]]), atol=1e-6)
    assert torch.allclose(out["text"][1], torch.tensor([1.0, 6]) / math.sqrt(37), atol=1e-6)
    assert normalise_features({"image": y}, "none")["image"] is y
    with pytest.raises(ValueError, match="feature_norm"):
        normalise_features({"image": y}, "bogus")


@pytest.mark.parametrize("how, expected", [
    # image rows 1..3 [1, 0], [4, 3], [0, 1]: column 1 [1, 4, 0]: mean 5/3, std sqrt((4/9 + 49/9 + 25/9) / 2)
    # = sqrt(13/3); column 2 [0, 3, 1]: mean 4/3, std sqrt((16/9 + 25/9 + 1/9) / 2) = sqrt(7/3)
    ("standardize", [[0, 0], [(1 - 5 / 3), (0 - 4 / 3)], [(4 - 5 / 3), (3 - 4 / 3)], [(0 - 5 / 3), (1 - 4 / 3)]]),
    ("l2", [[0, 0], [1, 0], [0.8, 0.6], [0, 1]]),
])
def test_models_see_the_normalised_features(tmp_path, how, expected):
    model, _ = build("PromptMMTeacher", tmp_path, prompt=False, feature_norm=how)
    expected = torch.tensor(expected)
    if how == "standardize":
        expected = expected / torch.tensor([math.sqrt(13 / 3), math.sqrt(7 / 3)])
    assert torch.allclose(model.raw_features("image"), expected, atol=1e-5)
