"""Data layer: tokenizers, synthetic skills, corpus specs, uint16 shards, contamination check.

Flow: `CorpusSpec` -> `build_corpus(spec, root)` writes `root/<hash12>/{train,val}.bin` and a
manifest once; every rung then reads `open_shard(dir, "train")` through `get_batch`, which
serves the same tokens in the same order whatever the batch size. Probe tasks draw their
instances with `heldout_examples`, a split of each skill's example space that the corpus
never contains (`check_contamination` proves it for a built shard).
"""

from .contamination import check_contamination
from .corpus import CorpusSpec, generate_text, iter_examples
from .shards import (
    ShardError,
    TokenStream,
    build_corpus,
    data_hash,
    get_batch,
    open_shard,
    read_manifest,
    spec_hash,
)
from .skills import SKILLS, Example, get_skill, heldout_examples, is_heldout, sample_train
from .tokenizer import BPETokenizer, CharTokenizer, get_tokenizer

__all__ = [
    "SKILLS",
    "BPETokenizer",
    "CharTokenizer",
    "CorpusSpec",
    "Example",
    "ShardError",
    "TokenStream",
    "build_corpus",
    "check_contamination",
    "data_hash",
    "generate_text",
    "get_batch",
    "get_skill",
    "get_tokenizer",
    "heldout_examples",
    "is_heldout",
    "iter_examples",
    "open_shard",
    "read_manifest",
    "sample_train",
    "spec_hash",
]
