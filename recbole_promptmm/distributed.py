"""One run over several processes, as RecBole 1.2.1 runs it: ``nproc`` processes started with
``torch.multiprocessing.spawn`` (RecBole's ``recbole.quick_start.run``), each one rank of a
``torch.distributed`` process group that RecBole's ``Config`` joins (``local_rank`` + ``offset`` of
``world_size``, rendezvous at ``tcp://ip:port``); its data loaders shard with a ``DistributedSampler``, its
``Trainer`` averages gradients with ``DistributedDataParallel`` and gathers evaluation from every rank.

This module holds what the rest of the package needs for that: the launch settings read from a config
(:func:`launch_settings`), the spawn and its outcome (:func:`spawn`), whether this process is the main one (global
rank 0, the only one that writes files: :func:`is_main_process`), and the collectives that keep the ranks in step
(:func:`on_main`: rank 0 reads a file, every rank gets what it read; :func:`gather`: one object from every rank).
It imports nothing of the package but :mod:`recbole_promptmm.errors` (so every layer can use it). See
``docs/DISTRIBUTED.md``.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import time
import warnings
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from recbole_promptmm.errors import ConfigError

LAUNCH_KEYS = ("nproc", "world_size", "offset", "ip", "port")
"""RecBole's config keys of a multi-process run (``recbole.quick_start.run`` puts them in ``config_dict``)."""
PROCESS_KEYS = frozenset({"local_rank", "single_spec", "device", "world_size", "offset", "ip", "port"})
"""Keys whose resolved values depend on the process, not on the run: a resumed run may differ in them (a new free
port, the launcher's config that has no rank yet)."""
QUIET_KEYS = frozenset({"state", "show_progress", "verbose"})
"""Keys RecBole's ``Config`` turns down on every rank but the first of a machine (``local_rank != 0``)."""
GRACE_SECONDS = 60
"""How long the other processes get to stop on their own once one has failed, before they are terminated."""
# ``ddp_batch``: train_batch_size is the global batch (RecBole's split) or each process's (compat._train_step)
DDP_BATCHES = ("global", "per_process")


# --------------------------------------------------------------------------------------------- ranks
def is_distributed() -> bool:
    """Whether this process is one rank of an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """Global rank 0, or a single-process run: the process that writes logs, checkpoints and results."""
    return rank() == 0


def process_keys(config) -> frozenset:
    """The keys :func:`~recbole_promptmm.trainer.resume.config_differences` ignores for this process's ``config``."""
    return PROCESS_KEYS | (QUIET_KEYS if (config["local_rank"] or 0) != 0 else frozenset())


def on_main(read: Callable[[], Any]) -> Any:
    """``read()`` on the main process, its value (or the exception it raised) on every rank: files this run wrote
    are read where they were written (another machine has none), and every rank goes on with the same weights."""
    if not is_distributed():
        return read()
    box: list = [None]
    if is_main_process():
        try:
            box[0] = (True, read())
        except Exception as err:  # every rank raises it, none waits in a collective for rank 0
            box[0] = (False, err)
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def describe(config) -> str:
    """One line on this process's run: how many processes, backend and device, this machine's ranks."""
    first = config["offset"]
    return (f"{world_size()} processes ({dist.get_backend()} on {config['device'].type}), ranks {first}.."
            f"{first + config['nproc'] - 1} on this machine; only rank 0 writes files")


def map_location(device) -> Any:
    """Where :func:`on_main` loads tensors: the CPU in a multi-process run (they travel pickled to every rank, whose
    ``load_state_dict`` copies them to its device), else ``device``."""
    return "cpu" if is_distributed() else device


def world_size() -> int:
    """The number of processes of this run (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def gather(obj: Any) -> list:
    """``obj`` of every rank, in rank order (``[obj]`` in a single-process run)."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap(model: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """``model`` in ``DistributedDataParallel`` as RecBole's ``Trainer`` wraps it, on CPU too (``device_ids`` only
    for a CUDA device). Buffers are neither broadcast at the start nor before each forward: every buffer of our
    models is built from the data (the same on every rank; graphs are sparse, which DDP cannot broadcast), and
    RecBole calls the wrapper's forward once per batch only to arm the gradient all-reduce."""
    device_ids = [device.index] if device.type == "cuda" else None
    with warnings.catch_warnings():  # torch 2.13: "broadcast_buffers is deprecated"; False is still the only
        warnings.filterwarnings("ignore", message=".*broadcast_buffers", category=FutureWarning)  # way to skip init
        return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


