"""The comparison tool end to end on ml-100k (real models, one epoch each, each run in its own worker process),
plus the pieces that need no training: planning, ablations, statistics, cost measurement, command line."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from recbole_promptmm.experiments import compare as comparison
from recbole_promptmm.experiments.cli import compare_main as cli_main
from recbole_promptmm.experiments.compare import compare
from recbole_promptmm.experiments.options import CompareOptions
from recbole_promptmm.experiments.plan import VOLATILE_KEYS, PlanError, config_hash, named_variants, parse_variants, variant_model
from recbole_promptmm.experiments.report import paired_test
from tests.conftest import REPO, token_features, write_toy_dataset

SEEDS = [2020, 2021]
FAST = ["--epochs=1", "--train_batch_size=4096"]
ML100K_USERS, ML100K_ITEMS = 944, 1683  # RecBole ids, padding 0 included


def _compare(out: Path, models: str, seeds=SEEDS, **kwargs):
    stream = io.StringIO()
    result = compare("ml-100k", models, str(out), seeds, overrides=FAST, cost_repeats=1, stream=stream, **kwargs)
    return result, stream.getvalue()


def plan(dataset, models, seeds, **kwargs):
    return comparison.plan(CompareOptions(dataset=dataset, models=models, seeds=",".join(map(str, seeds)), **kwargs))


def _rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """Pop and BPR x 2 seeds, one epoch each: (output folder, ComparisonResult, progress text).

    Shared by the tests of this module, so read-only: a test that runs a comparison in the folder takes
    ``first_copy``, whatever order the tests run in."""
    out = tmp_path_factory.mktemp("compare")
    result, log = _compare(out, "Pop,BPR")
    return out, result, log


@pytest.fixture
def first_copy(first, tmp_path):
    """``first`` with its folder (finished runs, reports) copied for this test alone: (copy, result, log); the
    result's run folders are those of the original."""
    out, result, log = first
    copy = tmp_path / "compare"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns(".compare.lock"))
    return copy, result, log


