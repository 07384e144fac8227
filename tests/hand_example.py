"""The hand-made example shared by the maths tests (tests/test_maths_*.py): 3 users, 3 items, a few 2-d feature
files, written as a RecBole atomic dataset so that the models are built exactly as in a run.

Interactions (tokens = internal ids: they appear in the file in the order 1, 2, 3; checked in :func:`build`)::

          i1  i2  i3      user degrees  d_u = 2, 2, 1
    u1     1   1   .      item degrees  d_i = 1, 2, 2
    u2     .   1   1
    u3     .   .   1

Symmetric normalisation (LightGCN, and ``graph_norm: symmetric``), entry 1 / sqrt(d_u d_i)::

    A_ui = [[S, 1/2, 0], [0, 1/2, 1/2], [0, 0, S]]   with S = 1/sqrt(2) = 0.707107;  A_iu = A_ui^T

Feature files (row 0 is the padding item; the dataset zeroes it whatever the file holds):

* ``image.npy``: i1 = [1, 0], i2 = [4, 3], i3 = [0, 1]  (cosines: (1,2) 0.8, (2,3) 0.6, (1,3) 0)
* ``text.npy``: i1 = [1, 0], i2 = [0, 1], i3 = [0.6, 0.8]  (cosines: (1,2) 0, (1,3) 0.6, (2,3) 0.8)
* ``sparse.npy``: i1 = [0, 0], i2 = [4, 0], i3 = [0, 4]  (the teacher's example: an item without features)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from recbole.data.interaction import Interaction

S = 1 / math.sqrt(2)
R2 = math.sqrt(2)

INTERACTIONS = [(1, 1), (1, 2), (2, 2), (2, 3), (3, 3)]
FEATURES = {
    "image": [[9, 9], [1, 0], [4, 3], [0, 1]],
    "text": [[9, 9], [1, 0], [0, 1], [0.6, 0.8]],
    "sparse": [[9, 9], [0, 0], [4, 0], [0, 4]],
}


def write_tiny_dataset(root: Path) -> Path:
    """Write dataset ``tiny`` under ``root`` (the data path) and return ``root``."""
    folder = root / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token"] + [f"{u}\t{i}" for u, i in INTERACTIONS]
    (folder / "tiny.inter").write_text("\n".join(lines) + "\n")
    for name, rows in FEATURES.items():
        np.save(folder / f"{name}.npy", np.array(rows, dtype=np.float32))
    return root


def build(model_name: str, root: Path, modalities=("image",), **overrides):
    """(model, dataset) of ``model_name`` on the tiny dataset (all five interactions are the training graph)."""
    from recbole_promptmm import Config, create_dataset, get_model

    config = {
        "data_path": str(write_tiny_dataset(root)),
        "load_col": {"inter": ["user_id", "item_id"]},
        "modality_features": {m: f"{m}.npy" for m in modalities},
        "embedding_size": 2,
        "show_progress": False,
        "seed": 0,
    }
    config.update(overrides)
    config = Config(model_name, "tiny", config_dict=config)
    dataset = create_dataset(config)
    assert list(dataset.field2id_token["user_id"]) == ["[PAD]", "1", "2", "3"]
    assert list(dataset.field2id_token["item_id"]) == ["[PAD]", "1", "2", "3"]
    assert dataset.inter_matrix(form="coo").toarray()[1:, 1:].tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    return get_model(model_name)(config, dataset), dataset


def batch(users, pos, neg) -> Interaction:
    """A training batch of (user, positive, negative) triples, by internal id."""
    return Interaction({"user_id": torch.tensor(users), "item_id": torch.tensor(pos),
                        "neg_item_id": torch.tensor(neg)})


def put(parameter: torch.Tensor, values) -> None:
    """Overwrite a parameter with hand-chosen values."""
    with torch.no_grad():
        parameter.copy_(torch.tensor(values, dtype=parameter.dtype))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def bpr(diffs) -> float:
    """BPR by hand: mean of -log sigma(s+ - s-) over the given score differences."""
    return sum(-log_sigmoid(d) for d in diffs) / len(diffs)


def dot(a, b) -> float:
    return sum(x * y for x, y in zip(a, b))
