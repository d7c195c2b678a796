"""The speed figures behind the choices in analysis/fits.py (logged in docs/LOG.md).

    python bench/fits_speed.py                 # best of 5 rounds
    python bench/fits_speed.py --rounds 1      # a quick look

Prints four tables, each the best of `--rounds` rounds (best, because the machine is shared
and load only ever adds time):

1. BLAS threads: a Chinchilla fit (25 points, 20 bootstrap refits) with numpy's default BLAS
   threads and with `fits.one_blas_thread()` (why the fits run on one BLAS thread).
2. Least-squares polish of a weighted 8-point sigmoid from its grid start: `fits._lm`
   (MINPACK called directly), `least_squares(method="lm")` (the same MINPACK routine behind
   scipy's wrapper; both give the same optimum) and the bounded `least_squares(method="trf")`
   (why `_polish` tries unbounded Levenberg-Marquardt first and calls MINPACK itself).
3. Cost per bootstrap refit of each law: (fit with n refits - fit with none) / n (why
   `fit_chinchilla` defaults to 100 resamples where the others use 200).
4. `fit_loss_to_metric` (30 checkpoints, no bootstrap) with its start grid built each time
   and taken from the cache (why the grid is cached per loss vector).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import optimize

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from analysis import fits  # noqa: E402


def best_time(fn, rounds: int, calls: int = 1) -> float:
    """Seconds per call of fn(), the best of `rounds` rounds of `calls` calls."""
    best = np.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def chinchilla_data(seed: int = 0):
    """5 sizes x 5 token budgets around Besiroglu et al.'s fit, 0.5% noise on log L."""
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e9, 5),
                                            np.geomspace(1e8, 1e11, 5)))
    loss = 1.8172 + 482.01 / n ** 0.3478 + 2085.43 / d ** 0.3658
    return n, d, loss * np.exp(0.005 * np.random.default_rng(seed).standard_normal(n.size))


def sigmoid_data(seed: int = 0):
    """8 rungs of a rising score against x = -loss, binomial-sized noise (n = 200)."""
    u = -np.linspace(4.0, 2.0, 8)
    y = 0.1 + 0.8 / (1 + np.exp(-3.0 * (u + 3.0)))
    sigma = np.sqrt(y * (1 - y) / 200)
    return u, y + sigma * np.random.default_rng(seed).standard_normal(u.size), sigma


def blas_threads(rounds: int) -> list[str]:
    n, d, loss = chinchilla_data()

    def fit():
        return fits._fit(fits.CHINCHILLA, n, d, loss, n_boot=20, seed=0)

    default = best_time(fit, rounds)
    with fits.one_blas_thread():
        one = best_time(fit, rounds)
    return ["| BLAS threads | Chinchilla fit, 20 refits (s) |", "|---|---|",
            f"| numpy default | {default:.3f} |", f"| one (`one_blas_thread`) | {one:.3f} |",
            f"\ndefault / one thread: {default / one:.1f}x"]


def polish_paths(rounds: int) -> list[str]:
    u, y, sigma = sigmoid_data()
    sample = fits.SIGMOID.prepare(*fits._clean(u, y, sigma))
    lower, upper = fits.SIGMOID.bounds(sample)
    candidates, cost = fits.SIGMOID.start_grid(sample, sample.y)
    start = np.clip(candidates[int(np.argmin(cost))], lower, upper)
    resid, jac = fits._least_squares_problem(fits.SIGMOID, sample, sample.y)
    ways = {
        "`_lm` (MINPACK lmder directly)": lambda: fits._lm(resid, jac, start, resid(start)),
        "`least_squares(method=\"lm\")`": lambda: optimize.least_squares(
            resid, start, jac=jac, method="lm", max_nfev=60),
        "`least_squares(method=\"trf\")`, bounded": lambda: optimize.least_squares(
            resid, start, jac=jac, bounds=(lower, upper), method="trf", x_scale="jac",
            max_nfev=400),
    }
    lines = ["| polish of an 8-point sigmoid | us per polish |", "|---|---|"]
    times = {}
    for name, fn in ways.items():
        times[name] = best_time(fn, rounds, calls=200) * 1e6
        lines.append(f"| {name} | {times[name]:.0f} |")
    lm_direct, lm_wrapped, trf = times.values()
    lines.append(f"\nwrapper / direct: {lm_wrapped / lm_direct:.1f}x; "
                 f"trf / direct: {trf / lm_direct:.1f}x")
    return lines


