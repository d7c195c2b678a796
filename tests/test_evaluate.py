"""`scaling eval`: result rows, skipping what is scored, worker processes, CLI errors, above
chance. The model-level scoring it calls is tested in test_scoring.py."""

from __future__ import annotations

import dataclasses
import multiprocessing

import numpy as np
import pandas as pd
import pytest

from scaling import evaluate as ev
from scaling.checkpoint import CheckpointError, list_checkpoints, save_checkpoint
from scaling.data.tokenizer import get_tokenizer
from scaling.eval_pool import default_workers
from scaling.metrics import CHOICE_METRICS, GENERATE_METRICS
from scaling.model import GPT, GPTConfig
from scaling.results import COLUMNS
from scaling.tasks import get_tasks

TOK = get_tokenizer("char")
SMALL = "addition_2d,addition_mc_3d,chain_1hop,icl_4shot,fewshot_4shot,copy_8"
N_GENERATE, N_CHOICE = len(GENERATE_METRICS), len(CHOICE_METRICS)  # rows per task and step


def save_untrained(run_dir, steps=(0, 4), block_size=128, n_layer=1, d_model=24):
    """A run directory with untrained tiny GPT checkpoints (no data or training needed)."""
    cfg = GPTConfig(vocab_size=TOK.vocab_size, n_layer=n_layer, d_model=d_model, n_head=2,
                    block_size=block_size)
    for step in steps:
        model = GPT(cfg, seed=step)
        counts = model.num_scaling_params()
        save_checkpoint(run_dir, step, {"model": model.state_dict(),
                                        "model_config": dataclasses.asdict(cfg)},
                        {"run": "tiny", "rung": "s1", "params": counts["total"],
                         "nonembed_params": counts["nonembed"], "tokens": 4096 * step,
                         "flops": 1e6 * step, "seed": 0, "data_hash": "feed",
                         "tokenizer": "char", "val_loss": 4.8})
    return run_dir


def small(names=SMALL, n=16):
    """Registered tasks with few instances, for fast tests."""
    return [dataclasses.replace(t, n=n) for t in get_tasks(names)]


# ----------------------------------------------------------------------------- a run


def test_evaluate_run_writes_rows_and_skips_what_is_scored(tmp_path):
    run = save_untrained(tmp_path / "run")
    tasks = small()
    n_rows = ev.evaluate_run(run, tasks=tasks, progress=False)
    df = pd.read_csv(run / "results.csv")
    n_metrics = sum(len(t.metrics) for t in tasks)
    assert n_rows == len(df) == 2 * n_metrics
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    assert {"stderr", "chance", "seed", "data_hash"} <= set(df.columns)
    assert set(df.step) == {0, 4} and set(df.run) == {"tiny"} and set(df.rung) == {"s1"}
    assert (df[df.step == 4].tokens == 4 * 4096).all()
    assert set(df.task) == {t.name for t in tasks}
    assert set(df[df.task == "icl"].shots) == {4}
    assert (df.n == 16).all()
    bounded = df[df.metric != "answer_logprob"]
    assert bounded.value.between(0, 1).all()
    assert (df[df.metric == "answer_logprob"].value < 0).all()
    assert (df.stderr >= 0).all()
    chance = df.set_index(["task", "metric"]).chance
    assert chance[("chain_1hop", "exact_match")].iloc[0] == pytest.approx(0.1)
    assert chance[("addition_mc_3d", "accuracy")].iloc[0] == pytest.approx(0.25)
    assert chance[("chain_1hop", "token_accuracy")].isna().all()
    # Re-running computes nothing; a task added later is scored on the old checkpoints.
    assert ev.evaluate_run(run, tasks=tasks, progress=False) == 0
    extra = small("modular_5", n=8)
    n_extra = len(extra[0].metrics)
    assert ev.evaluate_run(run, tasks=tasks + extra, progress=False) == 2 * n_extra
    assert ev.evaluate_run(run, tasks=tasks + extra, progress=False) == 0
    assert len(pd.read_csv(run / "results.csv")) == 2 * n_metrics + 2 * n_extra


def test_a_metric_added_later_rescores_only_the_tasks_that_lack_it(tmp_path):
    # Results written before answer_prob existed: the next eval re-scores each (checkpoint,
    # generation task) with all its metrics (same values) and skips multiple choice.
    run = save_untrained(tmp_path / "run")
    tasks = small("copy_4,addition_mc_3d", n=12)
    ev.evaluate_run(run, tasks=tasks, progress=False)
    full = pd.read_csv(run / "results.csv")
    full[full.metric != "answer_prob"].to_csv(run / "results.csv", index=False)
    n_generate = len(tasks[0].metrics)
    assert ev.evaluate_run(run, tasks=tasks, progress=False) == 2 * n_generate
    again = pd.read_csv(run / "results.csv")
    key = ["step", "task", "metric"]
    merged = full.merge(again, on=key, suffixes=("", "_again"))
    assert len(merged) == len(full) == len(again)
    assert (merged.value == merged.value_again).all()


def test_answer_prob_is_the_mean_sequence_probability(tmp_path):
    # copy_4: every gold answer has 4 tokens, so by Jensen mean(exp(sum lp)) >=
    # exp(4 * mean lp), and answer_prob stays within [0, 1].
    run = save_untrained(tmp_path / "run", steps=(0,))
    ev.evaluate_run(run, tasks=small("copy_4", n=32), progress=False)
    v = pd.read_csv(run / "results.csv").set_index("metric").value
    assert 0 < v["answer_prob"] <= 1
    assert v["answer_prob"] >= np.exp(4 * v["answer_logprob"]) * (1 - 1e-12)


