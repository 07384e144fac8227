"""Execute the runs of a comparison: each in its own worker process, cached in the output folder.

A run lives in ``OUT/runs/<label>/seed<seed>-<hash>/`` where ``hash`` is :func:`plan.config_hash` of its
resolved config: ``config.json`` (the resolved config), ``spec.json`` (what the worker got), ``worker.log``
(its output), RecBole's ``log/`` and checkpoints ``saved/``, and at the end ``result.json`` (success) or
``failure.json``. A folder with a ``result.json`` is a finished run: it is reused, never redone, unless asked
(``rerun``). A changed config has another hash, hence another folder: it runs afresh. Failed and interrupted
runs are started again on the next invocation.

Why a process per run: a crash (even a segfault or the OOM killer) fails one run only, peak memory is
per run, and RecBole's ``./log`` and ``./log_tensorboard`` land in the run folder (the worker's working
directory).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Sequence

from recbole_promptmm.compare.plan import RunSpec, attach_teacher
from recbole_promptmm.compare.progress import Progress
from recbole_promptmm.compare.worker import ERROR_FILE, PROGRESS_FILE, RESULT_FILE, SPEC_FILE
from recbole_promptmm.quick_start import write_json_atomic

FAILURE_FILE = "failure.json"
CONFIG_FILE = "config.json"
LOG_FILE = "worker.log"
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass
class RunOutcome:
    """What became of one run.

    Attributes
    ----------
    spec : RunSpec
    status : str
        ``ok``, ``failed`` or ``missing`` (not run: ``report_only``).
    cached : bool
        Whether the result was read from the output folder instead of being computed now.
    result : dict or None
        The worker's ``result.json`` (ok runs).
    error : str or None
        One-line error (failed runs).
    run_dir : str or None
        The run's folder (absolute), None when the config could not be resolved.
    seconds : float or None
        Wall seconds of the worker (this invocation or, for cached runs, when it ran).
    """

    spec: RunSpec
    status: str
    cached: bool = False
    result: dict[str, Any] | None = None
    error: str | None = None
    run_dir: str | None = None
    seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunnerOptions:
    """How runs are executed.

    Attributes
    ----------
    rerun : collection of str
        Labels whose cached results are ignored (``"all"`` for every label).
    threads : int or None
        torch / OpenMP threads of each worker (``OMP_NUM_THREADS``); None inherits the environment.
    run_timeout : float or None
        Seconds after which a run is killed and reported as failed.
    cost_repeats : int
        Timed full-sort scoring passes per run.
    report_only : bool
        Start nothing: report cached results, the rest as missing.
    poll_seconds : float
        How often the worker's progress is read.
    """

    rerun: Collection[str] = ()
    threads: int | None = None
    run_timeout: float | None = None
    cost_repeats: int = 3
    report_only: bool = False
    poll_seconds: float = 1.0


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_cached(spec: RunSpec, run_dir: str) -> RunOutcome | None:
    """The finished result in ``run_dir`` when it belongs to ``spec``'s config, else None."""
    result = _read_json(os.path.join(run_dir, RESULT_FILE))
    if result and result.get("status") == "ok" and result.get("config_hash") == spec.config_hash:
        return RunOutcome(spec, "ok", cached=True, result=result, run_dir=run_dir, seconds=result.get("wall_seconds"))
    return None


def load_failure(spec: RunSpec, run_dir: str) -> RunOutcome | None:
    """A failure recorded in ``run_dir`` for ``spec``'s config (used when reporting without running)."""
    failure = _read_json(os.path.join(run_dir, FAILURE_FILE))
    if failure and failure.get("config_hash") == spec.config_hash:
        return RunOutcome(spec, "failed", cached=True, error=failure.get("error"), run_dir=run_dir)
    return None


def _log_tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _worker_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    return env


