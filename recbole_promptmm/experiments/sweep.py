"""A sweep (docs/TUNING.md: options, output folder): check everything, read the data once, run the trials on Ray
Tune, report, test the best once.

A multi-stage model (class hooks ``stage_output_key``, ``stage_one_model``, ``stage_output_setting_keys``,
``stage_output_settings``: PromptMM's teacher) without a given stage-1 output first sweeps its stage-1 model in
``<out>/teacher/``; the best checkpoint, ``<out>/teacher/teacher.pth``, is fixed for every stage-2 trial with the
settings it must share, so no trial retrains stage 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import pandas as pd
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from recbole.utils import init_seed
from recbole.utils.logger import RemoveColorFilter

from recbole_promptmm.checkpoint import load_checkpoint
from recbole_promptmm.config import Config, load_yaml, parse_cmd_args, plain
from recbole_promptmm.errors import ConfigError
from recbole_promptmm.experiments.cluster import error_line, ray_session
from recbole_promptmm.experiments.options import OPTIONS_FILE, SweepOptions
from recbole_promptmm.experiments.plan import check_model
from recbole_promptmm.experiments.report import write_frame
from recbole_promptmm.experiments.space import SearchSpace, check_search_space, load_search_space
from recbole_promptmm.experiments.trial import BEST_FILE, TrialSetup, ray_trainable, read_state
from recbole_promptmm.files import check_output_folder, marked_by, read_json, write_json_atomic, write_text_atomic
from recbole_promptmm.log import without_tensorboard
from recbole_promptmm.registry import get_model, get_trainer
from recbole_promptmm.validate import data_key, prepare_data, validate_against_data, validate_config

TRIALS_DIR, TEACHER_DIR, TEACHER_FILE = "trials", "teacher", "teacher.pth"
EXIT_OK, EXIT_ALL_FAILED, EXIT_UNFINISHED = 0, 1, 3
COMPLETED, STOPPED, FAILED, UNFINISHED = "completed", "stopped_early", "failed", "unfinished"
logger = logging.getLogger("recbole_promptmm.tune")


class SweepError(RuntimeError):
    """A sweep that cannot go on (e.g. every teacher trial failed); the message says where to look."""


@dataclass
class Plan:
    """A checked sweep: base config, search space, what every trial shares, how trials are compared."""

    options: SweepOptions
    config: Config
    space: SearchSpace
    setup: TrialSetup
    metric: str
    bigger: bool
    max_t: int


@dataclass
class SweepResult:
    """What a sweep produced: ``trials`` (:func:`trial_table`), the best trial's row and results, its files."""

    out: str
    trials: pd.DataFrame
    best: pd.Series | None = None
    best_valid_result: dict | None = None
    test_result: dict | None = None
    seconds: float = 0.0
    exit_code: int = EXIT_OK
    files: dict = field(default_factory=dict)


def say(message: str) -> None:
    """A line for the person running the sweep (stdout) and for ``sweep.log``."""
    print(message, flush=True)
    logger.info(message)


@contextlib.contextmanager
def _driver_side() -> Iterator[None]:
    """RecBole's ``Config`` writes ``gpu_id`` into ``CUDA_VISIBLE_DEVICES`` (Ray reads it): put back the driver's
    value (or its absence) afterwards."""
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        yield
    finally:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        os.environ.update({} if saved is None else {"CUDA_VISIBLE_DEVICES": saved})


@contextlib.contextmanager
def driver_log(out: str) -> Iterator[None]:
    """Send the driver's logging (RecBole's dataset messages included) to ``<out>/sweep.log``; a trainer built in the
    driver (the test evaluation) writes no TensorBoard folder (:func:`~recbole_promptmm.log.without_tensorboard`)."""
    handler, root = without_tensorboard(logging.FileHandler(os.path.join(out, "sweep.log"))), logging.getLogger()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(RemoveColorFilter())
    previous_level = root.level
    root.handlers.insert(0, handler)  # the first file handler: a trainer of the driver (test) opens no TensorBoard
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


def build_config(options: SweepOptions, extra: Mapping[str, Any]) -> Config:
    """The model's config from the options (files, ``--key=value``) and ``extra``."""
    with _driver_side():
        return Config(options.model, options.dataset, options.config_files, dict(extra), options.overrides)


