"""Training cost per epoch of each model next to a LightGCN epoch, measured in one run (prints figures; not a test).

    OMP_NUM_THREADS=1 python benchmarks/epoch_cost.py --dataset=tiktok --data_path=../shared/data \
        [--models=LightGCN,VBPR,LATTICE,FREEDOM,BM3,PromptMMTeacher] [--epochs=3] [--threads=1] [--key=value ...]

Each model is built with its yaml defaults (plus ``--key=value`` overrides) and trained for ``--epochs`` epochs
with RecBole's own ``Trainer._train_epoch`` (Adam, the dataset's batch size); the median epoch is printed with its
ratio to LightGCN's. PromptMM's stage 2 is timed three ways against an untrained teacher of the default
``teacher_model`` (cost does not depend on the teacher's weights): the student alone (no KD), KD with the prompt
frozen (targets computed once) and KD with the prompt tuned through the student's loss (the paper).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import recbole_promptmm  # noqa: F401  (compatibility fixes)
from recbole_promptmm import Config, create_dataset, data_preparation, get_model, get_trainer

DEFAULT_MODELS = "LightGCN,VBPR,LATTICE,FREEDOM,BM3,PromptMMTeacher"


def epoch_times(trainer, train_data, epochs: int) -> float:
    """Median seconds of ``epochs`` training epochs of RecBole's loop."""
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer._train_epoch(train_data, epoch, show_progress=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(model_name: str, args, overrides: list[str], **extra):
    config = Config(model_name, args.dataset, config_dict={"show_progress": False, **extra}, cmd_args=overrides)
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    model = get_model(model_name)(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    return config, model, trainer, train_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="tiktok")
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    rows: dict[str, float] = {}
    for name in args.models.split(","):
        _, _, trainer, train_data = build(name, args, overrides)
        rows[name] = epoch_times(trainer, train_data, args.epochs)
        print(f"{name}: {rows[name]:.3f} s/epoch", flush=True)
    for label, extra in (("PromptMM stage 2, no KD", {"pair_kd_weight": 0.0, "emb_kd_weight": 0.0,
                                                     "list_kd_weight": 0.0}),
                         ("PromptMM stage 2, KD, prompt frozen", {"prompt_tuning_in_student": False}),
                         ("PromptMM stage 2, KD, prompt tuned", {"prompt_tuning_in_student": True})):
        config, model, trainer, train_data = build("PromptMM", args, overrides, **extra)
        model.set_stage("student")
        trainer._reset_stage(model.stage_parameters(), config["student_learning_rate"], args.epochs)
        rows[label] = epoch_times(trainer, train_data, args.epochs)
        print(f"{label}: {rows[label]:.3f} s/epoch", flush=True)
    base = rows.get("LightGCN")
    student = rows.get("PromptMM stage 2, no KD")
    print(f"\nseconds per training epoch on {args.dataset} ({args.threads} torch thread(s), median of {args.epochs}, "
          f"torch {torch.__version__})")
    print(f"{'model':40s} {'s/epoch':>9s} {'/ LightGCN':>11s} {'/ student alone':>16s}")
    for name, seconds in rows.items():
        r1 = f"{seconds / base:11.2f}" if base else ""
        r2 = f"{seconds / student:16.2f}" if student and name.startswith("PromptMM stage 2") else ""
        print(f"{name:40s} {seconds:9.3f} {r1} {r2}")


if __name__ == "__main__":
    main()
