"""Resolve models and trainers: ours first, RecBole's built-ins otherwise."""

from __future__ import annotations

import importlib

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_promptmm.trainer import with_checkpoint_fixes


def get_model(name: str) -> type:
    """The model class called ``name``: one of ours (:mod:`recbole_promptmm.model`) or a RecBole built-in."""
    ours = importlib.import_module("recbole_promptmm.model")
    if name in getattr(ours, "__all__", []):
        return getattr(ours, name)
    try:
        return recbole_get_model(name)
    except (ValueError, ImportError):  # RecBole imports its xgboost/lightgbm wrappers last, failing without them
        known = ", ".join(ours.__all__) or "none yet"
        raise ValueError(
            f"unknown model {name!r}: not one of ours ({known}) nor a RecBole built-in (e.g. BPR, LightGCN)"
        ) from None


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
