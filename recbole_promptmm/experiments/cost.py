"""What a trained model costs to serve: used parameters, serving bytes, full-sort scoring time and memory.

:func:`measure_cost` works for any RecBole general recommender (ours or a built-in). The two size numbers come from
the model layer (:mod:`recbole_promptmm.model.accounting`: the model's own ``used_parameters()`` /
``serving_bytes()``, else the generic rule); this module adds the timing.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from recbole.data.interaction import Interaction

from recbole_promptmm.model.accounting import (CACHE_PREFIXES, model_tensors, serving_bytes, serving_bytes_source,
                                               used_parameters)

@dataclass
class CostReport:
    """The cost of serving one trained model.

    ``scoring_seconds`` is the median over the timed passes of one full forward plus full-sort scoring and top-k
    of every user (``scored_users``, in batches of ``users_per_batch``); ``scoring_peak_bytes`` is measured on
    GPU only (memory allocated above the pre-scoring level during one pass; on CPU the process RSS hides memory
    the allocator reuses, and the comparison reports the run's peak RSS instead)."""

    used_parameters: int
    serving_bytes: int
    serving_bytes_source: str  # "model.serving_bytes()" or "tensors"
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
        for attr in list(vars(module)):
            if attr.startswith(CACHE_PREFIXES):
                setattr(module, attr, None)
    model.eval()


@torch.no_grad()
def score_all_users(model: torch.nn.Module, uid_field: str, n_users: int, k: int, users_per_batch: int,
                    device: torch.device | str = "cpu") -> None:
    """Full-sort scores of users ``1 .. n_users - 1`` in batches, then the top-``k`` items of each."""
    for start in range(1, n_users, users_per_batch):
        users = torch.arange(start, min(start + users_per_batch, n_users), device=device)
        torch.topk(model.full_sort_predict(Interaction({uid_field: users})).view(len(users), -1), max(1, k), dim=1)


def measure_cost(model: torch.nn.Module, dataset, *, users_per_batch: int | None = None,
                 eval_batch_size: int | None = None, topk: int = 50, repeats: int = 3) -> CostReport:
    """Measure what a trained model costs to serve on its dataset.

    One untimed pass warms up (and measures peak GPU memory on CUDA), then ``repeats`` timed passes each clear
    cached outputs, compute the full forward and full-sort scores of every user (but padding id 0) in batches
    under ``torch.no_grad()``, and take the top-``topk`` items per user (history is not masked). Batches hold
    ``users_per_batch`` users, by default ``eval_batch_size // item_num`` (RecBole's full-sort batches), else 128.
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
    cuda = device.type == "cuda"

    def one_pass() -> None:
        clear_output_caches(model)
        score_all_users(model, dataset.uid_field, n_users, min(topk, n_items), users_per_batch, device)
        if cuda:
            torch.cuda.synchronize(device)

    peak = None
    if cuda:
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    one_pass()
    if cuda:
        peak = int(torch.cuda.max_memory_allocated(device) - before)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        one_pass()
        seconds.append(time.perf_counter() - start)
    clear_output_caches(model)
    return CostReport(used_parameters(model), serving_bytes(model), serving_bytes_source(model),
                      statistics.median(seconds), seconds,
                      max(0, n_users - 1), users_per_batch, topk, peak, str(device))
