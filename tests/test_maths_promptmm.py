"""PromptMM's model-level maths against hand-computed values: the student's loss (BPR on the propagated
embeddings + its L2 on the layer-0 ones) and the stage-2 loss (student + weighted pair, list and embedding KD)
in both ``kd_mode``\\ s, each KD term alone and all together. The example is tests/hand_example.py's.

The teacher's outputs are an input of the distillation loss: they are set by hand (``teacher_targets``), as are
the list-KD negatives (the sampler's draw), so every number below follows from the values written here.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from recbole_promptmm.config_rules import stage_one_keys, teacher_model_class, teacher_setting_keys, teacher_settings
from recbole_promptmm.model.multimodal import TeacherOutput
from recbole_promptmm.model.promptmm import PromptMM
from tests.hand_example import S, batch, bpr, build, dot, put


# ------------------------------------------------------------------------------------------- the student
def test_student_loss_terms_by_hand(tmp_path):
    """BPR on the LightGCN output (1 layer) + ``student_reg_weight`` x L2 of the batch's layer-0 embeddings."""
    model, _ = build("PromptMMStudent", tmp_path, student_n_layers=1, student_reg_weight=0.1)
    # layer 0 (row 0 is the padding user / item)
    put(model.user_embedding.weight, [[0, 0], [2, 0], [0, 2], [0, 0]])   # u1 [2,0], u2 [0,2], u3 [0,0]
    put(model.item_embedding.weight, [[0, 0], [0, 0], [2, 2], [2, 0]])   # i1 [0,0], i2 [2,2], i3 [2,0]
    # layer 1, through A_ui (users) and A_iu (items) of the normalised bipartite graph (S = 1/sqrt 2):
    #   u1 = S i1 + 1/2 i2 = [1, 1]      u2 = 1/2 i2 + 1/2 i3 = [2, 1]      u3 = S i3 = [sqrt2, 0]
    #   i1 = S u1 = [sqrt2, 0]            i2 = 1/2 u1 + 1/2 u2 = [1, 1]      i3 = 1/2 u2 + S u3 = [0, 1]
    # mean of the two layers:
    #   u1 [1.5, 0.5], u2 [1, 1.5], u3 [S, 0];  i1 [S, 0], i2 [1.5, 1.5], i3 [1, 0.5]
    user, item = model.forward()
    expected_user = [[0, 0], [1.5, 0.5], [1, 1.5], [S, 0]]
    expected_item = [[0, 0], [S, 0], [1.5, 1.5], [1, 0.5]]
    assert torch.allclose(user, torch.tensor(expected_user), atol=1e-6)
    assert torch.allclose(item, torch.tensor(expected_item), atol=1e-6)
    # batch (u1, +i2, -i3), (u2, +i3, -i1):
    #   u1.i2 - u1.i3 = (2.25 + 0.75) - (1.5 + 0.25) = 1.25
    #   u2.i3 - u2.i1 = (1 + 0.75) - S = 1.042893
    #   BPR = (log(1 + e^-1.25) + log(1 + e^-1.042893)) / 2 = (0.251929 + 0.301906) / 2 = 0.276917
    # L2 of the layer-0 rows u1, u2, i2, i3, i3, i1: (4 + 4 + 8 + 4 + 4 + 0) / (2 * 2) = 6; x 0.1 = 0.6
    diffs = [1.25, 1.75 - S]
    assert bpr(diffs) == pytest.approx(0.276917, abs=1e-6)
    b = batch([1, 2], [2, 3], [3, 1])
    loss = model.loss_terms(b, user, item)
    assert loss.item() == pytest.approx(bpr(diffs) + 0.1 * 6, abs=1e-6)
    assert loss.item() == pytest.approx(0.876917, abs=1e-6)
    assert model.calculate_loss(b).item() == pytest.approx(0.876917, abs=1e-6)


# ------------------------------------------------------------------------------------- the stage-2 loss
# Student (student_n_layers 0, so its final embeddings are its layer-0 ones), d = 2:
#   u1 = [1, 0];  i1 = [1, 1], i2 = [0, 1], i3 = [1, 0]
# Batch: one triple (u1, +i1, -i3); the list of u1 is [i1 (the positive), i2, i3] (list_kd_negatives 2).
#   student scores of the list: [1, 0, 1];  student delta = s(i1) - s(i3) = 0
#   loss_terms: BPR = log 2 = 0.693147; L2 = (|u1|^2 + |i1|^2 + |i3|^2) / 2 = (1 + 2 + 1) / 2 = 2, x 0.01
#   -> 0.693147 + 0.02 = 0.713147
# Teacher (set by hand):
#   fused: u1 = [1, 1]; i1 = [1, 1], i3 = [1, -1] -> teacher delta = 2 - 0 = 2
#   image: user u1 = [1, 0]; items i1 = [2, 0], i2 = [0, 5], i3 = [0, 3] -> list scores [2, 0, 0]
#   text:  user u1 = [0, 0]; items i1 = [1, 1], i2 = [0, 1], i3 = [-1, 0] -> list scores [0, 0, 0]
STUDENT_USER = [[0, 0], [1, 0], [0, 0], [0, 0]]
STUDENT_ITEM = [[0, 0], [1, 1], [0, 1], [1, 0]]
LOSS_TERMS = math.log(2) + 0.01 * 2
WEIGHTS = {"pair": 0.5, "list": 0.25, "emb": 2.0}

