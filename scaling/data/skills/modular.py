"""Modular arithmetic: (a op b) mod m for a small prime modulus m = `difficulty`.

Format (one line)::

    M {a}{op}{b}%{m}={(a op b) mod m}

op is one of "+", "-", "*"; the line means (a op b) mod m, the result always in 0..m-1
(so "M 3-8%5=" has answer "0"). Operands are uniform in 0..max(9, m-1), so they can exceed
m. `difficulty` is the modulus itself, one of 5, 7, 11, 13: a larger table to learn.
Example, difficulty 7: prompt "M 9*4%7=", answer "1".

The spaces are small (300..507 facts per modulus) and held-out facts are never trained on,
so getting them right needs generalisation, as in grokking (Power et al.).
`choices`: all residues 0..m-1.
"""

from __future__ import annotations

import random

from .base import Example

NAME = "modular"
DIFFICULTIES = (5, 7, 11, 13)
_OPS = "+-*"


def chance(difficulty: int) -> float | None:
    """A blind guess of the residue is right 1 time in m."""
    return 1.0 / difficulty


def _apply(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


def sample(rng: random.Random, difficulty: int) -> Example:
    """One modular-arithmetic example with modulus `difficulty`."""
    m = difficulty
    top = max(9, m - 1)
    a = rng.randint(0, top)
    b = rng.randint(0, top)
    op = rng.choice(_OPS)
    answer = str(_apply(op, a, b) % m)
    choices = tuple(str(r) for r in range(m))
    return Example(NAME, difficulty, f"M {a}{op}{b}%{m}=", answer, choices)
