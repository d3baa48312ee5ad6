"""The LSTM recurrence's CPU kernels (torch.ops.attnfast.lstm_forward / lstm_backward, called
directly) against attnfast/reference/lstm.py: forward against the reference in float64, backward
against autograd through the float64 reference; bf16/fp16 within 2x the error of the reference
run in that precision; results bitwise equal on 1 and 2 threads; bad inputs name the argument.
(The public op and module are tested with the Python API.)"""
from __future__ import annotations

import pytest
import torch

from attnfast.reference.lstm import lstm_recurrence
from conftest import assert_parity, require_backend

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(T, B, H) for T in (0, 1, 7) for B in (1, 2, 3, 16) for H in (1, 5, 16, 17, 64, 100)]

pytestmark = pytest.mark.usefixtures("_require_cpu")


@pytest.fixture
def _require_cpu():
    require_backend("cpu")


def make_inputs(T, B, H, dtype, seed=0):
    """gates_x, h0, c0, w_hh in `dtype`, with w_hh scaled so the gates are O(1) (not saturated)."""
    g = torch.Generator().manual_seed(seed)
    gates_x = torch.randn(T, B, 4 * H, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5
    c0 = torch.randn(B, H, generator=g, dtype=torch.float64)
    w_hh = torch.randn(4 * H, H, generator=g, dtype=torch.float64) / max(1, H) ** 0.5
    return [t.to(dtype) for t in (gates_x, h0, c0, w_hh)]


def grads_of(inputs, grad_h, grad_cn):
    """Autograd through the reference in the inputs' dtype: grads of gates_x, h0, c0."""
    if inputs[0].shape[0] == 0:  # no step: c0 is the final cell state (contract of the op)
        return [torch.zeros_like(inputs[0]), torch.zeros_like(inputs[1]), grad_cn.to(inputs[2].dtype)]
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    h, c = lstm_recurrence(*leaves)
    got = torch.autograd.grad([h, c[-1]], leaves[:3], [grad_h.to(h.dtype), grad_cn.to(h.dtype)],
                              allow_unused=True)
    return [torch.zeros_like(l) if g is None else g for g, l in zip(got, leaves[:3])]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,B,H", SHAPES)
def test_forward_matches_reference(T, B, H, dtype):
    inputs = make_inputs(T, B, H, dtype)
    h, c, gates = torch.ops.attnfast.lstm_forward(*inputs, False)
    assert h.shape == (T, B, H) and h.dtype == dtype
    assert c.shape == (T, B, H) and c.dtype == torch.float32
    assert gates.shape == (0,) and gates.dtype == dtype
    h64, c64 = lstm_recurrence(*[t.double() for t in inputs])
    low = lstm_recurrence(*inputs) if dtype != torch.float32 else (None, None)
    assert_parity(h, h64, low[0], name="h")
    if dtype == torch.float32:
        assert_parity(c, c64, name="c")
    elif c.numel() > 0:  # c is fp32 here; the reference carries c in the low dtype: its error bounds
        err, ref_err = (c.double() - c64).abs().max(), (low[1].double() - c64).abs().max()
        assert err <= 2 * ref_err + 1e-6, f"c: {err:.3e} vs reference {ref_err:.3e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,B,H", SHAPES)
