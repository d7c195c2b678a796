"""Every law recovers planted parameters within its bootstrap interval, and fails softly."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import fits


def _inside(fit: fits.FitResult, planted: dict):
    assert fit.status in ("converged", "hit_bound"), fit.message
    for name, value in planted.items():
        lo, hi = fit.ci[name]
        assert lo <= value <= hi, f"{name}: planted {value} outside [{lo}, {hi}]"


def test_power_law_recovers_planted():
    rng = np.random.default_rng(0)
    n = np.geomspace(1e5, 1e9, 10)
    planted = {"E": 1.7, "A": 400.0, "alpha": 0.34}
    y = (planted["E"] + planted["A"] * n ** -planted["alpha"]) \
        * (1 + 0.005 * rng.standard_normal(n.size))
    fit = fits.fit_power_law(n, y)
    _inside(fit, planted)
    assert fit.status == "converged" and fit.r2 > 0.999 and fit.n_points == 10
    assert np.allclose(fit.predict([1e10]), 1.7 + 400 * 1e10 ** -0.34, rtol=0.01)


def test_chinchilla_recovers_besiroglu_parameters():
    rng = np.random.default_rng(1)
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e9, 5),
                                            np.geomspace(1e8, 1e11, 5)))
    planted = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
    loss = planted["E"] + planted["A"] / n ** planted["alpha"] + planted["B"] / d ** planted[
        "beta"]
    fit = fits.fit_chinchilla(n, d, loss * np.exp(0.005 * rng.standard_normal(loss.size)))
    _inside(fit, planted)
    assert abs(fit.params["alpha"] - 0.3478) < 0.02 and abs(fit.params["beta"] - 0.3658) < 0.02
    assert np.allclose(fit.predict(1e9, 1e11), planted["E"] + planted["A"] / 1e9 ** 0.3478
                       + planted["B"] / 1e11 ** 0.3658, rtol=0.01)


def test_chinchilla_refuses_one_budget_per_size():
    n = np.geomspace(1e6, 1e9, 8)
    fit = fits.fit_chinchilla(n, 20 * n, 2 + 400 * n ** -0.3)
    assert fit.status == "failed" and "token budget" in fit.message


def test_sigmoid_logx_recovers_planted():
    rng = np.random.default_rng(2)
    x = np.geomspace(1e5, 1e9, 14)
    planted = {"floor": 0.25, "ceil": 0.9, "k": 4.0, "x0": 7.2}
    y = planted["floor"] + (planted["ceil"] - planted["floor"]) / (
        1 + np.exp(-planted["k"] * (np.log10(x) - planted["x0"])))
    fit = fits.fit_sigmoid_logx(x, y + 0.015 * rng.standard_normal(x.size))
    _inside(fit, planted)
    assert abs(fit.params["x0"] - 7.2) < 0.1


def test_sigmoid_on_a_step_hits_the_steepness_bound():
    x = np.geomspace(1e5, 1e9, 8)
    y = np.where(x > 1e7, 0.9, 0.1)
    fit = fits.fit_sigmoid_logx(x, y, n_boot=0)
    assert fit.status == "hit_bound" and fit.params["k"] == pytest.approx(fits.K_MAX)
    assert 6.8 < fit.params["x0"] < 7.2  # between the points at 10^6.86 and 10^7.43


def test_loss_to_metric_recovers_planted():
    rng = np.random.default_rng(3)
    loss = np.linspace(2.0, 5.0, 30)
    planted = {"a": 0.7, "k": -3.0, "L0": 3.2, "b": 0.25}
    y = planted["a"] / (1 + np.exp(-planted["k"] * (loss - planted["L0"]))) + planted["b"]
    fit = fits.fit_loss_to_metric(loss, y + 0.01 * rng.standard_normal(loss.size))
    _inside(fit, planted)
    assert fit.predict(2.0) > fit.predict(5.0)  # lower loss, better score


def test_broken_power_law_recovers_planted_and_extrapolates():
    rng = np.random.default_rng(4)
    planted = {"a": 1.0, "b": 50.0, "c0": 0.1, "c1": 0.4, "d1": 1e7, "f1": 0.5}
    x = np.geomspace(1e4, 1e10, 30)
    y = fits._bpl_model(planted, x) * (1 + 0.005 * rng.standard_normal(x.size))
    held = x > 2e9  # fit without the largest points, predict them
    fit = fits.fit_broken_power_law(x[~held], y[~held])
    _inside(fit, {k: planted[k] for k in ("c0", "c1", "d1")})
    err = np.abs(fit.predict(x[held]) / fits._bpl_model(planted, x[held]) - 1)
    assert err.max() < 0.03


@pytest.mark.parametrize("law", [fits.fit_power_law, fits.fit_sigmoid_logx,
                                 fits.fit_loss_to_metric, fits.fit_broken_power_law])
@pytest.mark.parametrize("x, y", [([], []), ([1, 2], [3, 4]), ([1, 2, 3], [1, 2]),
                                  ([1, 2, 3, 4, 5], [np.nan] * 5),
                                  ([5.0] * 8, np.arange(8.0))])
def test_bad_input_fails_softly(law, x, y):
    fit = law(x, y)
    assert fit.status == "failed" and fit.message
    assert np.isnan(fit.predict([1.0, 2.0])).all()


def test_fit_rows_for_fits_csv():
    x = np.geomspace(1e5, 1e9, 6)
    fit = fits.fit_power_law(x, 2 + 100 * x ** -0.3, n_boot=20)
    rows = fit.to_rows(scope="ladder", target="val/loss", axis="params")
    assert [r["param"] for r in rows] == ["E", "A", "alpha"]
    assert {"ci_low", "ci_high", "rmse", "r2", "status", "n_points"} <= set(rows[0])
