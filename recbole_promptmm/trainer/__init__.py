"""Trainers: RecBole's, with checkpoint fixes; the two-stage distillation trainer."""

from recbole_promptmm.trainer.base import CheckpointMixin, with_checkpoint_fixes

__all__ = ["CheckpointMixin", "with_checkpoint_fixes"]
