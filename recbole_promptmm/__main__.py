"""``python -m recbole_promptmm run|compare|tune ...``: the console command ``recbole-promptmm``
(see :mod:`recbole_promptmm.cli`)."""

import sys

from recbole_promptmm.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m recbole_promptmm"))
