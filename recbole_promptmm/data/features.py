"""Item modality features: parse the ``modality_features`` config key, read, validate and align the files.

``modality_features`` maps a modality name to one of

* a path to a ``.npy`` file (relative to the dataset folder, or absolute), row k = item token k;
* ``builtin:<relative path>``: a file shipped inside this package (see ``scripts/``);
* ``{path: FILE, id_map: MAP}``: row r of FILE belongs to the item token on line r of MAP (a text file with
  one token per line, or a ``.npy`` array of tokens);
* ``{item_field: FIELD}``: the multi-hot encoding of a ``token_seq`` column of the dataset's ``.item`` file
  (e.g. ml-100k's genres in ``class``), computed at load time.

A list of ``{name: NAME, ...}`` entries is accepted too. Every check runs before any training or writing and
fails with :class:`ModalityFeatureError`, naming the file, what was expected and what was found.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from recbole_promptmm.data.problems import problem
from recbole_promptmm.paths import builtin_data_dir

BUILTIN_PREFIX = "builtin:"


class ModalityFeatureError(ValueError):
    """A modality feature file or spec that cannot be used."""


@dataclass(frozen=True)
class ModalitySpec:
    """One modality: where its matrix comes from."""

    name: str
    path: str | None = None
    id_map: str | None = None
    item_field: str | None = None

    def describe(self) -> str:
        return self.path or f"{self.item_field!r} column of the .item file"


def _resolve(path: str, dataset_dir: str) -> str:
    if path.startswith(BUILTIN_PREFIX):
        return os.fspath(builtin_data_dir() / path[len(BUILTIN_PREFIX):])
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(dataset_dir, path)


def parse_modality_specs(value: Any, dataset_dir: str) -> list[ModalitySpec]:
    """Turn the config value into specs with resolved paths, checking names and that files exist."""
    if value is None:
        return []
    if isinstance(value, dict):
        entries = [(name, spec) for name, spec in value.items()]
    elif isinstance(value, (list, tuple)):
        entries = []
        for k, entry in enumerate(value):
            if not isinstance(entry, dict) or "name" not in entry:
                raise ModalityFeatureError(
                    f"modality_features entry {k} must be a mapping with a 'name' key, found {entry!r}"
                )
            entry = dict(entry)
            entries.append((entry.pop("name"), entry if set(entry) != {"path"} else entry["path"]))
    else:
        raise ModalityFeatureError(
            f"modality_features must map modality names to .npy files, found {type(value).__name__}: {value!r}"
        )

    specs: list[ModalitySpec] = []
    for name, spec in entries:
        if not isinstance(name, str) or not name:
            raise ModalityFeatureError(f"modality name must be a non-empty string, found {name!r}")
        if any(s.name == name for s in specs):
            raise ModalityFeatureError(f"modality {name!r} is given twice in modality_features; give each once")
        if isinstance(spec, str):
            spec = {"path": spec}
        if not isinstance(spec, dict) or not ({"path", "item_field"} & set(spec)):
            raise ModalityFeatureError(
                f"modality {name!r}: expected a .npy path, {{path: ..., id_map: ...}} or {{item_field: ...}}, "
                f"found {spec!r}"
            )
        unknown = set(spec) - {"path", "id_map", "item_field"}
        if unknown:
            raise ModalityFeatureError(f"modality {name!r}: unknown keys {sorted(unknown)}")
        if "item_field" in spec:
            specs.append(ModalitySpec(name=name, item_field=str(spec["item_field"])))
            continue
        path = _resolve(str(spec["path"]), dataset_dir)
        if not os.path.isfile(path):
            raise ModalityFeatureError(f"modality {name!r}: feature file {path} does not exist")
        id_map = spec.get("id_map")
        if id_map is not None:
            id_map = _resolve(str(id_map), dataset_dir)
            if not os.path.isfile(id_map):
                raise ModalityFeatureError(f"modality {name!r}: id-map file {id_map} does not exist")
        specs.append(ModalitySpec(name=name, path=path, id_map=id_map))
    return specs


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"  # np.savez and torch.save (a zip holding data.pkl) both write zip archives


def _zip_format(path: str, out: str) -> tuple[str, str]:
    with zipfile.ZipFile(path) as archive:
        members = archive.namelist()
    if any(m.rsplit("/", 1)[-1] == "data.pkl" for m in members):
        return "a torch.save file", f"convert it: np.save({out!r}, torch.load({path!r}).float().numpy())"
    arrays = [m[:-4] for m in members if m.endswith(".npy")] or ["arr_0"]
    return (f"an .npz archive (np.savez) holding {', '.join(arrays)}",
            f"convert it: np.save({out!r}, np.load({path!r})[{arrays[0]!r}])")


def foreign_format(path: str) -> tuple[str, str] | None:
    """None for a ``.npy`` file; else (the format found, how to convert it to ``.npy``): empty, torch.save, .npz,
    a pickle, text (CSV), or unknown bytes."""
    with open(path, "rb") as f:
        head = f.read(4096)
    out = os.path.splitext(path)[0] + ".npy"
    also = "" if out == path else f", then name {out} in modality_features"
    if head.startswith(NPY_MAGIC):
        return None
    if not head:
        return "an empty file (0 bytes)", "write the matrix again with np.save(path, matrix)"
    if head.startswith(ZIP_MAGIC):
        found, how = _zip_format(path, out)
        return found, how + also
    if head[:1] == b"\x80":
        return ("a Python pickle (pickle.dump, or an old torch.save)",
                f"convert it: np.save({out!r}, np.asarray(torch.load({path!r}), dtype=np.float32)){also}")
    try:
        first = head.decode("utf-8").splitlines()[0] if b"\0" not in head else None
    except UnicodeDecodeError:
        first = None
    if first is not None:
        delimiter = next((d for d in (",", "\t", ";") if d in first), None)
        return (f"text, e.g. a CSV file (line 1 starts {first[:40]!r})",
                f"convert it: np.save({out!r}, np.loadtxt({path!r}, delimiter={delimiter!r}, dtype=np.float32)){also}")
    return f"an unknown format (first bytes {head[:8]!r})", "write the matrix with np.save(path, matrix)"


def load_npy(path: str, what: str = "a numeric .npy array") -> np.ndarray:
    """``np.load(path, mmap_mode="r")`` of a ``.npy`` file; a :class:`ModalityFeatureError` naming the format
    found (:func:`foreign_format`) and how to convert it for any other file."""
    foreign = foreign_format(path)
    if foreign is not None:
        raise ModalityFeatureError(problem(path, f"{what} (np.save)", foreign[0], hint=foreign[1]))
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any reading failure is reported the same way
        if "pickled" in str(err):
            found, hint = "an array of Python objects (dtype object)", "save numbers: np.asarray(x, dtype=np.float32)"
        else:
            found, hint = f"a .npy file numpy cannot read ({type(err).__name__}: {err})", None
        raise ModalityFeatureError(problem(path, what, found, hint=hint)) from None


def read_feature_file(path: str) -> np.ndarray:
    """Load a 2-D numeric, finite matrix from a ``.npy`` file (float32)."""
    raw = load_npy(path)
    if raw.dtype.kind not in "biuf":
        raise ModalityFeatureError(problem(path, "a numeric array", f"dtype {raw.dtype}"))
    if raw.ndim != 2:
        raise ModalityFeatureError(problem(path, "a 2-D array (one row per item)", f"shape {tuple(raw.shape)}"))
    if raw.shape[1] == 0:
        raise ModalityFeatureError(problem(path, "at least 1 feature column",
                                           f"shape {tuple(raw.shape)} (0 columns)"))
    data = np.asarray(raw, dtype=np.float32)
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        n_values = int((~np.isfinite(data)).sum())
        raise ModalityFeatureError(problem(path, "finite values",
                                           f"{n_values} NaN or inf values in {len(rows)} rows ({shown})"))
    return data


def _read_id_map(path: str) -> np.ndarray:
    if path.endswith(".npy"):
        tokens = np.asarray(load_npy(path, "a .npy array of item tokens"))
        if tokens.ndim != 1:
            raise ModalityFeatureError(f"{path}: expected a 1-D array of item tokens, found shape {tokens.shape}")
        return tokens.astype(str)
    with open(path, encoding="utf-8") as f:
        return np.array([line.strip() for line in f if line.strip()], dtype=str)


ID_MAP_HINT = "give an id_map: modality_features: {NAME: {path: FILE, id_map: MAP}}, MAP listing the item token of each row"
Locate = Callable[[str], Optional[str]]  # an item token -> where the data holds it ("x.inter line 7, column 2")


def align_rows(data: np.ndarray, item_tokens: Sequence[str], spec: ModalitySpec, largest_token: int | None = None,
               locate: Locate | None = None) -> np.ndarray:
    """Rows of ``data`` in internal item-id order; ``item_tokens[k]`` is the token of internal id k+1.

    Row r belongs to the token on line r of ``spec.id_map``; without one, to item token r (:func:`_token_rows`)."""
    tokens = np.asarray(item_tokens, dtype=str)
    if spec.id_map is None:
        return data[_token_rows(len(data), tokens, spec.path, largest_token, locate)]
    map_tokens = _read_id_map(spec.id_map)
    if len(map_tokens) != len(data):
        raise ModalityFeatureError(
            f"{spec.id_map}: expected one token per row of {spec.path} ({len(data)}), found {len(map_tokens)}"
        )
    row_of = {t: r for r, t in enumerate(map_tokens)}
    missing = [t for t in tokens if t not in row_of]
    if missing:
        raise ModalityFeatureError(
            f"{spec.id_map}: expected every item of the dataset to be listed, {len(missing)} are missing "
            f"(e.g. {', '.join(missing[:5])})"
        )
    return data[np.fromiter((row_of[t] for t in tokens), dtype=np.int64, count=len(tokens))]


def _token_rows(n_rows: int, tokens: np.ndarray, path: str, largest_token: int | None, locate: Locate | None
                ) -> np.ndarray:
    """Row k = item token k: every token an integer in 0..n_rows-1, and no row beyond the largest item token the
    data holds (``largest_token``, before RecBole's filtering; default the largest of ``tokens``): such rows
    belong to no item, so the matrix is not the one of this dataset's items (unless an id_map says which rows are)."""
    as_int = pd.to_numeric(pd.Series(tokens), errors="coerce").to_numpy()
    bad = np.flatnonzero(np.isnan(as_int) | (as_int < 0) | (as_int != np.round(as_int)))
    if len(bad):
        token = str(tokens[bad[0]])
        where = locate(token) if locate is not None else None
        raise ModalityFeatureError(problem(
            path, "item tokens that are row numbers (integers >= 0: row k = item token k)",
            f"item token {token!r}" + (f" in {where}" if where else "") + f" ({len(bad)} such item{'' if len(bad) == 1 else 's'})",
            hint=ID_MAP_HINT))
    rows = as_int.astype(np.int64)
    largest = int(rows.max()) if largest_token is None else max(int(largest_token), int(rows.max()))
    if largest >= n_rows:
        raise ModalityFeatureError(problem(
            path, f"a row for every item token up to {largest} (at least {largest + 1} rows)", f"{n_rows} rows"))
    if n_rows > largest + 1:
        raise ModalityFeatureError(problem(
            path, f"at most {largest + 1} rows (row k = item token k; the largest item token is {largest})",
            f"{n_rows} rows", hint=f"rows {largest + 1}..{n_rows - 1} belong to no item: {ID_MAP_HINT}, or keep "
                                   f"the item rows: np.save(path, np.load(path)[:{largest + 1}])"))
    return rows


def multi_hot_from_item_file(item_file: str, field: str, item_tokens: Sequence[str], sep: str = "\t",
                             seq_sep: str = " ") -> np.ndarray:
    """Multi-hot matrix of a ``token_seq`` column of a RecBole ``.item`` file, rows in ``item_tokens`` order."""
    if not os.path.isfile(item_file):
        raise ModalityFeatureError(f"modality from item field {field!r}: {item_file} does not exist")
    with open(item_file, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split(sep)
        names = [h.split(":")[0] for h in header]
        if field not in names:
            raise ModalityFeatureError(f"{item_file}: expected a column {field!r}, found columns {names}")
        id_col = next((i for i, h in enumerate(header) if h.split(":")[0] == "item_id"), 0)
        col = names.index(field)
        values: dict[str, list[str]] = {}
        for line_no, line in enumerate(f, start=2):
            cells = line.rstrip("\n").split(sep)
            if len(cells) != len(header):
                raise ModalityFeatureError(
                    f"{item_file} line {line_no}: expected {len(header)} columns, found {len(cells)}"
                )
            values[cells[id_col]] = cells[col].split(seq_sep) if cells[col] else []
    vocab = sorted({v for vs in values.values() for v in vs})
    index = {v: j for j, v in enumerate(vocab)}
    out = np.zeros((len(item_tokens), len(vocab)), dtype=np.float32)
    missing = [t for t in item_tokens if t not in values]
    if missing:
        raise ModalityFeatureError(
            f"{item_file}: expected a row for every item of the dataset, {len(missing)} are missing "
            f"(e.g. {', '.join(missing[:5])})"
        )
    for k, token in enumerate(item_tokens):
        for v in values[token]:
            out[k, index[v]] = 1.0
    return out


def load_modality_features(
    specs: Sequence[ModalitySpec], item_tokens: Sequence[str], item_file: str, largest_token: int | None = None,
    locate: Locate | None = None,
) -> dict[str, torch.Tensor]:
    """Every modality as a float32 tensor [len(item_tokens) + 1, d]; row 0 (padding) is zero (``largest_token``,
    ``locate``: :func:`align_rows`)."""
    features: dict[str, torch.Tensor] = {}
    for spec in specs:
        if spec.item_field is not None:
            rows = multi_hot_from_item_file(item_file, spec.item_field, item_tokens)
            if rows.shape[1] == 0:
                raise ModalityFeatureError(
                    f"{item_file}: column {spec.item_field!r} holds no values, so modality {spec.name!r} would "
                    "have 0 feature columns; expected at least 1"
                )
        else:
            rows = align_rows(read_feature_file(spec.path), item_tokens, spec, largest_token, locate)
        padded = np.zeros((len(item_tokens) + 1, rows.shape[1]), dtype=np.float32)
        padded[1:] = rows
        features[spec.name] = torch.from_numpy(padded)
    return features
