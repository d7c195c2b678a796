"""Registry of synthetic skills: one module per skill, each with the interface in `base`.

Adding a skill: write `skills/<name>.py` defining NAME, DIFFICULTIES, sample(rng, difficulty)
and chance(difficulty), then add it to SKILLS below.
"""

from __future__ import annotations

from types import ModuleType

from . import addition, chain, copy, fewshot, icl, modular, prose, repeat
from .base import (
    HELDOUT_FRACTION,
    Example,
    check_difficulty,
    heldout_examples,
    is_heldout,
    sample_train,
)

# Insertion order is the canonical order (used by the corpus generator's mixing).
SKILLS: dict[str, ModuleType] = {
    m.NAME: m for m in (addition, chain, modular, icl, fewshot, copy, prose, repeat)
}


class UnknownSkillError(KeyError):
    """A skill name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def get_skill(name: str) -> ModuleType:
    """Return the skill module called `name`; UnknownSkillError lists the valid names."""
    try:
        return SKILLS[name]
    except KeyError:
        raise UnknownSkillError(
            f"unknown skill {name!r}; valid: {', '.join(SKILLS)}"
        ) from None


__all__ = [
    "HELDOUT_FRACTION",
    "SKILLS",
    "Example",
    "UnknownSkillError",
    "check_difficulty",
    "get_skill",
    "heldout_examples",
    "is_heldout",
    "sample_train",
]
