"""Causal self-attention for training on CPU with small heads: a compiled kernel.

Why: at the CPU ladder's heads of 24 channels and T = 128, torch's CPU flash-attention
kernel runs its forward and backward far below the machine's matmul peak (measured:
docs/LOG.md), and attention is a third of a small rung's training FLOPs (FlexAttention has
no CPU backward in torch 2.13; composing matmul and softmax ops is slower still). The kernel
in `kernels/causal_attention.cpp` keeps each head's T x T probabilities in cache and
computes every product over the causal triangle with register-blocked vector code, applying
rotary embeddings as it reads q and k. `attend` takes the fused qkv projection and returns
the merged heads, so the split, rotary and transposes around torch's attention (and their
backward) disappear too: that whole path is faster than torch's, and so is a compiled
training step (`bench/attention_kernel.py`; measured: docs/LOG.md), with the same results
within float rounding (~1e-6).

How: the C++ file is compiled once per machine with the system's C++ compiler
(`$CXX`, else `c++`; `-O3 -march=native`) into ~/.cache/scaling/kernels (or
$SCALING_KERNEL_CACHE) and called through ctypes, which releases the GIL, so heads are spread
over torch's thread count. It is registered as the custom op `scaling::causal_attention`
with a fake implementation and an autograd formula, so `torch.compile` keeps it as one
opaque call in one graph. It serves fp32 CPU tensors that need gradients, heads of 8-32
channels, sequences a multiple of 8, on x86-64 CPUs with AVX2 and FMA. Anything else, a
machine where the build fails (one warning), or SCALING_CPU_ATTENTION=0 uses torch's
attention as before. Results are deterministic: each head is computed by one thread in a
fixed order, whatever the thread count.
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
    pool_size = 0


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
    ptr, tensor = ctypes.c_void_p, [ctypes.c_void_p, i64p]
    lib.causal_attention_forward.argtypes = ints + tensor * 3 + [ptr, ptr] + tensor + [ptr]
    lib.causal_attention_backward.argtypes = (ints + tensor * 3 + [ptr, ptr] + tensor * 2
                                              + [ptr] + tensor * 3)
    _state.lib = lib
    return lib


def reason() -> str:
    """Why the kernel is not in use ('' when it is, or has not been tried yet)."""
    return _state.reason


def usable(qkv: torch.Tensor, n_head: int) -> bool:
    """Whether `attend` serves this (B, T, 3C) projection split into n_head heads.

    Under torch.compile the library is not built here (only looked up): training loads it
    before compiling (`load()`)."""
    lib = _state.lib if torch.compiler.is_compiling() else load()
    # Plain Python only: a ctypes call here would break torch.compile's graph at every layer.
    return (lib is not None and qkv.device.type == "cpu" and qkv.dim() == 3
            and qkv.dtype == torch.float32 and qkv.size(2) % (3 * n_head) == 0
            and qkv.size(1) % 8 == 0 and qkv.size(2) // (3 * n_head) in HEAD_SIZES)


def attend(qkv: torch.Tensor, n_head: int,
           rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Causal self-attention of a fused projection qkv (B, T, 3C) -> (B, T, C) (check `usable`).

    q, k and v are the thirds of the last dimension, each n_head heads of C / n_head
    channels (the model's layout); `rotary` = (cos, signed sin) tables (T, head size), as
    scaling/model.py makes them, rotates q and k inside the kernel. The gradient comes back
    as one (B, T, 3C) tensor: no split, transposes or rotary kernels around the call."""
    cos, sin = rotary if rotary is not None else (None, None)
    return torch.ops.scaling.causal_attention(qkv, cos, sin, n_head)[0]


def _strides(*strides: int):
    return (ctypes.c_int64 * 3)(*strides)


