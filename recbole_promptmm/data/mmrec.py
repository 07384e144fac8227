r"""Datasets in MMRec's layout, read as they are: one interaction file whose ``x_label`` column holds the split.

The layout (many public multimodal datasets circulate in it, e.g. ``../shared/data/lfm2k``):

* ``<dataset folder>/<file>``: tab-separated, a plain header line ``userID  itemID  [rating]  [timestamp]  x_label``
  (names without RecBole's ``:type`` suffixes, in any order; other columns are ignored), one interaction a line;
  ``x_label`` 0, 1, 2 = train, valid, test.
* feature matrices whose row r belongs to ``itemID`` r, declared under ``modality_features`` as usual.

The dataset yaml sets ``mmrec_inter_file: <file>`` (relative to the dataset folder). Nothing is converted or written:
the rows are read into RecBole's interaction frame (``userID`` -> ``USER_ID_FIELD``, ``itemID`` ->
``ITEM_ID_FIELD``, ``rating`` -> ``RATING_FIELD``, ``timestamp`` -> ``TIME_FIELD``), ordered train, valid, test, and
RecBole's own fixed-split path (the one ``benchmark_filename`` takes) cuts them into the three datasets.

Every check runs before RecBole reads anything and fails with :class:`MMRecLayoutError`, naming the file, the line
(1-based, the header is line 1) and what was expected: a line with the wrong number of fields, a missing column, an
``x_label`` outside 0/1/2, a user with no train row, an ``itemID`` beyond the rows of a feature matrix.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from recbole_promptmm.data.atomic import check_atomic_file
from recbole_promptmm.data.features import load_npy
from recbole_promptmm.data.problems import did_you_mean, problem

SPLIT_COLUMN = "x_label"
SPLITS = ("train", "valid", "test")  # x_label 0, 1, 2
ID_COLUMNS = ("userID", "itemID")
# MMRec column -> the RecBole config key naming the field it becomes, and the field's RecBole type
COLUMNS = {"userID": ("USER_ID_FIELD", "token"), "itemID": ("ITEM_ID_FIELD", "token"),
           "rating": ("RATING_FIELD", "float"), "timestamp": ("TIME_FIELD", "float")}


class MMRecLayoutError(ValueError):
    """An MMRec-layout interaction file that cannot be read as a fixed train/valid/test split."""


def mmrec_inter_path(config) -> str | None:
    """The interaction file named by ``mmrec_inter_file`` (relative to the dataset folder), or None."""
    name = config["mmrec_inter_file"]
    if not name:
        return None
    path = os.path.expanduser(str(name))
    return path if os.path.isabs(path) else os.path.join(config["data_path"], path)


def _first_line(mask: np.ndarray) -> int:
    """The file line (header = line 1) of the first True row of ``mask``."""
    return int(np.flatnonzero(mask)[0]) + 2


def read_mmrec_inter(path: str, separator: str = "\t") -> tuple[pd.DataFrame, list[int]]:
    """The interactions of ``path`` ordered train, valid, test (columns: the MMRec names present in
    :data:`COLUMNS`, ids as strings) and the number of rows of each split."""
    check_atomic_file(path, separator)
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split(separator)
    missing = [c for c in (*ID_COLUMNS, SPLIT_COLUMN) if c not in header]
    if missing:
        close = did_you_mean(missing[0], [h for h in header if h not in (*COLUMNS, SPLIT_COLUMN)])
        raise MMRecLayoutError(problem(
            path, "MMRec's header with columns userID, itemID, [rating], [timestamp], x_label",
            f"{', '.join(header)} (missing {', '.join(missing)})", line=1,
            hint=f"did you mean {missing[0]} for {close!r}?" if close else None))
    wanted = [c for c in header if c in COLUMNS or c == SPLIT_COLUMN]
    frame = pd.read_csv(path, sep=separator, usecols=wanted, dtype=str, keep_default_na=False,
                        skip_blank_lines=True, engine="c")
    for column in wanted:
        empty = (frame[column] == "").to_numpy()
        if empty.any():
            raise MMRecLayoutError(f"{path} line {_first_line(empty)}: expected a value in column {column}, "
                                   f"found an empty field ({int(empty.sum())} such lines)")
    label = frame.pop(SPLIT_COLUMN)
    bad = ~label.isin(["0", "1", "2"]).to_numpy()
    if bad.any():
        raise MMRecLayoutError(f"{path} line {_first_line(bad)}: expected x_label 0, 1 or 2 (train, valid, test), "
                               f"found {label.iloc[int(np.flatnonzero(bad)[0])]!r} ({int(bad.sum())} such lines)")
    for column in ("rating", "timestamp"):
        if column in frame:
            values = pd.to_numeric(frame[column], errors="coerce")
            nan = values.isna().to_numpy()
            if nan.any():
                raise MMRecLayoutError(f"{path} line {_first_line(nan)}: expected a number in column {column}, "
                                       f"found {frame[column].iloc[int(np.flatnonzero(nan)[0])]!r}")
            frame[column] = values.astype(np.float64)  # RecBole reads float fields as float64
    split = label.astype(np.int8).to_numpy()
    train_users = set(frame["userID"].to_numpy()[split == 0])
    orphan = ~frame["userID"].isin(train_users).to_numpy()
    if orphan.any():
        n_users = frame["userID"][orphan].nunique()
        raise MMRecLayoutError(
            f"{path} line {_first_line(orphan)}: user {frame['userID'].iloc[int(np.flatnonzero(orphan)[0])]} has no "
            f"train row (x_label 0); every user needs one ({n_users} users have none)")
    order = np.argsort(split, kind="stable")
    sizes = np.bincount(split, minlength=len(SPLITS)).tolist()
    return frame.iloc[order].reset_index(drop=True), sizes


def check_item_rows(frame: pd.DataFrame, path: str, n_rows: int, feature_file: str) -> None:
    """Every ``itemID`` of an MMRec file (read by :func:`read_mmrec_inter`) names a row of a feature matrix."""
    ids = pd.to_numeric(frame["itemID"], errors="coerce").to_numpy()
    bad = ~((ids >= 0) & (ids < n_rows))  # NaN (not an integer) is bad too
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise MMRecLayoutError(
            f"{path}: itemID {frame['itemID'].iloc[k]} has no row in {feature_file} ({n_rows} rows: itemID r is row "
            f"r, so itemIDs must be integers 0..{n_rows - 1}); {int(bad.sum())} interactions name such items")


def feature_rows(path: str) -> int:
    """Rows of a ``.npy`` matrix, read from its header only (another format is refused: :func:`load_npy`)."""
    return int(load_npy(path).shape[0])
