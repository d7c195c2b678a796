"""Multi-digit addition with the answer written least-significant digit first.

Format (one line)::

    A {a}+{b}={reverse(a + b)}

Both operands have exactly `difficulty` digits (1..5; 1-digit operands are 0..9).
Example, difficulty 2: prompt "A 57+68=", answer "521" (57 + 68 = 125, reversed).
Writing the sum reversed lets the model emit each digit right after the carry it depends on
has been determined (Lee et al. 2023), which makes addition learnable by small models; and
the answer is about a quarter of the line's characters.

`choices` (multiple-choice form): the gold answer plus 3 distractors that differ from it in
exactly one digit (never giving the reversed number a leading zero), sorted, so a probe can
score by the log-likelihood of each option.
"""

from __future__ import annotations

import random

from .base import Example

NAME = "addition"
DIFFICULTIES = (1, 2, 3, 4, 5)
_DIGITS = "0123456789"


def chance(difficulty: int) -> float | None:
    """No meaningful blind-guess floor for exact match of a multi-digit sum."""
    return None


def _distractors(rng: random.Random, gold: str, k: int = 3) -> tuple[str, ...]:
    """`k` distinct strings that differ from `gold` in exactly one digit."""
    out: set[str] = set()
    last = len(gold) - 1
    while len(out) < k:
        pos = rng.randrange(len(gold))
        digit = rng.choice(_DIGITS)
        # The last reversed digit is the most significant one: keep it non-zero.
        if digit == gold[pos] or (pos == last and last > 0 and digit == "0"):
            continue
        out.add(gold[:pos] + digit + gold[pos + 1 :])
    return tuple(out)


def sample(rng: random.Random, difficulty: int) -> Example:
    """One addition example with `difficulty`-digit operands and a reversed answer."""
    lo = 10 ** (difficulty - 1) if difficulty > 1 else 0
    hi = 10**difficulty - 1
    a = rng.randint(lo, hi)
    b = rng.randint(lo, hi)
    answer = str(a + b)[::-1]
    choices = tuple(sorted((answer, *_distractors(rng, answer))))
    return Example(NAME, difficulty, f"A {a}+{b}=", answer, choices)
