"""Multi-hop variable chains: follow `difficulty` assignments back to a digit.

Format (one line)::

    C {statements joined by " "} {query}{digit}

Variables are distinct single lowercase letters, values are digits. The chain has
`difficulty` (1..4) statements, each a name followed by its value: "v1{d}", "v2v1", ...,
"vk v(k-1)" (v2 takes v1's value); the prompt ends with the query name vk, so the answer is
d after exactly k hops. Two distractor statements are added: "u{e}" (e != d) and
"w{u or a third digit f}". All statements are shuffled, so the model has to resolve the
chain out of order rather than read the last digit it saw. Each hop is one induction step
(find the earlier occurrence of a name, read what follows it); k hops need k of them
composed within one forward pass.
Example, difficulty 3: prompt "C ba a7 d3 cb ed c", answer "7".

`choices`: the ten digits (a blind guesser's exact-match floor is 1/10).
"""

from __future__ import annotations

import random
import string

from .base import Example

NAME = "chain"
DIFFICULTIES = (1, 2, 3, 4)
_LETTERS = string.ascii_lowercase
_DIGIT_CHOICES = tuple("0123456789")


def chance(difficulty: int) -> float | None:
    """A blind guess of the answer digit is right 1 time in 10."""
    return 0.1


def sample(rng: random.Random, difficulty: int) -> Example:
    """One chain example whose answer is `difficulty` hops from the query variable."""
    names = rng.sample(_LETTERS, difficulty + 2)
    chain, (u, w) = names[:difficulty], names[difficulty:]
    d, e, f = rng.sample(range(10), 3)
    stmts = [f"{chain[0]}{d}"]
    stmts += [f"{chain[i]}{chain[i - 1]}" for i in range(1, difficulty)]
    stmts.append(f"{u}{e}")
    stmts.append(f"{w}{u if rng.random() < 0.5 else f}")
    rng.shuffle(stmts)
    prompt = "C " + " ".join(stmts) + f" {chain[-1]}"
    return Example(NAME, difficulty, prompt, str(d), _DIGIT_CHOICES)
