""":func:`compare`: plan the runs, run the ones not cached as Ray tasks, write the reports (docs/COMPARE.md).

A run lives in ``OUT/runs/<label>/seed<seed>-<hash>/`` (``hash``: of its resolved config): ``config.json``,
RecBole's ``log/``, ``saved/``, and at the end ``result.json`` (the cache: a changed config has another folder) or
``failure.json`` (run again next time; an interrupted run continues from its ``saved/*-resume.pth``). Each run is a
Ray task in a worker process of its own (``max_calls=1``): a crash fails one run only, peak memory is per run.
Runs that reuse another run's teacher run after it.
"""

from __future__ import annotations

import fcntl
import glob
import os
import resource
import shutil
import signal
import sys
import threading
import time
import traceback
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import ray
import torch

from recbole_promptmm.experiments import plan as p
from recbole_promptmm.experiments.cluster import error_line, ray_session
from recbole_promptmm.experiments.options import CompareOptions, split_list
from recbole_promptmm.experiments.report import run_row, summaries, summary_table, write_comparison
from recbole_promptmm.files import check_output_folder, marked_by, read_json, write_json_atomic
from recbole_promptmm.model.accounting import measure_cost
from recbole_promptmm.quick_start import run
from recbole_promptmm.registry import model_names
from recbole_promptmm.trainer.resume import ResumeError

RESULT_FILE, FAILURE_FILE, CONFIG_FILE, LOCK_FILE = "result.json", "failure.json", "config.json", ".compare.lock"
# What marks an --out folder as an earlier comparison (README.md, "What each command writes")
COMPARISON_MARKERS = {LOCK_FILE: (), "results.json": ("protocol", "significance", "summary")}


@dataclass
class RunOutcome:
    """What became of one run: ``status`` ``ok``, ``failed`` or ``missing`` (not run)."""

    spec: p.RunSpec
    status: str
    cached: bool = False
    result: dict | None = None
    error: str | None = None
    run_dir: str | None = None


@dataclass
class ComparisonResult:
    """What :func:`compare` did and wrote: outcomes (seed-major), rows of results.csv, paired tests."""

    outcomes: list[RunOutcome]
    rows: list[dict]
    tests: list[dict]
    reference: str
    files: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status != "ok"]


class RunTimeout(Exception):
    """A run went past ``--run_timeout``."""


def max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray: a run called directly)."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def comparison_run(spec: dict) -> dict:
    """One run as a Ray task (:data:`run_task`; ``spec``: :func:`_payload`), writing into its folder
    ``spec["run_dir"]`` (given explicitly: the working directory is left alone): ``recbole_promptmm.run``
    (train, early-stop on validation, test once at the best validation epoch), then its serving cost; written to
    ``result.json``, or ``failure.json``. Continues from the run's resume file when an earlier attempt was
    interrupted; stops with :class:`RunTimeout` at the first validation after ``spec["timeout"]`` seconds."""
    start, run_dir = time.perf_counter(), spec["run_dir"]
    resume = glob.glob(os.path.join(glob.escape(run_dir), "saved", "*-resume.pth"))
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)  # leftovers of a failed attempt
    os.makedirs(run_dir, exist_ok=True)
    failure_file = os.path.join(run_dir, FAILURE_FILE)
    if os.path.exists(failure_file):
        os.remove(failure_file)
    write_json_atomic(os.path.join(run_dir, CONFIG_FILE), spec["config"])
    baseline = max_rss_bytes()
    torch.set_num_threads(spec["threads"])

    def cost(trainer, train_data) -> dict:
        config = trainer.config
        try:
            return {"cost": measure_cost(trainer.model, train_data._dataset, eval_batch_size=config["eval_batch_size"],
                                         topk=max(config["topk"] or [50]), repeats=spec["cost_repeats"]).to_dict()}
        except Exception as err:  # cost is extra information: keep the accuracy result
            traceback.print_exc()
            return {"cost_error": f"{type(err).__name__}: {err}"}

    class Deadline:  # the trainer's callback: --run_timeout, checked after every validation
        @staticmethod
        def on_valid_end(trainer) -> None:
            if spec["timeout"] and time.perf_counter() - start >= spec["timeout"]:
                raise RunTimeout(f"timed out after {spec['timeout']:g} s (--run_timeout)")

    args = (spec["model"], spec["dataset"], None, spec["config_dict"], spec["cmd_args"])
    inputs = {"after_fit": cost, "callbacks": [Deadline], "run_dir": run_dir}
    try:
        try:
            result = run(*args, resume=resume[0] if len(resume) == 1 else None, **inputs)
        except ResumeError as err:  # an unusable resume file: start over
            print(f"compare: {err}; starting over", flush=True)
            for path in resume:
                os.remove(path)
            result = run(*args, **inputs)
    except Exception as err:
        traceback.print_exc()
        error = str(err) if isinstance(err, RunTimeout) else f"{type(err).__name__}: {err}".strip()
        write_json_atomic(failure_file, {"status": "failed", "error": error, "traceback": traceback.format_exc(),
                                         "config_hash": spec["config_hash"]})
    else:
        peak = max_rss_bytes()
        write_json_atomic(os.path.join(run_dir, RESULT_FILE), {
            **result, "status": "ok", "label": spec["label"], "config_hash": spec["config_hash"], "peak_rss_bytes": peak,
            "baseline_rss_bytes": baseline, "peak_memory_bytes": peak - baseline, "torch_threads": torch.get_num_threads(),
            "peak_gpu_bytes": int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None,
            "wall_seconds": time.perf_counter() - start, "node": _node_id()})
    return {"seconds": time.perf_counter() - start}


