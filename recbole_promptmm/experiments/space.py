"""Search spaces: yaml files mapping RecBole config keys to distributions (docs/TUNING.md), checked before any
trial starts::

    learning_rate: {loguniform: [1.0e-4, 1.0e-2]}   # low, high; 0 < low < high
    reg_weight:    {uniform: [0.0, 1.0e-3]}         # low, high; low < high
    embedding_size: {choice: [32, 64, 128]}         # sampled at random, once per trial
    n_layers:      {grid: [1, 2, 3]}                # every value, for every sample (Ray's grid_search)
    epochs:        {randint: [2, 5]}                # integers low..high, both ends included

Every key must be a config key of the model; keys that decide how the data is read or how trials are judged
(dataset and evaluation settings, paths, devices), or that are fixed for every trial, cannot be searched.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Mapping

from ray import tune

from recbole_promptmm.config import load_yaml

# The Ray Tune constructor of each distribution: choice and grid take the values, the others (low, high).
TO_TUNE = {"choice": tune.choice, "grid": tune.grid_search, "uniform": tune.uniform, "loguniform": tune.loguniform,
           "randint": lambda low, high: tune.randint(low, high + 1)}  # Ray's upper bound is exclusive; ours is not
VALUES = ("choice", "grid")
# Keys RecBole derives itself, or that decide where and on what a trial runs: never searched.
RESERVED_KEYS = frozenset({
    "model", "dataset", "data_path", "checkpoint_dir", "config_file", "gpu_id", "use_gpu", "device", "state",
    "show_progress", "log_wandb", "save_dataset", "dataset_save_path", "save_dataloaders", "dataloaders_save_path",
    "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "single_spec", "local_rank", "eval_neg_sample_args",
    "valid_neg_sample_args", "test_neg_sample_args", "teacher_checkpoint", "nproc", "world_size", "offset", "ip",
    "port",
})


class SearchSpaceError(ValueError):
    """A search-space file that cannot be used; the message names the file, the key and the problem."""


@dataclass(frozen=True)
class Dimension:
    """One searched key: ``kind`` (a key of :data:`TO_TUNE`) and ``args``, the values (``choice``, ``grid``) or the
    bounds ``(low, high)``."""

    key: str
    kind: str
    args: tuple

    def upper_bound(self) -> Any:
        return max(self.args) if self.kind in VALUES else self.args[1]


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search-space file: its path and its dimensions, in file order."""

    path: str
    dimensions: tuple[Dimension, ...]

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.dimensions]

    @property
    def grid_size(self) -> int:
        """How many trials one sample of the space makes (the product of the grid sizes)."""
        return math.prod(len(d.args) for d in self.dimensions if d.kind == "grid")

    def to_tune(self) -> dict[str, Any]:
        """``param_space`` for :class:`ray.tune.Tuner`."""
        return {d.key: TO_TUNE[d.kind](list(d.args)) if d.kind in VALUES else TO_TUNE[d.kind](*d.args)
                for d in self.dimensions}

    def get(self, key: str) -> Dimension | None:
        return next((d for d in self.dimensions if d.key == key), None)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(path: str, key: str, problem: str) -> SearchSpaceError:
    return SearchSpaceError(f"search space {path}: key {key!r}: {problem}")


