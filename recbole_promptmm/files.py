"""Writing files so that a reader never sees half of one: every file the package and its tooling write goes
through :func:`atomic_path` (checkpoints, result JSON, reports, recommendations, plots); and the one rule for an
output path that exists already (:func:`check_output_folder`, :func:`check_output_file`)."""

from __future__ import annotations

import glob
import json
import math
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator


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


# ------------------------------------------------------------------ outputs that exist already
# The rule (README.md, "What each command writes"): a path a command writes that exists already is either an
# earlier output of ours, recognised by what we write into it (a marker file, a header, metadata), and then replaced
# atomically or resumed, or it is refused with one line and left untouched. No writer deletes what it did not write.

class OutputExistsError(ValueError):
    """An output path that exists and is not an earlier output of the command (one line; exit status 2)."""


def _unwritable(path: str, folder: bool) -> str | None:
    """Why ``path`` cannot be written as a file (or, with ``folder``, used as a folder to write in), or None: a
    folder where a file is expected (or a file where a folder is), an existing path without write permission, or a
    nearest existing parent that is a file or cannot be written in."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if os.path.exists(path):
        if os.path.isdir(path) != folder:
            return f"is a {'file' if folder else 'folder'}; expected {'a folder' if folder else 'a file path'}"
        if not os.access(path, os.W_OK | (os.X_OK if folder else 0)):
            return "cannot be written (no permission)"
        if folder:
            return None
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot be created: {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: no permission to write in {parent}"
    return None


def check_writable(path: str | os.PathLike | None, option: str, folder: bool = False) -> None:
    """Raise a one-line :class:`OutputExistsError` naming ``option`` (``--result_json``, ``--out``, ...) when
    ``path`` cannot be written (:func:`_unwritable`); None passes. Runs before training, so a bad path costs
    nothing."""
    if path is None or path == "":
        return
    if not isinstance(path, (str, os.PathLike)):
        raise OutputExistsError(f"{option}={path!r}: expected a path")
    problem = _unwritable(path, folder)
    if problem:
        raise OutputExistsError(f"{option} {os.fspath(path)} {problem}")


def _named(entries: list[str], limit: int = 3) -> str:
    shown = ", ".join(entries[:limit])
    return shown + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


def json_has_keys(path: str, keys: tuple[str, ...]) -> bool:
    """Whether ``path`` holds a JSON object with every one of ``keys``."""
    value = read_json(path)
    return isinstance(value, dict) and all(k in value for k in keys)


def marked_by(markers: dict[str, tuple[str, ...]]) -> Callable[[str, list[str]], list[str]]:
    """A ``foreign`` test for :func:`check_output_folder`: a folder holding one of ``markers`` (file name -> JSON
    keys it holds; ``()``: any content) is ours, whatever else it holds (such a writer only adds its own names);
    else every entry is foreign."""
    def foreign(folder: str, entries: list[str]) -> list[str]:
        for name, keys in markers.items():
            if name in entries and (not keys or json_has_keys(os.path.join(folder, name), keys)):
                return []
        return entries
    return foreign


def holds_cwd(path: str) -> bool:
    """Whether ``path`` is the working folder or a folder above it."""
    path, cwd = os.path.realpath(path), os.path.realpath(os.getcwd())
    return cwd == path or cwd.startswith(path.rstrip(os.sep) + os.sep)


def check_output_folder(path: str, option: str, command: str, what: str,
                        foreign: Callable[[str, list[str]], list[str]], replaced: bool = False) -> bool:
    """Whether the folder ``path`` is an earlier output of ``command`` (True), or absent or empty (False: write a
    new one); anything else is an :class:`OutputExistsError` naming what it holds, and nothing is touched.

    ``foreign(path, entries)``: the entries that show the folder is not ours (none: ours). ``replaced``: the
    command replaces the folder whole, so the working folder and the folders above it are refused too."""
    check_writable(path, option, folder=True)
    if not os.path.lexists(path):
        return False
    if os.path.islink(path):  # (a path that is no folder at all was refused by check_writable)
        raise OutputExistsError(f"{option} {path} is a symbolic link; give the folder itself, or a new folder")
    entries = sorted(os.listdir(path))
    strangers = foreign(path, entries) if entries else []
    if strangers:
        raise OutputExistsError(f"{option} {path} exists and is not {what} written by {command} (it holds "
                                f"{_named(strangers)}); choose a new folder or remove it")
    if replaced and holds_cwd(path):
        raise OutputExistsError(f"{option} {path} is the working folder (or holds it); choose a new folder")
    return bool(entries)


def first_line(path: str, limit: int = 4096) -> str:
    """The first line of a text file (at most ``limit`` bytes, undecodable bytes replaced)."""
    with open(path, "rb") as f:
        return f.read(limit).split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")


def check_output_file(path: str, option: str, command: str, what: str, ours: Callable[[str], bool]) -> bool:
    """Whether the file ``path`` is an earlier output of ``command`` (True: replace it atomically), or absent or
    empty (False); anything else (a folder, a file ``ours`` does not recognise) is an :class:`OutputExistsError`
    quoting the file's start, and nothing is touched."""
    check_writable(path, option)
    if not os.path.lexists(path):
        return False
    if os.path.isdir(path):
        raise OutputExistsError(f"{option} {path} is a folder; give a file name")
    if not os.path.isfile(path):
        raise OutputExistsError(f"{option} {path} exists and is not a regular file; choose a new file")
    if os.path.getsize(path) == 0:
        return False
    if ours(path):
        return True
    start = first_line(path)
    shown = repr(start[:40]) + ("..." if len(start) > 40 else "")
    raise OutputExistsError(f"{option} {path} exists and is not {what} written by {command} (it starts {shown}); "
                            "choose a new file or remove it")


def _exchange(a: str, b: str) -> bool:
    """Swap the paths ``a`` and ``b`` in one step (Linux's ``renameat2(RENAME_EXCHANGE)``); False where the
    system or the file system cannot."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def replace_folder(new: str, target: str, ours: tuple[str, ...]) -> None:
    """Put the folder ``new`` at ``target`` (its sibling). An earlier ``target`` (checked to be ours by the caller)
    is swapped out in one step where the system allows it (else moved aside first: for an instant ``target`` is
    missing), then its files named in ``ours`` are removed, and the folder itself if that empties it: a file that
    appeared in it meanwhile stays, in a ``.old-*`` folder beside ``target``."""
    if not os.path.isdir(target):
        os.replace(new, target)
        return
    holder = tempfile.mkdtemp(prefix=f".old-{os.path.basename(target)}-", dir=os.path.dirname(target))
    old = os.path.join(holder, os.path.basename(target))
    if _exchange(new, target):
        os.replace(new, old)
    else:
        os.replace(target, old)
        os.replace(new, target)
    for name in ours:
        path = os.path.join(old, name)
        if os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
    for folder in (old, holder):
        try:
            os.rmdir(folder)
        except OSError:
            return
