"""Interventions against the base ladder: the `intervention` column of the results schema,
the threshold shift in decades (analysis/interventions.py) and the report's section.

Known-truth ladders are drawn here from a sigmoid in log10(params) with binomial noise (the
generators of analysis/synthetic.py place their thresholds on 1e5..1e8, so the rows are
written directly): rungs every half decade from 10^2.25 to 10^6.75, the base ladder's
ability turning on at 1e5, a distilled ladder's at 1e4 (one decade earlier).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import emergence, interventions
from analysis.report import main
from analysis.synthetic import binomial, sigmoid
from scaling.results import (BASE, INTERVENTION, OPTIONAL_COLUMNS, base_rows,
                             intervention_of, load)

U = np.arange(2.25, 7.0, 0.5)  # log10 params: 10 rungs, thresholds 4 and 5 between rungs
CHANCE, CEIL, N = 0.1, 0.9, 200
DRAWS = 40


def ladder(rng, tag: str, mid: float | None, *, k: float = 10.0, task: str = "jump",
           loss: bool = False) -> list[dict]:
    """One ladder's rows at its last checkpoint: exact match from chance to CEIL around
    10^mid (mid None: at chance everywhere); `loss` adds validation-loss rows."""
    p = sigmoid(U, mid, k, CHANCE, CEIL) if mid is not None else np.full(U.size, CHANCE)
    y = binomial(rng, p, N)
    rows = []
    for i, (u, v) in enumerate(zip(U, y)):
        params = int(round(10 ** u))
        base = {"run": f"{tag or 'base'}-r{i}", "rung": f"R{i}", "params": params,
                "nonembed_params": params // 2, "step": 1000, "tokens": 2_048_000,
                "flops": 6.0 * params * 2_048_000, "shots": 0, INTERVENTION: tag}
        rows.append(dict(base, task=task, metric="exact_match", value=v, n=N, chance=CHANCE))
        if loss:
            rows.append(dict(base, task="val", metric="loss", value=1.5 + 30 * params ** -0.25,
                             n=50_000, chance=np.nan))
    return rows


def compare(rows: list[dict], n_boot: int = 100) -> pd.DataFrame:
    return interventions.compare(pd.DataFrame(rows), n_boot=n_boot).set_index(INTERVENTION)


# --------------------------------------------------------------------------------------------
# the schema's column
# --------------------------------------------------------------------------------------------

def test_intervention_is_an_optional_column():
    assert INTERVENTION in OPTIONAL_COLUMNS and BASE == ""


def test_files_without_the_column_load_as_base(tmp_path):
    rows = pd.DataFrame(ladder(np.random.default_rng(0), "", 5.0)).drop(columns=INTERVENTION)
    rows.to_csv(tmp_path / "results.csv", index=False)
    df = load(tmp_path / "results.csv")
    assert INTERVENTION not in df.columns  # nothing added to what the file holds
    assert intervention_of(df).eq(BASE).all() and len(base_rows(df)) == len(df)
    assert interventions.names(df) == []
    assert interventions.compare(df).empty
    assert list(interventions.compare(df).columns) == interventions.COLUMNS


def test_column_read_as_text_with_empty_for_base(tmp_path):
    rows = pd.DataFrame(ladder(np.random.default_rng(0), "", 5.0)[:4])
    rows[INTERVENTION] = ["", "  distill:s6 ", "1", "finetune:a,b"]  # quoted comma
    rows.to_csv(tmp_path / "results.csv", index=False)
    df = load(tmp_path / "results.csv")
    assert df[INTERVENTION].tolist() == ["", "distill:s6", "1", "finetune:a,b"]
    assert len(base_rows(df)) == 1
    assert interventions.names(df) == ["1", "distill:s6", "finetune:a,b"]


def test_files_with_and_without_the_column_merge(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pd.DataFrame(ladder(rng, "", 5.0)).drop(columns=INTERVENTION).to_csv(
        tmp_path / "a" / "results.csv", index=False)
    pd.DataFrame(ladder(rng, "mlm", 5.0)).to_csv(tmp_path / "b" / "results.csv", index=False)
    df = load(tmp_path)
    assert set(df[INTERVENTION]) == {"", "mlm"}  # the file without the column: base rows
    assert (base_rows(df).run.str.startswith("base")).all()
    assert len(base_rows(df)) == U.size


# --------------------------------------------------------------------------------------------
# shift and outcome
# --------------------------------------------------------------------------------------------

def test_shift_joins_the_intervals_at_their_ends():
    base = emergence.Verdict("emergent", threshold=1e5, threshold_low=5e4,
                             threshold_high=2e5)
    other = emergence.Verdict("emergent", threshold=1e4, threshold_low=8e3,
                              threshold_high=3e4)
    s, lo, hi = interventions.shift(base, other)
    assert s == pytest.approx(-1.0)
    assert lo == pytest.approx(math.log10(8e3 / 2e5))
    assert hi == pytest.approx(math.log10(3e4 / 5e4))
    assert interventions.outcome("emergent", "emergent", s, lo, hi) == \
        "shift of -1.00 decades [-1.40, -0.22]"
    assert interventions.outcome("emergent", "emergent", 0.1, -0.2, 0.4) == \
        "no shift (+0.10 decades [-0.20, +0.40])"
    flat = emergence.Verdict("flat")
    assert all(np.isnan(interventions.shift(base, flat)))
    assert interventions.outcome("emergent", "flat", np.nan, np.nan, np.nan) == \
        "no threshold (intervention: flat)"
    assert interventions.outcome("smooth", "emergent", np.nan, np.nan, np.nan) == \
        "no threshold (base: smooth)"
    assert interventions.outcome("flat", "flat", np.nan, np.nan, np.nan) == \
        "no threshold (base: flat; intervention: flat)"


def test_without_intervals_the_ends_are_the_thresholds():
    base = emergence.Verdict("emergent", threshold=1e5)
    other = emergence.Verdict("emergent", threshold=1e4)
    assert interventions.shift(base, other) == pytest.approx((-1.0, -1.0, -1.0))


# --------------------------------------------------------------------------------------------
# known truth, many seeded draws
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [10.0, 6.0])  # 10-90% of the rise over 0.44 / 0.73 decades
def test_distilled_ladder_shifts_one_decade(k):
    """Threshold 1e5 -> 1e4: shift near -1 with an interval holding -1 and not 0."""
    hits, estimates = 0, []
    for seed in range(DRAWS):
        rng = np.random.default_rng(1000 + seed)
        out = compare(ladder(rng, "", 5.0, k=k) + ladder(rng, "distill:s6", 4.0, k=k))
        r = out.loc["distill:s6"]
        estimates.append(r.shift_decades)
        hits += (r.shift_low <= -1 <= r.shift_high and r.shift_high < 0
                 and r.outcome.startswith("shift of -"))
    assert hits / DRAWS >= 0.9
    assert abs(np.median(estimates) + 1) < 0.1


def test_identical_intervention_gives_no_shift():
    no_shift = 0
    for seed in range(DRAWS):
        rng = np.random.default_rng(2000 + seed)
        out = compare(ladder(rng, "", 5.0) + ladder(rng, "prompt:16:jump", 5.0))
        no_shift += out.loc["prompt:16:jump"].outcome.startswith("no shift")
    assert no_shift / DRAWS >= 0.9


def test_intervention_at_chance_has_no_threshold():
    named = 0
    for seed in range(DRAWS):
        rng = np.random.default_rng(3000 + seed)
        r = compare(ladder(rng, "", 5.0) + ladder(rng, "mlm", None)).loc["mlm"]
        named += (r.outcome == "no threshold (intervention: flat)"
                  and r.base_verdict == "emergent" and np.isnan(r.shift_decades))
    assert named / DRAWS >= 0.9


def test_probe_the_base_ladder_did_not_score():
    rng = np.random.default_rng(0)
    out = compare(ladder(rng, "", 5.0) + ladder(rng, "mlm", 5.0, task="other"), n_boot=0)
    r = out[out.task == "other"].iloc[0]
    assert r.base_verdict == interventions.NO_SCORES
    assert r.outcome.startswith("no threshold (base: no scores")


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------

def _report(tmp_path, rows: list[dict] | pd.DataFrame, name: str) -> tuple[int, object]:
    src, out = tmp_path / f"{name}.csv", tmp_path / name
    pd.DataFrame(rows).to_csv(src, index=False)
    return main(["--results", str(src), "--out", str(out), "--bootstrap", "20"]), out


LADDER_TABLES = ("emergence.csv", "dynamics.csv", "mirage.csv", "fits.csv", "backtest.csv",
                 "seeds.csv")


def test_report_compares_interventions(tmp_path, capsys):
    rng = np.random.default_rng(7)
    base = ladder(rng, "", 5.0, loss=True) + ladder(rng, "", None, task="never", loss=False)
    tagged = (ladder(rng, "distill:s6", 4.0, loss=True)
              + ladder(rng, "distill:s6", None, task="never")
              + ladder(rng, "finetune:full:jump", None))
    rc, out = _report(tmp_path, base + tagged, "with")
    assert rc == 0, capsys.readouterr().err
    inter = pd.read_csv(out / "interventions.csv", keep_default_na=False)
    assert list(inter.columns) == interventions.COLUMNS
    assert set(zip(inter.task, inter.intervention)) == {
        ("jump", "distill:s6"), ("never", "distill:s6"), ("jump", "finetune:full:jump")}
    jump = inter[(inter.task == "jump") & (inter.intervention == "distill:s6")].iloc[0]
    assert jump.outcome.startswith("shift of -")
    fine = inter[inter.intervention == "finetune:full:jump"].iloc[0]
    assert fine.outcome == "no threshold (intervention: flat)"
    md = (out / "report.md").read_text()
    assert "## Interventions" in md and "`distill:s6`" in md and "shift of -" in md
    pngs = {p.name for p in (out / "figures").glob("interventions_*.png")}
    assert pngs == {"interventions_jump.png", "interventions_never.png"}
    assert "figures/interventions_jump.png" in md
    assert "Interventions" in (out / "report.html").read_text()

    # the ladder's own analyses see the base rows only: the same as a base-only report
    rc, alone = _report(tmp_path, base, "alone")
    assert rc == 0
    for name in LADDER_TABLES:
        assert (out / name).read_bytes() == (alone / name).read_bytes(), name


def test_no_interventions_no_section_and_same_outputs(tmp_path, capsys):
    rows = ladder(np.random.default_rng(8), "", 5.0, loss=True)
    rc, empty_col = _report(tmp_path, rows, "empty_column")  # the column, every cell empty
    assert rc == 0, capsys.readouterr().err
    rc, no_col = _report(tmp_path, pd.DataFrame(rows).drop(columns=INTERVENTION), "no_column")
    assert rc == 0
    for out in (empty_col, no_col):
        assert not (out / "interventions.csv").exists()
        assert not list((out / "figures").glob("interventions_*"))
        assert "Interventions" not in (out / "report.md").read_text()
    for name in LADDER_TABLES + ("report.md", "report.html"):
        assert (empty_col / name).read_bytes() == (no_col / name).read_bytes(), name


def test_report_refuses_results_without_a_base_ladder(tmp_path, capsys):
    rc, _ = _report(tmp_path, ladder(np.random.default_rng(0), "mlm", 5.0), "only")
    assert rc == 2
    assert "no base-ladder rows" in capsys.readouterr().err
