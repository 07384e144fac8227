"""The model layer's shared pieces against hand-computed values: the batch BPR losses (losses.py), the BPR +
regulariser helper every BPR-trained model of ours calls (scoring.py), and the size accounting (accounting.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from recbole_promptmm.model import accounting
from recbole_promptmm.model.losses import batch_bpr, l2_loss, norm_reg_loss, triple_bpr
from recbole_promptmm.model.scoring import CachedDotProductScorer

USERS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
ITEMS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
U, POS, NEG = torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1, 2])
# user 0: s+ = 1, s- = 0 (delta 1); user 1: s+ = 1, s- = 1 (delta 0)
BPR = (math.log(1 + math.exp(-1)) + math.log(2)) / 2  # (0.313262 + 0.693147) / 2 = 0.503204


def test_batch_bpr_and_triple_bpr_by_hand():
    assert batch_bpr(USERS, ITEMS, U, POS, NEG).item() == pytest.approx(BPR, abs=1e-6)
    assert triple_bpr(USERS[U], ITEMS[POS], ITEMS[NEG]).item() == pytest.approx(BPR, abs=1e-6)


class Stub(CachedDotProductScorer, nn.Module):
    USER_ID, ITEM_ID, NEG_ITEM_ID = "user", "item", "neg"

    def __init__(self) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding.from_pretrained(2 * USERS)  # layer-0 tables: twice the final ones
        self.item_embedding = nn.Embedding.from_pretrained(2 * ITEMS)


def test_bpr_reg_loss_by_hand():
    batch = {"user": U, "item": POS, "neg": NEG}
    stub = Stub()
    assert stub.bpr_reg_loss(batch, USERS, ITEMS, 0.0).item() == pytest.approx(BPR, abs=1e-6)
    # ids: L2 of the layer-0 rows = (|2 u0|^2 + |2 u1|^2 + |2 i0|^2 + |2 i1|^2 + |2 i1|^2 + |2 i2|^2) / (2 * 2)
    #      = (4 + 4 + 4 + 4 + 4 + 8) / 4 = 7
    assert stub.bpr_reg_loss(batch, USERS, ITEMS, 0.1).item() == pytest.approx(BPR + 0.1 * 7, abs=1e-6)
    # scored: norm regulariser of the final rows = (|[u0; u1]| + |[i0; i1]| + |[i1; i2]|) / 2 = (√2 + √2 + √3) / 2
    scored = stub.bpr_reg_loss(batch, USERS, ITEMS, 0.1, norm_reg_loss, reg_on="scored").item()
    assert scored == pytest.approx(BPR + 0.1 * (2 * math.sqrt(2) + math.sqrt(3)) / 2, abs=1e-6)
    assert stub.bpr_reg_loss(batch, USERS, ITEMS, 0.1, l2_loss, reg_on="scored").item() == pytest.approx(
        BPR + 0.1 * (1 + 1 + 1 + 1 + 1 + 2) / 4, abs=1e-6)
    with pytest.raises(ValueError, match="reg_on"):
        stub.bpr_reg_loss(batch, USERS, ITEMS, 0.1, reg_on="all")


class BuiltIn(nn.Module):
    """A model without accounting methods (like RecBole's built-ins)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 3)  # 6 + 3 parameters, 36 bytes
        self.tied = self.linear  # the same parameters again: counted once
        # sparse graph attribute: 2 float32 values (8 bytes) + 2 x 2 int64 indices (32 bytes)
        self.graph = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 0]]), torch.tensor([1.0, 2.0]), (2, 2),
                                             check_invariants=True)
        self.restore_user_e = torch.zeros(100)  # a cached output, not serving state


def test_generic_rule_for_models_without_methods():
    model = BuiltIn()
    assert accounting.used_parameters(model) == accounting.parameter_count(model) == 9
    assert accounting.serving_bytes(model) == accounting.tensor_bytes(model) == 36 + 8 + 32
    assert accounting.serving_bytes_source(model) == "tensors"


def test_a_models_own_methods_are_asked():
    class Own(BuiltIn):
        def used_parameters(self) -> int:
            return 3

        def serving_bytes(self) -> int:
            return 12

    model = Own()
    assert accounting.used_parameters(model) == 3
    assert accounting.serving_bytes(model) == 12
    assert accounting.serving_bytes_source(model) == "model.serving_bytes()"
