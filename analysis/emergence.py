"""Emergence verdicts: does a metric turn on abruptly with scale, rise smoothly, stay flat, or
move both ways?

One series is a metric (task, shots, metric) against one axis. Cross-rung axes use each
run's LAST checkpoint (one point per run): `params` is the `params` column (total parameter
count, embeddings included, as the model reports it), `flops` and `tokens` are the training
compute and tokens at that checkpoint, and `loss` is that checkpoint's validation loss
(task "val", metric "loss"). Along training (dynamics.py) the axis is `tokens`, one point per
checkpoint. Validation loss itself gets no verdict. All probe metrics are higher-is-better.

Coordinate u: log10 of the axis value (non-positive values dropped), except for the loss
axis, where u = -loss (linear; scale grows as loss falls). Thresholds are reported in the
axis' own units (for loss: the loss value where the ability turns on).

The steps of a verdict, in order (each a function below, tested on its own):

1. Points (`_points`). Runs at the same axis value are replicates (seeds): their scores
   are averaged. Fewer than MIN_POINTS = 4 distinct values: `insufficient_data`.
2. Noise (`_noise`). Scores in [0, 1] that come with `n` (exact match, accuracy, token
   accuracy, ...) have binomial noise p(1-p)/n (p kept off 0 and 1 by half an example; for
   a per-example score in [0, 1] with mean p the variance is at most p(1-p), so this is
   conservative for non-binary ones). With replicates, their scatter around each size's
   mean measures the extra noise of training (seeds): the over-dispersion
   c = max(1, pooled chi2 / dof) multiplies every variance. Without replicates c = 1: one
   run per size cannot separate training noise from the curve, and the verdict is about
   the ladder as trained. Other scores (log-probabilities) have unknown noise: the pooled
   variance of the replicates, or without them the residual variance of the best (AICc)
   of a constant, a line, a parabola and a step in u.
   `holds_across_seeds` (proportions with replicates): every size's replicates share one
   rate (chi-square homogeneity test, family-wise ALPHA_SEEDS over the sizes tested);
   `seed_spread` is the largest range (max - min) of replicate scores at one size.
3. Chance (`_chance_floor`; `chance`, where the results carry it). Scores below chance
   count as chance (BIG-bench's normalised score floors random guessing at 0), so rising
   from 0 to chance -- the answer format learned, not the ability -- is no rise at all.
4. Outlier (`_shape_step`: `trend_tests.single_outlier`, 5 or more points): one point that
   alone breaks an otherwise monotone series by more than Z_OUTLIER standard errors (e.g.
   one rung that failed to train) is set aside and named (`outlier`, its axis value); the
   rest is judged. A reversal carried by two or more points is not an outlier but a shape
   (step 6).
5. `flat` (`_flat_step`): no monotone trend, by Bartholomew's test over the whole curve
   (`trend_tests.monotone_trend`, p-value `trend_p` >= ALPHA_TREND), or, where chance is
   known, the highest level of the best monotone fit is within Z_CHANCE standard errors of
   chance (the ability is never above chance).
6. Shape of a trend (`_shape_step`, which runs it before steps 4 and 5): `non_monotone` when
   a curve that rises then falls (or falls then rises), each arm two or more points, fits
   better than any monotone curve by more than NONMONO_GAIN in chi2 (a likelihood ratio;
   calibrated on monotone curves so that they are called non-monotone in well under 1% of
   draws), and better than a monotone curve with any one point left out by more than
   OUTLIER_MARGIN (else one point carries the reversal, step 4). U shapes and inverted U's
   are neither emergent nor flat.
7. `smooth` (`_rise_step`) for every monotone trend that is not emergent (significant
   declines included: an ability that gets worse with scale is not one that turns on).
8. `emergent` (`_rise_step`, then `_is_emergent`), Wei et al.'s (2022) definition made
   operational: absent in smaller models, present in larger ones, not predictable by
   extrapolating the smaller ones. All of:
   - the trend rises, and a step or a sigmoid in u fits better than a line (AIC with the
     known variances; AICc when the noise was estimated from the same residuals; the step
     needs 4 points, the sigmoid 5);
   - at least 2 points before the onset (where the fitted curve has done 10% of its rise;
     for a step, the jump) and at least 2 past it that are above the level before it by
     more than Z_NOISE standard errors: so a sharp rise with two rungs below and two above
     is emergent on a 4-rung ladder too;
   - where chance is known: the points before the onset are near chance (their mean within
     Z_NOISE standard errors of it, or within a tenth of the rise), and the points past the
     threshold are above chance by more than Z_NOISE standard errors;
   - a straight line in u through the points before the onset, extrapolated to the largest
     point, falls short of it by more than 2/3 of the rise (UNPREDICTED_FRACTION) AND by
     more than Z_NOISE standard errors (the noise of that point and of the extrapolated
     line). A curve already rising at the smallest model (e.g. a concave log-probability)
     is therefore never emergent, however steep its start.

Threshold (`_threshold_interval`; emergent verdicts only, NaN otherwise): where the fitted
curve has done half of its rise over the data (for a sigmoid whose plateaus are both
observed, its midpoint 10^x0; for a step, between the two points around the jump). Interval:
the 95% percentile interval of that point over parametric bootstrap refits of the sigmoid
(noise drawn from the variances above). When the data cannot resolve the rise -- the step is
the best fit, the sigmoid's steepness sits on its bound, or no point lies inside its 10%-90%
rise -- the data only place the jump between two adjacent points, and the interval is that
bracket.

BIG-bench numbers (Srivastava et al. 2022), on the points sorted by scale:
I = sign(argmax y - argmin y) (max y - min y); breakthroughness = I / sqrt(median(dy^2));
linearity = I / sqrt(mean(dy^2)), dy the successive differences. A perfect step has
median(dy^2) = 0 and breakthroughness +-inf; a constant series gives NaN. Computed whenever
there are at least 3 points; they describe the series and do not enter the verdict.

The rates at which these rules give each verdict on curves of known truth (many seeded
draws per case) are asserted in tests/test_verdict_rates.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from analysis import fits, trend_tests
from scaling.results import val_loss_rows

MIN_POINTS = 4
Z_NOISE = 3.0
Z_CHANCE = 2.0  # the top of the curve must clear chance by this many standard errors
Z_OUTLIER = 4.0  # a single point this far outside its monotone neighbours' band
ALPHA_TREND = 0.05  # slope and Bartholomew's tests: both p >= this is `flat`
ALPHA_SEEDS = 0.01  # family-wise, over the sizes with replicates
NONMONO_GAIN = 16.0  # chi2 gain of a two-arm curve over the best monotone one
OUTLIER_MARGIN = 3.0  # ... and over the best monotone one with one point left out
UNPREDICTED_FRACTION = 2 / 3  # the extrapolation must miss more than this share of the rise
NEAR_CHANCE_FRACTION = 0.1  # "near chance": within this share of the rise (or the noise)
AXES = ("params", "flops", "tokens", "loss")
VERDICTS = ("emergent", "smooth", "flat", "non_monotone", "insufficient_data")
COLUMNS = ["task", "shots", "metric", "axis", "verdict", "threshold", "threshold_low",
           "threshold_high", "breakthroughness", "linearity", "best_fit", "n_points",
           "trend_p", "outlier", "holds_across_seeds", "seed_spread"]
N_PARAMS = {"constant": 1, "linear": 2, "quadratic": 3, "step": 3, "sigmoid": 4}


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
    trend_p: float = np.nan
    outlier: float = np.nan  # axis value of the point set aside as an outlier
    holds_across_seeds: object = pd.NA  # True / False with replicates, NA without
    seed_spread: float = np.nan
    rise: float = np.nan
    onset: float = np.nan  # axis values where the rise starts (10%) and ends (90%)
    done: float = np.nan
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


# --------------------------------------------------------------------------------------------
# 1-2. points and their noise
# --------------------------------------------------------------------------------------------

@dataclass
class Points:
    """One series reduced to distinct axis values, sorted by scale (u ascending)."""

    x: np.ndarray  # axis values
    u: np.ndarray  # scale coordinate
    y: np.ndarray  # mean score per axis value
    replicates: list[np.ndarray]  # the scores behind each mean
    ns: list[np.ndarray]  # the n behind each score


def _points(x, y, n, axis: str) -> Points:
    """Distinct axis values sorted by scale, replicate scores grouped (step 1)."""
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    nn = np.ones_like(x) if n is None else np.asarray(n, float).ravel()
    keep = np.isfinite(x) & np.isfinite(y) & (True if axis == "loss" else x > 0)
    x, y, nn = x[keep], y[keep], nn[keep]
    xs, inv = np.unique(x, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    bounds = np.cumsum(np.bincount(inv, minlength=xs.size))[:-1]
    reps, ns = np.split(y[order], bounds), np.split(nn[order], bounds)
    if axis == "loss":  # sort by scale: falling loss
        xs, reps, ns = xs[::-1], reps[::-1], ns[::-1]
        u = -xs
    else:
        u = np.log10(xs) if xs.size else xs
    return Points(xs, u, np.array([r.mean() for r in reps]), reps, ns)


def _binom_var(p, n):
    """p(1-p)/n with p kept off 0 and 1 by half an example, so a score of 0 still has noise."""
    p = np.clip(p, 0.5 / n, 1 - 0.5 / n)
    return p * (1 - p) / n


@dataclass
class Noise:
    """The noise of each point's mean score, and what the replicates say.

    Binomial noise is a function of the true rate, so `at(p)` gives the variances at rates
    p: tests take them at the rates their null hypothesis fits (a constant for the trend
    test, the monotone fit for the shape tests), never at the raw scores, whose zeros would
    claim almost no noise. Estimated noise is one variance per point whatever p is.
    """

    binomial: bool  # known binomial noise (else estimated)
    estimated_from_fit: bool  # the variance came from the residuals of a fitted curve
    n_eff: np.ndarray | None = None  # examples per point, as one binomial sample
    dispersion: float = 1.0  # over-dispersion measured from replicates
    fixed: np.ndarray | None = None  # estimated variances
    holds_across_seeds: object = pd.NA
    seed_spread: float = np.nan

    def subset(self, keep: np.ndarray) -> Noise:
        """The same noise for the points where `keep` is True (an outlier set aside)."""
        return Noise(self.binomial, self.estimated_from_fit,
                     None if self.n_eff is None else self.n_eff[keep], self.dispersion,
                     None if self.fixed is None else self.fixed[keep])

    def at(self, p) -> np.ndarray:
        """Variance of each point's mean score if its true rate were p."""
        if not self.binomial:
            return self.fixed
        return self.dispersion * _binom_var(np.broadcast_to(p, self.n_eff.shape), self.n_eff)


