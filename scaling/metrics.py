"""Per-example probe metrics and their aggregation: one definition for every evaluation path.

The native evaluator (`scaling/scorer.py`, `scaling/scoring.py`) and the lm-eval hooks
(`scaling/lm_eval_tasks/hooks.py`) both call the functions here, so a metric means the same
thing whichever path produced the number.

Generation probes (one gold answer, greedy decoding). Every generation metric is defined on
the TEXT of the gold answer, so it means the same for any tokenizer (a model of another
family scored through lm-eval's `hf` backend included); for a tokenizer with one token per
character (`char`, this project's default) each definition below equals the per-token one
the project used before (token = character), so stored results keep their meaning.
- `exact_match`: 1 if the greedy output equals the gold answer exactly, else 0.
  Discontinuous: one wrong character and the example scores 0.
- `token_accuracy` (per-character greedy accuracy; the name is the schema's): share of the
  gold answer's characters c_i that are the model's greedy next character after the text
  prompt + gold[:i] (teacher forcing on text). "Greedy next character" is the first
  character of the model's greedy continuation of that text: its tokenizer encodes
  prompt + gold[:i] whole, the model emits its argmax token, and c_i counts when that
  token's text begins with c_i (an end-of-text token, or one that decodes to nothing,
  counts as a miss). With one token per character this is "the gold token is the argmax
  under teacher forcing" (the evaluator computes it from one teacher-forced pass). With
  BPE a context cut inside a word ends where the tokenizer rarely ends one in training,
  so the flags at such positions are what the model does from an unusual token boundary;
  a gold "23" stored as one token counts at i=0 when the argmax token is "23" or "2" or
  any token starting with "2". The lm-eval tasks ask one generate_until request per
  character (max_gen_toks=1, no stop strings) for it.
- `edit_similarity`: 1 - Levenshtein(output, gold) / max(len(output), len(gold)), over
  characters, in [0, 1] (1 when both are empty).
- `answer_logprob`: log-probability (nats) of the gold answer text after the prompt, per
  CHARACTER of the answer (total log-probability / len(gold)); <= 0, higher is better. The
  total is that of the model's tokenization of the answer (the answer's tokens after the
  prompt's, as lm-eval scores a continuation); with one token per character it is the mean
  gold-token log-probability.
- `answer_prob`: exact probability of the whole gold answer under teacher forcing, the
  product of its token probabilities, exp(total log-probability), in
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

from scaling.results import CONTINUOUS, DISCONTINUOUS  # noqa: F401 (re-exported)

# answer_prob came after the others: it is appended so that the rows of older results keep
# their order.
GENERATE_METRICS = ("exact_match", "token_accuracy", "edit_similarity", "answer_logprob",
                    "answer_prob")
CHOICE_METRICS = ("accuracy", "gold_prob")
# Which metrics jump and which move smoothly (DISCONTINUOUS, CONTINUOUS) is a convention of
# the results schema, imported above from scaling.results.


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


def greedy_char_hit(continuation: str, char: str) -> bool:
    """Whether a greedy continuation (the text of the model's argmax next token, or more)
    begins with the gold character `char`: one flag of `token_accuracy`."""
    return bool(char) and continuation.startswith(char)


def generate_scores(pred: str, gold: str, answer_logprobs: Sequence[float],
                    char_is_greedy: Sequence[bool]) -> dict[str, float]:
    """All generation metrics of one example (definitions in the module docstring).

    pred: greedy output (already cut at stop strings); gold: the gold answer (non-empty);
    answer_logprobs: log-probabilities whose sum is log p(gold | prompt): one per gold
    token (the evaluator) or a single total (lm-eval's loglikelihood of the answer);
    char_is_greedy: one flag per gold CHARACTER, whether it is the greedy next character.
    """
    if not gold or len(char_is_greedy) != len(gold):
        raise ValueError("need a non-empty gold answer and one greedy flag per gold character")
    if len(answer_logprobs) == 0:
        raise ValueError("need the gold answer's log-probability")
    # Summed left to right in float64 in both paths, so native and lm-eval agree to the
    # rounding of the log-probabilities themselves.
    total = float(sum(float(lp) for lp in answer_logprobs))
    return {
        "exact_match": float(pred == gold),
        "token_accuracy": sum(bool(g) for g in char_is_greedy) / len(gold),
        "edit_similarity": 1.0 if pred == gold else edit_similarity(pred, gold),
        "answer_logprob": total / len(gold),
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
