"""Where sweeps and comparisons run: one Ray session, and the Ray Tune set-up of a sweep's trials (a comparison
runs plain Ray tasks, :mod:`recbole_promptmm.experiments.compare`).

Without an address a private local Ray instance is started (``address="local"``: it never attaches to another
Ray instance on the machine) and stopped at the end; with ``--address`` (``HOST:PORT`` of a head, or ``auto``)
the trials spread over that cluster. A Ray session already running in the process is used as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable, Iterator, Mapping

import ray
from ray import tune

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class _DefaultAuthNotice(logging.Filter):
    """Drops Ray's notice that a new local instance uses token authentication (Ray's default, unchanged here;
    every sweep and comparison would print it). Its other messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled" not in record.getMessage()


_AUTH_NOTICE = _DefaultAuthNotice()


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None, say: Callable[[str], None] = print,
                threads: int = 1, verbose: bool = False) -> Iterator[None]:
    """Use the running Ray session, or connect to ``address``, or start a local one (and stop it after). Every
    worker of the session, on every node, runs its OpenMP / BLAS pools with ``threads`` threads (the CPUs of one
    trial: trials that share a machine must not each take all of its cores). Ray's own INFO lines (instance
    started, results written) only when ``verbose``."""
    # One checkpoint kept per trial forces a state snapshot per report; Ray warns about that on every sweep.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        yield
        return
    runtime_env = {"env_vars": {var: str(threads) for var in THREAD_VARIABLES}}
    level = logging.INFO if verbose else logging.WARNING
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env, logging_level=level)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        resources = ray.cluster_resources()
        say(f"ray: connected to {address}: {len(nodes)} node(s), {resources.get('CPU', 0):g} CPU(s), "
            f"{resources.get('GPU', 0):g} GPU(s)")
    else:
        logging.getLogger(RAY_AUTH_LOGGER).addFilter(_AUTH_NOTICE)  # a filter is added once
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env=runtime_env, logging_level=level)
    try:
        yield
    finally:
        ray.shutdown()


class ResourceError(RuntimeError):
    """Trials that could never be scheduled on the cluster."""


def check_resources(cpus_per_trial: float, gpus_per_trial: float, resources: Mapping[str, float] | None = None) -> None:
    """Refuse trials that can never be scheduled on the cluster's ``resources`` (Ray would wait forever)."""
    resources = ray.cluster_resources() if resources is None else resources
    for option, name, need in (("cpus_per_trial", "CPU", cpus_per_trial), ("gpus_per_trial", "GPU", gpus_per_trial)):
        have = float(resources.get(name, 0))
        if need > have:
            raise ResourceError(f"--{option}={need:g}, but the Ray cluster has {have:g} {name}(s) in all: no trial "
                                "could ever start")


def make_tuner(trainable: Any, param_space: Mapping[str, Any], out: str, name: str, *, cpus: float, gpus: float,
               max_concurrent: int | None, trial_name: Callable[[Any], str], restore: bool = False,
               scheduler: Any = None, search_alg: Any = None, num_samples: int = 1, max_failures: int = 0,
               callbacks: list | None = None, verbose: bool = False, **data: Any) -> Any:
    """A ``ray.tune.Tuner`` of ``trainable`` (a function trainable, ``data`` shipped once through Ray's object
    store with ``tune.with_parameters``; actors reused between trials) writing its experiment to ``out/name``;
    ``restore`` continues one. Ray prints its trial tables only when ``verbose`` (``--verbose``); the caller prints
    a line per finished trial."""
    # Ray Tune's legacy output engine honours verbose=0 fully (its new one prints an experiment box regardless);
    # with verbose=1 it prints its trial tables (a CLIReporter).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    trainable = tune.with_resources(tune.with_parameters(trainable, **data) if data else trainable,
                                    {"cpu": cpus, "gpu": gpus})
    experiment = os.path.join(out, name)
    if restore:
        return tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=False)
    tune_config = tune.TuneConfig(num_samples=num_samples, scheduler=scheduler, search_alg=search_alg,
                                  max_concurrent_trials=max_concurrent, trial_dirname_creator=trial_name,
                                  trial_name_creator=trial_name, reuse_actors=True)
    run_config = tune.RunConfig(name=name, storage_path=out, verbose=1 if verbose else 0,
                                failure_config=tune.FailureConfig(max_failures=max_failures),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1), callbacks=callbacks)
    return tune.Tuner(trainable, param_space=dict(param_space), tune_config=tune_config, run_config=run_config)


class TrialEnd(tune.Callback):
    """A Ray Tune callback calling ``fn(trial, error)`` as soon as a trial ends (``error``: None unless it failed)."""

    def __init__(self, fn: Callable[[Any, BaseException | None], None]) -> None:
        self.fn = fn

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.fn(trial, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.fn(trial, trial.get_error())


def error_line(error: BaseException | None) -> str:
    """The last meaningful line of a Ray trial's error (``ValueError: Invalid learning rate: -1.0``), or ''."""
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__

