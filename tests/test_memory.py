"""Memory addressing ops (attnfast.memory) on the reference and the C++ CPU kernels
(csrc/cpu/memory_*.cpp): every op on both backends against the float64 reference, forward and
gradients (gradcheck in float64), edge inputs and the properties the formulas promise; the CPU
kernels' edge cases (N = 1, shift windows 1/3/5 with wrap-around, gamma = 1, one-hot weightings
with exact zeros before sharpening, a freed slot, masked characters, the vector lanes and tails of
every ISA level); dispatch, errors, torch.compile and the CPU block cache."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

import attnfast
from attnfast import memory as M
from attnfast.ops import memory as memory_ops
from attnfast.reference import memory as ref
from conftest import assert_parity, require_backend
from memory_cases import (F32_GRAD_TOL, F64, access_step, backend_parity, check_argument_errors,
                          dist, graves_inputs, interface, link_read_ref, mix_op_cases,
                          ntm_address_args, random_state, rand, read_args, read_mix_op_args,
                          usage_args, usage_one_hot_free_args, write_args)

# Ops with a C++ CPU kernel; the others run on the reference only (explain() says so).
CPU_OPS = {"content_addressing", "dnc_allocation", "dnc_write_weights", "memory_write",
           "dnc_link_update", "dnc_directional_read", "dnc_access_step", "ntm_address",
           "dnc_usage", "memory_read", "graves_window", "graves_window_sequence"}
BACKENDS = ["reference", "cpu"]


def backends_for(op):
    return BACKENDS if op in CPU_OPS else ["reference"]


def params(op):
    return pytest.mark.parametrize("backend", backends_for(op))


def gradcheck(fn, inputs, backend, no_grad=(), fast=False):
    """`no_grad`: indices of inputs that carry no gradient by design (stop_gradient); `fast`:
    torch's fast mode (random projections of the Jacobian) for the many-input access step."""
    require_backend(backend)
    inputs = [t.detach().clone().requires_grad_(k not in no_grad) if isinstance(t, torch.Tensor) else t
              for k, t in enumerate(inputs)]
    assert torch.autograd.gradcheck(lambda *a: fn(*a, backend=backend), inputs, eps=1e-6, atol=1e-6,
                                      fast_mode=fast)


def parity(fn, inputs, backend, name):
    """fp32 outputs and grads of `backend` against the reference in float64: outputs within
    1e-5 / 1e-4 (atol / rtol), gradients within 1e-4 / 1e-3."""
    backend_parity(fn, inputs, backend, name, out_tol={"atol": 1e-5, "rtol": 1e-4},
                   grad_tol={"atol": 1e-4, "rtol": 1e-3})


def cpu_parity(fn, inputs, name, no_grad=()):
    """The CPU kernels' edge cases: fp32 outputs within conftest's FP32_TOL, gradients within
    F32_GRAD_TOL (one more pow/log/exp rounding chain than the outputs)."""
    backend_parity(fn, inputs, "cpu", name, no_grad=no_grad, grad_tol=F32_GRAD_TOL)


# ---- addressing: content -------------------------------------------------------------------------

@params("content_addressing")
def test_content_gradcheck_and_parity(backend):
    g = torch.Generator().manual_seed(0)
    mem, keys = torch.randn(2, 7, 5, generator=g, dtype=F64), torch.randn(2, 3, 5, generator=g, dtype=F64)
    mem[0, 2] = 0  # a zero memory row: |M| = sqrt(eps), finite gradients
    beta = rand(2, 3, g=g, lo=0.5, hi=4.0)
    gradcheck(M.content_addressing, [mem, keys, beta], backend)
    parity(M.content_addressing, [mem, keys, beta], backend, "content")
    w = M.content_addressing(mem, keys, beta, backend=backend)
    assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(2, 3, dtype=F64))


@params("content_addressing")
def test_content_n1_and_larger(backend):
    require_backend(backend)
    g = torch.Generator().manual_seed(3)
    w = M.content_addressing(torch.randn(2, 1, 4, generator=g), torch.randn(2, 2, 4, generator=g),
                             torch.ones(2, 2), backend=backend)
    assert torch.equal(w, torch.ones(2, 2, 1))
    parity(M.content_addressing, [torch.randn(3, 300, 33, generator=g, dtype=F64),
                                  torch.randn(3, 4, 33, generator=g, dtype=F64),
                                  rand(3, 4, g=g, hi=20.0)], backend, "content large")
    # six heads: the cpu kernel's dots go four heads at a time (a padded second set of four); W = 64
    # and N = 37: whole lane vectors along W, a partial block of rows
    parity(M.content_addressing, [torch.randn(2, 37, 64, generator=g, dtype=F64),
                                  torch.randn(2, 6, 64, generator=g, dtype=F64),
                                  rand(2, 6, g=g, hi=8.0)], backend, "content six heads")


