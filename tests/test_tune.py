"""Ray Tune sweeps (recbole_promptmm.tune): search spaces, trials, ASHA, failures, outputs, resume.

The sweeps run on ml-100k with BPR for 1-3 epochs, on one local Ray instance shared by this module.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
from pathlib import Path

import pytest

from recbole_promptmm import Config, create_dataset, data_preparation
from recbole_promptmm.config import load_yaml
from recbole_promptmm.experiments.cli import tune_main as main
from recbole_promptmm.experiments.space import Dimension, SearchSpaceError, check_search_space, load_search_space
from recbole_promptmm.experiments.trial import TrialRun, TrialSetup, read_state
from recbole_promptmm.registry import get_model
from tests.conftest import REPO

FAST = ["--train_batch_size=4096", "--num_cpus=2"]
CPU = {"gpu_id": "", "use_gpu": False}


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@contextlib.contextmanager
def working_dir(path: Path):
    """Module-scoped fixtures run outside the per-test temporary working directory: give them their own."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# Search spaces -----------------------------------------------------------------------------------------------

def test_every_distribution_is_parsed(tmp_path):
    space = load_search_space(write(tmp_path / "s.yaml", """
learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
reg_weight: {uniform: [0.0, 1.0e-3]}
embedding_size: {choice: [32, 64]}
n_layers: {grid: [1, 2]}
epochs: {randint: [2, 3]}
"""))
    assert space.keys == ["learning_rate", "reg_weight", "embedding_size", "n_layers", "epochs"]
    assert space.get("learning_rate").args == (1e-4, 1e-2)
    tune_space = space.to_tune()
    assert tune_space["n_layers"] == {"grid_search": [1, 2]}
    samples = {tune_space["epochs"].sample() for _ in range(200)}
    assert samples == {2, 3}  # randint includes its upper bound
    assert all(1e-4 <= tune_space["learning_rate"].sample() <= 1e-2 for _ in range(50))


BAD_SPACES = [
    ("learning_rate: {logunifrom: [1.0e-4, 1.0e-2]}", "learning_rate", "unknown distribution 'logunifrom'"),
    ("learning_rate: {loguniform: [0.0, 1.0e-2]}", "learning_rate", "0 < low"),
    ("learning_rate: {uniform: [0.1, 0.01]}", "learning_rate", "low < high"),
    ("learning_rate: {uniform: [0.1]}", "learning_rate", "list [low, high]"),
    ("embedding_size: {choice: []}", "embedding_size", "non-empty list"),
    ("embedding_size: {randint: [8, 4.5]}", "embedding_size", "two integers"),
    ("embedding_size: 64", "embedding_size", "to fix a value for every trial"),
    ("embedding_size: {choice: [32], grid: [64]}", "embedding_size", "exactly one distribution"),
    ("learning_rate: {choice: [0.1]}\nlearning_rate: {choice: [0.2]}", "learning_rate", "given twice"),
]


@pytest.mark.parametrize("text,key,problem", BAD_SPACES, ids=[b[2] for b in BAD_SPACES])
def test_malformed_search_space_is_refused(tmp_path, text, key, problem):
    path = write(tmp_path / "bad.yaml", text + "\n")
    with pytest.raises(SearchSpaceError) as err:
        load_search_space(path)
    assert path in str(err.value) and key in str(err.value) and problem in str(err.value)


@pytest.fixture(scope="module")
def bpr_config():
    return Config("BPR", "ml-100k", cmd_args=["--epochs=3"])


WRONG_KEYS = [
    ("learning_rat: {choice: [0.1]}", "learning_rat", "not a config key of BPR", "did you mean learning_rate"),
    ("eval_args: {choice: [{}]}", "eval_args", "evaluation setting", "judged the same way"),
    ("load_col: {choice: [{}]}", "load_col", "dataset setting", "read once"),
    ("data_path: {choice: [x]}", "data_path", "cannot be searched", "where a trial runs"),
    ("epochs: {choice: [1, 2]}", "epochs", "also fixed for every trial by --epochs=3", "remove one"),
    ("embedding_size: {uniform: [8.0, 64.0]}", "embedding_size", "integer setting", "randint"),
    ("learner: {uniform: [0.0, 1.0]}", "learner", "text setting", "choice or grid"),
]


