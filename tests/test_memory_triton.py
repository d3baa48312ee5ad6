"""The Triton memory kernels (triton_kernels/addressing.py, allocation.py, read_write.py, links.py,
window.py, through the torch custom ops that attnfast/ops/spec.py defines from their declarations)
against the float64 reference, forward and backward (autograd through the ops' explicit backward
kernels), float32 within conftest's FP32_TOL (the gradients of the NTM location, usage, read and
window ops within F32_GRAD_TOL: one more pow/log/exp chain). Then the public functions and
dispatch with backend="triton", the access step composed of the Triton ops, and strided inputs.
Under the Triton interpreter on CPU tensors when there is no GPU: tiny shapes."""
from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import torch

import attnfast
from attnfast import memory as M
from attnfast.reference import memory as ref
from conftest import assert_parity, device_for, require_backend
from memory_cases import (EPS, F32_GRAD_TOL, F64, access_step, access_step_inputs, allocation_args,
                          content_args, dist, gen, graves_inputs, graves_window_ref, link_read_args,
                          link_read_ref, mix_op_cases, ntm_location_args, ntm_location_ref,
                          parity, read_args, usage_args, usage_one_hot_free_args, write_args)

# The Triton ops (attnfast/ops/spec.py defines them from the C++ schemas): dense, any strides.
tri = SimpleNamespace(**{name: getattr(torch.ops.attnfast, f"{name}_triton") for name in (
    "memory_content_forward", "ntm_location_forward", "ntm_location_backward",
    "dnc_allocation_forward", "dnc_usage_forward", "memory_write_forward", "memory_read_forward",
    "dnc_link_read_forward", "graves_window_forward", "dnc_write_weights_forward",
    "dnc_write_weights_backward", "dnc_read_mix_forward", "dnc_read_mix_backward")})
DEV = device_for("triton")
_parity = partial(parity, device=DEV)


@pytest.fixture(autouse=True)
def _triton():
    require_backend("triton")


def _content_forward(m, k, s):
    return tri.memory_content_forward(m, k, s, EPS)


def _content_ref(m, k, s):
    return ref.content_addressing(m, k, s, EPS)


def _allocation_forward(u, gt):
    return tri.dnc_allocation_forward(u, gt, EPS)


def _allocation_ref(u, gt):
    return ref.dnc_allocation(u, gt, EPS)


# ---- addressing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1, 3, 1), (2, 5, 8, 2), (2, 33, 3, 2)])  # B N W H
def test_content(shape):
    _parity(_content_forward, _content_ref, content_args(*shape, gen()), "content")


# (B, H, N, S): N = 1; S = 3 / 5 with wrap-around; S > N; N > one slot block (64).
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 2, 6, 3), (1, 2, 5, 5), (1, 1, 3, 5),
                                   (1, 1, 70, 3)])
def test_ntm_location(shape):
    b, h, n, s = shape
    _parity(tri.ntm_location_forward, ntm_location_ref, ntm_location_args(b, h, n, s, gen(n * 10 + s)),
            f"ntm {shape}", grad_tol=F32_GRAD_TOL)


def test_ntm_one_hot_shift_and_zeros():
    """gate 0 keeps a one-hot prev_weights; a one-hot shift of offset +1 moves it from slot 4 to
    slot 0 (wrap-around); the other slots are exactly 0 with finite gradients."""
    n = 5
    prev = torch.zeros(1, 1, n)
    prev[0, 0, 4] = 1
    shift = torch.tensor([[[0.0, 0.0, 1.0]]])
    args = [dist(1, 1, n, g=gen(0)).float(), torch.zeros(1, 1), prev, shift, torch.full((1, 1), 2.0)]
    args = [a.to(DEV) for a in args]
    w = tri.ntm_location_forward(*args)
    expect = torch.zeros(1, 1, n)
    expect[0, 0, 0] = 1
    assert torch.equal(w.cpu(), expect)
    for t in tri.ntm_location_backward(torch.ones(1, 1, n, device=DEV), *args):
        assert torch.isfinite(t).all()
    _parity(tri.ntm_location_forward, ntm_location_ref, [a.cpu().double() for a in args],
            "ntm one-hot", grad_tol=F32_GRAD_TOL)


