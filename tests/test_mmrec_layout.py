"""Datasets in MMRec's layout (one .inter file whose x_label column holds the split): the split, the id mapping,
the features' rows, every bad file refused in one line before anything is written, and Last.fm 2K as it is."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_promptmm import Config, create_dataset, data_preparation, run
from recbole_promptmm.data.mmrec import MMRecLayoutError
from tests.conftest import SHARED_DATA
from tests.test_bad_input import _cli, _written

# 3 users, 5 items. Train: u0 {i0, i1}, u1 {i1, i2, i4}, u2 {i3, i0}; valid: u0 i2, u2 i1; test: u1 i3, u0 i3.
# The lines are deliberately not grouped by split: the loader orders them train, valid, test (stable).
ROWS = [(0, 0, 0), (0, 1, 0), (0, 2, 1), (1, 1, 0), (1, 3, 2), (1, 2, 0), (2, 3, 0), (2, 1, 1), (2, 0, 0),
        (0, 3, 2), (1, 4, 0)]
SPLIT_OF = {0: "train", 1: "valid", 2: "test"}
DICT = {"metrics": ["Recall"], "topk": [2], "valid_metric": "Recall@2", "show_progress": False, "epochs": 1,
        "embedding_size": 4, "eval_args": {"group_by": "user", "order": "RO", "mode": "full"}}


def write_mmrec(root: Path, rows=ROWS, header="userID\titemID\trating\tx_label", n_feature_rows: int = 5,
                line: str | None = None) -> Path:
    """``root/mm/mm.inter`` in MMRec's layout, plus ``image.npy`` whose row r is [r, 10 r] (row r = itemID r)."""
    folder = root / "mm"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [header] + [f"{u}\t{i}\t1\t{x}" for u, i, x in rows] + ([line] if line is not None else [])
    (folder / "mm.inter").write_text("\n".join(lines) + "\n")
    np.save(folder / "image.npy", np.array([[r, 10.0 * r] for r in range(n_feature_rows)], dtype=np.float32))
    return root


def mm_config(root: Path, model: str = "BPR", **overrides) -> Config:
    values = {**DICT, "data_path": str(root), "mmrec_inter_file": "mm.inter",
              "modality_features": {"image": "image.npy"}, **overrides}
    return Config(model, "mm", config_dict=values)


def pairs(dataset) -> set[tuple[str, str]]:
    """(user token, item token) of every interaction of a RecBole dataset."""
    users = dataset.id2token(dataset.uid_field, dataset.inter_feat[dataset.uid_field].numpy())
    items = dataset.id2token(dataset.iid_field, dataset.inter_feat[dataset.iid_field].numpy())
    return set(zip(users.tolist(), items.tolist()))


def test_split_comes_from_x_label_and_ids_map_to_feature_rows(tmp_path):
    root = write_mmrec(tmp_path)
    before = sorted(os.listdir(root / "mm"))
    config = mm_config(root)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    for part, data in zip(("train", "valid", "test"), (train, valid, test)):
        expected = {(str(u), str(i)) for u, i, x in ROWS if SPLIT_OF[x] == part}
        assert pairs(data._dataset) == expected, part
    # 3 users and 5 items (+ RecBole's padding row each); no interaction was filtered out
    assert (dataset.user_num, dataset.item_num, len(dataset.inter_feat)) == (4, 6, len(ROWS))
    # the rating column is read as RecBole's rating field
    assert dataset.inter_feat["rating"].tolist() == [1.0] * len(ROWS)
    # internal id k holds the feature row of its token: itemID r -> row r = [r, 10 r]
    features = dataset.modality_features["image"]
    tokens = dataset.field2id_token["item_id"]
    assert torch.equal(features[0], torch.zeros(2))
    for k in range(1, dataset.item_num):
        r = int(tokens[k])
        assert features[k].tolist() == [r, 10.0 * r]
    # nothing was converted or written into the dataset folder
    assert sorted(os.listdir(root / "mm")) == before


def test_a_model_without_features_reads_the_layout_too(tmp_path):
    root = write_mmrec(tmp_path)
    config = mm_config(root, model="LightGCN", modality_features=None)
    train, valid, test = data_preparation(config, create_dataset(config))
    assert len(train._dataset.inter_feat) == 7 and len(valid._dataset.inter_feat) == 2
    assert len(test._dataset.inter_feat) == 2


