"""Scaling-law fits: one function per law, each returning a `FitResult`.

Each law is data, a `Law`: its formula, analytic Jacobian, start grid, bounds and parameter
names. One routine, `_fit`, runs the same recipe for every law:

1. Starting values from a grid. Where the law is linear in some parameters (an offset and a
   scale), those are solved in closed form for every grid point of the others ("variable
   projection"), so the grid is cheap and the optimiser starts near the global optimum.
2. A bounded least-squares polish (`scipy.optimize.least_squares`, or L-BFGS-B for the
   Huber-loss Chinchilla fit).
3. Uncertainty from a bootstrap with a fixed seed (SEED): new data = fitted curve +
   residuals drawn with replacement (inflated by sqrt(m / (m - p)) for the degrees of freedom
   the fit used up), refit from the optimum, 95% percentile interval. Residuals rather than
   points are resampled because ladders have few rungs: resampling points would often leave
   fewer distinct x values than parameters. Where the noise of each point is known (binomial
   scores), the sigmoid can instead draw that noise directly (parametric bootstrap).

A fit never raises on bad data: it returns status "failed" with a message. Status
"hit_bound" means a parameter sits on its bound (e.g. irreducible loss E = 0, or a sigmoid
steeper than the data can resolve), so that parameter is a limit, not an estimate.

Speed decisions here (one BLAS thread, MINPACK called directly, the cached loss grid, 100
Chinchilla resamples) were measured: docs/LOG.md, 2026-12-08 (`python bench/fits_speed.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy.special import expit, logsumexp

N_BOOT = 200  # bootstrap resamples for the intervals (fixed seed below)
SEED = 0
CI_LEVEL = 0.95
K_MAX = 100.0  # steepest sigmoid, per decade of x: 10%->90% within 0.044 decades (~10% in x)
HUBER_DELTA = 1e-3  # Hoffmann et al. 2022's Huber delta on log loss


def one_blas_thread():
    """Context that keeps BLAS on one thread (threadpoolctl, a scikit-learn dependency).

    Every matrix in these fits is tiny (at most a few hundred by six); extra BLAS threads
    only spin, and on a shared machine they slowed L-BFGS down several-fold (docs/LOG.md).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - the fits still work, just slower under load
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@dataclass
class FitResult:
    """One fitted curve: parameters, 95% bootstrap intervals, goodness of fit and a status."""

    law: str
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    rmse: float
    r2: float
    n_points: int
    status: str  # "converged" | "hit_bound" | "failed"
    message: str = ""
    model: Callable | None = field(default=None, repr=False, compare=False)
    draws: np.ndarray | None = field(default=None, repr=False, compare=False)  # bootstrap

    def predict(self, *x) -> np.ndarray:
        """Evaluate the fitted law; Chinchilla takes two arguments (N, D), the others one."""
        arrays = [np.asarray(v, dtype=float) for v in x]
        if self.model is None or self.status == "failed":
            return np.full(np.broadcast(*arrays).shape, np.nan)
        return self.model(self.params, *arrays)

    @property
    def ok(self) -> bool:
        """True unless the fit failed (a fit that hit a bound is still usable)."""
        return self.status != "failed"

    def to_rows(self, **labels) -> list[dict]:
        """Long-format rows, one per parameter, for fits.csv (labels say what was fitted)."""
        base = dict(labels, law=self.law, n_points=self.n_points, status=self.status,
                    rmse=self.rmse, r2=self.r2, message=self.message)
        if not self.params:
            return [dict(base, param="", value=np.nan, ci_low=np.nan, ci_high=np.nan)]
        return [dict(base, param=k, value=v, ci_low=self.ci.get(k, (np.nan, np.nan))[0],
                     ci_high=self.ci.get(k, (np.nan, np.nan))[1])
                for k, v in self.params.items()]


class _Unusable(ValueError):
    """Data a law cannot be fitted to; `n_points` counts the usable points there were."""

    def __init__(self, message: str, n_points: int = 0):
        super().__init__(message)
        self.n_points = n_points


def _failed(law: str, n: int, message: str) -> FitResult:
    return FitResult(law, {}, {}, np.nan, np.nan, n, "failed", message)


def _clean(*arrays) -> tuple[np.ndarray, ...]:
    """Float arrays with the rows where any array is non-finite dropped."""
    arrs = [np.asarray(a, dtype=float).ravel() for a in arrays]
    if len({a.size for a in arrs}) != 1:
        raise _Unusable("inputs have different lengths")
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrs])
    return tuple(a[keep] for a in arrs)


def _gof(y: np.ndarray, yhat: np.ndarray) -> tuple[float, float]:
    rss = float(np.sum((y - yhat) ** 2))
    tss = float(np.sum((y - y.mean()) ** 2))
    return math.sqrt(rss / y.size), (1.0 - rss / tss) if tss > 0 else np.nan


def _at_bound(theta, lower, upper) -> bool:
    theta, lower, upper = map(np.asarray, (theta, lower, upper))
    tol = 1e-6 * np.maximum(1.0, np.abs(theta))
    return bool(np.any((np.abs(theta - lower) < tol) | (np.abs(theta - upper) < tol)))