# ---- allocation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 2), (2, 33, 2)])  # B N Hw
@pytest.mark.parametrize("ties", [False, True])
def test_allocation(shape, ties):
    # With ties a later head's order depends on the precision's roundings (see
    # tests/test_memory_simt.py): compare with the reference run in fp32 (same permutations).
    _parity(_allocation_forward, _allocation_ref, allocation_args(*shape, gen(), ties=ties),
            "allocation", oracle_dtype=torch.float32 if ties else F64)


# (B, N, Hw, R): several heads; a freed slot (f = 1 on a one-hot read weighting); R = 0.
@pytest.mark.parametrize("shape", [(2, 1, 1, 1), (2, 6, 2, 3), (2, 5, 1, 0)])
def test_dnc_usage(shape):
    b, n, hw, r = shape
    _parity(tri.dnc_usage_forward, ref.dnc_usage, usage_args(b, n, hw, r, gen(n + hw + r)),
            f"usage {shape}", no_grad={1}, grad_tol=F32_GRAD_TOL)


def test_usage_one_hot_free():
    args = usage_one_hot_free_args()
    _parity(tri.dnc_usage_forward, ref.dnc_usage, args, "usage one-hot free", no_grad={1},
            grad_tol=F32_GRAD_TOL)
    assert tri.dnc_usage_forward(*(a.float().to(DEV) for a in args))[0, 2] == 0


# ---- read / write --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1, 3, 1), (2, 5, 8, 2), (2, 33, 3, 2)])  # B N W Hw
def test_memory_write(shape):
    _parity(tri.memory_write_forward, ref.memory_write, write_args(*shape, gen()), "write")


# (B, N, W, R): one slot; W > one column block (64); N > one slot block; R = 0.
def test_fused_mix_ops():
    """dnc_write_weights_* and dnc_read_mix_* at memory_cases.MIX_SHAPES, forward and backward,
    float32 only: the Triton memory kernels are float32 (dispatch refuses float64 for them)."""
    mix_op_cases(tri, [torch.float32], device=DEV)


@pytest.mark.parametrize("shape", [(1, 1, 3, 1), (2, 7, 5, 3), (1, 40, 70, 2), (1, 4, 3, 0)])
def test_memory_read(shape):
    b, n, w, r = shape
    _parity(tri.memory_read_forward, ref.memory_read, read_args(b, n, w, r, gen(n * w + r)),
            f"read {shape}", grad_tol=F32_GRAD_TOL)


# ---- links ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 5, 2, 2), (2, 5, 1, 0), (1, 33, 2, 1)])  # B N Hw R
def test_link_read(shape):
    _parity(tri.dnc_link_read_forward, link_read_ref, link_read_args(*shape, gen()), "link")


# ---- window --------------------------------------------------------------------------------------

@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 4, 3, 7, 5), (1, 2, 2, 70, 3)])  # B T K U C
def test_graves_window(shape, masked):
    a, be, ka, chars, mask, k0 = graves_inputs(*shape, gen(sum(shape)), one_hot=False)
    if masked:
        args, fn = [a, be, ka, k0, chars, mask], tri.graves_window_forward
    else:
        args, fn = [a, be, ka, k0, chars], lambda *x: tri.graves_window_forward(*x, None)
    _parity(fn, graves_window_ref, args, f"graves {shape} masked={masked}", grad_tol=F32_GRAD_TOL)


# ---- access step ---------------------------------------------------------------------------------

# dnc_access_step on the Triton ops (content, allocation, usage, write, read, links; the read-mode
# mix is torch ops), forward and gradients: of every state and interface tensor, the reference
# giving state.write_weights (index 2) none (stop_gradient in the usage), within FP32_TOL; and of
# all but state.write_weights within F32_GRAD_TOL.
@pytest.mark.parametrize("no_grad,grad_tol", [((), None), ({2}, F32_GRAD_TOL)],
                         ids=["all_inputs", "no_write_weights"])
