"""Where sweeps and comparisons run: a private local Ray instance (``address="local"``: never another Ray instance
of the machine), stopped at the end, or the cluster at ``--address`` (``HOST:PORT`` of a head, or ``auto``); a
Ray session already running in the process is used as it is."""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator, Mapping

import ray

RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class ResourceError(RuntimeError):
    """Trials that could never be scheduled on the cluster."""


def _not_auth_notice(record: logging.LogRecord) -> bool:
    """Drops Ray's notice that a new local instance uses token authentication (its default, printed every time)."""
    return "Token authentication is enabled" not in record.getMessage()


@contextlib.contextmanager
def ray_session(options, say: Callable[[str], None] = print) -> Iterator[None]:
    """A Ray session for ``options`` (:class:`~.options.RayOptions`) whose trials fit on it. Every worker runs its
    OpenMP / BLAS pools with ``cpus_per_trial`` threads (trials sharing a machine must not each take all of its
    cores); Ray's own INFO lines only with ``--verbose``."""
    started = not ray.is_initialized()
    if started:
        threads = str(max(1, int(options.cpus_per_trial)))
        settings = dict(log_to_driver=False, logging_level=logging.INFO if options.verbose else logging.WARNING,
                        runtime_env={"env_vars": dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                                "OPENBLAS_NUM_THREADS"), threads)})
        if options.address:
            ray.init(address=options.address, **settings)
            resources = ray.cluster_resources()
            say(f"ray: connected to {options.address}: {sum(n.get('Alive', False) for n in ray.nodes())} node(s), "
                f"{resources.get('CPU', 0):g} CPU(s), {resources.get('GPU', 0):g} GPU(s)")
        else:
            logging.getLogger(RAY_AUTH_LOGGER).addFilter(_not_auth_notice)  # a filter is added once
            ray.init(address="local", num_cpus=options.num_cpus, include_dashboard=False, **settings)
    try:
        check_resources(options.cpus_per_trial, options.gpus_per_trial)
        yield
    finally:
        if started:
            ray.shutdown()


def check_resources(cpus_per_trial: float, gpus_per_trial: float, resources: Mapping[str, float] | None = None) -> None:
    """Refuse trials that can never be scheduled on the cluster's ``resources`` (Ray would wait forever)."""
    resources = ray.cluster_resources() if resources is None else resources
    for option, name, need in (("cpus_per_trial", "CPU", cpus_per_trial), ("gpus_per_trial", "GPU", gpus_per_trial)):
        if need > float(resources.get(name, 0)):
            raise ResourceError(f"--{option}={need:g}, but the Ray cluster has {float(resources.get(name, 0)):g} "
                                f"{name}(s) in all: no trial could ever start")


def error_line(error: BaseException | None) -> str:
    """The last meaningful line of a Ray error (``ValueError: Invalid learning rate: -1.0``), or ''."""
    lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__) if error is not None else ""
