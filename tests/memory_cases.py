"""What the memory tests share (tests/test_memory.py, test_memory_simt.py, test_memory_triton.py):
random inputs of each op, the reference compositions the compiled ops implement, the parity
check of float32 kernels against the float64 reference, and the cases of the fused weight-mix op
pairs (every backend runs the same ones). Grouped by concept like the ops
(attnfast/ops/memory/): addressing, allocation, read/write, links, window, access step.

Every builder draws from the generator it is given in a fixed order, so a test's cases depend only
on its seed.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch

from attnfast import memory as M
from attnfast.reference import memory as ref
from conftest import assert_parity, device_for, require_backend

F64 = torch.float64
EPS = ref.EPS
# Gradients of the NTM, window, usage and read ops in float32: one more pow/log/exp rounding chain
# than the outputs, so a looser bound than conftest's FP32_TOL.
F32_GRAD_TOL = {"atol": 5e-5, "rtol": 5e-5}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rand(*shape, g, lo=0.0, hi=1.0, dtype=F64):
    return (torch.rand(*shape, generator=g, dtype=F64) * (hi - lo) + lo).to(dtype)


def dist(*shape, g, dtype=F64, total=1.0):
    """Random weightings summing to `total` over the last dim."""
    x = torch.rand(*shape, generator=g, dtype=F64) + 0.05
    return (x / x.sum(-1, keepdim=True) * total).to(dtype)


# ---- parity of a float32 kernel with the float64 reference ---------------------------------------

def _leaf(t, grad, dtype, device=None):
    if not (isinstance(t, torch.Tensor) and t.is_floating_point()):
        return t
    return t.detach().to(dtype).to(device or t.device).requires_grad_(grad)


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def parity(kernel_fn, ref_fn, inputs, name, *, device="cpu", oracle_dtype=F64, no_grad=(),
           out_tol=None, grad_tol=None):
    """float32 outputs and input gradients of `kernel_fn` (its float inputs in float32 on `device`)
    against `ref_fn` on the inputs in `oracle_dtype` (the float64 oracle unless told), both
    differentiated with the same random float64 cotangents. Inputs whose index is in `no_grad`
    (stop_gradient by design) and non-float inputs get no gradient on either side; a gradient the
    reference does not have must be absent or exactly zero in the kernel's. `out_tol` and
    `grad_tol` are assert_parity's atol/rtol (conftest's FP32_TOL when not given)."""
    x_ref = [_leaf(t, k not in no_grad, oracle_dtype) for k, t in enumerate(inputs)]
    x32 = [_leaf(t, k not in no_grad, torch.float32, device) for k, t in enumerate(inputs)]
    o_ref, o32 = _as_tuple(ref_fn(*x_ref)), _as_tuple(kernel_fn(*x32))
    for k, (a, o) in enumerate(zip(o32, o_ref)):
        assert a.dtype == torch.float32 and a.device.type == torch.device(device).type, \
            f"{name} out{k}: {a.dtype} on {a.device}"
        assert_parity(a, o.double(), name=f"{name} out{k}", **(out_tol or {}))
    g = gen(1)
    cot = [torch.randn(o.shape, generator=g, dtype=F64) for o in o_ref]
    req_ref = [t for t in x_ref if isinstance(t, torch.Tensor) and t.requires_grad]
    req32 = [t for t in x32 if isinstance(t, torch.Tensor) and t.requires_grad]
    g_ref = torch.autograd.grad(o_ref, req_ref, [c.to(oracle_dtype) for c in cot], allow_unused=True)
    g32 = torch.autograd.grad(o32, req32, [c.float().to(device) for c in cot], allow_unused=True)
    for k, (a, o) in enumerate(zip(g32, g_ref)):
        if o is None:
            assert a is None or not a.any(), f"{name}: grad {k} should be zero"
            continue
        a = torch.zeros_like(req32[k]) if a is None else a
        assert_parity(a, o.double(), name=f"{name} grad{k}", **(grad_tol or {}))


def backend_parity(fn, inputs, backend, name, **kw):
    """`parity` of the public function `fn` run on `backend` against `fn` on the reference."""
    require_backend(backend)
    parity(partial(fn, backend=backend), partial(fn, backend="reference"), inputs, name,
           device=device_for(backend), **kw)


# ---- addressing ----------------------------------------------------------------------------------

def content_args(b, n, w, h, g):
    """memory (with a zero row: |M| = sqrt(eps)), keys, strengths in [0.5, 4.5)."""
    mem = torch.randn(b, n, w, generator=g, dtype=F64)
    mem[0, n // 2] = 0
    keys = torch.randn(b, h, w, generator=g, dtype=F64)
    return [mem, keys, torch.rand(b, h, generator=g, dtype=F64) * 4 + 0.5]


def ntm_address_args(b, h, n, w, s, g, gamma=(1.0, 3.0)):
    """memory, key, strength, gate, shift (S taps), gamma, prev_weights of ntm_address."""
    return [torch.randn(b, n, w, generator=g, dtype=F64), torch.randn(b, h, w, generator=g, dtype=F64),
            rand(b, h, g=g, lo=0.5, hi=3), rand(b, h, g=g), dist(b, h, s, g=g),
            rand(b, h, g=g, lo=gamma[0], hi=gamma[1]), dist(b, h, n, g=g)]


def ntm_location_args(b, h, n, s, g, gamma=(1.0, 3.0)):
    """content_weights, gate, prev_weights, shift, gamma of the compiled NTM location op."""
    return [dist(b, h, n, g=g), rand(b, h, g=g), dist(b, h, n, g=g), dist(b, h, s, g=g),
            rand(b, h, g=g, lo=gamma[0], hi=gamma[1])]


def ntm_location_ref(content, gate, prev, shift, gamma):
    """What the compiled NTM location op computes: interpolation, shift, sharpening."""
    g = gate[..., None]
    return ref.ntm_shift_sharpen(g * content + (1 - g) * prev, shift, gamma)


# ---- allocation ----------------------------------------------------------------------------------

def allocation_args(b, n, hw, g, ties=False):
    """usage (with `ties`: values in {0, 1/4, 1/2}, so the stable order decides) and write gates."""
    if ties:
        usage = torch.randint(0, 3, (b, n), generator=g).to(F64) / 4
    else:
        usage = torch.rand(b, n, generator=g, dtype=F64) * 0.9 + 0.05
    return [usage, torch.rand(b, hw, generator=g, dtype=F64)]


def usage_args(b, n, hw, r, g):
    """usage, write_weights, free_gate, read_weights of dnc_usage."""
    return [rand(b, n, g=g), dist(b, hw, n, g=g, total=0.9), rand(b, r, g=g), dist(b, r, n, g=g)]


def usage_one_hot_free_args():
    """dnc_usage inputs with f = 1 on a one-hot read weighting: the factor 1 - f w of slot 2 is
    exactly 0 (the slot is freed) and the other heads' gradients must not divide by it."""
    g = gen(6)
    n = 5
    rw = torch.zeros(1, 2, n, dtype=F64)
    rw[0, 0, 2] = 1
    rw[0, 1] = dist(n, g=g)
    return [rand(1, n, g=g), dist(1, 1, n, g=g), torch.tensor([[1.0, 0.5]], dtype=F64), rw]


