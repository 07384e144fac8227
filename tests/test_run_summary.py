"""A run ends with a summary (console and log) whose figures are the result JSON's; one stamp names every file of a
run; the piped console carries no progress bars, no per-epoch dumps and no known library warnings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from recbole_promptmm.summary import summary_metrics
from tests.conftest import REPO
from tests.test_bad_input import _env

TOY = ("--load_col={'inter': ['user_id', 'item_id']}",
       "--eval_args={'split': {'RS': [0.8, 0.1, 0.1]}, 'group_by': 'user', 'order': 'RO', 'mode': 'full'}",
       "--metrics=['Recall', 'NDCG', 'Hit']", "--topk=[5]", "--valid_metric=Recall@5", "--embedding_size=8",
       "--train_batch_size=64")
FIGURES = re.compile(r"^(\S+) (best valid|test):\s+(.*)$")


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """``run_recbole.py`` with output piped (as under ``| wc -l``); returns the process and its result JSON."""
    proc = subprocess.run([sys.executable, str(REPO / "run_recbole.py"), *args, f"--result_json={tmp_path / 'r.json'}"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads((tmp_path / "r.json").read_text())


def _summary(text: str) -> list[str]:
    """The lines from ``Summary:`` to the end (the console's time-stamp prefix cut from the first)."""
    lines = text.rstrip("\n").splitlines()
    start = max(i for i, line in enumerate(lines) if "Summary: " in line)
    return [lines[start][lines[start].index("Summary: "):], *lines[start + 1:]]


def _figures(summary: list[str]) -> dict:
    """{(stage, "best valid" | "test"): {metric: value}} from the summary's figure lines."""
    found = {}
    for line in summary:
        match = FIGURES.match(line)
        if match:
            pairs = match.group(3).split()
            found[match.group(1), match.group(2)] = {k: float(v) for k, v in zip(pairs[::2], pairs[1::2])}
    return found


def _assert_equal(figures: dict, expected: dict | None) -> None:
    assert figures and expected
    for metric, value in figures.items():
        assert value == round(expected[metric], 4), (metric, value, expected[metric])


def test_promptmm_summary_equals_result_json_and_names_each_stage(mm_toy, tmp_path):
    proc, result = _run(tmp_path, "--model=PromptMM", "--dataset=toy", f"--data_path={mm_toy}", *TOY,
                        "--modality_features={'image': 'image_feat.npy', 'audio': 'audio_feat.npy'}",
                        "--epochs=3")
    summary = _summary(proc.stderr)
    log = Path(result["log_file"])
    assert _summary(log.read_text()) == summary, "the log ends with the same summary"
    figures = _figures(summary)
    assert set(figures) == {("teacher", "best valid"), ("teacher", "test"), ("student", "best valid"),
                            ("student", "test")}
    _assert_equal(figures["teacher", "best valid"], result["teacher"]["best_valid_result"])
    _assert_equal(figures["teacher", "test"], result["teacher"]["test_result"])
    _assert_equal(figures["student", "best valid"], result["best_valid_result"])
    _assert_equal(figures["student", "test"], result["test_result"])
    assert list(figures["student", "test"]) == ["recall@5", "ndcg@5", "hit@5"]
    assert f"teacher: PromptMMTeacher, best epoch {result['teacher']['best_epoch']}" in summary[1]
    assert f"student: PromptMMStudent, best epoch {result['stages'][-1]['best_epoch']}" in summary[4]
    # every file of the run carries one stamp: the checkpoint's name minus "<model>-" and ".pth"
    stamp = Path(result["checkpoint"]).stem[len("PromptMM-"):]
    for path in (result["checkpoint"], result["teacher"]["checkpoint"], result["student_checkpoint"], log):
        assert stamp in Path(path).name, (stamp, path)
    assert f"student file: saved/PromptMM-{stamp}-student.pth" in summary
    assert "result JSON: r.json" in summary
    assert summary[-1] == (f"next: python -m recbole_promptmm recommend --checkpoint=saved/PromptMM-{stamp}-student.pth"
                           " --out=top20.csv")
    # a quiet console: no bars (not a terminal), no dumps, no checkpoint chatter, one line per epoch
    assert "\r" not in proc.stderr and "it/s" not in proc.stderr
    for noise in ("Loaded teacher", "Loading model structure", "Saving current", "valid result", "recall@5 : ",
                  "Trainable parameters", "Warning"):
        assert noise not in proc.stderr, noise
    assert len(proc.stderr.splitlines()) <= 2 + 2 * (1 + 3) + len(summary), proc.stderr


def test_builtin_model_summary_and_progress_bars_on_request(toy, tmp_path):
    data_path, _ = toy
    proc, result = _run(tmp_path, "--model=LightGCN", "--dataset=toy", f"--data_path={data_path}", *TOY,
                        "--epochs=2", "--show_progress=True")
    summary = _summary(proc.stderr)
    figures = _figures(summary)
    assert set(figures) == {("LightGCN", "best valid"), ("LightGCN", "test")}
    _assert_equal(figures["LightGCN", "best valid"], result["best_valid_result"])
    _assert_equal(figures["LightGCN", "test"], result["test_result"])
    assert summary[-1].startswith("next: python -m recbole_promptmm recommend --checkpoint=saved/LightGCN-")
    assert "Train" in proc.stderr and "it/s" in proc.stderr, "--show_progress=True keeps RecBole's bars"
    assert "UserWarning" not in proc.stderr, "RecBole's sparse-tensor warning is filtered"


def test_summary_metrics_are_the_valid_metric_and_two_more_at_its_cutoff():
    result = dict.fromkeys(["recall@10", "recall@20", "ndcg@10", "ndcg@20", "hit@20", "precision@20"], 0.0)
    assert summary_metrics("Recall@20", result) == ["recall@20", "ndcg@20", "hit@20"]
    assert summary_metrics("NDCG@10", result) == ["ndcg@10", "recall@10", "recall@20"]
