"""What a comparison runs: one :class:`RunSpec` per (label, seed), with its layered, resolved and checked config.

The layers of a run's config, the variants and the shared protocol are described in docs/COMPARE.md. Every run
must share :data:`PROTOCOL_KEYS` and pass ``run``'s checks before anything runs: a refused key refuses the whole
comparison, naming the file and section, variant or command line.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from recbole.utils import init_seed

from recbole_promptmm.config import Config, load_yaml, parse_cmd_args
from recbole_promptmm.experiments.options import is_path_key, split_list
from recbole_promptmm.fingerprint import VOLATILE_KEYS, config_hash
from recbole_promptmm.registry import get_model, model_names, our_models
from recbole_promptmm.validate import ConfigError, data_key, prepare_data, validate_against_data, validate_config

# Config keys that define the split, the evaluator and validation-based early stopping: equal in every run.
PROTOCOL_KEYS: tuple[str, ...] = (
    "dataset", "data_path", "benchmark_filename", "mmrec_inter_file", "load_col", "unload_col", "unused_col",
    "rm_dup_inter", "val_interval", "filter_inter_by_user_or_item", "user_inter_num_interval",
    "item_inter_num_interval", "eval_args", "metrics", "topk", "valid_metric", "valid_metric_bigger", "eval_step",
    "stopping_step")
# Keys the comparison sets itself, and what to do instead.
CONTROLLED_KEYS: Mapping[str, str] = {
    "seed": "use --seeds", "model": "use --models (or 'model:' inside a models: section)",
    "dataset": "use --dataset", "checkpoint_dir": "checkpoints are kept under the output folder",
    "nproc": "each run is one process (--max_concurrent runs several at once); one run over several processes is "
             "run_recbole.py --nproc"}
_SLUG = re.compile(r"[^A-Za-z0-9._+-]+")


class PlanError(ValueError):
    """A comparison that cannot be set up as asked (bad arguments, config files or protocol)."""


@dataclass(frozen=True)
class Variant:
    """``model`` with a few keys overridden (``--key=value`` strings); they win over every other layer."""

    model: str
    name: str
    title: str
    overrides: Mapping[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model}-{self.name}"

    def shares_stage_one(self, config: Mapping[str, Any] | None = None) -> bool:
        """Whether the overrides leave stage 1 of a multi-stage model unchanged (under ``config``), so the variant
        may reuse a stage-1 output of the same seed."""
        return is_staged(self.model) and not set(self.overrides) & get_model(self.model).stage_one_keys(config or {})


def is_staged(model: str) -> bool:
    """Whether the model declares a shareable stage-1 output (class hooks ``stage_output_key``, ...: PromptMM)."""
    return bool(getattr(get_model(model), "stage_output_key", None))


def named_variants(model: str) -> list[Variant]:
    """The variants the model class declares (``variants``: (name, title, overrides) triples)."""
    return [Variant(model, name, title, {k: repr(v) for k, v in values.items()})
            for name, title, values in getattr(get_model(model), "variants", ())]


def declaring_models() -> list[str]:
    """Our models that declare named variants (the class attribute ``variants``: PromptMM)."""
    return [name for name, cls in our_models().items() if getattr(cls, "variants", None)]


def variant_model(models: Sequence[str] = ()) -> str:
    """The model that variants vary: the first of ``models`` that declares named variants, else the one known
    model that does."""
    ours = declaring_models()
    declaring = [m for m in models if m in ours] or ours
    if not declaring or (len(declaring) > 1 and not set(declaring) & set(models)):
        raise PlanError(f"variants need one model that declares named variants among --models; found {declaring}")
    return declaring[0]


def parse_variants(ablations: str | Sequence[str] | None = None, variants: str | Sequence[str] | None = None,
                   models: Sequence[str] = ()) -> list[Variant]:
    """The variants asked for: ``ablations`` (``all`` or names of :func:`named_variants`), then ``variants``
    (comma-separated names of :func:`named_variants` or ``NAME:key=value;key=value``), of :func:`variant_model`."""
    names = split_list(ablations)
    if not names and not split_list(variants, ","):
        return []
    model = variant_model(models)
    known = {a.name: a for a in named_variants(model)}
    chosen = list(known.values()) if names == ["all"] else []
    for item in ([] if chosen else names) + split_list(variants, ","):
        name, sep, body = item.partition(":")
        if not sep and name not in known:
            raise PlanError(f"unknown ablation {name!r}; known: {', '.join(known)} (or 'all'), or define a "
                            "variant as NAME:key=value;key=value")
        if not sep:
            chosen.append(known[name])
            continue
        try:
            overrides = parse_cmd_args(f"--{kv.strip()}" for kv in body.split(";") if kv.strip())
        except ValueError as err:
            raise PlanError(f"variant {item!r}: {err}") from None
        if not overrides or not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
            raise PlanError(f"variant {item!r}: expected NAME:key=value;... with a name of letters, digits, ._+-")
        chosen.append(Variant(model, name, f"{name}: {'; '.join(f'{k}={v}' for k, v in overrides.items())}", overrides))
    return chosen


def declared_variants() -> dict[str, Variant]:
    """Every named variant by its label (``PromptMM-no_kd``, as ``--list_ablations`` prints it)."""
    return {v.label: v for model in declaring_models() for v in named_variants(model)}


def split_variant_labels(labels: Sequence[str], settings: Settings) -> tuple[list[str], list[Variant]]:
    """``--models`` as (labels, named variants): an entry that ``--list_ablations`` prints (``PromptMM-no_kd``:
    PromptMM with its ablation ``no_kd``) is that variant, unless a ``models:`` section or a model has its name."""
    declared, known = declared_variants(), set(model_names())
    chosen = [declared[label] for label in labels if label in declared and label not in settings.sections
              and label not in known]
    return [label for label in labels if label not in {v.label for v in chosen}], chosen


def merge_ablations(ablations: str | None, chosen: Sequence[Variant]) -> str | None:
    """``--ablations`` with the names of the variants ``chosen`` through ``--models`` (once each; ``all`` has them)."""
    names = split_list(ablations)
    if "all" in names or not chosen:
        return ablations
    return ",".join(dict.fromkeys([*names, *(v.name for v in chosen)]))


def check_model(name: str, where: str) -> None:
    """Raise a :class:`PlanError` when ``name`` is no model (``where``: what gave it, e.g. ``--model``); a variant's
    label (``PromptMM-no_kd``) is refused with its model and keys, a near one with the variant labels."""
    declared = declared_variants()
    if name in declared and name not in model_names():
        v = declared[name]
        keys = " ".join(f"--{k}={x}" for k, x in v.overrides.items())
        raise PlanError(f"{where} {name} is a variant of compare (--list_ablations): {v.model} with its ablation "
                        f"{v.name}; pass --model={v.model} {keys}")
    try:
        get_model(name)
    except ValueError as err:
        near = [label for label in declared if "-" in name and label.split("-", 1)[0] == name.split("-", 1)[0]]
        hint = f"; the variant labels (--list_ablations) are {', '.join(near)}" if near else ""
        raise PlanError(f"{where}: {err}{hint}") from None


def describe_ablations(models: Sequence[str] = ()) -> str:
    """A text table of the named variants (``--list_ablations``)."""
    return "\n".join(f"{a.label:<26} {a.title:<26} {'shares the teacher' if a.shares_stage_one() else 'own teacher':<19} "
                     + ", ".join(f"{k}={v}" for k, v in a.overrides.items()) for a in named_variants(variant_model(models)))


@dataclass
class Settings:
    """The compare config files, merged in order; where each shared and each ``models:`` section key was given."""

    shared: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    section_sources: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One label of the comparison (a row of the summary table); ``sources``: where each key was given."""

    label: str
    model: str
    section: Mapping[str, Any]
    variant: Variant | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"{self.label} ({self.variant.title})" if self.variant else self.label


