"""What a comparison runs: one :class:`RunSpec` per (model label, seed), with its layered and resolved config.

Config layers of one run, low to high priority:

1. RecBole's and our yaml defaults (model and dataset);
2. the shared part of the compare config files (every top-level key except ``models``);
3. ``models: {MODEL: {...}}``, then ``models: {LABEL: {...}}`` when the label differs from the model name;
4. ``--key=value`` overrides from the command line (every run);
5. the ablation's own keys (:mod:`recbole_promptmm.compare.ablations`), for ablation variants only;
6. ``seed`` (from ``--seeds``) and ``show_progress: False``; ``checkpoint_dir`` is set by the runner.

A compare config file is a RecBole yaml file with an optional ``models`` section::

    epochs: 300
    stopping_step: 10
    models:
      LightGCN: {learning_rate: 5.0e-3, n_layers: 3}
      LightGCN-2L: {model: LightGCN, n_layers: 2}   # a new label: another config of one model

Every run of one comparison must share the protocol (:data:`PROTOCOL_KEYS`: split, evaluator, validation
metric and early stopping); :func:`check_protocol` refuses a plan where they differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from recbole_promptmm.compare.ablations import BASE_MODEL, Ablation
from recbole_promptmm.config import Config, load_yaml, parse_cmd_args

PROTOCOL_KEYS: tuple[str, ...] = (
    "dataset",
    "data_path",
    "benchmark_filename",
    "load_col",
    "unload_col",
    "unused_col",
    "rm_dup_inter",
    "val_interval",
    "filter_inter_by_user_or_item",
    "user_inter_num_interval",
    "item_inter_num_interval",
    "eval_args",
    "metrics",
    "topk",
    "valid_metric",
    "valid_metric_bigger",
    "eval_step",
    "stopping_step",
)
"""Config keys that define the split, the evaluator and validation-based early stopping: equal in every run."""

VOLATILE_KEYS: frozenset[str] = frozenset(
    {"checkpoint_dir", "show_progress", "state", "log_wandb", "wandb_project", "gpu_id"}
)
"""Resolved config keys that do not change a run's results: left out of the cache hash."""

CONTROLLED_KEYS: Mapping[str, str] = {
    "seed": "use --seeds",
    "model": "use --models (or 'model:' inside a models: section)",
    "dataset": "use --dataset",
    "checkpoint_dir": "checkpoints are kept under the output folder",
}
"""Keys the comparison sets itself, and what to do instead."""

_SLUG = re.compile(r"[^A-Za-z0-9._+-]+")


class PlanError(ValueError):
    """A comparison that cannot be set up as asked (bad arguments, config files or protocol)."""


@dataclass
class CompareSettings:
    """The compare config files, merged in order (later files win, key by key).

    Attributes
    ----------
    shared : dict
        Keys for every run.
    sections : dict
        ``models:`` section: label or model name -> keys for that label or model.
    files : list of str
        The files read, as absolute paths.
    """

    shared: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Entry:
    """One model label of the comparison (a row of the summary table)."""

    label: str
    model: str
    section: Mapping[str, Any]
    ablation: Ablation | None = None

    @property
    def title(self) -> str:
        """The label as shown in reports (an ablation also shows its paper name)."""
        return f"{self.label} ({self.ablation.title})" if self.ablation else self.label


@dataclass
class RunSpec:
    """One run: a label, a seed and the config layers that define it.

    ``config`` and ``config_hash`` are filled by :func:`resolve`; ``error`` instead when the config cannot be
    resolved (the run is then reported as failed without being started). ``teacher_from`` names the label
    whose stage-1 teacher of the same seed this run reuses (:func:`link_shared_teachers`).
    """

    entry: Entry
    seed: int
    dataset: str
    config_dict: dict[str, Any]
    cmd_args: list[str]
    config: dict[str, Any] | None = None
    config_hash: str | None = None
    error: str | None = None
    teacher_from: str | None = None

    @property
    def label(self) -> str:
        return self.entry.label

    @property
    def model(self) -> str:
        return self.entry.model

    def relative_dir(self) -> str:
        """Where the run lives under the output folder: ``runs/<label>/seed<seed>-<hash>``."""
        return os.path.join("runs", slug(self.label), f"seed{self.seed}-{self.config_hash or 'unresolved'}")


