"""What the benchmark scripts share: the command line, bad input as one line, checkpoints, data, timing, ranking."""

import argparse
import glob
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_promptmm import Config, create_dataset, data_preparation  # noqa: E402  (compatibility fixes)
from recbole_promptmm.checkpoint import load_checkpoint  # noqa: E402
from recbole_promptmm.parser import OneLineParser  # noqa: E402
from recbole_promptmm.serving.export import load_run  # noqa: E402


def parser(doc: str) -> OneLineParser:
    """The package's parser (``--name=value``; a refusal is one line, exit status 2), the docstring as help."""
    return OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def options(doc: str, **extra: dict):
    """(options, ``--key=value`` overrides): --dataset, --NAME=spec of ``extra``, --threads (set)."""
    p = parser(doc)
    p.add_argument("--dataset", default="tiktok")
    for name, spec in extra.items():
        p.add_argument(f"--{name}", **spec)
    p.add_argument("--threads", type=int, default=1, help="torch threads (time comparisons: keep equal)")
    args, overrides = p.parse_known_args()
    torch.set_num_threads(args.threads)
    return args, overrides


def entry(main) -> None:
    """Run ``main``: bad input (a ValueError, as the package's commands treat it, or no such file) is one line."""
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        print(f"{os.path.basename(sys.argv[0])}: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def checkpoint_files(patterns: str, option: str, one: bool = False) -> list[tuple[str, str]]:
    """(path, ``option``) of each file of comma-separated paths or globs (``one``: exactly one file)."""
    files = []
    for pattern in patterns.split(","):
        files += sorted(glob.glob(pattern)) or [pattern]  # a missing file: the checkpoint reader names it
    if one and len(files) != 1:
        raise FileNotFoundError(f"{option}: {patterns!r} must match one file, found {len(files)}: {files}")
    return [(path, option) for path in files]


def load_runs(files: list[tuple[str, str]]):
    """(path, the package's ``LoadedRun``: model in eval mode with its own data), one at a time, of each
    ``checkpoint_files`` entry; every file is read (and refused, naming its option) before any data loads."""
    checkpoints = [load_checkpoint(path, "cpu", what=option) for path, option in files]
    return ((path, load_run(path, checkpoint)) for (path, _), checkpoint in zip(files, checkpoints))


def load_data(args, overrides, model: str = "PromptMM", **values):
    """(config, dataset, train, valid, test) of ``args.dataset`` for ``model``."""
    config = Config(model, args.dataset, config_dict={"show_progress": False, **values}, cmd_args=overrides)
    dataset = create_dataset(config)
    return (config, dataset, *data_preparation(config, dataset))


def seconds(fn, *args):
    """(``fn(*args)``, seconds it took)."""
    start = time.perf_counter()
    return fn(*args), time.perf_counter() - start


@torch.no_grad()
def top_k(model, interaction, history_index, catalogue, k: int) -> torch.Tensor:
    """Item ids [n, k] of the model's own full-sort scores of ``interaction``'s users, RecBole's ``history_index``
    masked, ranked by the package's ``Catalogue.top_k`` (padding never chosen, equal scores: lower id first)."""
    scores = model.full_sort_predict(interaction).view(interaction.length, -1).float().cpu().numpy().copy()
    if history_index is not None:
        scores[tuple(np.asarray(i.cpu()) for i in history_index)] = -np.inf
    return torch.from_numpy(catalogue.top_k(scores, None, k, include_seen=True)[0])
