"""Our models. Each is a RecBole recommender with defaults in ``properties/model/<Model>.yaml``."""

from recbole_promptmm.model.promptmm import PromptMM
from recbole_promptmm.model.student import PromptMMStudent
from recbole_promptmm.model.teacher import PromptMMTeacher

__all__ = ["PromptMM", "PromptMMStudent", "PromptMMTeacher"]
