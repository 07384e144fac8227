"""One trial: train a model with the trial's values, report validation after every evaluation, with a checkpoint.

:class:`TrialRun` knows nothing about Ray: it gets a ``report(metrics, folder)`` function, so it can be tested
(and resumed from a checkpoint folder) on its own. :func:`ray_trainable` is the Ray Tune function that wraps it.

What a checkpoint folder holds:

``state.pth``
    The trainer's resume state after the reported epoch (:mod:`recbole_promptmm.trainer.resume`: weights,
    optimizer, early-stopping counter, best score and validation result, random-number states, a multi-stage
    model's stage), plus the trial's ``best_epoch``; read back by ``trainer.resume_from``: a restarted trial
    continues where it stopped, in any stage, and ends with the metrics of an uninterrupted trial.
``best.pth``
    The weights of the best validation epoch so far (the trainer's own ``saved_model_file``): a RecBole
    checkpoint usable with ``trainer.load_model_file`` or as a stage-1 output (a PromptMM teacher).

Test data never reaches a trial.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import ray
import torch
from ray import tune
from recbole.utils import init_seed

from recbole_promptmm.config import Config
from recbole_promptmm.log import init_logger
from recbole_promptmm.checkpoint import save_atomic
from recbole_promptmm.trainer.base import CheckpointMixin
from recbole_promptmm.trainer.resume import read_resume_file
from recbole_promptmm.registry import get_model, get_trainer

Report = Callable[[dict, str], None]
"""``report(metrics, checkpoint_folder)``; the folder may be deleted once ``report`` returns."""

STATE_FILE = "state.pth"
BEST_FILE = "best.pth"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares: model and dataset, absolute config files (lowest priority first), the
    values ``fixed`` for every trial (``--key=value`` overrides; a two-stage PromptMM sweep's teacher values and
    checkpoint: they win over the files and never collide with searched keys), the resources Ray reserves per
    trial (torch uses ``cpus_per_trial`` threads; no GPU trains on the CPU), and ``trials_dir``, the sweep's
    ``<out>/trials`` where each trial works in ``trial_<id>`` (on a cluster: storage every node shares)."""

    model: str
    dataset: str
    config_files: tuple[str, ...] = ()
    fixed: dict = field(default_factory=dict)
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    trials_dir: str = ""

    def config(self, params: Mapping[str, Any], checkpoint_dir: str, device: Mapping[str, Any] | None = None) -> Config:
        """One trial's config: files, fixed values, the trial's ``params``, then ``checkpoint_dir`` and the device
        (``gpu_id`` / ``use_gpu``; default: the GPUs Ray made visible to this process, or none: RecBole's
        ``Config`` writes ``gpu_id`` into ``CUDA_VISIBLE_DEVICES``, so passing Ray's on keeps the trial there)."""
        if device is None:
            device = ({"gpu_id": os.environ.get("CUDA_VISIBLE_DEVICES", "0"), "use_gpu": True}
                      if self.gpus_per_trial > 0 else {"gpu_id": "", "use_gpu": False})
        settings = {"checkpoint_dir": checkpoint_dir, "show_progress": False, **device}
        return Config(self.model, self.dataset, list(self.config_files), {**self.fixed, **params, **settings})


def _floats(result: Mapping[str, Any] | None) -> dict[str, float]:
    return {str(k): float(v) for k, v in dict(result or {}).items()}


