"""attnfast.nn.SingleHeadAttention: SHA-RNN's single-head attention block on attnfast's fused op.

The math (Merity 2019, github smerity/sha-rnn, model.py ``Attention`` with q=True, k=v=r=False):
    qs, ks = sigmoid(self.qs), sigmoid(self.ks)
    vs     = sigmoid(f) * tanh(c),  [c; f] = vq.l1(sigmoid(self.vs))        ("Overparam" gate)
    query  = qln(q(x))                  (LayerNorm eps 1e-12, computed in fp32 like SHA-RNN)
    big    = [memory; kv] along time    (kv defaults to x; no key/value projection)
    out    = softmax(drop(qs * query) (ks * big)^T / sqrt(D) + causal) drop(vs * big)
with dropout also on the attention weights, and no output projection.

Where attnfast folds the gates (results unchanged, up to rounding):
  * the key gate goes into the query: (q) . (ks * k_j) = (q * ks) . k_j, so the keys -- the
    memory -- are used as stored and never rescaled;
  * in eval (or with dropout 0) the value gate goes onto the output: sum_j p_j (vs * v_j) =
    vs * sum_j p_j v_j, so the values are not rescaled either. In training with dropout the
    value dropout mask is per position and element, so drop(vs * big) is formed explicitly.
The memory returned (``new_memory``) is the raw, ungated [memory; kv], as in SHA-RNN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnfast.ops.attention import single_head_attention


class Overparam(nn.Module):
    """SHA-RNN's value-gate over-parameterisation: sigmoid(f) * tanh(c), [c; f] = l1(x)."""

    def __init__(self, nhid: int, device=None, dtype=None):
        super().__init__()
        self.l1 = nn.Linear(nhid, 2 * nhid, device=device, dtype=dtype)
        self.nhid = nhid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, f = self.l1(x).split(self.nhid, dim=-1)
        return torch.sigmoid(f) * torch.tanh(c)


class SingleHeadAttention(nn.Module):
    """SHA-RNN's attention block (batch first).

    ``forward(x, memory=None, kv=None, need_weights=False)``: queries from x (B, T, D); keys
    and values are ``[memory; kv]`` along time (kv defaults to x; memory (B, M, D) or None).
    Bottom-right causal: query t sees every memory position and kv positions <= t (when
    ``causal``). Returns ``(output (B, T, D), new_memory, weights or None)``; new_memory holds
    the last ``max_memory`` positions of [memory; kv].

    Parameter names and initialisation follow SHA-RNN's ``Attention`` (``qs``, ``ks``, ``vs``
    zeros (1, 1, D); ``q`` Linear; ``qln`` LayerNorm(eps=1e-12); ``vq.l1`` Linear(D, 2D)) so
    its state_dict loads; its unused ``qkvs`` and ``r_gate`` are kept as buffers for that reason.
    Dropout (``dropout``) on the gated query, the gated values and the attention weights.
    """

    def __init__(self, d_model: int, dropout: float = 0.1, max_memory: int = 5000,
                 causal: bool = True, backend: str | None = None, device=None, dtype=None):
        super().__init__()
        if d_model < 1:
            raise ValueError(f"d_model must be >= 1, got {d_model}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if max_memory < 0:
            raise ValueError(f"max_memory must be >= 0, got {max_memory}")
        factory = {"device": device, "dtype": dtype}
        self.qs = nn.Parameter(torch.zeros(1, 1, d_model, **factory))
        self.ks = nn.Parameter(torch.zeros(1, 1, d_model, **factory))
        self.vs = nn.Parameter(torch.zeros(1, 1, d_model, **factory))
        self.register_buffer("qkvs", torch.zeros(1, 3, d_model, **factory))
        self.register_buffer("r_gate", torch.ones(1, 1, d_model, **factory))
        self.q = nn.Linear(d_model, d_model, **factory)
        self.qln = nn.LayerNorm(d_model, eps=1e-12, **factory)
        self.vq = Overparam(d_model, **factory)
        self.d_model, self.dropout, self.max_memory = d_model, dropout, max_memory
        self.causal, self.backend = causal, backend

    def _check(self, name, t, batch=None):
        if t.dim() != 3 or t.shape[-1] != self.d_model:
            raise ValueError(f"{name} must be (B, T, d_model={self.d_model}), got {tuple(t.shape)}")
        if batch is not None and t.shape[0] != batch:
            raise ValueError(f"{name} batch size {t.shape[0]} must match x's {batch}")

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                kv: torch.Tensor | None = None, need_weights: bool = False):
        self._check("x", x)
        kv = x if kv is None else kv
        self._check("kv", kv, x.shape[0])
        if memory is not None:
            self._check("memory", memory, x.shape[0])
            big = torch.cat([memory.to(kv.dtype), kv], dim=1)
        else:
            big = kv
        new_memory = big[:, big.shape[1] - min(self.max_memory, big.shape[1]):]

        p = self.dropout if self.training else 0.0
        qs, ks = torch.sigmoid(self.qs), torch.sigmoid(self.ks)
        vs = self.vq(torch.sigmoid(self.vs))
        query = self.qln(self.q(x).float())  # fp32 LayerNorm, as SHA-RNN
        q = F.dropout(qs * query, p, self.training) * ks  # key gate folded into the query
        q = q.to(big.dtype)
        if p > 0.0:
            v, out_gate = F.dropout(vs.to(big.dtype) * big, p, True), None
        else:
            v, out_gate = big, vs  # value gate folded onto the output
        res = single_head_attention(q, big, v, causal=self.causal, dropout_p=p,
                                    training=self.training, return_weights=need_weights,
                                    backend=self.backend)
        out, weights = res if need_weights else (res, None)
        if out_gate is not None:
            out = out * out_gate.to(out.dtype)
        return out, new_memory, weights

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, dropout={self.dropout}, max_memory={self.max_memory}, "
                f"causal={self.causal}")
