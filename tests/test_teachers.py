"""The teacher interface: every multimodal model as PromptMM's teacher, the prompt adapter on any teacher, stage 1
as the teacher's own training, checkpoints, and KD terms a teacher cannot feed."""

from __future__ import annotations

import pytest
import torch

from recbole_promptmm import Config, get_model, run
from recbole_promptmm.checkpoint import load_checkpoint
from recbole_promptmm.config_rules import DEFAULT_TEACHER, stage_one_keys, teacher_config
from recbole_promptmm.model.multimodal import MultimodalRecommender, Teacher
from recbole_promptmm.registry import multimodal_models, our_models
from recbole_promptmm.trainer import TeacherCheckpointError
from tests.test_promptmm import build, toy_dict

TEACHERS = multimodal_models()


def test_every_multimodal_model_is_a_teacher():
    """The registry's multimodal models (``@register(multimodal=True)``) are exactly our multimodal classes."""
    ours = our_models()
    assert DEFAULT_TEACHER in TEACHERS and len(TEACHERS) > 1
    assert set(TEACHERS) == {name for name, cls in ours.items() if issubclass(cls, MultimodalRecommender)}


@pytest.mark.parametrize("model_name", [t for t in TEACHERS if t != "PromptMMTeacher"])  # that one: test_promptmm
def test_multimodal_model_end_to_end_on_ml100k(tmp_path, model_name):
    result = run(model_name, "ml-100k", config_dict={"epochs": 1, "show_progress": False},
                 result_json=str(tmp_path / "r.json"))
    assert 0 < result["test_result"]["recall@20"] < 1
    assert result["config"]["modality_features"] == {"text": "builtin:ml-100k/text_feat.npy",
                                                     "genre": {"item_field": "class"}}


@pytest.mark.parametrize("teacher", TEACHERS)
@pytest.mark.parametrize("prompt", [True, False])
def test_promptmm_distils_each_teacher(mm_toy, teacher, prompt):
    config, model, trainer, (train, valid, test) = build(
        "PromptMM", mm_toy, teacher_model=teacher, prompt=prompt, teacher_epochs=1, student_epochs=1)
    assert isinstance(model.teacher, Teacher) and type(model.teacher).__name__ == teacher
    assert (model.teacher.prompt is not None) == prompt
    trainer.fit(train, valid, saved=True)
    # stage 1 wrote the checkpoint a standalone run of the teacher model writes
    saved = load_checkpoint(trainer.teacher_model_file)
    assert saved["config"]["model"] == teacher
    assert set(saved["state_dict"]) == set(model.teacher.state_dict())
    assert model.stage == "student"
    result = trainer.evaluate(test, load_best_model=False)
    assert 0 <= result["recall@5"] <= 1
    # the distilled model serves from the student alone
    for m in model.teacher.modalities:
        delattr(model.teacher, f"feat_{m}")
    model.eval()
    users = test._dataset.inter_feat[:3]
    assert model.full_sort_predict(users).shape[0] == 3 * model.n_items


def test_teacher_sees_its_own_keys_and_teacher_prefixed_overrides(mm_toy):
    config, model, _, _ = build("PromptMM", mm_toy, teacher_model="VBPR", teacher_learning_rate=0.02,
                                teacher_embedding_size=8)
    tc = model.teacher_config
    assert tc["model"] == "VBPR" and config["model"] == "PromptMM"
    assert tc["learning_rate"] == 0.02 and config["learning_rate"] != 0.02
    assert tc["MODEL_TYPE"] == model.teacher.type
    assert teacher_config(config)["teacher_checkpoint"] == config["teacher_checkpoint"]
    # the stage-1 keys are derived from the teacher's yaml files, teacher_ forms included
    keys = stage_one_keys("VBPR")
    assert {"teacher_model", "learning_rate", "teacher_learning_rate", "prompt", "teacher_prompt"} <= keys
    assert "pair_kd_weight" not in keys and "student_learning_rate" not in keys


@pytest.mark.parametrize("teacher", [t for t in TEACHERS if t != "PromptMMTeacher"])
def test_list_kd_needs_per_modality_users(mm_toy, teacher):
    with pytest.raises(ValueError, match=f"list_kd_weight=0.1 .*teacher {teacher} does not have"):
        run("PromptMM", "toy", config_dict=toy_dict(mm_toy, teacher_model=teacher, list_kd_weight=0.1))
    assert not list(mm_toy.parent.glob("saved/*"))  # refused before any training or checkpoint


def test_zero_kd_weights_give_the_students_own_loss(mm_toy):
    """With every KD weight 0, PromptMM's stage-2 loss is PromptMMStudent's loss on the same batch."""
    _, model, _, (train, _, _) = build("PromptMM", mm_toy, pair_kd_weight=0.0, list_kd_weight=0.0,
                                       emb_kd_weight=0.0)
    alone_config = Config("PromptMMStudent", "toy", config_dict=toy_dict(mm_toy))
    alone = get_model("PromptMMStudent")(alone_config, train._dataset)  # same data split
    alone.load_state_dict(model.student.state_dict())
    model.set_stage("student")
    model.train()
    alone.train()
    batch = next(iter(train))
    assert model.calculate_loss(batch).item() == pytest.approx(alone.calculate_loss(batch).item(), rel=1e-6)
    # and a KD weight changes it
    model.pair_kd_weight = 1.0
    assert model.calculate_loss(batch).item() != pytest.approx(alone.calculate_loss(batch).item(), rel=1e-6)


def test_standalone_teacher_checkpoint_is_reused_and_a_foreign_one_refused(mm_toy):
    vbpr = run("VBPR", "toy", config_dict=toy_dict(mm_toy, epochs=2))
    result = run("PromptMM", "toy", config_dict=toy_dict(mm_toy, teacher_model="VBPR",
                                                         teacher_checkpoint=vbpr["checkpoint"]))
    assert result["teacher"]["model"] == "VBPR"
    assert result["teacher"]["test_result"] == vbpr["test_result"]
    with pytest.raises(TeacherCheckpointError, match="holds a VBPR model.*teacher_model is PromptMMTeacher"):
        run("PromptMM", "toy", config_dict=toy_dict(mm_toy, teacher_checkpoint=vbpr["checkpoint"]))


def test_prompt_tuning_in_stage_two_reaches_any_teacher(mm_toy):
    _, model, _, (train, _, _) = build("PromptMM", mm_toy, teacher_model="FREEDOM", prompt=True)
    model.set_stage("student")
    model.train()
    model.calculate_loss(next(iter(train))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.teacher.prompt.parameters())
    frozen = [p for n, p in model.teacher.named_parameters() if not n.startswith("prompt.")]
    assert frozen and all(p.grad is None and not p.requires_grad for p in frozen)
    assert not model.teacher.training  # stage 2 keeps the teacher in eval mode (full graph, no dropout)


def test_prompt_adapter_products_equal_the_direct_formula(mm_toy):
    _, model, _, _ = build("PromptMMTeacher", mm_toy)
    prompt = model.prompt
    p = prompt()
    for m in model.modalities:
        x = model.raw_features(m)
        direct = x + prompt.weight_fp * torch.nn.functional.normalize(p.item @ (p.item.T @ x), dim=-1)
        assert torch.allclose(prompt.inject_features(m, x, p), direct, atol=1e-5)
