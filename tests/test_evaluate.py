"""The native evaluator: scoring primitives, result rows, skipping, CLI errors, above chance."""

from __future__ import annotations

import dataclasses
import multiprocessing

import numpy as np
import pandas as pd
import pytest
import torch

from scaling import evaluate as ev
from scaling.checkpoint import list_checkpoints, load_model, save_checkpoint
from scaling.data.skills.base import Example
from scaling.data.tokenizer import get_tokenizer
from scaling.metrics import CHOICE_METRICS, GENERATE_METRICS
from scaling.model import GPT, GPTConfig
from scaling.results import COLUMNS
from scaling.tasks import LINE_START, Task, get_tasks

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


@dataclasses.dataclass(frozen=True)
class FixedTask(Task):
    """A task with hand-made instances (a task defined inside a test)."""

    fixed: tuple = ()

    def examples(self):
        return list(self.fixed)


def plain_greedy(model, ctx, max_new, stop_ids):
    """Reference decoder: one full forward per token, no cache, no batching."""
    block = model.cfg.block_size
    budget = ev.generation_budget(max_new, block)
    toks, out = list(ctx)[-(block - budget):], []
    with torch.inference_mode():
        for _ in range(budget):
            nxt = int(model(torch.tensor([toks + out]))[0][0, -1].argmax())
            if nxt in stop_ids:
                break
            out.append(nxt)
    return out


@pytest.fixture(scope="module")
def trained(briefly_trained_run):
    """A few dozen training steps on the corpus: the model emits digits and line breaks."""
    run_dir = briefly_trained_run
    model, _ = load_model(list_checkpoints(run_dir)[-1][1])
    return run_dir, model


def echo_examples(model, n=24):
    """Instances whose gold answers come from the model's own greedy rollouts.

    Some answers are exactly what greedy decoding outputs (exact match 1), others diverge
    after k correct tokens (k = 0, 1, 2) or stop short of where the model keeps going.
    """
    stop = ev.stop_token_ids(TOK, (LINE_START,))
    prompts = [e.prompt for e in get_tasks("addition_2d")[0].examples()[:n]]
    out = []
    for i, prompt in enumerate(prompts):
        roll = TOK.decode(plain_greedy(model, TOK.encode(LINE_START + prompt), 12, stop))
        kind = i % 4
        if kind == 0 and roll:
            answer = roll  # greedy output exactly (it ended with a line break or the budget)
        elif kind == 1 and len(roll) > 2:
            answer = roll[:2] + ("#" if roll[2] != "#" else "$")
        elif kind == 2 and len(roll) > 1:
            answer = roll[:1]  # the model goes on past the gold answer
        else:
            answer = ("#" if not roll or roll[0] != "#" else "$") + "12"
        out.append(Example("addition", 2, prompt, answer))
    return tuple(out)


# ----------------------------------------------------------------------------- primitives


def test_score_continuations_match_a_plain_forward():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=128, n_layer=2, d_model=32, n_head=2, block_size=24),
                seed=3).eval()
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(2, 96, rng.integers(1, 30)).tolist(),
              rng.integers(2, 96, rng.integers(1, 6)).tolist()) for _ in range(40)]
    scores = ev.score_continuations(model, pairs, batch_size=7)
    with torch.inference_mode():
        for (ctx, cont), s in zip(pairs, scores):
            lps, ams = [], []
            for j, tok in enumerate(cont):  # each token with the longest context that fits
                window = (ctx + cont[:j + 1])[-24:]
                logp = torch.log_softmax(model(torch.tensor([window]))[0][0, -2], -1)
                lps.append(float(logp[tok]))
                ams.append(int(logp.argmax()))
            np.testing.assert_allclose(s.logprobs, lps, atol=1e-5)
            assert s.argmax[: len(cont)].tolist() == ams
            if len(ctx) + len(cont) <= 24:
                assert s.has_next
                nxt = model(torch.tensor([ctx + cont]))[0][0, -1].argmax()
                assert s.argmax[-1] == int(nxt)
            else:
                assert not s.has_next


