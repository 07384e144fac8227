"""Mutation testing of the maths modules with mutmut (a benchmark of the tests; not part of CI).

    pip install 'mutmut>=3.8,<4'      # not a project dependency (or pass --install)
    OMP_NUM_THREADS=1 python benchmarks/mutation.py [--modules=losses,graph] [--ref=HEAD] [--max_children=1]

mutmut changes one expression at a time (``+`` to ``-``, ``dim=-1`` to ``dim=+1``, a constant ``2.0`` to
``3.0``, ...) in the modules and runs the tests that reach the changed function: a mutant is *killed* when a test
fails, *survived* when every test still passes (a change in the maths no test notices, or an equivalent change),
*timeout* when the tests ran far longer than unmutated. The run happens in a scratch copy of the package, its
``properties/`` and ``tests/`` (the working tree, or the files of ``--ref``): the checkout is never touched, so
training jobs that import the package meanwhile are safe. The copy is kept; in it, ``mutmut show NAME`` prints a
mutant and ``mutmut browse`` browses them all.

Prints, per module, the mutants killed / survived / timed out (and those no selected test reaches), then every
survivor as ``file:line`` with the original and the mutated line. Defaults: every module of
``recbole_promptmm/model/`` and the fast maths tests (tests/test_losses.py, test_item_graph.py, test_maths_*.py,
test_mmhcl.py, test_vbpr_bm3.py; those that exist). Over all the models this takes a long while (thousands of
mutants); ``--modules=losses`` takes about a minute. docs/MUTATION.md has the figures and a judgement of each
survivor of losses.py.
"""

from __future__ import annotations

import argparse
import ast
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "recbole_promptmm"
MODEL_DIR = f"{PACKAGE}/model"
TEST_PATTERNS = ("tests/test_losses.py", "tests/test_item_graph.py", "tests/test_maths_*.py", "tests/test_mmhcl.py",
                 "tests/test_vbpr_bm3.py")
COPIED = (PACKAGE, "properties", "tests")
MUTMUT = "mutmut>=3.8,<4"
# mutmut's exit codes of a mutant's test run (mutmut/stats.py), folded into the columns printed here; a test process
# that crashes (SIGSEGV, -11: e.g. a sparse matrix built without its values) fails the suite, so it counts as killed
STATUS = {1: "killed", 3: "killed", 37: "killed", -11: "killed", 0: "survived", 36: "timeout", 24: "timeout",
          -24: "timeout", 152: "timeout", 255: "timeout", 5: "no tests", 33: "no tests", 34: "skipped",
          None: "not checked"}
COLUMNS = ("killed", "survived", "timeout", "no tests", "other")


def default_modules() -> list[str]:
    return sorted(p.name for p in (REPO / MODEL_DIR).glob("*.py") if p.name != "__init__.py")


def default_tests() -> list[str]:
    return [str(Path(p).relative_to(REPO)) for pattern in TEST_PATTERNS for p in sorted(REPO.glob(pattern))]


def module_paths(spec: str) -> list[str]:
    """``losses,graph`` or ``recbole_promptmm/model/losses.py``: package-relative paths of the modules."""
    names = [m.strip() for m in spec.split(",") if m.strip()] if spec else default_modules()
    paths = []
    for name in names:
        path = name if "/" in name else f"{MODEL_DIR}/{name if name.endswith('.py') else name + '.py'}"
        if not (REPO / path).is_file():
            raise SystemExit(f"mutation: no module {path} (known: {', '.join(default_modules())})")
        paths.append(path)
    return paths


