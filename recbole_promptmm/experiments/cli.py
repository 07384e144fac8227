"""The command lines of ``python -m recbole_promptmm.tune|compare`` (also ``recbole-promptmm tune|compare``), into
the dataclasses of :mod:`.options`. Any other ``--key=value`` is a RecBole config override: fixed for every trial
of a sweep, applied to every run of a comparison."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Sequence

import recbole_promptmm  # noqa: F401  (RecBole compatibility fixes, before anything else of RecBole)
from recbole_promptmm.config import parse_cmd_args
from recbole_promptmm.experiments.cluster import ResourceError
from recbole_promptmm.experiments.compare import compare
from recbole_promptmm.experiments.options import CompareOptions, RayOptions, SweepOptions
from recbole_promptmm.experiments.plan import PlanError, describe_ablations
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

# Settings Ray Tune reads from the driver's own environment when a sweep runs (neither ray.init, whose runtime_env
# reaches the workers only, nor a Tune option sets them): the tune command sets them for its process; the library
# (run_sweep, compare) leaves the environment alone. A value the user exported wins.
TUNE_DRIVER_ENV = {
    # Tune's legacy output engine honours verbose=0 fully (its new one prints an experiment box regardless).
    "RAY_AIR_NEW_OUTPUT": "0",
    # One checkpoint kept per trial forces a state snapshot per report; Ray warns about that on every sweep.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


def command_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``tune`` or ``compare``: the :func:`~.options.option` fields of its options."""
    parser = OneLineParser(prog=f"python -m recbole_promptmm.{command}", allow_abbrev=False,
                           description=TUNE_USAGE if command == "tune" else COMPARE_USAGE,
                           argument_default=argparse.SUPPRESS, formatter_class=argparse.RawDescriptionHelpFormatter)
    ray = {f.name for f in dataclasses.fields(RayOptions)}  # listed last
    fields = dataclasses.fields(SweepOptions if command == "tune" else CompareOptions)
    for f in sorted(fields, key=lambda f: f.name in ray):
        if "help" in f.metadata:
            kwargs, flags = dict(f.metadata), f.metadata["flags"]
            del kwargs["flags"]
            if isinstance(f.default, bool):  # --flag sets True; --no_flag sets False
                kwargs["action"] = "store_true" if f.default is False else "store_false"
            elif isinstance(f.default, (int, float)):
                kwargs.setdefault("type", type(f.default))
            own = flags if flags[:1] and flags[0].startswith("--") else (f"--{f.name}", *flags)
            parser.add_argument(*own, dest=f.name, **kwargs)
    if command == "compare":
        parser.add_argument("--list_ablations", action="store_true", help="print the ablation table and exit")
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
    for key, value in TUNE_DRIVER_ENV.items():
        os.environ.setdefault(key, value)
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
