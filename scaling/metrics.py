"""Per-example probe metrics and their aggregation: one definition for every evaluation path.

The native evaluator (`scaling/evaluate.py`) and the lm-eval hooks
(`scaling/lm_eval_tasks/hooks.py`) both call the functions here, so a metric means the same
thing whichever path produced the number.

Generation probes (one gold answer, greedy decoding):
- `exact_match`: 1 if the greedy output equals the gold answer exactly, else 0.
  Discontinuous: one wrong token and the example scores 0.
- `token_accuracy`: share of gold answer tokens that are the model's argmax under teacher
  forcing (each position sees the prompt and the gold tokens before it).
- `edit_similarity`: 1 - Levenshtein(output, gold) / max(len(output), len(gold)), over
  characters, in [0, 1] (1 when both are empty).
- `answer_logprob`: mean log-probability (nats) of the gold answer tokens under teacher
  forcing; <= 0, higher is better.
- `answer_prob`: exact probability of the whole gold answer under teacher forcing, the
  product of its token probabilities, exp(sum of the gold tokens' log-probabilities), in
  [0, 1]. Averaged over examples it is the rate at which sampling from the model (at
  temperature 1) would produce the gold answer's tokens, so it resolves success rates far
  below the 1/n that exact match on n examples can see (what PassUntil, Hu et al. 2023,
  estimates by sampling until a pass). It is continuous, but a product over tokens like
  exact match: the mirage analysis reports its verdict without letting it vote
  (analysis/mirage.py).
Multiple-choice probes (options scored by the summed log-likelihood of each continuation):
- `accuracy`: 1 if the gold option has the highest log-likelihood (ties: first option).
- `gold_prob`: probability of the gold option normalised over the options,
  exp(ll_gold) / sum_i exp(ll_i).
Aggregates are means over examples; `stderr` is the standard error of that mean,
std(values, ddof=1) / sqrt(n) (0 for n = 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# answer_prob came after the others: it is appended so that the rows of older results keep
# their order.
GENERATE_METRICS = ("exact_match", "token_accuracy", "edit_similarity", "answer_logprob",
                    "answer_prob")
CHOICE_METRICS = ("accuracy", "gold_prob")
# Which metrics jump (a single token decides the score) and which move smoothly: the
# mirage analysis compares verdicts between the two kinds.
DISCONTINUOUS = ("exact_match", "accuracy")
CONTINUOUS = ("token_accuracy", "edit_similarity", "answer_logprob", "gold_prob", "answer_prob")


def levenshtein(a: Sequence, b: Sequence) -> int:
    """Edit distance (insertions, deletions, substitutions, each cost 1) between a and b.

    Bit-parallel (Myers 1999, in Hyyro's 2003 formulation): one pass over b with the
    columns of the dynamic-programming table of a packed into Python integers.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    m = len(b)  # the pattern is the shorter sequence; a is scanned
    peq: dict = {}
    for i, c in enumerate(b):
        peq[c] = peq.get(c, 0) | (1 << i)
    mask, top = (1 << m) - 1, 1 << (m - 1)
    pv, mv, dist = mask, 0, m
    for c in a:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | ~(xh | pv)
        mh = pv & xh
        if ph & top:
            dist += 1
        elif mh & top:
            dist -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv
    return dist


def edit_similarity(pred: str, gold: str) -> float:
    """1 - Levenshtein(pred, gold) / max(len(pred), len(gold)); 1.0 when both are empty."""
    longest = max(len(pred), len(gold))
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein(pred, gold) / longest


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string (lm-eval's `until` rule)."""
    cut = len(text)
    for s in stops:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def generate_scores(pred: str, gold: str, token_logprobs: Sequence[float],
                    token_is_argmax: Sequence[bool]) -> dict[str, float]:
    """All generation metrics of one example.

    pred: greedy output (already cut at stop strings); gold: the gold answer;
    token_logprobs / token_is_argmax: per gold token, under teacher forcing.
    """
    m = len(token_logprobs)
    if m == 0 or m != len(token_is_argmax):
        raise ValueError("need one log-probability and one argmax flag per gold token")
    # Summed left to right in float64 in both paths, so native and lm-eval agree to the
    # rounding of the token log-probabilities themselves.
    total = float(sum(float(lp) for lp in token_logprobs))
    return {
        "exact_match": float(pred == gold),
        "token_accuracy": sum(bool(g) for g in token_is_argmax) / m,
        "edit_similarity": 1.0 if pred == gold else edit_similarity(pred, gold),
        "answer_logprob": total / m,
        "answer_prob": math.exp(total),
    }


def choice_scores(choice_logprobs: Sequence[float], gold_index: int) -> dict[str, float]:
    """Multiple-choice metrics of one example from each option's summed log-likelihood."""
    lls = np.asarray(choice_logprobs, dtype=np.float64)
    probs = np.exp(lls - lls.max())
    probs /= probs.sum()
    return {
        "accuracy": float(int(np.argmax(lls)) == gold_index),
        "gold_prob": float(probs[gold_index]),
    }


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (std with ddof=1 over sqrt(n); 0 for n=1)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no values to aggregate")
    if arr.size == 1:
        return float(arr[0]), 0.0
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(arr.size))


def aggregate(per_example: Sequence[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """metric -> (mean, stderr) over a list of per-example score dicts."""
    if not per_example:
        raise ValueError("no examples to aggregate")
    return {m: mean_stderr([s[m] for s in per_example]) for m in per_example[0]}
