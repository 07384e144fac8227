"""One sweep: check the plan, read the data once, run the trials on Ray, report, test the best once.

Output folder (``--out``)::

    sweep.json         the options (``--resume`` reads them back)
    sweep.log          the driver's log (data loading, test evaluation)
    trials/            Ray's experiment: one folder per trial with RecBole's log/, saved/, Ray's results
                       and the trial's latest checkpoint
    trials.csv         one row per trial: status, searched values, last and best validation metric, error
    best_config.yaml   the best configuration, usable with run_recbole.py --config_files
    best_model.pth     the best trial's best-validation weights
    best_result.json   the best trial's validation result and the test result of that model

:mod:`recbole_promptmm.tune.driver` runs one such sweep, or two for PromptMM (teacher, then students).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from recbole.utils import init_seed
from recbole.utils.logger import RemoveColorFilter

from recbole_promptmm.config import Config, parse_cmd_args
from recbole_promptmm.data import create_dataset, data_preparation
from recbole_promptmm.quick_start import write_json_atomic
from recbole_promptmm.tune import report as rep
from recbole_promptmm.tune.options import OPTIONS_FILE, SweepOptions
from recbole_promptmm.tune.space import SearchSpace, check_search_space, describe_space, grid_size, load_search_space
from recbole_promptmm.tune.trial import BEST_FILE, TrialSetup, ray_trainable, read_progress, trial_dirname
from recbole_promptmm.utils import get_model, get_trainer

TRIALS_DIR = "trials"
EXIT_OK, EXIT_ALL_FAILED, EXIT_UNFINISHED = 0, 1, 3

logger = logging.getLogger("recbole_promptmm.tune")


class SweepError(RuntimeError):
    """A sweep that cannot go on (e.g. every teacher trial failed); the message says where to look."""


@dataclass
class Plan:
    """A checked sweep: base config, search space, what every trial shares, how trials are compared.

    Parameters
    ----------
    options : SweepOptions
        Normalised options.
    config : Config
        The model's config with every fixed value (what the data is prepared with).
    space : SearchSpace
        The searched keys (possibly none).
    setup : TrialSetup
        Shared by every trial.
    metric : str
        RecBole's validation metric, lower case (``recall@20``).
    bigger : bool
        Whether a bigger metric is better.
    max_t : int
        The largest epoch any trial can reach (ASHA's ``max_t``).
    """

    options: SweepOptions
    config: Config
    space: SearchSpace
    setup: TrialSetup
    metric: str
    bigger: bool
    max_t: int


@dataclass
class SweepResult:
    """What a sweep produced."""

    out: str
    rows: list[rep.TrialRow]
    best: rep.TrialRow | None = None
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
def _keep_env(*names: str) -> Iterator[None]:
    """RecBole's ``Config`` rewrites ``CUDA_VISIBLE_DEVICES``; keep the driver's value (Ray reads it)."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _scratch_working_dir() -> Iterator[None]:
    """RecBole writes ``./log_tensorboard`` when a trainer is built: build driver-side trainers in a scratch
    folder, deleted afterwards, so nothing lands in the caller's working directory."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="recbole-tune-") as scratch:
        os.chdir(scratch)
        try:
            yield
        finally:
            os.chdir(previous)


@contextlib.contextmanager
def driver_log(out: str) -> Iterator[None]:
    """Send the driver's logging (RecBole's dataset messages included) to ``<out>/sweep.log``."""
    handler = logging.FileHandler(os.path.join(out, "sweep.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(RemoveColorFilter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


def build_config(options: SweepOptions, extra: Mapping[str, Any]) -> Config:
    """The model's config from the options (files, ``--key=value``) and ``extra``; the driver's GPU env untouched."""
    with _keep_env("CUDA_VISIBLE_DEVICES"):
        return Config(options.model, options.dataset, options.config_files, dict(extra), options.overrides)


def make_plan(options: SweepOptions, extra_fixed: Mapping[str, Any] | None = None,
              extra_sources: Mapping[str, str] | None = None) -> Plan:
    """Check the options, the config and the search space; nothing is read or started yet.

    Parameters
    ----------
    options : SweepOptions
        Normalised options.
    extra_fixed : Mapping[str, Any], optional
        Values fixed for every trial besides the command line's (the teacher stage's result).
    extra_sources : Mapping[str, str], optional
        Keys fixed by something other than the command line -> what fixes them (for error messages); keys of
        ``extra_fixed`` are added as fixed by the teacher stage.

    Raises
    ------
    SearchSpaceError, ValueError, FileNotFoundError, KeyError
        With the file, the key and what was expected.
    """
    extra_fixed = dict(extra_fixed or {})
    config = build_config(options, extra_fixed)
    cmd_values = dict(config.cmd_config_dict)
    sources = {key: f"--{key}={value} on the command line" for key, value in parse_cmd_args(options.overrides).items()}
    sources.update(extra_sources or {})
    for key in extra_fixed:
        sources.setdefault(key, "the teacher stage")
    space = load_search_space(options.search_space) if options.search_space else SearchSpace("(none)", ())
    check_search_space(space, config, sources)
    setup = TrialSetup(options.model, options.dataset, tuple(options.config_files), {**cmd_values, **extra_fixed},
                       options.cpus_per_trial, options.gpus_per_trial, os.path.join(options.out, TRIALS_DIR))
    max_t = options.max_t or _last_epoch(config, space)
    return Plan(options, config, space, setup, str(config["valid_metric"]).lower(),
                bool(config["valid_metric_bigger"]), max_t)


def _last_epoch(config: Config, space: SearchSpace) -> int:
    """The largest epoch any trial's reported (last-stage) training can reach: ASHA's ``max_t``.

    Staged models bound their reported stage with ``student_epochs`` (``~`` = ``epochs``).
    """
    for key in ("student_epochs", "epochs"):
        dim = space.get(key)
        if dim is not None:
            return int(dim.upper_bound())
        if config.final_config_dict.get(key) is not None:
            return int(config[key])
    raise ValueError(f"{config['model']}: no epochs in the config")


class DataCache:
    """Dataset and dataloaders, prepared once per distinct data configuration (shared by both PromptMM stages)."""

    def __init__(self) -> None:
        self._prepared: dict[str, tuple] = {}
        self._descriptions: list[str] = []

    @staticmethod
    def signature(config: Config) -> str:
        """What the prepared data depends on: dataset and evaluation settings, input type, seed, data path."""
        keys = sorted(set(config.parameters["Dataset"]) | set(config.parameters["Evaluation"]))
        values = {k: config.final_config_dict.get(k) for k in keys}
        values.update(dataset=config["dataset"], data_path=config["data_path"], seed=config["seed"],
                      input_type=str(config["MODEL_INPUT_TYPE"]), neg=config["train_neg_sample_args"],
                      modality_features=config["modality_features"])
        return json.dumps(values, sort_keys=True, default=str)

    def get(self, config: Config) -> tuple:
        """``(train_data, valid_data, test_data)`` for ``config``, read from disk at most once."""
        key = self.signature(config)
        if key not in self._prepared:
            start = time.perf_counter()
            init_seed(config["seed"], config["reproducibility"])
            with _keep_env("CUDA_VISIBLE_DEVICES"):
                dataset = create_dataset(config)
                self._prepared[key] = data_preparation(config, dataset)
            self._descriptions.append(str(dataset))
            say(f"data: {config['dataset']} read and split once in {time.perf_counter() - start:.1f} s")
        return self._prepared[key]

    def log_descriptions(self) -> None:
        """Write RecBole's summary of every prepared dataset to the driver log."""
        for description in self._descriptions:
            logger.info(description)