# ---- read / write --------------------------------------------------------------------------------

def write_args(b, n, w, hw, g, total=0.9):
    """memory, write_weights (summing to `total`), erase in [0, 1), add of memory_write."""
    return [torch.randn(b, n, w, generator=g, dtype=F64), dist(b, hw, n, g=g, total=total),
            rand(b, hw, w, g=g), torch.randn(b, hw, w, generator=g, dtype=F64)]


def read_args(b, n, w, r, g):
    return [torch.randn(b, n, w, generator=g, dtype=F64), dist(b, r, n, g=g)]


# ---- the fused weight mixes: write weights (allocation + gate mix), DNC read (mode mix + read) -----

# (B, N, W, R, Hw): N = 1, R = 1, Hw = 1, batch 1; odd N with Hw = 2 (the allocation runs heads in
# sequence); batch 1, R = 1, Hw = 2; N = 37 rows with W = 64 and R = 5 (the CPU read's lanes and
# a second group of four read heads); then empty sizes: no batch, no read head, no slot, no write
# head (the mixes of zero heads: zero write weights' gate gradients, a content-only read).
MIX_SHAPES = [(1, 1, 1, 1, 1), (2, 7, 5, 3, 2), (1, 6, 3, 1, 2), (3, 37, 64, 5, 1),
              (0, 4, 3, 2, 1), (2, 4, 3, 0, 1), (2, 0, 3, 2, 2), (1, 3, 2, 2, 0)]
