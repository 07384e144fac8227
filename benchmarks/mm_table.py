"""Rebuild docs/BENCHMARKS.md's multimodal-teacher tables from the committed result files (prints markdown).

    python benchmarks/mm_table.py [docs/benchmarks/tiktok-mm]

Every ``*.json`` under the folder is one run's result file (``run_recbole.py --result_json`` or a comparison's
``runs/<label>/seed*/result.json``, copied there without checkpoints). Runs are grouped by their label (the file's
name up to ``-seed``) and reported as mean ± std over seeds of validation and test Recall@20; a PromptMM run also
reports its teacher. Add a run by dropping its result file in the folder.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections import defaultdict

import numpy as np


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def main(folder: str = "docs/benchmarks/tiktok-mm") -> None:
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(folder, "**", "*.json"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        label = os.path.basename(path).rsplit("-seed", 1)[0]
        groups[label].append(result)
    print("| run | seeds | valid recall@20 | test recall@20 | teacher valid / test recall@20 |")
    print("|---|---|---|---|---|")
    for label, runs in groups.items():
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        valid = [r["best_valid_result"]["recall@20"] for r in runs]
        test = [r["test_result"]["recall@20"] for r in runs]
        teachers = [r["teacher"] for r in runs if r.get("teacher")]
        teacher = "-"
        if teachers:
            teacher = (f"{fmt([t['best_valid_result']['recall@20'] for t in teachers])} / "
                       f"{fmt([t['test_result']['recall@20'] for t in teachers])}")
        print(f"| {label} | {seeds} | {fmt(valid)} | {fmt(test)} | {teacher} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