def make_plan(options: SweepOptions, extra_fixed: Mapping[str, Any] | None = None,
              extra_sources: Mapping[str, str] | None = None) -> Plan:
    """Check the options, the config and the search space (nothing is read or started yet). ``extra_fixed``:
    values fixed besides the command line's (the teacher stage's); ``extra_sources``: key -> what fixes it."""
    extra_fixed = dict(extra_fixed or {})
    config = build_config(options, extra_fixed)
    validate_config(config)  # run's checks: unknown keys, types, ranges (ConfigError, exit 2)
    if int(config["nproc"] or 1) > 1:
        raise ConfigError(f"nproc {config['nproc']}: a sweep trains each trial in one process (--max_concurrent "
                          "trials at once); one run over several processes is run_recbole.py --nproc")
    sources = {key: f"--{key}={value} on the command line" for key, value in parse_cmd_args(options.overrides).items()}
    sources = {**dict.fromkeys(extra_fixed, "the teacher stage"), **sources, **(extra_sources or {})}
    space = load_search_space(options.search_space) if options.search_space else SearchSpace("(none)", ())
    check_search_space(space, config, sources)
    setup = TrialSetup(options.model, options.dataset, tuple(options.config_files),
                       {**config.cmd_config_dict, **extra_fixed}, options.cpus_per_trial, options.gpus_per_trial,
                       os.path.join(options.out, TRIALS_DIR))
    max_t = options.max_t
    # a staged model names the key bounding the stage its trials report (its last); else RecBole's epochs
    for key in (getattr(config.model_class, "last_stage_epochs_key", "epochs"), "epochs"):
        if max_t is None and (space.get(key) or config.final_config_dict.get(key) is not None):
            max_t = int(space.get(key).upper_bound()) if space.get(key) else int(config[key])
    return Plan(options, config, space, setup, str(config["valid_metric"]).lower(), bool(config["valid_metric_bigger"]),
                max_t)


class DataCache:
    """Dataset and dataloaders, prepared once per distinct data configuration (shared by both PromptMM stages)."""

    def __init__(self) -> None:
        self._prepared: dict[str, tuple] = {}
        self.descriptions: list[str] = []

    def get(self, config: Config) -> tuple:
        """``(train_data, valid_data, test_data)`` for ``config``, read from disk at most once, with run's data checks
        (:func:`~recbole_promptmm.validate.prepare_data`: files, features, an empty validation split, values that
        must fit the data; a ``ConfigError`` or ``ValueError`` before Ray starts)."""
        key = data_key(config)
        if key not in self._prepared:
            start = time.perf_counter()
            init_seed(config["seed"], config["reproducibility"])
            with _driver_side():
                dataset, self._prepared[key] = prepare_data(config)
            self.descriptions.append(str(dataset))
            say(f"data: {config['dataset']} read and split once in {time.perf_counter() - start:.1f} s")
        else:
            validate_against_data(config, self._prepared[key][0]._dataset)  # another stage's model
        return self._prepared[key]


