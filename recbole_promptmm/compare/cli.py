"""Command line of ``python -m recbole_promptmm.compare``."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

USAGE = """Is PromptMM better than what I already use, on my data, and what does it cost?

Trains every model with every seed under one protocol (same split, evaluator and validation-based early
stopping; test metrics at the best validation epoch), measures cost, and writes results.csv, results.md
(mean ± std, best in bold, paired t-test against the reference model), results.png and every run's
resolved config into --out. Finished runs are cached there: rerunning the same command resumes.

examples:
  python -m recbole_promptmm.compare --dataset=ml-100k --models=Pop,BPR,LightGCN --seeds=2020,2021 \\
      --out=results/compare-ml100k --epochs=20
  python -m recbole_promptmm.compare --dataset=tiktok --data_path=../shared/data \\
      --models=LightGCN,PromptMM --ablations --config_files=tiktok-compare.yaml --out=results/tiktok

Any other --key=value is a RecBole config override applied to every run (e.g. --epochs=1).
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (unknown ``--key=value`` arguments are config overrides)."""
    parser = argparse.ArgumentParser(
        prog="python -m recbole_promptmm.compare",
        description=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default ml-100k)")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ (e.g. ../shared/data)")
    parser.add_argument("--models", "-m", default="", help="comma-separated model names or labels")
    parser.add_argument("--seeds", default="2020,2021,2022", help="comma-separated seeds (default 2020,2021,2022)")
    parser.add_argument("--config_files", default="",
                        help="comma-separated yaml files: shared keys, plus a 'models: {NAME: {...}}' section")
    parser.add_argument("--ablations", nargs="?", const="all", default=None,
                        help="add PromptMM ablation variants: all (no value) or comma-separated names")
    parser.add_argument("--no_share_teacher", dest="share_teacher", action="store_false",
                        help="every ablation variant trains its own teacher (default: variants that leave stage 1 "
                             "unchanged reuse PromptMM's teacher of the same seed)")
    parser.add_argument("--list_ablations", action="store_true", help="print the ablation table and exit")
    parser.add_argument("--reference", default=None,
                        help="model tested against the others (default PromptMM if compared, else the first)")
    parser.add_argument("--out", "-o", default=None, help="output folder (required)")
    parser.add_argument("--rerun", default="", help="labels (comma-separated) or 'all' whose cached runs are redone")
    parser.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads per run (default: inherit)")
    parser.add_argument("--run_timeout", type=float, default=None, help="kill a run after this many seconds")
    parser.add_argument("--cost_repeats", type=int, default=3, help="timed full-sort scoring passes (default 3)")
    parser.add_argument("--report_only", action="store_true", help="run nothing; report the cached runs")
    parser.add_argument("--progress_interval", type=float, default=15.0,
                        help="seconds between epoch progress lines of one run (default 15; 0: every epoch)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0: every run has a result, 1: some have not,
    2: bad arguments, 130: interrupted)."""
    parser = build_parser()
    args, overrides = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    from recbole_promptmm.compare.ablations import describe_ablations

    if args.list_ablations:
        print(describe_ablations())
        return 0
    if not args.out:
        parser.error("--out=DIR is required")
    from recbole_promptmm.compare.comparison import compare
    from recbole_promptmm.compare.plan import PlanError

    try:
        result = compare(
            args.dataset, args.models, args.out, args.seeds,
            data_path=args.data_path, config_files=args.config_files, overrides=overrides,
            ablations=args.ablations, share_teacher=args.share_teacher, reference=args.reference, rerun=args.rerun, threads=args.threads,
            run_timeout=args.run_timeout, cost_repeats=args.cost_repeats, report_only=args.report_only,
            progress_interval=args.progress_interval,
        )
    except PlanError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1 if result.failed else 0
