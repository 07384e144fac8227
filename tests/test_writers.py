"""No command deletes what it did not write (README.md, "What each command writes"): an output path that exists is
an earlier output of the command (replaced atomically, or resumed) or refused with exit status 2, one line, and
left untouched. And ``recommend`` / ``export`` find a run's data from any working folder (the absolute dataset folder
is kept in the checkpoint; ``--data_path`` overrides it)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recbole_promptmm.checkpoint import load_checkpoint, save_atomic
from recbole_promptmm.cli import main
from recbole_promptmm.serving.artefact import Recommender
from tests.conftest import REPO, write_toy_dataset
from tests.test_bad_input import TOY_ARGS

PROG = "recbole-promptmm"


@pytest.fixture(autouse=True)
def _logging_as_before():
    """A run in this process leaves RecBole's console handler on the root logger, writing to the stderr that
    capsys gave that test; the next test's logging would go to that closed stream."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()


def _listing(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``folder`` with its mode and (files) bytes: what "untouched" compares."""
    return {str(p.relative_to(folder)): (p.stat().st_mode, p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def _console(capsys, cwd: Path, *args: str) -> tuple[int, str, str]:
    """``recbole-promptmm ARGS`` in this process, run from ``cwd``: exit status, stdout, stderr."""
    before = os.getcwd()
    os.chdir(cwd)
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    finally:
        os.chdir(before)
    out, err = capsys.readouterr()
    return code, out, err


def _refused(code: int, err: str, command: str) -> str:
    """The message of the one stderr line of a command refused with exit status 2."""
    assert code == 2, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-3000:]
    prefix = f"{PROG} {command}: error: " if command in ("recommend", "export", "run") else ""
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A 1-epoch BPR run on the toy data, trained from ``root/work/here`` with ``--data_path=../../mydata``."""
    root = tmp_path_factory.mktemp("writers")
    write_toy_dataset(root / "mydata")
    here = root / "work" / "here"
    here.mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(here)
    try:
        code = main(["run", "--model=BPR", *TOY_ARGS, "--data_path=../../mydata", "--result_json=result.json"])
    finally:
        os.chdir(cwd)
    assert code == 0
    result = json.loads((here / "result.json").read_text())
    return {"root": root, "here": here, "checkpoint": str(here / result["checkpoint"])}


# ------------------------------------------------------------------ export
def test_export_refuses_a_folder_of_the_users_in_its_own_process(trained, tmp_path):
    """The reported defect: ``export --out=d`` deleted notes.txt and left d mode 700."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("x\n")
    before = _listing(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "recbole_promptmm", "export", f"--checkpoint={trained['checkpoint']}",
                           "--out=d"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    message = _refused(proc.returncode, proc.stderr, "export")
    assert message == ("--out d exists and is not an artefact written by export (it holds notes.txt); choose a new "
                       "folder or remove it")
    assert _listing(tmp_path) == before and proc.stdout == ""


def test_export_refuses_the_working_folder_and_the_checkpoints_folder(trained, tmp_path, capsys):
    here = trained["here"]
    before = _listing(here)
    for out in (".", "saved", str(here)):
        message = _refused(*_console(capsys, here, "export", f"--checkpoint={trained['checkpoint']}",
                                     f"--out={out}")[::2], "export")
        assert message.startswith(f"--out {out} exists and is not an artefact written by export (it holds "), message
    assert _listing(here) == before
    (tmp_path / "empty").mkdir()  # an empty working folder is refused too: export would replace it
    message = _refused(*_console(capsys, tmp_path / "empty", "export", f"--checkpoint={trained['checkpoint']}",
                                 "--out=.")[::2], "export")
    assert message == "--out . is the working folder (or holds it); choose a new folder"
    assert list((tmp_path / "empty").iterdir()) == [] and list(tmp_path.iterdir()) == [tmp_path / "empty"]


def test_export_replaces_an_earlier_artefact_and_nothing_else(trained, tmp_path, capsys):
    """From another working folder (the data was given relative to the training one); a second export replaces the
    first atomically; an artefact folder that gained a file of the user's is refused."""
    args = ("export", f"--checkpoint={trained['checkpoint']}", "--out=art")
    code, out, err = _console(capsys, tmp_path, *args)
    assert code == 0, err
    first = Recommender.load(str(tmp_path / "art"))
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "art").stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's private 0700
    stamp = (tmp_path / "art" / "meta.json").stat().st_ino
    code, out, err = _console(capsys, tmp_path, *args)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temporary or old folder left beside it
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["arrays.npz", "meta.json"]
    assert (tmp_path / "art" / "meta.json").stat().st_ino != stamp
    again = Recommender.load(str(tmp_path / "art"))
    assert again.recommend(["1"], k=5)[0].items == first.recommend(["1"], k=5)[0].items
    (tmp_path / "art" / "README").write_text("my notes\n")
    before = _listing(tmp_path)
    message = _refused(*_console(capsys, tmp_path, *args)[::2], "export")
    assert message == ("--out art exists and is not an artefact written by export (it holds README); choose a new "
                       "folder or remove it")
    assert _listing(tmp_path) == before


