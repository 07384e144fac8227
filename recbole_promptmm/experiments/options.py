"""The options of a sweep and of a comparison: the dataclass fields are the Python arguments (their ``--name``
and help are in :mod:`.cli`) and, for sweeps, the entries of ``<out>/sweep.json``."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from recbole_promptmm.files import read_json, write_json_atomic
from recbole_promptmm.paths import properties_dir

OPTIONS_FILE = "sweep.json"
SCHEDULERS = ("asha", "fifo")
FILE_OPTIONS = ("search_space", "teacher_search_space", "teacher_checkpoint")


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

    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    num_cpus: int | None = None
    address: str | None = None
    verbose: bool = False

    def check_ray_options(self) -> None:
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(f"--max_concurrent must be >= 1, got {self.max_concurrent}")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ValueError("--cpus_per_trial must be > 0 and --gpus_per_trial >= 0")


RESUMABLE_CHANGES = (*(f.name for f in dataclasses.fields(RayOptions)), "resume")


@dataclass(kw_only=True)
class SweepOptions(RayOptions):
    """Everything one sweep needs: the options of docs/TUNING.md."""

    model: str = ""
    dataset: str = ""
    out: str = ""
    search_space: str | None = None
    num_samples: int = 1
    config_files: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # RecBole --key=value config overrides
    scheduler: str = "asha"
    resume: bool = False
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_t: int | None = None
    max_failures: int = 1
    teacher_checkpoint: str | None = None
    teacher_search_space: str | None = None
    teacher_num_samples: int = 1
    evaluate_test: bool = True

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

    dataset: str = "ml-100k"
    models: str = ""
    out: str = ""
    seeds: str = "2020,2021,2022"
    data_path: str | None = None
    config_files: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # RecBole --key=value config overrides
    ablations: str | None = None
    variants: str | None = None
    share_teacher: bool = True
    reference: str | None = None
    rerun: str = ""
    run_timeout: float | None = None
    cost_repeats: int = 3
    report_only: bool = False
