"""Minimal fixes that let RecBole 1.2.1 run on numpy 2, scipy >= 1.13 and torch >= 2.6.

Applied once, when :mod:`recbole_promptmm` is imported (so also in every Ray worker). Each fix is the
smallest one that works; see ``../shared/design/RECBOLE.md`` for the breakages they answer.

* numpy 2 removed ``float_``, ``complex_`` and ``unicode_``; RecBole's ``Config`` reads them before it defines
  the other old aliases itself (``np.float``, ``np.int``, ...; its metrics use ``np.float``). A process that
  never builds a ``Config`` (``load_data_and_model`` unpickles one) needs those too: they are set here, as
  RecBole's ``Config.compatibility_settings`` sets them.
* scipy >= 1.13 removed ``dok_matrix._update``, which RecBole's LightGCN, NGCF, NCL, ... call to build their
  adjacency matrices.
* torch >= 2.6 loads with ``weights_only=True`` by default, and RecBole's own loaders
  (``recbole.quick_start.load_data_and_model``, ``Trainer.evaluate(load_best_model=True)``,
  ``Trainer.resume_checkpoint``) call ``torch.load`` without arguments. Three causes made every checkpoint fail:

  1. RecBole writes checkpoints with ``pickle_protocol=4``, which torch's safe unpickler cannot read at all
     ("Unsupported operand 149", the protocol-4 FRAME opcode; pytorch/pytorch#118092). RecBole's
     ``Trainer._save_checkpoint`` now writes protocol :data:`CHECKPOINT_PROTOCOL` (2, torch's own default; the
     pickle holds only the Config and tensor metadata, the tensors live in separate records).
  2. The pickled RecBole ``Config`` held ``model_class``, the model class itself, so every checkpoint named
     arbitrary code. ``Config`` now pickles without it and finds the class again by its name on unpickling
     (through :func:`recbole_promptmm.utils.get_model`: ours, then RecBole's).
  3. What remains is allow-listed with ``torch.serialization.add_safe_globals``, exactly what the checkpoints
     of our trainers and RecBole's hold (:func:`checkpoint_safe_globals`). torch's safe loading stays on for
     every other file.

* Every reader of a checkpoint goes through :func:`load_checkpoint`, RecBole's ``load_data_and_model`` too: a
  file that is not a checkpoint (missing, truncated, not a torch file, another kind of object) is one
  :class:`CheckpointError` naming the file and what it holds.
* RecBole's ``recbole.utils.get_model`` (used by its ``Config``, ``run_recbole`` and ``load_data_and_model``)
  only searches ``recbole.model.<kind>.<name lower-cased>`` modules: each of our model modules is registered
  under ``recbole.model.general_recommender.<name lower-cased>`` in ``sys.modules``, so it finds ours too.
  RecBole's ``create_dataset`` takes ``recbole.data.dataset.<Model>Dataset`` when it exists: our models that need
  modality features get :class:`~recbole_promptmm.data.MultimodalDataset` there.
* RecBole's ``ensure_dir`` checks for a folder and then creates it, so two runs started together in one folder
  could both find ``./log`` missing and the second crash with ``FileExistsError``. Every RecBole module that
  imported it now holds :func:`_ensure_dir` (``os.makedirs(..., exist_ok=True)``).
"""

from __future__ import annotations

import collections
import importlib
import os
import pickle
import re
import sys
import warnings
import zipfile
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

_NUMPY_ALIASES = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}
# What RecBole 1.2.1's Config.compatibility_settings sets (only the names numpy does not define any more).
_RECBOLE_NUMPY_ALIASES = {"bool": np.bool_, "int": np.int_, "float": np.float64, "complex": np.complex128,
                          "object": np.object_, "str": np.str_, "long": np.int_, "unicode": np.str_}

# torch's default protocol: the only one torch's weights_only unpickler reads (pytorch/pytorch#118092).
CHECKPOINT_PROTOCOL = 2


