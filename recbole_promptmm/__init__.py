"""recbole_promptmm: PromptMM (multi-modal knowledge distillation with prompt-tuning, WWW 2024) for RecBole.

Importing the package applies the RecBole compatibility fixes (:mod:`recbole_promptmm.compat`). Where neither
torch nor RecBole is installed (a serving host), the package still imports, for
:mod:`recbole_promptmm.serving.artefact` and :mod:`recbole_promptmm.serving.http`, which need numpy alone.
"""

__version__ = "0.1.0"
__all__ = ["Config", "create_dataset", "data_preparation", "get_model", "get_trainer", "run"]

try:
    import recbole  # noqa: F401
    import torch  # noqa: F401
except ModuleNotFoundError as _err:  # a serving-only environment
    if _err.name not in ("recbole", "torch"):
        raise
    _MISSING: str | None = _err.name
else:
    _MISSING = None
    from recbole_promptmm import compat

    compat.apply()

    from recbole_promptmm.config import Config  # noqa: E402
    from recbole_promptmm.data import create_dataset, data_preparation  # noqa: E402
    from recbole_promptmm.quick_start import run  # noqa: E402
    from recbole_promptmm.utils import get_model, get_trainer  # noqa: E402


def __getattr__(name: str):
    if name in __all__ and _MISSING:
        raise ImportError(f"recbole_promptmm.{name} needs {_MISSING}, which is not installed here; without it only "
                          "the serving artefact works (recbole_promptmm.serving.artefact.Recommender)")
    raise AttributeError(f"module 'recbole_promptmm' has no attribute {name!r}")