# A worker process per run (a crash fails that run only; peak memory is the run's); a crashed run is not retried.
run_task = ray.remote(max_calls=1, max_retries=0)(comparison_run)


def _payload(spec: p.RunSpec, run_dir: str, options: CompareOptions) -> dict:
    return {"label": spec.label, "model": spec.model, "dataset": spec.dataset, "seed": spec.seed,
            "config_dict": spec.config_dict, "config": spec.config, "config_hash": spec.config_hash,
            "cmd_args": spec.cmd_args + [f"--checkpoint_dir={os.path.join(run_dir, 'saved')}"], "run_dir": run_dir,
            "threads": max(1, int(options.cpus_per_trial)), "cost_repeats": options.cost_repeats,
            "timeout": options.run_timeout}


def _recorded(spec: p.RunSpec, run_dir: str, failures: bool = True, crash: str = "") -> RunOutcome | None:
    """The run's ``result.json`` for this config, else (``failures``) its ``failure.json``, else the ``crash`` of
    its task (written as its ``failure.json``), else None."""
    result = read_json(os.path.join(run_dir, RESULT_FILE))
    if result and result.get("status") == "ok" and result.get("config_hash") == spec.config_hash:
        return RunOutcome(spec, "ok", cached=True, result=result, run_dir=run_dir)
    failure = read_json(os.path.join(run_dir, FAILURE_FILE)) if failures else None
    if failure and failure.get("config_hash") == spec.config_hash:
        return RunOutcome(spec, "failed", cached=True, error=failure.get("error"), run_dir=run_dir)
    if crash:
        os.makedirs(run_dir, exist_ok=True)
        write_json_atomic(os.path.join(run_dir, FAILURE_FILE), {"status": "failed", "error": crash,
                                                                "config_hash": spec.config_hash})
        return RunOutcome(spec, "failed", error=crash, run_dir=run_dir)
    return None


def _run_tasks(todo: list[p.RunSpec], out_dir: str, options: CompareOptions, done) -> None:
    """Run ``todo`` as Ray tasks, at most ``--max_concurrent`` at once, calling ``done(outcome, seconds)`` as each
    ends. A ``KeyboardInterrupt`` cancels the running ones (left to the next invocation) and is raised again."""
    task = run_task.options(num_cpus=options.cpus_per_trial, num_gpus=options.gpus_per_trial)
    waiting, running = list(todo), {}  # running: ObjectRef -> RunSpec

    def settle(spec: p.RunSpec, seconds: float | None = None, crash: str = "") -> None:
        run_dir = os.path.join(out_dir, spec.relative_dir())
        outcome = _recorded(spec, run_dir, crash=crash) or RunOutcome(
            spec, "missing", error="not finished (interrupted): the next invocation continues it", run_dir=run_dir)
        done(RunOutcome(spec, outcome.status, result=outcome.result, error=outcome.error, run_dir=run_dir), seconds)

    try:
        while waiting or running:
            while waiting and len(running) < (options.max_concurrent or len(todo)):
                spec = waiting.pop(0)
                running[task.remote(_payload(spec, os.path.join(out_dir, spec.relative_dir()), options))] = spec
            finished, _ = ray.wait(list(running), num_returns=1, timeout=1.0)  # a timeout: Ctrl-C is seen at once
            for ref in finished:
                spec = running.pop(ref)
                try:
                    settle(spec, ray.get(ref)["seconds"])
                except ray.exceptions.RayError as err:  # the worker died (a crash, a lost node)
                    settle(spec, crash=error_line(err) or type(err).__name__)
    except KeyboardInterrupt:
        for ref in running:  # the worker is killed (its files are written atomically): its resume file stays
            ray.cancel(ref, force=True)  # (force=False raises KeyboardInterrupt there, lost where SIGINT is ignored)
        ray.wait(list(running), num_returns=len(running), timeout=30)
        for spec in running.values():
            settle(spec)
        raise


