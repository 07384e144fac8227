"""The console command ``recbole-promptmm`` (also ``python -m recbole_promptmm``; ``run_recbole.py`` is its
``run`` alone, RecBole-style).

    recbole-promptmm run --model=LightGCN --dataset=ml-100k [--config_files="a.yaml b.yaml"]
                         [--result_json=out.json] [--key=value ...]
    recbole-promptmm compare --dataset=ml-100k --models=BPR,LightGCN,PromptMM --out=DIR [...]
    recbole-promptmm tune --model=BPR --dataset=ml-100k --num_samples=4 [...]

``run`` trains and evaluates one model (ours or any RecBole built-in); ``compare`` is
``python -m recbole_promptmm.compare`` and ``tune`` is ``python -m recbole_promptmm.tune`` (same options:
``recbole-promptmm compare -h``, ``recbole-promptmm tune -h``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

PROG = "recbole-promptmm"
DEFAULT_MODEL = "PromptMM"
DEFAULT_DATASET = "ml-100k"
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130

RUN_DESCRIPTION = """Train and evaluate one model on one dataset: ours (PromptMM, ...) or any RecBole built-in.

Every other --key=value overrides a RecBole config key (e.g. --epochs=5 --data_path=../shared/data).
Exit status: 0 done, 2 bad input (one line says what), 130 interrupted (Ctrl-C).
"""


def build_run_parser(prog: str = f"{PROG} run") -> argparse.ArgumentParser:
    """The options of ``run`` (unknown ``--key=value`` arguments are config overrides)."""
    parser = argparse.ArgumentParser(prog=prog, description=RUN_DESCRIPTION, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default=None,
                        help=f"model name (default: model: of a config file, else {DEFAULT_MODEL})")
    parser.add_argument("--dataset", "-d", default=None,
                        help=f"dataset name (default: dataset: of a config file, else {DEFAULT_DATASET})")
    parser.add_argument("--config_files", default=None, help="yaml config files, separated by spaces or commas")
    parser.add_argument("--result_json", default=None, help="write the run's results to this JSON file")
    return parser


def run_main(argv: Sequence[str] | None = None, prog: str = f"{PROG} run") -> int:
    """``run``: train, select on validation, test once (:func:`recbole_promptmm.run`); returns the exit status.

    The one place where a run's ``KeyboardInterrupt`` (Ctrl-C) is caught."""
    parser = build_run_parser(prog)
    args, overrides = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    try:
        _run(args, overrides)
    except (ValueError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return 0


def _run(args: argparse.Namespace, overrides: list[str]) -> dict:
    import recbole_promptmm
    from recbole_promptmm.config import load_yaml

    files = args.config_files.replace(",", " ").split() if args.config_files else None
    from_files: dict = {}
    for file in files or []:
        from_files.update(load_yaml(file))
    model = args.model or from_files.get("model") or DEFAULT_MODEL
    dataset = args.dataset or from_files.get("dataset") or DEFAULT_DATASET
    return recbole_promptmm.run(model, dataset, config_file_list=files, cmd_args=overrides,
                                result_json=args.result_json)


def _compare_main(argv: Sequence[str]) -> int:
    from recbole_promptmm.compare.cli import main

    return main(argv)


def _tune_main(argv: Sequence[str]) -> int:
    from recbole_promptmm.tune.cli import main

    return main(argv)


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "run": (run_main, "train and evaluate one model on one dataset"),
    "compare": (_compare_main, "multi-seed comparison of models (python -m recbole_promptmm.compare)"),
    "tune": (_tune_main, "Ray Tune hyper-parameter sweep (python -m recbole_promptmm.tune)"),
}


def usage(prog: str = PROG) -> str:
    commands = "\n".join(f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items())
    return (f"usage: {prog} {{{','.join(COMMANDS)}}} [options]\n\ncommands:\n{commands}\n\n"
            f"'{prog} COMMAND -h' lists the options of COMMAND.\n")


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """``recbole-promptmm COMMAND [options]``; returns the exit status of the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog), end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USAGE
    if argv[0] == "--version":
        from recbole_promptmm import __version__

        print(f"{prog} {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"{prog}: error: unknown command {command!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    if command == "run":
        return run_main(rest, prog=f"{prog} run")
    return COMMANDS[command][0](rest)


if __name__ == "__main__":
    sys.exit(main())
