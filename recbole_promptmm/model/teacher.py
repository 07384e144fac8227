"""PromptMMTeacher: the multimodal teacher of PromptMM (Wei et al., WWW 2024, arXiv 2402.17188).

Reference implementation: github.com/HKUDS/PromptMM (read, not copied; see ../shared/design/PROMPTMM.md for
where it departs from the paper). Any number of modalities; only parameters the method uses are registered.
The soft prompt is the shared :class:`~recbole_promptmm.model.prompt.PromptAdapter` (``prompt: True`` here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbole_promptmm.model.graph import GRAPH_NORMS, bipartite_propagation
from recbole_promptmm.model.losses import batch_bpr, l2_loss
from recbole_promptmm.model.multimodal import MultimodalRecommender, TeacherOutput
from recbole_promptmm.registry import register
from recbole_promptmm.schema import declare, layers, ratio, switch, weight


@register(multimodal=True)
class PromptMMTeacher(MultimodalRecommender):
    r"""Multimodal graph teacher (with the soft prompt when ``prompt`` is on).

    Per modality m: :math:`Z^m = \mathrm{Dropout}(\mathrm{Linear}_m(\tilde X^m))` with :math:`\tilde X^m` the
    (prompted) features, :math:`F_U^m = \hat A_{ui} Z^m`, :math:`F_I^m = \hat A_{iu} F_U^m`. ID graph: layer 0 is
    the (prompted) ID embeddings, then ``n_layers`` of :math:`E_U \leftarrow \hat A_{ui}E_I`,
    :math:`E_I \leftarrow \hat A_{iu}E_U`, mean over layers. Fusion :math:`e = \bar E + \mu\sum_m \mathrm{rownorm}(F^m)`.
    Loss: BPR(e) + reg_weight L2(layer-0 ids) + feat_reg_weight L2(F^m) + modality_bpr_weight
    :math:`\sum_m` BPR(F^m) (+ the prompt's own BPR term).
    """

    has_modality_users = True
    model_forward_keys = ("n_layers", "graph_norm", "model_cat_rate")
    config_keys = declare(  # defaults: properties/model/PromptMMTeacher.yaml
        n_layers=layers("layers of the collaborative (ID) graph"),
        graph_norm=switch(*GRAPH_NORMS, help="symmetric (LightGCN) or one_sided (released code) normalisation of "
                          "A_ui, A_iu"),
        dropout=ratio("dropout after each modality's reduction layer", high_open=True),
        model_cat_rate=ratio("mu: weight of the modality embeddings in the fused embedding"),
        reg_weight=weight("L2 on the batch's layer-0 ID embeddings"),
        feat_reg_weight=weight("L2 on the batch's modality embeddings F^m"),
        modality_bpr_weight=weight("BPR on each modality's own embeddings F^m"),
    )

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        if self.prompt is None:
            self.a_ui, self.a_iu = bipartite_propagation(dataset.inter_matrix(form="coo"), config["graph_norm"])
        self.config_attributes(config, "n_layers", "reg_weight", "feat_reg_weight", "modality_bpr_weight",
                               "model_cat_rate")
        self.reduce = nn.ModuleDict({m: nn.Linear(d, self.embedding_size) for m, d in self.feature_dims.items()})
        self.dropout = nn.Dropout(config["dropout"])
        for module in self.reduce.values():
            nn.init.xavier_uniform_(module.weight)

    def prompt_graph(self, dataset, config):
        """The teacher's own graphs (``graph_norm``), built here when the prompt needs them first."""
        self.a_ui, self.a_iu = bipartite_propagation(dataset.inter_matrix(form="coo"), config["graph_norm"])
        return self.a_ui

    def encode(self, features, user, item) -> TeacherOutput:
        f_user, f_item = {}, {}
        for m in self.modalities:
            z = self.dropout(self.reduce[m](features[m]))
            f_user[m] = self.a_ui(z)
            f_item[m] = self.a_iu(f_user[m])
        e_u, e_i = user, item
        sum_u, sum_i = user, item
        for _ in range(self.n_layers):
            e_u, e_i = self.a_ui(e_i), self.a_iu(e_u)
            sum_u, sum_i = sum_u + e_u, sum_i + e_i
        fused_u, fused_i = sum_u / (self.n_layers + 1), sum_i / (self.n_layers + 1)
        for m in self.modalities:
            fused_u = fused_u + self.model_cat_rate * F.normalize(f_user[m], dim=-1)
            fused_i = fused_i + self.model_cat_rate * F.normalize(f_item[m], dim=-1)
        return TeacherOutput(fused_u, fused_i, f_item, f_user)

    def loss(self, interaction, out: TeacherOutput) -> torch.Tensor:
        u, pos, neg = self.triples(interaction)
        loss = self.bpr_reg_loss(interaction, out.user, out.item, self.reg_weight)
        for m in self.modalities:
            fu, fi = out.modality_user[m], out.modality_item[m]
            if self.feat_reg_weight:
                loss = loss + self.feat_reg_weight * l2_loss(fu[u], fi[pos], fi[neg])
            if self.modality_bpr_weight:
                loss = loss + self.modality_bpr_weight * batch_bpr(fu, fi, u, pos, neg)
        return loss
