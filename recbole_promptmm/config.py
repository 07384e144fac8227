"""A RecBole ``Config`` that knows our models, our yaml defaults and an explicit command line."""

from __future__ import annotations

import copy
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import yaml
from recbole.config import Config as RecBoleConfig

from recbole_promptmm.paths import properties_dir
from recbole_promptmm.registry import get_model


class DuplicateKeyLoader(yaml.FullLoader):
    """RecBole's yaml loader, refusing a key given twice in one mapping (yaml keeps the last silently)."""


# RecBole's float rule: "1e-3" and "1.e5" are floats, not strings (plain yaml reads them as strings).
DuplicateKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _construct_mapping_no_duplicates(loader: yaml.Loader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                "give each key once",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


DuplicateKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates
)


def load_yaml(path: str | os.PathLike) -> dict:
    """Read one yaml config file with RecBole's float rules and duplicate-key detection."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.load(f, Loader=DuplicateKeyLoader)
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path!r} is not valid yaml: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path!r} must hold a mapping of keys to values, found {type(data).__name__}")
    return data


def parse_cmd_args(args: Iterable[str]) -> dict[str, str]:
    """``--key=value`` pairs (values may contain ``=``); anything else is an error that names it."""
    parsed: dict[str, str] = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"command-line argument {arg!r} is not of the form --key=value")
        key, value = arg[2:].split("=", 1)
        if key in parsed and parsed[key] != value:
            raise ValueError(f"command-line key --{key} is given twice with different values")
        parsed[key] = value
    return parsed


class Config(RecBoleConfig):
    """RecBole's ``Config``, extended.

    * Models are resolved by :func:`recbole_promptmm.registry.get_model` (ours first, then RecBole's; a unique
      case-insensitive match is accepted, so ``model="lightgcn"`` gives ``config["model"] == "LightGCN"``).
    * Our ``properties/`` yaml defaults (``overall.yaml``, ``model/<Model>.yaml``, ``dataset/<dataset>.yaml``)
      are layered over RecBole's internal defaults, below every user-given value.
    * The command line is *not* read from ``sys.argv`` unless asked: pass ``cmd_args`` (a list of
      ``--key=value`` strings) or ``cmd_args=sys.argv[1:]``. Under pytest and in Ray workers nothing leaks in.
      ``recbole_cmd_line=True`` reads it as RecBole does instead (every ``--key=value`` of ``sys.argv``, anything
      else ignored with RecBole's warning): the ``Config`` of RecBole's own entry points for our models
      (:mod:`recbole_promptmm.compat`), whose scripts pass their options that way.
    * Config files are read with duplicate-key detection.

    Priority, low to high: RecBole defaults, our defaults, config files, ``config_dict``, ``cmd_args``.
    """

    def __init__(
        self,
        model: str | type | None = None,
        dataset: str | None = None,
        config_file_list: Sequence[str] | None = None,
        config_dict: dict | None = None,
        cmd_args: Sequence[str] | None = None,
        recbole_cmd_line: bool = False,
    ) -> None:
        self._cmd_args = list(cmd_args or [])
        self._recbole_cmd_line = recbole_cmd_line
        self.file_key_sources: dict[str, str] = {}  # key -> the config file that gave it (the last one)
        self._requested_model = model if isinstance(model, str) else getattr(model, "__name__", None)
        super().__init__(model, dataset, list(config_file_list or []), config_dict)
        data_path = self.final_config_dict.get("data_path")
        # The dataset folder as an absolute path: a checkpoint's config keeps it (not a config key, so no hash or
        # result changes), and recommend/export find the data from any working folder (serving.export.dataset_config).
        self.absolute_data_path = os.path.abspath(data_path) if isinstance(data_path, str) else None

    def _load_config_files(self, file_list):
        """The files' keys, later files winning. A compare config file's ``models:`` section
        (:mod:`recbole_promptmm.experiments.plan`) contributes the entry of the model being run, on top of that file's
        other keys, so one file serves ``run`` and ``compare`` alike."""
        merged: dict = {}
        for file in file_list or []:
            values = load_yaml(file)
            sections = values.pop("models", None)
            if isinstance(sections, dict) and self._requested_model:
                section = sections.get(self._requested_model) or {}
                if not isinstance(section, dict):
                    raise ValueError(f"config file {file}: models: {self._requested_model}: must be a mapping of "
                                     f"keys, found {section!r}")
                values.update({k: v for k, v in section.items() if k != "model"})
            merged.update(values)
            self.file_key_sources.update({key: os.fspath(file) for key in values})
            if isinstance(sections, dict) and isinstance(sections.get(self._requested_model), dict):
                self.file_key_sources.update({key: f"{os.fspath(file)} (models: {self._requested_model})"
                                              for key in sections[self._requested_model] if key != "model"})
        return merged

    def key_source(self, key: str) -> str:
        """Where the user gave ``key``: ``the command line (--key=...)``, ``config_dict`` or ``config file F``
        (the highest-priority source when several give it); ``defaults`` when no user source does."""
        if key in getattr(self, "cmd_config_dict", {}):
            raw = parse_cmd_args(self._cmd_args).get(key)
            return f"the command line (--{key}={raw})" if raw is not None else "the command line"
        if key in getattr(self, "variable_config_dict", {}):
            return "config_dict"
        if key in getattr(self, "file_config_dict", {}):
            return f"config file {self.file_key_sources.get(key, '?')}"
        return "defaults"

    def _load_cmd_line(self):
        if getattr(self, "_recbole_cmd_line", False):
            return super()._load_cmd_line()
        return self._convert_config_dict(parse_cmd_args(self._cmd_args))

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError("no model given: pass --model=NAME (or model: in a config file)")
        if isinstance(model, str):
            model = get_model(model)
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        props = properties_dir()
        model_files = [props / "model" / f"{name}.yaml" for name in (*default_sources(model_class, self), model)]
        model_keys: set = set()
        for file in (props / "overall.yaml", *model_files, dataset_yaml(props, dataset)):
            if file.is_file():
                values = load_yaml(file)
                self.internal_config_dict.update(values)
                if file.parent.name == "model":
                    model_keys.update(values)
                elif file.parent.name == "dataset":
                    # keys RecBole files under training/evaluation (e.g. epochs) stay there, and a model's own key
                    # given a per-dataset default (ml-100k's teacher_learning_rate) stays a model key
                    known = model_keys | {k for cat in self.parameters.values() for k in cat}
                    # a new list: RecBole's categories are its module-level lists, shared by every Config
                    self.parameters["Dataset"] = self.parameters["Dataset"] + [k for k in values if k not in known]

    def to_dict(self) -> dict:
        """The resolved configuration as plain JSON-able values."""
        return {k: plain(v) for k, v in sorted(self.final_config_dict.items())}


def device_name(device) -> str:
    """``cpu``, or ``cuda:<index>`` (RecBole's single-process device is ``cuda`` without one: the current device's)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def gpu_request(config: RecBoleConfig) -> str | None:
    """Where the user asked for a GPU, e.g. ``--use_gpu=True`` or ``device: cuda in config file a.yaml``: ``use_gpu``
    True or a ``device`` naming cuda, given in a config file, ``config_dict`` or on the command line (RecBole's default
    ``use_gpu: True`` asks nothing); None where nobody did."""
    given = getattr(config, "external_config_dict", {})
    if given.get("use_gpu") is True:
        key = "use_gpu"
    elif str(given.get("device", "")).startswith("cuda"):
        key = "device"
    else:
        return None
    source = config.key_source(key) if hasattr(config, "key_source") else "the config"
    return f"--{key}={given[key]}" if source.startswith("the command line") else f"{key}: {given[key]} in {source}"


def requested_model(model=None, config_file_list: Sequence[str] | None = None, config_dict: dict | None = None,
                    argv: Sequence[str] | None = None) -> str | None:
    """The name of the model a RecBole ``Config(model, dataset, config_file_list, config_dict)`` runs, by RecBole's
    priority: ``model`` (a name or a class), else the ``model`` key of the command line (``argv``, default
    ``sys.argv[1:]``), of ``config_dict``, of the last config file that gives one; None when none does."""
    if model is not None:
        return model if isinstance(model, str) else getattr(model, "__name__", None)
    for arg in reversed(list(sys.argv[1:] if argv is None else argv)):
        if arg.startswith("--model="):
            return arg[len("--model="):]
    if (config_dict or {}).get("model") is not None:
        return config_dict["model"]
    for file in reversed(list(config_file_list or [])):
        values = load_yaml(file) if os.path.isfile(file) else {}
        if values.get("model") is not None:
            return values["model"]
    return None


def config_for_model(config: RecBoleConfig, model_class: type, values: dict | None = None) -> RecBoleConfig:
    """A copy of ``config`` as a run of ``model_class`` would see it: ``model``, ``MODEL_TYPE`` and
    ``MODEL_INPUT_TYPE`` of that class, plus ``values`` (used for the teacher and the student of PromptMM, whose
    checkpoints must look like those of standalone runs)."""
    final = {**config.final_config_dict, **(values or {}), "model": model_class.__name__,
             "MODEL_TYPE": model_class.type, "MODEL_INPUT_TYPE": model_class.input_type}
    derived = copy.copy(config)
    derived.final_config_dict = final
    derived.model, derived.model_class = model_class.__name__, model_class
    return derived


SCALED_DATASET = re.compile(r"^(?P<family>.+)-[0-9.]+x$")


def dataset_yaml(props: Path, dataset: str) -> Path:
    """``properties/dataset/<dataset>.yaml``; for a scaled copy named ``<family>-<s>x`` without a file of its own
    (``synthetic-16x``: :mod:`recbole_promptmm.data.synthetic`), the family's ``<family>.yaml``."""
    own = props / "dataset" / f"{dataset}.yaml"
    match = SCALED_DATASET.match(dataset or "")
    if own.is_file() or match is None:
        return own
    return props / "dataset" / f"{match['family']}.yaml"


def default_sources(model_class: type, config: RecBoleConfig) -> tuple[str, ...]:
    """Names of the ``properties/model/*.yaml`` files layered below the model's own, lowest first: a model's
    ``defaults_from(given)`` (given: the user's config files, dict and command line merged), else its
    ``inherits_defaults_from``."""
    if hasattr(model_class, "defaults_from"):
        return tuple(model_class.defaults_from(dict(config.external_config_dict)))
    return tuple(getattr(model_class, "inherits_defaults_from", ()))


def plain(value: Any) -> Any:
    """``value`` as plain yaml/JSON types (lists for tuples, Python numbers for numpy scalars, else ``str``)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
