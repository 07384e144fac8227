"""PromptMMStudent: PromptMM's ID-only LightGCN student (He et al., SIGIR 2020), with the correct bipartite
adjacency. Trained alone it is the "w/o KD" ablation; inside :class:`PromptMM` it is distilled from the teacher.
"""

from __future__ import annotations

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_promptmm.model.accounting import parameter_count
from recbole_promptmm.model.graph import lightgcn_adjacency, lightgcn_embeddings
from recbole_promptmm.model.scoring import CachedDotProductScorer
from recbole_promptmm.registry import register
from recbole_promptmm.schema import declare, layers, positive, positive_int, weight


@register()
class PromptMMStudent(CachedDotProductScorer, GeneralRecommender):
    r"""LightGCN over ID embeddings: :math:`E^{(l+1)} = \hat A E^{(l)}`, :math:`e = \mathrm{mean}_{l=0..L} E^{(l)}`,
    :math:`\hat A = D^{-1/2}\begin{bmatrix}0 & R\\ R^T & 0\end{bmatrix}D^{-1/2}`.
    Loss: BPR + ``student_reg_weight`` L2(layer-0 embeddings of the batch).
    """

    input_type = InputType.PAIRWISE
    config_keys = declare(  # defaults: properties/model/PromptMMStudent.yaml
        student_embedding_size=positive_int("student hidden size; ~ = embedding_size", optional=True),
        embedding_size=positive_int("hidden size when student_embedding_size is ~"),
        student_n_layers=layers("LightGCN layers of the student"),
        student_reg_weight=weight("L2 on the batch's layer-0 embeddings"),
        learning_rate=positive("Adam learning rate when trained alone"),
    )

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.embedding_size = config["student_embedding_size"] or config["embedding_size"]
        self.n_layers = config["student_n_layers"]
        self.reg_weight = config["student_reg_weight"]
        self.adjacency = lightgcn_adjacency(dataset.inter_matrix(form="coo"))
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user [U, d], item [I, d]) embeddings."""
        return lightgcn_embeddings(self.adjacency, self.user_embedding.weight, self.item_embedding.weight,
                                   self.n_layers)

    def loss_terms(self, interaction, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """BPR + L2 on the batch, given final embeddings (shared with the distillation loss)."""
        return self.bpr_reg_loss(interaction, user, item, self.reg_weight)

    def calculate_loss(self, interaction) -> torch.Tensor:
        return self.loss_terms(interaction, *self.forward())

    def used_parameters(self) -> int:
        """All parameters (see :mod:`recbole_promptmm.model.accounting`)."""
        return parameter_count(self)

    def serving_bytes(self) -> int:
        """Bytes needed to produce recommendations: parameters plus the graph (no feature matrices)."""
        return self.adjacency.nbytes() + sum(p.numel() * p.element_size() for p in self.parameters())
