"""The console command ``recbole-promptmm`` (also ``python -m recbole_promptmm``; ``run_recbole.py`` is its
``run`` alone, RecBole-style).

    recbole-promptmm run --model=LightGCN --dataset=ml-100k [--config_files="a.yaml b.yaml"]
                         [--result_json=out.json] [--key=value ...]
    recbole-promptmm compare --dataset=ml-100k --models=BPR,LightGCN,PromptMM --out=DIR [...]
    recbole-promptmm tune --model=BPR --dataset=ml-100k --num_samples=4 [...]
    recbole-promptmm recommend --checkpoint=saved/X.pth --out=top20.csv [--users=1,2] [--k=20] [--include_seen]
                               [--data_path=DIR]
    recbole-promptmm export --checkpoint=saved/X-student.pth --out=artefact/ [--result_json=r.json] [--data_path=DIR]
    recbole-promptmm serve --artefact=artefact/ [--host=127.0.0.1] [--port=8000]

``run`` trains and evaluates one model (ours or any RecBole built-in); ``compare`` is
``python -m recbole_promptmm.compare`` and ``tune`` is ``python -m recbole_promptmm.tune`` (same options:
``recbole-promptmm compare -h``, ``recbole-promptmm tune -h``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

import recbole_promptmm
from recbole_promptmm import __version__
from recbole_promptmm.parser import EXIT_USAGE, OneLineParser
from recbole_promptmm.serving.artefact import shorten
from recbole_promptmm.serving.http import serve

PROG = "recbole-promptmm"
DEFAULT_MODEL = "PromptMM"
DEFAULT_DATASET = "ml-100k"
EXIT_INTERRUPTED = 130

RUN_DESCRIPTION = """Train and evaluate one model on one dataset: ours (PromptMM, ...) or any RecBole built-in.

Every other --key=value overrides a RecBole config key (e.g. --epochs=5 --data_path=../shared/data).
Ctrl-C stops a run with one line naming its resume file; --resume=FILE continues it (stage and epoch where it
stopped, the same final metrics as an uninterrupted run).
--nproc=N trains in N processes (RecBole's DDP path; --world_size, --offset, --ip, --port for several machines;
docs/DISTRIBUTED.md): give each one thread, OMP_NUM_THREADS=1.
Exit status: 0 done, 2 bad input (one line says what), 130 interrupted (Ctrl-C).
"""


def build_run_parser(prog: str = f"{PROG} run") -> argparse.ArgumentParser:
    """The options of ``run`` (unknown ``--key=value`` arguments are config overrides)."""
    parser = OneLineParser(prog=prog, description=RUN_DESCRIPTION, allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default=None,
                        help=f"model name (default: model: of a config file, else {DEFAULT_MODEL})")
    parser.add_argument("--dataset", "-d", default=None,
                        help=f"dataset name (default: dataset: of a config file, else {DEFAULT_DATASET})")
    parser.add_argument("--config_files", default=None, help="yaml config files, separated by spaces or commas")
    parser.add_argument("--result_json", default=None, help="write the run's results to this JSON file")
    parser.add_argument("--resume", default=None, metavar="FILE",
                        help="continue the interrupted run whose resume file (saved/<...>-resume.pth) this is")
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
    except KeyboardInterrupt as err:  # a RunInterrupted (trainer.resume) says what was saved
        line = err.describe(prog) if hasattr(err, "describe") else f"{prog}: interrupted (Ctrl-C)"
        print(line, file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return 0


def _run(args: argparse.Namespace, overrides: list[str]) -> dict:
    run = recbole_promptmm.run  # without torch or RecBole: an ImportError that says so
    load_yaml = recbole_promptmm.config.load_yaml
    files = args.config_files.replace(",", " ").split() if args.config_files else None
    from_files: dict = {}
    for file in files or []:
        from_files.update(load_yaml(file))
    if args.resume:  # the interrupted run's inputs; run() refuses different ones
        return run(args.model, args.dataset, config_file_list=files, cmd_args=overrides,
                   result_json=args.result_json, resume=args.resume)
    model = args.model or from_files.get("model") or DEFAULT_MODEL
    dataset = args.dataset or from_files.get("dataset") or DEFAULT_DATASET
    return run(model, dataset, config_file_list=files, cmd_args=overrides, result_json=args.result_json)


def _integer(text: str) -> int:
    """An integer option's type: the refusal quotes at most the start of what was given."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {shorten(text)}") from None


