"""The GEMM strategy of the Triton attention for wide heads: library GEMMs (torch.bmm, cuBLAS on
a GPU) on chunks of query rows, with Triton row-softmax kernels between them.

The same design as the CUDA backend's (csrc/cuda/attention_gemm.h); why wide heads take it is
in ``attention_strategy.py``. Per chunk of ``rows`` queries and its visible-key prefix ``n``:

* forward: S = q_c k_n^T (fp32) -> ``_rows_fwd_kernel``: lse and P = dropout(exp(scale S + bias
  - lse)) in the input dtype -> out_c = P v_n;
* backward (after Delta = rowsum(dO O)): S and dP = dO_c v_n^T (fp32) -> ``_rows_bwd_kernel``: P
  after dropout and dS = P (dP - Delta) in the input dtype -> dV_n += P^T dO_c, dK_n += scale
  dS^T q_c (fp32 accumulators), dQ_c = scale dS k_n. Fixed order, no atomics: deterministic.

Scores, masks, the Philox dropout counters and the rounding of P and dS are those of the flash
kernels (the shared pieces of ``attention_scores.py``), so both strategies compute the same
function. When this strategy runs and how many query rows a chunk holds is the rule of
``attention_strategy.py`` (ATTNFAST_ATTN_STRATEGY, ATTNFAST_ATTN_GEMM_ROWS), which the CUDA
backend follows too.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import batch_slices, block_size, interpreting
from .attention_scores import (attention_keep, backward_delta, dropped_probs_and_dscores,
                               finished_lse, masked_scores, online_softmax_step, probs)
from .attention_strategy import chunk_rows

__all__ = ["forward", "backward"]


def _visible_prefix(i0: int, rows: int, Lq: int, Lk: int, causal: bool) -> int:
    """One past the last key query rows [i0, i0 + rows) can see (bottom-right causal)."""
    return min(max(i0 + rows + Lk - Lq, 0), Lk) if causal else Lk


# --------------------------------------------------------------------------------------------
# Row kernels: one program per (block of BLOCK_M rows of the chunk, batch). Buffers S, dP, P,
# dS are (B, rows, n) contiguous; row r of the chunk is query i0 + r.
# --------------------------------------------------------------------------------------------


@triton.jit
def _row_block(i0, rows, n, Lq, BLOCK_M: tl.constexpr):
    """This program's rows of the chunk: (batch b, row mask, query index -- Lq for rows past
    the chunk, which every mask then excludes -- and each row's offset in the buffers)."""
    b = tl.program_id(1).to(tl.int64)
    r = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_r = r < rows
    offs_m = tl.where(mask_r, i0 + r, Lq)
    return b, mask_r, offs_m, (b * rows + r.to(tl.int64)) * n


