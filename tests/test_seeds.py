"""Seed spread: replicate runs of one size, flagged only beyond their sampling noise."""

from __future__ import annotations

import pandas as pd

from analysis.seeds import COLUMNS, seed_spread
from helpers import make_results


def _replicated(plant: bool) -> pd.DataFrame:
    """Two seeds of the synthetic ladder; with `plant`, seed 1 has an ability seed 0 lacks."""
    a = make_results(seed=0)
    b = make_results(seed=1).assign(run=lambda d: d.run + "-seed1", seed=1)
    if plant:  # the third size's copy probe: solved by seed 1, absent in seed 0
        third = sorted(a.params.unique())[2]
        hit = (b.params == third) & (b.task == "copy") & (b.metric == "exact_match")
        b.loc[hit, "value"] = 1.0
        a.loc[(a.params == third) & (a.task == "copy") & (a.metric == "exact_match"),
              "value"] = 0.0
    return pd.concat([a, b], ignore_index=True)


def test_sampling_noise_alone_is_not_flagged():
    spread = seed_spread(_replicated(plant=False))
    assert list(spread.columns) == COLUMNS
    probes = spread[spread.metric != "loss"]
    assert len(probes) == 6 * 3 and (probes.runs == 2).all()  # 6 sizes x 3 probes
    assert not probes.beyond_sampling.any()
    assert (spread[spread.metric == "loss"].spread < 0.1).all()


def test_a_seed_dependent_ability_is_flagged_and_reported(run_report):
    spread = seed_spread(_replicated(plant=True))
    flagged = spread[spread.beyond_sampling]
    assert set(zip(flagged.task, flagged.metric)) == {("copy", "exact_match")}
    assert flagged.iloc[0]["min"] == 0.0 and flagged.iloc[0]["max"] == 1.0
    rc, out = run_report(_replicated(plant=True))
    assert rc == 0
    md = (out / "report.md").read_text()
    assert "## Seed spread" in md and "`copy` (3-shot) exact_match" in md
    assert pd.read_csv(out / "seeds.csv").beyond_sampling.sum() == 1


def test_without_replicates_the_table_is_empty_and_the_section_absent(run_report):
    assert seed_spread(make_results()).empty
    rc, out = run_report(make_results())
    assert rc == 0
    assert list(pd.read_csv(out / "seeds.csv").columns) == COLUMNS
    assert "Seed spread" not in (out / "report.md").read_text()


def test_equal_rate_p_value_is_calibrated_at_the_extremes():
    import numpy as np

    from analysis.seeds import DRAWS, equal_rate_p_value

    rng = np.random.default_rng(0)
    ns = np.array([200.0, 200.0, 200.0])
    assert equal_rate_p_value(np.array([20.0, 20.0, 20.0]), ns, rng) == 1.0
    assert equal_rate_p_value(np.array([0.0, 200.0, 0.0]), ns, rng) == 1 / (DRAWS + 1)
    # under the null the p-value is roughly uniform: about 5% of null draws fall below 0.05
    draws = [equal_rate_p_value(rng.binomial(200, 0.3, 3).astype(float), ns, rng)
             for _ in range(200)]
    assert 0.01 <= np.mean(np.array(draws) < 0.05) <= 0.12
