"""Losses as small pure functions. Each is checked against a hand-computed value in ``tests/test_losses.py``.

Shapes: ``B`` is the batch size, ``L`` the list length (1 positive first, then negatives).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LIST_KD_WEIGHTS = ("nontarget", "confidence", "none")


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    r"""Bayesian personalised ranking: :math:`-\mathrm{mean}\,\log\sigma(s^+ - s^-)`."""
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def triple_bpr(user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    r""":func:`bpr_loss` of dot-product scores, row b of each [B, d] tensor being triple b's embeddings:
    :math:`-\frac{1}{B}\sum_b \log\sigma(e_{u_b}^\top e_{i^+_b} - e_{u_b}^\top e_{i^-_b})`."""
    return bpr_loss((user * pos).sum(-1), (user * neg).sum(-1))


def batch_bpr(users: torch.Tensor, items: torch.Tensor, u: torch.Tensor, pos: torch.Tensor,
              neg: torch.Tensor) -> torch.Tensor:
    r""":func:`triple_bpr` of a batch's triples :math:`(u_b, i^+_b, i^-_b)` (index tensors [B]) looked up in the
    embedding tables ``users`` [U, d] and ``items`` [I, d]:
    :math:`-\frac{1}{B}\sum_b \log\sigma(e_{u_b}^\top e_{i^+_b} - e_{u_b}^\top e_{i^-_b})`,
    :math:`e_{u_b}` = ``users[u[b]]``, :math:`e_{i^\pm_b}` = ``items[pos[b]]`` / ``items[neg[b]]``."""
    return triple_bpr(users[u], items[pos], items[neg])


def l2_loss(*embeddings: torch.Tensor) -> torch.Tensor:
    r"""Batch L2 regulariser: :math:`\frac{1}{2B}\sum_t \lVert E_t\rVert_F^2` over the given [B, d] tensors."""
    batch = embeddings[0].shape[0]
    return sum(e.pow(2).sum() for e in embeddings) / (2 * batch)


def norm_reg_loss(*embeddings: torch.Tensor) -> torch.Tensor:
    r"""Non-squared norm regulariser: :math:`\frac{1}{n}\sum_t \lVert E_t\rVert_F`, with :math:`n` the number of
    rows of the *last* tensor (RecBole's ``EmbLoss`` with its default ``require_pow=False``).

    Each row's gradient is :math:`E_{t,r} / (n \lVert E_t\rVert_F)`: with many rows far weaker than
    :func:`l2_loss` at the same weight. BM3 applies it to the full propagated user and item matrices (:math:`n` =
    number of items), VBPR to the batch's fused user, positive and negative item vectors (:math:`n = B`). The
    gradient at an all-zero tensor is zero.
    """
    return sum(torch.linalg.vector_norm(e) for e in embeddings) / embeddings[-1].shape[0]


def pair_kd_loss(teacher_delta: torch.Tensor, student_delta: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    r"""Pair KD: binary KL between :math:`\mathrm{Bern}(\sigma(\Delta^T/\tau))` and
    :math:`\mathrm{Bern}(\sigma(\Delta^S/\tau))`, averaged over the batch.

    :math:`\Delta = s(u, i^+) - s(u, i^-)`. Zero exactly when the two deltas agree.
    """
    t, s = teacher_delta / tau, student_delta / tau
    p_t = torch.sigmoid(t)
    kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl.mean()


def _kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """Row-wise KL(p || q) from log-probabilities, [B, n] -> [B]."""
    return (p_log.exp() * (p_log - q_log)).sum(dim=-1)


def _binary_log_probs(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """log of b = (p_target, 1 - p_target) for the list softmax, target in column 0: [B, L] -> [B, 2]."""
    log_p = F.log_softmax(logits / tau, dim=-1)
    log_target = log_p[:, 0]
    log_rest = torch.logsumexp(log_p[:, 1:], dim=-1)
    return torch.stack([log_target, log_rest], dim=-1)


def list_kd_loss(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    tau: float = 1.0,
    alpha: float = 1.0,
    beta: float = 1.0,
    weight: str = "nontarget",
) -> torch.Tensor:
    r"""Decoupled list KD for one modality teacher; column 0 of the [B, L] logits is the positive.

    :math:`\alpha\,\mathrm{KL}(b^T\Vert b^S) + \beta\,w\,\mathrm{KL}(q^T\Vert q^S)`, averaged over the batch, where
    :math:`b = (p_{pos}, 1-p_{pos})` of the list softmax and :math:`q` the softmax over the negatives alone.
    ``weight`` picks :math:`w`: ``"nontarget"`` the teacher's non-target mass :math:`b^T_{neg}` (then with
    :math:`\alpha=\beta=1` the sum equals :math:`\mathrm{KL}(p^T\Vert p^S)` over the whole list), ``"confidence"``
    the teacher's probability of the positive :math:`b^T_{pos}`, ``"none"`` 1. :math:`w` is a target (no gradient).
    """
    if weight not in LIST_KD_WEIGHTS:
        raise ValueError(f"list KD weight must be one of {LIST_KD_WEIGHTS}, got {weight!r}")
    b_t, b_s = _binary_log_probs(teacher_logits, tau), _binary_log_probs(student_logits, tau)
    q_t = F.log_softmax(teacher_logits[:, 1:] / tau, dim=-1)
    q_s = F.log_softmax(student_logits[:, 1:] / tau, dim=-1)
    if weight == "nontarget":
        w = b_t[:, 1].exp().detach()
    elif weight == "confidence":
        w = b_t[:, 0].exp().detach()
    else:
        w = torch.ones_like(b_t[:, 0])
    return (alpha * _kl(b_t, b_s) + beta * w * _kl(q_t, q_s)).mean()


def sce_loss(a: torch.Tensor, b: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    r"""Scaled cosine error: :math:`\mathrm{mean}_i (1 - \cos(a_i, b_i))^\gamma`."""
    cos = F.cosine_similarity(a, b, dim=-1)
    return (1 - cos).clamp_min(0).pow(gamma).mean()


def released_kl_loss(student_values: torch.Tensor, teacher_values: torch.Tensor) -> torch.Tensor:
    r"""The released PromptMM code's KD term (``kd_mode: official``): ``nn.KLDivLoss()(s, t)`` applied to
    per-sample *loss values* rather than log-probabilities, i.e. :math:`\mathrm{mean}\,t\,(\log t - s)`.

    Reproduced for comparison only: it is not a divergence (it can be negative and is not zero when the two
    agree), which is why the released KD weights span 1e-2 to 5e9.
    """
    return torch.nn.functional.kl_div(student_values, teacher_values, reduction="mean")
