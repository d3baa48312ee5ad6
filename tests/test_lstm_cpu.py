"""The LSTM recurrence's CPU kernels (torch.ops.attnfast.lstm_forward / lstm_backward, called
directly) against the float64 oracle of tests/lstm_cases.py (shared with the SIMT and Triton
kernel tests): forward and backward, bf16/fp16 within 2x the error of the reference run in that
precision; results bitwise equal on 1 and 2 threads; bad inputs name the argument.
(The public op and module are tested with the Python API.)"""
from __future__ import annotations

import pytest
import torch

import lstm_cases as cases
from conftest import require_backend
from lstm_cases import DTYPES, check_empty, check_parity

SHAPES = [(T, B, H) for T in (1, 7) for B in (1, 2, 3, 16) for H in (1, 5, 16, 17, 64, 100)]

pytestmark = pytest.mark.usefixtures("_require_cpu")


@pytest.fixture
def _require_cpu():
    require_backend("cpu")


def make_inputs(T, B, H, dtype, seed=0):
    """gates_x, h0, c0, w_hh in `dtype` (tests/lstm_cases.py's inputs)."""
    x = cases.cast(cases.make_inputs(T, B, H, seed), dtype)
    return [x[k] for k in ("gates_x", "h0", "c0", "w_hh")]


def fwd(*args):
    return torch.ops.attnfast.lstm_forward(*args)


def bwd(*args):
    return torch.ops.attnfast.lstm_backward(*args)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,B,H", SHAPES)
def test_parity(T, B, H, dtype):
    """Forward and backward (grad_c given and None) against the float64 oracle
    (tests/lstm_cases.py); the gates not saved give the same h and c."""
    (h, c, _), _ = check_parity(fwd, bwd, T, B, H, dtype, name="cpu")
    h2, c2, none = fwd(*make_inputs(T, B, H, dtype), False)
    assert none.shape == (0,) and torch.equal(h, h2) and torch.equal(c, c2)


@pytest.mark.parametrize("shape", [(0, 3, 5), (0, 1, 16), (3, 0, 5), (0, 0, 5)])
def test_empty(shape):
    check_empty(fwd, bwd, *shape)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,B,H", [(7, 3, 100), (5, 16, 200), (3, 1, 17), (4, 2, 129)])
def test_one_and_two_threads_bitwise_equal(T, B, H, dtype):
    """The partition is by fixed 64-unit groups and every sum runs in a fixed order, so the
    thread count cannot change a bit (H = 100, 200, 129: two, four and three groups; 129 odd:
    the bf16 panels pad k to even)."""
    inputs = make_inputs(T, B, H, dtype)
    grad_h = torch.randn(T, B, H).to(dtype)
    grad_c = torch.randn(T, B, H)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out = torch.ops.attnfast.lstm_forward(*inputs, True)
            back = torch.ops.attnfast.lstm_backward(grad_h, grad_c, inputs[2], inputs[3], out[1],
                                                    out[2])
            results.append(list(out) + list(back))
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
    gh, gc = torch.randn_like(h), torch.randn_like(c)
    ok = dict(grad_h=gh, grad_c=gc, c0=c0, w_hh=w, c=c, gates=gates)
    cases = [
        (dict(gates=torch.empty(0)), "gates must have shape"),
        (dict(c=c.bfloat16()), "c must be Float"),
        (dict(c=c[0]), "c must be 3-D"),
        (dict(grad_h=gh[:2]), "grad_h must have shape"),
        (dict(grad_c=gc[:, :1]), "grad_c must have shape"),
        (dict(grad_c=gc.bfloat16()), "grad_c must be Float"),
        (dict(w_hh=w.half()), "w_hh must be Float"),
        (dict(c0=c0[:, :3]), "c0 must have shape"),
    ]
    for change, match in cases:
        kw = dict(ok, **change)
        with pytest.raises(RuntimeError, match=match):
            torch.ops.attnfast.lstm_backward(*kw.values())