def _dok_update(self, data) -> None:
    """Stand-in for the private ``dok_matrix._update`` removed in scipy 1.13 (bulk ``dict.update``)."""
    self._dict.update(data)


def _ensure_dir(dir_path: str) -> None:
    """RecBole's ``ensure_dir`` without its check-then-create race."""
    os.makedirs(dir_path, exist_ok=True)


def _fix_ensure_dir() -> None:
    import recbole.data  # noqa: F401  (imports every RecBole module that uses ensure_dir)
    import recbole.trainer  # noqa: F401
    import recbole.utils.logger  # noqa: F401
    import recbole.utils.utils as recbole_utils

    original = recbole_utils.ensure_dir
    for name, module in list(sys.modules.items()):
        if (name == "recbole" or name.startswith("recbole.")) and getattr(module, "ensure_dir", None) is original:
            module.ensure_dir = _ensure_dir


def apply() -> None:
    """Apply the fixes; idempotent."""
    for name, value in {**_NUMPY_ALIASES, **_RECBOLE_NUMPY_ALIASES}.items():
        if name not in np.__dict__:
            setattr(np, name, value)
    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = _dok_update
    _fix_checkpoints()
    _fix_ensure_dir()
    register_models()
    _filter_known_warnings()


KNOWN_WARNINGS = (
    # RecBole 1.2.1's Trainer builds torch.cuda.amp.GradScaler every epoch (deprecated name; same behaviour)
    (FutureWarning, r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated"),
    # RecBole's Dataset fills missing numeric features with fillna(inplace=True) on a column (pandas 2.2 warns
    # that this stops working in pandas 3; we pin pandas < 3)
    (FutureWarning, r"A value is trying to be set on a copy of a DataFrame or Series through chained assignment"),
    # torch, on the first CSR tensor of a process (our graphs and LATTICE's kNN graphs are CSR: the fast layout)
    (UserWarning, r"Sparse CSR tensor support is in beta state"),
    # RecBole 1.2.1's LightGCN, NGCF, NCL, SGL, DMF, GCMC build their graphs with the deprecated
    # torch.sparse.FloatTensor(indices, values, shape) (same tensor as torch.sparse_coo_tensor)
    (UserWarning, r"torch\.sparse\.SparseTensor\(indices, values, shape, \*, device=\) is deprecated"),
)
"""Library warnings that every run printed and that say nothing about the user's run; each is filtered by its
exact message (and category) only, so any other warning still shows."""


def _filter_known_warnings() -> None:
    import warnings

    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


# --------------------------------------------------------------------------------------------- checkpoints
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
    import yaml
    from recbole.config import Config as RecBoleConfig
    from recbole.utils.enum_type import EvaluatorType, InputType, ModelType

    from recbole_promptmm.config import Config

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


def _config_getstate(self) -> dict:
    """A ``Config`` pickles without ``model_class`` (a class: safe loading would have to trust any code)."""
    state = dict(self.__dict__)
    state.pop("model_class", None)
    return state


def _config_setstate(self, state: dict) -> None:
    self.__dict__.update(state)
    if "model_class" not in state:
        from recbole_promptmm.utils import get_model

        try:
            self.model_class = get_model(state["model"])
        except (KeyError, ValueError, ImportError):  # a model this install does not know: no class
            self.model_class = None


def _save_checkpoint(self, epoch, verbose=True, **kwargs):
    """RecBole 1.2.1's ``Trainer._save_checkpoint``, with protocol :data:`CHECKPOINT_PROTOCOL` instead of 4."""
    from recbole.utils import set_color

    if not self.config["single_spec"] and self.config["local_rank"] != 0:
        return
    saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
    state = {
        "config": self.config,
        "epoch": epoch,
        "cur_step": self.cur_step,
        "best_valid_score": self.best_valid_score,
        "state_dict": self.model.state_dict(),
        "other_parameter": self.model.other_parameter(),
        "optimizer": self.optimizer.state_dict(),
    }
    torch.save(state, saved_model_file, pickle_protocol=CHECKPOINT_PROTOCOL)
    if verbose:
        self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")


def _fix_checkpoints() -> None:
    import recbole.quick_start
    import recbole.quick_start.quick_start as recbole_quick_start
    from recbole.config import Config as RecBoleConfig
    from recbole.trainer import Trainer

    RecBoleConfig.__getstate__ = _config_getstate
    RecBoleConfig.__setstate__ = _config_setstate
    Trainer._save_checkpoint = _save_checkpoint
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
    global _recbole_load_data_and_model
    if _recbole_load_data_and_model is None:
        _recbole_load_data_and_model = recbole_quick_start.load_data_and_model
    recbole.quick_start.load_data_and_model = recbole_quick_start.load_data_and_model = load_data_and_model


_recbole_load_data_and_model = None


def load_data_and_model(model_file):
    """RecBole's ``recbole.quick_start.load_data_and_model`` (which this replaces there), after
    :func:`load_checkpoint` has read ``model_file``: a file that is no checkpoint is a :class:`CheckpointError`
    before RecBole creates its log file or loads the dataset (RecBole then reads the file again)."""
    load_checkpoint(model_file, what="model_file")
    return _recbole_load_data_and_model(model_file)


# Besides the allow-list: what torch itself pickles into a checkpoint (state dicts, optimizer states, devices).
_TORCH_GLOBALS = {
    "collections.OrderedDict": collections.OrderedDict,
    "torch.device": torch.device,
    "torch.Size": torch.Size,
    "torch.nn.parameter.Parameter": torch.nn.Parameter,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "_codecs.encode": __import__("codecs").encode,
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
    if module.startswith(_MODEL_MODULES):  # model_class of a Config pickled before the fix above
        from recbole.model.abstract_recommender import AbstractRecommender

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
                "RecBole or recbole_promptmm (see recbole_promptmm.compat.checkpoint_safe_globals)")
        return obj


class _RestrictedPickle:
    """A ``pickle_module`` for ``torch.load``: Python's pickle with :class:`_RestrictedUnpickler`."""

    Unpickler = _RestrictedUnpickler
    load = staticmethod(lambda file, **kw: _RestrictedUnpickler(file, **kw).load())
    __name__ = "recbole_promptmm.compat._RestrictedPickle"


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
                "which no checkpoint holds (see recbole_promptmm.compat.checkpoint_safe_globals)")
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
    from recbole.config import Config as RecBoleConfig

    if not isinstance(obj, dict):
        return f"it holds an object of type {type(obj).__name__}, not a dict with {' and '.join(CHECKPOINT_KEYS)}"
    missing = [k for k in CHECKPOINT_KEYS if k not in obj]
    if missing:
        keys = ", ".join(map(str, list(obj)[:6])) + (", ..." if len(obj) > 6 else "")
        return f"it holds a dict without {' and '.join(missing)} (its keys: {keys or 'none'})"
    if not isinstance(obj["config"], RecBoleConfig):
        return f"its config is an object of type {type(obj['config']).__name__}, not a RecBole Config"
    return None


def register_models() -> None:
    """Make RecBole's ``get_model`` and ``create_dataset`` know our models (see the module docstring)."""
    import recbole.data.dataset as recbole_datasets

    from recbole_promptmm.data.dataset import MultimodalDataset

    ours = importlib.import_module("recbole_promptmm.model")
    for name in ours.__all__:
        cls = getattr(ours, name)
        sys.modules.setdefault(f"recbole.model.general_recommender.{name.lower()}", sys.modules[cls.__module__])
        if getattr(cls, "needs_modality_features", False) and not hasattr(recbole_datasets, f"{name}Dataset"):
            setattr(recbole_datasets, f"{name}Dataset", MultimodalDataset)
