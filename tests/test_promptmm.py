"""PromptMM end to end: stages, frozen teacher, prompt tuning, serving without features, checkpoints, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recbole_promptmm import Config, create_dataset, data_preparation, get_model, get_trainer, run
from recbole_promptmm.model.graph import TrainingItems, bipartite_propagation, lightgcn_adjacency
from recbole_promptmm.trainer import TeacherCheckpointError
from tests.conftest import token_features, write_toy_dataset, toy_dict





def build(model_name: str, data_path, **overrides):
    config = Config(model_name, "toy", config_dict=toy_dict(data_path, **overrides))
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = get_model(model_name)(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    return config, model, trainer, (train, valid, test)


def test_stage2_freezes_teacher_and_tunes_only_the_prompt(mm_toy):
    _, model, trainer, (train, valid, _) = build("PromptMM", mm_toy, teacher_epochs=1, student_epochs=2)
    trainer.fit(train, valid, saved=True)
    assert model.stage == "student"
    teacher_after_stage1 = torch.load(trainer.teacher_model_file, weights_only=False)["state_dict"]
    for name, value in model.teacher.state_dict().items():
        if name.startswith("prompt."):
            continue
        assert torch.equal(value, teacher_after_stage1[name]), f"teacher weight {name} changed in stage 2"
    prompt_changed = any(not torch.equal(model.teacher.state_dict()[k], teacher_after_stage1[k])
                         for k in teacher_after_stage1 if k.startswith("prompt."))
    assert prompt_changed, "paper mode: the prompt should keep training through the student's loss"
    # a fresh model loaded from the checkpoint predicts with the student, as it was saved
    _, fresh, fresh_trainer, _ = build("PromptMM", mm_toy)
    assert fresh.stage == "teacher"
    fresh_trainer.load_model_file(trainer.saved_model_file)
    assert fresh.stage == "student"


@pytest.mark.parametrize("tuning", [True, False])
def test_prompt_gradient_only_with_prompt_tuning(mm_toy, tuning):
    _, model, _, (train, _, _) = build("PromptMM", mm_toy, prompt_tuning_in_student=tuning)
    model.set_stage("student")
    batch = next(iter(train))
    model.train()
    model.calculate_loss(batch).backward()
    prompt_grads = [p.grad for p in model.teacher.prompt.parameters()]
    other = [p for n, p in model.teacher.named_parameters() if not n.startswith("prompt.")]
    assert all(p.grad is None and not p.requires_grad for p in other)
    if tuning:
        assert all(g is not None and g.abs().sum() > 0 for g in prompt_grads)
    else:
        assert all(g is None for g in prompt_grads)
    assert all(p.grad is not None for p in model.student.parameters())


def test_student_serves_without_features(mm_toy):
    _, model, _, (train, _, _) = build("PromptMM", mm_toy)
    model.set_stage("student")
    model.eval()
    users = train._dataset.inter_feat[:5]
    before = model.full_sort_predict(users).clone()
    for name in model.teacher.modalities:
        delattr(model.teacher, f"feat_{name}")
    model.train()
    model.eval()
    assert torch.equal(model.full_sort_predict(users), before)
    model.set_stage("teacher")
    with pytest.raises(AttributeError):
        model.full_sort_predict(users)


def test_promptmm_run_is_reproducible_and_reports_both_models(mm_toy, tmp_path):
    first = run("PromptMM", "toy", config_dict=toy_dict(mm_toy), result_json=str(tmp_path / "a.json"))
    second = run("PromptMM", "toy", config_dict=toy_dict(mm_toy))
    assert first["test_result"] == second["test_result"]
    assert first["teacher"]["test_result"] == second["teacher"]["test_result"]
    assert set(first["stage_seconds"]) == {"teacher", "student"}
    assert first["teacher"]["best_valid_result"] is not None
    assert first["num_parameters"] < first["teacher"]["num_parameters"]


def test_teacher_checkpoint_is_reused(mm_toy):
    teacher = run("PromptMMTeacher", "toy", config_dict=toy_dict(mm_toy, epochs=2))
    result = run("PromptMM", "toy", config_dict=toy_dict(mm_toy, teacher_checkpoint=teacher["checkpoint"]))
    assert result["teacher"]["checkpoint"] == teacher["checkpoint"]
    assert result["teacher"]["best_epoch"] is None  # stage 1 skipped
    assert result["teacher"]["best_valid_result"] == teacher["best_valid_result"]
    assert result["teacher"]["test_result"] == teacher["test_result"]


def test_teacher_checkpoint_for_other_data_is_refused(mm_toy, tmp_path):
    teacher = run("PromptMMTeacher", "toy", config_dict=toy_dict(mm_toy))
    # another modality set
    with pytest.raises(TeacherCheckpointError, match=r"modalities \['audio', 'image'\], this run \['image'\]"):
        run("PromptMM", "toy", config_dict=toy_dict(mm_toy, modality_features={"image": "image_feat.npy"},
                                                     teacher_checkpoint=teacher["checkpoint"]))
    # another size
    with pytest.raises(TeacherCheckpointError, match="user_embedding.weight"):
        run("PromptMM", "toy", config_dict=toy_dict(mm_toy, embedding_size=16,
                                                     teacher_checkpoint=teacher["checkpoint"]))
    # same shapes, other propagation depth
    with pytest.raises(TeacherCheckpointError, match=r"n_layers=3 \(this run 1\)"):
        run("PromptMM", "toy", config_dict=toy_dict(mm_toy, n_layers=1, teacher_checkpoint=teacher["checkpoint"]))
    # another dataset
    other = write_toy_dataset(tmp_path / "data2", name="toy2", n_users=40, n_items=50, per_user=10)
    for m in ("image", "audio"):
        np.save(other / f"{m}_feat.npy", np.ones((51, 6 if m == "image" else 5), dtype=np.float32))
    with pytest.raises(TeacherCheckpointError, match="trained on dataset 'toy'"):
        run("PromptMM", "toy2", config_dict=toy_dict(tmp_path / "data2", teacher_checkpoint=teacher["checkpoint"]))


@pytest.mark.parametrize("model_name", ["PromptMM", "PromptMMTeacher"])
def test_needs_modality_features(mm_toy, model_name):
    with pytest.raises(ValueError, match="needs item modality features.*modality_features"):
        run(model_name, "toy", config_dict=toy_dict(mm_toy, modality_features=None))


def test_warm_start_size_mismatch_fails_at_once(mm_toy):
    with pytest.raises(ValueError, match="student_embedding_size"):
        build("PromptMM", mm_toy, warm_start=True, emb_kd_weight=0.0, student_embedding_size=4)


def test_warm_start_copies_teacher_embeddings(mm_toy):
    _, model, _, _ = build("PromptMM", mm_toy, warm_start=True)
    model.warm_start_student()
    out = model.teacher.forward()
    assert torch.allclose(model.student.user_embedding.weight, out.user)


@pytest.mark.parametrize("modalities", [["image"], ["image", "audio"], ["image", "audio", "text"]])
def test_teacher_takes_any_number_of_modalities(mm_toy, modalities):
    np.save(mm_toy / "toy" / "text_feat.npy", token_features(51, dim=7))
    features = {m: f"{m}_feat.npy" for m in modalities}
    _, model, _, (train, _, _) = build("PromptMMTeacher", mm_toy, modality_features=features)
    assert sorted(model.reduce) == sorted(modalities)
    loss = model.calculate_loss(next(iter(train)))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters()), "every registered parameter is used"


def test_lightgcn_adjacency_is_bipartite_and_symmetric():
    r = sp.coo_matrix(np.array([[0, 0, 0], [0, 1, 1], [0, 1, 0]], dtype=np.float32))  # padding row/col 0
    adj = lightgcn_adjacency(r).matrix.to_dense()
    assert adj.shape == (6, 6)
    assert torch.allclose(adj, adj.T)
    assert torch.all(adj[:3, :3] == 0) and torch.all(adj[3:, 3:] == 0)
    # user 1 (deg 2) - item 1 (deg 2): 1/2; user 2 (deg 1) - item 1: 1/sqrt(2)
    assert adj[1, 3 + 1].item() == pytest.approx(0.5)
    assert adj[2, 3 + 1].item() == pytest.approx(1 / np.sqrt(2))
    a_ui, a_iu = bipartite_propagation(r, "one_sided")
    assert a_ui.matrix.to_dense()[1, 1].item() == pytest.approx(1 / np.sqrt(2))  # deg_u = 2
    assert a_iu.matrix.to_dense()[1, 2].item() == pytest.approx(1 / np.sqrt(2))  # deg_i = 2
    # the custom backward (precomputed transpose) gives torch's own gradient
    x = torch.randn(3, 4, requires_grad=True)
    a_ui(x).pow(2).sum().backward()
    expected = torch.autograd.grad(a_ui.matrix.to_dense().matmul(x).pow(2).sum(), x)[0]
    assert torch.allclose(x.grad, expected)


def test_list_negatives_avoid_training_items():
    rng = np.random.default_rng(0)
    dense = (rng.random((20, 30)) < 0.5).astype(np.float32)
    items = TrainingItems(sp.coo_matrix(dense))
    users = torch.arange(20)
    negatives = items.sample_negatives(users, 10, generator=torch.Generator().manual_seed(0))
    assert negatives.shape == (20, 10) and negatives.min() >= 1
    assert not any(dense[u, i] for u in range(20) for i in negatives[u].tolist())


def test_promptmm_end_to_end_on_ml100k(tmp_path):
    result = run("PromptMM", "ml-100k", config_dict={"epochs": 1, "show_progress": False},
                 result_json=str(tmp_path / "r.json"))
    assert 0 < result["test_result"]["recall@20"] < 1 and 0 < result["teacher"]["test_result"]["recall@20"] < 1
    assert result["config"]["modality_features"] == {"text": "builtin:ml-100k/text_feat.npy",
                                                     "genre": {"item_field": "class"}}


def test_official_kd_mode_trains_the_student(mm_toy):
    _, model, _, (train, _, _) = build("PromptMM", mm_toy, kd_mode="official", list_kd_weight=1.0)
    model.set_stage("student")
    model.train()
    batch = next(iter(train))
    official = model.calculate_loss(batch)
    official.backward()
    assert torch.isfinite(official) and all(p.grad is not None for p in model.student.parameters())
    model.kd_mode = "paper"
    assert model.calculate_loss(batch).item() != pytest.approx(official.item(), rel=1e-6)
    with pytest.raises(ValueError, match="kd_mode"):
        build("PromptMM", mm_toy, kd_mode="bogus")


def test_checkpoint_writes_are_atomic(tmp_path):
    from recbole_promptmm.files import atomic_path
    from recbole_promptmm.checkpoint import save_atomic

    target = tmp_path / "sub" / "x.pth"
    save_atomic({"epoch": 1}, str(target))
    assert torch.load(str(target), weights_only=True)["epoch"] == 1
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half a checkpoint")
            raise RuntimeError("crash while writing")
    assert torch.load(str(target), weights_only=True)["epoch"] == 1  # the old file is untouched
    assert [p.name for p in target.parent.iterdir()] == ["x.pth"]  # no temporary left behind