# --------------------------------------------------------------------------------------------
# Optimisers
# --------------------------------------------------------------------------------------------

def _polish(resid, theta0, lower, upper, jac="2-point") -> tuple[np.ndarray, bool]:
    """Least squares from theta0 within [lower, upper]; returns (theta, success).

    Levenberg-Marquardt (MINPACK, faster than the trust-region solver on these small fits:
    docs/LOG.md) runs first without bounds; only when its optimum leaves the box is the
    bounded trust-region solver run instead.
    """
    theta0 = np.clip(np.asarray(theta0, float), lower, upper)
    try:
        # a start on a bound (e.g. a step-like sigmoid) will leave the box: go straight to trf
        f0 = resid(theta0)
        if f0.size >= theta0.size and not _at_bound(theta0, lower, upper):
            if callable(jac):
                x, ok = _lm(resid, jac, theta0, f0)
                if x is None:  # least_squares refuses such a start
                    return theta0, False
            else:
                sol = optimize.least_squares(resid, theta0, jac=jac, method="lm", max_nfev=60)
                x, ok = sol.x, sol.status > 0
            if ok and np.all(np.isfinite(x)) and np.all(x >= lower) and np.all(x <= upper):
                return x, True
        sol = optimize.least_squares(resid, theta0, jac=jac, bounds=(lower, upper),
                                     method="trf", x_scale="jac", max_nfev=400)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        return theta0, False
    ok = sol.status > 0 and np.all(np.isfinite(sol.x))
    return sol.x, bool(ok)


def _lm(resid, jac, theta0: np.ndarray, f0: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """`least_squares(resid, theta0, jac=jac, method="lm", max_nfev=60)` without its wrapper.

    The same MINPACK routine (lmder) with the same settings (tolerances 1e-8, step bound
    factor 100, scaling from the Jacobian), so the same optimum bit for bit; the report runs
    thousands of these small fits, and the wrapper's bookkeeping was a large share of each
    (docs/LOG.md). Returns (x, converged), or (None, False) where least_squares raises (a
    start with a non-finite parameter or residual).
    """
    if not (np.all(np.isfinite(theta0)) and np.all(np.isfinite(f0))):
        return None, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "maxfev reached": info says so
        x, info = optimize.leastsq(resid, theta0, Dfun=jac, ftol=1e-8, xtol=1e-8, gtol=1e-8,
                                   maxfev=60, factor=100.0, diag=None)
    return x, info in (1, 2, 3, 4)  # MINPACK's convergence codes


def _lbfgs(objective, theta0, lower, upper) -> np.ndarray | None:
    """Minimise `objective(theta) -> (value, gradient)` within the bounds with L-BFGS-B."""
    try:
        sol = optimize.minimize(objective, theta0, jac=True, method="L-BFGS-B",
                                bounds=list(zip(lower, upper)),
                                options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-10})
    except (ValueError, FloatingPointError):
        return None
    return sol.x if np.all(np.isfinite(sol.x)) else None


# --------------------------------------------------------------------------------------------
# Bootstrap and intervals
# --------------------------------------------------------------------------------------------

