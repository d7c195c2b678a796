"""`scaling report --results PATH --out DIR`: every table, figure and the written report.

Reads results only (any model family's scores in the results schema), never checkpoints.
Writes into DIR: emergence.csv, dynamics.csv, mirage.csv, fits.csv, backtest.csv,
seeds.csv, report.md, report.html and figures/*.png. Every analysis of the ladder reads the
base ladder's rows only (the optional `intervention` column empty); when results hold
interventions, interventions.csv, figures/interventions_<task>.png and a section of the
report compare each with the base ladder (analysis/interventions.py). Everything is built
in a temporary directory next to DIR and moved in only when complete, so a failure leaves
DIR as it was.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import backtest as backtest_mod
from analysis import dynamics, emergence, figures, fits, interventions, mirage, seeds
from scaling.results import DISCONTINUOUS, ResultsError, base_rows, intervention_of, load

FITS_COLUMNS = ["scope", "target", "axis", "law", "param", "value", "ci_low", "ci_high",
                "rmse", "r2", "n_points", "status", "message"]
PROBE_AXIS = "params"  # the axis the report's sentences are about; the CSVs hold all four


# --------------------------------------------------------------------------------------------
# fits of the loss
# --------------------------------------------------------------------------------------------

def loss_fits(df: pd.DataFrame, n_boot: int) -> tuple[dict, list[tuple]]:
    """Laws for the validation loss at each run's last checkpoint.

    Power laws against params, flops and tokens (each when it has >= 3 distinct values;
    empty cells, as in other families' results, do not count);
    Chinchilla L(N, D) only when the final checkpoints cover >= 3 token budgets; a broken
    power law against params only with >= 10 sizes (its six parameters need points on both
    sides of the break; 50 bootstrap resamples, as each refit is slow: docs/LOG.md).
    Returns ({name: FitResult}, [(labels, FitResult)] for fits.csv).
    """
    last = emergence.last_checkpoints(df)
    runs = last.dropna(subset=["loss"]).drop_duplicates("run")
    laws, fitted = {}, []
    for axis in ("params", "flops", "tokens"):
        if runs[axis].nunique() >= 3:
            laws[f"power_law_{axis}"] = fits.fit_power_law(runs[axis], runs.loss, n_boot=n_boot)
            fitted.append(({"scope": "ladder", "target": "val/loss", "axis": axis},
                           laws[f"power_law_{axis}"]))
    budgeted = runs.dropna(subset=["tokens"])  # other families' scores may carry no tokens
    if budgeted.tokens.nunique() >= 3 and budgeted.params.nunique() >= 3 and len(budgeted) >= 6:
        # the fit itself refuses N and D that move together (one budget per size)
        chin = fits.fit_chinchilla(budgeted.params, budgeted.tokens, budgeted.loss,
                                   n_boot=n_boot)
        if chin.ok:
            laws["chinchilla"] = chin
            fitted.append(({"scope": "ladder", "target": "val/loss",
                            "axis": "params+tokens"}, chin))
    if runs.params.nunique() >= 10:  # six parameters: a break needs points on both sides
        laws["broken_power_law"] = fits.fit_broken_power_law(runs.params, runs.loss,
                                                             n_boot=min(n_boot, 50))
        fitted.append(({"scope": "ladder", "target": "val/loss", "axis": "params"},
                       laws["broken_power_law"]))
    return laws, fitted


def fits_table(fitted: list[tuple]) -> pd.DataFrame:
    rows = [r for labels, fit in fitted for r in fit.to_rows(**labels)]
    return pd.DataFrame(rows, columns=FITS_COLUMNS)


# --------------------------------------------------------------------------------------------
# the written report: every sentence from the numbers
# --------------------------------------------------------------------------------------------

def _num(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
        mant, exp = f"{x:.2e}".split("e")
        return f"{mant}e{int(exp)}"
    if abs(x) >= 1000:
        return f"{x:.0f}"
    return f"{x:.3g}"


def _table(df: pd.DataFrame) -> str:
    if df.empty:
        return ""
    cells = [[c if isinstance(c, str) else _num(c) if isinstance(c, float) else str(c)
              for c in row] for row in df.itertuples(index=False)]
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    return "\n".join([head, sep] + ["| " + " | ".join(r) + " |" for r in cells]) + "\n"


def _probe(r) -> str:
    return f"`{r.task}` ({r.shots}-shot) {r.metric}"


def _law_line(name: str, fit) -> str:
    if not fit.ok:
        return f"- {name}: fit failed ({fit.message})."
    parts = []
    for k, v in fit.params.items():
        lo, hi = fit.ci.get(k, (np.nan, np.nan))
        ci = f" [{_num(lo)}, {_num(hi)}]" if np.isfinite(lo) else ""
        parts.append(f"{k} = {_num(v)}{ci}")
    note = " Some parameter sits on its bound, so that one is a limit, not an estimate." \
        if fit.status == "hit_bound" else ""
    return (f"- {name}: " + ", ".join(parts) + f" (R² {fit.r2:.4f}, RMSE {_num(fit.rmse)}, "
            f"{fit.n_points} points, {fit.status}).{note}")


def _section_data(df: pd.DataFrame) -> list[str]:
    runs = emergence.last_checkpoints(df).drop_duplicates("run")
    n_ckpt = df.groupby("run").step.nunique(dropna=False)  # no steps: one score per model
    probes = emergence.probe_rows(df)
    ckpts = f"{n_ckpt.min()}" if n_ckpt.min() == n_ckpt.max() else \
        f"{n_ckpt.min()} to {n_ckpt.max()}"
    out = ["## Data", "",
           f"- {len(runs)} runs, {runs.rung.nunique()} rungs, parameters "
           f"{_num(runs.params.min())} to {_num(runs.params.max())}; "
           f"{ckpts} checkpoint{'' if n_ckpt.max() == 1 else 's'} per run.",
           f"- {probes.groupby(['task', 'shots']).ngroups} probe task/shot settings, "
           f"metrics: {', '.join(sorted(probes.metric.unique())) or 'none'}."]
    if figures.val_loss(df).empty:
        out.append("- No validation-loss rows (task `val`, metric `loss`): no loss fits, no "
                   "`loss` axis and no backtest.")
    empty = [c for c in ("step", "tokens", "flops", "nonembed_params") if df[c].isna().all()]
    if empty:  # e.g. published scores of another model family
        out.append(f"- Empty in every row: {', '.join(f'`{c}`' for c in empty)}; the axes "
                   "that need them are `insufficient_data`.")
    return out + [""]


LAW_NAMES = {"power_law_params": "L = E + A·N^-alpha (N = parameters)",
             "power_law_flops": "L = E + A·C^-alpha (C = training FLOPs)",
             "power_law_tokens": "L = E + A·D^-alpha (D = training tokens)",
             "chinchilla": "L = E + A/N^alpha + B/D^beta (Chinchilla, Huber on log L)",
             "broken_power_law": "broken power law in N (Caballero et al., one break)"}


def _section_loss(df: pd.DataFrame, laws: dict) -> list[str]:
    out = ["## Loss scaling", ""]
    if not laws:
        return out + ["No loss law was fitted (needs validation loss at >= 3 distinct "
                      "sizes).", ""]
    out += [_law_line(LAW_NAMES[k], v) for k, v in laws.items()]
    out += ["", "Brackets are 95% bootstrap intervals. Fits use each run's last checkpoint."]
    if "chinchilla" not in laws:
        out.append("The Chinchilla law L(N, D) was not fitted: it needs final checkpoints at "
                   "3 or more token budgets, with size and tokens varying independently, to "
                   "separate the N and D terms.")
    return out + [""]


def _scores_by_size(last: pd.DataFrame, r) -> str:
    """'size: score' pairs of one series at each run's last checkpoint (seeds averaged)."""
    g = last[(last.task == r.task) & (last.shots == r.shots) & (last.metric == r.metric)]
    by_size = g.groupby("params")["value"].mean().sort_index()
    return ", ".join(f"{_num(float(n))}: {v:.2f}" for n, v in by_size.items())


def _section_emergence(em: pd.DataFrame, last: pd.DataFrame) -> list[str]:
    out = [f"## Emergence (against {PROBE_AXIS}, each run's last checkpoint)", ""]
    if em.empty:
        return out + ["The results hold no probe scores, so there are no verdicts.", ""]
    on_axis = em[em.axis == PROBE_AXIS]
    by = {v: on_axis[on_axis.verdict == v] for v in emergence.VERDICTS}
    seeds_split = by["emergent"].holds_across_seeds.astype("boolean").eq(False).fillna(False)
    emergent, seed_dependent = by["emergent"][~seeds_split], by["emergent"][seeds_split]
    if emergent.empty:
        out.append(f"No task was found emergent against {PROBE_AXIS}"
                   + (" with its seeds agreeing." if not seed_dependent.empty else "."))
    else:
        out += ["Emergent (near chance in the smaller models, well above it in at least two "
                "larger ones, not predictable from the smaller ones; seeds agreeing where "
                "there are replicates):", ""]
        out += [f"- {_probe(r)}: turns on at about {_num(r.threshold)} parameters "
                f"(95% interval {_num(r.threshold_low)} to {_num(r.threshold_high)}; "
                f"best fit {r.best_fit}, breakthroughness {_num(r.breakthroughness)}"
                + (f"; largest spread of seeds at one size {r.seed_spread:.2f}"
                   if np.isfinite(r.seed_spread) else "") + ")."
                for r in emergent.itertuples()]
    out.append("")
    if not seed_dependent.empty:
        out += ["Emergent on the seed average only (replicates of one size disagree beyond "
                "sampling noise, so where the ability turns on is set by the seed, not by "
                "size alone):", ""]
        out += [f"- {_probe(r)}: the average turns on at about {_num(r.threshold)} "
                f"parameters; seeds at one size differ by up to {r.seed_spread:.2f}."
                for r in seed_dependent.itertuples()]
        out.append("")
    if not by["non_monotone"].empty:
        out += ["Not monotone in size (rises then falls, or falls then rises, each over two "
                "or more sizes: neither emergent nor flat):", ""]
        out += [f"- {_probe(r)} ({r.best_fit}): {_scores_by_size(last, r)}."
                for r in by["non_monotone"].itertuples()]
        out.append("")
    outliers = on_axis[np.isfinite(on_axis.outlier)]
    if not outliers.empty:
        out += ["One size set aside as an outlier (it alone broke an otherwise monotone "
                f"curve by more than {emergence.Z_OUTLIER:g} standard errors; the verdict is "
                "on the other sizes):", ""]
        out += [f"- {_probe(r)}: {_num(r.outlier)} parameters ({_scores_by_size(last, r)}); "
                f"verdict {r.verdict}." for r in outliers.itertuples()]
        out.append("")
    for verdict, text in (("smooth", "Smooth (a significant monotone change that is not "
                                     "abrupt, declines included)"),
                          ("flat", "Flat (no trend beyond the noise of the scores, or never "
                                   "above chance)"),
                          ("insufficient_data", "Insufficient data (fewer than 4 sizes)")):
        names = "; ".join(_probe(r) for r in by[verdict].itertuples())
        out += [f"{text}: {names or 'none'}.", ""]
    counts = em.pivot_table(index="axis", columns="verdict", values="task", aggfunc="count",
                            fill_value=0).reindex(columns=list(emergence.VERDICTS),
                                                  fill_value=0)
    return out + ["Verdict counts on every axis (emergence.csv has each row):", "",
                  _table(counts.reset_index())]


def _section_seeds(spread: pd.DataFrame) -> list[str]:
    """Replicates of one size that disagree beyond sampling noise (seeds.csv has them all)."""
    if spread.empty:
        return []
    out = ["## Seed spread (replicate runs of one size, last checkpoint)", ""]
    loss = spread[spread.metric == "loss"]
    if not loss.empty:
        out += [f"Validation loss varies across replicates by at most {loss.spread.max():.3f} "
                f"(at {_num(loss.loc[loss.spread.idxmax(), 'params'])} parameters).", ""]
    probes = spread[spread.metric != "loss"]
    flagged = probes[probes.beyond_sampling]
    if flagged.empty:
        return out + ["No probe score differs between replicates of one size by more than "
                      "the sampling noise of its n instances explains (family-wise 5%).", ""]
    out += [f"{flagged.groupby(['task', 'shots']).ngroups} of "
            f"{probes.groupby(['task', 'shots']).ngroups} probe settings differ between "
            "replicates of one size by more than the sampling noise of their n instances "
            f"explains (a test that all runs share one rate, family-wise 5% over the "
            f"{len(probes)} probe x size comparisons; score min to max, runs): their position "
            "on the ladder depends on the initialisation, not only on size.", ""]
    for (task, shots, metric), g in flagged.groupby(["task", "shots", "metric"]):
        sizes = ", ".join(f"{_num(float(r.params))}: {r.min:.2f} to {r.max:.2f} ({r.runs})"
                          for r in g.itertuples())
        out.append(f"- `{task}` ({shots}-shot) {metric}: {sizes}.")
    return out + [""]


def _section_mirage(mir: pd.DataFrame) -> list[str]:
    out = ["## Mirage check (Schaeffer et al. 2023)", ""]
    if mir[mir.discontinuous_verdict == "emergent"].empty:
        out.append("No task was emergent under its discontinuous metric (exact match, or "
                   "accuracy for multiple choice), so there is no emergence to test for a "
                   "metric artifact.")
    else:
        for label, text in (("mirage", "Metric artifact (emergent under exact match or "
                                       "accuracy, smooth under a continuous metric)"),
                            ("survives_continuous", "Abruptness survives a continuous metric"),
                            ("inconclusive", "Inconclusive (continuous metrics flat or "
                                             "missing)")):
            rows = mir[mir.label == label]
            names = "; ".join(f"`{r.task}` ({r.shots}-shot)" for r in rows.itertuples())
            out.append(f"- {text}: {names or 'none'}.")
    out.append("")
    # The quantitative test: is exact match what token accuracy^L predicts, size by size?
    tested = mir[pd.to_numeric(mir.pl_p_value, errors="coerce").notna()]
    if tested.empty:
        out += ["No p^L test: it needs exact match and token accuracy at 3 or more sizes "
                "(multiple-choice probes have no p^L).", ""]
    else:
        out += ["Is exact match what p^L of the per-token accuracy predicts (one effective "
                "answer length L fitted over the sizes, binomial noise, 5% test)?", ""]
        for r in tested.itertuples():
            length = "L unbounded (exact match near 0 throughout)" \
                if np.isinf(float(r.pl_length)) else f"L = {float(r.pl_length):.1f}"
            verdict = (f"fits within noise (p = {_num(float(r.pl_p_value))})"
                       if float(r.pl_p_value) >= mirage.PL_ALPHA else
                       f"does not: max deviation {float(r.pl_max_z):.1f} standard errors "
                       f"(p = {_num(float(r.pl_p_value))})")
            out.append(f"- `{r.task}` ({r.shots}-shot), {r.label}: exact match = token "
                       f"accuracy^L with {length} {verdict}.")
        out.append("")
    return out + ([_table(mir)] if not mir.empty else [])


def _section_dynamics(dyn: pd.DataFrame) -> list[str]:
    out = ["## Training dynamics (along tokens within each run)", ""]
    if dyn.empty:
        return out + ["No probe scores along training, so there are no verdicts.", ""]
    dem = dyn[dyn.verdict == "emergent"]
    generic = dyn[np.isfinite(dyn.loss_share) & (dyn.loss_share > dynamics.LOSS_SHARE_MAX)]
    if dem.empty:
        out.append("No task-specific abrupt transition during training was found in any run.")
    else:
        out += ["Task-specific abrupt transitions during training (the validation loss fell "
                f"by at most {dynamics.LOSS_SHARE_MAX:.0%} of its whole fall across each):", ""]
        out += [f"- run `{r.run}`, {_probe(r)}: at step {r.transition_step} (about "
                f"{_num(r.threshold)} tokens, interval {_num(r.threshold_low)} to "
                f"{_num(r.threshold_high)}; loss fell {r.loss_share:.0%} of its fall "
                "across it)." for r in dem.itertuples()]
    if not generic.empty:
        out += ["", f"{len(generic)} more series rose abruptly against tokens while the "
                f"validation loss fell by more than {dynamics.LOSS_SHARE_MAX:.0%} of its "
                f"whole fall (median {generic.loss_share.median():.0%}): the generic rise of "
                "learning, counted as smooth."]
    counts = dyn.groupby("verdict").size().reindex(list(emergence.VERDICTS), fill_value=0)
    return out + ["", "Verdict counts over all (run, task, shots, metric): "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".", ""]


def _section_backtest(bt: pd.DataFrame) -> list[str]:
    out = ["## Backtest (predicting the largest rungs from the smaller ones)", ""]
    if bt.empty:
        return out + ["No backtest: it needs validation loss and at least 3 sizes left "
                      "after holding out the largest.", ""]
    for h, g in bt.groupby("holdout"):
        loss = g[g.method == "power_law"]
        task = g[(g.method == "two_step") & g.metric.isin(figures.UNIT_METRICS)].dropna(
            subset=["abs_error"])
        held = ", ".join(sorted(set(g.rung.astype(str))))
        line = (f"- Holding out the {h} largest size(s) ({held}): validation loss mean "
                f"absolute error {_num(loss.abs_error.mean())} (relative "
                f"{_num((loss.abs_error / loss.actual).mean() * 100)}%)")
        if not task.empty:
            worst = task.loc[task.abs_error.idxmax()]
            line += (f"; task scores (0-1 metrics, two-step) mean absolute error "
                     f"{_num(task.abs_error.mean())}, worst {_num(worst.abs_error)} "
                     f"({_probe(worst)})")
        out.append(line + ".")
    return out + ["", "Per-prediction errors are in backtest.csv.", ""]


def _section_interventions(inter: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    """Each intervention against the base ladder (interventions.csv has every row)."""
    if inter is None or inter.empty:
        return []
    out = [f"## Interventions (against {interventions.AXIS}, each run's last checkpoint)", "",
           "Runs tagged with an intervention are kept out of every analysis above (the base "
           "ladder is the rows with an empty `intervention`). Each intervention's runs form "
           "a ladder of their own and get verdicts by the same rules; where both ladders are "
           "emergent the shift is log10(threshold with / threshold without) in decades "
           "(negative: the ability turns on in smaller models), and its interval joins the "
           "two 95% threshold intervals at their ends, [log10(low with / high without), "
           "log10(high with / low without)]: conservative (wider than a 95% interval). "
           "`no shift` when that interval contains 0.", ""]
    tags = intervention_of(results)
    for name in interventions.names(results):
        runs = results[(tags == name).to_numpy()].drop_duplicates("run")
        out.append(f"- `{name}`: {len(runs)} run{'s' if len(runs) != 1 else ''}, parameters "
                   f"{_num(float(runs.params.min()))} to {_num(float(runs.params.max()))}.")
    out.append("")
    both = inter[np.isfinite(inter.shift_decades.astype(float))]
    moved = both[~both.outcome.str.startswith("no shift")]
    still = both[both.outcome.str.startswith("no shift")]
    if moved.empty:
        out.append("No threshold moved beyond its interval under any intervention.")
    else:
        out += ["Thresholds that moved:", ""]
        out += [f"- {_probe(r)}, `{r.intervention}`: from {_num(r.base_threshold)} to "
                f"{_num(r.intervention_threshold)} parameters, {r.outcome}."
                for r in moved.itertuples()]
    out.append("")
    if not still.empty:
        out += ["Emergent in both, threshold not moved beyond the interval:", ""]
        out += [f"- {_probe(r)}, `{r.intervention}`: {r.outcome}." for r in still.itertuples()]
        out.append("")
    none = inter[~np.isfinite(inter.shift_decades.astype(float))]
    shown = none[none.metric.isin(DISCONTINUOUS)]
    if not none.empty:
        out += [f"No threshold on one side or both in {len(none)} comparison"
                f"{'s' if len(none) != 1 else ''}"
                + (" (exact match and accuracy listed; interventions.csv has every metric):"
                   if not shown.empty else " (continuous metrics only; see "
                   "interventions.csv)."), ""]
        out += [f"- {_probe(r)}, `{r.intervention}`: {r.outcome}." for r in shown.itertuples()]
        out.append("")
    return out


DEFINITIONS = [
    "## Definitions", "",
    "- Verdicts (rates on curves of known truth: `python bench/verdict_rates.py`): scores "
    "below chance count as chance; `non_monotone` if a curve that turns back over two or "
    "more sizes on each side fits better than any monotone curve (also with one size left "
    "out); a single size that alone breaks a monotone curve by more than 4 standard errors "
    "is set aside and named; `flat` if neither a straight-line nor a monotone trend "
    "(Bartholomew's test) is significant at 5% over the whole curve, or the curve never "
    "clears chance by 2 standard errors; `emergent` if it rises, a step or sigmoid fits "
    "better than a line (AIC), two or more sizes lie before the onset near chance and two "
    "or more after it clearly above, and a line through the smaller sizes misses the first "
    "size past the rise by more than 2/3 of the rise and 3 standard errors (Wei et al. "
    "2022); otherwise `smooth`. Noise: binomial for 0-1 scores, scaled by the scatter of "
    "replicate seeds where there are any; `holds_across_seeds` says whether every size's "
    "replicates share one rate. Details in the docstring of `analysis/emergence.py`.",
    "- Training dynamics: a transition against tokens is a task's own only if the run's "
    "validation loss fell by at most 10% of its whole fall across it; otherwise the loss "
    "predicts it (generic learning) and it counts as smooth (`loss_share` in dynamics.csv).",
    "- Threshold: where the fitted curve has done half of its rise, with a 95% "
    "bootstrap interval; when the data cannot resolve the rise (a step, a sigmoid at its "
    "steepest, or no point inside the rise) the interval is the two sizes around it.",
    "- Breakthroughness and linearity: BIG-bench (Srivastava et al. 2022) on the scores "
    "sorted by scale.",
    "- Mirage label (params axis): `mirage` if exact match (accuracy for multiple choice) "
    "is emergent while no continuous metric (token accuracy, edit similarity, answer "
    "log-prob, gold probability) is and one of them is smooth; `survives_continuous` if "
    "one of them is emergent too. answer_prob (the probability of the whole gold answer) "
    "has a verdict column but no vote: a product over the answer's tokens carries the same "
    "p^L nonlinearity as exact match. The p^L test fits exact match = token accuracy^L "
    "over the sizes (each run's last checkpoint, seeds averaged) with one parameter, the "
    "effective answer length L (stop token and correlated errors included), by weighted "
    "least squares with binomial variances at the predicted value; `pl_max_z` is the "
    "largest deviation in standard errors, `pl_p_value` a chi-square goodness of fit with "
    "m - 1 degrees of freedom, `pl_predicts` p >= 0.05. Details in `analysis/mirage.py`.",
    "- The params axis uses the `params` column (all parameters, embeddings included).",
    "- fits.csv has one row per fitted parameter. The emergence sigmoids (law `sigmoid`) are "
    "fitted in u = log10 of the axis value (u = -loss on the loss axis), so their x0 is in "
    "those units; scope `ladder` is across runs, `run:NAME` along one run's training, "
    "`backtest_hN` the backtest without the N largest sizes.",
    "",
]


def write_markdown(df, laws, em, dyn, mir, bt, spread, figs: dict, inter=None,
                   results=None) -> str:
    """report.md: every sentence is generated from the tables, negative results included.
    `df` is the base ladder; `inter` (interventions.csv) and `results` (every row) add the
    Interventions section when results hold interventions."""
    out = ["# Scaling report", "",
           "Generated by `scaling report` from stored results; every number below is "
           "recomputed from them.", ""]
    last = emergence.probe_rows(emergence.last_checkpoints(df))
    out += _section_data(df) + _section_loss(df, laws) + _section_emergence(em, last)
    out += _section_seeds(spread)
    out += _section_mirage(mir) + _section_dynamics(dyn) + _section_backtest(bt)
    out += _section_interventions(inter, df if results is None else results)
    out += DEFINITIONS
    if figs:
        out += ["## Figures", ""]
        for name, path in figs.items():
            out += [f"![{name}](figures/{Path(path).name})", ""]
    return "\n".join(out)


def markdown_to_html(md: str, title: str = "Scaling report") -> str:
    """The subset of Markdown this report uses: headings, paragraphs, '- ' lists, pipe
    tables, images, `code` and **bold**. (The `markdown` package is not a dependency.)"""

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2">', text)
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
        return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)

    body, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            head, data = rows[0], [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]
            body.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head)
                        + "</tr></thead><tbody>" + "".join(
                            "<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>"
                            for r in data) + "</tbody></table>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
        elif line.strip():
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|",
                                                                                   "- ")):
                para.append(lines[i])
                i += 1
            body.append(f"<p>{inline(' '.join(para))}</p>")
        else:
            i += 1
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;"
             "padding:2px 6px}img{max-width:100%}code{background:#f4f4f4}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


