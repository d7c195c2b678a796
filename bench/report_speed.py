"""Wall time of `scaling report` on a large synthetic ladder, end to end and per phase.

    python bench/report_speed.py                    # 50 runs x 20 checkpoints x 40 tasks
    python bench/report_speed.py --runs 4 --seeds 1 --tasks 2 --checkpoints 8 --no-default
    python bench/report_speed.py --keep /tmp/big.csv   # also keep the synthetic results file

The synthetic results follow the results schema: a ladder of sizes x replicate seeds (run i
has size i // seeds), log-spaced checkpoints, and per checkpoint the validation loss
(a Chinchilla-shaped L(N, D) plus seed and checkpoint noise) and every task's four metrics
(exact_match, token_accuracy, edit_similarity, answer_logprob), with n = 200 instances and
binomial noise. A task's per-token accuracy follows the model's capability (its loss): the
tasks cycle through truly emergent (token accuracy jumps), mirage (token accuracy rises
smoothly, exact match = token accuracy ^ answer length looks abrupt), smooth and flat; every
fourth task has a `chance` of 0.25 for exact match.

Timed: `analysis.report.build_report` end to end (the CLI's work after argument parsing),
then the phases of `analysis/report.py::_build` called one after another in its order
(loading, loss fits, emergence.detect, dynamics.detect, mirage, backtest, figures, seeds,
writing), with each figure timed by wrapping the `analysis.figures` functions. In the report
itself dynamics.detect runs in worker processes while this process does the emergence
verdicts, backtest and figures, so the phases add up to more than the end-to-end time. The
same table is printed for the shipped default report (reports/results.csv).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from analysis import backtest, dynamics, emergence, figures, fits, mirage, report, seeds  # noqa: E402
from scaling.results import load  # noqa: E402

DEFAULT_RESULTS = ROOT / "reports" / "results.csv"
METRICS = ("exact_match", "token_accuracy", "edit_similarity", "answer_logprob")
KINDS = ("emergent", "mirage", "smooth", "flat")
N_INSTANCES = 200
TOKENS_PER_STEP = 4096
FIGURES = ("loss_vs_compute", "metric_vs_params", "mirage_panels", "discontinuous_heatmap",
           "training_curves", "backtest_plot")


# --------------------------------------------------------------------------------------------
# synthetic results
# --------------------------------------------------------------------------------------------

def _ladder(runs: int, seeds: int, checkpoints: int):
    """(size index per run, seed per run, params per size, steps): sizes 1e4 to 3e7."""
    n_sizes = math.ceil(runs / seeds)
    params = np.round(np.geomspace(1e4, 3e7, n_sizes)).astype(np.int64)
    size_of = np.arange(runs) // seeds
    seed_of = np.arange(runs) % seeds
    steps = np.unique(np.round(np.geomspace(10, 10_000, checkpoints)).astype(np.int64))
    return size_of, seed_of, params, steps


def _val_loss(n_params, tokens, rng) -> np.ndarray:
    """L(N, D) = E + A / N^alpha + B / D^beta, a per-run offset and per-checkpoint noise.

    n_params is (R, 1), tokens (1, C); returns (R, C)."""
    clean = 1.7 + 40.0 / n_params ** 0.34 + 40.0 / tokens ** 0.28
    run_offset = rng.normal(0, 0.01, size=(n_params.shape[0], 1))
    return clean + run_offset + rng.normal(0, 0.004, size=clean.shape)


def _token_accuracy(kind: str, cap: np.ndarray, onset: float) -> np.ndarray:
    """Per-token accuracy from capability in [0, 1] (0: the worst loss, 1: the best)."""
    if kind == "emergent":  # the ability itself switches on
        return 0.05 + 0.9 * (1 / (1 + np.exp(-25 * (cap - onset))))
    if kind == "mirage":  # smooth per token; exact match = q^len looks abrupt
        return 0.3 + 0.65 * cap
    if kind == "smooth":
        return 0.1 + 0.8 * cap ** 0.5
    return np.full_like(cap, 0.08)  # flat


def _task_scores(kind, cap, onset, length, chance, rng) -> dict[str, np.ndarray]:
    """The four metrics of one task, each (R, C), with the noise of N_INSTANCES instances."""
    q = _token_accuracy(kind, cap, onset)
    p_exact = q ** length if kind != "smooth" else 0.05 + 0.85 * cap
    if np.isfinite(chance):
        p_exact = chance + (1 - chance) * p_exact
    n_tok = N_INSTANCES * length
    return {
        "exact_match": rng.binomial(N_INSTANCES, np.clip(p_exact, 0, 1)) / N_INSTANCES,
        "token_accuracy": rng.binomial(n_tok, q) / n_tok,
        "edit_similarity": np.clip(0.85 * q + 0.15 * np.sqrt(q)
                                   + rng.normal(0, 0.01, q.shape), 0, 1),
        # a log-probability is <= 0 (the loader refuses anything else)
        "answer_logprob": np.minimum(length * np.log(q) + rng.normal(0, 0.05, q.shape), 0.0),
    }


def synthetic_results(runs: int = 50, seeds: int = 5, checkpoints: int = 20, tasks: int = 40,
                      seed: int = 0) -> pd.DataFrame:
    """A results table of runs x checkpoints x (1 + tasks x 4) rows (see the docstring)."""
    rng = np.random.default_rng(seed)
    size_of, seed_of, params, steps = _ladder(runs, seeds, checkpoints)
    n_params = params[size_of].astype(float)[:, None]
    tokens = (steps * TOKENS_PER_STEP).astype(float)[None, :]
    loss = _val_loss(n_params, tokens, rng)
    # capability 0 a little above the worst final loss, 1 at the best: the ladder's last
    # checkpoints span most of it, early checkpoints of small runs sit at 0
    final = loss[:, -1]
    top = final.max() + 0.3 * np.ptp(final)
    cap = np.clip((top - loss) / (top - final.min()), 0, 1)
    # blocks[(task, metric)] = (values (R, C), chance); the val loss first
    blocks = [("val", "loss", loss, np.nan, 65536)]
    for t in range(tasks):
        kind, onset, length = KINDS[t % 4], rng.uniform(0.35, 0.75), 2 + t % 5
        chance = 0.25 if t % 4 == 3 else np.nan
        scores = _task_scores(kind, cap, onset, length, chance, rng)
        blocks += [(f"task_{t}", m, scores[m], chance if m == "exact_match" else np.nan,
                    N_INSTANCES) for m in METRICS]
    return _long_table(blocks, size_of, seed_of, params, steps)


def _long_table(blocks, size_of, seed_of, params, steps) -> pd.DataFrame:
    """Tidy rows ordered run, step, (task, metric), as the evaluator writes them."""
    n_runs, n_ckpt, n_blk = size_of.size, steps.size, len(blocks)
    run_i = np.repeat(np.arange(n_runs), n_ckpt * n_blk)
    ckpt_i = np.tile(np.repeat(np.arange(n_ckpt), n_blk), n_runs)
    blk_i = np.tile(np.arange(n_blk), n_runs * n_ckpt)
    values = np.stack([b[2] for b in blocks], axis=-1)  # (R, C, B)
    rung = np.array([f"s{i}" for i in size_of])
    run_names = np.array([f"s{i}-seed{s}" for i, s in zip(size_of, seed_of)])
    n_params = params[size_of][run_i]
    step = steps[ckpt_i]
    tokens = step * TOKENS_PER_STEP
    return pd.DataFrame({
        "run": run_names[run_i], "rung": rung[run_i], "params": n_params,
        "nonembed_params": (n_params * 0.8).astype(np.int64), "step": step, "tokens": tokens,
        "flops": 6.0 * n_params * tokens,
        "task": np.array([b[0] for b in blocks])[blk_i], "shots": 0,
        "metric": np.array([b[1] for b in blocks])[blk_i],
        "value": values[run_i, ckpt_i, blk_i],
        "n": np.array([b[4] for b in blocks])[blk_i],
        "chance": np.array([b[3] for b in blocks], dtype=float)[blk_i],
        "seed": seed_of[run_i], "data_hash": "synthetic",
    })


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------

class Clock:
    """Seconds per named phase, in the order first seen."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


