"""Config rules of PromptMM runs: how the teacher's config derives from the run's (the naming rule below), which
keys stage 1 depends on, and the values a run shares with a trained teacher.

Naming rule for the teacher's settings: the teacher sees the run's config exactly as a standalone run of
``teacher_model`` would (its own yaml defaults, unprefixed), except that every ``teacher_<key>`` that is set
(not ``~``) overrides ``<key>`` for the teacher alone: ``teacher_learning_rate``, ``teacher_epochs``,
``teacher_n_layers``, ... (``teacher_model`` itself names the model; ``teacher_checkpoint`` is PromptMM's own).
The student's keys are ``student_<key>`` (properties/model/PromptMMStudent.yaml).

Models are found through :mod:`recbole_promptmm.registry`; this module imports no model.
"""

from __future__ import annotations

import dataclasses

from recbole_promptmm.config import config_for_model, load_yaml
from recbole_promptmm import paths
from recbole_promptmm.registry import get_model, multimodal_models
from recbole_promptmm.schema import Key, declared_keys

STAGES = ("teacher", "student")
KD_MODES = ("paper", "official")
TEACHER_PREFIX = "teacher_"
# PromptMM's own keys that carry the prefix but are not teacher settings.
NOT_TEACHER_SETTINGS = ("teacher_checkpoint",)
DEFAULT_TEACHER = "PromptMMTeacher"


def teacher_model_class(name) -> type:
    """The multimodal model class called ``name`` (resolved through the model registry), or a clear error."""
    cls = get_model(name) if isinstance(name, str) else name
    if not (isinstance(cls, type) and cls.__name__ in multimodal_models() and get_model(cls.__name__) is cls):
        raise ValueError(f"teacher_model {name!r} is not a multimodal model; use one of {', '.join(multimodal_models())}")
    return cls


def teacher_config(config):
    """The config the teacher sees (see the naming rule in the module docstring): a RecBole ``Config``."""
    overrides = {key[len(TEACHER_PREFIX):]: value for key, value in config.final_config_dict.items()
                 if key.startswith(TEACHER_PREFIX) and key not in NOT_TEACHER_SETTINGS and value is not None}
    cls = teacher_model_class(overrides.pop("model", config["model"]))
    return config_for_model(config, cls, overrides)


def teacher_keys(teacher_model) -> dict[str, Key]:
    """The keys the teacher declares (:func:`~recbole_promptmm.schema.declared_keys`: its own and those it
    inherits, e.g. the prompt's) and the ``teacher_<key>`` form of each, which accepts ``~`` (not overridden)."""
    keys = declared_keys(teacher_model_class(teacher_model))
    return {**keys, **{TEACHER_PREFIX + k: dataclasses.replace(v, optional=True) for k, v in keys.items()}}


def stage_one_keys(teacher_model: str) -> set[str]:
    """Config keys that change what stage 1 (the teacher's training) produces: ``teacher_model``, every key the
    teacher declares (its own and those it inherits, e.g. the prompt's), the epoch bound, and the
    ``teacher_<key>`` form of each (derived from the declarations, never listed by hand)."""
    keys = {"epochs", *declared_keys(teacher_model_class(teacher_model))}
    return {"teacher_model", *keys, *(TEACHER_PREFIX + k for k in keys)}


def teacher_setting_keys(teacher_model: str) -> tuple[str, ...]:
    """What a PromptMM run must share with a trained teacher: its model, hidden size and ``forward_keys()``."""
    return ("teacher_model", "embedding_size", *teacher_model_class(teacher_model).forward_keys())


def teacher_settings(teacher_cfg) -> dict:
    """The :func:`teacher_setting_keys` values of a trained teacher, from its config (e.g. the one stored in its
    checkpoint), under the names a PromptMM run reads."""
    values = {k: teacher_cfg[k] for k in teacher_setting_keys(teacher_cfg["model"])[1:]}
    return {"teacher_model": teacher_cfg["model"], **{k: v for k, v in values.items() if v is not None}}


def default_teacher() -> str:
    """The ``teacher_model`` of PromptMM's yaml defaults (:data:`DEFAULT_TEACHER` when it names none)."""
    return load_yaml(paths.properties_dir() / "model" / "PromptMM.yaml").get("teacher_model", DEFAULT_TEACHER)