@dataclass
class RunSpec:
    """One run: :func:`resolve` fills ``config`` and ``config_hash``, or ``error`` (and ``refusal`` for bad input);
    ``teacher_from``: the label whose stage-1 teacher of the same seed it reuses."""

    entry: Entry
    seed: int
    dataset: str
    config_dict: dict[str, Any]
    cmd_args: list[str]
    config: dict[str, Any] | None = None
    config_hash: str | None = None
    error: str | None = None
    teacher_from: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    refusal: str | None = None
    checked: Any = field(default=None, repr=False, compare=False)  # the resolved Config (the driver's data check)

    @property
    def label(self) -> str:
        return self.entry.label

    @property
    def model(self) -> str:
        return self.entry.model

    def relative_dir(self) -> str:
        """``runs/<label>/seed<seed>-<hash>``: where the run lives under the output folder."""
        return os.path.join("runs", _SLUG.sub("_", self.label).strip("_") or "model",
                            f"seed{self.seed}-{self.config_hash or 'unresolved'}")


def parse_seeds(value: str | Sequence[int | str]) -> list[int]:
    """Seeds from ``"2020,2021"`` or a sequence; refuses non-integers, duplicates and an empty list."""
    seeds: list[int] = []
    for item in split_list(value) if isinstance(value, str) else list(value):
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


