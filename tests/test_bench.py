"""The benchmark scripts run end to end on a small case (their figures are not asserted)."""

import importlib.util
import re
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_eval_bench_compares_both_paths_and_checks_scores(capsys):
    bench = _script("eval_throughput")
    code = bench.main(["--untrained", "s1", "--tasks", "copy_4,addition_mc_2d,chain_1hop",
                       "--n", "16", "--rounds", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "scores equal: yes" in out and "best of 2 rounds" in out
    assert "(rounds: " in out and "speed-up" in out
    native, lm_eval = (int(n.replace(",", "")) for n in re.search(
        r"positions through the model.*: native ([\d,]+), lm-eval ([\d,]+)", out).groups())
    assert 0 < native < lm_eval  # lm-eval's per-gold-token requests each run a full pass
    # The split into passes and decoding steps accounts for every position of each path.
    for name, total in (("native", native), ("lm-eval", lm_eval)):
        passes, steps = (int(n.replace(",", "")) for n in re.search(
            rf"{name} +in the model .*passes ([\d,]+) positions.*decoding steps ([\d,]+) in",
            out).groups())
        assert passes > 0 and steps > 0 and passes + steps == total


def test_train_bench_times_a_rung():
    bench = _script("train_throughput")
    row = bench.bench_rung("s1", torch.device("cpu"), "fp32", steps=2, compile_=False,
                           batch=2)
    assert row["tokens_per_s"] > 0 and row["flops_per_s"] > 0 and row["batch"] == 2


def test_train_bench_reads_the_targets_off_the_rungs():
    bench = _script("train_throughput")
    peak = 100.0
    rows = [{"nonembed": n, "flops_per_s": mfu * peak}
            for n, mfu in ((1e4, 0.30), (1e6, 0.50), (1e7, 0.80))]
    # 0.1M lies halfway between 1e4 and 1e6 in log(params): 40%.
    assert abs(bench.mfu_at(rows, peak, 1e5) - 0.40) < 1e-9
    assert bench.mfu_at(rows, peak, 1e8) is None
    lines = bench.target_lines(rows, peak)
    assert lines[0].startswith("target >= 60% from 0.1M") and "40.0%" in lines[0]
    assert lines[0].endswith("not met")
    assert "50.0% at 1M" in lines[1] and lines[1].endswith("not met")  # 50% < 70%
    rows[1]["flops_per_s"] = rows[2]["flops_per_s"] = 0.9 * peak
    rows[0]["flops_per_s"] = 0.9 * peak
    assert all(line.endswith(": met") for line in bench.target_lines(rows, peak))


def test_report_bench_times_every_phase_on_a_tiny_ladder(capsys):
    bench = _script("report_speed")
    df = bench.synthetic_results(runs=4, seeds=2, checkpoints=6, tasks=3)
    assert len(df) == 4 * 6 * (1 + 3 * 4) and df.run.nunique() == 4 and df.params.nunique() == 2
    code = bench.main(["--runs", "4", "--seeds", "1", "--tasks", "2", "--checkpoints", "8",
                       "--bootstrap", "0", "--no-default"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "288 rows" in out  # 4 runs x 8 checkpoints x (2 tasks x 4 metrics + val loss)
    for phase in ("loading", "loss fits", "emergence.detect", "dynamics.detect", "mirage",
                  "backtest", "figure metric_vs_params", "figures", "seeds", "writing",
                  "sum of phases", "build_report end to end"):
        assert re.search(rf"^ *{re.escape(phase)} +\d+\.\d\d$", out, re.M), phase
    assert not hasattr(bench.figures.metric_vs_params, "__wrapped__")  # unwrapped again
