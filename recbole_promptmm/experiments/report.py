"""A comparison's reports (docs/COMPARE.md: ``results.csv``, ``.md``, ``.json``, ``.png``) and a sweep's
``trials.csv`` / ``.md``, on pandas and scipy. Runs with the same seed share the split, so per-seed results are
paired: the paired two-sided t-test over seeds (``scipy.stats.ttest_rel``), with its 95% confidence interval.
"""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any, Mapping, Sequence

import pandas as pd
from scipy import stats

from recbole_promptmm.files import atomic_path, write_json_atomic, write_text_atomic

TEST_NAME = "paired two-sided t-test over seeds (scipy.stats.ttest_rel)"
ALPHA, RECOMMENDED_SEEDS = 0.05, 5
BASE_COLUMNS = (
    "label", "model", "variant", "seed", "status", "error", "cached", "config_hash", "best_epoch", "epochs_run",
    "train_seconds", "train_seconds_per_epoch", "valid_seconds_per_eval", "test_eval_seconds", "scoring_seconds",
    "used_parameters", "serving_bytes", "serving_bytes_source", "peak_memory_bytes", "peak_rss_bytes",
    "scoring_peak_bytes", "peak_gpu_bytes", "torch_threads", "device", "node", "wall_seconds", "cost_error",
    "run_dir", "config_file",
)
"""Columns of ``results.csv`` before the metrics (``valid_<metric>``, ``test_<metric>``), stages and extras."""
HEADLINE = (  # column, heading, higher is better (None: no best marked), scale, digits
    ("epochs_run", "epochs", None, 1, 1), ("train_seconds_per_epoch", "train s/epoch", False, 1, 3),
    ("scoring_seconds", "full-sort s", False, 1, 3), ("used_parameters", "used params", False, 1, 0),
    ("serving_bytes", "serving MB", False, 2**20, 2), ("peak_memory_bytes", "peak MB", False, 2**20, 0),
)
_RESULT_KEYS = {"model", "dataset", "seed", "num_parameters", "best_valid_score", "valid_metric", "best_valid_result",
                "test_result", "train_seconds", "eval_seconds", "checkpoint", "log_file", "config", "status", "label",
                "config_hash", "stages", "cost", "cost_error", "baseline_rss_bytes", *BASE_COLUMNS}


def run_row(outcome: Any, out_dir: str) -> dict[str, Any]:
    """One ``results.csv`` row of a comparison run (``outcome``: spec, status, cached, result, error, run_dir)."""
    spec, result = outcome.spec, outcome.result or {}
    rel = (lambda p: os.path.relpath(p, out_dir) if p else "")  # noqa: E731
    row = {"label": spec.label, "model": spec.model, "variant": spec.entry.variant.title if spec.entry.variant else "",
           "seed": spec.seed, "status": outcome.status, "error": outcome.error or "", "cached": outcome.cached,
           "config_hash": spec.config_hash or "", "run_dir": rel(outcome.run_dir),
           "config_file": rel(outcome.run_dir and os.path.join(outcome.run_dir, "config.json"))}
    if spec.teacher_from:
        row["teacher_from"] = spec.teacher_from
    if not result:
        return row
    cost, stages = result.get("cost") or {}, result.get("stages") or []
    epochs = [s for stage in stages for s in stage["train_epoch_seconds"]]
    valid = [stage["valid_seconds_per_eval"] for stage in stages if stage["valid_seconds_per_eval"] is not None]
    row.update({
        "best_epoch": stages[-1]["best_epoch"] if stages else None, "epochs_run": len(epochs),
        "train_seconds": result.get("train_seconds"), "train_seconds_per_epoch": sum(epochs) / len(epochs) if epochs else None,
        "valid_seconds_per_eval": sum(valid) / len(valid) if valid else None, "test_eval_seconds": result.get("eval_seconds"),
        **{k: cost.get(k) for k in ("scoring_seconds", "serving_bytes", "serving_bytes_source", "scoring_peak_bytes")},
        "used_parameters": cost.get("used_parameters", result.get("num_parameters")),
        "device": cost.get("device", (result.get("config") or {}).get("device")), "cost_error": result.get("cost_error", ""),
        **{k: result.get(k) for k in ("peak_memory_bytes", "peak_rss_bytes", "peak_gpu_bytes", "torch_threads", "node",
                                      "wall_seconds")},
    })
    for prefix, key in (("valid", "best_valid_result"), ("test", "test_result")):
        row.update({f"{prefix}_{m}": v for m, v in (result.get(key) or {}).items()})
    for stage in stages:
        if stage["stage"]:
            row.update({f"{stage['stage']}_{k}": stage[k] for k in ("epochs_run", "train_seconds_per_epoch", "best_epoch")})
    extras = {k: v for k, v in result.items() if k not in _RESULT_KEYS}
    if extras:
        row.update(pd.json_normalize(extras, sep="_").add_prefix("extra_").iloc[0].to_dict())
    return row


