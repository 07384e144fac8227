"""Minimal fixes that let RecBole 1.2.1 run on numpy 2, scipy >= 1.13 and torch >= 2.6.

Applied once, when :mod:`recbole_promptmm` is imported (so also in every Ray worker). Each fix is the
smallest one that works; see ``../shared/design/RECBOLE.md`` for the breakages they answer.

* numpy 2 removed ``float_``, ``complex_`` and ``unicode_``; RecBole's ``Config`` reads them before it defines
  the other old aliases itself.
* scipy >= 1.13 removed ``dok_matrix._update``, which RecBole's LightGCN, NGCF, NCL, ... call to build their
  adjacency matrices.

Checkpoint loading (torch >= 2.6 defaults to ``weights_only=True``, RecBole pickles its Config) is *not*
patched globally: our trainers load their own checkpoints with :func:`load_checkpoint`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

_NUMPY_ALIASES = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}


def _dok_update(self, data) -> None:
    """Stand-in for the private ``dok_matrix._update`` removed in scipy 1.13 (bulk ``dict.update``)."""
    self._dict.update(data)


def apply() -> None:
    """Apply the fixes; idempotent."""
    for name, value in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)
    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = _dok_update


def load_checkpoint(path: str, device: torch.device | str = "cpu") -> dict:
    """Load a checkpoint written by our own trainers (it holds a pickled RecBole ``Config``)."""
    return torch.load(path, map_location=device, weights_only=False)
