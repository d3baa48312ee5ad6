"""The Boom op: validation, the four backend implementations, fake kernels, autograd.

All compiled backends share one contract (csrc/schemas.h): ``boom_forward(x2d, weight, bias,
activation, chunk_width, dropout_p, seed, save_preact) -> (out, preact)``, the seed a 0-dim
int64 CPU tensor (attnfast/ops/seed.py). With shortcut the chunk width is d_model; without it
the chunk width is d_ff (one chunk: a fused linear + activation + dropout) and the down
projection runs in torch.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from attnfast import dispatch, reference
from attnfast.dispatch import Implementation, Op, device_reasons
from attnfast.ops import seed as seed_ops
from attnfast.ops import spec
from attnfast.ops.autocast import lower_precision
from attnfast.ops.checks import flag

ACTIVATIONS = {"gelu_sigmoid": 0, "gelu": 1, "gelu_tanh": 2, "relu": 3}  # csrc/common/activations.h
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclasses.dataclass
class BoomInputs:
    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    shortcut: bool
    weight2: torch.Tensor | None
    bias2: torch.Tensor | None
    activation: str
    dropout_p: float  # effective: 0 unless training
    seed: torch.Tensor  # 0-dim int64 CPU tensor: the Philox key (attnfast/ops/seed.py)

    @property
    def device(self):
        return self.x.device

    @property
    def dtype(self):
        return self.x.dtype


def _check_tensor(name, t, ndim=None):
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")


def prepare(x, weight, bias=None, *, shortcut=True, weight2=None, bias2=None,
            activation="gelu_sigmoid", dropout_p=0.0, training=False, seed=None) -> BoomInputs:
    _check_tensor("x", x)
    _check_tensor("weight", weight, 2)
    if x.dim() < 1:
        raise ValueError("x must have at least 1 dimension (..., d_model)")
    d_ff, d_model = weight.shape
    if x.shape[-1] != d_model:
        raise ValueError(
            f"x's last dim ({x.shape[-1]}) must equal weight.shape[1] (d_model={d_model}); "
            f"weight must be (d_ff, d_model)"
        )
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    named = [("weight", weight)]
    if bias is not None:
        _check_tensor("bias", bias, 1)
        if bias.shape[0] != d_ff:
            raise ValueError(f"bias must have shape ({d_ff},), got {tuple(bias.shape)}")
        named.append(("bias", bias))
    shortcut, training = flag("shortcut", shortcut), flag("training", training)
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if not (isinstance(dropout_p, (int, float)) and 0.0 <= dropout_p < 1.0):
        raise ValueError(f"dropout_p must be a float in [0, 1), got {dropout_p!r}")
    if shortcut:
        if d_model == 0:
            raise ValueError("shortcut=True needs d_model >= 1 (the activation is cut into "
                             "d_model-wide chunks), got x and weight with d_model=0")
        if d_ff < d_model:
            raise ValueError(
                f"shortcut=True needs d_ff >= d_model (the d_ff-wide activation is cut into "
                f"d_model-wide chunks), got d_ff={d_ff} < d_model={d_model}"
            )
        if weight2 is not None or bias2 is not None:
            raise ValueError("weight2/bias2 are only used with shortcut=False")
    else:
        if weight2 is None:
            raise ValueError("shortcut=False needs weight2 of shape (d_out, d_ff)")
        _check_tensor("weight2", weight2, 2)
        if weight2.shape[1] != d_ff:
            raise ValueError(f"weight2 must have shape (d_out, {d_ff}), got {tuple(weight2.shape)}")
        named.append(("weight2", weight2))
        if bias2 is not None:
            _check_tensor("bias2", bias2, 1)
            if bias2.shape[0] != weight2.shape[0]:
                raise ValueError(f"bias2 must have shape ({weight2.shape[0]},), got {tuple(bias2.shape)}")
            named.append(("bias2", bias2))
    for name, t in named:
        if t.dtype != x.dtype:
            raise ValueError(f"{name} dtype {t.dtype} must match x dtype {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    p = float(dropout_p) if training else 0.0
    # A tensor (drawn from torch's generator when None, so torch.manual_seed makes runs
    # repeatable): nothing data-dependent for torch.compile to guard on.
    return BoomInputs(x, weight, bias, shortcut, weight2, bias2, activation, p,
                      seed_ops.resolve(seed, p))


# ---- the compiled op pair: declared once for every backend (ops/spec.py) ---------------------

def _fake_forward(x, weight, bias, activation, chunk_width, dropout_p, seed, save_preact):
    seed_ops.check_seed_tensor(seed, "boom_forward: seed")
    f_used = weight.shape[0] // chunk_width * chunk_width
    out = x.new_empty((x.shape[0], chunk_width))
    preact = x.new_empty((x.shape[0], f_used)) if save_preact else x.new_empty((0,))
    return out, preact


def _fake_backward(grad_out, x, weight, preact, has_bias, activation, chunk_width, dropout_p, seed):
    seed_ops.check_seed_tensor(seed, "boom_backward: seed")
    grad_bias = weight.new_empty((weight.shape[0],)) if has_bias else weight.new_empty((0,))
    return torch.empty_like(x), torch.empty_like(weight), grad_bias


def _setup_context(ctx, inputs, output):
    x, weight, bias, activation, chunk_width, dropout_p, seed, save_preact = inputs
    ctx.save_for_backward(x, weight, output[1], seed)
    ctx.args = (bias is not None, activation, chunk_width, dropout_p)
    ctx.save_preact = save_preact
    # The pre-activation's gradient is never read: unmaterialised, autograd does not fill a
    # (rows x d_ff) tensor of zeros for it on every backward.
    ctx.set_materialize_grads(False)


def _backward(ctx, backward_op, grad_out, _grad_preact):
    # The pre-activation is an auxiliary output kept for the backward; no gradient flows into it.
    if grad_out is None:  # the output itself was not used
        return (None,) * 8
    if not ctx.save_preact:
        raise RuntimeError("attnfast boom: backward needs boom_forward(..., save_preact=True)")
    x, weight, preact, seed = ctx.saved_tensors
    has_bias, activation, chunk_width, dropout_p = ctx.args
    gx, gw, gb = backward_op(grad_out, x, weight, preact, has_bias, activation, chunk_width,
                             dropout_p, seed)
    return gx, gw, (gb if has_bias else None), None, None, None, None, None


def _example():
    # d_ff = 9 with chunks of 4: two chunks summed, a remainder dropped; dropout on.
    g = spec.example_generator()
    return (torch.randn(3, 4, generator=g), torch.randn(9, 4, generator=g) / 2,
            torch.randn(9, generator=g), 0, 4, 0.25, torch.tensor(7), True)


spec.register(spec.KernelOp(
    "boom_forward", "boom_backward", public="boom", fake=_fake_forward,
    fake_backward=_fake_backward, triton="boom:boom_forward:boom_backward",
    example=_example,
    setup_context=_setup_context, backward_formula=_backward, dense=False))


# ---- backend implementations ---------------------------------------------------------------

def _needs_grad(inp: BoomInputs) -> bool:
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (inp.x, inp.weight, inp.bias)
    )


def _run_fused(ops, inp: BoomInputs) -> torch.Tensor:
    lead, d_model = inp.x.shape[:-1], inp.x.shape[-1]
    x2d = inp.x.reshape(-1, d_model).contiguous()
    chunk = d_model if inp.shortcut else inp.weight.shape[0]
    out, _ = ops.boom_forward(x2d, inp.weight.contiguous(),
                              None if inp.bias is None else inp.bias.contiguous(),
                              ACTIVATIONS[inp.activation], chunk, inp.dropout_p, inp.seed,
                              _needs_grad(inp))
    out = out.reshape(*lead, chunk)
    if not inp.shortcut:
        out = F.linear(out, inp.weight2, inp.bias2)
    return out


def _run_reference(inp: BoomInputs) -> torch.Tensor:
    # The reference's Philox works from the seed tensor too (reference/dropout.py): traceable.
    return reference.boom(inp.x, inp.weight, inp.bias, shortcut=inp.shortcut, weight2=inp.weight2,
                          bias2=inp.bias2, activation_name=inp.activation,
                          dropout_p=inp.dropout_p, seed=inp.seed)


def _zero_width_reasons(inp: BoomInputs) -> list[str]:
    d_ff, d_model = inp.weight.shape
    if d_model == 0 or d_ff == 0:
        return [f"a zero-width layer (d_model={d_model}, d_ff={d_ff}) has nothing to fuse; "
                "the reference computes it"]
    return []


def _refuses(backend: str, inp: BoomInputs) -> list[str]:
    return device_reasons(inp, backend, KERNEL_DTYPES) + _zero_width_reasons(inp)


BOOM = dispatch.register(Op("boom", prepare, [
    Implementation("reference", lambda inp: [], _run_reference),
    *spec.compiled_implementations(["boom_forward"], _run_fused, _refuses),
]))


def boom(x, weight, bias=None, *, shortcut=True, weight2=None, bias2=None,
         activation="gelu_sigmoid", dropout_p=0.0, training=False, seed=None, backend=None):
    """The Boom feed-forward layer of SHA-RNN, fused.

    ``z = act(x @ weight.T + bias)``, dropout on ``z`` (when ``training``), then with
    ``shortcut=True`` the last dim (d_ff) is cut into ``d_ff // d_model`` chunks of width d_model
    (a remainder is dropped) which are summed; with ``shortcut=False``,
    ``linear(z, weight2, bias2)``.

    Args:
        x: (..., d_model), fp32 / bf16 / fp16, any strides.
        weight: (d_ff, d_model); bias: (d_ff,) or None.
        activation: ``gelu_sigmoid`` (x * sigmoid(1.702 x), SHA-RNN's), ``gelu``, ``gelu_tanh``,
            ``relu``.
        dropout_p, training, seed: dropout on the activation; ``seed`` (an int in [0, 2**64)
            or a one-element int64 CPU tensor) fixes the counter-based mask (the same in every
            backend); drawn from torch's generator when None. A tensor seed (or None) keeps a
            compiled step free of recompiles.
        backend: ``"auto"`` (default, or ``ATTNFAST_BACKEND``), ``"reference"``, ``"cpu"``,
            ``"cuda"``, ``"triton"``.

    Under ``torch.autocast`` the inputs are cast to the autocast dtype (fp64 excepted) and the
    result has that dtype, as with ``torch.nn.functional.linear``.
    """
    # Under torch.autocast: computed in the autocast dtype, like torch's linear (ops/autocast.py).
    (x, weight, bias, weight2, bias2), autocast_off = lower_precision(x, weight, bias, weight2, bias2)
    with autocast_off:
        inp = prepare(x, weight, bias, shortcut=shortcut, weight2=weight2, bias2=bias2,
                      activation=activation, dropout_p=dropout_p, training=training, seed=seed)
        return BOOM(inp, backend)


boom.__attnfast_op__ = "boom"