def _replicate_stats(pts: Points) -> tuple[float, float, object, float]:
    """(pooled chi2 over binomial variance, its dof, seeds agree?, largest spread)."""
    chi2, dof, p_values, spread = 0.0, 0, [], np.nan
    for reps, ns in zip(pts.replicates, pts.ns):
        if reps.size < 2:
            continue
        pooled = float(np.sum(reps * ns) / np.sum(ns))
        var = _binom_var(pooled, ns)
        chi2 += float(np.sum((reps - reps.mean()) ** 2 / var))
        dof += reps.size - 1
        p_values.append(trend_tests.replicates_agree_p(reps, ns))
        spread = np.nanmax([spread, float(np.ptp(reps))])
    if not p_values:
        return 0.0, 0, pd.NA, np.nan
    agree = bool(min(p_values) >= ALPHA_SEEDS / len(p_values))
    return chi2, dof, agree, spread


def _noise(pts: Points, n_given: bool) -> Noise:
    """Noise of each point (step 2 of the module docstring)."""
    r = np.array([reps.size for reps in pts.replicates], float)
    binomial = n_given and bool(np.all([(reps >= 0).all() and (reps <= 1).all()
                                        for reps in pts.replicates])) \
        and bool(np.all([(ns > 0).all() for ns in pts.ns]))
    if binomial:
        chi2, dof, agree, spread = _replicate_stats(pts)
        dispersion = max(1.0, chi2 / dof) if dof else 1.0
        # the mean of r replicates of n_i examples has variance p(1-p) sum(1/n_i) / r^2
        n_eff = np.array([reps.size ** 2 / float(np.sum(1 / ns))
                          for reps, ns in zip(pts.replicates, pts.ns)])
        return Noise(True, False, n_eff, dispersion, holds_across_seeds=agree,
                     seed_spread=spread)
    dof = int(np.sum(r - 1))
    if dof >= 2:  # pooled within-size variance of the replicates
        ss = sum(float(np.sum((reps - reps.mean()) ** 2)) for reps in pts.replicates)
        if ss > 0:
            return Noise(False, False, fixed=ss / dof / r)
    return Noise(False, True, fixed=np.full(pts.y.size, _residual_variance(pts.u, pts.y)))