# --------------------------------------------------------------------------------------------
# build + CLI
# --------------------------------------------------------------------------------------------

def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Missing scores are missing rows: drop non-finite values; refuse what cannot be used."""
    df = df[np.isfinite(df.value)].copy()
    if df.empty:
        raise ResultsError("results hold no finite scores")
    return df


def build_report(results_path, out_dir, *, n_boot: int = 100) -> dict[str, Path]:
    """Write every report output for `results_path` into `out_dir`; returns {name: path}.

    Raises ResultsError for input that cannot be read as the results schema.
    """
    df = _prepare(load(results_path))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        with warnings.catch_warnings(), fits.one_blas_thread():
            # optimiser chatter on degenerate series is expected; statuses carry the news
            warnings.simplefilter("ignore")
            written = _build(df, tmp, n_boot)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "figures").mkdir(exist_ok=True)
        final = {}
        for name, path in written.items():
            dest = out_dir / path.relative_to(tmp)
            os.replace(path, dest)
            final[name] = dest
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _figures(df, laws, em_verdicts, mir, bt, figdir: Path) -> dict[str, Path]:
    """Draw every figure; returns {name: path} for those that had data."""
    last = emergence.last_checkpoints(df)
    pairs = mirage.metric_pairs(emergence.probe_rows(last))
    # side by side: the emergent ones first (those are what the mirage question is about)
    emergent = {(r.task, r.shots) for r in mir.itertuples()
                if r.discontinuous_verdict == "emergent"}
    first = [(t, s) in emergent for t, s in zip(pairs.task, pairs.shots)]
    side_by_side = pairs.assign(first=first).sort_values(
        "first", ascending=False, kind="stable").head(4)
    figs = {
        "loss_vs_compute": figures.loss_vs_compute(df, laws.get("power_law_flops"),
                                                   figdir / "loss_vs_compute.png"),
        "probes_vs_params": figures.metric_vs_params(last, em_verdicts, pairs,
                                                     figdir / "probes_vs_params.png"),
        "discontinuous_vs_continuous": figures.mirage_panels(
            last, em_verdicts, side_by_side, figdir / "discontinuous_vs_continuous.png"),
        "task_rung_heatmap": figures.discontinuous_heatmap(last, pairs,
                                                           figdir / "task_rung_heatmap.png"),
        "training_curves": figures.training_curves(df, figdir / "training_curves.png"),
        "backtest": figures.backtest_plot(bt, figdir / "backtest.png"),
    }
    return {k: v for k, v in figs.items() if v is not None}


def _intervention_figures(results: pd.DataFrame, inter: pd.DataFrame,
                          figdir: Path) -> dict[str, Path]:
    """figures/interventions_<task>.png, one per task that an intervention scored."""
    last = emergence.probe_rows(emergence.last_checkpoints(results))
    last = last.assign(intervention=intervention_of(last).to_numpy())
    figs = {}
    for task in sorted(set(inter.task)):
        name = "interventions_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", str(task))
        while name in figs:  # two task names that differ only in odd characters
            name += "_"
        path = figures.intervention_panels(last, inter, task, figdir / f"{name}.png")
        if path is not None:
            figs[name] = path
    return figs


def _build(results: pd.DataFrame, tmp: Path, n_boot: int) -> dict[str, Path]:
    written: dict[str, Path] = {}
    df = base_rows(results)  # the ladder's analyses see the base ladder only
    if df.empty:
        raise ResultsError("results hold no base-ladder rows (every row names an "
                           "intervention), so there is nothing to compare them with")
    laws, fitted = loss_fits(df, n_boot)

    # Training dynamics (one series per run and probe, a fifth of the resamples) run in
    # worker processes while this one does the ladder verdicts and draws the figures.
    dynamics_result = dynamics.detect_in_background(
        df, n_boot=max(n_boot // 5, 20) if n_boot > 0 else 0)
    em, em_verdicts = emergence.detect(df, n_boot=n_boot)
    mir = mirage.mirage_table(em, results=df)
    bt, bt_fits = backtest_mod.backtest(df)
    figs = _figures(df, laws, em_verdicts, mir, bt, tmp / "figures")
    inter = None
    if interventions.names(results):
        inter = interventions.compare(results, n_boot=n_boot, base_verdicts=em_verdicts)
        figs.update(_intervention_figures(results, inter, tmp / "figures"))
    written.update({f"figures/{Path(p).name}": Path(p) for p in figs.values()})
    dyn, dyn_verdicts = dynamics_result()
    for (task, shots, metric, axis), v in em_verdicts.items():
        if v.sigmoid is not None:
            fitted.append(({"scope": "ladder", "target": f"{task}/{shots}/{metric}",
                            "axis": axis}, v.sigmoid))
    for (run, task, shots, metric), v in dyn_verdicts.items():
        if v.sigmoid is not None:
            fitted.append(({"scope": f"run:{run}", "target": f"{task}/{shots}/{metric}",
                            "axis": "tokens"}, v.sigmoid))
    fitted += bt_fits

    spread = seeds.seed_spread(df)  # empty (header only) without replicate runs
    tables = {"emergence": em, "dynamics": dyn, "mirage": mir, "fits": fits_table(fitted),
              "backtest": bt, "seeds": spread}
    if inter is not None:
        tables["interventions"] = inter
    for name, table in tables.items():
        written[f"{name}.csv"] = tmp / f"{name}.csv"
        table.to_csv(written[f"{name}.csv"], index=False)

    md = write_markdown(df, laws, em, dyn, mir, bt, spread, figs, inter, results)
    written["report.md"] = tmp / "report.md"
    written["report.md"].write_text(md)
    written["report.html"] = tmp / "report.html"
    written["report.html"].write_text(markdown_to_html(md))
    return written


HELP = """\
Fit scaling laws, detect emergent abilities and write a report from stored results.

