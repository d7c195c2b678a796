"""Training dynamics: the emergence verdicts along training within each run.

For every (run, task, shots, metric) the checkpoints of that run form one series against
training tokens (axis `tokens`; checkpoints with 0 tokens have no log and are dropped) and
get the same verdict as in emergence.py. `transition_step` is the training step at the
threshold: steps interpolated linearly against log tokens between the two checkpoints
around it (tokens are proportional to steps at a fixed batch size), rounded; empty when the
verdict is not `emergent`.
"""

from __future__ import annotations

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


def detect(df: pd.DataFrame, n_boot: int = 50) -> tuple[pd.DataFrame, dict]:
    """dynamics.csv as a DataFrame, plus {(run, task, shots, metric): Verdict}."""
    probes = emergence.probe_rows(df)
    rows, verdicts = [], {}
    for (run, task, shots, metric), g in probes.groupby(["run", "task", "shots", "metric"],
                                                      sort=True):
        tokens, steps = g.tokens.to_numpy(float), g.step.to_numpy(float)
        v = emergence.classify(tokens, g.value.to_numpy(float), g.n.to_numpy(float),
                               axis="tokens", n_boot=n_boot)
        verdicts[(run, task, shots, metric)] = v
        rows.append({"run": run, "task": task, "shots": shots, "metric": metric,
                     "axis": "tokens", **v.row(),
                     "transition_step": transition_step(v.threshold, tokens, steps)})
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["transition_step"] = out["transition_step"].astype("Int64")
    return out, verdicts
