"""Bad input fails early and clearly (exit code 2, a message naming the key, file or line) and writes nothing;
runs started together keep their own checkpoints; the result JSON is strict JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recbole_promptmm import run
from recbole_promptmm.files import write_json_atomic
from recbole_promptmm.validate import ConfigError
from tests.conftest import REPO, write_toy_dataset

OUTPUTS = ("saved", "log", "log_tensorboard")
TOY_ARGS = (
    "--dataset=toy",
    "--load_col={'inter': ['user_id', 'item_id']}",
    "--eval_args={'split': {'RS': [0.8, 0.1, 0.1]}, 'group_by': 'user', 'order': 'RO', 'mode': 'full'}",
    "--metrics=['Recall', 'NDCG']",
    "--topk=[5]",
    "--valid_metric=Recall@5",
    "--show_progress=False",
    "--embedding_size=8",
    "--train_batch_size=64",
    "--epochs=1",
)
TOY_DICT = {
    "load_col": {"inter": ["user_id", "item_id"]},
    "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "RO", "mode": "full"},
    "metrics": ["Recall", "NDCG"], "topk": [5], "valid_metric": "Recall@5", "show_progress": False,
    "embedding_size": 8, "train_batch_size": 64, "epochs": 1,
}


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _command(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "run_recbole.py"), *args]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def _toy_args(*extra: str) -> list[str]:
    """TOY_ARGS with the keys that ``extra`` gives replaced (a key given twice is an error of its own)."""
    given = {a.split("=", 1)[0] for a in extra}
    return [a for a in TOY_ARGS if a.split("=", 1)[0] not in given] + list(extra)


def _written(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for out in OUTPUTS for p in (root / out).rglob("*")] + \
        [out for out in OUTPUTS if (root / out).exists() and not any((root / out).iterdir())]


def _data(tmp_path: Path) -> Path:
    write_toy_dataset(tmp_path / "data")
    return tmp_path / "data"


# ------------------------------------------------------------------ bad input: exit 2, named, nothing written
def _misspelled_in_yaml(tmp_path: Path) -> list[str]:
    (tmp_path / "my.yaml").write_text("learning_rte: 0.1\n")
    return [f"--config_files={tmp_path / 'my.yaml'}"]


def _empty_features(tmp_path: Path) -> list[str]:
    np.save(tmp_path / "data" / "toy" / "empty_feat.npy", np.zeros((41, 0), dtype=np.float32))
    return ["--modality_features={'image': 'empty_feat.npy'}"]


def _bad_inter_line(tmp_path: Path) -> list[str]:
    inter = tmp_path / "data" / "toy" / "toy.inter"
    lines = inter.read_text().splitlines()
    lines[7] = lines[7] + "\t5"  # line 8 of the file (the header is line 1): three fields
    inter.write_text("\n".join(lines) + "\n")
    return []


BAD_INPUTS = {
    # id: (extra arguments or a function making them, what the message must say)
    "misspelled_key_cmd": (["--learning_rte=0.1"], ["'learning_rte'", "command line", "learning_rate"]),
    "misspelled_key_yaml": (_misspelled_in_yaml, ["'learning_rte'", "my.yaml", "learning_rate"]),
    "learning_rate_zero": (["--learning_rate=0"], ["learning_rate=0", "> 0"]),
    "learning_rate_negative": (["--learning_rate=-1"], ["learning_rate=-1", "> 0"]),
    "epochs_zero": (["--epochs=0"], ["epochs=0", "integer >= 1"]),
    "epochs_two": (["--epochs=two"], ["epochs='two'", "integer >= 1"]),
    "learning_rate_fast": (["--learning_rate=fast"], ["learning_rate='fast'", "number > 0"]),
    "unknown_model": (["--model=lightgc"], ["unknown model 'lightgc'", "LightGCN"]),
    # a switch with no such value: refused by the model's declaration (recbole_promptmm.schema), not at load time
    "feature_norm_unknown": (["--model=VBPR", "--feature_norm=l1"],
                             ["config key feature_norm='l1' (str) from the command line",
                              "one of none, standardize, l2"]),
    "missing_teacher_checkpoint": (["--model=PromptMM", "--teacher_checkpoint=no/such/teacher.pth"],
                                   ["teacher_checkpoint", "no/such/teacher.pth", "does not exist"]),
    "empty_feature_matrix": (_empty_features, ["empty_feat.npy", "0 columns"]),
    "bad_inter_line": (_bad_inter_line, ["toy.inter line 8", "expected 2", "found 3"]),
    # the toy data has 30 users: RecBole's NCL default (1000 clusters) cannot work, and k-means would say so late
    "ncl_too_many_clusters": (["--model=NCL"], ["num_clusters=1000", "NCL needs at most 31", "30 users"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_names_the_problem_and_writes_nothing(case, tmp_path):
    data = _data(tmp_path)
    extra, expected = BAD_INPUTS[case]
    extra = extra(tmp_path) if callable(extra) else extra
    model = [] if any(a.startswith("--model=") for a in extra) else ["--model=BPR"]
    proc = _cli(*model, *_toy_args(f"--data_path={data}", *extra), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("run_recbole.py: error: "), proc.stderr[-3000:]
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert _written(tmp_path) == []


# ------------------------------------------------------------------ failures after the logger started
def _failing_fit(monkeypatch, after_epochs: bool) -> None:
    """Every trainer's ``fit`` raises, before its first epoch or after all of them."""
    from recbole_promptmm.trainer.base import CheckpointMixin

    original = CheckpointMixin.fit

    def fit(self, *args, **kwargs):
        if after_epochs:
            original(self, *args, **kwargs)
        raise ValueError("failed in fit")

    monkeypatch.setattr(CheckpointMixin, "fit", fit)


