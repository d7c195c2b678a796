"""Model-level scoring of an MLM encoder (scaling/mlm.py) on the probe tasks: fill in the answer.

The same tasks, instances and prompt windows as a causal model's (scaling/scorer.py picks
this path when the checkpoint's `model_config` says `causal: false`), and rows under the
same metric names, so CLM and MLM ladders compare in one report. An encoder has no
left-to-right decoding, so each metric is given its fill-in counterpart:

Generation tasks. The input is the prompt's tokens followed by one [MASK] per gold answer
token (the number of masks tells the model the answer's length in tokens, which a causal
model has to find itself); the prompt is cut on the left so that prompt and masks fit the
window (`fit_context`, with room for the answer only: there is no decoding budget).
- `exact_match`: one forward pass; 1 if the argmax at every masked position is the gold
  token (all positions at once, each filled independently of the others' guesses).
- `token_accuracy`: the share of gold tokens that are the argmax at their masked position,
  from the same pass (per character with the char tokenizer; per token with BPE, where
  the causal path's per-character definition has no one-pass counterpart). EM = 1 implies
  token_accuracy = 1.
- `edit_similarity`: of the filled string (the argmax tokens decoded) and the gold answer.
- `answer_logprob`: the pseudo-log-likelihood (PLL) of the gold answer, Salazar et al. 2020
  ("Masked Language Model Scoring"): PLL = sum_i log p(gold_i | prompt, gold without
  position i), each gold position masked in turn with the rest of the gold answer visible
  (one forward pass per gold token), per character of the answer like the causal metric.
  It is BERT's standard sentence score, though not a normalised log-probability: with
  the rest of the answer visible, each token is easier to predict than in any left-to-right
  factorisation.
- `answer_prob`: the probability that the one-pass fill, sampled at temperature 1 at each
  masked position independently, reproduces the gold answer: prod_i p(gold_i | prompt, all
  answer positions masked), from the exact-match pass. It is the causal metric's meaning
  (a sampling success rate, resolving rates far below 1/n; PassUntil, Hu et al. 2023) for
  this model's way of answering, and a normalised distribution over answers of that length,
  which exp(PLL) is not; answer_prob = 1 implies exact_match = 1.
Multiple-choice tasks: each option's PLL after the prompt (each option token masked in
turn, the rest of the option visible); `accuracy` by the highest PLL, `gold_prob` the
softmax of the PLLs at the gold option (scaling/metrics.py choice_scores).

Log-probabilities are over the tokenizer's ids: the [MASK] id is never an answer, so its
logit is left out of every softmax and argmax. Rows of equal length share a batch and are
never padded (an encoder would attend to the padding).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from scaling.metrics import aggregate, choice_scores, edit_similarity
from scaling.mlm import mask_id
from scaling.scoring import DEFAULT_BATCH_SIZE
from scaling.tasks import GENERATE
from scaling.tasks.base import fit_context


def is_encoder(model) -> bool:
    """Whether a model is an MLM encoder (bidirectional attention) rather than a decoder."""
    return not getattr(model.cfg, "causal", True)


class MaskedRow(NamedTuple):
    """One encoder input and what is read from its output."""

    tokens: list[int]  # the input, with [MASK] where tokens are asked for
    positions: list[int]  # where the predictions are read
    targets: list[int]  # the token whose log-probability is read at each position


class Prediction(NamedTuple):
    """What an encoder predicts at the positions a MaskedRow reads."""

    logprobs: np.ndarray  # (k,) log-probability of each target
    argmax: np.ndarray  # (k,) the most likely token at each position ([MASK] left out)


class AnswerScore(NamedTuple):
    """A generation instance's gold answer under an encoder."""

    fill: Prediction  # all answer positions masked at once (one pass)
    pll: np.ndarray  # (m,) log p(gold_i | the rest of the gold visible), position by position


@torch.inference_mode()
def predict(model, rows: Sequence[MaskedRow], batch_size: int = DEFAULT_BATCH_SIZE
            ) -> list[Prediction]:
    """Log-probabilities of each row's targets and the argmax at its positions.

    Rows of equal length share a batch (no padding); the output layer runs from the
    batch's earliest read position on (`last`).
    """
    device = next(model.parameters()).device
    mask = mask_id(model.cfg)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if not row.positions or len(row.positions) != len(row.targets):
            raise ValueError("a masked row needs one target per read position")
        groups[len(row.tokens)].append(i)
    out: list = [None] * len(rows)
    for length, idxs in groups.items():
        for start in range(0, len(idxs), batch_size):
            chunk = [rows[i] for i in idxs[start:start + batch_size]]
            lo = min(min(r.positions) for r in chunk)
            x = torch.tensor([r.tokens for r in chunk], device=device)
            logits, _ = model(x, last=length - lo)  # (b, length - lo, V)
            logp = F.log_softmax(logits[..., :mask].float(), dim=-1)  # [MASK] is no answer
            width = max(len(r.positions) for r in chunk)
            pos = torch.tensor([r.positions + r.positions[-1:] * (width - len(r.positions))
                                for r in chunk], device=device) - lo  # (b, width)
            tgt = torch.tensor([r.targets + r.targets[-1:] * (width - len(r.targets))
                                for r in chunk], device=device)
            sel = logp[torch.arange(len(chunk), device=device)[:, None], pos]  # (b, width, V)
            lp = sel.gather(-1, tgt[..., None]).squeeze(-1).cpu().double().numpy()
            am = sel.argmax(-1).cpu().numpy()
            for b, i in enumerate(idxs[start:start + batch_size]):
                k = len(rows[i].positions)
                out[i] = Prediction(lp[b, :k], am[b, :k])
    return out


