"""torch's SDPA test material, ported by kind, with ``attnfast.scaled_dot_product_attention``
as the function under test (torch's test/test_transformers.py: mask kinds and broadcast shapes,
leading dims, GQA, causal variants and CausalBias, zero-length inputs, scale values, dtypes,
dropout, strides, mismatched and wrong-rank inputs).

The contract: for every input torch's SDPA accepts, attnfast gives torch's result (same type,
dtype, shape; values within the dtype's tolerance; gradients of q, k, v and of a float mask
that requires grad); for every input torch rejects, the same exception type.

How each case is judged (one comparator, ``check``): torch runs on the same inputs in the same
call. fp32/fp64: attnfast against torch within tight tolerances. bf16/fp16: both against an
fp64 torch oracle on the same (rounded) inputs; attnfast's max error at most 2x torch's own
low-precision error plus one eps (scaled by the output's magnitude). NaN and inf must sit
where torch's are. Shapes are tiny: the file runs in seconds on one thread.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right, causal_upper_left

import attnfast

LOW = (torch.bfloat16, torch.float16)
ALL_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
FP32_TOL = {"atol": 2e-5, "rtol": 2e-5}
GRAD_FP32_TOL = {"atol": 5e-5, "rtol": 5e-5}

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:Lower right causal bias will produce NaNs")]


# ---- inputs ------------------------------------------------------------------------------------

class Make:
    """Builds one case's tensors, deterministically: values drawn in fp32 from a fixed generator
    and rounded to ``dtype`` (then widened to fp64 for the oracle, so the oracle sees exactly the
    rounded inputs). Leaves that require grad are collected in ``leaves``."""

    def __init__(self, dtype, oracle=False):
        self.dtype, self.oracle = dtype, oracle
        self.g = torch.Generator().manual_seed(0)
        self.leaves = []

    def _finish(self, t, grad):
        t = t.to(self.dtype)
        if self.oracle:
            t = t.double()
        if grad:
            t.requires_grad_(True)
            self.leaves.append(t)
        return t

    def randn(self, *shape, grad=True, mul=1.0):
        return self._finish(torch.randn(*shape, generator=self.g) * mul, grad)

    def qkv(self, lead=(2, 3), lq=5, lk=7, d=8, dv=None, grad=True):
        dv = d if dv is None else dv
        return (self.randn(*lead, lq, d, grad=grad), self.randn(*lead, lk, d, grad=grad),
                self.randn(*lead, lk, dv, grad=grad))

    def bool_mask(self, *shape, keep=0.7):
        m = torch.rand(*shape, generator=self.g) < keep
        if m.dim() and m.shape[-1]:
            m[..., 0] = True  # no fully masked row here (those have their own cases)
        return m

    def float_mask(self, *shape, grad=False):
        """An additive mask of q's dtype: random biases with some -inf entries."""
        m = torch.randn(*shape, generator=self.g)
        hole = torch.rand(*shape, generator=self.g) < 0.2
        if m.dim() and m.shape[-1]:
            hole[..., 0] = False
        m = m.masked_fill(hole, float("-inf"))
        return self._finish(m, grad)


def _call(fn, args, kwargs):
    try:
        return fn(*args, **kwargs), None
    except Exception as e:  # noqa: BLE001 -- the exception type is what is compared
        return None, e


def _torch_sdpa(math_backend):
    def fn(*args, **kwargs):
        if math_backend:
            with sdpa_kernel(SDPBackend.MATH):
                return F.scaled_dot_product_attention(*args, **kwargs)
        return F.scaled_dot_product_attention(*args, **kwargs)
    return fn


def _where_diff(a, b):
    d = (a.double() - b.double()).abs().nan_to_num(0.0)
    i = int(d.reshape(-1).argmax()) if d.numel() else 0
    return f"worst |diff| {d.reshape(-1)[i].item() if d.numel() else 0:.3e} at flat index {i}"


def _same_specials(name, got, want):
    """NaN and +-inf at the same places (and nothing else non-finite)."""
    g, w = got.detach().double(), want.detach().double()
    assert torch.equal(g.isnan(), w.isnan()), (
        f"{name}: NaN at {int(g.isnan().sum())} places, torch at {int(w.isnan().sum())}")
    assert torch.equal(g.isinf(), w.isinf()) and torch.equal(g[g.isinf()], w[w.isinf()]), (
        f"{name}: inf at different places than torch")
    return torch.isfinite(w)


