"""Progress lines for long comparisons: which run, which epoch, and an estimate of the time left.

Lines (not a redrawn status bar) so that a comparison under ``nohup`` or in CI leaves a readable log. Epoch
lines are throttled to one per ``interval`` seconds per run.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Sequence, TextIO


def fmt_duration(seconds: float | None) -> str:
    """``3725.2`` -> ``"1:02:05"``; ``None`` -> ``"?"``."""
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def epoch_estimates(progress: dict[str, Any]) -> tuple[float | None, float | None]:
    """Seconds left in the current training stage: (if validation does not improve again, at most).

    RecBole stops after ``stopping_step + 1`` validations without improvement; ``max_epochs`` bounds the rest.
    """
    epoch, max_epochs = progress.get("epoch"), progress.get("max_epochs")
    per_epoch = progress.get("epoch_seconds_mean")
    if epoch is None or not max_epochs or per_epoch is None:
        return None, None
    per_epoch += progress.get("valid_seconds_mean") or 0.0
    left = max(0, max_epochs - epoch - 1)
    patience = progress.get("stopping_step")
    if patience and progress.get("best_epoch") is not None:
        early = max(0, patience + 1 - int(progress.get("patience_used") or 0))
        return min(left, early) * per_epoch, left * per_epoch
    return left * per_epoch, left * per_epoch


class Progress:
    """Prints what a comparison is doing to ``stream``.

    Parameters
    ----------
    total : int
        Runs in the comparison.
    stream : TextIO
        Where lines go (``sys.stderr`` for the command line).
    interval : float, default 15
        Minimum seconds between two epoch lines of one run; 0 prints every epoch.
    """

    def __init__(self, total: int, stream: TextIO, interval: float = 15.0) -> None:
        self.total = total
        self.stream = stream
        self.interval = interval
        self.durations: dict[str, list[float]] = {}
        self._last_line = 0.0
        self._last_epoch: Any = None

    def say(self, line: str) -> None:
        """Print one line (flushed)."""
        print(line, file=self.stream, flush=True)

    def note_duration(self, label: str, seconds: float | None) -> None:
        """Remember how long a run of ``label`` took (for the estimates)."""
        if seconds is not None:
            self.durations.setdefault(label, []).append(float(seconds))

    def _typical(self, label: str) -> float | None:
        if label in self.durations:
            return statistics.mean(self.durations[label])
        known = [s for v in self.durations.values() for s in v]
        return statistics.mean(known) if known else None

    def estimate_pending(self, labels: Sequence[str]) -> tuple[float, int]:
        """Estimated seconds for runs of ``labels`` not yet started, and how many of them had no estimate."""
        seconds, unknown = 0.0, 0
        for label in labels:
            typical = self._typical(label)
            if typical is None:
                unknown += 1
            else:
                seconds += typical
        return seconds, unknown

    def _left_text(self, current: float | None, pending: Sequence[str]) -> str:
        seconds, unknown = self.estimate_pending(pending)
        if current is None:
            unknown += 1
        else:
            seconds += current
        if unknown and not seconds:
            return "time left unknown until a run has finished"
        text = f"about {fmt_duration(seconds)} left"
        return text + (f" (+{unknown} run(s) not yet estimable)" if unknown else "")

    def _head(self, index: int, label: str, seed: int) -> str:
        return f"[{index}/{self.total}] {label} seed {seed}"

    def started(self, index: int, label: str, seed: int, pending: Sequence[str]) -> None:
        """A run starts; ``pending`` are the labels of the runs after it."""
        self._last_line = time.monotonic()
        self._last_epoch = None
        self.say(f"{self._head(index, label, seed)}: started; {self._left_text(self._typical(label), pending)}")

    def update(
        self, index: int, label: str, seed: int, progress: dict[str, Any], elapsed: float, pending: Sequence[str]
    ) -> None:
        """The running worker's ``progress.json`` (see :mod:`recbole_promptmm.compare.worker`)."""
        marker = (progress.get("stage"), progress.get("epoch"), progress.get("phase"))
        now = time.monotonic()
        if marker == self._last_epoch or now - self._last_line < self.interval:
            return
        self._last_epoch, self._last_line = marker, now
        parts = []
        if progress.get("stage"):
            parts.append(f"stage {progress['stage']}")
        if progress.get("epoch") is not None:
            text = f"epoch {progress['epoch'] + 1}/{progress.get('max_epochs') or '?'}"
            if progress.get("epoch_seconds_mean") is not None:
                text += f" ({progress['epoch_seconds_mean']:.2f} s/epoch)"
            parts.append(text)
        if progress.get("last_score") is not None:
            parts.append(
                f"valid {progress.get('valid_metric') or 'score'} {progress['last_score']:.4f} "
                f"(best {progress['best_score']:.4f} at epoch {progress['best_epoch'] + 1})"
            )
        if progress.get("phase") not in (None, "training"):
            parts.append(str(progress["phase"]))
        parts.append(f"run {fmt_duration(elapsed)}")
        early, most = epoch_estimates(progress)
        if most:
            parts.append(f"this stage {fmt_duration(early)} to {fmt_duration(most)} more")
        typical = self._typical(label) if label in self.durations else None
        current = max(0.0, typical - elapsed) if typical is not None else early
        parts.append(self._left_text(current, pending))
        self.say(f"{self._head(index, label, seed)}: " + ", ".join(parts))

    def finished(self, index: int, label: str, seed: int, status: str, seconds: float, detail: str) -> None:
        """A run ended (``ok`` or ``failed``) after ``seconds``; ``detail`` is its headline metric or error."""
        self.say(f"{self._head(index, label, seed)}: {status} in {fmt_duration(seconds)}: {detail}")