class TrialRun:
    """Train one configuration (``params``: the trial's searched values); ``report`` after every validation with
    a checkpoint folder. ``train_data`` and ``valid_data`` are prepared once by the driver (``train_data`` is
    re-configured per trial: batch size, negative sampling); RecBole's ``log/``, ``log_tensorboard/`` (relative to
    the working directory, which the caller sets) and ``saved/`` go to ``trial_dir``; ``device`` overrides what
    Ray assigned (tests)."""

    def __init__(self, setup: TrialSetup, params: Mapping[str, Any], train_data, valid_data, trial_dir: str,
                 device: Mapping[str, Any] | None = None) -> None:
        self.params = dict(params)
        self.config = setup.config(self.params, os.path.join(trial_dir, "saved"), device)
        init_logger(self.config)
        init_seed(self.config["seed"], self.config["reproducibility"])
        train_data.update_config(self.config)
        # The loader is shared by the trials of one process: its shuffling starts from the seed in each of them.
        train_data.generator.manual_seed(self.config["seed"])
        self.train_data, self.valid_data = train_data, valid_data
        init_seed(self.config["seed"] + self.config["local_rank"], self.config["reproducibility"])
        model = get_model(self.config["model"])(self.config, train_data._dataset).to(self.config["device"])
        self.trainer = get_trainer(self.config["MODEL_TYPE"], self.config["model"])(self.config, model)
        self.trainer.resume_file = None  # the Ray checkpoint (state.pth) is this trial's resume file
        self.best_epoch: int | None = None
        self.best_valid_result: dict[str, float] | None = None
        self._report: Report | None = None

    def resumable(self) -> bool:
        """Whether the trainer can continue from a checkpoint (every trainer with our checkpoint fixes can, in
        any stage; a trainer outside RecBole's ``Trainer`` family cannot, and its trials start over)."""
        return isinstance(self.trainer, CheckpointMixin)

    def restore(self, folder: str) -> int:
        """Continue from a checkpoint folder written by this class; returns the epoch it had reached (0 when
        the trainer cannot resume and the trial starts over)."""
        if not self.resumable():
            self.trainer.logger.warning(f"tune: {type(self.trainer).__name__} cannot resume; "
                                        f"the trial starts over instead of continuing from {folder}")
            return 0
        state = read_state(folder)
        own_best_file = self.trainer.saved_model_file
        # This trial's own file names stay (a restarted trial may run on another node, under another name).
        self.trainer.resume_from(state, adopt_files=False)
        if os.path.isfile(os.path.join(folder, BEST_FILE)):
            os.makedirs(os.path.dirname(own_best_file), exist_ok=True)
            shutil.copyfile(os.path.join(folder, BEST_FILE), own_best_file)
        self.best_epoch, self.best_valid_result = state["best_epoch"], state["best_valid_result"]
        self.trainer.logger.info(f"tune: resumed from {folder} after epoch {state['epoch']}")
        return int(state["epoch"])

    def fit(self, report: Report) -> tuple[float, dict | None]:
        """Train to the end (or early stop); returns RecBole's best validation score and result."""
        self._report = report
        return self.trainer.fit(self.train_data, self.valid_data, saved=True, show_progress=False,
                                callback_fn=self._on_evaluation)

    def _finished(self, epoch: int) -> bool:
        """Whether no evaluation will follow this one (last epoch, or RecBole's early stopping)."""
        trainer = self.trainer
        eval_step = max(1, int(getattr(trainer, "eval_step", 1)))
        last_epoch = epoch + eval_step > int(trainer.epochs)
        return last_epoch or trainer.cur_step > trainer.stopping_step

    def _on_evaluation(self, epoch_idx: int, valid_score: float) -> None:
        """RecBole's ``callback_fn``: called after every validation of the (final-stage) model."""
        epoch = epoch_idx + 1
        result = _floats(self.trainer.last_valid_result)
        if self.best_epoch is None or self.trainer.cur_step == 0:  # RecBole resets cur_step on improvement
            self.best_epoch, self.best_valid_result = epoch, result
        metrics = {
            "epoch": epoch,
            "valid_score": float(valid_score),
            "best_valid_score": float(self.trainer.best_valid_score),
            "best_epoch": self.best_epoch,
            "finished": self._finished(epoch),
            **{f"valid/{k}": v for k, v in result.items()},
        }
        with tempfile.TemporaryDirectory(prefix="tune-ckpt-") as folder:
            self.write_checkpoint(folder, epoch_idx)
            self._report(metrics, folder)

    def write_checkpoint(self, folder: str, epoch_idx: int) -> None:
        """Write ``state.pth`` and ``best.pth`` into ``folder``."""
        # The state at the start of the next epoch: what the trainer's resume file would hold then.
        state = {**self.trainer.resume_state(self.train_data, epoch_idx + 1), "best_epoch": self.best_epoch,
                 "best_valid_result": self.best_valid_result}
        save_atomic(state, os.path.join(folder, STATE_FILE))
        if os.path.isfile(self.trainer.saved_model_file):
            shutil.copyfile(self.trainer.saved_model_file, os.path.join(folder, BEST_FILE))


def read_state(folder: str) -> dict:
    """The resume state (``state.pth``) of a checkpoint folder: ``epoch``, ``best_epoch``, ``best_valid_result``..."""
    return read_resume_file(os.path.join(folder, STATE_FILE))


def _report_to_ray(metrics: dict, folder: str) -> None:
    node = ray.get_runtime_context().get_node_id()  # which node of a cluster ran the trial
    tune.report({**metrics, "node_id": node}, checkpoint=tune.Checkpoint.from_directory(folder))


def trial_dirname(trial_id: str) -> str:
    """The folder name of a trial inside ``<out>/trials``."""
    return f"trial_{trial_id}"


def ray_trainable(params: dict, setup: TrialSetup, train_data, valid_data) -> None:
    """The Ray Tune function trainable (use with ``tune.with_parameters``).

    Works in the trial's own folder (``<out>/trials/trial_<id>/``, the one Ray stores the trial's results and
    checkpoints in), so RecBole's relative ``log/`` and ``log_tensorboard/`` land there; resumes from the
    trial's latest checkpoint when Ray restarts it.
    """
    # Not get_trial_dir(): that is a staging folder on the driver's machine, not where a remote trial runs.
    trial_dir = os.path.join(setup.trials_dir, trial_dirname(tune.get_context().get_trial_id()))
    os.makedirs(trial_dir, exist_ok=True)
    os.chdir(trial_dir)
    torch.set_num_threads(max(1, int(setup.cpus_per_trial)))
    run = TrialRun(setup, params, train_data, valid_data, trial_dir)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            run.restore(folder)
    run.fit(_report_to_ray)