# kd_mode paper, tau = 2 (kd_temperature), gamma = 2 (sce_gamma):
# pair: KL(Bern(sigma(2/2)) || Bern(sigma(0/2))) = sigma(1) log(sigma(1)/0.5) + sigma(-1) log(sigma(-1)/0.5)
#   = log 2 + 0.731059 * (-0.313262) + 0.268941 * (-1.313262) = 0.110944   (teacher and student swapped: 0.120115)
# list, one KL per modality, alpha = beta = 1 and the non-target weighting (then the decoupled KD is the whole
# list's KL(p^T || p^S)); student softmax of [1, 0, 1]/2: p^S = [e^.5, 1, e^.5] / (2 e^.5 + 1) = [0.383652, 0.232697,
# 0.383652]
#   image: p^T = softmax([2, 0, 0]/2) = [e, 1, 1] / (e + 2) = [0.576117, 0.211942, 0.211942]
#          KL = 0.576117 log(0.576117/0.383652) + 0.211942 log(0.211942/0.232697) + 0.211942 log(0.211942/0.383652)
#             = 0.088663   (decoupled: KL(b) 0.075552 + w 0.423883 * KL(q) 0.030930)
#   text:  p^T = [1/3, 1/3, 1/3] -> KL = 0.026074
# embedding (SCE over the batch's items [i1, i3], (1 - cos)^2, mean):
#   image: i1 [2,0] vs [1,1]: (1 - S)^2 = 0.085786; i3 [0,3] vs [1,0]: (1 - 0)^2 = 1  -> 0.542893
#   text:  i1 [1,1] vs [1,1]: 0;                    i3 [-1,0] vs [1,0]: (1 + 1)^2 = 4 -> 2
PAPER = {"pair": 0.110944, "list": 0.088663 + 0.026074, "emb": 0.542893 + 2.0}

# kd_mode official (the released formulas: no temperature, mean t (log t - s)):
# pair on per-sample BPR losses: s = -log sigma(0) = log 2; t = -log sigma(2) = 0.126928
#   -> 0.126928 * (log 0.126928 - 0.693147) = 0.126928 * (-2.064135 - 0.693147) = -0.349976
# list on -log softmax of the scores (mean over the 3 entries); student softmax([1, 0, 1]) = [0.422319, 0.155362,
# 0.422319] -> s = [0.861995, 1.861995, 0.861995]
#   image: softmax([2, 0, 0]) = [0.786986, 0.106507, 0.106507] -> t = [0.239545, 2.239545, 2.239545]
#          (0.239545 (log 0.239545 - 0.861995) + 2 * 2.239545 (log 2.239545 - 0.861995)) / 3 = -1.012643
#   text:  t = log 3 = 1.098612 each -> (2 * 1.098612 (log 1.098612 - 0.861995) + 1.098612 (log 1.098612 - 1.861995))
#          / 3 = (2 * -0.843676 - 1.942287) / 3 = -1.209880
# embedding: SCE over all items, the padding row 0 included (both rows zero: cosine 0, (1 - 0)^2 = 1)
#   image: (1 + 0.085786 + 0 [i2: [0,5] vs [0,1]] + 1) / 4 = 0.521447;  text: (1 + 0 + 0 + 4) / 4 = 1.25
OFFICIAL = {"pair": -0.349976, "list": -1.012643 - 1.209880, "emb": 0.521447 + 1.25}


def teacher_outputs() -> TeacherOutput:
    return TeacherOutput(
        user=torch.tensor([[0.0, 0], [1, 1], [0, 0], [0, 0]]),
        item=torch.tensor([[0.0, 0], [1, 1], [0, 0], [1, -1]]),
        modality_item={"image": torch.tensor([[0.0, 0], [2, 0], [0, 5], [0, 3]]),
                       "text": torch.tensor([[0.0, 0], [1, 1], [0, 1], [-1, 0]])},
        modality_user={"image": torch.tensor([[0.0, 0], [1, 0], [0, 0], [0, 0]]),
                       "text": torch.zeros(4, 2)},
    )


def distillation_model(tmp_path, monkeypatch, **overrides):
    settings = dict(prompt=False, student_n_layers=0, student_reg_weight=0.01, kd_temperature=2.0,
                    pair_kd_weight=WEIGHTS["pair"], list_kd_weight=WEIGHTS["list"], emb_kd_weight=WEIGHTS["emb"],
                    list_kd_negatives=2)
    settings.update(overrides)
    model, _ = build("PromptMM", tmp_path, modalities=("image", "text"), **settings)
    assert model.teacher.modalities == ["image", "text"]
    put(model.student.user_embedding.weight, STUDENT_USER)
    put(model.student.item_embedding.weight, STUDENT_ITEM)
    monkeypatch.setattr(model, "teacher_targets", teacher_outputs)

    def negatives(users, k):  # u1's non-positive items, i2 and i3
        assert k == 2 and users.tolist() == [1]
        return torch.tensor([[2, 3]])

    monkeypatch.setattr(model.training_items, "sample_negatives", negatives)
    model.set_stage("student")
    return model


