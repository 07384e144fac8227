"""Top-k lists for every user (or a list of users) from any checkpoint, written as CSV or JSON lines."""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from recbole.data.interaction import Interaction
from tqdm import tqdm

from recbole_promptmm.files import atomic_path, check_output_file, first_line
from recbole_promptmm.serving.artefact import Catalogue, Recommendation, shorten
from recbole_promptmm.serving.export import LoadedRun, load_run, serving_arrays

EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}  # --out's extension -> format
FORMATS = ("csv", "jsonl")
CSV_HEADER = ("user", "rank", "item", "score", "fallback")


@dataclass
class Written:
    """What :func:`recommend` wrote: ``users`` lists of at most ``k`` items (``k`` capped at the number of items);
    ``shortest`` is below ``k`` when some users have fewer items left once their training items are excluded."""

    users: int
    k: int
    shortest: int

    def describe(self, out: str, requested_k: int) -> str:
        """The one line the ``recommend`` command prints."""
        line = f"top-{self.k} of {self.users} users written to {out}"
        notes = [f"--k={requested_k} capped at the {self.k} items"] if self.k < requested_k else []
        if self.shortest < self.k:
            notes.append(f"the shortest list has {self.shortest} items: training items excluded")
        return line + (f" ({'; '.join(notes)})" if notes else "")


def catalogue_of(loaded: LoadedRun) -> Catalogue:
    """Tokens, training interactions and popularity of a loaded run's dataset."""
    return Catalogue(serving_arrays(loaded, embeddings=False))


@torch.no_grad()
def model_recommendations(loaded: LoadedRun, catalogue: Catalogue, users: Sequence[str], k: int,
                          include_seen: bool) -> list[Recommendation]:
    """Top-k of ``users`` (external tokens) from the model's own full-sort scores (any RecBole model)."""
    model = loaded.model
    ids = catalogue.user_ids(users)
    interaction = Interaction({model.USER_ID: torch.as_tensor(ids).to(model.device)})
    scores = model.full_sort_predict(interaction).view(len(ids), -1).float().cpu().numpy()
    items, top = catalogue.top_k(scores, ids, k, include_seen)
    return catalogue.recommendations(users, ids, items, top)


def format_of(path: str, fmt: str | None) -> str:
    """The format to write ``path`` in: ``fmt``, or the one its extension names; a format the extension
    contradicts, or neither, is a ValueError."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {shorten(fmt)}")
    ext = os.path.splitext(path)[1].lower()
    by_name = EXTENSIONS.get(ext)
    if fmt is None and by_name is None:
        raise ValueError(f"--out={shorten(path)}: its extension does not name a format; end it with "
                         f"{', '.join(EXTENSIONS)} or give --format={'|'.join(FORMATS)}")
    if fmt is not None and by_name is not None and fmt != by_name:
        raise ValueError(f"--format={fmt} contradicts --out={shorten(path)} (a {ext} file is {by_name}); "
                         "drop --format or change the extension")
    return fmt or by_name


def write_recommendations(batches: Iterable[list[Recommendation]], path: str, fmt: str) -> tuple[int, int]:
    """Write recommendation batches to ``path`` (through a temporary file: a failure leaves nothing); returns the
    number of users written and the length of the shortest list. CSV: ``user,rank,item,score,fallback`` (rank
    from 1); JSON lines: one object per user with ``user``, ``items``, ``scores``, ``fallback``."""
    count, shortest = 0, None
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f) if fmt == "csv" else None
        if writer:
            writer.writerow(CSV_HEADER)
        for batch in batches:
            for rec in batch:
                if writer:
                    writer.writerows([rec.user, r + 1, item, repr(float(score)), rec.fallback or ""]
                                     for r, (item, score) in enumerate(zip(rec.items, rec.scores)))
                else:
                    f.write(json.dumps(rec.to_dict()) + "\n")
                count += 1
                shortest = len(rec.items) if shortest is None else min(shortest, len(rec.items))
    return count, shortest or 0


def is_recommendations(path: str) -> bool:
    """Whether ``path`` starts as :func:`write_recommendations` writes: the CSV header, or a JSON line with
    ``user``, ``items``, ``scores`` and ``fallback``."""
    line = first_line(path)
    if line == ",".join(CSV_HEADER):
        return True
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and {"user", "items", "scores", "fallback"} <= set(value)


def recommend(checkpoint: str, out: str, users: Sequence[str] | None = None, k: int = 20,
              include_seen: bool = False, fmt: str | None = None, batch: int = 2048,
              progress: bool = True, data_path: str | None = None) -> Written:
    """Write the top-``k`` items (external tokens, with scores) of ``users`` (default: every user) from a
    checkpoint to ``out`` (CSV or JSON lines, by ``fmt`` or the file's extension); returns what was written.

    Training items are excluded unless ``include_seen``; a user without training interactions gets the
    popularity list, marked ``popularity``. ``k`` is capped at the number of items. Needs the checkpoint's dataset
    files (the model is rebuilt from them); an exported artefact (:func:`~recbole_promptmm.serving.export.export`)
    does not; ``data_path`` (the folder holding ``<dataset>/``) overrides where the run found them. The arguments
    are checked before the dataset loads; an existing ``out`` that is not an earlier list is refused; an unknown
    user token (every one is named, up to three) fails before anything is written.
    """
    fmt = format_of(out, fmt)
    if k < 1:
        raise ValueError(f"--k must be >= 1, got {k}")
    if users is not None and not users:
        raise ValueError("--users names no user: give tokens separated by commas, or leave it out for every user")
    if os.path.isdir(out):
        raise ValueError(f"--out={shorten(out)} is a folder; give a file name ending in {', '.join(EXTENSIONS)}")
    check_output_file(out, "--out", "recommend", "a list", is_recommendations)
    loaded = load_run(checkpoint, data_path=data_path)
    catalogue = catalogue_of(loaded)
    tokens = list(catalogue.user_tokens[1:]) if users is None else [str(u) for u in users]
    catalogue.user_ids(tokens)  # unknown tokens fail before anything is written

    def batches():
        # disable=None: tqdm draws only on a terminal, never into piped output
        with tqdm(total=len(tokens), unit="user", desc="recommend", disable=None if progress else True,
                  file=sys.stderr) as bar:
            for start in range(0, len(tokens), batch):
                chunk = tokens[start:start + batch]
                yield model_recommendations(loaded, catalogue, chunk, k, include_seen)
                bar.update(len(chunk))

    count, shortest = write_recommendations(batches(), out, fmt)
    return Written(count, catalogue.capped_k(k), shortest)
