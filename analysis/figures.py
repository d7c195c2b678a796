"""Report figures (seaborn on matplotlib's Agg backend; no display needed).

Conventions: axes say what and in which unit; parameters, FLOPs and tokens are on log
scales; a dashed grey line is the chance level where the results carry a `chance` column;
legends sit outside the data. Every function returns the path it wrote, or None when the
results hold nothing to draw (e.g. no validation loss rows).
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to files only

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from scaling.results import val_loss_rows  # noqa: E402

DPI = 110
MAX_PANELS = 40  # one panel per task setting; more would be unreadable (and slow)
LOSS_LABEL = "validation loss (cross-entropy, nats/token)"
METRIC_LABELS = {"exact_match": "exact match", "token_accuracy": "token accuracy",
                 "edit_similarity": "edit similarity",
                 "answer_logprob": "answer log-prob (nats)", "accuracy": "accuracy",
                 "gold_prob": "gold-option probability",
                 "answer_prob": "gold-answer probability"}
UNIT_METRICS = ("exact_match", "token_accuracy", "edit_similarity", "accuracy", "gold_prob",
                "answer_prob")
AXIS_LABELS = {"params": "parameters", "flops": "training compute (FLOPs)",
               "tokens": "training tokens", "loss": LOSS_LABEL}


@contextmanager
def _style():
    """Seaborn's white grid at a compact size, without touching global settings."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def _save(fig, path: Path, tight: bool = True) -> Path:
    """Write and close; `tight` crops to the artists (needed for legends outside the axes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path


def _rung_order(df: pd.DataFrame) -> list[str]:
    return list(df.groupby("rung").params.max().sort_values().index)


def _with_size(df: pd.DataFrame) -> pd.DataFrame:
    """Rung labels that carry the size, e.g. 'R3 (4e+05)', for legends."""
    sizes = [f"{r} ({p:.2g})" for r, p in zip(df.rung.astype(str), df.params)]
    return df.assign(rung=pd.Series(sizes, index=df.index, dtype=object))


def _palette(rungs: list[str]) -> dict:
    return dict(zip(rungs, sns.color_palette("viridis", len(rungs))))


def _chance(df: pd.DataFrame) -> float:
    if "chance" not in df or not df.chance.notna().any():
        return np.nan
    return float(df.chance.dropna().median())


def val_loss(df: pd.DataFrame) -> pd.DataFrame:
    """The validation-loss rows (the schema's rule, scaling.results.val_loss_rows)."""
    return val_loss_rows(df)


def loss_vs_compute(df: pd.DataFrame, law, path: Path) -> Path | None:
    """Validation loss against training compute, every checkpoint, with the fitted law."""
    val = val_loss(df)
    val = _with_size(val[val.flops > 0])
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
                    label="fit to last checkpoints:\n"
                          f"{p['E']:.2f} + {p['A']:.3g}·C^-{p['alpha']:.3f}")
        ax.set(xscale="log", yscale="log", xlabel=AXIS_LABELS["flops"], ylabel=LOSS_LABEL,
               title="Validation loss vs compute (log-log)")
        _plain_log_y(ax)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), title="rung (parameters)",
                  frameon=False)
        return _save(fig, path)


def training_curves(df: pd.DataFrame, path: Path) -> Path | None:
    """Validation loss against training tokens, one line per run, coloured by rung."""
    val = val_loss(df)
    val = _with_size(val[val.tokens > 0])
    if val.empty:
        return None
    rungs = _rung_order(val)
    with _style():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sns.lineplot(data=val, x="tokens", y="value", hue="rung", hue_order=rungs,
                     palette=_palette(rungs), units="run", estimator=None, marker="o",
                     markersize=3, lw=1.2, ax=ax)
        ax.set(xscale="log", yscale="log", xlabel=AXIS_LABELS["tokens"], ylabel=LOSS_LABEL,
               title="Training curves (log-log)")
        _plain_log_y(ax)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), title="rung (parameters)",
                  frameon=False)
        return _save(fig, path)


