"""RecBole's logger, once per run: each run in a process gets its own ``<run_dir>/log/<Model>/...log`` file.

RecBole writes its log to ``./log/`` and its TensorBoard folder to ``./log_tensorboard/``, relative to the working
directory; here both go under a ``run_dir`` given to :func:`init_logger` (default: the working directory at that
call, RecBole's layout), so a comparison run or a sweep trial writes into its own folder without changing the
process's working directory. The log file's handler carries its TensorBoard folder (:func:`tensorboard_dir`: what
the trainer's writer opens, :mod:`recbole_promptmm.compat`).

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

import hashlib
import logging
import os
from contextlib import contextmanager
from typing import Iterator

import colorlog
import recbole.trainer.trainer as recbole_trainer
from colorama import init as colorama_init
from recbole.utils.logger import RemoveColorFilter, log_colors_config
from recbole.utils.utils import get_local_time

from recbole_promptmm import distributed
from recbole_promptmm.paths import run_suffix

LOG_DIR = "log"  # RecBole's init_logger: its LOGROOT
TENSORBOARD_DIR = "log_tensorboard"  # RecBole's get_tensorboard: its base_path

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


def _recbole_handlers(config, stamp: str, run_dir: str) -> list[logging.Handler]:
    """RecBole 1.2.1's ``init_logger`` handlers (console, then file: its formats, its level from ``config["state"]``,
    its colour filter on the file) with the file at ``<run_dir>/log/<model>/<model>-<dataset>-<stamp>-<md5>.log``
    (``md5``: the first 6 hex digits of the MD5 of the config's values joined, RecBole's name); the file handler's
    ``tensorboard_dir`` is ``<run_dir>/log_tensorboard/<the file's name without .log>`` (RecBole's naming)."""
    colorama_init(autoreset=True)
    level = _LEVELS.get(str(config["state"]).lower(), logging.INFO)
    md5 = hashlib.md5("".join(str(v) for v in config.final_config_dict.values()).encode("utf-8")).hexdigest()[:6]
    name = f"{config['model']}-{config['dataset']}-{stamp}-{md5}"
    folder = os.path.join(run_dir, LOG_DIR, config["model"])
    os.makedirs(folder, exist_ok=True)
    file_handler = logging.FileHandler(os.path.join(folder, f"{name}.log"))
    file_handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s", "%a %d %b %Y %H:%M:%S"))
    file_handler.addFilter(RemoveColorFilter())
    file_handler.tensorboard_dir = os.path.join(run_dir, TENSORBOARD_DIR, name)
    console = logging.StreamHandler()
    console.setFormatter(colorlog.ColoredFormatter("%(log_color)s%(asctime)-15s %(levelname)s  %(message)s",
                                                   "%d %b %H:%M", log_colors=log_colors_config))
    for handler in (console, file_handler):
        handler.setLevel(level)
    return [console, file_handler]


def init_logger(config, stamp: str | None = None, run_dir: str | None = None) -> str | None:
    """Set up RecBole's console and file logging for this run (a unique file name, see the module docstring);
    returns the log file's absolute path. ``stamp`` (default: a new :func:`unique_time`) replaces RecBole's time
    stamp in the file name: ``run()`` names the run's checkpoints with the same one. ``run_dir`` (default: the
    working directory now) holds ``log/`` and ``log_tensorboard/``."""
    root = logging.getLogger()
    _close_run_handlers()
    others = root.handlers[:]
    stamp = stamp or unique_time()
    if distributed.is_main_process():
        ours = _recbole_handlers(config, stamp, os.path.abspath(run_dir or os.getcwd()))
    else:  # no file: the main process's log is the run's
        console = logging.StreamHandler()
        console.setLevel(_LEVELS.get(str(config["state"]).lower(), logging.INFO))
        console.setFormatter(logging.Formatter(f"%(asctime)-15s rank {distributed.rank()} %(levelname)s  %(message)s",
                                               "%d %b %H:%M"))
        ours = [console]
    root.setLevel(ours[0].level)  # RecBole's basicConfig(level=...)
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


def tensorboard_dir(logger: logging.Logger) -> str | None:
    """Where a trainer logging to ``logger`` writes TensorBoard, by RecBole's rule (the folder is named after the
    first handler with a file): that handler's ``tensorboard_dir`` (:func:`init_logger`'s, absolute; "" where the
    log wants none, :func:`without_tensorboard`), or None for a handler that is not ours (RecBole's own
    ``./log_tensorboard/<name>``)."""
    for handler in logger.handlers:
        if hasattr(handler, "baseFilename"):
            return getattr(handler, "tensorboard_dir", None)
    return None


def without_tensorboard(handler: logging.Handler) -> logging.Handler:
    """``handler`` (a file handler), marked so that a trainer whose log it is opens no TensorBoard writer (a sweep's
    driver only evaluates)."""
    handler.tensorboard_dir = ""
    return handler


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