def prepare_run_dir(spec: RunSpec, run_dir: str, options: RunnerOptions) -> str:
    """Empty ``run_dir`` (leftovers of a failed or interrupted attempt), write its config and spec files;
    returns the spec file's path."""
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    os.makedirs(run_dir)
    write_json_atomic(os.path.join(run_dir, CONFIG_FILE), spec.config or {})
    payload = {
        "label": spec.label,
        "model": spec.model,
        "dataset": spec.dataset,
        "seed": spec.seed,
        "config_dict": spec.config_dict,
        "cmd_args": spec.cmd_args + [f"--checkpoint_dir={os.path.join(run_dir, 'saved')}"],
        "config_hash": spec.config_hash,
        "config": spec.config,
        "threads": options.threads,
        "cost_repeats": options.cost_repeats,
    }
    path = os.path.join(run_dir, SPEC_FILE)
    write_json_atomic(path, payload)
    return path


def _stop(process: subprocess.Popen) -> None:
    """Terminate the worker and everything it started (its own process group), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def _failure(spec: RunSpec, run_dir: str, error: str, seconds: float, **details: Any) -> RunOutcome:
    payload = {"status": "failed", "error": error, "config_hash": spec.config_hash, "seconds": seconds, **details}
    write_json_atomic(os.path.join(run_dir, FAILURE_FILE), payload)
    return RunOutcome(spec, "failed", error=error, run_dir=run_dir, seconds=seconds, details=details)


def launch(
    spec: RunSpec, run_dir: str, options: RunnerOptions, progress: Progress, index: int, pending: Sequence[str]
) -> RunOutcome:
    """Run ``spec`` in a worker process in ``run_dir``, relaying its progress; never raises for a failed run
    (``KeyboardInterrupt`` stops the worker and is re-raised)."""
    spec_path = prepare_run_dir(spec, run_dir, options)
    command = [sys.executable, "-m", "recbole_promptmm.compare.worker", spec_path]
    start = time.perf_counter()
    with open(os.path.join(run_dir, LOG_FILE), "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT, env=_worker_env(options.threads),
            start_new_session=True,
        )
        try:
            while True:
                try:
                    process.wait(timeout=options.poll_seconds)
                    break
                except subprocess.TimeoutExpired:
                    pass
                elapsed = time.perf_counter() - start
                state = _read_json(os.path.join(run_dir, PROGRESS_FILE))
                if state:
                    progress.update(index, spec.label, spec.seed, state, elapsed, pending)
                if options.run_timeout and elapsed > options.run_timeout:
                    _stop(process)
                    return _failure(spec, run_dir, f"timed out after {options.run_timeout:g} s (--run_timeout)",
                                    time.perf_counter() - start)
        except BaseException:
            _stop(process)
            raise
    seconds = time.perf_counter() - start
    cached = load_cached(spec, run_dir)
    if process.returncode == 0 and cached is not None:
        cached.cached, cached.seconds = False, seconds
        return cached
    error_info = _read_json(os.path.join(run_dir, ERROR_FILE)) or {}
    error = error_info.get("error")
    tail = _log_tail(os.path.join(run_dir, LOG_FILE))
    if not error:
        code = process.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        last = next((line.strip() for line in reversed(tail.splitlines()) if line.strip()), "")
        error = f"worker {how} without a result" + (f": {last}" if last else "") + f" (see {LOG_FILE})"
    return _failure(spec, run_dir, error, seconds, returncode=process.returncode, log_tail=tail)


def _headline(outcome: RunOutcome) -> str:
    if outcome.status != "ok":
        return outcome.error or outcome.status
    result = outcome.result or {}
    metric = str(result.get("valid_metric", "")).lower()
    test = (result.get("test_result") or {}).get(metric)
    return f"test {metric} {test:.4f}" if test is not None else "done"


def _settle(spec: RunSpec, out_dir: str, options: RunnerOptions, base: RunOutcome | None) -> RunOutcome | None:
    """The outcome of ``spec`` that needs no run (config error, cached, or not run in ``report_only``), or
    None when it must run. A spec sharing a teacher gets it from ``base`` (its base run's outcome) first."""
    if spec.error is None and spec.teacher_from is not None:
        if base is None or base.status != "ok":
            status = "missing" if options.report_only else "failed"
            return RunOutcome(spec, status, error=f"needs the teacher of {spec.teacher_from} seed {spec.seed}, "
                                                   "which has no result (or pass --no_share_teacher)")
        attach_teacher(spec, base.result or {})
    if spec.error is not None:
        return RunOutcome(spec, "failed", error=spec.error)
    run_dir = os.path.join(out_dir, spec.relative_dir())
    rerun = set(options.rerun)
    cached = None if ("all" in rerun or spec.label in rerun) else load_cached(spec, run_dir)
    if cached is None and options.report_only:
        cached = load_failure(spec, run_dir) or RunOutcome(spec, "missing", run_dir=run_dir, error="not run")
    return cached


def _report_settled(progress: Progress, index: int, outcome: RunOutcome) -> None:
    spec = outcome.spec
    if outcome.status == "ok":
        progress.note_duration(spec.label, outcome.seconds)
    if outcome.cached:
        status = f"{outcome.status} (cached)"
    else:
        status = "missing (not run)" if outcome.status == "missing" else outcome.status
    progress.finished(index, spec.label, spec.seed, status, outcome.seconds or 0.0, _headline(outcome))


def execute_runs(
    specs: Sequence[RunSpec], out_dir: str, options: RunnerOptions, progress: Progress
) -> tuple[list[RunOutcome], bool]:
    """Run (or read from the cache) every spec, in order; one failure never stops the others.

    Specs are settled first (config errors, cached results), then the rest run in order. A spec that reuses
    another run's teacher (``teacher_from``) is settled once that run is (it comes earlier in the order).
    Returns the outcomes (one per spec, in order) and whether a ``KeyboardInterrupt`` stopped the loop (the
    running worker is then stopped, and the runs not finished are ``missing``).
    """
    outcomes: list[RunOutcome | None] = [None] * len(specs)
    slots = {(s.label, s.seed): i for i, s in enumerate(specs)}
    todo: list[int] = []
    deferred: set[int] = set()

    def base_of(spec: RunSpec) -> int | None:
        return slots.get((spec.teacher_from, spec.seed)) if spec.teacher_from else None

    for i, spec in enumerate(specs):
        base = base_of(spec)
        if base is not None and outcomes[base] is None and spec.error is None:
            todo.append(i)  # its base runs first: settled just before its turn
            deferred.add(i)
            continue
        outcome = _settle(spec, out_dir, options, outcomes[base] if base is not None else None)
        if outcome is None:
            todo.append(i)
        else:
            outcomes[i] = outcome
            _report_settled(progress, i + 1, outcome)

    interrupted = False
    for position, i in enumerate(todo):
        spec = specs[i]
        if i in deferred:
            outcome = _settle(spec, out_dir, options, outcomes[base_of(spec)])
            if outcome is not None:
                outcomes[i] = outcome
                _report_settled(progress, i + 1, outcome)
                continue
        run_dir = os.path.join(out_dir, spec.relative_dir())
        pending = [specs[j].label for j in todo[position + 1:]]
        progress.started(i + 1, spec.label, spec.seed, pending)
        try:
            outcome = launch(spec, run_dir, options, progress, i + 1, pending)
        except KeyboardInterrupt:
            progress.say(f"[{i + 1}/{len(specs)}] {spec.label} seed {spec.seed}: interrupted; finished runs are "
                         "kept and the next invocation resumes from here")
            interrupted = True
            break
        outcomes[i] = outcome
        if outcome.status == "ok":
            progress.note_duration(spec.label, outcome.seconds)
        progress.finished(i + 1, spec.label, spec.seed, outcome.status, outcome.seconds or 0.0, _headline(outcome))
    final = [o if o is not None else RunOutcome(s, "missing", error="not run (interrupted)")
             for s, o in zip(specs, outcomes)]
    return final, interrupted
