"""The CUDA kernels of the second memory group (csrc/cuda/memory_extra_kernels.cuh: NTM location,
Graves' window, DNC usage, memory read) run on the CPU by the SIMT harness
(torch.ops.attnfast_simt.*, same schemas and glue as the CUDA ops): every op's forward and
backward against the float64 reference (attnfast/reference/memory.py, gradients by autograd), at
tiny shapes, with the edges of tests/test_memory_cpu_extra.py (N = 1, shift windows 1/3/5 with
wrap-around and S > N, one-hot weightings with exact zeros, gamma = 1, masked characters, a freed
slot, R = 0). fp32 within conftest's FP32_TOL (gradients 5e-5: one more pow/log/exp chain); fp64
within 1e-10. On a machine with a GPU, the same ops run by the public functions with
backend="cuda" (the CUDA kernels themselves) against the reference.
"""
from __future__ import annotations

import pytest
import torch

from attnfast.reference import memory as ref
from attnfast.testing import simt
from attnfast import memory as M
from conftest import assert_parity, require_backend

_OK, _WHY = simt.simt_available()

F64 = torch.float64
DTYPES = [torch.float32, F64]
F64_TOL = {"atol": 1e-10, "rtol": 1e-10}
F32_GRAD_TOL = {"atol": 5e-5, "rtol": 5e-5}


def ops():
    if not _OK:
        pytest.skip(f"SIMT harness unavailable: {_WHY}")
    if not hasattr(simt.ops(), "memory_read_forward"):
        pytest.skip("attnfast._simt was built without the second group of memory ops "
                    "(rebuild the extension)")
    return simt.ops()


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _rand(*shape, g, lo=0.0, hi=1.0):
    return torch.rand(*shape, generator=g, dtype=F64) * (hi - lo) + lo


def _dist(*shape, g, total=1.0):
    x = torch.rand(*shape, generator=g, dtype=F64) + 0.05
    return x / x.sum(-1, keepdim=True) * total


def _check(kernel_out, oracle, dtype, name, grads=False):
    tol = F64_TOL if dtype == F64 else (F32_GRAD_TOL if grads else {})
    assert len(kernel_out) == len(oracle), f"{name}: {len(kernel_out)} outputs, want {len(oracle)}"
    for k, (a, o) in enumerate(zip(kernel_out, oracle)):
        assert a.dtype == dtype, f"{name}[{k}]: dtype {a.dtype}"
        assert_parity(a, o, name=f"{name}[{k}]", **tol)


def _oracle(fn, inputs, cot_seed=1):
    """float64 outputs of fn, float64 cotangents and the input gradients (autograd; zeros where
    an input gets none)."""
    x = [t.detach().to(F64).requires_grad_(True) for t in inputs]
    out = fn(*x)
    out = out if isinstance(out, tuple) else (out,)
    g = _gen(cot_seed)
    cot = [torch.randn(o.shape, generator=g, dtype=F64) for o in out]
    grads = torch.autograd.grad(out, x, cot, allow_unused=True)
    grads = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(x, grads)]
    return [o.detach() for o in out], cot, [gr.detach() for gr in grads]


# ---- NTM location addressing ---------------------------------------------------------------------

def _ntm_ref(content, gate, prev, shift, gamma):
    g = gate[..., None]
    return ref.ntm_shift_sharpen(g * content + (1 - g) * prev, shift, gamma)


def _ntm_inputs(b, h, n, s, g, gamma=(1.0, 3.0)):
    return [_dist(b, h, n, g=g), _rand(b, h, g=g), _dist(b, h, n, g=g), _dist(b, h, s, g=g),
            _rand(b, h, g=g, lo=gamma[0], hi=gamma[1])]


def _ntm_run(inputs, dtype, name):
    out, cot, grads = _oracle(_ntm_ref, inputs)
    x = [t.to(dtype) for t in inputs]
    w = ops().ntm_location_forward(*x)
    _check([w], out, dtype, f"{name} fwd")
    _check(ops().ntm_location_backward(cot[0].to(dtype), *x), grads, dtype, f"{name} bwd",
           grads=True)
    return w


