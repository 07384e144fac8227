r"""Synthetic multimodal datasets at s times TikTok's size, for scaling measurements (``docs/SCALING.md``).

    python -m recbole_promptmm.data.synthetic --scale=16 --out=DIR [--seed=0]
    python run_recbole.py --model=LightGCN --dataset=synthetic-16x --data_path=DIR

**Sizes.** Scale ``s`` gives ``s`` times TikTok's 68,722 interactions (all splits) among ``sqrt(s)`` times its 9,308
users and ``sqrt(s)`` times its 6,710 items, so density falls as ``1 / sqrt(s)`` while interactions per user and
per item grow as ``sqrt(s)`` (64x: 8x the users, 8x the items, 64x the interactions).

**Model.** ``C`` clusters (taste groups) have unit centroids :math:`c_k \in R^r`. Item ``i`` belongs to cluster
:math:`k_i` (a random balanced assignment) with latent factor :math:`v_i = c_{k_i} + \sigma_v \epsilon_i`; user
``u`` has :math:`w_u = c_{k_u} + \sigma_v \epsilon_u` and a cluster preference
:math:`\pi_u = \mathrm{softmax}(\beta\, C w_u)`.

* Activity and popularity are power laws: user ``u``'s weight is :math:`\rho_u^{-a_u}` and item ``i``'s
  :math:`\rho_i^{-a_i}` for a random rank :math:`\rho`; each user gets one interaction plus a multinomial share of
  the rest in proportion to its weight.
* Each interaction of ``u`` draws a cluster from :math:`\pi_u`, then an item of that cluster in proportion to its
  popularity weight (inverse CDF over the items sorted by cluster: O(interactions x C), no users x items matrix).
  Repeated (user, item) pairs are dropped.
* Each modality ``m`` is a noisy linear map of the item factors, :math:`x_i^m = A_m v_i + \sigma_m \eta_i` with
  :math:`A_m \in R^{128 \times r}` Gaussian: items of one cluster, which the same users consume, have similar
  features (visual: :math:`\sigma = 1`, acoustic: :math:`\sigma = 2`, the weaker modality, as on TikTok).
* The split is TikTok's proportions (59,541 / 3,051 / 6,130 of 68,722) drawn per interaction, a user's first
  interaction always in train.

**Files** (``DIR/synthetic-<s>x/``): ``synthetic-<s>x.{train,valid,test}.inter`` (RecBole atomic, header
``user_id:token item_id:token``, the layout of ``tiktok.*.inter``), ``visual_feat.npy`` and ``acoustic_feat.npy``
(float16, row k = item token k), read through ``properties/dataset/synthetic.yaml`` (any ``synthetic-<s>x`` name
uses it: :func:`recbole_promptmm.config.dataset_yaml`). Same seed and scale, same bytes.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd

TIKTOK_USERS, TIKTOK_ITEMS, TIKTOK_INTERACTIONS = 9308, 6710, 68722
SPLIT_SHARES = np.array([59541, 3051, 6130]) / TIKTOK_INTERACTIONS  # train, valid, test: TikTok's fixed split
SPLITS = ("train", "valid", "test")
MODALITIES = {"visual": 1.0, "acoustic": 2.0}  # name -> feature noise sigma_m
FEATURE_DIM = 128
FACTORS, CLUSTERS = 16, 64     # r, C
FACTOR_NOISE = 0.3             # sigma_v
PREFERENCE_SHARPNESS = 5.0     # beta: about 60% of a user's interactions in its own cluster
ITEM_EXPONENT, USER_EXPONENT = 0.7, 0.7  # a_i, a_u of the power laws


def dataset_name(scale: float) -> str:
    """``synthetic-16x``; a fraction for tests (``synthetic-0.04x``)."""
    return f"synthetic-{scale:g}x"


def sizes(scale: float) -> tuple[int, int, int]:
    """(users, items, interactions) at ``scale`` times TikTok: users and items grow as sqrt(scale)."""
    root = np.sqrt(scale)
    return round(TIKTOK_USERS * root), round(TIKTOK_ITEMS * root), round(TIKTOK_INTERACTIONS * scale)


def _power_law(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Weights rank^-exponent over a random permutation of ranks 1..n, summing to 1."""
    weights = rng.permutation(n).astype(np.float64) + 1.0
    weights **= -exponent
    return weights / weights.sum()