def _residual_variance(u: np.ndarray, y: np.ndarray) -> float:
    """Residual variance of the best (AICc) of constant, line, parabola and step in u."""
    m = y.size
    w = np.ones(m)
    fitted = {"constant": np.full(m, y.mean()),
              "linear": np.polyval(np.polyfit(u, y, 1), u)}
    if m >= 5:
        fitted["quadratic"] = np.polyval(np.polyfit(u, y, 2), u)
        fitted["step"] = _step_fit(u, y, w)[0]
    best = _select(fitted, y, None)
    rss = float(np.sum((y - fitted[best]) ** 2))
    floor = (1e-6 * max(float(np.ptp(y)), float(np.abs(y).max()), 1e-12)) ** 2
    return max(rss / (m - N_PARAMS[best]), floor)


# --------------------------------------------------------------------------------------------
# curve fits and model choice
# --------------------------------------------------------------------------------------------

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


def _penalty(k: int, m: int, small_sample: bool) -> float:
    return 2 * k + (2 * k * (k + 1) / (m - k - 1) if small_sample else 0.0)


def _select(fitted: dict[str, np.ndarray], y: np.ndarray, var: np.ndarray | None) -> str:
    """Best candidate: AIC = chi2 + 2k with known variances; AICc on the residual sum of
    squares when they are not (var None). Ties go to the simpler curve."""
    m = y.size
    if var is None:
        scores = {name: m * math.log(max(float(np.sum((y - f) ** 2)), m * 1e-18) / m)
                  + _penalty(N_PARAMS[name], m, True) for name, f in fitted.items()
                  if m - N_PARAMS[name] - 1 >= 1}
    else:
        scores = {name: float(np.sum((y - f) ** 2 / var)) + _penalty(N_PARAMS[name], m, False)
                  for name, f in fitted.items()}
    return min(scores, key=lambda k: (round(scores[k], 9), N_PARAMS[k]))


