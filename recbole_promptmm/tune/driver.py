"""The whole command: check everything first, then run one sweep, or two for PromptMM (teacher, then students).

Two-stage PromptMM: without ``--teacher_checkpoint``, stage 1 is a sweep of its ``teacher_model`` in
``<out>/teacher/`` (one trial with the fixed values, or a search with ``--teacher_search_space``); its best
trial's best-validation checkpoint becomes ``<out>/teacher/teacher.pth``. Stage 2 sweeps ``PromptMM`` with
``teacher_checkpoint`` set to it and the teacher's searched values fixed, so no trial retrains the teacher.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass

from recbole_promptmm.compat import load_checkpoint
from recbole_promptmm.model.promptmm import teacher_config, teacher_setting_keys
from recbole_promptmm.model.promptmm import teacher_settings as model_teacher_settings
from recbole_promptmm.quick_start import write_json_atomic
from recbole_promptmm.tune import report as rep
from recbole_promptmm.tune.options import SweepOptions
from recbole_promptmm.tune.sweep import (EXIT_UNFINISHED, DataCache, Plan, SweepError, SweepResult, build_config,
                                         check_resources, driver_log, make_plan, prepare_out, ray_session, run_plan,
                                         say)
from recbole_promptmm.tune.trial import BEST_FILE

TEACHER_DIR = "teacher"
TEACHER_FILE = "teacher.pth"
DISTILLED_MODEL = "PromptMM"


def given_teacher(options: SweepOptions) -> str | None:
    """The teacher checkpoint a PromptMM sweep reuses: ``--teacher_checkpoint`` or ``teacher_checkpoint`` from a
    config file or ``--key=value``; None for other models or when stage 1 must make one."""
    if options.model != DISTILLED_MODEL:
        return None
    path = options.teacher_checkpoint or build_config(options, {})["teacher_checkpoint"]
    if path and not os.path.isfile(path):
        raise FileNotFoundError(f"teacher_checkpoint {path} does not exist")
    return os.path.abspath(path) if path else None


def teacher_settings(path: str) -> dict:
    """The settings a PromptMM run must share with the teacher checkpoint at ``path`` (its model, hidden size and
    what changes its forward pass), read from the config stored in the checkpoint."""
    saved = load_checkpoint(path, "cpu").get("config")
    if saved is None:
        return {}
    if saved["model"] == DISTILLED_MODEL:
        saved = teacher_config(saved)
    return rep.plain(model_teacher_settings(saved))


def teacher_model(options: SweepOptions) -> str:
    """The teacher model a PromptMM sweep trains in its stage 1 (``teacher_model`` of its config)."""
    return build_config(options, {})["teacher_model"]


def _teacher_sources(path: str, keys: list[str]) -> dict[str, str]:
    return {key: f"the teacher checkpoint {path}" for key in keys}


def reuse_teacher(options: SweepOptions, path: str) -> dict:
    """Values every student trial gets from a reused teacher checkpoint; refuses a contradicting ``--key=value``."""
    settings = teacher_settings(path)
    fixed_here = build_config(options, {}).cmd_config_dict
    for key, value in settings.items():
        if key in fixed_here and fixed_here[key] != value:
            raise ValueError(f"--{key}={fixed_here[key]!r} contradicts the teacher checkpoint {path}, which was "
                             f"trained with {key}={value!r}; leave --{key} out (it is taken from the checkpoint)")
    return {**settings, "teacher_checkpoint": path}


def teacher_stage_options(options: SweepOptions) -> SweepOptions:
    """The stage-1 sweep of ``--model=PromptMM`` without a teacher checkpoint: its ``teacher_model`` in
    ``out/teacher``."""
    return dataclasses.replace(
        options, model=teacher_model(options), out=os.path.join(options.out, TEACHER_DIR),
        search_space=options.teacher_search_space, num_samples=options.teacher_num_samples,
        teacher_search_space=None, teacher_num_samples=1, evaluate_test=False, max_t=None)


def _teacher_file(teacher_options: SweepOptions) -> str:
    return os.path.join(teacher_options.out, "teacher.json")


def run_teacher_stage(plan: Plan, data: DataCache) -> tuple[dict | None, SweepResult | None]:
    """Stage 1: train (or search) the teacher once.

    Returns the values every student trial gets (the best teacher's searched values and its checkpoint,
    copied to ``<out>/teacher/teacher.pth``), or ``(None, result)`` when the stage was interrupted. A resumed
    sweep whose teacher stage is done reuses its teacher.

    Raises
    ------
    SweepError
        No teacher trial produced a checkpoint.
    """
    record = _teacher_file(plan.options)
    if os.path.isfile(record):
        with open(record, encoding="utf-8") as f:
            done = json.load(f)
        say(f"teacher stage: reusing {done['teacher_checkpoint']} ({record})")
        return done["fixed"], None
    prepare_out(plan.options)
    say(f"teacher stage: {plan.options.model}, trained once for every student trial")
    result = run_plan(plan, data)
    if result.exit_code == EXIT_UNFINISHED:
        return None, result
    if result.best is None:
        raise SweepError(f"teacher stage: no teacher finished; see {os.path.join(plan.options.out, 'trials.csv')}")
    checkpoint = os.path.join(plan.options.out, TEACHER_FILE)
    shutil.copyfile(os.path.join(result.best.checkpoint, BEST_FILE), checkpoint)
    fixed = {**rep.plain(result.best.params), **teacher_settings(checkpoint), "teacher_checkpoint": checkpoint}
    write_json_atomic(record, {"teacher_checkpoint": checkpoint, "fixed": fixed, "trial_id": result.best.trial_id,
                               "best_valid_score": result.best.best_score, "valid_metric": plan.metric})
    say(f"teacher stage: best teacher {result.best.trial_id} -> {checkpoint}")
    return fixed, result


@dataclass
class PreparedSweep:
    """A sweep whose options, config, search spaces and data have been checked and read; nothing runs yet."""

    options: SweepOptions
    plan: Plan
    teacher_plan: Plan | None
    teacher_sources: dict
    data: DataCache


def prepare_sweep(options: SweepOptions) -> PreparedSweep:
    """Check options, configs and search spaces (both stages for PromptMM), read the data once, create ``out``.

    Everything that can be wrong with the command line, a config or search-space file or the data fails here,
    before Ray starts or any trial runs.

    Parameters
    ----------
    options : SweepOptions
        Normalised options (``SweepOptions.normalised()``); with ``resume``, the saved ones.

    Raises
    ------
    SearchSpaceError, ValueError, KeyError, FileNotFoundError, FileExistsError
        Naming the file, the key and what was expected.
    """
    options.check()
    teacher = given_teacher(options)
    teacher_plan, extra = None, {}
    if teacher:
        extra = reuse_teacher(options, teacher)
        sources = _teacher_sources(teacher, list(extra))
    elif options.model == DISTILLED_MODEL:
        teacher_plan = make_plan(teacher_stage_options(options))
        sources = {key: "the teacher stage" for key in ("teacher_checkpoint", *teacher_setting_keys(teacher_model(options)))}
        sources.update({key: "the teacher stage (searched there)" for key in teacher_plan.space.keys})
    else:
        sources = {}
    plan = make_plan(options, extra_fixed=extra, extra_sources=sources)
    data = DataCache()
    for stage in (teacher_plan, plan):
        if stage is not None:
            data.get(stage.config)
    prepare_out(options)
    return PreparedSweep(options, plan, teacher_plan, sources, data)


def execute_sweep(prepared: PreparedSweep) -> SweepResult:
    """Run a prepared sweep: the teacher stage if any, then the trials; write and print the results."""
    options, plan, data = prepared.options, prepared.plan, prepared.data
    with driver_log(options.out), ray_session(options):
        import ray

        check_resources(options, ray.cluster_resources())
        data.log_descriptions()
        if prepared.teacher_plan:
            fixed, teacher_result = run_teacher_stage(prepared.teacher_plan, data)
            if fixed is None:
                say(f"continue with: python -m recbole_promptmm.tune --out={options.out} --resume")
                return teacher_result
            plan = make_plan(options, extra_fixed=fixed, extra_sources=prepared.teacher_sources)
        return run_plan(plan, data)


def run_sweep(options: SweepOptions) -> SweepResult:
    """:func:`prepare_sweep`, then :func:`execute_sweep`."""
    return execute_sweep(prepare_sweep(options))