def test_hand_values_of_the_comments():
    sig = 1 / (1 + math.exp(-1))
    assert math.log(2) + sig * math.log(sig) + (1 - sig) * math.log(1 - sig) == pytest.approx(PAPER["pair"], abs=1e-6)
    p_s = [math.exp(0.5), 1, math.exp(0.5)]
    p_s = [x / sum(p_s) for x in p_s]
    p_t = [math.e / (math.e + 2), 1 / (math.e + 2), 1 / (math.e + 2)]
    kl = sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    assert kl == pytest.approx(0.088663, abs=1e-6)
    assert sum(1 / 3 * math.log(1 / 3 / b) for b in p_s) == pytest.approx(0.026074, abs=1e-6)
    assert ((1 - S) ** 2 + 1) / 2 == pytest.approx(0.542893, abs=1e-6)
    t = math.log1p(math.exp(-2))
    assert t * (math.log(t) - math.log(2)) == pytest.approx(OFFICIAL["pair"], abs=1e-6)


@pytest.mark.parametrize("kd_mode, expected", [("paper", PAPER), ("official", OFFICIAL)])
@pytest.mark.parametrize("term", ["pair", "list", "emb"])
def test_each_kd_term_alone(tmp_path, monkeypatch, kd_mode, expected, term):
    model = distillation_model(tmp_path, monkeypatch, kd_mode=kd_mode)
    for other in WEIGHTS:  # the other two terms off
        if other != term:
            setattr(model, f"{other}_kd_weight", 0.0)
    loss = model.calculate_loss(batch([1], [1], [3]))
    assert loss.item() == pytest.approx(LOSS_TERMS + WEIGHTS[term] * expected[term], abs=1e-5)


@pytest.mark.parametrize("kd_mode, expected, total", [("paper", PAPER, 5.883090), ("official", OFFICIAL, 3.525421)])
def test_stage_two_loss_with_every_term(tmp_path, monkeypatch, kd_mode, expected, total):
    """paper: 0.713147 + 0.5 * 0.110944 + 0.25 * (0.088663 + 0.026074) + 2 * (0.542893 + 2) = 5.883090
    official: 0.713147 + 0.5 * -0.349976 + 0.25 * (-1.012643 - 1.209880) + 2 * (0.521447 + 1.25) = 3.525421"""
    model = distillation_model(tmp_path, monkeypatch, kd_mode=kd_mode)
    loss = model.calculate_loss(batch([1], [1], [3]))
    assert loss.item() == pytest.approx(LOSS_TERMS + sum(WEIGHTS[k] * expected[k] for k in WEIGHTS), abs=1e-5)
    assert loss.item() == pytest.approx(total, abs=1e-5)
    loss.backward()
    assert model.student.item_embedding.weight.grad is not None


def test_no_kd_weight_leaves_the_student_loss(tmp_path, monkeypatch):
    model = distillation_model(tmp_path, monkeypatch, pair_kd_weight=0.0, list_kd_weight=0.0, emb_kd_weight=0.0)
    assert model.calculate_loss(batch([1], [1], [3])).item() == pytest.approx(LOSS_TERMS, abs=1e-6)


def test_list_kd_passes_alpha_beta_and_weighting(tmp_path, monkeypatch):
    """alpha 0.5, beta 2, weighting none: 0.5 KL(b^T || b^S) + 2 KL(q^T || q^S) per modality.
    b^S = (0.383652, 0.616348); q^S = softmax([0, 1]/2) = (0.377541, 0.622459); q^T = (1/2, 1/2) in both modalities
    image: b^T = (0.576117, 0.423883): 0.5 * 0.075552 + 2 * 0.030930 = 0.099636
    text:  b^T = (1/3, 2/3):           0.5 * 0.005455 + 2 * 0.030930 = 0.064587"""
    model = distillation_model(tmp_path, monkeypatch, pair_kd_weight=0.0, emb_kd_weight=0.0, list_kd_alpha=0.5,
                               list_kd_beta=2.0, list_kd_weighting="none")
    loss = model.calculate_loss(batch([1], [1], [3]))
    assert loss.item() == pytest.approx(LOSS_TERMS + 0.25 * (0.099636 + 0.064587), abs=1e-5)


# ----------------------------------------------------------------------- two triples: each row its own values
# One modality (image), kd_temperature 1, sce_gamma 3. Student (student_n_layers 0), d = 2:
#   u1 = [1, 1], u2 = [0, 1];  i1 = [1, 1], i2 = [0, 2], i3 = [1, 0]
# Batch (u1, +i1, -i3), (u2, +i2, -i3); lists (positive first, then the sampler's draw, set by hand):
#   u1: [i1, i2, i3], u2: [i2, i1, i3]
#   student scores: u1 -> i1 2, i2 2, i3 1;  u2 -> i1 1, i2 2, i3 0
#   student deltas [2 - 1, 2 - 0] = [1, 2]  (summed over the batch instead of over d: u1*(i1-i3) = [0, 1],
#   u2*(i2-i3) = [0, 2] -> [0, 3]; every per-row sum below differs from the batch-wide one)
#   loss_terms: BPR = (log(1 + e^-1) + log(1 + e^-2)) / 2 = (0.313262 + 0.126928) / 2 = 0.220095;
#   L2 = (|u1|^2 2 + |u2|^2 1 + |i1|^2 2 + |i2|^2 4 + |i3|^2 1 + |i3|^2 1) / (2 * 2) = 11/4, x 0.01 = 0.0275
# Teacher: fused u1 = [1, 1], u2 = [1, 0];  i1 = [1, 1], i2 = [2, 0], i3 = [1, -1]
#   deltas u1.(i1 - i3) = [1,1].[0,2] = 2, u2.(i2 - i3) = [1,0].[1,1] = 1  ->  [2, 1]
#   image: users u1 = [1, 0], u2 = [0, 1]; items i1 = [2, 0], i2 = [0, 1], i3 = [0, 0]
#   list scores u1 [2, 0, 0], u2 [1, 0, 0]
TWO_STUDENT_USER = [[0, 0], [1, 1], [0, 1], [0, 0]]
TWO_STUDENT_ITEM = [[0, 0], [1, 1], [0, 2], [1, 0]]
TWO_LOSS_TERMS = (math.log1p(math.exp(-1)) + math.log1p(math.exp(-2))) / 2 + 0.01 * 11 / 4   # 0.247595
TWO_WEIGHTS = {"pair": 0.5, "list": 0.25, "emb": 2.0}


