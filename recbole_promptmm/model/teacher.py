"""PromptMMTeacher: the multimodal teacher of PromptMM (Wei et al., WWW 2024, arXiv 2402.17188).

Reference implementation: github.com/HKUDS/PromptMM (read, not copied; see ../shared/design/PROMPTMM.md for
where it departs from the paper). Any number of modalities; only parameters the method uses are registered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_promptmm.model.graph import bipartite_propagation
from recbole_promptmm.model.losses import bpr_loss, l2_loss
from recbole_promptmm.model.prompt import SoftPrompt, hard_tokens, inject_features
from recbole_promptmm.model.scoring import CachedDotProductScorer


def require_modality_features(dataset, model_name: str) -> dict[str, torch.Tensor]:
    features = getattr(dataset, "modality_features", None)
    if not features:
        raise ValueError(
            f"{model_name} needs item modality features, but dataset {dataset.dataset_name!r} has none: add "
            "`modality_features: {image: image_feat.npy, ...}` (one .npy file per modality, row k = item token k) "
            "to its dataset yaml or a --config_files yaml"
        )
    return features


@dataclass
class TeacherOutput:
    """All embeddings of one teacher forward pass."""

    user: torch.Tensor  # fused e^T_u [U, d]
    item: torch.Tensor  # fused e^T_i [I, d]
    modality_user: dict[str, torch.Tensor]  # F_U^m [U, d]
    modality_item: dict[str, torch.Tensor]  # F_I^m [I, d]
    prompt_user: torch.Tensor  # p_u [U, d]
    prompt_item: torch.Tensor  # p_i [I, d]


class PromptMMTeacher(CachedDotProductScorer, GeneralRecommender):
    r"""Multimodal graph teacher with a soft prompt.

    Per modality m: :math:`Z^m = \mathrm{Dropout}(\mathrm{Linear}_m(X^m + \lambda_{fp}\,\mathrm{rownorm}(p_I p_I^T X^m)))`,
    :math:`F_U^m = \hat A_{ui} Z^m`, :math:`F_I^m = \hat A_{iu} F_U^m`. ID graph: layer 0 is
    :math:`E + \lambda_{sp}\,\mathrm{rownorm}(p)`, then ``n_layers`` of :math:`E_U \leftarrow \hat A_{ui}E_I`,
    :math:`E_I \leftarrow \hat A_{iu}E_U`, mean over layers. Fusion :math:`e = \bar E + \mu\sum_m \mathrm{rownorm}(F^m)`.
    Loss: BPR(e) + reg_weight L2(layer-0 ids) + feat_reg_weight L2(F^m) + prompt_weight_bpr BPR(p)
    + modality_bpr_weight :math:`\sum_m` BPR(F^m).
    """

    input_type = InputType.PAIRWISE
    needs_modality_features = True

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        features = require_modality_features(dataset, type(self).__name__)
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.feat_reg_weight = config["feat_reg_weight"]
        self.modality_bpr_weight = config["modality_bpr_weight"]
        self.model_cat_rate = config["model_cat_rate"]
        self.prompt_weight_sp = config["prompt_weight_sp"]
        self.prompt_weight_fp = config["prompt_weight_fp"]
        self.prompt_weight_bpr = config["prompt_weight_bpr"]
        self.modalities = list(features)

        inter = dataset.inter_matrix(form="coo").astype("float32")
        self.a_ui, self.a_iu = bipartite_propagation(inter, config["graph_norm"])
        for name, x in features.items():
            self.register_buffer(f"feat_{name}", x, persistent=False)

        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.reduce = nn.ModuleDict({m: nn.Linear(x.shape[1], self.embedding_size) for m, x in features.items()})
        self.dropout = nn.Dropout(config["dropout"])
        h_u, h_i = hard_tokens(features, self.a_ui, self.embedding_size)
        self.prompt = SoftPrompt(h_u, h_i)
        for module in [self.user_embedding, self.item_embedding, *self.reduce.values()]:
            nn.init.xavier_uniform_(module.weight)

    # ----------------------------------------------------------------- forward
    def features(self, name: str) -> torch.Tensor:
        return getattr(self, f"feat_{name}")

    def forward(self) -> TeacherOutput:
        p_u, p_i = self.prompt()
        f_user, f_item = {}, {}
        for m in self.modalities:
            z = self.dropout(self.reduce[m](inject_features(self.features(m), p_i, self.prompt_weight_fp)))
            f_user[m] = self.a_ui(z)
            f_item[m] = self.a_iu(f_user[m])
        e_u = self.user_embedding.weight
        e_i = self.item_embedding.weight
        if self.prompt_weight_sp:
            e_u = e_u + self.prompt_weight_sp * F.normalize(p_u, dim=-1)
            e_i = e_i + self.prompt_weight_sp * F.normalize(p_i, dim=-1)
        users, items = [e_u], [e_i]
        for _ in range(self.n_layers):
            e_u, e_i = self.a_ui(e_i), self.a_iu(e_u)
            users.append(e_u)
            items.append(e_i)
        user = torch.stack(users).mean(dim=0)
        item = torch.stack(items).mean(dim=0)
        for m in self.modalities:
            user = user + self.model_cat_rate * F.normalize(f_user[m], dim=-1)
            item = item + self.model_cat_rate * F.normalize(f_item[m], dim=-1)
        return TeacherOutput(user, item, f_user, f_item, p_u, p_i)

    # -------------------------------------------------------------- training
    def calculate_loss(self, interaction) -> torch.Tensor:
        u = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID]
        neg = interaction[self.NEG_ITEM_ID]
        out = self.forward()
        loss = _bpr(out.user, out.item, u, pos, neg)
        loss = loss + self.reg_weight * l2_loss(
            self.user_embedding(u), self.item_embedding(pos), self.item_embedding(neg))
        for m in self.modalities:
            fu, fi = out.modality_user[m], out.modality_item[m]
            if self.feat_reg_weight:
                loss = loss + self.feat_reg_weight * l2_loss(fu[u], fi[pos], fi[neg])
            if self.modality_bpr_weight:
                loss = loss + self.modality_bpr_weight * _bpr(fu, fi, u, pos, neg)
        if self.prompt_weight_bpr:
            loss = loss + self.prompt_weight_bpr * _bpr(out.prompt_user, out.prompt_item, u, pos, neg)
        return loss

    def user_item(self, out: TeacherOutput) -> tuple[torch.Tensor, torch.Tensor]:
        return out.user, out.item

    # ------------------------------------------------------------- accounting
    def used_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def serving_bytes(self) -> int:
        """Bytes needed to produce recommendations: parameters plus the feature matrices and graph."""
        tensors = list(self.parameters()) + [self.features(m) for m in self.modalities]
        return sum(t.numel() * t.element_size() for t in tensors) + self.a_ui.nbytes() + self.a_iu.nbytes()


def _bpr(users: torch.Tensor, items: torch.Tensor, u, pos, neg) -> torch.Tensor:
    eu = users[u]
    return bpr_loss((eu * items[pos]).sum(-1), (eu * items[neg]).sum(-1))
