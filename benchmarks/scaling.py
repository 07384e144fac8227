"""Scaling benchmark (docs/SCALING.md): cost against data size on synthetic data at s x TikTok (writes figures).

    OMP_NUM_THREADS=1 python benchmarks/scaling.py [--sizes=1,4,16,64] [--models=shapes,LightGCN,...] \
        [--batches=2] [--data_dir=/tmp/recbole_promptmm_scaling] [--out=docs/scaling] [--tables_from=a.json,...]

Each (size, model) is measured in a fresh one-thread subprocess (its peak RSS is that measurement's alone), on
``recbole_promptmm.data.synthetic`` data (written into ``--data_dir`` when missing):

* a training epoch in two regimes, ``fixed`` (``train_batch_size`` 2048: batches grow with the data) and ``linear``
  (``train_batches_per_epoch`` 30, TikTok's count at 2048): ``model.train()`` (per-epoch graph work) + the first
  batch (lazy per-epoch work, e.g. LATTICE's learned kNN) + ``--batches`` timed batches (negative sampling, forward,
  backward, Adam step) scaled to the remaining batches;
* full-sort evaluation: forward, scores and top-50 of every user, 128 users a batch (``accounting.score_all_users``);
* ``shapes``, per size, what any model must do at least: a bare ``user @ item.T`` + top-50 in the same batches
  (random d=64 embeddings), and the visual features' item kNN graph (k 10, ``item_graph.knn_neighbours``, with
  ``method="auto"`` where it takes one).

Times are CPU seconds of the one-thread subprocess (the work, hardly changed by other jobs on a shared machine);
results.json also holds wall seconds (``*_wall_s``). PromptMM's stage 2 runs against a randomly initialised default
teacher (cost does not depend on its weights). ``--out`` gets results.json, table.md (with each figure's
least-squares growth exponent against training interactions) and scaling.png (log-log).
"""

import argparse
import copy
import inspect
import json
import math
import os
import resource
import subprocess
import sys
import time

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _common import entry, parser, seconds  # noqa: E402
from recbole_promptmm import Config, create_dataset, data_preparation, get_model, get_trainer  # noqa: E402
from recbole_promptmm.data.synthetic import dataset_name, sizes, write_dataset  # noqa: E402
from recbole_promptmm.model.accounting import clear_output_caches, score_all_users  # noqa: E402
from recbole_promptmm.model.item_graph import knn_neighbours  # noqa: E402

MODELS = ("LightGCN", "PromptMMStudent", "LATTICE", "FREEDOM", "PromptMM-stage2")
REGIMES = {"fixed": {"train_batch_size": 2048}, "linear": {"train_batches_per_epoch": 30}}
USERS_PER_BATCH, TOPK, KNN_K, DIM = 128, 50, 10, 64
KNN_OPTIONS = {"method": "auto"} if "method" in inspect.signature(knn_neighbours).parameters else {}
FIGURES = {  # key -> (label, unit)
    "epoch_fixed_s": ("epoch, fixed batch 2048", "CPU s"), "epoch_linear_s": ("epoch, 30 batches", "CPU s"),
    "eval_s": ("full-sort eval, all users", "CPU s"), "bare_eval_s": ("bare matmul + top-k", "CPU s"),
    "eval_vs_bare": ("full-sort eval / bare", "x"), "graph_s": ("item kNN graph (visual)", "CPU s"),
    "peak_rss_mb": ("peak RSS", "MB"), "data_rss_mb": ("peak RSS above the imports", "MB")}


def clocks() -> np.ndarray:
    """(wall, CPU) seconds now: with one thread, CPU seconds are the work, little changed by other jobs on the
    machine; wall seconds are what a user waits."""
    return np.array([time.perf_counter(), time.process_time()])


def timed(fn, *args) -> tuple:
    """(``fn(*args)``, wall seconds, CPU seconds)."""
    start = clocks()
    out = fn(*args)
    wall, cpu = clocks() - start
    return out, float(wall), float(cpu)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


IMPORT_RSS_MB = peak_rss_mb()  # this module's imports (torch, RecBole, matplotlib): every subprocess holds them


def train_step(model, optimizer, interaction) -> None:
    """One step of RecBole's training loop: loss (summed when a tuple), backward, Adam step."""
    optimizer.zero_grad()
    loss = model.calculate_loss(interaction)
    (sum(loss) if isinstance(loss, tuple) else loss).backward()
    optimizer.step()