def _shape_fits(u, y, var, seed) -> tuple[dict[str, np.ndarray], int, fits.FitResult | None]:
    """Rising-curve candidates: line, step (4+ points), sigmoid (5+ points); also the index
    the step jumps before and the sigmoid fit."""
    m = y.size
    w = 1 / var
    fitted = {"linear": np.polyval(np.polyfit(u, y, 1, w=np.sqrt(w)), u)}
    fitted["step"], step_j = _step_fit(u, y, w)
    sig = None
    if m >= 5:
        sig = fits.fit_sigmoid_logx(u, y, sigma=np.sqrt(var), log_x=False, n_boot=0, seed=seed)
        if sig.ok:
            fitted["sigmoid"] = sig.predict(u)
    return fitted, step_j, sig


def _crossing(p: dict, u: np.ndarray, frac: float) -> float:
    """u where the sigmoid p has done `frac` of its rise between u[0] and u[-1] (NaN if none)."""
    f = fits._sigmoid_model(p, u[[0, -1]], log_x=False)
    span = p["ceil"] - p["floor"]
    if not (f[1] > f[0]) or span == 0 or p["k"] <= 0:
        return np.nan
    s = (f[0] + frac * (f[1] - f[0]) - p["floor"]) / span
    s = min(max(s, 1e-12), 1 - 1e-12)
    return float(p["x0"] + math.log(s / (1 - s)) / p["k"])


# --------------------------------------------------------------------------------------------
# the verdict, step by step
# --------------------------------------------------------------------------------------------

@dataclass
class Series:
    """What steps 4-8 judge: the points sorted by scale, scores below chance raised to it."""

    x: np.ndarray  # axis values
    u: np.ndarray  # scale coordinate
    y: np.ndarray  # mean score per axis value, floored at chance
    noise: Noise

    def without(self, i: int) -> Series:
        """The series with point i set aside (an outlier)."""
        keep = np.arange(self.y.size) != i
        return Series(self.x[keep], self.u[keep], self.y[keep], self.noise.subset(keep))


class Trend(NamedTuple):
    """What the flat step hands on: a monotone trend's direction and the variances at its
    rates (the noise under "the curve is monotone")."""

    increasing: bool
    var: np.ndarray