# (B, H, N, S): N = 1; S = 1 / 3 / 5; S = N; S > N (taps wrap more than once); N > 256 (several
# slots per thread).
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 2, 6, 3), (2, 1, 7, 5), (1, 2, 5, 5),
                                   (1, 1, 3, 5), (1, 1, 300, 3)])
def test_ntm_location(shape, dtype):
    b, h, n, s = shape
    w = _ntm_run(_ntm_inputs(b, h, n, s, _gen(n * 10 + s)), dtype, f"ntm {shape}")
    assert (w >= 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_ntm_gamma_one(dtype):
    _ntm_run(_ntm_inputs(2, 3, 6, 3, _gen(3), gamma=(1.0, 1.0)), dtype, "ntm gamma=1")


@pytest.mark.parametrize("s,shift_k,src,dst", [(3, 2, 4, 0), (3, 0, 0, 4), (5, 0, 1, 4), (5, 4, 3, 0)])
def test_ntm_one_hot_shift_wraps(s, shift_k, src, dst):
    """A one-hot weighting (gate 0 keeps prev_weights) moved by a one-hot shift lands on
    (src + offset) mod N; the other slots are exactly 0 and every gradient is finite."""
    n = 5
    content = _dist(1, 1, n, g=_gen(0))
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
    cot = torch.randn(1, 1, n, generator=_gen(1), dtype=F64)
    x = [t.clone().requires_grad_(True) for t in inputs]
    oracle = torch.autograd.grad(_ntm_ref(*x), x, cot)
    _check(ops().ntm_location_backward(cot, *inputs), oracle, F64, "ntm one-hot bwd")


def test_ntm_partial_zero_weights():
    """Some shifted weights exactly 0, others not: the zeros stay 0 and carry no gradient."""
    g = _gen(4)
    inputs = _ntm_inputs(2, 2, 6, 3, g)
    prev = torch.zeros(2, 2, 6, dtype=F64)
    prev[..., 1], prev[..., 2] = 0.7, 0.3
    inputs[1] = torch.zeros(2, 2, dtype=F64)  # gate 0: w_g = prev_weights exactly
    inputs[2] = prev
    w = _ntm_run(inputs, torch.float32, "ntm zeros")
    assert (w[..., 4:] == 0).all() and (w[..., 0] > 0).all()


# ---- Graves' window ------------------------------------------------------------------------------

def _graves_inputs(b, t, k, u, c, g, one_hot=True):
    a, be, ka = (torch.randn(b, t, k, generator=g, dtype=F64) * 0.5 for _ in range(3))
    if one_hot:
        chars = torch.nn.functional.one_hot(torch.randint(0, c, (b, u), generator=g), c).to(F64)
    else:
        chars = torch.randn(b, u, c, generator=g, dtype=F64)
    mask = torch.ones(b, u, dtype=F64)
    if b > 1 and u > 2:
        mask[1, u - 2:] = 0  # the second sequence is 2 characters shorter (padding)
    return a, be, ka, _rand(b, k, g=g, hi=2.0), chars, mask


def _graves_ref(a, be, ka, k0, chars, mask=None):
    return ref.graves_window_sequence(a, be, ka, chars, mask, k0)


# (B, T, K, U, C): all ones; a few steps and Gaussians; U > 256 chars (several per thread) with
# C > 256 columns in the window.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 4, 3, 7, 5), (3, 6, 2, 9, 4),
                                   (1, 2, 2, 300, 260)])
def test_graves_window(shape, masked, dtype):
    a, be, ka, k0, chars, mask = _graves_inputs(*shape, _gen(sum(shape)), one_hot=shape[3] < 100)
    inputs = [a, be, ka, k0, chars] + ([mask] if masked else [])
    out, cot, grads = _oracle(_graves_ref, inputs)
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
    a, be, ka, k0, chars, mask = _graves_inputs(2, 5, 3, 7, 5, _gen(5))
    _, _, phi = ops().graves_window_forward(a, be, ka, k0, chars, mask)
    assert phi[1, :, 5:].abs().max() == 0 and (phi[0] > 0).all()


# ---- DNC usage -----------------------------------------------------------------------------------

