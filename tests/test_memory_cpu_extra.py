"""C++ CPU ops of the second memory group (csrc/cpu/memory_extra.cpp): ntm_address (content op +
fused interpolation/shift/sharpening), graves_window(_sequence), dnc_usage, memory_read.

fp32 outputs and gradients against the float64 reference, gradcheck in float64 on the CPU ops,
the edges: N = 1, shift windows 1/3/5 with wrap-around,
gamma = 1, one-hot weightings (exact zeros before sharpening), Graves with masked characters."""
from __future__ import annotations

import re

import pytest
import torch

import attnfast
from attnfast import memory as M
from attnfast.ops import memory as memory_ops
from conftest import assert_parity, require_backend

F64 = torch.float64


@pytest.fixture(autouse=True)
def _cpu_backend():
    require_backend("cpu")


def rand(*shape, g, lo=0.0, hi=1.0):
    return torch.rand(*shape, generator=g, dtype=F64) * (hi - lo) + lo


def dist(*shape, g):
    x = torch.rand(*shape, generator=g, dtype=F64) + 0.05
    return x / x.sum(-1, keepdim=True)


def parity(fn, inputs, name, no_grad=()):
    """fp32 cpu outputs and gradients (random cotangents) against the float64 reference."""
    x64 = [t.detach().clone().requires_grad_(k not in no_grad and t.is_floating_point())
           if isinstance(t, torch.Tensor) else t for k, t in enumerate(inputs)]
    x32 = [t.detach().float().requires_grad_(k not in no_grad and t.is_floating_point())
           if isinstance(t, torch.Tensor) and t.is_floating_point() else t
           for k, t in enumerate(inputs)]
    o64, o32 = fn(*x64, backend="reference"), fn(*x32, backend="cpu")
    o64 = o64 if isinstance(o64, tuple) else (o64,)
    o32 = o32 if isinstance(o32, tuple) else (o32,)
    for k, (a, o) in enumerate(zip(o32, o64)):
        assert a.dtype == torch.float32
        assert_parity(a, o, name=f"{name} out{k}")
    g = torch.Generator().manual_seed(1)
    cot = [torch.randn(o.shape, generator=g, dtype=F64) for o in o64]
    req64 = [t for t in x64 if isinstance(t, torch.Tensor) and t.requires_grad]
    req32 = [t for t in x32 if isinstance(t, torch.Tensor) and t.requires_grad]
    g64 = torch.autograd.grad(o64, req64, cot, allow_unused=True)
    g32 = torch.autograd.grad(o32, req32, [c.float() for c in cot], allow_unused=True)
    for k, (a, o) in enumerate(zip(g32, g64)):
        if o is None:
            assert a is None or a.abs().max() == 0, f"{name}: grad {k} should be zero"
            continue
        # Gradients pass through one more rounding chain (pow, log, exp) than the outputs.
        assert_parity(a, o, name=f"{name} grad{k}", atol=5e-5, rtol=5e-5)


def gradcheck(fn, inputs, no_grad=()):
    inputs = [t.detach().clone().requires_grad_(k not in no_grad) if isinstance(t, torch.Tensor)
              else t for k, t in enumerate(inputs)]
    assert torch.autograd.gradcheck(lambda *a: fn(*a, backend="cpu"), inputs, eps=1e-6, atol=1e-6)


# ---- NTM addressing ------------------------------------------------------------------------------

def ntm_args(b, h, n, w, s, g, gamma_lo=1.0, gamma_hi=3.0):
    return [torch.randn(b, n, w, generator=g, dtype=F64), torch.randn(b, h, w, generator=g, dtype=F64),
            rand(b, h, g=g, lo=0.5, hi=3), rand(b, h, g=g), dist(b, h, s, g=g),
            rand(b, h, g=g, lo=gamma_lo, hi=gamma_hi), dist(b, h, n, g=g)]


