"""``run()``: what ``run_recbole.py`` calls. Train, select on validation, test once, write a result JSON."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
import time
from logging import getLogger
from typing import Any, Callable, Sequence

from recbole.utils import init_seed

from recbole_promptmm import distributed
from recbole_promptmm.config import Config, device_name, gpu_request
from recbole_promptmm.files import check_output_file, check_writable, json_has_keys, write_json_atomic
from recbole_promptmm.log import (FILE_ONLY, buffer_logs, discard_run_log, init_logger, remove_empty_dirs,
                                  replay_buffered_logs, tensorboard_dir, unique_time)
from recbole_promptmm.model.accounting import used_parameters
from recbole_promptmm.registry import get_model, get_trainer
from recbole_promptmm.summary import display_path, summary_lines
from recbole_promptmm.trainer.resume import (ResumeError, RunInterrupted, config_differences, interrupted,
                                             read_resume_file)
from recbole_promptmm.validate import ConfigError, prepare_data, validate_config

RESULT_KEYS = ("model", "dataset", "checkpoint")  # what marks a result file (export's --result_json reads them)


def _floats(result: Any) -> Any:
    if result is None:
        return None
    return {k: float(v) for k, v in dict(result).items()}


def plain_result(result: Any, digits: int = 4) -> Any:
    """A metrics result for the log: a plain dict of floats rounded to ``digits`` (not an OrderedDict of
    numpy floats)."""
    if result is None:
        return None
    return {k: round(float(v), digits) for k, v in dict(result).items()}


def _log_level(config) -> int:
    state = config["state"]
    return logging.DEBUG if isinstance(state, str) and state.lower() == "debug" else logging.INFO


def show_progress(config) -> bool:
    """RecBole's ``show_progress`` where the user sets it; by default progress bars only on a terminal (tqdm draws on
    stderr, so piped or redirected output gets none of its redraws)."""
    if not distributed.is_main_process():
        return False
    if config.key_source("show_progress") != "defaults":
        return bool(config["show_progress"])
    return sys.stderr.isatty()


def is_result_file(path: str) -> bool:
    """Whether ``path`` holds a run's result (what ``result_json`` is written with: a JSON object naming the model,
    dataset and checkpoint); a later run may replace it."""
    return json_has_keys(path, RESULT_KEYS)


def run_stamp(resumed: dict | None, model: str) -> str:
    """The time stamp and random suffix that name every file of this run (checkpoints, log, TensorBoard folder): a
    new one, or a resumed run's (``<checkpoint_dir>/<model>-<stamp>.pth``), so its log goes on in the same file."""
    if resumed is not None:
        name = os.path.splitext(os.path.basename(resumed["run_files"]["saved_model_file"]))[0]
        if name.startswith(f"{model}-"):
            return name[len(model) + 1:]
    return unique_time()


def discard_failed_run(config, trainer) -> None:
    """What a run that failed before finishing its first epoch wrote: its log file, its TensorBoard folder, its
    checkpoints (every file that starts with the trainer's per-run ``run_stem``: never a user's
    ``teacher_checkpoint``), and the folders that leaves empty."""
    trainers = [] if trainer is None else [trainer, *getattr(trainer, "stage_trainers", list)()]
    folders = {tensorboard_dir(logging.getLogger())} - {None, ""}
    for t in trainers:
        writer = getattr(t, "tensorboard", None)
        if writer is not None:
            writer.close()
            folders.add(writer.log_dir)
    for folder in folders:
        if os.path.isdir(folder):
            shutil.rmtree(folder, ignore_errors=True)
            remove_empty_dirs(os.path.dirname(folder) or ".")
    stems = {getattr(t, "run_stem", None) for t in trainers} - {None}
    for stem in stems:
        for path in glob.glob(glob.escape(stem) + "*"):
            if os.path.isfile(path):
                os.remove(path)
    if config["checkpoint_dir"]:
        remove_empty_dirs(config["checkpoint_dir"])
    discard_run_log()


