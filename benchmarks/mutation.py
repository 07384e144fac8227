"""Mutation testing of the maths modules with mutmut 3 (a benchmark of the tests; not part of CI).

    pip install 'mutmut>=3.8,<4'      # not a project dependency
    OMP_NUM_THREADS=1 python benchmarks/mutation.py [--modules=losses,graph] [--ref=HEAD] [--max_children=1]

mutmut changes one expression at a time in the modules and runs the tests that reach the changed function: a mutant
is *killed* when a test fails, *survived* when every test still passes, *timeout* when the tests ran far longer
than unmutated. It runs in a scratch copy of the package, ``properties/`` and ``tests/`` (the working tree, or the
files of ``--ref``), never in the checkout; the copy is kept (``mutmut show NAME``, ``mutmut browse`` there).
Prints a markdown table per module (killed / survived / timeout / no tests) and every survivor as ``file:line``
with the original and mutated line. Defaults: every module of ``recbole_promptmm/model/`` against the fast maths
tests. docs/MUTATION.md has the figures and a judgement of each survivor.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from _common import parser

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = "recbole_promptmm/model"
TESTS = ("tests/test_losses.py", "tests/test_item_graph.py", "tests/test_maths_*.py", "tests/test_mmhcl.py",
         "tests/test_vbpr_bm3.py")
COPIED = ("recbole_promptmm", "properties", "tests")
# mutmut's exit codes of a mutant's test run (mutmut/stats.py), folded into the columns printed here; a test process
# that crashes (SIGSEGV, -11: e.g. a sparse matrix built without its values) fails the suite, so it counts as killed
STATUS = {1: "killed", 3: "killed", 37: "killed", -11: "killed", 0: "survived", 36: "timeout", 24: "timeout",
          -24: "timeout", 152: "timeout", 255: "timeout", 5: "no tests", 33: "no tests"}
COLUMNS = ("killed", "survived", "timeout", "no tests", "other")


def module_paths(spec: str) -> list[str]:
    """``losses,graph`` or ``recbole_promptmm/model/losses.py`` (empty: every module there): package paths."""
    known = sorted(p.stem for p in (REPO / MODEL_DIR).glob("*.py") if p.name != "__init__.py")
    paths = [m if "/" in m else f"{MODEL_DIR}/{m.removesuffix('.py')}.py"
             for m in ([m.strip() for m in spec.split(",") if m.strip()] or known)]
    for path in paths:
        if not (REPO / path).is_file():
            raise SystemExit(f"mutation: no module {path} (known: {', '.join(known)})")
    return paths


def prepare(workdir: Path, ref: str, modules: list[str], tests: list[str]) -> None:
    """The scratch copy (working tree or ``ref``) and its mutmut configuration (setup.cfg)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if ref:
        archive = subprocess.run(["git", "archive", "--format=tar", ref, *COPIED], cwd=REPO, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)
    else:
        for name in COPIED:
            shutil.copytree(REPO / name, workdir / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    missing = [t for t in tests if not (workdir / t).is_file()]
    if missing:
        raise SystemExit(f"mutation: test files not in the copy: {', '.join(missing)}")
    lines = ["[mutmut]", "source_paths = recbole_promptmm", "only_mutate =", *(f"    {m}" for m in modules),
             "also_copy =", "    properties", "pytest_add_cli_args_test_selection =", *(f"    {t}" for t in tests),
             "pytest_add_cli_args =", "    -p", "    no:cacheprovider", "timeout_multiplier = 15.0",
             "use_git_change_detection = false", ""]
    (workdir / "setup.cfg").write_text("\n".join(lines))


def exit_codes(workdir: Path, module: str) -> dict[str, int | None]:
    meta = workdir / "mutants" / f"{module}.meta"
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}


