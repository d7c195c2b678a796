"""Seed spread: how far replicate runs of one size disagree with each other.

Replicates are runs with the same parameter count (a `seed` sweep, or any repeated runs).
At each run's last checkpoint, for every probe's discontinuous metric (exact_match,
accuracy) and the validation loss, per size: the number of runs, their mean, min and max.

A probe's spread is flagged when sampling noise cannot explain it: exact match and accuracy
are proportions of n instances, so under "every run has the same rate" each run's count is
binomial with the pooled rate, and `p_value` is the Monte-Carlo probability that the range
of the runs' proportions is at least the observed one (DRAWS draws, fixed seed). Flagged
(`beyond_sampling`) means p_value < ALPHA / m over the m probe x size comparisons of the
table (Bonferroni: a family-wise 5% chance of any false flag). A flagged probe's score at
that size depends on the initialisation, so where it "turns on" along the ladder is not a
function of size alone (the emergence verdicts average replicates and treat their
disagreement as over-dispersion; this table shows it outright).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.emergence import last_checkpoints

METRICS = ("exact_match", "accuracy", "loss")
COLUMNS = ["task", "shots", "metric", "params", "runs", "mean", "min", "max", "spread",
           "p_value", "beyond_sampling"]
ALPHA = 0.05  # family-wise error rate over all probe x size comparisons
DRAWS = 20_000  # Monte-Carlo draws per comparison (smallest p-value 5e-5)
SEED = 0


def equal_rate_p_value(counts: np.ndarray, ns: np.ndarray, rng: np.random.Generator) -> float:
    """P(range of the runs' proportions >= the observed range | one common rate)."""
    pooled = counts.sum() / ns.sum()
    sims = rng.binomial(ns.astype(np.int64)[:, None], pooled, size=(len(ns), DRAWS)) / ns[:, None]
    observed = np.ptp(counts / ns)
    return float((1 + np.sum(np.ptp(sims, axis=0) >= observed - 1e-12)) / (DRAWS + 1))


def seed_spread(df: pd.DataFrame) -> pd.DataFrame:
    """seeds.csv: one row per (task, shots, metric, params) with two or more runs."""
    last = last_checkpoints(df)
    last = last[last.metric.isin(METRICS) & np.isfinite(last.value)]
    rng = np.random.default_rng(SEED)
    rows = []
    for (task, shots, metric, params), g in last.groupby(["task", "shots", "metric", "params"]):
        per_run = g.groupby("run").agg(value=("value", "mean"), n=("n", "max"))
        if len(per_run) < 2:
            continue
        p_value = np.nan
        if metric != "loss":  # a proportion of n instances: counts are binomial
            ns = per_run.n.to_numpy(float)
            p_value = equal_rate_p_value(np.round(per_run.value.to_numpy() * ns), ns, rng)
        rows.append({"task": task, "shots": shots, "metric": metric, "params": int(params),
                     "runs": len(per_run), "mean": float(per_run.value.mean()),
                     "min": float(per_run.value.min()), "max": float(per_run.value.max()),
                     "spread": float(per_run.value.max() - per_run.value.min()),
                     "p_value": p_value})
    out = pd.DataFrame(rows, columns=COLUMNS)
    tested = out.p_value.notna()
    out["beyond_sampling"] = tested & (out.p_value < ALPHA / max(int(tested.sum()), 1))
    return out
