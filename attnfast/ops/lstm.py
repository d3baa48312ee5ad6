"""The LSTM op (one layer, sequence-first): validation, the backend implementations, the compiled
op pair's fake kernels and autograd formula.

A layer is computed in two parts (csrc/schemas.h, table kLstm):
  1. the input projection of every step as ONE GEMM, ``gates_x = x w_ih^T + (b_ih + b_hh)``
     (T, B, 4H), in torch here, whose autograd gives the gradients of x, w_ih and the biases;
  2. the recurrence, the compiled op pair ``lstm_forward(gates_x, h0, c0, w_hh, save_gates) ->
     (h, c, gates)`` / ``lstm_backward(grad_h, grad_c, c0, w_hh, c, gates) -> (grad_gates_x,
     grad_h0, grad_c0)``; grad_w_hh = sum_t grad_gates_x[t]^T h_{t-1} is one GEMM in the autograd
     formula below.
The cell state is carried in fp32 by the kernels whatever the dtype (c is an fp32 output); the
public op returns c_n in the input dtype, as torch.nn.LSTM does.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from attnfast import dispatch
from attnfast.dispatch import Implementation, Op, device_reasons
from attnfast.ops import spec
from attnfast.ops.autocast import lower_precision
from attnfast.reference import lstm as reference_lstm

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclasses.dataclass
class LstmInputs:
    x: torch.Tensor          # (T, B, I)
    h0: torch.Tensor         # (B, H)
    c0: torch.Tensor         # (B, H)
    w_ih: torch.Tensor       # (4H, I)
    w_hh: torch.Tensor       # (4H, H)
    b_ih: torch.Tensor | None
    b_hh: torch.Tensor | None

    @property
    def device(self):
        return self.x.device

    @property
    def dtype(self):
        return self.x.dtype


def _shape(t) -> str:
    return str(tuple(t.shape))


def _tensor(name: str, t, ndim: int, expected: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D of shape {expected}, got shape {_shape(t)}")


def prepare(x, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None) -> LstmInputs:
    """Checks the arguments of :func:`lstm` (ValueError naming the argument and what it must be);
    ``hx=None`` gives zero initial states."""
    _tensor("x", x, 3, "(T, B, input_size)")
    _tensor("weight_hh", weight_hh, 2, "(4 * hidden_size, hidden_size)")
    four_h, H = weight_hh.shape
    if four_h != 4 * H:
        raise ValueError(f"weight_hh must be (4 * hidden_size, hidden_size) (gates i, f, g, o "
                         f"stacked), got shape {_shape(weight_hh)}")
    T, B, I = x.shape
    _tensor("weight_ih", weight_ih, 2, f"(4 * hidden_size, input_size) = ({4 * H}, {I})")
    if tuple(weight_ih.shape) != (4 * H, I):
        raise ValueError(f"weight_ih must be (4 * hidden_size, input_size) = ({4 * H}, {I}) "
                         f"(hidden_size {H} from weight_hh, input_size {I} from x), got shape "
                         f"{_shape(weight_ih)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    named = [("weight_ih", weight_ih), ("weight_hh", weight_hh)]
    for name, b in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if b is not None:
            _tensor(name, b, 1, f"({4 * H},)")
            if b.shape[0] != 4 * H:
                raise ValueError(f"{name} must have shape ({4 * H},) (4 * hidden_size), got "
                                 f"{_shape(b)}")
            named.append((name, b))
    if hx is None:
        h0 = x.new_zeros((B, H))
        c0 = x.new_zeros((B, H))
    else:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise ValueError("hx must be None or a pair (h0, c0) of (B, hidden_size) tensors, got "
                             + (f"a sequence of {len(hx)}" if isinstance(hx, (tuple, list))
                                else type(hx).__name__))
        h0, c0 = hx
        for name, t in (("h0", h0), ("c0", c0)):
            _tensor(f"hx's {name}", t, 2, f"(B, hidden_size) = ({B}, {H})")
            if tuple(t.shape) != (B, H):
                raise ValueError(f"hx's {name} must be (B, hidden_size) = ({B}, {H}) (B from x, "
                                 f"hidden_size from weight_hh), got shape {_shape(t)}")
        named += [("hx's h0", h0), ("hx's c0", c0)]
    for name, t in named:
        if t.dtype != x.dtype:
            raise ValueError(f"{name} dtype {t.dtype} must match x's dtype {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    return LstmInputs(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)


# ---- the compiled op pair: declared once for every backend (ops/spec.py) -----------------------

def _fake_forward(gates_x, h0, c0, w_hh, save_gates):
    T, B, four_h = gates_x.shape
    H = w_hh.shape[1]
    torch._check(four_h == 4 * H, lambda: f"lstm_forward: gates_x must be (T, B, 4H), H={H}")
    h = gates_x.new_empty((T, B, H))
    c = gates_x.new_empty((T, B, H), dtype=torch.float32)  # the cell state is carried in fp32
    gates = gates_x.new_empty((T, B, 4 * H)) if save_gates else gates_x.new_empty((0,))
    return h, c, gates


def _fake_backward(grad_h, grad_c, c0, w_hh, c, gates):
    T, B, H = grad_h.shape
    return (grad_h.new_empty((T, B, 4 * H)), c0.new_empty((B, H)), c0.new_empty((B, H)))


def _setup_context(ctx, inputs, output):
    gates_x, h0, c0, w_hh, save_gates = inputs
    h, c, gates = output
    ctx.save_for_backward(h0, c0, w_hh, h, c, gates)
    ctx.save_gates = save_gates
    # Outputs without a gradient stay None (no (T, B, H) or (T, B, 4H) zeros per backward): the
    # activated gates are auxiliary, and h or c may be unused.
    ctx.set_materialize_grads(False)


def _backward(ctx, backward_op, grad_h, grad_c, _grad_gates):
    # grad_h, grad_c: the gradients of every step's h and c (None when unused); the public op's
    # h_n and c_n are the views h[T-1] and c[T-1], so autograd has already put their gradients
    # into the last step's rows.
    if grad_h is None and grad_c is None:
        return (None,) * 5
    if not ctx.save_gates:
        raise RuntimeError("attnfast lstm: backward needs lstm_forward(..., save_gates=True)")
    h0, c0, w_hh, h, c, gates = ctx.saved_tensors
    T = h.shape[0]
    if grad_h is None:
        grad_h = torch.zeros_like(h)
    grad_gates_x, grad_h0, grad_c0 = backward_op(grad_h, grad_c, c0, w_hh, c, gates)
    grad_w_hh = None
    if ctx.needs_input_grad[3]:
        # sum_t grad_gates_x[t]^T h_{t-1} as ONE GEMM over the T*B rows, h_{-1} = h0 (fp32
        # accumulation in torch's mm for bf16/fp16; the result in w_hh's dtype).
        H = h0.shape[-1]
        h_prev = torch.cat([h0.unsqueeze(0), h[:-1]]).reshape(-1, H)
        grad_w_hh = grad_gates_x.reshape(-1, 4 * H).t().mm(h_prev)
    return grad_gates_x, grad_h0, grad_c0, grad_w_hh, None


def _example():
    # T=3, B=2, H=5: H not a multiple of any vector width; gates of moderate size.
    g = spec.example_generator()
    H = 5
    return (torch.randn(3, 2, 4 * H, generator=g), torch.randn(2, H, generator=g) / 2,
            torch.randn(2, H, generator=g) / 2, torch.randn(4 * H, H, generator=g) / H ** 0.5, True)


spec.register(spec.KernelOp(
    "lstm_forward", "lstm_backward", public="lstm", fake=_fake_forward,
    fake_backward=_fake_backward, triton="lstm:lstm_forward:lstm_backward", example=_example,
    setup_context=_setup_context, backward_formula=_backward))


# ---- backend implementations -----------------------------------------------------------------

def _bias(inp: LstmInputs):
    if inp.b_ih is None and inp.b_hh is None:
        return None
    if inp.b_ih is None or inp.b_hh is None:
        return inp.b_ih if inp.b_hh is None else inp.b_hh
    return inp.b_ih + inp.b_hh


def _needs_grad(inp: LstmInputs) -> bool:
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad
        for t in (inp.x, inp.h0, inp.c0, inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh))


def _run_fused(ops, inp: LstmInputs):
    gates_x = F.linear(inp.x, inp.w_ih, _bias(inp))  # (T, B, 4H): every step's projection at once
    h, c, _ = ops.lstm_forward(gates_x, inp.h0, inp.c0, inp.w_hh, _needs_grad(inp))
    # c is fp32 (the kernels' cell state); c_n in the layer's dtype, as torch.nn.LSTM returns it.
    return h, (h[-1], c[-1].to(inp.dtype))


def _run_reference(inp: LstmInputs):
    return reference_lstm.lstm(inp.x, inp.h0, inp.c0, inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh)


def _refuses(backend: str, inp: LstmInputs) -> list[str]:
    reasons = device_reasons(inp, backend, KERNEL_DTYPES)
    T, B, _ = inp.x.shape
    H = inp.w_hh.shape[1]
    if T == 0 or B == 0 or H == 0:
        reasons.append(f"an empty LSTM (T={T}, B={B}, hidden_size={H}) has no recurrence to run; "
                       "the reference computes it")
    return reasons


LSTM = dispatch.register(Op("lstm", prepare, [
    Implementation("reference", lambda inp: [], _run_reference),
    *spec.compiled_implementations(["lstm_forward"], _run_fused, _refuses),
]))


def lstm(x, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, backend=None):
    """One LSTM layer, sequence-first, in torch.nn.LSTM's gate order (i, f, g, o) and layout.

    Args:
        x: (T, B, input_size), fp32 / bf16 / fp16 (fp64 on the reference), any strides.
        hx: None (zero states) or (h0, c0), each (B, hidden_size).
        weight_ih: (4 * hidden_size, input_size); weight_hh: (4 * hidden_size, hidden_size);
        bias_ih, bias_hh: (4 * hidden_size,) or None -- nn.LSTM's ``weight_ih_l0`` etc.
        backend: ``"auto"`` (default, or ``ATTNFAST_BACKEND``), ``"reference"``, ``"cpu"``,
            ``"cuda"``, ``"triton"``.

    Returns ``(output, (h_n, c_n))``: output (T, B, hidden_size) every step's h; h_n, c_n
    (B, hidden_size) the final states (h0, c0 when T = 0), all in x's dtype.

    The input projection of all steps is one GEMM; the compiled backends run the recurrence with
    fp32 accumulation and an fp32 cell state. Under ``torch.autocast`` (CPU or CUDA) the inputs
    are cast to the autocast dtype (fp64 excepted) and the results have that dtype, as torch's
    LSTM does (CUDA: cuDNN's RNN is autocast to the lower precision; CPU: oneDNN's
    mkldnn_rnn_layer is on autocast's lower-precision list).
    """
    pair = isinstance(hx, (tuple, list)) and len(hx) == 2  # anything else: prepare says why
    h0, c0 = hx if pair else (None, None)
    (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh), autocast_off = lower_precision(
        x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    if pair:
        hx = (h0, c0)
    with autocast_off:
        inp = prepare(x, hx, weight_ih, weight_hh, bias_ih, bias_hh)
        return LSTM(inp, backend)


lstm.__attnfast_op__ = "lstm"
