r"""PromptMM's soft prompt as an adapter around any multimodal model (Wei et al., WWW 2024, Sec. 3.2).

Hard tokens (no gradient, once per dataset): :math:`H^m = \mathrm{PCA}_d(X^m)`, item token
:math:`h_i = \mathrm{mean}_m H^m_i`, user token :math:`h_u = (\hat A_{ui} h)_u`. Soft prompts
:math:`p_u = W_u h_u + b_u`, :math:`p_i = W_i h_i + b_i`. Injections, through the two access points of
:class:`recbole_promptmm.model.multimodal.MultimodalRecommender`:

* feature space: :math:`X^m + \lambda_{fp}\,\mathrm{rownorm}(p_I (p_I^\top X^m))`, where
  :math:`p_I^\top X^m = W_i (h_I^\top X^m) + b_i (1^\top X^m)` uses two small products cached once;
* ID space: :math:`\lambda_{sp}\,\mathrm{rownorm}(p_u)`, :math:`\lambda_{sp}\,\mathrm{rownorm}(p_i)` added to the
  layer-0 user / item ID embeddings.

Loss: :math:`\lambda_p` BPR on the prompt vectors themselves, added to the wrapped model's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recbole_promptmm.model.losses import batch_bpr

# Config keys of the adapter; defaults in properties/model/multimodal.yaml.
PROMPT_KEYS = ("prompt", "prompt_weight_sp", "prompt_weight_fp", "prompt_weight_bpr")
# Those that change what a trained model computes (the BPR weight only changes training).
PROMPT_FORWARD_KEYS = ("prompt", "prompt_weight_sp", "prompt_weight_fp")


def pca_tokens(features: torch.Tensor, dim: int) -> torch.Tensor:
    """Project [n, d_m] features on their top ``dim`` principal components (deterministic SVD).

    When ``d_m < dim`` the missing components are zero. Row 0 (padding) is included like any other row.
    """
    centred = features - features.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    k = min(dim, vh.shape[0])
    out = centred.new_zeros(features.shape[0], dim)
    out[:, :k] = centred @ vh[:k].T
    return out


def hard_tokens(features: dict[str, torch.Tensor], a_ui, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""(:math:`h_u`, :math:`h_i`): item token = mean over modalities of :math:`\mathrm{PCA}_d(X^m)`, user token
    = :math:`\hat A_{ui} h_i`. No gradient; computed once per dataset."""
    with torch.no_grad():
        h_i = torch.stack([pca_tokens(x, dim) for x in features.values()]).mean(dim=0)
        h_u = a_ui(h_i)
    return h_u, h_i


@dataclass
class PromptVectors:
    """One forward pass's prompts: :math:`p_u` [U, d], :math:`p_i` [I, d]."""

    user: torch.Tensor
    item: torch.Tensor


class PromptAdapter(nn.Module):
    """The soft prompt (two ``Linear(d, d)``: ``user``, ``item``) over fixed hard tokens, with its injections."""

    def __init__(self, features: dict[str, torch.Tensor], a_ui, dim: int, weight_sp: float, weight_fp: float,
                 weight_bpr: float) -> None:
        super().__init__()
        h_u, h_i = hard_tokens(features, a_ui, dim)
        self.register_buffer("h_u", h_u, persistent=False)
        self.register_buffer("h_i", h_i, persistent=False)
        with torch.no_grad():  # the two small products of p_I^T X (see the module docstring)
            for m, x in features.items():
                self.register_buffer(f"htx_{m}", h_i.T @ x, persistent=False)  # [d, d_m]
                self.register_buffer(f"sum_{m}", x.sum(dim=0), persistent=False)  # [d_m]
        self.user = nn.Linear(dim, dim)
        self.item = nn.Linear(dim, dim)
        self.weight_sp = weight_sp
        self.weight_fp = weight_fp
        self.weight_bpr = weight_bpr

    def forward(self) -> PromptVectors:
        return PromptVectors(self.user(self.h_u), self.item(self.h_i))

    def inject_features(self, name: str, x: torch.Tensor, p: PromptVectors) -> torch.Tensor:
        r"""Feature-space injection: :math:`X^m + \lambda_{fp}\,\mathrm{rownorm}(p_I (p_I^\top X^m))`."""
        if not self.weight_fp:
            return x
        ptx = self.item.weight @ getattr(self, f"htx_{name}") + torch.outer(self.item.bias, getattr(self, f"sum_{name}"))
        return x + self.weight_fp * F.normalize(p.item @ ptx, dim=-1)

    def inject_ids(self, user: torch.Tensor, item: torch.Tensor, p: PromptVectors) -> tuple[torch.Tensor, torch.Tensor]:
        r"""ID-space injection: :math:`E_U + \lambda_{sp}\,\mathrm{rownorm}(p_U)`, likewise for items."""
        if not self.weight_sp:
            return user, item
        return (user + self.weight_sp * F.normalize(p.user, dim=-1),
                item + self.weight_sp * F.normalize(p.item, dim=-1))

    def loss(self, p: PromptVectors, u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        r""":math:`\lambda_p` BPR on the prompt vectors of the batch."""
        if not self.weight_bpr:
            return p.user.new_zeros(())
        return self.weight_bpr * batch_bpr(p.user, p.item, u, pos, neg)
