"""The CUDA memory kernels (csrc/cuda/memory_*_kernels.cuh) run on the CPU by the SIMT harness
(torch.ops.attnfast_simt.*, same schemas and glue as the CUDA ops): every op's forward and backward
against the float64 reference (attnfast/reference/memory.py, gradients by autograd), at tiny
shapes (the harness runs every CUDA thread as a fiber), with the edges of the CPU kernels' tests in
tests/test_memory.py (N = 1, shift windows 1/3/5 with wrap-around and S > N, one-hot weightings
with exact zeros, gamma = 1, heavy ties in the allocation, a freed slot, masked characters, no read
or write heads). fp32 within conftest's FP32_TOL (the gradients of the NTM location, usage, read
and window ops within F32_GRAD_TOL: one more pow/log/exp chain); fp64 (also supported by the CUDA
kernels) within 1e-10. On a machine with a GPU, the same ops run by the public functions with
backend="cuda" (the CUDA kernels themselves) against the reference.
"""
from __future__ import annotations

import pytest
import torch

from attnfast import memory as M
from attnfast.reference import memory as ref
from attnfast.testing import simt
from conftest import assert_parity, require_backend
from memory_cases import (EPS, F32_GRAD_TOL, F64, access_step, access_step_inputs, allocation_args,
                          backend_parity, check_argument_errors, content_args, dist, gen,
                          graves_inputs, graves_window_ref, link_read_args, link_read_ref,
                          mix_op_cases, ntm_address_args, ntm_location_args, ntm_location_ref,
                          read_args, usage_args, usage_one_hot_free_args, write_args)

_OK, _WHY = simt.simt_available()

DTYPES = [torch.float32, F64]
F64_TOL = {"atol": 1e-10, "rtol": 1e-10}
SHAPES = [(1, 1, 3, 1), (2, 5, 8, 2), (2, 33, 3, 2), (1, 33, 8, 1)]  # (B, N, W, H)


def ops():
    if not _OK:
        pytest.skip(f"SIMT harness unavailable: {_WHY}")
    if not all(hasattr(simt.ops(), op) for op in ("dnc_link_read_forward", "memory_read_forward")):
        pytest.skip("attnfast._simt was built without the memory ops (rebuild the extension)")
    return simt.ops()


def _check(kernel_out, oracle, dtype, name, grads=False):
    """fp64 within F64_TOL; fp32 within FP32_TOL, or (`grads`) F32_GRAD_TOL."""
    tol = F64_TOL if dtype == F64 else (F32_GRAD_TOL if grads else {})
    assert len(kernel_out) == len(oracle), f"{name}: {len(kernel_out)} outputs, want {len(oracle)}"
    for k, (a, o) in enumerate(zip(kernel_out, oracle)):
        assert a.dtype == dtype, f"{name}[{k}]: dtype {a.dtype}"
        assert_parity(a, o, name=f"{name}[{k}]", **tol)


def _oracle(fn, inputs, cot_seed=1, dtype=F64):
    """Outputs of fn on leaves of `dtype` (float64: the oracle), float64 cotangents, and the input
    gradients (autograd; zeros where an input gets none), all returned in float64."""
    x = [t.detach().to(dtype).requires_grad_(True) for t in inputs]
    out = fn(*x)
    out = out if isinstance(out, tuple) else (out,)
    g = gen(cot_seed)
    cot = [torch.randn(o.shape, generator=g, dtype=F64) for o in out]
    grads = torch.autograd.grad(out, x, [c.to(dtype) for c in cot], allow_unused=True)
    grads = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(x, grads)]
    return [o.detach().double() for o in out], cot, [gr.double() for gr in grads]


def _run(op, ref_fn, inputs, dtype, name, grads=False, no_grad=()):
    """The one-output op pair `op`_forward(*inputs) / `op`_backward(grad_out, *inputs) against
    ref_fn: the output, and the gradients of the inputs but those in `no_grad` (which the reference
    gives none: stop_gradient, and for which the op returns none). `grads`: see _check."""
    out, cot, oracle_grads = _oracle(ref_fn, inputs)
    x = [t.to(dtype) for t in inputs]
    y = getattr(ops(), f"{op}_forward")(*x)
    _check([y], out, dtype, f"{name} fwd")
    back = getattr(ops(), f"{op}_backward")(cot[0].to(dtype), *x)
    assert all(oracle_grads[k].abs().sum() == 0 for k in no_grad)
    _check(back, [gr for k, gr in enumerate(oracle_grads) if k not in no_grad], dtype, f"{name} bwd",
           grads=grads)
    return y