def _close_tight(name, got, want, tol, oracle=None):
    """fp32/fp64: attnfast within ``tol`` of torch; where not (ill-conditioned inputs: huge
    scales, huge finite biases), no worse against the fp64 ``oracle()`` than the low-precision
    rule allows -- torch's own fp32 error is then the tolerance."""
    finite = _same_specials(name, got, want)
    g, w = got.detach().double()[finite], want.detach().double()[finite]
    if torch.allclose(g, w, **tol):
        return
    assert oracle is not None and got.dtype == torch.float32, (
        f"{name} ({got.dtype}) vs torch, {tol}: {_where_diff(g, w)}")
    _close_low(name + f" (not within {tol} of torch; judged against fp64)", got, want, oracle())


def _close_low(name, got, low, oracle):
    """bf16/fp16: attnfast's error against the fp64 oracle at most 2x torch's own error in the
    same low precision, plus one eps of the output's magnitude."""
    finite = _same_specials(name, low, oracle)  # torch's own specials are the oracle's
    _same_specials(name, got, low)
    if not finite.any():
        return
    g, lo, o = (t.detach().double()[finite] for t in (got, low, oracle))
    ref_err = (lo - o).abs().max().item()
    err = (g - o).abs().max().item()
    bound = 2.0 * ref_err + torch.finfo(got.dtype).eps * max(1.0, o.abs().max().item())
    assert err <= bound, (f"{name} ({got.dtype}): error {err:.3e} > 2 x torch's {ref_err:.3e} "
                          f"+ eps = {bound:.3e}; {_where_diff(g, o)}")


def check(case, dtype=torch.float32, *, math_backend=False):
    """Runs ``case(make) -> (args, kwargs)`` through torch and attnfast and compares everything
    the contract names. Returns attnfast's output (or raised exception) for extra checks."""
    sdpa_t = _torch_sdpa(math_backend)
    m_t, m_a = Make(dtype), Make(dtype)
    args_t, kw_t = case(m_t)
    args_a, kw_a = case(m_a)
    out_t, err_t = _call(sdpa_t, args_t, kw_t)
    out_a, err_a = _call(attnfast.scaled_dot_product_attention, args_a, kw_a)
    if err_t is not None:
        assert err_a is not None, f"torch raised {type(err_t).__name__}: {err_t}; attnfast returned"
        assert type(err_a) is type(err_t), (
            f"torch raised {type(err_t).__name__} ({err_t}), attnfast {type(err_a).__name__} ({err_a})")
        return err_a
    assert err_a is None, f"torch accepted the input, attnfast raised {type(err_a).__name__}: {err_a}"
    assert type(out_a) is type(out_t), f"type {type(out_a)} != torch's {type(out_t)}"
    assert out_a.dtype == out_t.dtype and out_a.shape == out_t.shape and out_a.device == out_t.device
    assert out_a.requires_grad == out_t.requires_grad

    gen = torch.Generator().manual_seed(1)
    go = torch.randn(out_t.shape, generator=gen).to(dtype)
    oracle = {}

    def fp64(i=None):
        """The fp64 torch oracle on the same rounded inputs: the output (i None) or the
        gradient of leaf i (computed once)."""
        if not oracle:
            m_o = Make(dtype, oracle=True)
            args_o, kw_o = case(m_o)
            oracle["out"] = out_o = sdpa_t(*args_o, **kw_o)
            oracle["grads"] = (torch.autograd.grad(out_o, m_o.leaves, go.double(), allow_unused=True)
                               if out_o.requires_grad else ())
        return oracle["out"] if i is None else oracle["grads"][i]

    if dtype in LOW:
        _close_low("out", out_a, out_t, fp64())
    else:
        _close_tight("out", out_a, out_t, FP32_TOL, fp64)

    if not out_t.requires_grad:
        return out_a
    grads_t = torch.autograd.grad(out_t, m_t.leaves, go, allow_unused=True)
    grads_a = torch.autograd.grad(out_a, m_a.leaves, go, allow_unused=True)
    for i, (ga, gt) in enumerate(zip(grads_a, grads_t)):
        name = f"grad of leaf {i} {tuple(m_t.leaves[i].shape)}"
        assert (ga is None) == (gt is None), f"{name}: attnfast {ga is None}, torch {gt is None}"
        if gt is None:
            continue
        assert ga.dtype == gt.dtype and ga.shape == gt.shape, name
        if dtype in LOW:
            _close_low(name, ga, gt, fp64(i))
        else:
            _close_tight(name, ga, gt, GRAD_FP32_TOL, lambda i=i: fp64(i))
    return out_a


