"""Contamination check: which probe (held-out) examples occur verbatim in a token shard.

An example counts as present when its full text is a whole line of the decoded shard:
preceded by the line break that starts every example and followed by a line break (or the
end). Matching whole lines, not substrings, matters: "A 1+2=3" must not be found inside
"A 11+2=31", and the 0-shot in-context line "I q>3" must not be found at the start of the
different 1-shot line "I q>3 q>3". The decoded text is split into a set of lines once, so
checking any number of examples costs one pass over the shard.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .skills.base import Example
from .tokenizer import CharTokenizer, get_tokenizer


def _load_tokens(shard_or_corpus_dir, tokenizer):
    # Returns (tokens, tokenizer) for an array, a .bin path, or a built corpus directory.
    if isinstance(shard_or_corpus_dir, np.ndarray):
        return shard_or_corpus_dir, tokenizer
    path = Path(shard_or_corpus_dir)
    if path.is_dir():
        from .shards import open_shard, read_manifest  # late: shards imports torch lazily only

        if tokenizer is None:
            tokenizer = read_manifest(path)["tokenizer"]
        return open_shard(path, "train"), tokenizer
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such shard or corpus directory")
    return np.fromfile(path, dtype=np.uint16), tokenizer


def shard_lines(tokens: np.ndarray, tokenizer) -> set[str]:
    """The set of distinct lines in the decoded token stream."""
    return set(tokenizer.decode(np.asarray(tokens)).split("\n"))


def check_contamination(
    shard_or_corpus_dir: Path | str | np.ndarray,
    examples: Iterable[Example],
    tokenizer: CharTokenizer | str | None = None,
) -> list[Example]:
    """The examples whose full text occurs as a whole line in the shard (in input order).

    `shard_or_corpus_dir`: a built corpus directory (its train.bin is checked, verified
    against the manifest), a uint16 .bin file, or an array of token ids. `tokenizer`: a
    tokenizer object or name; defaults to the corpus manifest's, else "char".
    """
    tokens, tokenizer = _load_tokens(shard_or_corpus_dir, tokenizer)
    if tokenizer is None:
        tokenizer = "char"
    if isinstance(tokenizer, str):
        tokenizer = get_tokenizer(tokenizer)
    lines = shard_lines(tokens, tokenizer)
    return [ex for ex in examples if ex.text in lines]
