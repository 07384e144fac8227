"""What every trainer run through recbole_promptmm gets on top of RecBole's: checkpoints written atomically
and read back on torch >= 2.6 with torch's safe loader (``weights_only=True`` and the allow-list of
:mod:`recbole_promptmm.compat`), a checkpoint name unique per run, and a count of finished epochs."""

from __future__ import annotations

import glob
import os
from contextlib import contextmanager
from typing import Iterator

import torch
from recbole.trainer import Trainer

from recbole_promptmm.compat import CHECKPOINT_PROTOCOL, load_checkpoint
from recbole_promptmm.paths import run_suffix


_EPOCHS_COMPLETED = 0


def completed_epochs() -> int:
    """Training epochs finished in this process by any of our trainers (every stage of every run): a run that
    compares the count before and after knows whether it got past its first epoch."""
    return _EPOCHS_COMPLETED


class CheckpointMixin:
    """Mix into a RecBole ``Trainer`` subclass (before it in the bases)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        stem, suffix = os.path.splitext(self.saved_model_file)
        self.saved_model_file = stem + run_suffix() + (suffix or ".pth")  # RecBole's stem: one-second stamp
        # Files of this run start with this stem (PromptMM's -teacher/-student checkpoints too).
        self.run_stem = os.path.splitext(self.saved_model_file)[0]

    def stage_trainers(self) -> list:
        """The trainers this one made for its stages (PromptMM's stage 1), for cleaning up after a failed run."""
        return []

    def _train_epoch(self, *args, **kwargs):
        global _EPOCHS_COMPLETED
        result = super()._train_epoch(*args, **kwargs)
        _EPOCHS_COMPLETED += 1
        return result

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process (or we cannot tell): keep its file
    return True


def remove_stale_temporaries(path: str) -> list[str]:
    """Remove ``<path>.<pid>.tmp`` files left by a killed save (SIGKILL skips :func:`atomic_path`'s cleanup)
    whose process is no longer alive on this machine; returns the removed names.

    A temporary whose pid is alive is kept: it may be a save in progress. On a shared file system a pid alive
    here may be another machine's, but checkpoint names are unique per run (:func:`~recbole_promptmm.paths.run_suffix`), so only the
    run that owns ``path`` ever writes ``path``'s temporaries: what this removes can only be this run's own or a
    dead earlier writer's."""
    removed = []
    for tmp in glob.glob(glob.escape(path) + ".*.tmp"):
        pid = tmp[len(path) + 1:-len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        try:
            os.remove(tmp)
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary name in ``path``'s folder to write to; renamed to ``path`` only when the block succeeds, so a
    crash leaves no half-written file (the name is per process: two runs started in the same second differ).
    Stale temporaries of ``path`` from killed processes are removed first (:func:`remove_stale_temporaries`)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    remove_stale_temporaries(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_atomic(state: dict, path: str) -> None:
    """``torch.save`` through :func:`atomic_path`, in the pickle protocol torch's safe loader reads."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp, pickle_protocol=CHECKPOINT_PROTOCOL)


_WRAPPED: dict[type, type] = {}


def with_checkpoint_fixes(trainer_class: type) -> type:
    """``trainer_class`` with :class:`CheckpointMixin` mixed in (RecBole ``Trainer`` subclasses only)."""
    if not issubclass(trainer_class, Trainer) or issubclass(trainer_class, CheckpointMixin):
        return trainer_class
    if trainer_class not in _WRAPPED:
        _WRAPPED[trainer_class] = type(trainer_class.__name__, (CheckpointMixin, trainer_class), {
            "__module__": __name__, "__doc__": trainer_class.__doc__})
    return _WRAPPED[trainer_class]
