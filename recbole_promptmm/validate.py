"""Check a resolved :class:`~recbole_promptmm.config.Config` before anything is loaded or written.

:func:`validate_config` refuses, with one :class:`ConfigError` (a ``ValueError``) that names every problem:

* **unknown keys**: a key the user gave (config files, ``config_dict``, command line) that is none of
  :func:`known_keys`: RecBole's (the keys of its yaml files: ``recbole/properties`` overall, model/*, dataset/*,
  quick_start_config/*; its argument lists; :data:`~recbole_promptmm.schema.RECBOLE_UNLISTED_KEYS`), the keys our
  models and datasets declare (:mod:`recbole_promptmm.schema`), and the ``teacher_<key>`` form of each
  (PromptMM's naming rule). The message suggests the closest known keys. A key of your own is let through by
  listing it in ``extra_keys: [my_key, ...]``.
* **our keys** (:func:`_check_declared`): every key the run's model declares (PromptMM: its own, the student's,
  its ``teacher_model``'s and their ``teacher_<key>`` forms) and our dataset-level keys
  (:data:`~recbole_promptmm.schema.DATASET_KEYS`), defaults included, must fit its
  :class:`~recbole_promptmm.schema.Key`: type, bounds, choices, ``~`` only where the key is optional. A key of
  ours given to a model that does not declare it (``--knn_search`` for BPR) must fit one of our declarations.
* **RecBole's keys**: a user value must have the type of the key's defaults in RecBole's yaml files (``int``,
  ``float``, ``bool``, ``str``; an int is fine where a float is expected; ``teacher_<key>`` takes the type of
  ``<key>``; keys whose defaults are lists or dicts are not type-checked); and the ranges of
  :func:`_range_problem`: ``learning_rate`` and every ``*_learning_rate`` a number > 0; ``epochs`` and every
  ``*_epochs`` an integer >= 1; batch sizes and ``embedding_size`` integers >= 1; ``stopping_step`` an
  integer; ``eval_step`` from 1 to the ``epochs`` of each stage (RecBole validates no epoch otherwise: the run would
  train blind); ``topk`` positive integers; and the :data:`RANGE_RULES` by name: every
  ``*temperature`` > 0, every ``*_weight`` >= 0, every ``*dropout*`` ratio in [0, 1), layer counts integers >= 0.
* **teacher_model**: a multimodal model of the registry, resolved case-insensitively.
* **files**: a ``teacher_checkpoint`` that does not exist; for PromptMM, one that is no checkpoint or does not
  fit this run's teacher (another dataset, model or teacher settings): a ``TeacherCheckpointError`` (a
  ``ConfigError``), raised once the other checks pass.

:func:`validate_against_data` runs once the dataset is loaded (still before anything is written): values that must
fit the data, e.g. NCL's ``num_clusters`` (k-means needs at least that many users and items; RecBole's default
1000 exceeds ml-100k's 943 users). :func:`validate_splits` refuses a split whose validation part is empty (RecBole
would train without selecting anything), naming the ``eval_args`` split, the ``benchmark_filename`` or the MMRec
file. :func:`prepare_data` reads and splits the data with both: ``run``, ``compare`` and ``tune`` (once, in the
driver, before Ray starts) read their data through it.

Output paths are checked in :mod:`recbole_promptmm.files` (one rule for every writer).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

import recbole
import yaml
from recbole.utils import argument_list

from recbole_promptmm.config import DuplicateKeyLoader, load_yaml
from recbole_promptmm.config_rules import TEACHER_PREFIX
from recbole_promptmm.data import create_dataset, data_preparation
from recbole_promptmm.data.mmrec import SPLIT_COLUMN, mmrec_inter_path
from recbole_promptmm.errors import ConfigError
from recbole_promptmm.model.promptmm import PromptMM
from recbole_promptmm.paths import properties_dir
from recbole_promptmm.registry import multimodal_models, our_models, resolve_model_name
from recbole_promptmm.schema import (
    DATASET_KEYS,
    RECBOLE_UNLISTED_KEYS,
    Key,
    is_bool,
    is_int,
    is_real,
    declared_keys,
    own_keys,
)
from recbole_promptmm.trainer.promptmm import read_teacher_checkpoint

EXTRA_KEYS = "extra_keys"
CHECKED_TYPES = ("int", "float", "bool", "str")
# Keys that must hold a value (None is refused): RecBole's trainer does arithmetic with them.
REQUIRED = ("learning_rate", "epochs", "train_batch_size", "eval_batch_size", "stopping_step", "eval_step")
POSITIVE_INTS = ("train_batch_size", "eval_batch_size", "embedding_size")  # RecBole's; ours are declared (schema)
INTS = ("stopping_step", "eval_step")


# ---------------------------------------------------------------------------------------------- known keys
def recbole_properties_dir() -> Path:
    return Path(recbole.__file__).resolve().parent / "properties"


def recbole_yaml_files() -> list[Path]:
    """RecBole's own yaml files: overall.yaml, model/*, dataset/*, quick_start_config/*."""
    root = recbole_properties_dir()
    files = [root / "overall.yaml"]
    for sub in ("model", "dataset", "quick_start_config"):
        files += sorted((root / sub).glob("*.yaml"))
    return [f for f in files if f.is_file()]