def test_access_step(no_grad, grad_tol):
    _parity(partial(access_step, backend="triton"), partial(access_step, backend="reference"),
            access_step_inputs(2, 5, 3, 2, 2, gen(0)), "access step", no_grad=no_grad,
            grad_tol=grad_tol)


# ---- the public functions and dispatch -----------------------------------------------------------

@pytest.mark.parametrize("name,args", [
    ("content_addressing", lambda g: [torch.randn(2, 6, 4, generator=g), torch.randn(2, 1, 4, generator=g),
                                      torch.ones(2, 1)]),
    ("ntm_address", lambda g: [torch.randn(2, 6, 4, generator=g), torch.randn(2, 2, 4, generator=g),
                               torch.rand(2, 2, generator=g) + 0.5, torch.rand(2, 2, generator=g),
                               torch.softmax(torch.randn(2, 2, 3, generator=g), -1),
                               torch.rand(2, 2, generator=g) + 1, torch.softmax(torch.randn(2, 2, 6, generator=g), -1)]),
    ("dnc_usage", lambda g: [torch.rand(2, 5, generator=g), torch.rand(2, 1, 5, generator=g) / 5,
                             torch.rand(2, 2, generator=g), torch.rand(2, 2, 5, generator=g) / 5]),
    ("memory_read", lambda g: [torch.randn(2, 5, 3, generator=g), torch.rand(2, 2, 5, generator=g)]),
    ("graves_window", lambda g: [torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g),
                                 torch.randn(2, 3, generator=g), torch.rand(2, 3, generator=g),
                                 torch.randn(2, 5, 4, generator=g), torch.ones(2, 5, dtype=torch.bool)]),
    ("graves_window_sequence", lambda g: [torch.randn(2, 3, 2, generator=g), torch.randn(2, 3, 2, generator=g),
                                          torch.randn(2, 3, 2, generator=g), torch.randn(2, 5, 4, generator=g)]),
])
def test_public_api_dispatch(name, args):
    """The public functions with backend="triton" match the reference; explain() names the Triton
    backend; float64 is refused with the reason."""
    a = [x.to(DEV) for x in args(gen(0))]
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


# ---- strided inputs ------------------------------------------------------------------------------

def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous layout (a transposed copy, transposed back)."""
    return t.transpose(0, -1).contiguous().transpose(0, -1) if t.dim() > 1 else t[::1]


@pytest.mark.parametrize("op", ["content", "allocation", "write", "link"])
def test_backward_takes_non_contiguous_inputs(op):
    """The forward makes its inputs contiguous; the backward gets the *saved* (strided) inputs
    and must do the same, or the kernels read them with the wrong strides (silently wrong grads)."""
    g = gen(3)
    b, n, w, hw, r = 2, 6, 5, 2, 3
    cases = {
        "content": ([torch.randn(b, n, w, generator=g, dtype=F64), torch.randn(b, hw, w, generator=g, dtype=F64),
                     torch.rand(b, hw, generator=g, dtype=F64) + 0.5],
                    _content_forward, _content_ref),
        "allocation": ([torch.rand(b, n, generator=g, dtype=F64), torch.rand(b, hw, generator=g, dtype=F64)],
                       _allocation_forward, _allocation_ref),
        "write": (write_args(b, n, w, hw, g), tri.memory_write_forward, ref.memory_write),
        "link": ([torch.rand(b, hw, n, n, generator=g, dtype=F64) * 0.2, dist(b, hw, n, g=g, total=0.8),
                  dist(b, hw, n, g=g, total=0.7), dist(b, r, n, g=g)],
                 tri.dnc_link_read_forward, link_read_ref),
    }
    inputs, kernel_fn, ref_fn = cases[op]

    def strided_kernel(*xs):
        strided = [_strided(x) for x in xs]
        assert all(not s.is_contiguous() for s in strided if s.dim() > 1 and s.shape[0] > 1 and s.shape[-1] > 1)
        return kernel_fn(*strided)

    _parity(strided_kernel, ref_fn, inputs, f"{op} (non-contiguous)")
