"""The command lines of ``python -m recbole_promptmm.tune`` and ``python -m recbole_promptmm.compare`` (also
``recbole-promptmm tune|compare``): argparse, into the option dataclasses of :mod:`.options`. Any other
``--key=value`` is a RecBole config override: fixed for every trial of a sweep, applied to every run of a
comparison."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import recbole_promptmm  # noqa: F401  (RecBole compatibility fixes, before anything else of RecBole)
from recbole_promptmm.config import parse_cmd_args
from recbole_promptmm.experiments.cluster import ResourceError
from recbole_promptmm.experiments.compare import run_comparison
from recbole_promptmm.experiments.options import SCHEDULERS, CompareOptions, SweepOptions
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


def _parser(prog: str, usage: str) -> argparse.ArgumentParser:
    """The options of :class:`RayOptions`; only options given on the command line land in the namespace."""
    parser = OneLineParser(prog=prog, description=usage, allow_abbrev=False, argument_default=argparse.SUPPRESS,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--max_concurrent", type=int, help="trials running at once (default: as many as the resources allow)")
    add("--cpus_per_trial", type=float, help="CPUs Ray reserves per trial; torch uses as many threads (default 1)")
    add("--gpus_per_trial", type=float, help="GPUs Ray reserves per trial (default 0)")
    add("--num_cpus", type=int, help="CPUs of the local Ray instance (default: all cores)")
    add("--address", help="an existing Ray cluster: HOST:PORT of its head (or auto)")
    add("--verbose", action="store_true",
        help="print Ray Tune's trial tables as well (default: one line per finished run/trial)")
    return parser


def tune_parser() -> argparse.ArgumentParser:
    parser = _parser("python -m recbole_promptmm.tune", TUNE_USAGE)
    add = parser.add_argument
    add("--model", "-m", help="model: ours (PromptMM, PromptMMTeacher, ...) or a RecBole built-in")
    add("--dataset", "-d", help="dataset: ml-100k, tiktok (with --data_path) or your own")
    add("--out", help="output folder (default: tune_results/<model>-<dataset>)")
    add("--search_space", help="search-space yaml (default: properties/tune/<model>.yaml)")
    add("--num_samples", type=int, help="samples of the search space (default 1; grids run in full)")
    add("--config_files", type=split_list, help="yaml config files, separated by spaces or commas")
    add("--scheduler", choices=SCHEDULERS, help="asha stops poor trials early (default asha)")
    add("--resume", action="store_true", help="continue the interrupted sweep in --out")
    for name, kind, text in (("grace_period", int, "epochs before a trial can be stopped (default 1)"),
                             ("reduction_factor", float, "keep 1/this at each rung (default 2)"),
                             ("max_t", int, "last epoch (default: the largest epochs of any trial)")):
        add(f"--{name}", type=kind, help=f"ASHA: {text}")
    add("--max_failures", type=int, help="restarts of a failing trial from its checkpoint (default 1)")
    add("--teacher_checkpoint", help="PromptMM: distil every trial from this teacher checkpoint")
    add("--teacher_search_space", help="PromptMM: search the teacher with this file first")
    add("--teacher_num_samples", type=int, help="PromptMM: samples of the teacher search space")
    add("--no_test", dest="evaluate_test", action="store_false",
        help="do not evaluate the best configuration on test")
    return parser


def compare_parser() -> argparse.ArgumentParser:
    parser = _parser("python -m recbole_promptmm.compare", COMPARE_USAGE)
    parser.add_argument("--dataset", "-d", help="dataset name (default ml-100k)")
    parser.add_argument("--models", "-m", help="comma-separated model names or labels")
    parser.add_argument("--out", "-o", help="output folder (required): reports, and every run under OUT/runs/")
    parser.add_argument("--seeds", help="comma-separated seeds (default 2020,2021,2022)")
    parser.add_argument("--data_path", help="folder holding <dataset>/ (e.g. ../shared/data)")
    parser.add_argument("--config_files", type=split_list,
                        help="yaml files: shared keys, plus a 'models: {NAME: {...}}' section")
    parser.add_argument("--ablations", nargs="?", const="all",
                        help="add PromptMM ablation variants: all (no value) or comma-separated names")
    parser.add_argument("--variants",
                        help="PromptMM variants: ablation names or NAME:key=value;key=value, comma-separated")
    parser.add_argument("--no_share_teacher", dest="share_teacher", action="store_false",
                        help="every PromptMM variant trains its own teacher")
    parser.add_argument("--reference",
                        help="label tested against the others (default PromptMM if compared, else the first)")
    parser.add_argument("--rerun", help="labels (comma-separated) or 'all' whose cached runs are redone")
    parser.add_argument("--run_timeout", type=float,
                        help="stop a run after this many seconds (checked at each validation)")
    parser.add_argument("--cost_repeats", type=int, help="timed full-sort scoring passes per run (default 3)")
    parser.add_argument("--report_only", action="store_true", help="run nothing; report the cached runs")
    parser.add_argument("--list_ablations", action="store_true", help="print the ablation table and exit")
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[dict, list[str]]:
    args, overrides = parser.parse_known_args(list(argv))
    parse_cmd_args(overrides)  # refuses anything that is not --key=value, naming it
    return vars(args), overrides


def sweep_options(argv: Sequence[str]) -> SweepOptions:
    """Parse ``argv`` into normalised :class:`SweepOptions` (the saved ones, with ``--resume``)."""
    given, overrides = _parse(tune_parser(), argv)
    if overrides:
        given["overrides"] = overrides
    if given.get("resume"):
        if not given.get("out"):
            raise ValueError("--resume needs --out=DIR, the folder of the sweep to continue")
        return SweepOptions.load(os.path.abspath(given["out"])).resumed_with(given)
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
    prog = "python -m recbole_promptmm.compare"
    try:
        given, overrides = _parse(compare_parser(), sys.argv[1:] if argv is None else argv)
        if given.pop("list_ablations", False):
            print(describe_ablations())
            return 0
        result = run_comparison(CompareOptions(**given, overrides=overrides))
    except (PlanError, ResourceError, ValueError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1 if result.failed else 0