def our_yaml_files() -> list[Path]:
    """Our yaml defaults: properties/overall.yaml, model/*, dataset/* (the tune/ search spaces are no defaults)."""
    root = properties_dir()
    files = [root / "overall.yaml", *sorted((root / "model").glob("*.yaml")),
             *sorted((root / "dataset").glob("*.yaml"))]
    return [f for f in files if f.is_file()]


def _is_url_table(values: dict) -> bool:
    """RecBole's dataset/url.yaml and kg_url.yaml map dataset names to download addresses: no config keys."""
    return bool(values) and all(isinstance(v, str) and re.match(r"^[a-z]+://", v) for v in values.values())


def _fast_loader() -> type | None:
    """libyaml's safe loader with the resolvers of our config loader (RecBole's float rule): ten times faster
    than the pure-Python one over RecBole's hundred yaml files; None without libyaml."""
    if not getattr(yaml, "__with_libyaml__", False):
        return None
    loader = type("FastConfigLoader", (yaml.CSafeLoader,), {})
    loader.yaml_implicit_resolvers = {k: list(v) for k, v in DuplicateKeyLoader.yaml_implicit_resolvers.items()}
    return loader


def _read_defaults(path: Path, loader: type | None) -> dict:
    if loader is None:
        return load_yaml(path)
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.load(f, Loader=loader)
    except yaml.YAMLError:
        return load_yaml(path)  # e.g. a tag the safe loader refuses: read as RecBole does
    return values if isinstance(values, dict) else {}


@functools.lru_cache(maxsize=None)
def _recbole_index() -> tuple[dict[str, set[str]], frozenset[str]]:
    """(key -> type names of its non-None defaults in RecBole's yaml files, every key RecBole knows: its yaml
    keys, its argument lists and :data:`~recbole_promptmm.schema.RECBOLE_UNLISTED_KEYS`)."""
    loader = _fast_loader()
    types: dict[str, set[str]] = {}
    keys: set[str] = set(RECBOLE_UNLISTED_KEYS)
    for name in ("general_arguments", "training_arguments", "evaluation_arguments", "dataset_arguments"):
        keys.update(getattr(argument_list, name, []))
    for path in recbole_yaml_files():
        values = _read_defaults(path, loader)
        if _is_url_table(values):
            continue
        keys |= {str(k) for k in values}
        for key, value in values.items():
            if value is not None:
                types.setdefault(str(key), set()).add(type(value).__name__)
    return types, frozenset(keys)


@functools.lru_cache(maxsize=None)
def our_declarations() -> dict[str, tuple[Key, ...]]:
    """Key -> its declarations by any of our models (each model's :func:`~recbole_promptmm.schema.own_keys`) and
    :data:`DATASET_KEYS` (one per distinct declaration)."""
    found: dict[str, list[Key]] = {}
    for cls in (None, *our_models().values()):
        for key, declared in (own_keys(cls) if cls else DATASET_KEYS).items():
            if declared not in found.setdefault(key, []):
                found[key].append(declared)
    return {key: tuple(keys) for key, keys in found.items()}


@functools.lru_cache(maxsize=None)
def base_keys() -> frozenset[str]:
    """Known keys without the ``teacher_`` forms: RecBole's (:func:`_recbole_index`) and the keys our models and
    datasets declare (:func:`our_declarations`)."""
    return frozenset({*_recbole_index()[1], *our_declarations(), EXTRA_KEYS})


@functools.lru_cache(maxsize=None)
def known_keys() -> frozenset[str]:
    """:func:`base_keys` and ``teacher_<key>`` for each (PromptMM overrides any key for its teacher so)."""
    base = base_keys()
    return base | {TEACHER_PREFIX + k for k in base}


