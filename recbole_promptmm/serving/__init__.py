"""Serving a trained model: top-k export from any checkpoint, a numpy-only artefact of dot-product models, and an
HTTP endpoint.

* :mod:`~recbole_promptmm.serving.artefact`: the artefact format and :class:`Recommender` (numpy alone).
* :mod:`~recbole_promptmm.serving.export`: checkpoint -> model with its data -> final embeddings -> artefact.
* :mod:`~recbole_promptmm.serving.recommend`: top-k lists of any checkpoint's model, to CSV or JSON lines.
* :mod:`~recbole_promptmm.serving.http`: ``GET /recommend`` and ``GET /health`` over an artefact.

Commands: ``recbole-promptmm recommend|export|serve`` (:mod:`recbole_promptmm.cli`).
"""