# ---- addressing: NTM location --------------------------------------------------------------------

def test_ntm_shift_convention_and_gradcheck():
    n = 5
    w = torch.zeros(1, 1, n, dtype=F64)
    w[0, 0, n - 1] = 1
    s = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=F64)  # offset +1
    out = ref.ntm_shift_sharpen(w, s, torch.ones(1, 1, dtype=F64))
    assert out[0, 0, 0] == 1  # wraps around: N-1 -> 0
    g = torch.Generator().manual_seed(0)
    args = ntm_address_args(2, 2, 6, 4, 3, g)
    gradcheck(M.ntm_address, args, "reference")
    out = M.ntm_address(*args)
    assert (out >= 0).all() and torch.allclose(out.sum(-1), torch.ones(2, 2, dtype=F64))


def test_ntm_one_hot_gamma_grad_finite():
    w = torch.zeros(1, 1, 4, dtype=F64)
    w[0, 0, 1] = 1
    gamma = torch.full((1, 1), 2.0, dtype=F64, requires_grad=True)
    out = ref.ntm_shift_sharpen(w, torch.tensor([[[0.0, 1.0, 0.0]]], dtype=F64), gamma)
    out[0, 0, 1].backward()
    assert torch.isfinite(gamma.grad).all()


@pytest.mark.parametrize("n,s", [(1, 1), (6, 1), (6, 3), (7, 5), (5, 5)])
def test_ntm_parity_and_gradcheck(n, s):
    require_backend("cpu")
    g = torch.Generator().manual_seed(n * 10 + s)
    args = ntm_address_args(2, 2, n, 4, s, g)
    cpu_parity(M.ntm_address, args, f"ntm n={n} s={s}")
    gradcheck(M.ntm_address, args, "cpu")
    out = M.ntm_address(*args, backend="cpu")
    assert (out >= 0).all() and torch.allclose(out.sum(-1), torch.ones(2, 2, dtype=F64))


def test_ntm_gamma_one():
    require_backend("cpu")
    g = torch.Generator().manual_seed(3)
    args = ntm_address_args(2, 3, 6, 4, 3, g, gamma=(1.0, 1.0))
    cpu_parity(M.ntm_address, args, "ntm gamma=1")
    gradcheck(M.ntm_address, args, "cpu")


@pytest.mark.parametrize("s,shift_k,src,dst", [(3, 2, 4, 0), (3, 0, 0, 4), (5, 0, 1, 4), (5, 4, 3, 0)])
def test_ntm_one_hot_shift_wraps(s, shift_k, src, dst):
    """A one-hot weighting (gate 0 keeps prev_weights) moved by a one-hot shift of offset
    shift_k - s//2 lands on (src + offset) mod N; the other slots are exactly 0 before sharpening,
    and the gamma gradient stays finite (0^gamma handled without log 0)."""
    require_backend("cpu")
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
    require_backend("cpu")
    g = torch.Generator().manual_seed(4)
    args = ntm_address_args(2, 2, 6, 4, 3, g)
    prev = torch.zeros(2, 2, 6, dtype=F64)
    prev[..., 1] = 0.7
    prev[..., 2] = 0.3
    args[3] = torch.zeros(2, 2, dtype=F64)  # gate 0: w_g = prev_weights exactly
    args[6] = prev
    cpu_parity(M.ntm_address, args, "ntm zeros", no_grad={3})
    out = M.ntm_address(*args, backend="cpu")
    assert (out[..., 4:] == 0).all() and (out[..., 0] > 0).all()


# ---- allocation: usage, allocation weights, write weights ----------------------------------------

def test_usage_properties_and_stop_gradient():
    g = torch.Generator().manual_seed(0)
    u, ww = rand(3, 9, g=g), dist(3, 2, 9, g=g)
    f, wr = rand(3, 2, g=g), dist(3, 2, 9, g=g)
    u[0, :3] = torch.tensor([0.0, 1.0, 1.0])
    ww.requires_grad_(True)
    out = M.dnc_usage(u, ww, f, wr)
    assert ((out >= 0) & (out <= 1)).all()
    assert out.grad_fn is not None or not out.requires_grad
    gradcheck(lambda u_, f_, wr_, backend: M.dnc_usage(u_, ww.detach(), f_, wr_, backend=backend),
              [u, f, wr], "reference")
    assert not M.dnc_usage(u, ww, f, wr).requires_grad  # write weights carry no gradient


@pytest.mark.parametrize("n,hw,r", [(1, 1, 1), (6, 2, 3), (9, 1, 2)])
def test_usage_parity_and_gradcheck(n, hw, r):
    require_backend("cpu")
    g = torch.Generator().manual_seed(n + hw + r)
    args = usage_args(2, n, hw, r, g)
    cpu_parity(M.dnc_usage, args, "usage")
    gradcheck(M.dnc_usage, args, "cpu", no_grad={1})  # write_weights: stop_gradient
    out = M.dnc_usage(*args, backend="cpu")
    assert ((out >= 0) & (out <= 1)).all()


