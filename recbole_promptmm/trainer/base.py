"""What every trainer run through recbole_promptmm gets on top of RecBole's: checkpoints written atomically
and read back on torch >= 2.6 (RecBole pickles its Config into them, so ``weights_only=False``; we only ever
load files our own trainers wrote)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
from recbole.trainer import Trainer

from recbole_promptmm.compat import load_checkpoint


class CheckpointMixin:
    """Mix into a RecBole ``Trainer`` subclass (before it in the bases)."""

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        target = kwargs.pop("saved_model_file", self.saved_model_file)
        with atomic_path(target) as tmp:
            super()._save_checkpoint(epoch, verbose=False, saved_model_file=tmp, **kwargs)
        if verbose:
            self.logger.info(f"Saving current: {target}")

    def load_model_file(self, model_file: str | None = None) -> dict:
        """Load weights (and other parameters) from a checkpoint into ``self.model``; returns the checkpoint."""
        checkpoint_file = model_file or self.saved_model_file
        checkpoint = load_checkpoint(checkpoint_file, self.device)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return checkpoint

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            self.load_model_file(model_file)
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

    def resume_checkpoint(self, resume_file):
        self.saved_model_file = str(resume_file)
        checkpoint = self.load_model_file(self.saved_model_file)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary name in ``path``'s folder to write to; renamed to ``path`` only when the block succeeds, so a
    crash leaves no half-written file (the name is per process: two runs started in the same second differ)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_atomic(state: dict, path: str) -> None:
    """``torch.save`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp, pickle_protocol=4)


_WRAPPED: dict[type, type] = {}


def with_checkpoint_fixes(trainer_class: type) -> type:
    """``trainer_class`` with :class:`CheckpointMixin` mixed in (RecBole ``Trainer`` subclasses only)."""
    if not issubclass(trainer_class, Trainer) or issubclass(trainer_class, CheckpointMixin):
        return trainer_class
    if trainer_class not in _WRAPPED:
        _WRAPPED[trainer_class] = type(trainer_class.__name__, (CheckpointMixin, trainer_class), {
            "__module__": __name__, "__doc__": trainer_class.__doc__})
    return _WRAPPED[trainer_class]
