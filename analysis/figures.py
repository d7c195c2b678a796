"""Report figures (seaborn on matplotlib's Agg backend; no display needed).

Conventions: axes say what and in which unit; parameters, FLOPs and tokens are on log
scales; a dashed grey line is the chance level where the results carry a `chance` column;
legends sit outside the data. Every function returns the path it wrote, or None when the
results hold nothing to draw (e.g. no validation loss rows).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to files only

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

DPI = 110
LOSS_LABEL = "validation loss (cross-entropy, nats/token)"
METRIC_LABELS = {"exact_match": "exact match", "token_accuracy": "token accuracy",
                 "edit_similarity": "edit similarity",
                 "answer_logprob": "answer log-prob (nats)"}
AXIS_LABELS = {"params": "parameters", "flops": "training compute (FLOPs)",
               "tokens": "training tokens", "loss": LOSS_LABEL}


@contextmanager
def _style():
    """Seaborn's white grid at a compact size, without touching global settings."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _rung_order(df: pd.DataFrame) -> list[str]:
    return list(df.groupby("rung").params.max().sort_values().index)


def _palette(rungs: list[str]) -> dict:
    return dict(zip(rungs, sns.color_palette("viridis", len(rungs))))


def _chance(df: pd.DataFrame) -> float:
    if "chance" not in df or not df.chance.notna().any():
        return np.nan
    return float(df.chance.dropna().median())


def val_loss(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df.task == "val") & (df.metric == "loss")]


def loss_vs_compute(df: pd.DataFrame, law, path: Path) -> Path | None:
    """Validation loss against training compute, every checkpoint, with the fitted law."""
    val = val_loss(df)
    val = val[val.flops > 0]
    if val.empty:
        return None
    rungs = _rung_order(val)
    with _style():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sns.lineplot(data=val, x="flops", y="value", hue="rung", hue_order=rungs,
                     palette=_palette(rungs), units="run", estimator=None, lw=1.2, ax=ax)
        last = val[val.step == val.groupby("run").step.transform("max")]
        ax.scatter(last.flops, last.value, color="black", s=18, zorder=3,
                   label="last checkpoint")
        if law is not None and law.ok:
            c = np.geomspace(last.flops.min() / 3, last.flops.max() * 3, 100)
            p = law.params
            ax.plot(c, law.predict(c), color="crimson", lw=1.5,
                    label=f"fit: {p['E']:.2f} + {p['A']:.3g}·C^-{p['alpha']:.3f}")
        ax.set(xscale="log", yscale="log", xlabel=AXIS_LABELS["flops"], ylabel=LOSS_LABEL,
               title="Validation loss vs compute")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), title="rung", frameon=False)
        return _save(fig, path)


def training_curves(df: pd.DataFrame, path: Path) -> Path | None:
    """Validation loss against training tokens, one line per run, coloured by rung."""
    val = val_loss(df)
    val = val[val.tokens > 0]
    if val.empty:
        return None
    rungs = _rung_order(val)
    with _style():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sns.lineplot(data=val, x="tokens", y="value", hue="rung", hue_order=rungs,
                     palette=_palette(rungs), units="run", estimator=None, marker="o",
                     markersize=3, lw=1.2, ax=ax)
        ax.set(xscale="log", yscale="log", xlabel=AXIS_LABELS["tokens"], ylabel=LOSS_LABEL,
               title="Training curves")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), title="rung", frameon=False)
        return _save(fig, path)


def _panel_grid(n: int, ncols: int, w: float = 3.0, h: float = 2.4):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False,
                             sharex=True)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _draw_metric(ax, g: pd.DataFrame, verdict=None, color="C0", label=None):
    g = g.groupby("params", as_index=False).value.mean().sort_values("params")
    ax.plot(g.params, g.value, marker="o", ms=4, color=color, lw=1.3, label=label)
    if verdict is not None and verdict.verdict == "emergent":
        ax.axvspan(verdict.threshold_low, verdict.threshold_high, color="orange", alpha=0.2,
                   lw=0)
        ax.axvline(verdict.threshold, color="darkorange", lw=1)


def metric_vs_params(last: pd.DataFrame, verdicts: dict, path: Path,
                     metric: str = "exact_match") -> Path | None:
    """Wei et al. style: the metric at each run's last checkpoint against parameters, one
    panel per (task, shots), chance dashed, the threshold interval shaded when emergent."""
    sub = last[last.metric == metric]
    if sub.empty:
        return None
    groups = list(sub.groupby(["task", "shots"], sort=True))
    with _style():
        fig, axes = _panel_grid(len(groups), 5)
        for ax, ((task, shots), g) in zip(axes, groups):
            v = verdicts.get((task, shots, metric, "params"))
            _draw_metric(ax, g, v)
            chance = _chance(g)
            if np.isfinite(chance):
                ax.axhline(chance, ls="--", color="grey", lw=1)
            ax.set_xscale("log")
            ax.set_title(f"{task} ({shots}-shot): {v.verdict if v else '?'}", fontsize=9)
        for ax in axes:
            ax.set(xlabel="", ylabel="")
        fig.supxlabel("parameters (log scale)")
        fig.supylabel(METRIC_LABELS.get(metric, metric))
        fig.suptitle(f"{METRIC_LABELS.get(metric, metric)} vs model size "
                     "(dashed: chance; shaded: threshold interval)", y=1.0)
        fig.tight_layout()
        return _save(fig, path)


