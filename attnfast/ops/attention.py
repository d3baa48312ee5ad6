"""Single-head attention: validation, mask building, backend implementations, fake kernels,
autograd, and the torch SDPA drop-in.

Compiled backends share one contract (csrc/schemas.h, attention section):
``attention_forward(q, k, v, bias, causal, scale, dropout_p, seed, keep_probs) -> (out, lse,
probs)`` and ``attention_backward(grad_out, q, k, v, out, lse, probs, bias, causal, scale,
dropout_p, seed, deterministic) -> (grad_q, grad_k, grad_v)``, the seed a 0-dim int64 CPU tensor
(attnfast/ops/seed.py). Whether the forward keeps the (B, Lq, Lk) fp32 probabilities for the
backward (which then skips recomputing them) is decided here from shapes and a memory budget
(:func:`keep_probs`, ``ATTNFAST_ATTN_KEEP_MIB``); ``attnfast.explain`` shows the
decision. This module turns boolean masks and
``key_padding_mask`` into the additive fp32 ``bias`` (an expanded view: key padding alone is a
(B, 1, Lk) tensor seen as (B, Lq, Lk) through a 0 stride, so it costs nothing), makes the last
dim of q/k/v contiguous (the kernels accept any other strides), and draws the dropout seed.
The bias gets no gradient from the compiled backends (it is a mask).
"""
from __future__ import annotations

import dataclasses
import math
import os

import torch
import torch.nn.functional as F

from attnfast import dispatch, reference
from attnfast.reference.attention import weights_and_lse
from attnfast.dispatch import Implementation, Op, device_reasons
from attnfast.ops import seed as seed_ops
from attnfast.ops import spec
from attnfast.ops.autocast import lower_precision
from attnfast.ops.checks import flag

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclasses.dataclass
class AttentionInputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    bias: torch.Tensor | None  # fp32, expanded to (B, Lq, Lk), or None
    causal: bool
    scale: float
    dropout_p: float  # effective: 0 unless training
    seed: torch.Tensor  # 0-dim int64 CPU tensor: the Philox key (attnfast/ops/seed.py)
    return_weights: bool

    @property
    def device(self):
        return self.q.device

    @property
    def dtype(self):
        return self.q.dtype


def _check_tensor(name, t, ndim):
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")


def _broadcast_to(t, shape):
    try:
        return t.expand(shape) if t.dim() <= len(shape) else None
    except RuntimeError:
        return None


def build_bias(attn_mask, key_padding_mask, shape, device) -> torch.Tensor | None:
    """The additive fp32 mask (expanded to ``shape`` = (B, Lq, Lk)) of a boolean (True = keep)
    or float attn_mask and a boolean key_padding_mask (B, Lk) (True = padding), or None."""
    b, lq, lk = shape
    bias = None
    if attn_mask is not None:
        if not isinstance(attn_mask, torch.Tensor):
            raise ValueError(f"attn_mask must be a torch.Tensor, got {type(attn_mask).__name__}")
        if attn_mask.device != device:
            raise ValueError(f"attn_mask is on {attn_mask.device} but q is on {device}")
        if attn_mask.dtype == torch.bool:
            m = torch.zeros(attn_mask.shape, dtype=torch.float32, device=device)
            m = m.masked_fill(~attn_mask, float("-inf"))
        elif attn_mask.is_floating_point():
            m = attn_mask.float()
            # Softmax is unchanged by a constant per row, so each row's largest finite bias is
            # subtracted. A row whose keys all carry a huge finite negative bias (-1e9,
            # finfo.min: masking the additive way) then keeps its scale: left at -1e9, where
            # fp32's spacing is 64, the saved logsumexp lost the row's log-sum and the backward's
            # exp(s - lse) was off by a factor of up to the number of keys.
            if m.numel() and m.shape[-1]:
                row_max = m.amax(dim=-1, keepdim=True)
                m = m - torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
        else:
            raise ValueError(f"attn_mask must be boolean (True = keep) or floating (additive), "
                             f"got {attn_mask.dtype}")
        bias = _broadcast_to(m, shape)
        if bias is None:
            raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)} is not broadcastable "
                             f"to (B, Lq, Lk) = {tuple(shape)}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            raise ValueError("key_padding_mask must be a boolean tensor (True = padding)")
        if tuple(key_padding_mask.shape) != (b, lk):
            raise ValueError(f"key_padding_mask must have shape (B, Lk) = ({b}, {lk}), got "
                             f"{tuple(key_padding_mask.shape)}")
        if key_padding_mask.device != device:
            raise ValueError(f"key_padding_mask is on {key_padding_mask.device} but q is on {device}")
        pad = torch.zeros((b, 1, lk), dtype=torch.float32, device=device)
        pad = pad.masked_fill(key_padding_mask.unsqueeze(1), float("-inf"))
        bias = pad.expand(shape) if bias is None else (bias + pad).expand(shape)
    return bias


