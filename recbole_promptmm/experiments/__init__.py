"""Hyper-parameter sweeps on Ray Tune (:mod:`.sweep`, docs/TUNING.md) and multi-seed comparisons as Ray tasks
(:mod:`.compare`, docs/COMPARE.md)."""
