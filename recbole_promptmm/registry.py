"""The model registry: our models (each marks itself with :func:`register`), then RecBole's built-ins.

Imports nothing of this package: any layer may ask it for a model class, a trainer or a model name. The registry
fills as the modules of :mod:`recbole_promptmm.model` are imported (``import recbole_promptmm`` imports them all).
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import os

import recbole
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

RECBOLE_MODEL_PACKAGES = ("general_recommender", "context_aware_recommender", "sequential_recommender",
                          "knowledge_aware_recommender")
TRAINER_MODULE = "recbole_promptmm.trainer"

_MODELS: dict[str, type] = {}
_TRAINERS: dict[str, str | None] = {}
_MULTIMODAL: set[str] = set()


def register(trainer: str | None = None, multimodal: bool = False):
    """Class decorator: make a model known by its class name. ``trainer``: the name of its trainer class in
    :mod:`recbole_promptmm.trainer` (None: RecBole's choice); ``multimodal``: it can be PromptMM's
    ``teacher_model``."""
    def add(cls: type) -> type:
        name = cls.__name__
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model {name} is registered twice ({_MODELS[name].__module__}, {cls.__module__})")
        _MODELS[name], _TRAINERS[name] = cls, trainer
        if multimodal:
            _MULTIMODAL.add(name)
        return cls
    return add


def our_models() -> dict[str, type]:
    """Name -> class of every registered model, by name (import order is no order)."""
    return {name: _MODELS[name] for name in sorted(_MODELS)}


@functools.lru_cache(maxsize=None)
def recbole_model_names() -> tuple[str, ...]:
    """Names of RecBole's general, context-aware, sequential and knowledge-aware models, read from the
    ``__init__.py`` of each ``recbole.model`` subpackage (parsed, not imported: no model module is loaded)."""
    names: list[str] = []
    for package in RECBOLE_MODEL_PACKAGES:
        init = os.path.join(os.path.dirname(recbole.__file__), "model", package, "__init__.py")
        if not os.path.isfile(init):
            continue
        with open(init, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=init)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recbole.model."):
                names += [alias.asname or alias.name for alias in node.names if alias.name != "*"]
    return tuple(dict.fromkeys(names))


def model_names() -> list[str]:
    """Every model name :func:`get_model` knows: ours, then RecBole's built-ins."""
    return list(dict.fromkeys([*our_models(), *recbole_model_names()]))


def resolve_model_name(name: str) -> str:
    """``name`` spelled as the model is called: an exact match first, else the one model whose name matches
    case-insensitively (``lightgcn`` -> ``LightGCN``); ``name`` itself when nothing matches."""
    known = model_names()
    if name in known:
        return name
    matches = [k for k in known if k.lower() == str(name).lower()]
    return matches[0] if len(matches) == 1 else name


def close_model_names(name: str, n: int = 3) -> list[str]:
    """Up to ``n`` known model names close to ``name`` (compared case-insensitively)."""
    by_lower = {k.lower(): k for k in model_names()}
    return [by_lower[k] for k in difflib.get_close_matches(str(name).lower(), list(by_lower), n=n, cutoff=0.6)]


def get_model(name: str) -> type:
    """The model class called ``name``: one of ours (:mod:`recbole_promptmm.model`) or a RecBole built-in.

    The exact name is tried first, then a unique case-insensitive match among our models and RecBole's
    general/context/sequential/knowledge models (``lightgcn`` gives LightGCN); otherwise a ``ValueError``
    that suggests the closest names."""
    resolved = resolve_model_name(name)
    if resolved in _MODELS:
        return _MODELS[resolved]
    try:
        return recbole_get_model(resolved)
    except (ValueError, ImportError, AttributeError):
        # ValueError: no such module; AttributeError: a module named like the model without that class (a
        # wrong case); ImportError: RecBole's xgboost/lightgbm wrappers, without those packages.
        pass
    close = close_model_names(name)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    known = ", ".join(our_models()) or "none yet"
    raise ValueError(
        f"unknown model {name!r}: not one of ours ({known}) nor a RecBole built-in (e.g. BPR, LightGCN){hint}"
    )


def multimodal_models() -> list[str]:
    """Names of our multimodal models (any of them can be PromptMM's ``teacher_model``)."""
    return [name for name in our_models() if name in _MULTIMODAL]


def get_trainer(model_type, model_name: str) -> type:
    """The trainer :func:`register` named for the model (a class of :mod:`recbole_promptmm.trainer`), else
    RecBole's choice; always with our checkpoint fixes."""
    # by name, when asked: the trainers import models, so the registry must not import the trainers
    trainers = importlib.import_module(TRAINER_MODULE)
    name = _TRAINERS.get(model_name)
    trainer = getattr(trainers, name) if name else recbole_get_trainer(model_type, model_name)
    return trainers.with_checkpoint_fixes(trainer)
