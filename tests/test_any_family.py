"""Results of any model family: empty training columns, refusals that name the cell,
conflicting copies refused, backtest predictions inside the metric's range."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import backtest, emergence
from analysis.report import build_report, main
from scaling.results import METRIC_RANGE, ResultsError, append_rows, load, read_file

BIG_G_SIZES = [2e6, 16e6, 53e6, 125e6, 244e6, 422e6, 1e9, 2e9, 4e9, 8e9]


def big_g(chance: bool = True, seed: int = 0) -> pd.DataFrame:
    """Published-style scores of another family (as BIG-bench's BIG-G table): one row per
    model and score, parameter counts known, step/tokens/flops/nonembed_params empty.

    `arith` exact match turns on near 1e9 parameters; its log-probability and the
    multiple-choice `quiz` accuracy (chance 1/4) rise smoothly.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for p in BIG_G_SIZES:
        u = np.log10(p)
        scores = {("arith", "exact_match"): 1 / (1 + np.exp(-4 * (u - 9.0))),
                  ("arith", "answer_logprob"): -3 + 0.3 * (u - 6),
                  ("quiz", "accuracy"): 0.25 + 0.05 * (u - 6)}
        for (task, metric), v in scores.items():
            lo, hi = METRIC_RANGE[metric]
            row = dict(run=f"BIG-G {p:.0e}", rung="", params=int(p), nonembed_params=None,
                       step=None, tokens=None, flops=None, task=task, shots=0, metric=metric,
                       value=float(np.clip(v + 0.01 * rng.standard_normal(), lo, hi)), n=500)
            if chance:
                row["chance"] = 0.25 if metric == "accuracy" else None
            rows.append(row)
    return pd.DataFrame(rows)


def ladder(sizes: int = 6) -> pd.DataFrame:
    """A small trained ladder with every column filled: validation loss per checkpoint, and
    an exact match linear in the loss (clipped at 1), so that a two-step fit on the smaller
    rungs extrapolates past 1 at the largest."""
    rows = []
    for i, p in enumerate(np.geomspace(2e4, 3e6, sizes).astype(int)):
        for step in (100, 300, 1000, 3000):
            tokens = step * 4096
            loss = 1.5 + 30 * p ** -0.25 + 10 * tokens ** -0.2
            base = dict(run=f"r{i}", rung=f"R{i}", params=int(p), nonembed_params=int(p * .9),
                        step=step, tokens=tokens, flops=6.0 * p * tokens, shots=0, n=400)
            rows += [dict(base, task="val", metric="loss", value=loss),
                     dict(base, task="t", metric="exact_match",
                          value=float(np.clip(0.2 + 1.2 * (3.6 - loss), 0, 1))),
                     dict(base, task="t", metric="answer_logprob",
                          value=float(min(-0.05, -2 + 2.5 * (3.6 - loss))))]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# another family's scores go through the whole report
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chance", [True, False])
def test_big_g_table_reports_params_and_refuses_nothing(tmp_path, chance):
    src = tmp_path / "big_g.csv"
    big_g(chance).to_csv(src, index=False)
    df = load(src)
    assert df.step.isna().all() and df.tokens.isna().all() and df.flops.isna().all()
    assert str(df.step.dtype) == "Int64" and str(df.params.dtype) == "int64"
    assert (df.rung == df.run).all()  # no rung label: each model a rung of its own

    written = build_report(src, tmp_path / "out", n_boot=0)
    em = pd.read_csv(written["emergence.csv"])
    assert len(em) == 3 * len(emergence.AXES)
    on_params = em[em.axis == "params"].set_index("metric").verdict
    assert "insufficient_data" not in set(on_params)
    assert on_params["exact_match"] in ("emergent", "smooth")  # 0 to 1 over the sizes
    assert set(em[em.axis != "params"].verdict) == {"insufficient_data"}
    assert {"probes_vs_params", "task_rung_heatmap"} <= {p.stem for p in written.values()}
    md = written["report.md"].read_text()
    assert "1 checkpoint per run" in md and "Empty in every row: `step`" in md
    assert pd.read_csv(written["backtest.csv"]).empty  # no loss: no backtest, no failed rows


def test_published_loss_without_training_budget(tmp_path):
    # another family that also publishes each model's loss: the loss axis and the backtest
    # work on one (step-less) checkpoint per model; flops and tokens still have no data
    val = pd.DataFrame([dict(run=f"BIG-G {p:.0e}", rung="", params=int(p), task="val", shots=0,
                             metric="loss", value=1.7 + 400 * p ** -0.3, n=10_000)
                        for p in BIG_G_SIZES])
    src = tmp_path / "results.csv"
    pd.concat([big_g(), val]).to_csv(src, index=False)
    written = build_report(src, tmp_path / "out", n_boot=0)
    em = pd.read_csv(written["emergence.csv"])
    assert "insufficient_data" not in set(em[em.axis.isin(["params", "loss"])].verdict)
    assert set(em[em.axis.isin(["flops", "tokens"])].verdict) == {"insufficient_data"}
    bt = pd.read_csv(written["backtest.csv"])
    scores = bt[bt.metric.isin(["exact_match", "accuracy"])]
    assert len(scores) == 6 and scores.predicted.between(0, 1).all()


def test_mixed_families_in_one_directory(tmp_path):
    # a trained ladder (every column) next to another family's table (training columns empty)
    (tmp_path / "ladder").mkdir()
    (tmp_path / "big_g").mkdir()
    ladder().to_csv(tmp_path / "ladder" / "results.csv", index=False)
    big_g().to_csv(tmp_path / "big_g" / "results.csv", index=False)
    df = load(tmp_path)
    last = emergence.last_checkpoints(df)
    # every BIG-G row is its model's last (only) checkpoint; the ladder keeps step 3000
    assert (last[last.run.str.startswith("BIG-G")].groupby("run").size() == 3).all()
    assert set(last[last.run.str.startswith("r")].step) == {3000}
    written = build_report(tmp_path, tmp_path / "out", n_boot=0)
    em = pd.read_csv(written["emergence.csv"])
    assert set(em[em.task == "arith"].axis) == set(emergence.AXES)
    assert "training_curves" in {p.stem for p in written.values()}


# --------------------------------------------------------------------------------------------
# refusals name the file, the row and the column, in one line
# --------------------------------------------------------------------------------------------

METRICS = ["exact_match", "accuracy", "token_accuracy", "edit_similarity", "gold_prob",
           "answer_prob", "answer_logprob", "loss", "bleu"]


def one_of_each_metric() -> pd.DataFrame:
    """One valid row per metric, every column filled (row k+1 holds METRICS[k])."""
    value = {"answer_logprob": -1.0, "loss": 3.0, "bleu": 12.0}
    return pd.DataFrame([dict(run="r0", rung="s1", params=1000, nonembed_params=800, step=10,
                              tokens=40960, flops=2.5e8, task="val" if m == "loss" else "t",
                              shots=0, metric=m, value=value.get(m, 0.5), n=100,
                              chance=0.1 if m != "loss" and m != "answer_logprob" else None)
                         for m in METRICS])


REFUSALS = [  # (column, metric of the row to spoil, bad cell, words the message must hold)
    ("params", "exact_match", -5, "positive integer"),
    ("params", "exact_match", 0, "positive integer"),
    ("params", "exact_match", 1e30, "must be at most 1e+15"),
    ("params", "exact_match", "inf", "positive integer"),
    ("params", "exact_match", "many", "must be a number"),
    ("params", "exact_match", None, "must not be empty"),
    ("params", "exact_match", 12.5, "integer"),
    ("nonembed_params", "accuracy", -1, "non-negative integer"),
    ("nonembed_params", "accuracy", 5000, "must not exceed params"),
    ("n", "gold_prob", -3, "positive integer"),
    ("n", "gold_prob", 0, "positive integer"),
    ("n", "gold_prob", None, "must not be empty"),
    ("shots", "gold_prob", -1, "non-negative integer"),
    ("tokens", "edit_similarity", -1, "non-negative integer"),
    ("step", "edit_similarity", -2, "non-negative integer"),
    ("step", "edit_similarity", 2.5, "integer"),
    ("flops", "token_accuracy", -1.0, "non-negative"),
    ("flops", "token_accuracy", "inf", "finite"),
    ("value", "exact_match", 1.47, "[0, 1]"),
    ("value", "accuracy", -0.1, "[0, 1]"),
    ("value", "token_accuracy", 1.5, "[0, 1]"),
    ("value", "edit_similarity", 2.0, "[0, 1]"),
    ("value", "gold_prob", 1.2, "[0, 1]"),
    ("value", "answer_prob", -0.5, "[0, 1]"),
    ("value", "answer_logprob", 0.86, "answer_logprob"),
    ("value", "loss", -1.0, "loss"),
    ("value", "exact_match", "high", "must be a number"),
    ("chance", "accuracy", 1.5, "[0, 1]"),
    ("chance", "exact_match", "a quarter", "must be a number"),
    ("run", "accuracy", None, "must not be empty"),
    ("task", "accuracy", None, "must not be empty"),
    ("metric", "accuracy", " ", "must not be empty"),
]


@pytest.mark.parametrize("column,metric,bad,words", REFUSALS,
                         ids=[f"{c}-{m}-{b}" for c, m, b, _ in REFUSALS])
def test_refusal_names_column_and_row(tmp_path, capsys, column, metric, bad, words):
    df = one_of_each_metric().astype(object)
    i = METRICS.index(metric)
    df.loc[i, column] = bad
    src = tmp_path / "results.csv"
    df.to_csv(src, index=False)
    assert main(["--results", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"{src} row {i + 1}: column {column} " in err and words in err, err
    assert not (tmp_path / "out").exists()


def test_valid_rows_pass_and_unknown_metrics_are_not_range_checked(tmp_path):
    src = tmp_path / "results.csv"
    one_of_each_metric().to_csv(src, index=False)
    df = read_file(src)
    assert df.set_index("metric").value["bleu"] == 12.0  # no range known for bleu
    assert str(df.params.dtype) == "int64" and str(df.tokens.dtype) == "Int64"


def test_refusal_counts_the_other_bad_rows(tmp_path):
    df = one_of_each_metric()
    df["params"] = -1
    src = tmp_path / "results.csv"
    df.to_csv(src, index=False)
    with pytest.raises(ResultsError, match=r"row 1: column params .* got -1 \(8 more rows"):
        load(src)


def test_huge_params_do_not_overflow_on_append(tmp_path):
    row = one_of_each_metric().iloc[0].to_dict() | {"params": 1e30}
    with pytest.raises(ResultsError, match="column params must be at most"):
        append_rows(tmp_path, [row])
    assert not (tmp_path / "results.csv").exists()


# --------------------------------------------------------------------------------------------
# duplicates: identical copies are dropped, conflicting ones refused
# --------------------------------------------------------------------------------------------

def _two_copies(tmp_path, change=None) -> tuple:
    a, b = tmp_path / "machine_a", tmp_path / "machine_b"
    a.mkdir()
    b.mkdir()
    df = big_g()
    df.to_csv(a / "results.csv", index=False)
    other = df.copy()
    if change is not None:
        change(other)
    other.to_csv(b / "results.csv", index=False)
    return a / "results.csv", b / "results.csv", df


def test_identical_copies_across_files_load_once(tmp_path):
    *_, df = _two_copies(tmp_path, lambda d: d.__setitem__("value", d.value * (1 + 1e-12)))
    assert len(load(tmp_path)) == len(df)


def test_conflicting_copies_across_files_are_refused(tmp_path, capsys):
    def change(d):
        d.loc[4, "value"] += 0.1  # one score differs
        d.loc[7, "n"] = 400  # another was scored on fewer instances

    fa, fb, _ = _two_copies(tmp_path, change)
    assert main(["--results", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "conflicting rows" in err, err
    assert f"{fa} row 5" in err and f"{fb} row 5" in err and "step=empty" in err
    assert "2 conflicting keys in total" in err


def test_conflict_within_one_file_is_refused(tmp_path):
    df = ladder(4)
    dup = df.iloc[[5]].assign(value=df.value.iloc[5] + 0.01)
    pd.concat([df, dup]).to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(ResultsError, match=r"row 6\) vs .* row 49\); 1 conflicting key in"):
        load(tmp_path / "results.csv")


def test_append_rows_still_replaces_a_rescored_key(tmp_path):
    row = one_of_each_metric().iloc[0].to_dict()
    append_rows(tmp_path, [row])
    append_rows(tmp_path, [row | {"value": 0.75}])  # re-scoring a checkpoint updates it
    df = load(tmp_path)
    assert len(df) == 1 and df.value.item() == 0.75


# --------------------------------------------------------------------------------------------
# backtest
# --------------------------------------------------------------------------------------------

def test_backtest_predictions_stay_in_the_metric_range():
    bt, fitted = backtest.backtest(ladder())
    two_step = bt[bt.method == "two_step"]
    em, lp = two_step[two_step.metric == "exact_match"], two_step[
        two_step.metric == "answer_logprob"]
    assert len(em) == 3 and em.predicted.between(0, 1).all()
    assert em.predicted_from_actual_loss.between(0, 1).all()
    assert (lp.predicted <= 0).all() and (lp.predicted_from_actual_loss <= 0).all()
    # the unclipped curve does overshoot there: the clipping is what keeps them in range
    curve = next(f for labels, f in fitted
                 if labels == {"target": "t/0/exact_match", "axis": "loss",
                               "scope": "backtest_h1"})
    held_loss = bt[(bt.holdout == 1) & (bt.method == "power_law")].predicted.to_numpy()
    assert curve.predict(held_loss).max() > 1


def test_backtest_without_loss_or_training_columns_is_empty():
    df = big_g()
    for col in ("step", "tokens", "flops", "nonembed_params"):
        df[col] = pd.array([pd.NA] * len(df), dtype="Int64")
    bt, fitted = backtest.backtest(df)
    assert bt.empty and fitted == []
