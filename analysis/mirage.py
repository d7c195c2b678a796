"""Mirage check (Schaeffer et al. 2023): does an emergence survive a continuous metric?

If per-token accuracy p rises smoothly, exact match on an L-token answer is about p^L and can
look abrupt. So for every (task, shots) we set the exact_match verdict next to the verdicts
of the continuous metrics on the same axis (PRIMARY_AXIS = "params": model size, the axis
Wei et al. and Schaeffer et al. argue about) and label it:

- `mirage`: emergent under exact_match, no continuous metric emergent, and at least one
  continuous metric smooth (the same ability improves gradually when measured smoothly).
- `survives_continuous`: emergent under exact_match and under at least one continuous metric.
- `inconclusive`: emergent under exact_match, but the continuous metrics are neither
  emergent nor smooth (flat, insufficient data, or not reported).
- `not_emergent`: exact_match is not emergent (or not reported); nothing to explain.

`mirage` (boolean) is True exactly for the `mirage` label.
"""

from __future__ import annotations

import pandas as pd

PRIMARY_AXIS = "params"
DISCONTINUOUS = "exact_match"
CONTINUOUS = ("token_accuracy", "edit_similarity", "answer_logprob")
COLUMNS = ["task", "shots", "axis", DISCONTINUOUS, *CONTINUOUS, "continuous_verdict",
           "mirage", "label"]


def _label(exact: str, cont: list[str]) -> tuple[str, str]:
    """(summary of the continuous verdicts, label) from the verdict strings ("" = missing)."""
    present = [v for v in cont if v]
    if "emergent" in present:
        summary = "emergent"
    elif "smooth" in present:
        summary = "smooth"
    elif present:
        summary = "/".join(sorted(set(present)))
    else:
        summary = "missing"
    if exact != "emergent":
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
        exact = verdicts.get(DISCONTINUOUS, "")
        cont = [verdicts.get(m, "") for m in CONTINUOUS]
        summary, label = _label(exact, cont)
        rows.append({"task": task, "shots": shots, "axis": axis, DISCONTINUOUS: exact,
                     **dict(zip(CONTINUOUS, cont)), "continuous_verdict": summary,
                     "mirage": label == "mirage", "label": label})
    return pd.DataFrame(rows, columns=COLUMNS)
