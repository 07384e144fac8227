"""One trial: train a model with the trial's values, report validation after every evaluation, with a checkpoint
folder: ``state.pth``, the trainer's resume state (:mod:`recbole_promptmm.trainer.resume`) plus the trial's best
epoch, from which a restarted trial continues in any stage and ends as an uninterrupted one would; ``best.pth``, the
best validation weights so far (a RecBole checkpoint; a PromptMM teacher's stage-1 output). :class:`TrialRun` gets a
``report(metrics, folder)`` function and knows nothing of Ray (tests use it alone); :func:`ray_trainable` wraps it.
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
from recbole_promptmm.data.batch_sizes import derived_batch_sizes
from recbole_promptmm.log import init_logger
from recbole_promptmm.checkpoint import save_atomic
from recbole_promptmm.trainer.resume import read_resume_file
from recbole_promptmm.registry import get_model, get_trainer

Report = Callable[[dict, str], None]
"""``report(metrics, checkpoint_folder)``; the folder may be deleted once ``report`` returns."""

STATE_FILE = "state.pth"
BEST_FILE = "best.pth"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares: absolute config files (lowest priority first), the values ``fixed`` for
    every trial (``--key=value``; the teacher stage's), the resources Ray reserves per trial (torch uses
    ``cpus_per_trial`` threads) and ``trials_dir``, ``<out>/trials`` (on a cluster: storage every node shares)."""

    model: str
    dataset: str
    config_files: tuple[str, ...] = ()
    fixed: dict = field(default_factory=dict)
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    trials_dir: str = ""

    def config(self, params: Mapping[str, Any], checkpoint_dir: str, device: Mapping[str, Any] | None = None) -> Config:
        """One trial's config: files, fixed values, ``params``, then ``checkpoint_dir`` and the device (default: the
        GPUs Ray made visible; RecBole's ``Config`` writes ``gpu_id`` into ``CUDA_VISIBLE_DEVICES``)."""
        if device is None:
            device = ({"gpu_id": os.environ.get("CUDA_VISIBLE_DEVICES", "0"), "use_gpu": True}
                      if self.gpus_per_trial > 0 else {"gpu_id": "", "use_gpu": False})
        settings = {"checkpoint_dir": checkpoint_dir, "show_progress": False, **device}
        return Config(self.model, self.dataset, list(self.config_files), {**self.fixed, **params, **settings})


class TrialRun:
    """Train one configuration (``params``: the trial's searched values) on the driver's ``train_data`` (a new loader
    over its split and sampler per trial: batch size, negative sampling) and ``valid_data``; ``report`` after every validation with a
    checkpoint folder. RecBole's ``log/``, ``log_tensorboard/`` and ``saved/`` go to ``trial_dir`` (given explicitly:
    the working directory is left alone); ``device`` overrides what Ray assigned (tests)."""

    def __init__(self, setup: TrialSetup, params: Mapping[str, Any], train_data, valid_data, trial_dir: str,
                 device: Mapping[str, Any] | None = None) -> None:
        self.config = setup.config(params, os.path.join(trial_dir, "saved"), device)
        init_logger(self.config, run_dir=trial_dir)
        init_seed(self.config["seed"], self.config["reproducibility"])
        # A loader of its own over the shared split and sampler (its shuffling starts from the seed): RecBole's loaders
        # fix their batches when built (update_config would not change them), so the trial's batch size takes effect.
        split = train_data._dataset
        for key, value in derived_batch_sizes(self.config, split.item_num, len(split)).items():
            self.config[key] = value
        train_data = type(train_data)(self.config, split, train_data._sampler, shuffle=self.config["shuffle"])
        self.train_data, self.valid_data = train_data, valid_data
        init_seed(self.config["seed"] + self.config["local_rank"], self.config["reproducibility"])
        model = get_model(self.config["model"])(self.config, train_data._dataset).to(self.config["device"])
        self.trainer = get_trainer(self.config["MODEL_TYPE"], self.config["model"])(self.config, model)
        self.trainer.resume_file = None  # the Ray checkpoint (state.pth) is this trial's resume file
        self.best_epoch: int | None = None
        self.best_valid_result: dict[str, float] | None = None

    def restore(self, folder: str) -> int:
        """Continue from a checkpoint folder written by this class (hence by a trainer that can resume); returns
        the epoch it had reached."""
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
        return self.trainer.fit(self.train_data, self.valid_data, saved=True, show_progress=False,
                                callback_fn=lambda epoch_idx, score: self._on_evaluation(epoch_idx, score, report))

    def _on_evaluation(self, epoch_idx: int, valid_score: float, report: Report) -> None:
        """RecBole's ``callback_fn`` after every validation of the (final-stage) model: a checkpoint, a report."""
        epoch, trainer = epoch_idx + 1, self.trainer
        result = {str(k): float(v) for k, v in dict(trainer.last_valid_result or {}).items()}
        if self.best_epoch is None or trainer.cur_step == 0:  # RecBole resets cur_step on improvement
            self.best_epoch, self.best_valid_result = epoch, result
        # finished: no evaluation follows (the last epoch, or RecBole's early stopping)
        finished = (epoch + max(1, int(getattr(trainer, "eval_step", 1))) > int(trainer.epochs)
                    or trainer.cur_step > trainer.stopping_step)
        metrics = {"epoch": epoch, "valid_score": float(valid_score), "best_valid_score": float(trainer.best_valid_score),
                   "best_epoch": self.best_epoch, "finished": finished, **{f"valid/{k}": v for k, v in result.items()}}
        # The state at the start of the next epoch: what the trainer's resume file would hold then.
        state = {**trainer.resume_state(self.train_data, epoch_idx + 1), "best_epoch": self.best_epoch,
                 "best_valid_result": self.best_valid_result}
        with tempfile.TemporaryDirectory(prefix="tune-ckpt-") as folder:
            save_atomic(state, os.path.join(folder, STATE_FILE))
            if os.path.isfile(trainer.saved_model_file):
                shutil.copyfile(trainer.saved_model_file, os.path.join(folder, BEST_FILE))
            report(metrics, folder)


def read_state(folder: str) -> dict:
    """The resume state (``state.pth``) of a checkpoint folder: ``epoch``, ``best_epoch``, ``best_valid_result``..."""
    return read_resume_file(os.path.join(folder, STATE_FILE))


def ray_trainable(params: dict, setup: TrialSetup, train_data, valid_data) -> None:
    """The Ray Tune function trainable (with ``tune.with_parameters``), writing RecBole's ``log/``,
    ``log_tensorboard/`` and ``saved/`` into the trial's own folder ``<out>/trials/trial_<id>/`` (where Ray keeps its
    results and checkpoints); resumes from the trial's latest checkpoint when Ray restarts it."""
    # Not get_trial_dir(): that is a staging folder on the driver's machine, not where a remote trial runs.
    trial_dir = os.path.join(setup.trials_dir, f"trial_{tune.get_context().get_trial_id()}")
    os.makedirs(trial_dir, exist_ok=True)
    torch.set_num_threads(max(1, int(setup.cpus_per_trial)))
    run = TrialRun(setup, params, train_data, valid_data, trial_dir)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            run.restore(folder)
    node = ray.get_runtime_context().get_node_id()  # which node of a cluster ran the trial
    run.fit(lambda metrics, folder: tune.report({**metrics, "node_id": node},
                                                checkpoint=tune.Checkpoint.from_directory(folder)))