def refit_costs(rounds: int, n_boot: int = 20) -> list[str]:
    x = np.geomspace(1e5, 1e9, 12)
    rng = np.random.default_rng(0)
    u, y_sig, sigma = sigmoid_data()
    loss = np.linspace(2.0, 5.0, 30)
    n, d, big_l = chinchilla_data()
    cases = {
        "power law (12 points)": lambda nb: fits.fit_power_law(
            x, 2 + 100 * x ** -0.3 + 0.01 * rng.standard_normal(x.size), n_boot=nb),
        "sigmoid (8 points, weighted)": lambda nb: fits.fit_sigmoid_logx(
            u, y_sig, sigma=sigma, log_x=False, n_boot=nb),
        "loss -> metric (30 points)": lambda nb: fits.fit_loss_to_metric(
            loss, 0.7 / (1 + np.exp(3 * (loss - 3.2))) + 0.25
            + 0.01 * rng.standard_normal(loss.size), n_boot=nb),
        "broken power law (12 points)": lambda nb: fits.fit_broken_power_law(
            x, 1 + 50 * x ** -0.1 * (1 + x / 1e7) ** -0.4, n_boot=nb),
        "Chinchilla (25 points, L-BFGS-B)": lambda nb: fits.fit_chinchilla(
            n, d, big_l, n_boot=nb),
    }
    lines = ["| law | ms per bootstrap refit |", "|---|---|"]
    per_refit = {}
    for name, fit in cases.items():
        with_boot = best_time(functools.partial(fit, n_boot), rounds)
        without = best_time(functools.partial(fit, 0), rounds)
        per_refit[name] = max(with_boot - without, 0.0) / n_boot * 1e3
        lines.append(f"| {name} | {per_refit[name]:.2f} |")
    least_squares = [v for k, v in per_refit.items() if "Chinchilla" not in k]
    chinchilla = per_refit["Chinchilla (25 points, L-BFGS-B)"]
    lines.append(f"\nChinchilla refit / least-squares refits: "
                 f"{chinchilla / max(least_squares):.0f}x-{chinchilla / min(least_squares):.0f}x")
    return lines


def loss_grid_cache(rounds: int) -> list[str]:
    loss = np.linspace(2.0, 5.0, 30)
    y = 0.7 / (1 + np.exp(3 * (loss - 3.2))) + 0.25
    y = y + 0.01 * np.random.default_rng(0).standard_normal(loss.size)

    def cold():
        fits._loss_metric_grid.cache_clear()
        fits.fit_loss_to_metric(loss, y, n_boot=0)

    cold_s = best_time(cold, rounds, calls=50)
    fits.fit_loss_to_metric(loss, y, n_boot=0)
    warm_s = best_time(lambda: fits.fit_loss_to_metric(loss, y, n_boot=0), rounds, calls=50)
    return ["| fit_loss_to_metric, 30 points, no bootstrap | ms per fit |", "|---|---|",
            f"| grid built each time | {cold_s * 1e3:.3f} |",
            f"| grid from the cache | {warm_s * 1e3:.3f} |",
            f"\nshare of the fit spent building the grid: {1 - warm_s / cold_s:.0%}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per timing (best kept)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", RuntimeWarning)
    for title, table in (("1. BLAS threads", blas_threads), ("2. least-squares polish",
                                                              polish_paths),
                         ("3. bootstrap refits", refit_costs),
                         ("4. loss -> metric start grid", loss_grid_cache)):
        print(f"\n{title}\n")
        print("\n".join(table(args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