def two_teacher_outputs() -> TeacherOutput:
    return TeacherOutput(
        user=torch.tensor([[0.0, 0], [1, 1], [1, 0], [0, 0]]),
        item=torch.tensor([[0.0, 0], [1, 1], [2, 0], [1, -1]]),
        modality_item={"image": torch.tensor([[0.0, 0], [2, 0], [0, 1], [0, 0]])},
        modality_user={"image": torch.tensor([[0.0, 0], [1, 0], [0, 1], [0, 0]])},
    )


def two_triples_model(tmp_path, monkeypatch, kd_mode):
    weights = {f"{k}_kd_weight": w for k, w in TWO_WEIGHTS.items()}
    model, _ = build("PromptMM", tmp_path, modalities=("image",), prompt=False, student_n_layers=0,
                     student_reg_weight=0.01, kd_temperature=1.0, sce_gamma=3.0, list_kd_negatives=2,
                     kd_mode=kd_mode, **weights)
    put(model.student.user_embedding.weight, TWO_STUDENT_USER)
    put(model.student.item_embedding.weight, TWO_STUDENT_ITEM)
    monkeypatch.setattr(model, "teacher_targets", two_teacher_outputs)

    def negatives(users, k):
        assert k == 2 and users.tolist() == [1, 2]
        return torch.tensor([[2, 3], [1, 3]])

    monkeypatch.setattr(model.training_items, "sample_negatives", negatives)
    model.set_stage("student")
    return model


def kl_bern(a: float, b: float) -> float:
    """KL(Bern(sigma(a)) || Bern(sigma(b))) by hand."""
    sig = 1 / (1 + math.exp(-a))
    return sig * math.log((1 + math.exp(-b)) / (1 + math.exp(-a))) + (1 - sig) * math.log((1 + math.exp(b)) / (1 + math.exp(a)))


def softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


# paper: pair = (KL(sigma 2 || sigma 1) + KL(sigma 1 || sigma 2)) / 2 = (0.067131 + 0.082608) / 2 = 0.074869
#   list (tau 1, alpha = beta = 1, nontarget: the whole list's KL(p^T || p^S)), mean over the two rows:
#     u1: p^T = softmax [2,0,0] = [0.786986, 0.106507, 0.106507], p^S = softmax [2,2,1] = [0.422319, 0.422319,
#         0.155362] -> 0.302929;  u2: p^T = softmax [1,0,0] = [0.576117, 0.211942, 0.211942], p^S = softmax [2,1,0]
#         = [0.665241, 0.244728, 0.090031] -> 0.068103;  mean 0.185516
#   emb (gamma 3) over the batch's items [i1, i2, i3, i3]: i1 [2,0] vs [1,1]: (1 - S)^3 = 0.025126; i2 [0,1] vs
#     [0,2]: 0; i3 [0,0] vs [1,0]: cosine 0 -> 1, twice  ->  (0.025126 + 0 + 1 + 1) / 4 = 0.506282
# official: pair on s = -log sigma(Δ^S) = [0.313262, 0.126928], t = -log sigma(Δ^T) = [0.126928, 0.313262]:
#     mean t (log t - s) = (0.126928 (-2.064135 - 0.313262) + 0.313262 (-1.160641 - 0.126928)) / 2
#     = (-0.301758 - 0.403370) / 2 = -0.352564
#   list: mean over the 6 entries of t (log t - s), s = -log p^S, t = -log p^T of the rows above:
#     s = [0.861995, 0.861995, 1.861995, 0.407606, 1.407606, 2.407606]
#     t = [0.239545, 2.239545, 2.239545, 0.551445, 1.551445, 1.551445]  -> -1.357879
#   emb (gamma 3) over all items [pad, i1, i2, i3]: (1 + 0.025126 + 0 + 1) / 4 = 0.506282
TWO = {
    "paper": {"pair": (kl_bern(2, 1) + kl_bern(1, 2)) / 2, "list": 0.185516, "emb": ((1 - S) ** 3 + 2) / 4},
    "official": {"pair": -0.352564, "list": -1.357879, "emb": ((1 - S) ** 3 + 2) / 4},
}


