"""Scaling-law fits: one function per law, each returning a `FitResult`.

Every fit follows the same recipe, so the laws differ only in their formula:

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
"""

from __future__ import annotations

import contextlib
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


def one_blas_thread():
    """Context that keeps BLAS on one thread (threadpoolctl, a scikit-learn dependency).

    Every matrix in these fits is tiny (at most a few hundred by six); extra BLAS threads
    only spin, and on a shared 2-core machine they made L-BFGS 8x slower.
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


def _failed(law: str, n: int, message: str) -> FitResult:
    return FitResult(law, {}, {}, np.nan, np.nan, n, "failed", message)


def _clean(*arrays) -> tuple[np.ndarray, ...]:
    """Float arrays with the rows where any array is non-finite dropped."""
    arrs = [np.asarray(a, dtype=float).ravel() for a in arrays]
    if len({a.size for a in arrs}) != 1:
        raise ValueError("inputs have different lengths")
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


def _polish(resid, theta0, lower, upper, jac="2-point") -> tuple[np.ndarray, bool]:
    """Least squares from theta0 within [lower, upper]; returns (theta, success).

    Levenberg-Marquardt (MINPACK, ~3x faster here) runs first without bounds; only when its
    optimum leaves the box is the bounded trust-region solver run instead.
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
    factor 100, scaling from the Jacobian), so the same optimum bit for bit; the wrapper's
    bookkeeping cost more than the fit itself (the report runs thousands of these small
    fits). Returns (x, converged), or (None, False) where least_squares raises (a start
    with a non-finite parameter or residual).
    """
    if not (np.all(np.isfinite(theta0)) and np.all(np.isfinite(f0))):
        return None, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "maxfev reached": info says so
        x, info = optimize.leastsq(resid, theta0, Dfun=jac, ftol=1e-8, xtol=1e-8, gtol=1e-8,
                                   maxfev=60, factor=100.0, diag=None)
    return x, info in (1, 2, 3, 4)  # MINPACK's convergence codes


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
# L = E + A x^-alpha
# --------------------------------------------------------------------------------------------

def _power_law_model(p: dict, x):
    return p["E"] + p["A"] * np.power(x, -p["alpha"])


def fit_power_law(x, y, *, n_boot: int = N_BOOT, seed: int = SEED) -> FitResult:
    """Fit L = E + A * x^(-alpha) (loss against params, compute or tokens).

    Bounds: E >= 0 (irreducible loss), A >= 0, 0 <= alpha <= 5. x is divided by its geometric
    mean while fitting so that A stays well scaled; A is reported in the original units.
    """
    law = "power_law"
    try:
        x, y = _clean(x, y)
    except ValueError as exc:
        return _failed(law, 0, str(exc))
    keep = x > 0
    x, y = x[keep], y[keep]
    m = x.size
    if m < 3 or np.unique(x).size < 3:
        return _failed(law, m, "needs at least 3 distinct positive x values")
    x_ref = float(np.exp(np.mean(np.log(x))))
    lx = np.log(x / x_ref)
    lower, upper = np.array([0.0, 0.0, 0.0]), np.array([np.inf, np.inf, 5.0])

    def resid(th, yy):
        return th[0] + th[1] * np.exp(-th[2] * lx) - yy

    def jac(th, yy):
        z = np.exp(-th[2] * lx)
        return np.column_stack([np.ones_like(lx), z, -th[1] * lx * z])

    def fit_once(yy, start=None):
        if start is None:  # grid over alpha, (E, A) in closed form
            alphas = np.linspace(0.01, 3.0, 60)
            e, a, rss = _linear_two(np.exp(-alphas[:, None] * lx[None, :]), yy)
            e, a = np.maximum(e, 0.0), np.maximum(a, 0.0)
            i = int(np.argmin(rss))
            start = [e[i], a[i], alphas[i]]
        th, ok = _polish(lambda t: resid(t, yy), start, lower, upper,
                         jac=lambda t: jac(t, yy))
        return th if ok else None

    theta = fit_once(y)
    if theta is None:
        return _failed(law, m, "optimiser did not converge")

    def to_params(th):
        return {"E": th[0], "A": th[1] * x_ref ** th[2], "alpha": th[2]}

    def refit(ys):  # bootstrap refits start from the optimum
        th = fit_once(ys, theta)
        return None if th is None else np.array(list(to_params(th).values()))

    yhat = y + resid(theta, y)
    draws = _bootstrap(refit, yhat, y - yhat, 3, n_boot, seed)
    params = {k: float(v) for k, v in to_params(theta).items()}
    rmse, r2 = _gof(y, yhat)
    status = "hit_bound" if _at_bound(theta, lower, upper) else "converged"
    return FitResult(law, params, _intervals(list(params), draws), rmse, r2, m, status,
                     model=_power_law_model)


# --------------------------------------------------------------------------------------------
# L = E + A / N^alpha + B / D^beta   (Hoffmann et al. 2022, as refitted by Besiroglu et al. 2024)
# --------------------------------------------------------------------------------------------

HUBER_DELTA = 1e-3


def _chinchilla_model(p: dict, n, d):
    return p["E"] + p["A"] / np.power(n, p["alpha"]) + p["B"] / np.power(d, p["beta"])


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
    Each L-BFGS run costs ~50x a least-squares fit (the Huber loss is nearly L1), so the
    bootstrap defaults to 100 resamples here.
    """
    with one_blas_thread():
        return _fit_chinchilla(N, D, L, n_boot, seed, n_starts)


