"""Dot-product scoring over all-user / all-item embeddings, cached between evaluation batches, and the pairwise
training loss on those scores (BPR plus a regulariser) that our models share."""

from __future__ import annotations

from typing import Any, Callable

import torch

from recbole_promptmm.model.losses import l2_loss, triple_bpr


class CachedDotProductScorer:
    """Mixin for a RecBole recommender whose ``forward()`` computes every embedding at once.

    In eval mode the forward result is computed once and reused by every ``predict`` / ``full_sort_predict``
    batch; ``train()`` (which RecBole's trainer calls each epoch and ``eval()`` implies) and
    ``load_state_dict()`` drop it. Subclasses say where the user and item embeddings are in the forward
    result with :meth:`user_item`.

    :meth:`bpr_reg_loss` is the BPR + regulariser loss of a PAIRWISE batch on these dot-product scores (every model
    of ours with a BPR term calls it; a subclass using ``reg_on="ids"`` has ``user_embedding`` / ``item_embedding``
    tables).
    """

    _cache: Any = None

    def user_item(self, out: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return out

    def triples(self, interaction) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's (user, positive item, negative item) ids, [B] each."""
        return interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]

    def bpr_reg_loss(self, interaction, user: torch.Tensor, item: torch.Tensor, reg_weight: float,
                     reg: Callable[..., torch.Tensor] = l2_loss, reg_on: str = "ids") -> torch.Tensor:
        r"""BPR of the batch's triples :math:`(u, i^+, i^-)` scored by the final tables ``user`` [U, d] and
        ``item`` [I, d], plus :math:`\lambda` (``reg_weight``) times the regulariser ``reg``:

        .. math:: \mathrm{BPR}(e_u, e_{i^+}, e_{i^-}) + \lambda\,\mathrm{reg}(r_u, r_{i^+}, r_{i^-})

        (:func:`~recbole_promptmm.model.losses.triple_bpr` on the batch's rows), where :math:`r` are the batch's
        rows of the layer-0 ID tables ``user_embedding`` / ``item_embedding`` (``reg_on="ids"``) or of ``user`` /
        ``item`` themselves (``reg_on="scored"``); ``reg`` is :func:`~recbole_promptmm.model.losses.l2_loss` or
        :func:`~recbole_promptmm.model.losses.norm_reg_loss`. A zero weight skips the regulariser.
        """
        u, pos, neg = self.triples(interaction)
        scored = user[u], item[pos], item[neg]
        loss = triple_bpr(*scored)
        if not reg_weight:
            return loss
        if reg_on == "ids":
            rows = self.user_embedding(u), self.item_embedding(pos), self.item_embedding(neg)
        elif reg_on == "scored":
            rows = scored
        else:
            raise ValueError(f"reg_on must be 'ids' or 'scored', got {reg_on!r}")
        return loss + reg_weight * reg(*rows)

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
