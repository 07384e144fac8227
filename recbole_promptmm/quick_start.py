"""``run()``: what ``run_recbole.py`` calls. Train, select on validation, test once, write a result JSON."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from logging import getLogger
from typing import Any, Callable, Sequence

import torch
from recbole.utils import init_seed

from recbole_promptmm.config import Config
from recbole_promptmm.data import create_dataset, data_preparation
from recbole_promptmm.log import init_logger
from recbole_promptmm.utils import get_model, get_trainer


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters the model uses: ``used_parameters()`` where a model defines it, else all of them."""
    if hasattr(model, "used_parameters"):
        return int(model.used_parameters())
    return sum(p.numel() for p in model.parameters())


def write_json_atomic(path: str, payload: dict) -> None:
    """Write JSON to ``path`` through a temporary file, so a failure leaves nothing half-written."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _floats(result: Any) -> Any:
    if result is None:
        return None
    return {k: float(v) for k, v in dict(result).items()}


def run(
    model: str | None = None,
    dataset: str | None = None,
    config_file_list: Sequence[str] | None = None,
    config_dict: dict | None = None,
    cmd_args: Sequence[str] | None = None,
    saved: bool = True,
    result_json: str | None = None,
    wrap_trainer: Callable[[type], type] | None = None,
) -> dict:
    """Train ``model`` on ``dataset`` (ours or a RecBole built-in), early-stop on validation, test once.

    Returns (and writes to ``result_json`` when given) model, dataset, resolved config, seed, number of
    parameters, best validation result, test result and train/eval seconds. Models that train in stages
    may add their own entries through ``trainer.extra_results(test_data)``. ``wrap_trainer`` receives the trainer
    class before it is instantiated and returns the class to use (e.g. a subclass that records epoch times).
    """
    config = Config(model, dataset, config_file_list, config_dict, cmd_args)
    init_seed(config["seed"], config["reproducibility"])
    # Load (and so check) the data before the logger creates its file: bad input writes nothing.
    data = create_dataset(config)
    log_file = init_logger(config)
    logger = getLogger()
    logger.info(" ".join(sys.argv))
    logger.info(config)
    logger.info(data)
    train_data, valid_data, test_data = data_preparation(config, data)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(net)
    trainer_class = get_trainer(config["MODEL_TYPE"], config["model"])
    if wrap_trainer is not None:
        trainer_class = wrap_trainer(trainer_class)
    trainer = trainer_class(config, net)
    if wrap_trainer is not None and hasattr(trainer, "wrap_stage_trainer"):
        trainer.wrap_stage_trainer = wrap_trainer  # trainers of its stages (PromptMM's teacher) get it too

    start = time.perf_counter()
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    eval_seconds = time.perf_counter() - start

    logger.info(f"best valid : {best_valid_result}")
    logger.info(f"test result: {test_result}")
    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "num_parameters": count_parameters(net),
        "best_valid_score": float(best_valid_score),
        "valid_metric": config["valid_metric"],
        "best_valid_result": _floats(best_valid_result),
        "test_result": _floats(test_result),
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "checkpoint": trainer.saved_model_file if saved else None,
        "log_file": log_file,
        "config": config.to_dict(),
    }
    if hasattr(trainer, "extra_results"):
        result.update(trainer.extra_results(test_data=test_data))
    if result_json:
        write_json_atomic(result_json, result)
        logger.info(f"result written to {result_json}")
    return result

