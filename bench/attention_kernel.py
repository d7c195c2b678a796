"""Attention of a training step: torch's CPU path vs ours (scaling/cpu_attention.py).

    python bench/attention_kernel.py [--batch 16] [--threads 1] [--reps 30]

For each rung of the CPU ladder, at its training shape (batch x 128 positions x the fused
qkv projection): the median time of a forward and of a backward pass from the projection
to the heads' merged outputs, the part of a step the kernel replaces: the model's own path
(split into heads, rotary on q and k, `F.scaled_dot_product_attention(is_causal=True)`,
which is torch's flash kernel on CPU, merge) and `cpu_attention.attend`, alternating the
two so both see the same machine; and the largest differences between their outputs and
gradients. glibc keeps freed memory, as in training. Numbers, not pass/fail.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from scaling import cpu_attention, ladder
from scaling.allocator import keep_freed_memory
from scaling.model import _apply_rotary, _rotary_tables


def torch_path(qkv: torch.Tensor, n_head: int, rotary) -> torch.Tensor:
    """What scaling/model.py does without the kernel: heads, rotary, flash attention."""
    B, T, width = qkv.shape
    C = width // 3
    qk = _apply_rotary(qkv[..., :2 * C].view(B, T, 2 * n_head, C // n_head), *rotary)
    q, k = qk.view(B, T, 2 * C).split(C, dim=2)
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2)
               for t in (q, k, qkv[..., 2 * C:]))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return out.transpose(1, 2).contiguous().view(B, T, C)


def _time_pass(attend, qkv, n_head, rotary, grad):
    t0 = time.perf_counter()
    out = attend(qkv, n_head, rotary)
    t1 = time.perf_counter()
    out.backward(grad)
    return t1 - t0, time.perf_counter() - t1


def bench_shape(batch: int, n_head: int, T: int, D: int, reps: int) -> dict:
    """Median forward and backward seconds of both paths, and their largest differences."""
    qkv = torch.randn(batch, T, 3 * n_head * D, requires_grad=True)
    rotary = _rotary_tables(D, T)
    grad = torch.randn(batch, T, n_head * D)
    paths = {"torch": torch_path, "ours": cpu_attention.attend}
    results = {}
    for name, attend in paths.items():
        qkv.grad = None
        out = attend(qkv, n_head, rotary)
        out.backward(grad)
        results[name] = (out.detach(), qkv.grad.clone())
    times = {name: ([], []) for name in paths}
    for _ in range(reps):
        for name, attend in paths.items():
            qkv.grad = None
            fwd, bwd = _time_pass(attend, qkv, n_head, rotary, grad)
            times[name][0].append(fwd)
            times[name][1].append(bwd)
    row = {name: (statistics.median(f), statistics.median(b)) for name, (f, b) in times.items()}
    row["out_diff"] = (results["torch"][0] - results["ours"][0]).abs().max().item()
    row["grad_diff"] = (results["torch"][1] - results["ours"][1]).abs().max().item()
    return row


def main(argv=None) -> None:
    """Print both kernels' times at each rung's attention shape."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="sequences (the CPU sweeps train 16)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the sweeps pin 1)")
    p.add_argument("--reps", type=int, default=30, help="timed passes of each kernel")
    p.add_argument("--block-size", type=int, default=128)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as training does
    if cpu_attention.load() is None:
        raise SystemExit(f"error: the CPU attention kernel is unavailable here: "
                         f"{cpu_attention.reason()}")
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, T {args.block_size}, "
          f"torch {torch.__version__}; milliseconds, median of {args.reps}")
    print(f"{'rung':<5} {'heads x D':>9} {'torch fwd':>9} {'bwd':>7} {'ours fwd':>9} {'bwd':>7} "
          f"{'speed-up':>8} {'max |d out|':>11} {'max |d grad|':>12}")
    for name in ladder.LADDERS["cpu"]:
        cfg = ladder.gpt_config(name, vocab_size=128, block_size=args.block_size)
        D = cfg.d_model // cfg.n_head
        r = bench_shape(args.batch, cfg.n_head, args.block_size, D, args.reps)
        (tf, tb), (of, ob) = r["torch"], r["ours"]
        print(f"{name:<5} {f'{cfg.n_head} x {D}':>9} {tf * 1e3:9.2f} {tb * 1e3:7.2f} "
              f"{of * 1e3:9.2f} {ob * 1e3:7.2f} {(tf + tb) / (of + ob):7.1f}x "
              f"{r['out_diff']:11.1e} {r['grad_diff']:12.1e}", flush=True)


if __name__ == "__main__":
    main()
