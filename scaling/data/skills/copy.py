"""Copying (induction): repeat a random letter string after a separator.

Format (one line)::

    K {letters}|{letters}

`difficulty` (2..20) is the number of random lowercase letters. Half of each line after the
tag is answer, and every answer character is predictable only by looking back (the
induction-head mechanism, Olsson et al. 2022). The probe tasks and the default corpus use
lengths 4, 8, 12 and 16 (PROBED); with only those, a model can copy each length by attending
a fixed distance back (one rotary offset per length) without matching content, which is what
the default ladder's runs learn (length-specific copying). Training on every length 2..20
(`data.difficulty_weights`) leaves content matching, a general induction head, as the only
solution.
Example, difficulty 4: prompt "K xkqp|", answer "xkqp".
"""

from __future__ import annotations

import random
import string

from .base import Example

NAME = "copy"
DIFFICULTIES = tuple(range(2, 21))
PROBED = (4, 8, 12, 16)
_LETTERS = string.ascii_lowercase


def chance(difficulty: int) -> float | None:
    """A blind guess of a whole random string: effectively zero, reported as unknown."""
    return None


def sample(rng: random.Random, difficulty: int) -> Example:
    """One copy example of `difficulty` random letters."""
    s = "".join(rng.choices(_LETTERS, k=difficulty))
    return Example(NAME, difficulty, f"K {s}|", s)
