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
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

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


def read_feature_file(path: str) -> np.ndarray:
    """Load a 2-D numeric, finite matrix from a ``.npy`` file (float32)."""
    try:
        raw = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any reading failure is reported the same way
        raise ModalityFeatureError(
            f"{path}: could not be read as a numeric .npy array ({type(err).__name__}: {err})"
        ) from None
    if raw.dtype.kind not in "biuf":
        raise ModalityFeatureError(f"{path}: expected a numeric array, found dtype {raw.dtype}")
    if raw.ndim != 2:
        raise ModalityFeatureError(
            f"{path}: expected a 2-D array (one row per item), found shape {tuple(raw.shape)}"
        )
    if raw.shape[1] == 0:
        raise ModalityFeatureError(
            f"{path}: expected at least 1 feature column, found shape {tuple(raw.shape)} (0 columns)"
        )
    data = np.asarray(raw, dtype=np.float32)
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        n_values = int((~np.isfinite(data)).sum())
        raise ModalityFeatureError(
            f"{path}: expected finite values, found {n_values} NaN or inf values in {len(rows)} rows ({shown})"
        )
    return data


def _read_id_map(path: str) -> np.ndarray:
    if path.endswith(".npy"):
        tokens = np.load(path, allow_pickle=False)
        if tokens.ndim != 1:
            raise ModalityFeatureError(f"{path}: expected a 1-D array of item tokens, found shape {tokens.shape}")
        return tokens.astype(str)
    with open(path, encoding="utf-8") as f:
        return np.array([line.strip() for line in f if line.strip()], dtype=str)


def align_rows(
    data: np.ndarray, item_tokens: Sequence[str], spec: ModalitySpec
) -> np.ndarray:
    """Rows of ``data`` in internal item-id order; ``item_tokens[k]`` is the token of internal id k+1."""
    tokens = np.asarray(item_tokens, dtype=str)
    if spec.id_map is not None:
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
        rows = np.fromiter((row_of[t] for t in tokens), dtype=np.int64, count=len(tokens))
    else:
        try:
            rows = tokens.astype(np.int64)
        except ValueError:
            raise ModalityFeatureError(
                f"{spec.path}: row k is read as item token k, but the dataset's item tokens are not integers "
                f"(e.g. {tokens[0]!r}); give an id_map"
            ) from None
        if rows.min() < 0 or rows.max() >= len(data):
            raise ModalityFeatureError(
                f"{spec.path}: expected a row for every item token up to {rows.max()} "
                f"(at least {rows.max() + 1} rows), found {len(data)} rows"
            )
    return data[rows]


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
    specs: Sequence[ModalitySpec], item_tokens: Sequence[str], item_file: str
) -> dict[str, torch.Tensor]:
    """Every modality as a float32 tensor [len(item_tokens) + 1, d]; row 0 (padding) is zero."""
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
            rows = align_rows(read_feature_file(spec.path), item_tokens, spec)
        padded = np.zeros((len(item_tokens) + 1, rows.shape[1]), dtype=np.float32)
        padded[1:] = rows
        features[spec.name] = torch.from_numpy(padded)
    return features
