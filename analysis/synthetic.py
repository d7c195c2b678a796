"""Synthetic ladders with known truth: the instrument tests of the verdicts.

Each case is a generator `case(rng) -> Draw`: scores at a ladder of sizes drawn with
binomial noise from a known curve, with the verdict a correct analysis should give and,
for emergence, the true threshold. `tests/test_verdict_rates.py` runs many seeded draws
per case and asserts the rates; `bench/verdict_rates.py` prints them with more draws.
Curves are in u = log10(params); sizes span 1e5..1e8 whatever the number of rungs.
"""

from __future__ import annotations

import math

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import expit


@dataclass
class Draw:
    """One synthetic series: x (params, replicates repeated), scores, n, chance, truth."""

    x: np.ndarray
    y: np.ndarray
    n: np.ndarray
    chance: float
    truth: str  # the verdict a correct analysis gives
    threshold: float = np.nan  # true threshold (axis units) for emergent truths
    outlier: float = np.nan  # axis value of a planted outlier
    seeds_agree: object = None  # planted replicate agreement (None: no replicates)


def ladder(m: int) -> np.ndarray:
    """m log-spaced sizes from 1e5 to 1e8 parameters."""
    return np.geomspace(1e5, 1e8, m)


def sigmoid(u, mid, k, floor, ceil):
    """floor + (ceil - floor) / (1 + exp(-k (u - mid)))."""
    return floor + (ceil - floor) * expit(k * (u - mid))


def binomial(rng, p, n):
    """Observed proportions of n examples at true rates p."""
    return rng.binomial(n, np.clip(p, 0, 1)) / n


def _draw(rng, x, p, n, chance, truth, **kw) -> Draw:
    nn = np.full(x.size, n)
    return Draw(x, binomial(rng, p, n), nn, chance, truth, **kw)


def sharp_emergence(m: int, n: int = 200, chance: float = 0.1, ceil: float = 0.9,
                    k: float = 30.0) -> Callable:
    """A sharp sigmoid from chance to `ceil` with its midpoint placed at random between
    the second and the third-from-last rung (two or more rungs below, two above)."""
    def case(rng):
        x = ladder(m)
        u = np.log10(x)
        # 10% of the rise after the second rung, 90% before the second-to-last
        lo, hi = u[1] + math.log(9) / k, u[-2] - math.log(9) / k
        mid = rng.uniform(lo, hi)
        while min(abs(u - mid)) < 0.05:  # keep the midpoint off a rung (a coin flip there)
            mid = rng.uniform(lo, hi)
        return _draw(rng, x, sigmoid(u, mid, k, chance, ceil), n, chance, "emergent",
                     threshold=10 ** mid)
    return case


def gradual_emergence(m: int = 12, n: int = 500, chance: float = 0.0) -> Callable:
    """A sigmoid whose 10%-90% rise spans about one decade, with points inside it."""
    def case(rng):
        x = ladder(m)
        u = np.log10(x)
        mid = rng.uniform(6.2, 6.8)
        return _draw(rng, x, sigmoid(u, mid, 4.4, chance, 0.9), n, chance, "emergent",
                     threshold=10 ** mid)
    return case


def linear_trend(m: int, lo: float, hi: float, n: int, chance: float = np.nan) -> Callable:
    """A rise linear in log size from lo to hi: smooth."""
    def case(rng):
        x = ladder(m)
        return _draw(rng, x, np.linspace(lo, hi, m), n, chance, "smooth")
    return case


def flat(m: int, level: float, n: int, chance: float = np.nan) -> Callable:
    """The same true rate at every size (at chance when level == chance): flat."""
    def case(rng):
        x = ladder(m)
        return _draw(rng, x, np.full(m, level), n, chance, "flat")
    return case


def zero_to_chance(m: int, chance: float, n: int = 200) -> Callable:
    """Exact match rising sharply from 0 to the chance level: the answer format is learned,
    not the ability: flat (never above chance)."""
    def case(rng):
        x = ladder(m)
        u = np.log10(x)
        mid = rng.uniform(u[1], u[-2])
        return _draw(rng, x, sigmoid(u, mid, 30.0, 0.0, chance), n, chance, "flat")
    return case


def outlier_after_rise(m: int = 8, n: int = 200, chance: float = 0.1) -> Callable:
    """A sharp rise, then one rung that failed (scores 0) somewhere after it: emergent,
    with that rung named as the outlier."""
    def case(rng):
        x = ladder(m)
        u = np.log10(x)
        j = int(rng.integers(2, m - 2))  # the rise is between rungs j-1 and j
        mid = 0.5 * (u[j - 1] + u[j])
        p = sigmoid(u, mid, 30.0, chance, 0.9)
        # not the first rung past the rise (a failure there only looks like a later rise),
        # and two good rungs must remain past the threshold
        bad = int(rng.integers(j + 1, m))
        p[bad] = 0.0
        return _draw(rng, x, p, n, chance, "emergent", threshold=10 ** mid, outlier=x[bad])
    return case