def _panel_grid(n: int, ncols: int, w: float = 3.0, h: float = 2.4):
    """A grid of panels with fixed margins (a layout engine doubled the drawing time); the
    panels are not shared axes (see `_share_axes`)."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows + 0.6), squeeze=False)
    fig.subplots_adjust(left=0.9 / (w * ncols), right=1 - 0.15 / (w * ncols),
                        bottom=0.55 / (h * nrows + 0.6), top=1 - 0.75 / (h * nrows + 0.6),
                        hspace=0.45, wspace=0.3)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _share_axes(axes, ncols: int, ylim: tuple | None = None) -> None:
    """What sharex (and sharey) of plt.subplots do, done once after drawing: one x range for
    all panels (the union of their data, with the usual margins), `ylim` on every panel,
    x tick labels only where no panel lies below and y tick labels only in the first column
    (with `ylim`). Shared axes pass every limit change on to all the others, which cost
    more than drawing 40 panels."""
    xs = [v for ax in axes for v in ax.dataLim.intervalx if np.isfinite(v)]
    for i, ax in enumerate(axes):
        if xs:
            ax.update_datalim([(min(xs), 0.0), (max(xs), 0.0)], updatey=False)
            ax.autoscale_view(scaley=False)
        if i + ncols < len(axes):
            ax.tick_params(axis="x", which="both", labelbottom=False)
        if ylim is not None:
            ax.set_ylim(*ylim)
            if i % ncols:
                ax.tick_params(axis="y", which="both", labelleft=False)


def _plain_log_y(ax):
    """Log y axis labelled 3, 4, 5 rather than 3x10^0 (losses span less than a decade)."""
    fmt = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)


def _log_x(ax):
    """Log x axis with major ticks only: minor tick labels cost most of a panel's draw time."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _draw_metric(ax, g: pd.DataFrame, verdict=None, color="C0", label=None):
    # The line joins the mean over replicate runs (seeds) of each size; when a size has
    # several, each run is also drawn as a hollow dot, so their spread stays visible.
    per_run = g.groupby(["params", "run"], as_index=False).value.mean()
    if per_run.duplicated("params").any():
        ax.scatter(per_run.params, per_run.value, s=14, facecolors="none", edgecolors=color,
                   alpha=0.7, lw=0.8)
    g = per_run.groupby("params", as_index=False).value.mean().sort_values("params")
    ax.plot(g.params, g.value, marker="o", ms=4, color=color, lw=1.3, label=label)
    if verdict is not None and verdict.verdict == "emergent":
        ax.axvspan(verdict.threshold_low, verdict.threshold_high, color="orange", alpha=0.2,
                   lw=0)
        ax.axvline(verdict.threshold, color="darkorange", lw=1)


def _pick(last: pd.DataFrame, pairs: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows of `last` holding, for each (task, shots), the metric named in pairs[column]."""
    keys = pairs[pairs[column] != ""][["task", "shots", column]]
    return last.merge(keys.rename(columns={column: "metric"}), on=["task", "shots", "metric"])


def _metric_label(metrics) -> str:
    return " / ".join(METRIC_LABELS.get(m, m) for m in sorted(set(metrics)))


def metric_vs_params(last: pd.DataFrame, verdicts: dict, pairs: pd.DataFrame,
                     path: Path) -> Path | None:
    """Wei et al. style: each probe's discontinuous metric (exact match, or accuracy for
    multiple choice) at each run's last checkpoint against parameters, one panel per
    (task, shots), chance dashed, the threshold interval shaded when emergent; replicate
    runs of a size are averaged on the line and drawn as hollow dots."""
    sub = _pick(last, pairs, "discontinuous")
    if sub.empty:
        return None
    groups = sorted(sub.groupby(["task", "shots"]), key=lambda kv: _natural(kv[0]))
    n_all, groups = len(groups), groups[:MAX_PANELS]
    label = _metric_label(sub.metric)
    # 0-1 scores share one y range, so noise around chance does not look like a trend
    unit_range = bool(sub.value.between(0, 1).all())
    with _style():
        fig, axes = _panel_grid(len(groups), 5)
        for i, (ax, ((task, shots), g)) in enumerate(zip(axes, groups)):
            v = verdicts.get((task, shots, g.metric.iloc[0], "params"))
            _draw_metric(ax, g, v)
            chance = _chance(g)
            if np.isfinite(chance):
                ax.axhline(chance, ls="--", color="grey", lw=1)
            _log_x(ax)
            ax.set_title(f"{task} ({shots}-shot): {v.verdict if v else '?'}", fontsize=9)
            ax.set(xlabel="", ylabel=label if i % 5 == 0 else "")
        _share_axes(axes[:len(groups)], 5, ylim=(-0.03, max(0.2, float(sub.value.max()) * 1.08))
                    if unit_range else None)
        fig.supxlabel("parameters (log scale)")
        shown = f", first {MAX_PANELS} of {n_all} task settings" if n_all > MAX_PANELS else ""
        fig.suptitle(f"{label} vs model size at the last checkpoint "
                     f"(dashed: chance; shaded: threshold interval of emergent ones{shown})")
        return _save(fig, path, tight=False)


def _natural(key: tuple) -> list:
    """Sort key that puts t2 before t10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(key[0]))] + [key[1]]