def run(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: Sequence[str] | None = None,
    config_dict: dict | None = None,
    cmd_args: Sequence[str] | None = None,
    saved: bool = True,
    result_json: str | None = None,
    after_fit: Callable[[Any, Any], dict] | None = None,
    resume: str | None = None,
    callbacks: Sequence[Any] = (),
    process: dict | None = None,
    run_dir: str | None = None,
) -> dict | None:
    """Train ``model`` on ``dataset`` (ours or a RecBole built-in), early-stop on validation, test once.

    Returns (and writes to ``result_json`` when given) model, dataset, resolved config, seed, number of
    parameters, best validation result, test result and train/eval seconds. Models that train in stages
    may add their own entries through ``trainer.extra_results(test_data)``; ``stages`` holds every training stage's
    epochs and seconds (``trainer.timing()``). ``after_fit(trainer, train_data)``, when given, runs after the test
    and its dict joins the result (a comparison measures the trained model's cost there). ``callbacks`` become
    the trainer's ``callbacks`` (``on_epoch_end(trainer)`` / ``on_valid_end(trainer)``: progress reports).

    ``resume`` is the ``-resume.pth`` file of an interrupted run (:mod:`recbole_promptmm.trainer.resume`): the run
    continues with the inputs it started with (give none, or the same) and ends with the metrics an uninterrupted
    run would have. Ctrl-C raises :class:`~recbole_promptmm.trainer.resume.RunInterrupted`, which says what was
    saved.

    ``nproc`` > 1 (or a ``world_size``; RecBole's keys, :mod:`recbole_promptmm.distributed`) runs the model in
    ``nproc`` processes, spawned here as RecBole spawns them: each trains on its shard of every batch, evaluation is
    gathered from all of them, and only the main process (rank 0) writes logs, checkpoints and ``result_json``;
    the result returned is this machine's first process's (every process's metrics are the gathered ones).
    ``callbacks`` and ``after_fit`` then run in every process (they must pickle). ``process`` is for the spawned
    processes alone: the launch keys and ``local_rank`` of one of them.
    """
    resumed = None
    if resume:
        resumed = read_resume_file(resume)
        model, dataset, config_file_list, config_dict, cmd_args, result_json = _resume_inputs(
            resumed, resume, model, dataset, config_file_list, config_dict, cmd_args, result_json)
    try:
        config = Config(model, dataset, config_file_list, {**(config_dict or {}), **(process or {})}, cmd_args)
    except (TypeError, NotImplementedError) as err:  # RecBole's own checks (topk, metrics, ...)
        raise ConfigError(f"invalid config: {err}") from err
    # Every check that can fail runs before the logger creates its file: bad input writes nothing.
    validate_config(config)
    if result_json:
        check_output_file(result_json, "--result_json", "run", "a result file", is_result_file)
    check_writable(config["checkpoint_dir"], "checkpoint_dir", folder=True)
    launch = distributed.launch_settings(config) if process is None else None
    if launch is not None:  # this process only starts the run's processes, and writes nothing
        inputs = {"model": model, "dataset": dataset, "config_file_list": config_file_list, "config_dict": config_dict,
                  "cmd_args": cmd_args, "saved": saved, "result_json": result_json, "after_fit": after_fit,
                  "resume": resume, "callbacks": list(callbacks), "run_dir": run_dir}
        return distributed.spawn(_run_process, (inputs, launch), launch["nproc"])
    init_seed(config["seed"], config["reproducibility"])
    with buffer_logs(_log_level(config)):  # what data loading and the model log goes into the log file later
        data, (train_data, valid_data, test_data) = prepare_data(config)  # checked; sets the derived batch sizes
        if resumed is not None:  # compared with the batch sizes the data gives, as the interrupted run saved them
            saved_config = resumed["config"] if resumed["stage"] != "teacher" else None
            differences = [] if saved_config is None else config_differences(
                saved_config, config, ignore=distributed.process_keys(config))
            if differences:
                raise ResumeError(f"--resume: the config differs from the interrupted run's (a config file or the "
                                  f"data changed?): {'; '.join(differences[:5])}")
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        net = get_model(config["model"])(config, train_data._dataset).to(config["device"])

    stamp = distributed.on_main(lambda: run_stamp(resumed, config["model"]))  # every process names the same files
    log_file = init_logger(config, stamp, run_dir)
    logger = getLogger()
    trainer = None
    progress = show_progress(config)
    try:
        if log_file:
            logger.info(f"{config['model']} on {config['dataset']}, on {device_name(config['device'])}: config, data "
                        f"and model in {display_path(log_file)}")
        if gpu_request(config) and config["device"].type == "cpu":
            logger.warning(f"{gpu_request(config)} asks for a GPU, but {_no_gpu_reason(config)}: the run is on cpu")
        if distributed.is_distributed():
            logger.info(distributed.describe(config))
        logger.info(" ".join(sys.argv), extra=FILE_ONLY)
        logger.info(config, extra=FILE_ONLY)
        logger.info(data, extra=FILE_ONLY)
        replay_buffered_logs()
        logger.info(net, extra=FILE_ONLY)
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
        trainer.callbacks = list(callbacks)
        if hasattr(trainer, "adopt_run_files"):  # one stamp names the log and the checkpoints
            trainer.adopt_run_files(os.path.join(config["checkpoint_dir"], f"{config['model']}-{stamp}.pth"))
        trainer.run_inputs = {"model": model, "dataset": dataset, "result_json": result_json,
                              "config_file_list": [os.path.abspath(f) for f in config_file_list or []],
                              "config_dict": dict(config_dict or {}), "cmd_args": list(cmd_args or [])}
        if resumed is not None:
            trainer.resume_from(resumed)
            logger.info(f"resuming {resume}: stage {resumed['stage'] or 'training'}, epoch {resumed['epoch']}")

        start = time.perf_counter()
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=progress
        )
    except BaseException as err:
        # Failed before its first epoch ended (e.g. a foreign teacher_checkpoint): leave nothing behind (a
        # resumed run's files are the interrupted run's: they stay).
        if getattr(trainer, "epochs_completed", 0) == 0 and resumed is None and distributed.is_main_process():
            discard_failed_run(config, trainer)
        if isinstance(err, KeyboardInterrupt) and not isinstance(err, RunInterrupted):
            raise interrupted(trainer.resume_file if trainer is not None and saved else None) from None
        raise
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=progress)
    eval_seconds = time.perf_counter() - start

    stage = "student " if hasattr(trainer, "teacher_trainer") else ""
    logger.info(f"{stage}best valid : {plain_result(best_valid_result)}", extra=FILE_ONLY)
    logger.info(f"{stage}test result: {plain_result(test_result)}", extra=FILE_ONLY)
    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "num_parameters": used_parameters(net),
        "best_valid_score": float(best_valid_score),
        "valid_metric": config["valid_metric"],
        "best_valid_result": _floats(best_valid_result),
        "test_result": _floats(test_result),
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "device": device_name(config["device"]),
        "checkpoint": trainer.saved_model_file if saved else None,
        "log_file": log_file,
        "config": config.to_dict(),
    }
    if hasattr(trainer, "extra_results"):
        result.update(trainer.extra_results(test_data=test_data))
    if result.get("teacher"):
        logger.info(f"teacher best valid : {plain_result(result['teacher']['best_valid_result'])}", extra=FILE_ONLY)
        logger.info(f"teacher test result: {plain_result(result['teacher']['test_result'])}", extra=FILE_ONLY)
    if hasattr(trainer, "timing"):
        result["stages"] = [t.timing() for t in (*trainer.stage_trainers(), trainer) if t is trainer or t.epoch_seconds]
    if after_fit is not None:
        result.update(after_fit(trainer, train_data))
    if result_json and distributed.is_main_process():
        write_json_atomic(result_json, result)
        logger.info(f"result written to {result_json}", extra=FILE_ONLY)
    if trainer.resume_file and distributed.is_main_process() and os.path.isfile(trainer.resume_file):
        os.remove(trainer.resume_file)  # finished: nothing left to resume
    logger.info("\n".join(summary_lines(result, result_json)))
    return result


