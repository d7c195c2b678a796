"""Training dynamics: the emergence verdicts along training within each run.

For every (run, task, shots, metric) the checkpoints of that run form one series against
training tokens (axis `tokens`; checkpoints with 0 tokens have no log and are dropped) and
get the verdicts of emergence.py.

Task-specific, not generic. While the validation loss falls, every metric rises with it
(early in training, through warmup, most of all), and against tokens that rise looks
abrupt. A transition is a task's own only if the run's validation loss does not predict
it: across the rise (from the last checkpoint before its onset, 10% of the rise, to the
first one past its end, 90%) the validation loss may fall by at most LOSS_SHARE_MAX = 10%
of its whole fall over the run. An `emergent` verdict against tokens whose rise coincides
with a larger share of the loss's fall is the generic rise of learning and becomes
`smooth`; `loss_share` gives the share either way. Runs without validation-loss rows cannot
be checked: their verdicts are those against tokens (`loss_share` empty). The rule misses a
transition that moves the validation loss itself by more than that share (an induction bump
that is a large part of the loss): it is then called generic.

`transition_step` is the training step at the threshold: steps interpolated linearly
against log tokens between the two checkpoints around it (tokens are proportional to steps
at a fixed batch size), rounded; empty when the verdict is not `emergent`. Series without
tokens (results of another model family) are `insufficient_data`.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from analysis import emergence
from scaling.results import val_loss_rows

# the columns of emergence.csv up to n_points, the step, then the newer columns (appended, so
# readers of the older layout find theirs where they were)
COLUMNS = ["run", *emergence.COLUMNS[:12], "transition_step", "trend_p", "outlier",
           "loss_share"]
LOSS_SHARE_MAX = 0.1  # of the run's fall of validation loss, across a task's own transition


def transition_step(threshold: float, tokens: np.ndarray, steps: np.ndarray) -> float:
    """Step at `threshold` tokens, interpolated in log tokens; NaN if it cannot be placed."""
    ok = tokens > 0
    if not np.isfinite(threshold) or threshold <= 0 or ok.sum() < 2:
        return np.nan
    order = np.argsort(tokens[ok])
    return float(np.round(np.interp(np.log(threshold), np.log(tokens[ok][order]),
                                    steps[ok][order].astype(float))))


def _val_loss(run_rows: pd.DataFrame) -> pd.Series:
    """Validation loss of one run by step."""
    val = val_loss_rows(run_rows)
    return val.drop_duplicates("step").set_index("step").value.astype(float)


def loss_share(onset: float, done: float, tokens: np.ndarray, loss: np.ndarray) -> float:
    """Share of the run's fall of validation loss that happens across a rise from `onset` to
    `done` tokens: from the last checkpoint at or before the onset to the first at or after
    its end. NaN without validation loss."""
    ok = np.isfinite(loss) & (tokens > 0)
    t, lv = tokens[ok], loss[ok]
    if t.size < 2 or not np.isfinite(onset) or not np.isfinite(done):
        return np.nan
    order = np.argsort(t)
    t, lv = t[order], lv[order]
    total = float(lv[0] - lv.min())
    if total <= 0:
        return np.nan
    before = t <= onset
    after = t >= done
    i = int(np.flatnonzero(before)[-1]) if before.any() else 0
    j = int(np.flatnonzero(after)[0]) if after.any() else t.size - 1
    return float(max(lv[i] - lv[j], 0.0) / total)


def classify_run_series(g: pd.DataFrame, val_loss: pd.Series, n_boot: int
                        ) -> tuple[emergence.Verdict, float]:
    """(verdict along training, share of the loss's fall across its rise) of one series."""
    tokens, value, n = (emergence.floats(g[c]) for c in ("tokens", "value", "n"))
    chance = emergence.series_chance(g)
    # without intervals first: most rises against tokens are generic, and their bootstrap
    # would be thrown away
    v = emergence.classify(tokens, value, n, chance=chance, axis="tokens", n_boot=0)
    if v.verdict != "emergent":
        return v, np.nan
    loss = emergence.floats(g.step.map(val_loss)) if len(val_loss) else np.full(len(g), np.nan)
    share = loss_share(v.onset, v.done, tokens, loss)
    if np.isfinite(share) and share > LOSS_SHARE_MAX:  # the loss predicts it: generic
        v.verdict = "smooth"
        v.threshold = v.threshold_low = v.threshold_high = np.nan
    elif n_boot > 0:
        v = emergence.classify(tokens, value, n, chance=chance, axis="tokens", n_boot=n_boot)
    return v, share


def _detect_run(run_rows: pd.DataFrame, n_boot: int) -> list[tuple]:
    """(key, row, verdict) for every probe series of one run."""
    val_loss = _val_loss(run_rows)
    out = []
    probes = emergence.probe_rows(run_rows)
    for (run, task, shots, metric), g in probes.groupby(["run", "task", "shots", "metric"],
                                                      sort=True):
        v, share = classify_run_series(g, val_loss, n_boot)
        tokens, steps = emergence.floats(g.tokens), emergence.floats(g.step)
        row = {"run": run, "task": task, "shots": shots, "metric": metric, "axis": "tokens",
               **v.row(), "transition_step": transition_step(v.threshold, tokens, steps),
               "loss_share": share}
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
    per_run = [g for _, g in df.groupby("run", sort=True)]
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
