"""The per-score math that both strategies of the Triton attention share -- the flash kernels
(``attention.py``) and the GEMM strategy's row kernels (``attention_gemm.py``) -- so that they
compute the same function: the scaled, biased and masked scores; the dropout keep mask at the
attention's Philox counters; the online-softmax update and a finished row's lse; P from a final
lse; P after dropout and dS in the backward. Also Delta = rowsum(dO O), the first step of both
backward passes.

Numerics: fp32 throughout. A row with no visible key so far has m = -inf; exp(-inf - m) is kept
from meeting m = -inf by substituting 0 for that m (and +inf for a dead row's lse), so no NaN
is ever formed. Offsets that multiply sizes are int64.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import batch_slices, block_size, dropout_keep

__all__ = ["masked_scores", "attention_keep", "online_softmax_step", "finished_lse", "probs",
           "dropped_probs_and_dscores", "backward_delta"]


@triton.jit
def masked_scores(qk, b, offs_m, offs_n, Lq, Lk, scale, bias_ptr, sbb, sbi, sbj,
                  HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr):
    """scale * qk + bias, -inf where the key is out of range, causally hidden (bottom-right
    aligned: query i sees key j iff j <= i + Lk - Lq) or masked by the bias."""
    s = qk * scale
    mask_m = offs_m < Lq
    mask_n = offs_n < Lk
    if HAS_BIAS:
        bias = tl.load(bias_ptr + b * sbb + offs_m.to(tl.int64)[:, None] * sbi
                       + offs_n.to(tl.int64)[None, :] * sbj,
                       mask=mask_m[:, None] & mask_n[None, :], other=0.0)
        s += bias
    valid = mask_n[None, :]
    if CAUSAL:
        valid = valid & (offs_n[None, :] <= offs_m[:, None] + (Lk - Lq))
    return tl.where(valid, s, float("-inf"))


@triton.jit
def attention_keep(seed, threshold, bb, offs_m, offs_n, Lq, Lk):
    """The dropout keep mask of scores (offs_m, offs_n) of absolute batch bb: the Philox counter
    of score (b, i, j) is (b * Lq + i) * Lk + j."""
    idx = (bb * Lq + offs_m.to(tl.int64))[:, None] * Lk + offs_n.to(tl.int64)[None, :]
    return dropout_keep(seed, idx, threshold)


@triton.jit
def online_softmax_step(m_i, l_i, s):
    """One key block of the online softmax: (m_new, l_new, alpha, p) with p = exp(s - m_new) and
    alpha = exp(m_i - m_new) the rescale of what was summed before. m_use = 0 while a row has
    seen no visible key (m = -inf), so that exp(s - m_use) = exp(-inf) = 0 and alpha = 0 instead
    of exp(nan)."""
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp(m_i - m_use)
    p = tl.exp(s - m_use[:, None])
    return m_new, l_i * alpha + tl.sum(p, axis=1), alpha, p


@triton.jit
def finished_lse(m_i, l_i):
    """(dead, lse) of rows after the last key block: l = 0 exactly when no key is visible (each
    visible key adds exp(s - m), one term being 1), and then lse = -inf."""
    dead = l_i == 0.0
    return dead, tl.where(dead, float("-inf"), m_i + tl.log(tl.where(dead, 1.0, l_i)))


@triton.jit
def probs(s, lse):
    """P = exp(s - lse) for a final lse (no rescaling); rows with lse = -inf get P = 0 by
    subtracting +inf instead."""
    lse_use = tl.where(lse == float("-inf"), float("inf"), lse)
    return tl.exp(s - lse_use[:, None])


@triton.jit
def dropped_probs_and_dscores(p, dp, delta, bb, offs_m, offs_n, Lq, Lk, seed, threshold,
                              drop_scale, HAS_DROPOUT: tl.constexpr):
    """(P after dropout, dS = P (dP_dropped - Delta)) from P, dP = dO v^T and Delta, fp32;
    dropout applied to dP with the forward's mask."""
    if HAS_DROPOUT:
        keep = attention_keep(seed, threshold, bb, offs_m, offs_n, Lq, Lk)
        p_drop = tl.where(keep, p * drop_scale, 0.0)
        dp = tl.where(keep, dp * drop_scale, 0.0)
    else:
        p_drop = p
    return p_drop, p * (dp - delta[:, None])


@triton.jit
def _delta_kernel(do_ptr, o_ptr, delta_ptr, sdb, sdl, sob, sol, Lq, Dv,
                  BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr):
    """Delta_i = sum_c dO_ic O_ic in fp32 (= rowsum(P_dropped * dP_dropped))."""
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = offs_m.to(tl.int64)
    mask_m = offs_m < Lq
    offs_c = tl.arange(0, BLOCK_DV)
    acc = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for c0 in range(0, Dv, BLOCK_DV):
        cc = c0 + offs_c
        mask = mask_m[:, None] & (cc < Dv)[None, :]
        do = tl.load(do_ptr + b * sdb + rows[:, None] * sdl + cc[None, :], mask=mask, other=0.0)
        o = tl.load(o_ptr + b * sob + rows[:, None] * sol + cc[None, :], mask=mask, other=0.0)
        acc += tl.sum(do.to(tl.float32) * o.to(tl.float32), axis=1)
    tl.store(delta_ptr + b * Lq + rows, acc, mask=mask_m)


def backward_delta(grad_out, out):
    """Delta = rowsum(dO O) in fp32 (B, Lq); grad_out and out with dense last dims."""
    B, Lq, Dv = out.shape
    delta = torch.empty((B, Lq), dtype=torch.float32, device=out.device)
    for b0, b1 in batch_slices(B):
        _delta_kernel[(triton.cdiv(Lq, 64), b1 - b0)](
            grad_out[b0:b1], out[b0:b1], delta[b0:b1], grad_out.stride(0), grad_out.stride(1),
            out.stride(0), out.stride(1), Lq, Dv, BLOCK_M=64, BLOCK_DV=block_size(Dv, hi=128))
    return delta
