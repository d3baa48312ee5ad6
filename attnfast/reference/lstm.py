"""One LSTM layer (Hochreiter & Schmidhuber 1997, with a forget gate) in plain PyTorch, in the
gate order and parameter layout of ``torch.nn.LSTM``: the oracle of attnfast's LSTM kernels.

The layer splits in two, as the kernels do: the input projection of every time step is one GEMM
(``gates_x = x w_ih^T + b_ih + b_hh``), then the recurrence runs step by step. The reference
computes in the dtype of its inputs (run it in fp64 for an oracle, in bf16 for the error of a
plain bf16 computation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def lstm_recurrence(gates_x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
                    w_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sequential part: gates_x (T, B, 4H), h0 and c0 (B, H), w_hh (4H, H) ->
    (h, c), each (T, B, H): every step's hidden and cell state.

    a_t = gates_x[t] + h_{t-1} w_hh^T; i, f, o = sigmoid, g = tanh of a_t's four H-wide chunks;
    c_t = f c_{t-1} + i g; h_t = o tanh(c_t).
    """
    T, B = gates_x.shape[:2]
    H = h0.shape[-1]
    h_prev, c_prev = h0, c0
    hs, cs = [], []
    for t in range(T):
        a = torch.addmm(gates_x[t], h_prev, w_hh.t())
        i, f, g, o = a.chunk(4, dim=-1)
        c_prev = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        h_prev = torch.sigmoid(o) * torch.tanh(c_prev)
        hs.append(h_prev)
        cs.append(c_prev)
    if T == 0:
        empty = gates_x.new_empty((0, B, H))
        return empty, empty.clone()
    return torch.stack(hs), torch.stack(cs)


def lstm(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor,
         w_hh: torch.Tensor, b_ih: torch.Tensor | None = None,
         b_hh: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One sequence-first layer: x (T, B, I), h0 and c0 (B, H), w_ih (4H, I), w_hh (4H, H),
    biases (4H,) or None -> (output (T, B, H), (h_n, c_n)), as ``torch.nn.LSTM`` with one layer.
    """
    bias = None
    if b_ih is not None or b_hh is not None:
        bias = (b_ih if b_ih is not None else 0) + (b_hh if b_hh is not None else 0)
    gates_x = F.linear(x, w_ih, bias)
    h, c = lstm_recurrence(gates_x, h0, c0, w_hh)
    if h.shape[0] == 0:
        return h, (h0, c0)
    return h, (h[-1], c[-1])
