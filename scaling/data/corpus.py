"""The corpus spec and the deterministic text generator for the synthetic skill mix.

The synthetic corpus is a stream of examples, each written as a line break followed by the
example's text ("\\nA 57+68=521\\nC b=a;a=7;...\\n..."), cut to the requested length. The
stream is a pure function of (spec, split): a `random.Random` seeded from sha256 of
(seed, split name) picks a skill by the mix, a difficulty by the skill's difficulty weights,
and draws an example, rejecting held-out ones (see `skills.base`), so neither split ever
contains a probe instance. Because the stream only grows, a shorter corpus is a prefix of a
longer one with the same spec.

`mix` weights are shares of CHARACTERS (= char tokens), not of examples: long lines (4-shot
few-shot) would otherwise crowd out short ones. The generator converts them to example
probabilities with each skill's mean line length, estimated once from a fixed sample.
"""

from __future__ import annotations

import bisect
import dataclasses
import glob
import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .skills import SKILLS, get_skill
from .skills.base import HELDOUT_FRACTION, Example, sample_train

# Bump when the generated text for an unchanged spec changes (skill formats, mixing): it is
# part of spec_hash, so corpora built by older code are never reused by mistake.
DATA_VERSION = 2

SYNTHETIC = "synthetic"


def default_mix() -> dict[str, float]:
    """Default share of characters per skill.

    Induction-type skills (copy, in-context mapping, chains) get 70%: induction heads need
    hundreds of updates of copy-like data to form, and at a small share of the mix they did
    not form within the CPU ladder's token budget (measured: docs/LOG.md). Arithmetic gets
    20%, filler prose 5%.
    """
    return {
        "copy": 0.25,
        "icl": 0.25,
        "chain": 0.20,
        "addition": 0.15,
        "modular": 0.05,
        "fewshot": 0.05,
        "prose": 0.05,
    }


def _easier_first(difficulties: tuple[int, ...]) -> dict[int, float]:
    # Level i gets weight 1 / (1 + i/2): easier levels somewhat more often (a curriculum of
    # difficulty exists in the data), yet the hardest level still gets ~40% of the easiest.
    return {d: round(1.0 / (1.0 + i / 2.0), 4) for i, d in enumerate(difficulties)}


def default_difficulty_weights() -> dict[str, dict[int, float]]:
    """Default per-skill relative frequency of each difficulty, for the skills of the default
    mix (a skill added to the registry later does not change the default spec, its hash, and
    so no stored corpus or run directory; `skill_difficulty_weights` covers every skill)."""
    mixed = default_mix()
    return {name: w for name, w in skill_difficulty_weights().items() if name in mixed}


def skill_difficulty_weights() -> dict[str, dict[int, float]]:
    """Every registered skill's relative frequency of each difficulty among its examples,
    used for a skill the spec's difficulty_weights leave out."""
    weights = {name: _easier_first(getattr(mod, "PROBED", mod.DIFFICULTIES))
               for name, mod in SKILLS.items()}
    # In-context learning needs bursty, dense episodes (Chan et al. 2022): mostly 4 and 8
    # shots, where labels repeat within a line; 0-shot lines are unpredictable noise.
    weights["icl"] = {0: 0.05, 1: 0.1, 2: 0.15, 4: 0.3, 8: 0.4}
    # 1-digit addition has only 100 distinct sums: more of it would just repeat them.
    weights["addition"] = {1: 0.1, 2: 0.3, 3: 0.25, 4: 0.2, 5: 0.15}
    return weights