def mirage_panels(last: pd.DataFrame, verdicts: dict, pairs: pd.DataFrame,
                  path: Path) -> Path | None:
    """The discontinuous metric and a continuous one side by side, one row per (task, shots)
    of `pairs` (columns task, shots, discontinuous, continuous)."""
    pairs = pairs[(pairs.discontinuous != "") & (pairs.continuous != "")]
    if pairs.empty:
        return None
    n = len(pairs)
    with _style():
        fig, axes = plt.subplots(n, 2, figsize=(8, 2.4 * n + 0.7), squeeze=False, sharex=True)
        fig.subplots_adjust(left=0.1, right=0.97, bottom=0.6 / (2.4 * n + 0.7),
                            top=1 - 0.7 / (2.4 * n + 0.7), hspace=0.45, wspace=0.3)
        for row, r in enumerate(pairs.itertuples()):
            for col, metric in enumerate((r.discontinuous, r.continuous)):
                ax = axes[row, col]
                g = last[(last.task == r.task) & (last.shots == r.shots)
                         & (last.metric == metric)]
                v = verdicts.get((r.task, r.shots, metric, "params"))
                if not g.empty:
                    _draw_metric(ax, g, v, color=f"C{col}")
                    chance = _chance(g)
                    if np.isfinite(chance):
                        ax.axhline(chance, ls="--", color="grey", lw=1)
                    if g.value.between(0, 1).all():  # same scale as a 0-1 score
                        ax.set_ylim(-0.03, max(0.2, float(g.value.max()) * 1.08))
                _log_x(ax)
                ax.set_title(f"{r.task} ({r.shots}-shot), {METRIC_LABELS.get(metric, metric)}"
                             f": {v.verdict if v else 'no data'}", fontsize=8.5)
                ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        for ax in axes[-1]:
            ax.set_xlabel("parameters (log scale)")
        fig.suptitle("Discontinuous vs continuous metric (Schaeffer et al. mirage check)")
        return _save(fig, path, tight=False)


def discontinuous_heatmap(last: pd.DataFrame, pairs: pd.DataFrame, path: Path) -> Path | None:
    """Task x rung heatmap of each probe's discontinuous metric (exact match, or accuracy
    for multiple choice) at each run's last checkpoint, seeds averaged."""
    sub = _pick(last, pairs, "discontinuous")
    if sub.empty:
        return None
    label = _metric_label(sub.metric)
    rungs = _rung_order(sub)
    sub = sub.assign(probe=sub.task + " (" + sub.shots.astype(str) + "-shot)")
    table = sub.pivot_table(index="probe", columns="rung", values="value", aggfunc="mean")
    table = table.loc[sorted(table.index, key=lambda p: _natural((p, 0)))]
    table = table[[r for r in rungs if r in table.columns]]
    sizes = sub.groupby("rung").params.max()
    table.columns = [f"{r}\n{sizes[r]:.2g}" for r in table.columns]
    with _style():
        fig, ax = plt.subplots(figsize=(1.6 + 0.9 * table.shape[1],
                                        1.2 + 0.35 * table.shape[0]))
        sns.heatmap(table, annot=table.shape[1] * table.shape[0] <= 400, fmt=".2f",
                    cmap="viridis", vmin=0, vmax=1, ax=ax,
                    cbar_kws={"label": f"{label} (last checkpoint)"})
        ax.set(xlabel="rung (parameters)", ylabel="task",
               title=f"{label[0].upper() + label[1:]} by task and rung")
        return _save(fig, path)


def backtest_plot(bt: pd.DataFrame, path: Path) -> Path | None:
    """Predicted vs actual for the held-out rungs: validation loss, then task metrics."""
    if bt.empty or not np.isfinite(bt.predicted).any():
        return None
    loss = bt[bt.method == "power_law"]
    tasks = bt[(bt.method == "two_step") & bt.metric.isin(UNIT_METRICS)]
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
                handles, labels = ax.get_legend_handles_labels()
                if hue is None:  # seaborn titles the style legend only when hue is set
                    handles, labels = [plt.Line2D([], [], ls="")] + handles, ["holdout"] + labels
                ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1),
                          frameon=False, fontsize=8)
            unit = "validation loss (nats/token)" if hue is None else "score"
            ax.set(xlabel=f"actual {unit}", ylabel=f"predicted {unit}",
                   title=f"Backtest: {title}")
        fig.suptitle("Held-out largest rungs (holdout = number of largest sizes left out)",
                     y=1.02)
        fig.tight_layout()
        return _save(fig, path)