# ---- cases torch accepts: values and gradients, in every dtype --------------------------------

def _qkv_mask(mask_fn, lead=(2, 3), lq=5, lk=7):
    def case(m):
        q, k, v = m.qkv(lead, lq, lk)
        return (q, k, v), {"attn_mask": mask_fn(m, lead, lq, lk)}
    return case


def _expanded_mask(m, lead, lq, lk):
    # A (1, 1, Lq, 1) bias seen as (B, H, Lq, Lk) through 0 strides.
    return m.float_mask(1, 1, lq, 1).expand(*lead, lq, lk)


def _expanded_bool(m, lead, lq, lk):
    return m.bool_mask(1, 1, 1, lk).expand(*lead, lq, lk)


def _transposed_qkv(m):
    # torch's layout trick: (B, L, H, D) transposed to (B, H, L, D), a non-contiguous view.
    q = m.randn(2, 5, 3, 8).transpose(1, 2)
    k = m.randn(2, 7, 3, 8).transpose(1, 2)
    v = m.randn(2, 7, 3, 8).transpose(1, 2)
    return (q, k, v), {}


def _strided_last_dim(m):
    # Every other element of the head dim: the last dim's stride is 2.
    q, k, v = m.randn(2, 3, 5, 16)[..., ::2], m.randn(2, 3, 7, 16)[..., ::2], m.randn(2, 3, 7, 16)[..., ::2]
    return (q, k, v), {}


def _expanded_kv(m):
    # k and v broadcast over the heads with 0 strides (how GQA is often written by hand).
    q = m.randn(2, 3, 5, 8)
    k, v = m.randn(2, 1, 7, 8).expand(2, 3, 7, 8), m.randn(2, 1, 7, 8).expand(2, 3, 7, 8)
    return (q, k, v), {}


def _gqa(hq, hk, lead=2):
    def case(m):
        q = m.randn(lead, hq, 5, 8)
        k, v = m.randn(lead, hk, 7, 8), m.randn(lead, hk, 7, 8)
        return (q, k, v), {"enable_gqa": True}
    return case


def _causal(lq, lk, lead=(2, 3)):
    def case(m):
        return m.qkv(lead, lq, lk), {"is_causal": True}
    return case


def _causal_bias(helper, lq, lk):
    def case(m):
        return m.qkv((2, 3), lq, lk), {"attn_mask": helper(lq, lk)}
    return case


def _scale(value):
    def case(m):
        return m.qkv(), {"scale": value}
    return case


def _shape(lead, lq, lk, d, dv=None, **kw):
    def case(m):
        return m.qkv(lead, lq, lk, d, dv), dict(kw)
    return case


def _fully_masked_rows(kind):
    def case(m):
        q, k, v = m.qkv()
        if kind == "bool":
            mask = m.bool_mask(5, 7)
            mask[1] = False
        else:
            mask = m.float_mask(5, 7)
            mask[1] = float("-inf")
        return (q, k, v), {"attn_mask": mask}
    return case


def _mask_grad(shape):
    def case(m):
        q, k, v = m.qkv()
        return (q, k, v), {"attn_mask": m.float_mask(*shape, grad=True)}
    return case


def _large_logits(m):
    # Logits around +-1e3: the online softmax must rescale without overflow.
    q = m.randn(2, 3, 5, 8, mul=30.0)
    k = m.randn(2, 3, 7, 8, mul=30.0)
    return (q, k, m.randn(2, 3, 7, 8)), {}