# ---- addressing: content -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_content(shape, dtype):
    inputs = content_args(*shape, gen())  # a zero row: |M| = sqrt(eps)
    out, cot, grads = _oracle(lambda m, k, s: ref.content_addressing(m, k, s, EPS), inputs)
    m_, k_, s_ = (t.to(dtype) for t in inputs)
    weights = ops().memory_content_forward(m_, k_, s_, EPS)
    _check([weights], out, dtype, "content fwd")
    back = ops().memory_content_backward(cot[0].to(dtype), m_, k_, s_, weights, EPS)
    _check(back, grads, dtype, "content bwd")


# ---- addressing: NTM location --------------------------------------------------------------------

def _ntm_run(inputs, dtype, name):
    return _run("ntm_location", ntm_location_ref, inputs, dtype, name, grads=True)


# (B, H, N, S): N = 1; S = 1 / 3 / 5; S = N; S > N (taps wrap more than once); N > 256 (several
# slots per thread).
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 2, 6, 3), (2, 1, 7, 5), (1, 2, 5, 5),
                                   (1, 1, 3, 5), (1, 1, 300, 3)])
def test_ntm_location(shape, dtype):
    b, h, n, s = shape
    w = _ntm_run(ntm_location_args(b, h, n, s, gen(n * 10 + s)), dtype, f"ntm {shape}")
    assert (w >= 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_ntm_gamma_one(dtype):
    _ntm_run(ntm_location_args(2, 3, 6, 3, gen(3), gamma=(1.0, 1.0)), dtype, "ntm gamma=1")


@pytest.mark.parametrize("s,shift_k,src,dst", [(3, 2, 4, 0), (3, 0, 0, 4), (5, 0, 1, 4), (5, 4, 3, 0)])
def test_ntm_one_hot_shift_wraps(s, shift_k, src, dst):
    """A one-hot weighting (gate 0 keeps prev_weights) moved by a one-hot shift lands on
    (src + offset) mod N; the other slots are exactly 0 and every gradient is finite."""
    n = 5
    content = dist(1, 1, n, g=gen(0))
    prev = torch.zeros(1, 1, n, dtype=F64)
    prev[0, 0, src] = 1
    shift = torch.zeros(1, 1, s, dtype=F64)
    shift[0, 0, shift_k] = 1
    inputs = [content, torch.zeros(1, 1, dtype=F64), prev, shift, torch.full((1, 1), 2.0, dtype=F64)]
    w = ops().ntm_location_forward(*inputs)
    expect = torch.zeros(1, 1, n, dtype=F64)
    expect[0, 0, dst] = 1
    assert torch.equal(w, expect)
    back = ops().ntm_location_backward(torch.ones(1, 1, n, dtype=F64), *inputs)
    for a in back:
        assert torch.isfinite(a).all()
    cot = torch.randn(1, 1, n, generator=gen(1), dtype=F64)
    x = [t.clone().requires_grad_(True) for t in inputs]
    oracle = torch.autograd.grad(ntm_location_ref(*x), x, cot)
    _check(ops().ntm_location_backward(cot, *inputs), oracle, F64, "ntm one-hot bwd")


def test_ntm_partial_zero_weights():
    """Some shifted weights exactly 0, others not: the zeros stay 0 and carry no gradient."""
    inputs = ntm_location_args(2, 2, 6, 3, gen(4))
    prev = torch.zeros(2, 2, 6, dtype=F64)
    prev[..., 1], prev[..., 2] = 0.7, 0.3
    inputs[1] = torch.zeros(2, 2, dtype=F64)  # gate 0: w_g = prev_weights exactly
    inputs[2] = prev
    w = _ntm_run(inputs, torch.float32, "ntm zeros")
    assert (w[..., 4:] == 0).all() and (w[..., 0] > 0).all()


# ---- allocation: allocation weights --------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 2), (2, 33, 2), (1, 33, 1)])  # (B, N, Hw)
@pytest.mark.parametrize("ties", [False, True])
def test_allocation(shape, ties, dtype):
    # With heavy ties, a later head's order depends on roundings of the precision in use (a tied
    # slot that got ~1e-8 of allocation stays tied in fp32, not in fp64) and the gradient follows
    # the order: fp32 is then checked against the reference run in fp32 (the same permutations,
    # which every backend must reproduce), fp64 against the fp64 oracle.
    usage, gates = allocation_args(*shape, gen(), ties=ties)
    oracle_dtype = dtype if ties else F64
    out, cot, grads = _oracle(lambda u, gt: ref.dnc_allocation(u, gt, EPS), [usage, gates],
                              dtype=oracle_dtype)
    u_, g_ = usage.to(dtype), gates.to(dtype)
    alloc = ops().dnc_allocation_forward(u_, g_, EPS)
    _check([alloc], out, dtype, "allocation fwd")
    back = ops().dnc_allocation_backward(cot[0].to(dtype), u_, g_, EPS)
    _check(back, grads, dtype, "allocation bwd")


def test_allocation_large_fp64_opts_into_shared_memory():
    # N = 4096 in float64 needs 52 KiB of dynamic shared memory: the launcher must opt in (the
    # harness rejects > 48 KiB without it, as a GPU does). Heavy ties across 4096 slots.
    b, n, hw = 1, 4096, 2
    g = gen()
    usage = torch.randint(0, 5, (b, n), generator=g).to(F64) / 5
    gates = torch.rand(b, hw, generator=g, dtype=F64)
    out, cot, grads = _oracle(lambda u, gt: ref.dnc_allocation(u, gt, EPS), [usage, gates])
    alloc = ops().dnc_allocation_forward(usage, gates, EPS)
    _check([alloc], out, F64, "allocation fwd N=4096")
    back = ops().dnc_allocation_backward(cot[0], usage, gates, EPS)
    _check(back, grads, F64, "allocation bwd N=4096")


def test_allocation_rejects_too_many_slots():
    usage = torch.rand(1, 8193)
    with pytest.raises(RuntimeError, match=r"N <= 8192"):
        ops().dnc_allocation_forward(usage, torch.ones(1, 1), EPS)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_mix_ops(dtype):
    """dnc_write_weights_* (gates, the allocation kernels, the mix) and dnc_read_mix_* (the mix,
    the read kernels, the mode gradients) at memory_cases.MIX_SHAPES, forward and backward."""
    mix_op_cases(ops(), [dtype])


# ---- allocation: usage ---------------------------------------------------------------------------

def _usage_run(inputs, dtype, name):
    # write_weights get no gradient (stop_gradient): the op returns none for them.
    return _run("dnc_usage", ref.dnc_usage, inputs, dtype, name, grads=True, no_grad={1})


# (B, N, Hw, R): N = 1; several heads; N > 256; no read heads; no write heads.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 1, 1, 1), (2, 6, 2, 3), (1, 9, 1, 5), (1, 300, 2, 2),
                                   (2, 5, 1, 0), (2, 5, 0, 2)])
