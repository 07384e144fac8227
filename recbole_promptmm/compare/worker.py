"""One comparison run, in its own process: ``python -m recbole_promptmm.compare.worker RUN_DIR/spec.json``.

The run goes through :func:`recbole_promptmm.quick_start.run` (the same pipeline as ``run_recbole.py``: train,
early-stop on validation, test once at the best validation epoch). The trainer class it gets is wrapped so
that epochs are timed and reported to ``progress.json``, and so that the trained model and its dataset can be
measured by :func:`recbole_promptmm.compare.cost.measure_cost` afterwards.

Files written into the run folder (the working directory): ``progress.json`` while it runs, then
``result.json`` (success) or ``error.json`` (failure, with the traceback); RecBole's ``log/`` and the
checkpoints in ``saved/``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from typing import Any

RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
PROGRESS_FILE = "progress.json"
SPEC_FILE = "spec.json"


def max_rss_bytes() -> int:
    """This process's peak resident set size so far (``getrusage`` ``ru_maxrss``; KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class Recorder:
    """Collects what the wrapped trainers do: epoch times, validation scores, the trainer and its data."""

    def __init__(self, progress_path: str, valid_metric: str, bigger: bool, stopping_step: int) -> None:
        self.progress_path = progress_path
        self.valid_metric = valid_metric
        self.bigger = bigger
        self.stopping_step = stopping_step
        self.started = time.perf_counter()
        self.trainers: list[Any] = []
        self.train_data: Any = None
        self.stages: dict[tuple, dict[str, Any]] = {}
        self.phase = "loading"

    def _stage(self, trainer: Any) -> dict[str, Any]:
        stage = getattr(trainer, "stage", None) or getattr(getattr(trainer, "model", None), "stage", None)
        key = (id(trainer), str(stage) if stage is not None else None)
        if key not in self.stages:
            self.stages[key] = {
                "trainer": type(trainer).__name__,
                "stage": key[1],
                "max_epochs": int(getattr(trainer, "epochs", 0) or 0),
                "epoch_seconds": [],
                "valid_seconds": [],
                "valid_scores": [],
                "last_epoch": None,
                "best_epoch": None,
                "best_score": None,
                "patience_used": 0,
            }
        return self.stages[key]

    def _better(self, score: float, best: float | None) -> bool:
        """RecBole's ``early_stopping`` rule: a tie counts as an improvement (the later epoch is kept)."""
        return best is None or (score >= best if self.bigger else score <= best)

    def train_epoch_done(self, trainer: Any, epoch: int, seconds: float) -> None:
        self.phase = "training"
        stage = self._stage(trainer)
        stage["epoch_seconds"].append(seconds)
        stage["last_epoch"] = epoch
        self.write_progress(stage)

    def valid_done(self, trainer: Any, score: float, seconds: float) -> None:
        stage = self._stage(trainer)
        stage["valid_seconds"].append(seconds)
        stage["valid_scores"].append([stage["last_epoch"], float(score)])
        if self._better(float(score), stage["best_score"]):
            stage["best_score"], stage["best_epoch"], stage["patience_used"] = float(score), stage["last_epoch"], 0
        else:
            stage["patience_used"] += 1
        self.write_progress(stage)

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.write_progress(next(reversed(self.stages.values()), None))

    def write_progress(self, stage: dict[str, Any] | None) -> None:
        """Atomically replace ``progress.json`` (read by the parent process for its progress lines)."""
        payload: dict[str, Any] = {
            "phase": self.phase,
            "elapsed": time.perf_counter() - self.started,
            "valid_metric": self.valid_metric,
            "stopping_step": self.stopping_step,
            "stage_count": len(self.stages),
        }
        if stage is not None:
            epochs = stage["epoch_seconds"]
            valids = stage["valid_seconds"]
            payload.update({
                "stage": stage["stage"],
                "epoch": stage["last_epoch"],
                "max_epochs": stage["max_epochs"],
                "epoch_seconds_mean": sum(epochs) / len(epochs) if epochs else None,
                "valid_seconds_mean": sum(valids) / len(valids) if valids else None,
                "last_score": stage["valid_scores"][-1][1] if stage["valid_scores"] else None,
                "best_score": stage["best_score"],
                "best_epoch": stage["best_epoch"],
                "patience_used": stage["patience_used"],
            })
        tmp = f"{self.progress_path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f)
        os.replace(tmp, self.progress_path)

    def wrap(self, trainer_class: type) -> type:
        """A subclass of ``trainer_class`` that reports to this recorder (behaviour otherwise unchanged)."""
        recorder = self

        class Recorded(trainer_class):  # type: ignore[misc, valid-type]
            def __init__(self, config: Any, model: Any) -> None:
                super().__init__(config, model)
                recorder.trainers.append(self)

            def fit(self, train_data: Any, *args: Any, **kwargs: Any) -> Any:
                recorder.train_data = train_data
                recorder.set_phase("training")
                out = super().fit(train_data, *args, **kwargs)
                recorder.set_phase("testing")
                return out

            def _train_epoch(self, train_data: Any, epoch_idx: int, *args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                out = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)
                recorder.train_epoch_done(self, epoch_idx, time.perf_counter() - start)
                return out

            def _valid_epoch(self, *args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                score, result = super()._valid_epoch(*args, **kwargs)
                recorder.valid_done(self, score, time.perf_counter() - start)
                return score, result

        Recorded.__name__ = trainer_class.__name__
        Recorded.__qualname__ = trainer_class.__qualname__
        return Recorded

    def summary(self) -> dict[str, Any]:
        """Epoch counts and timings over every stage; best epoch of the last stage."""
        stages = list(self.stages.values())
        epoch_seconds = [s for st in stages for s in st["epoch_seconds"]]
        valid_seconds = [s for st in stages for s in st["valid_seconds"]]
        last = stages[-1] if stages else {}
        return {
            "epochs_run": len(epoch_seconds),
            "train_epoch_seconds_total": sum(epoch_seconds),
            "train_seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else None,
            "valid_seconds_per_eval": sum(valid_seconds) / len(valid_seconds) if valid_seconds else None,
            "best_epoch": last.get("best_epoch"),
            "stages": stages,
        }


def _write_json(path: str, payload: dict) -> None:
    from recbole_promptmm.quick_start import write_json_atomic

    write_json_atomic(path, payload)


def _config_differences(expected: dict[str, Any], used: dict[str, Any]) -> list[str]:
    from recbole_promptmm.compare.plan import VOLATILE_KEYS

    keys = (set(expected) | set(used)) - VOLATILE_KEYS
    return sorted(k for k in keys if expected.get(k) != used.get(k))


def _measure(recorder: Recorder, config: dict[str, Any], repeats: int) -> dict[str, Any]:
    from recbole_promptmm.compare.cost import measure_cost

    if not recorder.trainers or recorder.train_data is None:
        return {"cost_error": "the trainer was not seen: cannot measure cost"}
    recorder.set_phase("measuring cost")
    model = recorder.trainers[0].model  # the run's own trainer (stage trainers it makes come later)
    try:
        report = measure_cost(
            model,
            recorder.train_data._dataset,
            eval_batch_size=config.get("eval_batch_size"),
            topk=max(config.get("topk") or [50]),
            repeats=repeats,
        )
    except Exception as err:  # cost is extra information: keep the accuracy result
        traceback.print_exc()
        return {"cost_error": f"{type(err).__name__}: {err}"}
    return {"cost": report.to_dict()}


def execute(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one comparison run as described by ``spec`` (see :mod:`recbole_promptmm.compare.runner`)."""
    start = time.perf_counter()
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    from recbole_promptmm.quick_start import run

    expected = spec.get("config") or {}
    recorder = Recorder(
        PROGRESS_FILE,
        valid_metric=str(expected.get("valid_metric", "")),
        bigger=bool(expected.get("valid_metric_bigger", True)),
        stopping_step=int(expected.get("stopping_step") or 0),
    )
    recorder.set_phase("loading")
    baseline_rss = max_rss_bytes()
    result = run(spec["model"], spec["dataset"], None, spec["config_dict"], spec["cmd_args"], saved=True,
                 wrap_trainer=recorder.wrap)
    result.update(recorder.summary())
    result.update(_measure(recorder, result["config"], int(spec.get("cost_repeats", 3))))
    peak_rss = max_rss_bytes()
    result.update({
        "status": "ok",
        "label": spec["label"],
        "config_hash": spec["config_hash"],
        "peak_rss_bytes": peak_rss,
        "baseline_rss_bytes": baseline_rss,
        "peak_memory_bytes": peak_rss - baseline_rss,
        "peak_gpu_bytes": int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "wall_seconds": time.perf_counter() - start,
        "config_differences": _config_differences(expected, result["config"]),
    })
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point: read the spec, run, write ``result.json`` or ``error.json``; exit 0 or 1."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m recbole_promptmm.compare.worker RUN_DIR/spec.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    try:
        result = execute(spec)
    except Exception as err:
        traceback.print_exc()
        _write_json(ERROR_FILE, {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
            "config_hash": spec.get("config_hash"),
        })
        return 1
    _write_json(RESULT_FILE, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
