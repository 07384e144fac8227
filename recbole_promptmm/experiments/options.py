"""The options of a sweep and of a comparison: the dataclass fields are the Python arguments, the command-line
options (:func:`option`: ``--name`` and help; :mod:`.cli` builds the parsers) and, for sweeps, the entries of
``<out>/sweep.json``."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Sequence

from recbole_promptmm.files import read_json, write_json_atomic
from recbole_promptmm.paths import properties_dir
from recbole_promptmm.files import check_writable

OPTIONS_FILE = "sweep.json"
SCHEDULERS = ("asha", "fifo")
FILE_OPTIONS = ("search_space", "teacher_search_space", "teacher_checkpoint")


def split_list(value: str | Sequence[str] | None, separators: str = ", ") -> list[str]:
    """``"a,b c"`` -> ``["a", "b", "c"]``; a sequence is returned as a list of its non-empty items."""
    if isinstance(value, str):
        value = re.split(f"[{separators}]+", value)
    return [v.strip() for v in value or () if v and v.strip()]


def option(default, help: str, *flags: str, **kwargs):
    """A field that is also a command-line option (:mod:`.cli`): its help, other flags (``-m``, ``--no_test``: then
    the first is the option) and argparse keywords; a list default is a fresh list per instance."""
    return field(**({"default_factory": list} if default == [] else {"default": default}),
                 metadata={"help": help, "flags": flags, **kwargs})


def is_path_key(key: str) -> bool:
    """Config keys holding a path, made absolute (runs execute in other folders): ``data_path``, ``*_checkpoint``."""
    return key == "data_path" or key.endswith("_checkpoint")


def absolute_override(arg: str) -> str:
    """``--data_path=x`` / ``--teacher_checkpoint=x`` made absolute."""
    key, _, value = arg[2:].partition("=")
    return f"--{key}={os.path.abspath(value)}" if is_path_key(key) and value else arg


@dataclass(kw_only=True)
class RayOptions:
    """Where and how trials run (may change when a sweep is resumed)."""

    max_concurrent: int | None = option(None, "trials running at once (default: as many as the resources allow)",
                                        type=int)
    cpus_per_trial: float = option(1.0, "CPUs Ray reserves per trial; torch uses as many threads (default 1)")
    gpus_per_trial: float = option(0.0, "GPUs Ray reserves per trial (default 0)")
    num_cpus: int | None = option(None, "CPUs of the local Ray instance (default: all cores)", type=int)
    address: str | None = option(None, "an existing Ray cluster: HOST:PORT of its head (or auto)")
    verbose: bool = option(False, "print Ray Tune's trial tables as well (default: one line per finished run/trial)")

    def check_ray_options(self) -> None:
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(f"--max_concurrent must be >= 1, got {self.max_concurrent}")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ValueError("--cpus_per_trial must be > 0 and --gpus_per_trial >= 0")


RESUMABLE_CHANGES = (*(f.name for f in dataclasses.fields(RayOptions)), "resume")


@dataclass(kw_only=True)
class SweepOptions(RayOptions):
    """Everything one sweep needs: the options of docs/TUNING.md."""

    model: str = option("", "model: ours (PromptMM, PromptMMTeacher, ...) or a RecBole built-in", "-m")
    dataset: str = option("", "dataset: ml-100k, tiktok (with --data_path) or your own", "-d")
    out: str = option("", "output folder (default: tune_results/<model>-<dataset>)")
    search_space: str | None = option(None, "search-space yaml (default: properties/tune/<model>.yaml)")
    num_samples: int = option(1, "samples of the search space (default 1; grids run in full)")
    config_files: list[str] = option([], "yaml config files, separated by spaces or commas", type=split_list)
    overrides: list[str] = field(default_factory=list)  # RecBole --key=value config overrides
    scheduler: str = option("asha", "asha stops poor trials early (default asha)", choices=SCHEDULERS)
    resume: bool = option(False, "continue the interrupted sweep in --out")
    grace_period: int = option(1, "ASHA: epochs before a trial can be stopped (default 1)")
    reduction_factor: float = option(2.0, "ASHA: keep 1/this at each rung (default 2)")
    max_t: int | None = option(None, "ASHA: last epoch (default: the largest epochs of any trial)", type=int)
    max_failures: int = option(1, "restarts of a failing trial from its checkpoint (default 1)")
    teacher_checkpoint: str | None = option(None, "PromptMM: distil every trial from this teacher checkpoint")
    teacher_search_space: str | None = option(None, "PromptMM: search the teacher with this file first")
    teacher_num_samples: int = option(1, "PromptMM: samples of the teacher search space")
    evaluate_test: bool = option(True, "do not evaluate the best configuration on test", "--no_test")

    def check(self) -> None:
        """Refuse impossible values, naming the option; an ``out`` that cannot be a folder to write in."""
        self.check_ray_options()
        check_writable(self.out, "--out", folder=True)
        if self.num_samples < 1 or self.teacher_num_samples < 1:
            raise ValueError("--num_samples and --teacher_num_samples must be >= 1")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.grace_period < 1 or self.reduction_factor <= 1:
            raise ValueError("--grace_period must be >= 1 and --reduction_factor > 1")
        if self.max_failures < 0:
            raise ValueError(f"--max_failures must be >= 0, got {self.max_failures}")
        for name, path in [(n, getattr(self, n)) for n in FILE_OPTIONS] + [("config_files", p) for p in self.config_files]:
            if path is not None and not os.path.isfile(path):
                raise FileNotFoundError(f"--{name}: file {path} does not exist")
        if self.teacher_checkpoint and self.teacher_search_space:
            raise ValueError("--teacher_checkpoint and --teacher_search_space exclude each other: either reuse "
                             "a teacher or search one")

    def normalised(self) -> SweepOptions:
        """Absolute paths everywhere (trials run in other folders, maybe on other machines), default space."""
        default = properties_dir() / "tune" / f"{self.model}.yaml"
        return dataclasses.replace(
            self, out=os.path.abspath(self.out or f"tune_results/{self.model}-{self.dataset}"),
            config_files=[os.path.abspath(p) for p in self.config_files],
            overrides=[absolute_override(o) for o in self.overrides],
            **{name: os.path.abspath(getattr(self, name)) for name in FILE_OPTIONS if getattr(self, name)},
            **({} if self.search_space else {"search_space": str(default) if default.is_file() else None}))

    def save(self) -> None:
        write_json_atomic(os.path.join(self.out, OPTIONS_FILE), dataclasses.asdict(self))

    @classmethod
    def resumed(cls, out: str, given: dict) -> SweepOptions:
        """The options saved in ``out`` with the given ones that may change on resume; any other must match."""
        saved = read_json(os.path.join(out, OPTIONS_FILE))
        if not saved:
            raise FileNotFoundError(f"--resume: {os.path.join(out, OPTIONS_FILE)} does not exist; {out} holds no "
                                    "sweep to resume")
        self = cls(**saved)
        normalised = vars(dataclasses.replace(self, **given).normalised())
        for name in given:
            if name not in RESUMABLE_CHANGES and normalised[name] != getattr(self, name):
                raise ValueError(f"--resume: --{name} was {getattr(self, name)!r} in this sweep, now "
                                 f"{normalised[name]!r}; resume with the same value (or leave it out)")
        return dataclasses.replace(self, **{**{k: given[k] for k in given if k in RESUMABLE_CHANGES}, "resume": True})


@dataclass(kw_only=True)
class CompareOptions(RayOptions):
    """Everything one comparison needs: the options of docs/COMPARE.md."""

    dataset: str = option("ml-100k", "dataset name (default ml-100k)", "-d")
    models: str = option("", "comma-separated model names or labels", "-m")
    out: str = option("", "output folder (required): reports, and every run under OUT/runs/", "-o")
    seeds: str = option("2020,2021,2022", "comma-separated seeds (default 2020,2021,2022)")
    data_path: str | None = option(None, "folder holding <dataset>/ (e.g. ../shared/data)")
    config_files: list[str] = option([], "yaml files: shared keys, plus a 'models: {NAME: {...}}' section",
                                     type=split_list)
    overrides: list[str] = field(default_factory=list)  # RecBole --key=value config overrides
    ablations: str | None = option(None, "add PromptMM ablation variants: all (no value) or comma-separated names",
                                   nargs="?", const="all")
    variants: str | None = option(None, "PromptMM variants: ablation names or NAME:key=value;key=value, "
                                        "comma-separated")
    share_teacher: bool = option(True, "every PromptMM variant trains its own teacher", "--no_share_teacher")
    reference: str | None = option(None, "label tested against the others (default PromptMM if compared, else "
                                         "the first)")
    rerun: str = option("", "labels (comma-separated) or 'all' whose cached runs are redone")
    run_timeout: float | None = option(None, "stop a run after this many seconds (checked at each validation)",
                                       type=float)
    cost_repeats: int = option(3, "timed full-sort scoring passes per run (default 3)")
    report_only: bool = option(False, "run nothing; report the cached runs")
