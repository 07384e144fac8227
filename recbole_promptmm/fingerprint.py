"""One config fingerprint, for a comparison's run folders and cache (experiments/plan.py) and an exported artefact
(serving/export.py): the same resolved training setup, the same hash."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from recbole_promptmm.config import plain

VOLATILE_KEYS = frozenset({"checkpoint_dir", "show_progress", "state", "log_wandb", "wandb_project", "gpu_id"})
"""Resolved config keys that do not change a run's results: left out of the hash."""


def config_hash(config: Any) -> str:
    """sha256 (12 hex digits) of a resolved config (a ``Config`` or its ``to_dict()``), without :data:`VOLATILE_KEYS`."""
    values = getattr(config, "final_config_dict", config)
    kept = {k: plain(v) for k, v in values.items() if k not in VOLATILE_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str, separators=(",", ":")).encode()).hexdigest()[:12]
