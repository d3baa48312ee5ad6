"""Triton kernels of the LSTM recurrence (one layer, torch's gate order i, f, g, o; contract of
the ``attnfast::lstm_forward`` / ``lstm_backward`` schemas, csrc/schemas.h table kLstm):

    a_t = gates_x[t] + h_{t-1} w_hh^T          gates_x (T, B, 4H), w_hh (4H, H), fp32 accumulation
    i, f, o = sigmoid, g = tanh of a_t's four H-wide chunks
    c_t = f c_{t-1} + i g  (fp32)              h_t = o tanh(c_t)

The recurrence is sequential in t, so both directions launch one step kernel per time step (as
the CUDA kernels, csrc/cuda/lstm_kernels.cuh): the launch boundary is the grid-wide barrier
between steps. A persistent kernel with a grid-wide sync would be the next step.

Kernels
-------
* ``_lstm_fwd_step_kernel``: a program owns a (BLOCK_B x BLOCK_J) tile of (batch rows, hidden
  units) and computes the four gate pre-activations of its units with four ``tl.dot`` over k
  (h_{t-1} tile times the W^T tiles of rows g H + j), fp32 accumulators (fp32 inputs: exact
  fp32 products, ``input_precision="ieee"``, never TF32); then the gate math in registers and
  the stores of h_t (dtype), c_t (fp32) and, when saved, the activated gates (dtype).
* ``_lstm_bwd_step_kernel`` (t = T-1 .. 0): the same tile; dh = grad_h[t] + dA_{t+1} w_hh[:, j]
  as one ``tl.dot`` over the 4H rows (dA_{t+1} from an fp32 workspace, w_hh upcast to fp32),
  then dc (carried in an fp32 (B, H) buffer), dA_t to the workspace (fp32) and grad_gates_x[t]
  (dtype). A last launch with FINAL turns dA_0 into grad_h0 and writes grad_c0.

Offsets that multiply sizes are int64 (T*B*4H can pass 2^31). Interpreter (TRITON_INTERPRET=1,
CPU tensors): bf16 arithmetic is broken there, so loads are upcast with ``.to(tl.float32)`` before
math and bf16 dot operands are upcast (UPCAST).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import FLOAT_DTYPES, block_size, interpreting, sigmoid, tanh, upcast_bf16

__all__ = ["lstm_forward", "lstm_backward"]


@triton.jit
def _tile(B, H, BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr):
    """This program's (batch rows, hidden units) tile on a 1-D grid: int64 rows, int64 columns,
    their masks and the tile mask."""
    pid = tl.program_id(0)
    nj = tl.cdiv(H, BLOCK_J)
    rows = ((pid // nj) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    cols = ((pid % nj) * BLOCK_J + tl.arange(0, BLOCK_J)).to(tl.int64)
    rmask = rows < B
    cmask = cols < H
    return rows, cols, rmask, cmask, rmask[:, None] & cmask[None, :]


@triton.jit
def _lstm_fwd_step_kernel(gx_ptr, h_prev_ptr, c_prev_ptr, w_ptr, h_ptr, c_ptr, gates_ptr, B, H,
                          SAVE_GATES: tl.constexpr, UPCAST: tl.constexpr,
                          BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr):
    rows, cols, rmask, cmask, m = _tile(B, H, BLOCK_B, BLOCK_J)
    acc_i = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        kmask = k < H
        hv = tl.load(h_prev_ptr + rows[:, None] * H + k[None, :],
                     mask=rmask[:, None] & kmask[None, :], other=0.0)
        wmask = kmask[:, None] & cmask[None, :]
        # (BLOCK_K, BLOCK_J) W^T tiles of rows q H + j (int64 cols: 4H * H can pass 2^31).
        w_i = tl.load(w_ptr + cols[None, :] * H + k[:, None], mask=wmask, other=0.0)
        w_f = tl.load(w_ptr + (cols[None, :] + H) * H + k[:, None], mask=wmask, other=0.0)
        w_g = tl.load(w_ptr + (cols[None, :] + 2 * H) * H + k[:, None], mask=wmask, other=0.0)
        w_o = tl.load(w_ptr + (cols[None, :] + 3 * H) * H + k[:, None], mask=wmask, other=0.0)
        if UPCAST:
            hv = hv.to(tl.float32)
            w_i = w_i.to(tl.float32)
            w_f = w_f.to(tl.float32)
            w_g = w_g.to(tl.float32)
            w_o = w_o.to(tl.float32)
        acc_i = tl.dot(hv, w_i, acc_i, input_precision="ieee")
        acc_f = tl.dot(hv, w_f, acc_f, input_precision="ieee")
        acc_g = tl.dot(hv, w_g, acc_g, input_precision="ieee")
        acc_o = tl.dot(hv, w_o, acc_o, input_precision="ieee")

    g_off = rows[:, None] * (4 * H) + cols[None, :]  # gate i of (b, j); gate q at + q H
    i = sigmoid(acc_i + tl.load(gx_ptr + g_off, mask=m, other=0.0).to(tl.float32))
    f = sigmoid(acc_f + tl.load(gx_ptr + g_off + H, mask=m, other=0.0).to(tl.float32))
    g = tanh(acc_g + tl.load(gx_ptr + g_off + 2 * H, mask=m, other=0.0).to(tl.float32))
    o = sigmoid(acc_o + tl.load(gx_ptr + g_off + 3 * H, mask=m, other=0.0).to(tl.float32))
    hc = rows[:, None] * H + cols[None, :]
    c = f * tl.load(c_prev_ptr + hc, mask=m, other=0.0) + i * g
    tl.store(c_ptr + hc, c, mask=m)
    tl.store(h_ptr + hc, (o * tanh(c)).to(h_ptr.dtype.element_ty), mask=m)
    if SAVE_GATES:
        dt = gates_ptr.dtype.element_ty
        tl.store(gates_ptr + g_off, i.to(dt), mask=m)
        tl.store(gates_ptr + g_off + H, f.to(dt), mask=m)
        tl.store(gates_ptr + g_off + 2 * H, g.to(dt), mask=m)
        tl.store(gates_ptr + g_off + 3 * H, o.to(dt), mask=m)


@triton.jit
def _lstm_bwd_step_kernel(grad_h_ptr, w_ptr, dA_next_ptr, gates_ptr, c_ptr, c_prev_ptr,
                          grad_c_ptr, dc_ptr, dA_ptr, grad_gx_ptr, grad_h0_ptr, grad_c0_ptr, B, H,
                          HAS_NEXT: tl.constexpr, HAS_GRAD_C: tl.constexpr, FINAL: tl.constexpr,
                          BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_R: tl.constexpr):
    rows, cols, rmask, cmask, m = _tile(B, H, BLOCK_B, BLOCK_J)
    R = 4 * H
    # (dA_{t+1} w_hh)[b, j]: a reduction over the 4H rows of w_hh's column j, in fp32.
    acc = tl.zeros((BLOCK_B, BLOCK_J), dtype=tl.float32)
    if HAS_NEXT:
        for r0 in range(0, R, BLOCK_R):
            r = (r0 + tl.arange(0, BLOCK_R)).to(tl.int64)
            rm = r < R
            da = tl.load(dA_next_ptr + rows[:, None] * R + r[None, :],
                         mask=rmask[:, None] & rm[None, :], other=0.0)
            w = tl.load(w_ptr + r[:, None] * H + cols[None, :], mask=rm[:, None] & cmask[None, :],
                        other=0.0).to(tl.float32)
            acc = tl.dot(da, w, acc, input_precision="ieee")
    hc = rows[:, None] * H + cols[None, :]
    if FINAL:
        tl.store(grad_h0_ptr + hc, acc.to(grad_h0_ptr.dtype.element_ty), mask=m)
        dc = tl.load(dc_ptr + hc, mask=m, other=0.0)
        tl.store(grad_c0_ptr + hc, dc.to(grad_c0_ptr.dtype.element_ty), mask=m)
    else:
        dh = tl.load(grad_h_ptr + hc, mask=m, other=0.0).to(tl.float32) + acc
        g_off = rows[:, None] * R + cols[None, :]
        i = tl.load(gates_ptr + g_off, mask=m, other=0.0).to(tl.float32)
        f = tl.load(gates_ptr + g_off + H, mask=m, other=0.0).to(tl.float32)
        g = tl.load(gates_ptr + g_off + 2 * H, mask=m, other=0.0).to(tl.float32)
        o = tl.load(gates_ptr + g_off + 3 * H, mask=m, other=0.0).to(tl.float32)
        tc = tanh(tl.load(c_ptr + hc, mask=m, other=0.0))
        # c_t = f c_{t-1} + i g, h_t = o tanh(c_t); sigmoid' = s (1 - s), tanh' = 1 - tanh^2.
        dc = tl.load(dc_ptr + hc, mask=m, other=0.0)
        if HAS_GRAD_C:  # the gradient of the output c_t itself
            dc += tl.load(grad_c_ptr + hc, mask=m, other=0.0)
        dc += dh * o * (1.0 - tc * tc)
        c_prev = tl.load(c_prev_ptr + hc, mask=m, other=0.0)
        da_i = dc * g * i * (1.0 - i)
        da_f = dc * c_prev * f * (1.0 - f)
        da_g = dc * i * (1.0 - g * g)
        da_o = dh * tc * o * (1.0 - o)
        tl.store(dc_ptr + hc, dc * f, mask=m)
        dt = grad_gx_ptr.dtype.element_ty
        tl.store(dA_ptr + g_off, da_i, mask=m)
        tl.store(dA_ptr + g_off + H, da_f, mask=m)
        tl.store(dA_ptr + g_off + 2 * H, da_g, mask=m)
        tl.store(dA_ptr + g_off + 3 * H, da_o, mask=m)
        tl.store(grad_gx_ptr + g_off, da_i.to(dt), mask=m)
        tl.store(grad_gx_ptr + g_off + H, da_f.to(dt), mask=m)
        tl.store(grad_gx_ptr + g_off + 2 * H, da_g.to(dt), mask=m)
        tl.store(grad_gx_ptr + g_off + 3 * H, da_o.to(dt), mask=m)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _config(B: int, H: int, name_k: str) -> dict:
    """Tile sizes: tl.dot needs every block dim >= 16. On a GPU a (<=32 x <=32) tile of (batch,
    units), a 32-wide reduction block, 8 warps and 2 stages: compiled for sm_90 without a GPU
    (triton.compile + cuobjdump -res-usage), the largest tiles without spills (forward
    124-191 registers, backward 64-128, no stack; 32 x 32 x 64 with 4 warps spilled 232-640
    bytes). A starting point for tuning on hardware. Under the interpreter the cost is per
    program and op: the same blocks, one stage."""
    cfg = {"BLOCK_B": block_size(B, hi=32), "BLOCK_J": block_size(H, hi=32),
           name_k: block_size(H if name_k == "BLOCK_K" else 4 * H, hi=32)}
    if not interpreting():
        cfg.update(num_warps=8, num_stages=2)
    return cfg


def _grid(B: int, H: int, cfg: dict) -> tuple[int]:
    return (triton.cdiv(B, cfg["BLOCK_B"]) * triton.cdiv(H, cfg["BLOCK_J"]),)


def _check(op: str, name: str, t: torch.Tensor, shape: tuple, dtype: torch.dtype,
           device: torch.device, shape_text: str) -> torch.Tensor:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {shape_text} = {tuple(shape)}, "
                         f"got {tuple(t.shape)}")
    if t.dtype != dtype:
        raise ValueError(f"{op}: {name} must be {dtype}, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{op}: {name} must be on {device} (w_hh's device), got {t.device}")
    return t.contiguous()


def _check_w_hh(op: str, w_hh: torch.Tensor) -> int:
    if w_hh.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{op}: w_hh must be float32, bfloat16 or float16, got {w_hh.dtype}")
    if w_hh.dim() != 2 or w_hh.shape[0] != 4 * w_hh.shape[1]:
        raise ValueError(f"{op}: w_hh must have shape (4H, H), got {tuple(w_hh.shape)}")
    return w_hh.shape[1]


def lstm_forward(gates_x, h0, c0, w_hh, save_gates: bool):
    """Returns (h (T, B, H) in gates_x's dtype, c (T, B, H) fp32, gates (T, B, 4H) activated in
    gates_x's dtype, or an empty (0,) tensor unless save_gates)."""
    op = "lstm_forward"
    H = _check_w_hh(op, w_hh)
    if gates_x.dim() != 3 or gates_x.shape[2] != 4 * H:
        raise ValueError(f"{op}: gates_x must have shape (T, B, 4H) with 4H = {4 * H} (from "
                         f"w_hh), got {tuple(gates_x.shape)}")
    T, B = gates_x.shape[:2]
    dt, dev = w_hh.dtype, w_hh.device
    gates_x = _check(op, "gates_x", gates_x, (T, B, 4 * H), dt, dev, "(T, B, 4H)")
    h0 = _check(op, "h0", h0, (B, H), dt, dev, "(B, H)")
    c0 = _check(op, "c0", c0, (B, H), dt, dev, "(B, H)")
    w_hh = w_hh.contiguous()

    h = torch.empty((T, B, H), dtype=dt, device=dev)
    c = torch.empty((T, B, H), dtype=torch.float32, device=dev)
    gates = torch.empty((T, B, 4 * H) if save_gates else (0,), dtype=dt, device=dev)
    if T == 0 or B == 0 or H == 0:
        return h, c, gates
    c0 = c0.float()  # the cell state is carried in fp32 from the start
    cfg = _config(B, H, "BLOCK_K")
    grid = _grid(B, H, cfg)
    for t in range(T):  # one launch per step (sequential recurrence)
        _lstm_fwd_step_kernel[grid](
            gates_x[t], h0 if t == 0 else h[t - 1], c0 if t == 0 else c[t - 1], w_hh, h[t], c[t],
            gates[t] if save_gates else h[t], B, H, SAVE_GATES=bool(save_gates),
            UPCAST=upcast_bf16(dt), **cfg)
    return h, c, gates


def lstm_backward(grad_h, grad_c, c0, w_hh, c, gates):
    """Returns (grad_gates_x (T, B, 4H) in w_hh's dtype, grad_h0 and grad_c0 (B, H) in c0's
    dtype). grad_h (T, B, H) and grad_c (T, B, H) fp32 or None (zero) are the gradients of the
    outputs h and c. With T = 0: grad_h0 = grad_c0 = 0 (no step ran)."""
    op = "lstm_backward"
    H = _check_w_hh(op, w_hh)
    if grad_h.dim() != 3 or grad_h.shape[2] != H:
        raise ValueError(f"{op}: grad_h must have shape (T, B, H) with H = {H} (from w_hh), got "
                         f"{tuple(grad_h.shape)}")
    T, B = grad_h.shape[:2]
    dt, dev = w_hh.dtype, w_hh.device
    grad_h = _check(op, "grad_h", grad_h, (T, B, H), dt, dev, "(T, B, H)")
    if grad_c is not None:
        grad_c = _check(op, "grad_c", grad_c, (T, B, H), torch.float32, dev, "(T, B, H)")
    c0 = _check(op, "c0", c0, (B, H), dt, dev, "(B, H)")
    c = _check(op, "c", c, (T, B, H), torch.float32, dev, "(T, B, H)")
    no_steps = T == 0 or B == 0 or H == 0
    if not (no_steps and gates.numel() == 0):
        if tuple(gates.shape) != (T, B, 4 * H):
            raise ValueError(f"{op}: gates must have shape (T, B, 4H) = {(T, B, 4 * H)}, got "
                             f"{tuple(gates.shape)} "
                             "(was lstm_forward called with save_gates=True?)")
        gates = _check(op, "gates", gates, (T, B, 4 * H), dt, dev, "(T, B, 4H)")
    w_hh = w_hh.contiguous()

    grad_gx = torch.empty((T, B, 4 * H), dtype=dt, device=dev)
    if no_steps:
        zeros = torch.zeros((B, H), dtype=dt, device=dev)
        return grad_gx, zeros, zeros.clone()
    grad_h0 = torch.empty((B, H), dtype=dt, device=dev)
    grad_c0 = torch.empty((B, H), dtype=dt, device=dev)
    c0 = c0.float()
    dc = torch.zeros((B, H), dtype=torch.float32, device=dev)  # carried in fp32, in place
    dA = torch.empty((2, B, 4 * H), dtype=torch.float32, device=dev)  # slots t & 1 (ping-pong)
    cfg = _config(B, H, "BLOCK_R")
    grid = _grid(B, H, cfg)
    for t in range(T - 1, -1, -1):  # one launch per step, reverse time
        _lstm_bwd_step_kernel[grid](
            grad_h[t], w_hh, dA[(t + 1) & 1], gates[t], c[t], c0 if t == 0 else c[t - 1],
            c[t] if grad_c is None else grad_c[t], dc, dA[t & 1], grad_gx[t], grad_h0, grad_c0,
            B, H, HAS_NEXT=t < T - 1, HAS_GRAD_C=grad_c is not None, FINAL=False, **cfg)
    # grad_h0 = dA_0 w_hh (step 0 wrote slot 0), grad_c0 = the dc that reached c0.
    _lstm_bwd_step_kernel[grid](
        grad_h[0], w_hh, dA[0], gates[0], c[0], c0, c[0], dc, dA[1], grad_gx[0], grad_h0,
        grad_c0, B, H, HAS_NEXT=True, HAS_GRAD_C=False, FINAL=True, **cfg)
    return grad_gx, grad_h0, grad_c0