def test_dnc_usage(shape, dtype):
    b, n, hw, r = shape
    _usage_run(usage_args(b, n, hw, r, gen(n + hw + r)), dtype, f"usage {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_usage_one_hot_free(dtype):
    """f = 1 on a one-hot read weighting: that slot is freed (usage exactly 0)."""
    new = _usage_run(usage_one_hot_free_args(), dtype, "usage one-hot free")
    assert new[0, 2] == 0


# ---- read / write --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)  # H = write heads
def test_memory_write(shape, dtype):
    _run("memory_write", ref.memory_write, write_args(*shape, gen()), dtype, "write")


# (B, N, W, R): single slot; R > kReadChunk (4) heads; W > 32 (two column chunks); N > 256; R = 0.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 3, 1), (2, 7, 5, 3), (2, 9, 40, 6), (1, 300, 3, 2),
                                   (1, 4, 3, 0)])
def test_memory_read(shape, dtype):
    b, n, w, r = shape
    _run("memory_read", ref.memory_read, read_args(b, n, w, r, gen(n * w + r)), dtype, f"read {shape}",
         grads=True)


# ---- links: temporal link update + directional reads ---------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 5, 2, 2), (2, 5, 1, 0), (1, 5, 1, 5),
                                   (2, 33, 2, 1), (1, 33, 1, 2)])  # (B, N, Hw, R)
def test_link_read(shape, dtype):
    inputs = link_read_args(*shape, gen())
    out, cot, grads = _oracle(link_read_ref, inputs)
    x = [t.to(dtype) for t in inputs]
    _check(ops().dnc_link_read_forward(*x), out, dtype, "link fwd")
    back = ops().dnc_link_read_backward(*(c.to(dtype) for c in cot), *x)
    _check(back, grads, dtype, "link bwd")


# ---- window: Graves' soft window -----------------------------------------------------------------

# (B, T, K, U, C): all ones; a few steps and Gaussians; U > 256 chars (several per thread) with
# C > 256 columns in the window.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 4, 3, 7, 5), (3, 6, 2, 9, 4),
                                   (1, 2, 2, 300, 260)])
