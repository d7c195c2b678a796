"""What every skill shares: the `Example` record and the held-out split.

A skill module defines `NAME`, `DIFFICULTIES`, `sample(rng, difficulty) -> Example` and
`chance(difficulty) -> float | None`. Every example is one line of text; the corpus writes
each one after a line break.

The held-out split is made BY CONSTRUCTION: an example is held out iff the first 8 bytes of
sha256(example.text), read as a fraction of 2**64, fall below `fraction`. It depends on the
text alone (never on a seed), so the training corpus and the probe tasks agree on it without
sharing any state, and the held-out set for fraction f is a subset of the one for any larger
fraction (a corpus built with heldout_fraction >= 0.1 never contains a probe instance drawn
with the default 0.1).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from types import ModuleType

HELDOUT_FRACTION = 0.1
_TWO_64 = 2**64
# sample_train gives up after this many held-out draws in a row: only a skill whose every
# example is held out could get there, which is a bug worth an error rather than a hang.
_MAX_TRAIN_TRIES = 10_000


@dataclass(frozen=True)
class Example:
    """One skill instance: `prompt` ends exactly where the gold `answer` begins."""

    skill: str  # e.g. "addition"
    difficulty: int  # digits / hops / shots / length ...
    prompt: str  # text given to the model, ends right where the answer begins
    answer: str  # gold continuation (short, a few chars)
    choices: tuple[str, ...] = ()  # optional multiple-choice options (gold included)

    @property
    def text(self) -> str:
        """The full line: prompt followed by answer (no line break)."""
        return self.prompt + self.answer


def heldout_score(text: str) -> float:
    """Deterministic pseudo-uniform number in [0, 1) derived from sha256 of `text`."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _TWO_64


def is_heldout(example: Example, fraction: float = HELDOUT_FRACTION) -> bool:
    """True if `example` belongs to the held-out (probe-only) split; depends on its text only."""
    return heldout_score(example.text) < fraction


def _module(skill: ModuleType | str) -> ModuleType:
    if isinstance(skill, str):
        from . import get_skill  # late import: the registry imports this module

        return get_skill(skill)
    return skill


def check_difficulty(skill: ModuleType, difficulty: int) -> None:
    """Raise ValueError if `difficulty` is not one of the skill's DIFFICULTIES."""
    if difficulty not in skill.DIFFICULTIES:
        raise ValueError(
            f"skill {skill.NAME!r} has no difficulty {difficulty!r}; valid: {skill.DIFFICULTIES}"
        )


def sample_train(
    skill: ModuleType | str,
    rng: random.Random,
    difficulty: int,
    fraction: float = HELDOUT_FRACTION,
) -> Example:
    """Sample an example of `skill` that is NOT held out (rejection sampling)."""
    mod = _module(skill)
    sample = mod.sample
    for _ in range(_MAX_TRAIN_TRIES):
        ex = sample(rng, difficulty)
        if heldout_score(ex.text) >= fraction:
            return ex
    raise RuntimeError(
        f"skill {mod.NAME!r} difficulty {difficulty}: {_MAX_TRAIN_TRIES} draws were all held out"
    )


def _seed_int(*parts: object) -> int:
    """A 64-bit seed from sha256 of the parts (Python's hash() is salted per process)."""
    key = ":".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


def heldout_examples(
    skill_name: str,
    difficulty: int,
    n: int,
    seed: int = 1234,
    fraction: float = HELDOUT_FRACTION,
) -> list[Example]:
    """Up to `n` distinct held-out examples of a skill at one difficulty, deterministically.

    Small example spaces (e.g. 1-digit addition: 100 sums, about 10 held out) give fewer
    than `n`: the search stops once no new held-out example turned up for a long stretch.
    """
    mod = _module(skill_name)
    check_difficulty(mod, difficulty)
    rng = random.Random(_seed_int("heldout", seed, mod.NAME, difficulty))
    found: dict[str, Example] = {}
    # A held-out draw occurs about once per 1/fraction tries; a stretch of 200 expected
    # held-out draws without a new one means the space is exhausted (or nearly so).
    stall_limit = int(200 / max(fraction, 1e-6)) + 1000
    max_tries = int(n * 50 / max(fraction, 1e-6)) + stall_limit
    since_new = 0
    for _ in range(max_tries):
        if len(found) >= n or since_new >= stall_limit:
            break
        ex = mod.sample(rng, difficulty)
        since_new += 1
        if ex.text not in found and heldout_score(ex.text) < fraction:
            found[ex.text] = ex
            since_new = 0
    return list(found.values())
