"""Rebuild docs/BENCHMARKS.md's multimodal-teacher tables from the committed result files (prints markdown).

    python benchmarks/mm_table.py [docs/benchmarks/tiktok-mm/comparison]

Every ``*.json`` under the folder is one run's result file (``run_recbole.py --result_json`` or a comparison's
``runs/<label>/seed*/result.json``, copied there without checkpoints). Runs are grouped by their sub-folder and
label (the file's name up to ``-seed``; runs of different sub-folders are never pooled) and reported as mean ± std
(ddof 1) over seeds of validation and test Recall@20; a PromptMM run also reports its teacher. Add a run by
dropping its result file in the folder.
"""

from __future__ import annotations

import glob
import json
import os
import sys

import pandas as pd

METRIC = "recall@20"


def fmt(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    return f"{values.iloc[0]:.4f}" if len(values) == 1 else f"{values.mean():.4f} ± {values.std():.4f}"


def main(folder: str = "docs/benchmarks/tiktok-mm/comparison") -> None:
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "**", "*.json"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        teacher = result.get("teacher") or {}
        label = os.path.basename(path).rsplit("-seed", 1)[0]
        sub = os.path.dirname(os.path.relpath(path, folder))
        rows.append({"run": f"{sub}/{label}" if sub else label, "seed": result["seed"],
                     "valid": result["best_valid_result"][METRIC], "test": result["test_result"][METRIC],
                     "teacher_valid": (teacher.get("best_valid_result") or {}).get(METRIC),
                     "teacher_test": (teacher.get("test_result") or {}).get(METRIC)})
    table = pd.DataFrame([{
        "run": run, "seeds": ",".join(map(str, runs["seed"].sort_values())), f"valid {METRIC}": fmt(runs["valid"]),
        f"test {METRIC}": fmt(runs["test"]), f"teacher valid / test {METRIC}": "-" if runs["teacher_valid"].isna().all()
        else f"{fmt(runs['teacher_valid'])} / {fmt(runs['teacher_test'])}"}
        for run, runs in pd.DataFrame(rows).groupby("run", sort=False)])
    print(table.to_markdown(index=False, disable_numparse=True, tablefmt="github"))


if __name__ == "__main__":
    main(*sys.argv[1:])
