"""Where the package finds its yaml defaults and shipped data, installed or run from a source checkout."""

from __future__ import annotations

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
