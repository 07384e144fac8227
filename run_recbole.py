"""Train and evaluate one model on one dataset: ours (PromptMM, ...) or any RecBole built-in.

    python run_recbole.py --model=LightGCN --dataset=ml-100k [--config_files="a.yaml b.yaml"]
                          [--result_json=out.json] [--key=value ...]

Every other ``--key=value`` overrides a RecBole config key (e.g. ``--epochs=5 --data_path=../shared/data``).
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_MODEL = "PromptMM"
DEFAULT_DATASET = "ml-100k"


def main(argv: list[str] | None = None) -> dict:
    import recbole_promptmm
    from recbole_promptmm.config import load_yaml

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default=None,
                        help=f"model name (default: model: of a config file, else {DEFAULT_MODEL})")
    parser.add_argument("--dataset", "-d", default=None,
                        help=f"dataset name (default: dataset: of a config file, else {DEFAULT_DATASET})")
    parser.add_argument("--config_files", default=None, help="yaml config files, separated by spaces or commas")
    parser.add_argument("--result_json", default=None, help="write the run's results to this JSON file")
    args, overrides = parser.parse_known_args(argv)
    files = args.config_files.replace(",", " ").split() if args.config_files else None
    try:
        from_files = {}
        for file in files or []:
            from_files.update(load_yaml(file))
        args.model = args.model or from_files.get("model") or DEFAULT_MODEL
        args.dataset = args.dataset or from_files.get("dataset") or DEFAULT_DATASET
        return recbole_promptmm.run(
            args.model, args.dataset, config_file_list=files, cmd_args=overrides, result_json=args.result_json
        )
    except (ValueError, FileNotFoundError, KeyError) as err:
        parser.exit(2, f"run_recbole.py: error: {err}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
