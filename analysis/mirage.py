"""Mirage check (Schaeffer et al. 2023): does an emergence survive a continuous metric?

If per-token accuracy p rises smoothly, exact match on an L-token answer is about p^L and can
look abrupt. So for every (task, shots) we set the verdict under the task's discontinuous
metric (`exact_match` for generation probes, `accuracy` for multiple-choice ones) next to
the verdicts under its continuous metrics (`token_accuracy`, `edit_similarity`,
`answer_logprob`; `gold_prob` for multiple choice), all on one axis (PRIMARY_AXIS =
"params": model size, the axis Wei et al. and Schaeffer et al. argue about), and label it:

- `mirage`: emergent under the discontinuous metric, no continuous metric emergent, and at
  least one continuous metric smooth (the same ability improves gradually when measured
  smoothly).
- `survives_continuous`: emergent under the discontinuous metric and under at least one
  continuous metric.
- `inconclusive`: emergent under the discontinuous metric, but the continuous metrics are
  neither emergent nor smooth (flat, insufficient data, or not reported).
- `not_emergent`: the discontinuous metric is not emergent (or not reported).

`mirage` (boolean) is True exactly for the `mirage` label. The metric kinds mirror
`scaling/metrics.py` (DISCONTINUOUS, CONTINUOUS); they are repeated here so that the
analysis reads any results file without the harness' internals.
"""

from __future__ import annotations

import pandas as pd

PRIMARY_AXIS = "params"
DISCONTINUOUS = ("exact_match", "accuracy")
CONTINUOUS = ("token_accuracy", "edit_similarity", "answer_logprob", "gold_prob")
# the continuous metric drawn next to the discontinuous one: the closest per-token analogue
FIGURE_CONTINUOUS = ("token_accuracy", "gold_prob", "edit_similarity", "answer_logprob")
COLUMNS = ["task", "shots", "axis", "discontinuous_metric", "discontinuous_verdict",
           *CONTINUOUS, "continuous_verdict", "mirage", "label"]


def first_present(candidates, metrics) -> str:
    """The first of `candidates` among `metrics` ("" if none)."""
    present = set(metrics)
    return next((m for m in candidates if m in present), "")


def metric_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """Per (task, shots): its discontinuous metric and the continuous one to draw beside it."""
    rows = [{"task": task, "shots": shots,
             "discontinuous": first_present(DISCONTINUOUS, g.metric.unique()),
             "continuous": first_present(FIGURE_CONTINUOUS, g.metric.unique())}
            for (task, shots), g in df.groupby(["task", "shots"], sort=True)]
    return pd.DataFrame(rows, columns=["task", "shots", "discontinuous", "continuous"])


def _label(discontinuous: str, cont: list[str]) -> tuple[str, str]:
    """(summary of the continuous verdicts, label) from verdict strings ("" = missing)."""
    present = [v for v in cont if v]
    if "emergent" in present:
        summary = "emergent"
    elif "smooth" in present:
        summary = "smooth"
    elif present:
        summary = "/".join(sorted(set(present)))
    else:
        summary = "missing"
    if discontinuous != "emergent":
        return summary, "not_emergent"
    if summary == "emergent":
        return summary, "survives_continuous"
    if summary == "smooth":
        return summary, "mirage"
    return summary, "inconclusive"


def mirage_table(emergence: pd.DataFrame, axis: str = PRIMARY_AXIS) -> pd.DataFrame:
    """mirage.csv from the emergence table: one row per (task, shots)."""
    em = emergence[emergence.axis == axis]
    rows = []
    for (task, shots), g in em.groupby(["task", "shots"], sort=True):
        verdicts = dict(zip(g.metric, g.verdict))
        disc = first_present(DISCONTINUOUS, verdicts)
        cont = [verdicts.get(m, "") for m in CONTINUOUS]
        summary, label = _label(verdicts.get(disc, ""), cont)
        rows.append({"task": task, "shots": shots, "axis": axis, "discontinuous_metric": disc,
                     "discontinuous_verdict": verdicts.get(disc, ""),
                     **dict(zip(CONTINUOUS, cont)), "continuous_verdict": summary,
                     "mirage": label == "mirage", "label": label})
    return pd.DataFrame(rows, columns=COLUMNS)