def runs_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The rows as a frame: base columns, then ``valid_*``, ``test_*`` metrics in RecBole's order, then the rest."""
    frame = pd.DataFrame(list(rows))
    metrics = [c for prefix in ("valid_", "test_") for c in frame if c.startswith(prefix) and c not in BASE_COLUMNS]
    rest = sorted(c for c in frame if c not in BASE_COLUMNS and c not in metrics)
    return frame.reindex(columns=[*BASE_COLUMNS, *metrics, *rest])


def write_frame(frame: pd.DataFrame, stem: str, markdown: bool = True) -> None:
    """``<stem>.csv`` and (``markdown``) ``<stem>.md``, each written atomically."""
    write_text_atomic(f"{stem}.csv", frame.to_csv(index=False, float_format="%.10g"))
    if markdown:
        write_text_atomic(f"{stem}.md", frame.fillna("").to_markdown(index=False, disable_numparse=True) + "\n")


def paired_test(metric: str, reference: str, other: str, ref: Mapping[int, float], oth: Mapping[int, float]) -> dict:
    """Paired two-sided t-test of ``reference`` against ``other`` over the seeds both have (Δ = reference − other)."""
    seeds = sorted(set(ref) & set(oth))
    a, b = [float(ref[s]) for s in seeds], [float(oth[s]) for s in seeds]
    diffs = pd.Series(a) - pd.Series(b)
    test = {"metric": metric, "reference": reference, "other": other, "n": len(seeds),
            "mean_diff": float(diffs.mean()) if seeds else None, "ci_low": None, "ci_high": None, "t": None,
            "p": None, "note": "" if seeds else "no seed with results of both"}
    if len(seeds) == 0:
        return test
    if len(seeds) < 2:
        return {**test, "note": f"n = 1 paired seed: too few for a test ({RECOMMENDED_SEEDS}+ advised)"}
    if diffs.std() == 0:
        return {**test, "ci_low": test["mean_diff"], "ci_high": test["mean_diff"],
                "note": "the difference is the same on every seed (zero variance): the t-test is undefined"}
    result = stats.ttest_rel(a, b)
    ci = result.confidence_interval(1 - ALPHA)
    note = f"only {len(seeds)} seeds: little power, a non-significant p says little" if len(seeds) < RECOMMENDED_SEEDS else ""
    return {**test, "ci_low": float(ci.low), "ci_high": float(ci.high), "t": float(result.statistic),
            "p": float(result.pvalue), "note": note}


def primary_metrics(valid_metric: str, frame: pd.DataFrame) -> list[str]:
    """The validation metric and NDCG at the same cut-off (when measured): the headline and the tests."""
    metric = valid_metric.lower()
    ndcg = f"ndcg@{metric.split('@', 1)[1]}" if "@" in metric else metric
    return [metric] + ([ndcg] if ndcg != metric and f"test_{ndcg}" in frame else [])