# ------------------------------------------------------------------ recommend
def test_recommend_from_another_folder_and_its_output_rule(trained, tmp_path, capsys):
    args = ("recommend", f"--checkpoint={trained['checkpoint']}", "--k=3")
    code, out, err = _console(capsys, tmp_path, *args, "--out=top.csv")
    assert code == 0, err
    first = (tmp_path / "top.csv").read_text()
    assert first.startswith("user,rank,item,score,fallback\n")
    assert _console(capsys, tmp_path, *args, "--out=top.csv")[0] == 0  # an earlier list: replaced
    assert (tmp_path / "top.csv").read_text() == first
    assert _console(capsys, tmp_path, *args, "--out=top.jsonl")[0] == 0
    assert _console(capsys, tmp_path, *args, "--out=top.jsonl")[0] == 0
    (tmp_path / "mine.csv").write_text("name,phone\nada,123\n")
    message = _refused(*_console(capsys, tmp_path, *args, "--out=mine.csv")[::2], "recommend")
    assert message == ("--out mine.csv exists and is not a list written by recommend (it starts 'name,phone'); "
                       "choose a new file or remove it")
    assert (tmp_path / "mine.csv").read_text() == "name,phone\nada,123\n"


# ------------------------------------------------------------------ where the data is
def _old_checkpoint(trained: dict, folder: Path) -> str:
    """The run's checkpoint as written before the dataset folder was kept (no ``absolute_data_path``)."""
    checkpoint = load_checkpoint(trained["checkpoint"])
    del checkpoint["config"].__dict__["absolute_data_path"]
    path = str(folder / "old.pth")
    save_atomic(checkpoint, path)
    return path


def test_data_path_overrides_and_old_checkpoints_work_as_before(trained, tmp_path, capsys):
    root = trained["root"]
    assert load_checkpoint(trained["checkpoint"])["config"].absolute_data_path == str(root / "mydata" / "toy")
    copy = tmp_path / "copy"
    shutil.copytree(root / "mydata", copy)
    (copy / "toy" / "toy.inter").unlink()  # a copy without the data: the override is what was read
    args = ("recommend", f"--checkpoint={trained['checkpoint']}", "--out=top.csv")
    message = _refused(*_console(capsys, tmp_path, *args, f"--data_path={copy}")[::2], "recommend")
    assert message == f"dataset folder {copy / 'toy'}: expected toy.inter, missing toy.inter"
    shutil.copy(root / "mydata" / "toy" / "toy.inter", copy / "toy" / "toy.inter")
    assert _console(capsys, tmp_path, *args, f"--data_path={copy}")[0] == 0
    export = ("export", f"--checkpoint={trained['checkpoint']}", "--out=art", f"--data_path={copy}")
    assert _console(capsys, tmp_path, *export)[0] == 0

    old = _old_checkpoint(trained, tmp_path)
    old_args = ("recommend", f"--checkpoint={old}", "--out=old.csv")
    message = _refused(*_console(capsys, tmp_path, *old_args)[::2], "recommend")
    assert message.startswith("dataset folder ../../mydata/toy does not exist; pass --data_path=DIR"), message
    assert _console(capsys, trained["here"], *old_args[:2], f"--out={tmp_path / 'old.csv'}")[0] == 0  # as today
    assert _console(capsys, tmp_path, *old_args, f"--data_path={root / 'mydata'}")[0] == 0
    assert (tmp_path / "old.csv").read_text() == (tmp_path / "top.csv").read_text()


