"""Few-shot addition in a natural-language format; `difficulty` solved demonstrations.

Format (one line)::

    Q: what is {a} plus {b}? A: {a+b}. Q: ... A: {a+b}. Q: what is {a} plus {b}? A: {a+b}

`difficulty` (0, 1, 2, 4) demonstrations "Q: what is a plus b? A: s." come first, then the
query; operands are uniform 0..99 and the sum is written in normal order. The line ends
after the answer (no final "."), so a generating probe should stop at "." or a line break.
Example, difficulty 1: prompt "Q: what is 3 plus 4? A: 7. Q: what is 12 plus 5? A: ",
answer "17".
"""

from __future__ import annotations

import random

from .base import Example

NAME = "fewshot"
DIFFICULTIES = (0, 1, 2, 4)


def chance(difficulty: int) -> float | None:
    """No meaningful blind-guess floor for exact match of a sum."""
    return None


def _question(a: int, b: int) -> str:
    return f"Q: what is {a} plus {b}? A: "


def sample(rng: random.Random, difficulty: int) -> Example:
    """One few-shot addition example with `difficulty` solved demonstrations."""
    parts = []
    for _ in range(difficulty):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        parts.append(f"{_question(a, b)}{a + b}. ")
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return Example(NAME, difficulty, "".join(parts) + _question(a, b), str(a + b))