def _bootstrap(fit_once: Callable, yhat: np.ndarray, resid: np.ndarray, n_params: int,
               n_boot: int, seed: int, sigma: np.ndarray | None = None,
               parametric: bool = False) -> np.ndarray | None:
    """Bootstrap: refit `fit_once(y_star)` -> param vector (or None) n_boot times.

    Residual bootstrap by default; with `sigma` (per-point noise) the standardised residuals
    resid / sigma are resampled and scaled back by each point's sigma. `parametric` draws
    y_star = yhat + sigma * N(0, 1) instead: better when the noise is known (binomial scores)
    and a few points leave too few residuals to resample. Returns an (n_ok, n_params_out)
    array, or None when too few refits succeeded (then the intervals are reported as missing
    rather than made up from a handful of refits).
    """
    m = resid.size
    if n_boot <= 0 or m <= n_params:
        return None
    rng = np.random.default_rng(seed)
    scale = np.ones(m) if sigma is None else sigma
    z = resid / scale
    centred = (z - z.mean()) * math.sqrt(m / (m - n_params))
    draws = []
    for _ in range(n_boot):
        noise = rng.standard_normal(m) if parametric else rng.choice(centred, size=m)
        y_star = yhat + scale * noise
        out = fit_once(y_star)
        if out is not None and np.all(np.isfinite(out)):
            draws.append(out)
    if len(draws) < max(10, n_boot // 2):
        return None
    return np.asarray(draws)


def _intervals(names: list[str], draws: np.ndarray | None) -> dict[str, tuple[float, float]]:
    if draws is None:
        return {k: (np.nan, np.nan) for k in names}
    a = (1 - CI_LEVEL) / 2
    lo, hi = np.quantile(draws, [a, 1 - a], axis=0)
    return {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(names)}


# --------------------------------------------------------------------------------------------
# Variable projection: the linear parameters of a grid in closed form
# --------------------------------------------------------------------------------------------

class _LinearTwo:
    """Closed-form (weighted) least squares of y ~ c0 + c1 * basis for every row of `basis`.

    basis is (G, m); w are per-point weights (1 / sigma^2). The sums that do not depend on y
    are taken once, so one grid serves many fits (the backtest fits every metric against the
    same losses). Calling it with y returns (c0, c1, weighted rss), each of shape (G,).
    Used for variable projection on grids.
    """

    def __init__(self, basis: np.ndarray, w: np.ndarray):
        self.basis, self.w = basis, w
        self.unit = bool(np.all(w == 1.0))  # then rss needs no multiply by w
        self.sw = w.sum()
        self.sb = basis @ w
        self.sbb = (basis * basis) @ w
        self.det = self.sw * self.sbb - self.sb * self.sb

    def __call__(self, y: np.ndarray):
        basis, w, sb = self.basis, self.w, self.sb
        sy = w @ y
        sby = basis @ (w * y)
        with np.errstate(divide="ignore", invalid="ignore"):
            c1 = np.where(np.abs(self.det) > 1e-300, (self.sw * sby - sb * sy) / self.det, 0.0)
        c0 = (sy - c1 * sb) / self.sw
        # (y - c0 - c1 basis)^2 w, summed per row, in place: the same operations in the same
        # order as the plain expression, without its four (G, m) temporaries
        r = y[None, :] - c0[:, None]
        r -= c1[:, None] * basis
        r *= r
        if not self.unit:
            r *= w[None, :]
        return c0, c1, r.sum(axis=1)


def _linear_two(basis: np.ndarray, y: np.ndarray, w: np.ndarray | None = None):
    """`_LinearTwo(basis, w)(y)` for a grid used once; w defaults to ones."""
    return _LinearTwo(basis, np.ones_like(y) if w is None else w)(y)


# --------------------------------------------------------------------------------------------
# A law as data, and the one routine that fits any law
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Sample:
    """Cleaned data in the units its law is fitted in."""

    x: np.ndarray | tuple[np.ndarray, ...]  # working x: log(x / x_ref), log10 x, loss, ...
    y: np.ndarray  # working response: what the residuals are taken against (Chinchilla: log L)
    y_data: np.ndarray  # the response in the data's units, for rmse and r2
    sigma: np.ndarray | None = None  # per-point noise: weights 1 / sigma^2, bootstrap scale
    x_ref: float = 1.0  # x was divided by this while fitting, so the scale stays near 1


def _theta_as_reported(theta: np.ndarray, sample: _Sample) -> np.ndarray:
    return theta


@dataclass(frozen=True)
class Law:
    """A scaling law as data: everything `_fit` needs to fit it.

    The optimiser moves `theta` (in working units: x divided by its geometric mean, log
    scales); `reported` maps theta to the values of `names`, which FitResult reports and
    `model` takes. Laws with `objective` are fitted by L-BFGS-B on it; the others by least
    squares on (curve - y) / sigma with the analytic `jacobian` (finite differences where it
    is None).
    """

    name: str  # FitResult.law, the law column of fits.csv
    names: tuple[str, ...]  # reported parameters, in order
    prepare: Callable  # (*cleaned arrays) -> _Sample; raises _Unusable on too little data
    bounds: Callable  # (sample) -> (lower, upper) for theta
    start_grid: Callable  # (sample, y) -> (candidate thetas (G, p), their cost (G,))
    curve: Callable  # (theta, sample) -> the law at the sample's x, in working units
    model: Callable  # (params dict, *x) -> the law in the data's units (FitResult.predict)
    jacobian: Callable | None = None  # (theta, sample) -> d curve / d theta, (m, p)
    objective: Callable | None = None  # (theta, sample, y) -> (loss, gradient)
    reported: Callable = _theta_as_reported  # (theta, sample) -> values of `names`
    n_starts: int | None = None  # None: polish the best grid point; k: the k best, keep cheapest
    limits: slice = field(default_factory=lambda: slice(None))  # whose bound is "hit_bound"
    log_response: bool = False  # fitted to log y (Chinchilla): rmse and r2 back in y
    final_start: Callable | None = None  # (start, lower, upper) -> True: use it unpolished


def _least_squares_problem(law: Law, sample: _Sample, y: np.ndarray):
    """(residuals(theta), their Jacobian(theta) or "2-point") for fitting `law` to y:
    residuals = (curve - y) / sigma. Closures, because the polish calls them dozens of times
    per fit and the report runs thousands of fits."""
    curve, jacobian, sigma = law.curve, law.jacobian, sample.sigma
    if sigma is None:
        def residuals(theta):
            return curve(theta, sample) - y

        def residual_jacobian(theta):
            return jacobian(theta, sample)
    else:
        column = sigma[:, None]

        def residuals(theta):
            return (curve(theta, sample) - y) / sigma

        def residual_jacobian(theta):
            return jacobian(theta, sample) / column
    return residuals, ("2-point" if jacobian is None else residual_jacobian)


def _cost(law: Law, sample: _Sample, theta: np.ndarray, y: np.ndarray) -> float:
    """What the polish minimised, to rank the optima of several starts."""
    if law.objective is not None:
        return float(law.objective(theta, sample, y)[0])
    residuals, _ = _least_squares_problem(law, sample, y)
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.sum(residuals(theta) ** 2))


