"""recbole_promptmm: PromptMM (multi-modal knowledge distillation with prompt-tuning, WWW 2024) for RecBole.

Loading the package (:func:`load`) applies the RecBole compatibility fixes (:mod:`recbole_promptmm.compat`),
imports every model (:mod:`recbole_promptmm.model`, which fills :mod:`recbole_promptmm.registry`) and makes
RecBole know them (:func:`register_with_recbole`). ``import recbole_promptmm`` itself is light: the package loads
at once where torch or RecBole is already imported, else on first need: the first access to one of its names
(``recbole_promptmm.run``, ``Config``, ``config``, ...), or the first import of ``torch``, ``recbole`` or a
submodule other than :data:`LIGHT`. So ``import recbole_promptmm`` before RecBole's own ``load_data_and_model``
still applies the fixes, while ``recbole-promptmm serve`` (:mod:`~recbole_promptmm.serving.http` over
:mod:`~recbole_promptmm.serving.artefact`, numpy alone) never loads torch or RecBole. Where neither is installed
(a serving host), loading leaves only what needs neither.
"""

import importlib
import importlib.util
import sys

__version__ = "0.1.0"
__all__ = ["Config", "create_dataset", "data_preparation", "get_model", "get_trainer", "run"]

# The modules `recbole-promptmm serve` imports: numpy and the standard library only; importing them loads nothing.
LIGHT = frozenset(f"{__name__}.{m}" for m in ("__main__", "cli", "parser", "files", "serving", "serving.artefact",
                                              "serving.http"))
TRIGGERS = ("torch", "recbole")  # importing one of these (or any other submodule) loads the package first
_MISSING: str | None = None  # torch or recbole where not installed (a serving host)


def register_with_recbole() -> None:
    """Make RecBole's own lookups find our models; idempotent (run by :func:`load`).

    RecBole's ``recbole.utils.get_model`` (used by its ``Config``, ``run_recbole`` and ``load_data_and_model``)
    only searches ``recbole.model.<kind>.<name lower-cased>`` modules: each of our model modules is aliased as
    ``recbole.model.general_recommender.<name lower-cased>`` in ``sys.modules``. RecBole's ``create_dataset``
    takes ``recbole.data.dataset.<Model>Dataset`` when it exists: our models that need modality features get
    :class:`~recbole_promptmm.data.MultimodalDataset` there."""
    import recbole.data.dataset as recbole_datasets

    from recbole_promptmm.data.dataset import MultimodalDataset
    from recbole_promptmm.registry import our_models

    for name, cls in our_models().items():
        sys.modules.setdefault(f"recbole.model.general_recommender.{name.lower()}", sys.modules[cls.__module__])
        if getattr(cls, "needs_modality_features", False) and not hasattr(recbole_datasets, f"{name}Dataset"):
            setattr(recbole_datasets, f"{name}Dataset", MultimodalDataset)


def load() -> None:
    """Apply the compatibility fixes, import every model and register them with RecBole, once (later calls, and
    calls while it runs, return at once); without torch or RecBole, note which one is missing instead."""
    global _MISSING
    if _LOADER not in sys.meta_path:
        return
    sys.meta_path.remove(_LOADER)  # before anything is imported: loading imports the submodules it watches for
    try:
        import recbole  # noqa: F401
        import torch  # noqa: F401
    except ModuleNotFoundError as err:  # a serving-only environment
        if err.name not in TRIGGERS:
            sys.meta_path.insert(0, _LOADER)
            raise
        _MISSING = err.name
        return
    try:
        from recbole_promptmm import compat

        compat.apply()
        from recbole_promptmm import model  # noqa: F401  (every model module: fills the registry)
        from recbole_promptmm.config import Config
        from recbole_promptmm.data import create_dataset, data_preparation
        from recbole_promptmm.quick_start import run
        from recbole_promptmm.registry import get_model, get_trainer

        register_with_recbole()
    except BaseException:
        sys.meta_path.insert(0, _LOADER)  # the next use tries again (and fails the same way)
        raise
    globals().update(Config=Config, create_dataset=create_dataset, data_preparation=data_preparation, run=run,
                     get_model=get_model, get_trainer=get_trainer)


class _Loaded:
    """Import loader of a module that :func:`load` has just imported: hands it back unchanged to the import that
    asked for it, which would otherwise run it a second time (the import system takes a module's ``__spec__``
    when the module appeared while its finder ran: the stand-in's until then, its own again after)."""

    def __init__(self, module) -> None:
        self.module, self.spec = module, module.__spec__

    @classmethod
    def stand_in(cls, module):
        module.__spec__ = importlib.util.spec_from_loader(module.__name__, cls(module))
        return module.__spec__

    def create_module(self, spec):
        return self.module

    def exec_module(self, module) -> None:
        module.__spec__ = self.spec


class _LoadFirst:
    """``sys.meta_path`` finder: the first import of ``torch``, ``recbole`` or a submodule not in :data:`LIGHT`
    runs :func:`load` first (under the import system's lock, so two threads never load at once)."""

    @staticmethod
    def find_spec(name: str, path=None, target=None):
        top = name.partition(".")[0]
        if name in sys.modules or top not in TRIGGERS and (top != __name__ or name in LIGHT):
            return None  # (in sys.modules already: importlib.reload)
        load()
        module = sys.modules.get(name)
        return None if module is None else _Loaded.stand_in(module)


_LOADER = _LoadFirst()
sys.meta_path.insert(0, _LOADER)
if any(name in sys.modules for name in TRIGGERS):  # torch or RecBole in use already: nothing to save
    load()


def __getattr__(name: str):
    """A public name or a submodule (``recbole_promptmm.run``, ``recbole_promptmm.config``) loads the package."""
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _LOADER in sys.meta_path:
        try:
            importlib.import_module(f"{__name__}.registry")  # through _LoadFirst: loads the package first
        except ModuleNotFoundError as err:  # no torch or RecBole here: said below
            if err.name not in TRIGGERS:
                raise
    if name in __all__ and _MISSING:
        raise ImportError(f"recbole_promptmm.{name} needs {_MISSING}, which is not installed here; without it only "
                          "the serving artefact works (recbole_promptmm.serving.artefact.Recommender)")
    if name in globals():
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
