"""One format for every data mistake: which file (and line, column), what was expected, what was found, and how to
fix it, in one line.

    problem(path, "2 tab-separated fields", "3", line=8)  ->  "<path> line 8: expected 2 tab-separated fields, found 3"

Every data check (:mod:`.atomic`, :mod:`.mmrec`, :mod:`.features`) builds its message here and raises its own
``ValueError`` subclass, which every entry point reports as bad input (one line, exit status 2).
"""

from __future__ import annotations

import difflib
from typing import Iterable


def location(path: str, line: int | None = None, column: int | None = None) -> str:
    """``path``, ``path line 3`` or ``path line 1, column 2`` (1-based)."""
    where = str(path)
    if line is not None:
        where += f" line {line}"
    if column is not None:
        where += f"{',' if line is not None else ''} column {column}"
    return where


def problem(path: str, expected: str, found: str, line: int | None = None, column: int | None = None,
            hint: str | None = None) -> str:
    """``"<location>: expected <expected>, found <found>[; <hint>]"``: the one-line message of a data mistake."""
    return f"{location(path, line, column)}: expected {expected}, found {found}" + (f"; {hint}" if hint else "")


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``word`` (difflib's ratio >= 0.6), or None."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return close[0] if close else None


def names(words: Iterable[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    words = list(words)
    return " and ".join(words) if len(words) < 3 else f"{', '.join(words[:-1])} and {words[-1]}"
