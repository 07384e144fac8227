"""What a trained model costs to serve: used parameters, serving bytes, full-sort scoring time and memory.

:func:`measure_cost` works for any RecBole general recommender (ours or a built-in). Models may refine two
numbers by defining methods:

* ``used_parameters() -> int``: parameters the model actually uses (else: all parameters);
* ``serving_bytes() -> int``: bytes of everything needed to serve (else: see :func:`serving_bytes`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from recbole.data.interaction import Interaction

from recbole_promptmm.quick_start import count_parameters

CACHE_PREFIXES = ("restore_",)
"""Attribute names of cached outputs (RecBole's ``restore_user_e`` convention): not serving state; cleared
before every timed pass so the timing includes the full forward."""


@dataclass
class CostReport:
    """The cost of serving one trained model.

    Attributes
    ----------
    used_parameters : int
        ``model.used_parameters()`` where defined, else all parameters.
    serving_bytes : int
        ``model.serving_bytes()`` where defined, else :func:`serving_bytes`.
    serving_bytes_source : str
        ``"model.serving_bytes()"`` or ``"tensors"`` (the fallback).
    scoring_seconds : float
        Median over the timed passes of one full forward plus full-sort scoring and top-k of every user.
    scoring_seconds_all : list of float
        Every timed pass.
    scored_users : int
        Users scored per pass (every user but the padding id 0).
    users_per_batch : int
        Users scored per ``full_sort_predict`` call.
    topk : int
        ``k`` of the top-k taken after scoring.
    scoring_peak_bytes : int or None
        GPU only: memory allocated above the level before scoring, at its peak during one (untimed) pass
        (``torch.cuda.max_memory_allocated``). None on CPU, where the process RSS does not show memory that
        the allocator reuses (the run's peak RSS is reported by the comparison worker instead).
    memory_method : str
        How ``scoring_peak_bytes`` was measured.
    device : str
        Where the model ran.
    """

    used_parameters: int
    serving_bytes: int
    serving_bytes_source: str
    scoring_seconds: float
    scoring_seconds_all: list[float]
    scored_users: int
    users_per_batch: int
    topk: int
    scoring_peak_bytes: int | None
    memory_method: str
    device: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for JSON."""
        return asdict(self)


def tensor_nbytes(tensor: torch.Tensor) -> int:
    """Bytes held by ``tensor``'s data: values and indices for sparse layouts, the viewed elements otherwise."""
    if tensor.layout == torch.sparse_coo:
        return tensor._values().nbytes + tensor._indices().nbytes
    if tensor.layout in (torch.sparse_csr, torch.sparse_bsr):
        return tensor.values().nbytes + tensor.crow_indices().nbytes + tensor.col_indices().nbytes
    if tensor.layout in (torch.sparse_csc, torch.sparse_bsc):
        return tensor.values().nbytes + tensor.ccol_indices().nbytes + tensor.row_indices().nbytes
    return tensor.numel() * tensor.element_size()


def _tensor_key(tensor: torch.Tensor) -> tuple:
    if tensor.layout == torch.strided:
        return ("strided", tensor.data_ptr(), tensor.nbytes)
    return ("sparse", id(tensor))


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor a model holds: parameters, buffers and plain tensor attributes of every submodule
    (e.g. LightGCN's normalised adjacency), without cached outputs (``restore_*``) and without duplicates."""
    found: dict[str, torch.Tensor] = {}
    seen: set[tuple] = set()

    def add(name: str, tensor: torch.Tensor) -> None:
        key = _tensor_key(tensor)
        if key not in seen:
            seen.add(key)
            found[name] = tensor

    for name, tensor in model.named_parameters():
        add(name, tensor)
    for name, tensor in model.named_buffers():
        add(name, tensor)
    for prefix, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Tensor) and not attr.startswith(CACHE_PREFIXES):
                add(f"{prefix}.{attr}" if prefix else attr, value)
    return found


def serving_bytes(model: torch.nn.Module) -> tuple[int, str]:
    """Bytes needed to serve ``model`` and where the number comes from.

    ``model.serving_bytes()`` where the model defines it; otherwise the bytes of all tensors the model holds
    (:func:`model_tensors`: parameters, buffers and tensor attributes such as a graph adjacency). numpy and
    scipy objects a model keeps are not counted: define ``serving_bytes()`` for such models.
    """
    if hasattr(model, "serving_bytes"):
        return int(model.serving_bytes()), "model.serving_bytes()"
    return sum(tensor_nbytes(t) for t in model_tensors(model).values()), "tensors"


def clear_output_caches(model: torch.nn.Module) -> None:
    """Drop cached outputs so the next ``full_sort_predict`` recomputes the full forward: RecBole's
    ``restore_user_e`` / ``restore_item_e`` attributes, and whatever a model drops in ``train()`` (our models
    drop their embedding caches there); leaves the model in eval mode."""
    for module in model.modules():
        for attr in list(vars(module)):
            if attr.startswith(CACHE_PREFIXES):
                setattr(module, attr, None)
    model.eval()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_all_users(
    model: torch.nn.Module,
    uid_field: str,
    n_users: int,
    n_items: int,
    users_per_batch: int,
    topk: int,
    device: torch.device,
) -> None:
    """One pass: full-sort scores of users ``1 .. n_users - 1`` in batches, then their top-``topk`` items."""
    k = max(1, min(topk, n_items))
    with torch.no_grad():
        for start in range(1, n_users, users_per_batch):
            users = torch.arange(start, min(start + users_per_batch, n_users), device=device)
            scores = model.full_sort_predict(Interaction({uid_field: users}))
            torch.topk(scores.view(len(users), -1), k, dim=1)


def _measure_peak(run_pass: Callable[[], None], device: torch.device) -> tuple[int | None, str]:
    """Run one pass; on CUDA also measure the peak memory it allocated above the level before it."""
    if device.type != "cuda":
        run_pass()
        return None, "not measured on CPU (RSS hides memory the allocator reuses): see the run's peak memory"
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run_pass()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before), "torch.cuda.max_memory_allocated delta"


def measure_cost(
    model: torch.nn.Module,
    dataset: Any,
    *,
    users_per_batch: int | None = None,
    eval_batch_size: int | None = None,
    topk: int = 50,
    repeats: int = 3,
) -> CostReport:
    """Measure what a trained model costs to serve on its dataset.

    One untimed pass warms up (and measures peak GPU memory on CUDA), then ``repeats`` timed passes each clear cached
    outputs, compute the full forward and full-sort scores of every user in batches under
    ``torch.no_grad()``, and take the top-``topk`` items per user (history is not masked).

    Parameters
    ----------
    model : torch.nn.Module
        A trained RecBole recommender with ``full_sort_predict``; it is put in eval mode.
    dataset : recbole.data.dataset.Dataset
        The dataset the model was built on (gives ``uid_field``, ``user_num`` and ``item_num``).
    users_per_batch : int, optional
        Users per ``full_sort_predict`` call. Default: ``eval_batch_size // item_num`` (RecBole's own
        full-sort evaluation batches), or 128 when ``eval_batch_size`` is not given either.
    eval_batch_size : int, optional
        RecBole's ``eval_batch_size`` (scores per batch), used when ``users_per_batch`` is not given.
    topk : int, default 50
        ``k`` of the top-k taken after scoring.
    repeats : int, default 3
        Timed passes; their median is reported.

    Returns
    -------
    CostReport
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    n_users, n_items = int(dataset.user_num), int(dataset.item_num)
    if users_per_batch is None:
        users_per_batch = max(1, eval_batch_size // n_items) if eval_batch_size else 128
    if users_per_batch < 1:
        raise ValueError(f"users_per_batch must be at least 1, got {users_per_batch}")
    tensors = model_tensors(model)
    device = next(iter(tensors.values())).device if tensors else torch.device("cpu")
    bytes_, source = serving_bytes(model)

    def one_pass() -> None:
        clear_output_caches(model)
        score_all_users(model, dataset.uid_field, n_users, n_items, users_per_batch, topk, device)

    peak, method = _measure_peak(one_pass, device)
    seconds = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        one_pass()
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    clear_output_caches(model)
    return CostReport(
        used_parameters=count_parameters(model),
        serving_bytes=bytes_,
        serving_bytes_source=source,
        scoring_seconds=statistics.median(seconds),
        scoring_seconds_all=seconds,
        scored_users=max(0, n_users - 1),
        users_per_batch=users_per_batch,
        topk=topk,
        scoring_peak_bytes=peak,
        memory_method=method,
        device=str(device),
    )
