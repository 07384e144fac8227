"""Normalised user-item propagation matrices as ``torch.sparse`` tensors, built once from RecBole's coo graph."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

GRAPH_NORMS = ("symmetric", "one_sided")


def _to_torch(m: sp.spmatrix) -> torch.Tensor:
    m = m.tocoo()
    indices = torch.from_numpy(np.vstack([m.row, m.col]).astype(np.int64))
    values = torch.from_numpy(m.data.astype(np.float32))
    # scipy's coo is valid by construction: no invariant checks (saying so silences torch's warning about them)
    return torch.sparse_coo_tensor(indices, values, m.shape, check_invariants=False).coalesce().to_sparse_csr()


class _SparseMatmul(torch.autograd.Function):
    """``a @ x`` whose backward uses a precomputed ``a^T`` (torch's CSR backward transposes on every call)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.a_t = a_t
        return a @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, ctx.a_t @ grad


class Propagation(nn.Module):
    """A fixed sparse matrix (CSR, with its transpose for the backward pass) applied to dense embeddings."""

    def __init__(self, matrix: sp.spmatrix) -> None:
        super().__init__()
        self.register_buffer("matrix", _to_torch(matrix), persistent=False)
        self.register_buffer("matrix_t", _to_torch(matrix.T), persistent=False)

    @property
    def shape(self) -> torch.Size:
        return self.matrix.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad:
            return self.matrix @ x
        return _SparseMatmul.apply(self.matrix, self.matrix_t, x)

    def nbytes(self) -> int:
        """Bytes of the stored matrix (one direction, as serving needs)."""
        m = self.matrix
        return sum(t.numel() * t.element_size() for t in (m.crow_indices(), m.col_indices(), m.values()))


def bipartite_propagation(inter: sp.spmatrix, norm: str = "symmetric") -> tuple[Propagation, Propagation]:
    r"""(:math:`\hat A_{ui}` [U, I], :math:`\hat A_{iu}` [I, U]) from the binary training matrix R.

    ``symmetric``: :math:`D_u^{-1/2} R D_i^{-1/2}` and its transpose (LightGCN). ``one_sided`` (the released
    PromptMM code): each row of R scaled by :math:`(\deg+10^{-8})^{-1/2}` of its own side, for each direction.
    """
    if norm not in GRAPH_NORMS:
        raise ValueError(f"graph_norm must be one of {GRAPH_NORMS}, got {norm!r}")
    r = sp.csr_matrix(inter, dtype=np.float32)
    r.data[:] = 1.0
    du = np.asarray(r.sum(axis=1)).ravel() + 1e-8
    di = np.asarray(r.sum(axis=0)).ravel() + 1e-8
    if norm == "symmetric":
        a_ui = sp.diags(du ** -0.5) @ r @ sp.diags(di ** -0.5)
        a_iu = a_ui.T
    else:
        a_ui = sp.diags(du ** -0.5) @ r
        a_iu = sp.diags(di ** -0.5) @ r.T
    return Propagation(a_ui), Propagation(a_iu)


def lightgcn_adjacency(inter: sp.spmatrix) -> Propagation:
    r"""The symmetric normalised bipartite adjacency :math:`D^{-1/2}\begin{bmatrix}0 & R\\ R^T & 0\end{bmatrix}D^{-1/2}`
    of size (U + I), users first."""
    r = sp.csr_matrix(inter, dtype=np.float32)
    r.data[:] = 1.0
    adj = sp.bmat([[None, r], [r.T, None]], format="csr")
    deg = np.asarray(adj.sum(axis=1)).ravel() + 1e-8
    d = sp.diags(deg ** -0.5)
    return Propagation(d @ adj @ d)


def lightgcn_embeddings(adjacency: Propagation, user: torch.Tensor, item: torch.Tensor,
                        n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""LightGCN: :math:`E^{(l+1)} = \hat A E^{(l)}` over :math:`E^{(0)} = [E_U; E_I]`, returns the layer mean
    :math:`\frac{1}{L+1}\sum_{l=0}^{L} E^{(l)}` split into (user [U, d], item [I, d])."""
    n_users = user.shape[0]
    layer = torch.cat([user, item])
    total = layer
    for _ in range(n_layers):
        layer = adjacency(layer)
        total = total + layer
    out = total / (n_layers + 1)
    return out[:n_users], out[n_users:]


class TrainingItems:
    """Membership test for (user, item) training pairs, vectorised with ``searchsorted``."""

    def __init__(self, inter: sp.spmatrix) -> None:
        coo = sp.coo_matrix(inter)
        self.n_items = coo.shape[1]
        keys = np.unique(coo.row.astype(np.int64) * self.n_items + coo.col.astype(np.int64))
        self.keys = torch.from_numpy(keys)

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users.cpu() * self.n_items + items.cpu()
        pos = torch.searchsorted(self.keys, keys).clamp_max(len(self.keys) - 1)
        return (self.keys[pos] == keys).to(users.device)

    def sample_negatives(self, users: torch.Tensor, k: int, generator: torch.Generator | None = None,
                         max_rounds: int = 20) -> torch.Tensor:
        """``k`` items per user drawn uniformly from 1..n_items-1 and not among the user's training items."""
        shape = (users.shape[0], k)
        u = users.view(-1, 1).expand(shape).cpu()
        items = torch.randint(1, self.n_items, shape, generator=generator)
        for _ in range(max_rounds):
            bad = self.contains(u, items)
            if not bad.any():
                break
            items[bad] = torch.randint(1, self.n_items, (int(bad.sum()),), generator=generator)
        return items.to(users.device)


def prune_edges(inter: sp.spmatrix, keep_fraction: float, generator: torch.Generator | None = None) -> sp.coo_matrix:
    r"""FREEDOM's degree-sensitive edge pruning: ``round(keep_fraction * n_edges)`` distinct training edges, drawn
    without replacement with probability :math:`p_{ui} \propto 1/\sqrt{d_u d_i}` (degrees of the full graph).

    Sampling without replacement by the Gumbel top-k trick: keys :math:`\log p_e + G_e` with
    :math:`G_e \sim \mathrm{Gumbel}(0, 1)` i.i.d. (from ``generator``, else torch's global RNG); the
    ``n_keep`` largest keys are the sample. :math:`O(E \log E)`, no Python loop, any graph size.

    Parameters
    ----------
    inter : scipy sparse [U, I]
        The training matrix R (duplicate entries count as one edge; values are ignored).
    keep_fraction : float
        Fraction of the edges to keep, in (0, 1] (FREEDOM: ``1 - edge_dropout``).

    Returns
    -------
    scipy.sparse.coo_matrix [U, I]
        The kept edges, value 1 each, no duplicates.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    r = sp.csr_matrix(inter, dtype=np.float32)
    r.sum_duplicates()
    r.eliminate_zeros()
    coo = r.tocoo()
    rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
    n_edges = rows.shape[0]
    n_keep = int(round(keep_fraction * n_edges))
    if n_keep >= n_edges:
        kept = np.arange(n_edges)
    else:
        deg_u = np.bincount(rows, minlength=r.shape[0]).astype(np.float64)
        deg_i = np.bincount(cols, minlength=r.shape[1]).astype(np.float64)
        log_p = torch.from_numpy(-0.5 * (np.log(deg_u[rows]) + np.log(deg_i[cols])))
        uniform = torch.rand(n_edges, generator=generator, dtype=torch.float64)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-300, 1.0 - 1e-16)))
        kept = torch.topk(log_p + gumbel, n_keep, sorted=False).indices.numpy()
        kept.sort()
    data = np.ones(kept.shape[0], dtype=np.float32)
    return sp.coo_matrix((data, (rows[kept], cols[kept])), shape=r.shape)
