"""Resolve models and trainers: ours first, RecBole's built-ins otherwise."""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
import os

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_promptmm.trainer import with_checkpoint_fixes


RECBOLE_MODEL_PACKAGES = ("general_recommender", "context_aware_recommender", "sequential_recommender",
                          "knowledge_aware_recommender")


@functools.lru_cache(maxsize=None)
def recbole_model_names() -> tuple[str, ...]:
    """Names of RecBole's general, context-aware, sequential and knowledge-aware models, read from the
    ``__init__.py`` of each ``recbole.model`` subpackage (parsed, not imported: no model module is loaded)."""
    import recbole

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
    ours = importlib.import_module("recbole_promptmm.model")
    return list(dict.fromkeys([*getattr(ours, "__all__", []), *recbole_model_names()]))


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
    ours = importlib.import_module("recbole_promptmm.model")
    resolved = resolve_model_name(name)
    if resolved in getattr(ours, "__all__", []):
        return getattr(ours, resolved)
    try:
        return recbole_get_model(resolved)
    except (ValueError, ImportError, AttributeError):
        # ValueError: no such module; AttributeError: a module named like the model without that class (a
        # wrong case); ImportError: RecBole's xgboost/lightgbm wrappers, without those packages.
        pass
    close = close_model_names(name)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    known = ", ".join(ours.__all__) or "none yet"
    raise ValueError(
        f"unknown model {name!r}: not one of ours ({known}) nor a RecBole built-in (e.g. BPR, LightGCN){hint}"
    )


def multimodal_models() -> list[str]:
    """Names of our multimodal models (any of them can be PromptMM's ``teacher_model``)."""
    from recbole_promptmm.model.multimodal import MultimodalRecommender

    ours = importlib.import_module("recbole_promptmm.model")
    return [n for n in ours.__all__ if issubclass(getattr(ours, n), MultimodalRecommender)]


def get_trainer(model_type, model_name: str) -> type:
    """``<Model>Trainer`` from :mod:`recbole_promptmm.trainer` if there is one, else RecBole's choice;
    always with our checkpoint fixes."""
    ours = importlib.import_module("recbole_promptmm.trainer")
    trainer = getattr(ours, f"{model_name}Trainer", None) or recbole_get_trainer(model_type, model_name)
    return with_checkpoint_fixes(trainer)
