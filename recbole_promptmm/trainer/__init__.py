"""Trainers: RecBole's, with checkpoint fixes; the two-stage distillation trainer."""

from recbole_promptmm.trainer.base import CheckpointMixin, with_checkpoint_fixes
from recbole_promptmm.trainer.promptmm import PromptMMTrainer, TeacherCheckpointError

__all__ = ["CheckpointMixin", "PromptMMTrainer", "TeacherCheckpointError", "with_checkpoint_fixes"]