def test_usage_one_hot_free_and_stop_gradient():
    """f = 1 on a one-hot read weighting: the factor 1 - f w is exactly 0 (the usage of that slot
    is freed) and the gradients of the other factors need no division by it."""
    require_backend("cpu")
    args = usage_one_hot_free_args()
    out = M.dnc_usage(*args, backend="cpu")
    assert out[0, 2] == 0
    cpu_parity(M.dnc_usage, args, "usage one-hot free")
    ww = args[1].clone().requires_grad_()
    assert not M.dnc_usage(args[0], ww, args[2], args[3], backend="cpu").requires_grad
    u = args[0].clone().requires_grad_()
    M.dnc_usage(u, ww, args[2], args[3], backend="cpu").sum().backward()
    assert ww.grad is None and u.grad is not None


@params("dnc_allocation")
@pytest.mark.parametrize("heads", [None, 1, 3])
def test_allocation_gradcheck_and_parity(backend, heads):
    g = torch.Generator().manual_seed(0)
    u = rand(2, 8, g=g, lo=0.05, hi=0.95)
    args = [u] if heads is None else [u, rand(2, heads, g=g)]
    gradcheck(M.dnc_allocation, args, backend)
    parity(M.dnc_allocation, args, backend, "allocation")


@params("dnc_allocation")
def test_allocation_edges(backend):
    require_backend(backend)
    n = 6
    u = torch.tensor([[0.0] * n, [1.0] * n, [0.5, 0.0, 0.5, 1.0, 0.0, 0.5], [0.3] * n], dtype=F64)
    a = M.dnc_allocation(u, backend=backend)
    r = ref.dnc_allocation(u)
    assert torch.allclose(a, r, atol=1e-12, rtol=0)
    assert (a >= 0).all() and (a.sum(-1) <= 1 + 1e-12).all()
    # all free: everything goes to the first (lowest index) slot; ties broken by index
    assert a[0, 0] > 0.999 and (a[0, 1:] < 1e-5).all()
    # all used: nothing to allocate
    assert a[1].abs().max() < 1e-5
    # ties: among equal usage the lower index comes first (gets the larger weight)
    assert a[2, 1] > a[2, 4] and a[2, 0] > a[2, 2] > a[2, 5]
    # N = 1
    one = M.dnc_allocation(torch.tensor([[0.25]], dtype=F64), backend=backend)
    assert torch.allclose(one, torch.tensor([[0.75 - 0.75e-6]], dtype=F64))
    gates = torch.tensor([[1.0, 1.0], [0.0, 0.5], [1.0, 0.0], [0.5, 0.5]], dtype=F64)
    assert torch.allclose(M.dnc_allocation(u, gates, backend=backend), ref.dnc_allocation(u, gates),
                          atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_allocation_sort_order_signed_zero_and_negative(dtype):
    """The cpu sort (a radix sort on the keys' bits) orders like torch's stable sort: -0.0 ties
    with 0.0 (index order), negative usages (outside the DNC's range, still defined) sort first,
    subnormals in their place; forward and gradients against the reference."""
    require_backend("cpu")
    u = torch.tensor([[0.5, -0.0, 0.0, 0.5, 1e-40, -0.25, 0.0, -0.0, 0.75, -1e-40]], dtype=F64)
    u = torch.cat([u, u.flip(-1)]).to(dtype)
    a, r = M.dnc_allocation(u, backend="cpu"), ref.dnc_allocation(u.double())
    assert_parity(a, r, name="allocation sort order", atol=1e-6 if dtype != F64 else 1e-15, rtol=0)
    parity(lambda x, backend: M.dnc_allocation(x, backend=backend), [u.double()], "cpu",
           "allocation sort order")


@pytest.mark.parametrize("n", [1000, 4096])
def test_allocation_large_ties_agree(n):
    require_backend("cpu")
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 4, (2, n), generator=g).float() / 4  # heavy ties
    gates = rand(2, 2, g=g, dtype=torch.float32)
    a, r = M.dnc_allocation(u, gates, backend="cpu"), M.dnc_allocation(u, gates, backend="reference")
    assert_parity(a, r.double(), name="allocation ties", atol=1e-6, rtol=1e-5)


