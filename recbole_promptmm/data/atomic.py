"""Check RecBole atomic files before RecBole reads them: a header RecBole can read, and every line has the header's
number of fields.

The header (line 1) is read first (:func:`read_header`, :func:`check_typed_header`): no UTF-8 byte-order mark (RecBole
would read it as part of the first field name; ``encoding: utf-8-sig`` reads it away), fields separated by
``field_separator`` (not commas or spaces), each ``name:type`` with one of RecBole's types, and the fields RecBole
loads (``load_col``, the id fields) present, a misspelt one matched to the closest name found. A file with only
its header is refused too. Every message is built by :func:`recbole_promptmm.data.problems.problem`.

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
from recbole.utils import FeatureType

from recbole_promptmm.data.problems import did_you_mean, location, names, problem

CHUNK_BYTES = 1 << 20  # 1 MiB: blocks that stay in the CPU cache are counted fastest
SHOWN_LINES = 5
# Encodings in which the separator and the newline are single bytes that no other character contains.
BYTE_SAFE_ENCODINGS = {"utf-8", "ascii", "latin-1", "iso8859-1", "cp1252", "iso8859-15"}
FIELD_TYPES = tuple(t.value for t in FeatureType)  # RecBole's: token, float, token_seq, float_seq
SEPARATORS = ("\t", ",", ";", "|", " ")  # a header of one field holding one of these: another separator was meant


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


def required_fields(config, source: str) -> tuple[list[str], list[str]]:
    """(the id fields a ``source`` (inter, user, item) file must hold: ``USER_ID_FIELD`` and ``ITEM_ID_FIELD`` for
    inter, as far as ``load_col`` loads them; the other fields ``load_col`` names, which RecBole skips when absent)."""
    keys = {"inter": ("USER_ID_FIELD", "ITEM_ID_FIELD"), "user": ("USER_ID_FIELD",), "item": ("ITEM_ID_FIELD",)}
    ids = [config[k] for k in keys.get(source, ()) if config[k]]
    load_col = config["load_col"]
    if load_col is None or source not in load_col:
        return ids, []
    loaded = [str(f) for f in load_col[source]]
    return [f for f in ids if f in loaded], [f for f in loaded if f not in ids]


def check_atomic_files(config) -> None:
    """Check every file of :func:`atomic_files`: its header (:func:`check_typed_header`), then its lines
    (:func:`check_atomic_file`)."""
    separator = config["field_separator"] or "\t"
    for path in atomic_files(config):
        fields = read_header(path, separator, config["encoding"] or "utf-8", encoding_key=True)
        check_typed_header(path, fields, *required_fields(config, path.rsplit(".", 1)[-1]))
        check_atomic_file(path, separator, config["encoding"])


def _byte_safe(encoding: str | None, separator: str) -> bool:
    name = codecs.lookup(encoding or "utf-8").name
    return name in BYTE_SAFE_ENCODINGS and len(separator.encode(name)) == 1


def read_header(path: str, separator: str = "\t", encoding: str = "utf-8", encoding_key: bool = False) -> list[str]:
    """The fields of the header (line 1) of ``path``. Refused: a UTF-8 byte-order mark (unless ``encoding`` is
    utf-8-sig; ``encoding_key``: the hint names RecBole's ``encoding`` key), bytes ``encoding`` cannot read, an empty
    line, one field that holds another usual separator (a comma- or space-separated file read as tab-separated)."""
    with open(path, "rb") as f:
        header = f.readline()
    if header.startswith(codecs.BOM_UTF8) and codecs.lookup(encoding).name != "utf-8-sig":
        raise AtomicFileError(problem(
            path, "the header line to start with its first field name", "a UTF-8 byte-order mark (bytes EF BB BF)",
            line=1, hint="re-save the file as UTF-8 without the mark" + (
                ", or set encoding: utf-8-sig" if encoding_key else "")))
    try:
        text = header.decode(encoding).rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise AtomicFileError(problem(path, f"text readable as {encoding}", f"bytes it cannot read ({err})",
                                      line=1)) from None
    if not text:
        raise AtomicFileError(problem(path, "a header (the field names)", "an empty line", line=1))
    fields = text.split(separator)
    others = [s for s in SEPARATORS if s != separator and s in text]
    if len(fields) == 1 and others:
        raise AtomicFileError(problem(
            path, f"{_name(separator)}-separated fields", f"one field {text!r} that holds {_name(others[0])}s",
            line=1, hint=f"convert the file to {_name(separator)}s, or set field_separator: {others[0]!r}"))
    return fields


def check_typed_header(path: str, fields: Sequence[str], required: Sequence[str], wanted: Sequence[str] = ()) -> None:
    """RecBole's header: every field ``name:type`` with type one of :data:`FIELD_TYPES`; the ``required`` names
    among them, and the ``wanted`` ones unless absent with no close field name (RecBole skips an absent ``load_col``
    field; a misspelt one is refused, matched to the closest field name found)."""
    for column, field in enumerate(fields, start=1):
        name, _, kind = field.partition(":")
        if field.count(":") != 1:
            raise AtomicFileError(problem(
                path, f"name:type (type one of {', '.join(FIELD_TYPES)})",
                f"{field!r} without a type" if ":" not in field else f"{field!r}, with {field.count(':')} colons",
                line=1, column=column, hint=f"e.g. {name}:token"))
        if kind not in FIELD_TYPES:
            close = did_you_mean(kind, FIELD_TYPES)
            raise AtomicFileError(problem(
                path, f"a type one of {', '.join(FIELD_TYPES)}", f"{field!r}", line=1, column=column,
                hint=f"did you mean {name}:{close}?" if close else None))
    present = [f.partition(":")[0] for f in fields]
    expected = [*required, *wanted]
    spare = [p for p in present if p not in expected]
    for missing in (f for f in expected if f not in present):
        close = did_you_mean(missing, spare)
        if close is not None:
            raise AtomicFileError(problem(
                path, f"the fields {names(expected)}", f"{fields[present.index(close)]!r}", line=1,
                column=present.index(close) + 1, hint=f"did you mean {missing}?"))
        if missing in required:
            raise AtomicFileError(problem(path, f"the fields {names(expected)}", f"{', '.join(fields)} (no {missing})",
                                          line=1, hint="see load_col, USER_ID_FIELD and ITEM_ID_FIELD"))


def check_atomic_file(path: str, separator: str = "\t", encoding: str | None = None) -> int:
    """Raise :class:`AtomicFileError` unless the header is readable (:func:`read_header`), every non-empty line of
    ``path`` has as many ``separator``-separated fields as its header and there is at least one; returns the number
    of non-empty data lines."""
    fields = read_header(path, separator, encoding or "utf-8", encoding_key=encoding is not None)
    n_fields = len(fields)
    encoding = encoding or "utf-8"
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
            f"({separator.join(fields)!r}), found {first_found}; {len(bad)} bad line(s): {shown}{more}"
        )
    if n_lines == 0:
        raise AtomicFileError(problem(path, "one data line or more after the header", "only the header",
                                      hint="the file holds no interactions or rows"))
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
    non-empty lines; counted with numpy on the raw bytes."""
    bad: list[tuple[int, int]] = []
    n_lines = 0
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
        n_lines += int((~empty).sum())
    return bad, n_lines


def _bad_lines_text(path: str, sep: str, encoding: str, expected: int) -> tuple[list[tuple[int, int]], int]:
    bad: list[tuple[int, int]] = []
    n = 0
    with open(path, encoding=encoding, newline="") as f:
        f.readline()
        for number, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            n += bool(line)
            if line and line.count(sep) != expected:
                bad.append((number, line.count(sep) + 1))
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


def find_token(paths: Sequence[str], field: str, token: str, separator: str = "\t",
               encoding: str = "utf-8") -> str | None:
    """``"<path> line N, column C"`` of the first line of ``paths`` whose ``field`` (``name`` or ``name:type`` in
    the header) holds ``token``, or None. Reads line by line: for error messages only."""
    for path in paths:
        with open(path, encoding=encoding, errors="replace") as f:
            header = [h.partition(":")[0] for h in f.readline().rstrip("\r\n").split(separator)]
            if field not in header:
                continue
            column = header.index(field)
            for number, line in enumerate(f, start=2):
                cells = line.rstrip("\r\n").split(separator)
                if len(cells) > column and cells[column] == token:
                    return location(path, number, column + 1)
    return None