def u_shape(m: int = 8, n: int = 200, inverted: bool = False) -> Callable:
    """A curve that falls then rises (or rises then falls), each arm three or more rungs."""
    def case(rng):
        x = ladder(m)
        u = np.log10(x)
        mid = rng.uniform(u[2], u[-3])
        depth = 0.6 * np.abs(u - mid) / max(abs(u[0] - mid), abs(u[-1] - mid))
        p = 0.8 - depth if inverted else 0.1 + depth
        return _draw(rng, x, p, n, np.nan, "non_monotone")
    return case


def seeds(m: int = 6, reps: int = 3, n: int = 200, agree: bool = True) -> Callable:
    """A sharp rise at the middle rung with `reps` replicates per size. Disagreeing seeds:
    at the top two rungs one replicate never learns the ability (scores chance)."""
    def case(rng):
        x1 = ladder(m)
        u = np.log10(x1)
        mid = 0.5 * (u[m // 2 - 1] + u[m // 2])
        p = np.tile(sigmoid(u, mid, 30.0, 0.1, 0.9), (reps, 1))
        if not agree:
            p[int(rng.integers(reps)), -2:] = 0.1
        x = np.tile(x1, reps)
        truth = "emergent" if agree else "seed_dependent"
        return Draw(x, binomial(rng, p.ravel(), n), np.full(x.size, n), 0.1, truth,
                    threshold=10 ** mid, seeds_agree=agree)
    return case


# --------------------------------------------------------------------------------------------
# training dynamics: checkpoints of one run
# --------------------------------------------------------------------------------------------

STEPS = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 640, 768, 896, 1024, 1152, 1280,
                  1408, 1464])  # Pythia's log-spaced saves, then every 128 steps
TOKENS_PER_STEP = 2048


def training_run(rng, run: str, generic_tasks: int = 10, real_jump: bool = True,
                 n: int = 200, chance: float = 0.1) -> tuple[list[dict], set]:
    """Results rows (the schema's columns) of one run whose `generic_tasks` metrics rise as
    functions of its validation loss (learning in general: fast through warmup and early
    training), plus, with `real_jump`, one task that jumps late (between 35% and 85% of
    training) from chance to 0.85 while the loss barely moves. Returns (rows, the set of
    (run, task) with a real transition)."""
    steps = STEPS.astype(float)
    warm = 0.05 * steps[-1]  # 5% linear warmup: the loss barely moves in the first steps
    progress = np.minimum(steps / warm, 1.0) * steps
    loss = 1.7 + 3.1 / (1 + progress / 40.0) ** 0.8
    loss = loss + rng.normal(0, 0.003, loss.size)
    learned = np.clip((loss[0] - loss) / (loss[0] - loss.min()), 0, 1)  # 0 -> 1 as it falls
    base = {"run": run, "rung": "s", "params": 100_000, "nonembed_params": 90_000,
            "shots": 0, "chance": chance}
    rows = [dict(base, step=int(s), tokens=int(s * TOKENS_PER_STEP),
                 flops=6e5 * s * TOKENS_PER_STEP, task="val", metric="loss", value=v,
                 n=65536, chance=np.nan) for s, v in zip(steps, loss)]
    truth = set()
    curves = {}
    for t in range(generic_tasks):
        ceil = rng.uniform(0.3, 0.9)
        shape = rng.uniform(0.8, 2.0)  # convex or concave in the loss, never abrupt
        curves[f"generic_{t}"] = chance + (ceil - chance) * learned ** shape
    if real_jump:
        at = rng.uniform(0.35, 0.85) * steps[-1]
        curves["late_jump"] = sigmoid(np.log10(steps), np.log10(at), 25.0, chance, 0.85)
        truth.add((run, "late_jump"))
    for task, p in curves.items():
        for s, v in zip(steps, binomial(rng, p, n)):
            rows.append(dict(base, step=int(s), tokens=int(s * TOKENS_PER_STEP),
                             flops=6e5 * s * TOKENS_PER_STEP, task=task,
                             metric="exact_match", value=v, n=n))
    return rows, truth


# --------------------------------------------------------------------------------------------
# the cases of the instrument tests: name -> (generator, truth)
# --------------------------------------------------------------------------------------------

