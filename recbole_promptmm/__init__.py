"""recbole_promptmm: PromptMM (multi-modal knowledge distillation with prompt-tuning, WWW 2024) for RecBole.

Importing the package applies the RecBole compatibility fixes (:mod:`recbole_promptmm.compat`).
"""

from recbole_promptmm import compat

compat.apply()

from recbole_promptmm.config import Config  # noqa: E402
from recbole_promptmm.data import create_dataset, data_preparation  # noqa: E402
from recbole_promptmm.quick_start import run  # noqa: E402
from recbole_promptmm.utils import get_model, get_trainer  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Config", "create_dataset", "data_preparation", "get_model", "get_trainer", "run"]
