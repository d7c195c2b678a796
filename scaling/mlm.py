"""Masked language modelling (BERT, Devlin et al. 2019) on the ladder: the same rungs as encoders.

`--model.objective=mlm` trains each rung's network with bidirectional attention
(`GPTConfig.causal=False`) on the same corpus, in the same order (`get_batch`), for the same
token budget as the base ladder; only the loss differs. Its runs carry the intervention tag
`mlm` and are scored on the same probe tasks by filling in the answer
(scaling/mlm_scoring.py), into rows of the same schema, so CLM and MLM ladders compare in
one report.

The [MASK] token. The corpus tokenizers have no mask id (the char tokenizer's unused ids
97..127 are padding, a BPE file has none to spare), and the corpus and the base runs must not
change, so an encoder's vocabulary is the tokenizer's plus one: MASK = the encoder's last id,
`GPTConfig.vocab_size - 1` (128 with the char tokenizer; `mask_id`). The corpus never holds
it; only the masking writes it. The extra embedding row adds d_model parameters to `params`
(tied input/output table: 24 at s1 ... 144 at s6) and none to `nonembed_params`.

The masking (BERT's recipe, section 3.1 and appendix A.1), per training window of T tokens:
- exactly round(0.15 T) positions are chosen (at least one), uniformly without replacement,
  as BERT's create_pretraining_data does, so every window carries the same weight in a batch;
- each chosen position independently becomes [MASK] with probability 0.8, a token drawn
  uniformly from the ids below MASK with probability 0.1, and stays unchanged otherwise;
- the loss is the mean cross-entropy of the original tokens at the chosen positions only
  (the others carry the target IGNORE).
The draw of a step's global batch depends on (train.seed, step) alone, on a generator of its
own, never on torch's global RNG: a resumed run draws exactly what an uninterrupted one
would, and each data-parallel rank takes the masks of its own rows of the same draw, as one
process would mask them. Validation windows are masked from (VAL_STREAM, window index)
alone: the same positions at every checkpoint and in every run, whatever its seed or batch
size, so the validation losses of an MLM ladder compare across rungs, steps and seeds. (The
validation row's `loss` is this masked-token loss, not comparable with a CLM's next-token
loss; the report keeps intervention rows out of the base ladder's analyses and compares them
with it along `params`, analysis/interventions.py, where the extra row is 0.1% of s1.)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

MASK_RATE = 0.15  # share of positions chosen for prediction (BERT)
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the chosen: -> [MASK], -> random token (rest: kept)
IGNORE = -100  # target of positions without loss (F.cross_entropy's default ignore_index)
# Streams of the masking draws: a training draw (seed, step) and a validation one (window)
# never share a generator's seed.
TRAIN_STREAM, VAL_STREAM = 0x4D4C4D, 0x56414C


def encoder_config(gcfg):
    """The MLM encoder of a rung: its GPTConfig with one more id (MASK) and causal=False."""
    return dataclasses.replace(gcfg, vocab_size=gcfg.vocab_size + 1, causal=False)


def mask_id(model_cfg) -> int:
    """The [MASK] id of an encoder: the last id of its vocabulary (see the module docstring)."""
    return model_cfg.vocab_size - 1


def n_masked(block: int) -> int:
    """Positions chosen in a window of `block` tokens: round(0.15 block), at least one."""
    return max(1, round(MASK_RATE * block))


def _generator(*words: int) -> torch.Generator:
    """A CPU generator seeded from the words alone (numpy's SeedSequence mixes them)."""
    state = np.random.SeedSequence([w % 2**64 for w in words]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


def draw_masks(rows: int, T: int, mask: int, gen: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERT's masking of `rows` windows of T tokens drawn from `gen`, before it meets the
    tokens: (chosen (rows, T) bool, exactly n_masked(T) per row; action (rows, T) uniform in
    [0, 1): below 0.8 [MASK], below 0.9 a random token, else kept; random (rows, T) the
    replacement tokens, uniform below `mask`). Always the same draws in the same order."""
    noise = torch.rand(rows, T, generator=gen)
    chosen = torch.zeros(rows, T, dtype=torch.bool)
    chosen.scatter_(1, noise.argsort(dim=1, stable=True)[:, :n_masked(T)], True)
    action = torch.rand(rows, T, generator=gen)
    random_tokens = torch.randint(0, mask, (rows, T), generator=gen)
    return chosen, action, random_tokens


def apply_masks(x: torch.Tensor, mask: int, chosen: torch.Tensor, action: torch.Tensor,
                random_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of windows x (B, T) under drawn masks (`draw_masks`), on x's
    device: targets hold the original token at the chosen positions and IGNORE elsewhere."""
    chosen, action, random_tokens = (t.to(x.device) for t in (chosen, action, random_tokens))
    inputs = torch.where(chosen & (action < MASK_SHARE), torch.full_like(x, mask), x)
    swap = chosen & (action >= MASK_SHARE) & (action < MASK_SHARE + RANDOM_SHARE)
    inputs = torch.where(swap, random_tokens, inputs)
    targets = torch.where(chosen, x, torch.full_like(x, IGNORE))
    return inputs, targets


def mask_rows(x: torch.Tensor, mask: int, seeds: list[tuple[int, ...]]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of windows x (B, T), row b masked from a generator seeded by the
    words seeds[b] alone (whatever else shares its batch)."""
    draws = [draw_masks(1, x.size(1), mask, _generator(*words)) for words in seeds]
    return apply_masks(x, mask, *(torch.cat(parts) for parts in zip(*draws)))


def masked_loss(model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy at the positions whose target is not IGNORE (the model computes
    it: its cross-entropy ignores IGNORE)."""
    _, loss = model(inputs, targets)
    return loss


class MaskedLM:
    """BERT's masked-token objective (module docstring). The masks of step s are drawn for
    the whole global batch from (seed, s) in one go (per-row generators cost a fifth of an
    s1 step); this process takes rows rank, rank + world, ... of them, the rows
    scaling.data.shards.get_batch gives it."""

    name = "mlm"

    def __init__(self, seed: int, mask: int, rank: int = 0, world: int = 1):
        self.seed, self.mask, self.rank, self.world = seed, mask, rank, world

    def masks(self, step: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of this process's windows x (B, T) of the batch of `step`."""
        gen = _generator(TRAIN_STREAM, self.seed, step)
        drawn = draw_masks(x.size(0) * self.world, x.size(1), self.mask, gen)
        return apply_masks(x, self.mask, *(t[self.rank::self.world] for t in drawn))

    def loss(self, model, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        """Masked-token loss of the windows x (B, T) (y, the next tokens, is not used)."""
        return masked_loss(model, *self.masks(step, x))


def validation_loss(model, x: torch.Tensor, first_row: int) -> torch.Tensor:
    """Masked-token loss of validation windows x (B, T), window i of the shard masked from
    (VAL_STREAM, i) alone (rows first_row, first_row + 1, ...)."""
    seeds = [(VAL_STREAM, first_row + i) for i in range(x.size(0))]
    inputs, targets = mask_rows(x, mask_id(model.cfg), seeds)
    return masked_loss(model, inputs, targets)
