"""Mirage check (Schaeffer et al. 2023): does an emergence survive a continuous metric?

If per-token accuracy p rises smoothly, exact match on an L-token answer is about p^L and can
look abrupt. So for every (task, shots) we set the verdict under the task's discontinuous
metric (`exact_match` for generation probes, `accuracy` for multiple-choice ones) next to
the verdicts under its continuous metrics (`token_accuracy`, `edit_similarity`,
`answer_logprob`, `answer_prob`; `gold_prob` for multiple choice), all on one axis
(PRIMARY_AXIS = "params": model size, the axis Wei et al. and Schaeffer et al. argue
about), and label it from the verdicts of LABEL_CONTINUOUS:

- `mirage`: emergent under the discontinuous metric, no continuous metric emergent, and at
  least one continuous metric smooth (the same ability improves gradually when measured
  smoothly).
- `survives_continuous`: emergent under the discontinuous metric and under at least one
  continuous metric.
- `inconclusive`: emergent under the discontinuous metric, but the continuous metrics are
  neither emergent nor smooth (flat, insufficient data, or not reported).
- `not_emergent`: the discontinuous metric is not emergent (or not reported).

`mirage` (boolean) is True exactly for the `mirage` label. `answer_prob` (the probability of
the whole gold answer, a product over its tokens) gets a verdict column but no vote: it is
continuous, but it carries the same p^L nonlinearity as exact match (it is the rate at which
sampling would reproduce the answer), so its jumping with exact match shows nothing about
the per-token ability. Its column comes last in mirage.csv, after the p^L columns, because
the contract's columns keep their order and only gain columns at the end.

The quantitative test (`pl_test`), for generation probes: is exact match what p^L of the
token accuracy predicts, over the sizes of the ladder? Model EM_i = TA_i^L at each size i,
with L, the effective answer length in tokens, the only parameter. Exact match counts the
stop token and correlated token errors, so L need not equal the answer's length. L minimises
chi2 = sum_i (EM_i - TA_i^L)^2 / var_i, the binomial variance var_i = q(1-q)/n_i at the
predicted q = TA_i^L, kept half an example off 0 and 1. (At the observed EM instead, a size
with no exact match would count as nearly noiseless and reject a right model on a handful
of examples.) Only exact match's noise counts: token accuracy is measured on the same
examples and moves with exact match, which makes EM - TA^L less noisy than EM alone (for
independent token errors), so the test is conservative for that noise (tests/test_mirage.py
measures its acceptance rate on true p^L data against the rate when TA is known exactly;
measured: docs/LOG.md; scores of EM and TA from different examples would need TA's noise
added).
A model better or worse than its size suggests moves its TA and EM together, so noise from
rung to rung does not count against p^L either. Columns:
`pl_length` (L; inf when exact match is 0 wherever the fit runs L to its upper bound),
`pl_max_z` (largest |EM - TA^L| in standard errors), `pl_p_value` (chi-square goodness of
fit with m - 1 degrees of freedom over m sizes) and `pl_predicts` (p >= PL_ALPHA). Each run's
last checkpoint gives a point; runs at one size (seeds) are averaged, their n summed. Noise
beyond the binomial (seed to seed) is not modelled: it can only make the test reject. NaN
(and an empty `pl_predicts`) where the probe has no exact_match + token_accuracy (multiple
choice: accuracy and gold_prob have no p^L), fewer than PL_MIN_POINTS sizes, or no `n`.

The metric kinds (DISCONTINUOUS, CONTINUOUS) are the results schema's, from
`scaling/results.py`, the module that owns every convention of the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

from analysis import emergence
from scaling.results import CONTINUOUS, DISCONTINUOUS

PRIMARY_AXIS = "params"
# The continuous metrics mirage.csv had when its columns became a contract ...
CONTRACT_CONTINUOUS = ("token_accuracy", "edit_similarity", "answer_logprob", "gold_prob")
# ... and those added since: their verdict columns are appended at the end.
LATER_CONTINUOUS = tuple(m for m in CONTINUOUS if m not in CONTRACT_CONTINUOUS)
# Continuous metrics whose verdicts decide the label (answer_prob: see the docstring).
LABEL_CONTINUOUS = CONTRACT_CONTINUOUS
# the continuous metric drawn next to the discontinuous one: the closest per-token analogue
FIGURE_CONTINUOUS = ("token_accuracy", "gold_prob", "edit_similarity", "answer_logprob")
PL_COLUMNS = ["pl_length", "pl_max_z", "pl_p_value", "pl_predicts"]
COLUMNS = ["task", "shots", "axis", "discontinuous_metric", "discontinuous_verdict",
           *CONTRACT_CONTINUOUS, "continuous_verdict", "mirage", "label", *PL_COLUMNS,
           *LATER_CONTINUOUS]

PL_ALPHA = 0.05  # pl_predicts: the chi-square test does not reject at this level
PL_MIN_POINTS = 3  # sizes needed: one parameter plus at least 2 degrees of freedom
PL_BOUNDS = (1e-2, 1e3)  # the range of L searched


def first_present(candidates, metrics) -> str:
    """The first of `candidates` among `metrics` ("" if none)."""
    present = set(metrics)
    return next((m for m in candidates if m in present), "")


def metric_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """Per (task, shots): its discontinuous metric and the continuous one to draw beside it."""
    rows = [{"task": task, "shots": shots,
             "discontinuous": first_present(DISCONTINUOUS, g.metric.unique()),
             "continuous": first_present(FIGURE_CONTINUOUS, g.metric.unique())}
            for (task, shots), g in df.groupby(["task", "shots"], sort=True)]
    return pd.DataFrame(rows, columns=["task", "shots", "discontinuous", "continuous"])


def _label(discontinuous: str, cont: list[str]) -> tuple[str, str]:
    """(summary of the continuous verdicts, label) from verdict strings ("" = missing)."""
    present = [v for v in cont if v]
    if "emergent" in present:
        summary = "emergent"
    elif "smooth" in present:
        summary = "smooth"
    elif present:
        summary = "/".join(sorted(set(present)))
    else:
        summary = "missing"
    if discontinuous != "emergent":
        return summary, "not_emergent"
    if summary == "emergent":
        return summary, "survives_continuous"
    if summary == "smooth":
        return summary, "mirage"
    return summary, "inconclusive"


# ----------------------------------------------------------------------------- p^L test


@dataclass
class PLFit:
    """The p^L test on one series: EM_i = TA_i^L over m sizes (see the module docstring)."""

    length: float = np.nan
    max_z: float = np.nan
    p_value: float = np.nan
    chi2: float = np.nan
    m: int = 0

    @property
    def predicts(self) -> bool | None:
        """Exact match is what p^L predicts (None when there was no test)."""
        return None if np.isnan(self.p_value) else bool(self.p_value >= PL_ALPHA)

    def row(self) -> dict:
        """The mirage.csv columns (`pl_predicts` empty when there was no test)."""
        return {"pl_length": self.length, "pl_max_z": self.max_z,
                "pl_p_value": self.p_value,
                "pl_predicts": "" if self.predicts is None else self.predicts}


def _pl_var(q: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Binomial variance q(1-q)/n, q kept half an example off 0 and 1."""
    q = np.clip(q, 0.5 / n, 1 - 0.5 / n)
    return q * (1 - q) / n


