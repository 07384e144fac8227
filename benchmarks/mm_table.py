"""Rebuild docs/BENCHMARKS.md's per-dataset tables from committed result files (prints markdown).

    python benchmarks/mm_table.py [FOLDER] [--student=LABEL] [--reference=LightGCN]

Every ``*.json`` under FOLDER is one run's result (``run_recbole.py --result_json``, or a comparison's
``runs/LABEL/seedN-*/result.json`` copied as ``LABEL-seedN.json``), grouped by sub-folder and label: mean ± std (ddof
1) over seeds of validation and test Recall@20 (and a PromptMM run's teacher's). ``--student``: the summary row, the
student's test Recall@20 against the reference, its own teacher and the best other model (PromptMM runs aside) as
ratios of means with paired t-tests, and its serving MB and full-sort seconds next to the reference's.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import pandas as pd
from scipy import stats

METRIC = "recall@20"


def fmt(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    return f"{values.iloc[0]:.4f}" if len(values) == 1 else f"{values.mean():.4f} ± {values.std():.4f}"


def read_runs(folder: str) -> pd.DataFrame:
    """One row per result file: run (sub-folder/label), seed, valid and test metric, the teacher's, the cost."""
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "**", "*.json"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        teacher = result.get("teacher") or {}
        cost = result.get("cost") or {}
        label = os.path.basename(path).rsplit("-seed", 1)[0]
        sub = os.path.dirname(os.path.relpath(path, folder))
        rows.append({"run": f"{sub}/{label}" if sub else label, "model": result.get("model"), "seed": result["seed"],
                     "valid": result["best_valid_result"][METRIC], "test": result["test_result"][METRIC],
                     "teacher_valid": (teacher.get("best_valid_result") or {}).get(METRIC),
                     "teacher_test": (teacher.get("test_result") or {}).get(METRIC),
                     "serving_bytes": cost.get("serving_bytes"), "scoring_seconds": cost.get("scoring_seconds")})
    return pd.DataFrame(rows)


def runs_table(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "run": run, "seeds": ",".join(map(str, runs["seed"].sort_values())), f"valid {METRIC}": fmt(runs["valid"]),
        f"test {METRIC}": fmt(runs["test"]), f"teacher valid / test {METRIC}": "-" if runs["teacher_valid"].isna().all()
        else f"{fmt(runs['teacher_valid'])} / {fmt(runs['teacher_test'])}"}
        for run, runs in frame.groupby("run", sort=False)])


def ratio(student: pd.Series, other: pd.Series) -> str:
    """``mean(student) / mean(other)`` over the seeds both have, and the paired t-test's p (n >= 2)."""
    both = pd.concat([student, other], axis=1, join="inner").dropna()
    if both.empty:
        return "-"
    text = f"{both.iloc[:, 0].mean() / both.iloc[:, 1].mean():.2f}x"
    if len(both) >= 2:
        text += f" (p = {stats.ttest_rel(both.iloc[:, 0], both.iloc[:, 1]).pvalue:.2g})"
    return text


def summary_row(frame: pd.DataFrame, student: str, reference: str = "LightGCN") -> pd.DataFrame:
    """The dataset's summary row (see the module docstring)."""
    by_seed = {run: runs.set_index("seed") for run, runs in frame.groupby("run")}
    for label in (student, reference):
        if label not in by_seed:
            raise SystemExit(f"mm_table.py: no result files of {label!r} (found {', '.join(sorted(by_seed))})")
    mine, ref = by_seed[student], by_seed[reference]
    others = {run: runs["test"].mean() for run, runs in by_seed.items()
              if run != student and not (runs["model"] == "PromptMM").any()}
    best = max(others, key=others.get)

    def cost(runs: pd.DataFrame, column: str, scale: float, digits: int) -> str:
        values = runs[column].dropna()
        return f"{values.mean() / scale:.{digits}f}" if len(values) else "-"

    return pd.DataFrame([{
        "student": student, f"test {METRIC}": fmt(mine["test"]),
        f"/ {reference}": ratio(mine["test"], ref["test"]),
        "/ its teacher": ratio(mine["test"], mine["teacher_test"]),
        "/ best other model": f"{ratio(mine['test'], by_seed[best]['test'])}, {best}",
        f"serving MB (student / {reference})": f"{cost(mine, 'serving_bytes', 2**20, 2)} / "
                                               f"{cost(ref, 'serving_bytes', 2**20, 2)}",
        f"full-sort s (student / {reference})": f"{cost(mine, 'scoring_seconds', 1, 3)} / "
                                                f"{cost(ref, 'scoring_seconds', 1, 3)}"}])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", default="docs/benchmarks/tiktok-mm/comparison")
    p.add_argument("--student", help="a PromptMM run's label: add the summary row")
    p.add_argument("--reference", default="LightGCN")
    args = p.parse_args()
    frame = read_runs(args.folder)
    tables = [runs_table(frame)] + ([summary_row(frame, args.student, args.reference)] if args.student else [])
    print("\n\n".join(t.to_markdown(index=False, disable_numparse=True, tablefmt="github") for t in tables))


if __name__ == "__main__":
    main()
