"""Tables of a comparison: ``results.csv`` (one row per run), ``results.md`` (mean ± std per model, best in
bold, paired significance tests against the reference model) and ``results.json`` (the same, for scripts)."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

from recbole_promptmm.compare.plan import Entry
from recbole_promptmm.compare.runner import CONFIG_FILE, RunOutcome
from recbole_promptmm.compare.stats import ALPHA, TEST_NAME, PairedTest, Summary, paired_test, summarize

BASE_COLUMNS: tuple[str, ...] = (
    "label", "model", "ablation", "seed", "status", "error", "cached", "config_hash",
    "best_epoch", "epochs_run", "train_seconds", "train_seconds_per_epoch", "valid_seconds_per_eval",
    "test_eval_seconds", "scoring_seconds", "used_parameters", "serving_bytes", "serving_bytes_source",
    "peak_memory_bytes", "peak_rss_bytes", "scoring_peak_bytes", "peak_gpu_bytes", "torch_threads", "device",
    "wall_seconds", "cost_error", "run_dir", "config_file",
)
"""Columns of ``results.csv`` before the metric columns (``valid_<metric>``, ``test_<metric>``) and extras."""

COLUMN_NOTES: Mapping[str, str] = {
    "best_epoch": "epoch (0-based) of the best validation score: the checkpoint that was tested",
    "epochs_run": "training epochs run, all stages together",
    "train_seconds": "wall seconds of trainer.fit (training and validation)",
    "train_seconds_per_epoch": "mean wall seconds of one training epoch (trainer._train_epoch, all stages)",
    "valid_seconds_per_eval": "mean wall seconds of one validation pass",
    "scoring_seconds": "median over 3 passes of full forward + full-sort scoring + top-k of every user "
    "(torch.no_grad, batches of eval_batch_size // n_items users, cached embeddings cleared)",
    "used_parameters": "model.used_parameters() where defined, else all parameters",
    "serving_bytes": "model.serving_bytes() where defined, else bytes of every tensor the model holds "
    "(parameters, buffers, tensor attributes such as a graph adjacency)",
    "peak_memory_bytes": "peak RSS of the run's process above its peak after imports "
    "(resource.getrusage ru_maxrss delta): data, training, evaluation and cost measurement; 0 when the run "
    "never exceeded the import peak",
    "peak_rss_bytes": "peak RSS of the run's process, imports included (ru_maxrss)",
    "scoring_peak_bytes": "GPU only: memory allocated above the pre-scoring level during one full-sort scoring "
    "pass (torch.cuda.max_memory_allocated delta); empty on CPU",
    "peak_gpu_bytes": "GPU only: torch.cuda.max_memory_allocated over the whole run",
}


@dataclass(frozen=True)
class Column:
    """A column of the markdown summary: a csv column, its heading, and which direction is best."""

    key: str
    heading: str
    higher_is_better: bool | None  # None: no best marked
    scale: float = 1.0
    digits: int = 4


def _relative(path: str | None, out_dir: str) -> str:
    return os.path.relpath(path, out_dir) if path else ""


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


_RESULT_KEYS = {
    "model", "dataset", "seed", "num_parameters", "best_valid_score", "valid_metric", "best_valid_result",
    "test_result", "train_seconds", "eval_seconds", "checkpoint", "log_file", "config", "status", "label",
    "config_hash", "stages", "cost", "cost_error", "config_differences", "baseline_rss_bytes",
    "train_epoch_seconds_total",
} | set(BASE_COLUMNS)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if _scalar(value):
        out[prefix] = value
    elif isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}_{key}", inner, out)


def _extras(result: Mapping[str, Any]) -> dict[str, Any]:
    """Entries a model's trainer added to its result (``trainer.extra_results()``: e.g. PromptMM's teacher
    results and stage seconds), flattened into ``extra_<key>_<sub key>`` columns."""
    extras: dict[str, Any] = {}
    for key, value in result.items():
        if key not in _RESULT_KEYS:
            _flatten(f"extra_{key}", value, extras)
    return extras


def _stage_columns(result: Mapping[str, Any]) -> dict[str, Any]:
    """Per-stage epoch counts, seconds per epoch and best epochs, for trainers with named stages."""
    columns: dict[str, Any] = {}
    for stage in result.get("stages") or []:
        name = stage.get("stage")
        if not name:
            continue
        seconds = stage.get("epoch_seconds") or []
        columns[f"{name}_epochs_run"] = len(seconds)
        columns[f"{name}_train_seconds_per_epoch"] = sum(seconds) / len(seconds) if seconds else None
        columns[f"{name}_best_epoch"] = stage.get("best_epoch")
    return columns


def outcome_row(outcome: RunOutcome, out_dir: str) -> dict[str, Any]:
    """One ``results.csv`` row."""
    spec = outcome.spec
    row: dict[str, Any] = {
        "label": spec.label,
        "model": spec.model,
        "ablation": spec.entry.ablation.title if spec.entry.ablation else "",
        "seed": spec.seed,
        "status": outcome.status,
        "error": outcome.error or "",
        "cached": outcome.cached,
        "config_hash": spec.config_hash or "",
        "run_dir": _relative(outcome.run_dir, out_dir),
        "config_file": _relative(os.path.join(outcome.run_dir, CONFIG_FILE), out_dir) if outcome.run_dir else "",
    }
    if spec.teacher_from:
        row["teacher_from"] = spec.teacher_from
    result = outcome.result
    if not result:
        return row
    cost = result.get("cost") or {}
    row.update({
        "best_epoch": result.get("best_epoch"),
        "epochs_run": result.get("epochs_run"),
        "train_seconds": result.get("train_seconds"),
        "train_seconds_per_epoch": result.get("train_seconds_per_epoch"),
        "valid_seconds_per_eval": result.get("valid_seconds_per_eval"),
        "test_eval_seconds": result.get("eval_seconds"),
        "scoring_seconds": cost.get("scoring_seconds"),
        "used_parameters": cost.get("used_parameters", result.get("num_parameters")),
        "serving_bytes": cost.get("serving_bytes"),
        "serving_bytes_source": cost.get("serving_bytes_source"),
        "peak_memory_bytes": result.get("peak_memory_bytes"),
        "peak_rss_bytes": result.get("peak_rss_bytes"),
        "scoring_peak_bytes": cost.get("scoring_peak_bytes"),
        "peak_gpu_bytes": result.get("peak_gpu_bytes"),
        "torch_threads": result.get("torch_threads"),
        "device": cost.get("device", (result.get("config") or {}).get("device")),
        "wall_seconds": result.get("wall_seconds"),
        "cost_error": result.get("cost_error") or "",
    })
    for prefix, key in (("valid", "best_valid_result"), ("test", "test_result")):
        for metric, value in (result.get(key) or {}).items():
            row[f"{prefix}_{metric}"] = value
    row.update(_stage_columns(result))
    row.update(_extras(result))
    return row


def csv_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Base columns, then ``valid_*`` and ``test_*`` metric columns in RecBole's order, then extras."""
    seen: list[str] = []
    for row in rows:
        seen.extend(k for k in row if k not in seen)
    metrics = [k for k in seen if k.startswith(("valid_", "test_")) and k not in BASE_COLUMNS]
    metrics = [k for k in metrics if k.startswith("valid_")] + [k for k in metrics if k.startswith("test_")]
    rest = sorted(k for k in seen if k not in BASE_COLUMNS and k not in metrics)
    return list(BASE_COLUMNS) + metrics + rest


