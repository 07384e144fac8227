r"""BM3: Bootstrap Latent Representations for Multi-modal Recommendation (Zhou et al., WWW 2023, arXiv 2207.05969).

Written from the paper, ../shared/design/MM_MODELS.md ("Fidelity notes") and the authors' released BM3 code (read to
learn its settings; no code copied). Any number of modalities (the paper uses image + text). No negative sampling:
only the batch's observed (u, i) pairs enter the loss (RecBole still draws the PAIRWISE negatives; only the
prompt's own BPR term, when ``prompt`` is on, uses them). The cosine part of the loss is the small pure function
:func:`bm3_loss`, the regulariser :func:`~recbole_promptmm.model.losses.norm_reg_loss`; both are checked by hand in
``tests/test_vbpr_bm3.py``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recbole_promptmm.model.graph import lightgcn_adjacency, lightgcn_embeddings
from recbole_promptmm.model.losses import norm_reg_loss
from recbole_promptmm.model.multimodal import MultimodalRecommender, TeacherOutput
from recbole_promptmm.registry import register
from recbole_promptmm.schema import declare, flag, layers, ratio, weight


def _neg_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batch mean of 1 - cos(a_k, b_k) over the rows of two [B, d] tensors."""
    return (1 - F.cosine_similarity(a, b, dim=-1)).mean()


def bm3_loss(pred_user: torch.Tensor, pred_item: torch.Tensor, online_user: torch.Tensor,
             online_item: torch.Tensor, pred_modality: Sequence[torch.Tensor],
             online_modality: Sequence[torch.Tensor], dropout: float, cl_weight: float) -> torch.Tensor:
    r"""BM3's multi-modal contrastive loss on one batch of observed pairs (all tensors [B, d], row k = pair k).

    Targets are dropout views of the stop-gradient online vectors, :math:`\tilde h = \mathrm{Dropout}_p(\mathrm{sg}(h))`
    (one view per vector, shared by the terms that use it):

    .. math::
        \mathcal{L}_{cos} = \underbrace{C(\dot h_u, \tilde h_i) + C(\dot h_i, \tilde h_u)}_{\text{graph reconstruction}}
        + \lambda_{cl}\sum_m \Big[\underbrace{C(\dot h_i^m, \tilde h_i)}_{\text{inter-modality alignment}}
        + \underbrace{C(\dot h_i^m, \tilde h_i^m)}_{\text{intra-modality masking}}\Big]

    with :math:`C(a, b) = \frac{1}{B}\sum (1 - \cos(a, b))` (the paper's negative cosine, shifted by a constant),
    :math:`\dot h` the predictor outputs, :math:`h` the online vectors, :math:`\lambda_{cl}` = ``cl_weight``.
    ``dropout = 0`` makes the targets plain stop-gradient copies. The online vectors get no gradient from it; the
    regulariser (on the full matrices) is added by :meth:`BM3.loss`.
    """
    def target(x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x.detach(), p=dropout, training=dropout > 0)

    target_user, target_item = target(online_user), target(online_item)
    loss = _neg_cos(pred_user, target_item) + _neg_cos(pred_item, target_user)
    for pred_m, online_m in zip(pred_modality, online_modality, strict=True):
        loss = loss + cl_weight * (_neg_cos(pred_m, target_item) + _neg_cos(pred_m, target(online_m)))
    return loss


@register(multimodal=True)
class BM3(MultimodalRecommender):
    r"""Self-supervised multimodal recommender with latent dropout views and no negatives.

    Online vectors: LightGCN (``n_layers``, mean over layers) on the symmetric-normalised user-item graph over the
    (prompted) layer-0 ID tables gives :math:`h_u` and :math:`h_i^{gcn}`; :math:`h_i = h_i^{gcn} + e_i^{(0)}`.
    Per modality :math:`h_i^m = W_m x_i^m + b_m` (``Linear(d_m, d)``). One shared predictor
    :math:`\dot h = W_p h + b_p` (``Linear(d, d)``). Score :math:`\hat y_{ui} = \dot h_u^\top \dot h_i`, so the
    fused user / item embeddings are the predictor outputs; the per-modality item embedding (for KD) is
    :math:`\dot h_i^m`. The features enter only the alignment and masking terms, never the score.

    Loss: :func:`bm3_loss` on the batch plus
    :math:`\lambda\,(\lVert H_U\rVert_F + \lVert H_I\rVert_F)/|I|` (``reg_weight``;
    :func:`~recbole_promptmm.model.losses.norm_reg_loss`) on the *full* online user and item matrices, plain (not
    squared) Frobenius norms divided by the number of item rows, as in the authors' code. The squared per-batch L2
    we used before was far stronger at the same weight: the cosine terms leave norms free, so it only shrank the
    vectors of frequent users and items and, at the paper's 0.1, collapsed the ranking within a few epochs.

    ``trainable_features`` (default True, as in the authors' code): each :math:`X^m` is a parameter initialised
    from the (``feature_norm``-ed) features, so the masking / alignment terms can move every item's feature row
    towards its ID view; with frozen features the near-parallel TikTok visual rows make all items' projections
    almost the same vector. A trained model keeps its moved features in its checkpoint.

    Where we differ from the paper / authors' code: Xavier uniform (not normal) init of the projections and the
    predictor (same variance); the regulariser divides by RecBole's item count, which includes the padding row;
    any number of modalities; the soft prompt (``prompt``) can wear it.

    Training is not monotone (no negatives, bootstrapped targets): on TikTok validation Recall@20 peaks after 2
    epochs (about 0.066, a popularity-like ranking of the barely trained embeddings), falls to 0.044 by epoch 12
    and then climbs past it to 0.091 (epochs 39-46, defaults). An early-stopping patience of 10 evaluations stops it
    at the first peak; give it 20 or more (the authors' framework uses 20).
    """

    has_modality_users = False
    model_forward_keys = ("n_layers",)
    config_keys = declare(  # defaults: properties/model/BM3.yaml
        n_layers=layers("LightGCN layers"),
        dropout=ratio("dropout ratio of the target views", high_open=True),
        cl_weight=weight("weight of the per-modality alignment + masking terms"),
        reg_weight=weight("weight of (||H_U||_F + ||H_I||_F) / n_items on the full online matrices"),
        trainable_features=flag("the feature matrices X^m are parameters (True) or fixed buffers (False)"),
    )

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.adjacency = lightgcn_adjacency(dataset.inter_matrix(form="coo"))
        self.config_attributes(config, "n_layers", "dropout", "cl_weight", "reg_weight")
        self.trainable_features = bool(config["trainable_features"])
        if self.trainable_features:
            for m in self.modalities:
                # replaces the buffer of the same name: raw_features() and the prompt read the parameter
                setattr(self, f"feat_{m}", nn.Parameter(self.raw_features(m).detach().clone()))
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
        online_user, online_item = out.extra["online_user"], out.extra["online_item"]
        cos = bm3_loss(
            out.user[u], out.item[i], online_user[u], online_item[i],
            [out.modality_item[m][i] for m in self.modalities],
            [out.extra[f"online_modality:{m}"][i] for m in self.modalities],
            self.dropout if self.training else 0.0, self.cl_weight)
        if not self.reg_weight:
            return cos
        return cos + self.reg_weight * norm_reg_loss(online_user, online_item)
