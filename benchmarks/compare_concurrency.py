"""Wall time of one comparison run one trial at a time and two at a time (prints figures; not a test).

    OMP_NUM_THREADS=1 python benchmarks/compare_concurrency.py [--models=BPR,LightGCN,NGCF] [--seeds=2020,2021]
        [--concurrent=2] [--key=value ...]   # default overrides: --epochs=10 --stopping_step=100

Runs ``python -m recbole_promptmm.compare`` on the embedded ml-100k twice, each into a fresh folder, with
``--max_concurrent=1`` and ``--max_concurrent=N``; prints both wall times (Ray's start included), their ratio, and
whether the two got the same test metrics (they must: one torch thread per run). Per run: its own wall time and
when it started and ended, in seconds after the command started (the end is its ``result.json``'s modification
time), so the gaps between runs (a new Ray worker process per run) show.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(args, concurrent: int, out: str, overrides: list[str]) -> tuple[float, pd.DataFrame]:
    cmd = [sys.executable, "-m", "recbole_promptmm.compare", f"--models={args.models}", f"--seeds={args.seeds}",
           f"--out={out}", f"--max_concurrent={concurrent}", "--cost_repeats=1", *overrides]
    start, started = time.perf_counter(), time.time()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    runs = pd.read_csv(os.path.join(out, "results.csv"))
    runs["end"] = [os.path.getmtime(os.path.join(out, d, "result.json")) - started for d in runs["run_dir"]]
    runs["start"] = runs["end"] - runs["wall_seconds"]
    return seconds, runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="BPR,LightGCN,NGCF")
    p.add_argument("--seeds", default="2020,2021")
    p.add_argument("--concurrent", type=int, default=2)
    args, overrides = p.parse_known_args()
    overrides = overrides or ["--epochs=10", "--stopping_step=100"]
    with tempfile.TemporaryDirectory(prefix="compare-concurrency-") as scratch:
        one, a = timed(args, 1, os.path.join(scratch, "one"), overrides)
        many, b = timed(args, args.concurrent, os.path.join(scratch, "many"), overrides)
    metrics = [c for c in a.columns if "@" in c]  # every validation and test metric
    print(f"comparison: {args.models} x seeds {args.seeds} on ml-100k ({len(a)} runs), {' '.join(overrides)}")
    print(f"--max_concurrent=1: {one:7.1f} s\n--max_concurrent={args.concurrent}: {many:7.1f} s")
    print(f"ratio: {many / one:.2f} (target <= 0.65); same test metrics: {a[metrics].equals(b[metrics])}")
    for (_, x), (_, y) in zip(a.iterrows(), b.iterrows()):
        print(f"  {x.label:<9} seed {x.seed}: run {x.wall_seconds:5.1f} s / {y.wall_seconds:5.1f} s (from {x.start:5.1f} "
              f"to {x.end:5.1f} s / from {y.start:5.1f} to {y.end:5.1f} s), train {x.train_seconds_per_epoch:.2f} / "
              f"{y.train_seconds_per_epoch:.2f} s per epoch")
    ordered = a.sort_values("start")
    gaps = ", ".join(f"{g:.1f}" for g in (ordered["start"].values[1:] - ordered["end"].values[:-1]))
    print(f"  the runs' own wall times add up to {a.wall_seconds.sum():.1f} s; runs one at a time start {gaps} s "
          "after the previous one ended")


if __name__ == "__main__":
    main()
