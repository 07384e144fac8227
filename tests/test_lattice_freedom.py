"""LATTICE and FREEDOM: end to end on ml-100k, any number of modalities, LATTICE checkpoints, FREEDOM's weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recbole_promptmm import Config, create_dataset, data_preparation, get_model
from recbole_promptmm.model.item_graph import knn_neighbours, knn_values
from recbole_promptmm.model.lattice import KnnPattern, pair_dots, pattern_matmul
from tests.conftest import token_features, toy_dict

MODELS = ["LATTICE", "FREEDOM"]


def gather_matmul(indices: torch.Tensor, values: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    r"""Reference: :math:`(A e)_i = \sum_j A_{ij} e_j` for a graph stored as ``indices``/``values`` [I, k]."""
    return (values.unsqueeze(-1) * e[indices]).sum(dim=1)


def build(model_name: str, data_path, **overrides):
    config = Config(model_name, "toy", config_dict=toy_dict(data_path, **overrides))
    train, valid, test = data_preparation(config, create_dataset(config))
    return get_model(model_name)(config, train._dataset), train, config


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("modalities", [["image"], ["image", "audio"], ["image", "audio", "text"]])
def test_any_number_of_modalities(mm_toy, model_name, modalities):
    np.save(mm_toy / "toy" / "text_feat.npy", token_features(51, dim=7))
    model, train, _ = build(model_name, mm_toy, modality_features={m: f"{m}_feat.npy" for m in modalities},
                         reg_weight=1e-4)
    assert sorted(model.projection) == sorted(modalities)
    model.train()
    out = model.forward()
    assert sorted(out.modality_item) == sorted(modalities)
    assert all(v.shape == (model.n_items, 8) for v in out.modality_item.values())
    assert out.user.shape == (model.n_users, 8) and out.item.shape == (model.n_items, 8)
    model.calculate_loss(next(iter(train))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"registered parameters without a gradient: {missing}"


def test_lattice_sparse_products_equal_the_gather_form():
    generator = torch.Generator().manual_seed(0)
    n, k, d = 23, 4, 5
    x = torch.randn(n, 7, generator=generator)
    pattern = KnnPattern(knn_neighbours(x, k)[0])
    weights = torch.randn(n, d, generator=generator)

    def run_once(fast: bool):
        u = torch.randn(n, d, generator=torch.Generator().manual_seed(1)).requires_grad_()
        e = torch.randn(n, d, generator=torch.Generator().manual_seed(2)).requires_grad_()
        unit = torch.nn.functional.normalize(u, dim=-1)
        idx = pattern.indices
        sims = pair_dots(unit, pattern) if fast else (unit.unsqueeze(1) * unit[idx]).sum(-1)
        values = knn_values(idx, sims, weighted=True)
        out = pattern_matmul(values, e, pattern) if fast else gather_matmul(idx, values, e)
        (out * weights).sum().backward()
        return out.detach(), u.grad, e.grad

    for fast, slow in zip(run_once(True), run_once(False)):
        assert torch.allclose(fast, slow, atol=1e-5)
    assert run_once(True)[1].abs().sum() > 0


def test_lattice_eval_scores_survive_save_and_load(mm_toy):
    model, train, config = build("LATTICE", mm_toy)
    users = train._dataset.inter_feat[:8]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.5)
    model.train()  # the epoch's neighbours come from the projections at its start
    before = {m: knn_neighbours(model.projection[m](model.raw_features(m)).detach(), model.knn_k)[0]
              for m in model.modalities}
    for batch in train:
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    after = {m: knn_neighbours(model.projection[m](model.raw_features(m)).detach(), model.knn_k)[0]
             for m in model.modalities}
    assert any(not torch.equal(before[m], after[m]) for m in model.modalities), "training moved the kNN graph"
    model.eval()
    scores = model.full_sort_predict(users).clone()

    fresh = type(model)(config, train._dataset)  # same data split, other initial weights
    fresh.eval()
    fresh.full_sort_predict(users)  # caches its own (untrained) neighbours and embeddings
    fresh.load_state_dict(model.state_dict())
    assert torch.allclose(fresh.full_sort_predict(users), scores, atol=1e-5)
    fresh.train()
    fresh.eval()
    assert torch.allclose(fresh.full_sort_predict(users), scores, atol=1e-5)


def test_lattice_softmax_weights_start_equal(mm_toy):
    model, _, _ = build("LATTICE", mm_toy)
    assert torch.allclose(model.modality_weights(model.item_embedding.weight), torch.full((2,), 0.5))
    single, _, _ = build("LATTICE", mm_toy, modality_features={"image": "image_feat.npy"})
    assert single.modality_logits is None, "nothing to weigh with one modality: no parameter"


def test_freedom_refuses_wrong_length_mm_weights(mm_toy):
    with pytest.raises(ValueError, match=r"mm_weights.*\['image', 'audio'\]"):
        build("FREEDOM", mm_toy, mm_weights=[1.0])
    with pytest.raises(ValueError, match="mm_weights"):
        build("FREEDOM", mm_toy, mm_weights=[0.1, 0.4, 0.5])
    model, _, _ = build("FREEDOM", mm_toy, mm_weights=[0.1, 0.9])
    assert model.mm_weights == [0.1, 0.9]
