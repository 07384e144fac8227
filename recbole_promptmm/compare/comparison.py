""":func:`compare`: plan the runs, execute them (cached), write the reports."""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Iterator, Sequence, TextIO

from recbole_promptmm.compare.ablations import BASE_MODEL, select_ablations
from recbole_promptmm.compare.plan import (
    PlanError,
    RunSpec,
    build_entries,
    build_specs,
    check_protocol,
    link_shared_teachers,
    load_settings,
    parse_seeds,
    resolve,
    split_list,
    unused_sections,
)
from recbole_promptmm.compare.plot import write_plot
from recbole_promptmm.compare.progress import Progress
from recbole_promptmm.compare.report import (
    ReportContext,
    outcome_row,
    primary_metrics,
    summary_payload,
    write_csv,
    write_markdown,
)
from recbole_promptmm.compare.runner import RunnerOptions, RunOutcome, execute_runs
from recbole_promptmm.compare.stats import PairedTest
from recbole_promptmm.quick_start import write_json_atomic

DEFAULT_SEEDS = (2020, 2021, 2022)
LOCK_FILE = ".compare.lock"


@dataclass
class ComparisonResult:
    """What :func:`compare` did and wrote.

    Attributes
    ----------
    outcomes : list of RunOutcome
        One per (seed, model label), seed-major.
    rows : list of dict
        The rows of ``results.csv``.
    tests : list of PairedTest
        The significance tests of ``results.md``.
    reference : str
        The label the others are tested against.
    files : dict
        ``csv``, ``md``, ``png``, ``json`` -> path.
    interrupted : bool
        Whether the comparison was stopped (Ctrl-C) before every run had finished.
    """

    outcomes: list[RunOutcome]
    rows: list[dict]
    tests: list[PairedTest]
    reference: str
    files: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def failed(self) -> list[RunOutcome]:
        """Runs without a result (failed or not run)."""
        return [o for o in self.outcomes if o.status != "ok"]


@contextmanager
def locked(out_dir: str) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir``: two comparisons must not write the same folder at once."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, LOCK_FILE), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PlanError(f"another comparison is writing {out_dir}; wait for it or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (e.g. ``kill``, a batch scheduler) acts like Ctrl-C: the running worker is
    stopped and the reports are written, instead of leaving an orphaned worker behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def choose_reference(labels: Sequence[str], reference: str | None) -> str:
    """``reference`` if given (must be a label), else ``PromptMM`` when compared, else the first label."""
    if reference is not None:
        if reference not in labels:
            raise PlanError(f"--reference={reference} is not one of the compared models ({', '.join(labels)})")
        return reference
    return BASE_MODEL if BASE_MODEL in labels else labels[0]


def _check_rerun(rerun: Sequence[str], labels: Sequence[str]) -> None:
    unknown = [r for r in rerun if r != "all" and r not in labels]
    if unknown:
        raise PlanError(f"--rerun names {', '.join(unknown)}, not compared here ({', '.join(labels)}, or 'all')")


def plan(
    dataset: str,
    models: str | Sequence[str],
    seeds: str | Sequence[int],
    *,
    data_path: str | None = None,
    config_files: str | Sequence[str] = (),
    overrides: Sequence[str] = (),
    ablations: str | Sequence[str] | None = None,
    share_teacher: bool = True,
) -> tuple[list, list[RunSpec], dict, list[str], list[str]]:
    """Entries, resolved run specs, shared protocol, config files read and notes, without running anything.

    Raises
    ------
    PlanError
        For bad arguments, unreadable config files, or runs that would not share the protocol.
    """
    try:
        chosen = select_ablations(ablations)
    except ValueError as err:
        raise PlanError(str(err)) from None
    labels = split_list(models)
    if not labels and not chosen:
        raise PlanError("no models given: pass --models=Pop,BPR,LightGCN (and/or --ablations)")
    settings = load_settings(split_list(config_files))
    entries = build_entries(labels, settings, chosen)
    notes = [f"warning: config section models: {name}: matches no compared model or label (typo?)"
                for name in unused_sections(entries, settings)]
    specs = build_specs(entries, parse_seeds(seeds), dataset, settings, overrides, data_path)
    resolve(specs)
    protocol = check_protocol(specs)
    if share_teacher:
        notes += link_shared_teachers(specs)
    return entries, specs, protocol, settings.files, notes