# --------------------------------------------------------------------------------------------- launch
def launch_settings(config) -> dict | None:
    """RecBole's launch keys of a multi-process run (``nproc``, ``world_size``, ``offset``, ``ip``, ``port``),
    resolved and checked, or None for a single-process run (``nproc`` 1 and no ``world_size``, RecBole's rule).

    ``world_size`` defaults to ``nproc`` (one machine), ``ip`` to ``localhost`` and ``port`` to a free port of this
    machine; a run over several machines (``world_size`` > ``nproc``) must name the port, which every machine
    gives alike."""
    nproc, world_size, offset = config["nproc"], config["world_size"], config["offset"]
    nproc = 1 if nproc is None else nproc
    world_size = -1 if world_size is None else world_size
    offset = 0 if offset is None else offset
    for key, value in (("nproc", nproc), ("world_size", world_size), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
    if nproc < 1:
        raise ConfigError(f"nproc must be at least 1, got {nproc}")
    if nproc == 1 and world_size <= 0:
        return None
    world_size = nproc if world_size == -1 else world_size
    if not 0 <= offset <= world_size - nproc:
        raise ConfigError(f"offset {offset} with nproc {nproc} leaves the ranks 0..{world_size - 1} of world_size "
                          f"{world_size}: offset must be between 0 and {max(world_size - nproc, 0)}")
    port = config["port"]
    if port is None and world_size > nproc:
        raise ConfigError(f"world_size {world_size} > nproc {nproc} (several machines): give --port=P (and "
                          "--ip=<address of the machine with offset 0>) alike on every machine")
    ip = str(config["ip"] or "localhost")
    return {"nproc": nproc, "world_size": world_size, "offset": offset, "ip": ip,
            "port": free_port(ip) if port is None else int(port)}


def free_port(ip: str = "localhost") -> int:
    """A TCP port nobody listens on at ``ip`` now (the rendezvous of a one-machine run)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip if ip != "localhost" else "127.0.0.1", 0))
        return s.getsockname()[1]


class _Outcome:
    """What a process sends back through the spawn queue (a result, or the exception it ended with)."""

    def __init__(self, local_rank: int, value: Any = None, error: BaseException | None = None) -> None:
        self.local_rank, self.value, self.error = local_rank, value, error


def _picklable(err: BaseException, local_rank: int) -> BaseException:
    try:
        pickle.dumps(err)
        return err
    except Exception:  # an exception that cannot cross processes: its type and message
        return RuntimeError(f"process {local_rank}: {type(err).__name__}: {err}")


def _interrupt_once(signum, frame) -> None:
    """SIGINT in a process of a run: KeyboardInterrupt once (the terminal and the launcher may both send it), then
    ignored while the process stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def process_main(local_rank: int, queue, nproc: int, target: Callable[[int], Any]) -> None:
    """The body of one spawned process: ``target(local_rank)``, its result (local rank 0) or exception sent back;
    the process group is left at the end. One torch thread per core of this machine's share unless
    ``OMP_NUM_THREADS`` says otherwise (as ``torchrun`` does)."""
    signal.signal(signal.SIGINT, _interrupt_once)
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    try:
        value = target(local_rank)
    except BaseException as err:
        queue.put(_Outcome(local_rank, error=_picklable(err, local_rank)))
        raise  # torch's spawn wrapper: exit status 1 and the traceback for an error, 0 for KeyboardInterrupt
    else:
        if local_rank == 0:
            queue.put(_Outcome(local_rank, value=value))
    finally:
        if is_distributed():
            dist.destroy_process_group()


def spawn(fn: Callable, args: tuple, nproc: int) -> Any:
    """Run ``fn(local_rank, queue, *args)`` in ``nproc`` processes started as RecBole starts them
    (``torch.multiprocessing.spawn``, a spawn-context ``SimpleQueue`` for the result); ``fn`` calls
    :func:`process_main`. Returns local rank 0's result.

    A process's exception is raised here (the first one sent back; an interruption before any other error, local
    rank 0's first), so an entry point reports it as it reports a single-process run's. Ctrl-C here (or SIGINT to
    this process alone) is passed on to the processes once; they stop as an interrupted run stops, and their
    interruption is raised. A second Ctrl-C terminates them (a second SIGINT within a second is taken for the same
    one sent twice: ``timeout`` sends it to its child and to the child's process group)."""
    queue = mp.get_context("spawn").SimpleQueue()
    context = mp.spawn(fn, args=(queue, *args), nprocs=nproc, join=False)
    failure: BaseException | None = None
    interrupted: float | None = None  # when the first Ctrl-C came
    outcomes: list[_Outcome] = []
    while True:
        try:
            while not queue.empty():  # read as they come: a process blocks on a large result until it is read
                outcomes.append(queue.get())
            if context.join(timeout=0.2, grace_period=GRACE_SECONDS):
                break
        except KeyboardInterrupt:
            if interrupted is not None and time.monotonic() - interrupted > 1:  # not one signal sent twice
                for process in context.processes:
                    if process.is_alive():
                        process.terminate()
                raise
            if interrupted is not None:
                continue
            interrupted = time.monotonic()
            for process in context.processes:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGINT)
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:  # one failed: torch stopped the others
            failure = err
            break
    while not queue.empty():
        outcomes.append(queue.get())
    errors = [o for o in outcomes if o.error is not None]
    stops = sorted((o for o in errors if isinstance(o.error, KeyboardInterrupt)), key=lambda o: o.local_rank)
    if stops or errors:
        raise (stops or errors)[0].error from failure
    if failure is not None:
        raise failure
    if interrupted is not None:
        raise KeyboardInterrupt
    results = [o.value for o in outcomes if o.local_rank == 0]
    return results[0] if results else None
