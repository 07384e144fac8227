"""Minimal fixes that let RecBole 1.2.1 run on numpy 2, scipy >= 1.13 and torch >= 2.6.

Applied once, when the package loads (:func:`recbole_promptmm.load`): at ``import recbole_promptmm`` where torch
or RecBole is imported already, else on first need (the first import of torch, RecBole or one of our modules
that needs them, or the first use of a public name such as ``recbole_promptmm.run``); so also in every Ray worker,
and never in ``recbole-promptmm serve``, which loads neither. Each fix is the smallest one that works; see
``../shared/design/RECBOLE.md`` for the breakages they answer.

* numpy 2 removed ``float_``, ``complex_`` and ``unicode_``; RecBole's ``Config`` reads them before it defines
  the other old aliases itself (``np.float``, ``np.int``, ...; its metrics use ``np.float``). A process that
  never builds a ``Config`` (``load_data_and_model`` unpickles one) needs those too: they are set here, as
  RecBole's ``Config.compatibility_settings`` sets them.
* scipy >= 1.13 removed ``dok_matrix._update``, which RecBole's LightGCN, NGCF, NCL, ... call to build their
  adjacency matrices.
* torch >= 2.6 loads with ``weights_only=True`` by default, and RecBole's own loaders
  (``recbole.quick_start.load_data_and_model``, ``Trainer.evaluate(load_best_model=True)``,
  ``Trainer.resume_checkpoint``) call ``torch.load`` without arguments. Three causes made every checkpoint fail
  (the reader and writer are :mod:`recbole_promptmm.checkpoint`; the patches are here):

  1. RecBole writes checkpoints with ``pickle_protocol=4``, which torch's safe unpickler cannot read at all
     ("Unsupported operand 149", the protocol-4 FRAME opcode; pytorch/pytorch#118092). RecBole's
     ``Trainer._save_checkpoint`` now writes protocol :data:`~recbole_promptmm.checkpoint.CHECKPOINT_PROTOCOL`
     (2, torch's own default; the pickle holds only the Config and tensor metadata, the tensors live in separate
     records).
  2. The pickled RecBole ``Config`` held ``model_class``, the model class itself, so every checkpoint named
     arbitrary code. ``Config`` now pickles without it and finds the class again by its name on unpickling
     (through :func:`recbole_promptmm.registry.get_model`: ours, then RecBole's).
  3. What remains is allow-listed with ``torch.serialization.add_safe_globals``, exactly what the checkpoints
     of our trainers and RecBole's hold (:func:`~recbole_promptmm.checkpoint.checkpoint_safe_globals`). torch's
     safe loading stays on for every other file.

* RecBole's ``load_data_and_model`` reads its file through
  :func:`~recbole_promptmm.checkpoint.load_checkpoint` first: a file that is not a checkpoint is one
  :class:`~recbole_promptmm.checkpoint.CheckpointError` naming the file and what it holds.
* RecBole's ``ensure_dir`` checks for a folder and then creates it, so two runs started together in one folder
  could both find ``./log`` missing and the second crash with ``FileExistsError``. Every RecBole module that
  imported it now holds :func:`_ensure_dir` (``os.makedirs(..., exist_ok=True)``).
* RecBole's ``Config`` reads neither ``use_gpu`` nor a given ``device``: it runs on CUDA wherever torch finds it.
  ``use_gpu: False`` or ``device: cpu`` now keep the run on the CPU (:func:`_init_device`).
* RecBole's multi-process run (``nproc`` > 1, :mod:`recbole_promptmm.distributed`) could not run on CPU:
  ``Config._init_device`` joins the process group with the NCCL backend and a CUDA device whatever the machine has,
  and ``AbstractTrainer`` gives ``DistributedDataParallel`` ``device_ids``, which a CPU module refuses. A process
  whose device is the CPU (RecBole's rule: no CUDA, or an empty ``gpu_id``) now joins with gloo on the CPU
  (:func:`_init_device`); on CUDA, RecBole's own code runs unchanged (NCCL, ``cuda:<local_rank>``). The trainer
  wraps its model with :func:`~recbole_promptmm.distributed.wrap` (``device_ids`` on CUDA only, buffers not
  broadcast: they are sparse graphs and features built from the data, the same on every rank).
  A checkpoint of such a run holds its config as a single process's (``single_spec``, ``local_rank`` 0), so RecBole's
  ``load_data_and_model`` (``recommend``, ``export``) reads it without a process group (:func:`_config_getstate`).
* RecBole's ``Trainer`` opens a TensorBoard writer in every process of such a run (rank 1's in a folder named
  after no log file); only the main process's writes now (:func:`_get_tensorboard`). Its folder is the one our
  :func:`~recbole_promptmm.log.init_logger` gave the run's log (``<run_dir>/log_tensorboard/<name>``), not RecBole's
  ``./log_tensorboard/`` relative to the working directory (which a log set up by RecBole's own code still gets).
* RecBole's training loader splits each batch over the processes (``train_batch_size`` is the global batch), so a
  model whose step propagates over the whole graph (LightGCN, our student) repeats that propagation in every
  process for the same number of steps and gains nothing on CPUs. ``ddp_batch: per_process`` makes
  ``train_batch_size`` each process's batch (PyTorch DDP's convention: the global batch is ``world_size`` times
  it, an epoch ``world_size`` times fewer steps) (:func:`_train_step`); ``global``, the default, is RecBole's.
* RecBole's ``Pop.calculate_loss`` adds 1 with an indexed assignment (``item_cnt[item] = item_cnt[item] + 1``), which
  counts an item once per batch however often it appears there, and it counts the sampled negatives of its pointwise
  batches (label 0) as well: its scores depended on ``train_batch_size`` (ml-100k test Recall@20 0.0542 at batch
  4096, 0.1824 at 128). :func:`_pop_calculate_loss` counts each positive row once (``index_add_``): an item's count
  is its number of training interactions, whatever the batch size.
* RecBole's own entry points, ``recbole.quick_start``'s ``run_recbole``, ``run_recboles`` (one process of its
  multi-process ``run``) and ``objective_function`` (its hyperopt objective), run our models as ``run`` does
  (:func:`_fix_quick_start`): their ``Config`` is our :class:`~recbole_promptmm.config.Config` (our model and
  dataset yaml, e.g. ml-100k's embedded modalities; the command line read as RecBole reads it), and ``create_dataset``, ``data_preparation``,
  ``get_model`` and ``get_trainer`` are ours, for our models only: RecBole's built-ins get RecBole's own, unchanged.
  RecBole's ``get_flops`` (there and in ``recbole.utils``) starts with ``copy.deepcopy(model)``, which torch refuses
  for a sparse CSR tensor (our graphs): the copy now shares such tensors with the model (:func:`_get_flops`; the
  count only reads them).
  ``run_recboles`` is wrapped by a function of this module, so that the processes RecBole spawns import this
  package (and know our models) before they run.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
import warnings

import numpy as np
import recbole.data  # noqa: F401  (with the two below: every RecBole module that uses ensure_dir)
import recbole.quick_start
import recbole.quick_start.quick_start as recbole_quick_start
import recbole.trainer  # noqa: F401
import recbole.trainer.trainer as recbole_trainer
import recbole.utils
import recbole.utils.logger  # noqa: F401
import recbole.utils.utils as recbole_utils
import scipy.sparse as sp
import torch
from recbole.config import Config as RecBoleConfig
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation as recbole_data_preparation
from recbole.data.dataloader import TrainDataLoader
from recbole.model.general_recommender.pop import Pop
from recbole.trainer import Trainer
from recbole.utils import get_flops as recbole_get_flops
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer
from recbole.utils import set_color
from torch.utils.tensorboard import SummaryWriter

from recbole_promptmm import distributed
from recbole_promptmm.checkpoint import CHECKPOINT_PROTOCOL, checkpoint_safe_globals, load_checkpoint
from recbole_promptmm.config import Config, requested_model
from recbole_promptmm.data import create_dataset, data_preparation
from recbole_promptmm.log import tensorboard_dir
from recbole_promptmm.registry import get_model, get_trainer, our_models, resolve_model_name

_NUMPY_ALIASES = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}
# What RecBole 1.2.1's Config.compatibility_settings sets (only the names numpy does not define any more).
_RECBOLE_NUMPY_ALIASES = {"bool": np.bool_, "int": np.int_, "float": np.float64, "complex": np.complex128,
                          "object": np.object_, "str": np.str_, "long": np.int_, "unicode": np.str_}


def _dok_update(self, data) -> None:
    """Stand-in for the private ``dok_matrix._update`` removed in scipy 1.13 (bulk ``dict.update``)."""
    self._dict.update(data)


def _ensure_dir(dir_path: str) -> None:
    """RecBole's ``ensure_dir`` without its check-then-create race."""
    os.makedirs(dir_path, exist_ok=True)