def _checked(values: Mapping[str, Any], where: str, allow_model: bool = False) -> dict[str, Any]:
    """``values`` with relative paths (:func:`is_path_key`) made absolute (runs execute elsewhere); refuses the
    :data:`CONTROLLED_KEYS`."""
    for key in values:
        if key in CONTROLLED_KEYS and not (allow_model and key == "model"):
            raise PlanError(f"{where} sets {key!r}: the comparison sets it itself; {CONTROLLED_KEYS[key]}")
    return {k: os.path.abspath(os.path.expanduser(v)) if is_path_key(k) and isinstance(v, str) and v else v
            for k, v in values.items()}


def load_settings(files: Sequence[str]) -> Settings:
    """Read compare config files (docs/COMPARE.md)."""
    settings = Settings()
    for file in files:
        path = os.path.abspath(file)
        try:
            values = load_yaml(path)
        except (FileNotFoundError, ValueError) as err:
            raise PlanError(str(err)) from None
        sections = values.pop("models", None) or {}
        if not isinstance(sections, dict):
            raise PlanError(f"config file {path}: 'models' must map model names to settings, found {sections!r}")
        settings.shared.update(_checked(values, f"config file {path}"))
        settings.sources.update(dict.fromkeys(values, f"config file {path}"))
        for label, section in sections.items():
            if not isinstance(section or {}, dict):
                raise PlanError(f"config file {path}: models: {label}: must be a mapping of keys, found {section!r}")
            where = f"config file {path}, models: {label}:"
            settings.sections.setdefault(str(label), {}).update(_checked(section or {}, where, allow_model=True))
            settings.section_sources.setdefault(str(label), {}).update(
                dict.fromkeys(section or {}, f"config file {path} (models: {label})"))
        settings.files.append(path)
    return settings


def build_entries(labels: Sequence[str], settings: Settings, variants: Sequence[Variant]) -> list[Entry]:
    """Each label (a model name, or a label whose ``models:`` section names its ``model``), then the variants."""
    entries = []
    for label, variant in [(label, None) for label in labels] + [(v.label, v) for v in variants]:
        section = dict(settings.sections.get(label, {}))
        model = variant.model if variant else str(section.get("model", label))
        layers = [label] if model == label else [model, label]  # a label's model section, then its own
        entries.append(Entry(label, model, {k: v for name in layers for k, v in settings.sections.get(name, {}).items()
                                            if k != "model"},
                             variant, {k: v for name in layers for k, v in settings.section_sources.get(name, {}).items()}))
    labels = [e.label for e in entries]
    for label in labels:
        if labels.count(label) > 1 or "," in label or not label.strip():
            raise PlanError(f"model label {label!r} is given twice, is empty or holds a comma")
    return entries


def _per_seed(value: Any, seed: int, key: str) -> Any:
    """A ``{seed}`` pattern (a glob, e.g. a teacher checkpoint of an earlier comparison) made this seed's file."""
    if not (isinstance(value, str) and "{seed}" in value):
        return value
    hits = sorted(glob.glob(value.format(seed=seed)))
    if len(hits) != 1:
        raise PlanError(f"{key}={value!r} for seed {seed}: expected one file, found {len(hits)}: {hits[:5]}")
    return hits[0]


def build_specs(entries: Sequence[Entry], seeds: Sequence[int], dataset: str, settings: Settings,
                overrides: Sequence[str] = (), data_path: str | None = None) -> list[RunSpec]:
    """One spec per (seed, entry), seed-major: an interrupted comparison has complete seeds to pair."""
    try:
        user = parse_cmd_args(overrides)
    except ValueError as err:
        raise PlanError(str(err)) from None
    user = _checked({**user, **({} if data_path is None else {"data_path": data_path})}, "a command-line override")
    specs = []
    for seed in seeds:
        for entry in entries:
            variant = dict(entry.variant.overrides) if entry.variant else {}
            cmd = {"show_progress": "False", **user, **variant, "seed": str(seed)}
            values, given = {**settings.shared, **entry.section}, {**settings.sources, **entry.sources}
            sources = {**{k: given[k] for k in values if k in given and k not in cmd},
                       **dict.fromkeys(variant, f"variant {entry.label}")}
            specs.append(RunSpec(entry, seed, dataset, {k: _per_seed(v, seed, k) for k, v in values.items()},
                                 [f"--{k}={_per_seed(v, seed, k)}" for k, v in cmd.items()], sources=sources))
    return specs


