"""The typed config schema of our keys: one :class:`Key` per key (type, bounds, choices, whether ``~`` is allowed),
declared in Python next to the code that reads it.

* Each of our models declares its keys in a class attribute ``config_keys = declare(key=Key(...), ...)``; a class
  inherits the declarations of the classes it derives from (:func:`declared_keys` merges them along the MRO, the
  subclass winning). A model whose keys depend on the user's config (PromptMM: its own, the student's and the
  chosen teacher's) adds them through a ``config_keys_from(given)`` class method.
* :data:`DATASET_KEYS`: our keys for every model (``properties/overall.yaml``, the dataset yaml files).
* :data:`RECBOLE_UNLISTED_KEYS`: keys RecBole 1.2.1's code reads or sets that none of its yaml files or argument
  lists names (so they are known keys; their values are RecBole's business).

The yaml files under ``properties/`` hold the defaults only; a test checks that every key there is declared and
that every default satisfies its declaration. :mod:`recbole_promptmm.validate` reads the declarations.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from recbole_promptmm.distributed import DDP_BATCHES

TYPES = ("int", "float", "bool", "str", "list", "dict", "any")
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "True or False", "str": "a string",
               "list": "a list", "dict": "a mapping", "any": "a value"}


def is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not is_bool(value)


def is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not is_bool(value)


_TYPE_CHECKS = {
    "int": is_int,
    "float": lambda v: is_real(v) and math.isfinite(v),  # an int is fine where a float is expected
    "bool": is_bool,
    "str": lambda v: isinstance(v, (str, os.PathLike)),
    "list": lambda v: isinstance(v, (list, tuple)),
    "dict": lambda v: isinstance(v, dict),
    "any": lambda v: True,
}


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


@dataclass(frozen=True)
class Key:
    """One config key: ``type`` (one of :data:`TYPES`), the bounds ``low``/``high`` (inclusive unless
    ``low_open``/``high_open``), the allowed ``choices`` (string switches), ``optional`` (``~``/None accepted:
    the code falls back to another value) and a one-line ``help``.

    A value fits when it is None and the key is optional, or when it has the type (an int counts as a float; a
    float must be finite), lies within the bounds and, with choices, is one of them."""

    type: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"Key type {self.type!r} is none of {', '.join(TYPES)}")
        if self.choices and self.type != "str":
            raise ValueError(f"Key with choices {self.choices} must be of type str, not {self.type}")
        if (self.low is not None or self.high is not None) and self.type not in ("int", "float"):
            raise ValueError(f"Key with bounds must be of type int or float, not {self.type}")

    def fits(self, value: Any) -> bool:
        """Whether ``value`` satisfies this declaration (see the class docstring)."""
        if value is None:
            return self.optional
        if not _TYPE_CHECKS[self.type](value):
            return False
        if self.choices:
            return value in self.choices
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def expected(self) -> str:
        """What a value must be, in words: ``an integer >= 1``, ``a number in [0, 1)``, ``one of a, b``."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        words = _TYPE_WORDS[self.type]
        if self.low is not None and self.high is not None:
            return (f"{words} in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{words} {'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None:
            return f"{words} {'<' if self.high_open else '<='} {_number(self.high)}"
        return words


def declare(**keys: Key) -> Mapping[str, Key]:
    """A model's declaration: ``config_keys = declare(n_layers=Key("int", low=0), ...)`` (read-only)."""
    for name, key in keys.items():
        if not isinstance(key, Key):
            raise TypeError(f"config key {name} is declared with {key!r}, not a Key")
    return MappingProxyType(dict(keys))


# -------------------------------------------------------------------------------------------- shared shapes
def positive_int(help: str = "", optional: bool = False) -> Key:
    """An integer >= 1 (sizes, counts)."""
    return Key("int", low=1, optional=optional, help=help)


def layers(help: str = "", low: int = 0) -> Key:
    """A layer count: an integer >= ``low`` (0 = no propagation)."""
    return Key("int", low=low, help=help)


def weight(help: str = "") -> Key:
    """A loss weight: a number >= 0 (below 0 it would maximise its loss)."""
    return Key("float", low=0, help=help)


def positive(help: str = "", optional: bool = False) -> Key:
    """A number > 0 (learning rates, temperatures: 0 divides by zero or never moves)."""
    return Key("float", low=0, low_open=True, optional=optional, help=help)


def ratio(help: str = "", high_open: bool = False) -> Key:
    """A number in [0, 1] (``high_open``: [0, 1), e.g. a dropout ratio: torch divides by 1 - p)."""
    return Key("float", low=0, high=1, high_open=high_open, help=help)


def switch(*choices: str, help: str = "", optional: bool = False) -> Key:
    """A string switch: one of ``choices``."""
    return Key("str", choices=tuple(choices), optional=optional, help=help)


def flag(help: str = "") -> Key:
    return Key("bool", help=help)


DATASET_KEYS: Mapping[str, Key] = declare(
    mmrec_inter_file=Key("str", optional=True, help="an interaction file in MMRec's layout (userID itemID [rating] "
                         "[timestamp] x_label; x_label 0/1/2 = train/valid/test), relative to the dataset folder"),
    modality_features=Key("dict", optional=True, help="modality name -> .npy file (row k = item token k), "
                          "'builtin:...' file or {item_field: ...} (recbole_promptmm/data/features.py)"),
    ddp_batch=switch(*DDP_BATCHES, help="with --nproc > 1: train_batch_size is the global batch, split over the "
                     "processes, or each process's batch"),
    eval_users_per_batch=positive_int("full-sort evaluation batches of this many users (eval_batch_size = this x "
                                      "item_num, unless eval_batch_size is given)"),
    train_batches_per_epoch=positive_int("when set: train_batch_size = ceil(train interactions / this), unless "
                                         "train_batch_size is given", optional=True),
)

# Keys RecBole 1.2.1's code reads or sets (config["key"]) that none of its yaml files or argument lists names.
RECBOLE_UNLISTED_KEYS = (
    "model", "dataset", "MODEL_TYPE", "MODEL_INPUT_TYPE", "device", "local_rank", "nproc", "world_size", "ip",
    "port", "offset", "single_spec", "verbose", "eval_type", "neg_sampling", "training_neg_sample_num",
    "test_neg_sample_args", "valid_neg_sample_args", "encoding", "tail_ratio", "token_num_threshold",
    "xgb_early_stopping_rounds", "feature_num", "cin", "contrast", "sim", "use_filter", "has_residual", "norm", "eta",
    "CROP_ITEM_SEQ", "CROP_ITEM_SEQ_LEN", "INVERSE_ITEM_SEQ", "MASK_INDEX", "MASK_ITEM_SEQ", "NEG_ITEMS",
    "POS_ITEMS", "REORDER_ITEM_SEQ",
)


def own_keys(model_class: type) -> dict[str, Key]:
    """The ``config_keys`` of ``model_class`` and of the classes it derives from, base classes first (a
    subclass's declaration wins). {} for a class without declarations (RecBole's models)."""
    keys: dict[str, Key] = {}
    for cls in reversed(model_class.__mro__):
        keys.update(cls.__dict__.get("config_keys") or {})
    return keys


def declared_keys(model_class: type | None, given: Mapping | None = None) -> dict[str, Key]:
    """Every key a run of ``model_class`` reads: :func:`own_keys`, above the keys of its
    ``config_keys_from(given)`` when it has one (given: the user's values, e.g. PromptMM's ``teacher_model``)."""
    if model_class is None:
        return {}
    keys = dict(model_class.config_keys_from(dict(given or {}))) if hasattr(model_class, "config_keys_from") else {}
    return {**keys, **own_keys(model_class)}