@pytest.mark.parametrize("pos", ["learned", "rotary", "sinusoidal"])
def test_greedy_generate_matches_plain_decoding(pos):
    model = GPT(GPTConfig(vocab_size=128, n_layer=2, d_model=32, n_head=2, block_size=32,
                          pos=pos), seed=5).eval()
    rng = np.random.default_rng(1)
    prompts = [rng.integers(2, 96, rng.choice([3, 5, 40])).tolist() for _ in range(30)]
    budgets = rng.integers(1, 9, len(prompts)).tolist() + []
    budgets[0] = 100  # capped at half the block
    stops = {0, 1, int(rng.integers(2, 96))}
    got = ev.greedy_generate(model, prompts, budgets, stops, batch_size=4)
    for p, b, g in zip(prompts, budgets, got):
        assert g == plain_greedy(model, p, b, stops)
        assert len(g) <= ev.generation_budget(b, 32) and not set(g) & stops


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_choice_logprobs_match_pairwise_scoring(pos):
    model = GPT(GPTConfig(vocab_size=128, n_layer=2, d_model=32, n_head=2, block_size=24,
                          pos=pos), seed=2).eval()
    rng = np.random.default_rng(2)
    contexts = [rng.integers(2, 96, rng.choice([4, 4, 9, 22])).tolist() for _ in range(25)]
    options = [[rng.integers(2, 96, rng.integers(1, 5)).tolist()
                for _ in range(rng.integers(2, 5))] for _ in contexts]
    got = ev.choice_logprobs(model, contexts, options, batch_size=3)
    for ctx, opts, lls in zip(contexts, options, got):
        ref = ev.score_continuations(model, [(ctx, o) for o in opts])
        np.testing.assert_allclose(lls, [r.logprobs.sum() for r in ref], atol=1e-4)


