"""RecBole's logger, once per run: each run in a process gets its own ``./log/<Model>/...log`` file.

RecBole's ``init_logger`` calls ``logging.basicConfig``, which does nothing once the root logger has handlers,
so a second run in the same process (a comparison, a sweep, a test suite) would keep writing into the first
run's file. Here the handlers of the previous run are replaced instead.
"""

from __future__ import annotations

import logging
import os

from recbole.utils import init_logger as recbole_init_logger

_RUN_HANDLERS: list[logging.Handler] = []


def init_logger(config) -> str | None:
    """Set up RecBole's console and file logging for this run; returns the log file's absolute path."""
    root = logging.getLogger()
    for handler in _RUN_HANDLERS:
        root.removeHandler(handler)
        handler.close()
    others = root.handlers[:]
    root.handlers = []
    recbole_init_logger(config)
    ours = root.handlers[:]
    root.handlers = others + ours
    _RUN_HANDLERS[:] = ours
    for handler in ours:
        if isinstance(handler, logging.FileHandler):
            return os.path.abspath(handler.baseFilename)
    return None
