r"""LATTICE: latent item-item structure mining for multimedia recommendation (Zhang et al., ACM MM 2021,
arXiv 2104.09036).

Implemented from the paper and ../shared/design/MM_MODELS.md; hyper-parameter defaults from the paper and the
authors' released argument defaults (properties/model/LATTICE.yaml). Departures, all for cost: the kNN graphs
are kept sparse (top-k per item, computed in blocks) instead of dense I x I matrices, and the learned graph's
neighbour sets are recomputed once per epoch (and on every switch to evaluation) rather than every batch; the
edge weights on those neighbours are recomputed, with gradient, at every forward pass. Any number of modalities.

Speed: the learned graph has a fixed sparsity pattern within an epoch but values that change every batch. Its two
per-batch products (the cosine similarities on the kept edges, and :math:`\hat A^m E`) are computed by
:func:`pair_dots` and :func:`pattern_matmul`, which give what the gather form
(:math:`(A e)_i = \sum_j A_{ij} e_j` by gathering neighbour rows) gives, values and gradients to rounding (tested), but do their
backward passes as sparse CSR products (and sampled dense products, ``torch.sparse.sampled_addmm``) over a per-epoch
:class:`KnnPattern`, never materialising [I, k, d] gathers: several times cheaper per batch on TikTok.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbole_promptmm.model.graph import Propagation, lightgcn_adjacency, lightgcn_embeddings
from recbole_promptmm.model.item_graph import KNN_METHODS, knn_graph, knn_neighbours, knn_values
from recbole_promptmm.model.multimodal import MultimodalRecommender, TeacherOutput
from recbole_promptmm.registry import register
from recbole_promptmm.schema import declare, layers, positive_int, ratio, switch, weight


class KnnPattern:
    """The edges ``(i, indices[i, j])`` of a kNN graph as CSR structure, both directions (built once per epoch).

    ``indices`` [I, k] (each row sorted); a value tensor [I, k] in the same layout gives the matrix
    :meth:`matrix`, and ``values.reshape(-1)[perm]`` the values of its transpose.
    """

    def __init__(self, indices: torch.Tensor) -> None:
        n, k = indices.shape
        self.indices = indices.sort(dim=1).values
        self.shape = (n, n)
        cols = self.indices.reshape(-1)
        rows = torch.arange(n, device=indices.device).repeat_interleave(k)
        self.crow = torch.arange(0, n * k + 1, k, device=indices.device)
        self.cols = cols
        self.perm = torch.argsort(cols, stable=True)
        self.crow_t = torch.zeros(n + 1, dtype=torch.long, device=indices.device)
        self.crow_t[1:] = torch.bincount(cols, minlength=n).cumsum(0)
        self.cols_t = rows[self.perm]

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow, self.cols, values.reshape(-1), self.shape, check_invariants=False)

    def matrix_t(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow_t, self.cols_t, values.reshape(-1)[self.perm], self.shape,
                                       check_invariants=False)

    def sampled_dots(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        r""":math:`a_i^\top b_{\mathrm{indices}[i, j]}` [I, k], i.e. :math:`a b^\top` on the pattern only (SDDMM)."""
        template = self.matrix(a.new_zeros(self.indices.numel()))
        return torch.sparse.sampled_addmm(template, a, b.T, beta=0.0).values().reshape(self.indices.shape)


class _PairDots(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: torch.Tensor, pattern: KnnPattern) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.pattern = pattern
        return pattern.sampled_dots(u, u)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (u,) = ctx.saved_tensors
        pattern = ctx.pattern
        grad = grad.contiguous()
        return pattern.matrix(grad) @ u + pattern.matrix_t(grad) @ u, None


class _PatternMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: torch.Tensor, e: torch.Tensor, pattern: KnnPattern) -> torch.Tensor:
        ctx.save_for_backward(values, e)
        ctx.pattern = pattern
        return pattern.matrix(values.contiguous()) @ e

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        values, e = ctx.saved_tensors
        pattern = ctx.pattern
        grad_values = grad_e = None
        if ctx.needs_input_grad[0]:
            grad_values = pattern.sampled_dots(grad, e)
        if ctx.needs_input_grad[1]:
            grad_e = pattern.matrix_t(values.contiguous()) @ grad
        return grad_values, grad_e, None


def pair_dots(u: torch.Tensor, pattern: KnnPattern) -> torch.Tensor:
    r""":math:`s_{ij} = u_i^\top u_{\mathrm{indices}[i, j]}` [I, k]; backward :math:`G u + G^\top u` (G: the
    gradient on the pattern)."""
    return _PairDots.apply(u, pattern)


def pattern_matmul(values: torch.Tensor, e: torch.Tensor, pattern: KnnPattern) -> torch.Tensor:
    r""":math:`A e` for :math:`A_{i, \mathrm{indices}[i, j]} = \mathrm{values}[i, j]`, as
    gathering ``e[pattern.indices]``; backward :math:`A^\top g` and the sampled products
    :math:`g_i^\top e_{\mathrm{indices}[i, j]}`."""
    return _PatternMatmul.apply(values, e, pattern)


@register(multimodal=True)
class LATTICE(MultimodalRecommender):
    r"""LATTICE on a LightGCN backbone.

    Fixed graph per modality m: :math:`\tilde A^m = D^{-1/2} S^m D^{-1/2}` with :math:`S^m` the top-``knn_k``
    cosine similarities of the raw features :math:`X^m` (clamped at 0), built once. Neighbours, here and in the
    learned graph, are found as ``knn_search`` says (exact, faiss HNSW, or auto by catalogue size; see
    :func:`~recbole_promptmm.model.item_graph.knn_neighbours`).
    Learned graph: :math:`\hat A^m`, the same construction on :math:`P^m = \mathrm{Linear}_m(\tilde X^m)` (the
    possibly prompted features): neighbour sets from :math:`P^m` without gradient, cached per epoch; edge values
    :math:`\cos(p_i, p_j)` on them with gradient, normalised the same way. Mixed:

    .. math:: A^m = (1 - \lambda)\,\hat A^m + \lambda\,\tilde A^m, \qquad
              A = \sum_m \alpha_m A^m, \quad \alpha = \mathrm{softmax}(w)\ (w = 0 \text{ at start}).

    Item-graph embedding over the layer-0 item IDs, ``item_graph_layers`` = L layers:
    :math:`h = A^L E_I`. LightGCN (``n_layers``) on the user-item graph gives :math:`\bar E_U, \bar E_I`; then

    .. math:: e_u = \bar e_u, \qquad e_i = \bar e_i + h_i / \lVert h_i \rVert .

    Loss: :math:`\mathrm{BPR}(e) + \text{reg\_weight}\cdot L_2` (layer-0 embeddings of the batch).
    Per-modality item embedding (embedding KD): :math:`A^m E_I`.
    """

    model_forward_keys = ("n_layers", "knn_k", "knn_search", "lambda_coeff", "item_graph_layers")
    config_keys = declare(  # defaults: properties/model/LATTICE.yaml
        n_layers=layers("LightGCN layers on the user-item graph"),
        item_graph_layers=layers("L: convolution layers over the item-item graph A"),
        knn_k=positive_int("neighbours kept per item, the item itself included"),
        knn_search=switch(*KNN_METHODS, help="how the kNN neighbours are found (docs/SCALING.md)"),
        lambda_coeff=ratio("lambda: weight of the fixed raw-feature graph, 1 - lambda of the learned one"),
        reg_weight=weight("L2 on the batch's layer-0 ID embeddings"),
    )

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.config_attributes(config, "n_layers", "knn_k", "knn_search", "lambda_coeff", "item_graph_layers",
                               "reg_weight")
        if not 0.0 <= self.lambda_coeff <= 1.0:
            raise ValueError(f"lambda_coeff must be in [0, 1], got {self.lambda_coeff}")
        if self.item_graph_layers < 1:
            raise ValueError(f"item_graph_layers must be at least 1, got {self.item_graph_layers}")
        self.adjacency = lightgcn_adjacency(dataset.inter_matrix(form="coo"))
        self.fixed_graph = nn.ModuleDict(
            {m: Propagation(knn_graph(self.raw_features(m), self.knn_k, weighted=True, method=self.knn_search))
             for m in self.modalities})
        self.projection = nn.ModuleDict({m: nn.Linear(d, self.embedding_size) for m, d in self.feature_dims.items()})
        for module in self.projection.values():
            nn.init.xavier_uniform_(module.weight)
        # the softmax weights are only a parameter where there is something to weigh
        self.modality_logits = nn.Parameter(torch.zeros(len(self.modalities))) if len(self.modalities) > 1 else None
        self._learned_knn: dict[str, KnnPattern] | None = None

    # ------------------------------------------------------- learned-graph cache
    def train(self, mode: bool = True):
        """Drop the learned neighbours on every switch: each training epoch (RecBole calls ``train()`` once per
        epoch) and each evaluation rebuild them from the current projections."""
        self._learned_knn = None
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self._learned_knn = None
        return super().load_state_dict(*args, **kwargs)

    def learned_neighbours(self, projected: dict[str, torch.Tensor]) -> dict[str, KnnPattern]:
        """Top-``knn_k`` neighbours of each modality's projected features (cached, rebuilt lazily)."""
        first = next(iter(projected.values()))
        if self._learned_knn is None or next(iter(self._learned_knn.values())).indices.device != first.device:
            self._learned_knn = {m: KnnPattern(knn_neighbours(p.detach(), self.knn_k, self.knn_search)[0])
                                 for m, p in projected.items()}
        return self._learned_knn

    # ------------------------------------------------------------------ model
    def modality_weights(self, like: torch.Tensor) -> torch.Tensor:
        if self.modality_logits is None:
            return like.new_ones(1)
        return torch.softmax(self.modality_logits, dim=0)

    def encode(self, features, user, item) -> TeacherOutput:
        projected = {m: self.projection[m](features[m]) for m in self.modalities}
        neighbours = self.learned_neighbours(projected)
        graphs = {}
        for m in self.modalities:
            pattern = neighbours[m]
            sims = pair_dots(F.normalize(projected[m], dim=-1), pattern)
            graphs[m] = (pattern, knn_values(pattern.indices, sims, weighted=True))

        def propagate(m: str, e: torch.Tensor) -> torch.Tensor:
            pattern, values = graphs[m]
            learned = pattern_matmul(values, e, pattern)
            return (1 - self.lambda_coeff) * learned + self.lambda_coeff * self.fixed_graph[m](e)

        alpha = self.modality_weights(item)
        per_modality = {m: propagate(m, item) for m in self.modalities}
        h = sum(alpha[k] * per_modality[m] for k, m in enumerate(self.modalities))
        for _ in range(self.item_graph_layers - 1):
            h = sum(alpha[k] * propagate(m, h) for k, m in enumerate(self.modalities))
        e_u, e_i = lightgcn_embeddings(self.adjacency, user, item, self.n_layers)
        return TeacherOutput(e_u, e_i + F.normalize(h, dim=-1), per_modality)

    def loss(self, interaction, out: TeacherOutput) -> torch.Tensor:
        return self.bpr_reg_loss(interaction, out.user, out.item, self.reg_weight)
