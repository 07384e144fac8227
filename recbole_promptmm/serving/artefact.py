"""The serving artefact of a dot-product model, and :class:`Recommender`, which serves it with numpy alone.

An artefact is a folder (written by :func:`recbole_promptmm.serving.export.export`)::

    meta.json    format, model, dataset, config hash, validation/test metrics, library versions, shapes, and the
                 sha256 of arrays.npz (a changed or truncated file is refused)
    arrays.npz   user [U, d] and item [I, d] float32 embeddings (row = RecBole's internal id, row 0 = padding),
                 user_tokens [U] / item_tokens [I] (external tokens), seen_indptr / seen_indices (the training
                 interactions, CSR by user), popularity [I] (training interactions per item)

Scores are ``user @ item.T``; an item a user interacted with in training is never recommended to them unless
``include_seen``. A user with no training interaction gets the items by training popularity instead, marked
``"fallback": "popularity"`` (their ID embedding was never trained). A token the artefact does not know is an
:class:`UnknownUserError`.

This module imports nothing but numpy and the standard library: ``Recommender.load(path).recommend(["u1"])``
runs where neither torch nor RecBole is installed (``import recbole_promptmm`` then loads only what needs
neither).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from recbole_promptmm.files import check_output_folder, read_json, replace_folder

FORMAT = "recbole_promptmm-artefact/1"
META_FILE, ARRAYS_FILE = "meta.json", "arrays.npz"
ARRAY_NAMES = ("user", "item", "user_tokens", "item_tokens", "seen_indptr", "seen_indices", "popularity")


ECHO_LIMIT = 40  # characters of a refused value that an error message repeats


def shorten(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr`` of a value a user gave, cut to its first ``limit`` characters: an error message names what it
    refuses without echoing a 10,000-character string back (to a console, a log or an HTTP client)."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


class ArtefactError(ValueError):
    """A folder that is not a readable artefact (missing, corrupted, another format)."""


class UnknownUserError(KeyError):
    """A user token the artefact does not know."""

    def __str__(self) -> str:
        return str(self.args[0])


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artefact_foreign(folder: str, entries: list[str]) -> list[str]:
    """The entries of ``folder`` that are not an artefact's: none when it holds nothing but ``meta.json`` (of
    :data:`FORMAT`'s family, with its checksum) and ``arrays.npz`` (a ``foreign`` test for
    :func:`~recbole_promptmm.files.check_output_folder`)."""
    extra = [e for e in entries if e not in (META_FILE, ARRAYS_FILE)]
    if extra:
        return extra
    meta = read_json(os.path.join(folder, META_FILE))
    ours = isinstance(meta, dict) and str(meta.get("format", "")).startswith(FORMAT.split("/")[0] + "/") \
        and "arrays_sha256" in meta
    return [] if ours else entries


def check_artefact_folder(folder: str, option: str = "--out") -> bool:
    """Whether ``folder`` holds an earlier artefact (True: export replaces it) or is absent or empty (False);
    any other folder is refused with one :class:`~recbole_promptmm.files.OutputExistsError` and left untouched."""
    return check_output_folder(folder, option, "export", "an artefact", artefact_foreign, replaced=True)


def write_artefact(folder: str, arrays: dict[str, np.ndarray], meta: dict, option: str = "--out") -> None:
    """Write an artefact folder through a temporary sibling and a rename: a failure leaves nothing half-written.
    An earlier artefact at ``folder`` is replaced atomically (:func:`replace_folder`); any other existing folder is
    refused (:func:`check_artefact_folder`) and left as it was."""
    missing = [n for n in ARRAY_NAMES if n not in arrays]
    if missing:
        raise ValueError(f"artefact arrays missing: {', '.join(missing)}")
    check_artefact_folder(folder, option)
    target = os.path.abspath(folder)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-artefact-", dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's folder is private (0700); an artefact is a plain folder
        np.savez(os.path.join(tmp, ARRAYS_FILE), **{n: arrays[n] for n in ARRAY_NAMES})
        meta = {**meta, "format": FORMAT, "arrays_sha256": _sha256(os.path.join(tmp, ARRAYS_FILE)),
                "shapes": {n: list(arrays[n].shape) for n in ARRAY_NAMES}}
        with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=True, allow_nan=False)
            f.write("\n")
        check_artefact_folder(folder, option)  # again: the folder may have changed while the model loaded
        replace_folder(tmp, target, (META_FILE, ARRAYS_FILE))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass
class Recommendation:
    """One user's top-k: external item tokens, their scores, and the fallback used (None: the model's scores)."""

    user: str
    items: list[str]
    scores: list[float]
    fallback: str | None = None

    def to_dict(self) -> dict:
        return {"user": self.user, "items": self.items, "scores": self.scores, "fallback": self.fallback}


class Catalogue:
    """Users, items, training interactions and popularity: what turns any model's scores into top-k lists of
    external tokens (training items excluded, the popularity fallback for users without any)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_tokens = arrays["user_tokens"].astype(str)
        self.item_tokens = arrays["item_tokens"].astype(str)
        self.seen_indptr = arrays["seen_indptr"].astype(np.int64)
        self.seen_indices = arrays["seen_indices"].astype(np.int64)
        self.popularity = arrays["popularity"].astype(np.float64)
        self._user_index = {t: i for i, t in enumerate(self.user_tokens)}
        self.n_items = len(self.item_tokens)
        self.cold = np.diff(self.seen_indptr) == 0  # no training interaction: the popularity fallback
        popular = np.lexsort((np.arange(self.n_items), -self.popularity))
        self._popular = popular[popular != 0]  # row 0 is RecBole's padding item

    def user_ids(self, users: Sequence[str]) -> np.ndarray:
        """Internal ids of external user tokens; unknown ones are an :class:`UnknownUserError` naming the first
        few (each cut to :data:`ECHO_LIMIT` characters), how many there are, and tokens that do exist."""
        ids = [self._user_index.get(str(token)) for token in users]
        unknown = [str(t) for t, i in zip(users, ids) if not i]  # None, or 0: RecBole's padding user
        if unknown:
            named = ", ".join(shorten(t) for t in unknown[:3])
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            examples = ", ".join(shorten(t) for t in self.user_tokens[1:4])
            raise UnknownUserError(f"unknown user {named}{more}: not in the training data of this model "
                                   f"({len(self.user_tokens) - 1} users, e.g. {examples})")
        return np.asarray(ids, dtype=np.int64)

    def capped_k(self, k: int) -> int:
        """The length of the longest list :meth:`top_k` returns for ``k``: ``k``, at most the number of items
        (a user's list is shorter when training items are excluded and fewer are left)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return min(k, self.n_items - 1)

    def seen_cells(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) of every training interaction of ``user_ids``, rows numbered as in ``user_ids``."""
        starts = self.seen_indptr[user_ids]
        lengths = self.seen_indptr[user_ids + 1] - starts
        rows = np.repeat(np.arange(len(user_ids)), lengths)
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return rows, self.seen_indices[np.repeat(starts, lengths) + within]

    def top_k(self, scores: np.ndarray, user_ids: np.ndarray, k: int = 20,
              include_seen: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Item ids [n, k] and scores [n, k] from full scores [n, I] of ``user_ids`` (changed in place), best
        first (equal scores: lower id first); the padding item and, unless ``include_seen``, training items are
        never chosen."""
        k = self.capped_k(k)
        scores[:, 0] = -np.inf
        if not include_seen:
            scores[self.seen_cells(user_ids)] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)

    def recommendations(self, users: Sequence[str], user_ids: np.ndarray, items: np.ndarray,
                        scores: np.ndarray) -> list[Recommendation]:
        """:meth:`top_k`'s result as :class:`Recommendation` objects (the popularity list for cold users)."""
        out = []
        for row, (token, u) in enumerate(zip(users, user_ids)):
            if self.cold[u]:
                popular = self._popular[:items.shape[1]]
                out.append(Recommendation(str(token), self.item_tokens[popular].tolist(),
                                          self.popularity[popular].tolist(), "popularity"))
            else:
                finite = np.isfinite(scores[row])  # fewer unseen items than k
                out.append(Recommendation(str(token), self.item_tokens[items[row][finite]].tolist(),
                                          scores[row][finite].astype(float).tolist()))
        return out


class Recommender(Catalogue):
    """Top-k recommendations from an artefact folder: ``Recommender.load(path).recommend(["u1", "u2"], k=20)``."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        super().__init__(arrays)
        self.meta = meta
        self.user_emb = np.ascontiguousarray(arrays["user"], dtype=np.float32)
        self.item_emb_t = np.ascontiguousarray(np.asarray(arrays["item"], dtype=np.float32).T)  # [d, I]

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str) -> "Recommender":
        """Read and check an artefact folder (:class:`ArtefactError` says what is wrong with it)."""
        meta_path, arrays_path = os.path.join(path, META_FILE), os.path.join(path, ARRAYS_FILE)
        if not os.path.isdir(path):
            raise ArtefactError(f"artefact {path} does not exist (export one with: recbole-promptmm export)")
        for p in (meta_path, arrays_path):
            if not os.path.isfile(p):
                raise ArtefactError(f"artefact {path} lacks {os.path.basename(p)}: not an artefact folder")
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError) as err:
            raise ArtefactError(f"artefact {path}: {META_FILE} is not valid JSON ({err})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise ArtefactError(f"artefact {path}: format {found!r}, this version reads {FORMAT!r}")
        if _sha256(arrays_path) != meta.get("arrays_sha256"):
            raise ArtefactError(f"artefact {path}: {ARRAYS_FILE} does not match the checksum in {META_FILE} "
                                "(corrupted or changed since export); export it again")
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {n: npz[n] for n in ARRAY_NAMES}
        for name, shape in meta["shapes"].items():
            if list(arrays[name].shape) != shape:
                raise ArtefactError(f"artefact {path}: {name} has shape {arrays[name].shape}, meta says {shape}")
        return cls(arrays, meta)

    # ------------------------------------------------------------------ approximate search
    def use_faiss(self, m: int = 32, ef_search: int = 128) -> "Recommender":
        """Answer :meth:`recommend` from a faiss HNSW inner-product index over the items instead of exact scores
        (large catalogues; ``pip install faiss-cpu``). Each query fetches k plus the user's training items, so
        excluding them still leaves k; recall@k against exact search is measured in ``benchmarks/serving.py``."""
        import faiss  # an optional dependency (pip install faiss-cpu)

        index = faiss.IndexHNSWFlat(self.item_emb_t.shape[0], m, faiss.METRIC_INNER_PRODUCT)
        index.add(np.ascontiguousarray(self.item_emb_t[:, 1:].T))  # without the padding item
        index.hnsw.efSearch = ef_search
        self._faiss = index
        return self

    _faiss = None

    def _faiss_top_k(self, user_ids: np.ndarray, k: int, include_seen: bool) -> tuple[np.ndarray, np.ndarray]:
        degree = np.diff(self.seen_indptr)[user_ids]
        fetch = min(self.n_items - 1, k + (0 if include_seen else int(degree.max(initial=0))))
        self._faiss.hnsw.efSearch = max(self._faiss.hnsw.efSearch, fetch)
        scores, found = self._faiss.search(np.ascontiguousarray(self.user_emb[user_ids]), fetch)
        found = found + 1  # back to item ids (row 0 is padding)
        valid = found > 0  # faiss pads with -1 when it finds fewer
        if not include_seen:
            for row, u in enumerate(user_ids):
                valid[row] &= ~np.isin(found[row], self.seen_indices[self.seen_indptr[u]:self.seen_indptr[u + 1]])
        scores = np.where(valid, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(found, order, axis=1), np.take_along_axis(scores, order, axis=1)

    # ------------------------------------------------------------------ serving
    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        """Full scores [n, I] of internal user ids."""
        return self.user_emb[user_ids] @ self.item_emb_t

    def recommend(self, users: Sequence[str], k: int = 20, include_seen: bool = False) -> list[Recommendation]:
        """Top-k for external user tokens: the model's scores, or the popularity fallback for a user with no
        training interaction."""
        ids = self.user_ids(users)
        if self._faiss is not None:
            items, scores = self._faiss_top_k(ids, self.capped_k(k), include_seen)
        else:
            items, scores = self.top_k(self.scores(ids), ids, k, include_seen)
        return self.recommendations(users, ids, items, scores)

    def health(self) -> dict:
        """What ``/health`` answers: the model, dataset and sizes."""
        return {"status": "ok", "model": self.meta.get("model"), "dataset": self.meta.get("dataset"),
                "users": int(len(self.user_tokens) - 1), "items": int(self.n_items - 1)}
