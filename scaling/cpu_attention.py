"""Causal self-attention for training on CPU with small heads: a compiled kernel.

Why: at the CPU ladder's heads of 24 channels and T = 128, torch's CPU flash-attention
kernel runs its forward and backward at about a quarter of the machine's matmul peak, and
attention is a third of a small rung's training FLOPs (FlexAttention has no CPU backward in
torch 2.13; composing matmul and softmax ops is slower still). The kernel in
`kernels/causal_attention.cpp` keeps each head's T x T probabilities in cache and computes
every product over the causal triangle with register-blocked vector code: forward and
backward together 2.5-3x faster than flash at the s2/s3 training shapes (measured with
`bench/attention_kernel.py`), the same results within float rounding (~1e-6).

How: the C++ file is compiled once per machine with the system's C++ compiler
(`$CXX`, else `c++`; `-O3 -march=native`) into ~/.cache/scaling/kernels (or
$SCALING_KERNEL_CACHE) and called through ctypes, which releases the GIL, so heads are spread
over torch's thread count. It is registered as the custom op `scaling::causal_attention`
with a fake implementation and an autograd formula, so `torch.compile` treats it as one
opaque call. It is used for fp32 CPU tensors that need gradients, heads of 8-32 channels,
sequences a multiple of 8, on x86-64 CPUs with AVX2 and FMA. Anything else, or a machine
where the build fails (one warning), or SCALING_CPU_ATTENTION=0, uses
`F.scaled_dot_product_attention` as before. Results are deterministic: each head is
computed by one thread in a fixed order, whatever the thread count.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / "kernels" / "causal_attention.cpp"
HEAD_SIZES = (8, 16, 24, 32)  # as causal_attention_supports() in the C++ file
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-std=c++17", "-shared", "-fPIC"]


class _State:
    lib: ctypes.CDLL | None = None
    tried = False
    reason = ""  # why the kernel is not in use, when it is not
    pool: ThreadPoolExecutor | None = None


_state = _State()


def cache_dir() -> Path:
    """Where built kernels live: $SCALING_KERNEL_CACHE, else ~/.cache/scaling/kernels."""
    env = os.environ.get("SCALING_KERNEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "scaling" / "kernels"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _build(compiler: str, cpu: str) -> Path:
    """Compile the kernel (once per source, compiler, flags and CPU) and return the library."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(FLAGS).encode(),
                                     cpu.encode()])).hexdigest()[:16]
    out = cache_dir() / f"causal_attention-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: concurrent runs (a sweep's first rungs) may
    # build at once, and none may load a half-written library.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp],
                              capture_output=True, text=True, timeout=300)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{compiler} failed: {last}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def load() -> ctypes.CDLL | None:
    """The compiled kernel library, building it on first use; None where it cannot be used
    (then `reason()` says why). A failed build warns once and is not retried this process."""
    if _state.tried:
        return _state.lib
    _state.tried = True
    if os.environ.get("SCALING_CPU_ATTENTION", "1").lower() in ("0", "off", "false", "no"):
        _state.reason = "SCALING_CPU_ATTENTION=0"
        return None
    flags = _cpu_flags()
    if platform.machine().lower() not in ("x86_64", "amd64") or not {"avx2", "fma"} <= flags:
        _state.reason = "needs an x86-64 CPU with AVX2 and FMA"
        return None
    if not hasattr(torch.library, "custom_op"):
        _state.reason = "needs torch >= 2.4 (torch.library.custom_op)"
        return None
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler:
        _state.reason = "no C++ compiler found (set CXX)"
        return None
    cpu = " ".join(sorted(flags))
    try:
        lib = ctypes.CDLL(str(_build(compiler, cpu)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        _state.reason = f"the kernel did not build: {e}"
        warnings.warn(f"CPU attention kernel unavailable, using torch's attention instead "
                      f"({_state.reason})", RuntimeWarning, stacklevel=2)
        return None
    i64p = ctypes.POINTER(ctypes.c_int64)
    ints = [ctypes.c_int] * 5
    lib.causal_attention_supports.argtypes = [ctypes.c_int, ctypes.c_int]
    if not all(lib.causal_attention_supports(8, d) for d in HEAD_SIZES):
        _state.reason = "the built kernel does not support HEAD_SIZES"
        return None
    lib.causal_attention_forward.argtypes = ints + [ctypes.c_void_p, i64p] * 4 + [ctypes.c_void_p]
    lib.causal_attention_backward.argtypes = ints + [ctypes.c_void_p, i64p] * 5 + [
        ctypes.c_void_p, ctypes.c_void_p, i64p, ctypes.c_void_p, i64p, ctypes.c_void_p, i64p]
    _state.lib = lib
    return lib


def reason() -> str:
    """Why the kernel is not in use ('' when it is, or has not been tried yet)."""
    return _state.reason


def usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether `causal_attention` serves these (B, H, T, D) queries, keys and values.

    Under torch.compile the library is not built here (only looked up): training loads it
    before compiling (`load()`)."""
    if torch.compiler.is_compiling():
        lib = _state.lib
    else:
        lib = load()
    # Plain Python only: a ctypes call here would break torch.compile's graph at every layer.
    return (lib is not None and q.device.type == "cpu" and q.dim() == 4
            and q.dtype == k.dtype == v.dtype == torch.float32
            and q.shape == k.shape == v.shape
            and q.size(2) % 8 == 0 and q.size(3) in HEAD_SIZES)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D), causal) v for (B, H, T, D) tensors (check `usable` first).

    The output is (B, H, T, D) laid out as (B, T, H, D) in memory, so the caller's
    `.transpose(1, 2).contiguous()` back to (B, T, C) costs nothing."""
    return torch.ops.scaling.causal_attention(q, k, v)[0]


def _strides(t: torch.Tensor):
    return (ctypes.c_int64 * 3)(t.stride(0), t.stride(1), t.stride(2))


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _heads_empty(like: torch.Tensor) -> torch.Tensor:
    B, H, T, D = like.shape
    return like.new_empty(B, T, H, D).transpose(1, 2)


def _parallel(fn, n_heads: int) -> None:
    """Run fn(first_head, end_head) over all heads, split across torch's thread count."""
    threads = min(torch.get_num_threads(), n_heads)
    if threads <= 1:
        codes = [fn(0, n_heads)]
    else:
        if _state.pool is None or _state.pool._max_workers < threads:
            _state.pool = ThreadPoolExecutor(max_workers=threads)
        cuts = [n_heads * i // threads for i in range(threads + 1)]
        codes = list(_state.pool.map(fn, cuts[:-1], cuts[1:]))
    if any(codes):
        raise RuntimeError(f"causal_attention kernel refused its input (code {max(codes)})")


@torch.library.custom_op("scaling::causal_attention", mutates_args=())
def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    lib = load()
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    B, H, T, D = q.shape
    o = _heads_empty(q)
    probs = q.new_empty(B * H, T, (T + 7) // 8 * 8)
    args = (H, T, D, q.data_ptr(), _strides(q), k.data_ptr(), _strides(k), v.data_ptr(),
            _strides(v), o.data_ptr(), _strides(o), probs.data_ptr())
    _parallel(lambda a, b: lib.causal_attention_forward(a, b, *args), B * H)
    return o, probs


@_forward.register_fake
def _(q, k, v):
    B, H, T, D = q.shape
    return _heads_empty(q), q.new_empty(B * H, T, (T + 7) // 8 * 8)


@torch.library.custom_op("scaling::causal_attention_backward", mutates_args=())
def _backward_op(g: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 o: torch.Tensor, probs: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lib = load()
    g, q, k, v, o = (_unit_last(t) for t in (g, q, k, v, o))
    probs = probs.contiguous()
    B, H, T, D = q.shape
    dq, dk, dv = _heads_empty(q), _heads_empty(q), _heads_empty(q)
    args = (H, T, D, q.data_ptr(), _strides(q), k.data_ptr(), _strides(k), v.data_ptr(),
            _strides(v), o.data_ptr(), _strides(o), g.data_ptr(), _strides(g),
            probs.data_ptr(), dq.data_ptr(), _strides(dq), dk.data_ptr(),
            _strides(dk), dv.data_ptr(), _strides(dv))
    _parallel(lambda a, b: lib.causal_attention_backward(a, b, *args), B * H)
    return dq, dk, dv


@_backward_op.register_fake
def _(g, q, k, v, o, probs):
    return _heads_empty(q), _heads_empty(q), _heads_empty(q)


def _setup_context(ctx, inputs, output):
    q, k, v = inputs
    o, probs = output
    ctx.mark_non_differentiable(probs)
    ctx.save_for_backward(q, k, v, o, probs)


def _backward(ctx, grad_o, _grad_probs):
    q, k, v, o, probs = ctx.saved_tensors
    return tuple(torch.ops.scaling.causal_attention_backward(grad_o, q, k, v, o, probs))


_forward.register_autograd(_backward, setup_context=_setup_context)