@params("dnc_write_weights")
def test_write_weights(backend):
    g = torch.Generator().manual_seed(0)
    args = [rand(2, 7, g=g), dist(2, 2, 7, g=g), rand(2, 2, g=g), rand(2, 2, g=g)]
    gradcheck(M.dnc_write_weights, args, backend)
    parity(M.dnc_write_weights, args, backend, "write weights")
    ww = M.dnc_write_weights(*args, backend=backend)
    assert (ww >= 0).all() and (ww.sum(-1) <= 1 + 1e-9).all()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_fused_mix_ops(dtype):
    """The fused op pairs called directly, forward and backward, at memory_cases.MIX_SHAPES (N = 1,
    odd N, Hw = 2, R = 1, batch 1, the read's lanes): dnc_write_weights_* (the allocation with
    its gate mix) and dnc_read_mix_* (the read-mode mix with the read)."""
    require_backend("cpu")
    mix_op_cases(torch.ops.attnfast, [dtype])


def test_read_mix_op_gradcheck():
    """The read mix through autograd (its KernelOp formula, both outputs) in float64."""
    require_backend("cpu")
    args = read_mix_op_args(2, 5, 3, 2, 2, torch.Generator().manual_seed(5))
    args = [t.requires_grad_(True) for t in args]
    assert torch.autograd.gradcheck(torch.ops.attnfast.dnc_read_mix_forward, args, eps=1e-6,
                                    atol=1e-6)


# ---- read / write --------------------------------------------------------------------------------

@params("memory_write")
@pytest.mark.parametrize("hw", [1, 3])
def test_memory_write(backend, hw):
    g = torch.Generator().manual_seed(0)
    args = write_args(2, 6, 5, hw, g, total=1.0)
    gradcheck(M.memory_write, args, backend)
    parity(M.memory_write, args, backend, "memory write")
    # one-hot weight, full erase: the row becomes the added word
    mem = torch.randn(1, 4, 3, dtype=F64)
    w = torch.zeros(1, 1, 4, dtype=F64)
    w[0, 0, 2] = 1
    out = M.memory_write(mem, w, torch.ones(1, 1, 3, dtype=F64), torch.full((1, 1, 3), 7.0, dtype=F64),
                         backend=backend)
    assert torch.equal(out[0, 2], torch.full((3,), 7.0, dtype=F64)) and torch.equal(out[0, [0, 1, 3]], mem[0, [0, 1, 3]])


def test_memory_read():
    g = torch.Generator().manual_seed(0)
    gradcheck(M.memory_read, read_args(2, 5, 3, 2, g), "reference")


@pytest.mark.parametrize("n,w,r", [(1, 3, 1), (7, 5, 3), (4, 1, 2), (20, 21, 4)])
def test_memory_read_parity_and_gradcheck(n, w, r):
    require_backend("cpu")
    g = torch.Generator().manual_seed(n * w + r)
    args = read_args(2, n, w, r, g)
    cpu_parity(M.memory_read, args, "read")
    gradcheck(M.memory_read, args, "cpu")


def test_memory_read_lanes():
    """The read's backward runs on 64-byte lanes (rows of 16 fp32 / 8 fp64, heads four at a time):
    W = 64, a partial block of rows (N = 37) and two head groups (R = 5)."""
    require_backend("cpu")
    g = torch.Generator().manual_seed(7)
    cpu_parity(M.memory_read, read_args(3, 37, 64, 5, g), "read lanes")


# ---- links: temporal link update, directional reads ----------------------------------------------

@params("dnc_link_update")
@pytest.mark.parametrize("n", [1, 6])
def test_link_update(backend, n):
    g = torch.Generator().manual_seed(0)
    s = random_state(2, n, 3, 2, 2, g)
    args = [s.link, s.precedence, dist(2, 2, n, g=g, total=0.9)]
    gradcheck(M.dnc_link_update, args, backend)
    parity(M.dnc_link_update, args, backend, "link update")
    link, prec = M.dnc_link_update(*args, backend=backend)
    assert torch.diagonal(link, dim1=-2, dim2=-1).abs().max() == 0
    assert (link >= 0).all() and (prec >= 0).all() and (prec.sum(-1) <= 1 + 1e-9).all()


