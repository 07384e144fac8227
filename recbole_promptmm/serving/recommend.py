"""Top-k lists for every user (or a list of users) from any checkpoint, written as CSV or JSON lines."""

from __future__ import annotations

import csv
import json
import sys
from typing import Iterable, Sequence

import torch

from recbole_promptmm.files import atomic_path
from recbole_promptmm.serving.artefact import Catalogue, Recommendation
from recbole_promptmm.serving.export import LoadedRun, load_run, serving_arrays

FORMATS = ("csv", "jsonl")


def catalogue_of(loaded: LoadedRun) -> Catalogue:
    """Tokens, training interactions and popularity of a loaded run's dataset."""
    return Catalogue(serving_arrays(loaded, embeddings=False))


@torch.no_grad()
def model_recommendations(loaded: LoadedRun, catalogue: Catalogue, users: Sequence[str], k: int,
                          include_seen: bool) -> list[Recommendation]:
    """Top-k of ``users`` (external tokens) from the model's own full-sort scores (any RecBole model)."""
    from recbole.data.interaction import Interaction

    model = loaded.model
    ids = catalogue.user_ids(users)
    interaction = Interaction({model.USER_ID: torch.as_tensor(ids).to(model.device)})
    scores = model.full_sort_predict(interaction).view(len(ids), -1).float().cpu().numpy()
    items, top = catalogue.top_k(scores, ids, k, include_seen)
    return catalogue.recommendations(users, ids, items, top)


def format_of(path: str, fmt: str | None) -> str:
    fmt = fmt or ("jsonl" if path.endswith((".jsonl", ".json")) else "csv")
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def write_recommendations(batches: Iterable[list[Recommendation]], path: str, fmt: str) -> int:
    """Write recommendation batches to ``path`` (through a temporary file: a failure leaves nothing); returns the
    number of users written. CSV: ``user,rank,item,score,fallback`` (rank from 1); JSON lines: one object per
    user with ``user``, ``items``, ``scores``, ``fallback``."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f) if fmt == "csv" else None
        if writer:
            writer.writerow(["user", "rank", "item", "score", "fallback"])
        for batch in batches:
            for rec in batch:
                if writer:
                    writer.writerows([rec.user, r + 1, item, repr(float(score)), rec.fallback or ""]
                                     for r, (item, score) in enumerate(zip(rec.items, rec.scores)))
                else:
                    f.write(json.dumps(rec.to_dict()) + "\n")
                count += 1
    return count


def recommend(checkpoint: str, out: str, users: Sequence[str] | None = None, k: int = 20,
              include_seen: bool = False, fmt: str | None = None, batch: int = 2048,
              progress: bool = True) -> int:
    """Write the top-``k`` items (external tokens, with scores) of ``users`` (default: every user) from a
    checkpoint to ``out`` (CSV or JSON lines, by ``fmt`` or the file's extension); returns the number of users.

    Training items are excluded unless ``include_seen``; a user without training interactions gets the
    popularity list, marked ``popularity``. Needs the checkpoint's dataset files (the model is rebuilt from them);
    an exported artefact (:func:`~recbole_promptmm.serving.export.export`) does not.
    """
    fmt = format_of(out, fmt)
    if k < 1:
        raise ValueError(f"--k must be >= 1, got {k}")
    loaded = load_run(checkpoint)
    catalogue = catalogue_of(loaded)
    tokens = list(catalogue.user_tokens[1:]) if users is None else [str(u) for u in users]
    catalogue.user_ids(tokens)  # an unknown token fails before anything is written

    def batches():
        from tqdm import tqdm

        with tqdm(total=len(tokens), unit="user", desc="recommend", disable=not progress, file=sys.stderr) as bar:
            for start in range(0, len(tokens), batch):
                chunk = tokens[start:start + batch]
                yield model_recommendations(loaded, catalogue, chunk, k, include_seen)
                bar.update(len(chunk))

    return write_recommendations(batches(), out, fmt)