def test_checkpoints_last_and_deterministic_scores(tmp_path):
    run = save_untrained(tmp_path / "a", steps=(0, 2, 8))
    assert ev.evaluate_run(run, tasks=small("copy_4"), checkpoints="last",
                           progress=False) == N_GENERATE
    df = pd.read_csv(run / "results.csv")
    assert set(df.step) == {8}
    again = save_untrained(tmp_path / "b", steps=(0, 2, 8))
    ev.evaluate_run(again, tasks=small("copy_4"), checkpoints="last", progress=False,
                    batch_size=3)
    pd.testing.assert_series_equal(df.value, pd.read_csv(again / "results.csv").value)


def test_worker_processes_write_what_one_process_writes(tmp_path):
    steps = (0, 2, 8)
    one, two = save_untrained(tmp_path / "one", steps), save_untrained(tmp_path / "two", steps)
    names = "copy_4,addition_mc_2d,icl_2shot"
    per_step = 2 * N_GENERATE + N_CHOICE  # two generation tasks, one multiple choice
    assert ev.evaluate_run(one, tasks=names, n=12, progress=False, workers=1) == 3 * per_step
    assert ev.evaluate_run(two, tasks=names, n=12, progress=False, workers=2) == 3 * per_step
    assert (one / "results.csv").read_bytes() == (two / "results.csv").read_bytes()
    # A corrupted checkpoint stops the run with its name; the steps before it are kept.
    bad = save_untrained(tmp_path / "bad", steps)
    path = dict(list_checkpoints(bad))[2]
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="step_000002.pt"):
        ev.evaluate_run(bad, tasks=names, n=12, progress=False, workers=2)
    assert set(pd.read_csv(bad / "results.csv").step) == {0}
    assert not multiprocessing.active_children()  # the error ended every worker


def test_an_interrupted_eval_says_what_is_kept(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    run = save_untrained(tmp_path / "run", steps=(0,))
    monkeypatch.setattr(ev, "evaluate_run", interrupted)
    assert ev.main([str(run), "--no-progress"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted: ") and "\n" not in err and "results.csv" in err


def test_default_workers_fill_the_cpus():
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_workers(1, "cpu") == cpus
    assert default_workers(cpus, "cpu") == 1
    assert default_workers(1, "cuda") == 1
    assert default_workers(0, "cpu") == 1  # torch's default threads use every CPU


def test_cli(tmp_path, capsys):
    run = save_untrained(tmp_path / "run", steps=(0,))
    (run / "checkpoints" / "step_000009.pt").write_bytes(b"interrupted")  # no .json
    assert ev.main([str(run), "--tasks", "copy_4,icl_0shot", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert f"wrote {2 * N_GENERATE} result rows" in out.out
    assert "skipped 1 unfinished checkpoint(s)" in out.err and "step_000009.pt" in out.err
    assert ev.main(["--list-tasks"]) == 0
    assert "icl_8shot" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["unknown_task", "missing_run", "no_checkpoints",
                                  "corrupt_checkpoint", "no_run_dir_given", "bad_workers"])
def test_cli_errors_are_one_line(tmp_path, capsys, case):
    run = save_untrained(tmp_path / "run", steps=(0,))
    argv = [str(run), "--tasks", "copy_4", "--no-progress"]
    if case == "unknown_task":
        argv[2] = "copy_4,addition_9d"
    elif case == "missing_run":
        argv[0] = str(tmp_path / "nope")
    elif case == "no_checkpoints":
        (tmp_path / "empty").mkdir()
        argv[0] = str(tmp_path / "empty")
    elif case == "corrupt_checkpoint":
        path = list_checkpoints(run)[0][1]
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    elif case == "bad_workers":
        argv += ["--workers", "two"]
    else:
        argv = argv[1:]
    assert ev.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    expected = {"unknown_task": "addition_9d", "missing_run": "no such run directory",
                "no_checkpoints": "no checkpoints", "corrupt_checkpoint": "step_000000.pt",
                "no_run_dir_given": "RUN_DIR", "bad_workers": "--workers"}[case]
    assert expected in err
    assert not (run / "results.csv").exists()


# ----------------------------------------------------------------------------- science


def test_brief_training_moves_the_easiest_probe(briefly_trained_run):
    # Fast variant: after a few dozen steps, gold answers are already more likely than
    # under the untrained model; the real above-chance check is the slow test below.
    run_dir = briefly_trained_run
    ev.evaluate_run(run_dir, tasks=small("chain_1hop", n=200), progress=False)
    df = pd.read_csv(run_dir / "results.csv")
    lp = df[(df.task == "chain_1hop") & (df.metric == "answer_logprob")].sort_values("step")
    assert lp.value.iloc[-1] > lp.value.iloc[0] + 1.0


@pytest.mark.slow
def test_briefly_trained_checkpoint_beats_chance(tmp_path):
    from scaling.config import load_config
    from scaling.train import train

    cfg = load_config(None, ["--model.size=s2", "--train.tokens=6000000",
                             f"--run.dir={tmp_path / 'run'}", f"--run.data_root={tmp_path}",
                             "--data.train_tokens=6001000", "--data.val_tokens=20000",
                             "--train.val_tokens=4096", "--run.threads=1"])
    run_dir = train(cfg)
    ev.evaluate_run(run_dir, tasks="addition_mc_2d", checkpoints="last", progress=False)
    df = pd.read_csv(run_dir / "results.csv")
    row = df[(df.task == "addition_mc_2d") & (df.metric == "accuracy")].iloc[-1]
    assert row.value > row.chance + 3 * row.stderr, row.to_dict()