def resolve(specs: Sequence[RunSpec]) -> None:
    """Resolve, check (as ``run`` does) and hash every spec's config; else its ``error``, and its ``refusal`` for
    bad input (a refused config, or a variant key its model does not define: it would run the full model)."""
    defined: dict[str, set[str]] = {}
    for spec in specs:
        try:
            if spec.entry.variant is not None:
                if spec.model not in defined:
                    defined[spec.model] = set(Config(spec.model, spec.dataset, None, spec.config_dict).final_config_dict)
                missing = [k for k in spec.entry.variant.overrides if k not in defined[spec.model]]
                if missing:
                    raise PlanError(f"variant {spec.label} sets {', '.join(missing)}, which {spec.model} does not "
                                    f"define (properties/model/{spec.model}.yaml; the named variants are "
                                    f"{spec.model}.variants)")
            config = Config(spec.model, spec.dataset, None, spec.config_dict, spec.cmd_args)
            # errors name where the comparison got a key (a compare config file and section, a variant) first
            config.key_source = lambda key, known=config.key_source, spec=spec: spec.sources.get(key) or known(key)
            validate_config(config)
            spec.checked, spec.config = config, config.to_dict()
            spec.config_hash, spec.error, spec.refusal = config_hash(spec.config), None, None
        except Exception as err:  # any other config error fails this run only
            spec.error = f"{type(err).__name__}: {err}".strip()
            spec.refusal = str(err) if isinstance(err, (ConfigError, PlanError)) else None


def refuse_bad_input(specs: Sequence[RunSpec]) -> None:
    """Bad input refuses the whole comparison before anything runs: one :class:`PlanError` with the distinct
    refusals, each prefixed with the labels it concerns unless every label."""
    refusals: dict[str, list[str]] = {}
    for spec in (s for s in specs if s.refusal):
        refusals[spec.refusal] = list(dict.fromkeys([*refusals.get(spec.refusal, []), spec.label]))
    every = list(dict.fromkeys(s.label for s in specs))
    if refusals:
        raise PlanError("; ".join(message if labels == every else f"{', '.join(labels)}: {message}"
                                  for message, labels in refusals.items()))


def check_data(specs: Sequence[RunSpec]) -> None:
    """Read and split the data of the resolved ``specs`` once per distinct data configuration (:func:`data_key`),
    here in the driver, with ``run``'s data checks (:func:`~recbole_promptmm.validate.prepare_data`: bad files,
    NaN features, an empty validation split, values that must fit the data): bad data refuses the comparison
    (:func:`refuse_bad_input`) before Ray starts. Nothing is written and no data is kept."""
    groups: dict[str, list[RunSpec]] = {}
    for spec in (s for s in specs if s.checked is not None and not s.error):
        groups.setdefault(data_key(spec.checked), []).append(spec)
    for group in groups.values():
        config = group[0].checked
        config["save_dataset"] = config["save_dataloaders"] = False  # a check writes nothing
        try:
            init_seed(config["seed"], config["reproducibility"])
            dataset = prepare_data(config)[0]
            for spec in group[1:]:
                validate_against_data(spec.checked, dataset)  # another model's values (NCL's num_clusters, ...)
        except (ValueError, FileNotFoundError, KeyError) as err:
            message = " ".join(str(err.args[0] if isinstance(err, KeyError) and err.args else err).split())
            for spec in group:
                spec.refusal = spec.refusal or message
        except Exception as err:  # not bad input: these runs fail (reported), the others run
            for spec in group:
                spec.error = f"{type(err).__name__}: {err}".strip()
    refuse_bad_input(specs)