# Against the float64 reference: float64 to rounding; float32 outputs within conftest's FP32_TOL,
# gradients within F32_GRAD_TOL (the allocation's cumulative product and its reverse pass).
MIX_F64_TOL = {"atol": 1e-12, "rtol": 1e-10}


def write_weights_op_args(b, n, hw, g):
    """usage, content_weights, allocation_gate, write_gate (>= 0.3) of dnc_write_weights_forward."""
    return [rand(b, n, g=g), dist(b, hw, n, g=g), rand(b, hw, g=g), rand(b, hw, g=g, lo=0.3)]


def write_weights_ref(usage, content, allocation_gate, write_gate):
    return ref.dnc_write_weights(usage, content, allocation_gate, write_gate, EPS)


def read_mix_op_args(b, n, w, r, hw, g):
    """memory, content, forward, backward (B, R, Hw, N), read_mode of dnc_read_mix_forward."""
    return [torch.randn(b, n, w, generator=g, dtype=F64), dist(b, r, n, g=g),
            dist(b, r, hw, n, g=g, total=0.8), dist(b, r, hw, n, g=g, total=0.7),
            dist(b, r, 1 + 2 * hw, g=g)]


def read_mix_ref(memory, content, fwd, bwd, read_mode):
    """What the fused DNC read computes: the read-mode mix, then the read."""
    read_weights = ref.dnc_read_weights(content, fwd, bwd, read_mode)
    return read_weights, ref.memory_read(memory, read_weights)


def op_pair_parity(forward, backward, ref_fn, inputs, dtype, name, *, device="cpu", extra=()):
    """A compiled op pair called directly, `forward(*x, *extra)` and `backward(*cotangents, *x,
    *extra)` (a gradient per input), on the float64 `inputs` cast to `dtype` on `device`, against
    `ref_fn(*inputs)` in float64 differentiated by autograd with the same float64 cotangents."""
    x_ref = [t.detach().clone().requires_grad_(True) for t in inputs]
    out_ref = _as_tuple(ref_fn(*x_ref))
    g = gen(1)
    cot = [torch.randn(o.shape, generator=g, dtype=F64) for o in out_ref]
    g_ref = torch.autograd.grad(out_ref, x_ref, cot, allow_unused=True)  # (usage: no write head)
    g_ref = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(x_ref, g_ref)]
    x = [t.detach().to(dtype).to(device) for t in inputs]
    out = _as_tuple(forward(*x, *extra))
    grads = backward(*(c.to(dtype).to(device) for c in cot), *x, *extra)
    out_tol = MIX_F64_TOL if dtype == F64 else {}
    grad_tol = MIX_F64_TOL if dtype == F64 else F32_GRAD_TOL
    assert len(out) == len(out_ref) and len(grads) == len(inputs), name
    for k, (a, o) in enumerate(zip(out, out_ref)):
        assert a.dtype == dtype, f"{name} out{k}: {a.dtype}"
        assert_parity(a, o, name=f"{name} out{k}", **out_tol)
    for k, (a, o) in enumerate(zip(grads, g_ref)):
        assert a.dtype == dtype, f"{name} grad{k}: {a.dtype}"
        assert_parity(a, o, name=f"{name} grad{k}", **grad_tol)


