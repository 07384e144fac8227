"""Compare models on one dataset over several seeds: accuracy, cost and significance.

``python -m recbole_promptmm.compare --help``; see ``docs/COMPARE.md``. Layout: :mod:`.plan` (runs and their
configs), :mod:`.ablations` (PromptMM variants), :mod:`.runner` (cached worker processes), :mod:`.worker` (one
run), :mod:`.cost` (serving cost of a trained model), :mod:`.stats`, :mod:`.report`, :mod:`.plot`.

The exports are imported on first use, so that a worker process (``python -m recbole_promptmm.compare.worker``)
does not pay for matplotlib and scipy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ABLATIONS": "recbole_promptmm.compare.ablations",
    "Ablation": "recbole_promptmm.compare.ablations",
    "ComparisonResult": "recbole_promptmm.compare.comparison",
    "compare": "recbole_promptmm.compare.comparison",
    "CostReport": "recbole_promptmm.compare.cost",
    "measure_cost": "recbole_promptmm.compare.cost",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