def epoch_seconds(model, optimizer, train_data, n_timed: int) -> dict:
    """Seconds of one epoch: ``model.train()`` + first batch + ``n_timed`` batches scaled to the other batches."""
    total = len(train_data)
    start = clocks()
    model.train()
    batches = iter(train_data)
    train_step(model, optimizer, next(batches))
    first = clocks() - start
    n = min(n_timed, total - 1)
    start = clocks()
    for _ in range(n):
        train_step(model, optimizer, next(batches))
    epoch = first + (clocks() - start) / max(n, 1) * (total - 1)
    return {"wall_s": float(epoch[0]), "cpu_s": float(epoch[1]), "batches": total, "timed_batches": 1 + n,
            "batch_size": train_data.step, "extrapolated": n < total - 1}


def measure_model(name: str, size: int, data_dir: str, n_timed: int) -> dict:
    """One (model, size): both training regimes, full-sort evaluation, peak RSS."""
    model_name = "PromptMM" if name == "PromptMM-stage2" else name
    result = {"model": name, "size": size}
    dataset, model, trainer = None, None, None
    for regime, values in REGIMES.items():
        config = Config(model_name, dataset_name(size), config_dict={
            "data_path": data_dir, "show_progress": False, "eval_users_per_batch": USERS_PER_BATCH, **values})
        if dataset is None:
            dataset, result["load_s"] = seconds(create_dataset, config)  # wall
        # RecBole's build() converts the dataset in place: each regime splits a copy
        train_data = data_preparation(config, copy.deepcopy(dataset))[0]
        if model is None:
            model, result["model_build_s"] = seconds(lambda: get_model(model_name)(config, train_data._dataset))
            trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
            if name == "PromptMM-stage2":
                model.set_stage("student")
                trainer._reset_stage(model.stage_parameters(), config["student_learning_rate"], 1)
            result["train_interactions"] = len(train_data._dataset)
        result[regime] = epoch_seconds(model, trainer.optimizer, train_data, n_timed)
        result[f"epoch_{regime}_s"] = result[regime]["cpu_s"]
        result[f"epoch_{regime}_wall_s"] = result[regime]["wall_s"]
        del train_data
    clear_output_caches(model)
    _, result["eval_wall_s"], result["eval_s"] = timed(score_all_users, model, dataset.uid_field, dataset.user_num,
                                                       TOPK, USERS_PER_BATCH)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


@torch.no_grad()
def measure_shapes(size: int, data_dir: str) -> dict:
    """The model-free references of one size: bare matmul + top-k, the visual features' kNN graph."""
    users, items, _ = sizes(size)
    generator = torch.Generator().manual_seed(0)
    user, item = torch.randn(users, DIM, generator=generator), torch.randn(items + 1, DIM, generator=generator)

    def bare() -> None:
        for start in range(0, users, USERS_PER_BATCH):
            torch.topk(user[start:start + USERS_PER_BATCH] @ item.T, TOPK, dim=1)

    features = np.load(os.path.join(data_dir, dataset_name(size), "visual_feat.npy")).astype(np.float32)
    x = torch.from_numpy(np.vstack([np.zeros((1, features.shape[1]), np.float32), features]))
    _, bare_wall, bare_cpu = timed(bare)
    _, graph_wall, graph_cpu = timed(lambda: knn_neighbours(x, KNN_K, **KNN_OPTIONS))
    return {"model": "shapes", "size": size, "bare_eval_s": bare_cpu, "bare_eval_wall_s": bare_wall,
            "graph_s": graph_cpu, "graph_wall_s": graph_wall,
            "graph_method": KNN_OPTIONS.get("method", "exact (knn_neighbours takes no method yet)"),
            "peak_rss_mb": peak_rss_mb()}


def measure(spec: str) -> None:
    """Subprocess entry: ``MODEL:SIZE:DATA_DIR:BATCHES``; prints one JSON line."""
    name, size, data_dir, timed = spec.split(":")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = measure_shapes(int(size), data_dir) if name == "shapes" else measure_model(name, int(size), data_dir,
                                                                                      int(timed))
    print("RESULT " + json.dumps(out), flush=True)


def run_one(name: str, size: int, args) -> dict:
    """``measure`` in a fresh interpreter (its own peak RSS); a failure is recorded, not raised."""
    start = time.perf_counter()
    spec = f"--measure={name}:{size}:{args.data_dir}:{args.batches}"
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), spec], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"model": name, "size": size, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return {**json.loads(lines[-1][len("RESULT "):]), "wall_s": time.perf_counter() - start}


