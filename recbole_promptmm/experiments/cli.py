"""The command lines of ``python -m recbole_promptmm.tune|compare`` (also ``recbole-promptmm tune|compare``), into
the dataclasses of :mod:`.options`. Any other ``--key=value`` is a RecBole config override: fixed for every trial
of a sweep, applied to every run of a comparison."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import recbole_promptmm  # noqa: F401  (RecBole compatibility fixes, before anything else of RecBole)
from recbole_promptmm.config import parse_cmd_args
from recbole_promptmm.experiments.cluster import ResourceError
from recbole_promptmm.experiments.compare import compare
from recbole_promptmm.experiments.options import SCHEDULERS, SweepOptions
from recbole_promptmm.experiments.plan import PlanError, describe_ablations, split_list
from recbole_promptmm.experiments.sweep import SweepError, execute_sweep, prepare_sweep
from recbole_promptmm.parser import OneLineParser

TUNE_USAGE = """A Ray Tune sweep of one model on one dataset (docs/TUNING.md).

  python -m recbole_promptmm.tune --model=LightGCN --dataset=ml-100k --num_samples=8 --epochs=20
  python -m recbole_promptmm.tune --out=DIR --resume

Exit status: 0 when at least one trial produced a result, 1 when every trial failed, 2 for a bad command line,
config or search space (nothing is started), 3 when the sweep was interrupted (resume it).
"""
COMPARE_USAGE = """Is PromptMM better than what I already use, on my data, and what does it cost? (docs/COMPARE.md)

Trains every model with every seed under one protocol as Ray tasks (--max_concurrent at once, or over a
cluster with --address), measures cost, and writes results.csv/.md/.json/.png into --out, where finished runs
are cached: rerunning the same command resumes.

  python -m recbole_promptmm.compare --dataset=ml-100k --models=Pop,BPR,LightGCN --seeds=2020,2021 \\
      --out=results/compare-ml100k --epochs=20 --max_concurrent=2
  python -m recbole_promptmm.compare --models=PromptMM --variants=no_pair_kd,pair05:pair_kd_weight=0.5 --out=DIR

