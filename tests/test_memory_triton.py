"""The Triton kernels of content addressing, DNC allocation, the erase/add write and the DNC links
(triton_kernels/addressing.py, allocation.py, read_write.py, links.py, through the torch custom
ops that attnfast/ops/spec.py defines from their declarations) against the float64 reference,
forward and backward (autograd
through the ops' explicit backward kernels), float32 within conftest's FP32_TOL. Under the Triton
interpreter on CPU tensors when there is no GPU: tiny shapes."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import attnfast
from attnfast import memory as M
from attnfast.reference import memory as ref
from conftest import assert_parity, device_for, require_backend

F64 = torch.float64
EPS = ref.EPS
# The Triton ops (attnfast/ops/spec.py defines them from the C++ schemas): dense, any strides.
_ops = torch.ops.attnfast
mt = SimpleNamespace(content_forward=_ops.memory_content_forward_triton,
                     allocation_forward=_ops.dnc_allocation_forward_triton,
                     write_forward=_ops.memory_write_forward_triton,
                     link_read_forward=_ops.dnc_link_read_forward_triton)


@pytest.fixture(autouse=True)
def _triton():
    require_backend("triton")


def _dist(*shape, g, total=1.0):
    x = torch.rand(*shape, generator=g, dtype=F64) + 0.05
    return x / x.sum(-1, keepdim=True) * total


def _parity(kernel_fn, ref_fn, inputs, name, oracle_dtype=F64):
    """fp32 kernel outputs and input gradients vs the reference in `oracle_dtype` (float64)."""
    dev = device_for("triton")
    x_ref = [t.detach().to(oracle_dtype).requires_grad_(True) for t in inputs]
    x32 = [t.detach().to(torch.float32).to(dev).requires_grad_(True) for t in inputs]
    o_ref, o32 = ref_fn(*x_ref), kernel_fn(*x32)
    o_ref = o_ref if isinstance(o_ref, tuple) else (o_ref,)
    o32 = o32 if isinstance(o32, tuple) else (o32,)
    g = torch.Generator().manual_seed(1)
    cot = [torch.randn(o.shape, generator=g, dtype=F64) for o in o_ref]
    for k, (a, o) in enumerate(zip(o32, o_ref)):
        assert a.dtype == torch.float32
        assert_parity(a, o.double(), name=f"{name} out{k}")
    g_ref = torch.autograd.grad(o_ref, x_ref, [c.to(oracle_dtype) for c in cot], allow_unused=True)
    g32 = torch.autograd.grad(o32, x32, [c.float().to(dev) for c in cot], allow_unused=True)
    for k, (a, o) in enumerate(zip(g32, g_ref)):
        o = torch.zeros_like(x_ref[k]) if o is None else o
        a = torch.zeros_like(x32[k]) if a is None else a
        assert_parity(a, o.double(), name=f"{name} grad{k}")


@pytest.mark.parametrize("shape", [(1, 1, 3, 1), (2, 5, 8, 2), (2, 33, 3, 2)])  # B N W H
def test_content(shape):
    b, n, w, h = shape
    g = torch.Generator().manual_seed(0)
    mem = torch.randn(b, n, w, generator=g, dtype=F64)
    mem[0, n // 2] = 0
    args = [mem, torch.randn(b, h, w, generator=g, dtype=F64),
            torch.rand(b, h, generator=g, dtype=F64) * 4 + 0.5]
    _parity(lambda m, k, s: mt.content_forward(m, k, s, EPS),
            lambda m, k, s: ref.content_addressing(m, k, s, EPS), args, "content")


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 2), (2, 33, 2)])  # B N Hw
@pytest.mark.parametrize("ties", [False, True])
def test_allocation(shape, ties):
    b, n, hw = shape
    g = torch.Generator().manual_seed(0)
    if ties:
        usage = torch.randint(0, 3, (b, n), generator=g).to(F64) / 4
    else:
        usage = torch.rand(b, n, generator=g, dtype=F64) * 0.9 + 0.05
    gates = torch.rand(b, hw, generator=g, dtype=F64)
    # With ties a later head's order depends on the precision's roundings (see
    # tests/test_memory_simt.py): compare with the reference run in fp32 (same permutations).
    _parity(lambda u, gt: mt.allocation_forward(u, gt, EPS),
            lambda u, gt: ref.dnc_allocation(u, gt, EPS), [usage, gates], "allocation",
            oracle_dtype=torch.float32 if ties else F64)


@pytest.mark.parametrize("shape", [(1, 1, 3, 1), (2, 5, 8, 2), (2, 33, 3, 2)])  # B N W Hw
def test_memory_write(shape):
    b, n, w, hw = shape
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(b, n, w, generator=g, dtype=F64), _dist(b, hw, n, g=g, total=0.9),
            torch.rand(b, hw, w, generator=g, dtype=F64), torch.randn(b, hw, w, generator=g, dtype=F64)]
    _parity(mt.write_forward, ref.memory_write, args, "write")


def _link_ref(link, prec, ww, rw):
    new_link, new_prec = ref.dnc_link_update(link, prec, ww)
    return (new_link, new_prec) + ref.dnc_directional_read(new_link, rw)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 5, 2, 2), (2, 5, 1, 0), (1, 33, 2, 1)])  # B N Hw R
def test_link_read(shape):
    b, n, hw, r = shape
    g = torch.Generator().manual_seed(0)
    link = torch.rand(b, hw, n, n, generator=g, dtype=F64) / n * (1 - torch.eye(n, dtype=F64))
    args = [link, _dist(b, hw, n, g=g, total=0.7), _dist(b, hw, n, g=g, total=0.8),
            _dist(b, r, n, g=g, total=0.9)]
    _parity(mt.link_read_forward, _link_ref, args, "link")


def test_public_api_and_dispatch():
    dev = device_for("triton")
    g = torch.Generator().manual_seed(0)
    mem = torch.randn(2, 6, 4, generator=g).to(dev)
    keys, beta = torch.randn(2, 1, 4, generator=g).to(dev), torch.ones(2, 1).to(dev)
    w = M.content_addressing(mem, keys, beta, backend="triton")
    assert_parity(w, ref.content_addressing(mem.double().cpu(), keys.double().cpu(),
                                            beta.double().cpu()), name="api content")
    assert "triton" in attnfast.explain("content_addressing", mem, keys, beta, backend="triton")
    with pytest.raises(attnfast.BackendUnavailable, match="float64"):
        M.content_addressing(mem.double(), keys.double(), beta.double(), backend="triton")


def test_access_step():
    # dnc_access_step on the Triton ops (usage / read-mode mix / read are torch ops), forward and
    # gradients of every state and interface tensor except state.write_weights (stop_gradient).
    from test_memory import interface, random_state

    g = torch.Generator().manual_seed(0)
    s, x = random_state(2, 5, 3, 2, 2, g), interface(2, 5, 3, 2, 2, g)
    k = len(s)

    def step(backend):
        def fn(*a):
            words, st = M.dnc_access_step(M.DNCState(*a[:k]), M.DNCInterface(*a[k:]), backend=backend)
            return (words,) + tuple(st)
        return fn

    _parity(step("triton"), step("reference"), list(s) + list(x), "access step")


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous layout (a transposed copy, transposed back)."""
    return t.transpose(0, -1).contiguous().transpose(0, -1) if t.dim() > 1 else t[::1]