def _trial_dirname(trial: Any) -> str:
    return trial_dirname(trial.trial_id)


def _scheduler(plan: Plan) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if plan.options.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="epoch", metric="valid_score", mode="max" if plan.bigger else "min",
                         max_t=plan.max_t, grace_period=min(plan.options.grace_period, plan.max_t),
                         reduction_factor=plan.options.reduction_factor)


def _trainable(plan: Plan, train_data: Any, valid_data: Any) -> Any:
    from ray import tune

    resources = {"cpu": plan.options.cpus_per_trial, "gpu": plan.options.gpus_per_trial}
    with_data = tune.with_parameters(ray_trainable, setup=plan.setup, train_data=train_data, valid_data=valid_data)
    return tune.with_resources(with_data, resources)


def _tuner(plan: Plan, train_data: Any, valid_data: Any) -> Any:
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    opts = plan.options
    trainable = _trainable(plan, train_data, valid_data)
    experiment = os.path.join(opts.out, TRIALS_DIR)
    if opts.resume and tune.Tuner.can_restore(experiment):
        say(f"resuming the sweep in {experiment}")
        return tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=False)
    if os.path.exists(experiment):
        raise SweepError(f"{experiment} exists but holds no sweep Ray can restore; remove it or pick another --out")
    search = BasicVariantGenerator(random_state=int(plan.config["seed"]), max_concurrent=opts.max_concurrent or 0)
    tune_config = tune.TuneConfig(num_samples=opts.num_samples, scheduler=_scheduler(plan), search_alg=search,
                                  max_concurrent_trials=opts.max_concurrent, trial_dirname_creator=_trial_dirname,
                                  trial_name_creator=_trial_dirname, reuse_actors=True)
    run_config = tune.RunConfig(
        name=TRIALS_DIR, storage_path=opts.out, verbose=1,
        failure_config=tune.FailureConfig(max_failures=opts.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    return tune.Tuner(trainable, param_space=plan.space.to_tune(), tune_config=tune_config, run_config=run_config)


def _row(result: Any, keys: list[str]) -> rep.TrialRow:
    """One ``ray.tune.Result`` as a CSV row."""
    metrics = dict(result.metrics or {})
    path = result.path or ""
    trial_id = metrics.get("trial_id") or os.path.basename(path).removeprefix("trial_")
    reported = "valid_score" in metrics
    if result.error is not None:
        status = rep.FAILED
    elif reported and metrics.get("finished"):
        status = rep.COMPLETED
    elif reported and metrics.get("done"):
        status = rep.STOPPED
    else:
        status = rep.UNFINISHED
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    return rep.TrialRow(
        trial_id=trial_id, status=status, params={k: (result.config or {}).get(k) for k in keys},
        iterations=int(metrics.get("training_iteration", 0) or 0), epoch=metrics.get("epoch"),
        last_score=metrics.get("valid_score"), best_score=metrics.get("best_valid_score"),
        best_epoch=metrics.get("best_epoch"), seconds=metrics.get("time_total_s"),
        error=rep.short_error(result.error), path=path, checkpoint=checkpoint)


def run_trials(plan: Plan, data: DataCache) -> list[rep.TrialRow]:
    """Run (or resume) the plan's trials on the current Ray session; one row per trial."""
    train_data, valid_data, _ = data.get(plan.config)
    size = grid_size(plan.space) * plan.options.num_samples
    say(f"sweep: {plan.options.model} on {plan.options.dataset}, {size} trial(s), scheduler "
        f"{plan.options.scheduler}, valid metric {plan.metric}, up to {plan.max_t} epoch(s)")
    for line in describe_space(plan.space):
        say(f"  search {line}")
    grid = _tuner(plan, train_data, valid_data).fit()
    rows = [_row(result, plan.space.keys) for result in grid]
    return sorted(rows, key=lambda r: r.trial_id)


def evaluate_on_test(plan: Plan, best: rep.TrialRow, data: DataCache, model_file: str) -> dict:
    """Evaluate the best trial's best-validation weights once on test (in the driver)."""
    train_data, _, test_data = data.get(plan.config)
    device = {"gpu_id": plan.config["gpu_id"], "use_gpu": plan.config["use_gpu"]}
    with _keep_env("CUDA_VISIBLE_DEVICES"), _scratch_working_dir():
        config = plan.setup.config(best.params, plan.options.out, device)
        init_seed(config["seed"], config["reproducibility"])
        model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        if hasattr(model, "set_stage"):  # a staged model (PromptMM) serves in its last stage: the student
            model.set_stage("student")
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        result = trainer.evaluate(test_data, load_best_model=True, model_file=model_file, show_progress=False)
    return {k: float(v) for k, v in dict(result).items()}


def _report_trials(plan: Plan, rows: list[rep.TrialRow], seconds: float) -> SweepResult:
    """Write ``trials.csv`` and print the counts and every failure."""
    csv_path = os.path.join(plan.options.out, "trials.csv")
    rep.write_trials_csv(csv_path, rows, plan.space.keys, plan.metric)
    counts = rep.count_statuses(rows)
    say(f"trials: {len(rows)} ({counts[rep.COMPLETED]} completed, {counts[rep.STOPPED]} stopped early, "
        f"{counts[rep.FAILED]} failed, {counts[rep.UNFINISHED]} unfinished) in {seconds:.1f} s -> {csv_path}")
    for row in rows:
        if row.status == rep.FAILED:
            say(f"  failed trial {row.trial_id} ({rep.format_params(row.params)}): {row.error}")
    return SweepResult(plan.options.out, rows, seconds=seconds, files={"trials": csv_path})


def _reproduce_command(options: SweepOptions, config_path: str) -> str:
    return f"python run_recbole.py --model={options.model} --dataset={options.dataset} --config_files={config_path}"


def _write_best(plan: Plan, best: rep.TrialRow, result: SweepResult) -> None:
    """Copy the best trial's weights to ``best_model.pth`` and write ``best_config.yaml``."""
    opts = plan.options
    model_file = os.path.join(opts.out, "best_model.pth")
    shutil.copyfile(os.path.join(best.checkpoint, BEST_FILE), model_file)
    config_path = os.path.join(opts.out, "best_config.yaml")
    values = rep.best_config_values(opts.model, opts.dataset, opts.config_files, plan.setup.fixed, best.params)
    rep.write_best_config(config_path, values, [
        f"Best configuration of the sweep in {opts.out} (trial {best.trial_id}, validation {plan.metric} = "
        f"{best.best_score:.4f} at epoch {best.best_epoch}); selected on validation only.",
        f"Reproduce: {_reproduce_command(opts, config_path)}"])
    result.files.update(best_config=config_path, best_model=model_file)


def _write_summary(plan: Plan, result: SweepResult) -> None:
    """``best_result.json``: best trial, its validation result, the test result, where the files are."""
    best, opts = result.best, plan.options
    summary = {
        "model": opts.model, "dataset": opts.dataset, "trial_id": best.trial_id, "params": best.params,
        "valid_metric": plan.metric, "best_valid_score": best.best_score, "best_epoch": best.best_epoch,
        "best_valid_result": result.best_valid_result, "test_result": result.test_result,
        "best_config": result.files["best_config"], "best_model": result.files["best_model"],
        "trials": len(result.rows), "trial_counts": rep.count_statuses(result.rows), "seconds": result.seconds,
        "fixed": rep.plain(plan.setup.fixed),
    }
    result.files["best_result"] = os.path.join(opts.out, "best_result.json")
    write_json_atomic(result.files["best_result"], summary)


def _write_outputs(plan: Plan, rows: list[rep.TrialRow], data: DataCache, seconds: float) -> SweepResult:
    """Everything after the trials: CSV, best configuration and weights, the one test evaluation, summary."""
    result = _report_trials(plan, rows, seconds)
    if any(row.status == rep.UNFINISHED for row in rows):
        result.exit_code = EXIT_UNFINISHED
        say(f"the sweep did not finish; continue it with: python -m recbole_promptmm.tune --out={plan.options.out} "
            "--resume")
        return result
    best = rep.pick_best(rows, plan.bigger)
    if best is None:
        result.exit_code = EXIT_ALL_FAILED
        say("no trial produced a validation result: every trial failed (errors in the CSV and above)")
        return result
    result.best = best
    result.best_valid_result = read_progress(best.checkpoint)["best_valid_result"]
    _write_best(plan, best, result)
    say(f"best trial {best.trial_id}: {rep.format_params(best.params)}")
    say(f"  validation (used for selection), epoch {best.best_epoch}: {rep.format_metrics(result.best_valid_result)}")
    if plan.options.evaluate_test:
        result.test_result = evaluate_on_test(plan, best, data, result.files["best_model"])
        say("test (best configuration, evaluated once after the sweep, never used to choose):")
        say(f"  {rep.format_metrics(result.test_result)}")
    say(f"best configuration: {result.files['best_config']}")
    say(f"  reproduce: {_reproduce_command(plan.options, result.files['best_config'])}")
    _write_summary(plan, result)
    return result


def run_plan(plan: Plan, data: DataCache) -> SweepResult:
    """Run a checked plan on the current Ray session and write its outputs."""
    start = time.perf_counter()
    rows = run_trials(plan, data)
    return _write_outputs(plan, rows, data, time.perf_counter() - start)


@contextlib.contextmanager
def ray_session(options: SweepOptions) -> Iterator[None]:
    """Use the running Ray session, or connect to ``--address``, or start a local one (and stop it after)."""
    import ray

    # One checkpoint kept per trial forces a state snapshot per report; Ray warns about that on every sweep.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        yield
        return
    if options.address:
        ray.init(address=options.address, log_to_driver=False)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        resources = ray.cluster_resources()
        say(f"ray: connected to {options.address}: {len(nodes)} node(s), {resources.get('CPU', 0):g} CPU(s), "
            f"{resources.get('GPU', 0):g} GPU(s)")
    else:  # "local": never attach to some other cluster that happens to run on this machine
        ray.init(address="local", num_cpus=options.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def check_resources(options: SweepOptions, resources: Mapping[str, float]) -> None:
    """Refuse a sweep whose trials can never be scheduled (Ray would wait for them forever)."""
    for option, name, need in (("cpus_per_trial", "CPU", options.cpus_per_trial),
                               ("gpus_per_trial", "GPU", options.gpus_per_trial)):
        have = float(resources.get(name, 0))
        if need > have:
            raise SweepError(f"--{option}={need:g}, but the Ray cluster has {have:g} {name}(s) in all: no trial "
                             f"could ever start")


def prepare_out(options: SweepOptions) -> None:
    """Create ``out`` and save the options there; refuse a folder that holds another sweep unless resuming."""
    marker = os.path.join(options.out, OPTIONS_FILE)
    if not options.resume and os.path.exists(marker):
        raise FileExistsError(f"{options.out} already holds a sweep ({OPTIONS_FILE}); continue it with --resume "
                              "or choose another --out")
    os.makedirs(options.out, exist_ok=True)
    options.save()