def _no_gpu_reason(config) -> str:
    """Why a run whose user asked for a GPU is on the CPU (RecBole's rule: no CUDA, or an empty ``gpu_id``)."""
    import torch

    if not torch.cuda.is_available():
        return "torch finds no CUDA device on this machine"
    return f"gpu_id is {config['gpu_id']!r}"


def _run_process(local_rank: int, queue, inputs: dict, launch: dict) -> None:
    """One process of a multi-process run (what :func:`distributed.spawn` starts)."""
    distributed.process_main(local_rank, queue, launch["nproc"],
                             lambda rank: run(**inputs, process={**launch, "local_rank": rank}))


def _resume_inputs(state: dict, path: str, model, dataset, config_file_list, config_dict, cmd_args, result_json):
    """The inputs of the interrupted run in ``state``; any given input must be the same."""
    saved = state.get("run_inputs")
    if not saved:
        raise ResumeError(f"--resume: {path} was written outside run() (a sweep trial?); it holds no run inputs")
    given = {"model": model, "dataset": dataset, "config_dict": config_dict or None,
             "cmd_args": list(cmd_args) if cmd_args else None,
             "config_file_list": [os.path.abspath(f) for f in config_file_list] if config_file_list else None}
    # Given and different (a model or dataset equal but for case is the same run).
    different = [k for k, v in given.items() if v is not None and v != saved[k]
                 and not (isinstance(v, str) and v.lower() == str(saved[k]).lower())]
    if different:
        raise ResumeError(f"--resume continues the run with the inputs it started with; leave out "
                          f"{', '.join(different)} (then: {', '.join(f'{k}={saved[k]!r}' for k in different)})")
    return (saved["model"], saved["dataset"], saved["config_file_list"] or None, saved["config_dict"] or None,
            saved["cmd_args"] or None, result_json or saved["result_json"])

