"""Dot-product scoring over all-user / all-item embeddings, cached between evaluation batches."""

from __future__ import annotations

from typing import Any

import torch


class CachedDotProductScorer:
    """Mixin for a RecBole recommender whose ``forward()`` computes every embedding at once.

    In eval mode the forward result is computed once and reused by every ``predict`` / ``full_sort_predict``
    batch; ``train()`` (which RecBole's trainer calls each epoch and ``eval()`` implies) and
    ``load_state_dict()`` drop it. Subclasses say where the user and item embeddings are in the forward
    result with :meth:`user_item`.
    """

    _cache: Any = None

    def user_item(self, out: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return out

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self._cache = None
        return super().load_state_dict(*args, **kwargs)

    def cached_forward(self) -> Any:
        if self.training:
            return self.forward()
        if self._cache is None:
            with torch.no_grad():
                self._cache = self.forward()
        return self._cache

    def predict(self, interaction) -> torch.Tensor:
        user, item = self.user_item(self.cached_forward())
        return (user[interaction[self.USER_ID]] * item[interaction[self.ITEM_ID]]).sum(dim=-1)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        user, item = self.user_item(self.cached_forward())
        return (user[interaction[self.USER_ID]] @ item.T).view(-1)
