"""Triton kernels of fused single-head attention (flash-style), forward and backward.

Semantics are those of the ``attnfast::attention_forward`` / ``attention_backward`` schemas
(csrc/schemas.h): q (B, Lq, D), k (B, Lk, D), v (B, Lk, Dv), one dtype (fp32/bf16/fp16), last
dim contiguous (other strides arbitrary); bias an optional additive fp32 (B, Lq, Lk) view (0
strides allowed, -inf = masked); causal bottom-right aligned (query i sees key j iff
j <= i + Lk - Lq); s = scale * q k^T + bias; out = dropout(softmax(s)) v in q's dtype;
lse (B, Lq) fp32, -inf for a fully masked row (out 0, gradients 0). Dropout: the Philox contract
of csrc/common/philox.h at counter index (b * Lq + i) * Lk + j, kept weights scaled by 1/(1-p).

Design
------
Forward (``_fwd_kernel``): one program per (query block, Dv slice, batch). It streams key blocks
with the online softmax (running max m, running sum l, fp32 accumulator rescaled by
exp(m_old - m_new)); lse = m + log(l) is stored, the (Lq, Lk) matrix never exists. Causal key
blocks past the diagonal of the query block are not visited (the loop bound stops there); only
the blocks that straddle the diagonal are masked.

Wide heads (D up to 1024 and beyond): the fp32 output accumulator of a (BLOCK_M x Dv) tile does
not fit on chip for Dv = 1024 (64 x 1024 x 4 B = 256 KiB, the whole register file), so:
  * q.k contracts D in chunks of BLOCK_D (q/k chunks streamed from L1/L2; with D <= BLOCK_D the
    q tile is loaded once and kept in registers);
  * the output is split into Dv slices of BLOCK_DV columns, one program each; every slice
    program recomputes S for its slice (cost: (Dv / BLOCK_DV) x the q.k GEMM). With
    BLOCK_DV = 256 and D = Dv = 1024 that is 4 + 1 GEMM-units against 2 for one ideal pass
    (40% of the useful-flop rate); the alternative of a 16-row tile holding all of Dv has no
    recompute but a 16 flop/byte intensity against K/V, which is L2-bound on H100. The
    trade-off is in ``_fwd_config`` and is to be tuned on the GPU (bench/).
Slice programs compute identical m/l (same data, same order), so slice 0 alone stores lse.

Backward (P recomputed from q, k, lse; Delta_i = rowsum(dO * O) in fp32 by
``attention_scores.backward_delta``; dS = P * (dP - Delta), dropout applied to dP with the same
mask):
  * ``_bwd_dkdv_kernel``: one program per (key block, slice, batch) owns dK[:, slice] and
    dV[:, slice] in fp32 registers and loops over the query blocks that can see its keys
    (causal: starting at the first one). S and dP contract the full D / Dv in chunks.
  * dQ, deterministic=True: ``_bwd_dq_kernel``, one program per (query block, D slice, batch)
    loops over key blocks -- a second pass recomputing S and dP, no atomics, bitwise repeatable.
  * dQ, deterministic=False: the dK/dV programs also add dS K[:, slice] into an fp32 dQ buffer
    with atomics (no second pass; the order of the fp32 sums varies from run to run).

Numerics: every dot accumulates in fp32 (``tl.dot`` with an fp32 accumulator; fp32 inputs use
``input_precision="ieee"``, never TF32). P and dS are rounded to the input dtype before the
bf16/fp16 tensor-core dots (as the reference's ``p.to(v.dtype)``); softmax state, lse, Delta
and the accumulators stay fp32. The per-score math (masks, dropout, online softmax, lse, dS) is
``attention_scores.py``'s, shared with the GEMM strategy (``attention_gemm.py``) that heads wider
than 256 take by default (``attention_strategy.py``: the rule and ATTNFAST_ATTN_STRATEGY).

Interpreter (TRITON_INTERPRET=1, CPU tensors): bf16 arithmetic is broken there, so bf16 loads
are upcast to fp32 (UPCAST) and the dots run in fp32. All offsets that multiply sizes are int64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import attention_gemm
from ._common import (FLOAT_DTYPES, batch_slices, block_size, dropout_args, interpreting,
                      last_dim_contiguous, upcast_bf16)
from .attention_scores import (attention_keep, backward_delta, dropped_probs_and_dscores,
                               finished_lse, masked_scores, online_softmax_step, probs)
from .attention_strategy import use_gemm_strategy

__all__ = ["attention_forward", "attention_backward"]


# --------------------------------------------------------------------------------------------
# Tile helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr):
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def _dot_rounded(a, b, acc, UPCAST: tl.constexpr):
    """acc + a b for an fp32 a (P, dS): a rounded to b's dtype first (the reference's
    ``p.to(v.dtype)``), unless UPCAST runs the dot in fp32."""
    if UPCAST:
        return _dot(a, b, acc, UPCAST)
    return _dot(a.to(b.dtype), b, acc, UPCAST)


@triton.jit
def _rows_tile(ptr, row_ptrs, mask_m, width, BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr,
               RESIDENT: tl.constexpr):
    """With RESIDENT, the (BLOCK_M x BLOCK_W) tile of rows row_ptrs (BLOCK_M, 1), columns
    [0, width) of a tensor at ptr, kept in registers; else a dummy tile of zeros."""
    tile = tl.zeros((BLOCK_M, BLOCK_W), dtype=ptr.dtype.element_ty)
    if RESIDENT:
        offs = tl.arange(0, BLOCK_W)
        tile = tl.load(row_ptrs + offs[None, :], mask=mask_m[:, None] & (offs < width)[None, :],
                       other=0.0)
    return tile


@triton.jit
def _key_end(pid_m, Lq, Lk, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr):
    """One past the last key that query block pid_m sees: causal, the last row of the block sees
    up to key (m0 + BLOCK_M - 1) + (Lk - Lq); later key blocks are skipped, not masked."""
    hi = Lk
    if CAUSAL:
        hi = tl.minimum(Lk, pid_m * BLOCK_M + BLOCK_M + (Lk - Lq))
    return hi


@triton.jit
def _scores(q_rows, k_rows, q_tile, mask_m, mask_n, D,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
            Q_RESIDENT: tl.constexpr, UPCAST: tl.constexpr):
    """q k^T (BLOCK_M x BLOCK_N, fp32) for row pointers q_rows (BLOCK_M, 1), k_rows (1, BLOCK_N).

    With Q_RESIDENT the whole (padded) D fits one chunk and q_tile holds q already."""
    offs_d = tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if Q_RESIDENT:
        kt = tl.load(k_rows + offs_d[:, None], mask=(offs_d < D)[:, None] & mask_n[None, :],
                     other=0.0)
        acc = _dot(q_tile, kt, acc, UPCAST)
    else:
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + offs_d
            mask_d = dd < D
            qc = tl.load(q_rows + dd[None, :], mask=mask_m[:, None] & mask_d[None, :], other=0.0)
            kt = tl.load(k_rows + dd[:, None], mask=mask_d[:, None] & mask_n[None, :], other=0.0)
            acc = _dot(qc, kt, acc, UPCAST)
    return acc


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------


@triton.jit
def _fwd_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, out_ptr, lse_ptr,
    sqb, sql, skb, skl, svb, svl, sbb, sbi, sbj, sob, sol,
    Lq, Lk, D, Dv, scale, seed, threshold, drop_scale, b0,
    HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    UPCAST: tl.constexpr, Q_RESIDENT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_v = pid_s * BLOCK_DV + tl.arange(0, BLOCK_DV)
    mask_m = offs_m < Lq
    mask_v = offs_v < Dv
    rows = offs_m.to(tl.int64)
    q_rows = q_ptr + b * sqb + rows[:, None] * sql  # (BLOCK_M, 1)

    q_tile = _rows_tile(q_ptr, q_rows, mask_m, D, BLOCK_M, BLOCK_D, Q_RESIDENT)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    hi = _key_end(pid_m, Lq, Lk, BLOCK_M, CAUSAL)
    for n0 in range(0, hi, BLOCK_N):
        offs_n = n0 + offs_n0
        mask_n = offs_n < Lk
        cols = offs_n.to(tl.int64)
        k_rows = k_ptr + b * skb + cols[None, :] * skl  # (1, BLOCK_N)
        qk = _scores(q_rows, k_rows, q_tile, mask_m, mask_n, D,
                     BLOCK_M, BLOCK_N, BLOCK_D, Q_RESIDENT, UPCAST)
        s = masked_scores(qk, b, offs_m, offs_n, Lq, Lk, scale, bias_ptr, sbb, sbi, sbj,
                          HAS_BIAS, CAUSAL)
        # l, the softmax normaliser, sums p before dropout.
        m_i, l_i, alpha, p = online_softmax_step(m_i, l_i, s)
        if HAS_DROPOUT:
            keep = attention_keep(seed, threshold, b0 + b, offs_m, offs_n, Lq, Lk)
            p = tl.where(keep, p * drop_scale, 0.0)
        vt = tl.load(v_ptr + b * svb + cols[:, None] * svl + offs_v[None, :],
                     mask=mask_n[:, None] & mask_v[None, :], other=0.0)
        acc = _dot_rounded(p, vt, acc * alpha[:, None], UPCAST)

    dead, lse = finished_lse(m_i, l_i)
    inv_l = tl.where(dead, 0.0, 1.0 / tl.where(dead, 1.0, l_i))
    out = acc * inv_l[:, None]
    tl.store(out_ptr + b * sob + rows[:, None] * sol + offs_v[None, :],
             out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_v[None, :])
    tl.store(lse_ptr + b * Lq + rows, lse, mask=mask_m & (pid_s == 0))


# --------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------


@triton.jit
def _probs_and_dscores(q_rows, k_rows, q_tile, do_rows, v_rows, dov_tile, b, offs_m, offs_n,
                       lse, delta, Lq, Lk, D, Dv, scale, bias_ptr, sbb, sbi, sbj,
                       seed, threshold, drop_scale, b0,
                       HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                       UPCAST: tl.constexpr, Q_RESIDENT: tl.constexpr, DO_RESIDENT: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_D: tl.constexpr, BLOCK_DVC: tl.constexpr):
    """For a (query block, key block) pair: (P after dropout, dS) as fp32 (BLOCK_M x BLOCK_N).

    P = exp(s - lse) exactly (lse is final). dP = dO v^T contracts Dv in chunks (or one resident
    chunk)."""
    mask_m = offs_m < Lq
    mask_n = offs_n < Lk
    qk = _scores(q_rows, k_rows, q_tile, mask_m, mask_n, D,
                 BLOCK_M, BLOCK_N, BLOCK_D, Q_RESIDENT, UPCAST)
    s = masked_scores(qk, b, offs_m, offs_n, Lq, Lk, scale, bias_ptr, sbb, sbi, sbj,
                      HAS_BIAS, CAUSAL)
    dp = _scores(do_rows, v_rows, dov_tile, mask_m, mask_n, Dv,
                 BLOCK_M, BLOCK_N, BLOCK_DVC, DO_RESIDENT, UPCAST)
    return dropped_probs_and_dscores(probs(s, lse), dp, delta, b0 + b, offs_m, offs_n, Lq, Lk,
                                     seed, threshold, drop_scale, HAS_DROPOUT)


@triton.jit
def _bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, dq_acc_ptr,
    sqb, sql, skb, skl, svb, svl, sbb, sbi, sbj, sdb, sdl,
    Lq, Lk, D, Dv, scale, seed, threshold, drop_scale, b0,
    HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    UPCAST: tl.constexpr, ATOMIC_DQ: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DVC: tl.constexpr,
    BLOCK_DK: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """dK[:, s*BLOCK_DK:...] and dV[:, s*BLOCK_DV:...] of one key block (slice s = program_id 1).

    dV += P_drop^T dO,  dK += dS^T q (times scale at the end); with ATOMIC_DQ also
    dQ[:, slice] += scale dS k[:, slice] into the fp32 buffer dq_acc (B, Lq, D)."""
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < Lk
    cols = offs_n.to(tl.int64)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_dk = pid_s * BLOCK_DK + tl.arange(0, BLOCK_DK)
    offs_dv = pid_s * BLOCK_DV + tl.arange(0, BLOCK_DV)
    mask_dk = offs_dk < D
    mask_dv = offs_dv < Dv
    k_rows = k_ptr + b * skb + cols[None, :] * skl  # (1, BLOCK_N)
    v_rows = v_ptr + b * svb + cols[None, :] * svl

    dk = tl.zeros((BLOCK_N, BLOCK_DK), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_DV), dtype=tl.float32)
    if ATOMIC_DQ:  # k[:, slice] is the right operand of this program's dQ contribution
        k_slice = tl.load(k_ptr + b * skb + cols[:, None] * skl + offs_dk[None, :],
                          mask=mask_n[:, None] & mask_dk[None, :], other=0.0)
    dummy_q = tl.zeros((BLOCK_M, BLOCK_D), dtype=q_ptr.dtype.element_ty)
    dummy_do = tl.zeros((BLOCK_M, BLOCK_DVC), dtype=do_ptr.dtype.element_ty)

    # Causal: the first query that sees key n0 is n0 - (Lk - Lq); earlier blocks are skipped.
    lo = 0
    if CAUSAL:
        lo = tl.maximum(pid_n * BLOCK_N - (Lk - Lq), 0)
        lo = (lo // BLOCK_M) * BLOCK_M
    for m0 in range(lo, Lq, BLOCK_M):
        offs_m = m0 + offs_m0
        mask_m = offs_m < Lq
        rows = offs_m.to(tl.int64)
        q_rows = q_ptr + b * sqb + rows[:, None] * sql
        do_rows = do_ptr + b * sdb + rows[:, None] * sdl
        lse = tl.load(lse_ptr + b * Lq + rows, mask=mask_m, other=float("-inf"))
        delta = tl.load(delta_ptr + b * Lq + rows, mask=mask_m, other=0.0)
        p_drop, ds = _probs_and_dscores(
            q_rows, k_rows, dummy_q, do_rows, v_rows, dummy_do, b, offs_m, offs_n, lse, delta,
            Lq, Lk, D, Dv, scale, bias_ptr, sbb, sbi, sbj, seed, threshold, drop_scale, b0,
            HAS_BIAS, CAUSAL, HAS_DROPOUT, UPCAST, False, False,
            BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DVC)
        do_s = tl.load(do_rows + offs_dv[None, :], mask=mask_m[:, None] & mask_dv[None, :],
                       other=0.0)
        q_s = tl.load(q_rows + offs_dk[None, :], mask=mask_m[:, None] & mask_dk[None, :],
                      other=0.0)
        dv = _dot_rounded(tl.trans(p_drop), do_s, dv, UPCAST)
        dk = _dot_rounded(tl.trans(ds), q_s, dk, UPCAST)
        if ATOMIC_DQ:
            dq_part = _dot_rounded(ds, k_slice, tl.zeros((BLOCK_M, BLOCK_DK), dtype=tl.float32),
                                   UPCAST)
            tl.atomic_add(dq_acc_ptr + (b * Lq + rows)[:, None] * D + offs_dk[None, :],
                          dq_part * scale, mask=mask_m[:, None] & mask_dk[None, :])

    out_rows = (b * Lk + cols)[:, None]
    tl.store(dk_ptr + out_rows * D + offs_dk[None, :], (dk * scale).to(dk_ptr.dtype.element_ty),
             mask=mask_n[:, None] & mask_dk[None, :])
    tl.store(dv_ptr + out_rows * Dv + offs_dv[None, :], dv.to(dv_ptr.dtype.element_ty),
             mask=mask_n[:, None] & mask_dv[None, :])


@triton.jit
def _bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    sqb, sql, skb, skl, svb, svl, sbb, sbi, sbj, sdb, sdl,
    Lq, Lk, D, Dv, scale, seed, threshold, drop_scale, b0,
    HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    UPCAST: tl.constexpr, Q_RESIDENT: tl.constexpr, DO_RESIDENT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DVC: tl.constexpr,
    BLOCK_DK: tl.constexpr,
):
    """dQ[:, s*BLOCK_DK:...] = scale * sum over key blocks of dS k[:, slice] (no atomics)."""
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < Lq
    rows = offs_m.to(tl.int64)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_dk = pid_s * BLOCK_DK + tl.arange(0, BLOCK_DK)
    mask_dk = offs_dk < D
    q_rows = q_ptr + b * sqb + rows[:, None] * sql
    do_rows = do_ptr + b * sdb + rows[:, None] * sdl
    q_tile = _rows_tile(q_ptr, q_rows, mask_m, D, BLOCK_M, BLOCK_D, Q_RESIDENT)
    do_tile = _rows_tile(do_ptr, do_rows, mask_m, Dv, BLOCK_M, BLOCK_DVC, DO_RESIDENT)
    lse = tl.load(lse_ptr + b * Lq + rows, mask=mask_m, other=float("-inf"))
    delta = tl.load(delta_ptr + b * Lq + rows, mask=mask_m, other=0.0)

    dq = tl.zeros((BLOCK_M, BLOCK_DK), dtype=tl.float32)
    hi = _key_end(pid_m, Lq, Lk, BLOCK_M, CAUSAL)
    for n0 in range(0, hi, BLOCK_N):
        offs_n = n0 + offs_n0
        mask_n = offs_n < Lk
        cols = offs_n.to(tl.int64)
        k_rows = k_ptr + b * skb + cols[None, :] * skl
        v_rows = v_ptr + b * svb + cols[None, :] * svl
        _, ds = _probs_and_dscores(
            q_rows, k_rows, q_tile, do_rows, v_rows, do_tile, b, offs_m, offs_n, lse, delta,
            Lq, Lk, D, Dv, scale, bias_ptr, sbb, sbi, sbj, seed, threshold, drop_scale, b0,
            HAS_BIAS, CAUSAL, HAS_DROPOUT, UPCAST, Q_RESIDENT, DO_RESIDENT,
            BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DVC)
        k_s = tl.load(k_ptr + b * skb + cols[:, None] * skl + offs_dk[None, :],
                      mask=mask_n[:, None] & mask_dk[None, :], other=0.0)
        dq = _dot_rounded(ds, k_s, dq, UPCAST)
    tl.store(dq_ptr + (b * Lq + rows)[:, None] * D + offs_dk[None, :],
             (dq * scale).to(dq_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_dk[None, :])


@triton.jit
def _scale_cast_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    """dst = src (fp32 dQ buffer of the atomic path) rounded to dst's dtype."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(src_ptr + offs, mask=mask, other=0.0)
    tl.store(dst_ptr + offs, x.to(dst_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------
# Block-size heuristics
# --------------------------------------------------------------------------------------------


def _fwd_config(dtype: torch.dtype, Lq: int, Lk: int, D: int, Dv: int) -> dict:
    dp, dvp = block_size(D), block_size(Dv)
    if interpreting():  # the interpreter's cost is per program and op: few small programs
        bd = min(dp, 64)
        return dict(BLOCK_M=16, BLOCK_N=16, BLOCK_D=bd, BLOCK_DV=min(dvp, 64),
                    Q_RESIDENT=bd >= dp, num_warps=4, num_stages=1)
    fp32 = dtype == torch.float32
    # Output accumulator (BLOCK_M x BLOCK_DV fp32) + S tile + a resident q tile must fit the
    # registers: the widths below keep it <= ~128 fp32 registers per thread.
    if dp <= 128:
        bm = 32 if fp32 else (128 if dp <= 64 else 64)
        return dict(BLOCK_M=bm, BLOCK_N=64 if dp <= 64 else 32 if fp32 else 64, BLOCK_D=dp,
                    BLOCK_DV=min(dvp, 128), Q_RESIDENT=True,
                    num_warps=8, num_stages=2 if fp32 else 3)
    if dp <= 256:
        return dict(BLOCK_M=32 if fp32 else 64, BLOCK_N=32 if fp32 else 64, BLOCK_D=dp,
                    BLOCK_DV=min(dvp, 128), Q_RESIDENT=True,
                    num_warps=8, num_stages=2)
    # Wide heads: D streamed in 64-wide chunks, Dv in slices of 128 (fp32) / 256 columns.
    return dict(BLOCK_M=32, BLOCK_N=32 if fp32 else 64, BLOCK_D=64,
                BLOCK_DV=min(dvp, 128 if fp32 else 256), Q_RESIDENT=False,
                num_warps=8, num_stages=2)


def _bwd_config(dtype: torch.dtype, D: int, Dv: int) -> dict:
    dp, dvp = block_size(D), block_size(Dv)
    if interpreting():
        return dict(BLOCK_M=16, BLOCK_N=16, BLOCK_D=min(dp, 64), BLOCK_DVC=min(dvp, 64),
                    BLOCK_DK=min(dp, 64), BLOCK_DV=min(dvp, 64), num_warps=4, num_stages=1)
    fp32 = dtype == torch.float32
    # dK and dV accumulators (BLOCK_N x slice, fp32) both live through the query loop.
    width = 64
    blk = 32 if fp32 or dp > 64 else 64
    return dict(BLOCK_M=blk, BLOCK_N=blk if fp32 else 64, BLOCK_D=min(dp, 64),
                BLOCK_DVC=min(dvp, 64), BLOCK_DK=min(dp, width), BLOCK_DV=min(dvp, width),
                num_warps=8, num_stages=1 if fp32 else 2)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _check_qkv(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"attention: {name} must be a 3-D tensor, got "
                             f"{getattr(t, 'shape', type(t).__name__)}")
    if q.dtype not in FLOAT_DTYPES:
        raise ValueError(f"attention: q must be float32, bfloat16 or float16, got {q.dtype}")
    B, Lq, D = q.shape
    if k.shape[0] != B or k.shape[2] != D:
        raise ValueError(f"attention: k must have shape ({B}, Lk, {D}), got {tuple(k.shape)}")
    Lk = k.shape[1]
    if v.shape[0] != B or v.shape[1] != Lk:
        raise ValueError(f"attention: v must have shape ({B}, {Lk}, Dv), got {tuple(v.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"attention: {name} must have dtype {q.dtype} (q's), got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"attention: {name} must be on {q.device} (q's), got {t.device}")
    return B, Lq, Lk, D, v.shape[2]


def _bias_args(bias, q, B, Lq, Lk):
    """(pointer tensor, strides) of the fp32 (B, Lq, Lk) bias view; q with 0 strides if None."""
    if bias is None:
        return q, (0, 0, 0)
    if bias.dtype != torch.float32 or bias.device != q.device:
        raise ValueError(f"attention: bias must be a float32 tensor on {q.device}, got "
                         f"{bias.dtype} on {bias.device}")
    try:
        bias = bias.expand(B, Lq, Lk)
    except RuntimeError:
        raise ValueError(f"attention: bias of shape {tuple(bias.shape)} is not broadcastable to "
                         f"(B, Lq, Lk) = ({B}, {Lq}, {Lk})") from None
    return bias, tuple(bias.stride())


def attention_forward(q, k, v, bias, causal: bool, scale: float, dropout_p: float, seed: int,
                      keep_probs: bool = False, _config: dict | None = None):
    """Returns (out (B, Lq, Dv) in q's dtype, lse (B, Lq) fp32, probs: an empty (0,) fp32
    tensor). Wide heads take the GEMM strategy (``attention_gemm``; ATTNFAST_ATTN_STRATEGY).
    ``_config`` overrides the flash kernels' block sizes (tests of the chunked / sliced paths)
    and implies the flash kernels. ``keep_probs=True`` is refused: these kernels recompute the
    probabilities in the backward (only attnfast's CPU kernels keep them)."""
    if keep_probs:
        raise ValueError("attention_forward: keep_probs=True is not implemented by the Triton "
                         "kernels (they recompute the probabilities in the backward); only the "
                         "CPU kernels keep them. Pass keep_probs=False.")
    out, lse = _forward(q, k, v, bias, causal, scale, dropout_p, seed, _config)
    return out, lse, torch.empty((0,), dtype=torch.float32, device=q.device)


def _forward(q, k, v, bias, causal, scale, dropout_p, seed, _config):
    B, Lq, Lk, D, Dv = _check_qkv(q, k, v)
    q, k, v = (last_dim_contiguous(t) for t in (q, k, v))
    has_dropout, seed, threshold, drop_scale = dropout_args("attention", dropout_p, seed)
    out = torch.empty((B, Lq, Dv), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, Lq), dtype=torch.float32, device=q.device)
    if B == 0 or Lq == 0 or Dv == 0:
        lse.fill_(float("-inf") if Lk == 0 else 0.0)
        if Dv == 0 and B * Lq > 0:  # lse still needed: compute it with a 1-wide dummy v
            _, lse = _forward(q, k, v.new_zeros((B, Lk, 1)), bias, causal, scale, dropout_p,
                              seed, _config)
        return out, lse
    bias_t, (sbb, sbi, sbj) = _bias_args(bias, q, B, Lq, Lk)
    if _config is None and use_gemm_strategy(D, Dv):
        attention_gemm.forward(q, k, v, bias_t, (sbb, sbi, sbj), bias is not None, out, lse,
                               causal, scale, (has_dropout, seed, threshold, drop_scale))
        return out, lse
    cfg = dict(_config) if _config else _fwd_config(q.dtype, Lq, Lk, D, Dv)
    for b0, b1 in batch_slices(B):
        grid = (triton.cdiv(Lq, cfg["BLOCK_M"]), triton.cdiv(Dv, cfg["BLOCK_DV"]), b1 - b0)
        _fwd_kernel[grid](
            q[b0:b1], k[b0:b1], v[b0:b1], bias_t[b0:b1], out[b0:b1], lse[b0:b1],
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            sbb, sbi, sbj, out.stride(0), out.stride(1),
            Lq, Lk, D, Dv, float(scale), seed, threshold, drop_scale, b0,
            HAS_BIAS=bias is not None, CAUSAL=bool(causal), HAS_DROPOUT=has_dropout,
            UPCAST=upcast_bf16(q.dtype), **cfg)
    return out, lse


def attention_backward(grad_out, q, k, v, out, lse, probs, bias, causal: bool, scale: float,
                       dropout_p: float, seed: int, deterministic: bool,
                       _config: dict | None = None):
    """Returns (grad_q, grad_k, grad_v) in q's dtype. No gradient for bias. ``probs`` (kept
    probabilities, which these kernels never produce) is not read: P is always recomputed from
    q, k and lse, the same values."""
    B, Lq, Lk, D, Dv = _check_qkv(q, k, v)
    dev, dt = q.device, q.dtype
    for name, t, shape in (("grad_out", grad_out, (B, Lq, Dv)), ("out", out, (B, Lq, Dv))):
        if tuple(t.shape) != shape or t.dtype != dt or t.device != dev:
            raise ValueError(f"attention: {name} must be a {shape} {dt} tensor on {dev}, got "
                             f"{tuple(t.shape)} {t.dtype} on {t.device}")
    if tuple(lse.shape) != (B, Lq) or lse.dtype != torch.float32 or lse.device != dev:
        raise ValueError(f"attention: lse must be a ({B}, {Lq}) float32 tensor on {dev}, got "
                         f"{tuple(lse.shape)} {lse.dtype} on {lse.device}")
    q, k, v, grad_out, out = (last_dim_contiguous(t) for t in (q, k, v, grad_out, out))
    lse = lse.contiguous()
    has_dropout, seed, threshold, drop_scale = dropout_args("attention", dropout_p, seed)
    dq = torch.zeros((B, Lq, D), dtype=dt, device=dev)
    dk = torch.zeros((B, Lk, D), dtype=dt, device=dev)
    dv = torch.zeros((B, Lk, Dv), dtype=dt, device=dev)
    if B == 0 or Lq == 0 or Lk == 0 or (D == 0 and Dv == 0):
        return dq, dk, dv
    bias_t, (sbb, sbi, sbj) = _bias_args(bias, q, B, Lq, Lk)
    if _config is None and use_gemm_strategy(D, Dv):  # always deterministic
        attention_gemm.backward(grad_out, q, k, v, out, lse, bias_t, (sbb, sbi, sbj),
                                bias is not None, dq, dk, dv, causal, scale,
                                (has_dropout, seed, threshold, drop_scale))
        return dq, dk, dv
    cfg = dict(_config) if _config else _bwd_config(dt, D, Dv)
    warps = dict(num_warps=cfg.pop("num_warps"), num_stages=cfg.pop("num_stages"))
    upcast = upcast_bf16(dt)
    flags = dict(HAS_BIAS=bias is not None, CAUSAL=bool(causal), HAS_DROPOUT=has_dropout,
                 UPCAST=upcast)
    De, Dve = max(D, 1), max(Dv, 1)  # a 0-wide head still needs valid (empty) loops

    delta = backward_delta(grad_out, out)
    strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
               sbb, sbi, sbj, grad_out.stride(0), grad_out.stride(1))
    scalars = (Lq, Lk, D, Dv, float(scale), seed, threshold, drop_scale)
    atomic = not deterministic and D > 0
    dq_acc = torch.zeros((B, Lq, D), dtype=torch.float32, device=dev) if atomic else dq
    n_slices = max(triton.cdiv(De, cfg["BLOCK_DK"]), triton.cdiv(Dve, cfg["BLOCK_DV"]))
    dq_cfg = {key: cfg[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_D", "BLOCK_DVC", "BLOCK_DK")}
    dq_cfg.update(Q_RESIDENT=block_size(De) <= cfg["BLOCK_D"],
                  DO_RESIDENT=block_size(Dve) <= cfg["BLOCK_DVC"])
    for b0, b1 in batch_slices(B):
        sl = slice(b0, b1)
        _bwd_dkdv_kernel[(triton.cdiv(Lk, cfg["BLOCK_N"]), n_slices, b1 - b0)](
            q[sl], k[sl], v[sl], bias_t[sl], grad_out[sl], lse[sl], delta[sl], dk[sl], dv[sl],
            dq_acc[sl], *strides, *scalars, b0, ATOMIC_DQ=atomic, **flags, **cfg, **warps)
        if D > 0 and not atomic:
            grid = (triton.cdiv(Lq, cfg["BLOCK_M"]), triton.cdiv(D, cfg["BLOCK_DK"]), b1 - b0)
            _bwd_dq_kernel[grid](
                q[sl], k[sl], v[sl], bias_t[sl], grad_out[sl], lse[sl], delta[sl], dq[sl],
                *strides, *scalars, b0, **flags, **dq_cfg, **warps)
    if atomic:
        # A plain cast; the scale was applied before the atomic adds.
        n = dq.numel()
        _scale_cast_kernel[(triton.cdiv(n, 1024),)](dq_acc, dq, n, BLOCK=1024)
    return dq, dk, dv
