"""Each step of `emergence.classify`, called on its own with planted data.

The series are written out (or drawn from a fixed seed) so that the right answer is known
without running the step: a U shape, a monotone rise with one failed rung, a clean jump, a
line. tests/test_emergence.py checks the verdicts these steps add up to.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

from analysis import emergence
from analysis.emergence import Rise, Series, Trend, Verdict

U8 = np.arange(5.0, 9.0, 0.5)  # 8 rungs, half a decade apart: 1e5 .. 10^8.5 parameters
X8 = 10.0 ** U8


def series(y, n=500, x=X8) -> Series:
    """Binomial scores y of n examples each at sizes x, as the shape step receives them."""
    y = np.asarray(y, float)
    ns = np.full(y.size, n)
    pts = emergence._points(x, y, ns, "params")
    return Series(pts.x, pts.u, pts.y, emergence._noise(pts, True))


def blank() -> Verdict:
    return Verdict("pending")


# --------------------------------------------------------------------------------------------
# 1. points
# --------------------------------------------------------------------------------------------

def test_points_average_replicates_and_sort_by_scale():
    x = [1e6, 1e5, 1e6, 1e7, 1e5, 0.0, np.nan, 1e8]
    y = [0.4, 0.1, 0.6, 0.9, 0.3, 0.5, 0.5, np.nan]
    n = [100, 100, 200, 100, 100, 100, 100, 100]
    pts = emergence._points(x, y, n, "params")
    np.testing.assert_array_equal(pts.x, [1e5, 1e6, 1e7])  # x <= 0, NaN x and NaN y dropped
    np.testing.assert_allclose(pts.u, [5.0, 6.0, 7.0])  # log10 of the axis
    np.testing.assert_allclose(pts.y, [0.2, 0.5, 0.9])  # replicates averaged
    assert [r.tolist() for r in pts.replicates] == [[0.1, 0.3], [0.4, 0.6], [0.9]]
    assert [ns.tolist() for ns in pts.ns] == [[100, 100], [100, 200], [100]]


def test_points_on_the_loss_axis_run_from_high_loss_to_low():
    pts = emergence._points([3.0, 2.0, 4.0, 2.5], [0.3, 0.9, 0.1, 0.5], None, "loss")
    np.testing.assert_array_equal(pts.x, [4.0, 3.0, 2.5, 2.0])  # scale grows as loss falls
    np.testing.assert_array_equal(pts.u, [-4.0, -3.0, -2.5, -2.0])  # u = -loss, linear
    np.testing.assert_array_equal(pts.y, [0.1, 0.3, 0.5, 0.9])
    assert all(ns.tolist() == [1.0] for ns in pts.ns)  # no n: ones


# --------------------------------------------------------------------------------------------
# 2. noise
# --------------------------------------------------------------------------------------------

def test_noise_without_replicates_is_binomial_with_no_over_dispersion():
    y = np.array([0.1, 0.2, 0.5, 0.7])
    noise = emergence._noise(emergence._points(X8[:4], y, np.full(4, 400), "params"), True)
    assert noise.binomial and noise.dispersion == 1.0
    assert noise.holds_across_seeds is pd.NA and np.isnan(noise.seed_spread)
    np.testing.assert_allclose(noise.at(y), y * (1 - y) / 400)


def test_over_dispersion_is_the_replicate_scatter_over_the_binomial_one():
    # two seeds of 100 examples at each of 4 sizes, at 0.2 and 0.6 (pooled 0.4): each size
    # adds ((0.2 - 0.4)^2 + (0.6 - 0.4)^2) / (0.4 * 0.6 / 100) = 100/3 to chi2, on 1 dof
    x = np.repeat(X8[:4], 2)
    y = np.tile([0.2, 0.6], 4)
    noise = emergence._noise(emergence._points(x, y, np.full(8, 100), "params"), True)
    assert noise.dispersion == pytest.approx(100 / 3)
    np.testing.assert_allclose(noise.n_eff, 200)  # two runs of 100 examples
    # every variance carries the over-dispersion
    np.testing.assert_allclose(noise.at(0.4), 100 / 3 * 0.4 * 0.6 / 200)
    assert noise.holds_across_seeds is False
    assert noise.seed_spread == pytest.approx(0.4)


def test_replicates_tighter_than_sampling_do_not_shrink_the_noise():
    x = np.repeat(X8[:4], 3)
    y = np.repeat([0.1, 0.3, 0.5, 0.7], 3)  # identical seeds: chi2 = 0
    noise = emergence._noise(emergence._points(x, y, np.full(12, 100), "params"), True)
    assert noise.dispersion == 1.0  # c = max(1, chi2 / dof)
    assert noise.holds_across_seeds is True and noise.seed_spread == 0.0


def test_one_seed_that_disagrees_beyond_sampling_breaks_holds_across_seeds():
    rng = np.random.default_rng(3)
    p = np.repeat([0.1, 0.3, 0.6, 0.8], 3)  # 4 sizes x 3 seeds, one true rate per size
    y = rng.binomial(200, p) / 200
    x = np.repeat(X8[:4], 3)
    agree = emergence._noise(emergence._points(x, y, np.full(12, 200), "params"), True)
    assert agree.holds_across_seeds is True
    y_bad = y.copy()
    y_bad[-1] = 0.1  # the last seed at the largest size never learns (0.8 for the others)
    bad = emergence._noise(emergence._points(x, y_bad, np.full(12, 200), "params"), True)
    assert bad.holds_across_seeds is False
    assert bad.seed_spread == pytest.approx(max(y[-3:-1]) - 0.1)
    assert bad.dispersion > agree.dispersion


def test_noise_without_n_is_estimated():
    x = np.repeat(X8[:4], 2)  # log-probabilities with replicates: their pooled variance
    y = np.array([-3.0, -3.2, -2.5, -2.5, -2.0, -2.2, -1.0, -1.0])
    noise = emergence._noise(emergence._points(x, y, None, "params"), False)
    assert not noise.binomial and not noise.estimated_from_fit
    ss = 2 * 0.1 ** 2 + 2 * 0.1 ** 2  # squared deviations from each size's mean
    np.testing.assert_allclose(noise.at(None), ss / 4 / 2)  # / dof, / replicates per mean
    # one run per size: the residual variance of the best simple curve
    line = -3 + 0.5 * (U8 - 5) + 0.01 * (-1.0) ** np.arange(8)
    single = emergence._noise(emergence._points(X8, line, None, "params"), False)
    assert single.estimated_from_fit
    assert single.at(None)[0] == pytest.approx(8 * 0.01 ** 2 / 6, rel=0.05)


# --------------------------------------------------------------------------------------------
# 3. chance
# --------------------------------------------------------------------------------------------

def test_scores_below_chance_count_as_chance():
    y = np.array([0.05, 0.30, 0.10, 0.25, 0.60])
    floored, chance = emergence._chance_floor(y, 0.25, True)
    np.testing.assert_array_equal(floored, [0.25, 0.30, 0.25, 0.25, 0.60])
    assert chance == 0.25


def test_chance_is_ignored_when_unknown_or_without_binomial_noise():
    y = np.array([-3.0, -2.0, -1.0])
    for chance, binomial in ((np.nan, True), (None, True), (0.25, False)):
        floored, c = emergence._chance_floor(y, chance, binomial)
        np.testing.assert_array_equal(floored, y)
        assert np.isnan(c)


# --------------------------------------------------------------------------------------------
# 4, 6. shape: non_monotone, or one outlier set aside
# --------------------------------------------------------------------------------------------

def test_a_u_shape_is_non_monotone():
    out = emergence._shape_step(series([0.8, 0.6, 0.4, 0.2, 0.2, 0.4, 0.6, 0.8]), blank())
    assert isinstance(out, Verdict)
    assert out.verdict == "non_monotone" and out.best_fit == "trough"


def test_one_failed_rung_in_a_monotone_rise_is_named_and_removed():
    y = [0.1, 0.1, 0.1, 0.1, 0.8, 0.05, 0.85, 0.9]  # rung 5 failed to train
    s = series(y)
    out = blank()
    kept = emergence._shape_step(s, out)
    assert isinstance(kept, Series) and out.verdict == "pending"
    assert out.outlier == X8[5]
    np.testing.assert_array_equal(kept.x, np.delete(X8, 5))
    np.testing.assert_array_equal(kept.y, np.delete(y, 5))
    assert kept.noise.n_eff.size == 7  # the noise follows the points


def test_a_clean_monotone_rise_passes_the_shape_step_untouched():
    s = series([0.1, 0.1, 0.1, 0.1, 0.8, 0.82, 0.85, 0.9])
    out = blank()
    assert emergence._shape_step(s, out) is s
    assert np.isnan(out.outlier) and out.verdict == "pending"


# --------------------------------------------------------------------------------------------
# 5. flat
# --------------------------------------------------------------------------------------------

def test_noise_around_chance_is_flat():
    y = np.random.default_rng(0).binomial(100, np.full(8, 0.25)) / 100
    out = emergence._flat_step(series(np.maximum(y, 0.25), n=100), 0.25, blank())
    assert isinstance(out, Verdict)
    assert out.verdict == "flat" and out.best_fit == "constant" and out.rise == 0.0


def test_a_clear_line_is_not_flat():
    out = blank()
    trend = emergence._flat_step(series(0.1 + 0.1 * (U8 - 5)), np.nan, out)
    assert isinstance(trend, Trend) and trend.increasing
    assert out.trend_p < 1e-6 and out.verdict == "pending"
    assert trend.var.shape == (8,)


def test_a_falling_line_is_a_falling_trend():
    trend = emergence._flat_step(series(0.8 - 0.1 * (U8 - 5)), np.nan, blank())
    assert isinstance(trend, Trend) and not trend.increasing


# --------------------------------------------------------------------------------------------
# 7. the rise: smooth, or a step / sigmoid for step 8
# --------------------------------------------------------------------------------------------

def _rise(y, n=500):
    s = series(y, n)
    out = blank()
    trend = emergence._flat_step(s, np.nan, out)
    return s, trend, emergence._rise_step(s, trend, 0, out), out


def test_a_line_is_smooth():
    _, _, r, out = _rise(0.1 + 0.1 * (U8 - 5))
    assert r is out and out.verdict == "smooth" and out.best_fit == "linear"
    assert out.rise == pytest.approx(0.35, abs=0.01)


def test_a_jump_hands_on_its_place():
    _, _, r, out = _rise([0.1, 0.1, 0.1, 0.1, 0.8, 0.8, 0.8, 0.8])
    assert isinstance(r, Rise) and r.best == "step" and r.step_j == 4
    assert r.onset == r.threshold == r.done == pytest.approx(6.75)  # between the rungs
    assert out.best_fit == "step" and out.rise == pytest.approx(0.7)


def test_a_falling_jump_is_smooth():
    _, _, r, out = _rise([0.8, 0.8, 0.8, 0.8, 0.1, 0.1, 0.1, 0.1])
    assert r is out and out.verdict == "smooth" and out.rise < 0


# --------------------------------------------------------------------------------------------
# 8. is it emergent?
# --------------------------------------------------------------------------------------------

U6 = np.arange(5.0, 11.0)  # 6 rungs a decade apart
JUMP = np.array([0.3, 0.3, 0.3, 0.9, 0.9, 0.9])  # 3 below, 3 above: onset = done = 7.5


def is_emergent(y=JUMP, var=1e-3, onset=7.5, rise=0.6, chance=np.nan):
    var = np.full(6, var)
    return emergence._is_emergent(U6, np.asarray(y, float), var, onset, onset, rise, chance)


def test_a_sharp_jump_three_below_three_above_is_emergent():
    assert is_emergent()
    assert is_emergent(chance=0.3)  # and it starts at chance


def test_emergent_needs_two_points_before_the_onset():
    with warnings.catch_warnings():  # no line is drawn through a single point
        warnings.simplefilter("error")
        assert not is_emergent([0.3, 0.9, 0.9, 0.9, 0.9, 0.9], onset=5.5)
    assert is_emergent([0.3, 0.3, 0.9, 0.9, 0.9, 0.9], onset=6.5)


def test_emergent_needs_the_points_before_near_chance():
    assert not is_emergent(chance=0.0)  # 0.3 before: 5 standard errors, half the rise off


def test_emergent_needs_two_points_past_the_onset_clearly_above():
    assert not is_emergent([0.3, 0.3, 0.3, 0.3, 0.3, 0.9], onset=9.5)
    assert is_emergent([0.3, 0.3, 0.3, 0.3, 0.9, 0.9], onset=8.5)
    # two past the onset, but one of them is still at the level before it
    assert not is_emergent([0.3, 0.3, 0.3, 0.3, 0.9, 0.31], onset=8.5)


def test_a_rise_the_smaller_models_predict_is_not_emergent():
    line = 0.1 + 0.1 * (U6 - 5)  # the line through 5, 6, 7 predicts the point at 8
    assert not is_emergent(line, var=1e-4, rise=0.5)


def test_the_miss_must_exceed_its_share_of_the_rise_and_the_noise():
    assert not is_emergent(rise=1.0)  # a miss of 0.6 is under 2/3 of a rise of 1
    # var 0.02: both rungs past the onset clear the level before by 3 standard errors
    # (0.6 > 3 sqrt(0.02 (1 + 1/3)) = 0.49), but the line through three points extrapolated
    # one decade is uncertain by sqrt(0.02 (1/3 + 2^2/2 + 1)) = 0.26, and 0.6 < 3 x 0.26
    assert not is_emergent(var=0.02)
    assert is_emergent(var=0.01)


# --------------------------------------------------------------------------------------------
# 8. the threshold interval
# --------------------------------------------------------------------------------------------

def test_a_step_places_the_threshold_between_the_two_rungs_around_the_jump():
    s, trend, r, _ = _rise([0.1, 0.1, 0.1, 0.1, 0.8, 0.8, 0.8, 0.8])
    lo, hi = emergence._threshold_interval(s.u, s.y, trend.var, r, 100, 0)
    assert (lo, hi) == (U8[3], U8[4])


def _sigmoid_rise():
    """A gradual sigmoid (midpoint 10^6.7, 10%-90% over about a decade) on 12 rungs."""
    u = np.linspace(5.0, 8.5, 12)
    y = 0.1 + 0.8 / (1 + np.exp(-4.4 * (u - 6.7)))
    pts = emergence._points(10.0 ** u, y, np.full(12, 2000), "params")
    s = Series(pts.x, pts.u, pts.y, emergence._noise(pts, True))
    trend = emergence._flat_step(s, np.nan, blank())
    return s, trend, emergence._rise_step(s, trend, 0, blank())


def test_a_resolved_sigmoid_has_a_bootstrap_interval_around_its_midpoint():
    s, trend, r = _sigmoid_rise()
    assert isinstance(r, Rise) and r.best == "sigmoid"
    assert r.threshold == pytest.approx(6.7, abs=0.05)
    lo, hi = emergence._threshold_interval(s.u, s.y, trend.var, r, 0, 0)
    assert lo == hi == r.threshold  # no bootstrap: the point itself
    lo, hi = emergence._threshold_interval(s.u, s.y, trend.var, r, 100, 0)
    assert lo < 6.7 < hi and hi - lo < 0.3  # narrower than a rung gap (0.32)


def test_an_unresolved_sigmoid_widens_to_the_bracket():
    s, trend, r = _sigmoid_rise()
    stuck = r._replace(sig=dataclasses.replace(r.sig, status="hit_bound"))
    lo, hi = emergence._threshold_interval(s.u, s.y, trend.var, stuck, 0, 0)
    i = int(np.argmax(s.u >= r.threshold))
    assert (lo, hi) == (s.u[i - 1], s.u[i])


# --------------------------------------------------------------------------------------------
# model choice
# --------------------------------------------------------------------------------------------

def _candidates(y, var):
    line = np.polyval(np.polyfit(U8, y, 1, w=1 / np.sqrt(var)), U8)
    return {"linear": line, "step": emergence._step_fit(U8, y, 1 / var)[0]}


def test_aic_picks_the_step_for_a_jump():
    y = np.array([0.1, 0.11, 0.09, 0.1, 0.8, 0.81, 0.79, 0.8])
    var = np.full(8, 1e-3)
    assert emergence._select(_candidates(y, var), y, var) == "step"
    assert emergence._select(_candidates(y, var), y, None) == "step"  # AICc, noise unknown


def test_aic_picks_the_line_for_a_line():
    y = 0.1 + 0.1 * (U8 - 5) + 0.01 * (-1.0) ** np.arange(8)
    var = np.full(8, 1e-3)
    assert emergence._select(_candidates(y, var), y, var) == "linear"
    assert emergence._select(_candidates(y, var), y, None) == "linear"


def test_an_extra_parameter_must_buy_more_than_2_in_chi2():
    y, var = np.zeros(8), np.ones(8)
    line = np.full(8, np.sqrt(3 / 8))  # chi2 3.0, 2 parameters: AIC 7.0
    for step_chi2, best in ((1.5, "linear"), (0.5, "step")):  # 3 parameters: AIC 7.5, 6.5
        fitted = {"linear": line, "step": np.full(8, np.sqrt(step_chi2 / 8))}
        assert emergence._select(fitted, y, var) == best


def test_aicc_leaves_out_a_curve_with_no_residual_degrees_of_freedom():
    u = U8[:5]
    y = np.array([0.1, 0.12, 0.5, 0.85, 0.9])
    perfect = {"linear": np.polyval(np.polyfit(u, y, 1), u), "sigmoid": y.copy()}
    assert emergence._select(perfect, y, np.full(5, 1e-3)) == "sigmoid"  # known noise
    assert emergence._select(perfect, y, None) == "linear"  # 5 points, 4 parameters