@pytest.mark.parametrize("pos", ["learned", "rotary", "sinusoidal"])
def test_a_shared_prefix_runs_once_and_changes_nothing(pos):
    model = GPT(GPTConfig(vocab_size=128, n_layer=2, d_model=32, n_head=2, block_size=32,
                          pos=pos), seed=6).eval()
    rng = np.random.default_rng(6)
    prefix = rng.integers(2, 96, 10).tolist()
    x = torch.tensor([prefix + rng.integers(2, 96, 7).tolist() for _ in range(12)])
    x[:4, 10] = x[0, 10]  # some rows share more than others: the common prefix is 10
    shapes = []
    hook = model.register_forward_pre_hook(lambda _, args: shapes.append(tuple(args[0].shape)))
    with torch.inference_mode():
        logits, cache = ev._prefill(model, x, capacity=20, last=5)
    hook.remove()
    assert shapes == [(1, 10), (12, 7)]  # the prefix once, then each row's own tokens
    with torch.inference_mode():
        full = model(x)[0]
        torch.testing.assert_close(logits, full[:, -5:], atol=1e-5, rtol=1e-5)
        # the cache holds every row's keys and values: decoding goes on exactly
        nxt = torch.randint(2, 96, (12, 1))
        step = model(nxt, cache=cache)[0][:, -1]
        torch.testing.assert_close(step, model(torch.cat([x, nxt], 1))[0][:, -1],
                                   atol=1e-5, rtol=1e-5)
        # identical rows: the shared part stops where the asked-for positions begin
        same = x[:1].repeat(12, 1)
        logits, _ = ev._prefill(model, same, capacity=17, last=3)
        torch.testing.assert_close(logits, model(same)[0][:, -3:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_prompts_with_a_common_prefix_decode_and_score_as_alone(pos, monkeypatch):
    monkeypatch.setattr(ev, "MIN_SHARED_POSITIONS", 1)
    model = GPT(GPTConfig(vocab_size=128, n_layer=2, d_model=32, n_head=2, block_size=32,
                          pos=pos), seed=7).eval()
    rng = np.random.default_rng(7)
    head = rng.integers(2, 96, 6).tolist()
    prompts = [head + rng.integers(2, 96, 5).tolist() for _ in range(9)]
    stops = {0, 1}
    got = ev.greedy_generate(model, prompts, [6] * 9, stops, batch_size=4)
    assert got == [plain_greedy(model, p, 6, stops) for p in prompts]
    options = [[rng.integers(2, 96, rng.integers(1, 4)).tolist() for _ in range(3)]
               for _ in prompts]
    lls = ev.choice_logprobs(model, prompts, options, batch_size=4)
    for ctx, opts, ll in zip(prompts, options, lls):
        ref = ev.score_continuations(model, [(ctx, o) for o in opts])
        np.testing.assert_allclose(ll, [r.logprobs.sum() for r in ref], atol=1e-4)


def test_stop_token_ids():
    assert ev.stop_token_ids(TOK, (LINE_START, ".", "ab", "")) == {
        TOK.eot_id, TOK.encode("\n")[0], TOK.encode(".")[0]}


@pytest.mark.parametrize("share", [False, True])
def test_greedy_shortcut_equals_plain_greedy(trained, monkeypatch, share):
    # share: every batch's common prompt prefix (here the line start) runs once
    monkeypatch.setattr(ev, "MIN_SHARED_POSITIONS", 1 if share else 10**9)
    _, model = trained
    task = FixedTask("echo", skill="addition", difficulty=2, fixed=echo_examples(model))
    prep = ev.prepare(task, TOK)
    stop = ev.stop_token_ids(TOK, task.stop)
    tf, outs = ev.teacher_force_and_decode(model, prep.contexts, prep.golds, stop, batch_size=5)
    ref = ev.score_continuations(model, list(zip(prep.contexts, prep.golds)))
    for ctx, gold, out, s, r in zip(prep.contexts, prep.golds, outs, tf, ref):
        assert out == plain_greedy(model, ctx, len(gold) + ev.EXTRA_TOKENS, stop)
        np.testing.assert_allclose(s.logprobs, r.logprobs, atol=1e-5)
        assert s.argmax.tolist() == r.argmax.tolist()
    em = ev.score_task(model, TOK, prep)["exact_match"][0]
    assert 0.0 < em < 1.0  # both outcomes occur, so the comparison above is not vacuous


def test_truncated_prompts_decode_from_scratch():
    # block 48 < fewshot_4shot prompts (~150 chars): scoring splits, decoding cuts the prompt.
    model = GPT(GPTConfig(vocab_size=128, n_layer=1, d_model=16, n_head=2, block_size=48),
                seed=1).eval()
    prep = ev.prepare(small("fewshot_4shot", n=6)[0], TOK)
    stop = ev.stop_token_ids(TOK, prep.task.stop)
    _, outs = ev.teacher_force_and_decode(model, prep.contexts, prep.golds, stop, batch_size=4)
    for ctx, gold, out in zip(prep.contexts, prep.golds, outs):
        assert out == plain_greedy(model, ctx, len(gold) + 2, stop)


def test_a_row_that_resumes_late_beside_a_long_one_stays_inside_the_block():
    # A row that leaves its gold answer late shares the decoding batch with a row that decodes
    # for longer; it is fed on past its own budget, and its positions must stay inside the
    # block (a ladder run failed with "129 tokens exceeds block_size 128" here).
    model = GPT(GPTConfig(vocab_size=TOK.vocab_size, n_layer=1, d_model=16, n_head=2,
                          block_size=30), seed=4).eval()
    stop = {TOK.eot_id}
    ctx_a, ctx_b = TOK.encode("\nthe cat sat on a "), TOK.encode("\nq: what is 12 + 3")
    assert len(ctx_a) == len(ctx_b) == 18  # one batch: equal prompt lengths
    own = plain_greedy(model, ctx_a, 6, stop)
    assert len(own) >= 4
    gold_a = own[:3] + [next(t for t in TOK.encode("xyz") if t != own[3])]  # leaves at k = 3
    gold_b = TOK.encode("0123456789")  # 18 + budget 12 = the whole block
    _, outs = ev.teacher_force_and_decode(model, [ctx_a, ctx_b], [gold_a, gold_b], stop,
                                          batch_size=2)
    assert outs[0] == plain_greedy(model, ctx_a, len(gold_a) + ev.EXTRA_TOKENS, stop)
    assert outs[1] == plain_greedy(model, ctx_b, len(gold_b) + ev.EXTRA_TOKENS, stop)


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
    with pytest.raises(ev.CheckpointError, match="step_000002.pt"):
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
    assert ev.default_workers(1, "cpu") == cpus
    assert ev.default_workers(cpus, "cpu") == 1
    assert ev.default_workers(1, "cuda") == 1
    assert ev.default_workers(0, "cpu") == 1  # torch's default threads use every CPU


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


def test_brief_training_moves_the_easiest_probe(trained):
    # Fast variant: after a few dozen steps, gold answers are already more likely than
    # under the untrained model; the real above-chance check is the slow test below.
    run_dir, _ = trained
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