def test_comparison_writes_every_file(first):
    out, result, log = first
    for name in ("results.csv", "results.md", "results.json", "results.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for outcome in result.outcomes:
        run_dir = Path(outcome.run_dir)
        assert run_dir.is_relative_to(out / "runs")
        config = json.loads((run_dir / "config.json").read_text())
        assert config["seed"] == outcome.spec.seed and config["model"] == outcome.spec.model
        assert config["epochs"] == 1 and config_hash(config) == outcome.spec.config_hash
        assert list((run_dir / "log").rglob("*.log")), "RecBole's log belongs in the run folder"
        assert list((run_dir / "saved").glob("*.pth")), "checkpoints belong in the run folder"
    finished = sorted(line.split("] ", 1)[1].split(":")[0] for line in log.splitlines() if line.startswith("["))
    assert finished == ["BPR seed 2020", "BPR seed 2021", "Pop seed 2020", "Pop seed 2021"]
    assert "[4/4]" in log and all(r["node"] for r in result.rows)  # each run says which Ray node ran it


def test_table_has_one_row_per_model_and_seed_with_metrics_and_cost(first):
    out, result, _ = first
    rows = _rows(out)
    assert [(r["label"], int(r["seed"])) for r in rows] == [("Pop", 2020), ("BPR", 2020), ("Pop", 2021),
                                                            ("BPR", 2021)]
    for row in rows:
        assert row["status"] == "ok" and row["error"] == ""
        for split in ("valid", "test"):
            for metric in ("recall@10", "recall@20", "ndcg@20", "precision@50", "hit@20"):
                assert 0.0 <= float(row[f"{split}_{metric}"]) <= 1.0
        assert int(row["epochs_run"]) == 1 and int(row["best_epoch"]) == 0
        assert float(row["train_seconds_per_epoch"]) > 0 and float(row["scoring_seconds"]) > 0
        # the high-water mark after imports may already cover a tiny model's training: 0 is a valid increase
        assert int(row["peak_memory_bytes"]) >= 0 and int(row["peak_rss_bytes"]) > int(row["peak_memory_bytes"])
        assert row["serving_bytes_source"] == "tensors"
    bpr = [r for r in rows if r["label"] == "BPR"]
    for row in bpr:  # two embedding tables of 64 floats
        assert int(row["used_parameters"]) == (ML100K_USERS + ML100K_ITEMS) * 64
        assert int(row["serving_bytes"]) == 4 * int(row["used_parameters"])
    # Test metrics are those of the tested (best validation) checkpoint, as run() returned them.
    for outcome, row in zip(result.outcomes, rows):
        assert float(row["test_recall@20"]) == outcome.result["test_result"]["recall@20"]


def test_markdown_reports_mean_std_best_and_the_paired_test(first):
    out, _, _ = first
    text = (out / "results.md").read_text()
    assert re.search(r"\| Pop +\| 2/2 +\|", text) and re.search(r"\| BPR +\| 2/2 +\|", text)
    assert "±" in text and "**" in text
    assert "paired two-sided t-test over seeds (scipy.stats.ttest_rel)" in text
    assert re.search(r"\| BPR +\| recall@20 +\| 2 +\|", text) and "only 2 seeds" in text
    summary = json.loads((out / "results.json").read_text())
    assert summary["reference"] == "Pop" and summary["summary"]["BPR"]["test_recall@20"]["n"] == 2


def test_resume_reuses_finished_runs(first_copy):
    out, result, _ = first_copy

    def written() -> dict:  # result.json of each run (relative) -> when it was written
        return {p.relative_to(out): os.path.getmtime(p) for p in out.glob("runs/*/*/result.json")}

    before = written()
    again, log = _compare(out, "Pop,BPR")
    assert all(o.cached and o.status == "ok" for o in again.outcomes)
    assert log.count("ok (cached)") == 4
    assert {Path(o.run_dir).relative_to(out) / "result.json" for o in again.outcomes} == set(before)
    assert len(before) == 4 and written() == before
    assert [float(r["test_recall@20"]) for r in _rows(out)] == [o.result["test_result"]["recall@20"]
                                                                 for o in result.outcomes]


def test_changed_config_reruns_and_broken_model_is_reported_as_failed(first_copy, tmp_path):
    out, result, _ = first_copy
    config = tmp_path / "compare.yaml"
    config.write_text(
        "models:\n"
        "  Pop: {learning_rate: 0.05}\n"                          # a changed config: Pop runs again
        "  BPR-broken: {model: BPR, weight_decay: -1}\n"          # passes run's checks, crashes in torch's optimizer
    )
    again, log = _compare(out, "Pop,BPR,BPR-broken", seeds=[2020], config_files=[str(config)])
    by_label = {o.spec.label: o for o in again.outcomes}
    old_pop = next(o for o in result.outcomes if o.spec.label == "Pop" and o.spec.seed == 2020)
    assert by_label["Pop"].status == "ok" and not by_label["Pop"].cached
    assert by_label["Pop"].spec.config_hash != old_pop.spec.config_hash
    assert by_label["BPR"].status == "ok" and by_label["BPR"].cached
    broken = by_label["BPR-broken"]
    assert broken.status == "failed" and "weight_decay" in broken.error
    assert (Path(broken.run_dir) / "failure.json").is_file()
    rows = {r["label"]: r for r in _rows(out)}
    assert rows["BPR-broken"]["status"] == "failed" and "weight_decay" in rows["BPR-broken"]["error"]
    assert rows["BPR"]["status"] == "ok" and rows["Pop"]["status"] == "ok"
    text = (out / "results.md").read_text()
    assert "## Runs without a result" in text and re.search(r"\| BPR-broken +\| 0/1 +\|", text)
    assert any(line.endswith(broken.error) or broken.error in line for line in log.splitlines()
               if "BPR-broken seed 2020:" in line)
    assert json.loads((Path(broken.run_dir) / "failure.json").read_text())["traceback"]


def test_report_only_runs_nothing_and_marks_missing_runs(first_copy):
    out, _, _ = first_copy
    result, log = _compare(out, "Pop,BPR", seeds=[2020, 2021, 2022], report_only=True)
    status = {(o.spec.label, o.spec.seed): (o.status, o.cached) for o in result.outcomes}
    assert status[("BPR", 2021)] == ("ok", True) and status[("Pop", 2022)][0] == "missing"
    assert "ray:" not in log and "Trial status" not in log
    assert not any((out / "runs" / "Pop").glob("seed2022-*"))


# ----------------------------------------------------------------------------------------------- planning
def test_unknown_model_is_refused_before_anything_runs():
    """It used to fail its runs only, after Ray started (tests/test_refused_before_training.py: the console)."""
    with pytest.raises(PlanError, match="--models: unknown model 'NoSuchModel'"):
        plan("ml-100k", "BPR,NoSuchModel", [2020], overrides=FAST)


def test_protocol_must_be_shared(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("models:\n  LightGCN: {stopping_step: 7}\n")
    with pytest.raises(PlanError, match="stopping_step"):
        plan("ml-100k", "BPR,LightGCN", [2020], config_files=[str(config)])


def test_an_mmrec_layout_split_is_a_validation_split_shared_by_every_run(tmp_path):
    from recbole_promptmm.experiments.plan import PROTOCOL_KEYS, has_validation_split
    from recbole_promptmm.experiments.report import _protocol_text

    assert "mmrec_inter_file" in PROTOCOL_KEYS  # two runs on different split files are no comparison
    # RecBole's default eval_args would say "no validation set" ({'RS': [0.8, 0.2]} here); x_label has one
    assert has_validation_split({"mmrec_inter_file": "x.inter", "eval_args": {"split": {"RS": [0.8, 0.2]}}})
    text = _protocol_text({"mmrec_inter_file": "lfm2k.inter", "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}}})
    assert "split `lfm2k.inter's x_label column`" in text and "RS" not in text


@pytest.mark.parametrize("override", ["--seed=1", "--model=BPR", "--checkpoint_dir=x"])
def test_keys_the_comparison_sets_itself_are_refused(override):
    with pytest.raises(PlanError, match="sets"):
        plan("ml-100k", "BPR", [2020], overrides=[override])


def test_label_sections_layer_over_model_sections(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 7\nmodels:\n  BPR: {embedding_size: 16}\n  BPR-32: {model: BPR, embedding_size: 32}\n")
    entries, specs, _, _, warnings = plan("ml-100k", "BPR,BPR-32", [2020], config_files=[str(config)])
    resolved = {s.label: s.config for s in specs}
    assert resolved["BPR"]["embedding_size"] == 16 and resolved["BPR-32"]["embedding_size"] == 32
    assert resolved["BPR"]["epochs"] == resolved["BPR-32"]["epochs"] == 7
    assert resolved["BPR-32"]["model"] == "BPR" and warnings == []


def test_config_hash_ignores_volatile_keys_only():
    base = {"learning_rate": 0.001, "seed": 1, **{k: "a" for k in VOLATILE_KEYS}}
    assert config_hash(base) == config_hash({**base, **{k: "b" for k in VOLATILE_KEYS}})
    assert config_hash(base) != config_hash({**base, "learning_rate": 0.002})


# ---------------------------------------------------------------------------------------------- ablations
def test_ablation_keys_are_keys_of_promptmm():
    """If PromptMM renames a key, its named variants (PromptMM.variants) must follow (this test says which)."""
    from recbole_promptmm import Config

    config = Config("PromptMM", "ml-100k").final_config_dict
    for ablation in named_variants("PromptMM"):
        missing = [k for k in ablation.overrides if k not in config]
        assert not missing, f"ablation {ablation.name} sets {missing}, unknown to PromptMM"


def test_the_variant_model_is_found_through_the_class_hooks():
    assert variant_model() == "PromptMM" == variant_model(["BPR", "PromptMM"])
    assert len(named_variants("PromptMM")) == 8 and named_variants("BPR") == []


def test_ablations_become_labelled_variants_with_their_overrides():
    assert [a.name for a in parse_variants("all")] == [a.name for a in named_variants("PromptMM")]
    with pytest.raises(PlanError, match="unknown ablation"):
        parse_variants("no_such")
    custom = parse_variants("no_kd", "no_emb_kd,half:pair_kd_weight=0.5;emb_kd_weight=0")
    assert [v.label for v in custom] == ["PromptMM-no_kd", "PromptMM-no_emb_kd", "PromptMM-half"]
    assert dict(custom[2].overrides) == {"pair_kd_weight": "0.5", "emb_kd_weight": "0"} and custom[2].shares_stage_one()
    assert not parse_variants(variants="own:dropout=0.1")[0].shares_stage_one()  # a stage-1 key
    with pytest.raises(PlanError, match="key=value"):
        parse_variants(variants="bad:pair_kd_weight")
    entries, specs, _, _, _ = plan("ml-100k", "", [2020], ablations="no_prompt,no_kd", overrides=FAST)
    assert [e.label for e in entries] == ["PromptMM-no_prompt", "PromptMM-no_kd"]
    assert all(s.error is None for s in specs)
    assert specs[0].config["prompt"] is False and specs[0].config["pair_kd_weight"] > 0
    assert specs[1].config["pair_kd_weight"] == specs[1].config["list_kd_weight"] == 0.0
    assert all(s.teacher_from is None for s in specs)  # PromptMM itself is not compared: nothing to share
    _, specs, _, _, notes = plan("ml-100k", "PromptMM", [2020], ablations="no_prompt,no_kd", overrides=FAST)
    assert [s.teacher_from for s in specs] == [None, None, "PromptMM"]  # w/o prompt changes stage 1
    assert any("PromptMM-no_kd" in n and "PromptMM-no_prompt" not in n for n in notes)


def test_ablations_reuse_the_teacher_of_promptmm_with_the_same_seed(tmp_path):
    """On a toy dataset: w/o pair KD leaves stage 1 unchanged and reuses PromptMM's teacher; a second invocation
    finds both cached."""
    data = tmp_path / "data"
    np.save(write_toy_dataset(data) / "image_feat.npy", token_features(41))
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({
        "data_path": str(data), "load_col": {"inter": ["user_id", "item_id"]},
        "modality_features": {"image": "image_feat.npy"},
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["Recall", "NDCG"], "topk": [5], "valid_metric": "Recall@5", "epochs": 1,
    }))

    def run_toy():
        return compare("toy", "PromptMM", str(tmp_path / "out"), [2020], config_files=[str(config)],
                       ablations="no_pair_kd", cost_repeats=1, stream=io.StringIO())

    unrun = compare("toy", "PromptMM", str(tmp_path / "out"), [2020], config_files=[str(config)],
                    ablations="no_pair_kd", report_only=True, stream=io.StringIO())
    assert [o.status for o in unrun.outcomes] == ["missing", "missing"]  # nothing run yet: nothing failed
    result = run_toy()
    by = {o.spec.label: o for o in result.outcomes}
    assert [o.status for o in result.outcomes] == ["ok", "ok"]
    teacher = by["PromptMM"].result["teacher"]["checkpoint"]
    shared = by["PromptMM-no_pair_kd"]
    assert shared.spec.teacher_from == "PromptMM" and shared.result["config"]["teacher_checkpoint"] == teacher
    assert by["PromptMM"].result["config"]["teacher_checkpoint"] is None
    rows = {r["label"]: r for r in result.rows}
    assert rows["PromptMM"]["teacher_epochs_run"] == 1 and rows["PromptMM-no_pair_kd"]["teacher_from"] == "PromptMM"
    assert "teacher_epochs_run" not in rows["PromptMM-no_pair_kd"]
    assert rows["PromptMM-no_pair_kd"]["student_epochs_run"] == 1
    assert "reusing the stage-1 teacher of another run with the same seed" in (tmp_path / "out" / "results.md").read_text()
    again = run_toy()
    assert all(o.cached for o in again.outcomes)
    assert {o.spec.label: o.spec.config_hash for o in again.outcomes} == {
        o.spec.label: o.spec.config_hash for o in result.outcomes}


# --------------------------------------------------------------------------------------------- statistics
def test_paired_t_test_matches_a_hand_computation():
    # differences 0.2, 0.3, 0.1: mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3); df 2: p = 1 - t / sqrt(t^2 + 2)
    test = paired_test("recall@20", "A", "B", {1: 0.3, 2: 0.5, 3: 0.4, 9: 1.0}, {1: 0.1, 2: 0.2, 3: 0.3})
    t = 0.2 / (0.1 / math.sqrt(3))
    assert test["n"] == 3 and test["mean_diff"] == pytest.approx(0.2)
    assert test["t"] == pytest.approx(t) and test["p"] == pytest.approx(1 - t / math.sqrt(t * t + 2))
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t_{0.975, 2}
    assert (test["ci_low"], test["ci_high"]) == pytest.approx((0.2 - half, 0.2 + half))
    assert test["p"] > 0.05 and "little power" in test["note"]


def test_paired_test_says_when_it_cannot_test():
    one = paired_test("m", "A", "B", {1: 0.5}, {1: 0.4, 2: 0.3})
    assert one["n"] == 1 and one["p"] is None and "too few" in one["note"]
    same = paired_test("m", "A", "B", {1: 0.5, 2: 0.75}, {1: 0.25, 2: 0.5})
    assert same["p"] is None and "zero variance" in same["note"]


def _md_table(text: str, heading: str) -> list[dict]:
    """The rows of the markdown table after ``heading`` in results.md, as {column: cell}."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


MiB = 2**20
# label, seed, status, test recall@20, test ndcg@20, train s/epoch, serving bytes (valid recall@20 = test + 0.01).
# C's seed-3 run failed; its numbers (the best of every column) must count nowhere.
HAND_RUNS = [("A", 1, "ok", 0.30, 0.20, 2.0, 1 * MiB), ("B", 1, "ok", 0.20, 0.30, 1.0, 3 * MiB),
             ("C", 1, "ok", 0.10, 0.10, 3.0, 2 * MiB), ("A", 2, "ok", 0.40, 0.25, 4.0, 1 * MiB),
             ("B", 2, "ok", 0.35, 0.30, 1.0, 3 * MiB), ("C", 2, "ok", 0.30, 0.20, 5.0, 4 * MiB),
             ("A", 3, "ok", 0.50, 0.30, 6.0, 1 * MiB), ("B", 3, "ok", 0.35, 0.36, 1.0, 3 * MiB),
             ("C", 3, "failed", 0.99, 0.99, 0.1, MiB // 2)]


def test_report_figures_match_a_hand_computation(tmp_path):
    """write_comparison on hand-made runs of three labels: every mean ± std, bold best and paired test is checked
    against its value worked out by hand (arithmetic in the comments)."""
    from types import SimpleNamespace

    from recbole_promptmm.experiments.plan import Entry
    from recbole_promptmm.experiments.report import write_comparison

    rows = [{"label": label, "model": label, "seed": seed, "status": status, "error": "" if status == "ok" else "boom",
             "train_seconds_per_epoch": sec, "serving_bytes": size, "test_recall@20": rec, "test_ndcg@20": ndcg,
             "valid_recall@20": rec + 0.01} for label, seed, status, rec, ndcg, sec, size in HAND_RUNS]
    entries = [Entry(label, label, {}) for label in "ABC"]
    context = {"dataset": "hand", "seeds": [1, 2, 3], "reference": "A", "protocol": {"valid_metric": "Recall@20"},
               "overrides": [], "config_files": [], "notes": []}
    _, tests = write_comparison(rows, entries, context, str(tmp_path))
    text = (tmp_path / "results.md").read_text()
    head = {r["model"]: r for r in _md_table(text, "## Accuracy and cost")}
    # test recall@20: A (0.3, 0.4, 0.5): mean 0.4, deviations -0.1, 0, 0.1: std sqrt(0.02 / 2) = 0.1
    #   B (0.2, 0.35, 0.35): mean 0.3, deviations -0.1, 0.05, 0.05: std sqrt(0.015 / 2) = 0.0866
    #   C (0.1, 0.3; the failed 0.99 left out): mean 0.2, std sqrt(0.02 / 1) = 0.1414; best (max): A
    assert [head[m]["test recall@20"] for m in "ABC"] == [
        "**0.4000 ± 0.1000**", "0.3000 ± 0.0866", "0.2000 ± 0.1414"]
    # test ndcg@20: A (0.2, 0.25, 0.3): 0.25 ± sqrt(0.005 / 2) = 0.05; B (0.3, 0.3, 0.36): mean 0.32, deviations
    #   -0.02, -0.02, 0.04: std sqrt(0.0024 / 2) = 0.0346; C (0.1, 0.2): 0.15 ± 0.0707; best (max): B
    assert [head[m]["test ndcg@20"] for m in "ABC"] == ["0.2500 ± 0.0500", "**0.3200 ± 0.0346**", "0.1500 ± 0.0707"]
    # valid recall@20 = test + 0.01: the same std, means 0.41, 0.31, 0.21
    assert [head[m]["valid recall@20"] for m in "ABC"] == [
        "**0.4100 ± 0.1000**", "0.3100 ± 0.0866", "0.2100 ± 0.1414"]
    # train s/epoch, lower is better: A (2, 4, 6): 4 ± 2; B (1, 1, 1): 1 ± 0; C (3, 5): 4 ± sqrt(2) = 1.414; the
    #   minimum (B) is bold, not the failed run's 0.1
    assert [head[m]["train s/epoch"] for m in "ABC"] == ["4.000 ± 2.000", "**1.000 ± 0.000**", "4.000 ± 1.414"]
    # serving MB (bytes / 2^20), lower is better: A 1 ± 0; B 3 ± 0; C (2, 4): 3 ± 1.41
    assert [head[m]["serving MB"] for m in "ABC"] == ["**1.00 ± 0.00**", "3.00 ± 0.00", "3.00 ± 1.41"]
    assert [head[m]["runs ok"] for m in "ABC"] == ["3/3", "3/3", "2/3"]
    assert head["A"]["epochs"] == head["A"]["full-sort s"] == "-"  # not measured: no figure, nothing bold
    every = {r["model"]: r for r in _md_table(text, "## All test metrics")}
    assert (every["A"]["recall@20"], every["B"]["ndcg@20"]) == ("**0.4000 ± 0.1000**", "**0.3200 ± 0.0346**")
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert summary["B"]["test_recall@20"] == pytest.approx({"mean": 0.3, "std": math.sqrt(0.015 / 2), "n": 3})
    assert summary["C"]["train_seconds_per_epoch"] == pytest.approx({"mean": 4.0, "std": math.sqrt(2), "n": 2})

    # Paired t-tests of A against each, t = mean(d) / (sd(d) / sqrt(n)) with sd of ddof 1, on the seeds both have.
    by = {(t["other"], t["metric"]): t for t in tests}
    t_rows = {(r["model"], r["metric"]): r for r in _md_table(text, "## Significance")}
    # recall@20, A - B: d = 0.1, 0.05, 0.15: mean 0.1, sd sqrt((0 + 0.0025 + 0.0025) / 2) = 0.05,
    #   t = 0.1 / (0.05 / sqrt 3) = 2 sqrt 3 = 3.464; df 2: p = 1 - t / sqrt(t^2 + 2) = 1 - sqrt(12 / 14) = 0.0742;
    #   95% CI 0.1 -+ t_{0.975, 2} * 0.05 / sqrt 3, t_{0.975, 2} = 4.302653
    ab = by["B", "recall@20"]
    half = 4.302652729911275 * 0.05 / math.sqrt(3)
    assert (ab["n"], ab["mean_diff"], ab["t"], ab["p"]) == pytest.approx(
        (3, 0.1, 2 * math.sqrt(3), 1 - math.sqrt(12 / 14)))
    assert (ab["ci_low"], ab["ci_high"]) == pytest.approx((0.1 - half, 0.1 + half))
    assert t_rows["B", "recall@20"] == {"model": "B", "metric": "recall@20", "seeds": "3", "mean Δ": "+0.1000",
                                        "95% CI": "[-0.0242, +0.2242]", "t": "3.46", "p": "0.0742",
                                        "note": ab["note"]}
    # ndcg@20, A - B: d = -0.1, -0.05, -0.06: mean -0.07, deviations -0.03, 0.02, 0.01: sd sqrt(0.0014 / 2),
    #   t^2 = 0.0049 / (0.0007 / 3) = 21: t = -sqrt 21 = -4.58; p = 1 - sqrt(21 / 23) = 0.0445 < 0.05: starred
    ab = by["B", "ndcg@20"]
    assert (ab["mean_diff"], ab["t"], ab["p"]) == pytest.approx((-0.07, -math.sqrt(21), 1 - math.sqrt(21 / 23)))
    assert (t_rows["B", "ndcg@20"]["t"], t_rows["B", "ndcg@20"]["p"]) == ("-4.58", "0.0445 *")
    # recall@20, A - C on seeds 1 and 2 only (C's seed 3 failed): d = 0.2, 0.1: mean 0.15, sd sqrt(0.005) = 0.0707,
    #   t = 0.15 / (0.0707 / sqrt 2) = 3; df 1 (Cauchy): p = 1 - (2 / pi) atan 3 = 0.2048
    ac = by["C", "recall@20"]
    assert (ac["n"], ac["mean_diff"], ac["t"], ac["p"]) == pytest.approx((2, 0.15, 3.0, 1 - 2 / math.pi * math.atan(3)))
    half = 12.706204736174707 * 0.05  # t_{0.975, 1} * sd / sqrt(n)
    assert (ac["ci_low"], ac["ci_high"]) == pytest.approx((0.15 - half, 0.15 + half))
    ac_row = t_rows["C", "recall@20"]
    assert (ac_row["seeds"], ac_row["t"], ac_row["p"]) == ("2", "3.00", "0.205")
    # ndcg@20, A - C: d = 0.1, 0.05: mean 0.075, sd 0.0354, t = 0.075 / (0.0354 / sqrt 2) = 3
    assert by["C", "ndcg@20"]["t"] == pytest.approx(3.0)
    bad = _md_table(text, "## Runs without a result")
    assert [(r["label"], r["seed"], r["status"]) for r in bad] == [("C", "3", "failed")]


def test_cells_bold_the_best_by_direction_and_only_among_two_or_more():
    """_cells on a hand-made summary: higher-is-better bolds the maximum, lower-is-better the minimum, ties are all
    bold, a single figure or a column without a direction is never bold."""
    import pandas as pd

    from recbole_promptmm.experiments.report import _cells, summaries

    frame = pd.DataFrame({"label": ["x", "x", "y", "y", "z"], "status": ["ok"] * 5, "seed": [1, 2, 1, 2, 1],
                          "m": [1.0, 3.0, 2.0, 2.0, 0.5], "one": [None, None, None, None, 7.0]})
    summary = summaries(frame, ["x", "y", "z"])
    # x: (1, 3): 2 ± sqrt(2) = 1.41; y: (2, 2): 2 ± 0; z: 0.5 alone (std undefined: no "±")
    assert _cells(summary, "m", True, 1, 2) == ["**2.00 ± 1.41**", "**2.00 ± 0.00**", "0.50"]
    assert _cells(summary, "m", False, 1, 2) == ["2.00 ± 1.41", "2.00 ± 0.00", "**0.50**"]
    assert _cells(summary, "m", None, 1, 2) == ["2.00 ± 1.41", "2.00 ± 0.00", "0.50"]
    assert _cells(summary, "one", True, 1, 1) == ["-", "-", "7.0"]  # one figure: nothing to compare
    assert _cells(summary, "absent", True, 1, 1) == ["-", "-", "-"]


# --------------------------------------------------------------------------------------------------- cost
def test_cost_of_a_real_lightgcn_counts_its_graph_and_recomputes_the_forward():
    from recbole_promptmm import Config, create_dataset, data_preparation, get_model
    from recbole_promptmm.model.accounting import measure_cost

    config = Config("LightGCN", "ml-100k", config_dict={"show_progress": False})
    train, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("LightGCN")(config, train._dataset)
    model.full_sort_predict(_users(model, [1]))  # fills LightGCN's restore_* cache
    report = measure_cost(model, train._dataset, eval_batch_size=config["eval_batch_size"], topk=20, repeats=2)
    params = (ML100K_USERS + ML100K_ITEMS) * 64
    assert report.used_parameters == params
    assert report.serving_bytes > 4 * params  # embeddings plus the normalised adjacency
    assert report.scored_users == ML100K_USERS - 1 and report.users_per_batch == 128
    assert len(report.scoring_seconds_all) == 2 and report.scoring_seconds > 0
    assert model.restore_user_e is None and not model.training


def _users(model, ids):
    import torch
    from recbole.data.interaction import Interaction

    return Interaction({model.USER_ID: torch.tensor(ids)})


# ------------------------------------------------------------------------------------------- command line
def test_command_line_entry_point_and_errors(tmp_path, capsys):
    done = subprocess.run([sys.executable, "-m", "recbole_promptmm.compare", "--list_ablations"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "PromptMM-no_prompt" in done.stdout
    assert cli_main(["--models=BPR", f"--out={tmp_path}", "--seed=1"]) == 2
    assert "use --seeds" in capsys.readouterr().err
    assert cli_main(["--models=BPR", f"--out={tmp_path}", "--epochs", "1"]) == 2
    assert cli_main(["--models=BPR"]) == 2 and "--out=DIR is required" in capsys.readouterr().err
