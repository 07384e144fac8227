"""What a model holds to serve recommendations: its used parameters and its serving bytes, for any RecBole model.

The model classes are the one place for these numbers: a model that defines ``used_parameters() -> int`` and
``serving_bytes() -> int`` (ours: every multimodal model, the student, PromptMM) is asked; for any other model
(RecBole's built-ins) the generic rule here applies: every parameter (:func:`parameter_count`), and the bytes of
every tensor the model holds (:func:`tensor_bytes`). Numpy / scipy state is not counted by the generic rule: a model
that keeps such state defines ``serving_bytes()``. :func:`measure_cost` adds what serving takes in time (full-sort
scoring) and GPU memory: the same accounting, measured, for a comparison's cost columns and the benchmarks.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from recbole.data.interaction import Interaction

CACHE_PREFIXES = ("restore_",)
"""Attribute names of cached outputs (RecBole's ``restore_user_e``): not serving state."""

SOURCE_MODEL = "model.serving_bytes()"
SOURCE_TENSORS = "tensors"


def parameter_count(model: torch.nn.Module) -> int:
    """The generic rule for used parameters: all of them."""
    return sum(p.numel() for p in model.parameters())


def tensor_nbytes(tensor: torch.Tensor) -> int:
    """Bytes held by ``tensor``'s data: values and indices for sparse layouts, the viewed elements otherwise."""
    if tensor.layout == torch.sparse_coo:
        return tensor._values().nbytes + tensor._indices().nbytes
    if tensor.layout in (torch.sparse_csr, torch.sparse_bsr):
        return tensor.values().nbytes + tensor.crow_indices().nbytes + tensor.col_indices().nbytes
    if tensor.layout in (torch.sparse_csc, torch.sparse_bsc):
        return tensor.values().nbytes + tensor.ccol_indices().nbytes + tensor.row_indices().nbytes
    return tensor.numel() * tensor.element_size()


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor a model holds: parameters, buffers and plain tensor attributes of every submodule (e.g.
    LightGCN's normalised adjacency), without cached outputs (``restore_*``) and without duplicates."""
    found: dict[str, torch.Tensor] = {}
    seen: set[tuple] = set()
    named = [*model.named_parameters(), *model.named_buffers()]
    for prefix, module in model.named_modules():
        named += [(f"{prefix}.{attr}" if prefix else attr, value) for attr, value in vars(module).items()
                  if isinstance(value, torch.Tensor) and not attr.startswith(CACHE_PREFIXES)]
    for name, tensor in named:
        strided = tensor.layout == torch.strided
        key = ("strided", tensor.data_ptr(), tensor.nbytes) if strided else ("sparse", id(tensor))
        if key not in seen:
            seen.add(key)
            found[name] = tensor
    return found


def tensor_bytes(model: torch.nn.Module) -> int:
    """The generic rule for serving bytes: the bytes of every tensor in :func:`model_tensors`."""
    return sum(tensor_nbytes(t) for t in model_tensors(model).values())


def used_parameters(model: torch.nn.Module) -> int:
    """Parameters the model uses to serve: its ``used_parameters()`` where it defines one, else all of them."""
    if hasattr(model, "used_parameters"):
        return int(model.used_parameters())
    return parameter_count(model)


def serving_bytes_source(model: torch.nn.Module) -> str:
    """Where :func:`serving_bytes` takes its number from: ``"model.serving_bytes()"`` or ``"tensors"``."""
    return SOURCE_MODEL if hasattr(model, "serving_bytes") else SOURCE_TENSORS


def serving_bytes(model: torch.nn.Module) -> int:
    """Bytes needed to serve ``model``: its ``serving_bytes()`` where it defines one, else :func:`tensor_bytes`."""
    if serving_bytes_source(model) == SOURCE_MODEL:
        return int(model.serving_bytes())
    return tensor_bytes(model)


@dataclass
class CostReport:
    """The cost of serving one trained model. ``scoring_seconds``: the median over the timed passes of one full
    forward plus full-sort scoring and top-k of every user (``scored_users``, in batches of ``users_per_batch``);
    ``scoring_peak_bytes``: GPU only (allocated above the pre-scoring level during one pass; on CPU the process
    RSS hides memory the allocator reuses)."""

    used_parameters: int
    serving_bytes: int
    serving_bytes_source: str
    scoring_seconds: float
    scoring_seconds_all: list[float]
    scored_users: int
    users_per_batch: int
    topk: int
    scoring_peak_bytes: int | None
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


def clear_output_caches(model: torch.nn.Module) -> None:
    """Drop cached outputs (``restore_*``; our models drop theirs in ``train()``/``eval()``), leaving eval mode."""
    for module in model.modules():
        for attr in [a for a in vars(module) if a.startswith(CACHE_PREFIXES)]:
            setattr(module, attr, None)
    model.eval()


@torch.no_grad()
def score_all_users(model: torch.nn.Module, uid_field: str, n_users: int, k: int, users_per_batch: int,
                    device: torch.device | str = "cpu") -> None:
    """Full-sort scores of users ``1 .. n_users - 1`` in batches of ``users_per_batch``, then the top-``k`` items of
    each (at least one): one pass of :func:`measure_cost`, and what ``benchmarks/scaling.py`` times."""
    for first in range(1, n_users, users_per_batch):
        users = torch.arange(first, min(first + users_per_batch, n_users), device=device)
        torch.topk(model.full_sort_predict(Interaction({uid_field: users})).view(len(users), -1), max(1, k), dim=1)


@torch.no_grad()
def measure_cost(model: torch.nn.Module, dataset, *, users_per_batch: int | None = None,
                 eval_batch_size: int | None = None, topk: int = 50, repeats: int = 3) -> CostReport:
    """What a trained model costs to serve on its dataset. One untimed pass warms up (and measures peak GPU memory
    on CUDA), then ``repeats`` timed passes each clear cached outputs, score every user (but padding id 0) in
    batches of ``users_per_batch`` (default ``eval_batch_size // item_num``, RecBole's full-sort batches, else
    128) and take the top-``topk`` items per user (history is not masked)."""
    n_users, n_items = int(dataset.user_num), int(dataset.item_num)
    if users_per_batch is None:
        users_per_batch = max(1, eval_batch_size // n_items) if eval_batch_size else 128
    if repeats < 1 or users_per_batch < 1:
        raise ValueError(f"repeats and users_per_batch must be at least 1, got {repeats} and {users_per_batch}")
    tensors = model_tensors(model)
    device = next(iter(tensors.values())).device if tensors else torch.device("cpu")
    cuda = device.type == "cuda"

    def one_pass() -> float:
        start = time.perf_counter()
        clear_output_caches(model)
        score_all_users(model, dataset.uid_field, n_users, min(topk, n_items), users_per_batch, device)
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    if cuda:
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    one_pass()
    peak = int(torch.cuda.max_memory_allocated(device) - before) if cuda else None
    seconds = [one_pass() for _ in range(repeats)]
    clear_output_caches(model)
    return CostReport(used_parameters(model), serving_bytes(model), serving_bytes_source(model),
                      statistics.median(seconds), seconds, max(0, n_users - 1), users_per_batch, topk, peak, str(device))
