"""Data: multimodal datasets and their feature files; ``data_preparation`` is RecBole's after the batch-size rules
of :mod:`recbole_promptmm.data.batch_sizes`."""

from recbole_promptmm.data.batch_sizes import data_preparation
from recbole_promptmm.data.dataset import MultimodalDataset, create_dataset
from recbole_promptmm.data.features import ModalityFeatureError

__all__ = ["MultimodalDataset", "create_dataset", "data_preparation", "ModalityFeatureError"]
