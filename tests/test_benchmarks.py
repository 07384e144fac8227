"""The analysis scripts of benchmarks/ on a tiny dataset: they run, resume, report failures, and agree with RecBole."""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from recbole_promptmm import run
from recbole_promptmm.compare import compare
from recbole_promptmm.experiments.plan import PlanError
from tests.conftest import REPO

SEED = 7


@pytest.fixture
def toy_files(mm_toy, tmp_path):
    """(config yaml, teacher checkpoint glob with {seed}, student-alone checkpoint) of a tiny two-modality dataset."""
    config = {
        "data_path": str(mm_toy), "load_col": {"inter": ["user_id", "item_id"]},
        "modality_features": {"image": "image_feat.npy", "audio": "audio_feat.npy"},
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["Recall", "NDCG"], "topk": [20], "valid_metric": "Recall@20",
        "embedding_size": 8, "epochs": 1, "train_batch_size": 64, "show_progress": False, "seed": SEED,
    }
    config_file = tmp_path / "toy.yaml"
    config_file.write_text(yaml.safe_dump(config))
    teacher = run("PromptMMTeacher", "toy", config_file_list=[str(config_file)])
    target = tmp_path / "teachers" / f"seed{SEED}"
    target.mkdir(parents=True)
    shutil.copy(teacher["checkpoint"], target / "T-teacher.pth")
    student = run("PromptMMStudent", "toy", config_file_list=[str(config_file)])
    return config_file, str(tmp_path / "teachers" / "seed{seed}" / "*-teacher.pth"), student["checkpoint"]


def test_variants_against_the_teachers_of_an_earlier_run(toy_files, tmp_path):
    """compare --variants with teacher_checkpoint as a {seed} pattern: every run distils the given teacher of its
    seed (stage 2 only), a broken variant fails alone, and a second invocation is served from the cache."""
    config_file, teachers, _ = toy_files
    shared = yaml.safe_load(config_file.read_text())
    shared.pop("seed")  # the comparison sets it
    config_file = tmp_path / "compare.yaml"
    config_file.write_text(yaml.safe_dump(shared))

    def variants(extra=""):
        return compare("toy", "PromptMM", str(tmp_path / "v"), [SEED], config_files=[str(config_file)],
                       variants="no_pair_kd,half:pair_kd_weight=0.5;emb_kd_weight=0" + extra,
                       overrides=[f"--teacher_checkpoint={teachers}"], cost_repeats=1, stream=io.StringIO())

    with pytest.raises(PlanError, match="PromptMM-bad: .*kd_mode"):  # refused before any run starts
        variants(",bad:kd_mode=nonsense")
    assert not (tmp_path / "v").exists()
    result = variants()
    by = {o.spec.label: o for o in result.outcomes}
    assert [o.status for o in result.outcomes] == ["ok", "ok", "ok"]
    teacher_file = teachers.format(seed=SEED).replace("*", "T")
    for label in ("PromptMM", "PromptMM-no_pair_kd", "PromptMM-half"):
        res = by[label].result
        assert res["teacher"]["checkpoint"] == teacher_file and res["teacher"]["best_epoch"] is None
        assert by[label].spec.teacher_from is None  # a given teacher: nothing to share
    config = {label: by[label].result["config"] for label in by if by[label].result}
    assert config["PromptMM"]["pair_kd_weight"] == 1.0 and config["PromptMM-no_pair_kd"]["pair_kd_weight"] == 0.0
    assert (config["PromptMM-half"]["pair_kd_weight"], config["PromptMM-half"]["emb_kd_weight"]) == (0.5, 0.0)
    table = (tmp_path / "v" / "results.md").read_text()
    assert f"{by['PromptMM-half'].result['test_result']['recall@20']:.4f}" in table
    assert [o.cached for o in variants().outcomes] == [True, True, True]


