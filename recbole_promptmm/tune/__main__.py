"""``python -m recbole_promptmm.tune --model=M --dataset=D ...``: see :mod:`recbole_promptmm.tune.cli`."""

import sys

from recbole_promptmm.tune.cli import main

if __name__ == "__main__":
    sys.exit(main())
