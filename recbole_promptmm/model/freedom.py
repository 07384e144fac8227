"""FREEDOM: placeholder, being written."""

from recbole_promptmm.model.multimodal import MultimodalRecommender


class FREEDOM(MultimodalRecommender):
    pass