def _finite_huge_negative_mask(value):
    """The additive way of masking: a huge finite negative bias instead of -inf, row 2 all
    masked. In fp32 torch loses q.k to the bias's spacing (64 at -1e9): its row 2 is the mean
    of v, where the exact result (and torch's fp64) is softmax(q k^T) v; attnfast subtracts the
    row's largest bias first and gets the exact result."""
    def case(m):
        q, k, v = m.qkv()
        mask = torch.zeros(5, 7)
        mask[:, 3:] = value
        mask[2] = value
        return (q, k, v), {"attn_mask": m._finish(mask, False)}
    return case


def _parameters(m):
    q, k, v = m.qkv()
    return tuple(torch.nn.Parameter(t.detach()) for t in (q, k, v)), {}


def _no_grad_inputs(m):
    return m.qkv(grad=False), {}


def _only_q_grad(m):
    q, k, v = m.qkv(grad=False)
    q.requires_grad_(True)
    m.leaves.append(q)
    return (q, k, v), {}


ACCEPTED = {
    # mask kinds and broadcast shapes
    "mask-bool-LqLk": _qkv_mask(lambda m, lead, lq, lk: m.bool_mask(lq, lk)),
    "mask-float-LqLk": _qkv_mask(lambda m, lead, lq, lk: m.float_mask(lq, lk)),
    "mask-float-1LqLk": _qkv_mask(lambda m, lead, lq, lk: m.float_mask(1, lq, lk)),
    "mask-bool-1LqLk": _qkv_mask(lambda m, lead, lq, lk: m.bool_mask(1, lq, lk)),
    "mask-float-HLqLk": _qkv_mask(lambda m, lead, lq, lk: m.float_mask(lead[-1], lq, lk)),
    "mask-float-B1LqLk": _qkv_mask(lambda m, lead, lq, lk: m.float_mask(lead[0], 1, lq, lk)),
    "mask-bool-B1LqLk": _qkv_mask(lambda m, lead, lq, lk: m.bool_mask(lead[0], 1, lq, lk)),
    "mask-float-BHLqLk": _qkv_mask(lambda m, lead, lq, lk: m.float_mask(*lead, lq, lk)),
    "mask-bool-BHLqLk": _qkv_mask(lambda m, lead, lq, lk: m.bool_mask(*lead, lq, lk)),
    "mask-float-Lq1": _qkv_mask(lambda m, lead, lq, lk: m.float_mask(lq, 1)),
    "mask-float-expanded": _qkv_mask(_expanded_mask),
    "mask-bool-expanded": _qkv_mask(_expanded_bool),
    "mask-float-transposed": _qkv_mask(lambda m, lead, lq, lk: m.float_mask(lk, lq).t()),
    "mask-bool-fully-masked-row": _fully_masked_rows("bool"),
    "mask-float-fully-masked-row": _fully_masked_rows("float"),
    "mask-float-minus-1e9": _finite_huge_negative_mask(-1e9),
    "mask-float-grad-LqLk": _mask_grad((5, 7)),
    "mask-float-grad-BHLqLk": _mask_grad((2, 3, 5, 7)),
    "mask-float-grad-1Lk": _mask_grad((1, 7)),
    "mask-float-grad-only": lambda m: (m.qkv(grad=False), {"attn_mask": m.float_mask(5, 7, grad=True)}),
    # leading dims
    "3d": _shape((4,), 5, 7, 8),
    "4d": _shape((2, 3), 5, 7, 8),
    "5d": _shape((2, 2, 3), 5, 7, 8),
    "5d-mask": _qkv_mask(lambda m, lead, lq, lk: m.float_mask(lead[1], 1, lq, lk), lead=(2, 2, 3)),
    "k-v-fewer-dims": lambda m: ((lambda q, k, v: (q, k[0], v[0]))(*m.qkv()), {}),
    "q-fewer-dims-than-k": lambda m: ((lambda q, k, v: (q[0], k, v))(*m.qkv()), {}),
    "4d-broadcast-batch": lambda m: ((m.randn(2, 3, 5, 8), m.randn(1, 3, 7, 8), m.randn(1, 3, 7, 8)), {}),
    # shapes: odd head dims, Dv != D, single rows/keys
    "d-odd-59": _shape((1, 2), 9, 11, 59),
    "dv-ne-d": _shape((2, 2), 5, 7, 8, 12),
    "lq1": _shape((2, 3), 1, 7, 8),
    "d1": _shape((2, 3), 5, 7, 1),
    "lk1": _shape((2, 3), 5, 1, 8),
    "lq-lk-130": _shape((1, 1), 130, 67, 16),
    # GQA
    "gqa-6-2": _gqa(6, 2),
    "gqa-4-4": _gqa(4, 4),
    "gqa-4-1": _gqa(4, 1),
    "gqa-3d": lambda m: ((m.randn(4, 5, 8), m.randn(2, 7, 8), m.randn(2, 7, 8)), {"enable_gqa": True}),
    "gqa-5d": lambda m: ((m.randn(2, 2, 6, 5, 8), m.randn(2, 2, 3, 7, 8), m.randn(2, 2, 3, 7, 8)),
                         {"enable_gqa": True}),
    "gqa-k-v-heads-differ": lambda m: ((m.randn(2, 6, 5, 8), m.randn(2, 2, 7, 8), m.randn(2, 3, 7, 8)),
                                       {"enable_gqa": True}),
    "gqa-mask": lambda m: ((m.randn(2, 6, 5, 8), m.randn(2, 2, 7, 8), m.randn(2, 2, 7, 8)),
                           {"enable_gqa": True, "attn_mask": m.float_mask(2, 6, 5, 7)}),
    # causal
    "causal-square": _causal(6, 6),
    "causal-lq<lk": _causal(4, 9),
    "causal-lq>lk": _causal(9, 4),
    "causal-lq1": _causal(1, 7),
    "causal-3d": lambda m: (m.qkv((3,), 6, 6), {"is_causal": True}),
    "causal-gqa": lambda m: ((m.randn(2, 4, 5, 8), m.randn(2, 2, 7, 8), m.randn(2, 2, 7, 8)),
                             {"enable_gqa": True, "is_causal": True}),
    "causal-upper-left-square": _causal_bias(causal_upper_left, 6, 6),
    "causal-upper-left-lq<lk": _causal_bias(causal_upper_left, 4, 9),
    "causal-upper-left-lq>lk": _causal_bias(causal_upper_left, 9, 4),
    "causal-lower-right-square": _causal_bias(causal_lower_right, 6, 6),
    "causal-lower-right-lq<lk": _causal_bias(causal_lower_right, 4, 9),
    "causal-lower-right-lq>lk": _causal_bias(causal_lower_right, 9, 4),
    # zero-length
    "lq0": _shape((2, 3), 0, 7, 8),
    "lk0": _shape((2, 3), 5, 0, 8),
    "b0": _shape((0, 3), 5, 7, 8),
    "d0": _shape((2, 3), 5, 7, 0),
    "dv0": _shape((2, 3), 5, 7, 8, 0),
    "lq0-causal": _shape((2, 3), 0, 7, 8, is_causal=True),
    "lk0-causal": _shape((2, 3), 5, 0, 8, is_causal=True),
    "lk0-mask": _qkv_mask(lambda m, lead, lq, lk: m.bool_mask(lq, lk), lk=0),
    # scale values
    "scale-none": _scale(None),
    "scale-0.37": _scale(0.37),
    "scale-0": _scale(0.0),
    "scale-neg": _scale(-0.5),
    "scale-inf": _scale(float("inf")),
    "scale--inf": _scale(float("-inf")),
    "scale-nan": _scale(float("nan")),
    "scale-int": _scale(1),
    "scale-10": _scale(10.0),
    "scale-30": _scale(30.0),
    "scale-bool": _scale(True),
    "scale-0d-tensor": _scale(torch.tensor(0.5)),
    "dropout-int-0": lambda m: (m.qkv(), {"dropout_p": 0}),
    "dropout-false": lambda m: (m.qkv(), {"dropout_p": False}),
    # strides and input types
    "transposed": _transposed_qkv,
    "strided-last-dim": _strided_last_dim,
    "expanded-kv": _expanded_kv,
    "parameters": _parameters,
    "no-grad": _no_grad_inputs,
    "only-q-grad": _only_q_grad,
    "large-logits": _large_logits,
}


