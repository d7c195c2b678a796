"""Backtest: predict the largest rungs from the smaller ones (OLMo ladder style).

For holdout h in (1, 2): the runs at the h largest distinct `params` values are held out.
On the remaining runs:

1. Validation loss: L(N) = E + A N^-alpha (`fits.fit_power_law`) on each run's last
   checkpoint, N = params; predicts each held-out run's final validation loss.
2. Task metrics, two-step (Bhagia et al. 2024): y = a / (1 + exp(-k (L - L0))) + b
   (`fits.fit_loss_to_metric`) fitted on EVERY checkpoint of the kept runs (the loss->metric
   map does not depend on how the loss was reached, and more checkpoints pin it down better),
   then evaluated at the loss predicted in step 1.

Every prediction is a row with the actual value at the held-out run's last checkpoint and
the absolute error. `predicted_from_actual_loss` evaluates step 2 at the true loss, which
separates the error of step 2 from the error carried over from step 1. Predictions are
clipped to the metric's range (`scaling.results.METRIC_RANGE`: an exact match above 1 or a
positive log-probability is no prediction anyone could check), so a fitted curve that
overshoots counts as predicting the bound.

A holdout needs validation loss at 3 or more kept sizes; without it (e.g. published scores of
another model family, which carry no loss) there is no row for it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import emergence, fits
from scaling.results import METRIC_RANGE, val_loss_rows

HOLDOUTS = (1, 2)
COLUMNS = ["holdout", "run", "rung", "params", "task", "shots", "metric", "method", "actual",
           "predicted", "abs_error", "predicted_from_actual_loss", "status"]


def _val_loss(df: pd.DataFrame) -> pd.DataFrame:
    return val_loss_rows(df)[["run", "step", "value"]].rename(columns={"value": "loss"})


def clip_to_range(metric: str, predicted):
    """Predictions inside the metric's range (unchanged for metrics without one)."""
    lo, hi = METRIC_RANGE.get(metric, (-np.inf, np.inf))
    return np.clip(np.asarray(predicted, dtype=float), lo, hi)


def backtest(df: pd.DataFrame, holdouts=HOLDOUTS) -> tuple[pd.DataFrame, list[tuple]]:
    """backtest.csv as a DataFrame, plus [(labels, FitResult)] for fits.csv."""
    last = emergence.last_checkpoints(df)
    sizes = np.sort(last.params.unique())
    val = _val_loss(df)
    pairs = emergence.probe_rows(df).merge(val, on=["run", "step"], how="inner")
    fitted, parts = [], []
    for h in holdouts:
        if sizes.size - h < 3:
            continue  # a three-parameter law needs three kept sizes
        cut = sizes[-h]
        kept, held = last[last.params < cut], last[last.params >= cut]
        kept_val = kept.dropna(subset=["loss"]).drop_duplicates("run")
        if kept_val.params.nunique() < 3:
            continue  # no validation loss to fit step 1 on
        law = fits.fit_power_law(kept_val.params, kept_val.loss, n_boot=0)
        fitted.append(({"target": "val/loss", "axis": "params", "scope": f"backtest_h{h}"},
                       law))
        held_runs = held.drop_duplicates("run")
        pred_loss = dict(zip(held_runs.run, clip_to_range(
            "loss", law.predict(held_runs.params.to_numpy(float)))))
        parts.append(_rows(h, ("val", 0, "loss"), "power_law", held_runs.run.to_numpy(),
                           held_runs.rung.to_numpy(), held_runs.params.to_numpy(),
                           held_runs.loss.to_numpy(float),
                           np.array([pred_loss[r] for r in held_runs.run], dtype=float),
                           np.nan, law.status))
        # only the columns the fits read: each group is a slice of every column kept
        train_pairs = pairs.loc[pairs.run.isin(kept.run), ["task", "shots", "metric", "loss",
                                                          "value"]]
        held_scores = _by_probe(emergence.probe_rows(held))
        for (task, shots, metric), g in train_pairs.groupby(["task", "shots", "metric"],
                                                            sort=True):
            step2 = fits.fit_loss_to_metric(g.loss.to_numpy(float), g.value.to_numpy(float),
                                            n_boot=0)
            fitted.append(({"target": f"{task}/{shots}/{metric}", "axis": "loss",
                            "scope": f"backtest_h{h}"}, step2))
            target = held_scores.get((task, shots, metric))
            if target is not None:
                parts.append(_two_step_rows(h, (task, shots, metric), target, step2,
                                            pred_loss, law.ok))
    return _table(parts), fitted


def _rows(h: int, probe: tuple, method: str, run, rung, params, actual, predicted,
          predicted_from_actual_loss, status: str) -> dict[str, np.ndarray]:
    """Rows of backtest.csv as columns (arrays of one length; scalars are repeated)."""
    n = len(run)
    task, shots, metric = probe
    cols = {"holdout": h, "run": run, "rung": rung, "params": params, "task": task,
            "shots": shots, "metric": metric, "method": method, "actual": actual,
            "predicted": predicted, "predicted_from_actual_loss": predicted_from_actual_loss,
            "status": status}
    return {k: v if isinstance(v, np.ndarray) else _repeat(v, n) for k, v in cols.items()}


def _repeat(value, n: int) -> np.ndarray:
    # strings as objects, as pandas reads the other blocks' string columns
    return np.full(n, value, dtype=object if isinstance(value, str) else None)


def _table(parts: list[dict]) -> pd.DataFrame:
    """backtest.csv from row blocks, in their order, built once (a DataFrame per block, or a
    dict per row, cost more than the 320 fits of a 50-run ladder)."""
    out = pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in COLUMNS
                        if c != "abs_error"} if parts else [], columns=COLUMNS)
    out["abs_error"] = (out.predicted - out.actual).abs()
    return out[COLUMNS]


def _by_probe(scores: pd.DataFrame) -> dict[tuple, dict[str, np.ndarray]]:
    """{(task, shots, metric): its rows' run, rung, params, value, loss as arrays}."""
    cols = ["run", "rung", "params", "value", "loss"]
    return {key: {c: g[c].to_numpy() for c in cols}
            for key, g in scores.groupby(["task", "shots", "metric"], sort=False)}


def _two_step_rows(h: int, probe: tuple, target: dict, step2, pred_loss: dict,
                   law_ok: bool) -> dict[str, np.ndarray]:
    """Step 2's predictions for one probe's held-out runs, at the loss step 1 predicted for
    each run and at its actual loss."""
    metric = probe[2]
    predicted_loss = np.array([pred_loss.get(r, np.nan) for r in target["run"]], dtype=float)
    return _rows(h, probe, "two_step", target["run"], target["rung"], target["params"],
                 target["value"].astype(float),
                 clip_to_range(metric, step2.predict(predicted_loss)),
                 clip_to_range(metric, step2.predict(target["loss"].astype(float))),
                 step2.status if law_ok else "failed")
