"""PromptMM's soft prompt: PCA hard tokens of the modality features, mapped by two linear layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


class SoftPrompt(nn.Module):
    r""":math:`p_u = W_u h_u + b_u`, :math:`p_i = W_i h_i + b_i` over fixed hard tokens."""

    def __init__(self, h_u: torch.Tensor, h_i: torch.Tensor) -> None:
        super().__init__()
        dim = h_i.shape[1]
        self.register_buffer("h_u", h_u, persistent=False)
        self.register_buffer("h_i", h_i, persistent=False)
        self.user = nn.Linear(dim, dim)
        self.item = nn.Linear(dim, dim)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user(self.h_u), self.item(self.h_i)


def inject_features(x: torch.Tensor, p_i: torch.Tensor, weight: float) -> torch.Tensor:
    r"""Feature-space injection: :math:`X + \lambda\,\mathrm{rownorm}(p_I (p_I^T X))`."""
    if weight == 0:
        return x
    return x + weight * F.normalize(p_i @ (p_i.T @ x), dim=-1)
