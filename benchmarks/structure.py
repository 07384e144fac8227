"""Issue 28's structure figures ("One run engine, and distillation as a plug-in"), each with its target.

Usage: python benchmarks/structure.py [--root DIR] [--json FILE]

Standard library only (ast, tokenize); it reads the source and imports nothing of it. The figures:

1. files outside the engine that build a trainer: calls ``get_trainer(...)`` (a call whose function is the name
   or the attribute ``get_trainer``) in the package and in benchmarks/, outside ENGINE_FILES. Target 0.
2. code lines naming teacher or student outside DISTILLATION_FILES, in the package: a physical line counts when it
   holds a NAME or STRING token whose text contains ``teacher`` or ``student`` (any case). Comments, docstrings
   (a string statement first in a module, class or function) and blank lines never count. Target <= 10.
3. function length: ``end_lineno - lineno + 1`` from the ``def`` line (decorators out; the docstring, comments,
   blank lines and nested functions in), and beside it the function's code lines (CODE LINES below). Target <= 60.
4. McCabe complexity as ruff's C901 counts it (the mccabe package's graph, in closed form): 1, +1 per ``if``,
   ``elif``, ``for``, ``while``, ``match``, ``except`` handler, ``try``'s ``else`` and nested ``def`` (whose own
   branches count in the outer function too, and again on their own). ``with``, ``finally``, boolean operators,
   conditional expressions and comprehensions add nothing. Target: no function above 10.
5. tooling against core, in code lines: TOOLING over CORE. Target <= 0.75.

CODE LINES: physical lines holding a token other than a comment, a newline, an indent or a docstring; a string
token spanning several lines counts each of them.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import shutil
import subprocess
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "recbole_promptmm/"
SCANNED = (PACKAGE, "benchmarks/")
# Where a trainer may be built: today only get_trainer's definition; the run engine's files join it (issue 28).
ENGINE_FILES = ("recbole_promptmm/registry.py",)
# The distillation methods' own files, where teacher and student may be named: the models and PromptMM's trainer.
# An entry ending in "/" is a folder.
DISTILLATION_FILES = ("recbole_promptmm/model/", "recbole_promptmm/trainer/promptmm.py")
TOOLING = ("recbole_promptmm/experiments/", "recbole_promptmm/tune/", "recbole_promptmm/compare/", "benchmarks/")
CORE = ("recbole_promptmm/model/", "recbole_promptmm/trainer/", "recbole_promptmm/data/")
WORDS = ("teacher", "student")
TARGETS = {"trainer_builders": 0, "distillation_lines": 10, "longest_function": 60, "max_complexity": 10,
           "tooling_ratio": 0.75}
TRIVIA = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING,
          tokenize.ENDMARKER}
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
SCOPES = (ast.Module, ast.ClassDef) + FUNCTIONS


@dataclass
class Source:
    """One parsed file: its path relative to the root (with "/"), tree, tokens and docstring rows."""

    rel: str
    tree: ast.Module
    tokens: list = field(repr=False)
    docstrings: set = field(repr=False)


def in_any(rel: str, entries) -> bool:
    """Whether ``rel`` is one of ``entries`` or lies in one of them (an entry ending in "/" is a folder)."""
    return any(rel.startswith(entry) if entry.endswith("/") else rel == entry for entry in entries)


def docstring_rows(tree: ast.Module) -> set:
    """The rows of every docstring: the first statement of a module, class or function when it is a string."""
    rows = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None) if isinstance(node, SCOPES) else None
        first = body[0] if body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value,
                                                                                                 str):
            rows.update(range(first.lineno, first.end_lineno + 1))
    return rows


def load_text(rel: str, text) -> Source:
    """Parse ``text`` (str or bytes) of the file ``rel``; one that does not parse is one line naming it and why."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        tree = ast.parse(data, filename=rel)
        tokens = list(tokenize.tokenize(io.BytesIO(data).readline))
    except (SyntaxError, tokenize.TokenError) as err:
        raise ValueError(f"{rel}: does not parse ({err})") from None
    return Source(rel, tree, tokens, docstring_rows(tree))


def load(path: Path, root: Path) -> Source:
    """Parse the file ``path`` under ``root``."""
    return load_text(path.relative_to(root).as_posix(), path.read_bytes())


def sources(root: Path) -> list:
    """Every .py file under the scanned folders of ``root``, parsed, in path order."""
    found = []
    for folder in SCANNED:
        base = root / folder
        found += sorted(base.rglob("*.py")) if base.is_dir() else []
    return [load(path, root) for path in found]


def is_docstring(token, src: Source) -> bool:
    """Whether ``token`` is (part of) a docstring."""
    return token.type == tokenize.STRING and token.start[0] in src.docstrings


