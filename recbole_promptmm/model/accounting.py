"""What a model holds to serve recommendations: its used parameters and its serving bytes, for any RecBole model.

The model classes are the one place for these numbers: a model that defines ``used_parameters() -> int`` and
``serving_bytes() -> int`` (ours: every multimodal model, the student, PromptMM) is asked; for any other model
(RecBole's built-ins) the generic rule here applies: every parameter (:func:`parameter_count`), and the bytes of
every tensor the model holds (:func:`tensor_bytes`). Numpy / scipy state is not counted by the generic rule: a model
that keeps such state defines ``serving_bytes()``.
"""

from __future__ import annotations

import torch

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