def test_two_triples_hand_values_of_the_comments():
    assert TWO_LOSS_TERMS == pytest.approx(0.247595, abs=1e-6)
    assert TWO["paper"]["pair"] == pytest.approx(0.074869, abs=1e-6)
    assert TWO["paper"]["emb"] == pytest.approx(0.506282, abs=1e-6)
    rows = [([2, 0, 0], [2, 2, 1]), ([1, 0, 0], [2, 1, 0])]
    kls = [sum(a * math.log(a / b) for a, b in zip(softmax(t), softmax(s))) for t, s in rows]
    assert kls == pytest.approx([0.302929, 0.068103], abs=1e-6)
    assert sum(kls) / 2 == pytest.approx(TWO["paper"]["list"], abs=1e-6)
    s = [math.log1p(math.exp(-1)), math.log1p(math.exp(-2))]
    assert (s[1] * (math.log(s[1]) - s[0]) + s[0] * (math.log(s[0]) - s[1])) / 2 == pytest.approx(
        TWO["official"]["pair"], abs=1e-6)
    s_list = [-math.log(p) for _, st in rows for p in softmax(st)]
    t_list = [-math.log(p) for tt, _ in rows for p in softmax(tt)]
    assert sum(t * (math.log(t) - s) for t, s in zip(t_list, s_list)) / 6 == pytest.approx(
        TWO["official"]["list"], abs=1e-6)


@pytest.mark.parametrize("kd_mode", ["paper", "official"])
def test_two_triples_each_kd_term(tmp_path, monkeypatch, kd_mode):
    """Every row of the batch is scored with its own user and items, and sce_gamma reaches the embedding term."""
    model = two_triples_model(tmp_path, monkeypatch, kd_mode)
    for term in TWO_WEIGHTS:
        for k, w in TWO_WEIGHTS.items():  # this term alone
            setattr(model, f"{k}_kd_weight", w if k == term else 0.0)
        loss = model.calculate_loss(batch([1, 2], [1, 2], [3, 3]))
        assert loss.item() == pytest.approx(TWO_LOSS_TERMS + TWO_WEIGHTS[term] * TWO[kd_mode][term], abs=1e-5), term


def test_official_list_kd_stays_finite_when_a_probability_underflows(tmp_path, monkeypatch):
    """The released formula's -log(softmax + 1e-8): scores [200, 0, 0] give softmax [1, 0, 0] in float32
    (e^-200 underflows), so -log(p + 1e-8) = [0, L, L] with L = -log 1e-8 = 8 ln 10 = 18.420681, for student and
    teacher alike; mean t (log t - s) = (0 + 2 L (log L - L)) / 3 = 2 * 18.420681 * (2.913474 - 18.420681) / 3
    = -190.435537 (the 0 entry: 0 log 0 = 0). Student BPR: -log sigma(200 - 0) = 0; reg weight 0."""
    model, _ = build("PromptMM", tmp_path, modalities=("image",), prompt=False, student_n_layers=0,
                     student_reg_weight=0.0, kd_mode="official", pair_kd_weight=0.0, emb_kd_weight=0.0,
                     list_kd_weight=0.25, list_kd_negatives=2)
    put(model.student.user_embedding.weight, [[0, 0], [10, 0], [0, 0], [0, 0]])     # u1 = [10, 0]
    put(model.student.item_embedding.weight, [[0, 0], [20, 0], [0, 1], [0, 1]])     # scores 200, 0, 0
    teacher = TeacherOutput(user=torch.zeros(4, 2), item=torch.zeros(4, 2),
                            modality_item={"image": torch.tensor([[0.0, 0], [200, 0], [0, 0], [0, 0]])},
                            modality_user={"image": torch.tensor([[0.0, 0], [1, 0], [0, 0], [0, 0]])})
    monkeypatch.setattr(model, "teacher_targets", lambda: teacher)
    monkeypatch.setattr(model.training_items, "sample_negatives", lambda users, k: torch.tensor([[2, 3]]))
    model.set_stage("student")
    big = 8 * math.log(10)
    expected = 0.25 * 2 * big * (math.log(big) - big) / 3
    assert expected == pytest.approx(0.25 * -190.435537, abs=1e-5)
    assert model.calculate_loss(batch([1], [1], [3])).item() == pytest.approx(expected, rel=1e-5)


def test_kd_mode_left_empty_means_paper(tmp_path, monkeypatch):
    model = distillation_model(tmp_path, monkeypatch, kd_mode=None, list_kd_weight=0.0, emb_kd_weight=0.0)
    loss = model.calculate_loss(batch([1], [1], [3]))
    assert loss.item() == pytest.approx(LOSS_TERMS + WEIGHTS["pair"] * PAPER["pair"], abs=1e-5)


# ------------------------------------------------------------------- the two stages on the teacher's example
# tests/test_maths_teachers.py's PromptMMTeacher example as PromptMM's teacher: modality image = 'sparse.npy'
# (x1 = [0, 0], x2 = [4, 0], x3 = [0, 4]), Linear_image = identity, graph_norm symmetric, n_layers 1, mu 0.5.
#   F_U = A_ui X: u1 = [2, 0], u2 = [2, 2], u3 = [0, 2 sqrt2];  F_I = A_iu F_U: i1 = [sqrt2, 0], i2 = [2, 1], i3 = [1, 3]
#   ID layer mean (layer 0 USER_0 / ITEM_0 below): u [1.5, 0.5], [1, 1.5], [S, 0];  i [S, 0], [1.5, 1.5], [1, 0.5]
#   fused = mean + 0.5 rownorm(F):  u1 = [2, 0.5], u2 = [1 + S/2, 1.5 + S/2], u3 = [S, 0.5]
#                                   i1 = [S + 1/2, 0], i2 = [1.5 + 1/sqrt5, 1.5 + 0.5/sqrt5], i3 = [1 + 0.5/sqrt10, 0.5 + 1.5/sqrt10]
#   (padding rows: no neighbours, 0).  Its loss on (u1, +i2, -i3), (u2, +i3, -i1) with reg_weight 0.1,
#   feat_reg_weight 0.2, modality_bpr_weight 0.5 is 2.730361 (derived there).
USER_0 = [[0, 0], [2, 0], [0, 2], [0, 0]]
ITEM_0 = [[0, 0], [0, 0], [2, 2], [2, 0]]
R5, R10 = math.sqrt(5), math.sqrt(10)
FUSED_USER = [[0, 0], [2, 0.5], [1 + S / 2, 1.5 + S / 2], [S, 0.5]]
FUSED_ITEM = [[0, 0], [S + 0.5, 0], [1.5 + 1 / R5, 1.5 + 0.5 / R5], [1 + 0.5 / R10, 0.5 + 1.5 / R10]]
TEACHER_LOSS = 2.730361
BATCH = batch([1, 2], [2, 3], [3, 1])