def test_failure_before_the_first_epoch_removes_log_tensorboard_and_checkpoint(tmp_path, monkeypatch):
    data = _data(tmp_path)
    _failing_fit(monkeypatch, after_epochs=False)
    with pytest.raises(ValueError, match="failed in fit"):
        run("BPR", "toy", config_dict={**TOY_DICT, "data_path": str(data)})
    assert _written(tmp_path) == []


def test_failure_after_an_epoch_keeps_what_was_written(tmp_path, monkeypatch):
    data = _data(tmp_path)
    _failing_fit(monkeypatch, after_epochs=True)
    with pytest.raises(ValueError, match="failed in fit"):
        run("BPR", "toy", config_dict={**TOY_DICT, "data_path": str(data)})
    assert list((tmp_path / "log" / "BPR").glob("*.log")) and list((tmp_path / "saved").glob("BPR-*.pth"))


# ------------------------------------------------------------------ what is let through
def _run_recbole_main():
    spec = importlib.util.spec_from_file_location("run_recbole_front_door", REPO / "run_recbole.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_model_names_are_case_insensitive_and_result_json_is_strict(tmp_path):
    """``--model=lightgcn`` runs LightGCN (through run_recbole.py's main, in this process: a new interpreter
    costs seconds), and the result JSON parses without NaN or Infinity."""
    data = _data(tmp_path)
    out = tmp_path / "r.json"
    status = _run_recbole_main()(["--model=lightgcn", *TOY_ARGS, f"--data_path={data}", f"--result_json={out}"])
    assert status == 0

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    parsed = json.loads(out.read_text(), parse_constant=refuse)
    assert parsed["model"] == "LightGCN" and parsed["config"]["model"] == "LightGCN"
    assert all(isinstance(v, float) for v in parsed["test_result"].values())
    log = Path(parsed["log_file"]).read_text()
    assert "best valid : {'recall@5': " in log and "OrderedDict" not in log and "np.float64" not in log


def test_result_json_writes_non_finite_numbers_as_null(tmp_path):
    out = tmp_path / "r.json"
    write_json_atomic(str(out), {"best_valid_score": float("-inf"), "r": {"a": np.float64("nan"), "b": [1.5]}})
    assert json.loads(out.read_text()) == {"best_valid_score": None, "r": {"a": None, "b": [1.5]}}


def test_extra_keys_let_a_key_of_your_own_through(tmp_path):
    data = _data(tmp_path)
    config = {**TOY_DICT, "data_path": str(data), "my_note": "baseline"}
    with pytest.raises(ConfigError, match="unknown config key 'my_note' from config_dict"):
        run("BPR", "toy", config_dict=config, saved=False)
    result = run("BPR", "toy", config_dict={**config, "extra_keys": ["my_note"]}, saved=False)
    assert result["config"]["my_note"] == "baseline"


def test_two_runs_started_together_keep_two_checkpoints(tmp_path):
    data = _data(tmp_path)
    procs = [subprocess.Popen(_command("--model=BPR", *TOY_ARGS, f"--data_path={data}",
                                       f"--result_json={tmp_path / f'r{k}.json'}"),
                              cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    results = [json.loads((tmp_path / f"r{k}.json").read_text()) for k in range(2)]
    checkpoints = {r["checkpoint"] for r in results}
    logs = {r["log_file"] for r in results}
    assert len(checkpoints) == 2 and all(Path(c).is_file() for c in checkpoints)
    assert len(logs) == 2 and all(Path(f).is_file() for f in logs)
    assert len(list((tmp_path / "saved").glob("BPR-*.pth"))) == 2
    assert len(list((tmp_path / "log_tensorboard").iterdir())) == 2


def test_a_folder_made_by_another_run_in_between_is_no_error(tmp_path, monkeypatch):
    """The race the test above can hit: RecBole's ``ensure_dir`` found ``./log`` missing, then another process
    made it before ``os.makedirs``. Replayed deterministically: the check says missing, the folder exists."""
    import recbole.data.utils
    import recbole.trainer.trainer
    import recbole.utils.logger

    (tmp_path / "log").mkdir()
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: False if str(p).endswith("log") else real_exists(p))
    for module in (recbole.utils.logger, recbole.trainer.trainer, recbole.data.utils):
        module.ensure_dir(str(tmp_path / "log"))
    assert (tmp_path / "log").is_dir()


def test_a_stale_temporary_of_a_dead_process_is_removed(tmp_path):
    from recbole_promptmm.checkpoint import save_atomic

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "x.pth"
    (tmp_path / f"x.pth.{dead.pid}.tmp").write_text("half a checkpoint of a killed save")
    (tmp_path / f"x.pth.{os.getppid()}.tmp").write_text("a save in progress elsewhere")
    save_atomic({"epoch": 1}, str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["x.pth", f"x.pth.{os.getppid()}.tmp"])


def test_atomic_file_check_skips_blank_lines_and_respects_quotes(tmp_path):
    from recbole_promptmm.data.atomic import AtomicFileError, check_atomic_file

    path = tmp_path / "a.inter"
    path.write_bytes(b"u:token\ti:token\r\n1\t2\r\n\r\n\n3\t\"a\tb\"\n4\t5")
    assert check_atomic_file(str(path)) == 3  # data lines; the blank ones are not counted
    path.write_bytes(b"u:token\ti:token\n1\t2\n3\n4\t5\t6\n")
    with pytest.raises(AtomicFileError, match=r"a.inter line 3: expected 2 tab-separated fields .* found 1; "
                                              r"2 bad line\(s\): line 3 has 1, line 4 has 3"):
        check_atomic_file(str(path))


def test_run_reads_the_models_entry_of_a_compare_config_file(tmp_path):
    """A compare config file (shared keys plus models: {MODEL: {...}}) works for run: the entry of the model being
    run applies, the others do not."""
    (tmp_path / "cmp.yaml").write_text("embedding_size: 16\nmodels:\n  BPR: {embedding_size: 12}\n"
                                       "  LightGCN: {embedding_size: 24}\n")
    data = _data(tmp_path)
    cfg = {k: v for k, v in TOY_DICT.items() if k != "embedding_size"}
    result = run("BPR", "toy", config_file_list=[str(tmp_path / "cmp.yaml")], config_dict={**cfg, "data_path": str(data)})
    assert result["config"]["embedding_size"] == 12
    result = run("Pop", "toy", config_file_list=[str(tmp_path / "cmp.yaml")], config_dict={**cfg, "data_path": str(data)})
    assert result["config"]["embedding_size"] == 16
