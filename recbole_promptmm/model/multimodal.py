r"""The teacher contract and the shared base of our multimodal models (every model
:func:`recbole_promptmm.registry.multimodal_models` names).

Every multimodal model here is a RecBole ``GeneralRecommender`` on :class:`MultimodalRecommender`, so each one:

* reads its modality features :math:`X^m` only through :meth:`~MultimodalRecommender.modality_features` and its
  layer-0 ID embeddings only through :meth:`~MultimodalRecommender.id_embeddings`: the two access points where
  the soft prompt (:class:`recbole_promptmm.model.prompt.PromptAdapter`, ``prompt: True``) injects itself;
* returns a :class:`TeacherOutput` from ``forward()``, which is all that PromptMM's distillation needs
  (:class:`Teacher`);
* gets one per-epoch hook, :meth:`~MultimodalRecommender.new_epoch`: RecBole's ``Trainer`` calls
  ``model.train()`` once at the start of every training epoch, and ``train()`` calls the hook (FREEDOM resamples
  its pruned graph there, LATTICE drops its learned item graph).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_promptmm.model.accounting import parameter_count
from recbole_promptmm.model.graph import bipartite_propagation
from recbole_promptmm.model.prompt import PROMPT_FORWARD_KEYS, PromptAdapter, PromptVectors
from recbole_promptmm.model.scoring import CachedDotProductScorer
from recbole_promptmm.schema import declare, flag, positive, positive_int, switch, weight


def require_modality_features(dataset, model_name: str) -> dict[str, torch.Tensor]:
    features = getattr(dataset, "modality_features", None)
    if not features:
        raise ValueError(
            f"{model_name} needs item modality features, but dataset {dataset.dataset_name!r} has none: add "
            "`modality_features: {image: image_feat.npy, ...}` (one .npy file per modality, row k = item token k) "
            "to its dataset yaml or a --config_files yaml"
        )
    return features


FEATURE_NORMS = ("none", "standardize", "l2")


def normalise_features(features: dict[str, torch.Tensor], how: str) -> dict[str, torch.Tensor]:
    r"""The models' view of :math:`X^m`: as given (``none``), each column standardised to mean 0 and variance 1
    over the real items (``standardize``: :math:`(x - \mu)/(\sigma + 10^{-8})`), or each row scaled to unit length
    (``l2``). Row 0 (padding) stays zero. TikTok's visual features, e.g., share a large constant offset (mean 2.7 per
    dimension, row norms 30-49) that makes every item's projection nearly the same vector."""
    if how not in FEATURE_NORMS:
        raise ValueError(f"feature_norm must be one of {FEATURE_NORMS}, got {how!r}")
    if how == "none":
        return features
    out = {}
    for m, x in features.items():
        y = x.clone()
        if how == "standardize":
            y[1:] = (x[1:] - x[1:].mean(dim=0)) / (x[1:].std(dim=0) + 1e-8)
        else:
            y[1:] = torch.nn.functional.normalize(x[1:], dim=-1)
        out[m] = y
    return out


@dataclass
class TeacherOutput:
    """All embeddings of one forward pass of a multimodal model.

    ``user`` / ``item`` are the fused embeddings that score by dot product (size ``fused_size``);
    ``modality_item[m]`` (and, where the model has them, ``modality_user[m]``) are per-modality embeddings of
    size ``embedding_size``; ``prompt`` the prompt vectors when the model wears the prompt adapter; ``extra``
    model-specific intermediates its own loss needs.
    """

    user: torch.Tensor
    item: torch.Tensor
    modality_item: dict[str, torch.Tensor]
    modality_user: dict[str, torch.Tensor] | None = None
    prompt: PromptVectors | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class Teacher(Protocol):
    """What PromptMM needs of a teacher (every :class:`MultimodalRecommender` fulfils it).

    * ``forward()`` -> :class:`TeacherOutput` (pair KD: fused ``user``/``item``; embedding KD: ``modality_item``;
      list KD: ``modality_user`` too, only where ``has_modality_users``);
    * ``modalities``: the modality names, in the dataset's order; ``embedding_size``: size of the per-modality
      embeddings; ``fused_size``: size of the fused ones;
    * ``forward_keys()``: the config keys that change what a trained model computes without changing its
      weights' shapes (a checkpoint trained with other values is refused);
    * ``prompt``: the :class:`PromptAdapter`, or None.
    """

    modalities: list[str]
    embedding_size: int
    fused_size: int
    has_modality_users: ClassVar[bool]
    prompt: PromptAdapter | None

    @classmethod
    def forward_keys(cls) -> tuple[str, ...]: ...

    def forward(self) -> TeacherOutput: ...