class TrialLines(tune.Callback):
    """Says one line per finished trial (Ray's own tables only with ``--verbose``)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def on_trial_complete(self, iteration, trials, trial, error: BaseException | None = None, **info) -> None:
        last = trial.last_result or {}
        status = (f"failed: {error_line(error)}" if error is not None else COMPLETED if last.get("finished")
                  else "stopped early" if "valid_score" in last else "ended")
        best = (f", best valid {self.plan.metric} {last['best_valid_score']:.4f} at epoch {last.get('best_epoch')}"
                if last.get("best_valid_score") is not None else "")
        took = f" ({last['time_total_s']:.0f} s)" if last.get("time_total_s") is not None else ""
        params = _params({k: trial.config.get(k) for k in self.plan.space.keys})
        say(f"trial {trial.trial_id} ({params}): {status}{best}{took}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.on_trial_complete(iteration, trials, trial, trial.get_error())


def make_tuner(plan: Plan, train_data: Any, valid_data: Any, callbacks: Any = ()) -> tune.Tuner:
    """The plan's ``Tuner`` (or the one restored from ``<out>/trials`` with ``--resume``): the trainable and the
    data go once through Ray's object store (``tune.with_parameters``), actors are reused between trials."""
    opts, experiment = plan.options, os.path.join(plan.options.out, TRIALS_DIR)
    restore = opts.resume and tune.Tuner.can_restore(experiment)
    if not restore and os.path.exists(experiment):
        raise SweepError(f"{experiment} exists but holds no sweep Ray can restore; remove it or pick another --out")
    trainable = tune.with_resources(tune.with_parameters(ray_trainable, setup=plan.setup, train_data=train_data,
                                                         valid_data=valid_data),
                                    {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})
    if restore:
        say(f"resuming the sweep in {experiment}")
        return tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=False)
    scheduler = FIFOScheduler() if opts.scheduler == "fifo" else ASHAScheduler(
        time_attr="epoch", metric="valid_score", mode="max" if plan.bigger else "min", max_t=plan.max_t,
        grace_period=min(opts.grace_period, plan.max_t), reduction_factor=opts.reduction_factor)
    name = lambda trial: f"trial_{trial.trial_id}"  # noqa: E731  (ray_trainable works in <out>/trials/trial_<id>)
    tune_config = tune.TuneConfig(
        num_samples=opts.num_samples, scheduler=scheduler, max_concurrent_trials=opts.max_concurrent,
        search_alg=BasicVariantGenerator(random_state=int(plan.config["seed"]), max_concurrent=opts.max_concurrent or 0),
        trial_dirname_creator=name, trial_name_creator=name, reuse_actors=True)
    run_config = tune.RunConfig(name=TRIALS_DIR, storage_path=opts.out, verbose=int(opts.verbose), callbacks=callbacks,
                                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    return tune.Tuner(trainable, param_space=plan.space.to_tune(), tune_config=tune_config, run_config=run_config)


def trial_table(results: Any, plan: Plan) -> pd.DataFrame:
    """One row per trial of a ``ResultGrid`` (by trial id): ``status`` (docs/TUNING.md), the searched values, the
    last report, ``params`` and ``checkpoint``."""
    rows = []
    for result in results:
        last, config = dict(result.metrics or {}), result.config or {}
        reported = "valid_score" in last
        rows.append({
            "trial_id": last.get("trial_id") or os.path.basename(result.path or "").removeprefix("trial_"),
            "status": FAILED if result.error is not None else COMPLETED if reported and last.get("finished")
            else STOPPED if reported and last.get("done") else UNFINISHED,
            **{f"config/{k}": _cell(config.get(k)) for k in plan.space.keys},
            f"last_valid_{plan.metric}": last.get("valid_score"), f"best_valid_{plan.metric}": last.get("best_valid_score"),
            "best_epoch": last.get("best_epoch"), "last_epoch": last.get("epoch"),
            "iterations": int(last.get("training_iteration") or 0), "seconds": last.get("time_total_s"),
            "error": error_line(result.error), "node": last.get("node_id", ""), "trial_dir": result.path or "",
            "params": {k: config.get(k) for k in plan.space.keys},
            "checkpoint": result.checkpoint.path if result.checkpoint is not None else None})
    return pd.DataFrame(rows).sort_values("trial_id", ignore_index=True)


def evaluate_on_test(plan: Plan, best: pd.Series, data: DataCache, model_file: str) -> dict:
    """Evaluate the best trial's best-validation weights once on test (in the driver)."""
    train_data, _, test_data = data.get(plan.config)
    with _driver_side():
        config = plan.setup.config(best["params"], plan.options.out,
                                   {"gpu_id": plan.config["gpu_id"], "use_gpu": plan.config["use_gpu"]})
        init_seed(config["seed"], config["reproducibility"])
        model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        if hasattr(model, "set_stage"):  # a staged model serves in its last stage
            model.set_stage(type(model).stages[-1])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        result = trainer.evaluate(test_data, load_best_model=True, model_file=model_file, show_progress=False)
    return {k: float(v) for k, v in dict(result).items()}


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)):
        return yaml.safe_dump(plain(value), default_flow_style=True, width=10_000).strip()
    return value


def _params(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items()) or "(fixed configuration)"


def _metrics(values: Mapping[str, float] | None) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in (values or {}).items()) or "(none)"