def compare(
    dataset: str,
    models: str | Sequence[str],
    out_dir: str,
    seeds: str | Sequence[int] = DEFAULT_SEEDS,
    *,
    data_path: str | None = None,
    config_files: str | Sequence[str] = (),
    overrides: Sequence[str] = (),
    ablations: str | Sequence[str] | None = None,
    share_teacher: bool = True,
    reference: str | None = None,
    rerun: str | Sequence[str] = (),
    threads: int | None = None,
    run_timeout: float | None = None,
    cost_repeats: int = 3,
    report_only: bool = False,
    progress_interval: float = 15.0,
    stream: TextIO | None = None,
) -> ComparisonResult:
    """Compare models on one dataset over several seeds: accuracy, cost and significance.

    Parameters
    ----------
    dataset : str
        Dataset name (``ml-100k``, ``tiktok``, ...).
    models : str or sequence of str
        Model names or labels (comma-separated string or list): ours or RecBole built-ins, or labels defined
        in a config file's ``models:`` section with a ``model:`` key.
    out_dir : str
        Output folder: reports, and the cached runs under ``runs/``.
    seeds : str or sequence of int, default (2020, 2021, 2022)
        One run per model and seed.
    data_path : str, optional
        Folder holding ``<dataset>/`` (made absolute).
    config_files : str or sequence of str
        Compare config files (see :mod:`recbole_promptmm.compare.plan`).
    overrides : sequence of str
        ``--key=value`` config overrides for every run.
    ablations : str or sequence of str, optional
        ``"all"`` or names from :data:`recbole_promptmm.compare.ablations.ABLATIONS`: adds PromptMM variants.
    share_teacher : bool, default True
        Ablation variants that leave stage 1 unchanged reuse the teacher of PromptMM's run with the same seed
        (when PromptMM is compared and the configs agree) instead of training the same teacher again.
    reference : str, optional
        Label tested against every other; default ``PromptMM`` if compared, else the first label.
    rerun : str or sequence of str
        Labels (or ``"all"``) whose cached runs are redone.
    threads : int, optional
        torch / OpenMP threads per run (``OMP_NUM_THREADS``); default: inherited.
    run_timeout : float, optional
        Seconds after which a run is killed and reported as failed.
    cost_repeats : int, default 3
        Timed full-sort scoring passes per run.
    report_only : bool, default False
        Start no run: write the reports from the cached runs (others appear as missing).
    progress_interval : float, default 15
        Minimum seconds between two epoch progress lines of a run (0: every epoch).
    stream : TextIO, optional
        Where progress goes (default ``sys.stderr``).

    Returns
    -------
    ComparisonResult
        Also when some runs failed (they are in the tables as failed). A ``KeyboardInterrupt`` stops the
        running worker, writes the reports for what has finished, and is raised again.
    """
    stream = stream or sys.stderr
    out_dir = os.path.abspath(out_dir)
    print("resolving the config of every run ...", file=stream, flush=True)
    entries, specs, protocol, files, notes = plan(
        dataset, models, seeds, data_path=data_path, config_files=config_files, overrides=overrides,
        ablations=ablations, share_teacher=share_teacher,
    )
    labels = [e.label for e in entries]
    reference = choose_reference(labels, reference)
    rerun = split_list(rerun)
    _check_rerun(rerun, labels)
    progress = Progress(len(specs), stream, progress_interval)
    for note in notes:
        progress.say(note if note.startswith("warning:") else f"note: {note}")
    options = RunnerOptions(rerun=rerun, threads=threads, run_timeout=run_timeout, cost_repeats=cost_repeats,
                            report_only=report_only)
    # A report-only pass reads finished results (written atomically) and may run beside a live comparison.
    guard = nullcontext() if report_only else locked(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    with guard, terminate_as_interrupt():
        outcomes, interrupted = execute_runs(specs, out_dir, options, progress)
        context = ReportContext(dataset, parse_seeds(seeds), reference, protocol, list(overrides),
                                files, notes)
        result = write_reports(outcomes, entries, context, out_dir)
    result.interrupted = interrupted
    failed = len(result.failed)
    progress.say(f"reports written to {out_dir}: results.csv, results.md, results.png"
                 + (f"; {failed} run(s) without a result" if failed else ""))
    if interrupted:
        raise KeyboardInterrupt
    return result


def write_reports(outcomes: Sequence[RunOutcome], entries: Sequence, context: ReportContext,
                  out_dir: str) -> ComparisonResult:
    """Write ``results.csv``, ``results.md``, ``results.json`` and ``results.png`` into ``out_dir``."""
    rows = [outcome_row(o, out_dir) for o in outcomes]
    files = {ext: os.path.join(out_dir, f"results.{ext}") for ext in ("csv", "md", "json", "png")}
    write_csv(rows, files["csv"])
    stats, tests = write_markdown(rows, entries, context, files["md"])
    write_json_atomic(files["json"], summary_payload(stats, tests, context))
    metric = primary_metrics(str(context.protocol.get("valid_metric") or "recall@20"), rows)[0]
    write_plot(entries, stats, metric, context.reference, files["png"], title=f"{context.dataset}")
    return ComparisonResult(list(outcomes), rows, tests, context.reference, files)