@contextmanager
def _locked(out_dir: str) -> Iterator[None]:
    """Two comparisons must not write one folder at once."""
    with open(os.path.join(out_dir, LOCK_FILE), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise p.PlanError(f"another comparison is writing {out_dir}; wait for it or choose another --out") from None
        yield


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a batch scheduler) acts like Ctrl-C: runs stop and the reports are written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):  # not through SIGINT, which a background job may have ignored
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def plan(options: CompareOptions) -> tuple[list[p.Entry], list[p.RunSpec], dict, list[str], list[str]]:
    """Entries, resolved run specs, protocol, config files and notes, without running anything."""
    settings = p.load_settings(options.config_files)
    labels, chosen = p.split_variant_labels(split_list(options.models), settings)  # PromptMM-no_kd: an ablation
    variants = p.parse_variants(p.merge_ablations(options.ablations, chosen), options.variants,
                                labels + [v.model for v in chosen])
    if not labels and not variants:
        raise p.PlanError("no models given: pass --models=Pop,BPR,LightGCN (and/or --ablations, --variants)")
    entries = p.build_entries(labels, settings, variants)
    for entry in entries:
        p.check_model(entry.model, "--models" if entry.label == entry.model else f"{entry.label} (model {entry.model})")
    # models: sections that name no compared label or model, no known model and no model of their own: typos?
    names = {e.label for e in entries} | {e.model for e in entries} | set(model_names())
    notes = [f"warning: config section models: {name}: matches no model or label (typo?)"
             for name, section in settings.sections.items() if name not in names and "model" not in section]
    specs = p.build_specs(entries, p.parse_seeds(options.seeds), options.dataset, settings, options.overrides,
                          options.data_path)
    p.resolve(specs)
    p.refuse_bad_input(specs)  # run's checks, before Ray starts or anything is written
    protocol = p.check_protocol(specs)
    if options.share_teacher:
        notes += p.link_shared_teachers(specs)
    return entries, specs, protocol, settings.files, notes