def mix_op_cases(ops, dtypes, device="cpu"):
    """Runs both fused op pairs of `ops` (a backend's ops under their schema names, forward and
    backward) over MIX_SHAPES in `dtypes` against the reference."""
    for b, n, w, r, hw in MIX_SHAPES:
        g = gen(b * 1000 + n * 10 + hw)
        ww_args, mix_args = write_weights_op_args(b, n, hw, g), read_mix_op_args(b, n, w, r, hw, g)
        for dtype in dtypes:
            shape = f"B{b} N{n} W{w} R{r} Hw{hw} {dtype}"
            op_pair_parity(ops.dnc_write_weights_forward, ops.dnc_write_weights_backward,
                           write_weights_ref, ww_args, dtype, f"write weights {shape}",
                           device=device, extra=(EPS,))
            op_pair_parity(ops.dnc_read_mix_forward, ops.dnc_read_mix_backward, read_mix_ref,
                           mix_args, dtype, f"read mix {shape}", device=device)


# ---- links ---------------------------------------------------------------------------------------

def link_read_args(b, n, hw, r, g):
    """link (zero diagonal), precedence, write_weights, read_weights of the fused link op."""
    link = torch.rand(b, hw, n, n, generator=g, dtype=F64) / n * (1 - torch.eye(n, dtype=F64))
    return [link, dist(b, hw, n, g=g, total=0.7), dist(b, hw, n, g=g, total=0.8),
            dist(b, r, n, g=g, total=0.9)]


def link_read_ref(link, prec, ww, rw):
    """What the fused link op computes: the link update, then both directional reads."""
    new_link, new_prec = ref.dnc_link_update(link, prec, ww)
    return (new_link, new_prec) + ref.dnc_directional_read(new_link, rw)


# ---- window --------------------------------------------------------------------------------------

def graves_inputs(b, t, k, u, c, g, one_hot=True):
    """alpha_hat, beta_hat, kappa_hat (B, T, K), chars (B, U, C: one-hot or dense), char_mask (the
    second sequence 2 characters shorter), kappa0 (B, K): graves_window_sequence's order."""
    a, be, ka = (torch.randn(b, t, k, generator=g, dtype=F64) * 0.5 for _ in range(3))
    if one_hot:
        chars = torch.nn.functional.one_hot(torch.randint(0, c, (b, u), generator=g), c).to(F64)
    else:
        chars = torch.randn(b, u, c, generator=g, dtype=F64)
    mask = torch.ones(b, u, dtype=F64)
    if b > 1 and u > 2:
        mask[1, u - 2:] = 0
    return a, be, ka, chars, mask, rand(b, k, g=g, hi=2.0)


def graves_window_ref(a, be, ka, k0, chars, mask=None):
    """graves_window_sequence in the compiled op's argument order (kappa0 before chars)."""
    return ref.graves_window_sequence(a, be, ka, chars, mask, k0)


# ---- access step ---------------------------------------------------------------------------------

def interface(b, n, w, r, hw, g, dtype=F64):
    return M.DNCInterface(
        write_vectors=torch.randn(b, hw, w, generator=g, dtype=F64).to(dtype),
        erase_vectors=rand(b, hw, w, g=g, dtype=dtype),
        free_gate=rand(b, r, g=g, dtype=dtype),
        allocation_gate=rand(b, hw, g=g, dtype=dtype),
        write_gate=rand(b, hw, g=g, lo=0.3, dtype=dtype),
        read_mode=dist(b, r, 1 + 2 * hw, g=g, dtype=dtype),
        write_keys=torch.randn(b, hw, w, generator=g, dtype=F64).to(dtype),
        write_strengths=rand(b, hw, g=g, lo=0.5, hi=5.0, dtype=dtype),
        read_keys=torch.randn(b, r, w, generator=g, dtype=F64).to(dtype),
        read_strengths=rand(b, r, g=g, lo=0.5, hi=5.0, dtype=dtype))