# The accepted cases attnfast hands to torch's SDPA (the rest run on attnfast's kernels, which
# the next test pins, so that this file keeps testing them): a float mask that requires grad,
# k/v leading dims that differ from q's after GQA, torch's CausalBias objects, a non-finite
# scale, a scale or dropout_p that is not a Python float/int.
TORCH_ROUTED = {
    "mask-float-grad-LqLk", "mask-float-grad-BHLqLk", "mask-float-grad-1Lk", "mask-float-grad-only",
    "k-v-fewer-dims", "q-fewer-dims-than-k", "4d-broadcast-batch", "gqa-3d", "gqa-k-v-heads-differ",
    "causal-upper-left-square", "causal-upper-left-lq<lk", "causal-upper-left-lq>lk",
    "causal-lower-right-square", "causal-lower-right-lq<lk", "causal-lower-right-lq>lk",
    "scale-inf", "scale--inf", "scale-nan", "scale-0d-tensor", "dropout-false",
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_accepted_cases_run_on_attnfasts_kernels(dtype):
    from attnfast.ops import attention as attn_ops
    from conftest import require_backend
    require_backend("cpu")
    for name, case in ACCEPTED.items():
        args, kw = case(Make(dtype))
        kw = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None,
              "enable_gqa": False, **kw}
        route = attn_ops._sdpa_route(*args, kw["attn_mask"], kw["dropout_p"], kw["is_causal"],
                                     kw["scale"], kw["enable_gqa"])
        on_kernels = route is not None and attn_ops._sdpa_backend(route[0]) == "cpu"
        assert on_kernels == (name not in TORCH_ROUTED), name


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("name", list(ACCEPTED))
def test_accepted_inputs_match_torch(name, dtype):
    out = check(ACCEPTED[name], dtype)
    assert not isinstance(out, Exception), f"torch rejected case {name!r}: {out}"


