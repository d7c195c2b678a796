"""A decoder-only Transformer (GPT) that counts its own parameters and FLOPs.

Pre-LayerNorm blocks, multi-head causal self-attention through
`F.scaled_dot_product_attention`, a GELU MLP, residual connections and tied input/output
embeddings (nanoGPT). Positions are learned, rotary (Su et al. 2021) or fixed sinusoidal
(Vaswani et al. 2017). An optional KV cache serves batched greedy decoding in evaluation.
With `GPTConfig.causal=False` the same network is an encoder (bidirectional attention), which
the masked-language-modelling objective trains (scaling/mlm.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaling import cpu_attention


@dataclass
class GPTConfig:
    """Resolved network shape (no rung names here: see scaling/ladder.py)."""

    vocab_size: int = 128  # tokenizer vocabulary
    n_layer: int = 2  # transformer blocks
    d_model: int = 64  # residual width
    n_head: int = 2  # attention heads
    block_size: int = 128  # maximum context
    pos: str = "learned"  # learned | rotary | sinusoidal
    dropout: float = 0.0  # residual-branch dropout
    mlp_ratio: int = 4  # MLP hidden = mlp_ratio * d_model
    causal: bool = True  # False: bidirectional attention, an encoder (MLM, scaling/mlm.py)
    prompt_len: int = 0  # soft-prompt vectors ahead of every sequence (prompt tuning; 0 = none)

    def to_dict(self) -> dict:
        """The fields for a checkpoint's `model_config`. `causal` is written only for an
        encoder and `prompt_len` only with a soft prompt, so a plain decoder's checkpoint
        holds exactly what it held before either existed (byte for byte) and tools that map
        known fields (scaling/export.py) still read it."""
        out = asdict(self)
        if out["causal"]:
            del out["causal"]
        if not out["prompt_len"]:
            del out["prompt_len"]
        return out


def _rotary_tables(head_dim: int, length: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin tables for rotary embeddings, each (length, head_dim).

    Both halves of a head share the angles; the sin table carries the sign of the
    rotation, -sin for the first half and +sin for the second (see `_apply_rotary`).
    """
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(length, device=device).float(), inv_freq)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + hs/2) of x (..., T, heads, hs) by position-dependent angles.

    GPT-NeoX's half-split layout: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), written as
    x * cos + swap_halves(x) * signed_sin; cos and sin are (T, hs) tables that broadcast
    over heads (or (B, T, hs) tables, one row of positions per sequence). With gradients:
    three element-wise kernels instead of seven, several times faster than the two-half
    form on CPU. Without (evaluation): x * cos, then each half adds the other half times
    sin in place, with no swapped copy; evaluation batches are large enough for memory
    traffic to bound this, and it is several times faster there, while for a training
    step's backward the in-place form is slower (measured: docs/LOG.md). Both agree within
    float rounding (1e-6).
    """
    half = x.size(-1) // 2
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    if torch.is_grad_enabled():
        swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)
        return x * cos + swapped * sin
    out = x * cos
    out[..., :half].addcmul_(x[..., half:], sin[..., :half])
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out


def _sinusoidal_table(length: int, d_model: int) -> torch.Tensor:
    """Fixed sinusoidal position table (length, d_model), Vaswani et al. 2017."""
    pos = torch.arange(length).float()[:, None]
    div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: d_model // 2])
    return table


class KVCache:
    """Per-layer key/value buffers for incremental decoding; `pos` is the next position.

    Buffers hold `capacity` positions from the first update on (what the caller will use),
    so a decoding step writes one position in place instead of copying the whole cache
    with torch.cat. A sequence that outgrows the buffers is copied into larger
    ones, so capacity is an optimisation, never a limit.

    `visible` (B, slots), when set, hides cached slots from attention row by row (False =
    hidden): rows that continue from different points of a shared prefix then decode in
    one batch (`pos` counts slots; the model takes each row's positions separately).
    """

    def __init__(self, n_layer: int, capacity: int = 0):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer
        self.pos = 0
        self.capacity = capacity
        self.visible: torch.Tensor | None = None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store this call's k, v (B, nh, T, hs) at `pos`; return the cached k, v so far."""
        start, end = self.pos, self.pos + k.size(2)
        buf = self.layers[layer]
        if buf is None or end > buf[0].size(2):
            shape = (*k.shape[:2], max(self.capacity, end), k.size(3))
            grown = (k.new_empty(shape), v.new_empty(shape))
            if buf is not None:
                grown[0][:, :, :start] = buf[0][:, :, :start]
                grown[1][:, :, :start] = buf[1][:, :, :start]
            self.layers[layer] = buf = grown
        buf[0][:, :, start:end] = k
        buf[1][:, :, start:end] = v
        return buf[0][:, :, :end], buf[1][:, :, :end]

    @torch.no_grad()  # a cache serves inference; out= gathers cannot carry gradients
    def select(self, rows: torch.Tensor, length: int, capacity: int = 0) -> KVCache:
        """A new cache with the given batch rows, continuing at position `length`.

        The rows' first `length` positions are gathered straight into buffers of
        `capacity` positions (at least `length`), so decoding from the selection writes in
        place: one copy, not a gather and then a grow on the next update (copying whole
        buffers here once took a sizeable share of an evaluation; measured: docs/LOG.md)."""
        capacity = max(capacity, length)
        out = KVCache(len(self.layers), capacity)
        for i, kv in enumerate(self.layers):
            if kv is None:
                continue
            bufs = []
            for t in kv:
                buf = t.new_empty((len(rows), t.size(1), capacity, t.size(3)))
                torch.index_select(t[:, :, :length], 0, rows, out=buf[:, :, :length])
                bufs.append(buf)
            out.layers[i] = tuple(bufs)
        out.pos = length
        return out

    def expand(self, batch: int, capacity: int) -> KVCache:
        """A cache of `batch` rows that all hold this cache's first row, continuing at `pos`.

        A prompt prefix that every row of a batch shares is run once, for one row, and
        expanded: the rows' own tokens then continue from it. No copy here; the next update
        copies the prefix into buffers of `capacity` positions."""
        out = KVCache(len(self.layers), capacity)
        out.layers = [None if kv is None else
                      tuple(t[:1, :, :self.pos].expand(batch, -1, -1, -1) for t in kv)
                      for kv in self.layers]
        out.pos = self.pos
        return out


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused qkv projection (bidirectional in an
    encoder: `GPTConfig.causal=False`)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout
        self.causal = cfg.causal

    def forward(self, x, rotary=None, cache: KVCache | None = None, layer: int = 0,
                keep: int = 0):
        """Attention outputs (B, T, C) for x (B, T, C); with `keep` > 0 only the last `keep`
        positions' outputs (B, keep, C), while keys and values still cover (and are cached
        for) every position."""
        if keep:
            return self._forward_tail(x, rotary, cache, layer, keep)
        B, T, C = x.shape
        hs = C // self.n_head
        qkv = self.qkv(x)
        # Training on CPU: one compiled kernel from the projection to the heads' outputs,
        # rotary included, faster than torch's path at these head sizes
        # (scaling/cpu_attention.py; measured: docs/LOG.md); evaluation keeps torch's kernels.
        # The kernel is causal only: an encoder trains through torch's attention.
        if (self.causal and cache is None and qkv.requires_grad
                and (self.dropout == 0 or not self.training)
                and cpu_attention.usable(qkv, self.n_head)):
            y = cpu_attention.attend(qkv, self.n_head, rotary)
            return F.dropout(self.proj(y), self.dropout, self.training)
        if rotary is not None:  # rotate q and k together: one set of kernels, not two
            qk = _apply_rotary(qkv[..., :2 * C].view(B, T, 2 * self.n_head, hs), *rotary)
            q, k = qk.view(B, T, 2 * C).split(C, dim=2)
            v = qkv[..., 2 * C:]
        else:
            q, k, v = qkv.split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v))
        y = self._attend(q, k, v, cache, layer).transpose(1, 2).contiguous().view(B, T, C)
        return F.dropout(self.proj(y), self.dropout, self.training)

    def _forward_tail(self, x, rotary, cache: KVCache | None, layer: int, keep: int):
        """`forward` for the last `keep` queries: keys and values from every position, the
        query projection, attention and output projection for the kept ones only."""
        B, T, C = x.shape
        hs = C // self.n_head
        w = self.qkv.weight  # rows: q, k, v
        q = F.linear(x[:, -keep:], w[:C]).view(B, keep, self.n_head, hs)
        k, v = F.linear(x, w[C:]).view(B, T, 2, self.n_head, hs).unbind(2)
        if rotary is not None:
            cos, sin = rotary
            q = _apply_rotary(q, cos[..., -keep:, :], sin[..., -keep:, :])
            k = _apply_rotary(k, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        y = self._attend(q, k, v, cache, layer).transpose(1, 2).contiguous().view(B, keep, C)
        return F.dropout(self.proj(y), self.dropout, self.training)

    def _attend(self, q, k, v, cache: KVCache | None, layer: int):
        """Causal attention of queries q (B, nh, Tq, hs) that sit at the end of keys k and
        values v (B, nh, Tk, hs), Tk >= Tq. With a cache, this call's k, v are stored and
        every cached one is attended to, except the slots `cache.visible` hides. An encoder's
        queries attend to every key, before and after them (no cache: a later token changes
        the earlier positions' keys and values)."""
        if not self.causal:
            if cache is not None:
                raise ValueError("an encoder (causal=False) has no KV cache: run whole sequences")
            return F.scaled_dot_product_attention(
                q, k, v, is_causal=False, dropout_p=self.dropout if self.training else 0.0)
        visible = None
        if cache is not None:
            k, v = cache.update(layer, k, v)
            visible = cache.visible
        T, Tk = q.size(2), k.size(2)
        if T == 1 and q.device.type == "cpu" and not self.training:
            return _attend_one_query(q, k, v, None if visible is None else visible[:, :Tk])
        # Queries at the end of a longer key sequence (a cache, or kept positions) need the
        # causal mask offset, so build it explicitly unless this is a plain square call.
        if Tk == T and visible is None:
            return F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        mask = torch.ones(T, Tk, dtype=torch.bool, device=q.device).tril(Tk - T)
        if visible is not None:
            mask = mask & visible[:, None, None, :Tk]  # (B, 1, T, Tk)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _attend_one_query(q, k, v, visible: torch.Tensor | None):
    """Attention of one query per row (a decoding step) over every key, except the slots
    `visible` (B, Tk) hides: scores, softmax and weighted values as batched matmuls.

    With a single query there is nothing causal to mask, and on CPU this is faster than the
    flash kernel (with or without a mask) at the few dozen cached slots evaluation decodes
    from, and as fast on longer caches, where reading the cache bounds both (measured at s3
    shapes: docs/LOG.md); the outputs agree within 1e-6.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.size(-1) ** -0.5)  # (B, nh, 1, Tk)
    if visible is not None:
        scores.masked_fill_(~visible[:, None, None, :], float("-inf"))
    return torch.matmul(scores.softmax(-1), v)


class MLP(nn.Module):
    """Position-wise feed-forward network with GELU."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x):
        return F.dropout(self.proj(F.gelu(self.fc(x))), self.dropout, self.training)


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x, rotary=None, cache=None, layer=0, keep=0):
        """x (B, T, C) -> (B, T, C); with `keep` > 0, the last `keep` positions only (the
        rest still give keys and values to attend to)."""
        if keep:
            x = x[:, -keep:] + self.attn(self.ln1(x), rotary, cache, layer, keep)
        else:
            x = x + self.attn(self.ln1(x), rotary, cache, layer)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only Transformer language model with tied embeddings."""

    def __init__(self, cfg: GPTConfig, seed: int = 0):
        super().__init__()
        if cfg.d_model % cfg.n_head:
            raise ValueError(f"d_model={cfg.d_model} is not divisible by n_head={cfg.n_head}")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model) if cfg.pos == "learned" else None
        if cfg.pos == "sinusoidal":
            self.register_buffer("pos_table", _sinusoidal_table(cfg.block_size, cfg.d_model),
                                 persistent=False)
        if cfg.pos == "rotary":
            cos, sin = _rotary_tables(cfg.d_model // cfg.n_head, cfg.block_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        # Prompt tuning (Lester et al. 2021; scaling/finetune.py): P learned input vectors
        # (P, d_model) that every sequence starts with, ahead of its tokens. None without one:
        # the ladder's models and state dicts are what they were before soft prompts existed.
        self.soft_prompt = None
        if cfg.prompt_len:
            if not 0 < cfg.prompt_len < cfg.block_size:
                raise ValueError(f"prompt_len={cfg.prompt_len} must be in 1..block_size - 1 "
                                 f"({cfg.block_size - 1})")
            self.soft_prompt = nn.Parameter(torch.zeros(cfg.prompt_len, cfg.d_model))
        self.reset_parameters(seed)

    @property
    def prompt_len(self) -> int:
        """Soft-prompt vectors ahead of every sequence (0 without a soft prompt)."""
        return self.cfg.prompt_len

    @property
    def window(self) -> int:
        """Tokens a sequence may hold: the block less the soft prompt's positions."""
        return self.cfg.block_size - self.cfg.prompt_len

    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """Deterministic GPT-2 initialisation from `seed` (independent of global RNG state).

        Linear and embedding weights ~ N(0, 0.02); residual output projections scaled by
        1/sqrt(2 * n_layer) (GPT-2 paper, section 2.3) so the residual stream's variance does
        not grow with depth.
        """
        gen = torch.Generator().manual_seed(seed)
        std_out = 0.02 / math.sqrt(2 * self.cfg.n_layer)
        for name, p in self.named_parameters():
            if p is self.soft_prompt:  # drawn last: the network's draws stay as without one
                continue
            if p.dim() == 1:  # LayerNorm: weight 1, bias 0
                p.fill_(1.0 if name.endswith("weight") else 0.0)
                continue
            std = std_out if name.endswith("proj.weight") else 0.02
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        if self.soft_prompt is not None:  # prompt tuning sets its own (scaling/finetune.py)
            self.soft_prompt.copy_(torch.randn(self.soft_prompt.shape, generator=gen) * 0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None, last: int = 0,
                positions: torch.Tensor | None = None):
        """Logits (B, T, vocab) for tokens idx (B, T), and the mean loss if targets given.

        With a `cache`, idx holds only the new tokens; positions continue from `cache.pos`.
        `last` > 0 returns logits for the last `last` positions only (B, last, vocab), which
        is all that scoring needs after a prompt: the last block's queries, attention, MLP
        and the output layer then skip the other positions (their keys and values are still
        computed and cached). `positions` (B, T) gives each row's token positions when they
        differ between rows (decoding with `KVCache.visible`); by default they follow on
        from `cache.pos`.

        With a soft prompt (`cfg.prompt_len` = P > 0), a forward that starts a sequence (no
        cache, or an empty one) runs the P prompt vectors first, at positions 0..P-1, and
        the tokens after them; the outputs are the tokens' only. Positions and cache slots
        count the prompt's, so a cache's `pos` and `positions` are P ahead of the token
        count, and a sequence holds at most `window` = block_size - P tokens.
        """
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        x = self.wte(idx)  # (B, T, C)
        lead = self.cfg.prompt_len if start == 0 else 0  # soft-prompt positions run now
        if lead:
            if positions is not None:
                raise ValueError("positions= continues a cache that holds the soft prompt; "
                                 "start the sequence without it")
            x = torch.cat((self.soft_prompt.to(x.dtype).expand(B, -1, -1), x), dim=1)
        end = start + lead + T if positions is None else int(positions.max()) + 1
        if end > self.cfg.block_size:
            with_prompt = f" (a soft prompt of {lead} included)" if lead else ""
            raise ValueError(f"sequence of {end} tokens{with_prompt} exceeds block_size "
                             f"{self.cfg.block_size}")
        where = slice(start, end) if positions is None else positions
        rotary = None
        if self.wpe is not None:
            x = x + self.wpe.weight[where]
        elif self.cfg.pos == "sinusoidal":
            x = x + self.pos_table[where]
        else:
            rotary = (self.rope_cos[where], self.rope_sin[where])
        if last and targets is not None:
            raise ValueError("last= and targets= cannot be combined (the loss needs every "
                             "position)")
        # With `last`, the final block computes its queries, MLP and output for the last
        # positions only (earlier blocks must run on every position: later keys read them).
        keep = min(last, T) if last else 0
        for i, block in enumerate(self.blocks):
            x = block(x, rotary, cache, i, keep if i == len(self.blocks) - 1 else 0)
        if cache is not None:
            cache.pos += lead + T
        if lead and not keep:
            x = x[:, lead:]  # the soft prompt's own outputs predict nothing
        x = self.ln_f(x)
        logits = F.linear(x, self.wte.weight)  # tied output embedding, (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_scaling_params(self) -> dict[str, int]:
        """Parameter counts by group; their sum is asserted equal to sum(p.numel()).

        `embedding` holds the token table (tied with the output layer, counted once) and
        learned positions; `nonembed` is everything else, Kaplan et al. 2020's N. A soft
        prompt is a group of its own, `prompt` (present only with one), so that N stays the
        network's.
        """
        embedding = self.wte.weight.numel() + (self.wpe.weight.numel() if self.wpe else 0)
        prompt = self.soft_prompt.numel() if self.soft_prompt is not None else 0
        nonembed = sum(p.numel() for n, p in self.named_parameters()
                       if not n.startswith(("wte.", "wpe.", "soft_prompt")))
        total = sum(p.numel() for p in self.parameters())
        assert embedding + nonembed + prompt == total, "parameter groups do not cover the model"
        counts = {"embedding": embedding, "nonembed": nonembed, "total": total}
        if prompt:
            counts["prompt"] = prompt
        return counts

    def estimate_flops(self) -> float:
        """Training FLOPs per token (forward + backward) at full context.

        6 * (N + d * V) + 12 * L * d * T, where N = non-embedding parameters (Kaplan et al.
        2020, C = 6N per token), d * V is the tied output projection, which costs matmul
        FLOPs although its weights are counted as embedding, and 12 * L * d * T is the
        attention-score and value matmuls (QK^T and AV: 2 * 2 * T * d forward per layer,
        times 3 for backward; PaLM appendix B, nanoGPT's estimate_mfu). The embedding
        lookup and element-wise ops are not counted.
        """
        c = self.cfg
        n = self.num_scaling_params()["nonembed"]
        return 6.0 * (n + c.d_model * c.vocab_size) + 12.0 * c.n_layer * c.d_model * c.block_size
