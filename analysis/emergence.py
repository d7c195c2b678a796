"""Emergence detection: is a metric's rise with scale abrupt, gradual, or absent?

One series is a metric (task, shots, metric) against one axis. Cross-rung axes use each
run's LAST checkpoint (one point per run): `params` is the `params` column (total parameter
count, embeddings included, as the model reports it), `flops` and `tokens` are the training
compute and tokens at that checkpoint, and `loss` is that checkpoint's validation loss
(task "val", metric "loss"). Runs that land on the same axis value (seeds) are averaged,
their `n` summed. Along training (dynamics.py) the axis is `tokens`, one point per checkpoint.
Validation loss itself gets no verdict. All probe metrics are higher-is-better.

Coordinate u: log10 of the axis value (non-positive values dropped), except for the loss
axis, where u = -loss (linear; scale grows as loss falls). Thresholds are reported in the
axis' own units (for loss: the loss value where the ability turns on).

Noise. Scores whose values all lie in [0, 1] and come with `n` (exact_match,
token_accuracy, edit_similarity) have known noise: the binomial variance p(1-p)/n of each
observed score (p kept half an example off 0 and 1). A per-example score in [0, 1] with mean
p has variance <= p(1-p), so this is conservative for the non-binary ones. Other scores
(answer_logprob) have unknown noise, estimated from the residuals of the fitted curve.

The verdict, in order:

1. `insufficient_data`: fewer than 4 distinct axis values (MIN_POINTS).
2. Best fit among four candidates: constant (k = 1 parameter), linear in u (2), step (3: low
   level, high level, and the gap between adjacent points where it jumps) and sigmoid in u
   (4: `fits.fit_sigmoid_logx`), each fitted by least squares weighted by 1/variance where
   the noise is known. Criterion, lowest wins (ties go to the simpler curve):
   - known noise: QAICc = chi2 / c + 2k + 2k(k+1)/(m-k-1), chi2 = sum((y - f)^2 / var),
     c = max(1, chi2 / (m - k) of the most flexible candidate): the over-dispersion of the
     scores beyond binomial noise (seed and training noise), estimated from the data;
   - unknown noise: AICc = m ln(RSS/m) + 2k + 2k(k+1)/(m-k-1).
   k counts curve parameters only (the noise level is common to all four candidates; counting
   it would rule out every curve but the line at six rungs). m = distinct points. A candidate
   needs m - k - 1 >= 1, so step needs 5 points and sigmoid 6; with 4 points only constant
   and linear compete.
3. `flat`: the best fit is constant, or its total rise over the data,
   delta = f(u_max) - f(u_min), is within Z_NOISE = 3 standard errors of the noise: for
   known noise sqrt(c (var(f(u_min)) + var(f(u_max)))) with binomial variances at the fitted
   ends; for unknown noise sqrt(2) times the residual spread sqrt(RSS / (m - k)).
4. `smooth`: a significant change that is not emergent (including significant declines:
   an ability that gets worse with scale is not one that turns on).
5. `emergent`, Wei et al.'s (2022) definition made operational: absent in smaller models,
   present in larger ones, not predictable by extrapolating the smaller ones. Precisely,
   all of: a significant RISE; the best fit is step or sigmoid (the curve bends more than a
   line can follow); at least 2 points lie before the onset (for the sigmoid, where the
   fitted curve has done 10% of its rise over the data; for the step, the jump); and a
   straight line in u through the points before the onset, extrapolated to the largest
   point, falls short of it by more than 2/3 of the total rise (UNPREDICTED_FRACTION) AND
   by more than Z_NOISE standard errors (the noise of that point combined with the
   uncertainty of the extrapolated line). A curve already rising at the smallest model (e.g.
   a concave log-probability) is therefore never emergent, however steep its start.

Threshold (emergent verdicts only; NaN otherwise): where the fitted curve has done half of
its rise over the data (for a sigmoid whose plateaus are both observed, its midpoint 10^x0;
for a step, between the two points around the jump). Interval: 95% percentile interval of
that point over bootstrap refits of the sigmoid (parametric, with the binomial noise times
c, when the noise is known; residual otherwise), clipped to the data range. When the step is
the best fit, or no point lies inside the sigmoid's 10%-90% rise, the data only place the
jump between two adjacent points, so the interval is widened to those two points.

BIG-bench numbers (Srivastava et al. 2022), on the points sorted by scale:
I = sign(argmax y - argmin y) (max y - min y); breakthroughness = I / sqrt(median(dy^2));
linearity = I / sqrt(mean(dy^2)), dy the successive differences. A perfect step has
median(dy^2) = 0 and breakthroughness +-inf; a constant series gives NaN. Computed whenever
there are at least 3 points; they describe the series and do not enter the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import fits

MIN_POINTS = 4
Z_NOISE = 3.0
UNPREDICTED_FRACTION = 2 / 3  # the extrapolation must miss more than this share of the rise
AXES = ("params", "flops", "tokens", "loss")
VERDICTS = ("emergent", "smooth", "flat", "insufficient_data")
COLUMNS = ["task", "shots", "metric", "axis", "verdict", "threshold", "threshold_low",
           "threshold_high", "breakthroughness", "linearity", "best_fit", "n_points"]
N_PARAMS = {"constant": 1, "linear": 2, "step": 3, "sigmoid": 4}


@dataclass
class Verdict:
    """The verdict on one series, plus the sigmoid fit behind it (None when not fitted)."""

    verdict: str
    threshold: float = np.nan
    threshold_low: float = np.nan
    threshold_high: float = np.nan
    breakthroughness: float = np.nan
    linearity: float = np.nan
    best_fit: str = ""
    n_points: int = 0
    rise: float = np.nan
    width_fraction: float = np.nan  # 10%-90% of the rise, as a share of the u range
    miss_fraction: float = np.nan  # share of the rise the smaller models' trend misses
    sigmoid: fits.FitResult | None = None

    def row(self) -> dict:
        return {k: getattr(self, k) for k in COLUMNS[4:]}


def bigbench_scores(y: np.ndarray) -> tuple[float, float]:
    """(breakthroughness, linearity) of scores y sorted by scale (formulas in the docstring)."""
    y = np.asarray(y, dtype=float)
    if y.size < 3:
        return np.nan, np.nan
    span = y.max() - y.min()
    sign = np.sign(int(np.argmax(y)) - int(np.argmin(y)))
    i_y = sign * span
    d2 = np.diff(y) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        med, mean = np.sqrt(np.median(d2)), np.sqrt(np.mean(d2))
        bt = i_y / med if (med > 0 or i_y != 0) else np.nan
        lin = i_y / mean if (mean > 0 or i_y != 0) else np.nan
    return float(bt), float(lin)


def _step_fit(u: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, int]:
    """Best single jump between sorted points by weighted least squares (weights w):
    (fitted values, j); the jump is before y[j]."""
    m = y.size
    cw, c1, c2 = np.cumsum(w), np.cumsum(w * y), np.cumsum(w * y * y)
    j = np.arange(1, m)
    lw, rw = cw[j - 1], cw[-1] - cw[j - 1]
    ls, rs = c1[j - 1], c1[-1] - c1[j - 1]
    rss = (c2[j - 1] - ls ** 2 / lw) + (c2[-1] - c2[j - 1] - rs ** 2 / rw)
    i = int(np.argmin(rss))
    return np.where(np.arange(m) < j[i], ls[i] / lw[i], rs[i] / rw[i]), int(j[i])


def _binom_var(p, n):
    """p(1-p)/n with p kept off 0 and 1 by half an example, so a score of 0 still has noise."""
    p = np.clip(p, 0.5 / n, 1 - 0.5 / n)
    return p * (1 - p) / n


def _penalty(k: int, m: int) -> float:
    return 2 * k + 2 * k * (k + 1) / (m - k - 1)


def _select(fitted: dict[str, np.ndarray], y: np.ndarray, var: np.ndarray | None):
    """Best candidate by AICc (var None) or QAICc with known variances; returns (name, c_hat).

    c_hat = max(1, chi2 / dof of the most flexible candidate): how much more the scores
    scatter than their binomial noise (seed and training noise), which scales both the
    criterion and every noise check after it.
    """
    m = y.size
    if var is None:
        scores = {name: m * math.log(max(float(np.sum((y - f) ** 2)), m * 1e-18) / m)
                  + _penalty(N_PARAMS[name], m) for name, f in fitted.items()}
        c_hat = 1.0
    else:
        chi2 = {name: float(np.sum((y - f) ** 2 / var)) for name, f in fitted.items()}
        general = max(fitted, key=N_PARAMS.get)
        c_hat = max(1.0, chi2[general] / (m - N_PARAMS[general]))
        scores = {name: chi2[name] / c_hat + _penalty(N_PARAMS[name], m) for name in fitted}
    best = min(scores, key=lambda k: (round(scores[k], 9), N_PARAMS[k]))  # ties: simpler
    return best, c_hat


def classify(x, y, n=None, *, axis: str = "params", n_boot: int = 100,
             seed: int = fits.SEED) -> Verdict:
    """Verdict on one series y(x); `n` = examples behind each score (for the noise check).

    Points with the same x are averaged (n summed). See the module docstring for the rules.
    """
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    nn = np.ones_like(x) if n is None else np.asarray(n, float).ravel()
    keep = np.isfinite(x) & np.isfinite(y) & (True if axis == "loss" else x > 0)
    x, y, nn = x[keep], y[keep], nn[keep]
    xs, inv = np.unique(x, return_inverse=True)  # same x (seeds): mean score, summed n
    yv = np.bincount(inv, weights=y, minlength=xs.size) / np.bincount(inv, minlength=xs.size)
    nv = np.bincount(inv, weights=nn, minlength=xs.size)
    if axis == "loss":  # sort by scale: falling loss
        xs, yv, nv = xs[::-1], yv[::-1], nv[::-1]
        u = -xs
    else:
        u = np.log10(xs)
    m = xs.size
    bt, lin = bigbench_scores(yv)
    if m < MIN_POINTS:
        return Verdict("insufficient_data", breakthroughness=bt, linearity=lin, n_points=m)

    if np.ptp(yv) == 0:  # e.g. exact match 0 at every size: nothing to fit
        return Verdict("flat", breakthroughness=bt, linearity=lin, best_fit="constant",
                       n_points=m, rise=0.0)

    def to_axis(uu):
        return -uu if axis == "loss" else 10.0 ** uu

    # candidate curves (fitted values at u), weighted by 1/variance where the noise is known;
    # a curve with k parameters needs m - k - 1 >= 1
    proportion = n is not None and bool(np.all((yv >= 0) & (yv <= 1)) and np.all(nv > 0))
    var = _binom_var(yv, nv) if proportion else None
    w = np.ones(m) if var is None else 1 / var
    fitted = {"constant": np.full(m, np.average(yv, weights=w)),
              "linear": np.polyval(np.polyfit(u, yv, 1, w=np.sqrt(w)), u)}
    step_f, step_j = _step_fit(u, yv, w)
    if m >= 5:
        fitted["step"] = step_f
    sig = None
    if m >= 6:
        sig = fits.fit_sigmoid_logx(u, yv, sigma=None if var is None else np.sqrt(var),
                                    log_x=False, n_boot=0, seed=seed)
        if sig.ok:
            fitted["sigmoid"] = sig.predict(u)
    best, c_hat = _select(fitted, yv, var)
    f = fitted[best]
    rise = float(f[-1] - f[0])
    k_best = N_PARAMS[best]
    if proportion:  # binomial noise, scaled by the over-dispersion c_hat
        se_rise = math.sqrt(c_hat * (_binom_var(f[0], nv[0]) + _binom_var(f[-1], nv[-1])))
        se_end = math.sqrt(c_hat * _binom_var(yv[-1], nv[-1]))
    else:  # residual spread of the best curve
        se_end = math.sqrt(float(np.sum((yv - f) ** 2)) / max(m - k_best, 1))
        se_rise = se_end * math.sqrt(2.0)
    out = Verdict("smooth", breakthroughness=bt, linearity=lin, best_fit=best, n_points=m,
                  rise=rise, sigmoid=sig)
    if best == "constant" or abs(rise) <= Z_NOISE * se_rise:
        out.verdict = "flat"
        return out
    if rise < 0 or best not in ("step", "sigmoid"):
        return out

    # threshold: where the fitted curve has done half of its rise over the data; onset: 10%
    if best == "sigmoid":
        t_u = _crossing(sig.params, u, 0.5)
        onset, done = _crossing(sig.params, u, 0.1), _crossing(sig.params, u, 0.9)
    else:
        t_u = onset = done = 0.5 * (u[step_j - 1] + u[step_j])
    out.width_fraction = float((done - onset) / (u[-1] - u[0]))
    before = u < onset
    if before.sum() < 2:
        return out  # not absent in at least two smaller models
    i_hi = int(np.argmax(u >= t_u))
    bracket = (u[i_hi - 1], u[i_hi])

    # Wei et al.: is the largest point predictable from the models before the onset? The
    # miss must beat the noise of that point and the uncertainty of the extrapolated line.
    ub, yb = u[before], yv[before]
    miss = float(yv[-1] - np.polyval(np.polyfit(ub, yb, 1), u[-1]))
    out.miss_fraction = miss / rise
    if proportion:
        var_b = c_hat * float(np.mean(_binom_var(yb, nv[before])))
    else:
        var_b = se_end ** 2
    lever = 1 / ub.size + (u[-1] - ub.mean()) ** 2 / np.sum((ub - ub.mean()) ** 2)
    se_miss = math.sqrt(var_b * lever + se_end ** 2)
    if not (miss > UNPREDICTED_FRACTION * rise and miss > Z_NOISE * se_miss):
        return out

    out.verdict = "emergent"
    lo = hi = t_u
    if best == "sigmoid" and n_boot > 0:
        # known noise: parametric bootstrap with the binomial noise (times c_hat); with a
        # handful of points, resampled residuals understate it (85% coverage in tests)
        boot = fits.fit_sigmoid_logx(u, yv, sigma=None if var is None else np.sqrt(c_hat * var),
                                     log_x=False, n_boot=n_boot, seed=seed,
                                     parametric=var is not None)
        if boot.ok and boot.draws is not None:
            out.sigmoid = boot
            names = list(boot.params)
            ts = np.array([_crossing(dict(zip(names, d)), u, 0.5) for d in boot.draws])
            ts = ts[np.isfinite(ts)]
            if ts.size:
                lo, hi = np.quantile(ts, [(1 - fits.CI_LEVEL) / 2, (1 + fits.CI_LEVEL) / 2])
    if best == "step" or not np.any((u > onset) & (u < done)):
        # no point inside the rise: the data only place it between two adjacent points
        lo, hi = min(lo, bracket[0]), max(hi, bracket[1])
    lo, hi = min(lo, t_u), max(hi, t_u)
    lo, hi = float(np.clip(lo, u[0], u[-1])), float(np.clip(hi, u[0], u[-1]))
    ends = sorted([to_axis(lo), to_axis(hi)])
    out.threshold, out.threshold_low, out.threshold_high = float(to_axis(t_u)), *ends
    return out


def _crossing(p: dict, u: np.ndarray, frac: float) -> float:
    """u where the sigmoid p has done `frac` of its rise between u[0] and u[-1] (NaN if none)."""
    f = fits._sigmoid_model(p, u[[0, -1]], log_x=False)
    span = p["ceil"] - p["floor"]
    if not (f[1] > f[0]) or span == 0 or p["k"] <= 0:
        return np.nan
    s = (f[0] + frac * (f[1] - f[0]) - p["floor"]) / span
    s = min(max(s, 1e-12), 1 - 1e-12)
    return float(p["x0"] + math.log(s / (1 - s)) / p["k"])


def last_checkpoints(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of each run's last step, with the validation loss at that step as `loss`."""
    last_step = df.groupby("run").step.transform("max")
    last = df[df.step == last_step].drop(columns=["loss"], errors="ignore")
    val = last[(last.task == "val") & (last.metric == "loss")][["run", "value"]]
    val = val.rename(columns={"value": "loss"}).drop_duplicates("run")
    return last.merge(val, on="run", how="left")


def probe_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Scores that get verdicts: everything but loss rows."""
    return df[(df.metric != "loss") & np.isfinite(df.value)]


def detect(df: pd.DataFrame, axes=AXES, n_boot: int = 100) -> tuple[pd.DataFrame, dict]:
    """emergence.csv as a DataFrame, plus {(task, shots, metric, axis): Verdict}."""
    last = probe_rows(last_checkpoints(df))
    rows, verdicts = [], {}
    for (task, shots, metric), g in last.groupby(["task", "shots", "metric"], sort=True):
        for axis in axes:
            x = g[axis] if axis in g else pd.Series(np.nan, index=g.index)
            v = classify(x.to_numpy(float), g.value.to_numpy(float), g.n.to_numpy(float),
                         axis=axis, n_boot=n_boot)
            verdicts[(task, shots, metric, axis)] = v
            rows.append({"task": task, "shots": shots, "metric": metric, "axis": axis,
                         **v.row()})
    return pd.DataFrame(rows, columns=COLUMNS), verdicts
