"""The options of a sweep and of a comparison, each declared once: the dataclass field is the Python argument,
the ``--name`` of the command line (with its help) and, for sweeps, an entry of ``<out>/sweep.json``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from recbole_promptmm.files import write_json_atomic
from recbole_promptmm.paths import properties_dir


def opt(default: Any, help: str, *, flag: str | None = None, type: Any = None, cli: bool = True, **extra: Any) -> Any:
    """A field that is also a command-line option (``flag`` names a ``store_false`` switch of a True default)."""
    metadata = {"help": help, "flag": flag, "type": type, "cli": cli, **extra}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def split_words(text: str) -> list[str]:
    return text.replace(",", " ").split()


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--name`` per option of ``cls``; only options given on the command line land in the namespace."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": meta["help"],
                                  **{k: meta[k] for k in ("choices", "nargs", "const") if k in meta}}
        if isinstance(default, bool):
            flag = meta["flag"] or f"--{f.name}"
            parser.add_argument(flag, dest=f.name, action="store_false" if meta["flag"] else "store_true", **kwargs)
        else:
            kind = meta["type"] or (split_words if isinstance(default, list) else type(default))
            parser.add_argument(f"--{f.name}", *meta.get("aliases", ()), type=kind, **kwargs)


def is_path_key(key: str) -> bool:
    """Config keys holding a path, made absolute (runs execute in other folders): ``data_path``, ``*_checkpoint``."""
    return key == "data_path" or key.endswith("_checkpoint")


def absolute_override(arg: str) -> str:
    """``--data_path=x`` / ``--teacher_checkpoint=x`` made absolute."""
    key, _, value = arg[2:].partition("=")
    return f"--{key}={os.path.abspath(value)}" if is_path_key(key) and value else arg


OPTIONS_FILE = "sweep.json"
SCHEDULERS = ("asha", "fifo")


@dataclass(kw_only=True)
class RayOptions:
    """Where and how trials run (may change when a sweep is resumed)."""

    max_concurrent: int | None = opt(None, "trials running at once (default: as many as the resources allow)", type=int)
    cpus_per_trial: float = opt(1.0, "CPUs Ray reserves per trial; torch uses as many threads (default 1)")
    gpus_per_trial: float = opt(0.0, "GPUs Ray reserves per trial (default 0)")
    num_cpus: int | None = opt(None, "CPUs of the local Ray instance (default: all cores)", type=int)
    address: str | None = opt(None, "an existing Ray cluster: HOST:PORT of its head (or auto)", type=str)
    verbose: bool = opt(False, "print Ray Tune's trial tables as well (default: one line per finished run/trial)")

    def check_ray_options(self) -> None:
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(f"--max_concurrent must be >= 1, got {self.max_concurrent}")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ValueError("--cpus_per_trial must be > 0 and --gpus_per_trial >= 0")


RESUMABLE_CHANGES = (*(f.name for f in dataclasses.fields(RayOptions)), "resume")


@dataclass(kw_only=True)
class SweepOptions(RayOptions):
    """Everything one sweep needs (docs/TUNING.md)."""

    model: str = opt("", "model: ours (PromptMM, PromptMMTeacher, ...) or a RecBole built-in", aliases=("-m",))
    dataset: str = opt("", "dataset: ml-100k, tiktok (with --data_path) or your own", aliases=("-d",))
    out: str = opt("", "output folder (default: tune_results/<model>-<dataset>)")
    search_space: str | None = opt(None, "search-space yaml (default: properties/tune/<model>.yaml)", type=str)
    num_samples: int = opt(1, "samples of the search space (default 1; grids run in full)")
    config_files: list[str] = opt([], "yaml config files, separated by spaces or commas")
    overrides: list[str] = opt([], "", cli=False)
    scheduler: str = opt("asha", "asha stops poor trials early (default asha)", choices=SCHEDULERS)
    resume: bool = opt(False, "continue the interrupted sweep in --out")
    grace_period: int = opt(1, "ASHA: epochs before a trial can be stopped (default 1)")
    reduction_factor: float = opt(2.0, "ASHA: keep 1/this at each rung (default 2)")
    max_t: int | None = opt(None, "ASHA: last epoch (default: the largest epochs of any trial)", type=int)
    max_failures: int = opt(1, "restarts of a failing trial from its checkpoint (default 1)")
    teacher_checkpoint: str | None = opt(None, "PromptMM: distil every trial from this teacher checkpoint", type=str)
    teacher_search_space: str | None = opt(None, "PromptMM: search the teacher with this file first", type=str)
    teacher_num_samples: int = opt(1, "PromptMM: samples of the teacher search space")
    evaluate_test: bool = opt(True, "do not evaluate the best configuration on test", flag="--no_test")

    def check(self) -> None:
        """Refuse impossible values, naming the option."""
        self.check_ray_options()
        if self.num_samples < 1 or self.teacher_num_samples < 1:
            raise ValueError("--num_samples and --teacher_num_samples must be >= 1")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.grace_period < 1 or self.reduction_factor <= 1:
            raise ValueError("--grace_period must be >= 1 and --reduction_factor > 1")
        if self.max_failures < 0:
            raise ValueError(f"--max_failures must be >= 0, got {self.max_failures}")
        for name in ("search_space", "teacher_search_space", "teacher_checkpoint"):
            if getattr(self, name) is not None and not os.path.isfile(getattr(self, name)):
                raise FileNotFoundError(f"--{name}: file {getattr(self, name)} does not exist")
        for path in self.config_files:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--config_files: file {path} does not exist")
        if self.teacher_checkpoint and self.teacher_search_space:
            raise ValueError("--teacher_checkpoint and --teacher_search_space exclude each other: either reuse "
                             "a teacher or search one")

    def normalised(self) -> "SweepOptions":
        """Absolute paths everywhere (trials run in other folders, maybe on other machines), default space."""
        opts = dataclasses.replace(self, out=os.path.abspath(self.out or f"tune_results/{self.model}-{self.dataset}"),
                                   config_files=[os.path.abspath(p) for p in self.config_files],
                                   overrides=[absolute_override(o) for o in self.overrides])
        for name in ("search_space", "teacher_search_space", "teacher_checkpoint"):
            if getattr(opts, name):
                setattr(opts, name, os.path.abspath(getattr(opts, name)))
        if opts.search_space is None:
            default = properties_dir() / "tune" / f"{opts.model}.yaml"
            opts.search_space = str(default) if default.is_file() else None
        return opts

    def save(self) -> None:
        write_json_atomic(os.path.join(self.out, OPTIONS_FILE), dataclasses.asdict(self))

    @classmethod
    def load(cls, out: str) -> "SweepOptions":
        path = os.path.join(out, OPTIONS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--resume: {path} does not exist; {out} holds no sweep to resume")
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))

    def resumed_with(self, given: dict[str, Any]) -> "SweepOptions":
        """These (saved) options with the given ones that may change on resume; any other must match."""
        normalised = vars(dataclasses.replace(self, **given).normalised())
        for name in given:
            if name not in RESUMABLE_CHANGES and normalised[name] != getattr(self, name):
                raise ValueError(f"--resume: --{name} was {getattr(self, name)!r} in this sweep, now "
                                 f"{normalised[name]!r}; resume with the same value (or leave it out)")
        return dataclasses.replace(self, **{**{k: given[k] for k in given if k in RESUMABLE_CHANGES}, "resume": True})


@dataclass(kw_only=True)
class CompareOptions(RayOptions):
    """Everything one comparison needs (docs/COMPARE.md)."""

    dataset: str = opt("ml-100k", "dataset name (default ml-100k)", aliases=("-d",))
    models: str = opt("", "comma-separated model names or labels", aliases=("-m",))
    out: str = opt("", "output folder (required): reports, and every run under OUT/runs/", aliases=("-o",))
    seeds: str = opt("2020,2021,2022", "comma-separated seeds (default 2020,2021,2022)")
    data_path: str | None = opt(None, "folder holding <dataset>/ (e.g. ../shared/data)", type=str)
    config_files: list[str] = opt([], "yaml files: shared keys, plus a 'models: {NAME: {...}}' section")
    overrides: list[str] = opt([], "", cli=False)
    ablations: str | None = opt(None, "add PromptMM ablation variants: all (no value) or comma-separated names",
                                type=str, nargs="?", const="all")
    variants: str | None = opt(None, "PromptMM variants: ablation names or NAME:key=value;key=value, comma-separated",
                               type=str)
    share_teacher: bool = opt(True, "every PromptMM variant trains its own teacher", flag="--no_share_teacher")
    reference: str | None = opt(None, "label tested against the others (default PromptMM if compared, else the first)",
                                type=str)
    rerun: str = opt("", "labels (comma-separated) or 'all' whose cached runs are redone")
    run_timeout: float | None = opt(None, "stop a run after this many seconds (checked at each validation)", type=float)
    cost_repeats: int = opt(3, "timed full-sort scoring passes per run (default 3)")
    report_only: bool = opt(False, "run nothing; report the cached runs")
