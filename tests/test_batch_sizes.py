"""Batch sizes derived from the data (recbole_promptmm/data/batch_sizes.py), with hand-computed values."""

from __future__ import annotations

import pytest
import yaml

from recbole_promptmm import Config, create_dataset, data_preparation
from recbole_promptmm.data.batch_sizes import derived_batch_sizes, train_interactions
from recbole_promptmm.validate import ConfigError, validate_config
from tests.conftest import requires_tiktok, tiktok_dir, toy_config


def test_toy_eval_by_users_and_epoch_of_fixed_batches(toy):
    # toy: 30 users x 8 items, 40 items (item_num 41 with padding); RS 0.8/0.1/0.1 per user of 8: RecBole rounds
    # valid and test down to 0, then moves one each to them (0 < 0.8 < 1): 6 train per user, 180 in all
    data_path, _ = toy
    config = toy_config(data_path, train_batches_per_epoch=7)
    dataset = create_dataset(config)
    assert train_interactions(config, dataset) == 180
    train, valid, _ = data_preparation(config, dataset)
    assert len(train._dataset) == 180
    assert config["train_batch_size"] == 26 and len(train) == 7  # ceil(180 / 7) = 26; ceil(180 / 26) = 7
    assert config["eval_batch_size"] == 128 * 41


def test_eval_users_per_batch_sets_the_users_of_a_batch(toy):
    data_path, _ = toy
    config = toy_config(data_path, eval_users_per_batch=4)
    _, valid, _ = data_preparation(config, create_dataset(config))
    assert config["eval_batch_size"] == 4 * 41 and valid.step == 4
    assert config["train_batch_size"] == 2048  # train_batches_per_epoch unset: RecBole's default stays


def test_user_given_sizes_are_kept(toy, tmp_path):
    data_path, _ = toy
    given = toy_config(data_path, train_batches_per_epoch=7, eval_batch_size=100, train_batch_size=50)
    assert derived_batch_sizes(given, 41, 180) == {}
    file = tmp_path / "sizes.yaml"
    file.write_text(yaml.safe_dump({"eval_batch_size": 300}))
    from_file = Config("BPR", "toy", config_file_list=[str(file)], config_dict={"data_path": str(data_path)},
                       cmd_args=["--train_batch_size=64", "--train_batches_per_epoch=7"])
    assert derived_batch_sizes(from_file, 41, 180) == {}
    defaults = Config("BPR", "toy", config_dict={"data_path": str(data_path), "train_batches_per_epoch": 7})
    assert derived_batch_sizes(defaults, 41, 180) == {"eval_batch_size": 5248, "train_batch_size": 26}


def test_bad_values_are_refused_before_loading(toy):
    data_path, _ = toy
    for key in ("train_batches_per_epoch", "eval_users_per_batch"):
        with pytest.raises(ConfigError, match=key):
            validate_config(toy_config(data_path, **{key: 0}))


@requires_tiktok
def test_tiktok_values():
    # 6,710 items + padding; 59,541 train interactions in the fixed split: ceil(59541 / 30) = 1985
    config = Config("LightGCN", "tiktok", config_dict={"data_path": str(tiktok_dir().parent),
                                                       "train_batches_per_epoch": 30})
    dataset = create_dataset(config)
    assert derived_batch_sizes(config, dataset.item_num, train_interactions(config, dataset)) == \
        {"eval_batch_size": 128 * 6711, "train_batch_size": 1985}