CASES = {
    **{f"sharp emergence, {m} rungs": (sharp_emergence(m), "emergent") for m in (4, 5, 6, 8, 12)},
    "sharp emergence from 0, n=100": (sharp_emergence(8, n=100, chance=0.0), "emergent"),
    "sharp emergence, steepness past the fit's bound": (sharp_emergence(8, k=300.0),
                                                        "emergent"),
    "gradual emergence (1 decade), 12 rungs": (gradual_emergence(), "emergent"),
    "line 0.1 -> 0.5, 5 rungs, n=100": (linear_trend(5, 0.1, 0.5, 100), "smooth"),
    "line 0.1 -> 0.5, 5 rungs, n=1000": (linear_trend(5, 0.1, 0.5, 1000), "smooth"),
    "weak: accuracy 0.25 -> 0.40 (chance), n=100, 8 rungs": (
        linear_trend(8, 0.25, 0.40, 100, 0.25), "smooth"),
    "weak: accuracy 0.25 -> 0.40 (chance), n=100, 12 rungs": (
        linear_trend(12, 0.25, 0.40, 100, 0.25), "smooth"),
    "weak: exact match 0.05 -> 0.15, n=500, 8 rungs": (linear_trend(8, 0.05, 0.15, 500),
                                                       "smooth"),
    "weak: exact match 0.05 -> 0.15, n=500, 12 rungs": (linear_trend(12, 0.05, 0.15, 500),
                                                        "smooth"),
    **{f"flat at chance 0.25, {m} rungs": (flat(m, 0.25, 100, 0.25), "flat") for m in (4, 8, 12)},
    **{f"flat at 0.3, chance unknown, {m} rungs": (flat(m, 0.3, 500), "flat")
       for m in (4, 8, 12)},
    "0 -> chance 0.1, 8 rungs": (zero_to_chance(8, 0.1), "flat"),
    "0 -> chance 0.25, 6 rungs": (zero_to_chance(6, 0.25), "flat"),
    "sharp rise, one failed rung after it": (outlier_after_rise(), "emergent"),
    "U shape": (u_shape(), "non_monotone"),
    "inverted U": (u_shape(inverted=True), "non_monotone"),
    "3 seeds that agree": (seeds(agree=True), "emergent"),
    "3 seeds, one never learns at the top two rungs": (seeds(agree=False), "emergent"),
}


# --------------------------------------------------------------------------------------------
# measuring rates
# --------------------------------------------------------------------------------------------

@dataclass
class Rates:
    """What the verdicts did over many draws of one case."""

    draws: int
    verdicts: dict  # verdict -> share of draws
    coverage: float = np.nan  # share of emergent verdicts whose interval holds the truth
    outlier_named: float = np.nan  # share of draws naming the planted outlier
    seeds_right: float = np.nan  # share of draws where holds_across_seeds is the truth

    def share(self, *verdicts: str) -> float:
        """Share of draws with any of these verdicts."""
        return float(sum(self.verdicts.get(v, 0.0) for v in verdicts))


def rates(case: Callable, draws: int, n_boot: int = 0, seed: int = 0) -> Rates:
    """Classify `draws` seeded draws of `case` (draw i uses seed + i) and count."""
    from analysis import emergence  # here, so that generators import without the analysis

    counts: dict[str, int] = {}
    covered, named, seeds_right = [], [], []
    for i in range(draws):
        d = case(np.random.default_rng(seed + i))
        v = emergence.classify(d.x, d.y, d.n, chance=d.chance, n_boot=n_boot)
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
        if n_boot and v.verdict == "emergent" and np.isfinite(d.threshold):
            covered.append(v.threshold_low <= d.threshold <= v.threshold_high)
        if np.isfinite(d.outlier):
            named.append(v.outlier == d.outlier)
        if d.seeds_agree is not None:
            seeds_right.append(v.holds_across_seeds is d.seeds_agree)
    return Rates(draws, {k: c / draws for k, c in counts.items()}, _mean(covered),
                 _mean(named), _mean(seeds_right))


def _mean(flags: list) -> float:
    return float(np.mean(flags)) if flags else np.nan


def dynamics_rates(draws: int, runs: int = 3, seed: int = 0) -> tuple[float, float]:
    """(precision, recall) of the transitions dynamics.detect flags on `draws` ladders of
    `runs` runs, each with ten generic tasks and one real late jump."""
    import pandas as pd

    from analysis import dynamics

    tp = fp = fn = 0
    for i in range(draws):
        rng = np.random.default_rng(seed + i)
        rows, truth = [], set()
        for r in range(runs):
            run_rows, run_truth = training_run(rng, f"r{r}")
            rows += run_rows
            truth |= run_truth
        dyn, _ = dynamics.detect(pd.DataFrame(rows), n_boot=0)
        hit = dyn[dyn.verdict == "emergent"]
        flagged = set(zip(hit.run, hit.task))
        tp += len(flagged & truth)
        fp += len(flagged - truth)
        fn += len(truth - flagged)
    return (tp / (tp + fp) if tp + fp else np.nan), tp / (tp + fn)
