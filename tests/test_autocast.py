"""Under torch.autocast, Boom and attention behave as torch's linear / SDPA do: inputs cast to the
autocast dtype (fp64 excepted), the result in that dtype, gradients in the leaves' own dtypes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attnfast
from conftest import device_for, require_backend

BACKENDS = ["reference", "cpu", "triton", "simt"]


def _leaves(*shapes, dtype=torch.float32, device="cpu"):
    torch.manual_seed(0)
    return [torch.randn(*s, dtype=dtype, device=device, requires_grad=True) for s in shapes]


def _grads(out, leaves):
    return torch.autograd.grad(out.float().square().sum(), leaves)


@pytest.mark.parametrize("backend", BACKENDS)
def test_boom_under_autocast_equals_explicit_bf16(backend):
    require_backend(backend)
    dev = device_for(backend)
    x, w, b = _leaves((3, 7, 16), (48, 16), (48,), device=dev)
    with torch.autocast(dev, dtype=torch.bfloat16):
        y = attnfast.boom(x, w, b, backend=backend)
        torch_linear = F.linear(x, w, b)
    assert y.dtype == torch_linear.dtype == torch.bfloat16
    explicit = attnfast.boom(x.bfloat16(), w.bfloat16(), b.bfloat16(), backend=backend)
    assert torch.equal(y, explicit)
    gx, gw, gb = _grads(y, [x, w, b])
    assert gx.dtype == gw.dtype == gb.dtype == torch.float32
    ex = _grads(explicit, [x, w, b])
    for got, want in zip((gx, gw, gb), ex):
        assert torch.equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_under_autocast_equals_explicit_bf16(backend):
    require_backend(backend)
    dev = device_for(backend)
    q, k, v = _leaves((2, 5, 16), (2, 9, 16), (2, 9, 16), device=dev)
    with torch.autocast(dev, dtype=torch.bfloat16):
        out = attnfast.single_head_attention(q, k, v, causal=True, backend=backend)
    explicit = attnfast.single_head_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True,
                                              backend=backend)
    assert out.dtype == torch.bfloat16 and torch.equal(out, explicit)
    assert all(g.dtype == torch.float32 for g in _grads(out, [q, k, v]))


def test_mixed_dtypes_that_autocast_produces_are_accepted():
    """bf16 activations (an LSTM's output under autocast) with fp32 weights, as torch's linear."""
    x = torch.randn(4, 16).bfloat16()
    w, b = torch.randn(32, 16), torch.randn(32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attnfast.boom(x, w, b)
        q = attnfast.single_head_attention(x[None], torch.randn(1, 6, 16), torch.randn(1, 6, 16))
    assert y.dtype == q.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):  # outside autocast it is still an error
        attnfast.boom(x, w, b)


def test_float64_is_not_cast():
    x, w = torch.randn(3, 8, dtype=torch.float64), torch.randn(16, 8, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert attnfast.boom(x, w).dtype == torch.float64
        assert F.linear(x, w).dtype == torch.float64  # torch does the same


def test_sdpa_dropin_dtype_matches_torch_under_autocast():
    q = torch.randn(2, 3, 6, 16)
    mask = torch.randn(6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = attnfast.scaled_dot_product_attention(q, q, q, attn_mask=mask)
        theirs = F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
        ours_causal = attnfast.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert ours.dtype == theirs.dtype == ours_causal.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), theirs.float(), atol=2e-2, rtol=2e-2)


def test_compile_fullgraph_under_autocast():
    require_backend("cpu")
    torch._dynamo.reset()
    m = attnfast.nn.Boom(16, 64, backend="cpu").eval()
    x = torch.randn(2, 5, 16)

    def step(inp):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return m(inp)

    compiled = torch.compile(step, fullgraph=True)
    got, want = compiled(x), step(x)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), atol=1e-2, rtol=1e-2)


def test_memory_ops_compute_in_fp32_under_autocast():
    """The memory ops take torch's "fp32" policy: bf16 inputs are widened, the result is fp32 and
    equals the fp32 computation on the widened inputs; fp32 inputs are untouched."""
    from attnfast import memory as M
    torch.manual_seed(0)
    b, n, w, hw, r = 2, 8, 5, 2, 3
    mem = torch.randn(b, n, w).bfloat16()
    keys, strengths = torch.randn(b, hw, w).bfloat16(), (torch.rand(b, hw) + 0.5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = M.content_addressing(mem, keys, strengths)
    assert got.dtype == torch.float32
    assert torch.equal(got, M.content_addressing(mem.float(), keys.float(), strengths.float()))

    state = M.dnc_initial_state(b, n, w, r, hw)
    iface = M.DNCInterface(
        write_vectors=torch.randn(b, hw, w), erase_vectors=torch.rand(b, hw, w),
        free_gate=torch.rand(b, r), allocation_gate=torch.rand(b, hw), write_gate=torch.rand(b, hw),
        read_mode=torch.softmax(torch.randn(b, r, 1 + 2 * hw), -1), write_keys=torch.randn(b, hw, w),
        write_strengths=torch.rand(b, hw) + 1, read_keys=torch.randn(b, r, w),
        read_strengths=torch.rand(b, r) + 1)
    low = M.DNCInterface(*(t.bfloat16() for t in iface))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        words, new_state = M.dnc_access_step(state, low)
    want_words, want_state = M.dnc_access_step(state, M.DNCInterface(*(t.float() for t in low)))
    assert words.dtype == torch.float32 and all(t.dtype == torch.float32 for t in new_state)
    torch.testing.assert_close(words, want_words, atol=0, rtol=0)