def close_keys(key: str, n: int = 3) -> list[str]:
    """Up to ``n`` known keys close to ``key`` (plain keys first, then ``teacher_`` forms)."""
    close = difflib.get_close_matches(key, sorted(base_keys()), n=n)
    if len(close) < n:
        close += [k for k in difflib.get_close_matches(key, sorted(known_keys()), n=n) if k not in close]
    return close[:n]


def expected_types(key: str) -> set[str] | None:
    """Type names a user value of RecBole's ``key`` may have (from RecBole's yaml defaults), or None when the key
    is not type-checked (no typed default, or a list/dict one)."""
    types = _recbole_index()[0].get(key)
    if not types and key.startswith(TEACHER_PREFIX):
        types = _recbole_index()[0].get(key[len(TEACHER_PREFIX):])
    if not types or not types <= set(CHECKED_TYPES):
        return None
    return types


# ---------------------------------------------------------------------------------------------- value checks
def _has_type(value: Any, types: set[str]) -> bool:
    checks: dict[str, Callable[[Any], bool]] = {
        "int": is_int,
        "float": is_real,
        "bool": is_bool,
        "str": lambda v: isinstance(v, (str, os.PathLike)),
    }
    return any(checks[t](value) for t in types)


_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "True or False", "str": "a string"}


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _user_keys(config) -> dict[str, None]:
    keys: dict[str, None] = {}
    for name in ("file_config_dict", "variable_config_dict", "cmd_config_dict"):
        keys.update(dict.fromkeys(getattr(config, name, None) or {}))
    return keys


def _source(config, key: str) -> str:
    if hasattr(config, "key_source"):
        return config.key_source(key)
    return "the config"


def _extra_keys(config, problems: list[str]) -> set[str]:
    value = config.final_config_dict.get(EXTRA_KEYS)
    if value is None:
        return set()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        problems.append(f"{EXTRA_KEYS}={value!r} (from {_source(config, EXTRA_KEYS)}): expected a list of key names")
        return set()
    return set(value)


def _check_unknown(config, extra: set[str], problems: list[str]) -> None:
    known = known_keys()
    for key in _user_keys(config):
        if key in known or key in extra:
            continue
        close = close_keys(str(key))
        hint = f"; closest known keys: {', '.join(close)}" if close else ""
        problems.append(
            f"unknown config key {key!r} from {_source(config, key)}{hint} (to pass a key of your own, list it "
            f"in {EXTRA_KEYS}: [{key}])"
        )


def run_schema(config) -> dict[str, Key]:
    """The declarations that govern this run: :data:`DATASET_KEYS` and the keys its model declares
    (:func:`~recbole_promptmm.schema.declared_keys`; PromptMM's depend on its ``teacher_model``)."""
    model_class = getattr(config, "model_class", None)
    final = config.final_config_dict
    given = {"teacher_model": final.get("teacher_model")} if final.get("teacher_model") else {}
    try:
        return {**DATASET_KEYS, **declared_keys(model_class if isinstance(model_class, type) else None, given)}
    except ValueError:  # a teacher_model that is no multimodal model: _check_choices names it
        return {**DATASET_KEYS, **declared_keys(model_class)}


def _declarations(key: str, run: dict[str, Key], user: dict[str, None]) -> tuple[Key, ...]:
    """The declarations ``key`` must fit: the run's own; else, for a key the user gave that only we declare
    (RecBole knows no key of that name), any of our models' declarations, with ``~`` accepted (this run reads no
    such key: ``~`` leaves it unset; ``teacher_<key>``: the declarations of ``<key>``); () for RecBole's keys."""
    if key in run:
        return (run[key],)
    if key not in user:
        return ()
    base = key[len(TEACHER_PREFIX):] if key.startswith(TEACHER_PREFIX) and key not in base_keys() else key
    if base in _recbole_index()[1] or base not in our_declarations():
        return ()
    return tuple(dataclasses.replace(k, optional=True) for k in our_declarations()[base])


def _check_declared(config, problems: list[str], checked: set[str], extra: set[str]) -> None:
    """Every key with a declaration (:func:`_declarations`), defaults included, fits one of them."""
    final, run, user = config.final_config_dict, run_schema(config), _user_keys(config)
    for key, value in final.items():
        declared = _declarations(key, run, user) if isinstance(key, str) and key not in extra else ()
        checked.update({key} if declared else ())
        if declared and not any(k.fits(value) for k in declared):
            expected = " or ".join(dict.fromkeys(k.expected() for k in declared))
            problems.append(f"config key {key}={_describe(value)} from {_source(config, key)}: expected {expected}")