# ---- non-finite inputs: against torch's MATH backend -----------------------------------------

def _with_special(where, value):
    def case(m):
        q, k, v = m.qkv(grad=False)
        t = {"q": q, "k": k, "v": v}[where]
        t[0, 1, 2, 3] = value
        for x in (q, k, v):
            x.requires_grad_(True)
            m.leaves.append(x)
        return (q, k, v), {}
    return case


def _mask_special(value):
    def case(m):
        q, k, v = m.qkv()
        mask = m.float_mask(5, 7)
        with torch.no_grad():
            mask[2, 3] = value
        return (q, k, v), {"attn_mask": mask}
    return case


SPECIAL = {
    "nan-in-q": _with_special("q", float("nan")),
    "nan-in-k": _with_special("k", float("nan")),
    "nan-in-v": _with_special("v", float("nan")),
    "inf-in-q": _with_special("q", float("inf")),
    "inf-in-v": _with_special("v", float("inf")),
    "nan-in-mask": _mask_special(float("nan")),
    "posinf-in-mask": _mask_special(float("inf")),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(SPECIAL))
def test_non_finite_inputs_propagate_like_torchs_math_backend(name, dtype):
    """NaN/inf propagate as in torch's MATH backend (torch's CPU flash kernel gives 0 for a
    NaN query row instead: a known, intended difference)."""
    check(SPECIAL[name], dtype, math_backend=True)


# ---- inputs torch rejects: the same exception type --------------------------------------------

def _meta(t):
    return t.detach().to("meta")