def pll_rows(context: list[int], answer: list[int], mask: int) -> list[MaskedRow]:
    """One row per answer token: context + answer with that token masked (Salazar et al.)."""
    n = len(context)
    return [MaskedRow(context + answer[:i] + [mask] + answer[i + 1:], [n + i], [answer[i]])
            for i in range(len(answer))]


def score_answers(model, contexts: Sequence[list[int]], golds: Sequence[list[int]],
                  batch_size: int = DEFAULT_BATCH_SIZE) -> list[AnswerScore]:
    """The one-pass fill and the PLL of each gold answer after its context (contexts
    already cut to fit; an answer of one token has one row for both)."""
    mask = mask_id(model.cfg)
    rows: list[MaskedRow] = []
    spans = []
    for ctx, gold in zip(contexts, golds):
        if not gold:
            raise ValueError("cannot score an empty answer")
        n = len(ctx)
        first = len(rows)
        rows.append(MaskedRow(list(ctx) + [mask] * len(gold), list(range(n, n + len(gold))),
                              list(gold)))
        if len(gold) > 1:  # with one token, masking it alone is the fill row itself
            rows += pll_rows(list(ctx), list(gold), mask)
        spans.append((first, len(rows)))
    preds = predict(model, rows, batch_size)
    out = []
    for first, end in spans:
        fill = preds[first]
        pll = (fill.logprobs if end - first == 1 else
               np.concatenate([p.logprobs for p in preds[first + 1:end]]))
        out.append(AnswerScore(fill, pll))
    return out


def option_plls(model, contexts: Sequence[list[int]], options: Sequence[list[list[int]]],
                batch_size: int = DEFAULT_BATCH_SIZE) -> list[list[float]]:
    """The PLL of every option after its context (contexts already cut to fit)."""
    mask = mask_id(model.cfg)
    rows: list[MaskedRow] = []
    owners: list[tuple[int, int]] = []
    for e, (ctx, opts) in enumerate(zip(contexts, options)):
        for o, opt in enumerate(opts):
            if not opt:
                raise ValueError("cannot score an empty option")
            for row in pll_rows(list(ctx), list(opt), mask):
                rows.append(row)
                owners.append((e, o))
    sums = [[0.0] * len(opts) for opts in options]
    for (e, o), pred in zip(owners, predict(model, rows, batch_size)):
        sums[e][o] += float(pred.logprobs[0])  # summed in row order: left to right
    return sums


def answer_metrics(fill_text: str, answer: str, gold: Sequence[int],
                   score: AnswerScore) -> dict[str, float]:
    """The generation metrics of one instance (module docstring), in the schema's order."""
    hits = score.fill.argmax == np.asarray(gold)
    return {
        "exact_match": float(hits.all()),
        "token_accuracy": float(hits.mean()),
        "edit_similarity": 1.0 if fill_text == answer else edit_similarity(fill_text, answer),
        "answer_logprob": float(score.pll.sum()) / len(answer),
        "answer_prob": math.exp(float(score.fill.logprobs.sum())),
    }


def example_scores(model, tokenizer, prep, batch_size: int = DEFAULT_BATCH_SIZE
                   ) -> list[dict[str, float]]:
    """Per-instance metrics of a prepared task (scaling.scorer.Prepared) under an encoder."""
    task = prep.task
    block = getattr(model, "window", model.cfg.block_size)  # less a soft prompt's positions
    if task.kind == GENERATE:
        contexts = [fit_context(c, len(g), block) for c, g in zip(prep.contexts, prep.golds)]
        scores = score_answers(model, contexts, prep.golds, batch_size)
        return [answer_metrics(tokenizer.decode(s.fill.argmax), ex.answer, g, s)
                for ex, g, s in zip(prep.examples, prep.golds, scores)]
    contexts = [fit_context(c, max(map(len, opts)), block)
                for c, opts in zip(prep.contexts, prep.choices)]
    plls = option_plls(model, contexts, prep.choices, batch_size)
    return [choice_scores(ll, gi) for ll, gi in zip(plls, prep.gold_index)]


def score_task(model, tokenizer, prep, batch_size: int = DEFAULT_BATCH_SIZE
               ) -> dict[str, tuple[float, float]]:
    """metric -> (mean, stderr) of one task on an encoder (scaling.scorer.score_task's
    counterpart)."""
    return aggregate(example_scores(model, tokenizer, prep, batch_size))