def generate(scale: float, seed: int = 0) -> dict:
    """Interactions, split labels and modality features at ``scale`` (see the module docstring).

    Returns ``{"user": int64[N], "item": int64[N], "split": int8[N] (0/1/2), "features": {name: float16[I, 128]},
    "clusters": int64[I]}`` with users ``0..U-1`` (each has at least one interaction) and items ``0..I-1``."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_inter = sizes(scale)
    centroids = rng.standard_normal((CLUSTERS, FACTORS))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    item_cluster = rng.permutation(np.arange(n_items) % CLUSTERS)  # balanced: no cluster empty
    item_factors = centroids[item_cluster] + FACTOR_NOISE * rng.standard_normal((n_items, FACTORS)) / np.sqrt(FACTORS)
    user_factors = centroids[rng.integers(CLUSTERS, size=n_users)] + \
        FACTOR_NOISE * rng.standard_normal((n_users, FACTORS)) / np.sqrt(FACTORS)
    logits = PREFERENCE_SHARPNESS * user_factors @ centroids.T
    preference = np.exp(logits - logits.max(axis=1, keepdims=True))
    preference_cdf = np.cumsum(preference / preference.sum(axis=1, keepdims=True), axis=1)

    # users: one interaction each plus a power-law share of the rest; oversampled to make up for repeated pairs
    draws = int(n_inter * 1.4)
    per_user = 1 + rng.multinomial(draws - n_users, _power_law(rng, n_users, USER_EXPONENT))
    users = np.repeat(np.arange(n_users), per_user)
    uniform = rng.random(len(users))
    cluster = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), 1 << 20):  # blocks of 1M draws: [block, C] comparisons
        part = slice(start, start + (1 << 20))
        cluster[part] = (preference_cdf[users[part]] < uniform[part, None]).sum(axis=1)
    cluster = np.minimum(cluster, CLUSTERS - 1)  # rounding of the last CDF entry

    # items: by popularity within the drawn cluster, inverse CDF over the items sorted by cluster
    popularity = _power_law(rng, n_items, ITEM_EXPONENT)
    order = np.argsort(item_cluster, kind="stable")
    cdf = np.concatenate([[0.0], np.cumsum(popularity[order])])
    bounds = np.searchsorted(item_cluster[order], np.arange(CLUSTERS + 1))  # cluster k: bounds[k]:bounds[k+1]
    low, high = cdf[bounds[cluster]], cdf[bounds[cluster + 1]]
    position = np.searchsorted(cdf, low + rng.random(len(users)) * (high - low), side="right") - 1
    items = order[np.clip(position, bounds[cluster], bounds[cluster + 1] - 1)]

    # drop repeated pairs (the first draw of a user stays first), then draws beyond the target, never a first one
    _, first = np.unique(users * n_items + items, return_index=True)
    keep = np.sort(first)
    users, items = users[keep], items[keep]
    is_first = np.r_[True, users[1:] != users[:-1]]
    extra = np.flatnonzero(~is_first)
    surplus = len(users) - n_inter
    if surplus > 0:
        drop = rng.choice(extra, size=surplus, replace=False)
        mask = np.ones(len(users), dtype=bool)
        mask[drop] = False
        users, items, is_first = users[mask], items[mask], is_first[mask]
    split = rng.choice(3, size=len(users), p=SPLIT_SHARES).astype(np.int8)
    split[is_first] = 0

    features = {}
    for name, noise in MODALITIES.items():
        mixing = rng.standard_normal((FACTORS, FEATURE_DIM))
        x = item_factors @ mixing + noise * rng.standard_normal((n_items, FEATURE_DIM))
        features[name] = x.astype(np.float16)
    return {"user": users, "item": items, "split": split, "features": features, "clusters": item_cluster}


def write_dataset(out_dir: str, scale: float, seed: int = 0) -> str:
    """Write ``synthetic-<scale>x`` (module docstring) under ``out_dir``; returns the dataset folder."""
    name = dataset_name(scale)
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    data = generate(scale, seed)
    frame = pd.DataFrame({"user_id:token": data["user"], "item_id:token": data["item"]})
    for code, part in enumerate(SPLITS):
        frame[data["split"] == code].to_csv(os.path.join(folder, f"{name}.{part}.inter"), sep="\t", index=False)
    rows = int(data["item"].max()) + 1  # row k = item token k: rows past the largest item drawn belong to no item
    for modality, x in data["features"].items():
        np.save(os.path.join(folder, f"{modality}_feat.npy"), x[:rows])
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, required=True, help="times TikTok's interactions (1, 4, 16, 64, ...)")
    parser.add_argument("--out", required=True, help="the data_path: the dataset folder is written inside it")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = write_dataset(args.out, args.scale, args.seed)
    users, items, interactions = sizes(args.scale)
    print(f"{folder}: {users} users, {items} items, about {interactions} interactions")


if __name__ == "__main__":
    main()
