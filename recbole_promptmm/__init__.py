"""recbole_promptmm: PromptMM (multi-modal knowledge distillation with prompt-tuning, WWW 2024) for RecBole.

Importing the package applies the RecBole compatibility fixes (:mod:`recbole_promptmm.compat`), imports every
model (:mod:`recbole_promptmm.model`, which fills :mod:`recbole_promptmm.registry`) and makes RecBole know them
(:func:`register_with_recbole`). Where neither
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
    import sys

    import recbole.data.dataset as _recbole_datasets

    from recbole_promptmm import compat

    compat.apply()

    from recbole_promptmm import model  # noqa: F401  (every model module: fills the registry)
    from recbole_promptmm.config import Config  # noqa: E402
    from recbole_promptmm.data import create_dataset, data_preparation  # noqa: E402
    from recbole_promptmm.data.dataset import MultimodalDataset
    from recbole_promptmm.quick_start import run  # noqa: E402
    from recbole_promptmm.registry import get_model, get_trainer, our_models  # noqa: E402

    def register_with_recbole() -> None:
        """Make RecBole's own lookups find our models; idempotent.

        RecBole's ``recbole.utils.get_model`` (used by its ``Config``, ``run_recbole`` and ``load_data_and_model``)
        only searches ``recbole.model.<kind>.<name lower-cased>`` modules: each of our model modules is aliased as
        ``recbole.model.general_recommender.<name lower-cased>`` in ``sys.modules``. RecBole's ``create_dataset``
        takes ``recbole.data.dataset.<Model>Dataset`` when it exists: our models that need modality features get
        :class:`~recbole_promptmm.data.MultimodalDataset` there."""
        for name, cls in our_models().items():
            sys.modules.setdefault(f"recbole.model.general_recommender.{name.lower()}", sys.modules[cls.__module__])
            if getattr(cls, "needs_modality_features", False) and not hasattr(_recbole_datasets, f"{name}Dataset"):
                setattr(_recbole_datasets, f"{name}Dataset", MultimodalDataset)

    register_with_recbole()


def __getattr__(name: str):
    if name in __all__ and _MISSING:
        raise ImportError(f"recbole_promptmm.{name} needs {_MISSING}, which is not installed here; without it only "
                          "the serving artefact works (recbole_promptmm.serving.artefact.Recommender)")
    raise AttributeError(f"module 'recbole_promptmm' has no attribute {name!r}")
