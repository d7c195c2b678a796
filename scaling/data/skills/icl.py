"""In-context mapping: a fresh random key -> label mapping in every line; `difficulty` shots.

Format (one line)::

    I {key}{label} {key}{label} ... {query key}{label}

Each line draws 4 distinct lowercase keys and 4 distinct digit labels at random, so nothing
can be memorised across lines: only reading the demonstrations helps. The `difficulty`
(0, 1, 2, 4, 8) demonstrations cycle through the keys, each cycle in a fresh random order,
and the query key is uniform over the 4 keys. A perfect in-context learner is therefore
right when the query key was demonstrated (probability min(shots, 4) / 4) and guesses
otherwise: its accuracy rises with shots up to 4; 8 shots show every key twice (the bursty
repetition that makes in-context learning learnable, Chan et al. 2022). With 0 shots the
answer is unknowable (chance 0.1).
Example, difficulty 2: prompt "I q3 x7 q", answer "3".
The label follows its key directly and the prompt ends with the query key, so one induction
head (find the earlier occurrence of the current token, copy what came next; Olsson et al.
2022) solves it: with "q>3 ... q>" the model would have to match two tokens back.

`choices`: the ten digits.
"""

from __future__ import annotations

import random
import string

from .base import Example

NAME = "icl"
DIFFICULTIES = (0, 1, 2, 4, 8)
N_KEYS = 4
_LETTERS = string.ascii_lowercase
_DIGIT_CHOICES = tuple("0123456789")


def chance(difficulty: int) -> float | None:
    """A guesser that ignores the prompt is right 1 time in 10 (at every shot count)."""
    return 0.1


def sample(rng: random.Random, difficulty: int) -> Example:
    """One in-context-mapping episode with `difficulty` demonstrations."""
    keys = rng.sample(_LETTERS, N_KEYS)
    labels = rng.sample(range(10), N_KEYS)
    mapping = dict(zip(keys, labels))
    demos: list[str] = []
    while len(demos) < difficulty:
        cycle = keys[:]
        rng.shuffle(cycle)
        demos += [f"{k}{mapping[k]}" for k in cycle]
    query = rng.choice(keys)
    prompt = " ".join(["I", *demos[:difficulty], query])
    return Example(NAME, difficulty, prompt, str(mapping[query]), _DIGIT_CHOICES)