def _fix_ensure_dir() -> None:
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
    _fix_distributed()
    _fix_pop()
    _fix_quick_start()
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
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


# --------------------------------------------------------------------------------------------- checkpoints
def _config_getstate(self) -> dict:
    """A ``Config`` pickles without ``model_class`` (a class: safe loading would have to trust any code), and one
    of a process of a multi-process run pickles as a single process's: RecBole's ``load_data_and_model`` builds its
    data loaders from a checkpoint's config, and with ``single_spec`` False they would need a process group."""
    state = dict(self.__dict__)
    state.pop("model_class", None)
    final = state.get("final_config_dict")
    if final is not None and final.get("single_spec") is False:
        device = final.get("device")
        device = torch.device(device.type) if isinstance(device, torch.device) else device  # cuda:1 -> cuda
        state["final_config_dict"] = {**final, "single_spec": True, "local_rank": 0, "device": device}
    return state


def _config_setstate(self, state: dict) -> None:
    self.__dict__.update(state)
    if "model_class" not in state:
        try:
            self.model_class = get_model(state["model"])
        except (KeyError, ValueError, ImportError):  # a model this install does not know: no class
            self.model_class = None


def _save_checkpoint(self, epoch, verbose=True, **kwargs):
    """RecBole 1.2.1's ``Trainer._save_checkpoint``, with protocol
    :data:`~recbole_promptmm.checkpoint.CHECKPOINT_PROTOCOL` instead of 4."""
    if not distributed.is_main_process():  # RecBole: local_rank != 0; one writer per run, not per machine
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
    :func:`~recbole_promptmm.checkpoint.load_checkpoint` has read ``model_file``: a file that is no checkpoint is a
    ``CheckpointError`` before RecBole creates its log file or loads the dataset (RecBole then reads the file
    again)."""
    load_checkpoint(model_file, what="model_file")
    return _recbole_load_data_and_model(model_file)


# --------------------------------------------------------------------------------------------- several processes
_recbole_init_device = None


def _gpu_refused(config) -> bool:
    """The user's ``use_gpu: False``, or a ``device`` naming the CPU: RecBole 1.2.1 reads neither (it takes CUDA
    wherever torch finds it and ``gpu_id`` is not empty)."""
    given = config.external_config_dict
    return given.get("use_gpu") is False or str(given.get("device", "")).startswith("cpu")


def _init_device(self) -> None:
    """RecBole 1.2.1's ``Config._init_device``, on the CPU where the user refuses the GPU (:func:`_gpu_refused`); a
    process of a multi-process run (``local_rank`` given) whose device is the CPU joins its process group with gloo
    instead of NCCL (RecBole's code otherwise: CUDA keeps NCCL)."""
    final = self.final_config_dict
    gpu_id = final["gpu_id"]
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, tuple) else str(gpu_id)
    on_gpu = len(gpu_id) > 0 and torch.cuda.is_available() and not _gpu_refused(self)
    if "local_rank" not in final:
        _recbole_init_device(self)
        if not on_gpu:
            final["device"] = torch.device("cpu")
        return
    if on_gpu:
        _recbole_init_device(self)
        return
    final["gpu_id"] = gpu_id
    # RecBole's rule, which its _init_device applies in every other branch (gpu_id "" hides the GPUs: the trainer's
    # gpu_available is then False); kept so that this branch, which stands in for RecBole's, behaves as it does.
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
    torch.distributed.init_process_group(
        backend="gloo", rank=final["local_rank"] + final["offset"], world_size=final["world_size"],
        init_method=f"tcp://{final['ip']}:{final['port']}")
    final["device"] = torch.device("cpu")
    final["single_spec"] = False
    if final["local_rank"] != 0:  # RecBole's: the other processes of a machine say only what went wrong
        final["state"], final["show_progress"], final["verbose"] = "error", False, False