def has_validation_split(config: Mapping[str, Any]) -> bool:
    """Whether the resolved config holds out a validation set (needed for early stopping and selection)."""
    if config.get("benchmark_filename"):
        return len(config["benchmark_filename"]) >= 3
    if config.get("mmrec_inter_file"):
        return True  # x_label 1 is the validation split (recbole_promptmm/data/mmrec.py)
    split = (config.get("eval_args") or {}).get("split") or {}
    if "RS" in split:
        return len(split["RS"]) >= 3 and float(split["RS"][1]) > 0
    return split.get("LS", "valid_and_test") == "valid_and_test"


def check_protocol(specs: Sequence[RunSpec]) -> dict[str, Any]:
    """The protocol every resolved spec shares, with a validation split (:class:`PlanError` else; ``eval_step`` is
    checked by run's :func:`~recbole_promptmm.validate.validate_config`)."""
    resolved = [s for s in specs if s.config is not None]
    if not resolved:
        return {}
    first = resolved[0]
    protocol = {k: first.config.get(k) for k in PROTOCOL_KEYS}
    for spec, key in ((s, k) for s in resolved[1:] for k in PROTOCOL_KEYS):
        if spec.config.get(key) != protocol[key]:
            raise PlanError(
                f"{spec.label} (seed {spec.seed}) has {key}={spec.config.get(key)!r} but {first.label} has "
                f"{protocol[key]!r}: every model of a comparison must share the split, evaluator and early "
                f"stopping; set {key} in the shared config or on the command line, not per model")
    if not has_validation_split(first.config):
        raise PlanError(f"the split {first.config.get('eval_args')} has no validation set: the comparison selects "
                        "the best epoch on validation (e.g. eval_args: {split: {RS: [0.8, 0.1, 0.1]}})")
    return protocol


def link_shared_teachers(specs: Sequence[RunSpec]) -> list[str]:
    """Let runs of a multi-stage model (:func:`is_staged`) with the same seed and the same stage 1 train one
    stage-1 output (the teacher); returns notes.

    Two runs share when their resolved configs are equal apart from the variants' own keys that leave stage 1
    unchanged; the teacher is trained by the model's own run when compared, else by the first variant. A run
    given a stage output (the model's ``stage_output_key``, e.g. ``teacher_checkpoint``) shares nothing.
    """
    runs = [s for s in specs if s.config and is_staged(s.model)
            and not s.config.get(get_model(s.model).stage_output_key)]
    free: set[str] = set()
    for spec in runs:
        if spec.entry.variant is not None and spec.entry.variant.shares_stage_one(spec.config):
            free |= set(spec.entry.variant.overrides) - get_model(spec.model).stage_one_keys(spec.config)
    ignored = free | VOLATILE_KEYS | {get_model(s.model).stage_output_key for s in runs}
    providers: dict[tuple, RunSpec] = {}
    sharing, notes = [], []
    for spec in sorted(runs, key=lambda s: s.entry.variant is not None):  # the model's own run first
        variant = spec.entry.variant
        if variant is not None and not variant.shares_stage_one(spec.config):
            continue
        key = (spec.model, spec.seed, json.dumps({k: v for k, v in spec.config.items() if k not in ignored},
                                                 sort_keys=True, default=str))
        provider = providers.setdefault(key, spec)
        if provider is not spec:
            spec.teacher_from = provider.label
            sharing += [spec.label] if spec.label not in sharing else []
        elif variant is not None and any(s.entry.variant is None and s.model == spec.model and s.seed == spec.seed
                                         for s in runs):
            note = f"{spec.label} trains its own teacher: its config differs from {spec.model}'s beyond its own keys"
            notes += [note] if note not in notes else []
    if sharing:
        notes.insert(0, f"runs reusing the stage-1 teacher of another run with the same seed (identical stage-1 "
                        f"config; --no_share_teacher trains one per run): {', '.join(sharing)}")
    return notes


def attach_teacher(spec: RunSpec, provider_result: Mapping[str, Any]) -> None:
    """Point ``spec`` at the stage-1 output (teacher checkpoint) of its provider's result and resolve its config
    again (the path is part of the config, hence of the cache key)."""
    path, key = (provider_result.get("teacher") or {}).get("checkpoint"), get_model(spec.model).stage_output_key
    if not path or not os.path.isfile(path):
        spec.error = (f"the teacher checkpoint of {spec.teacher_from} seed {spec.seed} ({path}) is missing; rerun "
                      f"{spec.teacher_from} or pass --no_share_teacher")
        return
    spec.cmd_args = [a for a in spec.cmd_args if not a.startswith(f"--{key}=")] + [f"--{key}={path!r}"]
    resolve([spec])
