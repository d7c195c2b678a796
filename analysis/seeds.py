"""Seed spread: how far replicate runs of one size disagree with each other.

Replicates are runs with the same parameter count (a `seed` sweep, or any repeated runs).
At each run's last checkpoint, for every probe's discontinuous metric (exact_match,
accuracy) and the validation loss, per size: the number of runs, their mean, min and max.

A spread is flagged when it exceeds what the evaluation sample alone would produce: two
runs scored on n instances each differ by up to Z_NOISE * sqrt(2 p (1 - p) / n) from
sampling (p = the size's mean score) even with identical weights. A flagged probe is one
whose score at that size depends on the initialisation, so where it "turns on" along the
ladder is not a function of size alone (the emergence verdicts average replicates and
treat their disagreement as over-dispersion; this table shows it outright).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.emergence import Z_NOISE, last_checkpoints

METRICS = ("exact_match", "accuracy", "loss")
COLUMNS = ["task", "shots", "metric", "params", "runs", "mean", "min", "max", "spread",
           "sampling_limit", "beyond_sampling"]


def seed_spread(df: pd.DataFrame) -> pd.DataFrame:
    """seeds.csv: one row per (task, shots, metric, params) with two or more runs."""
    last = last_checkpoints(df)
    last = last[last.metric.isin(METRICS) & np.isfinite(last.value)]
    rows = []
    for (task, shots, metric, params), g in last.groupby(["task", "shots", "metric", "params"]):
        per_run = g.groupby("run").agg(value=("value", "mean"), n=("n", "sum"))
        if len(per_run) < 2:
            continue
        mean = float(per_run.value.mean())
        spread = float(per_run.value.max() - per_run.value.min())
        limit = np.nan
        if metric != "loss":  # a proportion over n instances: binomial sampling noise
            p = min(max(mean, 0.5 / per_run.n.min()), 1 - 0.5 / per_run.n.min())
            limit = Z_NOISE * float(np.sqrt(2 * p * (1 - p) / per_run.n.min()))
        rows.append({"task": task, "shots": shots, "metric": metric, "params": int(params),
                     "runs": len(per_run), "mean": mean, "min": float(per_run.value.min()),
                     "max": float(per_run.value.max()), "spread": spread,
                     "sampling_limit": limit,
                     "beyond_sampling": bool(spread > limit) if metric != "loss" else False})
    return pd.DataFrame(rows, columns=COLUMNS)

