r"""Item-item kNN graphs from modality features (LATTICE, FREEDOM), built sparsely and in chunks.

For items :math:`1..I-1` (row 0 is RecBole's padding item and stays empty), the cosine similarity
:math:`s_{ij} = x_i^\top x_j / (\lVert x_i\rVert \lVert x_j\rVert)` is computed a block of rows at a time and only
each row's top ``k`` entries are kept (the item itself included, as in the papers), so memory is
:math:`O(I k)` plus one block, never :math:`I \times I`. The kept graph :math:`S` (``weighted``: the similarities,
clamped at 0; else 1 per kept edge) is normalised as :math:`D^{-1/2} S D^{-1/2}` with :math:`D` the row sums of
:math:`S` (the kNN graph is directed; both papers normalise with its row degrees on both sides).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

# Rows per block: about 2^24 similarity entries (64 MB in float32) at a time, whatever the catalogue size.
BLOCK_ENTRIES = 1 << 24


@torch.no_grad()
def knn_neighbours(x: torch.Tensor, k: int, block_entries: int = BLOCK_ENTRIES) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` cosine neighbours of every item but the padding row 0.

    Parameters
    ----------
    x : Tensor [I, d_m]
        Item features, row 0 the padding item.
    k : int
        Neighbours kept per item (at most ``I - 1``).

    Returns
    -------
    (indices, similarities) : (LongTensor [I, k], Tensor [I, k])
        Item ids (>= 1) and cosine similarities, best first; row 0 is all zeros and unused.
    """
    n = x.shape[0]
    if k < 1:
        raise ValueError(f"knn_k must be at least 1, got {k}")
    k = min(k, n - 1)
    unit = F.normalize(x[1:].float(), dim=-1)
    indices = torch.zeros(n, k, dtype=torch.long, device=x.device)
    sims = torch.zeros(n, k, dtype=unit.dtype, device=x.device)
    rows = max(1, block_entries // max(n - 1, 1))
    for start in range(0, n - 1, rows):
        block = unit[start:start + rows] @ unit.T
        top, idx = block.topk(k, dim=-1)
        indices[start + 1:start + 1 + block.shape[0]] = idx + 1
        sims[start + 1:start + 1 + block.shape[0]] = top
    return indices, sims


def knn_values(indices: torch.Tensor, sims: torch.Tensor, weighted: bool) -> torch.Tensor:
    r"""Entries of :math:`D^{-1/2} S D^{-1/2}` for the kept edges ([I, k], differentiable in ``sims``)."""
    s = sims.clamp_min(0) if weighted else torch.ones_like(sims)
    s = torch.cat([s.new_zeros(1, s.shape[1]), s[1:]])  # padding row stays empty
    deg = s.sum(dim=1)
    inv_sqrt = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))
    return inv_sqrt.unsqueeze(1) * s * inv_sqrt[indices]


def knn_matrix(indices: torch.Tensor, values: torch.Tensor) -> sp.csr_matrix:
    """The [I, I] scipy matrix with ``values[i, j]`` at ``(i, indices[i, j])`` (rows of the padding item empty)."""
    n, k = indices.shape
    rows = np.repeat(np.arange(n), k)
    m = sp.csr_matrix((values.detach().cpu().numpy().ravel(), (rows, indices.cpu().numpy().ravel())), shape=(n, n))
    m.eliminate_zeros()
    return m


def knn_graph(x: torch.Tensor, k: int, weighted: bool) -> sp.csr_matrix:
    r"""The normalised kNN graph :math:`D^{-1/2} S D^{-1/2}` of the features ``x`` as a sparse [I, I] matrix."""
    indices, sims = knn_neighbours(x, k)
    return knn_matrix(indices, knn_values(indices, sims, weighted))
