"""Single-head scaled dot-product attention in plain PyTorch: the oracle and the fallback.

Conventions shared with every backend (csrc/schemas.h, attention section):
  q (B, Lq, D), k (B, Lk, D), v (B, Lk, Dv); scores s = scale * q k^T + bias, bias an additive
  fp32 mask broadcastable to (B, Lq, Lk) (-inf = masked); ``causal`` is aligned bottom-right:
  query i sees key j iff j <= i + (Lk - Lq) (the memory case: the Lk - Lq memory positions come
  first and every query sees all of them).
  lse = logsumexp_j s_ij (natural log, fp32); a row whose keys are all masked has lse = -inf,
  weights 0 and output 0 (never NaN), and contributes no gradient.
  Dropout on the weights uses attnfast's Philox mask over the (B, Lq, Lk) weight matrix,
  counter index (b * Lq + i) * Lk + j (csrc/common/philox.h), kept weights scaled by 1/(1-p).
"""
from __future__ import annotations

import math

import torch

from attnfast.reference.dropout import dropout_keep_mask, dropout_scale


def causal_keep(lq: int, lk: int, device=None) -> torch.Tensor:
    """(Lq, Lk) boolean: True where query i may see key j (bottom-right aligned)."""
    i = torch.arange(lq, device=device).unsqueeze(1)
    j = torch.arange(lk, device=device).unsqueeze(0)
    return j <= i + (lk - lq)


def scores(q, k, bias=None, causal=False, scale=None) -> torch.Tensor:
    """The scaled, masked scores (B, Lq, Lk) in q's dtype (-inf where masked)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if bias is not None:
        s = s + bias.to(s.dtype)
    if causal:
        s = s.masked_fill(~causal_keep(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    return s


def weights_and_lse(q, k, bias=None, causal=False, scale=None, dropout_p=0.0, seed=0):
    """Attention weights (B, Lq, Lk) -- after dropout, i.e. the matrix that multiplies v -- and
    the fp32 logsumexp (B, Lq). Fully masked rows get weights 0 and lse -inf."""
    s = scores(q, k, bias, causal, scale)
    lse = torch.logsumexp(s.float(), dim=-1)
    dead = torch.isneginf(lse).unsqueeze(-1)
    # Softmax of an all -inf row is NaN; give such rows finite scores, then zero their weights.
    # masked_fill (not multiplication) so no NaN/Inf reaches autograd.
    p = torch.softmax(s.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    if dropout_p > 0.0:
        b, lq, lk = p.shape
        keep = dropout_keep_mask((b, lq, lk), dropout_p, seed, p.device)
        p = torch.where(keep, p * dropout_scale(dropout_p), torch.zeros_like(p))
    return p, lse


def attention(q, k, v, bias=None, causal=False, scale=None, dropout_p=0.0, seed=0,
              return_weights=False):
    """softmax(scale * q k^T + bias [+ causal]) v, with attnfast's dropout on the weights.

    Returns (out, lse) or (out, lse, weights) with ``return_weights``. Computed in q's dtype
    (the low-precision reference of the parity tests when q is bf16/fp16; the oracle in fp64).
    """
    p, lse = weights_and_lse(q, k, bias, causal, scale, dropout_p, seed)
    out = torch.matmul(p.to(v.dtype), v)
    if return_weights:
        return out, lse, p
    return out, lse