# (B, N, Hw, R): N = 1; several heads; N > 256; no read heads; no write heads.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 1, 1, 1), (2, 6, 2, 3), (1, 9, 1, 5), (1, 300, 2, 2),
                                   (2, 5, 1, 0), (2, 5, 0, 2)])
def test_dnc_usage(shape, dtype):
    b, n, hw, r = shape
    g = _gen(n + hw + r)
    inputs = [_rand(b, n, g=g), _dist(b, hw, n, g=g, total=0.9), _rand(b, r, g=g), _dist(b, r, n, g=g)]
    _usage_run(inputs, dtype, f"usage {shape}")


def _usage_run(inputs, dtype, name):
    out, cot, grads = _oracle(ref.dnc_usage, inputs)
    x = [t.to(dtype) for t in inputs]
    new = ops().dnc_usage_forward(*x)
    _check([new], out, dtype, f"{name} fwd")
    back = ops().dnc_usage_backward(cot[0].to(dtype), *x)
    # write_weights get no gradient (stop_gradient): the op returns none for them.
    assert grads[1].abs().sum() == 0
    _check(back, [grads[0], grads[2], grads[3]], dtype, f"{name} bwd", grads=True)
    return new


@pytest.mark.parametrize("dtype", DTYPES)
def test_usage_one_hot_free(dtype):
    """f = 1 on a one-hot read weighting: the factor 1 - f w is exactly 0 (that slot is freed) and
    the other heads' gradients need no division by it."""
    g = _gen(6)
    n = 5
    rw = torch.zeros(1, 2, n, dtype=F64)
    rw[0, 0, 2] = 1
    rw[0, 1] = _dist(n, g=g)
    inputs = [_rand(1, n, g=g), _dist(1, 1, n, g=g), torch.tensor([[1.0, 0.5]], dtype=F64), rw]
    new = _usage_run(inputs, dtype, "usage one-hot free")
    assert new[0, 2] == 0


# ---- memory read ---------------------------------------------------------------------------------

# (B, N, W, R): single slot; R > kReadChunk (4) heads; W > 32 (two column chunks); N > 256; R = 0.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 3, 1), (2, 7, 5, 3), (2, 9, 40, 6), (1, 300, 3, 2),
                                   (1, 4, 3, 0)])
def test_memory_read(shape, dtype):
    b, n, w, r = shape
    g = _gen(n * w + r)
    inputs = [torch.randn(b, n, w, generator=g, dtype=F64), _dist(b, r, n, g=g)]
    out, cot, grads = _oracle(ref.memory_read, inputs)
    x = [t.to(dtype) for t in inputs]
    _check([ops().memory_read_forward(*x)], out, dtype, f"read {shape} fwd")
    _check(ops().memory_read_backward(cot[0].to(dtype), *x), grads, dtype, f"read {shape} bwd",
           grads=True)


# ---- the shared argument checks ------------------------------------------------------------------

def test_errors_name_the_argument():
    o = ops()
    w = torch.rand(1, 1, 5)
    with pytest.raises(RuntimeError, match="shift must have an odd last dim"):
        o.ntm_location_forward(w, torch.rand(1, 1), w, torch.rand(1, 1, 2), torch.ones(1, 1))
    with pytest.raises(RuntimeError, match="ntm_location_backward: grad_weights must have shape"):
        o.ntm_location_backward(torch.rand(1, 1, 4), w, torch.rand(1, 1), w, torch.rand(1, 1, 3),
                                torch.ones(1, 1))
    with pytest.raises(RuntimeError, match="float32 or float64"):
        o.memory_read_forward(torch.rand(1, 5, 2).half(), w.half())
    with pytest.raises(RuntimeError, match="char_mask must have shape"):
        o.graves_window_forward(torch.rand(1, 2, 3), torch.rand(1, 2, 3), torch.rand(1, 2, 3),
                                torch.rand(1, 3), torch.rand(1, 4, 2), torch.ones(1, 5))
    with pytest.raises(RuntimeError, match="free_gate must have shape"):
        o.dnc_usage_forward(torch.rand(1, 5), w, torch.rand(1, 2), w)
    with pytest.raises(RuntimeError, match="memory_read_backward: grad_words must have shape"):
        o.memory_read_backward(torch.rand(1, 2, 2), torch.rand(1, 5, 2), w)


