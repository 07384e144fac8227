"""PromptMM: multimodal knowledge distillation with prompt-tuning (Wei et al., WWW 2024, arXiv 2402.17188).

A multimodal teacher (``teacher_model``: any multimodal model, i.e. any
:class:`~recbole_promptmm.model.multimodal.Teacher`; :func:`recbole_promptmm.registry.multimodal_models` names them)
is trained first by its own RecBole training; then an ID-only :class:`PromptMMStudent` is trained with BPR plus
pair KD, disentangled modality-aware list KD and embedding KD, while the teacher's prompt (when it wears one) keeps
adapting through the student's loss (``prompt_tuning_in_student``). The stages are run by
:class:`recbole_promptmm.trainer.PromptMMTrainer`; ``full_sort_predict`` after training uses the student alone.

The teacher's config follows the naming rule of :mod:`recbole_promptmm.config_rules`: every ``teacher_<key>`` that
is set overrides ``<key>`` for the teacher alone. The student's keys are ``student_<key>``
(properties/model/PromptMMStudent.yaml).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_promptmm.config_rules import (
    DEFAULT_TEACHER,
    KD_MODES,
    STAGES,
    default_teacher,
    stage_one_keys,
    teacher_config,
    teacher_keys,
    teacher_model_class,
    teacher_setting_keys,
    teacher_settings,
)
from recbole_promptmm.model.graph import TrainingItems
from recbole_promptmm.model.losses import (
    LIST_KD_WEIGHTS,
    list_kd_loss,
    pair_kd_loss,
    released_kl_loss,
    sce_loss,
)
from recbole_promptmm.model.multimodal import TeacherOutput, require_modality_features
from recbole_promptmm.model.student import PromptMMStudent
from recbole_promptmm.registry import register
from recbole_promptmm.schema import Key, declare, declared_keys, flag, positive, positive_int, switch, weight

@register(trainer="PromptMMTrainer")
class PromptMM(GeneralRecommender):
    """Teacher + student. ``stage`` says which one predicts: ``"teacher"`` until stage 2 starts, ``"student"``
    in stage 2 and after training."""

    input_type = InputType.PAIRWISE
    needs_modality_features = True

    # ---- what recbole_promptmm.experiments knows of a multi-stage model (it names none): its stages, its one
    # shareable stage output (the trained teacher) and its named variants.
    stages = STAGES
    stage_output_key = "teacher_checkpoint"
    """The config key that points a run at a trained stage-1 output (it then trains no stage 1)."""
    last_stage_epochs_key = "student_epochs"
    """The config key bounding the epochs of the last stage (the one a sweep's trials report)."""
    variants: tuple[tuple[str, str, dict], ...] = (  # (name, title, overrides), the paper's ablations in its order;
        # keys: properties/model/PromptMM.yaml, multimodal.yaml, PromptMMStudent.yaml
        ("no_prompt", "w/o prompt", {"prompt": False}),
        ("no_pair_kd", "w/o pair KD", {"pair_kd_weight": 0.0}),
        ("no_list_kd", "w/o list KD", {"list_kd_weight": 0.0}),
        # list_kd_weight is 0 by default (it lost on TikTok validation): this one measures list KD (and re-weighting)
        ("with_list_kd", "with list KD (weight 0.1)", {"list_kd_weight": 0.1}),
        ("no_emb_kd", "w/o embedding KD", {"emb_kd_weight": 0.0}),
        # the student alone: no KD and no warm start (PromptMMStudent is the same without any teacher)
        ("no_kd", "w/o KD", {"pair_kd_weight": 0.0, "list_kd_weight": 0.0, "emb_kd_weight": 0.0, "warm_start": False}),
        ("no_reweighting", "w/o re-weighting", {"list_kd_weight": 0.1, "list_kd_weighting": "none"}),
        ("frozen_prompt", "prompt frozen in stage 2", {"prompt_tuning_in_student": False}),
    )

    config_keys = declare(  # defaults: properties/model/PromptMM.yaml (teacher_<key>: config_rules' naming rule)
        teacher_model=Key("str", help="the teacher: any multimodal model (registry.multimodal_models)"),
        teacher_learning_rate=positive("stage-1 learning rate; ~ = the teacher's own learning_rate", optional=True),
        student_learning_rate=positive("stage-2 learning rate (student, and prompt when tuned)"),
        teacher_epochs=positive_int("stage-1 epoch bound; ~ = epochs", optional=True),
        student_epochs=positive_int("stage-2 epoch bound; ~ = epochs", optional=True),
        teacher_checkpoint=Key("str", optional=True, help="reuse a trained teacher: skips stage 1"),
        prompt_tuning_in_student=flag("the prompt keeps training through the student's loss in stage 2 (paper)"),
        warm_start=flag("initialise the student with the teacher's final embeddings (released code)"),
        pair_kd_weight=weight("lambda_pair: pair (edge) KD on score differences"),
        list_kd_weight=weight("lambda_list: disentangled modality-aware list KD, summed over modalities"),
        emb_kd_weight=weight("lambda_emb: SCE between modality item embeddings and student item embeddings"),
        kd_temperature=positive("tau for pair and list KD"),
        list_kd_alpha=weight("weight of the target/non-target (binary) KL"),
        list_kd_beta=weight("weight of the negatives-only KL"),
        list_kd_weighting=switch(*LIST_KD_WEIGHTS, help="w^m: nontarget (teacher's non-target mass), confidence "
                                 "(teacher p_pos) or none"),
        list_kd_negatives=positive_int("K negatives per list (not in the user's training items)"),
        sce_gamma=Key("float", low=1, help="gamma of the scaled cosine error"),
        kd_mode=switch(*KD_MODES, optional=True, help="paper (the paper's KD forms) or official (the released "
                       "code's formulas); ~ = paper"),
    )

    @classmethod
    def config_keys_from(cls, given: dict) -> dict:
        """The keys PromptMM declares besides its own: the student's, the teacher's (``teacher_model`` of
        ``given``, else the default) and the ``teacher_<key>`` form of each teacher key (``~``: not overridden)."""
        return {**declared_keys(PromptMMStudent), **teacher_keys(given.get("teacher_model") or default_teacher())}

    @classmethod
    def stage_one_model(cls, config) -> str:
        """The model stage 1 trains (``teacher_model``) under ``config`` (a mapping or a ``Config``)."""
        return (config["teacher_model"] if "teacher_model" in config else None) or DEFAULT_TEACHER

    @classmethod
    def stage_one_keys(cls, config) -> set[str]:
        """Config keys that change what stage 1 produces under ``config`` (see :func:`stage_one_keys`)."""
        return stage_one_keys(cls.stage_one_model(config))

    @classmethod
    def stage_output_setting_keys(cls, config) -> tuple[str, ...]:
        """The keys a run must share with a stage-1 output (see :func:`teacher_setting_keys`)."""
        return teacher_setting_keys(cls.stage_one_model(config))

    @classmethod
    def stage_output_settings(cls, saved) -> dict:
        """The values a run must share with a stage-1 output whose stored config is ``saved`` (the teacher's own,
        or a whole PromptMM run's)."""
        return teacher_settings(teacher_config(saved) if saved["model"] == cls.__name__ else saved)

    @classmethod
    def defaults_from(cls, given: dict) -> tuple[str, ...]:
        """The yaml defaults a PromptMM run layers below PromptMM.yaml: the student's, then the teacher's."""
        teacher = given.get("teacher_model")
        if teacher is None:
            teacher = default_teacher()
        teacher_class = teacher_model_class(teacher)
        return ("PromptMMStudent", *teacher_class.inherits_defaults_from, teacher_class.__name__)

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        require_modality_features(dataset, "PromptMM")
        self.teacher_config = teacher_config(config)
        self.teacher_name = self.teacher_config["model"]
        self.teacher = self.teacher_config.model_class(self.teacher_config, dataset)
        self.student = PromptMMStudent(config, dataset)
        self.pair_kd_weight = config["pair_kd_weight"]
        self.list_kd_weight = config["list_kd_weight"]
        self.emb_kd_weight = config["emb_kd_weight"]
        self.kd_temperature = config["kd_temperature"]
        self.list_kd_alpha = config["list_kd_alpha"]
        self.list_kd_beta = config["list_kd_beta"]
        self.list_kd_weighting = config["list_kd_weighting"]
        self.list_kd_negatives = config["list_kd_negatives"]
        self.sce_gamma = config["sce_gamma"]
        self.prompt_tuning_in_student = config["prompt_tuning_in_student"]
        self.kd_mode = config["kd_mode"] or "paper"
        self._check_teacher(config)
        self.training_items = TrainingItems(dataset.inter_matrix(form="coo"))
        self.stage = "teacher"
        self._frozen_targets: TeacherOutput | None = None

    def _check_teacher(self, config) -> None:
        """Refuse, before any training, a KD term or switch whose inputs this teacher does not have."""
        name, teacher, student = self.teacher_name, self.teacher, self.student
        if self.kd_mode not in KD_MODES:
            raise ValueError(f"kd_mode must be one of {KD_MODES}, got {self.kd_mode!r}")
        if self.list_kd_weighting not in LIST_KD_WEIGHTS:
            raise ValueError(f"list_kd_weighting must be one of {LIST_KD_WEIGHTS}, got {self.list_kd_weighting!r}")
        if self.list_kd_weight and not teacher.has_modality_users:
            raise ValueError(
                f"list_kd_weight={self.list_kd_weight} (list KD) needs per-modality user embeddings, which teacher "
                f"{name} does not have; set list_kd_weight: 0 or use a teacher that has them (PromptMMTeacher)")
        if self.emb_kd_weight and student.embedding_size != teacher.embedding_size:
            raise ValueError(
                f"emb_kd_weight > 0 (embedding KD) compares teacher {name}'s modality item embeddings with the "
                f"student's item embeddings: student_embedding_size ({student.embedding_size}) must equal "
                f"{name}'s embedding_size ({teacher.embedding_size})")
        if config["warm_start"] and student.embedding_size != teacher.fused_size:
            raise ValueError(
                f"warm_start copies teacher {name}'s final embeddings (size {teacher.fused_size}) into the "
                f"student: student_embedding_size ({student.embedding_size}) must equal it")

    # ------------------------------------------------------------------ stages
    def set_stage(self, stage: str) -> None:
        """Switch stage. Entering ``"student"`` freezes the teacher (its prompt too unless prompt tuning in the
        student is on) and, when the prompt is frozen, computes the teacher's targets once."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.stage = stage
        self._frozen_targets = None
        if stage == "student":
            for name, p in self.teacher.named_parameters():
                p.requires_grad_(self.prompt_tuning_in_student and name.startswith("prompt."))
        else:
            for p in self.teacher.parameters():
                p.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True):
        """The student follows ``mode``; the teacher too until stage 2, then it stays in eval mode (frozen, no
        dropout, full graphs, and its per-epoch hook is not run)."""
        self.training = mode
        self.student.train(mode)
        self.teacher.train(mode and self.stage == "teacher")
        return self

    def stage_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimizer of the current stage updates."""
        if self.stage == "teacher":
            return list(self.teacher.parameters())
        return list(self.student.parameters()) + [p for p in self.teacher.parameters() if p.requires_grad]

    def warm_start_student(self) -> None:
        """Copy the teacher's final fused embeddings into the student's layer-0 embeddings."""
        with torch.no_grad():
            out = self.teacher.eval().forward()
            self.student.user_embedding.weight.copy_(out.user)
            self.student.item_embedding.weight.copy_(out.item)

    def teacher_targets(self) -> TeacherOutput:
        """Teacher outputs for KD: eval mode (no dropout); gradient reaches only the prompt, if it is tuned."""
        self.teacher.eval()
        prompt = self.teacher.prompt
        if prompt is not None and prompt.user.weight.requires_grad:
            return self.teacher.forward()
        if self._frozen_targets is None:
            with torch.no_grad():
                self._frozen_targets = self.teacher.forward()
        return self._frozen_targets

    # ----------------------------------------------------------------- training
    def calculate_loss(self, interaction) -> torch.Tensor:
        if self.stage == "teacher":
            return self.teacher.calculate_loss(interaction)
        return self.distillation_loss(interaction)

    def distillation_loss(self, interaction) -> torch.Tensor:
        """BPR + L2 of the student, plus the weighted pair, list and embedding KD terms."""
        u, pos, neg = self.student.triples(interaction)
        s_user, s_item = self.student.forward()
        loss = self.student.loss_terms(interaction, s_user, s_item)
        if not (self.pair_kd_weight or self.list_kd_weight or self.emb_kd_weight):
            return loss
        t = self.teacher_targets()
        if self.kd_mode == "official":
            return loss + self.released_kd_terms(u, pos, neg, s_user, s_item, t)
        su = s_user[u]
        if self.pair_kd_weight:
            tu = t.user[u]
            t_delta = (tu * (t.item[pos] - t.item[neg])).sum(-1)
            s_delta = (su * (s_item[pos] - s_item[neg])).sum(-1)
            loss = loss + self.pair_kd_weight * pair_kd_loss(t_delta, s_delta, self.kd_temperature)
        if self.list_kd_weight:
            negatives = self.training_items.sample_negatives(u, self.list_kd_negatives)
            items = torch.cat([pos.view(-1, 1), negatives], dim=1)  # [B, 1 + K], positive first
            s_logits = (su.unsqueeze(1) * s_item[items]).sum(-1)
            for m in self.teacher.modalities:
                fu, fi = t.modality_user[m], t.modality_item[m]
                t_logits = (fu[u].unsqueeze(1) * fi[items]).sum(-1)
                loss = loss + self.list_kd_weight * list_kd_loss(
                    t_logits, s_logits, self.kd_temperature, self.list_kd_alpha, self.list_kd_beta,
                    self.list_kd_weighting)
        if self.emb_kd_weight:
            batch_items = torch.cat([pos, neg])
            for m in self.teacher.modalities:
                loss = loss + self.emb_kd_weight * sce_loss(
                    t.modality_item[m][batch_items], s_item[batch_items], self.sce_gamma)
        return loss

    # ------------------------------------------------------------- checkpoints
    def other_parameter(self) -> dict:
        """Saved with the weights, so a reloaded model predicts with the stage it was saved in."""
        return {"stage": self.stage}

    def load_other_parameter(self, para) -> None:
        if para and "stage" in para:
            self.set_stage(para["stage"])

    def released_kd_terms(self, u, pos, neg, s_user, s_item, t: TeacherOutput) -> torch.Tensor:
        """``kd_mode: official``: the released code's KD formulas (see :func:`released_kl_loss`). Pair term on
        per-sample BPR losses of the fused teacher; list term on per-item -log softmax values of each modality
        teacher (no temperature, no decoupling); embedding term: SCE over all items."""
        loss = s_user.new_zeros(())
        su = s_user[u]
        if self.pair_kd_weight:
            s_bpr = -F.logsigmoid((su * (s_item[pos] - s_item[neg])).sum(-1))
            t_bpr = -F.logsigmoid((t.user[u] * (t.item[pos] - t.item[neg])).sum(-1))
            loss = loss + self.pair_kd_weight * released_kl_loss(s_bpr, t_bpr)
        if self.list_kd_weight:
            negatives = self.training_items.sample_negatives(u, self.list_kd_negatives)
            items = torch.cat([pos.view(-1, 1), negatives], dim=1)
            s_list = -(torch.softmax((su.unsqueeze(1) * s_item[items]).sum(-1), -1) + 1e-8).log()
            for m in self.teacher.modalities:
                fu, fi = t.modality_user[m], t.modality_item[m]
                t_list = -(torch.softmax((fu[u].unsqueeze(1) * fi[items]).sum(-1), -1) + 1e-8).log()
                loss = loss + self.list_kd_weight * released_kl_loss(s_list, t_list)
        if self.emb_kd_weight:
            for m in self.teacher.modalities:
                loss = loss + self.emb_kd_weight * sce_loss(t.modality_item[m], s_item, self.sce_gamma)
        return loss

    # ---------------------------------------------------------------- inference
    def load_state_dict(self, *args, **kwargs):
        result = super().load_state_dict(*args, **kwargs)
        self.train(self.training)  # drops the embedding caches of teacher and student
        self._frozen_targets = None
        return result

    def active(self) -> GeneralRecommender:
        return self.teacher if self.stage == "teacher" else self.student

    def predict(self, interaction) -> torch.Tensor:
        return self.active().predict(interaction)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.active().full_sort_predict(interaction)

    def used_parameters(self) -> int:
        return self.active().used_parameters()

    def serving_bytes(self) -> int:
        return self.active().serving_bytes()
