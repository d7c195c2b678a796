"""Model-level scoring (scaling/scoring.py): teacher forcing, greedy decoding with the KV
cache, multiple choice and the prefix shared by a batch, each against a plain reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from scaling import scoring
from scaling.checkpoint import list_checkpoints, load_model
from scaling.data.skills.base import Example
from scaling.data.tokenizer import get_tokenizer
from scaling.model import GPT, GPTConfig
from scaling.scorer import prepare, score_task
from scaling.tasks import LINE_START, get_tasks
from scaling.tasks.base import EXTRA_TOKENS, generation_budget

from helpers import FixedTask

TOK = get_tokenizer("char")


def plain_greedy(model, ctx, max_new, stop_ids):
    """Reference decoder: one full forward per token, no cache, no batching."""
    block = model.cfg.block_size
    budget = generation_budget(max_new, block)
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
    model, _ = load_model(list_checkpoints(briefly_trained_run)[-1][1])
    return model


def echo_examples(model, n=24):
    """Instances whose gold answers come from the model's own greedy rollouts.

    Some answers are exactly what greedy decoding outputs (exact match 1), others diverge
    after k correct tokens (k = 0, 1, 2) or stop short of where the model keeps going.
    """
    stop = scoring.stop_token_ids(TOK, (LINE_START,))
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


def test_score_continuations_match_a_plain_forward():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=128, n_layer=2, d_model=32, n_head=2, block_size=24),
                seed=3).eval()
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(2, 96, rng.integers(1, 30)).tolist(),
              rng.integers(2, 96, rng.integers(1, 6)).tolist()) for _ in range(40)]
    scores = scoring.score_continuations(model, pairs, batch_size=7)
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
    got = scoring.greedy_generate(model, prompts, budgets, stops, batch_size=4)
    for p, b, g in zip(prompts, budgets, got):
        assert g == plain_greedy(model, p, b, stops)
        assert len(g) <= generation_budget(b, 32) and not set(g) & stops


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_choice_logprobs_match_pairwise_scoring(pos):
    model = GPT(GPTConfig(vocab_size=128, n_layer=2, d_model=32, n_head=2, block_size=24,
                          pos=pos), seed=2).eval()
    rng = np.random.default_rng(2)
    contexts = [rng.integers(2, 96, rng.choice([4, 4, 9, 22])).tolist() for _ in range(25)]
    options = [[rng.integers(2, 96, rng.integers(1, 5)).tolist()
                for _ in range(rng.integers(2, 5))] for _ in contexts]
    got = scoring.choice_logprobs(model, contexts, options, batch_size=3)
    for ctx, opts, lls in zip(contexts, options, got):
        ref = scoring.score_continuations(model, [(ctx, o) for o in opts])
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
        logits, cache = scoring._prefill(model, x, capacity=20, last=5)
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
        logits, _ = scoring._prefill(model, same, capacity=17, last=3)
        torch.testing.assert_close(logits, model(same)[0][:, -3:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_prompts_with_a_common_prefix_decode_and_score_as_alone(pos, monkeypatch):
    monkeypatch.setattr(scoring, "MIN_SHARED_POSITIONS", 1)
    model = GPT(GPTConfig(vocab_size=128, n_layer=2, d_model=32, n_head=2, block_size=32,
                          pos=pos), seed=7).eval()
    rng = np.random.default_rng(7)
    head = rng.integers(2, 96, 6).tolist()
    prompts = [head + rng.integers(2, 96, 5).tolist() for _ in range(9)]
    stops = {0, 1}
    got = scoring.greedy_generate(model, prompts, [6] * 9, stops, batch_size=4)
    assert got == [plain_greedy(model, p, 6, stops) for p in prompts]
    options = [[rng.integers(2, 96, rng.integers(1, 4)).tolist() for _ in range(3)]
               for _ in prompts]
    lls = scoring.choice_logprobs(model, prompts, options, batch_size=4)
    for ctx, opts, ll in zip(prompts, options, lls):
        ref = scoring.score_continuations(model, [(ctx, o) for o in opts])
        np.testing.assert_allclose(ll, [r.logprobs.sum() for r in ref], atol=1e-4)


def test_stop_token_ids():
    assert scoring.stop_token_ids(TOK, (LINE_START, ".", "ab", "")) == {
        TOK.eot_id, TOK.encode("\n")[0], TOK.encode(".")[0]}


@pytest.mark.parametrize("share", [False, True])
def test_greedy_shortcut_equals_plain_greedy(trained, monkeypatch, share):
    # share: every batch's common prompt prefix (here the line start) runs once
    monkeypatch.setattr(scoring, "MIN_SHARED_POSITIONS", 1 if share else 10**9)
    model = trained
    task = FixedTask("echo", skill="addition", difficulty=2, fixed=echo_examples(model))
    prep = prepare(task, TOK)
    stop = scoring.stop_token_ids(TOK, task.stop)
    tf, outs = scoring.teacher_force_and_decode(model, prep.contexts, prep.golds, stop,
                                                batch_size=5)
    ref = scoring.score_continuations(model, list(zip(prep.contexts, prep.golds)))
    for ctx, gold, out, s, r in zip(prep.contexts, prep.golds, outs, tf, ref):
        assert out == plain_greedy(model, ctx, len(gold) + EXTRA_TOKENS, stop)
        np.testing.assert_allclose(s.logprobs, r.logprobs, atol=1e-5)
        assert s.argmax.tolist() == r.argmax.tolist()
    em = score_task(model, TOK, prep)["exact_match"][0]
    assert 0.0 < em < 1.0  # both outcomes occur, so the comparison above is not vacuous


def test_truncated_prompts_decode_from_scratch():
    # block 48 < fewshot_4shot prompts (~150 chars): scoring splits, decoding cuts the prompt.
    model = GPT(GPTConfig(vocab_size=128, n_layer=1, d_model=16, n_head=2, block_size=48),
                seed=1).eval()
    prep = prepare(dataclasses.replace(get_tasks("fewshot_4shot")[0], n=6), TOK)
    stop = scoring.stop_token_ids(TOK, prep.task.stop)
    _, outs = scoring.teacher_force_and_decode(model, prep.contexts, prep.golds, stop, batch_size=4)
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
    _, outs = scoring.teacher_force_and_decode(model, [ctx_a, ctx_b], [gold_a, gold_b], stop,
                                          batch_size=2)
    assert outs[0] == plain_greedy(model, ctx_a, len(gold_a) + EXTRA_TOKENS, stop)
    assert outs[1] == plain_greedy(model, ctx_b, len(gold_b) + EXTRA_TOKENS, stop)
