"""Ray Tune sweeps of our models and RecBole's built-ins: ``python -m recbole_promptmm.tune`` (docs/TUNING.md).

* :mod:`~recbole_promptmm.tune.space`: search-space yaml files, checked before anything runs.
* :mod:`~recbole_promptmm.tune.trial`: one trial (train, report validation with a checkpoint, resume).
* :mod:`~recbole_promptmm.tune.sweep`: the driver (data once, Ray Tuner, CSV, best config, test once,
  two-stage PromptMM).
* :mod:`~recbole_promptmm.tune.cli`: the command line.
"""

from recbole_promptmm.tune.options import SweepOptions
from recbole_promptmm.tune.space import SearchSpace, SearchSpaceError, check_search_space, load_search_space
from recbole_promptmm.tune.driver import execute_sweep, prepare_sweep, run_sweep
from recbole_promptmm.tune.sweep import SweepError, SweepResult

__all__ = [
    "SearchSpace", "SearchSpaceError", "SweepError", "SweepOptions", "SweepResult", "check_search_space",
    "execute_sweep", "load_search_space", "prepare_sweep", "run_sweep",
]
