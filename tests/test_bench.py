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


def test_train_bench_times_a_rung():
    bench = _script("train_throughput")
    row = bench.bench_rung("s1", torch.device("cpu"), "fp32", steps=2, compile_=False,
                           batch=2)
    assert row["tokens_per_s"] > 0 and row["flops_per_s"] > 0 and row["batch"] == 2