def describe(workdir: Path, module: str, name: str) -> dict:
    """A mutant as ``{"name", "function", "line", "before", "after"}``; its line: the first line of its function (found
    with ``ast``) that reads as the diff's original line (in docs/MUTATION.md's 147 survivors, always the only one)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    function, cls = orig_function_and_class_names_from_key(name)
    diff = get_diff_for_mutant(name, path=module).splitlines()[2:]
    before = [line[1:].strip() for line in diff if line.startswith("-")]
    source = (workdir / module).read_text()
    lines, tree = source.splitlines(), ast.parse(source)
    scopes = [c.body for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and c.name == cls] if cls else [ast.walk(tree)]
    node = next(f for body in scopes for f in body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                and f.name == function)
    hits = [i + 1 for i in range(node.lineno - 1, node.end_lineno) if before and lines[i].strip() == before[0]]
    return {"name": name.rsplit(".", 1)[-1], "function": f"{cls}.{function}" if cls else function,
            "line": hits[0] if hits else None, "before": before,
            "after": [line[1:].strip() for line in diff if line.startswith("+")]}


def report(workdir: Path, modules: list[str]) -> tuple[pd.DataFrame, list[dict]]:
    """(mutants per status and module, with an ``all`` row and the score; the survivors) of a finished run."""
    os.chdir(workdir)  # mutmut's helpers read mutants/ relative to the working directory
    table = pd.DataFrame([{"module": m, **Counter(STATUS.get(c, "other") for c in exit_codes(workdir, m).values())}
                          for m in modules]).reindex(columns=["module", *COLUMNS]).fillna(0)
    table[list(COLUMNS)] = table[list(COLUMNS)].astype(int)
    if len(table) > 1:
        table.loc[len(table)] = ["all", *table[list(COLUMNS)].sum()]
    table.insert(1, "mutants", table[list(COLUMNS)].sum(axis=1))
    tested = table["mutants"] - table["no tests"]
    table["score"] = (100 * table["killed"] / tested.where(tested > 0)).map(lambda s: f"{s:.1f}%", na_action="ignore")
    survivors = sorted(({"module": m, **describe(workdir, m, name)} for m in modules
                        for name, c in exit_codes(workdir, m).items() if STATUS.get(c) == "survived"),
                       key=lambda s: (s["module"], s["line"] or 0, s["name"]))
    return table, survivors


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--modules", default="", help="comma-separated modules of recbole_promptmm/model (losses,graph) or "
                                                 "package paths; default: every module there")
    p.add_argument("--tests", default="", help="comma-separated test files (default: the fast maths tests)")
    p.add_argument("--ref", default="", help="mutate the files of this git revision (default: the working tree)")
    p.add_argument("--workdir", default="", help="scratch folder (default: a new one under the temp folder)")
    p.add_argument("--max_children", type=int, default=1, help="mutants tested at once (CPU cores to use)")
    args = p.parse_args()
    try:
        found = version("mutmut")
    except PackageNotFoundError:
        found = "none"
    if not found.startswith("3."):
        raise SystemExit(f"mutation: mutmut 3 needed, found {found} (not a project dependency): "
                         f"{sys.executable} -m pip install 'mutmut>=3.8,<4'")
    modules = module_paths(args.modules)
    tests = args.tests.replace(",", " ").split() or [str(t.relative_to(REPO)) for g in TESTS for t in
                                                     sorted(REPO.glob(g))]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="promptmm-mutation-")).resolve()
    if args.workdir and workdir.exists() and any(workdir.iterdir()):
        raise SystemExit(f"mutation: {workdir} is not empty (mutmut would reuse old results); pick another")
    prepare(workdir, args.ref, modules, tests)
    print(f"mutmut {found}: {len(modules)} module(s) from {args.ref or 'the working tree'}, tests: {', '.join(tests)}")
    print(f"scratch copy: {workdir} (progress in mutmut.log there)", flush=True)
    start = time.perf_counter()
    with open(workdir / "mutmut.log", "w") as log:
        code = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)],
                              cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                              env={"OMP_NUM_THREADS": "1", **os.environ}).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        print((workdir / "mutmut.log").read_text()[-4000:], file=sys.stderr)
        print(f"mutation: mutmut run exited with {code}", file=sys.stderr)
        return 1

    table, survivors = report(workdir, modules)
    print("\n" + table.to_markdown(index=False, tablefmt="github", missingval="-"))
    print("(score: killed / mutants a test reaches; 'no tests': no selected test calls the function; 'other': "
          f"suspicious, killed by SIGKILL, skipped or not checked) in {seconds:.0f} s\n\nsurvivors ({len(survivors)}):")
    for s in survivors:
        print(f"  {s['module']}:{s['line']}  {s['function']}  [{s['name']}]")
        print("".join(f"      - {b}\n" for b in s["before"]) + "".join(f"      + {a}\n" for a in s["after"]), end="")
    print(f"\nin {workdir}: mutmut show NAME (one mutant), mutmut browse (all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