def _trainer_init(self, config, model) -> None:
    """RecBole's ``AbstractTrainer.__init__`` with :func:`~recbole_promptmm.distributed.wrap` (CPU modules take no
    ``device_ids``); ``SyncBatchNorm`` on CUDA only (it has no CPU kernel)."""
    self.config = config
    self.model = model
    if not config["single_spec"]:
        if config["device"].type == "cuda":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.distributed_model = distributed.wrap(self.model, config["device"])


_recbole_train_step = None


def _train_step(self) -> None:
    """RecBole's ``TrainDataLoader._init_batch_size_and_step``; with ``ddp_batch: per_process`` in a multi-process
    run the step is first multiplied by ``world_size``, so that RecBole's division by it leaves each process a whole
    ``train_batch_size`` batch."""
    _recbole_train_step(self)
    if not self.config["single_spec"] and self.config["ddp_batch"] == distributed.DDP_BATCHES[1]:
        self.step *= self.config["world_size"]


class _NoTensorBoard:
    """A TensorBoard writer that writes nothing (what the non-main processes of a run get)."""

    log_dir = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


_recbole_get_tensorboard = None


def _get_tensorboard(logger):
    """RecBole's ``get_tensorboard`` in the main process, in the folder the log names
    (:func:`~recbole_promptmm.log.tensorboard_dir`); a writer that writes nothing in the others and where the log
    wants none."""
    folder = tensorboard_dir(logger) if distributed.is_main_process() else ""
    if folder is None:  # a log set up by RecBole's own init_logger
        return _recbole_get_tensorboard(logger)
    return SummaryWriter(folder) if folder else _NoTensorBoard()


