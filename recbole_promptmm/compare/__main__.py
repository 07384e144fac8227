"""``python -m recbole_promptmm.compare``: see :mod:`recbole_promptmm.compare.cli`."""

import sys

from recbole_promptmm.compare.cli import main

if __name__ == "__main__":
    sys.exit(main())