def teacher_example(tmp_path, **overrides):
    settings = dict(modality_features={"image": "sparse.npy"}, prompt=False, graph_norm="symmetric", n_layers=1,
                    dropout=0.0, model_cat_rate=0.5, reg_weight=0.1, feat_reg_weight=0.2, modality_bpr_weight=0.5,
                    student_n_layers=0, student_reg_weight=0.1)
    settings.update(overrides)
    model, _ = build("PromptMM", tmp_path, **settings)
    put(model.teacher.reduce["image"].weight, [[1, 0], [0, 1]])
    put(model.teacher.reduce["image"].bias, [0, 0])
    put(model.teacher.user_embedding.weight, USER_0)
    put(model.teacher.item_embedding.weight, ITEM_0)
    return model


def close(tensor, rows) -> bool:
    return torch.allclose(tensor, torch.tensor(rows, dtype=torch.float32), atol=1e-5)


def test_stage_one_trains_the_teacher_and_stage_two_the_student(tmp_path):
    """Stage 1 (the initial stage): the teacher's own loss. Stage 2 with every KD weight 0: the student's loss;
    student = the teacher's layer-0 rows (student_n_layers 0): s(u1, i2) = s(u1, i3) = 4, s(u2, i3) = s(u2, i1) = 0,
    BPR = log 2, L2 = (4 + 4 + 8 + 4 + 4 + 0) / (2 * 2) = 6, x 0.1 -> log 2 + 0.6 = 1.293147."""
    model = teacher_example(tmp_path, pair_kd_weight=0.0, emb_kd_weight=0.0)
    assert model.stage == "teacher" and model.active() is model.teacher
    model.train()
    assert model.calculate_loss(BATCH).item() == pytest.approx(TEACHER_LOSS, abs=1e-5)
    model.set_stage("student")
    put(model.student.user_embedding.weight, USER_0)
    put(model.student.item_embedding.weight, ITEM_0)
    assert model.stage == "student" and model.active() is model.student
    assert model.calculate_loss(BATCH).item() == pytest.approx(math.log(2) + 0.6, abs=1e-6)


def test_teacher_targets_are_eval_mode_outputs_computed_once(tmp_path):
    """Dropout 0.5 is on, but the targets are the eval-mode (no dropout) fused embeddings above; without a tuned
    prompt they carry no gradient and are computed once, again after a stage switch."""
    model = teacher_example(tmp_path, dropout=0.5)
    model.train()
    first = model.teacher_targets()
    assert not model.teacher.training
    assert close(first.user, FUSED_USER) and close(first.item, FUSED_ITEM)
    assert not first.user.requires_grad
    assert model.teacher_targets() is first
    model.set_stage("student")
    again = model.teacher_targets()
    assert again is not first and close(again.item, FUSED_ITEM)
    assert model.teacher_targets() is again


def test_predictions_come_from_the_active_model(tmp_path):
    """Teacher stage: s(u, i) = fused u . fused i, e.g. s(u1, i2) = 2 (1.5 + 1/sqrt5) + 0.5 (1.5 + 0.5/sqrt5)
    = 4.756231. Student stage: the student's own embeddings (student_n_layers 0)."""
    model = teacher_example(tmp_path)
    model.eval()
    assert dot(FUSED_USER[1], FUSED_ITEM[2]) == pytest.approx(4.756231, abs=1e-6)
    scores = model.predict(batch([1, 2], [2, 3], [3, 1]))
    assert scores.tolist() == pytest.approx([dot(FUSED_USER[1], FUSED_ITEM[2]), dot(FUSED_USER[2], FUSED_ITEM[3])],
                                            abs=1e-5)
    everything = model.full_sort_predict(batch([1], [1], [1]))
    assert everything.tolist() == pytest.approx([dot(FUSED_USER[1], row) for row in FUSED_ITEM], abs=1e-5)
    model.set_stage("student")
    put(model.student.user_embedding.weight, [[0, 0], [1, 1], [0, 1], [0, 0]])
    put(model.student.item_embedding.weight, [[0, 0], [1, 1], [0, 2], [1, 0]])
    assert model.predict(batch([1, 2], [2, 3], [3, 1])).tolist() == pytest.approx([2, 0])   # [1,1].[0,2], [0,1].[1,0]
    assert model.full_sort_predict(batch([1], [1], [1])).tolist() == pytest.approx([0, 2, 2, 1])