@dataclass
class CorpusSpec:
    """Everything that determines a corpus; its canonical JSON hash names the built shards."""

    seed: int = 0  # seeds the train and val example streams (held-out split is seed-free)
    train_tokens: int = 5_000_000  # tokens in train.bin
    val_tokens: int = 100_000  # tokens in val.bin
    mix: dict[str, float] = field(default_factory=default_mix)  # skill -> share of characters
    # skill -> {difficulty: relative weight}; skills missing here use the easier-first rule
    difficulty_weights: dict[str, dict[int, float]] = field(
        default_factory=default_difficulty_weights
    )
    heldout_fraction: float = HELDOUT_FRACTION  # share of example space kept out of the corpus
    tokenizer: str = "char"  # "char" or a path to a HuggingFace tokenizers .json file
    # "synthetic", a directory / glob of .txt files, or a pre-tokenized uint16 .bin file
    source: str = SYNTHETIC

    def validate(self) -> CorpusSpec:
        """Raise ValueError (one line) for impossible values; return self for chaining."""
        for name in ("seed", "train_tokens", "val_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                # ValueError, not TypeError: validate() promises one exception type.
                msg = f"corpus spec: {name} must be an integer, got {value!r}"
                raise ValueError(msg)  # noqa: TRY004
        if self.train_tokens <= 0 or self.val_tokens <= 0:
            raise ValueError(
                f"corpus spec: train_tokens and val_tokens must be > 0, got "
                f"{self.train_tokens} and {self.val_tokens}"
            )
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(
                f"corpus spec: heldout_fraction must be in (0, 1), got {self.heldout_fraction}"
            )
        if not isinstance(self.tokenizer, str) or not (
            self.tokenizer == "char" or self.tokenizer.endswith(".json")
        ):
            raise ValueError(
                f"corpus spec: tokenizer must be 'char' or a .json path, got {self.tokenizer!r}"
            )
        if self.tokenizer != "char" and not Path(self.tokenizer).is_file():
            raise ValueError(f"corpus spec: tokenizer file {self.tokenizer} does not exist")
        self._validate_mix()
        if self.source != SYNTHETIC:
            source_files(self.source)  # raises if nothing is there
        return self

    def _validate_mix(self) -> None:
        if not self.mix:
            raise ValueError("corpus spec: mix is empty; give at least one skill a weight")
        for name, w in self.mix.items():
            if name not in SKILLS:
                raise ValueError(f"corpus spec: unknown skill {name!r} in mix; valid: "
                                 f"{', '.join(SKILLS)}")
            if not _finite_nonneg(w):
                raise ValueError(f"corpus spec: mix weight of {name!r} must be >= 0, got {w!r}")
        if sum(self.mix.values()) <= 0:
            raise ValueError("corpus spec: mix weights sum to 0; give a skill a positive weight")
        for name, weights in self.difficulty_weights.items():
            if name not in SKILLS:
                raise ValueError(f"corpus spec: unknown skill {name!r} in difficulty_weights; "
                                 f"valid: {', '.join(SKILLS)}")
            valid = SKILLS[name].DIFFICULTIES
            for d, w in weights.items():
                if int(d) not in valid:
                    raise ValueError(f"corpus spec: skill {name!r} has no difficulty {d!r}; "
                                     f"valid: {valid}")
                if not _finite_nonneg(w):
                    raise ValueError(f"corpus spec: difficulty weight {name}[{d}] must be >= 0, "
                                     f"got {w!r}")
            if self.mix.get(name, 0) > 0 and sum(weights.values()) <= 0:
                raise ValueError(f"corpus spec: all difficulty weights of {name!r} are 0 but its "
                                 "mix weight is positive")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict with normalised types (floats, string difficulty keys)."""
        d = dataclasses.asdict(self)
        d["mix"] = {k: float(v) for k, v in sorted(self.mix.items())}
        d["difficulty_weights"] = {
            k: {str(int(dk)): float(dv) for dk, dv in sorted(v.items(), key=lambda x: int(x[0]))}
            for k, v in sorted(self.difficulty_weights.items())
        }
        d["heldout_fraction"] = float(self.heldout_fraction)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CorpusSpec:
        """Inverse of `to_dict` (accepts the JSON form, with string difficulty keys)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"corpus spec: unknown field(s) {', '.join(sorted(unknown))}")
        d = dict(d)
        if "difficulty_weights" in d:
            d["difficulty_weights"] = {
                k: {int(dk): float(dv) for dk, dv in v.items()}
                for k, v in d["difficulty_weights"].items()
            }
        return cls(**d)


