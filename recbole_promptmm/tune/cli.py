"""``python -m recbole_promptmm.tune``: a Ray Tune sweep of one model on one dataset.

    python -m recbole_promptmm.tune --model=LightGCN --dataset=ml-100k --num_samples=8 --epochs=20
    python -m recbole_promptmm.tune --model=BPR --dataset=tiktok --data_path=../shared/data \\
        --search_space=properties/tune/BPR.yaml --num_samples=4 --max_concurrent=1
    python -m recbole_promptmm.tune --out=DIR --resume

Every other ``--key=value`` fixes a RecBole config key for every trial (e.g. ``--epochs=3``). The search space
defaults to ``properties/tune/<model>.yaml``. See docs/TUNING.md.

Exit status: 0 when at least one trial produced a result, 1 when every trial failed, 2 for a bad command
line, config or search space (nothing is started), 3 when the sweep was interrupted (resume it).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import recbole_promptmm  # noqa: F401  (RecBole compatibility fixes, before anything else of RecBole)
from recbole_promptmm.config import parse_cmd_args
from recbole_promptmm.tune.driver import execute_sweep, prepare_sweep
from recbole_promptmm.tune.options import SweepOptions, merge_for_resume
from recbole_promptmm.tune.space import SearchSpaceError
from recbole_promptmm.tune.sweep import SweepError

EXIT_FAILED, EXIT_USAGE = 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The command line (RecBole ``--key=value`` overrides are what it does not know)."""
    p = argparse.ArgumentParser(prog="python -m recbole_promptmm.tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--model", "-m", help="model: ours (PromptMM, PromptMMTeacher, ...) or a RecBole built-in")
    p.add_argument("--dataset", "-d", help="dataset: ml-100k, tiktok (with --data_path) or your own")
    p.add_argument("--search_space", help="search-space yaml (default: properties/tune/<model>.yaml)")
    p.add_argument("--num_samples", type=int, help="samples of the search space (default 1; grids run in full)")
    p.add_argument("--config_files", help="yaml config files, separated by spaces or commas")
    p.add_argument("--out", help="output folder (default: tune_results/<model>-<dataset>)")
    p.add_argument("--scheduler", choices=["asha", "fifo"], help="asha stops poor trials early (default asha)")
    p.add_argument("--max_concurrent", type=int, help="trials running at once (default: as resources allow)")
    p.add_argument("--cpus_per_trial", type=float, help="CPUs per trial (default 1)")
    p.add_argument("--gpus_per_trial", type=float, help="GPUs per trial (default 0)")
    p.add_argument("--num_cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--address", help="an existing Ray cluster: HOST:PORT of its head (or auto)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep in --out")
    p.add_argument("--grace_period", type=int, help="ASHA: epochs before a trial can be stopped (default 1)")
    p.add_argument("--reduction_factor", type=float, help="ASHA: keep 1/this at each rung (default 2)")
    p.add_argument("--max_t", type=int, help="ASHA: last epoch (default: the largest epochs of any trial)")
    p.add_argument("--max_failures", type=int, help="restarts of a failing trial from its checkpoint (default 1)")
    p.add_argument("--teacher_checkpoint", help="PromptMM: distil every trial from this PromptMMTeacher checkpoint")
    p.add_argument("--teacher_search_space", help="PromptMM: search the teacher with this file first")
    p.add_argument("--teacher_num_samples", type=int, help="PromptMM: samples of the teacher search space")
    p.add_argument("--no_test", dest="evaluate_test", action="store_false", default=None,
                   help="do not evaluate the best configuration on test")
    return p


def _given(args: argparse.Namespace) -> dict:
    """Options given on the command line (None means: not given)."""
    given = {k: v for k, v in vars(args).items() if v is not None and k != "config_files"}
    if not given.get("resume"):
        given.pop("resume", None)
    if args.config_files is not None:
        given["config_files"] = args.config_files.replace(",", " ").split()
    return given


def options_from_args(argv: Sequence[str]) -> SweepOptions:
    """Parse ``argv`` into normalised :class:`SweepOptions` (the saved ones, with ``--resume``)."""
    args, overrides = build_parser().parse_known_args(list(argv))
    parse_cmd_args(overrides)  # refuses anything that is not --key=value, naming it
    given = _given(args)
    if overrides:
        given["overrides"] = list(overrides)
    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out=DIR, the folder of the sweep to continue")
        saved = SweepOptions.load(os.path.abspath(args.out))
        normalised = vars(SweepOptions(**{**vars(saved), **given}).normalised())
        return merge_for_resume(saved, {k: normalised[k] for k in given})
    missing = [name for name in ("model", "dataset") if name not in given]
    if missing:
        raise ValueError(f"missing {', '.join('--' + m for m in missing)} (or --out=DIR --resume)")
    given.setdefault("out", f"tune_results/{given['model']}-{given['dataset']}")
    return SweepOptions(**given).normalised()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        prepared = prepare_sweep(options_from_args(argv))
    except (SearchSpaceError, ValueError, KeyError, FileNotFoundError, FileExistsError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"python -m recbole_promptmm.tune: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    try:
        return execute_sweep(prepared).exit_code
    except SweepError as err:
        print(f"python -m recbole_promptmm.tune: {err}", file=sys.stderr, flush=True)
        return EXIT_FAILED
