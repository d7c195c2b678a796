"""Training dynamics: the emergence verdicts along training within each run.

For every (run, task, shots, metric) the checkpoints of that run form one series against
training tokens (axis `tokens`; checkpoints with 0 tokens have no log and are dropped) and
get the same verdict as in emergence.py. `transition_step` is the training step at the
threshold: steps interpolated linearly against log tokens between the two checkpoints
around it (tokens are proportional to steps at a fixed batch size), rounded; empty when the
verdict is not `emergent`.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from analysis import emergence

COLUMNS = ["run", *emergence.COLUMNS, "transition_step"]


def transition_step(threshold: float, tokens: np.ndarray, steps: np.ndarray) -> float:
    """Step at `threshold` tokens, interpolated in log tokens; NaN if it cannot be placed."""
    ok = tokens > 0
    if not np.isfinite(threshold) or threshold <= 0 or ok.sum() < 2:
        return np.nan
    order = np.argsort(tokens[ok])
    return float(np.round(np.interp(np.log(threshold), np.log(tokens[ok][order]),
                                    steps[ok][order].astype(float))))


def _detect_run(probes: pd.DataFrame, n_boot: int) -> list[tuple]:
    """(key, row, verdict) for every probe series of one run."""
    out = []
    for (run, task, shots, metric), g in probes.groupby(["run", "task", "shots", "metric"],
                                                      sort=True):
        tokens, steps = g.tokens.to_numpy(float), g.step.to_numpy(float)
        v = emergence.classify(tokens, g.value.to_numpy(float), g.n.to_numpy(float),
                               axis="tokens", n_boot=n_boot)
        row = {"run": run, "task": task, "shots": shots, "metric": metric, "axis": "tokens",
               **v.row(), "transition_step": transition_step(v.threshold, tokens, steps)}
        if v.sigmoid is not None:  # the fitted law is a closure: keep only its numbers so
            v.sigmoid.model = None  # the verdict can cross a process boundary (pickle)
            v.sigmoid.draws = None
        out.append(((run, task, shots, metric), row, v))
    return out


def _assemble(results: list[list[tuple]]) -> tuple[pd.DataFrame, dict]:
    rows, verdicts = [], {}
    for key, row, v in (item for run_items in results for item in run_items):
        rows.append(row)
        verdicts[key] = v
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["transition_step"] = out["transition_step"].astype("Int64")
    return out, verdicts


def detect_in_background(df: pd.DataFrame, n_boot: int = 50) -> Callable:
    """Start `detect` in worker processes (one per core, runs split between them) and return
    a function that waits for and returns its result, so the caller can work meanwhile."""
    probes = emergence.probe_rows(df)
    per_run = [g for _, g in probes.groupby("run", sort=True)]
    workers = min(len(per_run), os.cpu_count() or 1)
    if workers < 2:
        return lambda: _assemble([_detect_run(g, n_boot) for g in per_run])
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    futures = [pool.submit(_detect_run, g, n_boot) for g in per_run]

    def result() -> tuple[pd.DataFrame, dict]:
        try:
            return _assemble([f.result() for f in futures])
        finally:
            pool.shutdown()

    return result


def detect(df: pd.DataFrame, n_boot: int = 50) -> tuple[pd.DataFrame, dict]:
    """dynamics.csv as a DataFrame, plus {(run, task, shots, metric): Verdict}.

    Runs are independent series, classified in parallel processes (most of the report's
    time on a ladder with many checkpoints). The verdicts' sigmoid fits carry parameters,
    intervals and goodness of fit (for fits.csv) but not a callable model.
    """
    return detect_in_background(df, n_boot)()