def write_csv(rows: Sequence[Mapping[str, Any]], path: str) -> None:
    """Write ``results.csv`` (atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_columns(rows), restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    _write_text(path, buffer.getvalue())


def _write_text(path: str, text: str) -> None:
    """Write through a uniquely named temporary file, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def primary_metrics(valid_metric: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The metrics of the headline table and the tests: the validation metric and NDCG at the same cut-off."""
    metric = valid_metric.lower()
    names = [metric]
    if "@" in metric:
        ndcg = f"ndcg@{metric.split('@', 1)[1]}"
        if ndcg != metric and any(f"test_{ndcg}" in r for r in rows):
            names.append(ndcg)
    return names


def summaries(rows: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> dict[str, dict[str, Summary]]:
    """label -> column -> :class:`Summary` over the label's successful runs (numeric columns only)."""
    out: dict[str, dict[str, Summary]] = {}
    for label in labels:
        ok = [r for r in rows if r["label"] == label and r["status"] == "ok"]
        columns = {k for r in ok for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        out[label] = {k: summarize([r.get(k) for r in ok]) for k in sorted(columns)}
    return out


def significance(
    rows: Sequence[Mapping[str, Any]], labels: Sequence[str], reference: str, metrics: Sequence[str]
) -> list[PairedTest]:
    """Paired tests of ``reference`` against every other label, on ``test_<metric>`` for each metric."""
    def by_seed(label: str, column: str) -> dict[int, float]:
        return {r["seed"]: r[column] for r in rows
                if r["label"] == label and r["status"] == "ok" and r.get(column) is not None}

    tests = []
    for label in labels:
        if label == reference:
            continue
        for metric in metrics:
            column = f"test_{metric}"
            tests.append(paired_test(metric, reference, label, by_seed(reference, column), by_seed(label, column)))
    return tests


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _best_labels(stats: Mapping[str, Mapping[str, Summary]], column: Column) -> set[str]:
    means = {label: s[column.key].mean for label, s in stats.items()
             if column.key in s and s[column.key].mean is not None}
    if column.higher_is_better is None or len(means) < 2:
        return set()
    best = max(means.values()) if column.higher_is_better else min(means.values())
    return {label for label, m in means.items() if m == best}


def _format(summary: Summary | None, column: Column) -> str:
    if summary is None or summary.mean is None:
        return "-"
    scaled = Summary(summary.mean / column.scale, None if summary.std is None else summary.std / column.scale,
                     summary.n)
    if column.digits == 0:
        text = f"{scaled.mean:,.0f}" + ("" if scaled.std is None else f" ± {scaled.std:,.0f}")
        return text
    return scaled.text(column.digits)


def markdown_table(
    entries: Sequence[Entry], stats: Mapping[str, Mapping[str, Summary]], columns: Sequence[Column],
    counts: Mapping[str, str],
) -> str:
    """A markdown table: one row per entry, ``mean ± std`` per column, best in bold."""
    best = {c.key: _best_labels(stats, c) for c in columns}
    lines = ["| model | runs ok | " + " | ".join(c.heading for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for entry in entries:
        cells = []
        for column in columns:
            text = _format(stats.get(entry.label, {}).get(column.key), column)
            cells.append(f"**{text}**" if entry.label in best[column.key] else text)
        lines.append(f"| {_cell(entry.title)} | {counts[entry.label]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_columns(metrics: Sequence[str]) -> list[Column]:
    """Accuracy (test, then validation) next to cost."""
    columns = [Column(f"test_{m}", f"test {m}", True) for m in metrics]
    columns.append(Column(f"valid_{metrics[0]}", f"valid {metrics[0]}", True))
    columns += [
        Column("epochs_run", "epochs", None, digits=1),
        Column("train_seconds_per_epoch", "train s/epoch", False, digits=3),
        Column("scoring_seconds", "full-sort s", False, digits=3),
        Column("used_parameters", "used params", False, digits=0),
        Column("serving_bytes", "serving MB", False, scale=2**20, digits=2),
        Column("peak_memory_bytes", "peak MB", False, scale=2**20, digits=0),
    ]
    return columns


def _p_text(test: PairedTest) -> str:
    if test.p is None:
        return "-"
    return f"{test.p:.3g}" + (" *" if test.significant else "")


def significance_markdown(tests: Sequence[PairedTest], reference: str) -> str:
    """The significance section of ``results.md``."""
    if not tests:
        return f"No other model to test {reference} against."
    lines = [
        f"{TEST_NAME} of **{reference}** against each model, on the test metric at each run's best validation "
        f"epoch; Δ = {reference} − model, 95% CI of the mean Δ; * marks p < {ALPHA} (no correction for "
        "multiple comparisons).",
        "",
        "| model | metric | seeds | mean Δ | 95% CI | t | p | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in tests:
        delta = "-" if t.mean_diff is None else f"{t.mean_diff:+.4f}"
        ci = "-" if t.ci_low is None else f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]"
        stat = "-" if t.t is None else f"{t.t:.2f}"
        lines.append(f"| {_cell(t.other)} | {t.metric} | {t.n} | {delta} | {ci} | {stat} | {_p_text(t)} | "
                     f"{_cell(t.note)} |")
    return "\n".join(lines)


def _failures_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    bad = [r for r in rows if r["status"] != "ok"]
    if not bad:
        return ""
    lines = ["## Runs without a result", "", "| model | seed | status | error | folder |", "|---|---|---|---|---|"]
    for r in bad:
        lines.append(f"| {_cell(r['label'])} | {r['seed']} | {r['status']} | {_cell(r['error'])} | "
                     f"{_cell(r['run_dir'] or '-')} |")
    return "\n".join(lines)


def stage_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Named training stages seen in the rows (e.g. PromptMM's ``teacher`` and ``student``), in order."""
    suffix = "_train_seconds_per_epoch"
    names: list[str] = []
    for row in rows:
        for key in row:
            if key.endswith(suffix) and key != suffix[1:] and key[: -len(suffix)] not in names:
                names.append(key[: -len(suffix)])
    return names


def _stages_markdown(rows: Sequence[Mapping[str, Any]], entries: Sequence[Entry],
                     stats: Mapping[str, Mapping[str, Summary]]) -> str:
    names = stage_names(rows)
    if not names:
        return ""
    lines = ["## Training stages (mean ± std over seeds)", "",
             "Models trained in stages report `train s/epoch` above over all their epochs; per stage:", "",
             "| model | stage | epochs | train s/epoch | best epoch (0-based) |", "|---|---|---|---|---|"]
    for entry in entries:
        for name in names:
            cols = stats.get(entry.label, {})
            if f"{name}_epochs_run" not in cols:
                continue
            cells = [_format(cols.get(f"{name}_epochs_run"), Column("", "", None, digits=1)),
                     _format(cols.get(f"{name}_train_seconds_per_epoch"), Column("", "", None, digits=3)),
                     _format(cols.get(f"{name}_best_epoch"), Column("", "", None, digits=1))]
            lines.append(f"| {_cell(entry.title)} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class ReportContext:
    """What the reports say about the comparison as a whole."""

    dataset: str
    seeds: Sequence[int]
    reference: str
    protocol: Mapping[str, Any]
    overrides: Sequence[str]
    config_files: Sequence[str]
    notes: Sequence[str] = ()


def _protocol_text(context: ReportContext) -> str:
    p = context.protocol
    if not p:
        return "No run could be configured."
    split = p.get("benchmark_filename") or (p.get("eval_args") or {}).get("split")
    return (
        f"Identical for every run: data `{p.get('data_path')}`, split `{split}`, metrics {p.get('metrics')} "
        f"at {p.get('topk')}, full-sort evaluation by RecBole's evaluator; early stopping on validation "
        f"{p.get('valid_metric')} (stopping_step {p.get('stopping_step')}, eval_step {p.get('eval_step')}); "
        "test metrics read once, at each run's best validation epoch. Runs with the same seed share the split."
    )


def write_markdown(
    rows: Sequence[Mapping[str, Any]], entries: Sequence[Entry], context: ReportContext, path: str
) -> tuple[dict, list[PairedTest]]:
    """Write ``results.md``; returns the summaries and tests it shows."""
    labels = [e.label for e in entries]
    valid_metric = str(context.protocol.get("valid_metric") or "recall@20")
    metrics = primary_metrics(valid_metric, rows)
    stats = summaries(rows, labels)
    counts = {label: f"{sum(1 for r in rows if r['label'] == label and r['status'] == 'ok')}/"
                     f"{sum(1 for r in rows if r['label'] == label)}" for label in labels}
    tests = significance(rows, labels, context.reference, metrics)
    all_test = [k for k in csv_columns(rows) if k.startswith("test_") and k not in BASE_COLUMNS]
    n_ok = sum(1 for r in rows if r["status"] == "ok")
    parts = [
        f"# Comparison on {context.dataset}",
        "",
        f"{len(entries)} models x {len(context.seeds)} seeds ({', '.join(map(str, context.seeds))}): "
        f"{n_ok} of {len(rows)} runs with a result. Written {_dt.datetime.now().isoformat(timespec='seconds')}.",
        "",
        _protocol_text(context),
    ]
    if context.overrides:
        parts += ["", "Command-line overrides (every run): `" + " ".join(context.overrides) + "`"]
    if context.config_files:
        parts += ["", "Config files: " + ", ".join(f"`{f}`" for f in context.config_files)]
    for note in context.notes:
        parts += ["", note[0].upper() + note[1:] if note.startswith("warning:") else f"Note: {note}"]
    parts += [
        "", "## Accuracy and cost (mean ± std over seeds; best in bold)", "",
        markdown_table(entries, stats, headline_columns(metrics), counts),
    ]
    if all_test:
        parts += ["", "## All test metrics (mean ± std over seeds; best in bold)", "",
                  markdown_table(entries, stats, [Column(k, k[len("test_"):], True) for k in all_test], counts)]
    parts += [
        "", f"## Significance: {context.reference} against each model", "",
        significance_markdown(tests, context.reference),
    ]
    stages = _stages_markdown(rows, entries, stats)
    if stages:
        parts += ["", stages]
    failures = _failures_markdown(rows)
    if failures:
        parts += ["", failures]
    parts += ["", "## Columns", ""] + [f"- `{k}`: {v}" for k, v in COLUMN_NOTES.items()]
    parts += ["", "Every run's resolved config is `config.json` in its folder (`run_dir` in results.csv); "
              "its RecBole log is under `log/` there."]
    _write_text(path, "\n".join(parts) + "\n")
    return stats, tests


def summary_payload(
    stats: Mapping[str, Mapping[str, Summary]], tests: Iterable[PairedTest], context: ReportContext
) -> dict[str, Any]:
    """``results.json``: the summaries and tests of ``results.md`` as plain values."""
    return {
        "dataset": context.dataset,
        "seeds": list(context.seeds),
        "reference": context.reference,
        "protocol": dict(context.protocol),
        "overrides": list(context.overrides),
        "config_files": list(context.config_files),
        "test": TEST_NAME,
        "summary": {label: {k: asdict(s) for k, s in cols.items()} for label, cols in stats.items()},
        "significance": [asdict(t) for t in tests],
        "notes": list(context.notes),
    }
