"""Score every checkpoint of a run on the probe tasks: `scaling eval RUN_DIR [--tasks a,b]`.

For each (checkpoint, task) not yet in `RUN_DIR/results.csv`, the model is run over the
task's held-out instances and one row per metric is appended in the results schema
(scaling/results.py), with `n`, `chance` (where known) and `stderr`. Re-running skips
what is already scored, so a task added to the registry later is scored on old checkpoints
without retraining.

"Already scored" means every metric row of the task is there. A metric added to
scaling/metrics.py later (answer_prob was) is missing from older results, so the next
`scaling eval` of such a run re-scores each (checkpoint, task) that lacks it, with all of
the task's metrics: the new rows replace the old ones of the same key (the same values,
scoring being deterministic for a given device and batch size) and the new metric is
added. Tasks whose metrics are all present (here the multiple-choice ones) are skipped.

How a task is scored (all batched, fp32, under torch.inference_mode):
1. Generation tasks, one forward pass over prompt + gold answer, KV cache kept: every gold
   token's log-probability and whether it is the argmax (answer_logprob, answer_prob,
   token_accuracy: with the char tokenizer a token is a character; other tokenizers get
   token_accuracy's per-character flags from one more decoding step per gold character
   inside a gold token, `char_greedy_flags`), and the greedy output. Greedy decoding (stops
   at a stop string or eot, or after len(gold) + 2 tokens) agrees with the gold answer up
   to the first position where the teacher-forced argmax differs, so an example whose
   argmax reproduces the answer and then a stop token needs no decoding, and the others
   resume decoding from the cached prefix at their first divergence
   (`teacher_force_and_decode`). Rows share a batch when their prompts have equal length (a
   cached batch shares positions), and the prefix that every prompt of a batch opens with
   runs once (`_prefill`).
2. Multiple choice: every option's summed log-likelihood; the prompt is run once and the
   options continue from its KV cache (`choice_logprobs`).

A prompt longer than the model's window is cut on the left so that the answer and the
decoding budget fit (`scaling.tasks.base.fit_context`): every metric of an instance sees
the same prompt window. The lm-eval backend (scaling/lm_eval_backend.py) calls the same
functions, and the exported tasks carry prompts cut the same way, which is why both paths
give the same scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import contextlib
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scaling.allocator import keep_freed_memory
from scaling.checkpoint import (
    CheckpointError, list_checkpoints, load_model, read_metadata, unfinished_checkpoints)
from scaling.metrics import (
    aggregate, choice_scores, cut_at_stops, generate_scores, greedy_char_hit)
from scaling.results import KEY, RESULTS_FILE, ResultsError, append_rows, read_file
from scaling.tasks import GENERATE, Task, UnknownTaskError, get_tasks
from scaling.tasks.base import EXTRA_TOKENS, fit_context, generation_budget, room_needed

DEFAULT_BATCH_SIZE = 256  # rows per forward pass; eval sequences are short (< block_size)
# Intra-op threads on CPU. Eval batches are small matmuls: a second OpenMP thread gains
# little, and on a shared machine a parallel region waits for a descheduled thread (we
# measured 100x stalls on a busy 2-core box). 0 = torch's default.
DEFAULT_THREADS = 1


class EvalError(RuntimeError):
    """A run directory or checkpoint that cannot be evaluated (one-line message)."""


# ----------------------------------------------------------------------------- primitives


@dataclass
class ContinuationScore:
    """Teacher-forced scores of one continuation.

    logprobs: (m,) log-probability of each continuation token.
    argmax: (m,) or (m + 1,) the model's argmax at each continuation position, plus the
    one after the last token when the whole sequence fit in one window.
    """

    logprobs: np.ndarray
    argmax: np.ndarray

    @property
    def has_next(self) -> bool:
        """Whether argmax includes the prediction after the continuation."""
        return len(self.argmax) == len(self.logprobs) + 1


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _padded(rows: Sequence[list[int]], width: int) -> torch.Tensor:
    """(len(rows), width) long tensor of the rows, right-padded with 0."""
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return torch.from_numpy(out)


# A batch's shared prompt prefix runs once when that saves at least this many token
# positions. The one-row pass costs what 80 positions of a batch do at s3 and 35 at s6
# (measured; 560 at s1, where evaluation time does not change either way).
MIN_SHARED_POSITIONS = 64


def _prefill(model, x: torch.Tensor, capacity: int, last: int):
    """`model(x, cache=..., last=last)` for a batch of rows, the common prefix run once.

    Rows of one task often open alike (a prompt's fixed words), so the longest prefix every
    row shares, up to the positions `last` asks for, runs for one row and its keys and
    values are copied to all rows (`KVCache.expand`); the rows then go on from it with their
    own tokens. Returns (logits of the last `last` positions, the cache of `capacity`
    positions that holds every row's keys and values).
    """
    from scaling.model import KVCache

    b, t = x.shape
    same = (x == x[:1]).all(0).int()  # (t,) 1 where every row has the first row's token
    shared = min(int(same.cumprod(0).sum()), t - last)
    if shared * (b - 1) < MIN_SHARED_POSITIONS:
        cache = KVCache(model.cfg.n_layer, capacity)
        return model(x, cache=cache, last=last)[0], cache
    one = KVCache(model.cfg.n_layer, shared)
    model(x[:1, :shared], cache=one, last=1)
    cache = one.expand(b, capacity)
    return model(x[:, shared:], cache=cache, last=last)[0], cache


def _windows(pairs: Sequence[tuple[list[int], list[int]]], block: int):
    # One (input, n_scored) row per pair that fits in a window; pairs that do not fit are
    # split into one row per continuation token, each with the longest context that fits.
    rows, owner = [], []
    for i, (ctx, cont) in enumerate(pairs):
        if not cont:
            raise ValueError("cannot score an empty continuation")
        if not ctx:
            raise ValueError("cannot score a continuation without context")
        full = list(ctx) + list(cont)
        if len(full) <= block:
            rows.append((full, len(cont)))
            owner.append((i, 0))
        else:
            for j in range(len(cont)):
                rows.append((full[: len(ctx) + j + 1][-block:], 1))
                owner.append((i, j))
    return rows, owner


@torch.inference_mode()
def score_continuations(model, pairs: Sequence[tuple[list[int], list[int]]],
                        batch_size: int = DEFAULT_BATCH_SIZE) -> list[ContinuationScore]:
    """Teacher-forced log-probabilities and argmaxes of each (context, continuation).

    Rows are sorted by length and right-padded (causal attention: padding after a row never
    affects it), then scored one batch per forward pass.
    """
    block = model.cfg.block_size
    device = _device_of(model)
    rows, owner = _windows(pairs, block)
    order = sorted(range(len(rows)), key=lambda r: len(rows[r][0]))
    row_lp: list = [None] * len(rows)
    row_am: list = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        lengths = [len(rows[r][0]) for r in chunk]
        n_sc = [rows[r][1] for r in chunk]
        width = max(lengths)
        x = _padded([rows[r][0] for r in chunk], width)
        # Positions T-1-m .. T-1 predict the m scored tokens and the one after them; the
        # output layer runs from the earliest such position of the batch (`lo`) on.
        first = [t - 1 - m for t, m in zip(lengths, n_sc)]
        lo = max(0, min(first))
        logits, _ = model(x.to(device), last=width - lo)
        logp = F.log_softmax(logits.float(), dim=-1)  # (b, width - lo, V)
        span = max(n_sc) + 1
        offs = torch.arange(span)
        pos = (torch.tensor(first)[:, None] + offs).clamp(0, width - 1) - lo
        tgt = _padded([rows[r][0][t - m:] for r, t, m in zip(chunk, lengths, n_sc)], span)
        sel = logp[torch.arange(len(chunk))[:, None], pos.to(device)]  # (b, span, V)
        tok_lp = sel.gather(-1, tgt.to(device)[..., None]).squeeze(-1).cpu().double().numpy()
        am = sel.argmax(-1).cpu().numpy()
        for b, r in enumerate(chunk):
            m = n_sc[b]
            row_lp[r] = tok_lp[b, :m]
            row_am[r] = am[b, : m + 1]
    # Reassemble split pairs (their rows come in continuation order).
    parts_lp, parts_am = defaultdict(list), defaultdict(list)
    for r, (i, _) in enumerate(owner):
        parts_lp[i].append(row_lp[r])
        parts_am[i].append(row_am[r])
    out = []
    for i, (ctx, cont) in enumerate(pairs):
        if len(ctx) + len(cont) <= block:  # fitted in one window: keep the "next" argmax
            out.append(ContinuationScore(parts_lp[i][0], parts_am[i][0]))
        else:
            out.append(ContinuationScore(np.concatenate(parts_lp[i]),
                                         np.array([a[0] for a in parts_am[i]])))
    return out


@torch.inference_mode()
def greedy_generate(model, prompts: Sequence[list[int]], max_new: Sequence[int],
                    stop_ids: set[int] | Sequence[int],
                    batch_size: int = DEFAULT_BATCH_SIZE) -> list[list[int]]:
    """Greedy continuations (stop token excluded) of each prompt, batched with the KV cache.

    Each prompt decodes at most `generation_budget(max_new, block)` tokens and keeps its
    last `block - budget` tokens as context. Prompts of equal length share a batch (the
    cache has one position counter per batch).
    """
    block = model.cfg.block_size
    device = _device_of(model)

    prepared = []
    for p, mn in zip(prompts, max_new):
        mn = generation_budget(mn, block)
        p = list(p)[-(block - mn):]
        if not p:
            raise ValueError("cannot decode from an empty prompt")
        prepared.append((p, mn))
    groups: dict[int, list[int]] = defaultdict(list)
    for i, (p, _) in enumerate(prepared):
        groups[len(p)].append(i)
    stops = torch.tensor(sorted(set(int(s) for s in stop_ids)) or [-1], device=device)
    out: list = [None] * len(prepared)
    for idxs in groups.values():
        for start in range(0, len(idxs), batch_size):
            chunk = idxs[start:start + batch_size]
            x = torch.tensor([prepared[i][0] for i in chunk], device=device)
            budget = torch.tensor([prepared[i][1] for i in chunk], device=device)
            logits, cache = _prefill(model, x, x.size(1) + int(budget.max()), last=1)
            logits = logits[:, -1]
            for i, row in zip(chunk, _decode(model, cache, logits, budget, stops)):
                out[i] = row
    return out


def _decode(model, cache, logits: torch.Tensor, budget: torch.Tensor,
            stops: torch.Tensor, positions: torch.Tensor | None = None) -> list[list[int]]:
    """Greedy steps from `logits` (b, V), the prediction for each row's next position.

    Row b stops at a stop token (excluded) or after budget[b] tokens; the cache advances
    by one slot per step for every row. `positions` (b,): each row's position of its first
    generated token, when rows differ (see `_resume`).
    """
    steps, block = int(budget.max()), model.cfg.block_size
    gen = torch.full((len(budget), steps), -1, dtype=torch.long, device=logits.device)
    alive = torch.ones(len(budget), dtype=torch.bool, device=logits.device)
    for t in range(steps):
        nxt = logits.argmax(-1)  # (b,)
        alive &= ~torch.isin(nxt, stops) & (budget > t)
        gen[:, t] = torch.where(alive, nxt, -1)
        if t == steps - 1 or not bool(alive.any()):
            break
        # Rows past their own budget are fed on with the batch (their tokens are dropped):
        # keep their positions inside the block.
        at = None if positions is None else (positions + t).clamp(max=block - 1)[:, None]
        logits = model(nxt[:, None], cache=cache, positions=at)[0][:, -1]
    rows = gen.tolist()
    return [row[: row.index(-1)] if -1 in row else row for row in rows]


def stop_token_ids(tokenizer, stops: Sequence[str]) -> set[int]:
    """Token ids that end decoding: eot plus every stop string that is a single token.

    Longer stop strings are applied to the decoded text afterwards (`cut_at_stops`).
    """
    ids = {int(tokenizer.eot_id)}
    for s in stops:
        if s:
            enc = tokenizer.encode(s)
            if len(enc) == 1:
                ids.add(int(enc[0]))
    return ids


@torch.inference_mode()
def choice_logprobs(model, contexts: Sequence[list[int]], options: Sequence[list[list[int]]],
                    batch_size: int = DEFAULT_BATCH_SIZE) -> list[list[float]]:
    """Summed log-likelihood of every option after its context.

    The context is run once per example with the KV cache kept; all options then continue
    from the cached context in one batch (contexts of equal length share a batch). Examples
    whose context and longest option do not fit the window go through
    `score_continuations`, one (context, option) pair at a time.
    """
    block = model.cfg.block_size
    device = _device_of(model)
    out: list = [None] * len(contexts)
    fits = [len(c) + max(map(len, opts)) <= block for c, opts in zip(contexts, options)]
    rest = [i for i, f in enumerate(fits) if not f]
    if rest:
        pairs = [(contexts[i], o) for i in rest for o in options[i]]
        sums = iter(float(s.logprobs.sum()) for s in score_continuations(model, pairs,
                                                                          batch_size))
        for i in rest:
            out[i] = [next(sums) for _ in options[i]]
    groups: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(fits):
        if f:
            groups[len(contexts[i])].append(i)
    for plen, idxs in groups.items():
        for start in range(0, len(idxs), batch_size):
            chunk = idxs[start:start + batch_size]
            x = _padded([contexts[i] for i in chunk], plen).to(device)
            logits, cache = _prefill(model, x, plen, last=1)
            first = F.log_softmax(logits[:, -1].float(), dim=-1)  # (b, V)
            parent = [b for b, i in enumerate(chunk) for _ in options[i]]
            opts = [o for i in chunk for o in options[i]]
            rows = torch.tensor(parent, device=device)
            tok0 = torch.tensor([o[0] for o in opts], device=device)
            total = first[rows, tok0].double()  # (n_opts,) log p of each option's first token
            width = max(map(len, opts))
            if width > 1:
                sub = cache.select(rows, plen, capacity=plen + width - 1)  # the options' length
                inp = _padded([o[:-1] for o in opts], width - 1).to(device)
                logp = F.log_softmax(model(inp, cache=sub)[0].float(), dim=-1)  # (n, w-1, V)
                tgt = _padded([o[1:] for o in opts], width - 1).to(device)
                lp = logp.gather(-1, tgt[..., None]).squeeze(-1).double()  # (n, w-1)
                mask = torch.tensor([[j < len(o) - 1 for j in range(width - 1)] for o in opts],
                                    device=device)
                total = total + (lp * mask).sum(-1)
            sums = total.cpu().tolist()
            k = 0
            for i in chunk:
                out[i] = sums[k:k + len(options[i])]
                k += len(options[i])
    return out


# ----------------------------------------------------------------------------- one task


@dataclass
class Prepared:
    """A task's instances, tokenized once per tokenizer."""

    task: Task
    examples: list
    contexts: list[list[int]]
    golds: list[list[int]]  # generation: gold answer tokens
    choices: list[list[list[int]]]  # multiple choice: tokens of each option
    gold_index: list[int]


def prepare(task: Task, tokenizer) -> Prepared:
    """Draw a task's instances and tokenize them."""
    examples = task.examples()
    if not examples:
        raise EvalError(f"task {task.id}: the generator produced no held-out instances")
    contexts = tokenizer.encode_batch([task.context(e) for e in examples])
    golds, choices, gold_index = [], [], []
    if task.kind == GENERATE:
        golds = tokenizer.encode_batch([e.answer for e in examples])
    else:
        flat = iter(tokenizer.encode_batch([c for e in examples for c in e.choices]))
        choices = [[next(flat) for _ in e.choices] for e in examples]
        gold_index = [task.gold_index(e) for e in examples]
    return Prepared(task, examples, contexts, golds, choices, gold_index)


@torch.inference_mode()
def teacher_force_and_decode(model, contexts: Sequence[list[int]], golds: Sequence[list[int]],
                             stop_ids: set[int], batch_size: int = DEFAULT_BATCH_SIZE
                             ) -> tuple[list[ContinuationScore], list[list[int]]]:
    """Teacher-forced scores of each gold answer and the greedy output, mostly in one pass.

    Greedy decoding agrees with the gold answer up to the first answer position k where the
    teacher-forced argmax differs, so one forward pass over prompt + gold (with the KV
    cache kept) gives the scores, the greedy output of every example whose argmax
    reproduces the answer and then a stop token, and the cached prefix from which the
    others go on decoding: their argmax token at k is fed at position len(prompt) + k and
    decoding continues from there (no second pass over the prompt). Rows share a batch
    when their prompts have equal length. Examples whose prompt the window cuts take the
    general path: `score_continuations` and `greedy_generate` from the cut prompt.
    """
    block = model.cfg.block_size
    device = _device_of(model)
    n = len(contexts)
    scores: list = [None] * n
    outs: list = [None] * n
    budgets = [generation_budget(len(g) + EXTRA_TOKENS, block) for g in golds]
    fits = [len(c) + max(b, len(g)) <= block for c, g, b in zip(contexts, golds, budgets)]
    rest = [i for i in range(n) if not fits[i]]
    if rest:
        cut = score_continuations(model, [(contexts[i], golds[i]) for i in rest], batch_size)
        gen = greedy_generate(model, [contexts[i] for i in rest],
                              [len(golds[i]) + EXTRA_TOKENS for i in rest], stop_ids, batch_size)
        for i, sc, g in zip(rest, cut, gen):
            scores[i], outs[i] = sc, g
    stops = torch.tensor(sorted(stop_ids) or [-1], device=device)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        if fits[i]:
            groups[len(contexts[i])].append(i)
    for plen, idxs in groups.items():
        for start in range(0, len(idxs), batch_size):
            chunk = idxs[start:start + batch_size]
            lens = [len(golds[i]) for i in chunk]
            width = max(lens)
            x = _padded([contexts[i] + golds[i] for i in chunk], plen + width)
            tgt = _padded([golds[i] for i in chunk], width)
            # Right padding is harmless (causal). Positions plen-1 .. plen+width-1 predict
            # the gold tokens and the one after: only they go through the output layer. The
            # cache holds this batch's length (a block each cost 10% of an s3 evaluation in
            # memory traffic); decoding goes on in a copy (`_resume`).
            logits, cache = _prefill(model, x.to(device), plen + width, last=width + 1)
            logp = F.log_softmax(logits.float(), dim=-1)  # (b, width+1, V)
            tok_lp = logp[:, :width].gather(-1, tgt.to(device)[..., None]).squeeze(-1)
            tok_lp = tok_lp.cpu().double().numpy()
            am = logp.argmax(-1).cpu().numpy()
            # k: each row's first answer position whose argmax is not the gold token (its
            # length m when there is none); padding never counts as a mismatch.
            m_arr = np.asarray(lens)
            differs = (am[:, :width] != tgt.numpy()) & (np.arange(width) < m_arr[:, None])
            first_k = np.where(differs.any(1), differs.argmax(1), m_arr)
            at_k = am[np.arange(len(chunk)), first_k]
            resume = []  # (row, example, k, argmax token at k, budget left)
            for b, i in enumerate(chunk):
                m, gold, k, a = lens[b], golds[i], int(first_k[b]), int(at_k[b])
                scores[i] = ContinuationScore(tok_lp[b, :m], am[b, :m + 1])
                if a in stop_ids:
                    outs[i] = list(gold[:k])
                    continue
                outs[i] = list(gold[:k]) + [a]
                if k + 1 < budgets[i]:
                    resume.append((b, i, k, a, budgets[i] - k - 1))
            if resume:
                for (_, i, _, _, _), g in zip(resume, _resume(model, cache, plen, resume, stops)):
                    outs[i] += g
    return scores, outs


def _resume(model, cache, plen: int, items: list[tuple], stops: torch.Tensor
            ) -> list[list[int]]:
    """Greedy continuations of rows that left the gold answer at different points, in one
    batch: row b of the teacher-forced `cache` goes on from position plen + k_b with its
    own token a_b. Each row hides the cached gold tokens past its point (`KVCache.visible`)
    and decodes at its own positions; new tokens take the slots after the cached ones.
    items: (row, example, k, a, budget left).
    """
    device = _device_of(model)
    rows = torch.tensor([b for b, _, _, _, _ in items], device=device)
    point = torch.tensor([plen + k for _, _, k, _, _ in items], device=device)
    left = torch.tensor([r for _, _, _, _, r in items], device=device)
    # Slots can outnumber the block (the hidden gold tokens stay in place).
    slots = torch.arange(cache.pos + 1 + int(left.max()), device=device)
    sub = cache.select(rows, cache.pos, capacity=len(slots))
    sub.visible = (slots < point[:, None]) | (slots >= sub.pos)
    first = torch.tensor([[a] for _, _, _, a, _ in items], device=device)
    logits = model(first, cache=sub, positions=point[:, None])[0][:, -1]
    return _decode(model, sub, logits, left, stops, positions=point + 1)


def one_token_per_char(tokenizer) -> bool:
    """Whether text encodes character by character, one token each (the char tokenizer).

    Teacher forcing on the gold tokens is then conditioning on the text prompt + gold[:i],
    so token_accuracy's per-character flags come from the one teacher-forced pass.
    """
    from scaling.data.tokenizer import CharTokenizer

    return isinstance(tokenizer, CharTokenizer)


def char_greedy_flags(model, tokenizer, contexts: Sequence[list[int]], answers: Sequence[str],
                      batch_size: int = DEFAULT_BATCH_SIZE,
                      forced: Sequence[tuple[list[int], ContinuationScore]] | None = None
                      ) -> list[list[bool]]:
    """token_accuracy's flags for any tokenizer (scaling/metrics.py): per gold character
    c_i, whether the greedy next token after the text context + answer[:i] begins with c_i.

    The context is the (cut) prompt's tokens, decoded to text; each prefix is encoded whole,
    as lm-eval's backends encode a generate_until context, and decoded one step. forced:
    per example, the gold tokens and their teacher-forced scores after `contexts`; a prefix
    whose tokens are the context's plus the first j gold tokens (a token boundary of the
    answer) takes the argmax at j from there instead of a decoding step of its own.
    """
    flags: list[list[bool]] = [[False] * len(a) for a in answers]
    prompts, owner = [], []
    for j, (ctx, ans) in enumerate(zip(contexts, answers)):
        text = tokenizer.decode(ctx)
        gold, score = forced[j] if forced is not None else ([], None)
        ends = np.cumsum([len(tokenizer.decode([t])) for t in gold]).tolist()
        for i in range(len(ans)):
            tokens = tokenizer.encode(text + ans[:i])
            k = 0 if i == 0 else ends.index(i) + 1 if i in ends else -1
            if score is not None and k >= 0 and tokens == list(ctx) + list(gold[:k]):
                flags[j][i] = greedy_char_hit(tokenizer.decode([score.argmax[k]]), ans[i])
                continue
            prompts.append(tokens)
            owner.append((j, i))
    gens = greedy_generate(model, prompts, [1] * len(prompts),
                           stop_token_ids(tokenizer, ()), batch_size)
    for (j, i), g in zip(owner, gens):
        flags[j][i] = greedy_char_hit(tokenizer.decode(g), answers[j][i])
    return flags


def score_task(model, tokenizer, prep: Prepared,
               batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, tuple[float, float]]:
    """metric -> (mean, stderr) of one task on one model."""
    task = prep.task
    block = model.cfg.block_size
    if task.kind == GENERATE:
        stop_ids = stop_token_ids(tokenizer, task.stop)
        contexts = [fit_context(c, room_needed(GENERATE, len(g), block), block)
                    for c, g in zip(prep.contexts, prep.golds)]
        tf, outs = teacher_force_and_decode(model, contexts, prep.golds, stop_ids, batch_size)
        if one_token_per_char(tokenizer):  # the teacher-forced argmax is the greedy character
            flags = [s.argmax[: len(g)] == np.asarray(g) for s, g in zip(tf, prep.golds)]
        else:
            flags = char_greedy_flags(model, tokenizer, contexts,
                                      [ex.answer for ex in prep.examples], batch_size,
                                      forced=list(zip(prep.golds, tf)))
        per = []
        for ex, s, out, f in zip(prep.examples, tf, outs, flags):
            pred = cut_at_stops(tokenizer.decode(out), task.stop)
            per.append(generate_scores(pred, ex.answer, s.logprobs, f))
        return aggregate(per)
    contexts = [fit_context(c, room_needed(task.kind, max(map(len, opts)), block), block)
                for c, opts in zip(prep.contexts, prep.choices)]
    lls = choice_logprobs(model, contexts, prep.choices, batch_size)
    return aggregate([choice_scores(ll, gi) for ll, gi in zip(lls, prep.gold_index)])


def task_rows(meta: dict, run: str, prep: Prepared,
              scores: dict[str, tuple[float, float]]) -> list[dict]:
    """Results-schema rows (one per metric) for one task at one checkpoint."""
    task = prep.task
    base = {
        "run": run,
        "rung": meta.get("rung", ""),
        "params": int(meta.get("params", 0)),
        "nonembed_params": int(meta.get("nonembed_params", 0)),
        "step": int(meta["step"]),
        "tokens": int(meta.get("tokens", 0)),
        "flops": float(meta.get("flops", 0.0)),
        "task": task.name,
        "shots": task.shots_column,
        "n": len(prep.examples),
    }
    for opt in ("seed", "data_hash"):
        if meta.get(opt) is not None:
            base[opt] = meta[opt]
    rows = []
    for metric in task.metrics:
        value, stderr = scores[metric]
        row = dict(base, metric=metric, value=value, stderr=stderr)
        chance = task.chance_of(metric, prep.examples)
        if chance is not None:
            row["chance"] = chance
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- a run


def _scored_keys(run_dir: Path) -> set[tuple]:
    path = run_dir / RESULTS_FILE
    if not path.exists():
        return set()
    df = read_file(path)
    return set(map(tuple, df[KEY].itertuples(index=False, name=None)))


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def evaluate_run(run_dir, tasks=None, progress: bool = True, checkpoints: str = "all",
                 batch_size: int = DEFAULT_BATCH_SIZE, device: str = "auto",
                 threads: int = DEFAULT_THREADS, n: int | None = None,
                 workers: int = 1, on_rows=None) -> int:
    """Score every checkpoint of `run_dir` on `tasks`; returns the number of rows written.

    n: instances per task instead of each task's default (the same instances, fewer).
    workers: checkpoints scored at once, each in its own process with `threads` threads
    (scaling/eval_pool.py); 1 scores them in this process. Rows are written checkpoint by
    checkpoint in step order either way. on_rows: called with each checkpoint's rows once
    they are written (the wandb logger: one point per checkpoint on every series).

    tasks: None / "default" (every registered task), names or ids (comma-separated string
    or list), or Task objects. checkpoints: "all" or "last". (checkpoint, task) pairs whose
    metric rows are all in results.csv already are skipped without loading anything.
    Raises EvalError, UnknownTaskError or CheckpointError with one-line messages.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvalError(f"{run_dir}: no such run directory")
    if checkpoints not in ("all", "last"):
        raise EvalError(f"--checkpoints must be 'all' or 'last', got {checkpoints!r}")
    if workers < 1:
        raise EvalError(f"--workers must be >= 1, got {workers}")
    task_list = get_tasks(tasks)
    if n:
        task_list = [dataclasses.replace(t, n=n) for t in task_list]
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise EvalError(f"{run_dir}: no checkpoints (expected {run_dir / 'checkpoints'}/"
                        "step_*.pt with its .json)")
    if checkpoints == "last":
        ckpts = ckpts[-1:]
    done = _scored_keys(run_dir)
    plan = []  # (path, meta, run name, pending tasks)
    for step, path in ckpts:
        meta = read_metadata(path)
        meta.setdefault("step", step)
        run = str(meta.get("run") or run_dir.name)
        pending = [t for t in task_list
                   if any((run, step, t.name, t.shots_column, m) not in done for m in t.metrics)]
        if pending:
            plan.append((path, meta, run, pending))
    total = sum(len(p[3]) for p in plan)
    if total == 0:
        return 0
    device = _resolve_device(device)
    from scaling.progress import progress_bar

    with progress_bar(total=total, disable=not progress, unit="task",
                      desc=f"eval {run_dir.name}") as bar:
        if workers > 1 and len(plan) > 1:
            from scaling.eval_pool import score_in_pool

            rows_per_checkpoint = score_in_pool(plan, workers, threads, batch_size, device,
                                                bar)
        else:
            rows_per_checkpoint = _score_here(plan, threads, batch_size, device, bar)
        written = 0
        for rows in rows_per_checkpoint:
            append_rows(run_dir, rows)  # per checkpoint: a crash keeps finished work
            written += len(rows)
            if on_rows is not None:
                on_rows(rows)
    return written


def default_workers(threads: int, device: str = "cpu") -> int:
    """Checkpoints to score at once by default: one per `threads` CPUs this process may use
    (both cores of a 2-core machine at the default of 1 thread); 1 on a GPU, and 1 with
    threads = 0 (torch's default: every CPU already)."""
    if _resolve_device(device) != "cpu" or threads < 1:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // threads)


@contextlib.contextmanager
def cpu_threads(n: int):
    """torch's intra-op CPU threads set to `n` inside the block (0 = unchanged)."""
    saved = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(saved)


class CheckpointScorer:
    """Scores checkpoints on tasks, each task's instances drawn and tokenized once."""

    def __init__(self, batch_size: int, device: str):
        self.batch_size, self.device = batch_size, device
        self.prepared: dict[tuple, Prepared] = {}
        self.tokenizers: dict[str, object] = {}

    def rows(self, path: Path, meta: dict, run: str, pending: list[Task],
             bar=None) -> list[dict]:
        """Result rows of one checkpoint on its pending tasks; `bar` (a progress bar), when
        given, names each task as it starts and counts it when done."""
        model, meta_loaded = load_model(path, device=self.device)
        meta = dict(meta_loaded, step=meta["step"])
        tok_name = meta.get("tokenizer", "char")
        if tok_name not in self.tokenizers:
            from scaling.data.tokenizer import get_tokenizer

            self.tokenizers[tok_name] = get_tokenizer(tok_name)
        tok = self.tokenizers[tok_name]
        rows = []
        for task in pending:
            if bar is not None:
                bar.set_postfix_str(f"step {meta['step']} {task.id}", refresh=False)
            key = (task, tok_name)
            if key not in self.prepared:
                self.prepared[key] = prepare(task, tok)
            scores = score_task(model, tok, self.prepared[key], self.batch_size)
            rows += task_rows(meta, run, self.prepared[key], scores)
            if bar is not None:
                bar.update(1)
        return rows


def _score_here(plan: list, threads: int, batch_size: int, device: str, bar):
    """Rows of each checkpoint of `plan`, scored in this process (a generator: the caller
    writes each checkpoint's rows before the next is scored)."""
    scorer = CheckpointScorer(batch_size, device)
    for path, meta, run, pending in plan:
        with cpu_threads(threads if device == "cpu" else 0):
            rows = scorer.rows(path, meta, run, pending, bar)
        yield rows


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for `scaling eval`."""
    p = argparse.ArgumentParser(
        prog="scaling eval",
        description="Score every checkpoint of a run on the probe tasks; rows are appended "
                    "to RUN_DIR/results.csv and already scored (checkpoint, task) pairs "
                    "are skipped.")
    p.add_argument("run_dir", nargs="?", help="run directory (holds checkpoints/)")
    p.add_argument("--tasks", default="default",
                   help="comma-separated task names or ids (default: every registered task)")
    p.add_argument("--checkpoints", choices=("all", "last"), default="all",
                   help="score every checkpoint (default) or only the last one")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"rows per forward pass (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"torch CPU threads (default {DEFAULT_THREADS}; 0 = torch's default)")
    p.add_argument("--workers", default="auto",
                   help="checkpoints scored at once, one process each (default auto: one per "
                        "--threads CPUs, e.g. 2 on a 2-core machine; 1 on a GPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-tasks", action="store_true",
                   help="print the registered tasks and exit")
    return p


def _parse_workers(value: str, threads: int, device: str) -> int:
    """--workers as a number (`evaluate_run` checks its range)."""
    if value == "auto":
        return default_workers(threads, device)
    try:
        return int(value)
    except ValueError:
        raise EvalError(f"--workers must be a number or 'auto', got {value!r}") from None


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; one-line `error: ...` on stderr and exit code 2 on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        if args.list_tasks:
            for t in get_tasks(args.tasks):
                print(f"{t.id:<18} task={t.name} shots={t.shots_column} kind={t.kind} "
                      f"n<={t.n}")
            return 0
        if not args.run_dir:
            raise EvalError("missing RUN_DIR (usage: scaling eval RUN_DIR [--tasks a,b])")
        if args.batch_size < 1:
            raise EvalError(f"--batch-size must be >= 1, got {args.batch_size}")
        workers = _parse_workers(args.workers, args.threads, args.device)
        keep_freed_memory()
        from scaling.logger import for_eval

        logger = for_eval(Path(args.run_dir))  # adds to the run's own wandb run, if it had one
        try:
            n = evaluate_run(args.run_dir, tasks=args.tasks, progress=not args.no_progress,
                             checkpoints=args.checkpoints, batch_size=args.batch_size,
                             device=args.device, threads=args.threads, workers=workers,
                             on_rows=logger.log_eval_rows)
        finally:
            logger.finish()
    except (EvalError, UnknownTaskError, CheckpointError, ResultsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: {Path(args.run_dir) / RESULTS_FILE} holds every checkpoint "
              "scored so far; the same command scores the rest", file=sys.stderr)
        return 130
    print(f"wrote {n} result rows to {Path(args.run_dir) / RESULTS_FILE}")
    unfinished = unfinished_checkpoints(Path(args.run_dir))
    if unfinished:  # skipped by design (see scaling/checkpoint.py), but say so
        names = ", ".join(p.name for p in unfinished)
        print(f"note: skipped {len(unfinished)} unfinished checkpoint(s) without their "
              f"metadata JSON (a write interrupted or still going on): {names}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