def _fit_chinchilla(N, D, L, n_boot, seed, n_starts) -> FitResult:
    law = "chinchilla"
    try:
        N, D, L = _clean(N, D, L)
    except ValueError as exc:
        return _failed(law, 0, str(exc))
    keep = (N > 0) & (D > 0) & (L > 0)
    N, D, L = N[keep], D[keep], L[keep]
    m = N.size
    # each term E + A/N^alpha has an offset, a scale and an exponent: 3 distinct values each
    if m < 6 or np.unique(N).size < 3 or np.unique(D).size < 3:
        return _failed(law, m, "needs >= 6 points with >= 3 sizes and >= 3 token budgets")
    ln_n, ln_d, ln_l = np.log(N), np.log(D), np.log(L)
    if abs(np.corrcoef(ln_n, ln_d)[0, 1]) > 0.999:
        return _failed(law, m, "N and D move together (one token budget per size): "
                               "the N and D terms cannot be separated")
    lower = np.array([-10.0, -10.0, -5.0, 0.0, 0.0])
    upper = np.array([50.0, 50.0, 5.0, 3.0, 3.0])
    bounds = list(zip(lower, upper))

    grid = np.array(np.meshgrid(np.arange(0, 26, 5.0), np.arange(0, 26, 5.0),
                                np.arange(-1, 1.01, 0.5), np.arange(0, 2.01, 0.5),
                                np.arange(0, 2.01, 0.5), indexing="ij")).reshape(5, -1).T

    def grid_starts(ll):
        a, b, e, al, be = (grid[:, i:i + 1] for i in range(5))
        lse = np.logaddexp(np.logaddexp(a - al * ln_n, b - be * ln_d), e)  # (G, m)
        r = np.abs(lse - ll)
        hub = np.where(r <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (r - 0.5 * HUBER_DELTA))
        return grid[np.argsort(hub.sum(axis=1))[:n_starts]]

    def lbfgs(ll, start):
        try:
            sol = optimize.minimize(_chinchilla_objective, start, args=(ln_n, ln_d, ll),
                                    jac=True, method="L-BFGS-B", bounds=bounds,
                                    options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-10})
        except (ValueError, FloatingPointError):
            return None, np.inf
        return (sol.x, sol.fun) if np.all(np.isfinite(sol.x)) else (None, np.inf)

    best, best_f = None, np.inf
    for start in grid_starts(ln_l):
        th, f = lbfgs(ln_l, start)
        if th is not None and f < best_f:
            best, best_f = th, f
    if best is None:
        return _failed(law, m, "optimiser did not converge")

    def to_vec(th):
        return np.array([math.exp(th[2]), math.exp(th[0]), math.exp(th[1]), th[3], th[4]])

    names = ["E", "A", "B", "alpha", "beta"]
    log_hat = logsumexp(np.stack([best[0] - best[3] * ln_n, best[1] - best[4] * ln_d,
                                  np.full_like(ln_n, best[2])]), axis=0)

    def refit(ll):  # bootstrap refits start from the optimum
        th = lbfgs(ll, best)[0]
        return None if th is None else to_vec(th)

    draws = _bootstrap(refit, log_hat, ln_l - log_hat, 5, n_boot, seed)
    params = dict(zip(names, map(float, to_vec(best))))
    rmse, r2 = _gof(L, np.exp(log_hat))
    status = "hit_bound" if _at_bound(best, lower, upper) else "converged"
    return FitResult(law, params, _intervals(names, draws), rmse, r2, m, status,
                     model=_chinchilla_model)


