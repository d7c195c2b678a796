"""How often the 95% bootstrap intervals of analysis/fits.py cover planted parameters.

    python bench/fit_coverage.py              # 100 seeded draws per law
    python bench/fit_coverage.py --draws 20

For each law, data are drawn from the formula written out below (not from analysis/fits.py)
plus Gaussian noise of one size for every point (what the residual bootstrap assumes; one
case has noise proportional to the value instead, which it does not model), the law is
fitted with its default bootstrap, and the table gives, per parameter, the share of draws
whose interval covers the planted value and the largest relative error of the estimate.
tests/test_fits.py asserts the same with 30 draws.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from analysis import fits  # noqa: E402


def power_law(x, E, A, alpha):
    return E + A * x ** -alpha


# case -> (fit, formula, x, planted, noise sd, noise relative to the value?); the planted
# values of tests/test_fits.py
CASES = {
    "power law, 10 points": (
        fits.fit_power_law, power_law, np.geomspace(1e5, 1e9, 10),
        {"E": 1.7, "A": 400.0, "alpha": 0.34}, 0.02, False),
    "power law, 10 points, noise 0.5% of the value": (
        fits.fit_power_law, power_law, np.geomspace(1e5, 1e9, 10),
        {"E": 1.7, "A": 400.0, "alpha": 0.34}, 0.005, True),
    "sigmoid in log10 x, 14 points": (
        fits.fit_sigmoid_logx,
        lambda x, floor, ceil, k, x0: floor + (ceil - floor) / (1 + np.exp(-k * (np.log10(x)
                                                                                  - x0))),
        np.geomspace(1e5, 1e9, 14), {"floor": 0.25, "ceil": 0.9, "k": 4.0, "x0": 7.2}, 0.015,
        False),
    "loss -> metric, 30 points": (
        fits.fit_loss_to_metric, lambda loss, a, k, L0, b: a / (1 + np.exp(-k * (loss - L0)))
        + b, np.linspace(2.0, 5.0, 30), {"a": 0.7, "k": -3.0, "L0": 3.2, "b": 0.25}, 0.01,
        False),
}


def coverage(name: str, draws: int) -> list[str]:
    """Table rows for one law: parameter, coverage share, largest relative error."""
    fit_law, formula, x, planted, noise, relative = CASES[name]
    truth = formula(x, **planted)
    scale = noise * truth if relative else noise
    covered = dict.fromkeys(planted, 0)
    worst = dict.fromkeys(planted, 0.0)
    for seed in range(draws):
        fit = fit_law(x, truth + scale * np.random.default_rng(seed).standard_normal(x.size))
        for k, v in planted.items():
            covered[k] += fit.ci[k][0] <= v <= fit.ci[k][1]
            worst[k] = max(worst[k], abs(fit.params[k] / v - 1))
    return [f"| {name} | {k} | {covered[k] / draws:.2f} | {worst[k]:.3f} |" for k in planted]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=100, help="seeded draws per law")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", RuntimeWarning)
    print(f"95% interval coverage over {args.draws} draws\n")
    print("| law | parameter | coverage | largest relative error |\n|---|---|---|---|")
    for name in CASES:
        print("\n".join(coverage(name, args.draws)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
