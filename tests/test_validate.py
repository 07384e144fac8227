"""Config validation reaches every kind of check: unknown keys, types, ranges (the teacher_-prefixed forms too),
the choices of our string switches, files; and lets good values through. Each refused value is named in the
message with where it came from and what was expected."""

from __future__ import annotations

import pytest

from recbole_promptmm import Config
from recbole_promptmm.validate import ConfigError, validate_config


def problems(model: str = "PromptMM", **values) -> str:
    """The message of the ConfigError ``validate_config`` raises for ``values`` ('' when it raises none)."""
    config = Config(model, "ml-100k", config_dict=values)
    try:
        validate_config(config)
    except ConfigError as err:
        return str(err)
    return ""


def test_defaults_of_every_model_pass():
    for model in ("PromptMM", "PromptMMTeacher", "PromptMMStudent", "VBPR", "LATTICE", "FREEDOM", "BM3", "MMHCL",
                  "LightGCN", "BPR", "ItemKNN", "NGCF"):
        assert problems(model) == "", model


def test_unknown_key_suggests_the_closest():
    message = problems(learning_rte=0.1)
    assert "unknown config key 'learning_rte' from config_dict" in message and "learning_rate" in message


@pytest.mark.parametrize("key, value, expected", [
    ("epochs", "two", "int"),
    ("prompt", "yes", "True or False"),
    ("kd_temperature", "hot", "a number"),
    ("teacher_embedding_size", 6.5, "int"),  # teacher_<key> takes the type of <key>
])
def test_types(key, value, expected):
    message = problems(**{key: value})
    assert f"config key {key}=" in message and expected in message, message


@pytest.mark.parametrize("key, value, expected", [
    ("learning_rate", 0, "a number > 0"),
    ("teacher_learning_rate", -1e-3, "a number > 0"),
    ("student_learning_rate", float("inf"), "a number > 0"),
    ("epochs", 0, "an integer >= 1"),
    ("teacher_epochs", 0, "an integer >= 1"),
    ("train_batch_size", 0, "an integer >= 1"),
    ("teacher_embedding_size", 0, "an integer >= 1"),
    ("stopping_step", 2.5, "an integer"),
    ("eval_step", None, "a value, not None"),
    # the ranges added for keys that misbehaved silently
    ("kd_temperature", 0, "a number > 0"),  # pair and list KD divide by it
    ("kd_temperature", -1.0, "a number > 0"),
    ("pair_kd_weight", -0.5, "a number >= 0"),
    ("list_kd_weight", -1, "a number >= 0"),
    ("emb_kd_weight", float("nan"), "a number >= 0"),
    ("teacher_reg_weight", -1e-3, "a number >= 0"),
    ("prompt_weight_sp", -0.1, "a number >= 0"),
    ("teacher_dropout", 1.0, "a number in [0, 1)"),
    ("teacher_dropout", -0.1, "a number in [0, 1)"),
    ("teacher_model_cat_rate", 1.5, "a number in [0, 1]"),
    ("list_kd_negatives", 0, "an integer >= 1"),
    ("student_n_layers", -1, "an integer >= 0"),
    ("sce_gamma", 0.5, "a number >= 1"),
])
def test_ranges(key, value, expected):
    message = problems(**{key: value})
    assert f"config key {key}=" in message and "from config_dict" in message, message
    assert f"expected {expected}" in message, message


@pytest.mark.parametrize("model, key, value", [
    ("LATTICE", "lambda_coeff", 1.2),
    ("LATTICE", "knn_k", 0),
    ("FREEDOM", "edge_dropout", 1.0),
    ("BM3", "cl_weight", -2.0),
    ("MMHCL", "temperature", 0.0),
])
def test_ranges_of_the_teachers_own_keys(model, key, value):
    assert f"config key {key}=" in problems(model, **{key: value})


@pytest.mark.parametrize("key, value", [
    ("kd_temperature", 0.5), ("pair_kd_weight", 0), ("teacher_dropout", 0.0), ("teacher_dropout", 0.99),
    ("student_n_layers", 0), ("sce_gamma", 1), ("teacher_model_cat_rate", 1.0),
])
def test_values_at_the_edge_of_a_range_pass(key, value):
    assert problems(**{key: value}) == ""


@pytest.mark.parametrize("key, value, allowed", [
    ("graph_norm", "both", "symmetric, one_sided"),
    ("teacher_graph_norm", "left", "symmetric, one_sided"),
    ("kd_mode", "released", "paper, official"),
    ("list_kd_weighting", "uniform", "nontarget, confidence, none"),
    ("knn_search", "faiss", "auto, exact, approx"),
])
def test_choices(key, value, allowed):
    message = problems(**{key: value})
    assert f"config key {key}='{value}' (str)" in message and f"expected one of {allowed}" in message, message


