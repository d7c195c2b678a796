"""Data layer: tokenizers, synthetic skills, corpus specs, uint16 shards, contamination check.

Flow: `corpus.CorpusSpec` -> `shards.build_corpus(spec, root)` writes
`root/<hash12>/{train,val}.bin` and a manifest once; every rung then reads
`shards.open_shard(dir, "train")` through `shards.get_batch`, which serves the same tokens in
the same order whatever the batch size. Probe tasks draw their instances with
`skills.heldout_examples`, a split of each skill's example space that the corpus never
contains (`contamination.check_contamination` proves it for a built shard).

Import from the submodules (`scaling.data.shards`, `.corpus`, `.tokenizer`, `.skills`,
`.contamination`); this package re-exports nothing.
"""
