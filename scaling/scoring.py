"""Model-level scoring: teacher forcing, greedy decoding with a KV cache, multiple choice.

The functions here take a model, token ids and a batch size; they know nothing of runs,
results files or the task registry. The native evaluator (scaling/scorer.py) and the lm-eval
backend (scaling/lm_eval_backend.py) both call them, which is why both paths give the same
scores.

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
Contexts that do not fit the model's window with their continuation go through
`score_continuations` (split into one window per continuation token) and `greedy_generate`
(the prompt cut on the left).
A model with a soft prompt (prompt tuning, scaling/finetune.py) runs it ahead of every
sequence it starts, here as in training: its window is the block less the prompt's P
positions (`_window`), and the cache slots and positions passed to it count the prompt's
(`_lead`).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from scaling.metrics import greedy_char_hit
from scaling.tasks.base import EXTRA_TOKENS, generation_budget

DEFAULT_BATCH_SIZE = 256  # rows per forward pass; eval sequences are short (< block_size)
# Intra-op threads on CPU. Eval batches are small matmuls: a second OpenMP thread gains
# little, and on a shared machine a parallel region waits for a descheduled thread (we
# measured 100x stalls on a busy 2-core box). 0 = torch's default.
DEFAULT_THREADS = 1
# A batch's shared prompt prefix runs once when that saves at least this many token
# positions. The one-row pass costs what 80 positions of a batch do at s3 and 35 at s6
# (measured; 560 at s1, where evaluation time does not change either way).
MIN_SHARED_POSITIONS = 64


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


class ForcedAnswer(NamedTuple):
    """An example's gold answer tokens and their teacher-forced scores after its context."""

    gold: list[int]
    score: ContinuationScore


class Window(NamedTuple):
    """One row of teacher forcing: `tokens` whose last `n_scored` are scored, for `pair`."""

    tokens: list[int]
    n_scored: int
    pair: int  # index of the (context, continuation) pair it scores (part of)


class Prompt(NamedTuple):
    """A prompt cut to fit its decoding budget, and that budget."""

    tokens: list[int]
    budget: int


class Divergence(NamedTuple):
    """A teacher-forced row whose argmax left the gold answer, to decode on (`_resume`)."""

    row: int  # its row in the teacher-forced batch and cache
    example: int  # its index among the examples scored
    k: int  # the answer position where the argmax differs from the gold token
    token: int  # the argmax token at k: the first generated token that leaves the gold
    left: int  # tokens it may still generate after `token`


class CharPrompt(NamedTuple):
    """A text prefix decoded one step for token_accuracy's flag of one gold character."""

    example: int
    char: int  # position of the character in the gold answer


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


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _lead(model) -> int:
    """Positions a soft prompt takes ahead of every sequence (scaling/model.py; 0: none)."""
    return getattr(model.cfg, "prompt_len", 0)


def _window(model) -> int:
    """Tokens a sequence may hold: the block less the soft prompt's positions."""
    return model.cfg.block_size - _lead(model)


def _padded(rows: Sequence[list[int]], width: int) -> torch.Tensor:
    """(len(rows), width) long tensor of the rows, right-padded with 0."""
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return torch.from_numpy(out)


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
    one = KVCache(model.cfg.n_layer, _lead(model) + shared)
    model(x[:1, :shared], cache=one, last=1)
    cache = one.expand(b, capacity)
    return model(x[:, shared:], cache=cache, last=last)[0], cache


def _windows(pairs: Sequence[tuple[list[int], list[int]]], block: int) -> list[Window]:
    """One window per pair that fits in `block`; a pair that does not fit is split into one
    window per continuation token (in continuation order), each with the longest context
    that fits."""
    windows = []
    for i, (ctx, cont) in enumerate(pairs):
        if not cont:
            raise ValueError("cannot score an empty continuation")
        if not ctx:
            raise ValueError("cannot score a continuation without context")
        full = list(ctx) + list(cont)
        if len(full) <= block:
            windows.append(Window(full, len(cont), i))
        else:
            for j in range(len(cont)):
                windows.append(Window(full[: len(ctx) + j + 1][-block:], 1, i))
    return windows


