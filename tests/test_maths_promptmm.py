"""PromptMM's model-level maths against hand-computed values: the student's loss (BPR on the propagated
embeddings + its L2 on the layer-0 ones) and the stage-2 loss (student + weighted pair, list and embedding KD)
in both ``kd_mode``\\ s, each KD term alone and all together. The example is tests/hand_example.py's.

The teacher's outputs are an input of the distillation loss: they are set by hand (``teacher_targets``), as are
the list-KD negatives (the sampler's draw), so every number below follows from the values written here.
"""

from __future__ import annotations

import math

import pytest
import torch

from recbole_promptmm.model.multimodal import TeacherOutput
from tests.hand_example import S, batch, bpr, build, put


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