def _check_types(config, problems: list[str], checked: set[str], extra: set[str]) -> None:
    """RecBole's keys: a user value has the type of the key's defaults in RecBole's yaml files."""
    final = config.final_config_dict
    for key in _user_keys(config):
        if key in extra or key in checked or key not in final:
            continue
        value = final[key]
        types = expected_types(key)
        if value is None or types is None or _has_type(value, types):
            continue
        expected = " or ".join(_TYPE_WORDS[t] for t in CHECKED_TYPES if t in types)
        problems.append(f"config key {key}={_describe(value)} from {_source(config, key)}: expected {expected}")
        checked.add(key)


def _range_problem(key: str, value: Any) -> str | None:
    """What RecBole's ``key`` must be when ``value`` is out of its range (see the module docstring), else None."""
    if value is None:
        return "a value, not None" if key in REQUIRED else None
    if key == "learning_rate" or key.endswith("_learning_rate"):
        ok, expected = is_real(value) and math.isfinite(value) and value > 0, "a number > 0"
    elif key == "epochs" or key.endswith("_epochs"):
        ok, expected = is_int(value) and value >= 1, "an integer >= 1"
    elif key in POSITIVE_INTS or key.startswith(TEACHER_PREFIX) and key[len(TEACHER_PREFIX):] in POSITIVE_INTS:
        ok, expected = is_int(value) and value >= 1, "an integer >= 1"
    elif key in INTS:
        ok, expected = is_int(value), "an integer"
    elif key == "topk":
        values = value if isinstance(value, (list, tuple)) else [value]
        ok = bool(values) and all(is_int(k) and k >= 1 for k in values)
        expected = "a positive integer or a list of positive integers"
    else:
        rule = _range_rule(key[len(TEACHER_PREFIX):] if key.startswith(TEACHER_PREFIX) else key)
        if rule is None or not is_real(value):
            return None
        ok, expected = rule[0](value), rule[1]
    return None if ok else expected


def _check_ranges(config, problems: list[str], checked: set[str], extra: set[str]) -> None:
    """RecBole's keys (those no declaration governs): :func:`_range_problem`."""
    final = config.final_config_dict
    for key, value in final.items():
        if not isinstance(key, str) or key in checked:
            continue
        expected = _range_problem(key, value)
        if expected is not None:
            checked.add(key)
            problems.append(f"config key {key}={_describe(value)} from {_source(config, key)}: expected {expected}")