def test_backward_matches_autograd_of_reference(T, B, H, dtype):
    inputs = make_inputs(T, B, H, dtype)
    g = torch.Generator().manual_seed(1)
    grad_h = torch.randn(T, B, H, generator=g).to(dtype)
    grad_cn = torch.randn(B, H, generator=g).to(dtype)
    h, c, gates = torch.ops.attnfast.lstm_forward(*inputs, True)
    assert gates.shape == (T, B, 4 * H) and gates.dtype == dtype
    # the saved gates are the activated i, f, g, o
    if T > 0 and dtype == torch.float32:
        h_prev = torch.cat([inputs[1][None], h[:-1]])
        a = inputs[0] + h_prev @ inputs[3].t()
        i, f, gg, o = a.chunk(4, dim=-1)
        act = torch.cat([i.sigmoid(), f.sigmoid(), gg.tanh(), o.sigmoid()], dim=-1)
        torch.testing.assert_close(gates, act, atol=1e-6, rtol=1e-5)
    out = torch.ops.attnfast.lstm_backward(grad_h, grad_cn, inputs[2], inputs[3], c, gates)
    want = grads_of([t.double() for t in inputs], grad_h.double(), grad_cn.double())
    low = grads_of(inputs, grad_h, grad_cn) if dtype != torch.float32 else [None] * 3
    for name, got, w, lo in zip(("grad_gates_x", "grad_h0", "grad_c0"), out, want, low):
        assert got.dtype == dtype, name
        assert_parity(got, w, lo, name=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,B,H", [(7, 3, 100), (5, 16, 200), (3, 1, 17), (4, 2, 129)])
def test_one_and_two_threads_bitwise_equal(T, B, H, dtype):
    """The partition is by fixed 64-unit groups and every sum runs in a fixed order, so the
    thread count cannot change a bit (H = 100, 200, 129: two, four and three groups; 129 odd:
    the bf16 panels pad k to even)."""
    inputs = make_inputs(T, B, H, dtype)
    grad_h = torch.randn(T, B, H).to(dtype)
    grad_cn = torch.randn(B, H).to(dtype)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            fwd = torch.ops.attnfast.lstm_forward(*inputs, True)
            bwd = torch.ops.attnfast.lstm_backward(grad_h, grad_cn, inputs[2], inputs[3], fwd[1], fwd[2])
            results.append(list(fwd) + list(bwd))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("zigzag", ["0", "1"])
def test_zigzag_order_does_not_change_results(zigzag, monkeypatch):
    inputs = make_inputs(6, 2, 300, torch.float32)
    base = torch.ops.attnfast.lstm_forward(*inputs, True)
    monkeypatch.setenv("ATTNFAST_CPU_LSTM_ZIGZAG", zigzag)
    other = torch.ops.attnfast.lstm_forward(*inputs, True)
    for a, b in zip(base, other):
        assert torch.equal(a, b)


def test_zero_steps_backward_passes_grad_cn_to_c0():
    inputs = make_inputs(0, 2, 5, torch.float32)
    h, c, gates = torch.ops.attnfast.lstm_forward(*inputs, True)
    grad_cn = torch.randn(2, 5)
    dgx, dh0, dc0 = torch.ops.attnfast.lstm_backward(torch.empty(0, 2, 5), grad_cn, inputs[2],
                                                      inputs[3], c, gates)
    assert dgx.shape == (0, 2, 20)
    assert torch.equal(dh0, torch.zeros(2, 5)) and torch.equal(dc0, grad_cn)


def _bad_forward_cases():
    gx, h0, c0, w = make_inputs(3, 2, 5, torch.float32)
    return [
        ((gx[:, :, :19], h0, c0, w), "gates_x must have shape"),
        ((gx, h0[:, :4], c0, w), "gates_x must have shape"),
        ((gx, h0[0], c0, w), "h0 must be 2-D"),
        ((gx, h0, c0[:1], w), "c0 must have shape"),
        ((gx, h0, c0, w[:, :4]), "w_hh must have shape"),
        ((gx, h0, c0, w.double()), "w_hh must be Float"),
        ((gx.int(), h0, c0, w), "gates_x must be float32"),
        ((gx.transpose(0, 1).contiguous().transpose(0, 1), h0, c0, w), "gates_x must be contiguous"),
        ((gx, h0, c0, w.t().contiguous().t()), "w_hh must be contiguous"),
    ]


@pytest.mark.parametrize("case", range(9))
def test_bad_forward_inputs_name_the_argument(case):
    args, match = _bad_forward_cases()[case]
    with pytest.raises(RuntimeError, match=match):
        torch.ops.attnfast.lstm_forward(*args, True)


def test_bad_backward_inputs_name_the_argument():
    gx, h0, c0, w = make_inputs(3, 2, 5, torch.float32)
    h, c, gates = torch.ops.attnfast.lstm_forward(gx, h0, c0, w, True)
    gh, gcn = torch.randn_like(h), torch.randn_like(h0)
    ok = dict(grad_h=gh, grad_cn=gcn, c0=c0, w_hh=w, c=c, gates=gates)
    cases = [
        (dict(gates=torch.empty(0)), "gates must have shape"),
        (dict(c=c.bfloat16()), "c must be Float"),
        (dict(c=c[0]), "c must be 3-D"),
        (dict(grad_h=gh[:2]), "grad_h must have shape"),
        (dict(grad_cn=gcn.t()), "grad_cn must have shape"),
        (dict(w_hh=w.half()), "w_hh must be Float"),
        (dict(c0=c0[:, :3]), "c0 must have shape"),
    ]
    for change, match in cases:
        kw = dict(ok, **change)
        with pytest.raises(RuntimeError, match=match):
            torch.ops.attnfast.lstm_backward(*kw.values())