def compare(dataset: str = "ml-100k", models: str | Sequence[str] = "", out: str = "", seeds: Any = "2020,2021,2022",
            *, stream=None, **options: Any) -> ComparisonResult:
    """Compare models on one dataset over several seeds: accuracy, cost and significance (docs/COMPARE.md).
    Keyword arguments are the fields of :class:`~.options.CompareOptions` (``overrides=["--epochs=1"]``, ...).
    Failed runs are in the result and the reports as failed; a ``KeyboardInterrupt`` stops the running runs,
    writes the reports of what has finished, and is raised again."""
    models = ",".join(models) if not isinstance(models, str) else models
    seeds = ",".join(map(str, seeds)) if not isinstance(seeds, str) else seeds
    options = CompareOptions(dataset=dataset, models=models, out=out, seeds=seeds, **options)
    say = lambda line: print(line, file=stream or sys.stderr, flush=True)  # noqa: E731
    if not options.out:
        raise p.PlanError("--out=DIR is required")
    options.check_ray_options()
    out_dir = os.path.abspath(options.out)
    check_output_folder(out_dir, "--out", "compare", "a comparison", marked_by(COMPARISON_MARKERS))
    entries, specs, protocol, files, notes = plan(options)
    labels = [e.label for e in entries]
    # default: the model under study (one that declares named variants) when compared, else the first label
    reference = options.reference or next((e.label for e in entries if e.variant is None and e.label == e.model
                                           and p.named_variants(e.model)), labels[0])
    rerun = split_list(options.rerun)
    unknown = [r for r in [reference, *rerun] if r != "all" and r not in labels]
    if unknown:
        raise p.PlanError(f"--reference / --rerun name {', '.join(unknown)}, not compared here ({', '.join(labels)})")
    if not options.report_only:  # the data of the runs to do, read once here: bad data refuses before Ray starts
        p.check_data([s for s in specs if "all" in rerun or s.label in rerun
                      or not _recorded(s, os.path.join(out_dir, s.relative_dir()), False)])
    for note in notes:
        say(note if note.startswith("warning:") else f"note: {note}")
    os.makedirs(out_dir, exist_ok=True)
    outcomes: dict[tuple, RunOutcome] = {}

    def done(outcome: RunOutcome, seconds: float | None = None) -> None:
        """Settle a run, with one line: ``[3/12] LightGCN seed 2021: ok, valid recall@20 0.0912, test ... (41 s)``."""
        outcomes[outcome.spec.label, outcome.spec.seed] = outcome
        result = outcome.result or {}
        metric = str(result.get("valid_metric", "")).lower()
        scores = [(part, (result.get(f"{key}_result") or {}).get(metric))
                  for part, key in (("valid", "best_valid"), ("test", "test"))]
        what = outcome.error or outcome.status if outcome.status != "ok" else (
            f"ok{' (cached)' if outcome.cached else ''}"
            + "".join(f", {part} {metric} {value:.4f}" for part, value in scores if value is not None))
        took = f" ({seconds:.0f} s)" if seconds is not None else ""
        say(f"[{len(outcomes)}/{len(specs)}] {outcome.spec.label} seed {outcome.spec.seed}: {what}{took}")

    def settle(batch: list[p.RunSpec]) -> list[p.RunSpec]:
        """Settle what needs no run; returns the rest."""
        todo = []
        for spec in batch:
            run_dir = os.path.join(out_dir, spec.relative_dir())
            if spec.error:
                done(RunOutcome(spec, "failed", error=spec.error))
            elif options.report_only:
                done(_recorded(spec, run_dir) or RunOutcome(spec, "missing", run_dir=run_dir, error="not run"))
            elif "all" not in rerun and spec.label not in rerun and (cached := _recorded(spec, run_dir, False)):
                done(cached)
            else:
                todo.append(spec)
        return todo

    interrupted, started = False, []
    with nullcontext() if options.report_only else _locked(out_dir), _terminate_as_interrupt(), ExitStack() as stack:

        def execute(todo: list[p.RunSpec]) -> None:  # Ray starts only when something must run
            if todo and not started:
                stack.enter_context(ray_session(options, say))
                stack.enter_context(_terminate_as_interrupt())  # again: ray.init makes SIGTERM exit at once
                started.append(True)
            if todo:
                _run_tasks(todo, out_dir, options, done)

        try:
            execute(settle([s for s in specs if s.teacher_from is None or s.error]))
            waiting = []
            for spec in (s for s in specs if s.teacher_from is not None and not s.error):
                provider = outcomes.get((spec.teacher_from, spec.seed))
                if provider is not None and provider.status == "ok":
                    p.attach_teacher(spec, provider.result)
                    waiting.append(spec)
                    continue
                error = f"needs the teacher of {spec.teacher_from} seed {spec.seed}, which has no result"
                if options.report_only:  # not run yet rather than failed
                    done(RunOutcome(spec, "missing", error=error))
                else:
                    spec.error = f"{error} (or pass --no_share_teacher)"
                    waiting.append(spec)
            execute(settle(waiting))
        except KeyboardInterrupt:
            interrupted = True
        ordered = [outcomes.get((s.label, s.seed)) or RunOutcome(s, "missing", error="not run (interrupted)")
                   for s in specs]
        interrupted = interrupted or any(o.status == "missing" and "interrupted" in (o.error or "") for o in ordered)
        context = {"dataset": options.dataset, "seeds": p.parse_seeds(options.seeds), "reference": reference,
                   "protocol": protocol, "overrides": list(options.overrides), "config_files": files, "notes": notes}
        rows = [run_row(o, out_dir) for o in ordered]
        frame, tests = write_comparison(rows, entries, context, out_dir)
    # the closing table: per label, mean ± std over seeds of the validation and test metric and a run's seconds
    metric = str(protocol.get("valid_metric") or "recall@20").lower()
    columns = [(f"valid_{metric}", f"valid {metric}", None, 1, 4), (f"test_{metric}", f"test {metric}", None, 1, 4),
               ("wall_seconds", "seconds", None, 1, 0)]
    for line in summary_table(frame, summaries(frame, labels), [e.title for e in entries], columns).splitlines():
        say(line)
    result = ComparisonResult(ordered, rows, tests, reference, interrupted=interrupted,
                              files={ext: os.path.join(out_dir, f"results.{ext}") for ext in ("csv", "md", "json", "png")})
    failed = len(result.failed)
    say(f"reports written to {out_dir}: results.csv, results.md, results.png"
        + (f"; {failed} run(s) without a result" if failed else ""))
    if interrupted:
        raise KeyboardInterrupt
    return result
