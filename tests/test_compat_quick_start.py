"""RecBole's own entry points on our models, after ``import recbole_promptmm`` (:mod:`recbole_promptmm.compat`).

``recbole.quick_start``'s ``run_recbole``, ``objective_function`` (RecBole's hyperopt objective) and ``run_recboles``
(each process of its multi-process ``run``) take our model and dataset yaml (ml-100k's embedded modalities), our
data loading and trainers, and RecBole's ``get_flops`` copes with our sparse CSR graphs; RecBole's built-in models
keep RecBole's own ``Config``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import recbole.quick_start.quick_start as recbole_quick_start
import torch
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.quick_start import objective_function, run, run_recbole
from recbole.utils import get_flops

from recbole_promptmm import Config, create_dataset, data_preparation, get_model
from recbole_promptmm import run as our_run
from recbole_promptmm.checkpoint import load_checkpoint
from recbole_promptmm.compat import uncopyable_tensors
from tests.conftest import toy_dict

OURS = ["PromptMMStudent", "PromptMMTeacher", "PromptMM"]
SMALL_EVAL = {"epochs": 1, "metrics": ["Recall", "NDCG"], "topk": [20], "valid_metric": "Recall@20",
              "show_progress": False}


@pytest.mark.parametrize("model", OURS)
def test_run_recbole_runs_our_models_with_our_yaml(model):
    """RecBole's run_recbole: our model yaml (student_n_layers), ml-100k's yaml (its modalities, batch 4096) and
    get_flops on a model holding CSR graphs; the checkpoint it saves holds that config."""
    result = run_recbole(model=model, dataset="ml-100k", config_dict=SMALL_EVAL)
    assert 0.0 < result["test_result"]["recall@20"] <= 1.0
    files = sorted(p.name for p in Path("saved").iterdir())
    stem = min(files, key=len)[:-len(".pth")]
    extra = {"PromptMM": ["-student", "-teacher"]}.get(model, [])  # and no resume file: the run ended
    assert files == sorted(f"{stem}{suffix}.pth" for suffix in ["", *extra]) and stem.startswith(f"{model}-")
    checkpoint = Path("saved") / f"{stem}.pth"
    config = load_checkpoint(checkpoint)["config"]
    assert config["model"] == model
    assert set(config["modality_features"]) == {"text", "genre"}
    assert config["train_batch_size"] == 4096
    assert config["embedding_size"] == 64 and config["epochs"] == 1


def test_run_recbole_equals_our_run():
    """The same model, data and seed through RecBole's run_recbole and our run: the same test metrics."""
    theirs = run_recbole(model="PromptMMStudent", dataset="ml-100k", config_dict=SMALL_EVAL)
    ours = our_run("PromptMMStudent", "ml-100k", config_dict=SMALL_EVAL)
    assert {k: float(v) for k, v in theirs["test_result"].items()} == ours["test_result"]


@pytest.mark.parametrize("model", OURS)
def test_objective_function_runs_our_models(model):
    """RecBole's hyperopt objective: the model named in config_dict, not as an argument."""
    result = objective_function(config_dict={"model": model, "dataset": "ml-100k", **SMALL_EVAL}, saved=False)
    assert result["model"] == model
    assert 0.0 < result["best_valid_result"]["recall@20"] <= 1.0
    assert 0.0 < result["test_result"]["recall@20"] <= 1.0


def test_run_recboles_in_two_processes(mm_toy):
    """RecBole's multi-process run spawns run_recboles: the new processes (which never imported recbole_promptmm
    under pytest) know our model and take its yaml."""
    result = run(model="PromptMMStudent", dataset="toy", config_dict={**toy_dict(mm_toy), "port": "29517"}, nproc=2)
    assert 0.0 <= result["test_result"]["recall@5"] <= 1.0


def test_builtins_keep_recbole_config_and_ours_get_ours(tmp_path):
    """The model decides, from RecBole's sources: the argument, config_dict, a config file."""
    entry = recbole_quick_start.Config
    builtin = entry(model="BPR", dataset="ml-100k")
    assert type(builtin) is RecBoleConfig and builtin["modality_features"] is None
    ours = entry(config_dict={"model": "PromptMMTeacher", "dataset": "ml-100k"})
    assert isinstance(ours, Config) and set(ours["modality_features"]) == {"text", "genre"}
    file = tmp_path / "model.yaml"
    file.write_text(yaml.safe_dump({"model": "PromptMMStudent", "dataset": "ml-100k"}))
    from_file = entry(config_file_list=[str(file)])
    assert isinstance(from_file, Config) and from_file["student_n_layers"] == 3


def test_get_flops_shares_sparse_graphs(mm_toy):
    """RecBole's get_flops deep-copies the model; our CSR graphs are shared with the copy, and the model is left as
    it was (no __deepcopy__ left behind, the same graph objects)."""
    config = Config("PromptMMStudent", "toy", config_dict=toy_dict(mm_toy))
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    model = get_model("PromptMMStudent")(config, train_data._dataset)
    graphs = uncopyable_tensors(model)
    assert graphs and all(g.layout == torch.sparse_csr for g in graphs)
    flops = get_flops(model, dataset, config["device"], logging.getLogger(), lambda d, x: x)
    assert flops >= 0
    assert "__deepcopy__" not in vars(model)
    assert [id(g) for g in uncopyable_tensors(model)] == [id(g) for g in graphs]
