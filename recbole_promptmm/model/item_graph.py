r"""Item-item kNN graphs from modality features (LATTICE, FREEDOM), built sparsely and in chunks.

For items :math:`1..I-1` (row 0 is RecBole's padding item and stays empty), the cosine similarity
:math:`s_{ij} = x_i^\top x_j / (\lVert x_i\rVert \lVert x_j\rVert)` is computed a block of rows at a time and only
each row's top ``k`` entries are kept (the item itself included, as in the papers), so memory is
:math:`O(I k)` plus one block, never :math:`I \times I`. The kept graph :math:`S` (``weighted``: the similarities,
clamped at 0; else 1 per kept edge) is normalised as :math:`D^{-1/2} S D^{-1/2}` with :math:`D` the row sums of
:math:`S` (the kNN graph is directed; both papers normalise with its row degrees on both sides).

Exact neighbours cost :math:`O(I^2 d)` time. From :data:`APPROX_MIN_ITEMS` items (``method="auto"``) they come
from a faiss HNSW index on the unit vectors instead (inner product = cosine): building and querying it costs about
:math:`O(I \log I)` distance evaluations (measured: :math:`I^{1.45}` CPU time from 5k to 160k items, cache
misses growing with the catalogue), and at :data:`HNSW_M` / :data:`HNSW_EF_SEARCH` it keeps at least 95% of the
exact graph's edges (measurements in docs/SCALING.md, "Item graphs").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

try:  # optional heavy import: only the approximate neighbours need it
    import faiss
except ImportError:  # pragma: no cover - faiss-cpu is in requirements.txt
    faiss = None

# Rows per block: about 2^24 similarity entries (64 MB in float32) at a time, whatever the catalogue size.
BLOCK_ENTRIES = 1 << 24


KNN_METHODS = ("auto", "exact", "approx")
# auto: exact neighbours below this many items, HNSW from it. Measured (docs/SCALING.md, "Item graphs"; one thread,
# k = 10, d = 128 clustered features, CPU seconds): exact 0.96 s vs HNSW 1.07 s at 10k items, 3.89 s vs 3.01 s at
# 20k (exact grows as I^2.0, HNSW as I^1.5 there); the costs cross near 12k, so exact, which is also free of
# approximation, is kept below that.
APPROX_MIN_ITEMS = 12_000
# HNSW graph degree and construction / search beam widths. Tried at 160k items (M 16, efConstruction 40): efSearch
# 32 kept 96.4% of the exact edges, 64 98.9%, 128 99.4% at twice the search time; 64 keeps >= 95% with a margin at
# every measured size (docs/SCALING.md). efSearch is raised to k when k is larger.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 64


@torch.no_grad()
def knn_neighbours(x: torch.Tensor, k: int, method: str = "auto",
                   block_entries: int = BLOCK_ENTRIES) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` cosine neighbours of every item but the padding row 0.

    Parameters
    ----------
    x : Tensor [I, d_m]
        Item features, row 0 the padding item.
    k : int
        Neighbours kept per item (at most ``I - 1``).
    method : str
        ``exact`` (all pairs, in blocks), ``approx`` (faiss HNSW, :func:`approx_rows`) or ``auto``
        (:func:`resolve_method`: exact below :data:`APPROX_MIN_ITEMS` items).

    Returns
    -------
    (indices, similarities) : (LongTensor [I, k], Tensor [I, k])
        Item ids (>= 1) and cosine similarities, best first; row 0 is all zeros and unused. Both on ``x.device``.
    """
    n = x.shape[0]
    if k < 1:
        raise ValueError(f"knn_k must be at least 1, got {k}")
    k = min(k, n - 1)
    unit = F.normalize(x[1:].float(), dim=-1)
    if resolve_method(method, n) == "approx":
        found = approx_rows(unit.cpu(), k).to(x.device)
        top, idx = rank_rows(unit, found)
    else:
        top, idx = exact_rows(unit, k, block_entries)
    indices = torch.cat([idx.new_zeros(1, k), idx + 1])
    sims = torch.cat([top.new_zeros(1, k), top])
    return indices, sims


def resolve_method(method: str, n_items: int) -> str:
    """``exact`` or ``approx`` for a catalogue of ``n_items`` rows (``auto``: approx from :data:`APPROX_MIN_ITEMS`)."""
    if method not in KNN_METHODS:
        raise ValueError(f"knn_search must be one of {', '.join(KNN_METHODS)}, got {method!r}")
    if method == "auto":
        return "approx" if n_items >= APPROX_MIN_ITEMS else "exact"
    return method


def exact_rows(unit: torch.Tensor, k: int, block_entries: int = BLOCK_ENTRIES,
               rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` (similarities, 0-based ids) of the unit vectors ``unit[rows]`` (all rows by default) among
    all of ``unit``, a block of rows at a time (about ``block_entries`` similarities per block)."""
    queries = unit if rows is None else unit[rows]
    per_block = max(1, block_entries // max(unit.shape[0], 1))
    parts = [(queries[start:start + per_block] @ unit.T).topk(k, dim=-1)
             for start in range(0, queries.shape[0], per_block)]
    if not parts:
        return unit.new_zeros(0, k), torch.zeros(0, k, dtype=torch.long, device=unit.device)
    return torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts])


def approx_rows(unit: torch.Tensor, k: int) -> torch.Tensor:
    """Approximate top-``k`` 0-based neighbour ids [I, k] of the unit vectors (CPU) by a faiss HNSW index.

    Inner product on unit vectors is the cosine. faiss runs with torch's thread count, so that a one-thread torch
    run stays on one core; with one thread the index (its levels drawn from faiss's fixed seed) and the result are
    the same on every run. Rows where faiss found fewer than ``k`` items (id -1) get exact neighbours
    (:func:`fill_missing`).
    """
    if faiss is None:
        raise ImportError("knn_search='approx' needs faiss (pip install faiss-cpu)")
    faiss.omp_set_num_threads(torch.get_num_threads())
    data = np.ascontiguousarray(unit.numpy(), dtype=np.float32)
    index = faiss.IndexHNSWFlat(data.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.hnsw.efSearch = max(HNSW_EF_SEARCH, k)
    index.add(data)
    _, found = index.search(data, k)
    return fill_missing(torch.from_numpy(found), unit)


def fill_missing(found: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """``found`` [I, k] (0-based ids, -1 where the index returned too few) with every row holding a -1 replaced by
    its exact neighbours (:func:`exact_rows`), so that no row carries a padding or repeated placeholder."""
    short = (found < 0).any(dim=1).nonzero().flatten()
    if short.numel():
        found = found.clone()
        found[short] = exact_rows(unit, found.shape[1], rows=short)[1].to(found.device)
    return found


def rank_rows(unit: torch.Tensor, found: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""(similarities, ids) of the neighbour ids ``found`` [I, k], recomputed as :math:`u_i^\top u_j` and sorted
    best first, as :func:`exact_rows` returns them."""
    sims = (unit.unsqueeze(1) * unit[found]).sum(dim=-1)
    top, order = sims.sort(dim=1, descending=True)
    return top, found.gather(1, order)


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


def knn_graph(x: torch.Tensor, k: int, weighted: bool, method: str = "auto") -> sp.csr_matrix:
    r"""The normalised kNN graph :math:`D^{-1/2} S D^{-1/2}` of the features ``x`` as a sparse [I, I] matrix
    (neighbours by ``method``, see :func:`knn_neighbours`)."""
    indices, sims = knn_neighbours(x, k, method)
    return knn_matrix(indices, knn_values(indices, sims, weighted))
