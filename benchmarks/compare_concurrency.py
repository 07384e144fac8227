"""Wall time of one comparison run one trial at a time and two at a time (prints figures; not a test).

    OMP_NUM_THREADS=1 python benchmarks/compare_concurrency.py [--models=BPR,LightGCN,NGCF] [--seeds=2020,2021]
        [--concurrent=2] [--key=value ...]   # default overrides: --epochs=10 --stopping_step=100

Runs ``python -m recbole_promptmm.compare`` on the embedded ml-100k twice, each into a fresh folder: with
``--max_concurrent=1`` and with ``--max_concurrent=N``, and prints both wall times (Ray's start included), their
ratio, and whether the two comparisons got the same test metrics (they must: one torch thread per run). Per run:
its own wall time and when it started and ended, in seconds after the comparison's command started (the end is
its ``result.json``'s modification time), so the gaps between runs (a new Ray worker process per run) show.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(models: str, seeds: str, concurrent: int, out: str, overrides: list[str]) -> tuple[float, list[dict]]:
    cmd = [sys.executable, "-m", "recbole_promptmm.compare", f"--models={models}", f"--seeds={seeds}", f"--out={out}",
           f"--max_concurrent={concurrent}", "--cost_repeats=1", *overrides]
    start, started = time.perf_counter(), time.time()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["end"] = os.path.getmtime(os.path.join(out, row["run_dir"], "result.json")) - started
        row["start"] = row["end"] - float(row["wall_seconds"])
    return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="BPR,LightGCN,NGCF")
    parser.add_argument("--seeds", default="2020,2021")
    parser.add_argument("--concurrent", type=int, default=2)
    args, overrides = parser.parse_known_args()
    overrides = overrides or ["--epochs=10", "--stopping_step=100"]
    with tempfile.TemporaryDirectory(prefix="compare-concurrency-") as scratch:
        one, rows_one = timed(args.models, args.seeds, 1, os.path.join(scratch, "one"), overrides)
        many, rows_many = timed(args.models, args.seeds, args.concurrent, os.path.join(scratch, "many"), overrides)
    same = [{k: v for k, v in r.items() if "@" in k} for r in rows_one] == \
           [{k: v for k, v in r.items() if "@" in k} for r in rows_many]
    runs = len(rows_one)
    print(f"comparison: {args.models} x seeds {args.seeds} on ml-100k ({runs} runs), {' '.join(overrides)}")
    print(f"--max_concurrent=1: {one:7.1f} s")
    print(f"--max_concurrent={args.concurrent}: {many:7.1f} s")
    print(f"ratio: {many / one:.2f} (target <= 0.65); same test metrics: {same}")
    for a, b in zip(rows_one, rows_many):
        print(f"  {a['label']:<9} seed {a['seed']}: run {float(a['wall_seconds']):5.1f} s / {float(b['wall_seconds']):5.1f} s "
              f"(from {a['start']:5.1f} to {a['end']:5.1f} s / from {b['start']:5.1f} to {b['end']:5.1f} s), "
              f"train {float(a['train_seconds_per_epoch']):.2f} / {float(b['train_seconds_per_epoch']):.2f} s per epoch")
    print(f"  the runs' own wall times add up to {sum(float(r['wall_seconds']) for r in rows_one):.1f} s; runs one at "
          f"a time start {_gaps(rows_one)} s after the previous one ended")


def _gaps(rows: list[dict]) -> str:
    ordered = sorted(rows, key=lambda r: r["start"])
    return ", ".join(f"{b['start'] - a['end']:.1f}" for a, b in zip(ordered, ordered[1:]))


if __name__ == "__main__":
    main()