def _fix_distributed() -> None:
    global _recbole_init_device, _recbole_get_tensorboard, _recbole_train_step
    if _recbole_init_device is None:
        _recbole_init_device = RecBoleConfig._init_device
        _recbole_get_tensorboard = recbole_trainer.get_tensorboard
        _recbole_train_step = TrainDataLoader._init_batch_size_and_step
    TrainDataLoader._init_batch_size_and_step = _train_step
    RecBoleConfig._init_device = _init_device
    recbole_trainer.AbstractTrainer.__init__ = _trainer_init
    recbole_trainer.get_tensorboard = _get_tensorboard


# --------------------------------------------------------------------------------------------- Pop
def _pop_calculate_loss(self, interaction):
    """RecBole's ``Pop.calculate_loss`` with every interaction counted: ``item_cnt[i] += #{rows r of the batch:
    item(r) = i, label(r) > 0}`` (every row where the batch has no label field), so that after an epoch ``item_cnt[i]``
    is item ``i``'s number of training interactions; ``max_cnt`` is the largest count (RecBole's)."""
    item = interaction[self.ITEM_ID]
    label_field = getattr(self, "LABEL", None)
    if label_field is not None and label_field in interaction:  # sampled negatives carry label 0: not interactions
        item = item[interaction[label_field] > 0]
    ones = torch.ones(item.shape[0], 1, dtype=self.item_cnt.dtype, device=self.item_cnt.device)
    self.item_cnt.index_add_(0, item, ones)
    self.max_cnt = torch.max(self.item_cnt, dim=0)[0]
    return torch.nn.Parameter(torch.zeros(1)).to(self.device)


_recbole_pop_init = None


def _pop_init(self, config, dataset) -> None:
    """RecBole's ``Pop.__init__``, keeping the label field's name for :func:`_pop_calculate_loss`."""
    _recbole_pop_init(self, config, dataset)
    self.LABEL = config["LABEL_FIELD"]


def _fix_pop() -> None:
    global _recbole_pop_init
    if _recbole_pop_init is None:
        _recbole_pop_init = Pop.__init__
    Pop.__init__ = _pop_init
    Pop.calculate_loss = _pop_calculate_loss


# --------------------------------------------------------------------------------------------- RecBole's quick start
def is_our_model(name) -> bool:
    """Whether ``name`` (a model name, any case, or None) is one of our models."""
    return name is not None and resolve_model_name(str(name)) in our_models()