# --------------------------------------------------------------------------------------------
# Sigmoids: in log10 x (emergence) and in loss (OLMo two-step, second stage)
# --------------------------------------------------------------------------------------------

K_MAX = 100.0  # steepest sigmoid, per decade of x: 10%->90% within 0.044 decades (~10% in x)


def _sigmoid_model(p: dict, x, log_x: bool = True):
    u = np.log10(x) if log_x else x
    return p["floor"] + (p["ceil"] - p["floor"]) * expit(p["k"] * (u - p["x0"]))


def _sigmoid_fit_u(u, y, n_boot, seed, sigma=None, parametric=False):
    """Fit y = floor + (ceil - floor) * expit(k (u - x0)) with k >= 0; returns (theta, draws,
    lower, upper, yhat) or None. A falling curve has floor > ceil, so k >= 0 loses nothing."""
    span_u = float(np.ptp(u))
    span_y = max(float(np.ptp(y)), 1e-12)
    sig = np.ones_like(y) if sigma is None else np.asarray(sigma, float)
    lower = np.array([y.min() - span_y, y.min() - span_y, 0.0, u.min() - span_u])
    upper = np.array([y.max() + span_y, y.max() + span_y, K_MAX, u.max() + span_u])
    # grid over (k, x0); floor and ceil in closed form (variable projection)
    ks = np.geomspace(0.3 / span_u, K_MAX, 14)
    x0s = np.linspace(u.min() - 0.25 * span_u, u.max() + 0.25 * span_u, 41)
    kk, xx = (g.ravel() for g in np.meshgrid(ks, x0s, indexing="ij"))
    basis = expit(kk[:, None] * (u[None, :] - xx[:, None]))  # (G, m)

    def resid(th, yy):
        return (th[0] + (th[1] - th[0]) * expit(th[2] * (u - th[3])) - yy) / sig

    def jac(th, yy):
        s = expit(th[2] * (u - th[3]))
        ds = s * (1 - s) * (th[1] - th[0])
        return np.column_stack([1 - s, s, ds * (u - th[3]), -ds * th[2]]) / sig[:, None]

    def fit_once(yy, start=None):
        if start is None:
            c0, c1, rss = _linear_two(basis, yy, 1 / sig ** 2)
            i = int(np.argmin(rss))
            start = [c0[i], c0[i] + c1[i], kk[i], xx[i]]
            if kk[i] >= K_MAX and lower[0] <= start[0] <= upper[0] \
                    and lower[1] <= start[1] <= upper[1]:
                # a step between two points: the grid already has the least-squares levels,
                # and a polish could only push k into its bound
                return np.array(start)
        th, ok = _polish(lambda t: resid(t, yy), start, lower, upper, jac=lambda t: jac(t, yy))
        return th if ok else None

    theta = fit_once(y)
    if theta is None:
        return None
    yhat = y + resid(theta, y) * sig
    draws = _bootstrap(lambda ys: fit_once(ys, theta), yhat, y - yhat, 4, n_boot, seed,
                       sigma=sig, parametric=parametric)
    return theta, draws, lower, upper, yhat


def fit_sigmoid_logx(x, y, *, sigma=None, log_x: bool = True, n_boot: int = N_BOOT,
                     seed: int = SEED, parametric: bool = False) -> FitResult:
    """Fit y = floor + (ceil - floor) / (1 + exp(-k (log10 x - x0))).

    x0 is the midpoint in log10 x (the ability's threshold is 10^x0); k >= 0 is the steepness
    per decade, so the 10%->90% part of the rise spans 2 ln(9) / k ~ 4.39 / k decades. A
    falling curve comes out with floor > ceil. `sigma` (per-point noise) weights the least
    squares by 1 / sigma^2, and with `parametric` the bootstrap draws Gaussian noise of that
    size instead of resampling residuals. With `log_x=False` x is used as is (emergence uses it with
    x = -loss). Bounds: floor, ceil within one data range of the data, k <= 100, x0 within
    one x-range of the data.
    """
    law = "sigmoid_logx" if log_x else "sigmoid"
    try:
        x, y, sigma = _clean(x, y, np.ones_like(np.asarray(x, float)) if sigma is None
                             else sigma)
    except ValueError as exc:
        return _failed(law, 0, str(exc))
    keep = (sigma > 0) & ((x > 0) if log_x else True)
    x, y, sigma = x[keep], y[keep], sigma[keep]
    m = x.size
    if m < 4 or np.unique(x).size < 4:
        return _failed(law, m, "needs at least 4 distinct x values")
    u = np.log10(x) if log_x else x
    out = _sigmoid_fit_u(u, y, n_boot, seed, sigma, parametric and sigma is not None)
    if out is None:
        return _failed(law, m, "optimiser did not converge")
    theta, draws, lower, upper, yhat = out
    names = ["floor", "ceil", "k", "x0"]
    params = dict(zip(names, map(float, theta)))
    rmse, r2 = _gof(y, yhat)
    status = "hit_bound" if _at_bound(theta[2:], lower[2:], upper[2:]) else "converged"
    return FitResult(law, params, _intervals(names, draws), rmse, r2, m, status,
                     model=lambda p, xx: _sigmoid_model(p, xx, log_x), draws=draws)