def exponent(xs, ys) -> float | None:
    """Least-squares slope of log y against log x (None with fewer than two positive points)."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and y > 0]
    if len(points) < 2:
        return None
    return float(np.polyfit(*zip(*points), 1)[0])


def table(results: list[dict], sizes_: list[int]) -> str:
    """Markdown: one row per (model, figure), one column per size, then the growth exponent against training
    interactions; each model's full-sort evaluation also as a multiple of the bare matmul + top-k of its size."""
    train = {r["size"]: r["train_interactions"] for r in results if "train_interactions" in r}
    bare = {r["size"]: r["bare_eval_s"] for r in results if "bare_eval_s" in r}
    rows = ["| model | figure | " + " | ".join(f"{s}x ({train.get(s, 0):,} train)" for s in sizes_) +
            " | exponent |", "|---|---|" + "---|" * (len(sizes_) + 1)]
    for name in ("shapes", *MODELS):
        by_size = {r["size"]: r for r in results if r["model"] == name}
        for r in by_size.values():
            if "eval_s" in r and r["size"] in bare:
                r["eval_vs_bare"] = r["eval_s"] / bare[r["size"]]
            r["data_rss_mb"] = r["peak_rss_mb"] - IMPORT_RSS_MB
        for key, (label, unit) in FIGURES.items():
            values = [by_size.get(s, {}).get(key) for s in sizes_]
            if not any(v is not None for v in values):
                continue
            slope = exponent([train.get(s) for s in sizes_], values)
            cells = " | ".join("-" if v is None else f"{v:,.0f} {unit}" if v >= 100 else f"{v:.3g} {unit}"
                               for v in values)
            rows.append(f"| {name} | {label} | {cells} | {'-' if slope is None else f'{slope:.2f}'} |")
    return "\n".join(rows) + "\n"


def plot(results: list[dict], path: str) -> None:
    """Log-log against training interactions: CPU seconds (left; a colour per model, a line style per figure) and
    peak RSS above the imports (right; set by :func:`table`)."""
    train = {r["size"]: r["train_interactions"] for r in results if "train_interactions" in r}
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5.5))
    styles = {"epoch_linear_s": "-o", "epoch_fixed_s": ":x", "eval_s": "--s", "bare_eval_s": "-^", "graph_s": "-.d"}
    for colour, name in enumerate(("shapes", *MODELS)):
        rows = sorted((r for r in results if r["model"] == name and r["size"] in train), key=lambda r: r["size"])
        for key, style in styles.items():
            points = [(train[r["size"]], r[key]) for r in rows if r.get(key)]
            if points:
                ax_t.plot(*zip(*points), style, color="k" if name == "shapes" else f"C{colour}",
                          label=f"{name}: {FIGURES[key][0]}")
        points = [(train[r["size"]], r["data_rss_mb"]) for r in rows if r.get("data_rss_mb")]
        if points:
            ax_m.plot(*zip(*points), "-o", color="k" if name == "shapes" else f"C{colour}", label=name)
    for ax, ylabel in ((ax_t, "CPU seconds"), (ax_m, "peak RSS above the imports (MB)")):
        ax.set(xscale="log", yscale="log", xlabel="training interactions", ylabel=ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("recbole_promptmm on synthetic data at 1x-64x TikTok (1 torch thread)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sizes", default="1,4,16,64")
    p.add_argument("--models", default=",".join(("shapes", *MODELS)), help="shapes: the model-free references")
    p.add_argument("--batches", type=int, default=2, help="timed batches per epoch after the first")
    p.add_argument("--data_dir", default="/tmp/recbole_promptmm_scaling")
    p.add_argument("--out", default="docs/scaling")
    p.add_argument("--tables_from", help="comma-separated results.json files: no measuring, table and plot of these")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # internal: MODEL:SIZE:DATA_DIR:BATCHES, one measurement
    args = p.parse_args()
    if args.measure:
        return measure(args.measure)
    os.makedirs(args.out, exist_ok=True)
    if args.tables_from:
        results = [r for path in args.tables_from.split(",") for r in json.load(open(path))]
        return report(results, sorted({r["size"] for r in results}), args.out)
    sizes_ = [int(s) for s in args.sizes.split(",")]
    results = []
    for size in sizes_:
        if not os.path.isdir(os.path.join(args.data_dir, dataset_name(size))):
            _, generated = seconds(write_dataset, args.data_dir, size)
            print(f"{dataset_name(size)}: generated in {generated:.1f} s", flush=True)
        for name in args.models.split(","):
            results.append(run_one(name, size, args))
            print(json.dumps(results[-1]), flush=True)
            with open(os.path.join(args.out, "results.json"), "w") as f:
                json.dump(results, f, indent=1)
    report(results, sizes_, args.out)


def report(results: list[dict], sizes_: list[int], out: str) -> None:
    """``out``/table.md and ``out``/scaling.png of ``results``; the table is printed too."""
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table(results, sizes_))
    plot(results, os.path.join(out, "scaling.png"))
    print(table(results, sizes_))


if __name__ == "__main__":
    entry(main)