@contextlib.contextmanager
def _timed_figures(clock: Clock):
    """Wrap each figure function of analysis.figures so its time lands in `clock`."""
    originals = {name: getattr(figures, name) for name in FIGURES}

    def wrap(name, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            with clock(f"  figure {name}"):
                return fn(*args, **kwargs)
        return timed

    try:
        for name, fn in originals.items():
            setattr(figures, name, wrap(name, fn))
        yield
    finally:
        for name, fn in originals.items():
            setattr(figures, name, fn)


def time_end_to_end(results: Path, n_boot: int) -> float:
    """Seconds of build_report into a fresh directory (removed afterwards)."""
    out = Path(tempfile.mkdtemp(prefix="report-speed-"))
    try:
        t0 = time.perf_counter()
        report.build_report(results, out / "report", n_boot=n_boot)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)


def time_phases(results: Path, n_boot: int) -> dict[str, float]:
    """Seconds of each phase of report._build, run one after another in its order."""
    clock = Clock()
    tmp = Path(tempfile.mkdtemp(prefix="report-phases-"))
    try:
        with clock("loading"):
            df = report._prepare(load(results))
        with warnings.catch_warnings(), fits.one_blas_thread():
            warnings.simplefilter("ignore")  # as build_report does
            _run_phases(df, tmp, n_boot, clock)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return clock.seconds


