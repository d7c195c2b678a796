"""Interventions against the base ladder: does distillation, fine-tuning, prompt tuning or
an MLM objective move where an ability turns on?

Rows carry the optional `intervention` column of the results schema (empty: the base
ladder; e.g. `distill:s6`, `finetune:full:addition_3d`, `prompt:16:addition_3d`, `mlm`).
Each intervention's runs form a ladder of their own. For every probe series (task, shots,
metric: every probe metric, as in the report's emergence section) that an intervention
scored, both ladders get a verdict against `params` at each run's last checkpoint, by
`emergence.detect` (the base ladder's verdicts may be passed in, as the report does), and
the thresholds of the emergent ones are compared:

- shift = log10(t_intervention / t_base) decades (negative: the ability turns on in smaller
  models under the intervention);
- its interval combines the two thresholds' 95% intervals at their ends,
  [log10(lo_int / hi_base), log10(hi_int / lo_base)]: every difference of two values each
  inside its own interval. The verdicts keep no bootstrap draws to pair, and the two
  ladders are independent data, so this is conservative: its coverage is at least that of
  both intervals together, and for two normal intervals of equal width it is ~99.4%, not
  95% (the width adds up, w1 + w2, where a paired bootstrap would give sqrt(w1² + w2²)).
  Without intervals (n_boot = 0) the ends are the thresholds themselves.
- outcome: `shift of X decades [lo, hi]` when the interval excludes 0, `no shift (X decades
  [lo, hi])` when it contains 0, `no threshold (...)` when either ladder has none, naming
  which and its verdict (`no scores` when the base ladder did not score the probe).

The result is `interventions.csv` (COLUMNS), one row per (task, shots, metric, intervention).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import emergence
from scaling.results import BASE, INTERVENTION, base_rows, intervention_of

AXIS = "params"
COLUMNS = ["task", "shots", "metric", "intervention", "base_verdict", "intervention_verdict",
           "base_threshold", "intervention_threshold", "shift_decades", "shift_low",
           "shift_high", "outcome"]
NO_SCORES = "no scores"  # the outcome's word for a probe one ladder did not score


def names(df: pd.DataFrame) -> list[str]:
    """The interventions present in results, sorted (the base ladder is not one)."""
    tags = intervention_of(df)
    return sorted(set(tags[tags != BASE]))


def by_intervention(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{intervention: its rows} for every intervention in results."""
    tags = intervention_of(df)
    return {name: df[(tags == name).to_numpy()] for name in names(df)}


def shift(base: emergence.Verdict, other: emergence.Verdict) -> tuple[float, float, float]:
    """(shift, low, high) in decades of `other`'s threshold against `base`'s (NaN when
    either has none); the interval from the two intervals' ends (module docstring)."""
    tb, ti = base.threshold, other.threshold
    if not (np.isfinite(tb) and np.isfinite(ti) and tb > 0 and ti > 0):
        return np.nan, np.nan, np.nan

    def ends(v):
        lo, hi = v.threshold_low, v.threshold_high
        ok = np.isfinite(lo) and np.isfinite(hi) and lo > 0 and hi > 0
        return (lo, hi) if ok else (v.threshold, v.threshold)

    (bl, bh), (il, ih) = ends(base), ends(other)
    return (math.log10(ti / tb), math.log10(min(il, ti) / max(bh, tb)),
            math.log10(max(ih, ti) / min(bl, tb)))


def outcome(base_verdict: str, other_verdict: str, s: float, lo: float, hi: float) -> str:
    """The text outcome of one comparison (module docstring)."""
    if np.isfinite(s):
        span = f"{s:+.2f} decades [{lo:+.2f}, {hi:+.2f}]"
        return f"no shift ({span})" if lo <= 0 <= hi else f"shift of {span}"
    missing = [f"{who}: {verdict}" for who, verdict, ok in
               (("base", base_verdict, base_verdict == "emergent"),
                ("intervention", other_verdict, other_verdict == "emergent")) if not ok]
    return f"no threshold ({'; '.join(missing)})"


def compare(df: pd.DataFrame, n_boot: int = 100,
            base_verdicts: dict | None = None) -> pd.DataFrame:
    """interventions.csv as a DataFrame (empty, with COLUMNS, when results hold none).

    `base_verdicts`: {(task, shots, metric, "params"): Verdict} of the base ladder, as
    `emergence.detect(base_rows(df))` returns them; computed here when not given.
    """
    groups = by_intervention(df)
    if not groups:
        return pd.DataFrame(columns=COLUMNS)
    if base_verdicts is None:
        base = base_rows(df)
        base_verdicts = emergence.detect(base, axes=(AXIS,), n_boot=n_boot)[1] \
            if not base.empty else {}
    rows = []
    for name, sub in groups.items():
        _, verdicts = emergence.detect(sub, axes=(AXIS,), n_boot=n_boot)
        for (task, shots, metric, _axis), v in verdicts.items():
            b = base_verdicts.get((task, shots, metric, AXIS))
            bv = b.verdict if b is not None else NO_SCORES
            s, lo, hi = shift(b, v) if b is not None else (np.nan,) * 3
            rows.append({"task": task, "shots": shots, "metric": metric,
                         INTERVENTION: name, "base_verdict": bv,
                         "intervention_verdict": v.verdict,
                         "base_threshold": b.threshold if b is not None else np.nan,
                         "intervention_threshold": v.threshold, "shift_decades": s,
                         "shift_low": lo, "shift_high": hi,
                         "outcome": outcome(bv, v.verdict, s, lo, hi)})
    return pd.DataFrame(rows, columns=COLUMNS)
