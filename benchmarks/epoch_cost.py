"""Training cost per epoch of each model next to a LightGCN epoch, measured in one run (prints figures; not a test).

    OMP_NUM_THREADS=1 python benchmarks/epoch_cost.py --dataset=tiktok --data_path=../shared/data \
        [--models=LightGCN,VBPR,...] [--epochs=3] [--threads=1] [--key=value ...]

``--models`` defaults to LightGCN and every multimodal model (:func:`recbole_promptmm.registry.multimodal_models`:
a newly registered model joins without an edit here). Each model (yaml defaults plus ``--key=value`` overrides)
trains ``--epochs`` epochs of RecBole's own ``Trainer._train_epoch`` (Adam, the dataset's batch size); the median
epoch is printed with its ratio to LightGCN's.
PromptMM's stage 2 is timed against an untrained default ``teacher_model`` (cost does not depend on its weights)
three ways: the student alone (no KD), KD with the prompt frozen (targets computed once) and KD with the prompt
tuned through the student's loss (the paper).
"""

import statistics

import torch

from _common import parser, seconds
from recbole_promptmm import Config, create_dataset, data_preparation, get_model, get_trainer
from recbole_promptmm.registry import multimodal_models

STAGE2 = {"PromptMM stage 2, no KD": {"pair_kd_weight": 0.0, "emb_kd_weight": 0.0, "list_kd_weight": 0.0},
          "PromptMM stage 2, KD, prompt frozen": {"prompt_tuning_in_student": False},
          "PromptMM stage 2, KD, prompt tuned": {"prompt_tuning_in_student": True}}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", default="tiktok")
    p.add_argument("--models", default=",".join(["LightGCN", *multimodal_models()]))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (time comparisons: keep equal)")
    args, overrides = p.parse_known_args()
    torch.set_num_threads(args.threads)
    rows: dict[str, float] = {}
    runs = [(m, m, {}) for m in args.models.split(",")] + [(k, "PromptMM", v) for k, v in STAGE2.items()]
    for label, name, extra in runs:
        config = Config(name, args.dataset, config_dict={"show_progress": False, **extra}, cmd_args=overrides)
        train_data = data_preparation(config, create_dataset(config))[0]
        model = get_model(name)(config, train_data._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], name)(config, model)
        if label in STAGE2:
            model.set_stage("student")
            trainer._reset_stage(model.stage_parameters(), config["student_learning_rate"], args.epochs)
        rows[label] = statistics.median([seconds(trainer._train_epoch, train_data, e)[1] for e in range(args.epochs)])
        print(f"{label}: {rows[label]:.3f} s/epoch", flush=True)
    base, student = rows.get("LightGCN"), rows.get("PromptMM stage 2, no KD")
    print(f"\nseconds per training epoch on {args.dataset} ({args.threads} torch thread(s), median of {args.epochs}, "
          f"torch {torch.__version__})")
    print(f"{'model':40s} {'s/epoch':>9s} {'/ LightGCN':>11s} {'/ student alone':>16s}")
    for name, s in rows.items():
        r1 = f"{s / base:11.2f}" if base else ""
        r2 = f"{s / student:16.2f}" if student and name.startswith("PromptMM stage 2") else ""
        print(f"{name:40s} {s:9.3f} {r1} {r2}")


if __name__ == "__main__":
    main()