@torch.inference_mode()
def score_continuations(model, pairs: Sequence[tuple[list[int], list[int]]],
                        batch_size: int = DEFAULT_BATCH_SIZE) -> list[ContinuationScore]:
    """Teacher-forced log-probabilities and argmaxes of each (context, continuation).

    Rows are sorted by length and right-padded (causal attention: padding after a row never
    affects it), then scored one batch per forward pass.
    """
    block = _window(model)
    device = _device_of(model)
    windows = _windows(pairs, block)
    order = sorted(range(len(windows)), key=lambda r: len(windows[r].tokens))
    row_lp: list = [None] * len(windows)
    row_am: list = [None] * len(windows)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        lengths = [len(windows[r].tokens) for r in chunk]
        n_sc = [windows[r].n_scored for r in chunk]
        width = max(lengths)
        x = _padded([windows[r].tokens for r in chunk], width)
        # Positions T-1-m .. T-1 predict the m scored tokens and the one after them; the
        # output layer runs from the earliest such position of the batch (`lo`) on.
        first = [t - 1 - m for t, m in zip(lengths, n_sc)]
        lo = max(0, min(first))
        logits, _ = model(x.to(device), last=width - lo)
        logp = F.log_softmax(logits.float(), dim=-1)  # (b, width - lo, V)
        span = max(n_sc) + 1
        offs = torch.arange(span)
        pos = (torch.tensor(first)[:, None] + offs).clamp(0, width - 1) - lo
        tgt = _padded([windows[r].tokens[t - m:] for r, t, m in zip(chunk, lengths, n_sc)],
                      span)
        sel = logp[torch.arange(len(chunk))[:, None], pos.to(device)]  # (b, span, V)
        tok_lp = sel.gather(-1, tgt.to(device)[..., None]).squeeze(-1).cpu().double().numpy()
        am = sel.argmax(-1).cpu().numpy()
        for b, r in enumerate(chunk):
            m = n_sc[b]
            row_lp[r] = tok_lp[b, :m]
            row_am[r] = am[b, : m + 1]
    # Reassemble split pairs (their windows come in continuation order).
    parts_lp, parts_am = defaultdict(list), defaultdict(list)
    for r, window in enumerate(windows):
        parts_lp[window.pair].append(row_lp[r])
        parts_am[window.pair].append(row_am[r])
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
    block = _window(model)
    device = _device_of(model)

    cut = []
    for p, mn in zip(prompts, max_new):
        mn = generation_budget(mn, block)
        p = list(p)[-(block - mn):]
        if not p:
            raise ValueError("cannot decode from an empty prompt")
        cut.append(Prompt(p, mn))
    groups: dict[int, list[int]] = defaultdict(list)
    for i, prompt in enumerate(cut):
        groups[len(prompt.tokens)].append(i)
    stops = torch.tensor(sorted(set(int(s) for s in stop_ids)) or [-1], device=device)
    out: list = [None] * len(cut)
    for idxs in groups.values():
        for start in range(0, len(idxs), batch_size):
            chunk = idxs[start:start + batch_size]
            x = torch.tensor([cut[i].tokens for i in chunk], device=device)
            budget = torch.tensor([cut[i].budget for i in chunk], device=device)
            logits, cache = _prefill(model, x, _lead(model) + x.size(1) + int(budget.max()),
                                     last=1)
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
    block = _window(model)
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
            logits, cache = _prefill(model, x, _lead(model) + plen, last=1)
            first = F.log_softmax(logits[:, -1].float(), dim=-1)  # (b, V)
            parent = [b for b, i in enumerate(chunk) for _ in options[i]]
            opts = [o for i in chunk for o in options[i]]
            rows = torch.tensor(parent, device=device)
            tok0 = torch.tensor([o[0] for o in opts], device=device)
            total = first[rows, tok0].double()  # (n_opts,) log p of each option's first token
            width = max(map(len, opts))
            if width > 1:
                # the options continue from the prompt's slots (a soft prompt's included)
                sub = cache.select(rows, cache.pos, capacity=cache.pos + width - 1)
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
    block = _window(model)
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
            logits, cache = _prefill(model, x.to(device), _lead(model) + plen + width,
                                     last=width + 1)
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
            resume: list[Divergence] = []
            for b, i in enumerate(chunk):
                m, gold, k, a = lens[b], golds[i], int(first_k[b]), int(at_k[b])
                scores[i] = ContinuationScore(tok_lp[b, :m], am[b, :m + 1])
                if a in stop_ids:
                    outs[i] = list(gold[:k])
                    continue
                outs[i] = list(gold[:k]) + [a]
                if k + 1 < budgets[i]:
                    resume.append(Divergence(row=b, example=i, k=k, token=a,
                                             left=budgets[i] - k - 1))
            if resume:
                for item, g in zip(resume, _resume(model, cache, plen, resume, stops)):
                    outs[item.example] += g
    return scores, outs


