"""The verdicts as an instrument: rates on synthetic ladders of known truth.

Each case of `analysis.synthetic.CASES` is drawn many times with fixed seeds and the share
of right verdicts is asserted, with room for the sampling error of the draws (the rates
measured with 200 draws are in bench/verdict_rates.py's output and the README). A rule that
cries wolf or goes deaf on any case fails here.
"""

from __future__ import annotations

import pytest

from analysis import synthetic

DRAWS = 60
CASES = synthetic.CASES

# the least share of right verdicts per case (true positive rates for emergence, the rate
# of `flat` on flat truths, ...); rules with a 5% test level get 0.85 on nulls
MIN_RIGHT = {name: 0.9 for name in CASES}
MIN_RIGHT.update({
    "gradual emergence (1 decade), 12 rungs": 0.85,
    "weak: accuracy 0.25 -> 0.40 (chance), n=100, 8 rungs": 0.75,
    "weak: accuracy 0.25 -> 0.40 (chance), n=100, 12 rungs": 0.8,
    **{f"flat at 0.3, chance unknown, {m} rungs": 0.85 for m in (4, 8, 12)},
    **{f"flat at chance 0.25, {m} rungs": 0.95 for m in (4, 8, 12)},
    "0 -> chance 0.1, 8 rungs": 0.95,
    "0 -> chance 0.25, 6 rungs": 0.95,
})


@pytest.mark.parametrize("name", list(CASES))
def test_verdict_rates(name):
    case, truth = CASES[name]
    r = synthetic.rates(case, DRAWS)
    print(f"{name}: {r.verdicts}")
    assert r.share(truth) >= MIN_RIGHT[name], r.verdicts
    if truth != "emergent":  # never cry emergence on a curve that is not
        assert r.share("emergent") <= 0.05, r.verdicts
    if truth in ("smooth", "flat", "emergent"):  # monotone truths are never non-monotone
        assert r.share("non_monotone") <= 0.05, r.verdicts
    if truth == "non_monotone":  # a U is neither emergent nor flat
        assert r.share("emergent", "flat") <= 0.05, r.verdicts


@pytest.mark.parametrize("name", ["sharp emergence, 4 rungs", "sharp emergence, 8 rungs",
                                  "sharp emergence, steepness past the fit's bound",
                                  "gradual emergence (1 decade), 12 rungs",
                                  "sharp rise, one failed rung after it"])
def test_threshold_intervals_cover_the_truth(name):
    r = synthetic.rates(CASES[name][0], 40, n_boot=60)
    print(f"{name}: coverage {r.coverage:.2f}")
    assert r.coverage >= 0.85


def test_outlier_rung_is_named():
    r = synthetic.rates(CASES["sharp rise, one failed rung after it"][0], DRAWS)
    assert r.outlier_named >= 0.9


@pytest.mark.parametrize("name, truth", [("3 seeds that agree", True),
                                         ("3 seeds, one never learns at the top two rungs",
                                          False)])
def test_seed_agreement(name, truth):
    r = synthetic.rates(CASES[name][0], DRAWS)
    assert r.seeds_right >= (0.9 if truth else 0.95)


def test_dynamics_finds_the_task_specific_transitions():
    precision, recall = synthetic.dynamics_rates(draws=8)
    print(f"dynamics: precision {precision:.2f}, recall {recall:.2f}")
    assert precision >= 0.8 and recall >= 0.75