def _finite_nonneg(w: object) -> bool:
    return isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0


def source_files(source: str) -> list[Path]:
    """Files of a non-synthetic source: one .bin, or the .txt files of a dir / glob / file."""
    p = Path(source)
    if source.endswith(".bin"):
        if not p.is_file():
            raise ValueError(f"corpus source {source} does not exist")
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if f.is_file())
    elif p.is_file():
        files = [p]
    else:
        files = sorted(Path(f) for f in glob.glob(source, recursive=True) if Path(f).is_file())
    if not files:
        raise ValueError(f"corpus source {source!r} matches no .txt files (nor is a .bin file)")
    return files


def stream_seed(seed: int, split: str) -> int:
    """64-bit seed for a split's example stream, from sha256 (never the salted hash())."""
    key = f"scaling-corpus:{seed}:{split}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


def _cumulative(weights: list[float]) -> list[float]:
    total = sum(weights)
    acc, out = 0.0, []
    for w in weights:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0  # guard against rounding leaving the last bucket unreachable
    return out


def _mean_line_length(name: str, diff_weights: dict[int, float]) -> float:
    # Fixed-seed estimate, so example probabilities (and the corpus) stay deterministic.
    mod = get_skill(name)
    rng = random.Random(stream_seed(0, f"length-estimate:{name}"))
    total_w = sum(diff_weights.values())
    mean = 0.0
    for d, w in diff_weights.items():
        if w > 0:
            lengths = [len(mod.sample(rng, d).text) + 1 for _ in range(64)]  # +1: line break
            mean += (w / total_w) * sum(lengths) / len(lengths)
    return mean


class _Plan:
    """Per-skill sampling tables derived from a spec (example probabilities, difficulties)."""

    def __init__(self, spec: CorpusSpec) -> None:
        defaults = skill_difficulty_weights()
        self.skills: list[str] = []
        weights: list[float] = []
        self.levels: dict[str, tuple[list[int], list[float]]] = {}
        for name in SKILLS:  # registry order, so dict order in the spec does not matter
            w = float(spec.mix.get(name, 0.0))
            if w <= 0:
                continue
            dw = {int(d): float(x) for d, x in spec.difficulty_weights.get(
                name, defaults[name]).items() if x > 0}
            levels = sorted(dw)
            self.levels[name] = (levels, _cumulative([dw[d] for d in levels]))
            self.skills.append(name)
            # Character share -> example probability: divide by the mean line length.
            weights.append(w / _mean_line_length(name, dw))
        self.cum = _cumulative(weights)


def iter_examples(spec: CorpusSpec, split: str) -> Iterator[Example]:
    """The endless deterministic example stream of a split ("train" or "val")."""
    spec.validate()
    if spec.source != SYNTHETIC:
        raise ValueError(f"corpus source {spec.source!r} is not synthetic: nothing to generate")
    plan = _Plan(spec)
    rng = random.Random(stream_seed(spec.seed, split))
    rand = rng.random
    mods = [get_skill(n) for n in plan.skills]
    levels = [plan.levels[n] for n in plan.skills]
    frac = spec.heldout_fraction
    while True:
        i = bisect.bisect_right(plan.cum, rand())
        lv, cum = levels[i]
        d = lv[bisect.bisect_right(cum, rand())] if len(lv) > 1 else lv[0]
        yield sample_train(mods[i], rng, d, frac)


def generate_text(spec: CorpusSpec, split: str, n_tokens: int) -> str:
    """The first `n_tokens` characters of a split's synthetic text (deterministic).

    Every example starts with a line break. The count is in characters, which equals char
    tokens; for BPE the shard builder asks for more text until it has enough tokens.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    parts: list[str] = []
    size = 0
    for ex in iter_examples(spec, split):
        line = "\n" + ex.text
        parts.append(line)
        size += len(line)
        if size >= n_tokens:
            break
    return "".join(parts)[:n_tokens]