@pytest.mark.parametrize("n,s", [(1, 1), (6, 1), (6, 3), (7, 5), (5, 5)])
def test_ntm_parity_and_gradcheck(n, s):
    g = torch.Generator().manual_seed(n * 10 + s)
    args = ntm_args(2, 2, n, 4, s, g)
    parity(M.ntm_address, args, f"ntm n={n} s={s}")
    gradcheck(M.ntm_address, args)
    out = M.ntm_address(*args, backend="cpu")
    assert (out >= 0).all() and torch.allclose(out.sum(-1), torch.ones(2, 2, dtype=F64))


def test_ntm_gamma_one():
    g = torch.Generator().manual_seed(3)
    args = ntm_args(2, 3, 6, 4, 3, g, gamma_lo=1.0, gamma_hi=1.0)
    parity(M.ntm_address, args, "ntm gamma=1")
    gradcheck(M.ntm_address, args)


@pytest.mark.parametrize("s,shift_k,src,dst", [(3, 2, 4, 0), (3, 0, 0, 4), (5, 0, 1, 4), (5, 4, 3, 0)])
def test_ntm_one_hot_shift_wraps(s, shift_k, src, dst):
    """A one-hot weighting (gate 0 keeps prev_weights) moved by a one-hot shift of offset
    shift_k - s//2 lands on (src + offset) mod N; the other slots are exactly 0 before sharpening,
    and the gamma gradient stays finite (0^gamma handled without log 0)."""
    n, w = 5, 3
    g = torch.Generator().manual_seed(0)
    memory, key = torch.randn(1, n, w, generator=g, dtype=F64), torch.randn(1, 1, w, generator=g, dtype=F64)
    prev = torch.zeros(1, 1, n, dtype=F64)
    prev[0, 0, src] = 1
    shift = torch.zeros(1, 1, s, dtype=F64)
    shift[0, 0, shift_k] = 1
    args = [memory, key, torch.ones(1, 1, dtype=F64), torch.zeros(1, 1, dtype=F64), shift,
            torch.full((1, 1), 2.0, dtype=F64), prev]
    out = M.ntm_address(*args, backend="cpu")
    expect = torch.zeros(1, 1, n, dtype=F64)
    expect[0, 0, dst] = 1
    assert torch.equal(out, expect)
    ins = [t.clone().requires_grad_() for t in args]
    M.ntm_address(*ins, backend="cpu")[0, 0, dst].backward()
    ref_ins = [t.clone().requires_grad_() for t in args]
    M.ntm_address(*ref_ins, backend="reference")[0, 0, dst].backward()
    for a, r in zip(ins, ref_ins):
        assert torch.isfinite(a.grad).all()
        torch.testing.assert_close(a.grad, r.grad, atol=1e-12, rtol=1e-10)


def test_ntm_partial_zero_weights_parity():
    """Some shifted weights exactly 0, others not: the zeros stay 0 and carry no gradient."""
    g = torch.Generator().manual_seed(4)
    args = ntm_args(2, 2, 6, 4, 3, g)
    prev = torch.zeros(2, 2, 6, dtype=F64)
    prev[..., 1] = 0.7
    prev[..., 2] = 0.3
    args[3] = torch.zeros(2, 2, dtype=F64)  # gate 0: w_g = prev_weights exactly
    args[6] = prev
    parity(M.ntm_address, args, "ntm zeros", no_grad={3})
    out = M.ntm_address(*args, backend="cpu")
    assert (out[..., 4:] == 0).all() and (out[..., 0] > 0).all()


# ---- Graves' window ------------------------------------------------------------------------------

def graves_inputs(b, t, k, u, c, g):
    a, be, ka = (torch.randn(b, t, k, generator=g, dtype=F64) * 0.5 for _ in range(3))
    chars = torch.nn.functional.one_hot(torch.randint(0, c, (b, u), generator=g), c).to(F64)
    mask = torch.ones(b, u, dtype=F64)
    if b > 1 and u > 2:
        mask[1, u - 2:] = 0  # the second sequence is 2 characters shorter (padding)
    kappa0 = rand(b, k, g=g, hi=2.0)
    return a, be, ka, chars, mask, kappa0


