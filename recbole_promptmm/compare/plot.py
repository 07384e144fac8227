"""``results.png``: accuracy with error bars next to cost, one bar per model (matplotlib, Agg canvas)."""

from __future__ import annotations

import os
import tempfile
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recbole_promptmm.compare.plan import Entry
from recbole_promptmm.compare.stats import Summary

REFERENCE_COLOR = "#c0392b"
OTHER_COLOR = "#5d6d7e"


def _panel(ax, entries: Sequence[Entry], stats: Mapping[str, Mapping[str, Summary]], key: str, title: str,
           reference: str, scale: float = 1.0, log: bool = False) -> None:
    positions = range(len(entries))
    means, errors, colors = [], [], []
    for entry in entries:
        summary = stats.get(entry.label, {}).get(key)
        mean = summary.mean / scale if summary and summary.mean is not None else 0.0
        std = summary.std / scale if summary and summary.std is not None else 0.0
        means.append(mean)
        errors.append(std)
        colors.append(REFERENCE_COLOR if entry.label == reference else OTHER_COLOR)
    ax.bar(positions, means, yerr=errors, capsize=3, color=colors)
    for x, entry in zip(positions, entries):
        summary = stats.get(entry.label, {}).get(key)
        if summary is None or summary.mean is None:
            ax.annotate("n/a", (x, 0), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(positions))
    ax.set_xticklabels([e.label for e in entries], rotation=40, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    if log and any(m > 0 for m in means):
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)


def write_plot(
    entries: Sequence[Entry],
    stats: Mapping[str, Mapping[str, Summary]],
    metric: str,
    reference: str,
    path: str,
    title: str = "",
) -> None:
    """Four panels: test ``metric`` (mean ± std over seeds), train seconds per epoch, full-sort scoring
    seconds, serving MB (log scale). The reference model is drawn in red."""
    figure = Figure(figsize=(max(10.0, 1.1 * len(entries) * 2.2), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 4)
    _panel(axes[0], entries, stats, f"test_{metric}", f"test {metric} (mean ± std)", reference)
    _panel(axes[1], entries, stats, "train_seconds_per_epoch", "train s / epoch", reference)
    _panel(axes[2], entries, stats, "scoring_seconds", "full forward + full-sort s", reference)
    _panel(axes[3], entries, stats, "serving_bytes", "serving MB (log)", reference, scale=2**20, log=True)
    if title:
        figure.suptitle(title, fontsize=11)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=".png")
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