BAD_FILES = {
    # every line of the file has the header's number of fields
    "wrong_field_count": (dict(line="2\t2\t1\t0\t7"), ["mm.inter line 13", "expected 4", "found 5"]),
    "no_x_label": (dict(header="userID\titemID\trating\tsplit"), ["mm.inter line 1", "missing x_label"]),
    # line 5 is ROWS[3] = (1, 1, 0): made x_label 3 below
    "x_label_3": (dict(rows=[*ROWS[:3], (1, 1, 3), *ROWS[4:]]),
                  ["mm.inter line 5", "expected x_label 0, 1 or 2", "found '3'"]),
    # user 9 appears only in test (line 13)
    "user_without_train": (dict(line="9\t0\t1\t2"), ["mm.inter line 13", "user 9 has no train row"]),
    # items 0..4 against 4 feature rows: the first interaction naming item 4 is reported
    "item_beyond_rows": (dict(n_feature_rows=4), ["itemID 4 has no row in", "image.npy", "4 rows"]),
    "item_not_integer": (dict(line="0\tabc\t1\t0"), ["itemID abc has no row in"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_refused_in_one_line(tmp_path, case):
    kwargs, expected = BAD_FILES[case]
    root = write_mmrec(tmp_path, **kwargs)
    with pytest.raises(ValueError) as info:
        create_dataset(mm_config(root))
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_run_refuses_a_bad_file_with_exit_2_and_writes_nothing(tmp_path):
    root = write_mmrec(tmp_path / "data", rows=[*ROWS[:3], (1, 1, 3), *ROWS[4:]])
    before = sorted(os.listdir(root / "mm"))
    proc = _cli("--model=BPR", "--dataset=mm", f"--data_path={root}", "--mmrec_inter_file=mm.inter",
                "--show_progress=False", "--epochs=1", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "mm.inter line 5" in last and "x_label" in last
    assert _written(tmp_path) == [] and sorted(os.listdir(root / "mm")) == before


def test_missing_file_is_named(tmp_path):
    root = write_mmrec(tmp_path)
    with pytest.raises(FileNotFoundError, match="mmrec_inter_file .*nowhere.inter does not exist"):
        create_dataset(mm_config(root, mmrec_inter_file="nowhere.inter"))


def test_error_type_is_our_own(tmp_path):
    root = write_mmrec(tmp_path, header="userID\titemID\trating\tsplit")
    with pytest.raises(MMRecLayoutError):
        create_dataset(mm_config(root))


requires_lfm2k = pytest.mark.skipif(not (SHARED_DATA / "lfm2k" / "lfm2k.inter").is_file(),
                                    reason=f"Last.fm 2K not found at {SHARED_DATA}/lfm2k")


@requires_lfm2k
def test_lfm2k_loads_with_its_published_split():
    config = Config("BPR", "lfm2k", config_dict={"data_path": str(SHARED_DATA)})
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    # the README's counts: 1,858 users, 1,425 items, 44,327 / 4,799 / 7,219 interactions
    assert (dataset.user_num - 1, dataset.item_num - 1) == (1858, 1425)
    assert [len(d._dataset.inter_feat) for d in (train, valid, test)] == [44327, 4799, 7219]
    assert {m: tuple(f.shape) for m, f in dataset.modality_features.items()} == {
        "text": (1426, 384), "vggish": (1426, 128), "whisper": (1426, 512)}
    raw = np.load(SHARED_DATA / "lfm2k" / "vggish.npy")
    k = 17
    assert np.allclose(dataset.modality_features["vggish"][k].numpy(),
                       raw[int(dataset.field2id_token["item_id"][k])])


@requires_lfm2k
@pytest.mark.parametrize("model", ["MMHCL", "BM3", "VBPR", "PromptMM"])  # the new and the fixed models
def test_one_epoch_on_lfm2k(tmp_path, model):
    result = run(model, "lfm2k", config_dict={"data_path": str(SHARED_DATA), "epochs": 1, "show_progress": False},
                 result_json=str(tmp_path / "r.json"))
    assert 0 < result["test_result"]["recall@20"] < 1