def code_rows(src: Source, first: int = 1, last: int | None = None) -> set:
    """The code lines of ``src`` (see CODE LINES in the module's docstring), within rows first..last."""
    rows = set()
    for token in src.tokens:
        if token.type not in TRIVIA and not is_docstring(token, src):
            rows.update(range(token.start[0], token.end[0] + 1))
    return {row for row in rows if row >= first and (last is None or row <= last)}


def naming_rows(src: Source, words=WORDS) -> set:
    """The rows where a NAME or STRING token (docstrings out) holds one of ``words``, any case."""
    kinds = {tokenize.NAME, tokenize.STRING} | ({tokenize.FSTRING_MIDDLE} if hasattr(tokenize, "FSTRING_MIDDLE")
                                                else set())
    rows = set()
    for token in src.tokens:
        if token.type not in kinds or is_docstring(token, src):
            continue
        for offset, piece in enumerate(token.string.lower().split("\n")):
            if any(word in piece for word in words):
                rows.add(token.start[0] + offset)
    return rows


def trainer_calls(src: Source) -> list:
    """The rows of the calls ``get_trainer(...)`` and ``x.get_trainer(...)`` in ``src``."""
    rows = []
    for node in ast.walk(src.tree):
        func = node.func if isinstance(node, ast.Call) else None
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name == "get_trainer":
            rows.append(node.lineno)
    return sorted(rows)


def complexity(body: list) -> int:
    """Decision points of the statements ``body``, as ruff's C901 counts them (see figure 4 in the module's
    docstring); a function's complexity is 1 + complexity(its body)."""
    total = 0
    for stmt in body:
        if isinstance(stmt, ast.If):
            total += 1 + complexity(stmt.body) + complexity(stmt.orelse)  # an elif is an If in orelse
        elif isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
            total += 1 + complexity(stmt.body) + complexity(stmt.orelse)
        elif isinstance(stmt, ast.Match):
            total += 1 + sum(complexity(case.body) for case in stmt.cases)
        elif isinstance(stmt, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            total += len(stmt.handlers) + bool(stmt.orelse) + complexity(stmt.body) + complexity(stmt.orelse)
            total += complexity(stmt.finalbody) + sum(complexity(handler.body) for handler in stmt.handlers)
        elif isinstance(stmt, FUNCTIONS):
            total += 1 + complexity(stmt.body)
        elif isinstance(stmt, (ast.ClassDef, ast.With, ast.AsyncWith)):
            total += complexity(stmt.body)
    return total


def functions(src: Source) -> list:
    """One row per function or method of ``src`` (nested ones too): file, line, qualified name, length (def line
    to last line), code lines and complexity."""
    rows = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, FUNCTIONS + (ast.ClassDef,)):
                name = f"{prefix}{child.name}"
                if isinstance(child, FUNCTIONS):
                    rows.append({"file": src.rel, "line": child.lineno, "name": name,
                                 "length": child.end_lineno - child.lineno + 1,
                                 "code_lines": len(code_rows(src, child.lineno, child.end_lineno)),
                                 "complexity": 1 + complexity(child.body)})
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(src.tree, "")
    return rows


def count_lines(parsed: list, entries) -> int:
    """Code lines of the files in ``entries``."""
    return sum(len(code_rows(src)) for src in parsed if in_any(src.rel, entries))


def measure(root: Path = ROOT) -> dict:
    """The five figures for the tree at ``root`` (its recbole_promptmm/ and benchmarks/)."""
    parsed = sources(root)
    package = [src for src in parsed if src.rel.startswith(PACKAGE)]
    builders = {src.rel: trainer_calls(src) for src in parsed if not in_any(src.rel, ENGINE_FILES)}
    naming = {src.rel: len(naming_rows(src)) for src in package if not in_any(src.rel, DISTILLATION_FILES)}
    funcs = [row for src in package for row in functions(src)]
    tooling, core = count_lines(parsed, TOOLING), count_lines(parsed, CORE)
    return {
        "trainer_builders": {rel: rows for rel, rows in builders.items() if rows},
        "distillation_lines": {rel: n for rel, n in sorted(naming.items(), key=lambda kv: (-kv[1], kv[0])) if n},
        "functions": sorted(funcs, key=lambda row: (-row["length"], row["file"], row["line"])),
        "tooling_lines": tooling, "core_lines": core,
        "tooling_ratio": round(tooling / core, 3) if core else None,
        "package_code_lines": count_lines(parsed, (PACKAGE,)),
        "ruff_c901": ruff_c901(root),
    }


def ruff_command() -> list | None:
    """How to run ruff: on PATH, beside this Python, or as ``python -m ruff``; None without it."""
    beside = Path(sys.executable).parent / "ruff"
    found = shutil.which("ruff") or (str(beside) if beside.is_file() else None)
    if found:
        return [found]
    probe = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True)
    return [sys.executable, "-m", "ruff"] if probe.returncode == 0 else None


