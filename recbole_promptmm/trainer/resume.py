"""Resuming an interrupted run: the resume file, the random-number states it carries, and what Ctrl-C says.

Every trainer run through recbole_promptmm (ours and RecBole's built-ins, :class:`~recbole_promptmm.trainer.base.CheckpointMixin`)
writes ``<checkpoint>-resume.pth`` at the start of every training epoch after the first (and at the start of
PromptMM's stage 2): RecBole's checkpoint fields (weights,
optimizer, early-stopping counter, best score) plus the best validation result, the epoch about to be trained, the
stage (PromptMM's ``teacher`` or ``student``), the run's inputs (model, dataset, config files, overrides) and the
random-number states (Python, numpy, torch, CUDA and the training loader's generator). A run continued from it
retrains at most the interrupted epoch and ends with exactly the metrics of an uninterrupted run with the same seed
(bit for bit with one torch thread; with more, torch's CPU kernels add in a varying order, so two uninterrupted runs
already differ in the 7th digit of some weights). The file is removed when the run finishes.
"""

from __future__ import annotations

import os
import random
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from recbole_promptmm.checkpoint import CheckpointError, load_checkpoint

RESUME_FORMAT = 1
RESUME_SUFFIX = "-resume.pth"


def resume_file_for(run_stem: str) -> str:
    """The resume file of the run whose files start with ``run_stem``."""
    return run_stem + RESUME_SUFFIX


def capture_rng(generators: Iterable[torch.Generator] = ()) -> dict:
    """Every random-number state a training epoch draws from, in types torch's safe loader reads."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": [g.get_state() for g in generators],
    }


def restore_rng(state: dict, generators: Sequence[torch.Generator] = ()) -> None:
    """Set what :func:`capture_rng` captured (the generators in the same order)."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if len(generators) != len(state["generators"]):
        raise ValueError(f"resume file holds {len(state['generators'])} loader generator states, "
                         f"this run has {len(generators)} loaders")
    for generator, saved in zip(generators, state["generators"]):
        generator.set_state(saved)


class ResumeError(ValueError):
    """A resume file that cannot continue this run (missing, not a resume file, another config)."""


def read_resume_file(path: str) -> dict:
    """The state in a resume file, or a :class:`ResumeError` that names the file and says what is wrong."""
    try:
        state = load_checkpoint(path, "cpu", what="--resume:")
    except CheckpointError as err:  # missing, truncated, not a torch file, a foreign pickle: the reader's words
        raise ResumeError(str(err)) from None
    if state.get("resume_format") != RESUME_FORMAT:
        raise ResumeError(f"--resume: {path} is not a resume file (those end in {RESUME_SUFFIX} and are written "
                          f"at every epoch; a best-model checkpoint cannot continue a run)")
    return state


def config_differences(saved: Any, current: Any, ignore: Iterable[str] = ()) -> list[str]:
    """The config keys whose resolved values differ between two RecBole configs, as ``key: then X, now Y``
    (``ignore``: keys that may differ, e.g. :func:`recbole_promptmm.distributed.process_keys`)."""
    a, b = dict(saved.final_config_dict), dict(current.final_config_dict)
    keys = sorted((set(a) | set(b)) - set(ignore))
    return [f"{k}: then {a.get(k)!r}, now {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with what was saved: the resume file (None when the first epoch had not ended), the
    stage and the epoch it continues from."""

    def __init__(self, resume_file: str | None, stage: str | None = None, epoch: int | None = None,
                 best_model_file: str | None = None) -> None:
        super().__init__(resume_file)
        self.resume_file, self.stage, self.epoch, self.best_model_file = resume_file, stage, epoch, best_model_file

    def __reduce__(self):  # sent from a process of a multi-process run to its launcher whole
        return type(self), (self.resume_file, self.stage, self.epoch, self.best_model_file)

    def describe(self, prog: str) -> str:
        """One line: stage, epoch, what was saved, the command that resumes it."""
        if self.resume_file is None:
            return f"{prog}: interrupted (Ctrl-C) before the first epoch ended; nothing to resume from was saved"
        stage = {"teacher": " in stage 1 (teacher)", "student": " in stage 2 (student)"}.get(self.stage, "")
        best = f", best model so far in {self.best_model_file}" if self.best_model_file else ""
        return (f"{prog}: interrupted (Ctrl-C){stage} at epoch {self.epoch}; saved: the state at the start "
                f"of epoch {self.epoch} in {self.resume_file}{best}; resume with: {prog} --resume={self.resume_file}")


def interrupted(resume_file: str | None) -> RunInterrupted:
    """The :class:`RunInterrupted` for a run whose latest resume file is ``resume_file`` (read back from disk, so
    it says what is really there)."""
    if not resume_file or not os.path.isfile(resume_file):
        return RunInterrupted(None)
    state = read_resume_file(resume_file)
    best = state["run_files"]["saved_model_file"]
    if state.get("stage") == "teacher":
        best = state["run_files"].get("teacher_model_file", best)
    return RunInterrupted(resume_file, state.get("stage"), int(state["epoch"]),
                          best if best and os.path.isfile(best) else None)