@pytest.mark.parametrize("text,key,problem,hint", WRONG_KEYS, ids=[w[0].split(":")[0] for w in WRONG_KEYS])
def test_search_space_checked_against_the_model_config(tmp_path, bpr_config, text, key, problem, hint):
    space = load_search_space(write(tmp_path / "bad.yaml", text + "\n"))
    with pytest.raises(SearchSpaceError) as err:
        check_search_space(space, bpr_config, {"epochs": "--epochs=3 on the command line"})
    message = str(err.value)
    assert f"key {key!r}" in message and problem in message and hint in message


def test_bad_search_space_fails_before_anything_starts(tmp_path, capsys):
    import ray

    space = write(tmp_path / "bad.yaml", "learning_rate: {loguniform: [1.0e-2, 1.0e-4]}\n")
    code = main(["--model=BPR", "--dataset=ml-100k", f"--search_space={space}", f"--out={tmp_path / 'out'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "'learning_rate'" in err and "low < high" in err
    assert not (tmp_path / "out").exists() and not ray.is_initialized()


SHIPPED = sorted((REPO / "properties" / "tune").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_search_spaces_fit_their_models(path):
    try:
        get_model(path.stem)
    except ValueError:
        pytest.skip(f"model {path.stem} is not in recbole_promptmm.model yet")
    space = load_search_space(path)
    assert space.dimensions, f"{path} searches nothing"
    check_search_space(space, Config(path.stem, "ml-100k"), {})


def test_required_search_spaces_exist():
    names = {p.stem for p in SHIPPED}
    assert {"BPR", "LightGCN", "NGCF", "PromptMMTeacher", "PromptMMStudent", "PromptMM"} <= names


def test_dimension_upper_bound():
    assert Dimension("epochs", "randint", (2, 7)).upper_bound() == 7
    assert Dimension("epochs", "grid", (3, 9, 4)).upper_bound() == 9


# One trial, without Ray --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ml100k_data():
    config = Config("BPR", "ml-100k", config_dict={"train_batch_size": 4096, **CPU})
    return data_preparation(config, create_dataset(config))


def _interrupted_trial(tmp_path, setup, params, data, stop_after: int):
    """Run a trial to the end, keeping its reports and checkpoint folders; then a second trial restored from the
    checkpoint of epoch ``stop_after`` (as Ray restarts a preempted trial). Returns both trials' reports."""
    train, valid, _ = data
    first, checkpoints = [], {}

    def keep(metrics, folder):
        first.append(metrics)
        checkpoints[metrics["epoch"]] = {f: (Path(folder) / f).read_bytes() for f in os.listdir(folder)}

    TrialRun(setup, params, train, valid, str(tmp_path / "a"), CPU).fit(keep)
    folder = tmp_path / f"ckpt{stop_after}"
    folder.mkdir()
    for name, payload in checkpoints[stop_after].items():
        (folder / name).write_bytes(payload)
    assert read_state(str(folder))["epoch"] == stop_after
    train.generator.manual_seed(12345)  # whatever state the shared loader is in, the checkpoint's state wins
    resumed = TrialRun(setup, params, train, valid, str(tmp_path / "b"), CPU)
    assert resumed.restore(str(folder)) == stop_after
    second = []
    resumed.fit(lambda metrics, _: second.append(metrics))
    return first, second


def test_a_trials_batch_size_takes_effect(tmp_path, ml100k_data):
    """The driver's loader has 4096 interactions a batch; a trial that searches train_batch_size trains with its own
    (RecBole's update_config alone left the loader's batches as built)."""
    train, valid, _ = ml100k_data
    trial = TrialRun(TrialSetup("BPR", "ml-100k", fixed={"epochs": 1}), {"train_batch_size": 1024}, train, valid,
                     str(tmp_path), CPU)
    n = len(train._dataset)
    assert len(train) == -(-n // 4096) and len(trial.train_data) == -(-n // 1024)
    assert {len(batch) for batch in list(trial.train_data)[:-1]} == {1024}


def test_trial_resumes_from_its_checkpoint(tmp_path, ml100k_data):
    """A trial stopped after epoch 1 and restarted from its checkpoint trains epoch 2 only, and reports exactly what
    the uninterrupted trial reported for it (the checkpoint carries the random-number states)."""
    setup = TrialSetup("BPR", "ml-100k", fixed={"epochs": 2, "train_batch_size": 4096})
    first, second = _interrupted_trial(tmp_path, setup, {"learning_rate": 0.01}, ml100k_data, stop_after=1)
    assert [m["epoch"] for m in first] == [1, 2] and first[-1]["finished"] and not first[0]["finished"]
    assert first[0]["valid_score"] == first[0]["valid/recall@20"]
    assert [m["epoch"] for m in second] == [2]
    assert second[0] == first[1]


def test_promptmm_trial_resumes_mid_stage_two(tmp_path):
    """A PromptMM trial preempted after stage-2 epoch 1 continues stage 2 from its checkpoint (not from scratch,
    not retraining the teacher) and ends with the uninterrupted trial's metrics."""
    fixed = {"epochs": 1, "student_epochs": 3, "train_batch_size": 4096}
    config = Config("PromptMM", "ml-100k", config_dict={**fixed, **CPU})
    data = data_preparation(config, create_dataset(config))
    setup = TrialSetup("PromptMM", "ml-100k", fixed=fixed)
    first, second = _interrupted_trial(tmp_path, setup, {"student_learning_rate": 0.01}, data, stop_after=1)
    assert [m["epoch"] for m in first] == [1, 2, 3]
    assert [m["epoch"] for m in second] == [2, 3]
    assert second == first[1:]
    assert not list((tmp_path / "b").rglob("*-teacher.pth"))  # stage 1 was not run again


# Sweeps on Ray -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """One local Ray instance for every sweep in this module (the CLI uses a running session)."""
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    with working_dir(tmp_path_factory.mktemp("ray")):
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def two_trial_sweep(tmp_path_factory, ray_session):
    """BPR, 2 random samples of properties/tune/BPR.yaml, 2 epochs each."""
    root = tmp_path_factory.mktemp("sweep2")
    out = root / "out"
    with working_dir(root):
        code = main(["--model=BPR", "--dataset=ml-100k", "--num_samples=2", "--epochs=2", f"--out={out}",
                     "--scheduler=fifo", *FAST])
    return code, root, out


def test_two_trial_sweep_writes_every_output(two_trial_sweep):
    code, root, out = two_trial_sweep
    assert code == 0
    rows = read_csv(out / "trials.csv")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}
    assert {"config/learning_rate", "config/embedding_size", "last_valid_recall@20", "best_valid_recall@20",
            "iterations", "status", "error"} <= set(rows[0])
    assert all(r["iterations"] == "2" and float(r["best_valid_recall@20"]) > 0 for r in rows)
    summary = json.loads((out / "best_result.json").read_text())
    best = max(rows, key=lambda r: float(r["best_valid_recall@20"]))
    assert summary["trial_id"] == best["trial_id"]
    assert summary["best_valid_result"]["recall@20"] == pytest.approx(float(best["best_valid_recall@20"]))
    assert 0 < summary["test_result"]["recall@20"] < 1
    assert (out / "best_model.pth").is_file() and (out / "sweep.json").is_file()
    for row in rows:  # RecBole's relative folders went into each trial's folder
        trial = Path(row["trial_dir"])
        assert trial.parent == out / "trials"
        assert list((trial / "log" / "BPR").glob("*.log")) and (trial / "log_tensorboard").is_dir()
        assert list((trial / "saved").glob("*.pth"))
    leaked = {"log", "log_tensorboard", "saved"} & {p.name for p in root.iterdir()}
    assert not leaked, f"RecBole wrote {leaked} into the working directory"


def test_best_config_reproduces_the_best_trial(two_trial_sweep):
    _, _, out = two_trial_sweep
    summary = json.loads((out / "best_result.json").read_text())
    values = load_yaml(out / "best_config.yaml")
    assert values["model"] == "BPR" and values["epochs"] == 2
    config = Config("BPR", "ml-100k", config_file_list=[str(out / "best_config.yaml")])
    for key, value in summary["params"].items():
        assert config[key] == value


def test_test_results_are_printed_apart(two_trial_sweep):
    _, _, out = two_trial_sweep
    text = (out / "sweep.log").read_text()
    validation = text.index("validation (used for selection)")
    test = text.index("test (best configuration, evaluated once")
    assert validation < test


@pytest.fixture(scope="module")
def asha_sweep(tmp_path_factory, ray_session):
    """One trial at a time: a good learning rate, an invalid one (fails), a hopeless one (ASHA stops it)."""
    root = tmp_path_factory.mktemp("asha")
    space = write(root / "lr.yaml", "learning_rate: {grid: [0.01, -1.0, 1.0e-7]}\n")
    out = root / "out"
    with working_dir(root):
        code = main(["--model=BPR", "--dataset=ml-100k", f"--search_space={space}", "--epochs=3", f"--out={out}",
                     "--scheduler=asha", "--max_concurrent=1", "--max_failures=0", "--reduction_factor=2", *FAST])
    return code, out, {float(r["config/learning_rate"]): r for r in read_csv(out / "trials.csv")}


def test_asha_stops_a_hopeless_trial_early(asha_sweep):
    code, _, rows = asha_sweep
    assert code == 0
    assert rows[0.01]["status"] == "completed" and rows[0.01]["iterations"] == "3"
    hopeless = rows[1e-7]
    assert hopeless["status"] == "stopped_early"
    assert int(hopeless["iterations"]) < 3 and int(hopeless["last_epoch"]) < 3


def test_failed_trial_is_reported_and_the_sweep_goes_on(asha_sweep):
    code, out, rows = asha_sweep
    failed = rows[-1.0]
    assert failed["status"] == "failed" and "Invalid learning rate: -1.0" in failed["error"]
    assert rows[1e-7]["iterations"] != "0"  # the trial after the failure still ran
    assert json.loads((out / "best_result.json").read_text())["params"] == {"learning_rate": 0.01}


def test_exit_status_is_nonzero_when_every_trial_fails(tmp_path, ray_session, capsys):
    space = write(tmp_path / "lr.yaml", "learning_rate: {grid: [-1.0]}\n")
    code = main(["--model=BPR", "--dataset=ml-100k", f"--search_space={space}", "--epochs=1",
                 f"--out={tmp_path / 'out'}", "--max_failures=0", *FAST])
    assert code == 1
    assert "every trial failed" in capsys.readouterr().out
    assert read_csv(tmp_path / "out" / "trials.csv")[0]["status"] == "failed"
    assert not (tmp_path / "out" / "best_config.yaml").exists()


def test_out_folder_of_another_sweep_is_refused(two_trial_sweep, capsys):
    _, _, out = two_trial_sweep
    assert main(["--model=BPR", "--dataset=ml-100k", f"--out={out}"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_continues_an_interrupted_sweep(tmp_path, ray_session, monkeypatch):
    """Interrupt a sweep (SIGINT, as Ctrl-C) once its trial has a checkpoint; --resume finishes it from there.

    The interrupt comes from a Ray Tune callback in this process, right after the controller has registered the
    trial's first checkpoint (``on_trial_save`` follows the registration and the result.json write): no polling,
    no race with the trial."""
    from ray import tune

    from recbole_promptmm.experiments import sweep

    space = write(tmp_path / "lr.yaml", "learning_rate: {grid: [0.01]}\n")
    out = tmp_path / "out"
    marker = tmp_path / "interrupted_at_iteration"

    class InterruptAfterFirstCheckpoint(tune.Callback):
        """Once: Ray restores the callbacks with the sweep on --resume, and the marker file stops a second one."""

        def on_trial_save(self, iteration, trials, trial, **info):
            if trial.checkpoint is not None and not marker.exists():
                marker.write_text(str(trial.last_result.get("training_iteration")))
                signal.raise_signal(signal.SIGINT)  # Ray Tune's handler stops the sweep and saves its state

    make_tuner = sweep.make_tuner
    monkeypatch.setattr(sweep, "make_tuner", lambda *args, callbacks=(), **kwargs: make_tuner(
        *args, callbacks=[*callbacks, InterruptAfterFirstCheckpoint()], **kwargs))
    code = main(["--model=BPR", "--dataset=ml-100k", f"--search_space={space}", "--epochs=5", f"--out={out}",
                 "--scheduler=fifo", *FAST])
    assert marker.read_text() == "1"
    assert code == 3, "the sweep was not interrupted"
    first = read_csv(out / "trials.csv")
    assert [r["status"] for r in first] == ["unfinished"] and 1 <= int(first[0]["iterations"]) < 5

    assert main([f"--out={out}", "--resume"]) == 0
    rows = read_csv(out / "trials.csv")
    assert len(rows) == 1 and rows[0]["status"] == "completed" and rows[0]["iterations"] == "5"
    logs = "".join(p.read_text() for p in (Path(rows[0]["trial_dir"]) / "log").rglob("*.log"))
    assert "tune: resumed from" in logs  # continued from its checkpoint, not from scratch
    assert (out / "best_config.yaml").is_file()


# Two-stage PromptMM ------------------------------------------------------------------------------------------

def test_student_space_cannot_search_what_the_teacher_stage_fixes(tmp_path, capsys):
    teacher = write(tmp_path / "teacher.yaml", "embedding_size: {choice: [32, 64]}\n")
    student = write(tmp_path / "student.yaml", "embedding_size: {choice: [32, 64]}\n")
    code = main(["--model=PromptMM", "--dataset=ml-100k", f"--search_space={student}",
                 f"--teacher_search_space={teacher}", f"--out={tmp_path / 'out'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "student.yaml" in err and "'embedding_size'" in err and "teacher stage" in err
    assert not (tmp_path / "out").exists()


def test_missing_teacher_checkpoint_is_refused(tmp_path, capsys):
    code = main(["--model=PromptMM", "--dataset=ml-100k", f"--teacher_checkpoint={tmp_path / 'nope.pth'}",
                 f"--out={tmp_path / 'out'}"])
    assert code == 2 and "nope.pth does not exist" in capsys.readouterr().err


def test_a_stage_one_output_for_a_one_stage_model_is_refused(tmp_path, capsys):
    """Only a model whose class declares a shareable stage-1 output (``stage_output_key``) takes a teacher."""
    (tmp_path / "teacher.pth").write_bytes(b"")
    code = main(["--model=BPR", "--dataset=ml-100k", f"--teacher_checkpoint={tmp_path / 'teacher.pth'}",
                 f"--out={tmp_path / 'out'}"])
    assert code == 2 and "BPR has no stage 1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def promptmm_sweep(tmp_path_factory, ray_session):
    """PromptMM on ml-100k, 1 epoch: stage 1 trains one teacher, stage 2 sweeps 2 students against it."""
    root = tmp_path_factory.mktemp("promptmm")
    space = write(root / "kd.yaml", "pair_kd_weight: {grid: [0.1, 1.0]}\n")
    out = root / "out"
    with working_dir(root):
        code = main(["--model=PromptMM", "--dataset=ml-100k", f"--search_space={space}", "--epochs=1",
                     f"--out={out}", "--prompt_tuning_in_student=False", "--train_batch_size=8192", "--num_cpus=2"])
    return code, out


def test_promptmm_students_are_swept_against_one_teacher(promptmm_sweep):
    """Both student trials load the stage-1 teacher checkpoint and skip stage 1."""
    code, out = promptmm_sweep
    assert code == 0
    teacher = out / "teacher" / "teacher.pth"
    assert teacher.is_file()
    assert [r["status"] for r in read_csv(out / "teacher" / "trials.csv")] == ["completed"]
    rows = read_csv(out / "trials.csv")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}
    for row in rows:
        log = "".join(p.read_text() for p in (Path(row["trial_dir"]) / "log").rglob("*.log"))
        assert f"Teacher weights loaded from {teacher}" in log
        assert "Stage 1 skipped" in log and "Stage 1: teacher" not in log
    best = load_yaml(out / "best_config.yaml")
    assert best["teacher_checkpoint"] == str(teacher)
    teacher_config = Config("PromptMMTeacher", "ml-100k")  # stage 1 ran with the defaults: they reach stage 2
    for key in ("embedding_size", "n_layers", "graph_norm", "model_cat_rate"):
        assert best[key] == teacher_config[key], key
    assert 0 < json.loads((out / "best_result.json").read_text())["test_result"]["recall@20"] < 1


def test_reused_teacher_fixes_its_settings(promptmm_sweep, tmp_path, capsys):
    """With --teacher_checkpoint, the teacher's settings come from the checkpoint: contradicting or searching them
    is refused before anything runs."""
    _, out = promptmm_sweep
    teacher = out / "teacher" / "teacher.pth"
    other = Config("PromptMMTeacher", "ml-100k")["n_layers"] + 1
    code = main(["--model=PromptMM", "--dataset=ml-100k", f"--teacher_checkpoint={teacher}", f"--n_layers={other}",
                 f"--out={tmp_path / 'a'}"])
    assert code == 2 and f"--n_layers={other} contradicts the teacher checkpoint" in capsys.readouterr().err
    space = write(tmp_path / "s.yaml", "n_layers: {choice: [1, 2]}\n")
    code = main(["--model=PromptMM", "--dataset=ml-100k", f"--teacher_checkpoint={teacher}",
                 f"--search_space={space}", f"--out={tmp_path / 'b'}"])
    err = capsys.readouterr().err
    assert code == 2 and "'n_layers'" in err and f"the teacher checkpoint {teacher}" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unschedulable_trials_are_refused():
    from recbole_promptmm.experiments.cluster import ResourceError, check_resources

    check_resources(2, 0, {"CPU": 2.0})
    with pytest.raises(ResourceError, match="--gpus_per_trial=1, but the Ray cluster has 0 GPU"):
        check_resources(1, 1, {"CPU": 2.0})


@pytest.mark.parametrize("model, extra, expected", [
    ("PromptMM", ["--student_epochs=7", "--epochs=3"], 7),  # its trials report the last stage (the student)
    ("BPR", ["--epochs=5"], 5),
])
def test_asha_bounds_the_stage_a_trial_reports(tmp_path, model, extra, expected):
    """max_t defaults to the epoch bound of the stage the trials report: a staged model names its key
    (``last_stage_epochs_key``), any other model has RecBole's ``epochs``."""
    from recbole_promptmm.experiments.cli import sweep_options
    from recbole_promptmm.experiments.sweep import make_plan

    options = sweep_options([f"--model={model}", "--dataset=ml-100k", f"--out={tmp_path / 'out'}", *extra])
    assert make_plan(options).max_t == expected
