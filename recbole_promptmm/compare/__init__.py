"""``python -m recbole_promptmm.compare``: multi-seed comparisons (docs/COMPARE.md); the code is
:mod:`recbole_promptmm.experiments`."""

from recbole_promptmm.experiments.compare import ComparisonResult, compare

__all__ = ["ComparisonResult", "compare"]