def _pl_chi2(log_l: float, ta: np.ndarray, em: np.ndarray, n: np.ndarray) -> float:
    q = ta ** math.exp(log_l)
    return float(np.sum((em - q) ** 2 / _pl_var(q, n)))


def _fit_length(ta: np.ndarray, em: np.ndarray, n: np.ndarray) -> float:
    """log L minimising the chi-square: a grid in log L (the curve can have more than one
    dip), then a bounded search between the best grid point's neighbours."""
    grid = np.linspace(math.log(PL_BOUNDS[0]), math.log(PL_BOUNDS[1]), 121)
    values = [_pl_chi2(g, ta, em, n) for g in grid]
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = optimize.minimize_scalar(_pl_chi2, bounds=(lo, hi), method="bounded",
                                   args=(ta, em, n), options={"xatol": 1e-6})
    return float(res.x) if res.fun <= values[i] else float(grid[i])


def pl_test(token_accuracy, exact_match, n) -> PLFit:
    """Fit EM = TA^L on per-size arrays (TA, EM in [0, 1]; n examples behind each EM)."""
    ta = np.clip(np.asarray(token_accuracy, float), 0, 1)
    em = np.asarray(exact_match, float)
    nn = np.asarray(n, float)
    keep = np.isfinite(ta) & np.isfinite(em) & np.isfinite(nn) & (nn > 0)
    ta, em, nn = ta[keep], em[keep], nn[keep]
    m = int(ta.size)
    if m < PL_MIN_POINTS:
        return PLFit(m=m)
    log_l = _fit_length(ta, em, nn)
    length = math.exp(log_l)
    q = ta ** length
    z = (em - q) / np.sqrt(_pl_var(q, nn))
    chi2 = float(np.sum(z ** 2))
    if _pl_chi2(math.log(PL_BOUNDS[1]), ta, em, nn) <= chi2 + 1e-6:
        length = math.inf  # exact match ~0 everywhere: any long enough answer fits as well
    return PLFit(length=length, max_z=float(np.max(np.abs(z))),
                 p_value=float(stats.chi2.sf(chi2, m - 1)), chi2=chi2, m=m)


