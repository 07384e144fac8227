"""RecBole's logger, once per run: each run in a process gets its own ``./log/<Model>/...log`` file.

RecBole's ``init_logger`` calls ``logging.basicConfig``, which does nothing once the root logger has handlers,
so a second run in the same process (a comparison, a sweep, a test suite) would keep writing into the first
run's file. Here the handlers of the previous run are replaced instead.

RecBole names the file ``<Model>-<dataset>-<time>-<md5 of the config>.log`` with a one-second time stamp, so two
runs of the same config started in the same second would share it (and, since RecBole names the TensorBoard
folder after it, that folder too). Here the time stamp carries ``-<pid>-<8 hex digits>`` as well.

:func:`buffer_logs` keeps what is logged before the file exists (data loading, model construction) and
:func:`replay_buffered_logs` writes it to the new run's handlers, so the checks that can fail run before anything is written
and the log is still complete. :func:`discard_run_log` removes a run's log file (a run that failed early).

The console is the log file's short version: records logged with ``extra=FILE_ONLY`` (the config, data and model
dumps, checkpoint saves) and RecBole's per-epoch records of ``Trainer.fit`` (loss, valid score, the valid result's
dict, its stop line) go to the file only; our trainers print one line per epoch instead (``extra=CONSOLE_ONLY``).
Warnings and errors always reach the console.

In a multi-process run (:mod:`recbole_promptmm.distributed`) only the main process has a log file; every other
process logs to the console alone, at the level RecBole's ``Config`` gives it (errors only but on each machine's
first process), each line naming its rank.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

import recbole.trainer.trainer as recbole_trainer
import recbole.utils.logger as recbole_logger
from recbole.utils import init_logger as recbole_init_logger
from recbole.utils.utils import get_local_time

from recbole_promptmm import distributed
from recbole_promptmm.paths import run_suffix

_RUN_HANDLERS: list[logging.Handler] = []
_BUFFERED: list[logging.LogRecord] = []

FILE_ONLY = {"to": "file"}
"""``logger.info(..., extra=FILE_ONLY)``: detail for the run's log file, not its console."""
CONSOLE_ONLY = {"to": "console"}
"""``logger.info(..., extra=CONSOLE_ONLY)``: a console line that stands for records the log file already holds."""
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}  # RecBole's init_logger: config["state"] -> level
_RECBOLE_TRAINER_FILE = os.path.normcase(os.path.abspath(recbole_trainer.__file__))


def _on_console(record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING:
        return True
    if getattr(record, "to", None) == "file":
        return False
    in_fit = record.funcName == "fit" and os.path.normcase(os.path.abspath(record.pathname)) == _RECBOLE_TRAINER_FILE
    return not in_fit


def _in_file(record: logging.LogRecord) -> bool:
    return getattr(record, "to", None) != "console"


def unique_time() -> str:
    """RecBole's local time stamp plus :func:`~recbole_promptmm.paths.run_suffix`."""
    return get_local_time() + run_suffix()


def _close_run_handlers() -> None:
    root = logging.getLogger()
    for handler in _RUN_HANDLERS:
        root.removeHandler(handler)
        handler.close()
    _RUN_HANDLERS.clear()


class _Buffer(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _BUFFERED.append(record)


@contextmanager
def buffer_logs(level: int = logging.INFO) -> Iterator[None]:
    """Keep the records logged in the block (the previous run's handlers are closed first), for
    :func:`replay_buffered_logs` after :func:`init_logger`. Records of a block that raises are dropped."""
    _close_run_handlers()
    root = logging.getLogger()
    old_level = root.level
    handler = _Buffer(level)
    root.addHandler(handler)
    root.setLevel(min(level, old_level) if old_level else level)
    _BUFFERED.clear()
    try:
        yield
    except BaseException:
        _BUFFERED.clear()
        raise
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def init_logger(config, stamp: str | None = None) -> str | None:
    """Set up RecBole's console and file logging for this run (a unique file name, see the module docstring);
    returns the log file's absolute path. ``stamp`` (default: a new :func:`unique_time`) replaces RecBole's time
    stamp in the file name: ``run()`` names the run's checkpoints with the same one."""
    root = logging.getLogger()
    _close_run_handlers()
    others = root.handlers[:]
    root.handlers = []
    stamp = stamp or unique_time()
    if distributed.is_main_process():
        recbole_logger.get_local_time = lambda: stamp  # what RecBole's init_logger stamps its file name with
        try:
            recbole_init_logger(config)
        finally:
            recbole_logger.get_local_time = get_local_time
    else:  # no file: the main process's log is the run's
        console = logging.StreamHandler()
        console.setLevel(_LEVELS.get(str(config["state"]).lower(), logging.INFO))
        console.setFormatter(logging.Formatter(f"%(asctime)-15s rank {distributed.rank()} %(levelname)s  %(message)s",
                                               "%d %b %H:%M"))
        root.addHandler(console)
        root.setLevel(console.level)
    ours = root.handlers[:]
    for handler in ours:
        handler.addFilter(_in_file if isinstance(handler, logging.FileHandler) else _on_console)
    root.handlers = ours + others  # RecBole names the TensorBoard folder after the first file handler: ours
    _RUN_HANDLERS[:] = ours
    return run_log_file()


def replay_buffered_logs() -> None:
    """Write the records :func:`buffer_logs` kept into the current run's handlers (once): data loading's detail goes
    to the log file only."""
    for record in _BUFFERED:
        record.to = getattr(record, "to", "file")
        for handler in _RUN_HANDLERS:
            if record.levelno >= handler.level:
                handler.handle(record)
    _BUFFERED.clear()


def run_log_file() -> str | None:
    """The absolute path of the current run's log file (None before :func:`init_logger`)."""
    for handler in _RUN_HANDLERS:
        if isinstance(handler, logging.FileHandler):
            return os.path.abspath(handler.baseFilename)
    return None


def discard_run_log() -> str | None:
    """Close the current run's handlers and delete its log file (and ``log/<Model>``, ``log/`` when that leaves
    them empty); returns the deleted file's path."""
    path = run_log_file()
    _close_run_handlers()
    if path and os.path.isfile(path):
        os.remove(path)
        remove_empty_dirs(os.path.dirname(path), levels=2)
    return path


def remove_empty_dirs(folder: str, levels: int = 1) -> None:
    """Remove ``folder`` and up to ``levels - 1`` of its parents while they are empty."""
    for _ in range(levels):
        try:
            os.rmdir(folder)
        except OSError:
            return
        folder = os.path.dirname(folder)
