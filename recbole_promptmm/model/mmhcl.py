r"""MMHCL: Multi-Modal Hypergraph Contrastive Learning for Recommendation (Guo et al., ACM TOMM 2025,
arXiv 2504.16576).

Written from the paper's description and the authors' released code (github.com/Xu107/MMHCL, read, not copied).
Only the paper's abstract and a summary of its method (the two hypergraphs, binary top-K kNN per modality, InfoNCE
between first- and second-order embeddings) could be read here, so the exact formulas (the hypergraphs'
normalisation, the layer counts, which embeddings the contrastive terms compare) follow the released code.
Hyper-parameter defaults: the released argument defaults (properties/model/MMHCL.yaml). Any number of modalities.

Sparse throughout: the item-item hypergraph :math:`\hat A_I = P P^\top` is applied through its sparse factor
:math:`P` ([I, M I], M I k entries) and the user-user one through the training matrix R (two products with R and
a diagonal), so neither :math:`I \times I` nor :math:`U \times U` is ever formed. Departures from the released
code, both for cost: the contrastive terms contrast the batch's distinct users and positive items
(``cl_scope: batch``) rather than every user and item at every batch (``cl_scope: all``, also available, is
quadratic in U and I per batch); and a zero contrastive weight only drops its term (the released code then also
drops the hypergraph branch).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recbole_promptmm.model.graph import Propagation, lightgcn_adjacency, lightgcn_embeddings
from recbole_promptmm.model.item_graph import KNN_METHODS, knn_neighbours
from recbole_promptmm.model.losses import l2_loss, triple_bpr
from recbole_promptmm.model.multimodal import MultimodalRecommender, TeacherOutput
from recbole_promptmm.registry import register
from recbole_promptmm.schema import declare, layers, positive, positive_int, switch, weight

CL_SCOPES = ("batch", "all")


# ------------------------------------------------------------------------------------------- hypergraphs
def knn_incidence(x: torch.Tensor, k: int, method: str = "auto") -> sp.csr_matrix:
    r"""One modality's binary kNN matrix :math:`B^m` [I, I]: :math:`B^m_{ij} = 1` when item j is among the top
    ``k`` cosine neighbours of item i (i itself included; found by ``method``, see :func:`knn_neighbours`). Row and
    column 0 (padding) stay empty.

    Column j of :math:`B^m` is a hyperedge: the items that count j among their k nearest in modality m.
    """
    indices = knn_neighbours(x, k, method)[0][1:].cpu().numpy()
    n, kept = x.shape[0], indices.shape[1]
    rows = np.repeat(np.arange(1, n), kept)
    data = np.ones(rows.shape[0], dtype=np.float32)
    return sp.csr_matrix((data, (rows, indices.ravel())), shape=(n, n))


def item_hypergraph(incidences: Sequence[sp.spmatrix]) -> list[sp.csr_matrix]:
    r"""Factors :math:`P^m = D^{-1/2} B^m` of the normalised item-item hypergraph, one per modality.

    Incidence :math:`H = [B^1 \,|\, \dots \,|\, B^M]` ([I, M I]); adjacency
    :math:`H H^\top = \sum_m B^m B^{m\top}` (entry (i, i'): the hyperedges the two items share, i.e. their common
    kNN neighbours summed over modalities; the diagonal is M k); degrees
    :math:`D = \mathrm{diag}(H H^\top 1) = \mathrm{diag}(\sum_m B^m (B^{m\top} 1))`, so that

    .. math:: \hat A_I = D^{-1/2} H H^\top D^{-1/2} = \sum_m P^m P^{m\top}

    without forming :math:`H H^\top`. Items of degree 0 (padding) get zero rows.
    """
    incidences = [sp.csr_matrix(b, dtype=np.float32) for b in incidences]
    deg = sum(b @ np.asarray(b.sum(axis=0)).ravel() for b in incidences)
    inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0).astype(np.float32)
    return [sp.csr_matrix(sp.diags(inv_sqrt) @ b) for b in incidences]


def user_hypergraph(inter: sp.spmatrix) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    r"""The row-normalised user-user hypergraph :math:`\hat A_U` as ``(left, right, self_weight)`` with
    :math:`\hat A_U x = \mathrm{left}\,(\mathrm{right}\; x) - \mathrm{self\_weight} \odot x`.

    Users are nodes, items the hyperedges: incidence R (binary [U, I]). Adjacency without self-loops
    :math:`A_U = R R^\top - \mathrm{diag}(R R^\top)` (entry (u, v): the items u and v share; the diagonal of
    :math:`R R^\top` is the user degree :math:`d_u`), row-normalised: :math:`\hat A_U = D^{-1} A_U` with
    :math:`D = \mathrm{diag}(A_U 1) = \mathrm{diag}(R d_I - d_U)`. Hence ``left`` :math:`= D^{-1} R`,
    ``right`` :math:`= R^\top`, ``self_weight`` :math:`= D^{-1} d_U`; users of degree 0 get zero rows.
    """
    r = sp.csr_matrix(inter, dtype=np.float32)
    r.sum_duplicates()
    r.data[:] = 1.0
    r.eliminate_zeros()
    deg_u = np.asarray(r.sum(axis=1)).ravel()
    deg_i = np.asarray(r.sum(axis=0)).ravel()
    d = r @ deg_i - deg_u
    inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0).astype(np.float32)
    return sp.csr_matrix(sp.diags(inv) @ r), sp.csr_matrix(r.T), (inv * deg_u).astype(np.float32)


class ItemHypergraph(nn.Module):
    r""":math:`x \mapsto \hat A_I x = \sum_m P^m (P^{m\top} x)`; :meth:`shares` gives the M terms apart."""

    def __init__(self, factors: Sequence[sp.spmatrix]) -> None:
        super().__init__()
        self.gather = nn.ModuleList(Propagation(p.T) for p in factors)  # items -> hyperedges
        self.scatter = nn.ModuleList(Propagation(p) for p in factors)  # hyperedges -> items

    def shares(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [up(down(x)) for down, up in zip(self.gather, self.scatter)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(self.shares(x))


class UserHypergraph(nn.Module):
    r""":math:`x \mapsto \hat A_U x = D^{-1} R (R^\top x) - (D^{-1} d_U) \odot x` (:func:`user_hypergraph`)."""

    def __init__(self, inter: sp.spmatrix) -> None:
        super().__init__()
        left, right, self_weight = user_hypergraph(inter)
        self.gather = Propagation(right)  # users -> items (hyperedges)
        self.scatter = Propagation(left)  # items -> users
        self.register_buffer("self_weight", torch.from_numpy(self_weight).unsqueeze(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scatter(self.gather(x)) - self.self_weight * x


# ------------------------------------------------------------------------------------------------- losses
class _InfoNCE(torch.autograd.Function):
    """:func:`hypergraph_infonce` on unit rows, with a hand-written backward: the [N, 2N] softmax is kept for it,
    instead of the several [N, 2N] temporaries of autograd's logsumexp (tested against autograd)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, p: torch.Tensor, tau: float) -> torch.Tensor:
        n = a.shape[0]
        keys = torch.cat([p, a])
        logits = (a / tau) @ keys.T  # [N, 2N]: against the positive view | against the anchor view
        rows = torch.arange(n, device=a.device)
        logits[rows, rows + n] = float("-inf")  # a node is not its own negative
        top = logits.amax(dim=1, keepdim=True)
        probs = logits.sub_(top).exp_()
        total = probs.sum(dim=1, keepdim=True)
        probs.div_(total)
        ctx.save_for_backward(a, keys, probs)
        ctx.tau = tau
        return (top.squeeze(1) + total.log().squeeze(1) - (a * p).sum(-1) / tau).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, keys, probs = ctx.saved_tensors
        n = a.shape[0]
        scale = grad / (n * ctx.tau)
        weights = probs * scale  # d loss / d (a_n . key_j): the softmax part (not in place: backward may rerun)
        grad_keys = weights.T @ a
        grad_a = weights @ keys + grad_keys[n:] - scale * keys[:n]
        grad_p = grad_keys[:n] - scale * a
        return grad_a, grad_p, None


def hypergraph_infonce(anchor: torch.Tensor, positive: torch.Tensor, tau: float) -> torch.Tensor:
    r"""InfoNCE between two views of the same N nodes (row n of each is node n), anchored on ``anchor``.

    With :math:`\theta` the cosine similarity, :math:`a` the anchor view and :math:`p` the positive view:

    .. math:: \ell_n = -\log \frac{e^{\theta(a_n, p_n)/\tau}}
              {\sum_{j} e^{\theta(a_n, p_j)/\tau} + \sum_{j \ne n} e^{\theta(a_n, a_j)/\tau}},
              \qquad \mathcal{L} = \frac{1}{N}\sum_n \ell_n

    (the other nodes of both views are the negatives, as in the released code).
    """
    return _InfoNCE.apply(F.normalize(anchor, dim=-1), F.normalize(positive, dim=-1), tau)


def mmhcl_loss(user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
               user_views: tuple[torch.Tensor, torch.Tensor], item_views: tuple[torch.Tensor, torch.Tensor],
               tau: float, user_cl_weight: float, item_cl_weight: float, reg_weight: float) -> torch.Tensor:
    r"""MMHCL's loss on one batch: fused embeddings ``user``, ``pos``, ``neg`` [B, d] of its (u, i+, i-) triples;
    ``user_views`` = (fused :math:`e_u`, second-order :math:`h_u`) of the users to contrast, likewise
    ``item_views``.

    .. math:: \mathcal{L} = \mathrm{BPR}(e_u, e_{i^+}, e_{i^-})
              + \lambda_U\,\mathrm{InfoNCE}_\tau(e_U, h_U) + \lambda_I\,\mathrm{InfoNCE}_\tau(e_I, h_I)
              + \lambda\,\frac{1}{2B}\big(\lVert e_u\rVert^2 + \lVert e_{i^+}\rVert^2 + \lVert e_{i^-}\rVert^2\big)

    (:func:`hypergraph_infonce`; :math:`\lambda_U, \lambda_I, \lambda` = ``user_cl_weight``, ``item_cl_weight``,
    ``reg_weight``; a zero weight skips its term).
    """
    loss = triple_bpr(user, pos, neg)
    if user_cl_weight:
        loss = loss + user_cl_weight * hypergraph_infonce(*user_views, tau)
    if item_cl_weight:
        loss = loss + item_cl_weight * hypergraph_infonce(*item_views, tau)
    if reg_weight:
        loss = loss + reg_weight * l2_loss(user, pos, neg)
    return loss


# -------------------------------------------------------------------------------------------------- model
@register(multimodal=True)
class MMHCL(MultimodalRecommender):
    r"""First-order LightGCN fused with second-order user-user and item-item hypergraph embeddings.

    **Hypergraphs** (built once, fixed): u2u, users joined by the items they share (:func:`user_hypergraph`,
    row-normalised, no self-loops: :math:`\hat A_U = D^{-1}(RR^\top - \mathrm{diag}(RR^\top))`); i2i, items joined
    by their per-modality top-``knn_k`` cosine neighbourhoods of the raw features, found as ``knn_search`` says
    (:func:`knn_incidence`,
    :func:`item_hypergraph`, symmetric normalisation: :math:`\hat A_I = D^{-1/2} H H^\top D^{-1/2}`,
    :math:`H = [B^1|\dots|B^M]`).

    **Second order**, over their own ID tables :math:`E^{uu}, E^{ii}` (``user_layers`` = :math:`L_U`,
    ``item_layers`` = :math:`L_I`, last layer kept):

    .. math:: h_U = \hat A_U^{L_U} E^{uu}, \qquad h_I = \hat A_I^{L_I} E^{ii}.

    **First order**: LightGCN (``n_layers``, mean over layers) on the symmetric normalised user-item graph over
    the (prompted) layer-0 tables gives :math:`\bar e_u, \bar e_i`. **Fusion** (scores by dot product):

    .. math:: e_u = \bar e_u + \frac{h_u}{\lVert h_u\rVert}, \qquad e_i = \bar e_i + \frac{h_i}{\lVert h_i\rVert}.

    **Loss**: :func:`mmhcl_loss` with the released code's views: each user's (item's) fused embedding :math:`e`
    is the anchor and its second-order embedding :math:`h` the positive (``temperature`` :math:`\tau`), over the
    batch's distinct users and positive items (``cl_scope: batch``) or over all users and items (``all``); L2 on
    the batch's fused embeddings.

    **Per-modality item embedding** (embedding KD): modality m's share of the last i2i layer,
    :math:`h^m_I = P^m P^{m\top} \hat A_I^{L_I - 1} E^{ii}` (:math:`\sum_m h^m_I = h_I`). The features shape only
    the fixed i2i hypergraph, so the prompt's feature-space injection has no effect on this model; its ID-space
    injection acts on the first-order tables.
    """

    model_forward_keys = ("n_layers", "user_layers", "item_layers", "knn_k", "knn_search")
    config_keys = declare(  # defaults: properties/model/MMHCL.yaml
        n_layers=layers("LightGCN layers on the user-item graph"),
        user_layers=layers("L_U: propagation steps over the u2u hypergraph (0 = the raw table)"),
        item_layers=layers("L_I: propagation steps over the i2i hypergraph", low=1),
        knn_k=positive_int("neighbours per item and modality in the i2i hypergraph, the item itself included"),
        knn_search=switch(*KNN_METHODS, help="how the kNN neighbours are found (docs/SCALING.md)"),
        temperature=positive("tau of the InfoNCE terms"),
        user_cl_weight=weight("lambda_U: weight of the user InfoNCE term"),
        item_cl_weight=weight("lambda_I: weight of the item InfoNCE term"),
        cl_scope=switch(*CL_SCOPES, help="batch: contrast the batch's users and positive items; all: every user "
                        "and item at every batch (quadratic cost)"),
        reg_weight=weight("L2 on the batch's fused embeddings, 1/(2B) sum of squares"),
    )

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        self.config_attributes(config, "n_layers", "user_layers", "item_layers", "knn_k", "knn_search",
                               "temperature", "user_cl_weight", "item_cl_weight", "cl_scope", "reg_weight")
        if self.cl_scope not in CL_SCOPES:
            raise ValueError(f"cl_scope must be one of {CL_SCOPES}, got {self.cl_scope!r}")
        if self.item_layers < 1:
            raise ValueError(f"item_layers must be at least 1, got {self.item_layers}")
        if self.user_layers < 0:
            raise ValueError(f"user_layers must be at least 0, got {self.user_layers}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

        inter = dataset.inter_matrix(form="coo")
        self.adjacency = lightgcn_adjacency(inter)
        self.user_hypergraph = UserHypergraph(inter)
        self.item_hypergraph = ItemHypergraph(
            item_hypergraph([knn_incidence(self.raw_features(m), self.knn_k, self.knn_search)
                             for m in self.modalities]))
        self.user_hyper_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_hyper_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_hyper_embedding.weight)
        nn.init.xavier_uniform_(self.item_hyper_embedding.weight)

    def second_order(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(:math:`h_U`, :math:`h_I`, the modality shares of :math:`h_I`)."""
        h_u = self.user_hyper_embedding.weight
        for _ in range(self.user_layers):
            h_u = self.user_hypergraph(h_u)
        h_i = self.item_hyper_embedding.weight
        for _ in range(self.item_layers - 1):
            h_i = self.item_hypergraph(h_i)
        shares = dict(zip(self.modalities, self.item_hypergraph.shares(h_i)))
        return h_u, sum(shares.values()), shares

    def encode(self, features, user, item) -> TeacherOutput:
        h_u, h_i, shares = self.second_order()
        e_u, e_i = lightgcn_embeddings(self.adjacency, user, item, self.n_layers)
        fused_u = e_u + F.normalize(h_u, dim=-1)
        fused_i = e_i + F.normalize(h_i, dim=-1)
        return TeacherOutput(fused_u, fused_i, shares, extra={"second_user": h_u, "second_item": h_i})

    def contrast_nodes(self, u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
        """Rows the contrastive terms run over: the batch's users and positive items, or all users and items
        (padding excluded)."""
        if self.cl_scope == "all":
            return (torch.arange(1, self.n_users, device=u.device), torch.arange(1, self.n_items, device=u.device))
        return torch.unique(u), torch.unique(pos)

    def loss(self, interaction, out: TeacherOutput) -> torch.Tensor:
        u, pos, neg = self.triples(interaction)
        users, items = self.contrast_nodes(u, pos, neg)
        return mmhcl_loss(out.user[u], out.item[pos], out.item[neg],
                          (out.user[users], out.extra["second_user"][users]),
                          (out.item[items], out.extra["second_item"][items]),
                          self.temperature, self.user_cl_weight, self.item_cl_weight, self.reg_weight)
