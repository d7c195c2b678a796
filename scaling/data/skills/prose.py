"""Filler prose: short templated English sentences with no task semantics.

Format (one line, no tag): one sentence from a handful of templates over a small
vocabulary, lowercase, no final punctuation; `answer` is the last word and `prompt` everything
before it (including the space). Only difficulty 1 exists.
Example: prompt "the old dog sees a red ", answer "house".
"""

from __future__ import annotations

import random

from .base import Example

NAME = "prose"
DIFFICULTIES = (1,)

_NOUNS = (
    "dog", "cat", "bird", "house", "tree", "river", "car", "book", "garden", "friend",
    "child", "road", "table", "window", "boat", "hill", "town", "letter", "song", "door",
)
_ADJS = ("old", "red", "small", "big", "quiet", "bright", "green", "warm", "cold", "happy")
_VERBS = ("sees", "likes", "finds", "helps", "follows", "paints", "reads", "opens", "hears")
_NAMES = ("anna", "ben", "cleo", "dan", "eva", "finn", "gia", "hugo")
_PLACES = ("in the morning", "after lunch", "at night", "near the river", "by the road")


def chance(difficulty: int) -> float | None:
    """Filler has no probe floor."""
    return None


def _sentence(rng: random.Random) -> str:
    c = rng.choice
    t = rng.randrange(5)
    if t == 0:
        return f"the {c(_ADJS)} {c(_NOUNS)} {c(_VERBS)} a {c(_ADJS)} {c(_NOUNS)}"
    if t == 1:
        return f"{c(_NAMES)} {c(_VERBS)} the {c(_NOUNS)} {c(_PLACES)}"
    if t == 2:
        return f"a {c(_NOUNS)} is {c(_ADJS)} and the {c(_NOUNS)} is {c(_ADJS)}"
    if t == 3:
        return f"{c(_NAMES)} and {c(_NAMES)} walk to the {c(_ADJS)} {c(_NOUNS)}"
    return f"every {c(_NOUNS)} {c(_VERBS)} the {c(_NOUNS)} of {c(_NAMES)}"


def sample(rng: random.Random, difficulty: int) -> Example:
    """One filler sentence; the answer is its last word."""
    text = _sentence(rng)
    cut = text.rindex(" ") + 1
    return Example(NAME, difficulty, text[:cut], text[cut:])