def _serving_parser(command: str, prog: str) -> argparse.ArgumentParser:
    descriptions = {
        "recommend": "Top-k items of every user (or --users) from any checkpoint, to CSV or JSON lines (external "
                     "tokens, training items excluded unless --include_seen). Rebuilds the model from its data.",
        "export": "Write the numpy-only serving artefact of a dot-product model's checkpoint (the PromptMM student, "
                  "LightGCN, BPR, the multimodal teachers, ...): Recommender.load(OUT).recommend([...]).",
        "serve": "Answer GET /recommend?user=...&k=20 and GET /health over an artefact (loopback by default), with "
                 "numpy alone; Ctrl-C or SIGTERM stops it (one line, exit status 0).",
    }
    parser = OneLineParser(prog=f"{prog} {command}", description=descriptions[command], allow_abbrev=False)
    if command in ("recommend", "export"):
        parser.add_argument("--checkpoint", required=True, help="a checkpoint (saved/*.pth; PromptMM's -student.pth)")
        parser.add_argument("--out", required=True,
                            help="output file (.csv or .jsonl); an existing one must be an earlier list"
                            if command == "recommend" else "artefact folder: new, empty or an earlier artefact")
        parser.add_argument("--data_path", default=None, metavar="DIR",
                            help="the folder holding the dataset's folder (default: where the run found it)")
    if command == "recommend":
        parser.add_argument("--users", default=None, help="user tokens, comma-separated (default: every user); "
                                                          "an unknown token stops the command before it writes")
        parser.add_argument("--k", type=_integer, default=20, help="list length (capped at the number of items)")
        parser.add_argument("--include_seen", action="store_true", help="keep the users' training items")
        parser.add_argument("--format", default=None, help="csv or jsonl (default: by --out's extension)")
    if command == "export":
        parser.add_argument("--result_json", default=None,
                            help="the run's result JSON: its validation and test metrics go into the metadata")
    if command == "serve":
        parser.add_argument("--artefact", required=True, help="folder written by export")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=_integer, default=8000, help="1-65535, or 0 for any free port")
    return parser


def _serving_main(command: str, argv: Sequence[str], prog: str = PROG) -> int:
    args = _serving_parser(command, prog).parse_args(list(argv))
    try:
        if command in ("recommend", "export"):
            from recbole_promptmm.serving import export, recommend  # torch, RecBole: serve runs without them
        if command == "recommend":
            users = None if args.users is None else [u.strip() for u in args.users.split(",") if u.strip()]
            written = recommend.recommend(args.checkpoint, args.out, users, args.k, args.include_seen, args.format,
                                          data_path=args.data_path)
            print(written.describe(args.out, args.k))
        elif command == "export":
            meta = export.export(args.checkpoint, args.out, args.result_json, args.data_path)
            print(f"artefact of {meta['model']} on {meta['dataset']} written to {args.out}")
        else:
            serve(args.artefact, args.host, args.port)
    except (ValueError, FileNotFoundError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"{prog} {command}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        if command == "serve":  # how a server stops: Ctrl-C, or SIGTERM (serve raises KeyboardInterrupt("SIGTERM"))
            print(f"{prog} serve: stopped ({err.args[0] if err.args else 'Ctrl-C'})", file=sys.stderr, flush=True)
            return 0
        print(f"{prog} {command}: interrupted (Ctrl-C); nothing half-written was kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _experiments_main(command: str, argv: Sequence[str]) -> int:
    """``compare`` or ``tune`` (:mod:`recbole_promptmm.experiments.cli`)."""
    from recbole_promptmm.experiments import cli as experiments_cli  # torch, RecBole, Ray: serve runs without them

    return getattr(experiments_cli, f"{command}_main")(argv)


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "run": (run_main, "train and evaluate one model on one dataset"),
    "compare": (lambda argv: _experiments_main("compare", argv), "multi-seed comparison of models (python -m recbole_promptmm.compare)"),
    "tune": (lambda argv: _experiments_main("tune", argv), "Ray Tune hyper-parameter sweep (python -m recbole_promptmm.tune)"),
    "recommend": (lambda argv: _serving_main("recommend", argv), "top-k lists of every user from a checkpoint"),
    "export": (lambda argv: _serving_main("export", argv), "numpy-only serving artefact of a dot-product model"),
    "serve": (lambda argv: _serving_main("serve", argv), "HTTP endpoint over an artefact"),
}


def usage(prog: str = PROG) -> str:
    commands = "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items())
    return (f"usage: {prog} {{{','.join(COMMANDS)}}} [options]\n\ncommands:\n{commands}\n\n"
            f"'{prog} COMMAND -h' lists the options of COMMAND.\n")


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """``recbole-promptmm COMMAND [options]``; returns the exit status of the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog), end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USAGE
    if argv[0] == "--version":
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