def prepare(q, k, v, *, causal=False, attn_mask=None, key_padding_mask=None, dropout_p=0.0,
            training=False, scale=None, return_weights=False, seed=None) -> AttentionInputs:
    _check_tensor("q", q, 3)
    _check_tensor("k", k, 3)
    _check_tensor("v", v, 3)
    causal, training = flag("causal", causal), flag("training", training)
    return_weights = flag("return_weights", return_weights)
    b, lq, d = q.shape
    if tuple(k.shape[::2]) != (b, d):
        raise ValueError(f"k must have shape (B, Lk, D) = ({b}, Lk, {d}) to match q {tuple(q.shape)}, "
                         f"got {tuple(k.shape)}")
    if v.shape[0] != b or v.shape[1] != k.shape[1]:
        raise ValueError(f"v must have shape (B, Lk, Dv) = ({b}, {k.shape[1]}, Dv), got {tuple(v.shape)}")
    if not q.is_floating_point():
        raise ValueError(f"q must be a floating-point tensor, got {q.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name} dtype {t.dtype} must match q dtype {q.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
    if not (isinstance(dropout_p, (int, float)) and 0.0 <= dropout_p < 1.0):
        raise ValueError(f"dropout_p must be a float in [0, 1), got {dropout_p!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(d) if d > 0 else 1.0
    elif not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float or None, got {scale!r}")
    bias = build_bias(attn_mask, key_padding_mask, (b, lq, k.shape[1]), q.device)
    p = float(dropout_p) if training else 0.0
    # A tensor (drawn from torch's generator when None, so torch.manual_seed makes runs
    # repeatable): nothing data-dependent for torch.compile to guard on.
    return AttentionInputs(q, k, v, bias, causal, float(scale), p, seed_ops.resolve(seed, p),
                           return_weights)


# ---- keeping the probabilities for the backward (no recompute when it is cheaper to keep) -----

KEEP_ENV = "ATTNFAST_ATTN_KEEP_MIB"
# Per call. Keeping costs 4 bytes per score held from the forward to the backward; recomputing
# costs the backward a q k^T GEMM (2 D flops per score) and an exp per score. 256 MiB keeps the
# shapes this library is built for -- SHA-RNN's attention, B 2 Lq 1024 Lk 3072: 24 MiB; B 4:
# 48 MiB -- at a few times the size of their q/k/v/out activations, and stops a long sequence
# from growing a step's memory quadratically: B 8 Lq = Lk = 4096 (512 MiB) already recomputes.
DEFAULT_KEEP_MIB = 256
# The backends whose kernels keep (the CPU kernels); the others recompute in their backward
# and refuse keep_probs=True.
KEEP_BACKENDS = ("cpu",)


def keep_budget_mib() -> int:
    """The budget of kept probabilities per call, in MiB: ``ATTNFAST_ATTN_KEEP_MIB`` (a
    non-negative integer in decimal digits; 0 always recomputes), ``DEFAULT_KEEP_MIB`` when
    unset or empty. Any other value raises ValueError naming the variable."""
    value = os.environ.get(KEEP_ENV, "")
    if value == "":
        return DEFAULT_KEEP_MIB
    if value.isascii() and value.isdigit():
        return int(value)
    raise ValueError(f'attnfast: {KEEP_ENV}="{value}" is not valid; expected a non-negative '
                     f'integer number of MiB (decimal digits; 0 always recomputes; unset or empty '
                     f'means the default, {DEFAULT_KEEP_MIB})')


# Read once per trace under torch.compile (a compiled graph keeps the budget it was traced with);
# at every call in eager mode.
@torch.compiler.assume_constant_result
def _keep_budget_constant() -> int:
    return keep_budget_mib()


def _backward_will_run(inp: AttentionInputs) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in (inp.q, inp.k, inp.v))


def _probs_bytes(inp: AttentionInputs):
    return inp.q.shape[0] * inp.q.shape[1] * inp.k.shape[1] * 4


def keep_probs(backend: str, inp: AttentionInputs) -> bool:
    """Whether ``backend``'s forward keeps the (B, Lq, Lk) fp32 probabilities for the backward:
    a backend whose kernels keep (``KEEP_BACKENDS``), a backward that will run, and a size
    within the budget. From shapes, grad mode and the budget only: static per shape, so
    torch.compile traces it without a graph break (and, with dynamic shapes, guards on the size
    comparison, not on the sizes)."""
    return (backend in KEEP_BACKENDS and _backward_will_run(inp)
            and _probs_bytes(inp) <= _keep_budget_constant() * 2**20)


def keep_probs_reason(backend: str, inp: AttentionInputs) -> str:
    """:func:`keep_probs`'s decision in words (for ``attnfast.explain``)."""
    mib = _probs_bytes(inp) / 2**20
    mib = f"{mib:.1f}" if mib >= 0.1 else f"{mib:.2g}"
    if backend not in KEEP_BACKENDS:
        return (f"recomputes: the {backend} kernels recompute the probabilities in the backward "
                f"(only the {', '.join(KEEP_BACKENDS)} kernels keep them)")
    if not _backward_will_run(inp):
        return ("keeps nothing: no backward will run (grad disabled or no input requires grad)")
    budget = keep_budget_mib()
    if keep_probs(backend, inp):
        return f"keeps probabilities: {mib} MiB <= budget {budget} MiB ({KEEP_ENV})"
    return f"recomputes: {mib} MiB > budget {budget} MiB ({KEEP_ENV})"


def _explain_notes(inp: AttentionInputs, backend: str) -> list[str]:
    if backend == "reference":
        return ["backward: torch autograd of the reference (keeps what torch keeps)"]
    return [f"backward: {keep_probs_reason(backend, inp)}"]


# ---- the compiled op pair: declared once for every backend (ops/spec.py) ---------------------

def _fake_forward(q, k, v, bias, causal, scale, dropout_p, seed, keep_probs):
    seed_ops.check_seed_tensor(seed, "attention_forward: seed")
    out = q.new_empty((q.shape[0], q.shape[1], v.shape[2]))
    lse = q.new_empty((q.shape[0], q.shape[1]), dtype=torch.float32)
    shape = (q.shape[0], q.shape[1], k.shape[1]) if keep_probs else (0,)
    return out, lse, q.new_empty(shape, dtype=torch.float32)


def _fake_backward(grad_out, q, k, v, out, lse, probs, bias, causal, scale, dropout_p, seed,
                   deterministic):
    seed_ops.check_seed_tensor(seed, "attention_backward: seed")
    # Contiguous, as every backend returns them (empty_like would copy the strides of a
    # transposed q, and inductor checks the real strides against these).
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, bias, causal, scale, dropout_p, seed, keep_probs = inputs
    out, lse, probs = output
    ctx.save_for_backward(q, k, v, out, lse, probs if keep_probs else None, bias, seed)
    ctx.args = (causal, scale, dropout_p)
    ctx.set_materialize_grads(False)  # no zeros for the lse's / probs' gradients, never read


def _backward(ctx, backward_op, grad_out, _grad_lse, _grad_probs):
    # lse and probs are auxiliary outputs for the backward; their gradients are not propagated
    # (the public API never returns them with a graph). The bias is a mask: no gradient. The
    # deterministic (no atomics, bitwise repeatable) backward when torch is asked for
    # deterministic algorithms. Kept probs (or None) let the backward skip recomputing P.
    if grad_out is None:  # the output itself was not used
        return (None,) * 9
    q, k, v, out, lse, probs, bias, seed = ctx.saved_tensors
    causal, scale, dropout_p = ctx.args
    gq, gk, gv = backward_op(grad_out, q, k, v, out, lse, probs, bias, causal, scale, dropout_p,
                             seed, torch.are_deterministic_algorithms_enabled())
    return gq, gk, gv, None, None, None, None, None, None


def _example():
    # Lq 3 < Lk 5: a bottom-right causal mask with a memory of two keys; dropout on. Without
    # keep_probs: the example runs on every backend, and only the CPU kernels keep
    # (tests/test_attention_keep_probs.py opchecks keep_probs=True on them).
    g = spec.example_generator()
    q, k, v = (torch.randn(2, n, 4, generator=g) for n in (3, 5, 5))
    return q, k, v, None, True, 0.5, 0.25, torch.tensor(7), False


spec.register(spec.KernelOp(
    "attention_forward", "attention_backward", public="single_head_attention",
    fake=_fake_forward, fake_backward=_fake_backward,
    triton="attention:attention_forward:attention_backward",
    example=_example, setup_context=_setup_context,
    backward_formula=_backward, dense=False))


# ---- backend implementations ---------------------------------------------------------------

def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    if t.stride(-1) == 1 or t.shape[-1] <= 1:
        return t
    # An empty tensor counts as contiguous whatever its strides, so .contiguous() keeps them.
    return t.clone(memory_format=torch.contiguous_format) if t.numel() == 0 else t.contiguous()


def _run_reference(inp: AttentionInputs):
    # The reference's Philox works from the seed tensor too (reference/dropout.py): traceable.
    res = reference.attention(inp.q, inp.k, inp.v, inp.bias, inp.causal, inp.scale,
                              inp.dropout_p, inp.seed, return_weights=inp.return_weights)
    return (res[0], res[2]) if inp.return_weights else res[0]


def _run_compiled(backend: str, inp: AttentionInputs):
    q, k, v = (_last_dim_contiguous(t) for t in (inp.q, inp.k, inp.v))
    out, _, _ = spec.kernels(backend).attention_forward(
        q, k, v, inp.bias, inp.causal, inp.scale, inp.dropout_p, inp.seed,
        keep_probs(backend, inp))
    if not inp.return_weights:
        return out
    # The slower path: the (B, Lq, Lk) weights are materialised in torch (differentiable, the
    # same Philox mask), the output still comes from the kernel.
    w, _ = weights_and_lse(inp.q, inp.k, inp.bias, inp.causal, inp.scale, inp.dropout_p,
                           inp.seed)
    return out, w


def _refuses(backend: str, inp: AttentionInputs) -> list[str]:
    return device_reasons(inp, backend, KERNEL_DTYPES)


def _compiled_implementation(backend: str) -> Implementation:
    # spec.compiled_implementations' rule, with the backend passed to the run (the keep policy
    # depends on it).
    return Implementation(
        backend,
        lambda inp: spec.kernel_reasons(backend, ["attention_forward"]) + _refuses(backend, inp),
        lambda inp: _run_compiled(backend, inp))


ATTENTION = dispatch.register(Op("single_head_attention", prepare, [
    Implementation("reference", lambda inp: [], _run_reference),
    *(_compiled_implementation(backend) for backend in spec.COMPILED_BACKENDS),
],
    # On CUDA the Triton kernels first: they were measured faster than the hand-written CUDA
    # ones, whose backward is an exact-fp32 SIMT path (figures: bench/notes/attention_gpu.md).
    # CUDA stays available with backend="cuda".
    auto_order={"cuda": ("triton", "cuda", "reference")},
    notes=_explain_notes))


def single_head_attention(q, k, v, *, causal=False, attn_mask=None, key_padding_mask=None,
                          dropout_p=0.0, training=False, scale=None, return_weights=False,
                          seed=None, backend=None):
    """Fused single-head attention ``softmax(scale * q k^T + mask) v``, flash-style.

    Args:
        q: (B, Lq, D); k: (B, Lk, D); v: (B, Lk, Dv): one dtype (fp32 / bf16 / fp16 on the
            compiled backends), one device, any strides.
        causal: bottom-right aligned -- query i sees keys j <= i + (Lk - Lq), so with a memory
            of Lk - Lq earlier positions every query sees all of it (SHA-RNN's case).
        attn_mask: boolean (True = keep) or additive float, broadcastable to (B, Lq, Lk).
        key_padding_mask: (B, Lk) boolean, True = padding (ignored key).
        dropout_p, training, seed: dropout on the attention weights (only when ``training``),
            with attnfast's counter-based Philox mask (the same in every backend for a seed);
            ``seed`` is an int in [0, 2**64) or a one-element int64 CPU tensor, drawn from
            torch's generator when None. A tensor seed (or None) keeps a compiled step free of
            recompiles.
        scale: default 1 / sqrt(D).
        return_weights: also return the (B, Lq, Lk) weights after dropout (a slower path that
            materialises them).
        backend: ``"auto"`` (default, or ``ATTNFAST_BACKEND``), ``"reference"``, ``"cpu"``,
            ``"cuda"``, ``"triton"``.

    Under ``torch.autocast`` q, k, v are cast to the autocast dtype and the result has that
    dtype, as with torch's SDPA. A row whose keys are all masked returns zeros (never NaN). Masks get no gradient on the
    compiled backends. On the GPU backends (``cuda``, ``triton``) heads wider than 256 run
    library GEMMs on chunks of query rows with attnfast's softmax kernels between them instead
    of the flash kernels (``ATTNFAST_ATTN_STRATEGY=flash|gemm|auto``; see the README). On the
    ``cpu`` backend, when a backward will run and the (B, Lq, Lk) fp32 probabilities fit
    ``ATTNFAST_ATTN_KEEP_MIB`` (default 256 MiB per call), the forward keeps them and the backward
    reads them instead of recomputing them (the same gradients); ``attnfast.explain`` says which.

    Returns:
        out (B, Lq, Dv), or (out, weights) with ``return_weights``.
    """
    # Under torch.autocast: computed in the autocast dtype, like torch's SDPA (ops/autocast.py).
    # A float attn_mask stays as given: it becomes the kernels' fp32 additive bias.
    (q, k, v), autocast_off = lower_precision(q, k, v)
    with autocast_off:
        inp = prepare(q, k, v, causal=causal, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                      dropout_p=dropout_p, training=training, scale=scale,
                      return_weights=return_weights, seed=seed)
        return ATTENTION(inp, backend)


single_head_attention.__attnfast_op__ = "single_head_attention"


# ---- the torch.nn.functional.scaled_dot_product_attention drop-in ---------------------------

def _sdpa_route(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """(q3, k3, v3, mask3, lead) for attnfast's kernels, or None to use torch's SDPA."""
    ts = (query, key, value)
    if not all(isinstance(t, torch.Tensor) for t in ts) or any(t.is_nested for t in ts):
        return None
    if type(is_causal) is not bool or type(enable_gqa) is not bool:
        return None  # torch's argument parser raises TypeError (it takes no int, None, tensor)
    if type(dropout_p) not in (int, float) or dropout_p != 0.0:
        # torch's SDPA applies dropout with torch's RNG; attnfast's Philox stream differs, so
        # dropout goes to torch and torch.manual_seed keeps meaning what it means there (and
        # torch raises for a p outside [0, 1]).
        return None
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        return None  # torch computes with a non-finite scale (NaN/0 rows); so does its result here
    if scale is not None and query.dtype == torch.float16 and abs(scale) >= 1e3:
        # fp16 with a huge scale: the flash-style backward's D = rowsum(dO * O), read from the
        # fp16 output and multiplied by the scale, costs dq/dk up to 5x torch's error (inf at
        # 1e30); torch's backward keeps it finite.
        return None
    if attn_mask is not None:
        if type(attn_mask) is not torch.Tensor:
            # Tensor subclasses, e.g. torch.nn.attention.bias.CausalBias (causal_upper_left /
            # causal_lower_right), carry their own semantics through __torch_function__.
            return None
        if attn_mask.dtype != torch.bool and attn_mask.dtype != query.dtype:
            return None  # torch raises for a float mask of another dtype (and for int masks)
        if attn_mask.requires_grad and torch.is_grad_enabled():
            return None  # torch differentiates a float mask; attnfast's kernels treat it as a mask
        if attn_mask.dim() < 2:
            return None  # torch raises IndexError for a 1-D (Lk,) mask
        if attn_mask.device != query.device:
            return None  # torch's error (or, from a CPU scalar mask, torch's result)
    if query.dim() < 3 or key.dim() != query.dim() or value.dim() != query.dim():
        return None
    if query.dtype not in KERNEL_DTYPES or key.dtype != query.dtype or value.dtype != query.dtype:
        return None
    if key.device != query.device or value.device != query.device:
        return None
    if is_causal and attn_mask is not None:
        return None  # torch raises its own error for this
    lq, lk = query.shape[-2], key.shape[-2]
    if key.shape[-1] != query.shape[-1] or value.shape[-2] != lk:
        return None
    if enable_gqa and query.dim() >= 4:
        hq, hk, hv = query.shape[-3], key.shape[-3], value.shape[-3]
        if hk != hv or hq % hk != 0:
            return None
        if hq != hk:
            key = key.repeat_interleave(hq // hk, dim=-3)
            value = value.repeat_interleave(hq // hk, dim=-3)
    lead = query.shape[:-2]
    if key.shape[:-2] != lead or value.shape[:-2] != lead:
        return None
    b = math.prod(lead)
    q3 = query.reshape(b, lq, query.shape[-1])
    k3 = key.reshape(b, lk, key.shape[-1])
    v3 = value.reshape(b, lk, value.shape[-1])
    mask3 = None
    if attn_mask is not None:
        if attn_mask.dim() > query.dim():
            return None
        try:
            mask3 = attn_mask.expand(*lead, lq, lk).reshape(b, lq, lk)
        except RuntimeError:
            return None
    causal = False
    if is_causal:
        if lq == lk:
            causal = True  # top-left and bottom-right alignment coincide
        else:
            # torch's is_causal is aligned top-left: query i sees keys j <= i.
            mask3 = torch.ones(lq, lk, dtype=torch.bool, device=query.device).tril().expand(b, lq, lk)
    return q3, k3, v3, mask3, causal, lead


def _sdpa_backend(q3) -> str | None:
    """The compiled attnfast backend that would take these inputs under backend='auto', or None."""
    for name in ATTENTION.candidates(q3):
        if name == "reference":
            continue
        probe = AttentionInputs(q3, q3, q3, None, False, 1.0, 0.0, seed_ops.NO_SEED, False)
        if not ATTENTION.reasons(name, probe):
            return name
    return None


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """Drop-in for ``torch.nn.functional.scaled_dot_product_attention`` (same arguments, same
    semantics: top-left ``is_causal``, any leading batch/head dims, GQA).

    Inputs attnfast's compiled kernels take (fp32/bf16/fp16 on a device with attnfast kernels,
    k/v leading dims equal to q's after GQA expansion, a plain boolean mask or a float mask of
    q's dtype that needs no gradient, a finite scale) run on them with the heads folded into
    the batch dim; everything else goes to torch's own SDPA, so the result, the gradients and
    the errors are always torch's: every call with ``dropout_p != 0`` (attnfast's dropout RNG is
    not torch's), torch's mask objects (``torch.nn.attention.bias.CausalBias``), a float mask
    that requires grad, and the inputs torch rejects. A query row whose keys are all masked gives
    0, as torch 2.14 does. A NaN in a query row gives a NaN output row, as torch's math backend
    and the reference do (torch's CPU flash kernel returns 0 for that row instead). Two inputs
    torch 2.14's CPU kernel takes unchecked and returns garbage for raise RuntimeError here (as
    torch's math backend does): a v shorter than k, a mask that is not in host memory. One
    intended difference: a row whose keys all carry the same huge finite bias (``finfo.min``)
    gives the exact ``softmax(q k^T) v`` (attnfast subtracts each row's largest bias), where
    torch's sum ``q.k + bias`` rounds ``q.k`` away and returns the mean of v.
    """
    if all(isinstance(t, torch.Tensor) for t in (query, key, value)):
        # torch's SDPA under autocast computes in the autocast dtype, a plain float mask included
        # (torch's mask objects, e.g. CausalBias, go to torch as they are).
        plain_mask = type(attn_mask) is torch.Tensor
        (query, key, value, cast_mask), autocast_off = lower_precision(
            query, key, value, attn_mask if plain_mask else None)
        attn_mask = cast_mask if plain_mask else attn_mask
        with autocast_off:
            return _sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    return _sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def _check_defined(query, key, value, attn_mask):
    """The inputs torch's CPU SDPA (torch 2.14) takes without a check and computes garbage
    from (it reads past v, or reads a mask that is not in host memory): refused, with the
    RuntimeError torch's math backend raises for them."""
    if (not all(type(t) in (torch.Tensor, torch.nn.Parameter) for t in (query, key, value))
            or query.device.type != "cpu"):
        return
    if key.dim() >= 2 and value.dim() >= 2 and key.shape[-2] != value.shape[-2]:
        raise RuntimeError(f"scaled_dot_product_attention: key and value must have the same "
                           f"sequence length (dim -2), got key {tuple(key.shape)} and value "
                           f"{tuple(value.shape)}")
    if isinstance(attn_mask, torch.Tensor) and attn_mask.device.type != "cpu":
        raise RuntimeError(f"scaled_dot_product_attention: attn_mask is on {attn_mask.device} "
                           f"but query is on {query.device}")


def _explain_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                  enable_gqa=False, backend=None):
    """``attnfast.explain(attnfast.scaled_dot_product_attention, ...)``: whether the call goes to
    torch's SDPA or to attnfast's kernels, and then single_head_attention's explanation of the
    routed inputs (heads folded into the batch), keep-or-recompute policy included. ``backend``
    is ignored: the drop-in takes the auto choice."""
    head = "attnfast.scaled_dot_product_attention:"
    route = _sdpa_route(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    chosen = _sdpa_backend(route[0]) if route is not None else None
    if route is None or chosen is None:
        why = ("these inputs are not routed to attnfast's kernels (dropout, torch's mask objects, "
               "a mask that needs a gradient, ...: see its docstring)" if route is None
               else "no attnfast kernel backend takes them here")
        return f"{head} runs torch's scaled_dot_product_attention: {why}"
    q3, k3, v3, mask3, causal, _ = route
    inp = prepare(q3, k3, v3, causal=causal, attn_mask=mask3, scale=scale)
    return (f"{head} heads folded into the batch, (B, Lq, Lk) = ({q3.shape[0]}, {q3.shape[1]}, "
            f"{k3.shape[1]}), run by\n" + ATTENTION.explain(inp, chosen))


scaled_dot_product_attention.__attnfast_explain__ = _explain_sdpa


def _sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    _check_defined(query, key, value, attn_mask)
    route = _sdpa_route(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    backend = _sdpa_backend(route[0]) if route is not None else None
    if route is None or backend is None:
        # enable_gqa passed as given (but left out when False): torch rejects a non-bool one.
        kwargs = {} if enable_gqa is False else {"enable_gqa": enable_gqa}
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask,
                                              dropout_p=dropout_p, is_causal=is_causal,
                                              scale=scale, **kwargs)
    q3, k3, v3, mask3, causal, lead = route
    out = single_head_attention(q3, k3, v3, causal=causal, attn_mask=mask3, scale=scale,
                                backend=backend)
    return out.reshape(*lead, q3.shape[1], v3.shape[-1])