def _loss_metric_model(p: dict, loss):
    return p["a"] * expit(p["k"] * (loss - p["L0"])) + p["b"]


@functools.lru_cache(maxsize=4)
def _loss_metric_grid(loss_bytes: bytes) -> tuple[np.ndarray, np.ndarray, _LinearTwo]:
    """The starting grid of `fit_loss_to_metric` over (k, L0), with its basis, for one loss
    vector (as bytes, so it can be a cache key): the backtest fits every metric against the
    same checkpoints' losses, and the grid was most of each fit's time."""
    loss = np.frombuffer(loss_bytes, dtype=float)
    span_l = float(np.ptp(loss))
    k_max = 50.0 / span_l
    ks = np.concatenate([-np.geomspace(0.3 / span_l, k_max, 10), np.geomspace(0.3 / span_l,
                                                                              k_max, 10)])
    l0s = np.linspace(loss.min() - 0.25 * span_l, loss.max() + 0.25 * span_l, 31)
    kk, ll = (g.ravel() for g in np.meshgrid(ks, l0s, indexing="ij"))
    basis = expit(kk[:, None] * (loss[None, :] - ll[:, None]))
    return kk, ll, _LinearTwo(basis, np.ones_like(loss))


def fit_loss_to_metric(loss, y, *, n_boot: int = N_BOOT, seed: int = SEED) -> FitResult:
    """Fit y = a / (1 + exp(-k (L - L0))) + b (OLMo ladder two-step, second stage).

    L is the loss predicted by the first stage (here the validation loss); a >= 0, so a metric
    that improves as loss falls has k < 0. Bounds: |k| <= 50 / range(L), L0 within one loss
    range of the data, b within one metric range of the data.
    """
    law = "loss_to_metric"
    try:
        loss, y = _clean(loss, y)
    except ValueError as exc:
        return _failed(law, 0, str(exc))
    m = loss.size
    if m < 5 or np.unique(loss).size < 4:
        return _failed(law, m, "needs at least 5 points with 4 distinct losses")
    span_l = float(np.ptp(loss))
    span_y = max(float(np.ptp(y)), 1e-12)
    k_max = 50.0 / span_l
    lower = np.array([0.0, -k_max, loss.min() - span_l, y.min() - span_y])
    upper = np.array([2 * span_y + 1e-9, k_max, loss.max() + span_l, y.max() + span_y])
    kk, ll, grid = _loss_metric_grid(loss.tobytes())

    def resid(th, yy):
        return th[0] * expit(th[1] * (loss - th[2])) + th[3] - yy

    def jac(th, yy):
        s = expit(th[1] * (loss - th[2]))
        ds = th[0] * s * (1 - s)
        return np.column_stack([s, ds * (loss - th[2]), -ds * th[1], np.ones_like(s)])

    def fit_once(yy, start=None):
        if start is None:
            b, a, rss = grid(yy)
            rss = np.where(a >= 0, rss, np.inf)  # a < 0 is the same curve with k flipped
            i = int(np.argmin(rss))
            start = [a[i], kk[i], ll[i], b[i]]
        th, ok = _polish(lambda t: resid(t, yy), start, lower, upper, jac=lambda t: jac(t, yy))
        return th if ok else None

    theta = fit_once(y)
    if theta is None:
        return _failed(law, m, "optimiser did not converge")
    yhat = y + resid(theta, y)
    draws = _bootstrap(lambda ys: fit_once(ys, theta), yhat, y - yhat, 4, n_boot, seed)
    names = ["a", "k", "L0", "b"]
    params = dict(zip(names, map(float, theta)))
    rmse, r2 = _gof(y, yhat)
    status = "hit_bound" if _at_bound(theta[:3], lower[:3], upper[:3]) else "converged"
    return FitResult(law, params, _intervals(names, draws), rmse, r2, m, status,
                     model=_loss_metric_model)


