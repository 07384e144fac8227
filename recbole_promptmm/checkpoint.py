"""Reading and writing checkpoints of our trainers and RecBole's, safely.

torch >= 2.6 loads with ``weights_only=True``; RecBole's checkpoints failed it for three reasons, each answered here
or by :mod:`recbole_promptmm.compat`:

1. RecBole wrote checkpoints with ``pickle_protocol=4``, which torch's safe unpickler cannot read ("Unsupported
   operand 149", the protocol-4 FRAME opcode; pytorch/pytorch#118092). Every checkpoint is now written with
   :data:`CHECKPOINT_PROTOCOL` (2, torch's own default; :func:`save_atomic`, and RecBole's ``_save_checkpoint`` as
   compat patches it); older files go through Python's restricted unpickler with the same allow-list.
2. The pickled RecBole ``Config`` held ``model_class``; compat makes it pickle without it (found again by name).
3. What remains is allow-listed with ``torch.serialization.add_safe_globals`` (:func:`checkpoint_safe_globals`,
   registered by compat); torch's safe loading stays on for every other file.

Every reader goes through :func:`load_checkpoint`: a file that is not a checkpoint (missing, truncated, not a torch
file, another kind of object) is one :class:`CheckpointError` naming the file and what it holds.
"""

from __future__ import annotations

import codecs
import collections
import importlib
import os
import pickle
import re
import warnings
import zipfile
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils.enum_type import EvaluatorType, InputType, ModelType

from recbole_promptmm.config import Config
from recbole_promptmm.files import atomic_path

# torch's default protocol: the only one torch's weights_only unpickler reads (pytorch/pytorch#118092).
CHECKPOINT_PROTOCOL = 2