def test_graves_window(shape, masked, dtype):
    a, be, ka, chars, mask, k0 = graves_inputs(*shape, gen(sum(shape)), one_hot=shape[3] < 100)
    inputs = [a, be, ka, k0, chars] + ([mask] if masked else [])
    out, cot, grads = _oracle(graves_window_ref, inputs)
    x = [t.to(dtype) for t in inputs]
    m = x[5] if masked else None
    fwd = ops().graves_window_forward(*x[:5], m)
    _check(fwd, out, dtype, f"graves {shape} fwd")
    back = ops().graves_window_backward(*(c.to(dtype) for c in cot), *x[:5], m)
    if not masked:
        assert back[5].shape == (0,)
        back = back[:5]
    _check(back, grads, dtype, f"graves {shape} bwd", grads=True)


def test_graves_masked_chars_are_zero():
    a, be, ka, chars, mask, k0 = graves_inputs(2, 5, 3, 7, 5, gen(5))
    _, _, phi = ops().graves_window_forward(a, be, ka, k0, chars, mask)
    assert phi[1, :, 5:].abs().max() == 0 and (phi[0] > 0).all()


# ---- the shared argument checks ------------------------------------------------------------------

def test_content_write_link_errors_name_the_argument():
    o = ops()
    with pytest.raises(RuntimeError, match=r"memory_content: keys must have shape"):
        o.memory_content_forward(torch.rand(2, 5, 3), torch.rand(2, 1, 4), torch.rand(2, 1), EPS)
    with pytest.raises(RuntimeError, match=r"float32 or float64"):
        o.memory_write_forward(*(torch.rand(s, dtype=torch.float16) for s in
                                 [(1, 4, 3), (1, 1, 4), (1, 1, 3), (1, 1, 3)]))
    with pytest.raises(RuntimeError, match=r"dnc_link_read_backward: grad_forward must have shape"):
        link, p = torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4)
        o.dnc_link_read_backward(link, p, torch.rand(1, 2, 1, 3), torch.rand(1, 2, 1, 4), link, p, p,
                                 torch.rand(1, 2, 4))


def test_ntm_read_window_usage_errors_name_the_argument():
    o = ops()
    check_argument_errors(o)
    w = torch.rand(1, 1, 5)
    with pytest.raises(RuntimeError, match="ntm_location_backward: grad_weights must have shape"):
        o.ntm_location_backward(torch.rand(1, 1, 4), w, torch.rand(1, 1), w, torch.rand(1, 1, 3),
                                torch.ones(1, 1))
    with pytest.raises(RuntimeError, match="memory_read_backward: grad_words must have shape"):
        o.memory_read_backward(torch.rand(1, 2, 2), torch.rand(1, 5, 2), w)


# ---- the CUDA kernels themselves (GPU machines only), by concept ---------------------------------

def _cuda_parity(name, inputs, no_grad=()):
    """fp32 CUDA outputs and gradients (within F32_GRAD_TOL) of the public function vs the float64
    reference."""
    backend_parity(getattr(M, name), inputs, "cuda", f"{name} cuda", no_grad=no_grad,
                   grad_tol=F32_GRAD_TOL)


@pytest.mark.parametrize("n,s", [(1, 1), (7, 5), (300, 3)])
def test_cuda_ntm_address(n, s):
    _cuda_parity("ntm_address", ntm_address_args(2, 2, n, 4, s, gen(n + s)))


def test_cuda_usage_and_read():
    g = gen(8)
    _cuda_parity("dnc_usage", usage_args(2, 300, 2, 3, g), no_grad={1})
    _cuda_parity("memory_read", read_args(2, 300, 40, 6, g))


@pytest.mark.parametrize("masked", [True, False])
def test_cuda_graves_window_sequence(masked):
    a, be, ka, chars, mask, k0 = graves_inputs(2, 5, 3, 300, 40, gen(7), one_hot=False)
    _cuda_parity("graves_window_sequence", [a, be, ka, chars] + ([mask, k0] if masked else []))
    _cuda_parity("graves_window", [a[:, 0], be[:, 0], ka[:, 0], k0, chars])


def test_cuda_access_step_uses_the_usage_and_read_kernels():
    require_backend("cuda")
    flat = access_step_inputs(2, 5, 3, 2, 2, gen(0))
    out = access_step(*(t.float().cuda() for t in flat), backend="cuda")
    exp = access_step(*flat, backend="reference")
    for i, (o, e) in enumerate(zip(out, exp)):
        assert_parity(o, e, name=f"access step cuda out{i}")