# ------------------------------------------------------------------ run, compare, tune
def test_run_result_json_is_replaced_only_when_it_is_a_result(trained, tmp_path, capsys):
    (tmp_path / "notes.json").write_text('{"mine": 1}\n')
    data = f"--data_path={trained['root'] / 'mydata'}"
    code, _, err = _console(capsys, tmp_path, "run", "--model=Pop", *TOY_ARGS, data, "--result_json=notes.json")
    assert _refused(code, err, "run") == ("--result_json notes.json exists and is not a result file written by run "
                                          "(it starts '{\"mine\": 1}'); choose a new file or remove it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json"]  # refused before the log or checkpoints
    shutil.copy(trained["here"] / "result.json", tmp_path / "result.json")
    code, _, err = _console(capsys, tmp_path, "run", "--model=Pop", *TOY_ARGS, data, "--result_json=result.json")
    assert code == 0, err
    assert json.loads((tmp_path / "result.json").read_text())["model"] == "Pop"


@pytest.mark.parametrize("command", ["compare", "tune"])
def test_compare_and_tune_refuse_a_folder_that_holds_no_output_of_theirs(trained, tmp_path, capsys, command):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("x\n")
    before = _listing(tmp_path)
    what = {"compare": "a comparison", "tune": "a sweep"}[command]
    models = "--models=Pop" if command == "compare" else "--model=BPR"
    toy = [a for a in TOY_ARGS if not a.startswith("--embedding_size")]  # BPR's search space searches it
    code, _, err = _console(capsys, tmp_path, command, models, *toy,
                            f"--data_path={trained['root'] / 'mydata'}", f"--out={tmp_path / 'd'}")
    message = _refused(code, err, command)
    assert message.endswith(f"--out {tmp_path / 'd'} exists and is not {what} written by {command} (it holds "
                            "notes.txt); choose a new folder or remove it"), message
    assert _listing(tmp_path) == before


def test_folder_rule_recognises_earlier_outputs(tmp_path):
    """A comparison copied without its lock file, a sweep folder, an empty folder: ours or new; a file: refused."""
    from recbole_promptmm.experiments.compare import COMPARISON_MARKERS
    from recbole_promptmm.files import OutputExistsError, check_output_folder, marked_by

    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "results.json").write_text(json.dumps({"protocol": {}, "significance": [], "summary": {}}))
    assert check_output_folder(str(tmp_path / "cmp"), "--out", "compare", "a comparison", marked_by(COMPARISON_MARKERS))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text(json.dumps({"mine": 1}))
    with pytest.raises(OutputExistsError, match=r"\(it holds results.json\)"):
        check_output_folder(str(tmp_path / "other"), "--out", "compare", "a comparison", marked_by(COMPARISON_MARKERS))
    (tmp_path / "empty").mkdir()
    assert not check_output_folder(str(tmp_path / "empty"), "--out", "compare", "a comparison", marked_by({}))
    assert not check_output_folder(str(tmp_path / "new"), "--out", "compare", "a comparison", marked_by({}))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="is a file; expected a folder"):
        check_output_folder(str(tmp_path / "file"), "--out", "compare", "a comparison", marked_by({}))
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    with pytest.raises(OutputExistsError, match="is a symbolic link"):
        check_output_folder(str(tmp_path / "link"), "--out", "compare", "a comparison", marked_by({}))
