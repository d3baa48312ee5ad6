"""The Triton kernels of NTM location addressing, Graves' window, DNC usage and the memory
read (triton_kernels/addressing.py, window.py, allocation.py, read_write.py, through the torch
custom ops that attnfast/ops/spec.py defines from their declarations) against the float64
reference, forward and backward (autograd through the ops' explicit backward kernels), float32 within conftest's FP32_TOL (gradients 5e-5: one more pow/log/exp
chain). Under the Triton interpreter on CPU tensors when there is no GPU: tiny shapes."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from attnfast import memory as M
from attnfast.reference import memory as ref
from conftest import assert_parity, device_for, require_backend

F64 = torch.float64
# The Triton ops (attnfast/ops/spec.py defines them from the C++ schemas): dense, any strides.
_ops = torch.ops.attnfast
mx = SimpleNamespace(ntm_location_forward=_ops.ntm_location_forward_triton,
                     ntm_location_backward=_ops.ntm_location_backward_triton,
                     graves_window_forward=_ops.graves_window_forward_triton,
                     dnc_usage_forward=_ops.dnc_usage_forward_triton,
                     memory_read_forward=_ops.memory_read_forward_triton)


@pytest.fixture(autouse=True)
def _triton():
    require_backend("triton")


def _rand(*shape, g, lo=0.0, hi=1.0):
    return torch.rand(*shape, generator=g, dtype=F64) * (hi - lo) + lo


def _dist(*shape, g, total=1.0):
    x = torch.rand(*shape, generator=g, dtype=F64) + 0.05
    return x / x.sum(-1, keepdim=True) * total


def _parity(kernel_fn, ref_fn, inputs, name, no_grad=()):
    """fp32 kernel outputs and input gradients vs the float64 reference (inputs in no_grad get
    none from either)."""
    dev = device_for("triton")
    x_ref = [t.detach().to(F64).requires_grad_(k not in no_grad) for k, t in enumerate(inputs)]
    x32 = [t.detach().to(torch.float32).to(dev).requires_grad_(k not in no_grad)
           for k, t in enumerate(inputs)]
    o_ref, o32 = ref_fn(*x_ref), kernel_fn(*x32)
    o_ref = o_ref if isinstance(o_ref, tuple) else (o_ref,)
    o32 = o32 if isinstance(o32, tuple) else (o32,)
    for k, (a, o) in enumerate(zip(o32, o_ref)):
        assert a.dtype == torch.float32
        assert_parity(a, o.double(), name=f"{name} out{k}")
    g = torch.Generator().manual_seed(1)
    cot = [torch.randn(o.shape, generator=g, dtype=F64) for o in o_ref]
    req_ref = [t for t in x_ref if t.requires_grad]
    req32 = [t for t in x32 if t.requires_grad]
    g_ref = torch.autograd.grad(o_ref, req_ref, cot, allow_unused=True)
    g32 = torch.autograd.grad(o32, req32, [c.float().to(dev) for c in cot], allow_unused=True)
    for k, (a, o) in enumerate(zip(g32, g_ref)):
        o = torch.zeros_like(req_ref[k]) if o is None else o
        a = torch.zeros_like(req32[k]) if a is None else a
        assert_parity(a, o.double(), name=f"{name} grad{k}", atol=5e-5, rtol=5e-5)


def _ntm_ref(content, gate, prev, shift, gamma):
    g = gate[..., None]
    return ref.ntm_shift_sharpen(g * content + (1 - g) * prev, shift, gamma)


# (B, H, N, S): N = 1; S = 3 / 5 with wrap-around; S > N; N > one slot block (64).
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 2, 6, 3), (1, 2, 5, 5), (1, 1, 3, 5),
                                   (1, 1, 70, 3)])
def test_ntm_location(shape):
    b, h, n, s = shape
    g = torch.Generator().manual_seed(n * 10 + s)
    args = [_dist(b, h, n, g=g), _rand(b, h, g=g), _dist(b, h, n, g=g), _dist(b, h, s, g=g),
            _rand(b, h, g=g, lo=1.0, hi=3.0)]
    _parity(mx.ntm_location_forward, _ntm_ref, args, f"ntm {shape}")


def test_ntm_one_hot_shift_and_zeros():
    """gate 0 keeps a one-hot prev_weights; a one-hot shift of offset +1 moves it from slot 4 to
    slot 0 (wrap-around); the other slots are exactly 0 with finite gradients."""
    n = 5
    dev = device_for("triton")
    prev = torch.zeros(1, 1, n)
    prev[0, 0, 4] = 1
    shift = torch.tensor([[[0.0, 0.0, 1.0]]])
    args = [_dist(1, 1, n, g=torch.Generator().manual_seed(0)).float(), torch.zeros(1, 1), prev,
            shift, torch.full((1, 1), 2.0)]
    args = [a.to(dev) for a in args]
    w = mx.ntm_location_forward(*args)
    expect = torch.zeros(1, 1, n)
    expect[0, 0, 0] = 1
    assert torch.equal(w.cpu(), expect)
    for t in mx.ntm_location_backward(torch.ones(1, 1, n, device=dev), *args):
        assert torch.isfinite(t).all()
    _parity(mx.ntm_location_forward, _ntm_ref, [a.cpu().double() for a in args], "ntm one-hot")


def _graves_ref(a, be, ka, k0, chars, mask=None):
    return ref.graves_window_sequence(a, be, ka, chars, mask, k0)


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 4, 3, 7, 5), (1, 2, 2, 70, 3)])  # B T K U C
def test_graves_window(shape, masked):
    b, t, k, u, c = shape
    g = torch.Generator().manual_seed(sum(shape))
    a, be, ka = (torch.randn(b, t, k, generator=g, dtype=F64) * 0.5 for _ in range(3))
    chars = torch.randn(b, u, c, generator=g, dtype=F64)
    k0 = _rand(b, k, g=g, hi=2.0)
    args = [a, be, ka, k0, chars]
    if masked:
        mask = torch.ones(b, u, dtype=F64)
        if b > 1 and u > 2:
            mask[1, u - 2:] = 0
        args.append(mask)
        fn = mx.graves_window_forward
    else:
        def fn(*x):
            return mx.graves_window_forward(*x, None)
    _parity(fn, _graves_ref, args, f"graves {shape} masked={masked}")


# (B, N, Hw, R): several heads; a freed slot (f = 1 on a one-hot read weighting); R = 0.
@pytest.mark.parametrize("shape", [(2, 1, 1, 1), (2, 6, 2, 3), (2, 5, 1, 0)])
def test_dnc_usage(shape):
    b, n, hw, r = shape
    g = torch.Generator().manual_seed(n + hw + r)
    args = [_rand(b, n, g=g), _dist(b, hw, n, g=g, total=0.9), _rand(b, r, g=g), _dist(b, r, n, g=g)]
    _parity(mx.dnc_usage_forward, ref.dnc_usage, args, f"usage {shape}", no_grad={1})


def test_usage_one_hot_free():
    g = torch.Generator().manual_seed(6)
    n = 5
    rw = torch.zeros(1, 2, n, dtype=F64)
    rw[0, 0, 2] = 1
    rw[0, 1] = _dist(n, g=g)
    args = [_rand(1, n, g=g), _dist(1, 1, n, g=g), torch.tensor([[1.0, 0.5]], dtype=F64), rw]
    _parity(mx.dnc_usage_forward, ref.dnc_usage, args, "usage one-hot free", no_grad={1})
    dev = device_for("triton")
    assert mx.dnc_usage_forward(*(a.float().to(dev) for a in args))[0, 2] == 0


# (B, N, W, R): one slot; W > one column block (64); N > one slot block; R = 0.
@pytest.mark.parametrize("shape", [(1, 1, 3, 1), (2, 7, 5, 3), (1, 40, 70, 2), (1, 4, 3, 0)])
def test_memory_read(shape):
    b, n, w, r = shape
    g = torch.Generator().manual_seed(n * w + r)
    args = [torch.randn(b, n, w, generator=g, dtype=F64), _dist(b, r, n, g=g)]
    _parity(mx.memory_read_forward, ref.memory_read, args, f"read {shape}")


@pytest.mark.parametrize("name,args", [
    ("ntm_address", lambda g: [torch.randn(2, 6, 4, generator=g), torch.randn(2, 2, 4, generator=g),
                               torch.rand(2, 2, generator=g) + 0.5, torch.rand(2, 2, generator=g),
                               torch.softmax(torch.randn(2, 2, 3, generator=g), -1),
                               torch.rand(2, 2, generator=g) + 1, torch.softmax(torch.randn(2, 2, 6, generator=g), -1)]),
    ("graves_window", lambda g: [torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g),
                                 torch.randn(2, 3, generator=g), torch.rand(2, 3, generator=g),
                                 torch.randn(2, 5, 4, generator=g), torch.ones(2, 5, dtype=torch.bool)]),
    ("graves_window_sequence", lambda g: [torch.randn(2, 3, 2, generator=g), torch.randn(2, 3, 2, generator=g),
                                          torch.randn(2, 3, 2, generator=g), torch.randn(2, 5, 4, generator=g)]),
    ("dnc_usage", lambda g: [torch.rand(2, 5, generator=g), torch.rand(2, 1, 5, generator=g) / 5,
                             torch.rand(2, 2, generator=g), torch.rand(2, 2, 5, generator=g) / 5]),
    ("memory_read", lambda g: [torch.randn(2, 5, 3, generator=g), torch.rand(2, 2, 5, generator=g)]),
])
def test_public_api_dispatch(name, args):
    """The public functions with backend="triton" match the reference; float64 is refused with
    the reason."""
    import attnfast

    dev = device_for("triton")
    a = [x.to(dev) for x in args(torch.Generator().manual_seed(0))]
    fn = getattr(M, name)
    out = fn(*a, backend="triton")
    exp = fn(*[x.cpu().double() if x.is_floating_point() else x.cpu() for x in a],
             backend="reference")
    out = out if isinstance(out, tuple) else (out,)
    exp = exp if isinstance(exp, tuple) else (exp,)
    for k, (o, e) in enumerate(zip(out, exp)):
        assert_parity(o, e, name=f"{name} api out{k}")
    assert "triton" in attnfast.explain(name, *a, backend="triton")
    with pytest.raises(attnfast.BackendUnavailable, match="float64"):
        fn(*[x.double() if x.is_floating_point() else x for x in a], backend="triton")


def test_access_step_uses_extra_ops():
    # dnc_access_step on the Triton ops (now with the Triton usage and read) vs the reference.
    from test_memory import interface, random_state

    g = torch.Generator().manual_seed(0)
    s, x = random_state(2, 5, 3, 2, 2, g), interface(2, 5, 3, 2, 2, g)
    k = len(s)

    def step(backend):
        def fn(*a):
            words, st = M.dnc_access_step(M.DNCState(*a[:k]), M.DNCInterface(*a[k:]), backend=backend)
            return (words,) + tuple(st)
        return fn

    # state.write_weights (index 2) gets no gradient (stop_gradient in the usage).
    _parity(step("triton"), step("reference"), list(s) + list(x), "access step", no_grad={2})
