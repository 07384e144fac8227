"""What a sweep leaves behind: one row per trial (CSV), the best configuration (yaml), a printed summary."""

from __future__ import annotations

import csv
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import yaml

from recbole_promptmm.config import load_yaml, plain

COMPLETED, STOPPED, FAILED, UNFINISHED = "completed", "stopped_early", "failed", "unfinished"


@dataclass
class TrialRow:
    """One trial of a sweep, as the CSV shows it.

    Parameters
    ----------
    trial_id : str
        Ray's trial id.
    status : str
        ``completed`` (trained to its last epoch or RecBole's early stopping), ``stopped_early`` (by the
        scheduler), ``failed`` (raised; see ``error``) or ``unfinished`` (the sweep was interrupted).
    params : dict
        The trial's searched values.
    iterations : int
        Validation results the trial reported (Ray's ``training_iteration``).
    epoch : int or None
        The last epoch it reported.
    last_score, best_score : float or None
        Validation metric at the last report, and the best over all reports.
    best_epoch : int or None
        The epoch of ``best_score``.
    seconds : float or None
        Training time Ray measured.
    error : str
        The exception (last line of its traceback) of a failed trial; empty otherwise.
    path : str
        The trial folder (RecBole logs, Ray results, checkpoints).
    checkpoint : str or None
        The trial's latest checkpoint folder (holds ``best.pth``).
    """

    trial_id: str
    status: str
    params: dict = field(default_factory=dict)
    iterations: int = 0
    epoch: int | None = None
    last_score: float | None = None
    best_score: float | None = None
    best_epoch: int | None = None
    seconds: float | None = None
    error: str = ""
    path: str = ""
    checkpoint: str | None = None

    @property
    def usable(self) -> bool:
        """Whether the trial can be the sweep's best: it did not fail and reported a validation score."""
        return self.status in (COMPLETED, STOPPED) and self.best_score is not None and self.checkpoint is not None


def short_error(error: BaseException | str | None) -> str:
    """The last meaningful line of an error's text (``ValueError: Invalid learning rate: -1.0``)."""
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def pick_best(rows: Iterable[TrialRow], bigger: bool = True) -> TrialRow | None:
    """The usable trial with the best validation score (first one on ties); None when none is usable."""
    best: TrialRow | None = None
    for row in rows:
        if not row.usable or math.isnan(row.best_score):
            continue
        if best is None or (row.best_score > best.best_score if bigger else row.best_score < best.best_score):
            best = row
    return best


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return yaml.safe_dump(plain(value), default_flow_style=True, width=10_000).strip()
    return value


def write_trials_csv(path: str, rows: Sequence[TrialRow], keys: Sequence[str], metric: str) -> None:
    """All trials, one row each: id, status, searched values, last and best validation metric, error.

    Parameters
    ----------
    path : str
        The CSV file (written atomically).
    rows : Sequence[TrialRow]
        The trials.
    keys : Sequence[str]
        The searched config keys (one ``config/<key>`` column each).
    metric : str
        The validation metric's name (e.g. ``recall@20``), used in the column names.
    """
    header = ["trial_id", "status", *[f"config/{k}" for k in keys], f"last_valid_{metric}",
              f"best_valid_{metric}", "best_epoch", "last_epoch", "iterations", "seconds", "error", "trial_dir"]
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".csv")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([_cell(v) for v in (
                row.trial_id, row.status, *[row.params.get(k) for k in keys], row.last_score, row.best_score,
                row.best_epoch, row.epoch, row.iterations, row.seconds, row.error, row.path)])
    os.replace(tmp, path)


def best_config_values(model: str, dataset: str, config_files: Sequence[str], fixed: Mapping[str, Any],
                       params: Mapping[str, Any]) -> dict:
    """A self-contained config: model, dataset, the config files' values, the fixed values, the best values."""
    values: dict = {"model": model, "dataset": dataset}
    for file in config_files:
        values.update(load_yaml(file))
    values.update(fixed)
    values.update(params)
    return plain(values)


def write_best_config(path: str, values: Mapping[str, Any], header: Sequence[str]) -> None:
    """Write the best configuration as yaml, usable with ``run_recbole.py --config_files``."""
    text = "".join(f"# {line}\n" for line in header)
    for key, value in values.items():  # one line per key; lists and mappings in flow style
        if isinstance(value, (dict, list)):
            text += f"{key}: {yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()}\n"
        else:
            text += yaml.safe_dump({key: value}, default_flow_style=False, width=10_000)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def format_metrics(result: Mapping[str, float] | None) -> str:
    """``recall@10=0.1234  recall@20=...`` in the evaluator's order."""
    if not result:
        return "(none)"
    return "  ".join(f"{k}={v:.4f}" for k, v in result.items())


def format_params(params: Mapping[str, Any]) -> str:
    """``key=value, ...`` or ``(fixed configuration)``."""
    return ", ".join(f"{k}={v!r}" for k, v in params.items()) or "(fixed configuration)"


def count_statuses(rows: Iterable[TrialRow]) -> dict[str, int]:
    """Trials per status."""
    counts = {COMPLETED: 0, STOPPED: 0, FAILED: 0, UNFINISHED: 0}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts
