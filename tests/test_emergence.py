"""Emergence verdicts, the mirage check and training dynamics on planted curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import dynamics, emergence, mirage

N = np.geomspace(1e5, 1e8, 8)  # an 8-rung ladder over three decades
U = np.log10(N)
EXAMPLES = 500


def binomial(p, seed=0, n=EXAMPLES):
    return np.random.default_rng(seed).binomial(n, np.clip(p, 0, 1)) / n


def sigmoid(u, mid, k, floor=0.25, ceil=0.9):
    return floor + (ceil - floor) / (1 + np.exp(-k * (u - mid)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sharp_sigmoid_is_emergent_with_threshold_around_midpoint(seed):
    y = binomial(sigmoid(U, 6.6, 8.0), seed)
    v = emergence.classify(N, y, np.full(N.size, EXAMPLES))
    assert v.verdict == "emergent" and v.best_fit in ("sigmoid", "step")
    assert v.threshold_low <= 10 ** 6.6 <= v.threshold_high
    assert N[0] <= v.threshold_low <= v.threshold <= v.threshold_high <= N[-1]
    assert v.n_points == 8 and v.breakthroughness > v.linearity > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_linear_rise_is_smooth(seed):
    v = emergence.classify(N, binomial(0.1 + 0.25 * (U - 5), seed), np.full(N.size, EXAMPLES))
    assert v.verdict == "smooth" and np.isnan(v.threshold)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_around_chance_is_flat(seed):
    v = emergence.classify(N, binomial(np.full(N.size, 0.25), seed), np.full(N.size, EXAMPLES))
    assert v.verdict == "flat" and np.isnan(v.threshold)


def test_zero_everywhere_is_flat():
    v = emergence.classify(N, np.zeros(N.size), np.full(N.size, EXAMPLES))
    assert v.verdict == "flat" and v.best_fit == "constant"


def test_three_points_are_insufficient():
    v = emergence.classify([1e5, 1e6, 1e7], [0.1, 0.2, 0.9], [100] * 3)
    assert v.verdict == "insufficient_data" and v.n_points == 3


def test_seeds_at_one_size_count_once():
    x = np.repeat(N[:3], 2)  # 3 sizes, 2 seeds each
    v = emergence.classify(x, np.linspace(0.1, 0.6, 6), np.full(6, 100))
    assert v.verdict == "insufficient_data" and v.n_points == 3


def test_logprob_uses_residual_noise():
    rng = np.random.default_rng(5)
    smooth = -6 + 1.5 * (U - 5) + 0.05 * rng.standard_normal(N.size)
    flat = -6 + 0.3 * rng.standard_normal(N.size)
    assert emergence.classify(N, smooth, np.full(N.size, 100)).verdict == "smooth"
    assert emergence.classify(N, flat, np.full(N.size, 100)).verdict == "flat"


def test_concave_logprob_is_not_emergent():
    # steep at the smallest model, then levelling off: never absent in smaller models
    p = 0.3 + 0.68 * (U - 5) / 3
    v = emergence.classify(N, 5 * np.log(p), np.full(N.size, 100))
    assert v.verdict == "smooth"


def test_loss_axis_thresholds_are_losses():
    loss = np.linspace(4.5, 2.5, 8)  # bigger models, lower loss
    y = binomial(sigmoid(-loss, -3.2, 12.0, floor=0.05, ceil=0.85), 3)
    v = emergence.classify(loss, y, np.full(8, EXAMPLES), axis="loss")
    assert v.verdict == "emergent"
    assert 2.5 <= v.threshold_low <= 3.2 <= v.threshold_high <= 4.5


def test_bigbench_scores():
    bt, lin = emergence.bigbench_scores(np.array([0.0, 0.0, 0.0, 1.0, 1.0]))
    assert bt == np.inf and lin == pytest.approx(2.0)
    assert emergence.bigbench_scores(np.array([0.0, 1, 2, 3])) == pytest.approx((3.0, 3.0))
    bt, lin = emergence.bigbench_scores(np.array([3.0, 2, 1, 0]))
    assert bt == pytest.approx(-3.0) and lin == pytest.approx(-3.0)
    assert np.isnan(emergence.bigbench_scores(np.zeros(4))[0])


def _ladder(scores: dict, sizes=None, seed=0) -> pd.DataFrame:
    """Results rows for one (task, shots) at each run's last checkpoint, plus val loss."""
    sizes = N if sizes is None else sizes
    rows = []
    for i, params in enumerate(sizes):
        base = {"run": f"r{i}", "rung": f"R{i}", "params": int(params),
                "nonembed_params": int(params), "step": 100, "tokens": 409600,
                "flops": 6.0 * params * 409600, "shots": 0}
        rows.append(dict(base, task="val", metric="loss", value=5 - 0.4 * np.log10(params),
                         n=10_000))
        for metric, values in scores.items():
            rows.append(dict(base, task="probe", metric=metric, value=values[i], n=EXAMPLES))
    return pd.DataFrame(rows)


