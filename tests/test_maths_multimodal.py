"""The multimodal base class (recbole_promptmm/model/multimodal.py) and the cached dot-product scoring
(recbole_promptmm/model/scoring.py) against hand-computed values on tests/hand_example.py's example: the feature view
(feature_norm, its epsilon), the model without and with the prompt (the prompt's default symmetric graph, both
injections reaching ``forward``), the sizes and byte counts, the epoch hook, and predict / full_sort_predict with
their cache.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_promptmm.model.multimodal import normalise_features
from tests.hand_example import S, build, put

IMAGE = [[0, 0], [1, 0], [4, 3], [0, 1]]  # image.npy as the model sees it (padding row zeroed)
TEXT = [[0, 0], [1, 0], [0, 1], [0.6, 0.8]]
EYE = [[1, 0], [0, 1]]


def tensor(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ------------------------------------------------------------------------------------------ feature view
def test_missing_features_are_refused_with_the_model_name(tmp_path):
    model, dataset = build("VBPR", tmp_path)
    message = ("VBPR needs item modality features, but dataset 'tiny' has none: add `modality_features: {image: "
               "image_feat.npy, ...}` (one .npy file per modality, row k = item token k) to its dataset yaml or a "
               "--config_files yaml")
    dataset.modality_features = {}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        type(model)(dataset.config, dataset)
    del dataset.modality_features  # a plain RecBole dataset has no such attribute at all
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        type(model)(dataset.config, dataset)


def test_standardize_epsilon_by_hand():
    # column 1 [0, 2e-8, 4e-8]: mean 2e-8, unbiased std sqrt((4e-16 + 0 + 4e-16) / 2) = 2e-8, so
    #   (x - mean) / (std + 1e-8) = [-2e-8, 0, 2e-8] / 3e-8 = [-2/3, 0, 2/3]  (the epsilon damps a near-constant column)
    # column 2 [5, 5, 5]: std 0 -> 0 / 1e-8 = 0 (no NaN)
    x = torch.tensor([[0.0, 0], [0, 5], [2e-8, 5], [4e-8, 5]])
    out = normalise_features({"image": x}, "standardize")["image"]
    assert torch.allclose(out, torch.tensor([[0.0, 0], [-2 / 3, 0], [0, 0], [2 / 3, 0]]), atol=1e-4)


def test_feature_norm_unset_means_none(tmp_path):
    model, _ = build("VBPR", tmp_path, feature_norm=None)
    assert torch.equal(model.raw_features("image"), tensor(IMAGE))


# ------------------------------------------------------------------------------------ model without prompt
def test_model_without_prompt(tmp_path):
    """VBPR without the prompt, E_image = identity: fused user [gamma_u; theta_u], item [gamma_i; x_i]."""
    model, _ = build("VBPR", tmp_path, prompt=False)
    assert model.prompt is None
    user, item, theta = tensor([[0, 0], [1, 2], [0, 1], [3, -1]]), tensor([[0, 0], [1, 0], [2, 1], [-1, 1]]), \
        tensor([[0, 0], [1, 1], [2, 0], [0, 3]])
    put(model.user_embedding.weight, user.tolist())
    put(model.item_embedding.weight, item.tolist())
    put(model.theta_user.weight, theta.tolist())
    put(model.projection["image"].weight, EYE)
    assert model.modality_features(None)["image"] is model.raw_features("image")
    ids = model.id_embeddings(None)
    assert torch.equal(ids[0], user) and torch.equal(ids[1], item)
    out = model.forward()
    assert out.prompt is None
    assert torch.equal(out.user.detach(), torch.cat([user, theta], dim=1))
    assert torch.equal(out.item.detach(), torch.cat([item, tensor(IMAGE)], dim=1))


def test_sizes_state_and_bytes(tmp_path):
    """PromptMMTeacher (image only, d = 2, no prompt): 4 x 2 user + 4 x 2 item embeddings + Linear(2, 2) = 8 + 8 + 6
    = 22 parameters. Bytes: 22 x 4 (float32) = 88, the image features 4 x 2 x 4 = 32, and the two graphs A_ui, A_iu
    (CSR of 4 rows, 5 entries): crow 5 x 8 + col 5 x 8 + values 5 x 4 = 100 each. 88 + 32 + 200 = 320."""
    model, _ = build("PromptMMTeacher", tmp_path, prompt=False)
    assert model.embedding_size == 2 and model.fused_size == 2
    assert model.feature_dims == {"image": 2} and model.modalities == ["image"]
    assert model.used_parameters() == 22
    assert model.serving_bytes() == 320
    # the features are buffers, rebuilt from the dataset, not saved in a checkpoint
    assert sorted(model.state_dict()) == ["item_embedding.weight", "reduce.image.bias", "reduce.image.weight",
                                          "user_embedding.weight"]
    assert [name for name, _ in model.named_buffers() if name.startswith("feat_")] == ["feat_image"]
    # with the prompt: + Linear(2, 2) twice = 34 parameters, 34 x 4 + 32 + 200 = 368 bytes
    model, _ = build("PromptMMTeacher", tmp_path / "p", prompt=True)
    assert model.used_parameters() == 34
    assert model.serving_bytes() == 368


def test_train_returns_the_model_and_sets_training(tmp_path):
    model, _ = build("VBPR", tmp_path)
    model.eval()
    assert not model.training
    assert model.train() is model and model.training
    assert model.train(False) is model and not model.training


# --------------------------------------------------------------------------------------- model with prompt
def test_model_with_prompt_by_hand(tmp_path):
    """VBPR wearing the prompt (image and text; lambda_sp 0.5, lambda_fp 0.25), E_m = identity: the user tokens go
    through the symmetric A_ui (the base class's prompt graph), the features through the feature-space injection
    X + 0.25 rownorm(p_I (p_I^T X)) (dense products here), the layer-0 IDs through the ID-space injection, and all
    of it reaches forward()."""
    model, _ = build("VBPR", tmp_path, modalities=("image", "text"), prompt=True, prompt_weight_sp=0.5,
                     prompt_weight_fp=0.25, prompt_weight_bpr=0.0)
    prompt = model.prompt
    assert (prompt.weight_sp, prompt.weight_fp, prompt.weight_bpr) == (0.5, 0.25, 0.0)
    # symmetric A_ui = [[S, 1/2, 0], [0, 1/2, 1/2], [0, 0, S]] over items 1..3 (padding row and column zero)
    h_i = prompt.h_i.numpy().astype(np.float64)
    a_ui = np.array([[0, 0, 0, 0], [0, S, 0.5, 0], [0, 0, 0.5, 0.5], [0, 0, 0, S]])
    assert np.allclose(prompt.h_u.numpy(), a_ui @ h_i, atol=1e-5)
    put(prompt.user.weight, [[1, 0], [1, 1]])
    put(prompt.user.bias, [0.5, -1])
    put(prompt.item.weight, [[0, 1], [1, 0]])
    put(prompt.item.bias, [1, 0])
    put(model.projection["image"].weight, EYE)
    put(model.projection["text"].weight, EYE)
    user, item = tensor([[0, 0], [1, 2], [0, 1], [3, -1]]), tensor([[0, 0], [1, 0], [2, 1], [-1, 1]])
    put(model.user_embedding.weight, user.tolist())
    put(model.item_embedding.weight, item.tolist())
    # p_u = [h1 + 0.5, h1 + h2 - 1], p_i = [h2 + 1, h1] (by row, from the hard tokens)
    h_u = prompt.h_u.numpy().astype(np.float64)
    p_u = np.stack([h_u[:, 0] + 0.5, h_u[:, 0] + h_u[:, 1] - 1], 1)
    p_i = np.stack([h_i[:, 1] + 1, h_i[:, 0]], 1)

    def rownorm(rows):
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    injected = {m: np.asarray(x, dtype=np.float64) + 0.25 * rownorm(p_i @ (p_i.T @ np.asarray(x, dtype=np.float64)))
                for m, x in {"image": IMAGE, "text": TEXT}.items()}
    p = prompt()
    features = model.modality_features(p)
    assert list(features) == ["image", "text"]
    for m in ("image", "text"):
        assert np.allclose(features[m].detach().numpy(), injected[m], atol=1e-5), m
    out = model.forward()
    assert torch.allclose(out.prompt.user, p.user) and torch.allclose(out.prompt.item, p.item)
    assert np.allclose(out.user.detach().numpy()[:, :2], user.numpy() + 0.5 * rownorm(p_u), atol=1e-5)
    assert np.allclose(out.item.detach().numpy()[:, :2], item.numpy() + 0.5 * rownorm(p_i), atol=1e-5)
    assert np.allclose(out.item.detach().numpy()[:, 2:], injected["image"] + injected["text"], atol=1e-5)


# -------------------------------------------------------------------------------------- cached dot products
USER = [[0, 0], [1, 2], [0, 1], [3, -1]]
ITEM = [[0, 0], [1, 0], [2, 1], [-1, 1]]
ITEM_2 = [[0, 0], [0, 1], [1, 1], [1, 0]]


def student(tmp_path):
    """PromptMMStudent with no LightGCN layer: its final embeddings are the layer-0 tables, set by hand."""
    model, _ = build("PromptMMStudent", tmp_path, student_n_layers=0)
    put(model.user_embedding.weight, USER)
    put(model.item_embedding.weight, ITEM)
    return model


PAIRS = Interaction({"user_id": torch.tensor([1, 3, 2]), "item_id": torch.tensor([2, 3, 1])})
USERS = Interaction({"user_id": torch.tensor([1, 3])})


def test_predict_and_full_sort_by_hand(tmp_path):
    model = student(tmp_path)
    model.eval()
    # (u1, i2): [1, 2].[2, 1] = 4;  (u3, i3): [3, -1].[-1, 1] = -4;  (u2, i1): [0, 1].[1, 0] = 0
    assert torch.equal(model.predict(PAIRS), torch.tensor([4.0, -4, 0]))
    # all items (padding first): u1 [0, 1, 4, 1], u3 [0, 3, 5, -4], flattened
    assert torch.equal(model.full_sort_predict(USERS), torch.tensor([0.0, 1, 4, 1, 0, 3, 5, -4]))
    assert not model.predict(PAIRS).requires_grad  # evaluation builds no graph


def test_the_cache_lives_from_eval_to_the_next_train_or_load(tmp_path):
    model = student(tmp_path)
    model.eval()
    assert torch.equal(model.predict(PAIRS), torch.tensor([4.0, -4, 0]))
    put(model.item_embedding.weight, ITEM_2)
    # still the cached forward of ITEM: evaluation batches share it
    assert torch.equal(model.predict(PAIRS), torch.tensor([4.0, -4, 0]))
    assert torch.equal(model.full_sort_predict(USERS), torch.tensor([0.0, 1, 4, 1, 0, 3, 5, -4]))
    # train() drops it: with ITEM_2, (u1, i2) [1, 2].[1, 1] = 3; (u3, i3) [3, -1].[1, 0] = 3; (u2, i1) [0, 1].[0, 1] = 1
    assert model.train() is model and model.training
    trained = model.predict(PAIRS)
    assert trained.requires_grad and torch.equal(trained.detach(), torch.tensor([3.0, 3, 1]))
    model.eval()
    assert torch.equal(model.predict(PAIRS), torch.tensor([3.0, 3, 1]))
    # in training mode nothing is cached: every call sees the current weights
    model.train()
    put(model.item_embedding.weight, ITEM)
    assert torch.equal(model.predict(PAIRS).detach(), torch.tensor([4.0, -4, 0]))
    put(model.item_embedding.weight, ITEM_2)
    assert torch.equal(model.predict(PAIRS).detach(), torch.tensor([3.0, 3, 1]))
    # load_state_dict() drops it too
    model.eval()
    assert torch.equal(model.predict(PAIRS), torch.tensor([3.0, 3, 1]))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["item_embedding.weight"] = tensor(ITEM)
    result = model.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(model.predict(PAIRS), torch.tensor([4.0, -4, 0]))
    assert torch.equal(model.full_sort_predict(USERS), torch.tensor([0.0, 1, 4, 1, 0, 3, 5, -4]))
    # its keyword arguments reach torch: strict=False reports a missing table instead of raising
    result = model.load_state_dict({"item_embedding.weight": tensor(ITEM_2)}, strict=False)
    assert result.missing_keys == ["user_embedding.weight"]
    assert torch.equal(model.predict(PAIRS), torch.tensor([3.0, 3, 1]))


def test_teacher_scores_with_its_fused_embeddings(tmp_path):
    """A multimodal model scores by its fused (user, item) of forward(): VBPR's [gamma; theta].[gamma_i; x_i]."""
    model, _ = build("VBPR", tmp_path, prompt=False)
    put(model.user_embedding.weight, USER)
    put(model.item_embedding.weight, ITEM)
    put(model.theta_user.weight, [[0, 0], [1, 1], [2, 0], [0, 3]])
    put(model.projection["image"].weight, EYE)
    model.eval()
    # (u1, i2): 4 + [1, 1].[4, 3] = 11;  (u3, i3): -4 + [0, 3].[0, 1] = -1;  (u2, i1): 0 + [2, 0].[1, 0] = 2
    assert torch.allclose(model.predict(PAIRS), torch.tensor([11.0, -1, 2]))
    # u1 over items 0..3: [0, 1 + 1, 4 + 7, 1 + 1] = [0, 2, 11, 2]
    assert torch.allclose(model.full_sort_predict(USERS)[:4], torch.tensor([0.0, 2, 11, 2]))
    assert math.isclose(float(model.full_sort_predict(USERS)[7]), -1.0)  # (u3, i3) again