def _resume(model, cache, plen: int, items: Sequence[Divergence], stops: torch.Tensor
            ) -> list[list[int]]:
    """Greedy continuations of rows that left the gold answer at different points, in one
    batch: row b of the teacher-forced `cache` goes on from position plen + k_b with its
    own token a_b. Each row hides the cached gold tokens past its point (`KVCache.visible`)
    and decodes at its own positions; new tokens take the slots after the cached ones.
    """
    device = _device_of(model)
    rows = torch.tensor([d.row for d in items], device=device)
    point = torch.tensor([_lead(model) + plen + d.k for d in items], device=device)
    left = torch.tensor([d.left for d in items], device=device)
    # Slots can outnumber the block (the hidden gold tokens stay in place).
    slots = torch.arange(cache.pos + 1 + int(left.max()), device=device)
    sub = cache.select(rows, cache.pos, capacity=len(slots))
    sub.visible = (slots < point[:, None]) | (slots >= sub.pos)
    first = torch.tensor([[d.token] for d in items], device=device)
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
                      forced: Sequence[ForcedAnswer] | None = None) -> list[list[bool]]:
    """token_accuracy's flags for any tokenizer (scaling/metrics.py): per gold character
    c_i, whether the greedy next token after the text context + answer[:i] begins with c_i.

    The context is the (cut) prompt's tokens, decoded to text; each prefix is encoded whole,
    as lm-eval's backends encode a generate_until context, and decoded one step. forced:
    per example, the gold tokens and their teacher-forced scores after `contexts`; a prefix
    whose tokens are the context's plus the first j gold tokens (a token boundary of the
    answer) takes the argmax at j from there instead of a decoding step of its own.
    """
    flags: list[list[bool]] = [[False] * len(a) for a in answers]
    prompts: list[list[int]] = []
    owners: list[CharPrompt] = []
    for j, (ctx, ans) in enumerate(zip(contexts, answers)):
        text = tokenizer.decode(ctx)
        gold, score = (forced[j].gold, forced[j].score) if forced is not None else ([], None)
        ends = np.cumsum([len(tokenizer.decode([t])) for t in gold]).tolist()
        for i in range(len(ans)):
            tokens = tokenizer.encode(text + ans[:i])
            k = 0 if i == 0 else ends.index(i) + 1 if i in ends else -1
            if score is not None and k >= 0 and tokens == list(ctx) + list(gold[:k]):
                flags[j][i] = greedy_char_hit(tokenizer.decode([score.argmax[k]]), ans[i])
                continue
            prompts.append(tokens)
            owners.append(CharPrompt(example=j, char=i))
    gens = greedy_generate(model, prompts, [1] * len(prompts),
                           stop_token_ids(tokenizer, ()), batch_size)
    for owner, g in zip(owners, gens):
        flags[owner.example][owner.char] = greedy_char_hit(
            tokenizer.decode(g), answers[owner.example][owner.char])
    return flags
