"""Data: multimodal datasets and their feature files."""

from recbole.data import data_preparation

from recbole_promptmm.data.dataset import MultimodalDataset, create_dataset
from recbole_promptmm.data.features import ModalityFeatureError

__all__ = ["MultimodalDataset", "create_dataset", "data_preparation", "ModalityFeatureError"]