def save_atomic(state: dict, path: str) -> None:
    """``torch.save`` through :func:`~recbole_promptmm.files.atomic_path`, in the pickle protocol torch's safe
    loader reads."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp, pickle_protocol=CHECKPOINT_PROTOCOL)


def checkpoint_safe_globals() -> list:
    """The globals (besides torch's defaults) that checkpoints of our trainers and of RecBole's hold.

    Found by loading real checkpoints (PromptMMStudent, PromptMMTeacher, PromptMM and its teacher file, and RecBole's
    Pop, ItemKNN, BPR, NeuMF, NGCF, LightGCN, SGL, NCL, EASE, DMF, AsymKNN, SLIMElastic) with
    ``torch.load(path, weights_only=True)`` and reading the errors:

    * the pickled ``Config`` (ours or RecBole's), the enum values it holds (``MODEL_TYPE``, ``MODEL_INPUT_TYPE``,
      ``eval_type``) and its ``yaml_loader`` (the class ``yaml.FullLoader``);
    * numpy scalars and arrays (``best_valid_score`` is a numpy float64; ItemKNN's and EASE's ``pred_mat`` are
      ``numpy.matrix``, SLIMElastic's sparse matrix holds object arrays): numpy's reconstructors, ``ndarray``,
      ``matrix``, ``dtype`` and the dtype classes of numbers and objects, as torch's documentation lists them
      for numpy (the objects inside an object array go through the same allow-list);
    * scipy sparse matrices (``other_parameter`` of ItemKNN, AsymKNN, EASE, SLIMElastic: csr, csc, coo, lil).
    """
    numpy_core = getattr(np, "_core", None) or np.core  # numpy 2: np._core; numpy 1.26: np.core
    numeric = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
               np.float16, np.float32, np.float64, np.object_)
    return [
        RecBoleConfig, Config,
        ModelType, InputType, EvaluatorType,
        yaml.FullLoader,
        numpy_core.multiarray.scalar, numpy_core.multiarray._reconstruct, np.ndarray, np.matrix, np.dtype,
        *{type(np.dtype(t)) for t in numeric},
        sp.csr_matrix, sp.csc_matrix, sp.coo_matrix, sp.lil_matrix,
    ]


# Besides the allow-list: what torch itself pickles into a checkpoint (state dicts, optimizer states, devices).
_TORCH_GLOBALS = {
    "collections.OrderedDict": collections.OrderedDict,
    "torch.device": torch.device,
    "torch.Size": torch.Size,
    "torch.nn.parameter.Parameter": torch.nn.Parameter,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "_codecs.encode": codecs.encode,
    **{f"torch._utils.{name}": getattr(torch._utils, name) for name in (
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state") if hasattr(torch._utils, name)},
}
_MODEL_MODULES = ("recbole.model.", "recbole_promptmm.model.")


def _allowed_global(module: str, name: str) -> Any:
    """The object ``module.name`` if a checkpoint may name it, else ``None``."""
    full = f"{module}.{name}"
    if full in _TORCH_GLOBALS:
        return _TORCH_GLOBALS[full]
    for obj in torch.serialization.get_safe_globals():
        obj, obj_name = obj if isinstance(obj, tuple) else (obj, f"{obj.__module__}.{obj.__qualname__}")
        if obj_name == full:
            return obj
    if module.startswith(_MODEL_MODULES):  # model_class of a Config pickled before compat's Config fix
        obj = getattr(importlib.import_module(module), name, None)
        if isinstance(obj, type) and issubclass(obj, AbstractRecommender):
            return obj
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    """Python's documented "restricting globals" unpickler: only :func:`_allowed_global` objects."""

    def find_class(self, module, name):
        obj = _allowed_global(module, name)
        if obj is None:
            raise pickle.UnpicklingError(
                f"checkpoint names the global {module}.{name}, which is not allow-listed; it was not written by "
                "RecBole or recbole_promptmm (see recbole_promptmm.checkpoint.checkpoint_safe_globals)")
        return obj


class _RestrictedPickle:
    """A ``pickle_module`` for ``torch.load``: Python's pickle with :class:`_RestrictedUnpickler`."""

    Unpickler = _RestrictedUnpickler
    load = staticmethod(lambda file, **kw: _RestrictedUnpickler(file, **kw).load())
    __name__ = "recbole_promptmm.checkpoint._RestrictedPickle"


def pickle_protocol(path: str | os.PathLike) -> int | None:
    """The pickle protocol of a (zip-format) torch checkpoint, ``None`` if it is not one."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl")
            head = archive.read(name)[:2]
    except (zipfile.BadZipFile, StopIteration, OSError):
        return None
    return head[1] if head[:1] == pickle.PROTO else None


class CheckpointError(ValueError):
    """A file that cannot be a checkpoint of RecBole or recbole_promptmm: missing, empty, truncated, not a torch
    file, or a torch file of another kind (an object outside the allow-list, no ``config`` / ``state_dict``). Its
    one-line message names the file and what it holds; never torch's advice to load it unsafely. A ``ValueError``:
    every entry point reports it as bad input (exit 2)."""


CHECKPOINT_KEYS = ("config", "state_dict")
"""What every reader takes from a checkpoint (RecBole's ``Trainer._save_checkpoint`` writes these among others; so do
our student files and resume files)."""


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu", what: str = "checkpoint") -> dict:
    """Load a checkpoint of our trainers or RecBole's, safely: ``torch.load(weights_only=True)`` with the
    allow-list above. Files written with pickle protocol > 2 (RecBole before this fix, PromptMM's
    ``-student.pth``), which torch's safe unpickler cannot read, go through the same allow-list in Python's
    restricted unpickler instead; a file naming anything else is refused either way.

    Anything else is a :class:`CheckpointError` whose message starts with ``what`` (how the user gave the file, e.g.
    ``teacher_checkpoint``, ``--checkpoint``) and the path."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} {path} " + ("is a folder, not a checkpoint file" if os.path.isdir(path)
                                                   else "does not exist"))
    protocol = pickle_protocol(path)
    try:
        with warnings.catch_warnings():  # torch's note on a plain pickle's protocol: the error below says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            if protocol is not None and protocol > CHECKPOINT_PROTOCOL:
                checkpoint = torch.load(path, map_location=device, weights_only=False, pickle_module=_RestrictedPickle)
            else:
                checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # bytes that are no checkpoint make torch's unpickler raise almost anything
        raise CheckpointError(f"{what} {path} {_unreadable(path, err)}") from None
    problem = _not_a_checkpoint(checkpoint)
    if problem:
        raise CheckpointError(f"{what} {path} is not a checkpoint of RecBole or recbole_promptmm: {problem}")
    return checkpoint


def _unreadable(path: str, err: Exception) -> str:
    """What a file that torch could not load holds, in a few words (from its first bytes and torch's error)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(256)
    named = re.search(r"GLOBAL ([\w.]+)|names the global ([\w.]+)", str(err))
    if named:
        return (f"is not a checkpoint of RecBole or recbole_promptmm: it names {named.group(1) or named.group(2)}, "
                "which no checkpoint holds (see recbole_promptmm.checkpoint.checkpoint_safe_globals)")
    if size == 0:
        return "is empty (0 bytes)"
    if head.startswith(b"PK\x03\x04"):  # torch's zip format
        if not zipfile.is_zipfile(path):
            return (f"is truncated: it starts as a torch checkpoint (a zip archive) but its end is missing "
                    f"({size} bytes)")
        return f"is damaged: a zip archive of {size} bytes that torch cannot read as a checkpoint ({_first_line(err)})"
    if head.startswith(pickle.PROTO):
        if isinstance(err, EOFError) or "truncated" in str(err):
            return f"is truncated: a pickle whose end is missing ({size} bytes)"
        return f"is a Python pickle ({size} bytes), not a torch checkpoint"
    text = None
    for cut in range(4):  # the first 256 bytes may end inside a UTF-8 character
        try:
            text = head[:len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    if text is not None and text.strip() and all(c.isprintable() or c.isspace() for c in text):
        first = text.strip().splitlines()[0]
        return f"is a text file, not a torch checkpoint (it starts {first[:40]!r}{'...' if len(first) > 40 else ''})"
    return f"is not a torch checkpoint: {size} bytes of binary data starting {head[:8].hex(' ')}"


def _first_line(err: Exception) -> str:
    """The first line of an error's message, shortened; never torch's advice about ``weights_only``."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return type(err).__name__ if "weights_only" in line else line[:120]


def _not_a_checkpoint(obj: Any) -> str | None:
    """Why a loaded object is not a checkpoint (``None`` when it is one)."""
    if not isinstance(obj, dict):
        return f"it holds an object of type {type(obj).__name__}, not a dict with {' and '.join(CHECKPOINT_KEYS)}"
    missing = [k for k in CHECKPOINT_KEYS if k not in obj]
    if missing:
        keys = ", ".join(map(str, list(obj)[:6])) + (", ..." if len(obj) > 6 else "")
        return f"it holds a dict without {' and '.join(missing)} (its keys: {keys or 'none'})"
    if not isinstance(obj["config"], RecBoleConfig):
        return f"its config is an object of type {type(obj['config']).__name__}, not a RecBole Config"
    return None
