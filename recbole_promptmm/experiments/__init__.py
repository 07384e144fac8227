"""Experiments: hyper-parameter sweeps (Ray Tune trials) and multi-seed comparisons (Ray tasks).

:mod:`.options` (the option dataclasses), :mod:`.cli` (the two argparse command lines), :mod:`.cluster` (the Ray
session and the Tuner), :mod:`.space` and :mod:`.trial` and :mod:`.sweep` (sweeps: docs/TUNING.md),
:mod:`.plan` and :mod:`.compare` (comparisons: docs/COMPARE.md), :mod:`.cost` (what a trained model costs to
serve), :mod:`.report` (tables, paired tests and plots on pandas and scipy).
"""