REJECTED = {
    "mask-float64-with-fp32-q": lambda m: (m.qkv(), {"attn_mask": torch.zeros(5, 7, dtype=torch.float64)}),
    "mask-fp16-with-fp32-q": lambda m: (m.qkv(), {"attn_mask": torch.zeros(5, 7, dtype=torch.float16)}),
    "mask-int32": lambda m: (m.qkv(), {"attn_mask": torch.zeros(5, 7, dtype=torch.int32)}),
    "mask-int64": lambda m: (m.qkv(), {"attn_mask": torch.ones(5, 7, dtype=torch.int64)}),
    "mask-uint8": lambda m: (m.qkv(), {"attn_mask": torch.ones(5, 7, dtype=torch.uint8)}),
    "mask-wrong-shape": lambda m: (m.qkv(), {"attn_mask": torch.zeros(5, 6)}),
    "mask-wrong-batch": lambda m: (m.qkv(), {"attn_mask": torch.zeros(3, 3, 5, 7)}),
    "mask-5d-on-4d": lambda m: (m.qkv(), {"attn_mask": torch.zeros(2, 2, 3, 5, 7)}),
    "mask-not-a-tensor": lambda m: (m.qkv(), {"attn_mask": [[True] * 7] * 5}),
    "mask-bool-Lk": lambda m: (m.qkv(), {"attn_mask": torch.ones(7, dtype=torch.bool)}),
    "mask-float-Lk": lambda m: (m.qkv(), {"attn_mask": torch.zeros(7)}),
    "mask-and-causal": lambda m: (m.qkv(), {"attn_mask": torch.zeros(5, 7), "is_causal": True}),
    "bool-mask-and-causal": lambda m: (m.qkv(), {"attn_mask": torch.ones(5, 7, dtype=torch.bool),
                                                  "is_causal": True}),
    "causal-bias-and-causal": lambda m: (m.qkv(), {"attn_mask": causal_lower_right(5, 7),
                                                    "is_causal": True}),
    "gqa-bad-ratio": _gqa(6, 4),
    "heads-differ-without-gqa": lambda m: ((m.randn(2, 6, 5, 8), m.randn(2, 2, 7, 8), m.randn(2, 2, 7, 8)), {}),
    "dropout-negative": lambda m: (m.qkv(), {"dropout_p": -0.1}),
    "dropout-above-1": lambda m: (m.qkv(), {"dropout_p": 1.5}),
    "k-dtype-differs": lambda m: ((lambda q, k, v: (q, k.double(), v))(*m.qkv()), {}),
    "v-dtype-differs": lambda m: ((lambda q, k, v: (q, k, v.half()))(*m.qkv()), {}),
    "int-inputs": lambda m: ((torch.ones(2, 5, 8, dtype=torch.int64),) * 3, {}),
    "k-on-meta": lambda m: ((lambda q, k, v: (q, _meta(k), v))(*m.qkv()), {}),
    "v-on-meta": lambda m: ((lambda q, k, v: (q, k, _meta(v)))(*m.qkv()), {}),
    "q-1d": lambda m: ((m.randn(8), m.randn(8), m.randn(8)), {}),
    "q-0d": lambda m: ((m.randn(()), m.randn(()), m.randn(())), {}),
    "head-dims-differ": lambda m: ((m.randn(2, 3, 5, 8), m.randn(2, 3, 7, 6), m.randn(2, 3, 7, 8)), {}),
    "batch-mismatch": lambda m: ((m.randn(2, 3, 5, 8), m.randn(3, 3, 7, 8), m.randn(3, 3, 7, 8)), {}),
    "q-not-a-tensor": lambda m: (([[0.0] * 8] * 5, m.randn(5, 8), m.randn(5, 8)), {}),
    "scale-none-string": lambda m: (m.qkv(), {"scale": "none"}),
    "scale-string": lambda m: (m.qkv(), {"scale": "0.5"}),
    "causal-str": lambda m: (m.qkv(), {"is_causal": "yes"}),
    "causal-int": lambda m: (m.qkv(), {"is_causal": 1}),
    "causal-none": lambda m: (m.qkv(), {"is_causal": None}),
    "causal-tensor": lambda m: (m.qkv(), {"is_causal": torch.tensor(True)}),
    "gqa-int": lambda m: (m.qkv(), {"enable_gqa": 1}),
    "gqa-none": lambda m: (m.qkv(), {"enable_gqa": None}),
    "dropout-str": lambda m: (m.qkv(), {"dropout_p": "abc"}),
    "dropout-numeric-str": lambda m: (m.qkv(), {"dropout_p": "0"}),
    "dropout-none": lambda m: (m.qkv(), {"dropout_p": None}),
}