def ensure_mutmut(install: bool) -> str:
    """mutmut's version; installs it with pip when ``install``, else explains how."""
    try:
        from importlib.metadata import version

        found = version("mutmut")
    except Exception:
        found = None
    if found is None and install:
        subprocess.run([sys.executable, "-m", "pip", "install", MUTMUT], check=True)
        return ensure_mutmut(False)
    if found is None:
        raise SystemExit(f"mutation: mutmut is not installed (it is not a project dependency). Install it with\n"
                         f"    {sys.executable} -m pip install '{MUTMUT}'\nor run this script with --install.")
    if not found.startswith("3."):
        raise SystemExit(f"mutation: mutmut {found} found; this script drives mutmut 3 (pip install '{MUTMUT}')")
    return found


def prepare(workdir: Path, ref: str | None, modules: list[str], tests: list[str], timeout_multiplier: float) -> None:
    """The scratch copy (working tree or ``ref``) and its mutmut configuration (setup.cfg)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if ref:
        archive = subprocess.run(["git", "archive", "--format=tar", ref, *COPIED], cwd=REPO, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)
    else:
        for name in COPIED:
            shutil.copytree(REPO / name, workdir / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
    missing = [t for t in tests if not (workdir / t).is_file()]
    if missing:
        raise SystemExit(f"mutation: test files not in the copy: {', '.join(missing)}")
    lines = ["[mutmut]", f"source_paths = {PACKAGE}", "only_mutate =", *(f"    {m}" for m in modules),
             "also_copy =", "    properties", "pytest_add_cli_args_test_selection =", *(f"    {t}" for t in tests),
             "pytest_add_cli_args =", "    -p", "    no:cacheprovider", f"timeout_multiplier = {timeout_multiplier}",
             "use_git_change_detection = false", ""]
    (workdir / "setup.cfg").write_text("\n".join(lines))


def run_mutmut(workdir: Path, max_children: int) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log = workdir / "mutmut.log"
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)],
                              cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    return done.returncode


def exit_codes(workdir: Path, module: str) -> dict[str, int | None]:
    meta = workdir / "mutants" / f"{module}.meta"
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}


def function_span(source: str, name: str, cls: str | None) -> tuple[int, int] | None:
    """(first, last) line of function ``name`` (of class ``cls``), decorators included."""
    for node in ast.walk(ast.parse(source)):
        if cls is not None and not (isinstance(node, ast.ClassDef) and node.name == cls):
            continue
        body = node.body if cls is not None else [node]
        for item in body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == name:
                first = min([item.lineno, *(d.lineno for d in item.decorator_list)])
                return first, item.end_lineno or first
    return None


def describe(workdir: Path, module: str, name: str) -> dict:
    """A mutant as ``{"name", "line", "before", "after", "function"}`` (its line in the unmutated copy)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    function, cls = orig_function_and_class_names_from_key(name)
    diff = get_diff_for_mutant(name, path=module).splitlines()
    before = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    after = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    offset, old = None, 0
    for line in diff[2:]:
        hunk = re.match(r"@@ -(\d+)", line)
        if hunk:
            old = int(hunk.group(1)) - 1
            continue
        if line.startswith((" ", "-")):
            old += 1
        if line.startswith("-") and offset is None:
            offset = old
    source = (workdir / module).read_text()
    lines, span = source.splitlines(), function_span(source, function, cls)
    number = None
    if span and before:
        guess = span[0] + (offset or 1) - 1
        hits = [i + 1 for i in range(max(0, span[0] - 20), span[1]) if lines[i].strip() == before[0].strip()]
        number = min(hits, key=lambda n: abs(n - guess)) if hits else guess
    return {"name": name.rsplit(".", 1)[-1], "function": f"{cls}.{function}" if cls else function, "line": number,
            "before": [b.strip() for b in before], "after": [a.strip() for a in after]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modules", default="", help="comma-separated modules of recbole_promptmm/model (losses,graph) or "
                                                 "package paths; default: every module there")
    p.add_argument("--tests", default="", help="comma-separated test files (default: the fast maths tests)")
    p.add_argument("--ref", default="", help="mutate the files of this git revision (default: the working tree)")
    p.add_argument("--workdir", default="", help="scratch folder (default: a new one under the temp folder)")
    p.add_argument("--max_children", type=int, default=1, help="mutants tested at once (CPU cores to use)")
    p.add_argument("--timeout_multiplier", type=float, default=15.0,
                   help="a mutant times out past this multiple of the unmutated tests' time (mutmut's default)")
    p.add_argument("--json", default="", help="also write the figures and survivors to this file")
    p.add_argument("--install", action="store_true", help=f"pip install '{MUTMUT}' when it is missing")
    args = p.parse_args()

    version = ensure_mutmut(args.install)
    json_path = Path(args.json).resolve() if args.json else None
    modules = module_paths(args.modules)
    tests = [t.strip() for t in args.tests.split(",") if t.strip()] or default_tests()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="promptmm-mutation-")).resolve()
    if args.workdir and workdir.exists() and any(workdir.iterdir()):
        raise SystemExit(f"mutation: {workdir} is not empty (mutmut would reuse old results); pick another")
    prepare(workdir, args.ref or None, modules, tests, args.timeout_multiplier)
    print(f"mutmut {version}: {len(modules)} module(s) from {args.ref or 'the working tree'}, "
          f"tests: {', '.join(tests)}")
    print(f"scratch copy: {workdir} (progress in mutmut.log there)", flush=True)
    start = time.perf_counter()
    code = run_mutmut(workdir, args.max_children)
    seconds = time.perf_counter() - start
    if code != 0:
        print((workdir / "mutmut.log").read_text()[-4000:], file=sys.stderr)
        print(f"mutation: mutmut run exited with {code}", file=sys.stderr)
        return 1

    os.chdir(workdir)  # mutmut's helpers read mutants/ relative to the working directory
    table, survivors = [], []
    for module in modules:
        counts = Counter(STATUS.get(c, "other") if STATUS.get(c, "other") in COLUMNS else "other"
                         for c in exit_codes(workdir, module).values())
        table.append({"module": module, "mutants": sum(counts.values()), **{c: counts[c] for c in COLUMNS}})
        for name, c in sorted(exit_codes(workdir, module).items(), key=lambda kv: kv[0]):
            if STATUS.get(c) == "survived":
                survivors.append({"module": module, **describe(workdir, module, name)})
    survivors.sort(key=lambda s: (s["module"], s["line"] or 0, s["name"]))

    total = {"module": "all", "mutants": sum(r["mutants"] for r in table),
             **{c: sum(r[c] for r in table) for c in COLUMNS}}
    width = max(len(r["module"]) for r in table + [total])
    print(f"\n{'module':{width}s} {'mutants':>7s} {'killed':>7s} {'survived':>8s} {'timeout':>7s} {'no tests':>8s} "
          f"{'other':>5s} {'score':>6s}")
    for r in table + ([total] if len(table) > 1 else []):
        tested = r["mutants"] - r["no tests"]
        score = f"{100 * r['killed'] / tested:5.1f}%" if tested else "-"
        print(f"{r['module']:{width}s} {r['mutants']:7d} {r['killed']:7d} {r['survived']:8d} {r['timeout']:7d} "
              f"{r['no tests']:8d} {r['other']:5d} {score:>6s}")
    print("(score: killed / mutants a test reaches; 'no tests': no selected test calls the function; 'other': "
          f"suspicious, killed by SIGKILL, skipped or not checked) in {seconds:.0f} s")
    print(f"\nsurvivors ({len(survivors)}):")
    for s in survivors:
        print(f"  {s['module']}:{s['line']}  {s['function']}  [{s['name']}]")
        for b in s["before"]:
            print(f"      - {b}")
        for a in s["after"]:
            print(f"      + {a}")
    if json_path:
        json_path.write_text(json.dumps({"mutmut": version, "ref": args.ref or "working tree", "tests": tests,
                                               "seconds": seconds, "modules": table, "survivors": survivors}, indent=1))
    print(f"\nin {workdir}: mutmut show NAME (one mutant), mutmut browse (all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