def _markdown_rows(text: str) -> list[list[str]]:
    """The body rows of the one markdown table in ``text`` (header and separator left out), cells stripped."""
    lines = [line for line in text.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_teacher_headroom_ensemble_ends_equal_each_model(toy_files):
    _, teachers, student = toy_files
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "teacher_headroom.py"), f"--teacher={teachers.format(seed=SEED)}",
         f"--other={student}"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    values = {(row[0], row[1]): float(row[2]) for row in _markdown_rows(out.stdout)}
    # a = 0 scores with the other model only, a = 1 with the teacher only (standardising keeps each ranking)
    assert values["valid", "ensemble a=0.0 (a: teacher weight)"] == values["valid", "PromptMMStudent alone"]
    assert values["valid", "ensemble a=1.0 (a: teacher weight)"] == values["valid", "teacher alone"]
    assert 0.0 <= values["test", "top-20 overlap (Jaccard)"] <= 1.0


@pytest.mark.parametrize("script, args", [("cold_items.py", ["--checkpoints=BAD"]),
                                          ("teacher_headroom.py", ["--teacher=BAD", "--other=BAD"]),
                                          ("teacher_headroom.py", ["--teacher=GOOD", "--other=BAD"])])
def test_benchmark_scripts_refuse_a_bad_checkpoint_before_any_data(request, tmp_path, script, args):
    """A file that is no checkpoint: one line naming the option, exit status 2, nothing written; refused before
    any data loads (the good checkpoint's data folder is gone: loading it first would fail otherwise)."""
    bad = tmp_path / "run" / "random.pth"
    bad.parent.mkdir()
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    if "--teacher=GOOD" in args:
        teachers = request.getfixturevalue("toy_files")[1]
        shutil.rmtree(request.getfixturevalue("mm_toy"))
        args = [a.replace("GOOD", teachers.format(seed=SEED)) for a in args]
    args = [a.replace("BAD", str(bad)) for a in args]
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                         cwd=bad.parent, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 2, out.stderr
    option = next(a for a in args if str(bad) in a).split("=")[0]
    assert out.stderr.strip().splitlines() == [
        f"{script}: error: {option} {bad} is not a torch checkpoint: 4096 bytes of binary data starting "
        + " ".join(f"{b:02x}" for b in bad.read_bytes()[:8])]
    assert [p.name for p in bad.parent.iterdir()] == ["random.pth"]


def test_serving_artefact_ranks_as_the_model_and_serves(toy_files):
    """serving.py end to end on the toy student and teacher: the artefact's top-20 lists are RecBole's
    full_sort_topk and the checkpoint model's, for every user; serve, in its own process without torch, answers
    every request of each load as the artefact does, and stops on Ctrl-C."""
    _, teachers, student = toy_files
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "serving.py"), f"--student={student}",
         f"--teacher={teachers.format(seed=SEED).replace('*', 'T')}", "--requests=16", "--large_items=0"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert re.search(r"identical to RecBole's full_sort_topk: 1\.0000 of the \d+ validation users", out.stdout)
    assert re.search(r"to the checkpoint's model .*: 1\.0000 of all 40 users", out.stdout)
    assert re.search(r"teacher PromptMMTeacher: serving state [\d.]+ MiB", out.stdout)
    for clients, connections in ((1, "keep-alive"), (8, "keep-alive"), (16, "new connection per request"),
                                 (16, "keep-alive")):
        assert f"HTTP {clients} client(s), {connections}: 16 requests, 0 errors" in out.stdout
    assert "torch not loaded" in out.stdout
    assert "last line 'recbole-promptmm serve: stopped (Ctrl-C)'" in out.stdout


