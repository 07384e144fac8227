"""BM3: placeholder, being written."""

from recbole_promptmm.model.multimodal import MultimodalRecommender


class BM3(MultimodalRecommender):
    pass
