"""FREEDOM: freezing and denoising graph structures for multimodal recommendation (Zhou & Shen, ACM MM 2023,
arXiv 2211.06924).

Implemented from the paper and ../shared/design/MM_MODELS.md; hyper-parameter defaults from the paper
(properties/model/FREEDOM.yaml). The frozen item-item graph is built sparsely (top-k per item, in blocks); the
degree-sensitive edge pruning draws its edges without replacement by the Gumbel top-k trick
(:func:`recbole_promptmm.model.graph.prune_edges`). Any number of modalities, fused with the fixed weights
``mm_weights`` (the paper: 0.1 image, 0.9 text; default equal).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from recbole_promptmm.model.graph import Propagation, lightgcn_adjacency, lightgcn_embeddings, prune_edges
from recbole_promptmm.model.item_graph import KNN_METHODS, knn_graph
from recbole_promptmm.model.losses import batch_bpr
from recbole_promptmm.model.multimodal import MultimodalRecommender, TeacherOutput
from recbole_promptmm.registry import register
from recbole_promptmm.schema import Key, declare, layers, positive_int, ratio, switch, weight


def modality_weights(weights, modalities: list[str]) -> list[float]:
    """``mm_weights`` checked against the modalities (dataset order); ``None`` gives equal weights."""
    if weights is None:
        return [1.0 / len(modalities)] * len(modalities)
    if isinstance(weights, (int, float)):
        weights = [weights]
    weights = list(weights)
    if len(weights) != len(modalities):
        raise ValueError(
            f"mm_weights has {len(weights)} value(s) {weights}, but the dataset has {len(modalities)} modalities "
            f"{modalities}: give one weight per modality, in that order (or mm_weights: ~ for equal weights)")
    if not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(f"mm_weights must be non-negative numbers, got {weights}")
    return [float(w) for w in weights]


@register(multimodal=True)
class FREEDOM(MultimodalRecommender):
    r"""FREEDOM on a LightGCN backbone.

    Frozen item-item graph: per modality, :math:`S^m = D^{-1/2} B^m D^{-1/2}` with :math:`B^m` the binary
    top-``knn_k`` cosine kNN graph of the raw features, fused once before training:
    :math:`S = \sum_m w_m S^m` (``mm_weights``); neighbours found as ``knn_search`` says (exact, faiss HNSW, or
    auto by catalogue size; :func:`~recbole_promptmm.model.item_graph.knn_neighbours`). Item-graph embedding over
    the layer-0 item IDs (``mm_layers`` = L): :math:`h = S^L E_I`.

    User-item graph: at every training epoch, :math:`\mathrm{round}((1 - p)|R|)` edges (``edge_dropout`` = p) are
    drawn without replacement with probability :math:`\propto 1/\sqrt{d_u d_i}` and LightGCN (``n_layers``)
    runs on the symmetric normalised adjacency of the kept edges; evaluation (and anything before the first
    epoch) uses the full graph. With :math:`\bar E_U, \bar E_I` the LightGCN output:

    .. math:: e_u = \bar e_u, \qquad e_i = \bar e_i + h_i, \qquad f_i^m = \mathrm{Linear}_m(\tilde x_i^m).

    Loss: :math:`\mathrm{BPR}(e_u, e_i) + \lambda \sum_m \mathrm{BPR}(e_u, f^m_i)
    + \text{reg\_weight}\cdot L_2` (``modality_bpr_weight`` = :math:`\lambda`; :math:`L_2` on the batch's layer-0
    embeddings). Per-modality item embedding (embedding KD): :math:`f^m`.
    """

    model_forward_keys = ("n_layers", "knn_k", "knn_search", "mm_layers", "mm_weights")
    config_keys = declare(  # defaults: properties/model/FREEDOM.yaml
        n_layers=layers("LightGCN layers on the (pruned) user-item graph"),
        mm_layers=layers("convolution layers over the frozen item-item graph S"),
        knn_k=positive_int("neighbours kept per item in each modality's kNN graph, the item itself included"),
        knn_search=switch(*KNN_METHODS, help="how the kNN neighbours are found (docs/SCALING.md)"),
        mm_weights=Key("list", optional=True, help="fixed weight of each modality's graph, dataset order; ~ = equal"),
        edge_dropout=ratio("fraction of training edges pruned each epoch", high_open=True),
        modality_bpr_weight=weight("lambda: weight of the per-modality BPR terms"),
        reg_weight=weight("L2 on the batch's layer-0 ID embeddings"),
    )

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.config_attributes(config, "n_layers", "knn_k", "knn_search", "mm_layers", "edge_dropout",
                               "modality_bpr_weight", "reg_weight")
        self.mm_weights = modality_weights(config["mm_weights"], self.modalities)
        if not 0.0 <= self.edge_dropout < 1.0:
            raise ValueError(f"edge_dropout must be in [0, 1), got {self.edge_dropout}")
        if self.mm_layers < 1:
            raise ValueError(f"mm_layers must be at least 1, got {self.mm_layers}")

        self.inter = dataset.inter_matrix(form="coo").astype(np.float32)
        self.full_adjacency = lightgcn_adjacency(self.inter)
        # this epoch's pruned graph, held in a tuple so that it is no submodule: serving never needs it
        self._epoch_graph: tuple[Propagation, ...] = ()
        fused = None
        for w, m in zip(self.mm_weights, self.modalities):
            s = knn_graph(self.raw_features(m), self.knn_k, weighted=False, method=self.knn_search) * w
            fused = s if fused is None else fused + s
        self.item_graph = Propagation(fused.tocsr())
        self.projection = nn.ModuleDict({m: nn.Linear(d, self.embedding_size) for m, d in self.feature_dims.items()})
        for module in self.projection.values():
            nn.init.xavier_uniform_(module.weight)

    def new_epoch(self) -> None:
        """Draw this epoch's pruned user-item graph."""
        pruned = prune_edges(self.inter, 1.0 - self.edge_dropout)
        self._epoch_graph = (lightgcn_adjacency(pruned).to(self.item_embedding.weight.device),)

    def adjacency(self) -> Propagation:
        """The graph LightGCN runs on: this epoch's pruned one in training, the full one otherwise (evaluation,
        and training before the first epoch)."""
        if not (self.training and self._epoch_graph):
            return self.full_adjacency
        graph = self._epoch_graph[0]
        if graph.matrix.device != self.item_embedding.weight.device:  # the model moved since the epoch began
            graph = graph.to(self.item_embedding.weight.device)
            self._epoch_graph = (graph,)
        return graph

    def encode(self, features, user, item) -> TeacherOutput:
        h = item
        for _ in range(self.mm_layers):
            h = self.item_graph(h)
        e_u, e_i = lightgcn_embeddings(self.adjacency(), user, item, self.n_layers)
        projected = {m: self.projection[m](features[m]) for m in self.modalities}
        return TeacherOutput(e_u, e_i + h, projected)

    def loss(self, interaction, out: TeacherOutput) -> torch.Tensor:
        loss = self.bpr_reg_loss(interaction, out.user, out.item, self.reg_weight)
        u, pos, neg = self.triples(interaction)
        modality = sum(batch_bpr(out.user, out.modality_item[m], u, pos, neg) for m in self.modalities)
        return loss + self.modality_bpr_weight * modality
