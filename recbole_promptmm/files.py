"""Writing files so that a reader never sees half of one: every file the package and its tooling write goes
through :func:`atomic_path` (checkpoints, result JSON, reports, recommendations, plots)."""

from __future__ import annotations

import glob
import json
import math
import os
from contextlib import contextmanager
from typing import Any, Iterator


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process (or we cannot tell): keep its file
    return True


def remove_stale_temporaries(path: str) -> list[str]:
    """Remove ``<path>.<pid>.tmp`` files left by a killed writer (SIGKILL skips :func:`atomic_path`'s cleanup)
    whose process is no longer alive on this machine; returns the removed names.

    A temporary whose pid is alive is kept: it may be a write in progress. On a shared file system a pid alive
    here may be another machine's, but the files we write are named per run, so only the run that owns ``path``
    writes its temporaries: what this removes can only be this run's own or a dead earlier writer's."""
    removed = []
    for tmp in glob.glob(glob.escape(path) + ".*.tmp"):
        pid = tmp[len(path) + 1:-len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        try:
            os.remove(tmp)
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary name in ``path``'s folder to write to; renamed to ``path`` only when the block succeeds, so a
    failure leaves neither a half-written file nor the temporary (the name is per process). Stale temporaries of
    ``path`` from killed processes are removed first (:func:`remove_stale_temporaries`)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    remove_stale_temporaries(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) through :func:`atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN and +-inf float (numpy's too) replaced by None, in dicts, lists and tuples."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: str, payload: Any) -> None:
    """Write strict JSON to ``path`` through :func:`atomic_path`. Non-finite numbers (e.g. ``best_valid_score``
    -inf when no epoch ran) become ``null``."""
    text = json.dumps(finite_or_none(payload), indent=2, sort_keys=True, allow_nan=False, default=str)
    write_text_atomic(path, text + "\n")


def read_json(path: str) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
