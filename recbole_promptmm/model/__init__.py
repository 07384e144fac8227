"""Our models. Each is a RecBole recommender with defaults in ``properties/model/<Model>.yaml``, made known by the
:func:`~recbole_promptmm.registry.register` decorator on its class.

Every module of this package is imported here, so a new model is one file in this folder (plus its yaml): no list
to edit. Multimodal models (each can be PromptMM's ``teacher_model``): see
:func:`recbole_promptmm.registry.multimodal_models`.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
del _module
