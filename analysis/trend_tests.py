"""Order-restricted tests on one series of scores sorted by scale (the pieces of a verdict).

Every function takes scores y (sorted by scale) with their noise variances var (known, or
estimated by the caller) and works with weights 1 / var. Monotone fits are weighted isotonic
regressions (`scipy.optimize.isotonic_regression`, pool-adjacent-violators).

- `linear_trend_p`: the z test of the slope of a weighted line (the most powerful test of
  a trend that is straight in u).
- `monotone_trend`: is there any monotone trend at all? Bartholomew's (1959) likelihood-ratio
  test of "constant" against "monotone" uses the power of the whole curve, not of its two
  ends: T = chi2(constant) - chi2(best isotonic fit), whose null distribution is a mixture
  of chi-square laws, P(T >= t) = sum_l P(l, m) P(chi2_{l-1} >= t), where P(l, m), the
  chance that the isotonic fit of m equally weighted points has l levels, is
  |s(m, l)| / m! (unsigned Stirling numbers of the first kind; Barlow et al. 1972). Both
  directions are tried, so the p-value is doubled (Bonferroni). With unequal weights the
  equal-weight level probabilities are an approximation (tests below measure the rates).
- `unimodal_gain`: how much better a curve that rises then falls (or falls then rises) fits
  than the best monotone one, each arm with at least two points.
- `single_outlier`: the one point whose removal leaves a monotone series, when it lies far
  outside the band its monotone neighbours allow.
- `replicates_agree`: do replicate scores at one size share one rate (binomial noise)?
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special, stats
from scipy.optimize import isotonic_regression


def isotonic(y: np.ndarray, w: np.ndarray, increasing: bool) -> np.ndarray:
    """Weighted least-squares monotone fit of y (weights w)."""
    return isotonic_regression(y, weights=w, increasing=increasing).x


def chi2(y: np.ndarray, f: np.ndarray, w: np.ndarray) -> float:
    """Weighted residual sum of squares sum(w (y - f)^2)."""
    return float(np.sum(w * (y - f) ** 2))


@dataclass
class MonotoneFit:
    """The better of the increasing and decreasing isotonic fits."""

    fitted: np.ndarray
    increasing: bool
    chi2: float


def best_monotone(y: np.ndarray, w: np.ndarray) -> MonotoneFit:
    """The isotonic fit (increasing or decreasing) with the smaller weighted chi2."""
    up, down = isotonic(y, w, True), isotonic(y, w, False)
    c_up, c_down = chi2(y, up, w), chi2(y, down, w)
    if c_up <= c_down:
        return MonotoneFit(up, True, c_up)
    return MonotoneFit(down, False, c_down)


@lru_cache(maxsize=64)
def level_probabilities(m: int) -> tuple[float, ...]:
    """P(l, m) for l = 1..m: |s(m, l)| / m!, by the recurrence of the Stirling numbers
    |s(m+1, l)| = m |s(m, l)| + |s(m, l-1)|, divided through by (m+1) at each step."""
    p = np.array([1.0])  # m = 1: one level
    for k in range(1, m):
        nxt = np.zeros(k + 1)
        nxt[:k] += k * p  # the (k+1)-th point joins an existing level
        nxt[1:] += p  # or starts a new one
        p = nxt / (k + 1)
    return tuple(float(v) for v in p)


def chibar_sf(t: float, m: int) -> float:
    """P(T >= t) under "constant" for Bartholomew's one-sided statistic with m points."""
    if t <= 0:
        return 1.0
    probs = np.array(level_probabilities(m))
    # l levels contribute P(chi2_{l-1} >= t); one level (chi2_0 = 0) never reaches t > 0
    return float(np.dot(probs[1:], special.chdtrc(np.arange(1, m), t)))


@dataclass
class TrendTest:
    """Constant vs monotone: the statistic, its p-value and the monotone fit behind it."""

    statistic: float
    p_value: float
    fit: MonotoneFit


def monotone_trend(y: np.ndarray, w: np.ndarray) -> TrendTest:
    """Bartholomew's test of a monotone trend in either direction (module docstring); the
    weights 1 / variance already carry any over-dispersion."""
    mono = best_monotone(y, w)
    const = np.full(y.size, np.average(y, weights=w))
    t = chi2(y, const, w) - mono.chi2
    return TrendTest(t, min(1.0, 2 * chibar_sf(t, y.size)), mono)