PATH is a results file (CSV or Parquet) or a directory searched for results.csv files, in
the results schema: one row per (run, step, task, shots, metric) with columns
  run, rung, params, nonembed_params, step, tokens, flops, task, shots, metric, value, n
and optionally chance, seed, data_hash, intervention. Validation loss is a row with
task=val, metric=loss. Rows with an intervention (e.g. distill:s6) are compared with the
base ladder (intervention empty) and kept out of its analyses. Scores of any model family
work; no checkpoints are read.
"""

EPILOG = """\
writes into DIR:
  emergence.csv  verdict per (task, shots, metric, axis): emergent, smooth, flat,
                 non_monotone or insufficient_data (judged against the `chance` column
                 where present), the threshold and its 95% interval, a named outlier size,
                 and with replicate seeds whether they agree (holds_across_seeds)
  dynamics.csv   the same along training within each run, with the step of a transition
                 and the share of the validation loss's fall across it (loss_share)
  mirage.csv     discontinuous (exact match, accuracy) vs continuous metrics: is the
                 emergence a metric artifact?
  fits.csv       every fitted curve: parameters, 95% intervals, goodness of fit, status
  backtest.csv   the largest rungs predicted from the smaller ones
  seeds.csv      spread of final scores across replicate runs of a size (seeds);
                 header only when no size was trained twice
  interventions.csv  only when rows name an intervention: per probe and intervention,
                 both ladders' verdicts against params, the threshold shift in decades
                 with its interval and an outcome (plus figures/interventions_<task>.png)
  report.md, report.html, figures/*.png
Files are built in a temporary directory and moved in at the end; other files in DIR are
left alone. Exit status 2 means the results could not be read.

example:
  scaling report --results runs/ladder --out reports
"""


def _non_negative(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scaling report", description=HELP, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True, metavar="PATH",
                   help="results file or runs directory")
    p.add_argument("--out", default="reports", metavar="DIR",
                   help="output directory (default: reports)")
    p.add_argument("--bootstrap", type=_non_negative, default=100, metavar="N",
                   help="bootstrap resamples for the 95%% intervals (default 100; fewer is "
                        "faster, 0 skips the intervals)")
    p.add_argument("--wandb", nargs="?", const="scaling", metavar="PROJECT",
                   help="also log the figures (images) and the report with its results (an "
                        "artifact) to a wandb run in PROJECT (default scaling); online with an "
                        "API key, else offline; WANDB_MODE decides when set")
    return p


def _to_wandb(out_dir, written: dict[str, Path], results, project: str) -> int:
    """`--wandb`: send the written report to wandb; 0, or 1 with a one-line error."""
    from scaling.logger import log_report

    try:
        where = log_report(Path(out_dir), written, results, project)
    except Exception as exc:  # wandb's errors vary; the report on disk is complete anyway
        print(f"error: the report is written but not logged to wandb: "
              f"{' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 1
    print(f"logged the report to wandb: {where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for unusable input)."""
    args = parser().parse_args(argv)
    try:
        written = build_report(args.results, args.out, n_boot=args.bootstrap)
    except ResultsError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write the report: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files to {args.out} (see {Path(args.out) / 'report.md'})")
    if args.wandb:
        return _to_wandb(Path(args.out), written, args.results, args.wandb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
