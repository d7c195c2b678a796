"""Causal attention of a training step: torch's CPU kernel vs ours (scaling/cpu_attention.py).

    python bench/attention_kernel.py [--batch 16] [--threads 1] [--reps 30]

For each rung of the CPU ladder, at its training shape (batch x heads x 128 x head size,
q, k and v laid out as the model makes them: views of one qkv tensor): the median time of
a forward and of a backward pass through `F.scaled_dot_product_attention(is_causal=True)`
(torch's flash kernel on CPU) and through the compiled kernel, alternating the two so both
see the same machine; and the largest differences between their outputs and gradients.
Numbers, not pass/fail.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from scaling import cpu_attention, ladder


def _time_pass(attend, q, k, v, grad):
    t0 = time.perf_counter()
    out = attend(q, k, v)
    t1 = time.perf_counter()
    out.backward(grad)
    return t1 - t0, time.perf_counter() - t1


def bench_shape(batch: int, heads: int, T: int, D: int, reps: int) -> dict:
    """Median forward and backward seconds of both kernels, and their largest differences."""
    qkv = torch.randn(batch, T, 3, heads, D, requires_grad=True)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    grad = torch.randn(batch, heads, T, D)
    kernels = {"torch": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
               "ours": cpu_attention.causal_attention}
    results = {}
    for name, attend in kernels.items():
        qkv.grad = None
        out = attend(q, k, v)
        out.backward(grad)
        results[name] = (out.detach(), qkv.grad.clone())
    times = {name: ([], []) for name in kernels}
    for _ in range(reps):
        for name, attend in kernels.items():
            qkv.grad = None
            fwd, bwd = _time_pass(attend, q, k, v, grad)
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
