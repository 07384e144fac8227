"""From a checkpoint to what serves it: the model with its data (:func:`load_run`), its final embeddings
(:func:`dot_product_embeddings`), and the numpy-only artefact (:func:`export`)."""

from __future__ import annotations

import filecmp
import json
import os
import platform
from dataclasses import dataclass
from typing import Any

import numpy as np
import recbole
import scipy
import torch
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from recbole_promptmm import __version__
from recbole_promptmm.checkpoint import load_checkpoint
from recbole_promptmm.config import plain
from recbole_promptmm.config_rules import teacher_config
from recbole_promptmm.data import create_dataset, data_preparation
from recbole_promptmm.files import finite_or_none
from recbole_promptmm.model.scoring import CachedDotProductScorer
from recbole_promptmm.model.student import PromptMMStudent
from recbole_promptmm.registry import get_model
from recbole_promptmm.serving.artefact import check_artefact_folder, write_artefact
from recbole_promptmm.fingerprint import config_hash  # one fingerprint, the comparison's too


class NotDotProductError(ValueError):
    """A model whose scores are not ``user @ item.T`` of two embedding tables (it cannot be exported)."""


@dataclass
class LoadedRun:
    """A checkpoint's model in eval mode, with its config and RecBole's loaders (rebuilt from the data files)."""

    config: Any
    model: torch.nn.Module
    train_data: Any
    valid_data: Any
    test_data: Any


def read_checkpoint(checkpoint_file: str) -> dict:
    """The checkpoint that ``--checkpoint`` names, or the reader's one-line
    :class:`~recbole_promptmm.checkpoint.CheckpointError` (missing, truncated, not a torch file, another kind)."""
    return load_checkpoint(checkpoint_file, "cpu", what="--checkpoint")


def dataset_config(config, data_path: str | None = None):
    """``config`` (a checkpoint's) pointing at its dataset from any working folder: ``data_path`` (as ``run``'s
    ``--data_path``: the folder holding ``<dataset>/``) when given, else the absolute dataset folder stored at
    training (``Config.absolute_data_path``), else the saved ``data_path`` as it is (a checkpoint written before
    the folder was stored: relative to the working folder)."""
    if data_path is not None:
        config["data_path"] = os.path.join(os.path.abspath(data_path), config["dataset"])
    elif config.__dict__.get("absolute_data_path"):
        config["data_path"] = config.__dict__["absolute_data_path"]
    return config


def load_run(checkpoint_file: str, checkpoint: dict | None = None, data_path: str | None = None) -> LoadedRun:
    """Rebuild the model of a checkpoint (ours or a RecBole built-in; PromptMM's ``-student.pth`` too) with its
    dataset (found by :func:`dataset_config`; ``data_path`` overrides it), as RecBole's ``load_data_and_model``
    does, but without creating a log file. The file is read (and refused when it is no checkpoint) before the
    dataset loads; ``checkpoint``: already read by :func:`read_checkpoint`."""
    checkpoint = read_checkpoint(checkpoint_file) if checkpoint is None else checkpoint
    config = checkpoint["config"]
    trained_data_path = config["data_path"]
    config = dataset_config(config, data_path)
    config["device"] = torch.device("cpu") if not torch.cuda.is_available() else config["device"]
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    config["data_path"] = trained_data_path  # the config as trained: its hash is the run's (config_hash)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    return LoadedRun(config, model, train_data, valid_data, test_data)


