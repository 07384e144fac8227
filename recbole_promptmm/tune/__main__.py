import sys

from recbole_promptmm.experiments.cli import tune_main

sys.exit(tune_main())
