"""The model ladder: named rungs from one size rule, with rates and batches from scaling rules.

One knob, depth (nanochat's `model_dim = depth * aspect_ratio`):
    rung "sL":  n_layer = L,  d_model = ASPECT * L,  n_head = L  (head size = ASPECT)
so non-embedding parameters grow as 12 * ASPECT^2 * L^3 and six consecutive rungs span more
than two decades. Learning rate and batch size follow the OLMo model ladder (Bhagia et al.
2024), clamped to what trains stably and efficiently on a CPU (see the constants).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaling.model import GPT, GPTConfig

ASPECT = 24  # d_model / n_layer; also the head size. s1..s6 span 7e3..1.5e6 non-embed params.
# OLMo ladder (Bhagia et al. 2024): lr = 0.0047 * (N / 108e6)^(-1/3),
# batch = 160 * (N / 108e6)^(2/3) sequences of 2048 tokens.
OLMO_LR, OLMO_BATCH_SEQS, OLMO_SEQ, OLMO_N = 0.0047, 160, 2048, 108e6
# The OLMo constants are for natural text at 190M-1.3B parameters. On our 3M-token character
# corpus the rate decides whether induction heads form at all: at batch 16, s4-s6 did best
# at about 0.003 and s4 failed at higher rates (measured: docs/LOG.md). We keep the rule's
# N^(-1/3) shape scaled by LR_SCALE, floored at LR_MIN (so s4-s6 get the rate that worked)
# and capped at LR_MAX.
LR_SCALE = 0.1
LR_MIN, LR_MAX = 3e-3, 1e-2
# Batch: fewer than 16 sequences per step leaves a CPU idle between tiny matmuls. The CPU
# sweeps pin train.batch_size=16: with a few million tokens per rung, the rule's 64-150
# sequences would leave the large rungs a few hundred updates, too few for the induction
# phase change (measured: docs/LOG.md).
BATCH_MIN, BATCH_MAX = 16, 512

# Named ladders: the default CPU ladder, the shipped study (reports/), a quick one for a first
# look, a tiny one for tests, and a GPU ladder that continues the same rule.
LADDERS = {
    "cpu": ["s1", "s2", "s3", "s4", "s5", "s6"],
    "study": ["s0", "s1", "s2", "s3", "s4"],
    "quick": ["s1", "s2", "s3", "s4"],
    "tiny": ["s1", "s2"],
    "gpu": ["s2", "s4", "s6", "s8", "s10", "s12", "s16", "s20"],
}


@dataclass(frozen=True)
class Rung:
    """One ladder rung's shape."""

    name: str
    n_layer: int
    d_model: int
    n_head: int


# The floor rung below s1: depth cannot go below one block, so s0 is one block at half s1's
# width. It gives an ability that needs two blocks (an induction head composes a head of one
# block with a head of an earlier one) two rungs below its onset, as a verdict of `emergent`
# requires (docs/LOG.md, 2026-12-08).
FLOOR = Rung("s0", 1, ASPECT // 2, 1)


def rung(name: str) -> Rung:
    """The shape of rung `name` ("s0", "s1", "s2", ...), from the one size rule (s0: FLOOR)."""
    if not (name.startswith("s") and name[1:].isdigit() and str(int(name[1:])) == name[1:]):
        raise ValueError(f"unknown model size {name!r}: rungs are named s0, s1, s2, ... "
                         f"(default ladder: {', '.join(LADDERS['cpu'])})")
    depth = int(name[1:])
    if depth == 0:
        return FLOOR
    return Rung(name, depth, ASPECT * depth, depth)


def gpt_config(name: str, vocab_size: int, block_size: int, pos: str = "rotary",
               **overrides) -> GPTConfig:
    """GPTConfig for a rung; non-zero overrides (n_layer, d_model, n_head, ...) win."""
    r = rung(name)
    shape = {"n_layer": r.n_layer, "d_model": r.d_model, "n_head": r.n_head}
    shape.update({k: v for k, v in overrides.items() if v})
    return GPTConfig(vocab_size=vocab_size, block_size=block_size, pos=pos, **shape)


def learning_rate(nonembed_params: int) -> float:
    """Peak LR: the OLMo ladder rule times LR_SCALE, within [LR_MIN, LR_MAX]."""
    rule = LR_SCALE * OLMO_LR * (nonembed_params / OLMO_N) ** (-1 / 3)
    return min(max(rule, LR_MIN), LR_MAX)


def batch_size(nonembed_params: int, block_size: int) -> int:
    """Sequences per step: the OLMo rule's tokens per batch, as a power of two in range."""
    tokens = OLMO_BATCH_SEQS * OLMO_SEQ * (nonembed_params / OLMO_N) ** (2 / 3)
    seqs = 2 ** round(math.log2(max(tokens / block_size, 1)))
    return int(min(max(seqs, BATCH_MIN), BATCH_MAX))


def describe(names: list[str], vocab_size: int = 128, block_size: int = 128) -> list[dict]:
    """One dict per rung: shape, parameter groups, FLOPs per token, LR and batch size."""
    rows = []
    for name in names:
        model = GPT(gpt_config(name, vocab_size, block_size))
        counts = model.num_scaling_params()
        rows.append({
            "rung": name, **{k: v for k, v in vars(rung(name)).items() if k != "name"},
            "params": counts["total"], "nonembed_params": counts["nonembed"],
            "flops_per_token": model.estimate_flops(),
            "lr": learning_rate(counts["nonembed"]),
            "batch_size": batch_size(counts["nonembed"], block_size),
        })
    return rows
