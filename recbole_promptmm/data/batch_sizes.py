r"""Batch sizes derived from the data, applied between ``create_dataset`` and RecBole's ``data_preparation``.

Two rules, each only where the user did not set the batch size itself (command line, config file or
``config_dict``: :meth:`recbole_promptmm.config.Config.key_source`):

* **Evaluation by users.** RecBole's full-sort evaluation puts ``eval_batch_size // item_num`` users in a batch
  (at least one), so its default 4096 scores one user at a time on any catalogue above 2,048 items: the user x item
  score matrix is built row by row and Python overhead dominates. Here

  .. math:: \text{eval\_batch\_size} = \text{eval\_users\_per\_batch} \times \text{item\_num}

  (``item_num`` counts RecBole's padding item, so the batch holds exactly ``eval_users_per_batch`` users; default
  128: a score block of 128 x I floats, memory bounded by the catalogue, never users x items).

* **A training epoch linear in the data.** With a fixed ``train_batch_size`` B an epoch of N interactions has
  N / B batches, and a graph model (LightGCN, the student, ...) propagates over the whole graph, O(N), in each:
  an epoch costs O(N^2 / B). With ``train_batches_per_epoch`` T set,

  .. math:: \text{train\_batch\_size} = \lceil N_\text{train} / T \rceil

  so an epoch is always T batches and costs O(N) (per-batch propagation O(N), T fixed). The batch grows with the
  data, as does the number of negatives per step; ``docs/SCALING.md`` measures what this does to accuracy.
"""

from __future__ import annotations

import math

import numpy as np

from recbole.data import data_preparation as recbole_data_preparation


def derived_batch_sizes(config, item_num: int, train_interactions: int) -> dict[str, int]:
    """The batch sizes the two rules give (only for keys the user did not set); ``item_num`` counts the padding
    item, as RecBole's ``dataset.item_num`` does."""
    sizes = {}
    if config.key_source("eval_batch_size") == "defaults":
        sizes["eval_batch_size"] = int(config["eval_users_per_batch"]) * int(item_num)
    per_epoch = config["train_batches_per_epoch"]
    if per_epoch is not None and config.key_source("train_batch_size") == "defaults":
        sizes["train_batch_size"] = math.ceil(int(train_interactions) / int(per_epoch))
    return sizes


def train_interactions(config, dataset) -> int:
    """Interactions the training split of ``dataset`` will hold, before it is split (RecBole's loaders take their
    batch size when built: a later ``update_config`` does not change the batches of the underlying torch loader).

    A fixed split (``benchmark_filename``, MMRec's ``x_label``): the first file's rows. A ratio split (``RS``): the
    first part of RecBole's own rounding (``Dataset._calcu_split_ids``) of each user's interactions (or of all of
    them without ``group_by``), exactly what ``build()`` will cut. Any other split (leave-one-out): all interactions.
    """
    sizes = getattr(dataset, "file_size_list", None)  # set by RecBole only for a fixed split
    if sizes:
        return int(sizes[0])
    ratios = ((config["eval_args"] or {}).get("split") or {}).get("RS")
    if ratios is None:
        return len(dataset)
    ratios = [r / sum(ratios) for r in ratios]
    if (config["eval_args"] or {}).get("group_by") == "user":
        group_sizes, groups = np.unique(np.bincount(np.asarray(dataset.inter_feat[dataset.uid_field])),
                                        return_counts=True)
    else:
        group_sizes, groups = np.array([len(dataset)]), np.array([1])
    return int(sum(int(g) * (dataset._calcu_split_ids(int(n), ratios)[0] if n > 0 else 0)
                   for n, g in zip(group_sizes, groups)))


def data_preparation(config, dataset):
    """RecBole's ``data_preparation`` with the batch sizes of :func:`derived_batch_sizes` written into ``config``
    first."""
    for key, value in derived_batch_sizes(config, dataset.item_num, train_interactions(config, dataset)).items():
        config[key] = value
    return recbole_data_preparation(config, dataset)