def _polish_start(law: Law, sample: _Sample, y: np.ndarray, start, lower, upper):
    """The optimum reached from `start` within the bounds, or None where the optimiser failed.

    Overflow is silenced: a trial step far out (a huge exponent) gives an infinite residual
    that the optimisers reject on their own.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if law.objective is not None:
            return _lbfgs(lambda th: law.objective(th, sample, y), start, lower, upper)
        residuals, jacobian = _least_squares_problem(law, sample, y)
        theta, ok = _polish(residuals, start, lower, upper, jac=jacobian)
    return theta if ok else None


def _fit_from_grid(law: Law, sample: _Sample, lower, upper) -> np.ndarray | None:
    """The optimum for the data: the best grid point polished, or, for laws with local optima
    (`n_starts`), that many of the best polished and the cheapest kept."""
    candidates, cost = law.start_grid(sample, sample.y)
    if law.n_starts is None:
        start = candidates[int(np.argmin(cost))]
        if law.final_start is not None and law.final_start(start, lower, upper):
            return start
        return _polish_start(law, sample, sample.y, start, lower, upper)
    best, best_cost = None, np.inf
    for i in np.argsort(cost)[:law.n_starts]:
        theta = _polish_start(law, sample, sample.y, candidates[i], lower, upper)
        if theta is not None:
            c = _cost(law, sample, theta, sample.y)
            if c < best_cost:
                best, best_cost = theta, c
    return best


def _fitted(law: Law, sample: _Sample, theta: np.ndarray) -> np.ndarray:
    """The fitted curve at the data, in working units: the centre of the bootstrap.

    Least-squares laws take it as y + residual, the Huber law as its curve; the two agree up
    to rounding, and each is what that law's fit always used, so the results stay identical
    to the last bit (docs/LOG.md, 2026-12-08).
    """
    if law.objective is not None:
        return law.curve(theta, sample)
    residuals, _ = _least_squares_problem(law, sample, sample.y)
    r = residuals(theta)
    return sample.y + (r if sample.sigma is None else r * sample.sigma)


def _fit(law: Law, *arrays, n_boot: int, seed: int, parametric: bool = False) -> FitResult:
    """Fit `law` to the data: start grid -> polish -> bootstrap -> FitResult."""
    try:
        sample = law.prepare(*_clean(*arrays))
    except _Unusable as exc:
        return _failed(law.name, exc.n_points, str(exc))
    m = sample.y.size
    lower, upper = law.bounds(sample)
    theta = _fit_from_grid(law, sample, lower, upper)
    if theta is None:
        return _failed(law.name, m, "optimiser did not converge")

    def refit(y_star):  # bootstrap refits start from the optimum
        th = _polish_start(law, sample, y_star, theta, lower, upper)
        return None if th is None else law.reported(th, sample)

    yhat = _fitted(law, sample, theta)
    draws = _bootstrap(refit, yhat, sample.y - yhat, theta.size, n_boot, seed,
                       sigma=sample.sigma, parametric=parametric)
    params = dict(zip(law.names, map(float, law.reported(theta, sample))))
    rmse, r2 = _gof(sample.y_data, np.exp(yhat) if law.log_response else yhat)
    lim = law.limits
    status = "hit_bound" if _at_bound(theta[lim], lower[lim], upper[lim]) else "converged"
    return FitResult(law.name, params, _intervals(list(law.names), draws), rmse, r2, m,
                     status, model=law.model, draws=draws)


def _positive_x_sample(x, y, min_distinct: int) -> _Sample:
    """The points with x > 0, as log(x / x_ref) with x_ref their geometric mean (so that the
    scale parameter stays near 1); refused below `min_distinct` distinct x values."""
    keep = x > 0
    x, y = x[keep], y[keep]
    if x.size < min_distinct or np.unique(x).size < min_distinct:
        raise _Unusable(f"needs at least {min_distinct} distinct positive x values", x.size)
    x_ref = float(np.exp(np.mean(np.log(x))))
    return _Sample(np.log(x / x_ref), y, y, x_ref=x_ref)


# --------------------------------------------------------------------------------------------
# L = E + A x^-alpha
# --------------------------------------------------------------------------------------------

def _power_law_model(p: dict, x):
    return p["E"] + p["A"] * np.power(x, -p["alpha"])


def _power_law_curve(th, sample):  # th = (E, A at x_ref, alpha)
    return th[0] + th[1] * np.exp(-th[2] * sample.x)


def _power_law_jacobian(th, sample):
    lx = sample.x
    z = np.exp(-th[2] * lx)
    return np.column_stack([np.ones_like(lx), z, -th[1] * lx * z])


_POWER_LAW_ALPHAS = np.linspace(0.01, 3.0, 60)


def _power_law_starts(sample, y):
    """A grid over alpha with (E, A) in closed form, clipped to E, A >= 0."""
    basis = np.exp(-_POWER_LAW_ALPHAS[:, None] * sample.x[None, :])
    e, a, rss = _linear_two(basis, y)
    return np.column_stack([np.maximum(e, 0.0), np.maximum(a, 0.0), _POWER_LAW_ALPHAS]), rss


POWER_LAW = Law(
    name="power_law",
    names=("E", "A", "alpha"),
    prepare=functools.partial(_positive_x_sample, min_distinct=3),
    bounds=lambda sample: (np.array([0.0, 0.0, 0.0]), np.array([np.inf, np.inf, 5.0])),
    start_grid=_power_law_starts,
    curve=_power_law_curve,
    jacobian=_power_law_jacobian,
    reported=lambda th, s: np.array([th[0], th[1] * s.x_ref ** th[2], th[2]]),
    model=_power_law_model,
)


def fit_power_law(x, y, *, n_boot: int = N_BOOT, seed: int = SEED) -> FitResult:
    """Fit L = E + A * x^(-alpha) (loss against params, compute or tokens).

    Bounds: E >= 0 (irreducible loss), A >= 0, 0 <= alpha <= 5. x is divided by its geometric
    mean while fitting so that A stays well scaled; A is reported in the original units.
    """
    return _fit(POWER_LAW, x, y, n_boot=n_boot, seed=seed)


# --------------------------------------------------------------------------------------------
# L = E + A / N^alpha + B / D^beta   (Hoffmann et al. 2022, as refitted by Besiroglu et al. 2024)
# --------------------------------------------------------------------------------------------

def _chinchilla_model(p: dict, n, d):
    return p["E"] + p["A"] / np.power(n, p["alpha"]) + p["B"] / np.power(d, p["beta"])


def _chinchilla_curve(th, sample):
    """log L_hat = LSE(a - alpha log N, b - beta log D, e); th = (a, b, e, alpha, beta)."""
    ln_n, ln_d = sample.x
    return logsumexp(np.stack([th[0] - th[3] * ln_n, th[1] - th[4] * ln_d,
                               np.full_like(ln_n, th[2])]), axis=0)


def _chinchilla_objective(th, ln_n, ln_d, ln_l):
    """Summed Huber loss of log-residuals and its gradient; th = (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = th
    terms = np.stack([a - alpha * ln_n, b - beta * ln_d, np.full_like(ln_n, e)])  # (3, m)
    lse = logsumexp(terms, axis=0)
    w = np.exp(terms - lse)  # softmax weights, d lse / d term
    r = lse - ln_l
    small = np.abs(r) <= HUBER_DELTA
    loss = np.where(small, 0.5 * r * r, HUBER_DELTA * (np.abs(r) - 0.5 * HUBER_DELTA)).sum()
    dr = np.where(small, r, HUBER_DELTA * np.sign(r))
    grad = np.array([
        np.sum(dr * w[0]), np.sum(dr * w[1]), np.sum(dr * w[2]),
        -np.sum(dr * w[0] * ln_n), -np.sum(dr * w[1] * ln_d),
    ])
    return loss, grad


# Hoffmann et al.'s grid: a, b in {0, 5, .., 25}, e in {-1, -.5, .., 1}, alpha, beta in
# {0, .5, .., 2}; one row per start, (4500, 5)
_CHINCHILLA_GRID = np.array(np.meshgrid(
    np.arange(0, 26, 5.0), np.arange(0, 26, 5.0), np.arange(-1, 1.01, 0.5),
    np.arange(0, 2.01, 0.5), np.arange(0, 2.01, 0.5), indexing="ij")).reshape(5, -1).T


def _chinchilla_starts(sample, ln_l):
    """Hoffmann et al.'s grid, ranked by its summed Huber loss in one vectorised pass."""
    ln_n, ln_d = sample.x
    a, b, e, al, be = (_CHINCHILLA_GRID[:, i:i + 1] for i in range(5))
    lse = np.logaddexp(np.logaddexp(a - al * ln_n, b - be * ln_d), e)  # (G, m)
    r = np.abs(lse - ln_l)
    hub = np.where(r <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (r - 0.5 * HUBER_DELTA))
    return _CHINCHILLA_GRID, hub.sum(axis=1)


def _chinchilla_sample(N, D, L) -> _Sample:
    keep = (N > 0) & (D > 0) & (L > 0)
    N, D, L = N[keep], D[keep], L[keep]
    # each term E + A/N^alpha has an offset, a scale and an exponent: 3 distinct values each
    if N.size < 6 or np.unique(N).size < 3 or np.unique(D).size < 3:
        raise _Unusable("needs >= 6 points with >= 3 sizes and >= 3 token budgets", N.size)
    ln_n, ln_d = np.log(N), np.log(D)
    if abs(np.corrcoef(ln_n, ln_d)[0, 1]) > 0.999:
        raise _Unusable("N and D move together (one token budget per size): "
                        "the N and D terms cannot be separated", N.size)
    return _Sample((ln_n, ln_d), np.log(L), L)


CHINCHILLA = Law(
    name="chinchilla",
    names=("E", "A", "B", "alpha", "beta"),
    prepare=_chinchilla_sample,
    bounds=lambda sample: (np.array([-10.0, -10.0, -5.0, 0.0, 0.0]),
                           np.array([50.0, 50.0, 5.0, 3.0, 3.0])),
    start_grid=_chinchilla_starts,
    curve=_chinchilla_curve,
    objective=lambda th, sample, ln_l: _chinchilla_objective(th, *sample.x, ln_l),
    reported=lambda th, s: np.array([math.exp(th[2]), math.exp(th[0]), math.exp(th[1]),
                                     th[3], th[4]]),
    model=_chinchilla_model,
    n_starts=8,
    log_response=True,
)


def fit_chinchilla(N, D, L, *, n_boot: int = 100, seed: int = SEED,
                   n_starts: int = 8) -> FitResult:
    """Fit L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Approach 3).

    As Besiroglu et al. (2024) re-did it: with A = e^a, B = e^b, E = e^e the prediction is
    log L_hat = LSE(a - alpha log N, b - beta log D, e), and the objective is the SUM (not the
    mean, whose small gradients stopped the original fit early) of Huber(delta=1e-3) losses of
    log L_hat - log L, minimised with L-BFGS-B. Starting points: the Hoffmann grid
    (e in {-1,-.5,..,1}, a, b in {0,5,..,25}, alpha, beta in {0,.5,..,2}) is evaluated in one
    vectorised pass and L-BFGS runs from its `n_starts` best points. Only meaningful when N and
    D vary independently (several token budgets per size) over at least 3 values each;
    otherwise status "failed".
    An L-BFGS run on the Huber loss (nearly L1) costs far more than a least-squares fit
    (docs/LOG.md), so the bootstrap defaults to 100 resamples here.
    """
    law = CHINCHILLA if n_starts == CHINCHILLA.n_starts else dataclasses.replace(
        CHINCHILLA, n_starts=n_starts)
    with one_blas_thread():
        return _fit(law, N, D, L, n_boot=n_boot, seed=seed)


# --------------------------------------------------------------------------------------------
# Sigmoids: in log10 x (emergence) and in loss (OLMo two-step, second stage)
# --------------------------------------------------------------------------------------------

def _sigmoid_model(p: dict, x, log_x: bool = True):
    u = np.log10(x) if log_x else x
    return p["floor"] + (p["ceil"] - p["floor"]) * expit(p["k"] * (u - p["x0"]))


def _sigmoid_curve(th, sample):  # th = (floor, ceil, k, x0), x = u (log10 x or x itself)
    return th[0] + (th[1] - th[0]) * expit(th[2] * (sample.x - th[3]))


def _sigmoid_jacobian(th, sample):
    u = sample.x
    s = expit(th[2] * (u - th[3]))
    ds = s * (1 - s) * (th[1] - th[0])
    return np.column_stack([1 - s, s, ds * (u - th[3]), -ds * th[2]])


def _sigmoid_bounds(sample):
    """floor, ceil within one data range of the data, 0 <= k <= K_MAX, x0 within one u-range.

    k >= 0 loses nothing: a falling curve has floor > ceil."""
    u, y = sample.x, sample.y
    span_u = float(np.ptp(u))
    span_y = max(float(np.ptp(y)), 1e-12)
    lower = np.array([y.min() - span_y, y.min() - span_y, 0.0, u.min() - span_u])
    upper = np.array([y.max() + span_y, y.max() + span_y, K_MAX, u.max() + span_u])
    return lower, upper


def _sigmoid_starts(sample, y):
    """A grid over (k, x0) with floor and ceil in closed form (weighted by 1 / sigma^2)."""
    u = sample.x
    span_u = float(np.ptp(u))
    ks = np.geomspace(0.3 / span_u, K_MAX, 14)
    x0s = np.linspace(u.min() - 0.25 * span_u, u.max() + 0.25 * span_u, 41)
    kk, xx = (g.ravel() for g in np.meshgrid(ks, x0s, indexing="ij"))
    basis = expit(kk[:, None] * (u[None, :] - xx[:, None]))  # (G, m)
    c0, c1, rss = _linear_two(basis, y, 1 / sample.sigma ** 2)
    return np.column_stack([c0, c0 + c1, kk, xx]), rss


def _sigmoid_step_start(start, lower, upper) -> bool:
    """A grid optimum at the steepest k is a step between two points: the grid already has
    the least-squares levels, and a polish could only push k into its bound."""
    return bool(start[2] >= K_MAX and lower[0] <= start[0] <= upper[0]
                and lower[1] <= start[1] <= upper[1])


def _sigmoid_sample(x, y, sigma, *, log_x: bool) -> _Sample:
    keep = (sigma > 0) & ((x > 0) if log_x else True)
    x, y, sigma = x[keep], y[keep], sigma[keep]
    if x.size < 4 or np.unique(x).size < 4:
        raise _Unusable("needs at least 4 distinct x values", x.size)
    return _Sample(np.log10(x) if log_x else x, y, y, sigma=sigma)


SIGMOID_LOGX = Law(
    name="sigmoid_logx",
    names=("floor", "ceil", "k", "x0"),
    prepare=functools.partial(_sigmoid_sample, log_x=True),
    bounds=_sigmoid_bounds,
    start_grid=_sigmoid_starts,
    curve=_sigmoid_curve,
    jacobian=_sigmoid_jacobian,
    model=_sigmoid_model,
    limits=slice(2, None),  # k and x0; the levels' bounds only keep the polish in range
    final_start=_sigmoid_step_start,
)
SIGMOID = dataclasses.replace(  # in x as given (emergence uses x = -loss)
    SIGMOID_LOGX, name="sigmoid", prepare=functools.partial(_sigmoid_sample, log_x=False),
    model=functools.partial(_sigmoid_model, log_x=False))


def fit_sigmoid_logx(x, y, *, sigma=None, log_x: bool = True, n_boot: int = N_BOOT,
                     seed: int = SEED, parametric: bool = False) -> FitResult:
    """Fit y = floor + (ceil - floor) / (1 + exp(-k (log10 x - x0))).

    x0 is the midpoint in log10 x (the ability's threshold is 10^x0); k >= 0 is the steepness
    per decade, so the 10%->90% part of the rise spans 2 ln(9) / k ~ 4.39 / k decades. A
    falling curve comes out with floor > ceil. `sigma` (per-point noise) weights the least
    squares by 1 / sigma^2, and with `parametric` the bootstrap draws Gaussian noise of that
    size instead of resampling residuals. With `log_x=False` x is used as is (emergence uses it
    with x = -loss). Bounds: floor, ceil within one data range of the data, k <= 100, x0
    within one x-range of the data.
    """
    if sigma is None:  # unweighted; `parametric` then draws unit noise (callers pass sigma)
        sigma = np.ones_like(np.asarray(x, float))
    return _fit(SIGMOID_LOGX if log_x else SIGMOID, x, y, sigma, n_boot=n_boot, seed=seed,
                parametric=parametric)


def _loss_metric_model(p: dict, loss):
    return p["a"] * expit(p["k"] * (loss - p["L0"])) + p["b"]


def _loss_metric_curve(th, sample):  # th = (a, k, L0, b), x = loss
    return th[0] * expit(th[1] * (sample.x - th[2])) + th[3]


def _loss_metric_jacobian(th, sample):
    loss = sample.x
    s = expit(th[1] * (loss - th[2]))
    ds = th[0] * s * (1 - s)
    return np.column_stack([s, ds * (loss - th[2]), -ds * th[1], np.ones_like(s)])


def _loss_metric_bounds(sample):
    """0 <= a <= 2 range(y), |k| <= 50 / range(L), L0 within one loss range, b within one
    metric range of the data."""
    loss, y = sample.x, sample.y
    span_l = float(np.ptp(loss))
    span_y = max(float(np.ptp(y)), 1e-12)
    k_max = 50.0 / span_l
    lower = np.array([0.0, -k_max, loss.min() - span_l, y.min() - span_y])
    upper = np.array([2 * span_y + 1e-9, k_max, loss.max() + span_l, y.max() + span_y])
    return lower, upper


@functools.lru_cache(maxsize=4)
def _loss_metric_grid(loss_bytes: bytes) -> tuple[np.ndarray, np.ndarray, _LinearTwo]:
    """The starting grid of `fit_loss_to_metric` over (k, L0), with its basis, for one loss
    vector (as bytes, so it can be a cache key): the backtest fits every metric against the
    same checkpoints' losses, and building the grid was a large share of each fit's time
    (docs/LOG.md)."""
    loss = np.frombuffer(loss_bytes, dtype=float)
    span_l = float(np.ptp(loss))
    k_max = 50.0 / span_l
    ks = np.concatenate([-np.geomspace(0.3 / span_l, k_max, 10), np.geomspace(0.3 / span_l,
                                                                              k_max, 10)])
    l0s = np.linspace(loss.min() - 0.25 * span_l, loss.max() + 0.25 * span_l, 31)
    kk, ll = (g.ravel() for g in np.meshgrid(ks, l0s, indexing="ij"))
    basis = expit(kk[:, None] * (loss[None, :] - ll[:, None]))
    return kk, ll, _LinearTwo(basis, np.ones_like(loss))


def _loss_metric_starts(sample, y):
    """The cached (k, L0) grid with b and a in closed form; a < 0 is the same curve with k
    flipped, so only a >= 0 counts."""
    kk, ll, grid = _loss_metric_grid(sample.x.tobytes())
    b, a, rss = grid(y)
    return np.column_stack([a, kk, ll, b]), np.where(a >= 0, rss, np.inf)


def _loss_metric_sample(loss, y) -> _Sample:
    if loss.size < 5 or np.unique(loss).size < 4:
        raise _Unusable("needs at least 5 points with 4 distinct losses", loss.size)
    return _Sample(loss, y, y)


LOSS_TO_METRIC = Law(
    name="loss_to_metric",
    names=("a", "k", "L0", "b"),
    prepare=_loss_metric_sample,
    bounds=_loss_metric_bounds,
    start_grid=_loss_metric_starts,
    curve=_loss_metric_curve,
    jacobian=_loss_metric_jacobian,
    model=_loss_metric_model,
    limits=slice(None, 3),  # a, k, L0; the offset's bounds only keep the polish in range
)


def fit_loss_to_metric(loss, y, *, n_boot: int = N_BOOT, seed: int = SEED) -> FitResult:
    """Fit y = a / (1 + exp(-k (L - L0))) + b (OLMo ladder two-step, second stage).

    L is the loss predicted by the first stage (here the validation loss); a >= 0, so a metric
    that improves as loss falls has k < 0. Bounds: |k| <= 50 / range(L), L0 within one loss
    range of the data, b within one metric range of the data.
    """
    return _fit(LOSS_TO_METRIC, loss, y, n_boot=n_boot, seed=seed)


# --------------------------------------------------------------------------------------------
# Broken power law with one break (Caballero et al. 2023)
# --------------------------------------------------------------------------------------------

def _bpl_model(p: dict, x):
    z = (np.log(x) - np.log(p["d1"])) / p["f1"]
    return p["a"] + p["b"] * np.exp(-p["c0"] * np.log(x) - p["c1"] * p["f1"]
                                    * np.logaddexp(0.0, z))


def _bpl_shape(lx, c0, c1, ld, f1):
    """x^(-c0) (1 + (x / d1)^(1 / f1))^(-c1 f1) in log-centred x (lx) and ld = log d1."""
    return np.exp(-c0 * lx - c1 * f1 * np.logaddexp(0.0, (lx - ld) / f1))


def _bpl_curve(th, sample):  # th = (a, b at x_ref, c0, c1, log(d1 / x_ref), f1)
    return th[0] + th[1] * _bpl_shape(sample.x, *th[2:])


_BPL_C0S, _BPL_C1S = np.linspace(-0.5, 1.5, 9), np.linspace(-1.0, 2.0, 9)
_BPL_F1S = np.array([0.1, 0.3, 1.0, 3.0])


def _bpl_starts(sample, y):
    """A grid over (c0, c1, log d1, f1), the break across the data, with (a, b) in closed
    form; grid points whose shape overflows are dropped."""
    lx = sample.x
    lds = np.linspace(lx.min(), lx.max(), 12)
    grid = np.array(np.meshgrid(_BPL_C0S, _BPL_C1S, lds, _BPL_F1S,
                                indexing="ij")).reshape(4, -1).T
    with np.errstate(over="ignore", invalid="ignore"):
        basis = _bpl_shape(lx, *(grid[:, i:i + 1] for i in range(4)))
    finite = np.all(np.isfinite(basis), axis=1)
    grid, basis = grid[finite], basis[finite]
    a, b, rss = _linear_two(basis, y)
    return np.column_stack([a, b, grid]), np.where(np.isfinite(rss), rss, np.inf)


def _bpl_bounds(sample):
    """-2 <= c0 <= 3, -3 <= c1 <= 5, 0.01 <= f1 <= 10, d1 within two e-folds of the data."""
    lx = sample.x
    lower = np.array([-np.inf, -np.inf, -2.0, -3.0, lx.min() - 2.0, 0.01])
    upper = np.array([np.inf, np.inf, 3.0, 5.0, lx.max() + 2.0, 10.0])
    return lower, upper


BROKEN_POWER_LAW = Law(
    name="broken_power_law",
    names=("a", "b", "c0", "c1", "d1", "f1"),
    prepare=functools.partial(_positive_x_sample, min_distinct=7),
    bounds=_bpl_bounds,
    start_grid=_bpl_starts,
    curve=_bpl_curve,
    # no analytic Jacobian: finite differences (the polish only, the grid does the search)
    reported=lambda th, s: np.array([th[0], th[1] * s.x_ref ** th[2], th[2], th[3],
                                     s.x_ref * math.exp(th[4]), th[5]]),
    model=_bpl_model,
    n_starts=8,  # six parameters have local optima: polish the 8 best grid points
    limits=slice(2, None),
)


def fit_broken_power_law(x, y, *, n_boot: int = N_BOOT, seed: int = SEED) -> FitResult:
    """Fit y = a + b x^(-c0) (1 + (x / d1)^(1 / f1))^(-c1 f1) (one break; Caballero et al.).

    Below the break d1 the curve falls with exponent c0, above it with c0 + c1; f1 > 0 sets
    how sharp the break is. As in the paper the start comes from a grid search in log space:
    (c0, c1, log d1, f1) on a grid with (a, b) in closed form, then a bounded polish of all six.
    Needs at least 7 distinct x. Bounds: -2 <= c0 <= 3, -3 <= c1 <= 5, 0.01 <= f1 <= 10,
    d1 within two e-folds of the data range.
    """
    return _fit(BROKEN_POWER_LAW, x, y, n_boot=n_boot, seed=seed)


LAWS = (POWER_LAW, CHINCHILLA, SIGMOID_LOGX, SIGMOID, LOSS_TO_METRIC, BROKEN_POWER_LAW)