def run_plan(plan: Plan, data: DataCache) -> SweepResult:
    """Run (or resume) a checked plan's trials on the current Ray session; write and print its outputs."""
    opts, start = plan.options, time.perf_counter()
    train_data, valid_data, _ = data.get(plan.config)
    say(f"sweep: {opts.model} on {opts.dataset}, {plan.space.grid_size * opts.num_samples} trial(s), scheduler "
        f"{opts.scheduler}, valid metric {plan.metric}, up to {plan.max_t} epoch(s)")
    for dim in plan.space.dimensions:
        say(f"  search {dim.key}: {dim.kind}({', '.join(map(repr, dim.args))})")
    rows = trial_table(make_tuner(plan, train_data, valid_data, callbacks=[TrialLines(plan)]).fit(), plan)
    result = SweepResult(opts.out, rows, seconds=time.perf_counter() - start,
                         files={"trials": os.path.join(opts.out, "trials.csv")})
    write_frame(rows.drop(columns=["params", "checkpoint"]), os.path.join(opts.out, "trials"))
    counts = {s: int((rows.status == s).sum()) for s in (COMPLETED, STOPPED, FAILED, UNFINISHED)}
    say(f"trials: {len(rows)} ({counts[COMPLETED]} completed, {counts[STOPPED]} stopped early, {counts[FAILED]} "
        f"failed, {counts[UNFINISHED]} unfinished) in {result.seconds:.1f} s -> {result.files['trials']}")
    for _, row in rows[rows.status == FAILED].iterrows():
        say(f"  failed trial {row.trial_id} ({_params(row.params)}): {row.error}")
    if counts[UNFINISHED]:
        result.exit_code = EXIT_UNFINISHED
        say(f"the sweep did not finish; continue it with: python -m recbole_promptmm.tune --out={opts.out} --resume")
        return result
    score = f"best_valid_{plan.metric}"  # a trial can be the best when it did not fail and reported a score
    usable = rows[rows.status.isin([COMPLETED, STOPPED]) & rows[score].notna() & rows.checkpoint.notna()]
    if usable.empty:
        result.exit_code = EXIT_ALL_FAILED
        say("no trial produced a validation result: every trial failed (errors in the CSV and above)")
        return result
    best = result.best = usable.loc[usable[score].idxmax() if plan.bigger else usable[score].idxmin()]  # first on ties
    best_epoch, best_score = int(best.best_epoch), float(best[score])
    result.best_valid_result = read_state(best.checkpoint)["best_valid_result"]
    model_file, config_path = os.path.join(opts.out, "best_model.pth"), os.path.join(opts.out, "best_config.yaml")
    shutil.copyfile(os.path.join(best.checkpoint, BEST_FILE), model_file)
    reproduce = f"python run_recbole.py --model={opts.model} --dataset={opts.dataset} --config_files={config_path}"
    values = {"model": opts.model, "dataset": opts.dataset}
    for file in opts.config_files:
        values.update(load_yaml(file))
    text = (f"# Best configuration of the sweep in {opts.out} (trial {best.trial_id}, validation {plan.metric} = "
            f"{best_score:.4f} at epoch {best_epoch}); selected on validation only.\n# Reproduce: {reproduce}\n")
    # one line per key; lists and mappings in flow style
    text += "".join(f"{k}: {_cell(v)}\n" if isinstance(v, (dict, list)) else yaml.safe_dump({k: v}, width=10_000)
                    for k, v in plain({**values, **plan.setup.fixed, **best.params}).items())
    write_text_atomic(config_path, text)
    result.files.update(best_config=config_path, best_model=model_file)
    say(f"best trial {best.trial_id}: {_params(best.params)}")
    say(f"  validation (used for selection), epoch {best_epoch}: {_metrics(result.best_valid_result)}")
    if opts.evaluate_test:
        result.test_result = evaluate_on_test(plan, best, data, model_file)
        say("test (best configuration, evaluated once after the sweep, never used to choose):")
        say(f"  {_metrics(result.test_result)}")
    say(f"best configuration: {config_path}")
    say(f"  reproduce: {reproduce}")
    result.files["best_result"] = os.path.join(opts.out, "best_result.json")
    write_json_atomic(result.files["best_result"], {
        "model": opts.model, "dataset": opts.dataset, "trial_id": best.trial_id, "params": best.params,
        "valid_metric": plan.metric, "best_valid_score": best_score, "best_epoch": best_epoch,
        "best_valid_result": result.best_valid_result, "test_result": result.test_result, "best_config": config_path,
        "best_model": model_file, "trials": len(rows), "trial_counts": counts, "seconds": result.seconds,
        "fixed": plain(plan.setup.fixed)})
    return result


def prepare_out(options: SweepOptions) -> None:
    """Create ``out`` and save the options there; refuse a folder that holds another sweep unless resuming, and one
    that holds no sweep but something else."""
    check_output_folder(options.out, "--out", "tune", "a sweep",
                        marked_by({OPTIONS_FILE: ("model", "dataset", "out")}))
    if not options.resume and os.path.exists(os.path.join(options.out, OPTIONS_FILE)):
        raise FileExistsError(f"{options.out} already holds a sweep ({OPTIONS_FILE}); continue it with --resume "
                              "or choose another --out")
    os.makedirs(options.out, exist_ok=True)
    options.save()


