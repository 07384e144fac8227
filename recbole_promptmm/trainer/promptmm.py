"""The two-stage PromptMM trainer: stage 1 trains teacher + prompt, stage 2 distils into the student.

Each stage is RecBole's own ``Trainer.fit`` loop (early stopping on validation, best epoch kept) with its own
optimizer, epoch bound and checkpoint file. The teacher checkpoint has the same layout as one of a standalone
:class:`PromptMMTeacher`, so either can be reused with ``teacher_checkpoint``.
"""

from __future__ import annotations

import os
import time

from recbole.trainer import Trainer

from recbole_promptmm.compat import load_checkpoint
from recbole_promptmm.trainer.base import CheckpointMixin, save_atomic


class TeacherCheckpointError(ValueError):
    """A teacher checkpoint that does not fit the current dataset or model."""


# Keys that change what a trained teacher computes without changing its weights' shapes.
TEACHER_FORWARD_KEYS = ("n_layers", "graph_norm", "model_cat_rate", "prompt_weight_sp", "prompt_weight_fp")


class PromptMMTrainer(CheckpointMixin, Trainer):
    """Runs stage 1 (teacher, unless ``teacher_checkpoint``) then stage 2 (student with KD).

    ``callback_fn`` (Ray Tune) is called for stage-2 evaluations only.
    """

    def __init__(self, config, model) -> None:
        super().__init__(config, model)
        stem = os.path.splitext(self.saved_model_file)[0]
        self.teacher_model_file = f"{stem}-teacher.pth"
        self.student_model_file = f"{stem}-student.pth"
        self.teacher_epochs = config["teacher_epochs"] or config["epochs"]
        self.student_epochs = config["student_epochs"] or config["epochs"]
        self.stage_seconds: dict[str, float] = {}
        self.teacher_valid_result = None
        self.teacher_best_epoch: int | None = None
        self._saving_teacher = False

    # ------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self._saving_teacher:
            return super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        # Stage 1: save the teacher alone, laid out like a standalone PromptMMTeacher checkpoint.
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.teacher.state_dict(),
            "other_parameter": None,
            "optimizer": self.optimizer.state_dict(),
        }
        save_atomic(state, self.teacher_model_file)
        if verbose:
            self.logger.info(f"Saving teacher: {self.teacher_model_file}")

    def load_teacher(self, path: str) -> None:
        """Load a teacher checkpoint into ``model.teacher``, refusing one made for other data or sizes."""
        if not os.path.isfile(path):
            raise TeacherCheckpointError(f"teacher_checkpoint {path} does not exist")
        checkpoint = load_checkpoint(path, self.device)
        state = checkpoint.get("state_dict", {})
        saved_config = checkpoint.get("config")
        saved_dataset = saved_config["dataset"] if saved_config is not None else None
        if saved_dataset != self.config["dataset"]:
            raise TeacherCheckpointError(
                f"teacher_checkpoint {path} was trained on dataset {saved_dataset!r}, this run uses "
                f"{self.config['dataset']!r}")
        if saved_config is not None:
            differing = [f"{k}={saved_config[k]!r} (this run {self.config[k]!r})" for k in TEACHER_FORWARD_KEYS
                         if saved_config[k] is not None and saved_config[k] != self.config[k]]
            if differing:
                raise TeacherCheckpointError(
                    f"teacher_checkpoint {path} was trained with other teacher settings: {', '.join(differing)}; "
                    "pass the checkpoint's values (e.g. --" + differing[0].split(" ")[0] + ")")
        state = {k[len("teacher."):] if k.startswith("teacher.") else k: v for k, v in state.items()
                 if not k.startswith("student.")}
        expected = self.model.teacher.state_dict()
        problems = [f"missing {k}" for k in expected if k not in state]
        problems += [f"unexpected {k}" for k in state if k not in expected]
        problems += [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                     for k, v in expected.items() if k in state and state[k].shape != v.shape]
        if problems:
            modalities = sorted({k.split(".")[1] for k in state if k.startswith("reduce.")})
            raise TeacherCheckpointError(
                f"teacher_checkpoint {path} does not fit this teacher (checkpoint modalities {modalities}, this "
                f"run {sorted(self.model.teacher.modalities)}): " + "; ".join(problems[:8]))
        self.model.teacher.load_state_dict(state)
        self.logger.info(f"Loaded teacher from {path}")

    # ------------------------------------------------------------------ stages
    def _reset_stage(self, params, learning_rate: float, epochs: int) -> None:
        self.optimizer = self._build_optimizer(params=params, learning_rate=learning_rate)
        self.epochs = epochs
        self.start_epoch = 0
        self.cur_step = 0
        self.best_valid_score = -float("inf") if self.valid_metric_bigger else float("inf")
        self.best_valid_result = None
        self.train_loss_dict = {}

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        model = self.model
        teacher_checkpoint = self.config["teacher_checkpoint"]
        start = time.perf_counter()
        model.set_stage("teacher")
        if teacher_checkpoint:
            self.load_teacher(teacher_checkpoint)
            self.teacher_model_file = teacher_checkpoint
            if valid_data:
                self.teacher_valid_result = self.evaluate(valid_data, load_best_model=False)
        else:
            self.logger.info(f"Stage 1: teacher + prompt, up to {self.teacher_epochs} epochs")
            self._reset_stage(model.stage_parameters(), self.config["teacher_learning_rate"], self.teacher_epochs)
            self._saving_teacher = True
            try:
                _, self.teacher_valid_result = super().fit(
                    train_data, valid_data, verbose=verbose, saved=True, show_progress=show_progress)
            finally:
                self._saving_teacher = False
            self.teacher_best_epoch = self._best_epoch()
            self.load_teacher(self.teacher_model_file)
        self.stage_seconds["teacher"] = time.perf_counter() - start

        start = time.perf_counter()
        model.set_stage("student")
        if self.config["warm_start"]:
            model.warm_start_student()
        self.logger.info(f"Stage 2: student with KD, up to {self.student_epochs} epochs")
        self._reset_stage(model.stage_parameters(), self.config["student_learning_rate"], self.student_epochs)
        result = super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                             callback_fn=callback_fn)
        if saved:
            self.load_model_file(self.saved_model_file)
            self._save_student()
        self.stage_seconds["student"] = time.perf_counter() - start
        return result

    def _best_epoch(self) -> int | None:
        try:
            return int(load_checkpoint(self.teacher_model_file, "cpu")["epoch"])
        except (OSError, KeyError):
            return None

    def _save_student(self) -> None:
        """The student alone (what serving needs), in the layout of a standalone PromptMMStudent checkpoint."""
        state = {"config": self.config, "epoch": None, "cur_step": 0, "best_valid_score": self.best_valid_score,
                 "state_dict": self.model.student.state_dict(), "other_parameter": None, "optimizer": {}}
        save_atomic(state, self.student_model_file)
        self.logger.info(f"Saving student: {self.student_model_file}")

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
            teacher_test = self.evaluate(test_data, load_best_model=False)
            model.set_stage(stage)
            if os.path.isfile(self.saved_model_file):
                self.load_model_file(self.saved_model_file)
        floats = (lambda r: None if r is None else {k: float(v) for k, v in dict(r).items()})
        return {
            "teacher": {
                "best_valid_result": floats(self.teacher_valid_result),
                "test_result": floats(teacher_test),
                "best_epoch": self.teacher_best_epoch,
                "checkpoint": self.teacher_model_file,
                "num_parameters": model.teacher.used_parameters(),
            },
            "student_checkpoint": self.student_model_file,
            "stage_seconds": dict(self.stage_seconds),
        }
