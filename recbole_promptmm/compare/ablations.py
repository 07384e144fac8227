"""The PromptMM ablations of the paper, as named config overrides of the full model (one table, easy to fix).

Each variant is the base model (:data:`BASE_MODEL`) with a few keys overridden. The key names must be keys of
the base model's defaults (``properties/model/PromptMM.yaml``): a variant whose keys the base model does not
define is reported as failed with a message pointing here, instead of silently running the full model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from recbole_promptmm.model.promptmm import DEFAULT_TEACHER, stage_one_keys

BASE_MODEL = "PromptMM"
"""The model every ablation variant is derived from."""


@dataclass(frozen=True)
class Ablation:
    """One ablation variant.

    Parameters
    ----------
    name : str
        Short identifier, used on the command line (``--ablations=no_prompt``) and in run labels
        (``PromptMM-no_prompt``).
    title : str
        The variant's name in the paper (``w/o prompt``), used in reports.
    overrides : Mapping[str, Any]
        Config keys and the values that define the variant. They win over every other config layer of the
        variant's runs (shared files, per-model sections, command-line overrides).
    """

    name: str
    title: str
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def shares_teacher(self, teacher_model: str = DEFAULT_TEACHER) -> bool:
        """Whether the overrides leave stage 1 unchanged (no key of :func:`stage_one_keys`), so the variant may
        reuse the teacher that :data:`BASE_MODEL` trained with the same seed instead of training it again."""
        return not set(self.overrides) & stage_one_keys(teacher_model)

    def label(self, base: str = BASE_MODEL) -> str:
        """The run label of this variant of ``base``, e.g. ``PromptMM-no_prompt``."""
        return f"{base}-{self.name}"


_NO_KD = {"pair_kd_weight": 0.0, "list_kd_weight": 0.0, "emb_kd_weight": 0.0}

# Keys: properties/model/PromptMM.yaml, multimodal.yaml and PromptMMStudent.yaml.
ABLATIONS: tuple[Ablation, ...] = (
    Ablation("no_prompt", "w/o prompt", {"prompt": False}),
    Ablation("no_pair_kd", "w/o pair KD", {"pair_kd_weight": 0.0}),
    Ablation("no_list_kd", "w/o list KD", {"list_kd_weight": 0.0}),
    # The default list_kd_weight is 0 (it lost on TikTok validation), so "w/o list KD" equals the default there;
    # this variant turns list KD on so that its effect (and re-weighting's) can be measured.
    Ablation("with_list_kd", "with list KD (weight 0.1)", {"list_kd_weight": 0.1}),
    Ablation("no_emb_kd", "w/o embedding KD", {"emb_kd_weight": 0.0}),
    # Student alone = plain LightGCN: no KD loss and no warm start from the teacher's embeddings (every other
    # setting stays PromptMM's); PromptMMStudent is the same without a teacher at all.
    Ablation("no_kd", "w/o KD", {**_NO_KD, "warm_start": False}),
    Ablation("no_reweighting", "w/o re-weighting", {"list_kd_weight": 0.1, "list_kd_weighting": "none"}),
    Ablation("frozen_prompt", "prompt frozen in stage 2", {"prompt_tuning_in_student": False}),
)
"""Every ablation of the paper's ablation study, in the paper's order."""


def select_ablations(names: str | Sequence[str] | None) -> list[Ablation]:
    """The ablations named in ``names``.

    Parameters
    ----------
    names : str or sequence of str or None
        ``None`` or empty: none; ``"all"``: every one of :data:`ABLATIONS`; otherwise names separated by
        commas (or a sequence of names).

    Returns
    -------
    list of Ablation
        In the order of :data:`ABLATIONS`.

    Raises
    ------
    ValueError
        For a name that is not in the table.
    """
    if not names:
        return []
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if list(names) == ["all"]:
        return list(ABLATIONS)
    known = {a.name: a for a in ABLATIONS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown ablation(s) {', '.join(unknown)}; known: {', '.join(known)} (or 'all')"
        )
    return [a for a in ABLATIONS if a.name in set(names)]


def describe_ablations() -> str:
    """A text table of the ablations (for ``--list_ablations``)."""
    lines = []
    for a in ABLATIONS:
        keys = ", ".join(f"{k}={v!r}" for k, v in a.overrides.items())
        teacher = "shares the teacher" if a.shares_teacher() else "own teacher"
        lines.append(f"{a.label():<26} {a.title:<26} {teacher:<19} {keys}")
    return "\n".join(lines)