# --------------------------------------------------------------------------------------------
# Broken power law with one break (Caballero et al. 2023)
# --------------------------------------------------------------------------------------------

def _bpl_model(p: dict, x):
    z = (np.log(x) - np.log(p["d1"])) / p["f1"]
    return p["a"] + p["b"] * np.exp(-p["c0"] * np.log(x) - p["c1"] * p["f1"]
                                    * np.logaddexp(0.0, z))


def fit_broken_power_law(x, y, *, n_boot: int = N_BOOT, seed: int = SEED) -> FitResult:
    """Fit y = a + b x^(-c0) (1 + (x / d1)^(1 / f1))^(-c1 f1) (one break; Caballero et al.).

    Below the break d1 the curve falls with exponent c0, above it with c0 + c1; f1 > 0 sets
    how sharp the break is. As in the paper the start comes from a grid search in log space:
    (c0, c1, log d1, f1) on a grid with (a, b) in closed form, then a bounded polish of all six.
    Needs at least 7 distinct x. Bounds: -2 <= c0 <= 3, -3 <= c1 <= 5, 0.01 <= f1 <= 10,
    d1 within two e-folds of the data range.
    """
    law = "broken_power_law"
    try:
        x, y = _clean(x, y)
    except ValueError as exc:
        return _failed(law, 0, str(exc))
    keep = x > 0
    x, y = x[keep], y[keep]
    m = x.size
    if m < 7 or np.unique(x).size < 7:
        return _failed(law, m, "needs at least 7 distinct positive x values")
    x_ref = float(np.exp(np.mean(np.log(x))))
    lx = np.log(x / x_ref)
    lower = np.array([-np.inf, -np.inf, -2.0, -3.0, lx.min() - 2.0, 0.01])
    upper = np.array([np.inf, np.inf, 3.0, 5.0, lx.max() + 2.0, 10.0])

    def g(c0, c1, ld, f1):
        return np.exp(-c0 * lx - c1 * f1 * np.logaddexp(0.0, (lx - ld) / f1))

    c0s, c1s = np.linspace(-0.5, 1.5, 9), np.linspace(-1.0, 2.0, 9)
    lds, f1s = np.linspace(lx.min(), lx.max(), 12), np.array([0.1, 0.3, 1.0, 3.0])
    grid = np.array(np.meshgrid(c0s, c1s, lds, f1s, indexing="ij")).reshape(4, -1).T
    with np.errstate(over="ignore", invalid="ignore"):
        basis = g(*(grid[:, i:i + 1] for i in range(4)))
    finite = np.all(np.isfinite(basis), axis=1)
    grid, basis = grid[finite], basis[finite]

    def resid(th, yy):
        return th[0] + th[1] * g(*th[2:]) - yy

    def fit_once(yy, start=None):
        if start is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                th, ok = _polish(lambda t: resid(t, yy), start, lower, upper)
            return th if ok else None
        # six parameters have local optima: polish the 8 best grid points, keep the best
        a, b, rss = _linear_two(basis, yy)
        best, best_cost = None, np.inf
        for i in np.argsort(np.where(np.isfinite(rss), rss, np.inf))[:8]:
            th = fit_once(yy, [a[i], b[i], *grid[i]])
            if th is not None:
                with np.errstate(over="ignore", invalid="ignore"):
                    cost = float(np.sum(resid(th, yy) ** 2))
                if cost < best_cost:
                    best, best_cost = th, cost
        return best

    theta = fit_once(y)
    if theta is None:
        return _failed(law, m, "optimiser did not converge")

    def to_vec(th):  # back to original units of x
        return np.array([th[0], th[1] * x_ref ** th[2], th[2], th[3],
                         x_ref * math.exp(th[4]), th[5]])

    def refit(ys):  # bootstrap refits start from the optimum
        th = fit_once(ys, theta)
        return None if th is None else to_vec(th)

    yhat = y + resid(theta, y)
    draws = _bootstrap(refit, yhat, y - yhat, 6, n_boot, seed)
    names = ["a", "b", "c0", "c1", "d1", "f1"]
    params = dict(zip(names, map(float, to_vec(theta))))
    rmse, r2 = _gof(y, yhat)
    status = "hit_bound" if _at_bound(theta[2:], lower[2:], upper[2:]) else "converged"
    return FitResult(law, params, _intervals(names, draws), rmse, r2, m, status,
                     model=_bpl_model)
