"""Repeating (pure induction): a random letter string between two separators, then again.

Format (one line)::

    R |{letters}|{letters}

`difficulty` (2..20) is the number of random lowercase letters. Unlike `copy`
(`K {letters}|{letters}`), every answer character, the first included, is what followed the
earlier occurrence of the current token: the first one follows the first `|`, each next one
the earlier copy of the letter before it. So an induction head alone (Olsson et al. 2022)
solves it; `copy`'s first letter needs another head that finds where the string starts
(docs/LOG.md, 2026-12-08: a run that copies every letter but the first). Every length 2..20
is offered, so a fixed look-back distance cannot solve it either. Not in the default corpus.
Example, difficulty 4: prompt "R |xkqp|", answer "xkqp".
"""

from __future__ import annotations

import random

from .base import Example
from .copy import DIFFICULTIES, PROBED, chance  # noqa: F401  (the same lengths and floor)
from .copy import _LETTERS

NAME = "repeat"


def sample(rng: random.Random, difficulty: int) -> Example:
    """One repeat example of `difficulty` random letters."""
    s = "".join(rng.choices(_LETTERS, k=difficulty))
    return Example(NAME, difficulty, f"R |{s}|", s)
