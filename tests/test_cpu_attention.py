"""The compiled CPU attention kernel: same results as torch's, deterministic, and a clean
fallback where it cannot be built."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from scaling import cpu_attention
from scaling.model import GPT, GPTConfig

needs_kernel = pytest.mark.skipif(cpu_attention.load() is None,
                                  reason=f"kernel unavailable: {cpu_attention.reason()}")


def _model_layout(B, H, T, D, seed=0):
    """q, k, v as the model makes them: (B, H, T, D) views of one (B, T, 3, H, D) tensor."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, T, 3, H, D, generator=gen).requires_grad_()
    return qkv, [qkv[:, :, i].transpose(1, 2) for i in range(3)]


def _outputs_and_grads(attend, B, H, T, D):
    qkv, (q, k, v) = _model_layout(B, H, T, D)
    out = attend(q, k, v)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    return out.detach(), qkv.grad


@needs_kernel
@pytest.mark.parametrize("shape", [(2, 2, 128, 24), (3, 1, 16, 8), (2, 3, 64, 16),
                                   (1, 2, 40, 32), (2, 1, 8, 24)])
def test_matches_torch_attention(shape):
    ours = _outputs_and_grads(cpu_attention.causal_attention, *shape)
    ref = _outputs_and_grads(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), *shape)
    assert cpu_attention.usable(*_model_layout(*shape)[1])
    torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=1e-5)  # outputs
    torch.testing.assert_close(ours[1], ref[1], rtol=0, atol=2e-5)  # d(q, k, v)


@needs_kernel
def test_gradient_against_float64_reference():
    """Gradients of a float64 math-path reference, not only torch's own fp32 kernel."""
    B, H, T, D = 2, 2, 24, 8
    qkv, (q, k, v) = _model_layout(B, H, T, D)
    cpu_attention.causal_attention(q, k, v).square().sum().backward()
    qkv64 = qkv.detach().double().requires_grad_()
    q64, k64, v64 = (qkv64[:, :, i].transpose(1, 2) for i in range(3))
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    scores = (q64 @ k64.transpose(-1, -2) / D**0.5).masked_fill(~mask, float("-inf"))
    (scores.softmax(-1) @ v64).square().sum().backward()
    torch.testing.assert_close(qkv.grad.double(), qkv64.grad, rtol=1e-4, atol=1e-5)


@needs_kernel
def test_bit_identical_for_any_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _outputs_and_grads(cpu_attention.causal_attention, 4, 3, 64, 24)
        torch.set_num_threads(3)
        three = _outputs_and_grads(cpu_attention.causal_attention, 4, 3, 64, 24)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], three[0]) and torch.equal(one[1], three[1])


@needs_kernel
def test_shapes_and_dtypes_it_does_not_serve():
    q = torch.randn(1, 2, 16, 24)
    assert cpu_attention.usable(q, q, q)
    assert not cpu_attention.usable(q.double(), q.double(), q.double())
    assert not cpu_attention.usable(*[torch.randn(1, 2, 12, 24)] * 3)  # T not a multiple of 8
    assert not cpu_attention.usable(*[torch.randn(1, 2, 16, 40)] * 3)  # head of 40
    assert not cpu_attention.usable(q, q[:, :1], q[:, :1])


@needs_kernel
def test_training_model_uses_it_and_agrees_with_torch(monkeypatch):
    """A training step's loss and gradients with the kernel match torch's attention; the
    kernel is really called (and not in evaluation, which keeps torch's kernels)."""
    cfg = GPTConfig(vocab_size=32, n_layer=2, d_model=48, n_head=2, block_size=32,
                    pos="rotary")
    x = torch.randint(0, 32, (4, 32), generator=torch.Generator().manual_seed(0))
    calls = []
    real = cpu_attention.causal_attention
    monkeypatch.setattr(cpu_attention, "causal_attention",
                        lambda *a: calls.append(1) or real(*a))

    def loss_and_grads(use_kernel):
        monkeypatch.setattr(cpu_attention._state, "lib",
                            cpu_attention.load() if use_kernel else None)
        model = GPT(cfg, seed=3)
        _, loss = model(x, x)
        loss.backward()
        return loss.detach(), [p.grad for p in model.parameters()]

    loss, grads = loss_and_grads(True)
    assert len(calls) == cfg.n_layer
    ref_loss, ref_grads = loss_and_grads(False)
    assert len(calls) == cfg.n_layer
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    monkeypatch.setattr(cpu_attention._state, "lib", cpu_attention.load())
    with torch.no_grad():
        GPT(cfg, seed=3).eval()(x)
    assert len(calls) == cfg.n_layer


@needs_kernel
def test_compiled_model_calls_it_as_one_op():
    """torch.compile (Inductor, C++ wrapper) keeps the custom op: same results as eager."""
    qkv, (q, k, v) = _model_layout(2, 2, 32, 24)
    eager = cpu_attention.causal_attention(q, k, v)
    eager.sum().backward()
    grad, qkv.grad = qkv.grad, None
    compiled = torch.compile(cpu_attention.causal_attention, options={"cpp_wrapper": True})
    out = compiled(q, k, v)
    out.sum().backward()
    assert torch.equal(out, eager) and torch.equal(qkv.grad, grad)


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    """A process state where the kernel has not been looked for, building into tmp_path."""
    monkeypatch.setattr(cpu_attention, "_state", cpu_attention._State())
    monkeypatch.setenv("SCALING_KERNEL_CACHE", str(tmp_path / "kernels"))
    return tmp_path / "kernels"


def test_switched_off_by_environment(fresh_state, monkeypatch):
    monkeypatch.setenv("SCALING_CPU_ATTENTION", "0")
    assert cpu_attention.load() is None
    assert cpu_attention.reason() == "SCALING_CPU_ATTENTION=0"
    q = torch.randn(1, 1, 16, 24)
    assert not cpu_attention.usable(q, q, q)


def test_failed_build_warns_once_and_falls_back(fresh_state, monkeypatch):
    if cpu_attention.reason() or not {"avx2", "fma"} <= cpu_attention._cpu_flags():
        pytest.skip("not an AVX2 machine: the build is never attempted")
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    with pytest.warns(RuntimeWarning, match="did not build"):
        assert cpu_attention.load() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_attention.load() is None  # not retried, no second warning
    assert not list(fresh_state.glob("*.so"))  # nothing half-written left behind
    # a model still trains, through torch's attention
    model = GPT(GPTConfig(vocab_size=16, n_layer=1, d_model=24, n_head=1, block_size=16))
    x = torch.randint(0, 16, (2, 16))
    model(x, x)[1].backward()


@needs_kernel
def test_built_once_then_reused(fresh_state, monkeypatch):
    lib = cpu_attention.load()
    assert lib is not None
    built = list(fresh_state.glob("causal_attention-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(cpu_attention, "_state", cpu_attention._State())
    monkeypatch.setattr(cpu_attention.subprocess, "run",
                        lambda *a, **k: pytest.fail("rebuilt a cached kernel"))
    assert cpu_attention.load() is not None
    assert built[0].stat().st_mtime_ns == stamp
