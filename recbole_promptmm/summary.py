"""The closing summary of a run: a few plain lines, built from the run's result dict (so its figures are the result
JSON's, rounded to 4 digits), that :func:`recbole_promptmm.run` logs last (console and log file).

Each stage (PromptMM: ``teacher`` and ``student``; any other model: its name) gets a line with its best epoch, how
its training ended and its seconds, and its best-validation and test figures for the valid metric and two more
metrics at the same cut-off; then the files the run wrote and one command to try next.
"""

from __future__ import annotations

import os
import re


def summary_metrics(valid_metric: str, result: dict | None) -> list[str]:
    """The valid metric (as the result names it, e.g. ``recall@20``) and the next two metrics of ``result`` at the
    same cut-off (``ndcg@20``, ``precision@20``), else the next two of any cut-off."""
    keys = list(result or {})
    first = valid_metric.lower()
    cutoff = re.search(r"@\d+$", first)
    same = [k for k in keys if k != first and cutoff and k.endswith(cutoff.group())]
    others = same + [k for k in keys if k != first and k not in same]
    return [first] + others[:2]


def _figures(result: dict | None, metrics: list[str]) -> str:
    if not result:
        return "none (no validation data)"
    return "  ".join(f"{m} {result[m]:.4f}" for m in metrics if m in result)


def display_path(path: str) -> str:
    """``path`` relative to the working directory when it lies under it (shorter lines), else as given."""
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    return path if relative.startswith("..") else relative


def _ending(timing: dict | None) -> str:
    """How a stage's training ended: early stopping (the epoch) or the epoch limit."""
    if not timing or timing.get("last_epoch") is None or timing.get("max_epochs") is None:
        return ""
    last, limit = timing["last_epoch"], timing["max_epochs"]
    if last + 1 < limit:
        return f", early stop at epoch {last} (limit {limit})"
    return f", ran to the epoch limit ({limit})"


def _stage_lines(label: str, head: str, valid: dict | None, test: dict | None, metrics: list[str]) -> list[str]:
    return [f"{label}: {head}", f"{label} best valid: {_figures(valid, metrics)}",
            f"{label} test:       {_figures(test, metrics)}"]


def summary_lines(result: dict, result_json: str | None = None) -> list[str]:
    """The summary of ``result`` (what :func:`recbole_promptmm.run` returns), one string per line."""
    metrics = summary_metrics(result["valid_metric"], result.get("test_result") or result.get("best_valid_result"))
    stages = {t.get("stage"): t for t in result.get("stages") or []}
    device = f", on {result['device']}" if result.get("device") else ""  # result files written before it: none
    lines = [f"Summary: {result['model']} on {result['dataset']}, seed {result['seed']}{device}"]
    teacher = result.get("teacher")
    trained = teacher is not None and ("teacher" in stages or teacher.get("best_epoch") is not None)
    if teacher is not None:  # PromptMM: stage 1 (teacher), stage 2 (student)
        seconds = result.get("stage_seconds") or {}
        head = (f"{teacher['model']}, best epoch {teacher['best_epoch']}{_ending(stages.get('teacher'))}, "
                f"{seconds.get('teacher', 0.0):.1f} s" if trained else
                f"{teacher['model']} loaded from {display_path(teacher['checkpoint'])} (not trained in this run)")
        lines += _stage_lines("teacher", head, teacher.get("best_valid_result"), teacher.get("test_result"), metrics)
        student = stages.get("student", {})
        head = (f"PromptMMStudent, best epoch {student.get('best_epoch')}{_ending(student)}, "
                f"{seconds.get('student', result['train_seconds']):.1f} s")
        lines += _stage_lines("student", head, result.get("best_valid_result"), result.get("test_result"), metrics)
    else:
        timing = stages.get(None, {})
        head = f"best epoch {timing.get('best_epoch')}{_ending(timing)}, {result['train_seconds']:.1f} s"
        lines += _stage_lines(result["model"], head, result.get("best_valid_result"), result.get("test_result"),
                              metrics)
    files = [("checkpoint", result.get("checkpoint"))]
    if teacher is not None:  # a given teacher_checkpoint is not this run's: its head line names it
        files += [("teacher checkpoint", teacher.get("checkpoint") if trained else None),
                  ("student file", result.get("student_checkpoint"))]
    files += [("result JSON", result_json), ("log", result.get("log_file"))]
    lines += [f"{name}: {display_path(path)}" for name, path in files if path and os.path.isfile(path)]
    serving = result.get("student_checkpoint") if teacher is not None else result.get("checkpoint")
    if serving and os.path.isfile(serving):
        lines.append(f"next: python -m recbole_promptmm recommend --checkpoint={display_path(serving)} --out=top20.csv")
    return lines
