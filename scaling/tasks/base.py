"""The probe-task record: a small declarative object that every evaluation path reads.

A `Task` names a held-out slice of one corpus generator (skill + difficulty) and says how to
score it. Its instances come from `scaling.data.skills.heldout_examples`, the same
generators that wrote the training corpus, restricted to the held-out split that the corpus
never contains. Each instance is shown to the model as a fresh line: the context is
LINE_START + prompt, because every example in the corpus follows a line break.

A prompt longer than the model's window is cut on the left (`fit_context`) so that the
answer and the decoding budget fit: all metrics of an instance see the same prompt window.

A task whose instances do not come from a corpus skill subclasses `Task` and overrides
`examples()` (see the README's "Adding a probe task").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from scaling.metrics import CHOICE_METRICS, GENERATE_METRICS

GENERATE = "generate"
MULTIPLE_CHOICE = "multiple_choice"
KINDS = (GENERATE, MULTIPLE_CHOICE)
# The corpus writes every example after a line break (scaling/data/corpus.py), so a probe
# prompt is presented the same way: as the start of a new line.
LINE_START = "\n"
DEFAULT_N = 500
DEFAULT_SEED = 1234
# Greedy decoding may run this many tokens past the gold answer's length.
EXTRA_TOKENS = 2


def generation_budget(requested: int, block_size: int) -> int:
    """New tokens actually decoded: at most half the block, so the prompt keeps room."""
    return max(1, min(int(requested), block_size // 2))


def room_needed(kind: str, answer_tokens: int, block_size: int) -> int:
    """Positions an instance needs after its context: the answer and the decoding budget
    (generation; answer_tokens = gold length) or the longest option (multiple choice)."""
    if kind == GENERATE:
        return max(answer_tokens, generation_budget(answer_tokens + EXTRA_TOKENS, block_size))
    return answer_tokens


def fit_context(tokens: list[int], need: int, block_size: int) -> list[int]:
    """The context cut on the left so that `need` more tokens fit in the block.

    Every metric of an instance then sees the same prompt window: scoring the gold answer
    (or options) and greedy decoding both condition on exactly these tokens.
    """
    keep = block_size - need
    if keep < 1:
        raise ValueError(f"an answer of {need} tokens does not fit a block of {block_size}")
    return list(tokens) if len(tokens) <= keep else list(tokens)[-keep:]


@functools.lru_cache(maxsize=256)
def _heldout(skill: str, difficulty: int, n: int, seed: int) -> tuple:
    from scaling.data.skills import heldout_examples

    return tuple(heldout_examples(skill, difficulty, n, seed=seed))


@dataclass(frozen=True)
class Task:
    """One probe task: which instances, how many, how they are scored.

    The results `task` column is `name` (difficulty in the name, e.g. `addition_3d`) and the
    `shots` column is `shots` (0 when the task has no shot axis).
    """

    name: str  # results `task` column, e.g. "addition_3d", "icl"
    skill: str  # corpus generator in scaling.data.skills.SKILLS
    difficulty: int  # the generator's difficulty (digits, hops, modulus, shots, length)
    shots: int | None = None  # demonstrations in the prompt; None = no shot axis
    n: int = DEFAULT_N  # instances requested (small example spaces give fewer)
    kind: str = GENERATE  # generate (greedy decoding) | multiple_choice (option log-likelihood)
    chance: float | None = None  # exact-match floor; None = ask the skill's chance()
    stop: tuple[str, ...] = (LINE_START,)  # greedy decoding stops at these (and at eot)
    seed: int = DEFAULT_SEED  # held-out sampling seed (same seed = same instances)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.n < 1:
            raise ValueError(f"task {self.name!r}: n must be >= 1, got {self.n}")
        if self.shots is not None and self.shots < 0:
            raise ValueError(f"task {self.name!r}: shots must be >= 0, got {self.shots}")
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"task name {self.name!r}: use letters, digits and underscores")

    @property
    def id(self) -> str:
        """Unique handle: `name`, or `name_{shots}shot` for tasks with a shot axis."""
        return self.name if self.shots is None else f"{self.name}_{self.shots}shot"

    @property
    def shots_column(self) -> int:
        """The results schema's `shots` value."""
        return 0 if self.shots is None else self.shots

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric rows this task writes."""
        return GENERATE_METRICS if self.kind == GENERATE else CHOICE_METRICS

    def examples(self) -> list:
        """The held-out instances (deterministic; cached per process)."""
        return list(_heldout(self.skill, self.difficulty, self.n, self.seed))

    def context(self, example) -> str:
        """The text the model is conditioned on for one instance."""
        return LINE_START + example.prompt

    def gold_index(self, example) -> int:
        """Index of the gold answer among a multiple-choice example's options."""
        try:
            return list(example.choices).index(example.answer)
        except ValueError:
            raise ValueError(f"task {self.id}: an example's answer {example.answer!r} is not "
                             f"among its choices") from None

    def chance_of(self, metric: str, examples) -> float | None:
        """The metric's floor for a blind guesser, where known (None otherwise)."""
        if metric in ("accuracy", "gold_prob"):
            return sum(1.0 / len(e.choices) for e in examples) / len(examples)
        if metric == "exact_match":
            if self.chance is not None:
                return self.chance
            from scaling.data.skills import SKILLS

            mod = SKILLS.get(self.skill)
            return mod.chance(self.difficulty) if mod is not None else None
        return None
