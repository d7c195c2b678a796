"""The quantitative mirage test (exact match = token accuracy^L) as an instrument: seeded
draws with a known truth, rates measured and printed (`pytest -s` shows them)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import mirage

N = np.geomspace(1e5, 1e8, 8)  # an 8-rung ladder over three decades
U = np.log10(N)
EXAMPLES = 500
DRAWS = 50
TA_TRUE = 0.3 + 0.65 * (U - U[0]) / (U[-1] - U[0])  # per-token accuracy, smooth in log N


def token_level_draw(rng, length: int):
    """(token accuracy, exact match) per size from EXAMPLES answers of `length` tokens, each
    right with probability TA_TRUE: both measured on the same examples, as the evaluator
    does, so exact match ~ binomial(TA^L)/n."""
    right = rng.random((U.size, EXAMPLES, length)) < TA_TRUE[:, None, None]
    return right.mean((1, 2)), right.all(2).mean(1)


def jump_draw(rng, mid: float, k: float = 10.0, ceil: float = 0.7):
    """Token accuracy as above, exact match a sigmoid step in log N unrelated to TA^L."""
    ta, _ = token_level_draw(rng, 4)
    p = 0.01 + (ceil - 0.01) / (1 + np.exp(-k * (U - mid)))
    return ta, rng.binomial(EXAMPLES, p) / EXAMPLES


def run_draws(draw, seed: int) -> list[mirage.PLFit]:
    rng = np.random.default_rng(seed)
    return [mirage.pl_test(*draw(rng), np.full(U.size, EXAMPLES)) for _ in range(DRAWS)]


@pytest.mark.parametrize("length", [2, 4, 8])
def test_p_to_the_L_is_accepted_and_L_recovered(length):
    fits = run_draws(lambda rng: token_level_draw(rng, length), seed=length)
    accepted = np.mean([f.predicts for f in fits])
    close = np.mean([abs(f.length / length - 1) < 0.2 for f in fits])
    print(f"p^L, L={length}, same examples: pl_predicts {accepted:.0%}, "
          f"L within 20% {close:.0%} of {DRAWS} draws")
    assert accepted >= 0.9 and close >= 0.9


@pytest.mark.parametrize("length", [2.5, 6.0])
def test_the_test_has_its_nominal_size_when_TA_is_exact(length):
    # EM binomial around a noise-free TA^L: the chi-square test should accept ~95%.
    rng = np.random.default_rng(7)
    fits = [mirage.pl_test(TA_TRUE, rng.binomial(EXAMPLES, TA_TRUE ** length) / EXAMPLES,
                           np.full(U.size, EXAMPLES)) for _ in range(4 * DRAWS)]
    accepted = np.mean([f.predicts for f in fits])
    close = np.mean([abs(f.length / length - 1) < 0.2 for f in fits])
    print(f"p^L, L={length}, exact TA: pl_predicts {accepted:.1%}, L within 20% {close:.0%} "
          f"of {4 * DRAWS} draws")
    assert 0.88 <= accepted <= 0.99 and close >= 0.9


@pytest.mark.parametrize("mid", [5.5, 6.5, 7.5])
def test_a_real_jump_is_rejected(mid):
    fits = run_draws(lambda rng: jump_draw(rng, mid), seed=int(10 * mid))
    rejected = np.mean([not f.predicts for f in fits])
    max_z = np.median([f.max_z for f in fits])
    print(f"jump at 10^{mid}: pl_predicts False in {rejected:.0%} of {DRAWS} draws, "
          f"median max deviation {max_z:.1f} standard errors")
    assert rejected >= 0.9


def test_degenerate_series():
    assert mirage.pl_test([0.5, 0.6], [0.1, 0.2], [100, 100]).predicts is None  # 2 sizes
    none = mirage.pl_test([0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0], [500] * 4)
    assert none.length == np.inf and none.predicts  # no exact match anywhere: any long L
    exact = mirage.pl_test([0.5, 0.7, 0.9], [0.25, 0.49, 0.81], [10**6] * 3)
    assert exact.length == pytest.approx(2.0, rel=1e-4) and exact.max_z < 0.1


# ----------------------------------------------------------------------------- the table


def results_rows(ta, em, seeds=1, multiple_choice=True) -> pd.DataFrame:
    """Results rows at each run's last checkpoint: one generation probe (plus a multiple-
    choice one), `seeds` runs per size, a val loss row per run."""
    rows = []
    for i, params in enumerate(N):
        for s in range(seeds):
            base = {"run": f"r{i}s{s}", "rung": f"R{i}", "params": int(params),
                    "nonembed_params": int(params), "step": 100, "tokens": 409600,
                    "flops": 6.0 * params * 409600, "shots": 0, "n": EXAMPLES}
            rows.append(dict(base, task="val", metric="loss", value=5 - 0.4 * U[i]))
            rows.append(dict(base, task="gen", metric="exact_match", value=em[s][i]))
            rows.append(dict(base, task="gen", metric="token_accuracy", value=ta[s][i]))
            rows.append(dict(base, task="gen", metric="edit_similarity", value=ta[s][i]))
            if multiple_choice:
                rows.append(dict(base, task="mc", metric="accuracy", value=em[s][i]))
                rows.append(dict(base, task="mc", metric="gold_prob", value=ta[s][i]))
    return pd.DataFrame(rows)


def test_pl_table_averages_seeds_and_skips_multiple_choice():
    rng = np.random.default_rng(0)
    draws = [token_level_draw(rng, 4) for _ in range(2)]
    df = results_rows([d[0] for d in draws], [d[1] for d in draws], seeds=2)
    table = mirage.pl_table(df).set_index("task")
    mean_ta = (draws[0][0] + draws[1][0]) / 2
    mean_em = (draws[0][1] + draws[1][1]) / 2
    direct = mirage.pl_test(mean_ta, mean_em, np.full(U.size, 2 * EXAMPLES))
    assert table.loc["gen", "pl_length"] == pytest.approx(direct.length)
    assert table.loc["gen", "pl_p_value"] == pytest.approx(direct.p_value)
    assert table.loc["gen", "pl_predicts"] is True
    assert np.isnan(table.loc["mc", "pl_length"]) and table.loc["mc", "pl_predicts"] == ""


def _emergence_table(verdicts: dict) -> pd.DataFrame:
    """A minimal emergence table: one probe `gen`, verdicts on the params axis."""
    return pd.DataFrame([{"task": "gen", "shots": 0, "metric": m, "axis": "params",
                          "verdict": v} for m, v in verdicts.items()])


def test_mirage_columns_keep_the_contract_and_append():
    contract = ["task", "shots", "axis", "discontinuous_metric", "discontinuous_verdict",
                "token_accuracy", "edit_similarity", "answer_logprob", "gold_prob",
                "continuous_verdict", "mirage", "label"]
    assert mirage.COLUMNS == contract + ["pl_length", "pl_max_z", "pl_p_value",
                                         "pl_predicts", "answer_prob"]
    rng = np.random.default_rng(1)
    ta, em = token_level_draw(rng, 4)
    em_table = _emergence_table({"exact_match": "emergent", "token_accuracy": "smooth",
                                 "answer_prob": "emergent"})
    row = mirage.mirage_table(em_table, results=results_rows([ta], [em],
                                                             multiple_choice=False)).iloc[0]
    # answer_prob is reported but does not vote: still a mirage
    assert row.label == "mirage" and row.answer_prob == "emergent"
    assert bool(row.pl_predicts) and 3 < row.pl_length < 5
    bare = mirage.mirage_table(em_table).iloc[0]  # no results: no p^L columns
    assert bare.label == "mirage" and np.isnan(bare.pl_p_value) and bare.pl_predicts == ""


def test_report_states_the_number_per_task():
    from analysis.report import _section_mirage

    rng = np.random.default_rng(2)
    ta, em = token_level_draw(rng, 4)
    em_table = _emergence_table({"exact_match": "emergent", "token_accuracy": "smooth"})
    good = mirage.mirage_table(em_table, results=results_rows([ta], [em],
                                                              multiple_choice=False))
    text = "\n".join(_section_mirage(good))
    assert "`gen` (0-shot), mirage: exact match = token accuracy^L with L = " in text
    assert "fits within noise (p = " in text
    ta, em = jump_draw(rng, 6.5)
    bad = mirage.mirage_table(em_table, results=results_rows([ta], [em],
                                                             multiple_choice=False))
    assert "does not: max deviation " in "\n".join(_section_mirage(bad))
