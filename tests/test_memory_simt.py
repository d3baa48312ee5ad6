"""The CUDA memory-addressing kernels (csrc/cuda/memory_kernels.cuh) run on the CPU by the SIMT
harness (torch.ops.attnfast_simt.*, same schemas and glue as the CUDA ops): every op's forward and
backward against the float64 reference (attnfast/reference/memory.py, gradients by autograd), at
tiny shapes (the harness runs every CUDA thread as a fiber). fp32 within conftest's FP32_TOL
(assert_parity); fp64 (also supported by the CUDA kernels) within 1e-10.
"""
from __future__ import annotations

import pytest
import torch

from attnfast.reference import memory as ref
from attnfast.testing import simt
from conftest import assert_parity

_OK, _WHY = simt.simt_available()
pytestmark = pytest.mark.skipif(not _OK, reason=f"SIMT harness unavailable: {_WHY}")

F64 = torch.float64
EPS = ref.EPS
F64_TOL = {"atol": 1e-10, "rtol": 1e-10}


def ops():
    if not hasattr(simt.ops(), "dnc_link_read_forward"):
        pytest.skip("attnfast._simt was built without the memory ops (rebuild the extension)")
    return simt.ops()


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _dist(*shape, g, total=1.0):
    x = torch.rand(*shape, generator=g, dtype=F64) + 0.05
    return x / x.sum(-1, keepdim=True) * total


def _check(kernel_out, oracle, dtype, name):
    tol = F64_TOL if dtype == F64 else {}
    for k, (a, o) in enumerate(zip(kernel_out, oracle)):
        assert a.dtype == dtype, f"{name}[{k}]: dtype {a.dtype}"
        assert_parity(a, o, name=f"{name}[{k}]", **tol)


def _oracle(fn, inputs, cot_seed=1, dtype=F64):
    """Outputs of fn on leaves of `dtype` (float64: the oracle), float64 cotangents, and the input
    gradients (autograd), all returned in float64."""
    x = [t.detach().to(dtype).requires_grad_(True) for t in inputs]
    out = fn(*x)
    out = out if isinstance(out, tuple) else (out,)
    g = _gen(cot_seed)
    cot = [torch.randn(o.shape, generator=g, dtype=F64) for o in out]
    grads = torch.autograd.grad(out, x, [c.to(dtype) for c in cot], allow_unused=True)
    grads = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(x, grads)]
    return [o.detach().double() for o in out], cot, [gr.double() for gr in grads]


SHAPES = [(1, 1, 3, 1), (2, 5, 8, 2), (2, 33, 3, 2), (1, 33, 8, 1)]  # (B, N, W, H)
DTYPES = [torch.float32, F64]


# ---- content addressing --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_content(shape, dtype):
    b, n, w, h = shape
    g = _gen()
    mem = torch.randn(b, n, w, generator=g, dtype=F64)
    mem[0, n // 2] = 0  # a zero row: |M| = sqrt(eps)
    keys = torch.randn(b, h, w, generator=g, dtype=F64)
    beta = torch.rand(b, h, generator=g, dtype=F64) * 4 + 0.5
    out, cot, grads = _oracle(lambda m, k, s: ref.content_addressing(m, k, s, EPS), [mem, keys, beta])
    m_, k_, s_ = (t.to(dtype) for t in (mem, keys, beta))
    weights = ops().memory_content_forward(m_, k_, s_, EPS)
    _check([weights], out, dtype, "content fwd")
    back = ops().memory_content_backward(cot[0].to(dtype), m_, k_, s_, weights, EPS)
    _check(back, grads, dtype, "content bwd")


# ---- allocation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 2), (2, 33, 2), (1, 33, 1)])  # (B, N, Hw)
@pytest.mark.parametrize("ties", [False, True])
def test_allocation(shape, ties, dtype):
    b, n, hw = shape
    g = _gen()
    if ties:  # heavy ties: the stable order (lower index first) decides the allocation
        usage = torch.randint(0, 3, (b, n), generator=g).to(F64) / 4
    else:
        usage = torch.rand(b, n, generator=g, dtype=F64) * 0.9 + 0.05
    gates = torch.rand(b, hw, generator=g, dtype=F64)
    # With ties, a later head's order depends on roundings of the precision in use (a tied slot
    # that got ~1e-8 of allocation stays tied in fp32, not in fp64) and the gradient follows the
    # order: fp32 is then checked against the reference run in fp32 (the same permutations, which
    # every backend must reproduce), fp64 against the fp64 oracle.
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
    g = _gen()
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


# ---- erase / add write -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)  # H = write heads
def test_memory_write(shape, dtype):
    b, n, w, hw = shape
    g = _gen()
    mem = torch.randn(b, n, w, generator=g, dtype=F64)
    ww = _dist(b, hw, n, g=g, total=0.9)
    erase = torch.rand(b, hw, w, generator=g, dtype=F64)
    add = torch.randn(b, hw, w, generator=g, dtype=F64)
    inputs = [mem, ww, erase, add]
    out, cot, grads = _oracle(ref.memory_write, inputs)
    x = [t.to(dtype) for t in inputs]
    _check([ops().memory_write_forward(*x)], out, dtype, "write fwd")
    _check(ops().memory_write_backward(cot[0].to(dtype), *x), grads, dtype, "write bwd")


# ---- temporal link + directional reads -----------------------------------------------------------

def _link_ref(link, prec, ww, rw):
    new_link, new_prec = ref.dnc_link_update(link, prec, ww)
    fwd, bwd = ref.dnc_directional_read(new_link, rw)
    return new_link, new_prec, fwd, bwd


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 5, 2, 2), (2, 5, 1, 0), (1, 5, 1, 5),
                                   (2, 33, 2, 1), (1, 33, 1, 2)])  # (B, N, Hw, R)
def test_link_read(shape, dtype):
    b, n, hw, r = shape
    g = _gen()
    link = torch.rand(b, hw, n, n, generator=g, dtype=F64) / n
    link = link * (1 - torch.eye(n, dtype=F64))
    prec = _dist(b, hw, n, g=g, total=0.7)
    ww = _dist(b, hw, n, g=g, total=0.8)
    rw = _dist(b, r, n, g=g, total=0.9)
    inputs = [link, prec, ww, rw]
    out, cot, grads = _oracle(_link_ref, inputs)
    x = [t.to(dtype) for t in inputs]
    _check(ops().dnc_link_read_forward(*x), out, dtype, "link fwd")
    back = ops().dnc_link_read_backward(*(c.to(dtype) for c in cot), *x)
    _check(back, grads, dtype, "link bwd")


# ---- the shared argument checks --------------------------------------------------------------------

def test_errors_name_the_argument():
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