class Rise(NamedTuple):
    """What the rise step hands on: a step or sigmoid that beat the line, and where it rises
    (in u: 10%, half and 90% of its rise; all three at the jump for a step)."""

    best: str  # "step" or "sigmoid"
    rise: float  # fitted score at the largest point minus at the smallest
    onset: float
    threshold: float
    done: float
    step_j: int  # the step jumps before point step_j
    sig: fits.FitResult | None  # the sigmoid fit (None under 5 points)


def classify(x, y, n=None, *, chance: float = np.nan, axis: str = "params",
             n_boot: int = 100, seed: int = fits.SEED) -> Verdict:
    """Verdict on one series y(x); `n` = examples behind each score (for the noise),
    `chance` = the score of random guessing (NaN when unknown).

    Points with the same x are replicates (averaged). The steps and their rules are those of
    the module docstring; each step returns the finished verdict or what the next one needs,
    and records what it measured in `out`.
    """
    pts = _points(x, y, n, axis)  # 1. points
    bt, lin = bigbench_scores(pts.y)
    out = Verdict("insufficient_data", breakthroughness=bt, linearity=lin, n_points=pts.u.size)
    if out.n_points < MIN_POINTS:
        return out
    noise = _noise(pts, n is not None)  # 2. noise
    out.holds_across_seeds, out.seed_spread = noise.holds_across_seeds, noise.seed_spread
    yv, chance = _chance_floor(pts.y, chance, noise.binomial)  # 3. chance
    if np.ptp(yv) == 0:  # e.g. exact match 0 (or at chance) at every size
        out.trend_p = 1.0
        return _flat(out)
    series = _shape_step(Series(pts.x, pts.u, yv, noise), out)  # 4, 6. outlier, non_monotone
    if isinstance(series, Verdict):
        return series
    trend = _flat_step(series, chance, out)  # 5. flat
    if isinstance(trend, Verdict):
        return trend
    rise = _rise_step(series, trend, seed, out)  # 7. smooth
    if isinstance(rise, Verdict):
        return rise
    if not _is_emergent(series.u, series.y, trend.var, rise.onset, rise.done, rise.rise,
                        chance):  # 8. emergent
        return out  # smooth: a rise, but not from chance, or one the smaller models predict
    return _emergent(series, trend.var, rise, axis, n_boot, seed, out)


def _chance_floor(y: np.ndarray, chance, binomial: bool) -> tuple[np.ndarray, float]:
    """Step 3: (scores with those below chance raised to chance, chance); chance is NaN when
    unknown, and for scores without binomial noise (a log-probability has no chance rate)."""
    chance = float(chance) if chance is not None and np.isfinite(chance) else np.nan
    if not binomial:
        chance = np.nan
    return (np.maximum(y, chance) if np.isfinite(chance) else y), chance


def _flat(out: Verdict) -> Verdict:
    """`out` as a `flat` verdict: a constant, no rise."""
    out.verdict, out.best_fit, out.rise = "flat", "constant", 0.0
    return out


def _shape_step(s: Series, out: Verdict) -> Series | Verdict:
    """Steps 4 and 6, shape first: `non_monotone` for a curve that turns back, carried by two
    or more points on each arm; else `s` with the one point that alone breaks an otherwise
    monotone series set aside (its axis value in `out.outlier`), or `s` as it is."""
    var_mono = _monotone_variance(s.y, s.noise)
    gain, uni = trend_tests.unimodal_gain(s.y, 1 / var_mono, at_least=NONMONO_GAIN)
    if gain > NONMONO_GAIN and (trend_tests.one_removed_chi2(s.y, 1 / var_mono) - uni.chi2
                                > OUTLIER_MARGIN):
        out.verdict, out.best_fit = "non_monotone", uni.shape
        return out
    outlier = trend_tests.single_outlier(s.y, var_mono, Z_OUTLIER)
    if outlier is None:
        return s
    out.outlier = float(s.x[outlier.index])
    return s.without(outlier.index)


def _flat_step(s: Series, chance: float, out: Verdict) -> Trend | Verdict:
    """Step 5: `flat` when neither a straight nor any monotone trend runs over the whole curve
    (tested with the variances of the constant; the smaller p-value in `out.trend_p`), or the
    best monotone fit never clears chance; else the trend."""
    pooled = float(np.average(s.y, weights=s.noise.n_eff))
    w0 = 1 / s.noise.at(pooled)
    trend = trend_tests.monotone_trend(s.y, w0)
    out.trend_p = min(trend.p_value, trend_tests.linear_trend_p(s.u, s.y, w0))
    var = _monotone_variance(s.y, s.noise)
    top = _top_level(trend.fit.fitted, 1 / var)
    if out.trend_p >= ALPHA_TREND or (np.isfinite(chance)
                                      and top[0] - chance <= Z_CHANCE * top[1]):
        return _flat(out)
    return Trend(trend.fit.increasing, var)


