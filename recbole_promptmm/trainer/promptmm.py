"""The two-stage PromptMM trainer: stage 1 is the teacher model's own RecBole training, stage 2 distils into the
student.

Stage 1 runs the trainer that a standalone run of ``teacher_model`` gets (RecBole's ``Trainer`` with our checkpoint
fixes), on ``model.teacher`` with the teacher's config (its own learning rate and epoch bound, see the naming
rule in :mod:`recbole_promptmm.config_rules`): it writes exactly the checkpoint a standalone run writes, so any
teacher checkpoint can be reused with ``teacher_checkpoint``. Stage 2 is RecBole's ``Trainer.fit`` loop on the
student (and the prompt, when tuned) with its own optimizer.

In a multi-process run each stage's trainable model is wrapped in ``DistributedDataParallel``: the teacher by its
own trainer (as a standalone run's), the whole model again when stage 2 starts (its teacher frozen then, so the
wrapper all-reduces the student's gradients and the prompt's when tuned).
"""

from __future__ import annotations

import os
import time
from typing import Any

from recbole.trainer import Trainer

from recbole_promptmm import distributed
from recbole_promptmm.checkpoint import CheckpointError, load_checkpoint, save_atomic
from recbole_promptmm.config import config_for_model
from recbole_promptmm.config_rules import teacher_config
from recbole_promptmm.errors import ConfigError
from recbole_promptmm.log import FILE_ONLY
from recbole_promptmm.model.student import PromptMMStudent
from recbole_promptmm.registry import get_trainer, multimodal_models
from recbole_promptmm.trainer.base import CheckpointMixin


def _floats(result) -> dict | None:
    return None if result is None else {k: float(v) for k, v in dict(result).items()}


class TeacherCheckpointError(ConfigError):
    """A ``teacher_checkpoint`` that is no checkpoint or does not fit the current dataset or model (a config
    error: every entry point that checks configs refuses it as bad input)."""


def read_teacher_checkpoint(path: str, config, tconfig=None, device="cpu") -> tuple[dict, Any, dict]:
    """(checkpoint, the teacher's saved config, the teacher's weights) of the teacher checkpoint ``path`` for the
    PromptMM run of ``config`` (whose teacher sees ``tconfig``, by default :func:`teacher_config` of it).

    A :class:`TeacherCheckpointError` for a file that is no checkpoint (the reader's message,
    :func:`~recbole_promptmm.checkpoint.load_checkpoint`) or one trained on other data, of a model that is not this
    run's teacher (or no teacher at all) or with other teacher settings (the teacher's ``forward_keys()``).
    Needs no data: run() calls it (through :func:`~recbole_promptmm.validate.validate_config`) before the dataset
    loads; :meth:`PromptMMTrainer.load_teacher` also checks the weights' sizes against the built teacher."""
    tconfig = teacher_config(config) if tconfig is None else tconfig
    try:
        checkpoint = load_checkpoint(path, device, what="teacher_checkpoint")
    except CheckpointError as err:
        raise TeacherCheckpointError(str(err)) from None
    state, saved_config = checkpoint["state_dict"], checkpoint["config"]
    if saved_config["dataset"] != config["dataset"]:
        raise TeacherCheckpointError(
            f"teacher_checkpoint {path} was trained on dataset {saved_config['dataset']!r}, this run uses "
            f"{config['dataset']!r}")
    if saved_config["model"] == "PromptMM":  # a whole PromptMM checkpoint: its teacher part
        saved_config = teacher_config(saved_config)
        state = {k[len("teacher."):]: v for k, v in state.items() if k.startswith("teacher.")}
    saved_model, teachers = saved_config["model"], multimodal_models()
    if saved_model not in teachers:
        raise TeacherCheckpointError(
            f"teacher_checkpoint {path} holds a {saved_model} model, which cannot be a teacher (teachers are "
            f"multimodal: {', '.join(teachers)}); pass a checkpoint of {tconfig['model']} (this run's teacher_model)")
    if saved_model != tconfig["model"]:
        raise TeacherCheckpointError(
            f"teacher_checkpoint {path} holds a {saved_model} model, this run's teacher_model is "
            f"{tconfig['model']}; pass --teacher_model={saved_model} or a checkpoint of {tconfig['model']}")
    differing = [f"{k}={saved_config[k]!r} (this run {tconfig[k]!r})" for k in tconfig.model_class.forward_keys()
                 if saved_config[k] != tconfig[k]]
    if differing:
        raise TeacherCheckpointError(
            f"teacher_checkpoint {path} was trained with other teacher settings: {', '.join(differing)}; "
            "pass the checkpoint's values (e.g. --" + differing[0].split(" ")[0] + ")")
    return checkpoint, saved_config, state