@triton.jit
def _key_block(s_ptr, row_base, mask_r, n0, n, b, offs_m, Lq, Lk, scale, bias_ptr, sbb, sbi, sbj,
               HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr):
    """Keys [n0, n0 + BLOCK_N) of the rows: (buffer offsets, in-range mask, masked scores)."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    mask = mask_r[:, None] & (offs_n < n)[None, :]
    idx = row_base[:, None] + offs_n[None, :]
    qk = tl.load(s_ptr + idx, mask=mask, other=0.0)
    s = masked_scores(qk, b, offs_m, offs_n, Lq, Lk, scale, bias_ptr, sbb, sbi, sbj,
                      HAS_BIAS, CAUSAL)
    return idx, mask, offs_n, s


@triton.jit
def _rows_fwd_kernel(s_ptr, p_ptr, lse_ptr, bias_ptr, sbb, sbi, sbj,
                     i0, rows, n, Lq, Lk, scale, seed, threshold, drop_scale, b0,
                     HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """lse_i = logsumexp_j s_ij (online over key blocks) and P = dropout(exp(s - lse))."""
    b, mask_r, offs_m, row_base = _row_block(i0, rows, n, Lq, BLOCK_M)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for n0 in range(0, n, BLOCK_N):
        idx, mask, offs_n, s = _key_block(s_ptr, row_base, mask_r, n0, n, b, offs_m, Lq, Lk,
                                          scale, bias_ptr, sbb, sbi, sbj, HAS_BIAS, CAUSAL,
                                          BLOCK_N)
        s = tl.where(mask, s, float("-inf"))
        m_i, l_i, _, _ = online_softmax_step(m_i, l_i, s)
    _, lse = finished_lse(m_i, l_i)
    for n0 in range(0, n, BLOCK_N):
        idx, mask, offs_n, s = _key_block(s_ptr, row_base, mask_r, n0, n, b, offs_m, Lq, Lk,
                                          scale, bias_ptr, sbb, sbi, sbj, HAS_BIAS, CAUSAL,
                                          BLOCK_N)
        p = probs(s, lse)
        if HAS_DROPOUT:
            keep = attention_keep(seed, threshold, b0 + b, offs_m, offs_n, Lq, Lk)
            p = tl.where(keep, p * drop_scale, 0.0)
        tl.store(p_ptr + idx, p.to(p_ptr.dtype.element_ty), mask=mask)
    tl.store(lse_ptr + b * Lq + offs_m, lse, mask=mask_r)


@triton.jit
def _rows_bwd_kernel(s_ptr, dp_ptr, p_ptr, ds_ptr, lse_ptr, delta_ptr, bias_ptr, sbb, sbi, sbj,
                     i0, rows, n, Lq, Lk, scale, seed, threshold, drop_scale, b0,
                     HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """P after dropout and dS = P (dP_dropped - Delta), elementwise given lse and Delta."""
    b, mask_r, offs_m, row_base = _row_block(i0, rows, n, Lq, BLOCK_M)
    lse = tl.load(lse_ptr + b * Lq + offs_m, mask=mask_r, other=float("-inf"))
    delta = tl.load(delta_ptr + b * Lq + offs_m, mask=mask_r, other=0.0)
    for n0 in range(0, n, BLOCK_N):
        idx, mask, offs_n, s = _key_block(s_ptr, row_base, mask_r, n0, n, b, offs_m, Lq, Lk,
                                          scale, bias_ptr, sbb, sbi, sbj, HAS_BIAS, CAUSAL,
                                          BLOCK_N)
        dp = tl.load(dp_ptr + idx, mask=mask, other=0.0)
        p_drop, ds = dropped_probs_and_dscores(probs(s, lse), dp, delta, b0 + b, offs_m, offs_n,
                                               Lq, Lk, seed, threshold, drop_scale, HAS_DROPOUT)
        tl.store(p_ptr + idx, p_drop.to(p_ptr.dtype.element_ty), mask=mask)
        tl.store(ds_ptr + idx, ds.to(ds_ptr.dtype.element_ty), mask=mask)


def _rows_config(n: int) -> dict:
    if interpreting():  # per-program cost: few, wide programs
        return dict(BLOCK_M=16, BLOCK_N=block_size(n, hi=128))
    return dict(BLOCK_M=4, BLOCK_N=block_size(n, hi=1024), num_warps=4)


# --------------------------------------------------------------------------------------------
# GEMMs (batched, fp32 accumulation)
# --------------------------------------------------------------------------------------------


def _bmm_f32(a, b):
    """a @ b as fp32: cuBLAS with an fp32 result on a GPU; fp32 copies on the CPU (interpreter)."""
    if a.dtype == torch.float32:
        return torch.bmm(a, b)
    if a.is_cuda:
        return torch.bmm(a, b, out_dtype=torch.float32)
    return torch.bmm(a.float(), b.float())


def _bmm_into(out, a, b, alpha: float = 1.0):
    """out = alpha a @ b in out's dtype (a's), fp32 accumulation, rounded once."""
    if a.is_cuda or a.dtype == torch.float32:
        torch.baddbmm(out, a, b, beta=0.0, alpha=alpha, out=out)
    else:
        out.copy_(torch.bmm(a.float(), b.float()).mul_(alpha))


def _accumulate(acc, a, b, alpha: float = 1.0):
    """acc (fp32) += alpha a @ b in place."""
    if a.dtype == torch.float32:
        acc.baddbmm_(a, b, alpha=alpha)
    elif a.is_cuda:
        torch.baddbmm(acc, a, b, out_dtype=torch.float32, alpha=alpha, out=acc)
    else:
        acc.baddbmm_(a.float(), b.float(), alpha=alpha)


# --------------------------------------------------------------------------------------------
# Drivers (called by attention.attention_forward / attention_backward after their checks)
# --------------------------------------------------------------------------------------------


def forward(q, k, v, bias_t, bias_strides, has_bias, out, lse, causal, scale, dropout):
    """Fills out (B, Lq, Dv) and lse (B, Lq); dropout = (has_dropout, seed, threshold, scale)."""
    B, Lq, _ = q.shape
    Lk = k.shape[1]
    has_dropout, seed, threshold, drop_scale = dropout
    rows = chunk_rows(B, Lq, Lk, q.shape[2], v.shape[2], causal)
    for i0 in range(0, Lq, rows):
        c = min(rows, Lq - i0)
        n = _visible_prefix(i0, c, Lq, Lk, causal)
        if n == 0:  # no query of the chunk sees a key
            out[:, i0:i0 + c].zero_()
            lse[:, i0:i0 + c].fill_(float("-inf"))
            continue
        S = _bmm_f32(q[:, i0:i0 + c], k[:, :n].transpose(1, 2))
        P = torch.empty((B, c, n), dtype=q.dtype, device=q.device)
        cfg = _rows_config(n)
        for b0, b1 in batch_slices(B):
            _rows_fwd_kernel[(triton.cdiv(c, cfg["BLOCK_M"]), b1 - b0)](
                S[b0:b1], P[b0:b1], lse[b0:b1], bias_t[b0:b1], *bias_strides, i0, c, n, Lq, Lk,
                float(scale), seed, threshold, drop_scale, b0, HAS_BIAS=has_bias,
                CAUSAL=bool(causal), HAS_DROPOUT=has_dropout, **cfg)
        _bmm_into(out[:, i0:i0 + c], P, v[:, :n])


def backward(grad_out, q, k, v, out, lse, bias_t, bias_strides, has_bias, dq, dk, dv, causal,
             scale, dropout):
    """Fills dq, dk, dv (contiguous, q's dtype)."""
    B, Lq, D = q.shape
    Lk, Dv = k.shape[1], v.shape[2]
    has_dropout, seed, threshold, drop_scale = dropout
    delta = backward_delta(grad_out, out)
    # dK and dV sum over the chunks: fp32 accumulators unless q is fp32, or unless one chunk
    # holds every query (its visible prefix is all Lk keys): then its GEMMs write them once.
    rows = chunk_rows(B, Lq, Lk, D, Dv, causal)
    one_chunk = rows >= Lq
    direct = q.dtype == torch.float32 or one_chunk
    dk_acc = dk if direct else torch.zeros(dk.shape, dtype=torch.float32, device=q.device)
    dv_acc = dv if direct else torch.zeros(dv.shape, dtype=torch.float32, device=q.device)
    for i0 in range(0, Lq, rows):
        c = min(rows, Lq - i0)
        n = _visible_prefix(i0, c, Lq, Lk, causal)
        if n == 0:
            dq[:, i0:i0 + c].zero_()
            continue
        q_c, go_c, k_n, v_n = q[:, i0:i0 + c], grad_out[:, i0:i0 + c], k[:, :n], v[:, :n]
        S = _bmm_f32(q_c, k_n.transpose(1, 2))
        dP = _bmm_f32(go_c, v_n.transpose(1, 2))
        P = torch.empty((B, c, n), dtype=q.dtype, device=q.device)
        dS = torch.empty_like(P)
        cfg = _rows_config(n)
        for b0, b1 in batch_slices(B):
            sl = slice(b0, b1)
            _rows_bwd_kernel[(triton.cdiv(c, cfg["BLOCK_M"]), b1 - b0)](
                S[sl], dP[sl], P[sl], dS[sl], lse[sl], delta[sl], bias_t[sl], *bias_strides, i0,
                c, n, Lq, Lk, float(scale), seed, threshold, drop_scale, b0, HAS_BIAS=has_bias,
                CAUSAL=bool(causal), HAS_DROPOUT=has_dropout, **cfg)
        if one_chunk:
            _bmm_into(dv_acc[:, :n], P.transpose(1, 2), go_c)
            _bmm_into(dk_acc[:, :n], dS.transpose(1, 2), q_c, alpha=float(scale))
        else:
            _accumulate(dv_acc[:, :n], P.transpose(1, 2), go_c)
            _accumulate(dk_acc[:, :n], dS.transpose(1, 2), q_c, alpha=float(scale))
        _bmm_into(dq[:, i0:i0 + c], dS, k_n, alpha=float(scale))
    if not direct:
        dk.copy_(dk_acc)
        dv.copy_(dv_acc)