def test_mirage_flags_p_to_the_L():
    # Schaeffer et al.: per-token accuracy p smooth in log N, exact match = p^5
    p = 0.3 + 0.68 * (U - 5) / 3
    jitter = 0.02 * np.random.default_rng(3).standard_normal(N.size)
    df = _ladder({"exact_match": binomial(p ** 5, 1), "token_accuracy": binomial(p, 2),
                  "edit_similarity": 0.5 + 0.5 * p, "answer_logprob": 5 * np.log(p) + jitter})
    em, _ = emergence.detect(df, n_boot=20)
    row = mirage.mirage_table(em).iloc[0]
    assert row.discontinuous_metric == "exact_match" and row.token_accuracy == "smooth"
    assert row.discontinuous_verdict == "emergent" and row.gold_prob == ""
    assert bool(row.mirage) and row.label == "mirage"


def test_sharp_continuous_metric_is_not_a_mirage():
    sharp = sigmoid(U, 6.6, 8.0, floor=0.1, ceil=0.95)
    df = _ladder({"exact_match": binomial(sharp ** 2, 1), "token_accuracy": binomial(sharp, 2),
                  "edit_similarity": binomial(sharp, 3)})
    em, _ = emergence.detect(df, n_boot=20)
    row = mirage.mirage_table(em).iloc[0]
    assert row.discontinuous_verdict == "emergent" and row.token_accuracy == "emergent"
    assert not row.mirage and row.label == "survives_continuous"


def test_multiple_choice_mirage_uses_accuracy_and_gold_prob():
    p = 0.3 + 0.68 * (U - 5) / 3
    df = _ladder({"accuracy": binomial(p ** 5, 1), "gold_prob": binomial(p, 2)})
    em, _ = emergence.detect(df, n_boot=0)
    row = mirage.mirage_table(em).iloc[0]
    assert row.discontinuous_metric == "accuracy" and row.label == "mirage"


def test_metric_kinds_match_the_harness():
    from scaling import metrics
    # one owner (scaling.results); mirage.csv has a verdict column for every continuous one
    assert mirage.DISCONTINUOUS is metrics.DISCONTINUOUS
    assert set(metrics.CONTINUOUS) <= set(mirage.COLUMNS)


def test_detect_uses_last_checkpoint_and_val_loss():
    df = _ladder({"exact_match": binomial(sigmoid(U, 6.6, 8.0), 0)})
    early = df.assign(step=50, value=0.0)  # an earlier checkpoint must be ignored
    em, _ = emergence.detect(pd.concat([early, df]), n_boot=10)
    assert list(em.columns) == emergence.COLUMNS
    by_axis = em.set_index("axis").verdict
    assert by_axis["params"] == by_axis["flops"] == by_axis["loss"] == "emergent"
    assert by_axis["tokens"] == "insufficient_data"
    loss_row = em[em.axis == "loss"].iloc[0]
    assert 2.0 < loss_row.threshold < 3.0  # val loss = 5 - 0.4 log10 N: 10^6.6 -> 2.36


def test_dynamics_transition_step():
    steps = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1500, 2000])
    tokens = steps * 4096
    u = np.log10(np.maximum(tokens, 1))
    value = binomial(sigmoid(u, np.log10(256 * 4096), 10.0, floor=0.0, ceil=0.8), 4)
    df = pd.DataFrame({"run": "r0", "rung": "R0", "params": 10_000, "nonembed_params": 9_000,
                       "step": steps, "tokens": tokens, "flops": 6e4 * tokens, "task": "probe",
                       "shots": 0, "metric": "exact_match", "value": value, "n": EXAMPLES})
    dyn, _ = dynamics.detect(df, n_boot=20)
    row = dyn.iloc[0]
    assert list(dyn.columns) == dynamics.COLUMNS
    assert row.verdict == "emergent" and row.axis == "tokens" and row.n_points == 13
    assert 128 <= row.transition_step <= 512