def _rise_step(s: Series, trend: Trend, seed: int, out: Verdict) -> Rise | Verdict:
    """Step 7: the best (AIC) of a line, a step and a sigmoid in u, with its rise and the
    verdict `smooth`, in `out`; finished there unless the trend rises and a step or a sigmoid
    with a finite midpoint beats the line -- then that curve's rise, for step 8."""
    fitted, step_j, sig = _shape_fits(s.u, s.y, trend.var, seed)
    best = _select(fitted, s.y, None if s.noise.estimated_from_fit else trend.var)
    f = fitted[best]
    out.verdict, out.best_fit, out.sigmoid = "smooth", best, sig
    out.rise = rise = float(f[-1] - f[0])
    if not trend.increasing or rise <= 0 or best == "linear":
        return out
    if best == "sigmoid":
        t_u = _crossing(sig.params, s.u, 0.5)
        onset, done = _crossing(sig.params, s.u, 0.1), _crossing(sig.params, s.u, 0.9)
    else:
        t_u = onset = done = 0.5 * (s.u[step_j - 1] + s.u[step_j])
    if not np.isfinite(t_u):
        return out
    return Rise(best, rise, onset, t_u, done, step_j, sig)


def _weighted_mean(y, var) -> tuple[float, float]:
    """(inverse-variance weighted mean, its standard error)."""
    w = 1 / var
    return float(np.sum(w * y) / w.sum()), float(1 / math.sqrt(w.sum()))


def _is_emergent(u, y, var, onset: float, done: float, rise: float, chance: float) -> bool:
    """The last checks of step 8: points on both sides, near chance before, above chance
    after, and a miss of the extrapolated smaller-model trend beyond the noise."""
    before = u < onset
    if before.sum() < 2:
        return False
    pre, se_pre = _weighted_mean(y[before], var[before])
    # present in larger models: past the onset and clearly above the smaller ones' level
    after = (u > onset) & (y - pre > Z_NOISE * np.sqrt(var + se_pre ** 2))
    if after.sum() < 2:
        return False
    if np.isfinite(chance):
        post, se_post = _weighted_mean(y[after], var[after])
        near = pre - chance <= max(Z_NOISE * se_pre, NEAR_CHANCE_FRACTION * rise)
        if not near or post - chance <= Z_NOISE * se_post:
            return False
    # Wei et al.: is the first model past the rise predictable from the models before the
    # onset? (Past the rise, not the largest: a line from two small models extrapolated over
    # decades is too uncertain to be missed by anything.)
    i = int(np.argmax(u >= done)) if np.any(u >= done) else u.size - 1
    ub, yb = u[before], y[before]
    miss = float(y[i] - np.polyval(np.polyfit(ub, yb, 1), u[i]))
    lever = 1 / ub.size + (u[i] - ub.mean()) ** 2 / np.sum((ub - ub.mean()) ** 2)
    se_miss = math.sqrt(float(np.mean(var[before])) * lever + float(var[i]))
    return miss > UNPREDICTED_FRACTION * rise and miss > Z_NOISE * se_miss


def _emergent(s: Series, var: np.ndarray, r: Rise, axis: str, n_boot: int, seed: int,
              out: Verdict) -> Verdict:
    """Step 8's verdict: `emergent`, with where the rise starts and ends and the threshold and
    its interval (clipped to the data), in axis units."""
    out.verdict = "emergent"
    out.onset, out.done = _to_axis(r.onset, axis), _to_axis(r.done, axis)
    lo, hi = _threshold_interval(s.u, s.y, var, r, n_boot, seed)
    lo, hi = float(np.clip(lo, s.u[0], s.u[-1])), float(np.clip(hi, s.u[0], s.u[-1]))
    ends = sorted([_to_axis(lo, axis), _to_axis(hi, axis)])
    out.threshold, out.threshold_low, out.threshold_high = float(_to_axis(r.threshold, axis)), *ends
    return out


