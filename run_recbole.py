"""Train and evaluate one model on one dataset: ours (PromptMM, ...) or any RecBole built-in.

    python run_recbole.py --model=LightGCN --dataset=ml-100k [--config_files="a.yaml b.yaml"]
                          [--result_json=out.json] [--key=value ...]

Every other ``--key=value`` overrides a RecBole config key (e.g. ``--epochs=5 --data_path=../shared/data``).
The RecBole-style front door of ``recbole-promptmm run`` (:func:`recbole_promptmm.cli.run_main`): the same
options, defaults (model PromptMM, dataset ml-100k) and exit status (2: bad input, 130: interrupted).
"""

from __future__ import annotations

import sys

from recbole_promptmm.cli import run_main


def main(argv: list[str] | None = None) -> int:
    return run_main(sys.argv[1:] if argv is None else argv, prog="run_recbole.py")


if __name__ == "__main__":
    sys.exit(main())