def test_warm_start_copies_the_teachers_fused_embeddings(tmp_path):
    model = teacher_example(tmp_path, warm_start=True, dropout=0.5)
    model.train()
    model.warm_start_student()
    assert close(model.student.user_embedding.weight, FUSED_USER)
    assert close(model.student.item_embedding.weight, FUSED_ITEM)


def test_loaded_weights_replace_the_frozen_targets(tmp_path):
    """Doubling the teacher's layer-0 IDs doubles their layer mean: fused u1 = 2 [1.5, 0.5] + 0.5 [1, 0] = [3.5, 1]."""
    model = teacher_example(tmp_path)
    model.set_stage("student")
    model.train()
    assert close(model.teacher_targets().user[1], [2, 0.5])
    state = model.state_dict()
    state["teacher.user_embedding.weight"] = 2 * state["teacher.user_embedding.weight"]
    state["teacher.item_embedding.weight"] = 2 * state["teacher.item_embedding.weight"]
    state["not_a_weight"] = torch.zeros(1)
    result = model.load_state_dict(state, strict=False)  # keyword arguments reach torch
    assert result.unexpected_keys == ["not_a_weight"] and result.missing_keys == []
    assert model.training is True and model.student.training and not model.teacher.training
    assert close(model.teacher_targets().user[1], [3.5, 1])


# ------------------------------------------------------------------------------- stage switching
PROMPT_NAMES = {"prompt.user.weight", "prompt.user.bias", "prompt.item.weight", "prompt.item.bias"}
TEACHER_NAMES = {"user_embedding.weight", "item_embedding.weight", "reduce.image.weight", "reduce.image.bias"}


@pytest.mark.parametrize("tuning", [True, False])
def test_stage_switch_freezes_the_teacher_but_a_tuned_prompt(tmp_path, tuning):
    model, _ = build("PromptMM", tmp_path, prompt=True, prompt_tuning_in_student=tuning)
    teacher = dict(model.teacher.named_parameters())
    assert set(teacher) == PROMPT_NAMES | TEACHER_NAMES
    assert [id(p) for p in model.stage_parameters()] == [id(p) for p in model.teacher.parameters()]
    model.set_stage("student")
    assert model.stage == "student"
    assert {n: p.requires_grad for n, p in teacher.items()} == {n: tuning and n in PROMPT_NAMES for n in teacher}
    tuned = [id(p) for n, p in model.teacher.named_parameters() if n in PROMPT_NAMES] if tuning else []
    assert [id(p) for p in model.stage_parameters()] == [id(p) for p in model.student.parameters()] + tuned
    targets = model.teacher_targets()
    assert targets.user.requires_grad == tuning
    assert (model.teacher_targets() is targets) == (not tuning)  # a tuned prompt: new targets every batch
    model.set_stage("teacher")
    assert model.stage == "teacher" and all(p.requires_grad for p in model.teacher.parameters())
    assert [id(p) for p in model.stage_parameters()] == [id(p) for p in model.teacher.parameters()]
    with pytest.raises(ValueError, match=re.escape("stage must be one of ('teacher', 'student'), got 'bogus'")):
        model.set_stage("bogus")


def test_train_and_eval_follow_the_stage(tmp_path):
    model, _ = build("PromptMM", tmp_path, prompt=False)
    modes = lambda: (model.training, model.student.training, model.teacher.training)  # noqa: E731
    assert model.train() is model and modes() == (True, True, True)
    model.eval()
    assert modes() == (False, False, False)
    model.set_stage("student")  # keeps the mode
    assert modes() == (False, False, False)
    model.train()
    assert modes() == (True, True, False)  # stage 2: the teacher stays in eval mode
    model.set_stage("teacher")
    assert modes() == (True, True, True)


def test_the_stage_is_saved_and_restored(tmp_path):
    model, _ = build("PromptMM", tmp_path, prompt=False)
    assert model.other_parameter() == {"stage": "teacher"}
    model.load_other_parameter({"stage": "student"})
    assert model.stage == "student" and model.other_parameter() == {"stage": "student"}
    model.load_other_parameter(None)
    model.load_other_parameter({})
    assert model.stage == "student"


# ------------------------------------------------------------------- the teacher's config and the refusals
def test_teacher_model_class_takes_a_name_or_a_class():
    from recbole_promptmm.model.vbpr import VBPR

    assert teacher_model_class("VBPR") is VBPR and teacher_model_class(VBPR) is VBPR
    # the registry's order: the model modules' names, alphabetically (no hand-kept list)
    message = ("teacher_model 'LightGCN' is not a multimodal model; use one of BM3, FREEDOM, LATTICE, MMHCL, "
               "PromptMMTeacher, VBPR")
    with pytest.raises(ValueError, match=re.escape(message)):
        teacher_model_class("LightGCN")


def test_teacher_config_follows_the_naming_rule(tmp_path):
    """teacher_n_layers overrides n_layers for the teacher alone; the student's student_<key>s and PromptMM's own
    teacher_checkpoint are no teacher settings."""
    model, dataset = build("PromptMM", tmp_path, prompt=False, n_layers=1, teacher_n_layers=3, student_embedding_size=3,
                     student_n_layers=2, emb_kd_weight=0.0, teacher_checkpoint="elsewhere.pth")
    tc = model.teacher_config
    assert tc["model"] == model.teacher_name == "PromptMMTeacher"
    assert tc["n_layers"] == model.teacher.n_layers == 3 and dataset.config["n_layers"] == 1
    assert tc["embedding_size"] == model.teacher.embedding_size == 2 and model.student.embedding_size == 3
    assert tc["checkpoint"] is None and tc["teacher_checkpoint"] == "elsewhere.pth"
    assert model.student.n_layers == 2


