"""The compiled CPU attention kernel: same results as torch's, deterministic, and a clean
fallback where it cannot be built."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from scaling import cpu_attention
from scaling.model import GPT, GPTConfig, _apply_rotary, _rotary_tables

needs_kernel = pytest.mark.skipif(cpu_attention.load() is None,
                                  reason=f"kernel unavailable: {cpu_attention.reason()}")


def _reference(qkv, n_head, rotary):
    """The model's own path: split, rotary (model._apply_rotary), torch's attention."""
    B, T, width = qkv.shape
    C = width // 3
    q, k, v = (t.view(B, T, n_head, C // n_head) for t in qkv.split(C, 2))
    if rotary is not None:
        q, k = _apply_rotary(q, *rotary), _apply_rotary(k, *rotary)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return out.transpose(1, 2).reshape(B, T, C)


def _outputs_and_grads(attend, B, T, H, D, rotary=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, T, 3 * H * D, generator=gen).requires_grad_()
    tables = _rotary_tables(D, T) if rotary else None
    out = attend(qkv, H, tables)
    weights = torch.randn(out.shape, generator=gen)
    (out * weights).sum().backward()
    return out.detach(), qkv.grad


@needs_kernel
@pytest.mark.parametrize("shape", [(2, 128, 2, 24), (3, 16, 1, 8), (2, 64, 3, 16),
                                   (1, 40, 2, 32), (2, 8, 1, 24)])
@pytest.mark.parametrize("rotary", [True, False], ids=["rotary", "no-rotary"])
def test_matches_torch_attention(shape, rotary):
    ours = _outputs_and_grads(cpu_attention.attend, *shape, rotary=rotary)
    ref = _outputs_and_grads(_reference, *shape, rotary=rotary)
    torch.testing.assert_close(ours[0], ref[0], rtol=0, atol=1e-5)  # outputs
    torch.testing.assert_close(ours[1], ref[1], rtol=0, atol=2e-5)  # d(qkv)


@needs_kernel
def test_gradient_against_float64_reference():
    """Gradients of a float64 math-path reference, not only torch's own fp32 kernel."""
    B, T, H, D = 2, 24, 2, 8
    qkv = torch.randn(B, T, 3 * H * D, generator=torch.Generator().manual_seed(0))
    qkv.requires_grad_()
    cos, sin = _rotary_tables(D, T)
    cpu_attention.attend(qkv, H, (cos, sin)).square().sum().backward()
    qkv64 = qkv.detach().double().requires_grad_()
    q, k, v = (t.view(B, T, H, D) for t in qkv64.split(H * D, 2))
    q, k = _apply_rotary(q, cos.double(), sin.double()), _apply_rotary(k, cos.double(),
                                                                       sin.double())
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    scores = (q @ k.transpose(-1, -2) / D**0.5).masked_fill(~mask, float("-inf"))
    (scores.softmax(-1) @ v).square().sum().backward()
    torch.testing.assert_close(qkv.grad.double(), qkv64.grad, rtol=1e-4, atol=1e-5)


@needs_kernel
def test_bit_identical_for_any_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _outputs_and_grads(cpu_attention.attend, 4, 64, 3, 24)
        torch.set_num_threads(3)
        three = _outputs_and_grads(cpu_attention.attend, 4, 64, 3, 24)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], three[0]) and torch.equal(one[1], three[1])


@needs_kernel
def test_shapes_and_dtypes_it_does_not_serve():
    qkv = torch.randn(1, 16, 3 * 48)
    assert cpu_attention.usable(qkv, 2)
    assert not cpu_attention.usable(qkv.double(), 2)
    assert not cpu_attention.usable(torch.randn(1, 12, 3 * 48), 2)  # T not a multiple of 8
    assert not cpu_attention.usable(torch.randn(1, 16, 3 * 80), 2)  # heads of 40
    assert not cpu_attention.usable(qkv, 5)  # 48 channels do not split into 5 heads


@needs_kernel
@pytest.mark.parametrize("pos", ["rotary", "learned"])
def test_training_model_uses_it_and_agrees_with_torch(monkeypatch, pos):
    """A training step's loss and gradients with the kernel match torch's attention; the
    kernel is really called (and not in evaluation, which keeps torch's kernels)."""
    cfg = GPTConfig(vocab_size=32, n_layer=2, d_model=48, n_head=2, block_size=32, pos=pos)
    x = torch.randint(0, 32, (4, 32), generator=torch.Generator().manual_seed(0))
    calls = []
    real = cpu_attention.attend
    monkeypatch.setattr(cpu_attention, "attend", lambda *a: calls.append(1) or real(*a))

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
def test_compiled_call_is_one_op_with_eager_results():
    """torch.compile (Inductor, C++ wrapper) keeps the custom op: same results as eager."""
    qkv = torch.randn(2, 32, 3 * 48, requires_grad=True)
    tables = _rotary_tables(24, 32)
    eager = cpu_attention.attend(qkv, 2, tables)
    eager.sum().backward()
    grad, qkv.grad = qkv.grad, None
    compiled = torch.compile(lambda t: cpu_attention.attend(t, 2, tables),
                             options={"cpp_wrapper": True})
    out = compiled(qkv)
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
    assert not cpu_attention.usable(torch.randn(1, 16, 3 * 24), 1)


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


@needs_kernel
def test_compiled_training_model_stays_one_graph():
    """The kernel's checks and call must not split torch.compile's graph (a ctypes call in
    `usable` once broke it at every layer: ten graphs a step instead of one)."""
    cfg = GPTConfig(vocab_size=32, n_layer=2, d_model=48, n_head=2, block_size=32,
                    pos="rotary")
    model = GPT(cfg)
    x = torch.randint(0, 32, (2, 32))
    explained = torch._dynamo.explain(model)(x, x)
    assert explained.graph_break_count == 0
    ops = [str(n.target) for g in explained.graphs for n in g.graph.nodes]
    assert sum(op.startswith("scaling.causal_attention") for op in ops) == cfg.n_layer
