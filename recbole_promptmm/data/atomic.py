"""Check RecBole atomic files before RecBole reads them: every line has the header's number of fields.

RecBole reads ``.inter``/``.user``/``.item`` files with pandas, which fills a short line with NaN (a bad line then
counts as an interaction) and fails on a long one with a message that names neither file nor line. Here every
line that RecBole will read is counted first; an :class:`AtomicFileError` names the file, the line (1-based; the
header is line 1) and the expected and found numbers of fields.

The count runs on the raw bytes with numpy, in 1 MiB blocks (about 0.2 s per million lines). Empty lines are skipped,
as pandas skips them. A line that holds a double quote is re-read with the ``csv`` module (pandas' quoting rule:
a quoted field may hold the separator).
"""

from __future__ import annotations

import codecs
import csv
import os
from typing import Iterator, Sequence

import numpy as np

CHUNK_BYTES = 1 << 20  # 1 MiB: blocks that stay in the CPU cache are counted fastest
SHOWN_LINES = 5
# Encodings in which the separator and the newline are single bytes that no other character contains.
BYTE_SAFE_ENCODINGS = {"utf-8", "ascii", "latin-1", "iso8859-1", "cp1252", "iso8859-15"}


class AtomicFileError(ValueError):
    """An atomic file whose lines do not match its header."""


def atomic_files(config) -> list[str]:
    """The atomic files RecBole will read for ``config``: the ``.inter`` file(s) (``<dataset>.<part>.inter`` for
    each part of ``benchmark_filename``; none for ``mmrec_inter_file``, which :mod:`recbole_promptmm.data.mmrec`
    checks), and ``.user``/``.item`` when they exist and ``load_col`` loads them."""
    folder, name = config["data_path"], config["dataset"]
    benchmark = config["benchmark_filename"]
    files = [os.path.join(folder, f"{name}.{part}.inter") for part in benchmark] if benchmark else \
        [os.path.join(folder, f"{name}.inter")]
    if config["mmrec_inter_file"]:
        files = []
    load_col = config["load_col"]
    for source in ("user", "item"):
        path = os.path.join(folder, f"{name}.{source}")
        if os.path.isfile(path) and (load_col is None or source in load_col):
            files.append(path)
    return [f for f in files if os.path.isfile(f)]


def check_atomic_files(config) -> None:
    """Check every file of :func:`atomic_files` (see :func:`check_atomic_file`)."""
    separator = config["field_separator"] or "\t"
    for path in atomic_files(config):
        check_atomic_file(path, separator, config["encoding"])


def _byte_safe(encoding: str | None, separator: str) -> bool:
    name = codecs.lookup(encoding or "utf-8").name
    return name in BYTE_SAFE_ENCODINGS and len(separator.encode(name)) == 1


def check_atomic_file(path: str, separator: str = "\t", encoding: str | None = None) -> int:
    """Raise :class:`AtomicFileError` unless every non-empty line of ``path`` has as many ``separator``-separated
    fields as its header; returns the number of data lines."""
    with open(path, "rb") as f:
        header = f.readline()
    encoding = encoding or "utf-8"
    try:
        header_text = header.decode(encoding).rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise AtomicFileError(f"{path} line 1: not readable as {encoding} ({err})") from None
    if not header_text:
        raise AtomicFileError(f"{path} line 1: expected a header (field:type names), found an empty line")
    n_fields = header_text.count(separator) + 1
    if _byte_safe(encoding, separator):
        bad, n_lines = _bad_lines_bytes(path, separator.encode(codecs.lookup(encoding).name)[0], n_fields - 1)
    else:
        bad, n_lines = _bad_lines_text(path, separator, encoding, n_fields - 1)
    if bad:
        bad = _recheck_quoted(path, bad, separator, encoding, n_fields)
    if bad:
        shown = ", ".join(f"line {line} has {found}" for line, found in bad[:SHOWN_LINES])
        more = f" (and {len(bad) - SHOWN_LINES} more lines)" if len(bad) > SHOWN_LINES else ""
        first_line, first_found = bad[0]
        raise AtomicFileError(
            f"{path} line {first_line}: expected {n_fields} {_name(separator)}-separated fields as in the header "
            f"({header_text!r}), found {first_found}; {len(bad)} bad line(s): {shown}{more}"
        )
    return n_lines


def _name(separator: str) -> str:
    return {"\t": "tab", ",": "comma", " ": "space", ";": "semicolon"}.get(separator, repr(separator))


def _chunks(path: str) -> Iterator[tuple[bytes, bool]]:
    """Blocks of whole lines after the header (the last one may lack its newline), and whether it is the last."""
    with open(path, "rb") as f:
        f.readline()
        rest = b""
        while True:
            block = f.read(CHUNK_BYTES)
            if not block:
                if rest:
                    yield rest, True
                return
            block = rest + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                rest = block
                continue
            rest = block[cut:]
            yield block[:cut], False


def _bad_lines_bytes(path: str, sep: int, expected: int) -> tuple[list[tuple[int, int]], int]:
    """(1-based line, fields found) of every non-empty line with ``expected`` separators missing, and the number of
    lines; counted with numpy on the raw bytes."""
    bad: list[tuple[int, int]] = []
    first_line = 2  # line number of the block's first line
    for block, _ in _chunks(path):
        data = np.frombuffer(block, dtype=np.uint8)
        if data[-1] != 10:  # a last line without newline
            data = np.append(data, np.uint8(10))
        # Positions of separators and newlines together: between two newlines, the separators of one line.
        marks = np.flatnonzero((data == sep) | (data == 10))
        newline_at = np.flatnonzero(data[marks] == 10)
        counts = np.diff(newline_at, prepend=-1) - 1
        ends = marks[newline_at]
        lengths = np.diff(ends, prepend=-1) - 1
        # "\r\n" endings: a line holding only "\r" is empty too
        has_cr = (lengths > 0) & (data[np.maximum(ends - 1, 0)] == 13)
        empty = (lengths - has_cr) == 0
        wrong = np.flatnonzero((counts != expected) & ~empty)
        bad += [(first_line + int(i), int(counts[i]) + 1) for i in wrong[:10_000]]
        first_line += len(ends)
    return bad, first_line - 2


def _bad_lines_text(path: str, sep: str, encoding: str, expected: int) -> tuple[list[tuple[int, int]], int]:
    bad: list[tuple[int, int]] = []
    n = 0
    with open(path, encoding=encoding, newline="") as f:
        f.readline()
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line and line.count(sep) != expected:
                bad.append((n + 1, line.count(sep) + 1))
    return bad, n


def _recheck_quoted(path: str, bad: Sequence[tuple[int, int]], sep: str, encoding: str,
                    n_fields: int) -> list[tuple[int, int]]:
    """Drop the bad lines that hold a quoted field and have the right number of fields under csv quoting."""
    if len(sep) != 1:
        return list(bad)
    wanted = {line for line, _ in bad}
    lines: dict[int, str] = {}
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        for number, line in enumerate(f, start=1):
            if number in wanted:
                lines[number] = line.rstrip("\r\n")
            if number >= max(wanted):
                break
    kept = []
    for number, found in bad:
        line = lines.get(number, "")
        if '"' in line:
            try:
                fields = next(csv.reader([line], delimiter=sep))
            except (csv.Error, StopIteration):
                fields = []
            if len(fields) == n_fields:
                continue
        kept.append((number, found))
    return kept