def test_cold_items_counts_cold_users_and_matches_recboles_recall(tmp_path):
    """A fixed split whose test holds items without any training interaction: the script finds exactly the users
    holding one, and its all-users Recall@20 is RecBole's."""
    folder = tmp_path / "data" / "cold"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    header = "user_id:token\titem_id:token\n"
    train, valid, test = [header], [header], [header]
    for u in range(1, 31):
        items = rng.choice(np.arange(1, 41), size=8, replace=False)
        train += [f"{u}\t{i}\n" for i in items[:6]]
        valid.append(f"{u}\t{items[6]}\n")
        # users 1-5 hold a test item (41..45) that nobody has in training
        test.append(f"{u}\t{40 + u if u <= 5 else items[7]}\n")
    for name, lines in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"cold.{name}.inter").write_text("".join(lines))
    np.save(folder / "image_feat.npy", rng.normal(size=(46, 6)).astype(np.float32))
    config = {"data_path": str(tmp_path / "data"), "load_col": {"inter": ["user_id", "item_id"]},
              "benchmark_filename": ["train", "valid", "test"], "modality_features": {"image": "image_feat.npy"},
              "eval_args": {"group_by": "user", "order": "RO", "mode": "full"},
              "metrics": ["Recall"], "topk": [20], "valid_metric": "Recall@20",
              "embedding_size": 8, "epochs": 2, "train_batch_size": 64, "show_progress": False}
    config_file = tmp_path / "cold.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = run("LATTICE", "cold", config_file_list=[str(config_file)])
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "cold_items.py"), f"--checkpoints={result['checkpoint']}"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("LATTICE"))
    all_users, cold, count = re.match(r"LATTICE\s+([\d.]+) ([\d.na]+) \(cold users: (\d+)\)", line).groups()
    assert int(count) == 5
    assert float(all_users) == pytest.approx(result["test_result"]["recall@20"], abs=5e-5)
    assert 0.0 <= float(cold) <= 1.0