def test_teacher_model_left_empty_is_refused(tmp_path):
    """Without teacher_model the teacher would be the run's own model, PromptMM: not a multimodal model."""
    with pytest.raises(ValueError, match=re.escape("teacher_model 'PromptMM' is not a multimodal model")):
        build("PromptMM", tmp_path, prompt=False, teacher_model=None)


def test_yaml_defaults_layered_below_promptmm(tmp_path, monkeypatch):
    """The student's defaults, then the teacher's (those it inherits first); the teacher named by the run, else by
    PromptMM.yaml, else PromptMMTeacher."""
    assert PromptMM.defaults_from({"teacher_model": "VBPR"}) == ("PromptMMStudent", "multimodal", "VBPR")
    assert PromptMM.defaults_from({}) == ("PromptMMStudent", "multimodal", "PromptMMTeacher")
    (tmp_path / "props" / "model").mkdir(parents=True)
    monkeypatch.setattr("recbole_promptmm.paths.properties_dir", lambda: tmp_path / "props")
    (tmp_path / "props" / "model" / "PromptMM.yaml").write_text("teacher_model: LATTICE\n")
    assert PromptMM.defaults_from({}) == ("PromptMMStudent", "multimodal", "LATTICE")
    (tmp_path / "props" / "model" / "PromptMM.yaml").write_text("kd_mode: paper\n")
    assert PromptMM.defaults_from({}) == ("PromptMMStudent", "multimodal", "PromptMMTeacher")


def test_stage_one_keys_of_promptmm_teacher():
    """epochs, the keys of properties/model/multimodal.yaml and PromptMMTeacher.yaml, each also teacher_-prefixed."""
    keys = {"epochs",
            "feature_norm", "prompt", "prompt_weight_sp", "prompt_weight_fp", "prompt_weight_bpr",  # multimodal.yaml
            "embedding_size", "n_layers", "graph_norm", "dropout", "model_cat_rate", "reg_weight", "feat_reg_weight",
            "modality_bpr_weight", "learning_rate"}  # PromptMMTeacher.yaml (prompt too)
    assert stage_one_keys("PromptMMTeacher") == {"teacher_model", *keys, *("teacher_" + k for k in keys)}


def test_teacher_settings_of_a_trained_teacher(tmp_path):
    assert teacher_setting_keys("PromptMMTeacher") == (
        "teacher_model", "embedding_size", "prompt", "prompt_weight_sp", "prompt_weight_fp", "n_layers", "graph_norm",
        "model_cat_rate")
    model, _ = build("PromptMM", tmp_path, prompt=False, prompt_weight_sp=None, n_layers=1, graph_norm="one_sided",
                     model_cat_rate=0.5)
    assert teacher_settings(model.teacher_config) == {  # prompt_weight_sp is ~: left out
        "teacher_model": "PromptMMTeacher", "embedding_size": 2, "prompt": False, "prompt_weight_fp": 1.0,
        "n_layers": 1, "graph_norm": "one_sided", "model_cat_rate": 0.5}


REFUSALS = [
    (dict(kd_mode="bogus"), "kd_mode must be one of ('paper', 'official'), got 'bogus'"),
    (dict(list_kd_weighting="bogus"), "list_kd_weighting must be one of ('nontarget', 'confidence', 'none'), got 'bogus'"),
    (dict(teacher_model="VBPR", list_kd_weight=0.1),
     "list_kd_weight=0.1 (list KD) needs per-modality user embeddings, which teacher VBPR does not have; set "
     "list_kd_weight: 0 or use a teacher that has them (PromptMMTeacher)"),
    (dict(student_embedding_size=3),
     "emb_kd_weight > 0 (embedding KD) compares teacher PromptMMTeacher's modality item embeddings with the student's "
     "item embeddings: student_embedding_size (3) must equal PromptMMTeacher's embedding_size (2)"),
    (dict(student_embedding_size=3, emb_kd_weight=0.0, warm_start=True),
     "warm_start copies teacher PromptMMTeacher's final embeddings (size 2) into the student: student_embedding_size "
     "(3) must equal it"),
    (dict(modalities=()), "PromptMM needs item modality features, but dataset 'tiny' has none"),
]


@pytest.mark.parametrize("overrides, message", REFUSALS)
def test_refused_before_any_training(tmp_path, overrides, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        build("PromptMM", tmp_path, **{"prompt": False, **overrides})


def test_a_dataset_without_features_given_directly_is_refused(tmp_path):
    """create_dataset refuses a PromptMM run without modality_features first; the model's own guard covers a
    dataset handed to it directly (here the plain dataset of a PromptMMStudent run)."""
    from recbole_promptmm import Config

    _, dataset = build("PromptMMStudent", tmp_path, modalities=())
    assert not getattr(dataset, "modality_features", None)
    config = Config("PromptMM", "tiny", config_dict={"data_path": str(tmp_path), "embedding_size": 2,
                                                     "load_col": {"inter": ["user_id", "item_id"]}})
    with pytest.raises(ValueError, match="^" + re.escape("PromptMM needs item modality features, but dataset 'tiny'")):
        PromptMM(config, dataset)
