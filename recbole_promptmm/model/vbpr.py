"""VBPR: placeholder, being written."""

from recbole_promptmm.model.multimodal import MultimodalRecommender


class VBPR(MultimodalRecommender):
    pass
