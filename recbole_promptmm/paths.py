"""Where the package finds its yaml defaults and shipped data (installed or run from a source checkout), and how a
run names what it writes."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def properties_dir() -> Path:
    """The ``properties/`` folder: inside the installed package, else at the top of the source tree."""
    for candidate in (PACKAGE_DIR / "properties", PACKAGE_DIR.parent / "properties"):
        if (candidate / "dataset").is_dir():
            return candidate
    raise FileNotFoundError(
        f"recbole_promptmm: no properties/ folder next to {PACKAGE_DIR}; reinstall the package"
    )


def builtin_data_dir() -> Path:
    """Small data files that ship inside the package (made by the scripts in ``scripts/``)."""
    return PACKAGE_DIR / "data" / "files"


def run_suffix() -> str:
    """``-<pid>-<8 hex digits>``: appended to RecBole's one-second time stamp in checkpoint and log names, so runs
    started in the same second (in one process, many processes or on many Ray workers) never share a file. No
    dots: RecBole cuts the TensorBoard folder name at the first one."""
    return f"-{os.getpid()}-{uuid.uuid4().hex[:8]}"