def stage_output_settings(model: str, path: str) -> dict:
    """The settings a run of ``model`` must share with the stage-1 output (checkpoint) at ``path``, and the path."""
    key = get_model(model).stage_output_key
    saved = load_checkpoint(path, "cpu", what=key)["config"]  # the reader ensures one
    return {**plain(get_model(model).stage_output_settings(saved)), key: path}


def _teacher_stage(plan: Plan, data: DataCache, model: str) -> tuple[dict | None, SweepResult | None]:
    """Stage 1 of ``model``: train (or search) it once; returns the values every stage-2 trial gets, or
    ``(None, result)`` when interrupted. A resumed sweep whose stage 1 is done reuses its output."""
    record = os.path.join(plan.options.out, "teacher.json")
    done = read_json(record)
    if done:
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
    fixed = {**plain(result.best.params), **stage_output_settings(model, checkpoint)}
    write_json_atomic(record, {"teacher_checkpoint": checkpoint, "fixed": fixed, "trial_id": result.best.trial_id,
                               "best_valid_score": float(result.best[f"best_valid_{plan.metric}"]),
                               "valid_metric": plan.metric})
    say(f"teacher stage: best teacher {result.best.trial_id} -> {checkpoint}")
    return fixed, result


def prepare_sweep(options: SweepOptions) -> tuple[Plan, Plan | None, dict, DataCache]:
    """Check options, configs and search spaces (both stages of a multi-stage model), read the data once, create
    ``out``: everything that can be wrong fails here (naming the file, the key and what was expected), before Ray
    starts. Returns the plan, the teacher stage's plan (or None), where the teacher stage fixes keys, the data."""
    options.check()
    check_model(options.model, "--model")  # an ablation's label (PromptMM-no_kd) says which keys it sets
    cls, config = get_model(options.model), build_config(options, {})
    key = getattr(cls, "stage_output_key", None)  # a multi-stage model's shareable stage-1 output
    if not key and (options.teacher_checkpoint or options.teacher_search_space):
        raise ValueError(f"--teacher_checkpoint / --teacher_search_space: {options.model} has no stage 1")
    teacher = key and (options.teacher_checkpoint or config[key])
    teacher_plan, extra, sources = None, {}, {}
    if teacher:
        if not os.path.isfile(teacher):
            raise FileNotFoundError(f"{key} {teacher} does not exist")
        teacher = os.path.abspath(teacher)
        extra = stage_output_settings(options.model, teacher)
        for name, value in extra.items():
            if name in config.cmd_config_dict and config.cmd_config_dict[name] != value:
                raise ValueError(f"--{name}={config.cmd_config_dict[name]!r} contradicts the teacher checkpoint "
                                 f"{teacher}, which was trained with {name}={value!r}; leave --{name} out (it is "
                                 "taken from the checkpoint)")
        sources = dict.fromkeys(extra, f"the teacher checkpoint {teacher}")
    elif key:
        teacher_plan = make_plan(dataclasses.replace(
            options, model=cls.stage_one_model(config), out=os.path.join(options.out, TEACHER_DIR),
            search_space=options.teacher_search_space, num_samples=options.teacher_num_samples,
            teacher_search_space=None, teacher_num_samples=1, evaluate_test=False, max_t=None))
        sources = {**dict.fromkeys((key, *cls.stage_output_setting_keys(config)), "the teacher stage"),
                   **dict.fromkeys(teacher_plan.space.keys, "the teacher stage (searched there)")}
    plan = make_plan(options, extra_fixed=extra, extra_sources=sources)
    data = DataCache()
    for stage in (teacher_plan, plan):
        if stage is not None:
            data.get(stage.config)
    prepare_out(options)
    return plan, teacher_plan, sources, data


def execute_sweep(prepared: tuple[Plan, Plan | None, dict, DataCache]) -> SweepResult:
    """Run a :func:`prepare_sweep`: the teacher stage if any, then the trials; write and print the results."""
    plan, teacher_plan, teacher_sources, data = prepared
    options = plan.options
    with driver_log(options.out), ray_session(options, say):
        for description in data.descriptions:
            logger.info(description)
        if teacher_plan:
            fixed, teacher_result = _teacher_stage(teacher_plan, data, options.model)
            if fixed is None:
                say(f"continue with: python -m recbole_promptmm.tune --out={options.out} --resume")
                return teacher_result
            plan = make_plan(options, extra_fixed=fixed, extra_sources=teacher_sources)
        return run_plan(plan, data)


def run_sweep(options: SweepOptions) -> SweepResult:
    """:func:`prepare_sweep`, then :func:`execute_sweep`."""
    return execute_sweep(prepare_sweep(options))