@pytest.mark.parametrize("shape", [(2, 4, 3, 7, 5), (1, 1, 1, 1, 1), (3, 6, 2, 9, 4)])
def test_graves_sequence_parity_and_gradcheck(shape):
    g = torch.Generator().manual_seed(sum(shape))
    a, be, ka, chars, mask, kappa0 = graves_inputs(*shape, g)
    parity(M.graves_window_sequence, [a, be, ka, chars, mask, kappa0], "graves seq")
    parity(M.graves_window_sequence, [a, be, ka, torch.randn(chars.shape, generator=g, dtype=F64)],
           "graves seq dense chars, no mask")
    gradcheck(M.graves_window_sequence, [a, be, ka, chars, mask, kappa0])
    gradcheck(M.graves_window_sequence, [a, be, ka, chars])


def test_graves_masked_characters_and_step():
    g = torch.Generator().manual_seed(5)
    b, t, k, u, c = 2, 5, 3, 7, 5
    a, be, ka, chars, mask, _ = graves_inputs(b, t, k, u, c, g)
    w_seq, kap_seq, phi_seq = M.graves_window_sequence(a, be, ka, chars, mask, backend="cpu")
    assert phi_seq[1, :, u - 2:].abs().max() == 0 and (phi_seq[0] > 0).all()
    # a bool mask gives the same result (converted to the dtype, as the reference does)
    w_b, _, phi_b = M.graves_window_sequence(a, be, ka, chars, mask.bool(), backend="cpu")
    assert torch.equal(phi_b, phi_seq) and torch.equal(w_b, w_seq)
    kappa = torch.zeros(b, k, dtype=F64)
    for step in range(t):
        w, kappa, phi = M.graves_window(a[:, step], be[:, step], ka[:, step], kappa, chars, mask,
                                        backend="cpu")
        torch.testing.assert_close(w, w_seq[:, step], atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(kappa, kap_seq[:, step], atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(phi, phi_seq[:, step], atol=1e-12, rtol=1e-12)
    kprev = rand(b, k, g=g)
    parity(M.graves_window, [a[:, 0], be[:, 0], ka[:, 0], kprev, chars, mask], "graves step")
    gradcheck(M.graves_window, [a[:, 0], be[:, 0], ka[:, 0], kprev, chars, mask])


# ---- usage and read ------------------------------------------------------------------------------

@pytest.mark.parametrize("n,hw,r", [(1, 1, 1), (6, 2, 3), (9, 1, 2)])
def test_usage_parity_and_gradcheck(n, hw, r):
    g = torch.Generator().manual_seed(n + hw + r)
    args = [rand(2, n, g=g), dist(2, hw, n, g=g) * 0.9, rand(2, r, g=g), dist(2, r, n, g=g)]
    parity(M.dnc_usage, args, "usage")
    gradcheck(M.dnc_usage, args, no_grad={1})  # write_weights: stop_gradient
    out = M.dnc_usage(*args, backend="cpu")
    assert ((out >= 0) & (out <= 1)).all()


def test_usage_one_hot_free_and_stop_gradient():
    """f = 1 on a one-hot read weighting: the factor 1 - f w is exactly 0 (the usage of that slot
    is freed) and the gradients of the other factors need no division by it."""
    g = torch.Generator().manual_seed(6)
    n = 5
    rw = torch.zeros(1, 2, n, dtype=F64)
    rw[0, 0, 2] = 1
    rw[0, 1] = dist(n, g=g)
    args = [rand(1, n, g=g), dist(1, 1, n, g=g), torch.tensor([[1.0, 0.5]], dtype=F64), rw]
    out = M.dnc_usage(*args, backend="cpu")
    assert out[0, 2] == 0
    parity(M.dnc_usage, args, "usage one-hot free")
    ww = args[1].clone().requires_grad_()
    assert not M.dnc_usage(args[0], ww, args[2], args[3], backend="cpu").requires_grad
    u = args[0].clone().requires_grad_()
    M.dnc_usage(u, ww, args[2], args[3], backend="cpu").sum().backward()
    assert ww.grad is None and u.grad is not None


@pytest.mark.parametrize("n,w,r", [(1, 3, 1), (7, 5, 3), (4, 1, 2), (20, 21, 4)])
def test_memory_read_parity_and_gradcheck(n, w, r):
    g = torch.Generator().manual_seed(n * w + r)
    args = [torch.randn(2, n, w, generator=g, dtype=F64), dist(2, r, n, g=g)]
    parity(M.memory_read, args, "read")
    gradcheck(M.memory_read, args)


def test_memory_read_lanes():
    """The read's backward runs on 64-byte lanes (rows of 16 fp32 / 8 fp64, heads four at a time):
    W = 64, a partial block of rows (N = 37) and two head groups (R = 5)."""
    g = torch.Generator().manual_seed(7)
    parity(M.memory_read, [torch.randn(3, 37, 64, generator=g, dtype=F64), dist(3, 5, 37, g=g)],
           "read lanes")


# ---- compiled-op contract, dispatch, errors ------------------------------------------------------

@pytest.mark.parametrize("name,args", [
    ("ntm_address", lambda: [torch.rand(1, 4, 2), torch.rand(1, 1, 2), torch.ones(1, 1),
                             torch.rand(1, 1), torch.rand(1, 1, 3), torch.ones(1, 1), torch.rand(1, 1, 4)]),
    ("dnc_usage", lambda: [torch.rand(1, 3), torch.rand(1, 1, 3), torch.rand(1, 1), torch.rand(1, 1, 3)]),
    ("memory_read", lambda: [torch.rand(1, 3, 2), torch.rand(1, 1, 3)]),
    ("graves_window", lambda: [torch.rand(1, 2), torch.rand(1, 2), torch.rand(1, 2), torch.rand(1, 2),
                               torch.rand(1, 3, 4)]),
    ("graves_window_sequence", lambda: [torch.rand(1, 2, 2), torch.rand(1, 2, 2), torch.rand(1, 2, 2),
                                        torch.rand(1, 3, 4)]),
])
def test_explain_says_cpu_runs(name, args):
    text = attnfast.explain(name, *args())
    assert re.search(r"^\s*cpu\s+-> runs", text, re.M), text
    assert "no cpu implementation" not in text


def test_direct_op_errors_name_the_argument():
    ops = torch.ops.attnfast
    w = torch.rand(1, 1, 5)
    with pytest.raises(RuntimeError, match="shift must have an odd last dim"):
        ops.ntm_location_forward(w, torch.rand(1, 1), w, torch.rand(1, 1, 2), torch.ones(1, 1))
    with pytest.raises(RuntimeError, match="gamma must have shape"):
        ops.ntm_location_forward(w, torch.rand(1, 1), w, torch.rand(1, 1, 3), torch.ones(1, 2))
    with pytest.raises(RuntimeError, match="float32 or float64"):
        ops.memory_read_forward(torch.rand(1, 5, 2).half(), w.half())
    with pytest.raises(RuntimeError, match="char_mask must have shape"):
        ops.graves_window_forward(torch.rand(1, 2, 3), torch.rand(1, 2, 3), torch.rand(1, 2, 3),
                                  torch.rand(1, 3), torch.rand(1, 4, 2), torch.ones(1, 5))
    with pytest.raises(RuntimeError, match="free_gate must have shape"):
        ops.dnc_usage_forward(torch.rand(1, 5), w, torch.rand(1, 2), w)