@params("dnc_directional_read")
def test_directional_read(backend):
    g = torch.Generator().manual_seed(0)
    s = random_state(2, 6, 3, 3, 2, g)
    gradcheck(M.dnc_directional_read, [s.link, s.read_weights], backend)
    # The cpu op never reads the link's diagonal (zero in every DNC link), so its gradient there is
    # 0; compare the off-diagonal link gradient and everything else.
    off = 1 - torch.eye(6, dtype=F64)
    parity(lambda link, rw, backend: M.dnc_directional_read(link * off.to(link.dtype), rw, backend=backend),
           [s.link, s.read_weights], backend, "directional read")
    # one-hot: a link i -> j with weight 1 moves forward from j to i... f = L wr
    link = torch.zeros(1, 1, 3, 3, dtype=F64)
    link[0, 0, 2, 1] = 1  # written 1 then 2
    rw = torch.zeros(1, 1, 3, dtype=F64)
    rw[0, 0, 1] = 1
    fwd, bwd = M.dnc_directional_read(link, rw, backend=backend)
    assert fwd[0, 0, 0].tolist() == [0, 0, 1] and bwd[0, 0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("n,r", [(37, 1), (37, 5), (16, 4), (40, 9), (23, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_fused_link_read_op(n, r, dtype):
    """The cpu op that fuses the link update with both directional reads, at sizes that exercise its
    vector lanes and scalar tail (N = 37, 23), one, two and three groups of four read heads (R = 1,
    5, 9) and no read head (R = 0), forward and all four input gradients against the reference."""
    require_backend("cpu")
    g = torch.Generator().manual_seed(n * 10 + r)
    s = random_state(3, n, 2, max(r, 1), 2, g)
    rw = dist(3, r, n, g=g, total=0.9)
    ww = dist(3, 2, n, g=g, total=0.8)
    inputs = [s.link, s.precedence, ww, rw]
    x_ref = [t.detach().clone().requires_grad_(True) for t in inputs]
    x_op = [t.detach().to(dtype).requires_grad_(True) for t in inputs]
    out_ref = link_read_ref(*x_ref)
    out_op = torch.ops.attnfast.dnc_link_read_forward(*x_op)
    cot = [torch.randn(o.shape, generator=g, dtype=F64) for o in out_ref]
    g_ref = torch.autograd.grad(out_ref, x_ref, cot)
    g_op = torch.autograd.grad(out_op, x_op, [c.to(dtype) for c in cot])
    tol = dict(atol=1e-12, rtol=1e-10) if dtype == F64 else dict(atol=2e-6, rtol=1e-5)
    off = 1 - torch.eye(n, dtype=F64)  # the op never reads the input link's diagonal
    for k, (a, o) in enumerate(zip(out_op, out_ref)):
        assert_parity(a, o, name=f"link op out{k}", **tol)
    for k, (a, o) in enumerate(zip(g_op, g_ref)):
        o = o * off if k == 0 else o
        assert_parity(a, o, name=f"link op grad{k}", **tol)


@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
def test_lane_kernels_every_isa(isa):
    """The link loops and the content-addressing dots are hand-vectorised with 64-byte lanes
    (csrc/cpu/kernels/lanes.h), which the base and avx2 builds lower to narrower registers: every
    compiled ISA level against the reference."""
    require_backend("cpu")
    from attnfast import _extension

    order = ["base", "avx2", "avx512"]
    if order.index(isa) > order.index(attnfast.build_info()["cpu_isa_supported"]):
        pytest.skip(f"this CPU supports at most {attnfast.build_info()['cpu_isa_supported']}, not {isa}")
    try:
        _extension._C.set_cpu_isa(isa)
        assert attnfast.build_info()["cpu_isa"] == isa
        for dtype in (torch.float32, F64):
            test_fused_link_read_op(37, 5, dtype)
        g = torch.Generator().manual_seed(4)
        parity(M.content_addressing, [torch.randn(2, 37, 40, generator=g, dtype=F64),
                                      torch.randn(2, 5, 40, generator=g, dtype=F64),
                                      rand(2, 5, g=g, hi=8.0)], "cpu", f"content {isa}")
    finally:
        _extension._C.set_cpu_isa("")


# ---- window: Graves' soft window -----------------------------------------------------------------

def test_graves_window_step_sequence_mask():
    g = torch.Generator().manual_seed(0)
    b, t, k, u, c = 2, 4, 3, 7, 5
    a, be, ka, chars, mask, _ = graves_inputs(b, t, k, u, c, g)  # mask: chars 5 and 6 of the second
    w_seq, kap_seq, phi_seq = M.graves_window_sequence(a, be, ka, chars, mask)
    kappa = torch.zeros(b, k, dtype=F64)
    for step in range(t):
        w, kappa, phi = M.graves_window(a[:, step], be[:, step], ka[:, step], kappa, chars, mask)
        assert torch.allclose(w, w_seq[:, step]) and torch.allclose(phi, phi_seq[:, step])
    assert phi_seq[1, :, 5:].abs().max() == 0
    gradcheck(M.graves_window_sequence, [a, be, ka, chars, mask], "reference")


@pytest.mark.parametrize("shape", [(2, 4, 3, 7, 5), (1, 1, 1, 1, 1), (3, 6, 2, 9, 4)])
def test_graves_sequence_parity_and_gradcheck(shape):
    require_backend("cpu")
    g = torch.Generator().manual_seed(sum(shape))
    a, be, ka, chars, mask, kappa0 = graves_inputs(*shape, g)
    cpu_parity(M.graves_window_sequence, [a, be, ka, chars, mask, kappa0], "graves seq")
    cpu_parity(M.graves_window_sequence, [a, be, ka, torch.randn(chars.shape, generator=g, dtype=F64)],
               "graves seq dense chars, no mask")
    gradcheck(M.graves_window_sequence, [a, be, ka, chars, mask, kappa0], "cpu")
    gradcheck(M.graves_window_sequence, [a, be, ka, chars], "cpu")


def test_graves_masked_characters_and_step():
    require_backend("cpu")
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
    cpu_parity(M.graves_window, [a[:, 0], be[:, 0], ka[:, 0], kprev, chars, mask], "graves step")
    gradcheck(M.graves_window, [a[:, 0], be[:, 0], ka[:, 0], kprev, chars, mask], "cpu")


# ---- access step ---------------------------------------------------------------------------------

@params("dnc_access_step")
@pytest.mark.parametrize("shape", [(2, 6, 4, 2, 1), (2, 5, 3, 1, 2), (1, 1, 3, 1, 1)])
def test_access_step(backend, shape):
    b, n, w, r, hw = shape
    g = torch.Generator().manual_seed(0)
    s, x = random_state(b, n, w, r, hw, g), interface(b, n, w, r, hw, g)
    flat = list(s) + list(x)
    gradcheck(access_step, flat, backend, no_grad={2}, fast=True)  # state.write_weights: stop_gradient
    parity(access_step, flat, backend, "access step")
    _, st = M.dnc_access_step(s, x, backend=backend)
    assert ((st.usage >= 0) & (st.usage <= 1)).all()
    assert (st.read_weights >= -1e-12).all() and (st.read_weights.sum(-1) <= 1 + 1e-9).all()
    assert (st.write_weights.sum(-1) <= 1 + 1e-9).all()
    assert torch.diagonal(st.link, dim1=-2, dim2=-1).abs().max() == 0


# ---- dispatch and errors -------------------------------------------------------------------------

def test_errors_name_the_argument():
    mem, keys = torch.randn(2, 5, 3), torch.randn(2, 1, 3)
    with pytest.raises(ValueError, match=r"keys must have shape \(B=2, H=1, W=3\)"):
        M.content_addressing(mem, torch.randn(2, 1, 4), torch.ones(2, 1))
    with pytest.raises(ValueError, match="strengths must be 2-D"):
        M.content_addressing(mem, keys, torch.ones(2))
    with pytest.raises(ValueError, match="link must be 4-D"):
        M.dnc_link_update(torch.zeros(2, 1, 5), torch.zeros(2, 1, 5), torch.zeros(2, 1, 5))
    with pytest.raises(ValueError, match="float64 on cpu but memory is torch.float32"):
        M.memory_write(mem, torch.zeros(2, 1, 5, dtype=F64), torch.zeros(2, 1, 3), torch.zeros(2, 1, 3))
    with pytest.raises(ValueError, match="odd last dim"):
        M.ntm_address(mem, keys, torch.ones(2, 1), torch.ones(2, 1), torch.ones(2, 1, 2),
                      torch.ones(2, 1), torch.ones(2, 1, 5))
    with pytest.raises(ValueError, match="read_mode must have shape"):
        s = M.dnc_initial_state(2, 5, 3, 1, 1)
        x = interface(2, 5, 3, 1, 1, torch.Generator().manual_seed(0), dtype=torch.float32)
        M.dnc_access_step(s, x._replace(read_mode=torch.ones(2, 1, 4)))


def test_explain_mentions_memory_ops():
    """explain() lists every backend of a memory op with why it refuses; asking for one that has
    no implementation (or cannot run here) raises with that reason."""
    args = (torch.rand(1, 3), torch.rand(1, 1, 3), torch.rand(1, 1), torch.rand(1, 1, 3))
    text = attnfast.explain("dnc_usage", *args)
    assert text.startswith("attnfast.dnc_usage")
    chosen = "cpu" if attnfast.backends()["cpu"] is None else "reference"
    assert f"{chosen:9s} -> runs" in text
    op = memory_ops.OPS["dnc_usage"]
    refused = [b for b in ("cuda", "triton", "simt") if op.reasons(b, op.prepare(*args))]
    assert refused, "some backend must refuse a CPU float32 dnc_usage on this machine"
    reason = op.reasons(refused[0], op.prepare(*args))[0]
    assert reason in text
    with pytest.raises(attnfast.BackendUnavailable, match=refused[0]):
        M.dnc_usage(*args, backend=refused[0])


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
    require_backend("cpu")
    text = attnfast.explain(name, *args())
    assert re.search(r"^\s*cpu\s+-> runs", text, re.M), text
    assert "no cpu implementation" not in text


def test_direct_op_errors_name_the_argument():
    require_backend("cpu")
    ops = torch.ops.attnfast
    check_argument_errors(ops)
    w = torch.rand(1, 1, 5)
    with pytest.raises(RuntimeError, match="gamma must have shape"):
        ops.ntm_location_forward(w, torch.rand(1, 1), w, torch.rand(1, 1, 3), torch.ones(1, 2))


@pytest.mark.parametrize("op_name", ["memory_write", "dnc_link_update", "content_addressing"])
def test_cuda_refuses_batches_past_the_grid_cap(op_name):
    """The CUDA content, write and link kernels (and the Triton link kernels) put one grid row per
    (batch, write head), and CUDA caps a grid's y dimension at 65535: past it those
    implementations refuse with that reason (so auto falls back), whatever device the tensors are
    on. Checked on the implementation's own
    refusal list (the dispatcher asks it only on a machine with a GPU)."""
    b = 65536
    z = torch.zeros
    args = {"memory_write": (z(b, 2, 2), z(b, 1, 2), z(b, 1, 2), z(b, 1, 2)),
            "dnc_link_update": (z(b, 1, 2, 2), z(b, 1, 2), z(b, 1, 2)),
            "content_addressing": (z(b, 2, 2), z(b, 1, 2), z(b, 1))}[op_name]
    op = memory_ops.OPS[op_name]
    backends = ["cuda"] + (["triton"] if op_name == "dnc_link_update" else [])
    for backend in backends:  # the Triton link kernels have the same grid
        reasons = op.implementations[backend].refuses(op.prepare(*args))
        assert any("65535" in r and "grid" in r for r in reasons), (backend, reasons)
        small = op.prepare(*(t[:2] for t in args))
        assert not any("65535" in r for r in op.implementations[backend].refuses(small)), backend


# ---- torch.compile (the opcheck of every compiled op: tests/test_op_declarations.py) -------------

def test_access_step_compiles_fullgraph():
    require_backend("cpu")
    g = torch.Generator().manual_seed(0)
    s, x = random_state(2, 6, 4, 2, 1, g, torch.float32), interface(2, 6, 4, 2, 1, g, torch.float32)
    step = torch.compile(lambda s_, x_: M.dnc_access_step(s_, x_, backend="cpu"), fullgraph=True)
    words, st = step(s, x)
    ref_words, ref_st = M.dnc_access_step(s, x, backend="cpu")
    assert torch.allclose(words, ref_words, atol=1e-6) and torch.allclose(st.link, ref_st.link, atol=1e-6)


# ---- the CPU block cache behind the link tensors (csrc/cpu/block_cache.h) ------------------------

def _link_problem(seed, n=512):
    """A (1, 1, n, n) float32 link: 1 MiB at n = 512, the smallest size the cache serves."""
    g = torch.Generator().manual_seed(seed)
    s = random_state(1, n, 2, 2, 1, g, dtype=torch.float32)
    return [s.link, s.precedence, dist(1, 1, n, g=g, total=0.8, dtype=torch.float32), s.read_weights]


def _check_link_op(args):
    out = torch.ops.attnfast.dnc_link_read_forward(*args)
    for a, o in zip(out, link_read_ref(*[a.double() for a in args])):
        assert_parity(a, o, name="link op through the cache", atol=2e-6, rtol=1e-5)


def test_cpu_block_cache_reuses_blocks_without_stale_data():
    require_backend("cpu")
    before = M.cpu_cache_info()["limit_bytes"] >> 20
    M.set_cpu_cache_limit(64)
    try:
        M.empty_cpu_cache()
        _check_link_op(_link_problem(0))  # its new link went back to the cache when it died
        assert M.cpu_cache_info()["cached_bytes"] >= 512 * 512 * 4
        hits = M.cpu_cache_info()["hits"]
        _check_link_op(_link_problem(1))  # served from the reused block, every element rewritten
        assert M.cpu_cache_info()["hits"] > hits
        M.empty_cpu_cache()
        assert M.cpu_cache_info()["cached_bytes"] == 0
    finally:
        M.set_cpu_cache_limit(before)


def test_cpu_block_cache_evicts_the_oldest_blocks():
    """A freed block that does not fit pushes out the least recently freed ones (stale blocks of an
    earlier size must not pin the budget), and the cache never holds more than its limit."""
    require_backend("cpu")
    before = M.cpu_cache_info()["limit_bytes"] >> 20
    M.set_cpu_cache_limit(4)
    try:
        M.empty_cpu_cache()
        small = [torch.ops.attnfast.dnc_link_read_forward(*_link_problem(k))[0] for k in range(3)]
        del small  # three 1 MiB links back in the cache
        assert 3 << 20 < M.cpu_cache_info()["cached_bytes"] <= 4 << 20
        big = _link_problem(3, n=800)  # a 2.4 MiB link
        out = torch.ops.attnfast.dnc_link_read_forward(*big)
        del out  # it fits only once the two oldest 1 MiB blocks are dropped
        info = M.cpu_cache_info()
        assert 2.4 * (1 << 20) < info["cached_bytes"] <= 4 << 20
        hits = info["hits"]
        _check_link_op(big)  # served from that block
        assert M.cpu_cache_info()["hits"] == hits + 1
    finally:
        M.set_cpu_cache_limit(before)


def test_cpu_block_cache_off_and_bad_limits():
    require_backend("cpu")
    before = M.cpu_cache_info()["limit_bytes"] >> 20
    M.set_cpu_cache_limit(0)
    try:
        hits = M.cpu_cache_info()["hits"]
        _check_link_op(_link_problem(2))
        info = M.cpu_cache_info()
        assert info["limit_bytes"] == 0 and info["cached_bytes"] == 0 and info["hits"] == hits
    finally:
        M.set_cpu_cache_limit(before)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="megabytes must be an int in"):
            M.set_cpu_cache_limit(bad)


def test_cpu_block_cache_tensors_are_ordinary_tensors():
    """Tensors from the cache (here attention's output and gradients, 1 MiB each) hold the cache
    as their storage's allocator: they resize, accumulate gradients in place, move to shared
    memory and serialise like any CPU tensor, and their blocks return to the cache when freed."""
    require_backend("cpu")
    import io

    before = M.cpu_cache_info()["limit_bytes"] >> 20
    M.set_cpu_cache_limit(64)
    try:
        M.empty_cpu_cache()
        g = torch.Generator().manual_seed(3)
        q, k, v = (torch.randn(1, 512, 512, generator=g, requires_grad=True) for _ in range(3))
        served = sum(M.cpu_cache_info()[c] for c in ("hits", "misses"))
        out = attnfast.single_head_attention(q, k, v, causal=True, backend="cpu")
        assert sum(M.cpu_cache_info()[c] for c in ("hits", "misses")) > served  # via the cache
        want = attnfast.single_head_attention(q.detach(), k.detach(), v.detach(), causal=True,
                                              backend="reference")
        assert_parity(out.detach(), want, name="attention output from the cache", atol=2e-5, rtol=1e-4)
        out.sum().backward()
        first = k.grad.clone()
        attnfast.single_head_attention(q, k, v, causal=True, backend="cpu").sum().backward()
        assert torch.allclose(k.grad, 2 * first, rtol=1e-6, atol=1e-6)  # accumulated in place

        x = out.detach()
        saved = x.clone()
        buf = io.BytesIO()
        torch.save(x, buf)
        buf.seek(0)
        assert torch.equal(torch.load(buf), saved)
        x.share_memory_()
        assert x.is_shared() and torch.equal(x, saved)
        y = attnfast.single_head_attention(q.detach(), k.detach(), v.detach(), backend="cpu")
        y.resize_(2, 512, 512)  # grows through the same allocator
        y[1].fill_(1.0)
        assert y.shape == (2, 512, 512) and bool((y[1] == 1).all())
        y.resize_(4)
        assert y.shape == (4,)

        cached = M.cpu_cache_info()["cached_bytes"]
        del out, x, y
        q.grad = k.grad = v.grad = None
        assert M.cpu_cache_info()["cached_bytes"] > cached  # blocks came back
    finally:
        M.set_cpu_cache_limit(before)


def test_cpu_block_cache_env_limit():
    require_backend("cpu")
    code = ("import torch, attnfast; from attnfast import memory as M; "
            "x = torch.zeros(1, 1, 512, 512); p = torch.zeros(1, 1, 512); r = torch.zeros(1, 1, 512); "
            "torch.ops.attnfast.dnc_link_read_forward(x, p, p, r); print(M.cpu_cache_info()['limit_bytes'])")
    env = dict(os.environ, ATTNFAST_CPU_CACHE_MB="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == str(3 << 20), out.stderr
    # Not a number, negative, past the int64 byte count, past long long: a clear error each.
    for bad in ("lots", "-1", str(2**43), str(2**70)):
        env["ATTNFAST_CPU_CACHE_MB"] = bad
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.returncode != 0, (bad, out.stdout)
        assert "ATTNFAST_CPU_CACHE_MB must be an integer in [0, 8796093022207]" in out.stderr, out.stderr


def test_set_cpu_cache_limit_range():
    before = M.cpu_cache_info()["limit_bytes"] >> 20
    try:
        M.set_cpu_cache_limit((2**63 - 1) >> 20)  # the largest: accepted, reported as it is
        if attnfast.backends()["cpu"] is None:
            assert M.cpu_cache_info()["limit_bytes"] == ((2**63 - 1) >> 20) << 20
        for bad in (-1, 2**43, 2**80, 1.5, True):
            with pytest.raises(ValueError, match="megabytes must be an int in"):
                M.set_cpu_cache_limit(bad)
    finally:
        M.set_cpu_cache_limit(before)
