"""Modality features: alignment to RecBole's internal ids, and every bad input refused early and clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recbole_promptmm import create_dataset
from recbole_promptmm.config import load_yaml
from recbole_promptmm.data import ModalityFeatureError
from tests.conftest import toy_config, token_features


def test_rows_follow_internal_ids_not_tokens(toy):
    data_path, folder = toy
    np.save(folder / "audio_feat.npy", -token_features(41, dim=3))
    dataset = create_dataset(toy_config(data_path, modality_features={"image": "image_feat.npy",
                                                                      "audio": str(folder / "audio_feat.npy")}))
    tokens = dataset.field2id_token["item_id"]
    assert list(tokens[1:]) != sorted(tokens[1:], key=int), "toy tokens should be shuffled"
    image, audio = dataset.modality_features["image"], dataset.modality_features["audio"]
    assert image.dtype == torch.float32 and image.shape == (dataset.item_num, 4)
    assert audio.shape == (dataset.item_num, 3)
    assert torch.all(image[0] == 0) and torch.all(audio[0] == 0)
    for iid in range(1, dataset.item_num):
        assert image[iid, 0].item() == int(tokens[iid])  # row value names the token
        assert audio[iid, 2].item() == -(int(tokens[iid]) + 1.0)


def test_id_map_layout(toy):
    data_path, folder = toy
    rng = np.random.default_rng(1)
    order = rng.permutation(np.arange(1, 41))
    np.save(folder / "mapped.npy", token_features(41)[order])
    (folder / "mapped_ids.txt").write_text("\n".join(map(str, order)) + "\n")
    dataset = create_dataset(toy_config(data_path, modality_features={
        "image": {"path": "mapped.npy", "id_map": "mapped_ids.txt"}}))
    tokens = dataset.field2id_token["item_id"]
    feats = dataset.modality_features["image"]
    assert [int(feats[i, 0]) for i in range(1, dataset.item_num)] == [int(t) for t in tokens[1:]]


def test_copies_made_by_split_share_features(toy):
    from recbole_promptmm import data_preparation

    data_path, _ = toy
    config = toy_config(data_path)
    dataset = create_dataset(config)
    train, valid, _ = data_preparation(config, dataset)
    assert train._dataset.modality_features["image"] is dataset.modality_features["image"]


def _error(toy, **modality) -> str:
    data_path, _ = toy
    with pytest.raises(ModalityFeatureError) as info:
        create_dataset(toy_config(data_path, modality_features=modality))
    return str(info.value)


def test_missing_file(toy):
    message = _error(toy, image="nope.npy")
    assert "nope.npy" in message and "does not exist" in message and "'image'" in message


def test_too_few_rows(toy):
    _, folder = toy
    np.save(folder / "short.npy", token_features(30))
    message = _error(toy, image="short.npy")
    assert "short.npy" in message and "40" in message and "found 30 rows" in message


def test_nan_and_inf_named_by_row(toy):
    _, folder = toy
    feats = token_features(41)
    feats[7, 1] = np.nan
    feats[12, 0] = np.inf
    feats[12, 2] = -np.inf
    np.save(folder / "bad.npy", feats)
    message = _error(toy, image="bad.npy")
    assert "bad.npy" in message and "3 NaN or inf values in 2 rows (7, 12)" in message


def test_one_dimensional(toy):
    _, folder = toy
    np.save(folder / "flat.npy", np.arange(41, dtype=np.float32))
    message = _error(toy, image="flat.npy")
    assert "flat.npy" in message and "2-D" in message and "(41,)" in message


def test_non_numeric(toy):
    _, folder = toy
    np.save(folder / "words.npy", np.array([["a", "b"]] * 41))
    message = _error(toy, image="words.npy")
    assert "words.npy" in message and "numeric" in message


def test_not_an_npy_file(toy):
    _, folder = toy
    (folder / "text.npy").write_text("not numpy")
    message = _error(toy, image="text.npy")
    assert "text.npy: expected a numeric .npy array" in message and "found text" in message


def test_id_map_not_covering_items(toy):
    _, folder = toy
    np.save(folder / "part.npy", token_features(20))
    (folder / "part_ids.txt").write_text("\n".join(str(t) for t in range(1, 21)) + "\n")
    message = _error(toy, image={"path": "part.npy", "id_map": "part_ids.txt"})
    assert "part_ids.txt" in message and "20 are missing" in message


def test_modality_given_twice_in_list(toy):
    data_path, _ = toy
    with pytest.raises(ModalityFeatureError, match="'image' is given twice"):
        create_dataset(toy_config(data_path, modality_features=[
            {"name": "image", "path": "image_feat.npy"}, {"name": "image", "path": "image_feat.npy"}]))


def test_modality_given_twice_in_yaml(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("modality_features:\n  image: a.npy\n  audio: b.npy\n  image: c.npy\n")
    with pytest.raises(ValueError, match=r"'image' is given twice \(lines 2 and 4\)") as info:
        load_yaml(path)
    assert str(path) in str(info.value)


def test_missing_dataset_folder_no_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; pass --data_path"):
        create_dataset(toy_config(tmp_path / "nowhere"))
    assert not (tmp_path / "nowhere").exists()


def test_multi_hot_from_item_file(toy):
    data_path, folder = toy
    rows = ["item_id:token\tclass:token_seq"] + [f"{i}\t{'A B' if i % 2 else 'C'}" for i in range(1, 41)]
    (folder / "toy.item").write_text("\n".join(rows) + "\n")
    dataset = create_dataset(toy_config(data_path, modality_features={"genre": {"item_field": "class"}}))
    tokens = dataset.field2id_token["item_id"]
    genre = dataset.modality_features["genre"]
    for iid in range(1, dataset.item_num):
        expected = [1.0, 1.0, 0.0] if int(tokens[iid]) % 2 else [0.0, 0.0, 1.0]
        assert genre[iid].tolist() == expected