Exit status: 0 when every run has a result, 1 when some failed (they are in the reports), 2 for bad arguments
or config, 130 when interrupted.
"""


# (commands, flags, argparse keywords) of every option; only options given on the command line land in the namespace
OPTIONS = (
    ("tune", "--model -m", dict(help="model: ours (PromptMM, PromptMMTeacher, ...) or a RecBole built-in")),
    ("tune", "--dataset -d", dict(help="dataset: ml-100k, tiktok (with --data_path) or your own")),
    ("tune", "--out", dict(help="output folder (default: tune_results/<model>-<dataset>)")),
    ("tune", "--search_space", dict(help="search-space yaml (default: properties/tune/<model>.yaml)")),
    ("tune", "--num_samples", dict(type=int, help="samples of the search space (default 1; grids run in full)")),
    ("tune", "--config_files", dict(type=split_list, help="yaml config files, separated by spaces or commas")),
    ("tune", "--scheduler", dict(choices=SCHEDULERS, help="asha stops poor trials early (default asha)")),
    ("tune", "--resume", dict(action="store_true", help="continue the interrupted sweep in --out")),
    ("tune", "--grace_period", dict(type=int, help="ASHA: epochs before a trial can be stopped (default 1)")),
    ("tune", "--reduction_factor", dict(type=float, help="ASHA: keep 1/this at each rung (default 2)")),
    ("tune", "--max_t", dict(type=int, help="ASHA: last epoch (default: the largest epochs of any trial)")),
    ("tune", "--max_failures", dict(type=int, help="restarts of a failing trial from its checkpoint (default 1)")),
    ("tune", "--teacher_checkpoint", dict(help="PromptMM: distil every trial from this teacher checkpoint")),
    ("tune", "--teacher_search_space", dict(help="PromptMM: search the teacher with this file first")),
    ("tune", "--teacher_num_samples", dict(type=int, help="PromptMM: samples of the teacher search space")),
    ("tune", "--no_test", dict(dest="evaluate_test", action="store_false",
                               help="do not evaluate the best configuration on test")),
    ("compare", "--dataset -d", dict(help="dataset name (default ml-100k)")),
    ("compare", "--models -m", dict(help="comma-separated model names or labels")),
    ("compare", "--out -o", dict(help="output folder (required): reports, and every run under OUT/runs/")),
    ("compare", "--seeds", dict(help="comma-separated seeds (default 2020,2021,2022)")),
    ("compare", "--data_path", dict(help="folder holding <dataset>/ (e.g. ../shared/data)")),
    ("compare", "--config_files", dict(type=split_list,
                                       help="yaml files: shared keys, plus a 'models: {NAME: {...}}' section")),
    ("compare", "--ablations", dict(nargs="?", const="all",
                                    help="add PromptMM ablation variants: all (no value) or comma-separated names")),
    ("compare", "--variants", dict(help="PromptMM variants: ablation names or NAME:key=value;key=value, "
                                        "comma-separated")),
    ("compare", "--no_share_teacher", dict(dest="share_teacher", action="store_false",
                                           help="every PromptMM variant trains its own teacher")),
    ("compare", "--reference", dict(help="label tested against the others (default PromptMM if compared, else the "
                                         "first)")),
    ("compare", "--rerun", dict(help="labels (comma-separated) or 'all' whose cached runs are redone")),
    ("compare", "--run_timeout", dict(type=float, help="stop a run after this many seconds (checked at each "
                                                       "validation)")),
    ("compare", "--cost_repeats", dict(type=int, help="timed full-sort scoring passes per run (default 3)")),
    ("compare", "--report_only", dict(action="store_true", help="run nothing; report the cached runs")),
    ("compare", "--list_ablations", dict(action="store_true", help="print the ablation table and exit")),
    ("tune compare", "--max_concurrent", dict(type=int, help="trials running at once (default: as many as the "
                                                             "resources allow)")),
    ("tune compare", "--cpus_per_trial", dict(type=float, help="CPUs Ray reserves per trial; torch uses as many "
                                                               "threads (default 1)")),
    ("tune compare", "--gpus_per_trial", dict(type=float, help="GPUs Ray reserves per trial (default 0)")),
    ("tune compare", "--num_cpus", dict(type=int, help="CPUs of the local Ray instance (default: all cores)")),
    ("tune compare", "--address", dict(help="an existing Ray cluster: HOST:PORT of its head (or auto)")),
    ("tune compare", "--verbose", dict(action="store_true", help="print Ray Tune's trial tables as well (default: "
                                                                 "one line per finished run/trial)")),
)


def command_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``tune`` or ``compare``."""
    parser = OneLineParser(prog=f"python -m recbole_promptmm.{command}", allow_abbrev=False,
                           description=TUNE_USAGE if command == "tune" else COMPARE_USAGE,
                           argument_default=argparse.SUPPRESS, formatter_class=argparse.RawDescriptionHelpFormatter)
    for commands, flags, kwargs in OPTIONS:
        if command in commands.split():
            parser.add_argument(*flags.split(), **kwargs)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[dict, list[str]]:
    args, overrides = parser.parse_known_args(list(argv))
    parse_cmd_args(overrides)  # refuses anything that is not --key=value, naming it
    return vars(args), overrides


def sweep_options(argv: Sequence[str]) -> SweepOptions:
    """Parse ``argv`` into normalised :class:`SweepOptions` (the saved ones, with ``--resume``)."""
    given, overrides = _parse(command_parser("tune"), argv)
    given.update({"overrides": overrides} if overrides else {})
    if given.get("resume"):
        if not given.get("out"):
            raise ValueError("--resume needs --out=DIR, the folder of the sweep to continue")
        return SweepOptions.resumed(os.path.abspath(given["out"]), given)
    missing = [name for name in ("model", "dataset") if not given.get(name)]
    if missing:
        raise ValueError(f"missing {', '.join('--' + m for m in missing)} (or --out=DIR --resume)")
    return SweepOptions(**given).normalised()


def tune_main(argv: Sequence[str] | None = None) -> int:
    """``python -m recbole_promptmm.tune``; returns the exit status."""
    prog = "python -m recbole_promptmm.tune"
    try:
        prepared = prepare_sweep(sweep_options(sys.argv[1:] if argv is None else argv))
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        return 2
    try:
        return execute_sweep(prepared).exit_code
    except (SweepError, ResourceError) as err:
        print(f"{prog}: {err}", file=sys.stderr, flush=True)
        return 1


def compare_main(argv: Sequence[str] | None = None) -> int:
    """``python -m recbole_promptmm.compare``; returns the exit status."""
    try:
        given, overrides = _parse(command_parser("compare"), sys.argv[1:] if argv is None else argv)
        if given.pop("list_ablations", False):
            print(describe_ablations())
            return 0
        result = compare(**given, overrides=overrides)
    except (PlanError, ResourceError, ValueError) as err:
        print(f"python -m recbole_promptmm.compare: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1 if result.failed else 0
