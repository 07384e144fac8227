"""Our models. Each is a RecBole recommender with defaults in ``properties/model/<Model>.yaml``.

Multimodal models (each can be PromptMM's ``teacher_model``): PromptMMTeacher, VBPR, LATTICE, FREEDOM, BM3,
MMHCL.
"""

from recbole_promptmm.model.bm3 import BM3
from recbole_promptmm.model.freedom import FREEDOM
from recbole_promptmm.model.lattice import LATTICE
from recbole_promptmm.model.mmhcl import MMHCL
from recbole_promptmm.model.promptmm import PromptMM
from recbole_promptmm.model.student import PromptMMStudent
from recbole_promptmm.model.teacher import PromptMMTeacher
from recbole_promptmm.model.vbpr import VBPR

__all__ = ["PromptMM", "PromptMMStudent", "PromptMMTeacher", "VBPR", "LATTICE", "FREEDOM", "BM3", "MMHCL"]
