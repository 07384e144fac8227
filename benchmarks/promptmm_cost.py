"""Cost and accuracy of PromptMM's teacher and student, side by side (a benchmark that prints figures; not a test).

    python benchmarks/promptmm_cost.py --dataset=tiktok --data_path=../shared/data [--checkpoint=saved/PromptMM-X.pth]
                                       [--epochs=N] [--threads=1] [--key=value ...]

Without ``--checkpoint`` a PromptMM model is trained first (``--epochs`` bounds each stage). Prints for teacher and
student: used parameters, bytes to serve (features, graph), seconds of a full forward and of ranking (top 50) all
users next to a bare matmul + top-k, seconds per training epoch (student: with KD and alone), peak RSS increase
during forward + scoring, and validation / test Recall@20 and NDCG@20.
"""

import functools
import threading
import time

import psutil
import torch

from _common import checkpoint_files, entry, full_sort_all, load_checkpoint, load_data, options, timed
from recbole_promptmm import get_model, get_trainer


class PeakRSS(threading.Thread):
    """Peak resident memory above the level at entry, sampled every millisecond (a context manager)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.proc, self.done = psutil.Process(), False

    def __enter__(self):
        self.base = self.peak = self.proc.memory_info().rss
        self.start()
        return self

    def run(self):
        while not self.done:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.done = True
        self.join()
        self.increase = self.peak - self.base


def score_all(user: torch.Tensor, item: torch.Tensor, batch: int, k: int = 50) -> None:
    for start in range(0, user.shape[0], batch):
        torch.topk(user[start:start + batch] @ item.T, k, dim=1)


def epoch_seconds(model, train_data, params, lr: float) -> float:
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()
    start = time.perf_counter()
    for batch in train_data:
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    args, overrides = options(
        __doc__, checkpoint={"default": None, "help": "a PromptMM checkpoint (saved/PromptMM-*.pth)"},
        epochs={"type": int, "default": 300}, users_per_batch={"type": int, "default": 256})
    if args.checkpoint:
        checkpoint_files(args.checkpoint, "--checkpoint")  # read before the data loads: a bad file ends here
    config, dataset, train_data, valid_data, test_data = load_data(args, overrides, epochs=args.epochs)
    model = get_model("PromptMM")(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "PromptMM")(config, model)
    if args.checkpoint:
        model.load_state_dict(load_checkpoint(args.checkpoint)["state_dict"])
    else:
        trainer.fit(train_data, valid_data, saved=True)
        trainer.load_model_file(trainer.saved_model_file)
    score = functools.partial(full_sort_all, model, dataset.user_num, 50, args.users_per_batch)
    rows = {}
    for stage, net in (("teacher", model.teacher), ("student", model.student)):
        model.set_stage(stage)
        model.eval()
        row = rows[stage] = {"used parameters": net.used_parameters(), "serving bytes": net.serving_bytes()}
        with torch.no_grad():
            row["full forward s"] = timed(lambda: net.forward())
            with PeakRSS() as mem:
                model.train()
                model.eval()  # drop caches: measure forward + scoring from the stored state
                score()
            row["peak RSS increase MB (forward + scoring)"] = mem.increase / 2**20
            row["full-sort all users s"] = timed(score)
        for split, data in (("valid", valid_data), ("test", test_data)):
            res = trainer.evaluate(data, load_best_model=False)
            row[f"{split} recall@20"], row[f"{split} ndcg@20"] = float(res["recall@20"]), float(res["ndcg@20"])
    for stage in rows:
        d = getattr(model, stage).embedding_size
        user, item = torch.randn(dataset.user_num, d), torch.randn(dataset.item_num, d)
        rows[stage]["bare matmul+top-k s"] = timed(lambda: score_all(user[1:], item, args.users_per_batch))

    saved_state = {k: v.clone() for k, v in model.state_dict().items()}
    for stage, lr in (("teacher", model.teacher_config["learning_rate"]), ("student", config["student_learning_rate"])):
        model.set_stage(stage)
        rows[stage]["train epoch s"] = epoch_seconds(model, train_data, model.stage_parameters(), lr)
    rows["student"]["train epoch s, alone (no KD)"] = epoch_seconds(model.student, train_data,
                                                                     model.student.parameters(), lr)  # student's lr
    model.load_state_dict(saved_state)

    print(f"\nPromptMM cost on {args.dataset} ({args.threads} torch thread(s), {args.users_per_batch} users per "
          f"scoring batch, torch {torch.__version__})")
    print(f"{'':44s} {'teacher':>14s} {'student':>14s} {'teacher/student':>16s}")
    fmt = (lambda v: "-" if v is None else (f"{v:14.0f}" if isinstance(v, int) else f"{v:14.4f}"))
    for key in dict.fromkeys(k for r in rows.values() for k in r):
        t, s = rows["teacher"].get(key), rows["student"].get(key)
        ratio = f"{t / s:16.2f}" if isinstance(t, (int, float)) and isinstance(s, (int, float)) and s else ""
        print(f"{key:44s} {fmt(t):>14s} {fmt(s):>14s} {ratio}")
    ratio = rows["student"]["full-sort all users s"] / rows["student"]["bare matmul+top-k s"]
    print(f"student full-sort / bare matmul+top-k: {ratio:.2f}x")


if __name__ == "__main__":
    entry(main)
