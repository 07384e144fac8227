"""Every loss against a value computed by hand, zero when student and teacher agree, and the decoupled-KD identity."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_promptmm.model.losses import bpr_loss, l2_loss, list_kd_loss, pair_kd_loss, released_kl_loss, sce_loss


def test_bpr_by_hand():
    # -(log sigma(1) + log sigma(-1)) / 2
    expected = -(math.log(1 / (1 + math.exp(-1))) + math.log(1 / (1 + math.exp(1)))) / 2
    got = bpr_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.813262, rel=1e-5)


def test_l2_by_hand():
    # (1 + 4 + 9 + 0) / (2 * batch of 1)
    assert l2_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0]])).item() == pytest.approx(7.0)
    # batch of 2: (1 + 1) / 4
    assert l2_loss(torch.tensor([[1.0], [1.0]])).item() == pytest.approx(0.5)


def test_pair_kd_by_hand():
    # teacher delta 0 -> p_t = 1/2; student delta ln 3 -> p_s = 3/4.
    # KL = 1/2 ln(0.5/0.75) + 1/2 ln(0.5/0.25) = 1/2 ln(4/3)
    got = pair_kd_loss(torch.tensor([0.0]), torch.tensor([math.log(3.0)]))
    assert got.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)
    # temperature divides both deltas: tau = 2 with doubled deltas is the same value
    got_tau = pair_kd_loss(torch.tensor([0.0]), torch.tensor([2 * math.log(3.0)]), tau=2.0)
    assert got_tau.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)


def test_list_kd_by_hand():
    # teacher logits [ln2, ln2, 0] -> p_t = (0.4, 0.4, 0.2); student logits 0 -> p_s = (1/3, 1/3, 1/3).
    teacher = torch.tensor([[math.log(2), math.log(2), 0.0]])
    student = torch.zeros(1, 3)
    kl_binary = 0.4 * math.log(0.4 / (1 / 3)) + 0.6 * math.log(0.6 / (2 / 3))
    kl_negatives = (2 / 3) * math.log((2 / 3) / 0.5) + (1 / 3) * math.log((1 / 3) / 0.5)
    assert list_kd_loss(teacher, student, weight="none").item() == pytest.approx(kl_binary + kl_negatives, rel=1e-5)
    assert list_kd_loss(teacher, student, weight="nontarget").item() == pytest.approx(
        kl_binary + 0.6 * kl_negatives, rel=1e-5)
    assert list_kd_loss(teacher, student, weight="confidence").item() == pytest.approx(
        kl_binary + 0.4 * kl_negatives, rel=1e-5)
    assert list_kd_loss(teacher, student, alpha=2.0, beta=0.5, weight="none").item() == pytest.approx(
        2 * kl_binary + 0.5 * kl_negatives, rel=1e-5)
    full_kl = 0.4 * math.log(1.2) * 2 + 0.2 * math.log(0.6)
    assert list_kd_loss(teacher, student).item() == pytest.approx(full_kl, rel=1e-5)


def test_sce_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    expected = (1.0 + (1 - 1 / math.sqrt(2)) ** 2) / 2
    assert sce_loss(a, b, gamma=2.0).item() == pytest.approx(expected, rel=1e-6)
    assert sce_loss(a, b, gamma=1.0).item() == pytest.approx((1.0 + 1 - 1 / math.sqrt(2)) / 2, rel=1e-6)
    assert sce_loss(a, b).item() == pytest.approx(expected, rel=1e-6)  # gamma defaults to 2 (mutation survivor)


def test_kd_losses_vanish_when_student_equals_teacher():
    torch.manual_seed(0)
    delta = torch.randn(16) * 3
    logits = torch.randn(16, 11) * 2
    emb = torch.randn(16, 8)
    assert pair_kd_loss(delta, delta.clone(), tau=0.5).item() == pytest.approx(0.0, abs=1e-6)
    for weight in ("nontarget", "confidence", "none"):
        assert list_kd_loss(logits, logits.clone(), tau=2.0, weight=weight).item() == pytest.approx(0.0, abs=1e-6)
    assert sce_loss(emb, 3 * emb).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_decoupled_list_kd_equals_full_kl(tau):
    """With w = teacher non-target mass and alpha = beta = 1, the two terms add up to KL(p_T || p_S)."""
    torch.manual_seed(1)
    teacher, student = torch.randn(32, 11) * 2, torch.randn(32, 11) * 2
    p_t = torch.softmax(teacher / tau, -1)
    full = (p_t * (torch.log_softmax(teacher / tau, -1) - torch.log_softmax(student / tau, -1))).sum(-1).mean()
    got = list_kd_loss(teacher, student, tau=tau, weight="nontarget")
    assert got.item() == pytest.approx(full.item(), rel=1e-5)
    # and it differs once the weighting is changed: the split matters only when the terms are weighted apart
    assert list_kd_loss(teacher, student, tau=tau, weight="none").item() != pytest.approx(full.item(), rel=1e-3)


def test_list_kd_rejects_unknown_weighting():
    with pytest.raises(ValueError, match="nontarget"):
        list_kd_loss(torch.zeros(1, 3), torch.zeros(1, 3), weight="bogus")


def test_released_kl_by_hand():
    # mean(t * (ln t - s)) over [s, t] = [[1, 0.5], [2, 1]]: (0.5 (ln 0.5 - 1) + 1 (0 - 2)) / 2
    got = released_kl_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.0]))
    assert got.item() == pytest.approx((0.5 * (math.log(0.5) - 1) - 2) / 2, rel=1e-6)
    # not a divergence: equal inputs do not give zero
    assert released_kl_loss(torch.tensor([0.5]), torch.tensor([0.5])).item() != pytest.approx(0.0, abs=1e-3)