def pl_series(last: pd.DataFrame, axis: str = PRIMARY_AXIS) -> pd.DataFrame:
    """Per axis value: mean exact match and token accuracy over the runs there, n summed.

    last: one (task, shots)'s probe rows at each run's last checkpoint. Columns of the
    result: the axis, exact_match, token_accuracy, n; sorted by the axis.
    """
    cols = [axis, "exact_match", "token_accuracy", "n"]
    if axis not in last:
        return pd.DataFrame(columns=cols)
    both = last[last.metric.isin(["exact_match", "token_accuracy"])]
    value = both.pivot_table(index="run", columns="metric", values="value", aggfunc="mean")
    if not {"exact_match", "token_accuracy"} <= set(value.columns):
        return pd.DataFrame(columns=cols)
    em_rows = both[both.metric == "exact_match"]
    per_run = value.join(em_rows.groupby("run")[["n", axis]].first())
    per_run = per_run.replace([np.inf, -np.inf], np.nan).dropna()
    per_run = per_run[per_run[axis] > 0] if axis != "loss" else per_run
    out = per_run.groupby(axis).agg(exact_match=("exact_match", "mean"),
                                    token_accuracy=("token_accuracy", "mean"),
                                    n=("n", "sum")).reset_index()
    return out[cols].sort_values(axis, ignore_index=True)


def pl_table(results: pd.DataFrame, axis: str = PRIMARY_AXIS) -> pd.DataFrame:
    """The p^L test per (task, shots) from results rows (each run's last checkpoint)."""
    last = emergence.probe_rows(emergence.last_checkpoints(results))
    rows = []
    for (task, shots), g in last.groupby(["task", "shots"], sort=True):
        s = pl_series(g, axis)
        fit = pl_test(s.token_accuracy.to_numpy(float), s.exact_match.to_numpy(float),
                      s.n.to_numpy(float))
        rows.append({"task": task, "shots": shots, **fit.row()})
    return pd.DataFrame(rows, columns=["task", "shots", *PL_COLUMNS])


# ----------------------------------------------------------------------------- the table


def mirage_table(emergence_table: pd.DataFrame, axis: str = PRIMARY_AXIS,
                 results: pd.DataFrame | None = None) -> pd.DataFrame:
    """mirage.csv: one row per (task, shots), from the emergence table (verdicts) and, for
    the p^L columns, the results rows (without them those columns stay empty)."""
    em = emergence_table[emergence_table.axis == axis]
    pl = (pl_table(results, axis) if results is not None
          else pd.DataFrame(columns=["task", "shots", *PL_COLUMNS]))
    pl_rows = {(r["task"], r["shots"]): r for r in pl.to_dict("records")}
    rows = []
    for (task, shots), g in em.groupby(["task", "shots"], sort=True):
        verdicts = dict(zip(g.metric, g.verdict))
        disc = first_present(DISCONTINUOUS, verdicts)
        summary, label = _label(verdicts.get(disc, ""),
                                [verdicts.get(m, "") for m in LABEL_CONTINUOUS])
        pl_row = pl_rows.get((task, shots), PLFit().row())
        rows.append({"task": task, "shots": shots, "axis": axis, "discontinuous_metric": disc,
                     "discontinuous_verdict": verdicts.get(disc, ""),
                     **{m: verdicts.get(m, "") for m in CONTINUOUS},
                     "continuous_verdict": summary, "mirage": label == "mirage",
                     "label": label, **{c: pl_row[c] for c in PL_COLUMNS}})
    return pd.DataFrame(rows, columns=COLUMNS)
