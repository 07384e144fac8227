"""LATTICE: placeholder, being written."""

from recbole_promptmm.model.multimodal import MultimodalRecommender


class LATTICE(MultimodalRecommender):
    pass
