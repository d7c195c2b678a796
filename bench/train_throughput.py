"""Training throughput of every rung, as a fraction of this machine's measured matmul peak.

    python bench/train_throughput.py [--ladder cpu] [--steps 50] [--device cpu|cuda]
        [--dtype fp32|bf16] [--compile] [--block-size 128] [--batch 16] [--threads 1]

`--batch 16` is the batch the CPU sweeps train at, and `--threads 1` the thread count they
pin for each run (`run.threads: 1`); without them: the OLMo-rule batch, all threads.

For each rung: tokens/s of a full training step (forward, backward, clip, AdamW; the
median step of `--steps`) at the rung's batch size, the model FLOPs per token from
`GPT.estimate_flops()` (6N + 6dV + 12LdT), and MFU = achieved FLOP/s / peak, where the peak
is a large fp32 (or bf16) matmul measured in the same run on the same threads, before and
after the rungs (the higher is used). Prints a table; numbers, not pass/fail. As in
training: attention on CPU goes through scaling/cpu_attention.py's kernel where it applies,
and glibc keeps freed memory (scaling/allocator.py).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from scaling import cpu_attention, ladder
from scaling.allocator import keep_freed_memory
from scaling.model import GPT
from scaling.train import Plan, compile_for_training, make_optimizer
from scaling.config import Config


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 0, seconds: float = 3.0):
    """Sustained FLOP/s of an n x n matmul, the roofline the rungs are measured against.

    n defaults to 2048 on CPU (larger is no faster on 2 cores) and 8192 on a GPU, where a
    smaller product cannot fill the tensor cores.
    """
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
        _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_rung(name: str, device, dtype: str, steps: int, compile_: bool, block_size: int = 128,
               vocab_size: int = 128, batch: int = 0) -> dict:
    """Time `steps` training steps of rung `name` after a warm-up; return the figures.

    batch = 0 takes the rung's batch from the OLMo rule (ladder.batch_size).
    """
    gcfg = ladder.gpt_config(name, vocab_size=vocab_size, block_size=block_size)
    model = GPT(gcfg).to(device)
    counts = model.num_scaling_params()
    batch = batch or ladder.batch_size(counts["nonembed"], block_size)
    plan = Plan(gcfg, ladder.learning_rate(counts["nonembed"]), batch, steps, [],
                counts["total"], counts["nonembed"], model.estimate_flops())
    opt = make_optimizer(model, plan, Config())
    step_model = compile_for_training(model, device) if compile_ else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    x = torch.randint(0, vocab_size, (batch, block_size), device=device)
    y = torch.randint(0, vocab_size, (batch, block_size), device=device)

    def step():
        with autocast:
            _, loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5 if not compile_ else 10):
        step()
    _sync(device)
    # The median step, not the mean: on a shared 2-core VM one descheduled step can cost
    # several; the median is what the machine sustains when it is ours.
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    tps = batch * block_size / statistics.median(times)
    return {"rung": name, "params": counts["total"], "nonembed": counts["nonembed"],
            "batch": batch, "tokens_per_s": tps, "flops_per_s": tps * model.estimate_flops()}


def main(argv=None) -> None:
    """Print tokens/s and MFU for each rung of a ladder."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ladder", default="cpu", choices=sorted(ladder.LADDERS))
    p.add_argument("--rungs", default="", help="comma-separated rungs (default: the ladder's)")
    p.add_argument("--steps", type=int, default=50,
                   help="timed steps per rung (the median is reported: on a shared VM a "
                        "short run can fall in a slow phase)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each model as training does (C++ wrapper on CPU)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--batch", type=int, default=0,
                   help="sequences per step (0 = the OLMo rule of ladder.py; the CPU sweeps "
                        "train at 16)")
    p.add_argument("--block-size", type=int, default=128,
                   help="sequence length (the CPU sweeps train at 128, the GPU sweep at 256)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as training does (scaling/allocator.py)
    device = torch.device(args.device)
    matmul_dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    peak = matmul_peak(device, matmul_dtype)
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}),"
          f" threads {torch.get_num_threads()}, dtype {args.dtype}, compile {args.compile},"
          f" block {args.block_size}, torch {torch.__version__}")
    print(f"measured matmul peak: {peak / 1e9:,.1f} GFLOP/s")
    if device.type == "cpu":
        lib = cpu_attention.load()
        print("CPU attention kernel (scaling/cpu_attention.py): "
              + ("in use" if lib else f"not in use ({cpu_attention.reason()})"))
    names = args.rungs.split(",") if args.rungs else ladder.LADDERS[args.ladder]
    rows = [bench_rung(name, device, args.dtype, args.steps, args.compile, args.block_size,
                       batch=args.batch) for name in names]
    # The peak is measured again after the rungs and the higher of the two is used, so a
    # slow moment during the first measurement cannot inflate MFU.
    peak_after = matmul_peak(device, matmul_dtype)
    print(f"measured matmul peak again: {peak_after / 1e9:,.1f} GFLOP/s; MFU uses the higher")
    peak = max(peak, peak_after)
    print(f"{'rung':<5} {'params':>10} {'nonembed':>10} {'batch':>5} {'tokens/s':>11} "
          f"{'GFLOP/s':>9} {'MFU':>6}")
    for r in rows:
        print(f"{r['rung']:<5} {r['params']:>10,} {r['nonembed']:>10,} {r['batch']:>5} "
              f"{r['tokens_per_s']:>11,.0f} {r['flops_per_s'] / 1e9:>9.1f} "
              f"{r['flops_per_s'] / peak:>6.1%}", flush=True)
    for line in target_lines(rows, peak):
        print(line)


def mfu_at(rows: list[dict], peak: float, nonembed: float) -> float | None:
    """MFU at `nonembed` parameters, linear in log(params) between the rungs around it;
    None outside the rungs measured."""
    points = sorted((math.log(r["nonembed"]), r["flops_per_s"] / peak) for r in rows)
    x = math.log(nonembed)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def target_lines(rows: list[dict], peak: float) -> list[str]:
    """The core issue's targets read off the table: MFU >= 60% at 0.1M and >= 70% from 1M
    non-embedding parameters up. No rung sits at exactly 0.1M or 1M, so MFU there is
    interpolated between the rungs around it."""
    lines = []
    for n, target in ((1e5, 0.60), (1e6, 0.70)):
        at = mfu_at(rows, peak, n)
        if at is None:
            continue
        above = [r["flops_per_s"] / peak for r in rows if r["nonembed"] >= n]
        tail = f", lowest rung above: {min(above):.1%}" if above else ""
        verdict = "met" if at >= target and all(a >= target for a in above) else "not met"
        lines.append(f"target >= {target:.0%} from {n / 1e6:g}M non-embedding params: "
                     f"{at:.1%} at {n / 1e6:g}M (interpolated){tail}: {verdict}")
    return lines


if __name__ == "__main__":
    main()