def ruff_c901(root: Path) -> dict | None:
    """ruff's C901 findings at max-complexity 10 on the package: {"version", "count", "functions"}; None without
    ruff or when it fails."""
    command = ruff_command()
    if command is None or not (root / PACKAGE).is_dir():
        return None
    args = ["check", "--isolated", "--no-cache", "--select", "C901", "--config", "lint.mccabe.max-complexity=10",
            "--output-format", "json", "--exit-zero", PACKAGE.rstrip("/")]
    done = subprocess.run(command + args, cwd=root, capture_output=True, text=True)
    version = subprocess.run(command + ["--version"], capture_output=True, text=True).stdout.strip()
    try:
        found = json.loads(done.stdout)
    except json.JSONDecodeError:
        return None
    names = sorted(f"{Path(d['filename']).relative_to(root.resolve()).as_posix()}:{d['location']['row']} "
                   f"{d['message']}" for d in found)
    return {"version": version, "count": len(found), "functions": names}


def verdict(value, target) -> str:
    """'meets' or 'misses' the target (a most)."""
    return "meets" if value is not None and value <= target else "misses"


def report_builders(fig: dict) -> list:
    """Figure 1's lines."""
    builders = fig["trainer_builders"]
    lines = [f"1. files outside the engine that build a trainer (get_trainer calls): {len(builders)} "
             f"(target {TARGETS['trainer_builders']}: {verdict(len(builders), TARGETS['trainer_builders'])}); "
             f"engine: {', '.join(ENGINE_FILES)}"]
    lines += [f"   {rel}: line {', '.join(map(str, rows))}" for rel, rows in builders.items()]
    return lines


def report_naming(fig: dict) -> list:
    """Figure 2's lines (top 15 files)."""
    naming = fig["distillation_lines"]
    total = sum(naming.values())
    lines = [f"2. code lines naming teacher/student outside {', '.join(DISTILLATION_FILES)}: {total} in "
             f"{len(naming)} files (target <= {TARGETS['distillation_lines']}: "
             f"{verdict(total, TARGETS['distillation_lines'])})"]
    lines += [f"   {n:4d}  {rel}" for rel, n in list(naming.items())[:15]]
    return lines


def report_functions(fig: dict) -> list:
    """Figures 3 and 4's lines."""
    funcs = fig["functions"]
    longest = funcs[0]["length"] if funcs else 0
    over = [row for row in funcs if row["length"] > TARGETS["longest_function"]]
    lines = [f"3. longest functions (def line to last line, docstring in; code lines beside): longest {longest}, "
             f"{len(over)} over {TARGETS['longest_function']} (target <= {TARGETS['longest_function']}: "
             f"{verdict(longest, TARGETS['longest_function'])})"]
    lines += [f"   {row['length']:4d} ({row['code_lines']:3d} code)  {row['file']}:{row['line']} {row['name']}"
              for row in funcs[:10]]
    complex_ = sorted((row for row in funcs if row["complexity"] > TARGETS["max_complexity"]),
                      key=lambda row: (-row["complexity"], row["file"], row["line"]))
    lines.append(f"4. functions with McCabe complexity above {TARGETS['max_complexity']}: {len(complex_)} "
                 f"(target none: {verdict(len(complex_), 0)})")
    lines += [f"   {row['complexity']:4d}  {row['file']}:{row['line']} {row['name']}" for row in complex_]
    ruff = fig["ruff_c901"]
    lines.append(f"   ruff's C901 at max-complexity 10 ({ruff['version']}): {ruff['count']}" if ruff else
                 "   ruff's C901: ruff not installed")
    return lines


def report(fig: dict) -> str:
    """The plain text report of ``measure``'s figures."""
    lines = report_builders(fig) + report_naming(fig) + report_functions(fig)
    lines.append(f"5. tooling / core code lines: {fig['tooling_lines']} / {fig['core_lines']} = "
                 f"{fig['tooling_ratio']} (target <= {TARGETS['tooling_ratio']}: "
                 f"{verdict(fig['tooling_ratio'], TARGETS['tooling_ratio'])}); tooling: {', '.join(TOOLING)}; "
                 f"core: {', '.join(CORE)}")
    lines.append(f"   (the package: {fig['package_code_lines']} code lines)")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Print the report; with --json, also write the figures there (atomically)."""
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--root", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    args.add_argument("--json", help="also write the figures to this JSON file")
    opts = args.parse_args(argv)
    try:
        fig = measure(opts.root)
    except (ValueError, OSError) as err:
        print(f"structure.py: error: {err}", file=sys.stderr)
        return 2
    print(report(fig))
    if opts.json:
        sys.path.insert(0, str(ROOT))
        from recbole_promptmm.files import write_json_atomic

        write_json_atomic(opts.json, {**fig, "targets": TARGETS})
    return 0


if __name__ == "__main__":
    sys.exit(main())
