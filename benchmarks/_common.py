"""What the benchmark scripts share: the command line, bad input as one line, checkpoints, data, timing, ranking."""

import argparse
import glob
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import recbole_promptmm  # noqa: E402,F401  (compatibility fixes)
from recbole_promptmm.checkpoint import load_checkpoint  # noqa: E402
from recbole_promptmm.parser import OneLineParser  # noqa: E402
from recbole_promptmm.serving.export import load_run  # noqa: E402


def parser(doc: str) -> OneLineParser:
    """The package's parser (``--name=value``; a refusal is one line, exit status 2), the docstring as help."""
    return OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def entry(main) -> None:
    """Run ``main``: bad input (a ValueError, as the package's commands treat it, or no such file) is one line."""
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        print(f"{os.path.basename(sys.argv[0])}: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def load_runs(*options: tuple[str, str, bool]):
    """(path, the package's ``LoadedRun``: model in eval mode with its own data), one at a time, of each file of
    the ``(comma-separated paths or globs, option, exactly one file)`` options; every file is read (and refused,
    naming its option) before any data loads."""
    files = []
    for patterns, option, one in options:
        found = [path for pattern in patterns.split(",") for path in sorted(glob.glob(pattern)) or [pattern]]
        if one and len(found) != 1:  # a missing file: the checkpoint reader names it
            raise FileNotFoundError(f"{option}: {patterns!r} must match one file, found {len(found)}: {found}")
        files += [(path, load_checkpoint(path, "cpu", what=option)) for path in found]
    return ((path, load_run(path, checkpoint)) for path, checkpoint in files)


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
