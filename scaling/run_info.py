"""run.json: the state of one run, in one file, read and written only through here.

`scaling train` writes it when a run starts or resumes (what is trained: run and rung names,
parameter counts, learning rate, batch size, total steps, the corpus and its hash, the
code's fingerprint; status TRAINING), and again after the last step (TRAINED, with
`train_seconds`) and after the evaluation hand-off (EVALUATED, with `eval_seconds`).
The logger adds the wandb run's identity (`wandb`); the sweep runner reads the status to
skip finished runs; `scaling ladder` sums the seconds.

Its own module rather than part of scaling/results.py: results.py owns the results table
(results.csv, pandas), a file with a different life; the sweep runner and the logger read
run.json without needing pandas. Every write replaces the whole file atomically
(scaling/atomic.py), so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from scaling import atomic

RUN_FILE = "run.json"

# The run's `status`, in the order a run passes through them.
TRAINING = "training"  # started or resumed; the last step is not done yet
TRAINED = "trained"  # every step done and checkpointed
EVALUATED = "evaluated"  # trained, then every checkpoint scored on the probe tasks
STATUSES = (TRAINING, TRAINED, EVALUATED)


def path(run_dir: str | os.PathLike) -> Path:
    """Where a run directory keeps its run.json."""
    return Path(run_dir) / RUN_FILE


def read(run_dir: str | os.PathLike) -> dict:
    """The run's record; {} when it has none yet (ValueError if the file is not JSON)."""
    p = path(run_dir)
    return json.loads(p.read_text()) if p.exists() else {}


def write(run_dir: str | os.PathLike, info: dict) -> None:
    """Replace the run's record with `info` (atomically: temp file + rename)."""
    atomic.write_json(path(run_dir), info)


def update(run_dir: str | os.PathLike, **values) -> dict:
    """Set `values` in the run's record, keeping its other keys; returns the new record."""
    info = read(run_dir)
    info.update(values)
    write(run_dir, info)
    return info


def is_finished(info: dict, needs_eval: bool) -> bool:
    """Whether a run needs no more work: evaluated, or trained when no evaluation is asked."""
    status = info.get("status")
    return status == EVALUATED or (status == TRAINED and not needs_eval)


def parse_checkpoint_spec(text: str) -> tuple[Path, int | None]:
    """`RUN_DIR`, `RUN_DIR@stepN` or `RUN_DIR@N` -> (run directory, step; None = the last
    checkpoint). One reader for every command that names a checkpoint (a teacher, a
    fine-tuning source). Raises ValueError for a malformed step."""
    if "@" not in Path(text).name:  # a run directory's own name has no "@"
        return Path(text), None
    run, _, step = text.rpartition("@")
    match = re.fullmatch(r"(?:step)?(\d+)", step)
    if not run or not match:
        raise ValueError(f"{text!r}: name a checkpoint as RUN_DIR@stepN (e.g. "
                         f"runs/ladder/s6-ae842dc1@step1464), not @{step}")
    return Path(run), int(match.group(1))