def mirage_panels(last: pd.DataFrame, verdicts: dict, path: Path, tasks: list[tuple],
                  continuous: str = "token_accuracy") -> Path | None:
    """Exact match and a continuous metric side by side, one row per (task, shots)."""
    metrics = ["exact_match", continuous]
    if not tasks or last[last.metric.isin(metrics)].empty:
        return None
    with _style():
        fig, axes = plt.subplots(len(tasks), 2, figsize=(7.5, 2.3 * len(tasks)),
                                 squeeze=False, sharex=True)
        for row, (task, shots) in enumerate(tasks):
            for col, metric in enumerate(metrics):
                ax = axes[row, col]
                g = last[(last.task == task) & (last.shots == shots) & (last.metric == metric)]
                v = verdicts.get((task, shots, metric, "params"))
                if not g.empty:
                    _draw_metric(ax, g, v, color=f"C{col}")
                    chance = _chance(g)
                    if np.isfinite(chance):
                        ax.axhline(chance, ls="--", color="grey", lw=1)
                ax.set_xscale("log")
                ax.set_title(f"{task} ({shots}-shot), {METRIC_LABELS.get(metric, metric)}: "
                             f"{v.verdict if v else 'no data'}", fontsize=8.5)
                ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        for ax in axes[-1]:
            ax.set_xlabel("parameters (log scale)")
        fig.suptitle("Discontinuous vs continuous metric (Schaeffer et al. mirage check)",
                     y=1.0)
        fig.tight_layout()
        return _save(fig, path)


def exact_match_heatmap(last: pd.DataFrame, path: Path) -> Path | None:
    """Task x rung heatmap of exact match at each run's last checkpoint (seeds averaged)."""
    sub = last[last.metric == "exact_match"]
    if sub.empty:
        return None
    rungs = _rung_order(sub)
    sub = sub.assign(probe=sub.task + " (" + sub.shots.astype(str) + "-shot)")
    table = sub.pivot_table(index="probe", columns="rung", values="value", aggfunc="mean")
    table = table[[r for r in rungs if r in table.columns]]
    sizes = sub.groupby("rung").params.max()
    table.columns = [f"{r}\n{sizes[r]:.2g}" for r in table.columns]
    with _style():
        fig, ax = plt.subplots(figsize=(1.0 + 0.9 * table.shape[1],
                                        1.2 + 0.35 * table.shape[0]))
        sns.heatmap(table, annot=table.shape[1] * table.shape[0] <= 400, fmt=".2f",
                    cmap="viridis", vmin=0, vmax=1, ax=ax,
                    cbar_kws={"label": "exact match (last checkpoint)"})
        ax.set(xlabel="rung (parameters)", ylabel="task", title="Exact match by task and rung")
        return _save(fig, path)


def backtest_plot(bt: pd.DataFrame, path: Path) -> Path | None:
    """Predicted vs actual for the held-out rungs: validation loss, then task metrics."""
    if bt.empty or not np.isfinite(bt.predicted).any():
        return None
    loss = bt[bt.method == "power_law"]
    tasks = bt[(bt.method == "two_step") & bt.metric.isin(["exact_match", "token_accuracy",
                                                            "edit_similarity"])]
    with _style():
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        for ax, data, title, hue in ((axes[0], loss, "validation loss", None),
                                     (axes[1], tasks, "task metrics (two-step)", "metric")):
            data = data[np.isfinite(data.predicted) & np.isfinite(data.actual)]
            if not data.empty:
                sns.scatterplot(data=data, x="actual", y="predicted", hue=hue,
                                style="holdout", ax=ax, s=40)
                lo = min(data.actual.min(), data.predicted.min())
                hi = max(data.actual.max(), data.predicted.max())
                ax.plot([lo, hi], [lo, hi], color="grey", lw=1, label="perfect prediction")
                ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False,
                          fontsize=8)
            unit = LOSS_LABEL if hue is None else "score"
            ax.set(xlabel=f"actual {unit}", ylabel=f"predicted {unit}",
                   title=f"Backtest: {title}")
        fig.suptitle("Held-out largest rungs (holdout = number of largest sizes left out)",
                     y=1.02)
        fig.tight_layout()
        return _save(fig, path)