def summaries(frame: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Mean, std (ddof 1) and count of every numeric column over each label's successful runs."""
    ok = frame[frame["status"] == "ok"]
    numeric = [c for c in ok.columns if c not in ("seed", "cached") and pd.api.types.is_numeric_dtype(ok[c])]
    return ok.groupby("label")[numeric].agg(["mean", "std", "count"]).reindex(labels)


def _cells(summary: pd.DataFrame, column: str, better: bool | None, scale: float, digits: int) -> list[str]:
    if column not in summary.columns.get_level_values(0):
        return ["-"] * len(summary)
    mean, std = summary[(column, "mean")] / scale, summary[(column, "std")] / scale
    fmt = (lambda v: f"{v:,.0f}") if digits == 0 else (lambda v: f"{v:.{digits}f}")  # noqa: E731
    text = [("-" if pd.isna(m) else fmt(m) + ("" if pd.isna(s) else f" ± {fmt(s)}")) for m, s in zip(mean, std)]
    if better is not None and mean.notna().sum() >= 2:
        best = mean.max() if better else mean.min()
        text = [f"**{t}**" if m == best else t for t, m in zip(text, mean)]
    return text


def summary_table(frame: pd.DataFrame, summary: pd.DataFrame, titles: Sequence[str], columns: Sequence[tuple]) -> str:
    """Markdown: one row per label, ``mean ± std`` per column, best in bold."""
    counts = [f"{int(((frame.label == label) & (frame.status == 'ok')).sum())}/{int((frame.label == label).sum())}"
              for label in summary.index]
    table = pd.DataFrame({"model": titles, "runs ok": counts,
                          **{heading: _cells(summary, c, better, scale, digits) for c, heading, better, scale, digits in columns}})
    return table.to_markdown(index=False, disable_numparse=True)


def tests_table(tests: Sequence[Mapping[str, Any]], reference: str) -> str:
    """The significance section of ``results.md``."""
    if not tests:
        return f"No other model to test {reference} against."
    signed = lambda v: "-" if v is None else f"{v:+.4f}"  # noqa: E731
    table = pd.DataFrame([{
        "model": t["other"], "metric": t["metric"], "seeds": t["n"], "mean Δ": signed(t["mean_diff"]),
        "95% CI": "-" if t["ci_low"] is None else f"[{t['ci_low']:+.4f}, {t['ci_high']:+.4f}]",
        "t": "-" if t["t"] is None else f"{t['t']:.2f}",
        "p": "-" if t["p"] is None else f"{t['p']:.3g}" + (" *" if t["p"] < ALPHA else ""), "note": t["note"]}
        for t in tests])
    return (f"{TEST_NAME} of **{reference}** against each model, on the test metric at each run's best validation "
            f"epoch; Δ = {reference} − model, 95% CI of the mean Δ; * marks p < {ALPHA} (no correction for multiple "
            "comparisons).\n\n" + table.to_markdown(index=False, disable_numparse=True))


def _protocol_text(p: Mapping[str, Any]) -> str:
    if not p:
        return "No run could be configured."
    split = (f"{p['mmrec_inter_file']}'s x_label column" if p.get("mmrec_inter_file")
             else p.get("benchmark_filename") or (p.get("eval_args") or {}).get("split"))
    return (f"Identical for every run: data `{p.get('data_path')}`, split `{split}`, metrics {p.get('metrics')} at "
            f"{p.get('topk')}, full-sort evaluation by RecBole's evaluator; early stopping on validation "
            f"{p.get('valid_metric')} (stopping_step {p.get('stopping_step')}, eval_step {p.get('eval_step')}); test "
            "metrics read once, at each run's best validation epoch. Runs with the same seed share the split.")


def write_plot(summary: pd.DataFrame, metric: str, reference: str, path: str, title: str) -> None:
    """Four bar panels, mean ± std over seeds: test ``metric``, train s/epoch, full-sort s, serving MB (log)."""
    # matplotlib is heavy and only the plot needs it: kept off start-up (a sweep or a failed plan never loads it)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(10.0, 2.4 * len(summary)), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    colors = ["#c0392b" if label == reference else "#5d6d7e" for label in summary.index]
    panels = ((f"test_{metric}", f"test {metric} (mean ± std)", 1), ("train_seconds_per_epoch", "train s / epoch", 1),
              ("scoring_seconds", "full forward + full-sort s", 1), ("serving_bytes", "serving MB (log)", 2**20))
    for ax, (column, heading, scale) in zip(figure.subplots(1, 4), panels):
        if column in summary.columns.get_level_values(0):
            mean = (summary[(column, "mean")] / scale).fillna(0.0)
            ax.bar(range(len(mean)), mean, yerr=(summary[(column, "std")] / scale).fillna(0.0), capsize=3, color=colors)
            if scale != 1 and (mean > 0).any():
                ax.set_yscale("log")
        ax.set_xticks(range(len(summary)), list(summary.index), rotation=40, ha="right", fontsize=8)
        ax.set_title(heading, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle(title, fontsize=11)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")


def write_comparison(rows: Sequence[Mapping[str, Any]], entries: Sequence[Any], context: Mapping[str, Any],
                     out_dir: str) -> tuple[pd.DataFrame, list[dict]]:
    """Write ``results.csv``, ``results.md``, ``results.json`` and ``results.png``; returns the frame and tests.

    ``context``: dataset, seeds, reference, protocol, overrides, config_files, notes."""
    frame = runs_frame(rows)
    labels, titles, reference = [e.label for e in entries], [e.title for e in entries], context["reference"]
    metrics = primary_metrics(str(context["protocol"].get("valid_metric") or "recall@20"), frame)
    summary = summaries(frame, labels)
    ok = frame[frame.status == "ok"]
    by_seed = {(label, m): ok[ok.label == label].set_index("seed")[f"test_{m}"].dropna().to_dict()
               for label in labels for m in metrics if f"test_{m}" in ok}
    tests = [paired_test(m, reference, label, by_seed.get((reference, m), {}), by_seed.get((label, m), {}))
             for label in labels if label != reference for m in metrics]
    headline = [(f"test_{m}", f"test {m}", True, 1, 4) for m in metrics]
    headline += [(f"valid_{metrics[0]}", f"valid {metrics[0]}", True, 1, 4), *HEADLINE]
    all_test = [(c, c[5:], True, 1, 4) for c in frame.columns if c.startswith("test_") and c not in BASE_COLUMNS]
    seeds = context["seeds"]
    parts = [f"# Comparison on {context['dataset']}", "",
             f"{len(entries)} models x {len(seeds)} seeds ({', '.join(map(str, seeds))}): {len(ok)} of {len(frame)} "
             f"runs with a result. Written {_dt.datetime.now().isoformat(timespec='seconds')}.", "",
             _protocol_text(context["protocol"])]
    if context["overrides"]:
        parts += ["", "Command-line overrides (every run): `" + " ".join(context["overrides"]) + "`"]
    if context["config_files"]:
        parts += ["", "Config files: " + ", ".join(f"`{f}`" for f in context["config_files"])]
    parts += [x for note in context["notes"] for x in ("", note[0].upper() + note[1:] if note.startswith("warning:")
                                                       else f"Note: {note}")]
    parts += ["", "## Accuracy and cost (mean ± std over seeds; best in bold)", "",
              summary_table(frame, summary, titles, headline)]
    if all_test:
        parts += ["", "## All test metrics (mean ± std over seeds; best in bold)", "",
                  summary_table(frame, summary, titles, all_test)]
    parts += ["", f"## Significance: {reference} against each model", "", tests_table(tests, reference)]
    stage_columns = [c for c in frame.columns if c.endswith("_train_seconds_per_epoch") and c not in BASE_COLUMNS]
    if stage_columns:
        lines = []
        for entry in entries:
            for name in (c[: -len("_train_seconds_per_epoch")] for c in stage_columns):
                cells = [_cells(summary.loc[[entry.label]], f"{name}_{k}", None, 1, d)[0]
                         for k, d in (("epochs_run", 1), ("train_seconds_per_epoch", 3), ("best_epoch", 1))]
                if cells[0] != "-":
                    lines.append({"model": entry.title, "stage": name, "epochs": cells[0], "train s/epoch": cells[1],
                                  "best epoch (0-based)": cells[2]})
        if lines:
            parts += ["", "## Training stages (mean ± std over seeds)", "", pd.DataFrame(lines).to_markdown(index=False, disable_numparse=True)]
    bad = frame[frame.status != "ok"]
    if len(bad):
        parts += ["", "## Runs without a result", "",
                  bad[["label", "seed", "status", "error", "run_dir"]].fillna("-").to_markdown(index=False, disable_numparse=True)]
    parts += ["", "Every run's resolved config is `config.json` in its folder (`run_dir` in results.csv); its RecBole "
              "log is under `log/` there. Columns: docs/COMPARE.md."]
    write_frame(frame, os.path.join(out_dir, "results"), markdown=False)
    write_text_atomic(os.path.join(out_dir, "results.md"), "\n".join(parts) + "\n")
    plain = summary.astype(object).where(summary.notna(), None)
    write_json_atomic(os.path.join(out_dir, "results.json"), {
        **{k: context[k] for k in ("dataset", "seeds", "reference", "overrides", "config_files", "notes")},
        "protocol": dict(context["protocol"]), "test": TEST_NAME, "significance": tests,
        "summary": {label: {c: dict(zip(("mean", "std", "n"), plain.loc[label, c].tolist()))
                            for c in summary.columns.get_level_values(0).unique()} for label in summary.index}})
    write_plot(summary, metrics[0], reference, os.path.join(out_dir, "results.png"), context["dataset"])
    return frame, tests