@pytest.mark.parametrize("op", ["content", "allocation", "write", "link"])
def test_backward_takes_non_contiguous_inputs(op):
    """The forward makes its inputs contiguous; the backward gets the *saved* (strided) inputs
    and must do the same, or the kernels read them with the wrong strides (silently wrong grads)."""
    g = torch.Generator().manual_seed(3)
    b, n, w, hw, r = 2, 6, 5, 2, 3
    cases = {
        "content": ([torch.randn(b, n, w, generator=g, dtype=F64), torch.randn(b, hw, w, generator=g, dtype=F64),
                     torch.rand(b, hw, generator=g, dtype=F64) + 0.5],
                    lambda m, k, s: mt.content_forward(m, k, s, EPS),
                    lambda m, k, s: ref.content_addressing(m, k, s, EPS)),
        "allocation": ([torch.rand(b, n, generator=g, dtype=F64), torch.rand(b, hw, generator=g, dtype=F64)],
                       lambda u, gt: mt.allocation_forward(u, gt, EPS),
                       lambda u, gt: ref.dnc_allocation(u, gt, EPS)),
        "write": ([torch.randn(b, n, w, generator=g, dtype=F64), _dist(b, hw, n, g=g, total=0.9),
                   torch.rand(b, hw, w, generator=g, dtype=F64), torch.randn(b, hw, w, generator=g, dtype=F64)],
                  mt.write_forward, ref.memory_write),
        "link": ([torch.rand(b, hw, n, n, generator=g, dtype=F64) * 0.2, _dist(b, hw, n, g=g, total=0.8),
                  _dist(b, hw, n, g=g, total=0.7), _dist(b, r, n, g=g)],
                 mt.link_read_forward, _link_ref),
    }
    inputs, kernel_fn, ref_fn = cases[op]

    def strided_kernel(*xs):
        strided = [_strided(x) for x in xs]
        assert all(not s.is_contiguous() for s in strided if s.dim() > 1 and s.shape[0] > 1 and s.shape[-1] > 1)
        return kernel_fn(*strided)

    _parity(strided_kernel, ref_fn, inputs, f"{op} (non-contiguous)")