def _heads(t: torch.Tensor, n_head: int, parts: int):
    """Pointers and (b, h, t) strides of each of the `parts` thirds (or the whole) of the
    last dimension of a contiguous (B, T, parts * C) tensor, seen as (B, H, T, D) heads."""
    B, T, width = t.shape
    C = width // parts
    strides = _strides(T * width, C // n_head, width)
    return [(t.data_ptr() + i * C * t.element_size(), strides) for i in range(parts)]


def _empty_outputs(qkv: torch.Tensor, n_head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The merged heads (B, T, C) and the probabilities kept for the backward pass
    (B * n_head, T, T rounded up to 8), for the op and its fake alike."""
    B, T, width = qkv.shape
    return qkv.new_empty(B, T, width // 3), qkv.new_empty(B * n_head, T, (T + 7) // 8 * 8)


def _tables(cos, sin):
    if cos is None:
        return None, None, ()
    cos, sin = cos.contiguous(), sin.contiguous()
    return cos.data_ptr(), sin.data_ptr(), (cos, sin)


def _parallel(fn, n_heads: int) -> None:
    """Run fn(first_head, end_head) over all heads, split across torch's thread count."""
    threads = min(torch.get_num_threads(), n_heads)
    if threads <= 1:
        codes = [fn(0, n_heads)]
    else:
        if _state.pool_size < threads:
            _state.pool, _state.pool_size = ThreadPoolExecutor(max_workers=threads), threads
        cuts = [n_heads * i // threads for i in range(threads + 1)]
        codes = list(_state.pool.map(fn, cuts[:-1], cuts[1:]))
    if any(codes):
        raise RuntimeError(f"causal_attention kernel refused its input (code {max(codes)})")


@torch.library.custom_op("scaling::causal_attention", mutates_args=())
def _forward(qkv: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
             n_head: int) -> tuple[torch.Tensor, torch.Tensor]:
    lib = load()
    qkv = qkv.contiguous()
    B, T, width = qkv.shape
    C = width // 3
    y, probs = _empty_outputs(qkv, n_head)
    (q, qs), (k, ks), (v, vs) = _heads(qkv, n_head, 3)
    ((o, os_),) = _heads(y, n_head, 1)
    cos_p, sin_p, _keep = _tables(cos, sin)
    args = (n_head, T, C // n_head, q, qs, k, ks, v, vs, cos_p, sin_p, o, os_,
            probs.data_ptr())
    _parallel(lambda a, b: lib.causal_attention_forward(a, b, *args), B * n_head)
    return y, probs


@_forward.register_fake
def _(qkv, cos, sin, n_head):
    return _empty_outputs(qkv, n_head)


@torch.library.custom_op("scaling::causal_attention_backward", mutates_args=())
def _backward_op(grad_y: torch.Tensor, qkv: torch.Tensor, cos: torch.Tensor | None,
                 sin: torch.Tensor | None, n_head: int, y: torch.Tensor, probs: torch.Tensor
                 ) -> torch.Tensor:
    lib = load()
    grad_y, qkv, y, probs = (t.contiguous() for t in (grad_y, qkv, y, probs))
    B, T, width = qkv.shape
    C = width // 3
    dqkv = torch.empty_like(qkv)
    (q, qs), (k, ks), (v, vs) = _heads(qkv, n_head, 3)
    (dq, dqs), (dk, dks), (dv, dvs) = _heads(dqkv, n_head, 3)
    ((o, os_),) = _heads(y, n_head, 1)
    ((g, gs),) = _heads(grad_y, n_head, 1)
    cos_p, sin_p, _keep = _tables(cos, sin)
    args = (n_head, T, C // n_head, q, qs, k, ks, v, vs, cos_p, sin_p, o, os_, g, gs,
            probs.data_ptr(), dq, dqs, dk, dks, dv, dvs)
    _parallel(lambda a, b: lib.causal_attention_backward(a, b, *args), B * n_head)
    return dqkv


@_backward_op.register_fake
def _(grad_y, qkv, cos, sin, n_head, y, probs):
    return torch.empty_like(qkv)


def _setup_context(ctx, inputs, output):
    qkv, cos, sin, n_head = inputs
    y, probs = output
    ctx.mark_non_differentiable(probs)
    ctx.n_head = n_head
    ctx.save_for_backward(qkv, cos, sin, y, probs)


def _backward(ctx, grad_y, _grad_probs):
    qkv, cos, sin, y, probs = ctx.saved_tensors
    dqkv = torch.ops.scaling.causal_attention_backward(grad_y, qkv, cos, sin, ctx.n_head, y,
                                                       probs)
    return dqkv, None, None, None


_forward.register_autograd(_backward, setup_context=_setup_context)