def parse_dimension(path: str, key: Any, spec: Any) -> Dimension:
    """Check and parse one ``key: {distribution: arguments}`` entry of the file at ``path``."""
    if not isinstance(key, str):
        raise _fail(path, str(key), "keys must be strings (RecBole config keys)")
    if not isinstance(spec, dict):
        raise _fail(path, key, f"expected a mapping with one of {', '.join(TO_TUNE)}, e.g. {{loguniform: [1.0e-4, "
                               f"1.0e-2]}}, got {spec!r} (to fix a value for every trial, pass --{key}=VALUE or put "
                               "it in a --config_files yaml)")
    if len(spec) != 1:
        raise _fail(path, key, f"expected exactly one distribution, got {sorted(map(str, spec))}")
    (kind, args), = spec.items()
    if kind not in TO_TUNE:
        raise _fail(path, key, f"unknown distribution {kind!r}; expected one of {', '.join(TO_TUNE)}")
    if kind in VALUES:
        if not isinstance(args, list) or not args:
            raise _fail(path, key, f"{kind} needs a non-empty list of values, got {args!r}")
        twice = [v for i, v in enumerate(args) if v in args[:i]]
        if twice:
            raise _fail(path, key, f"{kind} lists the value {twice[0]!r} twice")
        return Dimension(key, kind, tuple(args))
    if not isinstance(args, list) or len(args) != 2:
        raise _fail(path, key, f"{kind} needs a list [low, high], got {args!r}")
    low, high = args
    if kind == "randint":
        if not (_is_int(low) and _is_int(high)):
            raise _fail(path, key, f"randint needs two integers [low, high], got {args!r}")
        if low > high:
            raise _fail(path, key, f"randint needs low <= high, got [{low}, {high}]")
        return Dimension(key, kind, (low, high))
    if not (_is_number(low) and _is_number(high)):
        raise _fail(path, key, f"{kind} needs two finite numbers [low, high], got {args!r}")
    if low >= high:
        raise _fail(path, key, f"{kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise _fail(path, key, f"loguniform needs 0 < low, got low = {low}")
    return Dimension(key, kind, (float(low), float(high)))


def load_search_space(path: str) -> SearchSpace:
    """Read and check a search-space yaml file (its own syntax; :func:`check_search_space` checks the keys)."""
    try:
        data = load_yaml(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise SearchSpaceError(f"search space: {err}") from None
    except Exception as err:  # yaml constructor errors (duplicate keys) and the like
        raise SearchSpaceError(f"search space {path}: {err}") from None
    return SearchSpace(str(path), tuple(parse_dimension(str(path), key, spec) for key, spec in data.items()))


def _check_type(path: str, dim: Dimension, default: Any) -> None:
    """The distribution must suit the type of the key's default."""
    if default is None or (isinstance(default, bool) and dim.kind in VALUES):
        return
    if isinstance(default, bool):
        raise _fail(path, dim.key, f"is a boolean setting (default {default!r}); use choice or grid, not {dim.kind}")
    if _is_int(default) and dim.kind in ("uniform", "loguniform"):
        raise _fail(path, dim.key, f"is an integer setting (default {default!r}); use randint, choice or grid, "
                                   f"not {dim.kind}")
    bad = [v for v in dim.args if not _is_number(v)]
    if isinstance(default, (int, float)) and dim.kind in VALUES and bad:
        raise _fail(path, dim.key, f"is a numeric setting (default {default!r}); {dim.kind} lists non-numbers {bad!r}")
    if isinstance(default, str) and dim.kind not in VALUES:
        raise _fail(path, dim.key, f"is a text setting (default {default!r}); use choice or grid, not {dim.kind}")


def check_search_space(space: SearchSpace, config: Any, fixed: Mapping[str, str]) -> None:
    """Check the searched keys against the model's resolved config and the keys ``fixed`` for every trial (key ->
    what fixes it, e.g. ``"--epochs on the command line"``), which cannot be searched."""
    known = config.final_config_dict
    why = {**dict.fromkeys(config.parameters.get("Dataset", []),
                           "a dataset setting (the data is read once per sweep, before any trial)"),
           **dict.fromkeys(config.parameters.get("Evaluation", []),
                           "an evaluation setting (every trial must be judged the same way)")}
    for dim in space.dimensions:
        key = dim.key
        if key in RESERVED_KEYS:
            raise _fail(space.path, key, "cannot be searched: it decides what or where a trial runs, "
                                         "not how the model learns")
        if key in why:
            raise _fail(space.path, key, f"cannot be searched: it is {why[key]}")
        if key in fixed:
            raise _fail(space.path, key, f"is searched but also fixed for every trial by {fixed[key]}; "
                                         "remove one of the two")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise _fail(space.path, key, f"is not a config key of {config['model']} on {config['dataset']}{hint}")
        _check_type(space.path, dim, known[key])