# RecBole's numeric keys that misbehave silently outside a range, matched by name (after any ``teacher_`` prefix);
# our own keys are declared (recbole_promptmm.schema). A value of another type (a list of dropouts) is left alone.
RANGE_RULES: tuple[tuple[Callable[[str], bool], Callable[[float], bool], str], ...] = (
    # a temperature divides the scores: 0 is a division by zero, a negative one flips the ranking
    (lambda k: k.endswith("temperature"), lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    # a loss weight (regularisers, contrastive terms) below 0 maximises its loss
    (lambda k: k.endswith("_weight"), lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    # a dropout ratio of 1 drops everything (torch divides by 1 - p)
    (lambda k: "dropout" in k, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    (lambda k: k == "n_layers" or k.endswith("_layers"), lambda v: is_int(v) and v >= 0, "an integer >= 0"),
)


def _range_rule(key: str) -> tuple[Callable[[float], bool], str] | None:
    """(check, what is expected) of the first :data:`RANGE_RULES` entry that matches ``key``, or None."""
    for matches, check, expected in RANGE_RULES:
        if matches(key):
            return check, expected
    return None


def _check_choices(config, problems: list[str], checked: set[str], extra: set[str]) -> None:
    """``teacher_model``: a multimodal model of the registry (resolved case-insensitively)."""
    final = config.final_config_dict
    teacher = final.get("teacher_model")
    if isinstance(teacher, str):  # another type is named by the declaration
        allowed = multimodal_models()
        name = resolve_model_name(teacher) if isinstance(teacher, str) else teacher
        if name not in allowed:
            problems.append(f"config key teacher_model={_describe(teacher)} from {_source(config, 'teacher_model')}: "
                            f"expected a multimodal model, one of {', '.join(allowed)}")
        else:
            final["teacher_model"] = name  # the model's own spelling (freedom -> FREEDOM)


def _check_files(config, problems: list[str]) -> None:
    path = config.final_config_dict.get("teacher_checkpoint")
    if path is None:
        return
    source = _source(config, "teacher_checkpoint")
    if not isinstance(path, (str, os.PathLike)):
        problems.append(f"config key teacher_checkpoint={_describe(path)} from {source}: expected a file path")
    elif not os.path.isfile(path):
        problems.append(f"teacher_checkpoint {os.fspath(path)} (from {source}) does not exist"
                        + (" (it is a folder)" if os.path.isdir(path) else ""))


SPLIT_PARTS = "train, valid, test"


def _check_split_parts(config, problems: list[str]) -> None:
    """RecBole splits the data in exactly 3 parts (train, valid, test): ``benchmark_filename`` names 3 files, and
    an ``RS``/``TS`` split of ``eval_args`` gives 3 ratios (ignored where ``mmrec_inter_file`` holds the split)."""
    final = config.final_config_dict
    if final.get("mmrec_inter_file"):
        return
    benchmark = final.get("benchmark_filename")
    if benchmark is not None:
        if not isinstance(benchmark, (list, tuple)) or len(benchmark) != 3:
            found = f"{len(benchmark)}" if isinstance(benchmark, (list, tuple)) else "no list"
            problems.append(f"config key benchmark_filename={_describe(benchmark)} from "
                            f"{_source(config, 'benchmark_filename')}: expected 3 parts ({SPLIT_PARTS}; files "
                            f"<dataset>.<part>.inter), found {found}")
        return
    split = (final.get("eval_args") or {}).get("split")
    for mode in ("RS", "TS"):
        ratios = split.get(mode) if isinstance(split, dict) else None
        if isinstance(ratios, (list, tuple)) and len(ratios) != 3:
            problems.append(f"config key eval_args split {{{mode}: {list(ratios)}}} from {_source(config, 'eval_args')}"
                            f": expected 3 ratios ({SPLIT_PARTS}), found {len(ratios)}")


def _stage_epochs(final: dict) -> list[tuple[str, str]]:
    """(eval_step key, epochs key) that bound each training stage: ``eval_step`` and ``epochs``; for a staged
    model (PromptMM) ``teacher_<key>`` (unless a ``teacher_checkpoint`` skips stage 1) and ``student_epochs`` where
    set (the naming rule: ``~`` = the plain key)."""
    if "teacher_epochs" not in final and "student_epochs" not in final:
        return [("eval_step", "epochs")]

    def own(key: str) -> str:
        return key if final.get(key) is not None else key.split("_", 1)[1]
    student = [("eval_step", own("student_epochs"))]
    return student if final.get("teacher_checkpoint") else [(own("teacher_eval_step"), own("teacher_epochs")), *student]


def _check_eval_step(config, problems: list[str], reported: set[str]) -> None:
    """RecBole's trainer validates after epoch e (0-based) when ``(e + 1) % eval_step == 0`` and never when
    ``eval_step <= 0``: each stage needs ``1 <= eval_step <= epochs``, or it trains blind (no best epoch, no early
    stopping, the last epoch tested)."""
    final = config.final_config_dict
    for step_key, epochs_key in _stage_epochs(final):
        step, epochs = final.get(step_key), final.get(epochs_key)
        if step_key in reported or not is_int(step) or not is_int(epochs) or 1 <= step <= epochs:
            continue
        reported.add(step_key)
        bound = "an integer >= 1" if step < 1 else f"at most {epochs_key}={epochs}"
        problems.append(f"config key {step_key}={step} from {_source(config, step_key)}: expected {bound} "
                        f"(validation after every {step_key}-th epoch chooses the best one; {step} validates none)")


def validate_config(config) -> None:
    """Raise one :class:`ConfigError` naming every problem of ``config`` (see the module docstring)."""
    problems: list[str] = []
    extra = _extra_keys(config, problems)
    _check_unknown(config, extra, problems)
    checked: set[str] = set()
    for check in (_check_declared, _check_ranges, _check_types, _check_choices):
        found: list[str] = []
        check(config, found, checked, extra)
        problems += found
    _check_files(config, problems)
    _check_split_parts(config, problems)
    _check_eval_step(config, problems, checked)
    if problems:
        raise ConfigError("; ".join(problems))
    _check_teacher_checkpoint(config)


def _check_teacher_checkpoint(config) -> None:
    """Read a PromptMM run's ``teacher_checkpoint`` now, before the dataset loads and the log starts: a file that
    is no checkpoint, or whose model, dataset or teacher settings do not fit this run's teacher, fails here
    (:func:`~recbole_promptmm.trainer.promptmm.read_teacher_checkpoint`, which the trainer calls again)."""
    path = config.final_config_dict.get("teacher_checkpoint")
    model_class = getattr(config, "model_class", None)  # None: a config stand-in without a model (a search value)
    if path and isinstance(model_class, type) and issubclass(model_class, PromptMM):
        read_teacher_checkpoint(os.fspath(path), config)


# (model, key) -> (what the key counts, the largest value the dataset allows): values that must fit the data
DATA_LIMITS: dict[tuple[str, str], tuple[str, Callable[[Any], int]]] = {
    ("NCL", "num_clusters"): ("k-means clusters over the rows of its user and item embedding tables, padding row "
                              "included", lambda dataset: min(dataset.user_num, dataset.item_num)),
}


def validate_against_data(config, dataset) -> None:
    """Raise a :class:`ConfigError` for a value that cannot work with this dataset (:data:`DATA_LIMITS`)."""
    for (model, key), (what, limit) in DATA_LIMITS.items():
        value = config.final_config_dict.get(key)
        if config["model"] == model and isinstance(value, int) and value > limit(dataset):
            raise ConfigError(f"config key {key}={value} from {_source(config, key)}: {model} needs at most "
                              f"{limit(dataset)} ({what}; {config['dataset']} has {dataset.user_num - 1} users and "
                              f"{dataset.item_num - 1} items); pass e.g. --{key}={max(1, limit(dataset) // 10)}")


# ---------------------------------------------------------------------------------------------- data and outputs
def _split_setting(config) -> str:
    """What made the validation split empty, named by the setting or the file that defines the split."""
    mmrec = mmrec_inter_path(config)
    if mmrec is not None:
        return f"the MMRec file {mmrec} has no row with {SPLIT_COLUMN} 1 (the validation split)"
    parts = config["benchmark_filename"]
    if parts:
        where = f"benchmark_filename={list(parts)!r} (from {_source(config, 'benchmark_filename')})"
        if len(parts) < 3:
            return f"{where} names no validation file (expected [train, valid, test] parts)"
        valid_file = os.path.join(config["data_path"], f"{config['dataset']}.{parts[1]}.inter")
        return f"{valid_file} ({where}) has no interaction left for validation"
    split = (config["eval_args"] or {}).get("split") or {}
    where = f"eval_args split {split} (from {_source(config, 'eval_args')})"
    if "RS" in split:
        ratios = list(split["RS"])
        if len(ratios) < 3 or not float(ratios[1]) > 0:
            return f"{where} holds out no validation ratio (the second of three; e.g. RS: [0.8, 0.1, 0.1])"
        return f"{where} leaves no interaction for validation on this data; raise the second ratio"
    if "LS" in split:
        return f"{where} holds out no validation interaction (LS: valid_and_test does)"
    return f"{where} leaves the validation split empty"


def validate_splits(config, valid_data) -> None:
    """Refuse a split whose validation part is empty: RecBole's trainer skips validation on an empty loader, so
    nothing would be selected (no best epoch; the last epoch's weights tested). Names the setting or file."""
    if valid_data is not None and len(valid_data._dataset) > 0:
        return
    raise ConfigError(f"no validation data: {_split_setting(config)}; the best epoch is chosen on validation")


def data_key(config) -> str:
    """The values :func:`prepare_data` depends on (RecBole's dataset and evaluation keys, the data path, the seed,
    the model's input type and negative sampling, the feature files), as one string: equal keys, equal data."""
    keys = {*config.parameters["Dataset"], *config.parameters["Evaluation"], "dataset", "data_path", "seed",
            "MODEL_INPUT_TYPE", "train_neg_sample_args", "modality_features", "mmrec_inter_file"}
    return json.dumps({k: config.final_config_dict.get(k) for k in keys}, sort_keys=True, default=str)


def prepare_data(config) -> tuple[Any, tuple[Any, Any, Any]]:
    """``(dataset, (train_data, valid_data, test_data))`` with every check on the data: the loader's own (files,
    features), :func:`validate_against_data`, RecBole's ``data_preparation`` (it sets the derived batch sizes),
    :func:`validate_splits`. Writes nothing unless the config asks RecBole to save datasets or dataloaders.
    ``run``, ``compare`` and ``tune`` read their data through it, before anything is started or written."""
    dataset = create_dataset(config)
    validate_against_data(config, dataset)
    loaders = data_preparation(config, dataset)
    validate_splits(config, loaders[1])
    return dataset, loaders


