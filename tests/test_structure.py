"""benchmarks/structure.py's counters on a tiny hand-made checkout whose figures are known line by line."""

from __future__ import annotations

import importlib
import json
import textwrap

import pytest

structure = importlib.import_module("benchmarks.structure")

REGISTRY = '''\
def get_trainer(model_type, name):
    return name


DEFAULT = get_trainer(1, "x")
'''

# run.py: the docstring names the teacher (does not count); line 4 names student in code (counts, its comment does
# not add); line 5 holds a string naming a Teacher (counts); line 6 only a comment naming the teacher (does not).
# route (line 9) is 27 lines long, 25 of them code (docstring and blank line out), complexity 11; inner's is 2;
# helper (line 38) is 4 lines long, complexity 2.
RUN = '''\
"""Runs the teacher, then the student."""
from recbole_promptmm import registry

student_weight = 0.5  # the student's share
NAME = "PromptMMTeacher"
# the teacher is frozen

'''
ROUTE = '''\
def route(a, b, xs):
    """The teacher decides; the student follows."""
    if a and b or not a:
        return registry.get_trainer(a, b)
    elif b:
        return 2
    for x in xs:
        while x:
            x -= 1
    try:
        pass
    except ValueError:
        pass
    except KeyError:
        pass
    else:
        pass
    with open(a) as f:
        f.read()
    ys = [y for y in xs if y]
    if ys:
        pass

    def inner():
        if a:
            return 1
    return inner
'''
HELPER = '''\
def helper(flag):
    if flag:
        return 1
    return 0
'''
TEACHER_MODEL = '''\
class Teacher:
    teacher_dim = 4
'''
TOOL = '''\
"""A tool: 3 code lines."""

from recbole_promptmm.registry import get_trainer
trainer = get_trainer("general", "BPR")  # builds a trainer
print(trainer)
'''
CORE = '''\
def fit(model):
    # a comment
    return model
'''


@pytest.fixture
def tiny(tmp_path):
    """A checkout with recbole_promptmm/{registry,run}.py, model/teacher.py, trainer/base.py and benchmarks/b.py."""
    files = {
        "recbole_promptmm/__init__.py": "", "recbole_promptmm/registry.py": REGISTRY,
        "recbole_promptmm/run.py": RUN + "\n" + ROUTE + "\n\n" + HELPER,
        "recbole_promptmm/model/teacher.py": TEACHER_MODEL, "recbole_promptmm/trainer/base.py": CORE,
        "benchmarks/b.py": TOOL,
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_figures_of_a_tiny_checkout(tiny):
    fig = structure.measure(tiny)
    # registry.py is the engine (its own call does not count); run.py's attribute call and b.py's name call do
    assert fig["trainer_builders"] == {"recbole_promptmm/run.py": [12], "benchmarks/b.py": [4]}
    # run.py: student_weight (4), "PromptMMTeacher" (5); the docstrings, the comments and model/ do not count
    assert fig["distillation_lines"] == {"recbole_promptmm/run.py": 2}
    funcs = {row["name"]: row for row in fig["functions"]}
    assert set(funcs) == {"get_trainer", "route", "route.inner", "helper", "fit"}
    assert (funcs["route"]["line"], funcs["route"]["length"], funcs["route"]["code_lines"]) == (9, 27, 25)
    # 1 + if + elif + for + while + 2 handlers + try's else + if + def inner + its if (and/or, with, comprehension: 0)
    assert funcs["route"]["complexity"] == 11
    assert (funcs["route.inner"]["complexity"], funcs["helper"]["line"], funcs["helper"]["length"]) == (2, 38, 4)
    assert funcs["helper"]["complexity"] == 2
    assert fig["functions"][0]["name"] == "route"
    # tooling: benchmarks/b.py's 3 code lines; core: trainer/base.py's 2 and model/teacher.py's 2
    assert (fig["tooling_lines"], fig["core_lines"], fig["tooling_ratio"]) == (3, 4, 0.75)
    if fig["ruff_c901"] is not None:  # ruff, where installed, agrees: route is the one function above 10
        assert fig["ruff_c901"]["count"] == 1 and "`route` is too complex (11 > 10)" in fig["ruff_c901"]["functions"][0]


def test_report_and_json(tiny, tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert structure.main(["--root", str(tiny), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1. files outside the engine that build a trainer (get_trainer calls): 2 (target 0: misses)" in text
    assert "2. code lines naming teacher/student outside" in text and ": 2 in 1 files (target <= 10: meets)" in text
    assert "4. functions with McCabe complexity above 10: 1 (target none: misses)" in text
    assert "5. tooling / core code lines: 3 / 4 = 0.75 (target <= 0.75: meets)" in text
    saved = json.loads(out.read_text())
    assert saved["targets"]["tooling_ratio"] == 0.75 and saved["distillation_lines"] == {"recbole_promptmm/run.py": 2}


def test_a_file_that_does_not_parse_is_one_line(tiny, capsys):
    (tiny / "recbole_promptmm" / "broken.py").write_text("def f(:\n")
    assert structure.main(["--root", str(tiny)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("structure.py: error: recbole_promptmm/broken.py: does not parse") and err.count("\n") == 1


def test_counters_on_text():
    src = structure.load_text("m.py", textwrap.dedent('''\
        def f():
            """teacher"""
            s = """multi
            line"""
            return s
        '''))
    assert structure.code_rows(src) == {1, 3, 4, 5}
    assert structure.naming_rows(src) == set()
