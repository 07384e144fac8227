import sys

from recbole_promptmm.experiments.cli import compare_main

sys.exit(compare_main())