@pytest.mark.parametrize("name", list(REJECTED))
def test_rejected_inputs_raise_torchs_exception_type(name):
    """Each case first checks that torch rejects it (else the case is mis-filed)."""
    args, kw = REJECTED[name](Make(torch.float32))
    with pytest.raises(Exception):
        F.scaled_dot_product_attention(*args, **kw)
    assert isinstance(check(REJECTED[name]), Exception)


# ---- all-meta inputs, dropout, subclasses -----------------------------------------------------

def test_all_meta_inputs_give_torchs_meta_result():
    q, k, v = (torch.empty(2, 3, n, 8, device="meta") for n in (5, 7, 7))
    got = attnfast.scaled_dot_product_attention(q, k, v, is_causal=True)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert got.device == want.device and got.shape == want.shape and got.dtype == want.dtype


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout_values_torch_accepts(p):
    """p > 0 goes to torch (torch's RNG): bit-identical with the same seed; p = 0 is the
    kernel path; p = 1 (accepted by torch) too."""
    def case(m):
        return m.qkv(), {"dropout_p": p}
    outs = []
    for fn in (F.scaled_dot_product_attention, attnfast.scaled_dot_product_attention):
        args, kw = case(Make(torch.float32))
        torch.manual_seed(5)
        out = fn(*args, **kw)
        (gq,) = torch.autograd.grad(out.sum(), args[0])
        outs.append((out, gq))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, **FP32_TOL, equal_nan=True)


class _Sub(torch.Tensor):
    """A Tensor subclass with torch's default __torch_function__ (results keep the subclass)."""


def test_tensor_subclass_inputs_keep_torchs_result_type():
    q, k, v = (torch.randn(2, 3, n, 8).as_subclass(_Sub) for n in (5, 7, 7))
    got = attnfast.scaled_dot_product_attention(q, k, v)
    want = F.scaled_dot_product_attention(q, k, v)
    assert type(got) is type(want)
    torch.testing.assert_close(got.as_subclass(torch.Tensor), want.as_subclass(torch.Tensor))


def test_float_mask_without_grad_under_no_grad_and_with_grad():
    """A float mask that requires grad, but under no_grad: same values either way."""
    def case(m):
        q, k, v = m.qkv(grad=False)
        return (q, k, v), {"attn_mask": m.float_mask(5, 7, grad=True)}
    with torch.no_grad():
        check(case)


# ---- where attnfast deliberately differs from torch -------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"attn_mask": torch.zeros(5, 7, device="meta")},
    {"value_len": 6},
], ids=["mask-on-meta", "v-shorter-than-k"])
def test_inputs_torchs_cpu_kernel_reads_garbage_from_are_refused(kwargs):
    """torch 2.14's CPU SDPA accepts a mask that is not in host memory and a v shorter than k
    without a check, and returns garbage (reads of memory that is not the input's: values up
    to 1e35 here). attnfast raises the RuntimeError torch's math backend raises for the second."""
    m = Make(torch.float32)
    q, k, v = m.qkv()
    if "value_len" in kwargs:
        v = v[:, :, :kwargs.pop("value_len")]
        with sdpa_kernel(SDPBackend.MATH), pytest.raises(RuntimeError):
            F.scaled_dot_product_attention(q, k, v)
    F.scaled_dot_product_attention(q, k, v, **kwargs)  # torch: no error
    with pytest.raises(RuntimeError, match="same sequence length|attn_mask is on meta"):
        attnfast.scaled_dot_product_attention(q, k, v, **kwargs)


@pytest.mark.xfail(strict=True, reason=(
    "rows whose keys all carry the same finite bias near finfo(fp32).min: torch (fp32 and fp64) "
    "loses q.k to the bias and returns mean(v); attnfast subtracts the row's largest bias and "
    "returns the exact softmax(q k^T) v: kept (issue 14), documented in the drop-in's docstring."))
def test_rows_all_at_finfo_min_match_torch():
    check(_finite_huge_negative_mask(torch.finfo(torch.float32).min))


@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_huge_scales_in_fp16(scale):
    """|scale| >= 1e3 in fp16 goes to torch: the flash-style backward's D = rowsum(dO * O) from
    the fp16 output, amplified by the scale, cost dq/dk up to ~5x torch's error (inf at 1e30)."""
    check(_scale(scale), torch.float16)
