"""VBPR and BM3: BM3's loss by hand, VBPR's score and loss by hand, any number of modalities, the prompt, ml-100k."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recbole_promptmm import Config, create_dataset, data_preparation, get_model
from recbole_promptmm.model.bm3 import bm3_loss
from recbole_promptmm.model.losses import norm_reg_loss
from tests.conftest import token_features, toy_dict

MODELS = ["VBPR", "BM3"]


def build(model_name: str, data_path, **overrides):
    config = Config(model_name, "toy", config_dict=toy_dict(data_path, **overrides))
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = get_model(model_name)(config, train._dataset)
    return model, train


# ------------------------------------------------------------------------------------------------ BM3 loss
def _bm3_toy(requires_grad: bool = False):
    t = lambda rows: torch.tensor(rows, dtype=torch.float32, requires_grad=requires_grad)  # noqa: E731
    return dict(
        pred_user=t([[1.0, 0.0], [0.0, 1.0]]),
        pred_item=t([[0.0, 1.0], [3.0, 4.0]]),
        online_user=t([[2.0, 0.0], [4.0, 3.0]]),
        online_item=t([[1.0, 1.0], [0.0, 2.0]]),
        pred_modality=[t([[1.0, 0.0], [1.0, 1.0]])],
        online_modality=[t([[-1.0, 0.0], [1.0, 1.0]])],
    )


def test_bm3_loss_by_hand():
    r = 1 / math.sqrt(2)
    # reconstruction: pred_u vs online_i: cos 1/sqrt2 and 1; pred_i vs online_u: cos 0 and 24/25
    rec = ((1 - r) + 0.0) / 2 + (1.0 + (1 - 24 / 25)) / 2
    # alignment pred_f vs online_i: cos 1/sqrt2 and 2/(sqrt2*2) = 1/sqrt2; masking pred_f vs online_f: cos -1 and 1
    align, mask = (1 - r), (2.0 + 0.0) / 2
    got = bm3_loss(**_bm3_toy(), dropout=0.0, cl_weight=2.0)
    assert got.item() == pytest.approx(rec + 2.0 * (align + mask), rel=1e-6)
    assert rec + 2.0 * (align + mask) == pytest.approx(3.2522330, rel=1e-6)
    # a second modality adds its own alignment + masking terms
    toy = _bm3_toy()
    toy["pred_modality"] = toy["pred_modality"] * 2
    toy["online_modality"] = toy["online_modality"] * 2
    got2 = bm3_loss(**toy, dropout=0.0, cl_weight=2.0)
    assert got2.item() == pytest.approx(rec + 4.0 * (align + mask), rel=1e-6)


def test_bm3_targets_carry_no_gradient():
    toy = _bm3_toy(requires_grad=True)
    bm3_loss(**toy, dropout=0.0, cl_weight=1.0).backward()
    # the online vectors enter only as (stop-gradient) targets
    for name in ("online_user", "online_item"):
        assert toy[name].grad is None, name
    assert toy["online_modality"][0].grad is None
    for name in ("pred_user", "pred_item"):
        assert toy[name].grad.abs().sum() > 0, name
    assert toy["pred_modality"][0].grad.abs().sum() > 0


def test_bm3_dropout_changes_only_the_targets():
    toy = _bm3_toy()
    plain = bm3_loss(**toy, dropout=0.0, cl_weight=1.0).item()
    torch.manual_seed(0)
    first = bm3_loss(**toy, dropout=0.5, cl_weight=1.0).item()
    torch.manual_seed(0)
    assert bm3_loss(**toy, dropout=0.5, cl_weight=1.0).item() == first  # seeded: reproducible
    assert math.isfinite(first) and first != pytest.approx(plain, rel=1e-6)


def test_norm_reg_loss_by_hand():
    users = torch.tensor([[3.0, 4.0]], requires_grad=True)  # ||.||_F = 5
    items = torch.tensor([[1.0, 0.0], [0.0, 0.0]], requires_grad=True)  # ||.||_F = 1, 2 rows
    # plain (not squared) norms, divided by the rows of the last tensor: (5 + 1) / 2
    got = norm_reg_loss(users, items)
    assert got.item() == pytest.approx(3.0)
    got.backward()
    # d/dE ||E||_F / n = E / (||E||_F n): [3, 4] / (5 * 2); [1, 0] / (1 * 2); an all-zero row gets 0
    assert torch.allclose(users.grad, torch.tensor([[0.3, 0.4]]))
    assert torch.allclose(items.grad, torch.tensor([[0.5, 0.0], [0.0, 0.0]]))
    zero = torch.zeros(3, 2, requires_grad=True)
    norm_reg_loss(zero).backward()
    assert torch.equal(zero.grad, torch.zeros(3, 2))  # no NaN at zero
    # the squared batch L2 we used before gives (9 + 16 + 1) / 2 = 13 on the same pair: far stronger
    assert ((users.detach() ** 2).sum() + (items.detach() ** 2).sum()).item() / 2 == pytest.approx(13.0)


def test_bm3_model_loss_uses_its_parts_and_no_negatives(mm_toy):
    model, train = build("BM3", mm_toy, dropout=0.0, cl_weight=0.5, reg_weight=0.1, n_layers=2)
    model.train()
    batch = next(iter(train))
    u, i = batch[model.USER_ID], batch[model.ITEM_ID]
    out = model.forward()
    # online vectors by hand: LightGCN mean over 3 layers, item + layer-0; score embeddings = predictor outputs
    adj = model.adjacency.matrix.to_dense()
    e0 = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
    e1 = adj @ e0
    mean = (e0 + e1 + adj @ e1) / 3
    h_u, h_i = mean[:model.n_users], mean[model.n_users:] + model.item_embedding.weight
    assert torch.allclose(out.extra["online_user"], h_u, atol=1e-6)
    assert torch.allclose(out.extra["online_item"], h_i, atol=1e-6)
    assert torch.allclose(out.user, model.predictor(h_u), atol=1e-6)
    for m in model.modalities:
        assert torch.allclose(out.modality_item[m], model.predictor(model.projection[m](model.raw_features(m))),
                              atol=1e-6)
    cos = bm3_loss(out.user[u], out.item[i], h_u[u], h_i[i], [out.modality_item[m][i] for m in model.modalities],
                   [model.projection[m](model.raw_features(m))[i] for m in model.modalities], 0.0, 0.5)
    # the regulariser: plain Frobenius norms of the FULL online user and item matrices over the number of items
    # (the authors' code), not the batch's squared norms
    reg = (torch.linalg.norm(h_u) + torch.linalg.norm(h_i)) / model.n_items
    expected = cos + 0.1 * reg
    assert model.calculate_loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    batch_sq = (h_u[u].pow(2).sum(-1) + h_i[i].pow(2).sum(-1)).mean()  # the old regulariser
    assert (cos + 0.1 * batch_sq).item() != pytest.approx(expected.item(), rel=1e-3)
    batch[model.NEG_ITEM_ID] = torch.ones_like(batch[model.NEG_ITEM_ID])
    assert model.calculate_loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    assert "n_layers" in type(model).forward_keys()


def test_bm3_features_are_trainable_parameters(mm_toy):
    model, train = build("BM3", mm_toy, dropout=0.0)
    assert model.trainable_features
    frozen, _ = build("BM3", mm_toy, dropout=0.0, trainable_features=False)
    names = dict(model.named_parameters())
    for m in model.modalities:
        key = f"feat_{m}"
        # initialised from the dataset's features, stored in the checkpoint, read by the model's access point
        assert key in names and key in model.state_dict() and model.raw_features(m) is names[key]
        assert torch.equal(names[key].detach(), frozen.raw_features(m))
        assert key not in dict(frozen.named_parameters()) and key not in frozen.state_dict()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {m: model.raw_features(m).detach().clone() for m in model.modalities}
    batch = next(iter(train))
    model.calculate_loss(batch).backward()
    optimizer.step()
    for m in model.modalities:
        rows = batch[model.ITEM_ID].unique()
        assert model.raw_features(m).grad[rows].abs().sum() > 0  # the alignment / masking terms reach X^m
        assert not torch.equal(model.raw_features(m).detach(), before[m])
    # trained feature tables are counted once in the serving size
    assert model.serving_bytes() == frozen.serving_bytes()


# ---------------------------------------------------------------------------------------------------- VBPR
def test_vbpr_score_by_hand(mm_toy):
    model, train = build("VBPR", mm_toy)
    assert model.fused_size == 2 * model.embedding_size
    model.eval()
    users = train._dataset.inter_feat[:4]
    uid = users[model.USER_ID]
    gamma_u, gamma_i = model.user_embedding.weight[uid], model.item_embedding.weight
    theta_u = model.theta_user.weight[uid]
    content = sum(model.raw_features(m) @ model.projection[m].weight.T for m in model.modalities)
    expected = gamma_u @ gamma_i.T + theta_u @ content.T
    with torch.no_grad():
        got = model.full_sort_predict(users).view(len(uid), -1)
        pair = model.predict(users)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(pair, expected[torch.arange(len(uid)), users[model.ITEM_ID]], atol=1e-5)
    out = model.forward()
    for m in model.modalities:
        assert torch.allclose(out.modality_item[m], model.raw_features(m) @ model.projection[m].weight.T, atol=1e-6)


def _vbpr_two_users_three_items(mm_toy):
    """A VBPR with d = 1 whose encode() we feed by hand: 2 users, 3 items, one 6-d modality."""
    model, _ = build("VBPR", mm_toy, embedding_size=1, modality_features={"image": "image_feat.npy"})
    with torch.no_grad():
        model.theta_user = torch.nn.Embedding.from_pretrained(torch.tensor([[0.5], [-1.0]]), freeze=False)
        model.projection["image"].weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 0.0, 0.0, 0.0]]))  # E x = x_0 - x_1
    gamma_u = torch.tensor([[1.0], [2.0]])
    gamma_i = torch.tensor([[1.0], [0.0], [-1.0]])
    x = torch.zeros(3, 6)
    x[:, :2] = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 1.0]])  # content E x_i = 1, -3, 0
    return model, model.encode({"image": x}, gamma_u, gamma_i)


def test_vbpr_hand_example_score(mm_toy):
    model, out = _vbpr_two_users_three_items(mm_toy)
    # p_u = [gamma_u; theta_u]: u0 = [1, 0.5], u1 = [2, -1]; q_i = [gamma_i; E x_i]: [1, 1], [0, -3], [-1, 0]
    assert torch.equal(out.user, torch.tensor([[1.0, 0.5], [2.0, -1.0]]))
    assert torch.equal(out.item, torch.tensor([[1.0, 1.0], [0.0, -3.0], [-1.0, 0.0]]))
    # u0: 1*1 + 0.5*1 = 1.5, 0 + 0.5*-3 = -1.5, -1 + 0 = -1;  u1: 2 - 1 = 1, 0 + 3 = 3, -2 + 0 = -2
    assert torch.equal(out.user @ out.item.T, torch.tensor([[1.5, -1.5, -1.0], [1.0, 3.0, -2.0]]))
    assert torch.equal(out.modality_item["image"], torch.tensor([[1.0], [-3.0], [0.0]]))


def test_vbpr_hand_example_loss(mm_toy):
    model, out = _vbpr_two_users_three_items(mm_toy)
    model.reg_weight = 0.1
    batch = {model.USER_ID: torch.tensor([0, 1]), model.ITEM_ID: torch.tensor([0, 1]),
             model.NEG_ITEM_ID: torch.tensor([1, 2])}
    # triples (u0, i0, i1), (u1, i1, i2): score gaps 1.5 - (-1.5) = 3 and 3 - (-2) = 5
    bpr = (math.log1p(math.exp(-3)) + math.log1p(math.exp(-5))) / 2
    # plain Frobenius norms of the batch's fused vectors, over B = 2 (the content part included):
    # users [[1, .5], [2, -1]]: sqrt(1 + .25 + 4 + 1) = 2.5; positives [[1, 1], [0, -3]]: sqrt(11);
    # negatives [[0, -3], [-1, 0]]: sqrt(10)
    reg = (2.5 + math.sqrt(11) + math.sqrt(10)) / 2
    assert model.loss(batch, out).item() == pytest.approx(bpr + 0.1 * reg, rel=1e-6)
    assert bpr + 0.1 * reg == pytest.approx(0.47659647, rel=1e-6)
    # the squared L2 on the ID tables alone that we used before: (1 + 4 + .25 + 1 + 1 + 0 + 0 + 1) / (2 * 2)
    assert bpr + 0.1 * 8.25 / 4 != pytest.approx(model.loss(batch, out).item(), rel=1e-3)


def test_vbpr_loss_on_a_batch(mm_toy):
    model, train = build("VBPR", mm_toy, reg_weight=0.05)
    model.train()
    batch = next(iter(train))
    u, pos, neg = batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]
    content = sum(model.raw_features(m) @ model.projection[m].weight.T for m in model.modalities)
    gu, tu = model.user_embedding.weight[u], model.theta_user.weight[u]
    gp, gn = model.item_embedding.weight[pos], model.item_embedding.weight[neg]
    s_pos = (gu * gp).sum(-1) + (tu * content[pos]).sum(-1)
    s_neg = (gu * gn).sum(-1) + (tu * content[neg]).sum(-1)
    bpr = -F.logsigmoid(s_pos - s_neg).mean()
    p_u = torch.cat([gu, tu], dim=-1)
    q_pos, q_neg = torch.cat([gp, content[pos]], dim=-1), torch.cat([gn, content[neg]], dim=-1)
    reg = (torch.linalg.norm(p_u) + torch.linalg.norm(q_pos) + torch.linalg.norm(q_neg)) / len(u)
    assert model.calculate_loss(batch).item() == pytest.approx((bpr + 0.05 * reg).item(), rel=1e-5)
    # the regulariser reaches the content part: the projections get its gradient even without the BPR term
    model.zero_grad()
    (model.calculate_loss(batch) - bpr_of(model, batch)).backward()
    assert all(p.weight.grad.abs().sum() > 0 for p in model.projection.values())


def bpr_of(model, batch):
    out = model.forward()
    u, pos, neg = batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]
    return -F.logsigmoid((out.user[u] * (out.item[pos] - out.item[neg])).sum(-1)).mean()


# ----------------------------------------------------------------------------------------- both models
@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("modalities", [["image"], ["image", "audio"], ["image", "audio", "text"]])
def test_any_number_of_modalities(mm_toy, model_name, modalities):
    np.save(mm_toy / "toy" / "text_feat.npy", token_features(51, dim=7))
    features = {m: f"{m}_feat.npy" for m in modalities}
    model, train = build(model_name, mm_toy, modality_features=features)
    assert sorted(model.projection) == sorted(modalities)
    model.train()
    out = model.forward()
    assert sorted(out.modality_item) == sorted(modalities)
    assert all(x.shape == (model.n_items, model.embedding_size) for x in out.modality_item.values())
    assert out.user.shape == (model.n_users, model.fused_size) and out.item.shape == (model.n_items, model.fused_size)
    loss = model.calculate_loss(next(iter(train)))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("model_name", MODELS)
def test_prompt_trains(mm_toy, model_name):
    model, train = build(model_name, mm_toy, prompt=True)
    assert model.prompt is not None
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.prompt.named_parameters()}
    loss = model.calculate_loss(next(iter(train)))
    optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.prompt.parameters())
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(p, before[n]) for n, p in model.prompt.named_parameters())


def test_bm3_loss_with_every_target_dropped():
    # dropout p = 1 zeroes every target entry: cos(a, 0) = 0, so each of the 2 + 2 M terms is 1 - 0 = 1:
    # 2 + cl_weight * 2 = 2 + 2 * 2 = 6 (one modality), whatever the predictions
    assert bm3_loss(**_bm3_toy(), dropout=1.0, cl_weight=2.0).item() == pytest.approx(6.0)


def test_bm3_loss_needs_one_online_view_per_modality():
    toy = _bm3_toy()
    toy["pred_modality"] = toy["pred_modality"] * 2  # two predicted modalities, one online
    with pytest.raises(ValueError):
        bm3_loss(**toy, dropout=0.0, cl_weight=2.0)


# ----------------------------------------------------------------------- BM3 on tests/hand_example.py by hand
# n_layers 0 (online user h_u = e_u, online item h_i = e_i + e_i = 2 e_i), image features x1 = [1, 0],
# x2 = [4, 3], x3 = [0, 1] with an identity projection (h^m = x), predictor W = I, b = [1, 0] (dot h = h + [1, 0]).
# Users u1 = [1, 0], u2 = [0, 1], u3 = [0, 0]; items i1 = [1, 0], i2 = [0, 1], i3 = [1, 1]. Batch (u1, i2), (u2, i3):
#   pred users [2, 0], [1, 1]; pred items 2 e_i + [1, 0] = [1, 2], [3, 2]; targets h_i = [0, 2], [2, 2]; h_u = u
#   C(pred_u, h_i): cos 0 and 1 -> (1 + 0) / 2 = 0.5
#   C(pred_i, h_u): cos([1,2],[1,0]) = 1/sqrt5, cos([3,2],[0,1]) = 2/sqrt13 -> (2 - 0.447214 - 0.554700) / 2 = 0.499043
#   pred_m = x + [1, 0] = [5, 3], [1, 1]
#   C(pred_m, h_i): cos([5,3],[0,2]) = 3/sqrt34 = 0.514496, cos([1,1],[2,2]) = 1 -> 0.485504 / 2 = 0.242752
#   C(pred_m, h^m): cos([5,3],[4,3]) = 29/(5 sqrt34) = 0.994692, cos([1,1],[0,1]) = S -> 0.298207 / 2 = 0.149101
#   cos loss (cl_weight 2) = 0.5 + 0.499043 + 2 (0.242752 + 0.149101) = 1.782749
# regulariser on the full online matrices (padding rows included), over n_items = 4:
#   (|H_U|_F + |H_I|_F) / 4 = (sqrt2 + 2 sqrt(1 + 1 + 2)) / 4 = (1.414214 + 4) / 4 = 1.353553; x 0.1 = 0.135355
BM3_COS = 1.782749
BM3_REG = 0.1 * (math.sqrt(2) + 4) / 4


def _bm3_hand(tmp_path, **config):
    from tests.hand_example import build as hand_build, put

    model, _ = hand_build("BM3", tmp_path, n_layers=0, cl_weight=2.0, reg_weight=0.1, **config)
    put(model.projection["image"].weight, [[1, 0], [0, 1]])
    put(model.projection["image"].bias, [0, 0])
    put(model.predictor.weight, [[1, 0], [0, 1]])
    put(model.predictor.bias, [1, 0])
    put(model.user_embedding.weight, [[0, 0], [1, 0], [0, 1], [0, 0]])
    put(model.item_embedding.weight, [[0, 0], [1, 0], [0, 1], [1, 1]])
    return model


def test_bm3_model_by_hand(tmp_path):
    from tests.hand_example import batch

    model = _bm3_hand(tmp_path, dropout=1.0)
    interaction = batch([1, 2], [2, 3], [3, 1])
    s = 1 / math.sqrt(2)
    cos = (0.5 + (2 - 1 / math.sqrt(5) - 2 / math.sqrt(13)) / 2
           + 2 * ((1 - 3 / math.sqrt(34)) / 2 + (2 - 29 / (5 * math.sqrt(34)) - s) / 2))
    assert cos == pytest.approx(BM3_COS, abs=1e-6) and BM3_REG == pytest.approx(0.135355, abs=1e-6)
    model.eval()  # evaluation: no dropout on the targets, whatever the setting
    out = model.forward()
    assert torch.allclose(out.user[1:3], torch.tensor([[2.0, 0], [1, 1]]))
    assert torch.allclose(out.item[2:], torch.tensor([[1.0, 2], [3, 2]]))
    assert model.calculate_loss(interaction).item() == pytest.approx(BM3_COS + BM3_REG, abs=1e-5)
    model.train()  # training: dropout 1 zeroes every target, each cosine term is 1: 2 + 2 * 2
    assert model.calculate_loss(interaction).item() == pytest.approx(6.0 + BM3_REG, abs=1e-5)
    model.reg_weight = 0.0
    assert model.calculate_loss(interaction).item() == pytest.approx(6.0, abs=1e-5)
