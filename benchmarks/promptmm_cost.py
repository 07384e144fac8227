"""Cost and accuracy of PromptMM's teacher and student, side by side (a benchmark that prints figures; not a test).

    python benchmarks/promptmm_cost.py --dataset=tiktok --data_path=../shared/data [--checkpoint=saved/PromptMM-X.pth]
                                       [--epochs=N] [--threads=1] [--key=value ...]

Without ``--checkpoint`` a PromptMM model is trained first (``--epochs`` bounds each stage). Prints, for the
teacher and the student: used parameters, bytes needed to serve (features and graph included), seconds for one
full forward (all user and item embeddings), seconds to score and rank (top 50) all users next to a bare
matmul + top-k of the same shapes, seconds per training epoch (teacher: stage 1; student: stage 2 with KD, and
alone without KD), peak RSS increase during forward + scoring, and validation / test Recall@20 and NDCG@20.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import psutil
import torch

import recbole_promptmm  # noqa: F401  (compatibility fixes)
from recbole_promptmm import Config, create_dataset, data_preparation, get_model, get_trainer
from recbole_promptmm.compat import load_checkpoint


def timed(fn, repeat: int = 5) -> float:
    """Median seconds of ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every millisecond."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.increase = self.peak - self.base


def score_all(user: torch.Tensor, item: torch.Tensor, batch: int, k: int = 50) -> None:
    for start in range(0, user.shape[0], batch):
        torch.topk(user[start:start + batch] @ item.T, k, dim=1)


def full_sort_all(model, n_users: int, batch: int, uid_field: str, k: int = 50) -> None:
    from recbole.data.interaction import Interaction

    for start in range(1, n_users, batch):
        users = torch.arange(start, min(start + batch, n_users))
        scores = model.full_sort_predict(Interaction({uid_field: users})).view(len(users), -1)
        torch.topk(scores, k, dim=1)


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="tiktok")
    parser.add_argument("--checkpoint", default=None, help="a PromptMM checkpoint (saved/PromptMM-*.pth)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (time comparisons: keep equal)")
    parser.add_argument("--users_per_batch", type=int, default=256)
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)

    config = Config("PromptMM", args.dataset, config_dict={"epochs": args.epochs, "show_progress": False},
                    cmd_args=overrides)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = get_model("PromptMM")(config, train_data._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "PromptMM")(config, model)
    if args.checkpoint:
        model.load_state_dict(load_checkpoint(args.checkpoint)["state_dict"])
    else:
        trainer.fit(train_data, valid_data, saved=True)
        trainer.load_model_file(trainer.saved_model_file)

    rows = {}
    for stage, net in (("teacher", model.teacher), ("student", model.student)):
        model.set_stage(stage)
        model.eval()
        row = {"used parameters": net.used_parameters(), "serving bytes": net.serving_bytes()}
        with torch.no_grad():
            row["full forward s"] = timed(lambda: net.forward())
            with PeakRSS() as mem:
                model.train()
                model.eval()  # drop caches: measure forward + scoring from the stored state
                full_sort_all(model, dataset.user_num, args.users_per_batch, dataset.uid_field)
            row["peak RSS increase MB (forward + scoring)"] = mem.increase / 2**20
            row["full-sort all users s"] = timed(
                lambda: full_sort_all(model, dataset.user_num, args.users_per_batch, dataset.uid_field))
        valid = trainer.evaluate(valid_data, load_best_model=False)
        test = trainer.evaluate(test_data, load_best_model=False)
        for name, res in (("valid", valid), ("test", test)):
            row[f"{name} recall@20"] = float(res["recall@20"])
            row[f"{name} ndcg@20"] = float(res["ndcg@20"])
        rows[stage] = row

    d_t, d_s = model.teacher.embedding_size, model.student.embedding_size
    bare = {}
    for name, d in (("teacher", d_t), ("student", d_s)):
        user, item = torch.randn(dataset.user_num, d), torch.randn(dataset.item_num, d)
        bare[name] = timed(lambda: score_all(user[1:], item, args.users_per_batch))
    rows["teacher"]["bare matmul+top-k s"] = bare["teacher"]
    rows["student"]["bare matmul+top-k s"] = bare["student"]

    saved_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.set_stage("teacher")
    rows["teacher"]["train epoch s"] = epoch_seconds(model, train_data, model.stage_parameters(),
                                                      model.teacher_config["learning_rate"])
    model.set_stage("student")
    rows["student"]["train epoch s"] = epoch_seconds(model, train_data, model.stage_parameters(),
                                                      config["student_learning_rate"])
    alone = model.student
    rows["student"]["train epoch s, alone (no KD)"] = epoch_seconds(alone, train_data, alone.parameters(),
                                                                     config["student_learning_rate"])
    model.load_state_dict(saved_state)

    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    print(f"\nPromptMM cost on {args.dataset} ({args.threads} torch thread(s), {args.users_per_batch} users per "
          f"scoring batch, torch {torch.__version__})")
    print(f"{'':44s} {'teacher':>14s} {'student':>14s} {'teacher/student':>16s}")
    for key in keys:
        t, s = rows["teacher"].get(key), rows["student"].get(key)
        fmt = (lambda v: "-" if v is None else (f"{v:14.0f}" if isinstance(v, int) else f"{v:14.4f}"))
        ratio = f"{t / s:16.2f}" if isinstance(t, (int, float)) and isinstance(s, (int, float)) and s else ""
        print(f"{key:44s} {fmt(t):>14s} {fmt(s):>14s} {ratio}")
    ratio = rows["student"]["full-sort all users s"] / rows["student"]["bare matmul+top-k s"]
    print(f"student full-sort / bare matmul+top-k: {ratio:.2f}x")


if __name__ == "__main__":
    main()