def _run_phases(df: pd.DataFrame, tmp: Path, n_boot: int, clock: Clock) -> None:
    with clock("loss fits"):
        laws, fitted = report.loss_fits(df, n_boot)
    with clock("emergence.detect"):
        em, em_verdicts = emergence.detect(df, n_boot=n_boot)
    with clock("dynamics.detect"):
        dyn, dyn_verdicts = dynamics.detect(df, n_boot=max(n_boot // 5, 20) if n_boot else 0)
    with clock("mirage"):
        mir = mirage.mirage_table(em, results=df)
    with clock("backtest"):
        bt, bt_fits = backtest.backtest(df)
    with clock("figures"), _timed_figures(clock):
        figs = report._figures(df, laws, em_verdicts, mir, bt, tmp / "figures")
    with clock("seeds"):
        spread = seeds.seed_spread(df)
    with clock("writing"):
        fitted += [({}, v.sigmoid) for v in (*em_verdicts.values(), *dyn_verdicts.values())
                   if v.sigmoid is not None] + bt_fits
        tables = {"emergence": em, "dynamics": dyn, "mirage": mir,
                  "fits": report.fits_table(fitted), "backtest": bt, "seeds": spread}
        for name, table in tables.items():
            table.to_csv(tmp / f"{name}.csv", index=False)
        md = report.write_markdown(df, laws, em, dyn, mir, bt, spread, figs)
        (tmp / "report.md").write_text(md)
        (tmp / "report.html").write_text(report.markdown_to_html(md))


def print_table(columns: dict[str, tuple[float, dict[str, float]]]) -> None:
    """One row per phase, one column per results file; the total and end to end last."""
    names = list(dict.fromkeys(k for _, phases in columns.values() for k in phases))
    width = max(24, *(len(n) + 2 for n in names))
    print(f"{'seconds':<{width}}" + "".join(f"{c:>16}" for c in columns))
    for name in names:
        cells = "".join(f"{ph[name]:16.2f}" if name in ph else f"{'-':>16}"
                        for _, ph in columns.values())
        print(f"{name:<{width}}{cells}")
    top = [{k: v for k, v in ph.items() if not k.startswith(" ")} for _, ph in columns.values()]
    print(f"{'sum of phases':<{width}}" + "".join(f"{sum(t.values()):16.2f}" for t in top))
    print(f"{'build_report end to end':<{width}}"
          + "".join(f"{e2e:16.2f}" for e2e, _ in columns.values()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=50, help="runs (sizes x seeds; default 50)")
    p.add_argument("--seeds", type=int, default=5, help="replicate runs per size (default 5)")
    p.add_argument("--checkpoints", type=int, default=20, help="checkpoints per run")
    p.add_argument("--tasks", type=int, default=40, help="probe tasks, 4 metrics each")
    p.add_argument("--bootstrap", type=int, default=100, help="as `scaling report --bootstrap`")
    p.add_argument("--keep", metavar="FILE", help="write the synthetic results here and keep it")
    p.add_argument("--no-default", action="store_true",
                   help="skip the shipped default report (reports/results.csv)")
    args = p.parse_args(argv)

    df = synthetic_results(args.runs, args.seeds, args.checkpoints, args.tasks)
    with tempfile.TemporaryDirectory(prefix="report-speed-") as folder:
        path = Path(args.keep) if args.keep else Path(folder) / "results.csv"
        df.to_csv(path, index=False)
        print(f"synthetic: {len(df):,} rows ({args.runs} runs x {df.step.nunique()} checkpoints "
              f"x ({args.tasks} tasks x {len(METRICS)} metrics + val loss)), "
              f"bootstrap {args.bootstrap}")
        columns = {"synthetic": (time_end_to_end(path, args.bootstrap),
                                 time_phases(path, args.bootstrap))}
    if not args.no_default and DEFAULT_RESULTS.exists():
        columns["default"] = (time_end_to_end(DEFAULT_RESULTS, args.bootstrap),
                              time_phases(DEFAULT_RESULTS, args.bootstrap))
    print_table(columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
