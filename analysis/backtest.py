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
from scaling.results import METRIC_RANGE

HOLDOUTS = (1, 2)
COLUMNS = ["holdout", "run", "rung", "params", "task", "shots", "metric", "method", "actual",
           "predicted", "abs_error", "predicted_from_actual_loss", "status"]


def _val_loss(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df.task == "val") & (df.metric == "loss")][["run", "step", "value"]].rename(
        columns={"value": "loss"})


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
    rows, fitted = [], []
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
        for r in held_runs.itertuples():
            rows.append({"holdout": h, "run": r.run, "rung": r.rung, "params": r.params,
                         "task": "val", "shots": 0, "metric": "loss", "method": "power_law",
                         "actual": r.loss, "predicted": pred_loss[r.run],
                         "predicted_from_actual_loss": np.nan, "status": law.status})
        train_pairs = pairs[pairs.run.isin(kept.run)]
        held_scores = dict(list(emergence.probe_rows(held).groupby(["task", "shots", "metric"])))
        for (task, shots, metric), g in train_pairs.groupby(["task", "shots", "metric"],
                                                            sort=True):
            step2 = fits.fit_loss_to_metric(g.loss, g.value, n_boot=0)
            fitted.append(({"target": f"{task}/{shots}/{metric}", "axis": "loss",
                            "scope": f"backtest_h{h}"}, step2))
            target = held_scores.get((task, shots, metric), held.iloc[:0])
            for r in target.itertuples():
                status = step2.status if law.ok else "failed"
                rows.append({"holdout": h, "run": r.run, "rung": r.rung, "params": r.params,
                             "task": task, "shots": shots, "metric": metric,
                             "method": "two_step", "actual": r.value,
                             "predicted": float(clip_to_range(
                                 metric, step2.predict(pred_loss.get(r.run, np.nan)))),
                             "predicted_from_actual_loss": float(clip_to_range(
                                 metric, step2.predict(r.loss))),
                             "status": status})
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["abs_error"] = (out.predicted - out.actual).abs()
    return out, fitted