BASE_LABEL = "base ladder"  # the legend's name for rows with an empty `intervention`


def intervention_panels(last: pd.DataFrame, table: pd.DataFrame, task: str,
                        path: Path) -> Path | None:
    """One task's probes against parameters at each run's last checkpoint: the base ladder
    (black) and each intervention (a colour) in every panel, one panel per (shots, metric)
    of `table` (interventions.csv's rows). Every run is a dot, the line joins the mean of
    each size, a dashed vertical line marks a ladder's threshold where it is emergent.
    `last` holds the probe rows with an `intervention` column ("" for the base ladder)."""
    table = table[table.task == task]
    if table.empty:
        return None
    order = {m: i for i, m in enumerate(UNIT_METRICS)}
    panels = sorted({(int(s), m) for s, m in zip(table.shots, table.metric)},
                    key=lambda k: (k[0], order.get(k[1], len(order)), k[1]))[:MAX_PANELS]
    labels = [BASE_LABEL] + sorted(set(table.intervention))
    palette = dict(zip(labels, ["black"] + sns.color_palette("tab10", len(labels) - 1)))
    sub = last[last.task == task]
    sub = sub.assign(label=sub.intervention.replace("", BASE_LABEL))
    sub = sub[sub.label.isin(labels)]
    ncols, w, legend_w = min(3, len(panels)), 3.4, 1.9  # inches; the legend's to the right
    with _style():
        fig, axes = _panel_grid(len(panels), ncols, w=w)
        # fixed margins, no tight crop: a crop draws the figure twice (a figure per task)
        width = w * ncols + legend_w
        fig.set_size_inches(width, fig.get_size_inches()[1])
        fig.subplots_adjust(left=0.9 / width, right=(w * ncols - 0.15) / width)
        for ax, (shots, metric) in zip(axes, panels):
            g = sub[(sub.shots == shots) & (sub.metric == metric)]
            per_run = g.groupby(["label", "run"], as_index=False).agg(
                params=("params", "max"), value=("value", "mean"))
            # matplotlib's own calls in seaborn's style: sns.scatterplot + lineplot took a
            # third of the drawing time, and a real ladder has a figure per task
            for label, runs in per_run.groupby("label", sort=False):
                ax.scatter(runs.params, runs.value, s=16, alpha=0.55, color=palette[label],
                           lw=0, zorder=2)
                line = runs.groupby("params").value.mean()
                ax.plot(line.index, line.to_numpy(), color=palette[label], lw=1.3, zorder=2)
            rows = table[(table.shots == shots) & (table.metric == metric)]
            lines = [(BASE_LABEL, rows.base_threshold.iloc[0] if len(rows) else np.nan)]
            lines += list(zip(rows.intervention, rows.intervention_threshold))
            for label, t in lines:
                if np.isfinite(t):
                    ax.axvline(t, color=palette[label], ls="--", lw=1)
            chance = _chance(g)
            if np.isfinite(chance):
                ax.axhline(chance, ls=":", color="grey", lw=1)
            if metric in UNIT_METRICS and g.value.between(0, 1).all():
                # a 0-1 score on its own scale: noise near 0 should not look like a trend
                ax.set_ylim(-0.03, max(0.2, float(g.value.max()) * 1.08))
            _log_x(ax)
            ax.set(xlabel="", ylabel=METRIC_LABELS.get(metric, metric))
            ax.set_title(f"{shots}-shot, {METRIC_LABELS.get(metric, metric)}", fontsize=9)
        _share_axes(axes[:len(panels)], ncols)
        handles = [plt.Line2D([], [], color=palette[k], marker="o", ms=4, lw=1.3)
                   for k in labels]
        fig.legend(handles, labels, loc="center left",
                   bbox_to_anchor=(w * ncols / width, 0.5), frameon=False, fontsize=8,
                   title="ladder")
        fig.supxlabel("parameters (log scale)", x=0.5 * w * ncols / width)
        # the title centred on the whole figure: over one panel it would not fit
        fig.suptitle(f"{task}: base ladder vs interventions, each run's last checkpoint\n"
                     "dots: runs; dashed: thresholds; dotted: chance", fontsize=9.5)
        return _save(fig, path, tight=False)