def linear_trend_p(u: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Two-sided p-value of the slope of the weighted least-squares line of y on u, with
    the variances 1 / w known (a z test): the most powerful test of a trend that is linear
    in u, and one that every point of the curve contributes to."""
    uc = u - np.average(u, weights=w)
    sxx = float(np.sum(w * uc * uc))
    slope = float(np.sum(w * uc * y)) / sxx
    return float(2 * stats.norm.sf(abs(slope) * math.sqrt(sxx)))


@dataclass
class UnimodalFit:
    """The best rise-then-fall ("peak") or fall-then-rise ("trough") fit."""

    fitted: np.ndarray
    shape: str  # "peak" | "trough"
    turn: int  # the second arm starts at this index
    chi2: float


ARM_Z = 2.0  # a point belongs to an arm when its fitted level is this far off the extreme


def unimodal_fit(y: np.ndarray, w: np.ndarray, min_arm: int = 2) -> UnimodalFit | None:
    """Best fit that is monotone up to `turn` and monotone the other way from it, with at
    least `min_arm` points clearly off its extreme level on each side (a reversal carried
    by fewer points is an outlier's business); None when no such fit exists."""
    m = y.size
    best = None
    for turn in range(min_arm, m - min_arm + 1):
        for shape, first_up in (("peak", True), ("trough", False)):
            left = isotonic(y[:turn], w[:turn], first_up)
            right = isotonic(y[turn:], w[turn:], not first_up)
            f = np.concatenate([left, right])
            # the arms: points whose fitted level is clearly (ARM_Z standard errors) off the
            # extreme, before and after it
            at = int(np.argmax(f) if first_up else np.argmin(f))
            off = np.abs(f - f[at]) * np.sqrt(w) > ARM_Z
            if off[:at].sum() < min_arm or off[at + 1:].sum() < min_arm:
                continue
            c = chi2(y, f, w)
            if best is None or c < best.chi2:
                best = UnimodalFit(f, shape, turn, c)
    return best


def unimodal_gain(y: np.ndarray, w: np.ndarray, at_least: float = 0.0):
    """(chi2 of the best monotone fit - chi2 of the best unimodal fit), and that
    unimodal fit (None, with gain 0, for series shorter than two arms of two points, or when
    the monotone fit's own chi2 shows the gain cannot exceed `at_least`)."""
    mono = best_monotone(y, w).chi2
    if mono <= at_least:
        return 0.0, None  # the gain is at most the monotone fit's chi2: no need to search
    uni = unimodal_fit(y, w)
    if uni is None:
        return 0.0, None
    return mono - uni.chi2, uni


def one_removed_chi2(y: np.ndarray, w: np.ndarray) -> float:
    """chi2 of the best monotone fit with one point (the best one to drop) left out."""
    keep = np.ones(y.size, bool)
    best = np.inf
    for i in range(y.size):
        keep[i] = False
        best = min(best, best_monotone(y[keep], w[keep]).chi2)
        keep[i] = True
    return best


def _band_deviation(y_i: float, var_i: float, neighbours: list[tuple[float, float]],
                    increasing: bool, position: str) -> float:
    """Standard errors by which y_i lies outside what a monotone curve through its fitted
    neighbours allows ((value, variance) of the neighbour before and/or after it)."""
    if position == "interior":
        (lo_v, lo_var), (hi_v, hi_var) = neighbours
        if not increasing:
            (lo_v, lo_var), (hi_v, hi_var) = (hi_v, hi_var), (lo_v, lo_var)
        if y_i < lo_v:
            return (lo_v - y_i) / math.sqrt(var_i + lo_var)
        if y_i > hi_v:
            return (y_i - hi_v) / math.sqrt(var_i + hi_var)
        return 0.0
    (v, v_var), = neighbours
    # an end point may continue the trend as far as it likes, but not turn back
    ahead = (position == "last") == increasing
    gap = (v - y_i) if ahead else (y_i - v)
    return max(gap, 0.0) / math.sqrt(var_i + v_var)


@dataclass
class Outlier:
    """A point whose removal leaves a monotone series: index and standard errors out."""

    index: int
    z: float


AMBIGUOUS_CHI2 = 4.0  # two removals whose remaining fits differ by less explain equally well


def single_outlier(y: np.ndarray, var: np.ndarray, z_min: float) -> Outlier | None:
    """The one point (if any) that alone breaks a monotone series by more than z_min
    standard errors, while every other point fits the monotone curve of the rest within
    z_min standard errors. Needs at least 5 points (4 remain).

    Right after a jump two removals can explain the data equally well (a rung that jumped
    early, or the next one failing): then the point that goes against the trend (a drop in
    a rising series) is named, as a failed run is the likelier accident.
    """
    m = y.size
    if m < 5:
        return None
    w = 1 / var
    mono = best_monotone(y, w)
    if np.max(np.abs(y - mono.fitted) * np.sqrt(w)) <= z_min:
        return None  # the series is monotone within its noise
    candidates = []  # (chi2 of the rest, goes against the trend, Outlier)
    for i in range(m):
        keep = np.arange(m) != i
        rest = best_monotone(y[keep], w[keep])
        if np.max(np.abs(y[keep] - rest.fitted) * np.sqrt(w[keep])) > z_min:
            continue  # removing i does not leave a monotone series
        # variance of a fitted level ~ 1 / (sum of the weights pooled into it)
        f, wk = rest.fitted, w[keep]
        level_var = np.array([1 / wk[np.isclose(f, fj)].sum() for fj in f])
        if i == 0:
            pos, nb = "first", [(f[0], level_var[0])]
        elif i == m - 1:
            pos, nb = "last", [(f[-1], level_var[-1])]
        else:  # i's neighbours are kept points i - 1 and i
            pos, nb = "interior", [(f[i - 1], level_var[i - 1]), (f[i], level_var[i])]
        z = _band_deviation(float(y[i]), float(var[i]), nb, rest.increasing, pos)
        if z > z_min:
            against = (y[i] < nb[0][0]) == rest.increasing
            candidates.append((rest.chi2, against, Outlier(i, z)))
    if not candidates:
        return None
    least = min(c[0] for c in candidates)
    tied = [c for c in candidates if c[0] <= least + AMBIGUOUS_CHI2]
    return max(tied, key=lambda c: (c[1], -c[0]))[2]


def replicates_agree_p(values: np.ndarray, ns: np.ndarray) -> float:
    """P-value of "all replicates share one rate": chi-square test of homogeneity of
    proportions values (each of ns examples), with the pooled rate kept half an example
    off 0 and 1. 1.0 for fewer than two replicates."""
    if values.size < 2:
        return 1.0
    pooled = float(np.sum(values * ns) / np.sum(ns))
    total = float(np.sum(ns))
    p = min(max(pooled, 0.5 / total), 1 - 0.5 / total)
    stat = float(np.sum((values - pooled) ** 2 * ns) / (p * (1 - p)))
    return float(stats.chi2.sf(stat, values.size - 1))
