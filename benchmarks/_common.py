"""What the benchmark scripts share: options, config and data, timing, full-sort scoring, checkpoint loading."""

import argparse
import glob
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_promptmm import Config, create_dataset, data_preparation, get_model  # noqa: E402  (compatibility fixes)
from recbole_promptmm.compat import CheckpointError, load_checkpoint  # noqa: E402
from recbole_promptmm.validate import ConfigError  # noqa: E402
from recbole_promptmm.experiments.cost import score_all_users  # noqa: E402


def options(doc: str, config_files: bool = False, **extra: dict):
    """(options, ``--key=value`` overrides): --dataset, --NAME=spec of ``extra``, [--config_files], --threads (set)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="tiktok")
    for name, spec in extra.items():
        p.add_argument(f"--{name}", **spec)
    if config_files:
        p.add_argument("--config_files", default=None, help="yaml files of the dataset, comma-separated")
    p.add_argument("--threads", type=int, default=1, help="torch threads (time comparisons: keep equal)")
    args, overrides = p.parse_known_args()
    torch.set_num_threads(args.threads)
    return args, overrides


def entry(main) -> None:
    """Run a script's ``main``: bad input (a checkpoint that cannot be read, a pattern matching no file, a config
    error) ends it with one line and exit status 2, as the package's commands do."""
    try:
        main()
    except (CheckpointError, ConfigError, FileNotFoundError) as err:
        print(f"{os.path.basename(sys.argv[0])}: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def checkpoint_files(patterns: str, option: str) -> list[str]:
    """The files of comma-separated paths or globs, each read once as a checkpoint before any data loads."""
    files = []
    for pattern in patterns.split(","):
        hits = sorted(glob.glob(pattern))
        if not hits:
            raise FileNotFoundError(f"{option}: no file matches {pattern!r}")
        files += hits
    for path in files:
        load_checkpoint(path, "cpu", what=option)
    return files


def load_data(args, overrides, model: str = "PromptMM", **values):
    """(config, dataset, train, valid, test) of ``args.dataset`` (and ``args.config_files``) for ``model``."""
    files = getattr(args, "config_files", None)
    config = Config(model, args.dataset, config_file_list=files.split(",") if files else None,
                    config_dict={"show_progress": False, **values}, cmd_args=overrides)
    dataset = create_dataset(config)
    return (config, dataset, *data_preparation(config, dataset))


def seconds(fn, *args):
    """(``fn(*args)``, seconds it took)."""
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def timed(fn, repeat: int = 5, warmup: bool = True, pick=statistics.median) -> float:
    """Median (or ``pick``) seconds of ``repeat`` calls, after one warm-up call."""
    if warmup:
        fn()
    return pick([seconds(fn)[1] for _ in range(repeat)])


def top_k(model, interaction, history_index, k: int) -> torch.Tensor:
    """Item ids [n, k] of the best full-sort scores of ``interaction``'s users, padding and ``history_index`` masked."""
    scores = model.full_sort_predict(interaction).view(interaction.length, -1).clone()
    scores[:, 0] = -torch.inf
    if history_index is not None:
        scores[history_index] = -torch.inf
    return scores.topk(k, dim=1).indices


def full_sort_all(model, n_users: int, k: int, batch: int) -> None:
    """Top-k of all users (ids 1 .. n_users - 1) from the model's own ``full_sort_predict``."""
    score_all_users(model, model.USER_ID, n_users, k, batch)


def load_model(path: str, train_data):
    """(name, model in eval mode) of a checkpoint, built from its saved config (PromptMM's ``-teacher.pth``: the
    teacher model's; ``-student.pth``: the PromptMM model serving its student)."""
    saved = load_checkpoint(path)
    config, state = saved["config"], saved["state_dict"]
    model = get_model(config["model"])(config, train_data._dataset)
    if config["model"] == "PromptMM" and not any(k.startswith("teacher.") for k in state):  # a *-student.pth
        model.student.load_state_dict(state)
        model.set_stage("student")
    else:
        model.load_state_dict(state)
        model.load_other_parameter(saved.get("other_parameter"))
    return config["model"], model.eval()