def _benchmark(name: str):
    """A script of benchmarks/ as a module (they import their helpers as ``_common``)."""
    folder = str(REPO / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


class _Batch:
    """What full_sort_predict reads of a RecBole evaluation batch: its users and their count."""

    def __init__(self, users):
        self.users, self.length = users, len(users)


class _FixedScores:
    """A "model" whose full-sort scores are a fixed [users, items] table (item 0: padding)."""

    def __init__(self, table):
        self.table = torch.tensor(table, dtype=torch.float32)

    def full_sort_predict(self, batch):
        return self.table[batch.users].flatten()


# Items 1..5 (0 is padding, scored highest so that a missing mask shows), top-2 lists, two evaluation batches:
# (batch, history (row, item) pairs masked, positive (row, item) pairs). Item 5 has no training interaction.
HAND_BATCHES = [(_Batch([0, 1]), ([0], [1]), ([0, 0, 1], [3, 5, 5])), (_Batch([2]), ([0], [4]), ([0, 0], [1, 2]))]
FIRST = [[9, 5, 4, 3, 2, 1],   # user 0: item 1 masked -> top-2 {2, 3}
         [9, 1, 2, 3, 4, 5],   # user 1: top-2 {5, 4}
         [9, 3, 1, 2, 5, 4]]   # user 2: item 4 masked -> top-2 {5, 1}
SECOND = [[9, 5, 1, 2, 4, 3],  # user 0: item 1 masked -> top-2 {4, 5}
          [9, 1, 2, 5, 3, 4],  # user 1: top-2 {3, 5}
          [9, 5, 1, 2, 6, 4]]  # user 2: item 4 masked -> top-2 {1, 5}


def _catalogue(cold=()):
    """The package's Catalogue of the hand example: users 0..2, items 0..5, no training item, ``cold`` items
    without any training interaction (the padding item 0 has none either)."""
    from recbole_promptmm.serving.artefact import Catalogue

    popularity = np.ones(6)
    popularity[[0, *cold]] = 0
    return Catalogue({"user_tokens": np.arange(3), "item_tokens": np.arange(6), "seen_indptr": np.zeros(4, int),
                      "seen_indices": np.zeros(0, int), "popularity": popularity})


def _hand_data():
    return [(batch, tuple(torch.tensor(x) for x in history), *(torch.tensor(x) for x in positives))
            for batch, history, positives in HAND_BATCHES]


def test_cold_recall_matches_a_hand_computation():
    """cold_items.cold_recall: Recall@k per user (hits / held-out items), averaged over all users and over those
    holding a cold item, with history and padding masked, over several batches."""
    cold_recall = _benchmark("cold_items").cold_recall
    # user 0: held out {3, 5}, top-2 {2, 3}: 1/2 (cold: holds 5); user 1: {5} in {5, 4}: 1 (cold);
    # user 2: {1, 2} against {5, 1}: 1/2 (not cold). All: (0.5 + 1 + 0.5) / 3 = 2/3; cold: (0.5 + 1) / 2 = 0.75
    # (unmasked history would give user 0 {1, 2}: 0 and user 2 {4, 5}: 0; a mean over held-out items 3/5)
    all_users, cold_users, count = cold_recall(_FixedScores(FIRST), _hand_data(), _catalogue(cold=[5]), k=2)
    assert (all_users, cold_users, count) == pytest.approx((2 / 3, 0.75, 2))
    assert cold_recall(_FixedScores(FIRST), _hand_data(), _catalogue(), k=2)[1:] == (
        pytest.approx(float("nan"), nan_ok=True), 0)  # no cold item: no cold figure


def test_top_overlap_is_the_mean_jaccard_of_the_top_lists():
    """teacher_headroom.top_overlap: |A ∩ B| / |A ∪ B| = i / (2k - i) of the two top-k lists per user, averaged."""
    top_overlap = _benchmark("teacher_headroom").top_overlap
    # user 0: {2, 3} vs {4, 5}: 0 / 4 = 0; user 1: {5, 4} vs {3, 5}: 1 / 3; user 2: {5, 1} vs {1, 5}: 2 / 2 = 1;
    # mean (0 + 1/3 + 1) / 3 = 4/9 (i / k instead would give 1/2; unmasked history: user 0 {1, 2} vs {1, 4} and
    # user 2 {4, 5} vs {4, 1}, 1/3 each: 1/3)
    first, second, catalogue = _FixedScores(FIRST), _FixedScores(SECOND), _catalogue()
    assert top_overlap(first, second, _hand_data(), catalogue, k=2) == pytest.approx(4 / 9)
    assert top_overlap(first, first, _hand_data(), catalogue, k=2) == pytest.approx(1.0)
    assert top_overlap(first, first, [], catalogue, k=2) == 0.0  # no user: 0, not a division by 0


def test_mm_table_pools_seeds_of_one_folder_only(tmp_path):
    """Mean ± std (ddof 1) over the seeds of one label in one sub-folder; another sub-folder is its own row."""
    def result(seed, valid, test, teacher=None):
        r = {"seed": seed, "best_valid_result": {"recall@20": valid}, "test_result": {"recall@20": test}}
        if teacher:
            r["teacher"] = {"best_valid_result": {"recall@20": teacher[0]}, "test_result": {"recall@20": teacher[1]}}
        return r

    files = {"a/X-seed1.json": result(1, 0.1, 0.3, (0.5, 0.6)), "a/X-seed2.json": result(2, 0.2, 0.5, (0.7, 0.6)),
             "b/X-seed1.json": result(1, 0.9, 0.9)}
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(json.dumps(content))
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "mm_table.py"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()[2:]]
    # std of (0.1, 0.2) with ddof 1 is 0.0707; of (0.3, 0.5) 0.1414; of (0.5, 0.7) 0.1414; of (0.6, 0.6) 0
    assert rows == [["a/X", "1,2", "0.1500 ± 0.0707", "0.4000 ± 0.1414", "0.6000 ± 0.1414 / 0.6000 ± 0.0000"],
                    ["b/X", "1", "0.9000", "0.9000", "-"]]