class MultimodalRecommender(CachedDotProductScorer, GeneralRecommender):
    """Base of our multimodal models: features as buffers, ID embeddings, the prompt's access points, the epoch hook.

    Subclasses set ``model_forward_keys`` and implement :meth:`encode` (features and layer-0 IDs ->
    :class:`TeacherOutput`) and :meth:`loss` (the model's own training loss on a batch).
    """

    input_type = InputType.PAIRWISE
    needs_modality_features = True
    inherits_defaults_from: ClassVar[tuple[str, ...]] = ("multimodal",)
    has_modality_users: ClassVar[bool] = False
    model_forward_keys: ClassVar[tuple[str, ...]] = ()
    config_keys: ClassVar = declare(  # defaults: properties/model/multimodal.yaml and each model's own yaml
        embedding_size=positive_int("hidden size d of ID embeddings and modality projections"),
        learning_rate=positive("Adam learning rate"),
        feature_norm=switch(*FEATURE_NORMS, optional=True, help="how the model sees X^m: as given (none), each "
                            "column standardised over the real items (standardize) or each row scaled to unit "
                            "length (l2); ~ = none"),
        prompt=flag("wear the soft prompt (PCA hard tokens, feature- and ID-space injection, prompt BPR)"),
        prompt_weight_sp=weight("lambda_sp: ID-space prompt injection"),
        prompt_weight_fp=weight("lambda_fp: feature-space prompt injection"),
        prompt_weight_bpr=weight("lambda_p: BPR on the prompt vectors themselves"),
    )

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        features = normalise_features(require_modality_features(dataset, type(self).__name__),
                                      config["feature_norm"] or "none")
        self.modalities = list(features)
        self.feature_dims = {m: x.shape[1] for m, x in features.items()}
        self.embedding_size = config["embedding_size"]
        self.fused_size = self.embedding_size
        for name, x in features.items():
            self.register_buffer(f"feat_{name}", x, persistent=False)
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self.prompt: PromptAdapter | None = None
        if config["prompt"]:
            self.prompt = PromptAdapter(features, self.prompt_graph(dataset, config), self.embedding_size,
                                        config["prompt_weight_sp"], config["prompt_weight_fp"],
                                        config["prompt_weight_bpr"])

    @classmethod
    def forward_keys(cls) -> tuple[str, ...]:
        return (*PROMPT_FORWARD_KEYS, *cls.model_forward_keys)

    def config_attributes(self, config, *keys: str) -> None:
        """Read each of ``keys`` from the config into the attribute of the same name (``self.<key> = config[key]``)."""
        for key in keys:
            setattr(self, key, config[key])

    def prompt_graph(self, dataset, config):
        r""":math:`\hat A_{ui}` for the prompt's user tokens (symmetric; PromptMMTeacher uses its own graph)."""
        return bipartite_propagation(dataset.inter_matrix(form="coo"), "symmetric")[0]

    # ------------------------------------------------------------ access points
    def raw_features(self, name: str) -> torch.Tensor:
        return getattr(self, f"feat_{name}")

    def modality_features(self, p: PromptVectors | None) -> dict[str, torch.Tensor]:
        """:math:`X^m` of every modality, with the prompt's feature-space injection when it is on."""
        if p is None:
            return {m: self.raw_features(m) for m in self.modalities}
        return {m: self.prompt.inject_features(m, self.raw_features(m), p) for m in self.modalities}

    def id_embeddings(self, p: PromptVectors | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-0 (user [U, d], item [I, d]) ID embeddings, with the prompt's ID-space injection when it is on."""
        user, item = self.user_embedding.weight, self.item_embedding.weight
        return (user, item) if p is None else self.prompt.inject_ids(user, item, p)

    # ------------------------------------------------------------------ model
    def forward(self) -> TeacherOutput:
        p = self.prompt() if self.prompt is not None else None
        out = self.encode(self.modality_features(p), *self.id_embeddings(p))
        out.prompt = p
        return out

    def encode(self, features: dict[str, torch.Tensor], user: torch.Tensor, item: torch.Tensor) -> TeacherOutput:
        raise NotImplementedError

    def loss(self, interaction, out: TeacherOutput) -> torch.Tensor:
        raise NotImplementedError

    def calculate_loss(self, interaction) -> torch.Tensor:
        out = self.forward()
        loss = self.loss(interaction, out)
        if out.prompt is not None:
            loss = loss + self.prompt.loss(out.prompt, *self.triples(interaction))
        return loss

    def user_item(self, out: TeacherOutput) -> tuple[torch.Tensor, torch.Tensor]:
        return out.user, out.item

    # ------------------------------------------------------------- epoch hook
    def train(self, mode: bool = True):
        result = super().train(mode)
        if mode:
            self.new_epoch()
        return result

    def new_epoch(self) -> None:
        """Per-epoch graph work (called through ``train()``, which RecBole's trainer calls once per epoch)."""

    # ------------------------------------------------------------- accounting
    def used_parameters(self) -> int:
        """All parameters (see :mod:`recbole_promptmm.model.accounting`)."""
        return parameter_count(self)

    def serving_bytes(self) -> int:
        """Bytes needed to produce recommendations: parameters, feature matrices and every graph buffer."""
        # by identity: a model whose feature matrices are parameters (BM3's trainable_features) counts them once
        tensors = {id(t): t for t in [*self.parameters(), *(self.raw_features(m) for m in self.modalities)]}
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        for module in self.modules():
            if hasattr(module, "nbytes") and module is not self:
                total += module.nbytes()
        return total
