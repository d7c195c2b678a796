"""The model counts itself: parameter groups, FLOPs, deterministic init, KV-cache decoding."""

import pytest
import torch

from scaling import ladder
from scaling.model import GPT, GPTConfig, KVCache


@pytest.mark.parametrize("name", sorted({r for rs in ladder.LADDERS.values() for r in rs}
                                        - {"s16", "s20"}))
def test_param_groups_sum_to_numel_for_every_rung(name):
    model = GPT(ladder.gpt_config(name, vocab_size=128, block_size=128))
    counts = model.num_scaling_params()
    assert counts["embedding"] + counts["nonembed"] == counts["total"]
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    c = model.cfg
    # 12 d^2 per block (qkv 3d^2, proj d^2, MLP 8d^2) plus 2 LayerNorms (4d) and the final one
    assert counts["nonembed"] == c.n_layer * (12 * c.d_model**2 + 4 * c.d_model) + 2 * c.d_model


def test_default_ladder_spans_two_decades():
    rows = ladder.describe(ladder.LADDERS["cpu"])
    n = [r["nonembed_params"] for r in rows]
    assert len(rows) >= 6 and n == sorted(n)
    assert n[0] <= 2e4 and n[-1] >= 1e6 and n[-1] / n[0] >= 100


def test_flops_formula():
    model = GPT(GPTConfig(vocab_size=64, n_layer=2, d_model=32, n_head=2, block_size=16))
    n = model.num_scaling_params()["nonembed"]
    assert model.estimate_flops() == 6 * (n + 32 * 64) + 12 * 2 * 32 * 16


@pytest.mark.parametrize("pos", ["learned", "rotary", "sinusoidal"])
def test_init_is_deterministic_and_cache_matches_full_forward(pos):
    cfg = GPTConfig(vocab_size=32, n_layer=2, d_model=32, n_head=4, block_size=24, pos=pos)
    a, b, c = GPT(cfg, seed=1), GPT(cfg, seed=1), GPT(cfg, seed=2)
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.blocks[0].attn.qkv.weight, c.blocks[0].attn.qkv.weight)
    a.eval()
    idx = torch.randint(0, 32, (3, 20))
    full, _ = a(idx)
    for capacity in (0, cfg.block_size):  # grown as needed, or allocated once
        cache = KVCache(cfg.n_layer, capacity)
        first, _ = a(idx[:, :12], cache=cache)  # prefill, then one token at a time
        steps = [first] + [a(idx[:, t:t + 1], cache=cache)[0] for t in range(12, 20)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    # a cache cut to some rows and an earlier position continues those rows exactly
    cache = KVCache(cfg.n_layer, cfg.block_size)
    a(idx[:, :16], cache=cache)
    for capacity in (0, 20):  # grown on the next update, or gathered into full buffers
        sub = cache.select(torch.tensor([2, 0]), 10, capacity=capacity)
        buffer = sub.layers[0][0].data_ptr()
        rest = torch.cat([a(idx[[2, 0], t:t + 1], cache=sub)[0] for t in range(10, 20)], dim=1)
        torch.testing.assert_close(rest, full[[2, 0], 10:], atol=1e-5, rtol=1e-5)
        assert (sub.layers[0][0].data_ptr() == buffer) == (capacity == 20)
    # last=k returns exactly the last k positions' logits
    torch.testing.assert_close(a(idx, last=3)[0], full[:, -3:], atol=1e-6, rtol=1e-6)
    # ... and, with a cache, still caches every position's keys and values
    cache = KVCache(cfg.n_layer, cfg.block_size)
    torch.testing.assert_close(a(idx[:, :12], cache=cache, last=2)[0], full[:, 10:12],
                               atol=1e-5, rtol=1e-5)
    rest = torch.cat([a(idx[:, t:t + 1], cache=cache)[0] for t in range(12, 20)], dim=1)
    torch.testing.assert_close(rest, full[:, 12:], atol=1e-5, rtol=1e-5)
    assert a(idx, last=50)[0].shape == full.shape  # more than T: every position


@pytest.mark.parametrize("pos", ["learned", "rotary", "sinusoidal"])
def test_rows_go_on_from_different_points_of_a_cached_prefix(pos):
    # Each row hides the cached slots past its own point and decodes at its own positions
    # (how the evaluator resumes greedy decoding after teacher forcing, in one batch).
    cfg = GPTConfig(vocab_size=32, n_layer=2, d_model=32, n_head=4, block_size=24, pos=pos)
    model = GPT(cfg, seed=3).eval()
    idx = torch.randint(0, 32, (3, 20))
    full, _ = model(idx)
    cache = KVCache(cfg.n_layer, cfg.block_size)
    model(idx[:, :16], cache=cache)
    start, steps, rows = torch.tensor([10, 13, 16]), 4, torch.arange(3)
    slots = torch.arange(16 + steps)
    cache.visible = (slots < start[:, None]) | (slots >= 16)
    for t in range(steps):
        p = start + t
        logits = model(idx[rows, p][:, None], cache=cache, positions=p[:, None])[0][:, -1]
        torch.testing.assert_close(logits, full[rows, p], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="block_size"):
        model(idx[:, :1], positions=torch.full((3, 1), 24))


def test_loss_is_log_vocab_at_init_and_context_limit():
    model = GPT(GPTConfig(vocab_size=64, n_layer=1, d_model=16, n_head=1, block_size=8))
    x = torch.randint(0, 64, (4, 8))
    _, loss = model(x, torch.randint(0, 64, (4, 8)))
    assert abs(loss.item() - torch.log(torch.tensor(64.0)).item()) < 0.1
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_rotary_is_exactly_the_half_split_rotation():
    # The fast form (x * cos + swapped halves * signed sin) must be the same arithmetic as
    # GPT-NeoX's (x1 cos - x2 sin, x2 cos + x1 sin), bit for bit, so trained ladders stay
    # reproducible across the rewrite.
    from scaling.model import _apply_rotary, _rotary_tables

    T, heads, hs = 16, 3, 8
    x = torch.randn(2, T, heads, hs)
    cos, sin = _rotary_tables(hs, T)
    half = hs // 2
    c, s = cos[:, None, :half], -sin[:, None, :half]  # the plain tables, per head
    x1, x2 = x[..., :half], x[..., half:]
    expected = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)
    assert torch.equal(_apply_rotary(x, cos, sin), expected)
    # position 0 is the identity rotation; the rotation preserves each pair's norm
    assert torch.equal(_apply_rotary(x, cos, sin)[:, 0], x[:, 0])
    torch.testing.assert_close(_apply_rotary(x, cos, sin).norm(dim=-1), x.norm(dim=-1))
    # without gradients (evaluation) the in-place form: the same rotation within rounding
    with torch.inference_mode():
        fast = _apply_rotary(x, cos, sin)
    torch.testing.assert_close(fast, expected, atol=1e-6, rtol=1e-6)
    assert not torch.equal(fast, x)
