"""What every trainer run through recbole_promptmm gets on top of RecBole's: checkpoints written atomically
and read back on torch >= 2.6 with torch's safe loader (``weights_only=True`` and the allow-list of
:mod:`recbole_promptmm.checkpoint`), a checkpoint name unique per run, a count of finished epochs and
callbacks after each epoch and validation (``trainer.callbacks``), and a resume file
written at the start of every epoch (:mod:`recbole_promptmm.trainer.resume`).

In a multi-process run (:mod:`recbole_promptmm.distributed`) only the main process writes those files; the others
read what it wrote through it (:func:`~recbole_promptmm.distributed.on_main`), and the resume file holds the
random-number states of every process."""

from __future__ import annotations

import os
import time

from recbole.trainer import Trainer

from recbole_promptmm import distributed
from recbole_promptmm.checkpoint import load_checkpoint, save_atomic
from recbole_promptmm.files import atomic_path
from recbole_promptmm.log import CONSOLE_ONLY, FILE_ONLY
from recbole_promptmm.paths import run_suffix
from recbole_promptmm.trainer.resume import RESUME_FORMAT, ResumeError, capture_rng, restore_rng, resume_file_for


class CheckpointMixin:
    """Mix into a RecBole ``Trainer`` subclass (before it in the bases)."""

    resume_stage: str | None = None
    """The stage a resume file of this trainer names (PromptMM's ``teacher`` / ``student``; None: one stage)."""
    resume_at_first_epoch = False
    """Whether the state before this trainer's first epoch is worth a resume file (it is not for a run's first
    stage: continuing from it is starting over; it is for a later stage, which skips the earlier ones)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        stem, suffix = os.path.splitext(self.saved_model_file)
        self.adopt_run_files(stem + run_suffix() + (suffix or ".pth"))  # RecBole's stem: one-second stamp
        self.run_inputs: dict | None = None  # what run() was called with: a resumed run starts from them
        # The trainer whose run this one is a stage of (PromptMM's teacher trainer points to PromptMM's): its
        # resume file, files and inputs are the run's.
        self.resume_owner = self
        self._write_resume = False
        self._pending_resume: dict | None = None
        self.last_epoch = -1  # the latest training epoch (0-based)
        self.epoch_seconds: list[float] = []  # this session's training epochs (validation excluded)
        self.valid_seconds: list[float] = []
        self.valid_scores: list[tuple[int, float]] = []  # (epoch, validation score)
        self.last_valid_result: dict | None = None
        self.epochs_completed = 0  # training epochs this trainer (with its stage trainers) finished
        # Objects with ``on_epoch_end(trainer)`` / ``on_valid_end(trainer)`` (either optional), called after each
        # training epoch / validation of this trainer and of its stage trainers (e.g. progress reports).
        self.callbacks: list = []

    def adopt_run_files(self, saved_model_file: str) -> None:
        """Name this run's files after ``saved_model_file`` (a resumed run keeps the interrupted run's names)."""
        self.saved_model_file = saved_model_file
        # Files of this run start with this stem (PromptMM's -teacher/-student checkpoints, the resume file too).
        self.run_stem = os.path.splitext(saved_model_file)[0]
        self.resume_file: str | None = resume_file_for(self.run_stem)

    def run_files(self) -> dict:
        """The run's file names a resume file records (a resumed run adopts them)."""
        return {"saved_model_file": self.saved_model_file}

    def resume_extra(self) -> dict:
        """What a multi-stage trainer keeps across stages (e.g. stage-1 results), saved in the resume file."""
        return {}

    # ------------------------------------------------------------------ resume
    def resume_state(self, train_data, epoch_idx: int) -> dict:
        """Everything needed to continue training at ``epoch_idx`` exactly as an uninterrupted run would."""
        owner = self.resume_owner
        best = self.best_valid_result
        rngs = distributed.gather(capture_rng(_generators(train_data)))  # every process's (one: this one's)
        state = {
            "resume_format": RESUME_FORMAT,
            "stage": self.resume_stage,
            "epoch": epoch_idx,
            "config": self.config,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "best_valid_result": None if best is None else {k: float(v) for k, v in dict(best).items()},
            "train_loss_dict": {int(k): float(v) for k, v in self.train_loss_dict.items()},
            "rng": rngs[0],
            "run_files": owner.run_files(),
            "run_inputs": owner.run_inputs,
            "owner": owner.resume_extra(),
        }
        if len(rngs) > 1:
            state["rng_per_rank"] = rngs
        return state

    def resume_from(self, state: dict, adopt_files: bool = True) -> None:
        """Continue from a :meth:`resume_state` when ``fit`` starts; ``adopt_files`` also takes the interrupted run's
        file names (its best-model checkpoint goes on being updated), as a resumed ``run`` does."""
        if adopt_files:
            self.adopt_run_files(state["run_files"]["saved_model_file"])
        self._pending_resume = state

    def _apply_resume(self, state: dict, train_data) -> None:
        self.model.load_state_dict(state["state_dict"])
        self.model.load_other_parameter(state.get("other_parameter"))
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = int(state["epoch"])
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.best_valid_result = state["best_valid_result"]
        self.train_loss_dict = dict(state["train_loss_dict"])
        rngs = state.get("rng_per_rank") or [state["rng"]]
        if len(rngs) != distributed.world_size():
            raise ResumeError(f"--resume: the interrupted run had {len(rngs)} processes, this one has "
                              f"{distributed.world_size()}")
        restore_rng(rngs[distributed.rank()], _generators(train_data))
        self.logger.info(f"Resuming at epoch {self.start_epoch} (best valid score so far {self.best_valid_score:.4f})")

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's ``fit``, writing the resume file at the start of every epoch when ``saved`` (and continuing a
        pending :meth:`resume_from`)."""
        if self._pending_resume is not None:
            state, self._pending_resume = self._pending_resume, None
            self._apply_resume(state, train_data)
        self._write_resume = saved and self.resume_owner.resume_file is not None
        try:
            return super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                               callback_fn=callback_fn)
        finally:
            self._write_resume = False

    def stage_trainers(self) -> list:
        """The trainers this one made for its stages (PromptMM's stage 1), for cleaning up after a failed run."""
        return []

    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        if self._write_resume and (epoch_idx > 0 or self.resume_at_first_epoch):
            state = self.resume_state(train_data, epoch_idx)  # in every process (it gathers their states)
            if distributed.is_main_process():
                save_atomic(state, self.resume_owner.resume_file)
        start = time.perf_counter()
        result = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
        self.epoch_seconds.append(time.perf_counter() - start)
        self.last_epoch = epoch_idx
        self.epochs_completed += 1
        if self.resume_owner is not self:
            self.resume_owner.epochs_completed += 1
        self._tell("epoch")
        return result

    def _valid_epoch(self, *args, **kwargs):
        start = time.perf_counter()
        score, result = super()._valid_epoch(*args, **kwargs)
        self.valid_seconds.append(time.perf_counter() - start)
        self._log_epoch(float(score))
        self.valid_scores.append((self.last_epoch, float(score)))
        self.last_valid_result = {k: float(v) for k, v in dict(result).items()}
        self._tell("valid")
        return score, result

    def _log_epoch(self, score: float) -> None:
        """The console's one line for this epoch (RecBole's own lines go to the log file only, see
        :mod:`recbole_promptmm.log`): stage, loss, valid score, and whether it is the best so far (RecBole's rule)."""
        best = self.best_valid_score
        improved = score >= best if self.valid_metric_bigger else score <= best
        loss = self.train_loss_dict.get(self.last_epoch)
        loss = (f"train loss {loss:.4f} ({self.epoch_seconds[-1]:.1f} s), "
                if loss is not None and self.epoch_seconds else "")
        stage = f"{self.resume_stage} " if self.resume_stage else ""
        self.logger.info(f"{stage}epoch {self.last_epoch}: {loss}valid {self.valid_metric} {score:.4f}"
                         f"{' (best so far)' if improved else ''}", extra=CONSOLE_ONLY)

    def _tell(self, event: str) -> None:
        for callback in list(self.resume_owner.callbacks):
            hook = getattr(callback, f"on_{event}_end", None)
            if hook is not None:
                hook(self)

    def best_epoch(self) -> int | None:
        """The (0-based) epoch of the best validation score, by RecBole's rule (a tie counts as an improvement)."""
        best = None
        for epoch, score in self.valid_scores:
            if best is None or (score >= best[1] if self.valid_metric_bigger else score <= best[1]):
                best = (epoch, score)
        return None if best is None else best[0]

    def timing(self) -> dict:
        """This trainer's epochs and seconds (one entry of a run result's ``stages``)."""
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        return {"stage": self.resume_stage, "epochs_run": len(self.epoch_seconds),
                "train_epoch_seconds": list(self.epoch_seconds), "train_seconds_per_epoch": mean(self.epoch_seconds),
                "valid_seconds_per_eval": mean(self.valid_seconds), "best_epoch": self.best_epoch(),
                "last_epoch": self.last_epoch if self.epoch_seconds else None, "max_epochs": self.epochs}

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not distributed.is_main_process():
            return
        target = kwargs.pop("saved_model_file", self.saved_model_file)
        with atomic_path(target) as tmp:
            super()._save_checkpoint(epoch, verbose=False, saved_model_file=tmp, **kwargs)
        if verbose:
            self.logger.info(f"Saving current: {target}", extra=FILE_ONLY)

    def load_model_file(self, model_file: str | None = None) -> dict:
        """Load weights (and other parameters) from a checkpoint into ``self.model``; returns the checkpoint."""
        checkpoint_file = model_file or self.saved_model_file
        device = distributed.map_location(self.device)
        checkpoint = distributed.on_main(lambda: load_checkpoint(checkpoint_file, device))
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info(f"Weights loaded from {checkpoint_file}", extra=FILE_ONLY)
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


def _generators(train_data) -> list:
    """The training loader's shuffling generator (RecBole's loaders have one)."""
    generator = getattr(train_data, "generator", None)
    return [generator] if generator is not None else []


_WRAPPED: dict[type, type] = {}


def with_checkpoint_fixes(trainer_class: type) -> type:
    """``trainer_class`` with :class:`CheckpointMixin` mixed in (RecBole ``Trainer`` subclasses only)."""
    if not issubclass(trainer_class, Trainer) or issubclass(trainer_class, CheckpointMixin):
        return trainer_class
    if trainer_class not in _WRAPPED:
        _WRAPPED[trainer_class] = type(trainer_class.__name__, (CheckpointMixin, trainer_class), {
            "__module__": __name__, "__doc__": trainer_class.__doc__})
    return _WRAPPED[trainer_class]