def test_mm_table_summary_row_by_hand(tmp_path):
    """Student / LightGCN, / its teacher and / best other model: ratios of means and paired t-tests by hand."""
    def result(model, seed, test, teacher=None, serving=None):
        r = {"model": model, "seed": seed, "best_valid_result": {"recall@20": test},
             "test_result": {"recall@20": test}, "cost": {"serving_bytes": serving, "scoring_seconds": 0.5}}
        if teacher is not None:
            r["teacher"] = {"best_valid_result": {"recall@20": teacher}, "test_result": {"recall@20": teacher}}
        return r

    runs = {"LightGCN": [result("LightGCN", s, t, serving=2 * 2**20) for s, t in ((1, 0.1), (2, 0.2), (3, 0.3))],
            "S": [result("PromptMM", s, t, teacher=te, serving=2**20)
                  for s, t, te in ((1, 0.2, 0.2), (2, 0.3, 0.3), (3, 0.5, 0.4))],
            "B": [result("BPR", s, 0.3) for s in (1, 2, 3)],
            "P": [result("PromptMM", s, 0.9) for s in (1, 2, 3)]}  # another PromptMM run: never the best baseline
    for label, results in runs.items():
        for r in results:
            (tmp_path / f"{label}-seed{r['seed']}.json").write_text(json.dumps(r))
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "mm_table.py"), str(tmp_path), "--student=S"],
                         capture_output=True, text=True, check=True).stdout
    row = [c.strip() for c in out.strip().splitlines()[-1].strip("|").split("|")]
    # S - LightGCN per seed: 0.1, 0.1, 0.2: mean 0.1333, sd 0.0577, t = 0.1333 / (0.0577 / sqrt 3) = 4.0, df 2:
    # p = 0.057; ratio of means 0.3333 / 0.2 = 1.67
    # S - teacher: 0, 0, 0.1: mean 0.0333, sd 0.0577, t = 1.0, p = 0.42; ratio 0.3333 / 0.3 = 1.11
    # best other model by mean test: B (0.3; LightGCN 0.2, P is a PromptMM run); S - B: -0.1, 0, 0.2: mean 0.0333,
    # sd 0.1528, t = 0.378, p = 0.74; ratio 1.11
    assert row == ["S", "0.3333 ± 0.1528", "1.67x (p = 0.057)", "1.11x (p = 0.42)", "1.11x (p = 0.74), B",
                   "1.00 / 2.00", "0.500 / 0.500"]


def test_mutation_report_folds_mutmut_exit_codes_into_columns(tmp_path, monkeypatch):
    """mutation.report: mutmut's exit codes per module (a crashed test process counts as killed, a skipped mutant
    as other), an ``all`` row, and the score over the mutants a test reaches."""
    mutation = _benchmark("mutation")
    codes = {"a.py": {"m1": 1, "m2": 3, "m3": -11, "m4": 36, "m5": 5, "m6": 34}, "b.py": {"m1": 1, "m2": 33}}
    for module, by_key in codes.items():
        (tmp_path / "mutants" / f"{module}.meta").parent.mkdir(exist_ok=True)
        (tmp_path / "mutants" / f"{module}.meta").write_text(json.dumps({"exit_code_by_key": by_key}))
    monkeypatch.chdir(tmp_path)
    table, survivors = mutation.report(tmp_path, ["a.py", "b.py"])
    assert survivors == []
    # a.py: killed 3 (1, 3, SIGSEGV), timeout 1, no tests 1, other 1 (34: skipped): 3 / 5 reached = 60%
    assert table.to_dict("records") == [
        {"module": "a.py", "mutants": 6, "killed": 3, "survived": 0, "timeout": 1, "no tests": 1, "other": 1,
         "score": "60.0%"},
        {"module": "b.py", "mutants": 2, "killed": 1, "survived": 0, "timeout": 0, "no tests": 1, "other": 0,
         "score": "100.0%"},
        {"module": "all", "mutants": 8, "killed": 4, "survived": 0, "timeout": 1, "no tests": 2, "other": 1,
         "score": "66.7%"}]


def test_scaling_exponent_and_epoch_extrapolation():
    """scaling.exponent: least-squares slope of log cost on log size; scaling.epoch_seconds: first batch plus the
    timed batches' mean times the remaining batches."""
    scaling = _benchmark("scaling")
    assert scaling.exponent([1, 4, 16, 64], [3, 12, 48, 192]) == pytest.approx(1.0)
    assert scaling.exponent([1, 4, 16], [1, 16, 256]) == pytest.approx(2.0)
    assert scaling.exponent([1, 4], [2, None]) is None  # one point: no slope

    class Model:
        steps = 0

        def train(self):
            pass

        def calculate_loss(self, interaction):
            Model.steps += 1
            return (torch.ones(1, requires_grad=True).sum(),) * 2

    class Loader(list):
        step = 4

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    epoch = scaling.epoch_seconds(Model(), optimizer, Loader(range(10)), 3)
    assert Model.steps == 4 and epoch["batches"] == 10 and epoch["timed_batches"] == 4 and epoch["extrapolated"]
    assert epoch["cpu_s"] >= 0 and epoch["wall_s"] >= 0