@torch.no_grad()
def dot_product_embeddings(model: torch.nn.Module, n_users: int, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Final user [U, d] and item [I, d] embeddings whose dot products are the model's full-sort scores.

    Ours: the cached forward of :class:`~recbole_promptmm.model.scoring.CachedDotProductScorer` (PromptMM: the
    active stage's model). RecBole's graph models (LightGCN, NGCF, SGL, NCL, ...): ``forward()`` without
    arguments. Matrix factorisation (BPR, ...): the ``user_embedding`` / ``item_embedding`` tables. The result
    is checked against ``full_sort_predict``; a model it does not match is a :class:`NotDotProductError`.
    """
    model.eval()
    inner = model.active() if hasattr(model, "active") else model
    found = None
    if isinstance(inner, CachedDotProductScorer):
        found = inner.user_item(inner.cached_forward())
    else:
        try:
            out = inner.forward()
        except TypeError:  # forward(user, item, ...): matrix factorisation
            out = None
        if isinstance(out, tuple) and len(out) >= 2 and all(torch.is_tensor(t) for t in out[:2]):
            found = out[:2]
        elif hasattr(inner, "user_embedding") and hasattr(inner, "item_embedding"):
            found = inner.user_embedding.weight, inner.item_embedding.weight
    name = type(inner).__name__
    if found is None or found[0].shape[0] != n_users or found[1].shape[0] != n_items \
            or found[0].dim() != 2 or found[0].shape[1] != found[1].shape[1]:
        raise NotDotProductError(f"{name} has no user and item embedding tables that score by dot product; "
                                 f"export needs one (recbole-promptmm recommend works with any model)")
    user, item = (t.detach().float().cpu() for t in found)
    _check_scores(model, user, item, name)
    return user, item


def _check_scores(model, user: torch.Tensor, item: torch.Tensor, name: str, sample: int = 64) -> None:
    ids = torch.linspace(1, user.shape[0] - 1, min(sample, user.shape[0] - 1)).long().unique()
    expected = model.full_sort_predict(Interaction({model.USER_ID: ids.to(model.device)})).view(len(ids), -1).cpu()
    got = user[ids] @ item.T
    scale = float(expected.abs().max()) or 1.0
    if not torch.allclose(got, expected.float(), rtol=1e-4, atol=1e-5 * scale):
        raise NotDotProductError(f"{name}'s full-sort scores are not user @ item.T of its embeddings (max "
                                 f"difference {float((got - expected).abs().max()):.3g}); it cannot be exported")




def _versions() -> dict:
    return {"recbole_promptmm": __version__, "recbole": recbole.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "python": platform.python_version()}


def serving_arrays(loaded: LoadedRun, embeddings: bool = True) -> dict[str, np.ndarray]:
    """Everything an artefact holds, from a loaded run (without the embeddings: what any model's scores need)."""
    dataset = loaded.train_data._dataset
    seen = dataset.inter_matrix(form="csr")
    seen.data[:] = 1
    seen.sum_duplicates()
    out = {}
    if embeddings:
        user, item = dot_product_embeddings(loaded.model, dataset.user_num, dataset.item_num)
        out = {"user": user.numpy().astype(np.float32), "item": item.numpy().astype(np.float32)}
    return {
        **out,
        "user_tokens": np.asarray(dataset.field2id_token[dataset.uid_field]).astype(str),
        "item_tokens": np.asarray(dataset.field2id_token[dataset.iid_field]).astype(str),
        "seen_indptr": seen.indptr.astype(np.int64), "seen_indices": seen.indices.astype(np.int32),
        "popularity": np.asarray(seen.sum(axis=0)).ravel().astype(np.int64),
    }


class ResultMismatchError(ValueError):
    """A ``--result_json`` that is not the result of the exported checkpoint's run."""


def read_result(result_json: str) -> dict:
    """The result file that ``run --result_json`` (or a comparison's ``result.json``) wrote, or a one-line
    ValueError naming the file and what it holds instead."""
    if not os.path.isfile(result_json):
        raise FileNotFoundError(f"--result_json {result_json} does not exist")
    try:
        with open(result_json, encoding="utf-8") as f:
            result = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--result_json {result_json} is not a JSON file ({err})") from None
    missing = [k for k in ("model", "dataset", "checkpoint") if not isinstance(result, dict) or k not in result]
    if missing:
        raise ValueError(f"--result_json {result_json} is not a run's result file (it has no {', '.join(missing)}; "
                         "run --result_json=FILE writes one)")
    return result


# Keys in which a stage's checkpoint config legitimately differs from its run's (PromptMM's student and teacher
# files hold the config a standalone run of that model would have).
_MODEL_KEYS = ("model", "MODEL_TYPE", "MODEL_INPUT_TYPE")


def _stages(result: dict) -> list[tuple[str, str | None, dict, dict]]:
    """(model, checkpoint path, results, resolved config) of each checkpoint a result file names: the run's own,
    PromptMM's student file (same results) and teacher file (the teacher's results and config)."""
    config = result.get("config") or {}
    stages = [(result["model"], result["checkpoint"], result, config)]
    if result.get("student_checkpoint"):
        stages.append((PromptMMStudent.__name__, result["student_checkpoint"], result, config))
    teacher = result.get("teacher")
    if isinstance(teacher, dict) and teacher.get("model"):
        tconfig = teacher_config(_ConfigDict(config)).final_config_dict if config else {}
        stages.append((teacher["model"], teacher.get("checkpoint"), teacher, tconfig))
    return stages


class _ConfigDict:
    """A result file's resolved config, read as a RecBole ``Config`` is (for :func:`teacher_config`)."""

    def __init__(self, values: dict) -> None:
        self.final_config_dict = dict(values)

    def __getitem__(self, key: str):
        return self.final_config_dict.get(key)


def _same_file(given: str, named: str | None) -> bool:
    """Whether the result file's path ``named`` is the checkpoint ``given``: the same file or a copy of it when
    ``named`` leads to a file from here, else the same name (run files are named uniquely per run)."""
    if not named:
        return False
    if os.path.isfile(named):
        return filecmp.cmp(given, named, shallow=False)
    return os.path.basename(named) == os.path.basename(given)


def _as_written(values: dict) -> dict:
    """A resolved config as a result file holds it (``Config.to_dict`` written by ``write_json_atomic``)."""
    return json.loads(json.dumps(finite_or_none({str(k): plain(v) for k, v in values.items()}), default=str))


def check_result(result: dict, result_json: str, checkpoint_file: str, config) -> dict:
    """The results in ``result`` that belong to the checkpoint (see :func:`_stages`), or a
    :class:`ResultMismatchError` naming the first of model, dataset, config (every resolved key but the model's
    name and type; skipped for a result file without one), checkpoint path that differs."""
    def refuse(field: str, detail: str) -> ResultMismatchError:
        return ResultMismatchError(f"--result_json {result_json} is not the result of --checkpoint {checkpoint_file}: "
                                   f"{field} differs ({detail})")

    stages = _stages(result)
    matching = [stage for stage in stages if stage[0] == config["model"]]
    if not matching:
        models = ", ".join(stage[0] for stage in stages)
        raise refuse("model", f"the result file's checkpoints hold {models}; this one holds {config['model']}")
    _, path, results, expected = matching[0]
    if result["dataset"] != config["dataset"]:
        raise refuse("dataset", f"{result['dataset']!r} in the result file, {config['dataset']!r} in the checkpoint")
    if expected:
        saved, expected = _as_written(config.final_config_dict), _as_written(expected)
        differing = [k for k in sorted(set(expected) | set(saved)) if k not in _MODEL_KEYS
                     and expected.get(k) != saved.get(k)]
        if differing:
            key, more = differing[0], len(differing) - 1
            raise refuse("config", f"{key}: {expected.get(key)!r} in the result file, {saved.get(key)!r} in the "
                                   f"checkpoint" + (f"; {more} more key{'s' * (more > 1)}" if more else ""))
    if not _same_file(checkpoint_file, path):
        raise refuse("checkpoint", f"the result file names {path}")
    return results


def _metrics(checkpoint: dict, checkpoint_file: str, result_json: str | None) -> dict:
    """The run's validation/test figures: from its result JSON when given (RecBole's numbers, as the run reported
    them; checked against the checkpoint by :func:`check_result`), else the best validation score the checkpoint
    holds."""
    if result_json:
        results = check_result(read_result(result_json), result_json, checkpoint_file, checkpoint["config"])
        return {"valid": results.get("best_valid_result"), "test": results.get("test_result"), "from": result_json}
    score = checkpoint.get("best_valid_score")
    return {"best_valid_score": None if score is None else float(score), "from": checkpoint_file}


def export(checkpoint_file: str, out: str, result_json: str | None = None, data_path: str | None = None) -> dict:
    """Write the artefact of a checkpoint's dot-product model to the folder ``out``; returns its metadata.

    ``result_json``: the run's result file, whose validation and test metrics go into the metadata. ``data_path``:
    the folder holding the dataset's folder (default: where the checkpoint's run found it). ``out`` must be new,
    empty or an earlier artefact (replaced atomically); any other folder is refused before anything loads.
    """
    check_artefact_folder(out)
    checkpoint = read_checkpoint(checkpoint_file)  # both files are checked before the dataset loads
    metrics = _metrics(checkpoint, checkpoint_file, result_json)
    loaded = load_run(checkpoint_file, checkpoint, data_path)
    arrays = serving_arrays(loaded)
    config = loaded.config
    meta = {
        "model": type(loaded.model.active() if hasattr(loaded.model, "active") else loaded.model).__name__,
        "checkpoint_model": config["model"], "dataset": config["dataset"], "checkpoint": checkpoint_file,
        "config_hash": config_hash(config), "seed": config["seed"],
        "metrics": metrics, "versions": _versions(),
        "seen": "training interactions (RecBole's train split)",
        "cold_user_fallback": "popularity (training interactions per item)",
    }
    write_artefact(out, arrays, meta)
    return meta