def slug(label: str) -> str:
    """``label`` made safe as a folder name."""
    return _SLUG.sub("_", label).strip("_") or "model"


def split_list(value: str | Sequence[str] | None) -> list[str]:
    """``"a,b c"`` -> ``["a", "b", "c"]``; a sequence is returned as a list of its non-empty items."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return [v.strip() for v in value if v and v.strip()]


def parse_seeds(value: str | Sequence[int | str]) -> list[int]:
    """Seeds from ``"2020,2021"`` or a sequence; refuses non-integers, duplicates and an empty list."""
    items = split_list(value) if isinstance(value, str) else list(value)
    seeds: list[int] = []
    for item in items:
        try:
            seed = int(item)
        except (TypeError, ValueError):
            raise PlanError(f"seed {item!r} is not an integer") from None
        if seed in seeds:
            raise PlanError(f"seed {seed} is given twice")
        seeds.append(seed)
    if not seeds:
        raise PlanError("no seeds given: pass --seeds=2020,2021,2022 (several seeds allow a significance test)")
    return seeds


def _check_controlled(keys: Iterable[str], where: str, allow_model: bool = False) -> None:
    for key in keys:
        if key in CONTROLLED_KEYS and not (allow_model and key == "model"):
            raise PlanError(f"{where} sets {key!r}: the comparison sets it itself; {CONTROLLED_KEYS[key]}")


def _absolute_data_path(values: dict[str, Any], base_dir: str) -> dict[str, Any]:
    if isinstance(values.get("data_path"), str):
        values = dict(values, data_path=os.path.abspath(os.path.join(base_dir, os.path.expanduser(values["data_path"]))))
    return values


def load_settings(files: Sequence[str]) -> CompareSettings:
    """Read compare config files (see the module docstring); relative ``data_path`` values are taken relative
    to the current directory and made absolute (runs execute elsewhere)."""
    settings = CompareSettings()
    for file in files:
        path = os.path.abspath(file)
        try:
            values = load_yaml(path)
        except (FileNotFoundError, ValueError) as err:
            raise PlanError(str(err)) from None
        sections = values.pop("models", None) or {}
        if not isinstance(sections, dict):
            raise PlanError(f"config file {path}: 'models' must map model names to settings, found {sections!r}")
        _check_controlled(values, f"config file {path}")
        settings.shared.update(_absolute_data_path(values, os.getcwd()))
        for label, section in sections.items():
            if section is None:
                section = {}
            if not isinstance(section, dict):
                raise PlanError(f"config file {path}: models: {label}: must be a mapping of keys, found {section!r}")
            _check_controlled(section, f"config file {path}, models: {label}:", allow_model=True)
            merged = settings.sections.setdefault(str(label), {})
            merged.update(_absolute_data_path(section, os.getcwd()))
        settings.files.append(path)
    return settings


def build_entries(labels: Sequence[str], settings: CompareSettings, ablations: Sequence[Ablation]) -> list[Entry]:
    """The labels to compare: each of ``labels`` (a model name, or a label whose ``models:`` section names its
    ``model``), then one ablation variant of :data:`BASE_MODEL` per ablation."""
    entries: list[Entry] = []
    for label in labels:
        section = dict(settings.sections.get(label, {}))
        model = str(section.pop("model", label))
        base = dict(settings.sections.get(model, {})) if model != label else {}
        base.pop("model", None)
        entries.append(Entry(label, model, {**base, **section}))
    for ablation in ablations:
        label = ablation.label()
        section = {**settings.sections.get(BASE_MODEL, {}), **settings.sections.get(label, {})}
        section.pop("model", None)
        entries.append(Entry(label, BASE_MODEL, section, ablation))
    seen: set[str] = set()
    for entry in entries:
        if entry.label in seen:
            raise PlanError(f"model label {entry.label!r} is given twice")
        if "," in entry.label or not entry.label.strip():
            raise PlanError(f"model label {entry.label!r} must be non-empty and hold no comma")
        seen.add(entry.label)
    return entries


def unused_sections(entries: Sequence[Entry], settings: CompareSettings) -> list[str]:
    """``models:`` sections that match no label and no model of the comparison (likely typos)."""
    names = {e.label for e in entries} | {e.model for e in entries}
    return [name for name in settings.sections if name not in names]


def build_specs(
    entries: Sequence[Entry],
    seeds: Sequence[int],
    dataset: str,
    settings: CompareSettings,
    overrides: Sequence[str] = (),
    data_path: str | None = None,
) -> list[RunSpec]:
    """One spec per (seed, entry), seed-major: an interrupted comparison has complete seeds to pair."""
    try:
        user = parse_cmd_args(overrides)
    except ValueError as err:
        raise PlanError(str(err)) from None
    _check_controlled(user, "a command-line override")
    if data_path is not None:
        user["data_path"] = data_path
    if "data_path" in user:
        user["data_path"] = os.path.abspath(os.path.expanduser(user["data_path"]))
    specs = []
    for seed in seeds:
        for entry in entries:
            cmd = dict(user)
            cmd.setdefault("show_progress", "False")
            if entry.ablation:
                cmd.update({k: repr(v) for k, v in entry.ablation.overrides.items()})
            cmd["seed"] = str(seed)
            specs.append(RunSpec(
                entry=entry,
                seed=seed,
                dataset=dataset,
                config_dict={**settings.shared, **entry.section},
                cmd_args=[f"--{k}={v}" for k, v in cmd.items()],
            ))
    return specs


def config_hash(config: Mapping[str, Any]) -> str:
    """A short hash of a resolved config, without :data:`VOLATILE_KEYS`."""
    kept = {k: v for k, v in config.items() if k not in VOLATILE_KEYS}
    text = json.dumps(kept, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _short_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".strip()


def _missing_ablation_keys(spec: RunSpec) -> list[str]:
    ablation = spec.entry.ablation
    forced = {f"--{k}=" for k in ablation.overrides}
    base_args = [a for a in spec.cmd_args if not any(a.startswith(f) for f in forced)]
    base = Config(spec.model, spec.dataset, None, spec.config_dict, base_args)
    return [k for k in ablation.overrides if k not in base.final_config_dict]


def resolve(specs: Sequence[RunSpec]) -> None:
    """Resolve every spec's config (RecBole ``Config``) and hash it; a spec that cannot be resolved gets its
    ``error`` instead. Ablation keys the base model does not define make the variant fail (see
    :mod:`recbole_promptmm.compare.ablations`)."""
    missing_by_label: dict[str, list[str]] = {}
    for spec in specs:
        try:
            if spec.entry.ablation is not None:
                if spec.label not in missing_by_label:
                    missing_by_label[spec.label] = _missing_ablation_keys(spec)
                missing = missing_by_label[spec.label]
                if missing:
                    raise PlanError(
                        f"ablation {spec.entry.ablation.title!r} sets {', '.join(missing)}, which {spec.model} does "
                        f"not define (properties/model/{spec.model}.yaml); fix its overrides in ABLATIONS "
                        "(recbole_promptmm/compare/ablations.py)"
                    )
            config = Config(spec.model, spec.dataset, None, spec.config_dict, spec.cmd_args)
            spec.config = config.to_dict()
            spec.config_hash = config_hash(spec.config)
        except Exception as err:  # any config error fails this run only
            spec.error = _short_error(err)


def has_validation_split(config: Mapping[str, Any]) -> bool:
    """Whether the resolved config holds out a validation set (needed for early stopping and selection)."""
    benchmark = config.get("benchmark_filename")
    if benchmark:
        return len(benchmark) >= 3
    split = (config.get("eval_args") or {}).get("split") or {}
    if "RS" in split:
        ratios = split["RS"]
        return len(ratios) >= 3 and float(ratios[1]) > 0
    if "LS" in split:
        return split["LS"] == "valid_and_test"
    return True


def check_protocol(specs: Sequence[RunSpec]) -> dict[str, Any]:
    """The protocol shared by every resolved spec.

    Raises
    ------
    PlanError
        When two runs differ in a :data:`PROTOCOL_KEYS` key, when there is no validation split, or when
        validation is switched off (``eval_step <= 0``).
    """
    resolved = [s for s in specs if s.config is not None]
    if not resolved:
        return {}
    first = resolved[0]
    protocol = {k: first.config.get(k) for k in PROTOCOL_KEYS}
    for spec in resolved[1:]:
        for key in PROTOCOL_KEYS:
            if spec.config.get(key) != protocol[key]:
                raise PlanError(
                    f"{spec.label} (seed {spec.seed}) has {key}={spec.config.get(key)!r} but {first.label} has "
                    f"{protocol[key]!r}: every model of a comparison must share the split, evaluator and early "
                    f"stopping; set {key} in the shared config or on the command line, not per model"
                )
    if not has_validation_split(first.config):
        raise PlanError(
            f"the split {first.config.get('eval_args')} has no validation set: the comparison selects the best "
            "epoch on validation (e.g. eval_args: {split: {RS: [0.8, 0.1, 0.1]}})"
        )
    if not first.config.get("eval_step") or first.config["eval_step"] <= 0:
        raise PlanError("eval_step must be at least 1: early stopping and best-epoch selection need validation")
    return protocol


def stage_one_differences(base: Mapping[str, Any], variant: Mapping[str, Any], ablation: Ablation) -> list[str]:
    """Resolved config keys in which an ablation variant differs from its base, besides its own overrides."""
    ignored = set(ablation.overrides) | VOLATILE_KEYS | {"teacher_checkpoint"}
    keys = (set(base) | set(variant)) - ignored
    return sorted(k for k in keys if base.get(k) != variant.get(k))


def link_shared_teachers(specs: Sequence[RunSpec]) -> list[str]:
    """Let ablation variants that leave stage 1 unchanged reuse the teacher of :data:`BASE_MODEL`'s run with
    the same seed (sets ``teacher_from``); returns notes for the report.

    A variant shares only when :data:`BASE_MODEL` itself is compared and the two resolved configs are equal
    apart from the variant's own overrides: then the teacher it would train is the one the base trains.
    """
    bases = {s.seed: s for s in specs if s.label == BASE_MODEL and s.entry.ablation is None and s.config}
    sharing: list[str] = []
    notes: list[str] = []
    for spec in specs:
        ablation = spec.entry.ablation
        if ablation is None or spec.config is None or not ablation.shares_teacher(spec.config.get("teacher_model")):
            continue
        base = bases.get(spec.seed)
        if base is None:
            continue
        differences = stage_one_differences(base.config, spec.config, ablation)
        if differences:
            note = (f"{spec.label} trains its own teacher: its config differs from {BASE_MODEL}'s in "
                    f"{', '.join(differences[:5])}")
            if note not in notes:
                notes.append(note)
            continue
        spec.teacher_from = base.label
        if spec.label not in sharing:
            sharing.append(spec.label)
    if sharing:
        notes.insert(0, f"ablation variants reusing the stage-1 teacher of {BASE_MODEL} with the same seed "
                        f"(identical stage-1 config; --no_share_teacher trains one per run): {', '.join(sharing)}")
    return notes


def attach_teacher(spec: RunSpec, base_result: Mapping[str, Any]) -> None:
    """Point ``spec`` at the teacher checkpoint of its base run's result and resolve its config again (the
    checkpoint path is part of the config, hence of the cache key)."""
    path = (base_result.get("teacher") or {}).get("checkpoint")
    if not path or not os.path.isfile(path):
        spec.error = (f"the teacher checkpoint of {spec.teacher_from} seed {spec.seed} ({path}) is missing; "
                      f"rerun {spec.teacher_from} or pass --no_share_teacher")
        return
    spec.cmd_args = [a for a in spec.cmd_args if not a.startswith("--teacher_checkpoint=")]
    spec.cmd_args.append(f"--teacher_checkpoint={path!r}")
    resolve([spec])
