"""Pure-torch stand-ins for the CPU kernels of lstm_forward / lstm_backward, to the contract of
csrc/schemas.h (fp32 accumulation, fp32 cell state, activated gates saved; the backward carries
dh, dc in fp32 and takes grad_h with h_n's gradient already in grad_h[T-1]).

Used only in a subprocess by tests/test_lstm.py (:func:`register` adds CPU kernels for
attnfast::lstm_forward / lstm_backward, which would shadow the missing-kernel skips of the other
tests): it tests the Python side -- autograd formula, the one-GEMM grad_w_hh, dispatch, c_n's
dtype -- before the compiled kernels exist.
"""
from __future__ import annotations

import torch


def lstm_forward(gates_x, h0, c0, w_hh, save_gates):
    T, B, H = gates_x.shape[0], gates_x.shape[1], w_hh.shape[1]
    dtype = gates_x.dtype
    h_prev, c_prev = h0, c0.float()
    w = w_hh.float()
    hs, cs, gs = [], [], []
    for t in range(T):
        a = gates_x[t].float() + h_prev.float() @ w.t()
        i, f, g, o = a.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_prev = f * c_prev + i * g
        h_prev = (o * torch.tanh(c_prev)).to(dtype)
        hs.append(h_prev)
        cs.append(c_prev)
        gs.append(torch.cat([i, f, g, o], -1).to(dtype))
    h = torch.stack(hs) if T else gates_x.new_empty((0, B, H))
    c = torch.stack(cs) if T else gates_x.new_empty((0, B, H), dtype=torch.float32)
    gates = (torch.stack(gs) if T else gates_x.new_empty((0, B, 4 * H))) if save_gates \
        else gates_x.new_empty((0,))
    return h, c, gates


def lstm_backward(grad_h, grad_cn, c0, w_hh, c, gates):
    T, B, H = grad_h.shape
    dtype = grad_h.dtype
    w = w_hh.float()
    dh_next = torch.zeros(B, H)
    dc_next = grad_cn.float()
    grads = [None] * T
    for t in reversed(range(T)):
        i, f, g, o = gates[t].float().chunk(4, dim=-1)
        c_prev = c[t - 1] if t > 0 else c0.float()
        dh = grad_h[t].float() + dh_next
        tc = torch.tanh(c[t])
        dc = dc_next + dh * o * (1 - tc * tc)
        da = torch.cat([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                        dh * tc * o * (1 - o)], -1)
        grads[t] = da.to(dtype)
        dh_next = da @ w
        dc_next = dc * f
    grad_gates_x = torch.stack(grads) if T else grad_h.new_empty((0, B, 4 * H))
    return grad_gates_x, dh_next.to(c0.dtype), dc_next.to(c0.dtype)


def register() -> bool:
    """Registers the stand-ins as the CPU kernels unless attnfast._C has its own (then the real
    kernels run); True when it registered them."""
    if torch._C._dispatch_has_kernel_for_dispatch_key("attnfast::lstm_forward", "CPU"):
        return False
    torch.library.impl("attnfast::lstm_forward", "CPU")(lstm_forward)
    torch.library.impl("attnfast::lstm_backward", "CPU")(lstm_backward)
    return True
