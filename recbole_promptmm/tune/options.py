"""Sweep options: what the command line sets, saved in ``<out>/sweep.json`` so that ``--resume`` can continue."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from recbole_promptmm.paths import properties_dir
from recbole_promptmm.quick_start import write_json_atomic

OPTIONS_FILE = "sweep.json"
SCHEDULERS = ("asha", "fifo")
# Options that may differ when a sweep is resumed (where and how it runs, not what it searches).
RESUMABLE_CHANGES = ("address", "num_cpus", "max_concurrent", "cpus_per_trial", "gpus_per_trial", "resume")


@dataclass
class SweepOptions:
    """Everything one sweep needs.

    Parameters
    ----------
    model, dataset : str
        Model (ours or a RecBole built-in) and dataset.
    out : str
        Output folder (absolute once normalised).
    search_space : str, optional
        Search-space yaml; default ``properties/tune/<model>.yaml``. ``None`` with no default file: one
        configuration (the fixed one), ``num_samples`` times.
    num_samples : int
        Samples of the space (each grid is run in full for every sample).
    config_files : list of str
        yaml config files, lowest priority first.
    overrides : list of str
        ``--key=value`` RecBole config values fixed for every trial.
    scheduler : str
        ``asha`` (stop poor trials early) or ``fifo`` (run every trial to the end).
    max_concurrent : int, optional
        Trials running at once (default: as many as the resources allow).
    cpus_per_trial, gpus_per_trial : float
        Resources Ray reserves for each trial.
    num_cpus : int, optional
        CPUs of the local Ray instance (ignored with ``address``).
    address : str, optional
        An existing Ray cluster (``HOST:PORT`` of its head, or ``auto``).
    resume : bool
        Continue the interrupted sweep in ``out``.
    grace_period, reduction_factor, max_t : ASHA settings
        Epochs every trial gets before it can be stopped, the fraction kept at each rung (1/reduction_factor),
        and the last epoch (default: the largest ``epochs`` any trial can have).
    max_failures : int
        Times Ray restarts a failing trial from its last checkpoint before reporting it as failed.
    teacher_checkpoint : str, optional
        PromptMM: a PromptMMTeacher checkpoint every trial distils from (stage 1 is skipped).
    teacher_search_space : str, optional
        PromptMM without ``teacher_checkpoint``: search the teacher with this file first (default: train one
        teacher with the fixed configuration).
    teacher_num_samples : int
        Samples of the teacher search space.
    evaluate_test : bool
        Evaluate the best configuration once on test after the sweep.
    """

    model: str
    dataset: str
    out: str
    search_space: str | None = None
    num_samples: int = 1
    config_files: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    scheduler: str = "asha"
    max_concurrent: int | None = None
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    num_cpus: int | None = None
    address: str | None = None
    resume: bool = False
    grace_period: int = 1
    reduction_factor: float = 2
    max_t: int | None = None
    max_failures: int = 1
    teacher_checkpoint: str | None = None
    teacher_search_space: str | None = None
    teacher_num_samples: int = 1
    evaluate_test: bool = True

    def check(self) -> None:
        """Refuse impossible values, naming the option."""
        if self.num_samples < 1:
            raise ValueError(f"--num_samples must be >= 1, got {self.num_samples}")
        if self.teacher_num_samples < 1:
            raise ValueError(f"--teacher_num_samples must be >= 1, got {self.teacher_num_samples}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(f"--max_concurrent must be >= 1, got {self.max_concurrent}")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ValueError("--cpus_per_trial must be > 0 and --gpus_per_trial >= 0")
        if self.grace_period < 1 or self.reduction_factor <= 1:
            raise ValueError("--grace_period must be >= 1 and --reduction_factor > 1")
        if self.max_failures < 0:
            raise ValueError(f"--max_failures must be >= 0, got {self.max_failures}")
        for name in ("search_space", "teacher_search_space", "teacher_checkpoint"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"--{name}: file {path} does not exist")
        for path in self.config_files:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--config_files: file {path} does not exist")
        if self.teacher_checkpoint and self.teacher_search_space:
            raise ValueError("--teacher_checkpoint and --teacher_search_space exclude each other: either reuse "
                             "a teacher or search one")

    def normalised(self) -> "SweepOptions":
        """Absolute paths everywhere (trials run in other folders, maybe on other machines), default space."""
        opts = dataclasses.replace(self)
        opts.out = os.path.abspath(opts.out)
        opts.config_files = [os.path.abspath(p) for p in opts.config_files]
        opts.overrides = [_absolute_override(o) for o in opts.overrides]
        for name in ("search_space", "teacher_search_space", "teacher_checkpoint"):
            if getattr(opts, name):
                setattr(opts, name, os.path.abspath(getattr(opts, name)))
        if opts.search_space is None:
            opts.search_space = default_search_space(opts.model)
        return opts

    def save(self) -> None:
        """Write ``<out>/sweep.json``."""
        write_json_atomic(os.path.join(self.out, OPTIONS_FILE), dataclasses.asdict(self))

    @classmethod
    def load(cls, out: str) -> "SweepOptions":
        """The options saved in ``<out>/sweep.json``."""
        path = os.path.join(out, OPTIONS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--resume: {path} does not exist; {out} holds no sweep to resume")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return cls(**data)


PATH_KEYS = ("data_path", "teacher_checkpoint")


def _absolute_override(arg: str) -> str:
    key, _, value = arg[2:].partition("=")
    if key in PATH_KEYS and value:
        return f"--{key}={os.path.abspath(value)}"
    return arg


def default_search_space(model: str) -> str | None:
    """``properties/tune/<model>.yaml`` when it exists."""
    path = properties_dir() / "tune" / f"{model}.yaml"
    return str(path) if path.is_file() else None


def merge_for_resume(saved: SweepOptions, given: dict[str, Any]) -> SweepOptions:
    """The saved options, with the given ones that may change on resume; others must match.

    Parameters
    ----------
    saved : SweepOptions
        From ``<out>/sweep.json``.
    given : dict
        Options given on the command line this time (only those explicitly set).
    """
    merged = dataclasses.replace(saved)
    for name, value in given.items():
        if name in RESUMABLE_CHANGES:
            setattr(merged, name, value)
        elif value != getattr(saved, name):
            raise ValueError(f"--resume: --{name} was {getattr(saved, name)!r} in this sweep, now {value!r}; "
                             f"resume with the same value (or leave it out)")
    merged.resume = True
    return merged
