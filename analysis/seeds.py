"""Seed spread: how far replicate runs of one size disagree with each other.

Replicates are runs with the same parameter count (a `seed` sweep, or any repeated runs).
At each run's last checkpoint, for every probe's discontinuous metric (exact_match,
accuracy) and the validation loss, per size: the number of runs, their mean, min and max.

A probe's spread is flagged when sampling noise cannot explain it: exact match and accuracy
are proportions of n instances, so under "every run has the same rate" each run's count is
binomial with the pooled rate, and `p_value` is the probability that the range of the
runs' proportions is at least the observed one: exact when the runs share one n (the usual
case), else estimated from DRAWS Monte-Carlo draws (fixed seed); either way at least
1 / (DRAWS + 1). Flagged
(`beyond_sampling`) means p_value < ALPHA / m over the m probe x size comparisons of the
table (Bonferroni: a family-wise 5% chance of any false flag). A flagged probe's score at
that size depends on the initialisation, so where it "turns on" along the ladder is not a
function of size alone (the emergence verdicts average replicates and treat their
disagreement as over-dispersion; this table shows it outright).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.emergence import last_checkpoints

METRICS = ("exact_match", "accuracy", "loss")
COLUMNS = ["task", "shots", "metric", "params", "runs", "mean", "min", "max", "spread",
           "p_value", "beyond_sampling"]
ALPHA = 0.05  # family-wise error rate over all probe x size comparisons
DRAWS = 20_000  # Monte-Carlo draws per comparison (smallest p-value 5e-5)
SEED = 0


def equal_rate_p_value(counts: np.ndarray, ns: np.ndarray, rng: np.random.Generator) -> float:
    """P(range of the runs' proportions >= the observed range | one common rate).

    Exact when every run has the same n (`range_sf`), else from DRAWS Monte-Carlo draws;
    never below 1 / (DRAWS + 1), the smallest p-value the draws can give.
    """
    pooled = counts.sum() / ns.sum()
    if np.all(ns == ns[0]) and float(ns[0]).is_integer():
        return max(range_sf(counts, int(ns[0]), pooled), 1 / (DRAWS + 1))
    sims = rng.binomial(ns.astype(np.int64)[:, None], pooled, size=(len(ns), DRAWS)) / ns[:, None]
    observed = np.ptp(counts / ns)
    return float((1 + np.sum(np.ptp(sims, axis=0) >= observed - 1e-12)) / (DRAWS + 1))


def range_sf(counts: np.ndarray, n: int, rate: float) -> float:
    """P(max - min of len(counts) independent Binomial(n, rate) >= max - min of `counts`).

    With F the binomial CDF and k runs, the range is at most d exactly when the smallest
    count is some a and all lie in [a, a + d]:
    P(range <= d) = sum_a P(a <= X <= a + d)^k - P(a + 1 <= X <= a + d)^k.
    (Drawing 20,000 replicate sets per comparison instead took most of the report's time.)
    """
    observed = int(round(counts.max() - counts.min()))
    if observed == 0:
        return 1.0
    k, a = counts.size, np.arange(n + 1)
    cdf = np.concatenate([[0.0], np.cumsum(stats.binom.pmf(a, n, rate))])  # cdf[j] = P(X < j)
    top = cdf[np.minimum(a + observed - 1, n) + 1]  # P(X <= a + d), d = observed - 1
    at_most = np.sum((top - cdf[a]) ** k - (top - cdf[a + 1]) ** k)
    return float(min(max(1.0 - at_most, 0.0), 1.0))


def seed_spread(df: pd.DataFrame) -> pd.DataFrame:
    """seeds.csv: one row per (task, shots, metric, params) with two or more runs."""
    last = last_checkpoints(df)
    last = last[last.metric.isin(METRICS) & np.isfinite(last.value)]
    rng = np.random.default_rng(SEED)
    rows = []
    for (task, shots, metric, params), runs in _per_run(last):
        value, n = runs
        if len(value) < 2:
            continue
        p_value = np.nan
        if metric != "loss":  # a proportion of n instances: counts are binomial
            ns = n.astype(float)
            p_value = equal_rate_p_value(np.round(value * ns), ns, rng)
        rows.append({"task": task, "shots": shots, "metric": metric, "params": int(params),
                     "runs": len(value), "mean": float(value.sum() / len(value)),
                     "min": float(value.min()), "max": float(value.max()),
                     "spread": float(value.max() - value.min()), "p_value": p_value})
    out = pd.DataFrame(rows, columns=COLUMNS)
    tested = out.p_value.notna()
    out["beyond_sampling"] = tested & (out.p_value < ALPHA / max(int(tested.sum()), 1))
    return out


def _per_run(last: pd.DataFrame):
    """(task, shots, metric, params), (mean value per run, max n per run) for each size, runs
    in name order: one grouping for the whole table (a grouping per size cost more)."""
    keys = ["task", "shots", "metric", "params"]
    per_run = last.groupby(keys + ["run"], sort=True).agg(value=("value", "mean"),
                                                          n=("n", "max")).reset_index()
    if per_run.empty:
        return
    starts = np.flatnonzero(per_run[keys].ne(per_run[keys].shift()).any(axis=1).to_numpy())
    ends = np.append(starts[1:], len(per_run))
    value, n = per_run.value.to_numpy(float), per_run.n.to_numpy()
    key_rows = per_run[keys].iloc[starts].itertuples(index=False, name=None)
    for key, i, j in zip(key_rows, starts, ends):
        yield key, (value[i:j], n[i:j])
