r"""BM3: Bootstrap Latent Representations for Multi-modal Recommendation (Zhou et al., WWW 2023, arXiv 2207.05969).

Written from the paper and ../shared/design/MM_MODELS.md (no third-party implementation was read). Any number of
modalities (the paper uses image + text). No negative sampling: only the batch's observed (u, i) pairs enter the
loss (RecBole still draws the PAIRWISE negatives; only the prompt's own BPR term, when ``prompt`` is on, uses them).
The loss is the small pure function :func:`bm3_loss`, checked by hand in ``tests/test_vbpr_bm3.py``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recbole_promptmm.model.graph import lightgcn_adjacency, lightgcn_embeddings
from recbole_promptmm.model.multimodal import MultimodalRecommender, TeacherOutput


def _neg_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batch mean of 1 - cos(a_k, b_k) over the rows of two [B, d] tensors."""
    return (1 - F.cosine_similarity(a, b, dim=-1)).mean()


def bm3_loss(pred_user: torch.Tensor, pred_item: torch.Tensor, online_user: torch.Tensor,
             online_item: torch.Tensor, pred_modality: Sequence[torch.Tensor],
             online_modality: Sequence[torch.Tensor], dropout: float, cl_weight: float,
             reg_weight: float) -> torch.Tensor:
    r"""BM3's multi-modal contrastive loss on one batch of observed pairs (all tensors [B, d], row k = pair k).

    Targets are dropout views of the stop-gradient online vectors, :math:`\tilde h = \mathrm{Dropout}_p(\mathrm{sg}(h))`
    (one view per vector, shared by the terms that use it):

    .. math::
        \mathcal{L} = \underbrace{C(\dot h_u, \tilde h_i) + C(\dot h_i, \tilde h_u)}_{\text{graph reconstruction}}
        + \lambda_{cl}\sum_m \Big[\underbrace{C(\dot h_i^m, \tilde h_i)}_{\text{inter-modality alignment}}
        + \underbrace{C(\dot h_i^m, \tilde h_i^m)}_{\text{intra-modality masking}}\Big]
        + \lambda\,\frac{1}{B}\sum_{(u,i)}\big(\lVert h_u\rVert^2 + \lVert h_i\rVert^2\big)

    with :math:`C(a, b) = \frac{1}{B}\sum (1 - \cos(a, b))` (the paper's negative cosine, shifted by a constant),
    :math:`\dot h` the predictor outputs, :math:`h` the online vectors, :math:`\lambda_{cl}` = ``cl_weight``,
    :math:`\lambda` = ``reg_weight``. ``dropout = 0`` makes the targets plain stop-gradient copies.
    """
    def target(x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x.detach(), p=dropout, training=dropout > 0)

    target_user, target_item = target(online_user), target(online_item)
    loss = _neg_cos(pred_user, target_item) + _neg_cos(pred_item, target_user)
    for pred_m, online_m in zip(pred_modality, online_modality, strict=True):
        loss = loss + cl_weight * (_neg_cos(pred_m, target_item) + _neg_cos(pred_m, target(online_m)))
    reg = (online_user.pow(2).sum(-1) + online_item.pow(2).sum(-1)).mean()
    return loss + reg_weight * reg


class BM3(MultimodalRecommender):
    r"""Self-supervised multimodal recommender with latent dropout views and no negatives.

    Online vectors: LightGCN (``n_layers``, mean over layers) on the symmetric-normalised user-item graph over the
    (prompted) layer-0 ID tables gives :math:`h_u` and :math:`h_i^{gcn}`; :math:`h_i = h_i^{gcn} + e_i^{(0)}`.
    Per modality :math:`h_i^m = W_m x_i^m + b_m` (``Linear(d_m, d)``). One shared predictor
    :math:`\dot h = W_p h + b_p` (``Linear(d, d)``). Loss: :func:`bm3_loss`. Score
    :math:`\hat y_{ui} = \dot h_u^\top \dot h_i`, so the fused user / item embeddings are the predictor outputs;
    the per-modality item embedding (for KD) is :math:`\dot h_i^m`.

    The regulariser acts per batch occurrence, so it shrinks popular users and items most; since the cosine terms
    leave norms free, a large ``reg_weight`` turns the dot-product ranking against popularity (0.1 takes ml-100k
    validation Recall@20 from 0.16 after 5 epochs to under 0.01 by epoch 15), hence the small default (1e-3).
    """

    has_modality_users = False
    model_forward_keys = ("n_layers",)

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.adjacency = lightgcn_adjacency(dataset.inter_matrix(form="coo"))
        self.n_layers = config["n_layers"]
        self.dropout = config["dropout"]
        self.cl_weight = config["cl_weight"]
        self.reg_weight = config["reg_weight"]
        self.projection = nn.ModuleDict({m: nn.Linear(d, self.embedding_size) for m, d in self.feature_dims.items()})
        self.predictor = nn.Linear(self.embedding_size, self.embedding_size)
        for module in (*self.projection.values(), self.predictor):
            nn.init.xavier_uniform_(module.weight)

    def encode(self, features, user, item) -> TeacherOutput:
        online_user, gcn_item = lightgcn_embeddings(self.adjacency, user, item, self.n_layers)
        online_item = gcn_item + item
        online_modality = {m: self.projection[m](features[m]) for m in self.modalities}
        pred_modality = {m: self.predictor(h) for m, h in online_modality.items()}
        extra = {"online_user": online_user, "online_item": online_item,
                 **{f"online_modality:{m}": h for m, h in online_modality.items()}}
        return TeacherOutput(self.predictor(online_user), self.predictor(online_item), pred_modality, extra=extra)

    def loss(self, interaction, out: TeacherOutput) -> torch.Tensor:
        u = interaction[self.USER_ID]
        i = interaction[self.ITEM_ID]
        return bm3_loss(
            out.user[u], out.item[i], out.extra["online_user"][u], out.extra["online_item"][i],
            [out.modality_item[m][i] for m in self.modalities],
            [out.extra[f"online_modality:{m}"][i] for m in self.modalities],
            self.dropout if self.training else 0.0, self.cl_weight, self.reg_weight)