def _entry_config(model=None, dataset=None, config_file_list=None, config_dict=None):
    """The ``Config`` of RecBole's quick start: our :class:`~recbole_promptmm.config.Config` (``recbole_cmd_line``)
    for one of our models, RecBole's own ``Config`` for any other."""
    if is_our_model(requested_model(model, config_file_list, config_dict)):
        return Config(model, dataset, config_file_list, config_dict, recbole_cmd_line=True)
    return RecBoleConfig(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)


def _entry_create_dataset(config):
    return (create_dataset if is_our_model(config["model"]) else recbole_create_dataset)(config)


def _entry_data_preparation(config, dataset):
    return (data_preparation if is_our_model(config["model"]) else recbole_data_preparation)(config, dataset)


def _entry_get_model(name):
    return (get_model if is_our_model(name) else recbole_get_model)(name)


def _entry_get_trainer(model_type, model_name):
    """RecBole's trainer for its models; for ours, what builds our trainer without a resume file (``run`` removes its
    own when the run ends; RecBole's entry points, which cannot resume, would leave it behind)."""
    if not is_our_model(model_name):
        return recbole_get_trainer(model_type, model_name)
    trainer_class = get_trainer(model_type, model_name)

    def build(config, model):
        trainer = trainer_class(config, model)
        trainer.resume_file = None
        return trainer
    return build


_COMPRESSED_LAYOUTS = (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc)


def uncopyable_tensors(model: torch.nn.Module) -> list:
    """The sparse compressed tensors (CSR, CSC, BSR, BSC) that ``model`` or a submodule holds as a buffer or an
    attribute (also inside a list, tuple or dict attribute): ``copy.deepcopy`` cannot copy them."""
    found = []
    for module in model.modules():
        for value in vars(module).values():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            found += [t for t in items if isinstance(t, torch.Tensor) and t.layout in _COMPRESSED_LAYOUTS]
    return found


def _copy_sharing(module: torch.nn.Module, shared: list, memo: dict) -> torch.nn.Module:
    """``copy.deepcopy(module)`` in which the tensors ``shared`` are the model's own, not copies."""
    memo.update({id(t): t for t in shared})
    state = {k: v for k, v in vars(module).items() if k != "__deepcopy__"}
    copied = module.__class__.__new__(module.__class__)
    memo[id(module)] = copied
    copied.__setstate__(copy.deepcopy(state, memo))
    return copied


def _get_flops(model, dataset, device, logger, transform, verbose=False):
    """RecBole's ``get_flops``; it starts with ``copy.deepcopy(model)``, for which the sparse compressed tensors of
    :func:`uncopyable_tensors` are shared with ``model`` (the count runs one ``predict`` under ``no_grad``: it only
    reads them)."""
    shared = uncopyable_tensors(model)
    if not shared:
        return _recbole_get_flops(model, dataset, device, logger, transform, verbose)
    model.__deepcopy__ = functools.partial(_copy_sharing, model, shared)
    try:
        return _recbole_get_flops(model, dataset, device, logger, transform, verbose)
    finally:
        del model.__deepcopy__


_recbole_get_flops = recbole_get_flops
_recbole_run_recboles = None


def run_recboles(rank, *args):
    """RecBole's ``run_recboles`` (one process of ``recbole.quick_start.run`` with ``nproc`` > 1): RecBole's spawn
    pickles this function by name, so the new process imports :mod:`recbole_promptmm` (these fixes, our models)
    before it runs RecBole's."""
    return _recbole_run_recboles(rank, *args)


def _fix_quick_start() -> None:
    global _recbole_run_recboles
    if _recbole_run_recboles is None:
        _recbole_run_recboles = recbole_quick_start.run_recboles
    names = {"Config": _entry_config, "create_dataset": _entry_create_dataset,
             "data_preparation": _entry_data_preparation, "get_model": _entry_get_model,
             "get_trainer": _entry_get_trainer, "get_flops": _get_flops, "run_recboles": run_recboles}
    for name, value in names.items():
        setattr(recbole_quick_start, name, value)
    recbole.quick_start.run_recboles = run_recboles
    recbole.utils.get_flops = recbole_utils.get_flops = _get_flops
