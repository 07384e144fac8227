"""``python -m recbole_promptmm.tune``: Ray Tune sweeps (docs/TUNING.md); the code is :mod:`recbole_promptmm.experiments`."""

from recbole_promptmm.experiments.options import SweepOptions
from recbole_promptmm.experiments.sweep import SweepError, SweepResult, execute_sweep, prepare_sweep, run_sweep

__all__ = ["SweepError", "SweepOptions", "SweepResult", "execute_sweep", "prepare_sweep", "run_sweep"]