def _threshold_interval(u, y, var, r: Rise, n_boot: int, seed: int) -> tuple[float, float]:
    """(low, high) of the threshold in u (see the module docstring)."""
    i_hi = int(np.argmax(u >= r.threshold))
    bracket = (u[max(i_hi - 1, 0)], u[i_hi])
    if r.best == "step":
        return u[r.step_j - 1], u[r.step_j]
    lo = hi = r.threshold
    unresolved = r.sig.status == "hit_bound" or not np.any((u > r.onset) & (u < r.done))
    if n_boot > 0:
        boot = fits.fit_sigmoid_logx(u, y, sigma=np.sqrt(var), log_x=False, n_boot=n_boot,
                                     seed=seed, parametric=True)
        if boot.ok and boot.draws is not None:
            names = list(boot.params)
            ts = np.array([_crossing(dict(zip(names, d)), u, 0.5) for d in boot.draws])
            ts = ts[np.isfinite(ts)]
            if ts.size:
                lo, hi = np.quantile(ts, [(1 - fits.CI_LEVEL) / 2, (1 + fits.CI_LEVEL) / 2])
            # refits that run into the steepness bound cannot place the rise either
            unresolved = unresolved or np.mean(boot.draws[:, 2] >= fits.K_MAX * 0.999) > 0.05
    if unresolved:
        lo, hi = min(lo, bracket[0]), max(hi, bracket[1])
    return min(lo, r.threshold), max(hi, r.threshold)


def _monotone_variance(y: np.ndarray, noise: Noise) -> np.ndarray:
    """Variances at the rates of the best monotone fit (fitted with the variances of the
    constant first): the noise under "the curve is monotone"."""
    if not noise.binomial:
        return noise.at(None)
    pooled = float(np.average(y, weights=noise.n_eff))
    mono = trend_tests.best_monotone(y, 1 / noise.at(pooled))
    return noise.at(mono.fitted)


def _to_axis(uu: float, axis: str) -> float:
    return -uu if axis == "loss" else 10.0 ** uu


def _top_level(fitted: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(highest level of a monotone fit, its standard error from the weights pooled in it)."""
    top = float(fitted.max())
    pooled = np.isclose(fitted, top)
    return top, float(1 / math.sqrt(w[pooled].sum()))


def last_checkpoints(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of each run's last step, with the validation loss at that step as `loss`.

    A run whose steps are all empty (scores of another model family, one per model) has
    one checkpoint: all its rows are its last.
    """
    step = df.step.astype(float)  # empty steps (nullable Int64) as NaN
    last_step = step.groupby(df.run).transform("max")
    last = df[(step == last_step) | last_step.isna()].drop(columns=["loss"], errors="ignore")
    val = val_loss_rows(last)[["run", "value"]]
    val = val.rename(columns={"value": "loss"}).drop_duplicates("run")
    return last.merge(val, on="run", how="left")


def probe_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Scores that get verdicts: everything but loss rows."""
    return df[(df.metric != "loss") & np.isfinite(df.value)]


def floats(column: pd.Series) -> np.ndarray:
    """A numeric column as float64, empty cells (NaN or a nullable integer's NA) as NaN."""
    return column.to_numpy(dtype=float, na_value=np.nan)


def series_chance(g: pd.DataFrame) -> float:
    """The chance level of one series' rows (the optional `chance` column), NaN if unknown."""
    if "chance" not in g:
        return np.nan
    values = pd.to_numeric(g["chance"], errors="coerce").to_numpy(float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else np.nan


def detect(df: pd.DataFrame, axes=AXES, n_boot: int = 100) -> tuple[pd.DataFrame, dict]:
    """emergence.csv as a DataFrame, plus {(task, shots, metric, axis): Verdict}."""
    last = probe_rows(last_checkpoints(df))
    rows, verdicts = [], {}
    for (task, shots, metric), g in last.groupby(["task", "shots", "metric"], sort=True):
        chance = series_chance(g)
        for axis in axes:
            x = g[axis] if axis in g else pd.Series(np.nan, index=g.index)
            v = classify(floats(x), floats(g.value), floats(g.n), chance=chance, axis=axis,
                         n_boot=n_boot)
            verdicts[(task, shots, metric, axis)] = v
            rows.append({"task": task, "shots": shots, "metric": metric, "axis": axis,
                         **v.row()})
    return pd.DataFrame(rows, columns=COLUMNS), verdicts