def random_state(b, n, w, r, hw, g, dtype=F64):
    link = rand(b, hw, n, n, g=g, dtype=F64) / n
    link = link * (1 - torch.eye(n, dtype=F64))
    return M.DNCState(torch.randn(b, n, w, generator=g, dtype=F64).to(dtype),
                      dist(b, r, n, g=g, dtype=dtype, total=0.9), dist(b, hw, n, g=g, dtype=dtype, total=0.8),
                      link.to(dtype), dist(b, hw, n, g=g, dtype=dtype, total=0.7), rand(b, n, g=g, dtype=dtype))


def access_step_inputs(b, n, w, r, hw, g):
    """The state's tensors, then the interface's, in one list (access_step's arguments)."""
    return list(random_state(b, n, w, r, hw, g)) + list(interface(b, n, w, r, hw, g))


def access_step(*flat, backend):
    """dnc_access_step on access_step_inputs: the read words, then the new state's tensors."""
    k = len(M.DNCState._fields)
    words, st = M.dnc_access_step(M.DNCState(*flat[:k]), M.DNCInterface(*flat[k:]), backend=backend)
    return (words,) + tuple(st)


# ---- argument checks -----------------------------------------------------------------------------

def check_argument_errors(ops):
    """The shape and dtype checks (csrc/checks/memory.h) of the compiled NTM location, read, window,
    usage, write-weights and DNC read ops, which every backend's ops (`ops`: a namespace of them) share: each error names
    the argument."""
    w = torch.rand(1, 1, 5)
    with pytest.raises(RuntimeError, match="shift must have an odd last dim"):
        ops.ntm_location_forward(w, torch.rand(1, 1), w, torch.rand(1, 1, 2), torch.ones(1, 1))
    with pytest.raises(RuntimeError, match="float32 or float64"):
        ops.memory_read_forward(torch.rand(1, 5, 2).half(), w.half())
    with pytest.raises(RuntimeError, match="char_mask must have shape"):
        ops.graves_window_forward(torch.rand(1, 2, 3), torch.rand(1, 2, 3), torch.rand(1, 2, 3),
                                  torch.rand(1, 3), torch.rand(1, 4, 2), torch.ones(1, 5))
    with pytest.raises(RuntimeError, match="free_gate must have shape"):
        ops.dnc_usage_forward(torch.rand(1, 5), w, torch.rand(1, 2), w)
    with pytest.raises(RuntimeError, match="write_gate must have shape"):
        ops.dnc_write_weights_forward(torch.rand(1, 5), w, torch.rand(1, 1), torch.rand(1, 2), EPS)
    with pytest.raises(RuntimeError, match="grad_write_weights must have shape"):
        ops.dnc_write_weights_backward(torch.rand(1, 2, 5), torch.rand(1, 5), w, torch.rand(1, 1),
                                       torch.rand(1, 1), EPS)
    mem, fb = torch.rand(1, 5, 2), torch.rand(1, 1, 1, 5)
    with pytest.raises(RuntimeError, match="read_mode must have shape"):
        ops.dnc_read_mix_forward(mem, w, fb, fb, torch.rand(1, 1, 2))
    with pytest.raises(RuntimeError, match="backward must have shape"):
        ops.dnc_read_mix_forward(mem, w, fb, torch.rand(1, 1, 2, 5), torch.rand(1, 1, 3))
    with pytest.raises(RuntimeError, match="grad_words must have shape"):
        ops.dnc_read_mix_backward(w, torch.rand(1, 1, 3), mem, w, fb, fb, torch.rand(1, 1, 3))