# ---- the CUDA kernels themselves (GPU machines only) ---------------------------------------------

def _cuda_parity(name, inputs, no_grad=()):
    """fp32 CUDA outputs and gradients of the public function vs the float64 reference."""
    require_backend("cuda")
    fn = getattr(M, name)
    x64 = [t.detach().clone().requires_grad_(k not in no_grad) for k, t in enumerate(inputs)]
    x32 = [t.detach().float().cuda().requires_grad_(k not in no_grad) for k, t in enumerate(inputs)]
    o64, o32 = fn(*x64, backend="reference"), fn(*x32, backend="cuda")
    o64 = o64 if isinstance(o64, tuple) else (o64,)
    o32 = o32 if isinstance(o32, tuple) else (o32,)
    for k, (a, o) in enumerate(zip(o32, o64)):
        assert a.is_cuda and a.dtype == torch.float32
        assert_parity(a, o, name=f"{name} cuda out{k}")
    g = _gen(1)
    cot = [torch.randn(o.shape, generator=g, dtype=F64) for o in o64]
    r64 = [t for t in x64 if t.requires_grad]
    r32 = [t for t in x32 if t.requires_grad]
    g64 = torch.autograd.grad(o64, r64, cot, allow_unused=True)
    g32 = torch.autograd.grad(o32, r32, [c.float().cuda() for c in cot], allow_unused=True)
    for k, (a, o) in enumerate(zip(g32, g64)):
        o = torch.zeros_like(r64[k]) if o is None else o
        a = torch.zeros_like(r32[k]) if a is None else a
        assert_parity(a, o, name=f"{name} cuda grad{k}", **F32_GRAD_TOL)


@pytest.mark.parametrize("n,s", [(1, 1), (7, 5), (300, 3)])
def test_cuda_ntm_address(n, s):
    g = _gen(n + s)
    _cuda_parity("ntm_address", [torch.randn(2, n, 4, generator=g, dtype=F64),
                                 torch.randn(2, 2, 4, generator=g, dtype=F64),
                                 _rand(2, 2, g=g, lo=0.5, hi=3), _rand(2, 2, g=g),
                                 _dist(2, 2, s, g=g), _rand(2, 2, g=g, lo=1, hi=3),
                                 _dist(2, 2, n, g=g)])


@pytest.mark.parametrize("masked", [True, False])
def test_cuda_graves_window_sequence(masked):
    a, be, ka, k0, chars, mask = _graves_inputs(2, 5, 3, 300, 40, _gen(7), one_hot=False)
    _cuda_parity("graves_window_sequence", [a, be, ka, chars] + ([mask, k0] if masked else []))
    _cuda_parity("graves_window", [a[:, 0], be[:, 0], ka[:, 0], k0, chars])


def test_cuda_usage_and_read():
    g = _gen(8)
    _cuda_parity("dnc_usage", [_rand(2, 300, g=g), _dist(2, 2, 300, g=g, total=0.9),
                               _rand(2, 3, g=g), _dist(2, 3, 300, g=g)], no_grad={1})
    _cuda_parity("memory_read", [torch.randn(2, 300, 40, generator=g, dtype=F64),
                                 _dist(2, 6, 300, g=g)])


def test_cuda_access_step_uses_the_usage_and_read_kernels():
    from test_memory import interface, random_state

    require_backend("cuda")
    g = _gen(0)
    s, x = random_state(2, 5, 3, 2, 2, g), interface(2, 5, 3, 2, 2, g)
    k = len(s)

    def step(*a, backend):
        words, st = M.dnc_access_step(M.DNCState(*a[:k]), M.DNCInterface(*a[k:]), backend=backend)
        return (words,) + tuple(st)

    out = step(*(t.float().cuda() for t in list(s) + list(x)), backend="cuda")
    exp = step(*(list(s) + list(x)), backend="reference")
    for i, (o, e) in enumerate(zip(out, exp)):
        assert_parity(o, e, name=f"access step cuda out{i}")