def test_choices_are_declared_with_the_codes_own_tuples():
    """Each switch's declared choices are exactly what the model accepts (the same tuple, one place)."""
    from recbole_promptmm.config_rules import KD_MODES
    from recbole_promptmm.distributed import DDP_BATCHES
    from recbole_promptmm.model.graph import GRAPH_NORMS
    from recbole_promptmm.model.item_graph import KNN_METHODS
    from recbole_promptmm.model.losses import LIST_KD_WEIGHTS
    from recbole_promptmm.model.mmhcl import CL_SCOPES
    from recbole_promptmm.model.multimodal import FEATURE_NORMS
    from recbole_promptmm.validate import our_declarations

    choices = {key: declared[0].choices for key, declared in our_declarations().items() if declared[0].choices}
    assert choices == {"graph_norm": GRAPH_NORMS, "kd_mode": KD_MODES, "list_kd_weighting": LIST_KD_WEIGHTS,
                       "cl_scope": CL_SCOPES, "knn_search": KNN_METHODS, "ddp_batch": DDP_BATCHES,
                       "feature_norm": FEATURE_NORMS}


@pytest.mark.parametrize("model", ["VBPR", "PromptMMTeacher", "LATTICE", "FREEDOM", "BM3", "MMHCL", "PromptMM"])
def test_feature_norm_without_a_comment_is_checked_too(model):
    """feature_norm had no choice comment in multimodal.yaml, so ``l1`` passed until the model was built."""
    message = problems(model, feature_norm="l1")
    assert message == ("config key feature_norm='l1' (str) from config_dict: expected one of none, standardize, "
                       "l2"), message
    assert problems(model, feature_norm="l2") == problems(model, feature_norm=None) == ""


def test_our_keys_are_checked_for_every_model():
    """A key only our models declare is checked where it is given, even for a model that does not read it."""
    assert "config key knn_search='faiss' (str) from config_dict: expected one of auto, exact, approx" in \
        problems("BPR", knn_search="faiss")
    assert "config key teacher_knn_k=0 (int) from config_dict: expected an integer >= 1" in \
        problems("PromptMM", teacher_knn_k=0)  # a key of another teacher (the default one has no knn_k)
    assert problems("PromptMM", teacher_knn_k=None) == ""
    # ~ unsets a key the run does not read (docs/benchmarks/ml100k.yaml does so for every model); the run's own
    # keys take ~ only where declared optional (stage 2 needs its learning rate)
    assert problems("BPR", student_learning_rate=None) == ""
    assert "config key student_learning_rate=None (NoneType) from config_dict: expected a number > 0" in \
        problems("PromptMM", student_learning_rate=None)


def test_declared_range_is_checked_on_the_models_own_key_and_its_teacher_form():
    assert problems("MMHCL", item_layers=0) == ("config key item_layers=0 (int) from config_dict: expected an "
                                                "integer >= 1")
    message = problems("PromptMM", teacher_model="MMHCL", teacher_item_layers=0)
    assert "config key teacher_item_layers=0 (int) from config_dict: expected an integer >= 1" in message
    assert problems("PromptMM", teacher_model="MMHCL", teacher_item_layers=1) == ""
    assert "expected a number >= 0" in problems("PromptMM", list_kd_beta=-1.0)


def test_teacher_model_must_be_multimodal_and_is_matched_case_insensitively():
    with pytest.raises(ValueError, match="teacher_model 'LightGCN' is not a multimodal model; use one of "
                                         "BM3, FREEDOM, LATTICE, MMHCL, PromptMMTeacher, VBPR"):
        problems(teacher_model="LightGCN")
    config = Config("PromptMM", "ml-100k", config_dict={"teacher_model": "freedom"})
    validate_config(config)
    assert config["teacher_model"] == "FREEDOM"


def test_missing_teacher_checkpoint_is_named(tmp_path):
    message = problems(teacher_checkpoint=str(tmp_path / "nope.pth"))
    assert "nope.pth" in message and "does not exist" in message
    assert "(it is a folder)" in problems(teacher_checkpoint=str(tmp_path))


def test_every_problem_is_reported_at_once():
    message = problems(kd_temperature=0, learning_rte=1, graph_norm="x")
    for part in ("unknown config key 'learning_rte'", "config key kd_temperature=0", "config key graph_norm='x'"):
        assert part in message, message