class PromptMMTrainer(CheckpointMixin, Trainer):
    """Runs stage 1 (the teacher's own training, unless ``teacher_checkpoint``) then stage 2 (student with KD).

    ``callback_fn`` (Ray Tune) is called for stage-2 evaluations only.
    """

    resume_stage = "student"
    resume_at_first_epoch = True  # stage 2's first epoch: resuming there skips stage 1

    def __init__(self, config, model) -> None:
        super().__init__(config, model)
        self.student_epochs = config["student_epochs"] or config["epochs"]
        self.stage_seconds: dict[str, float] = {}
        self.teacher_valid_result = None
        self.teacher_best_epoch: int | None = None
        self._teacher_trainer = None
        self._resume_teacher: dict | None = None

    def adopt_run_files(self, saved_model_file: str) -> None:
        super().adopt_run_files(saved_model_file)
        self.teacher_model_file = f"{self.run_stem}-teacher.pth"
        self.student_model_file = f"{self.run_stem}-student.pth"
        if getattr(self, "_teacher_trainer", None) is not None:
            self._teacher_trainer.saved_model_file = self.teacher_model_file

    def run_files(self) -> dict:
        return {**super().run_files(), "teacher_model_file": self.teacher_model_file}

    def resume_extra(self) -> dict:
        """Stage 1's outcome, which stage 2 and the report need."""
        return {"teacher_model_file": self.teacher_model_file, "teacher_valid_result": _floats(self.teacher_valid_result),
                "teacher_best_epoch": self.teacher_best_epoch, "stage_seconds": dict(self.stage_seconds)}

    def teacher_trainer(self) -> Trainer:
        """The trainer a standalone run of the teacher model gets, on ``model.teacher`` (made once)."""
        if self._teacher_trainer is None:
            tconfig = self.model.teacher_config
            trainer = get_trainer(tconfig["MODEL_TYPE"], tconfig["model"])(tconfig, self.model.teacher)
            trainer.saved_model_file = self.teacher_model_file
            trainer.resume_stage, trainer.resume_owner = "teacher", self  # its epochs go into this run's resume file
            self._teacher_trainer = trainer
        return self._teacher_trainer

    def stage_trainers(self) -> list:
        return [self._teacher_trainer] if self._teacher_trainer is not None else []

    def load_teacher(self, path: str) -> None:
        """Load a teacher checkpoint into ``model.teacher``, refusing one made for another model, other data or
        other settings (the teacher's ``forward_keys()``) or sizes."""
        checkpoint, saved_config, state = distributed.on_main(lambda: read_teacher_checkpoint(
            path, self.config, self.model.teacher_config, distributed.map_location(self.device)))
        teacher = self.model.teacher
        expected = teacher.state_dict()
        problems = [f"missing {k}" for k in expected if k not in state]
        problems += [f"unexpected {k}" for k in state if k not in expected]
        problems += [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                     for k, v in expected.items() if k in state and state[k].shape != v.shape]
        if problems:
            modalities = saved_config["modality_features"]
            modalities = sorted(modalities) if isinstance(modalities, dict) else modalities
            raise TeacherCheckpointError(
                f"teacher_checkpoint {path} does not fit this teacher (checkpoint modalities {modalities}, this "
                f"run {sorted(teacher.modalities)}): " + "; ".join(problems[:8]))
        teacher.load_state_dict(state)
        teacher.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info(f"Teacher weights loaded from {path}", extra=FILE_ONLY)

    # ------------------------------------------------------------------ stages
    def _reset_stage(self, params, learning_rate: float, epochs: int) -> None:
        self.optimizer = self._build_optimizer(params=params, learning_rate=learning_rate)
        self.epochs = epochs
        self.start_epoch = 0
        self.cur_step = 0
        self.best_valid_score = -float("inf") if self.valid_metric_bigger else float("inf")
        self.best_valid_result = None
        self.train_loss_dict = {}

    def resume_from(self, state: dict, adopt_files: bool = True) -> None:
        """Continue in the stage the state names: stage 1 through the teacher's trainer, stage 2 here."""
        if state["stage"] == "teacher":
            if adopt_files:
                self.adopt_run_files(state["run_files"]["saved_model_file"])
            self._resume_teacher = state
        else:
            super().resume_from(state, adopt_files)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        model = self.model
        teacher_checkpoint = self.config["teacher_checkpoint"]
        start = time.perf_counter()
        model.set_stage("teacher")
        teacher_trainer = self.teacher_trainer()
        resumed = self._pending_resume
        if resumed is not None:  # interrupted in stage 2: stage 1's outcome is in the resume file
            done = resumed["owner"]
            self.teacher_model_file = teacher_trainer.saved_model_file = done["teacher_model_file"]
            self.teacher_valid_result = done["teacher_valid_result"]
            self.teacher_best_epoch = done["teacher_best_epoch"]
            self.stage_seconds.update(done["stage_seconds"])
            start -= self.stage_seconds.get("teacher", 0.0)
            self.logger.info(f"Stage 1 done before the interruption (teacher {self.teacher_model_file})")
        elif teacher_checkpoint:
            self.load_teacher(teacher_checkpoint)
            self.logger.info(f"Stage 1 skipped: teacher {model.teacher_name} from {teacher_checkpoint}")
            self.teacher_model_file = teacher_trainer.saved_model_file = teacher_checkpoint
            if valid_data:
                self.teacher_valid_result = teacher_trainer.evaluate(valid_data, load_best_model=False)
        else:
            if self._resume_teacher is not None:
                teacher_trainer.resume_from(self._resume_teacher, adopt_files=False)
                self._resume_teacher = None
            self.logger.info(f"Stage 1: teacher {model.teacher_name}, up to {teacher_trainer.epochs} epochs")
            _, self.teacher_valid_result = teacher_trainer.fit(
                train_data, valid_data, verbose=verbose, saved=True, show_progress=show_progress)
            self.teacher_best_epoch = self._best_epoch()
            self.load_teacher(self.teacher_model_file)
        self.stage_seconds["teacher"] = time.perf_counter() - start

        start = time.perf_counter()  # a resumed stage 2 counts this session's seconds only
        model.set_stage("student")
        if self.config["warm_start"] and resumed is None:
            model.warm_start_student()
        self.logger.info(f"Stage 2: student with KD from {model.teacher_name}, up to {self.student_epochs} epochs")
        if not self.config["single_spec"]:  # the parameters stage 2 trains: DDP reduces those that need gradients
            self.distributed_model = distributed.wrap(self.model, self.device)
        self._reset_stage(model.stage_parameters(), self.config["student_learning_rate"], self.student_epochs)
        result = super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                             callback_fn=callback_fn)
        if saved:
            self.load_model_file(self.saved_model_file)
            self._save_student()
        self.stage_seconds["student"] = time.perf_counter() - start
        return result

    def _best_epoch(self) -> int | None:
        def read() -> int | None:
            try:
                return int(load_checkpoint(self.teacher_model_file, "cpu")["epoch"])
            except (OSError, KeyError):
                return None

        return distributed.on_main(read)

    def _save_student(self) -> None:
        """The student alone (what serving needs), exactly as a standalone PromptMMStudent run saves it: its config
        names PromptMMStudent (which reads the same ``student_*`` keys), so RecBole's ``load_data_and_model``
        rebuilds it."""
        if not distributed.is_main_process():
            return
        state = {"config": config_for_model(self.config, PromptMMStudent), "epoch": None, "cur_step": 0,
                 "best_valid_score": self.best_valid_score, "state_dict": self.model.student.state_dict(),
                 "other_parameter": None, "optimizer": {}}
        save_atomic(state, self.student_model_file)
        self.logger.info(f"Saving student: {self.student_model_file}", extra=FILE_ONLY)

    # ------------------------------------------------------------------ report
    def extra_results(self, test_data=None) -> dict:
        """Teacher's validation and test results (test evaluated once, on its best weights) and stage seconds."""
        model = self.model
        teacher_test = None
        if test_data is not None:
            # The teacher as stage 1 left it (stage 2 may have tuned its prompt since), then back to the student.
            stage = model.stage
            self.load_teacher(self.teacher_model_file)
            model.set_stage("teacher")
            teacher_test = self.teacher_trainer().evaluate(test_data, load_best_model=False)
            model.set_stage(stage)
            if distributed.on_main(lambda: os.path.isfile(self.saved_model_file)):
                self.load_model_file(self.saved_model_file)
        floats = _floats
        return {
            "teacher": {
                "best_valid_result": floats(self.teacher_valid_result),
                "test_result": floats(teacher_test),
                "best_epoch": self.teacher_best_epoch,
                "checkpoint": self.teacher_model_file,
                "model": model.teacher_name,
                "num_parameters": model.teacher.used_parameters(),
            },
            "student_checkpoint": self.student_model_file,
            "stage_seconds": dict(self.stage_seconds),
        }
