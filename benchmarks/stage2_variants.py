"""PromptMM variants over several seeds against already trained teachers (a benchmark that prints a table).

    python benchmarks/stage2_variants.py --dataset=tiktok --data_path=../shared/data \
        --config_files=docs/benchmarks/tiktok.yaml \
        --teachers='results/tiktok/runs/PromptMM/seed{seed}-*/saved/*-teacher.pth' \
        --seeds=2020,2021,2022 --variants=defaults,no_pair_kd,no_emb_kd --out=results/tiktok-variants [--jobs=2]

Each variant is PromptMM with a few config overrides: the ablations of ``python -m recbole_promptmm.compare
--list_ablations`` by name, ``defaults`` (no override), or ``NAME:key=value;key=value`` for anything else
(e.g. ``pair05:pair_kd_weight=0.5``). Variants that leave stage 1 unchanged train stage 2 only, against the
teacher of the same seed (``--teachers``, a glob with ``{seed}``); the others (``no_prompt``) train their own
teacher. Every run is one ``run_recbole.py`` process with ``--seed=S``; its result JSON lands in
``OUT/<variant>/seed<S>.json`` only when the run finished, so rerunning the command resumes. The table gives
mean ± std over seeds of validation and test Recall@20 / NDCG@20 and a paired t-test of each variant against
``defaults`` (when it ran). Selection among variants belongs to the validation columns only.

This complements ``python -m recbole_promptmm.compare --models=PromptMM --ablations``, which trains the base
model too; here the teachers of an earlier comparison are reused, so each variant costs one student stage.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from recbole_promptmm.compare.ablations import ABLATIONS  # noqa: E402
from recbole_promptmm.compare.stats import TEST_NAME, paired_test, summarize  # noqa: E402
from recbole_promptmm.model.promptmm import DEFAULT_TEACHER, stage_one_keys  # noqa: E402

METRICS = ("recall@20", "ndcg@20")


def parse_variant(spec: str) -> tuple[str, dict[str, str], bool]:
    """``(name, overrides as --key=value strings, shares_teacher)`` of one ``--variants`` entry."""
    known = {a.name: a for a in ABLATIONS}
    if spec == "defaults":
        return spec, {}, True
    if spec in known:
        a = known[spec]
        return spec, {k: str(v) for k, v in a.overrides.items()}, a.shares_teacher()
    if ":" not in spec:
        raise SystemExit(f"unknown variant {spec!r}: use defaults, one of {', '.join(known)}, or NAME:key=value;...")
    name, _, body = spec.partition(":")
    overrides = {}
    for item in filter(None, (s.strip() for s in body.split(";"))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"variant {name}: expected key=value, got {item!r}")
        overrides[key.strip()] = value.strip()
    return name, overrides, not (set(overrides) & stage_one_keys(DEFAULT_TEACHER))


def find_teacher(pattern: str, seed: int) -> str:
    hits = sorted(glob.glob(pattern.format(seed=seed)))
    if len(hits) != 1:
        raise SystemExit(f"--teachers {pattern!r} for seed {seed}: expected one file, found {len(hits)}: {hits}")
    return os.path.abspath(hits[0])


def run_one(args, name: str, overrides: dict[str, str], teacher: str | None, seed: int) -> str:
    out_dir = os.path.join(args.out, name)
    final = os.path.join(out_dir, f"seed{seed}.json")
    if os.path.exists(final):
        return f"{name} seed {seed}: cached"
    os.makedirs(out_dir, exist_ok=True)
    partial = final + ".partial"
    cmd = [sys.executable, "-W", "ignore", os.path.join(ROOT, "run_recbole.py"), "--model=PromptMM",
           f"--dataset={args.dataset}", f"--seed={seed}", "--show_progress=False", "--state=WARNING",
           f"--result_json={os.path.abspath(partial)}"]
    if args.data_path:
        cmd.append(f"--data_path={os.path.abspath(args.data_path)}")
    if args.config_files:
        cmd.append("--config_files=" + ",".join(os.path.abspath(f) for f in args.config_files.split(",")))
    if teacher:
        cmd.append(f"--teacher_checkpoint={teacher}")
    cmd += [f"--{k}={v}" for k, v in overrides.items()] + args.extra
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.time()
    print(f"start {name} seed {seed}: {' '.join(cmd[3:])}", flush=True)
    with open(os.path.join(out_dir, f"seed{seed}.log"), "w") as log:
        rc = subprocess.call(cmd, cwd=out_dir, stdout=log, stderr=subprocess.STDOUT, env=env)
    if rc != 0 or not os.path.exists(partial):
        return f"{name} seed {seed}: FAILED (exit {rc}), see {os.path.join(out_dir, f'seed{seed}.log')}"
    os.replace(partial, final)
    with open(final) as f:
        result = json.load(f)
    return (f"{name} seed {seed}: done in {time.time() - start:.0f} s, valid recall@20 "
            f"{result['best_valid_result']['recall@20']:.4f}")


def table(out: str, names: list[str], seeds: list[int]) -> str:
    results = {}
    for name in names:
        for seed in seeds:
            path = os.path.join(out, name, f"seed{seed}.json")
            if os.path.exists(path):
                with open(path) as f:
                    results[name, seed] = json.load(f)
    cols = [f"{split} {m}" for split in ("valid", "test") for m in METRICS]
    lines = ["| variant | seeds | " + " | ".join(cols) + " | Δ test recall@20 vs defaults (p) |",
             "|---" * (len(cols) + 3) + "|"]
    for name in names:
        got = {s: r for (n, s), r in results.items() if n == name}
        cells = []
        for split in ("best_valid_result", "test_result"):
            for m in METRICS:
                cells.append(summarize([r[split][m] for r in got.values()]).text())
        test = "-"
        if name != "defaults" and any(n == "defaults" for n, _ in results):
            ref = {s: r["test_result"]["recall@20"] for (n, s), r in results.items() if n == "defaults"}
            mine = {s: r["test_result"]["recall@20"] for s, r in got.items()}
            t = paired_test("recall@20", name, "defaults", mine, ref)
            if t.mean_diff is not None:
                test = f"{t.mean_diff:+.4f}" + (f" (p = {t.p:.3g})" if t.p is not None else "")
        lines.append(f"| {name} | {len(got)} | " + " | ".join(cells) + f" | {test} |")
    per_seed = ["", "Per seed (valid / test recall@20):", ""]
    for name in names:
        row = [f"{s}: " + (f"{results[name, s]['best_valid_result']['recall@20']:.4f} / "
                           f"{results[name, s]['test_result']['recall@20']:.4f}" if (name, s) in results else "-")
               for s in seeds]
        per_seed.append(f"- {name}: " + "; ".join(row))
    return "\n".join(lines + [f"\nΔ: {TEST_NAME}, variant − defaults."] + per_seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="tiktok")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--config_files", default=None, help="comma-separated yaml files")
    parser.add_argument("--teachers", required=True, help="glob of teacher checkpoints with {seed}")
    parser.add_argument("--seeds", default="2020,2021,2022")
    parser.add_argument("--variants", default="defaults,no_pair_kd,no_emb_kd,no_kd,frozen_prompt")
    parser.add_argument("--out", required=True)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per run")
    parser.add_argument("--table_only", action="store_true")
    args, args.extra = parser.parse_known_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [parse_variant(v.strip()) for v in args.variants.split(",") if v.strip()]
    names = [v[0] for v in variants]
    if not args.table_only:
        jobs = []
        for name, overrides, shares in variants:
            for seed in seeds:
                jobs.append((name, overrides, find_teacher(args.teachers, seed) if shares else None, seed))
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_one, args, *job) for job in jobs]
            for i, future in enumerate(as_completed(futures), 1):
                print(f"[{i}/{len(jobs)}] {future.result()}", flush=True)
    text = table(args.out, names, seeds)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
