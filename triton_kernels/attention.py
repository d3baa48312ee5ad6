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

Backward (P recomputed from q, k, lse; Delta_i = rowsum(dO * O) in fp32 by ``_bwd_delta_kernel``;
dS = P * (dP - Delta), dropout applied to dP with the same mask):
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
and the accumulators stay fp32. exp(-inf - m) is kept from meeting m = -inf (a row with no
visible key so far) by substituting 0 for that m, so no NaN is ever formed.

Interpreter (TRITON_INTERPRET=1, CPU tensors): bf16 arithmetic is broken there, so bf16 loads
are upcast to fp32 (UPCAST) and the dots run in fp32. All offsets that multiply sizes are int64.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["attention_forward", "attention_backward"]

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


# --------------------------------------------------------------------------------------------
# Tile helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _dropout_keep(seed, idx, threshold):
    # Philox4x32-10, key (seed lo32, seed hi32), counter (idx lo32, idx hi32, 0, 0): tl.randint
    # implements exactly csrc/common/philox.h's first output word. keep iff (r >> 8) >= threshold.
    r = tl.randint(seed, idx)
    return (r >> 8).to(tl.int32) >= threshold


@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr):
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision="ieee")


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


@triton.jit
def _masked_scores(qk, b, offs_m, offs_n, Lq, Lk, scale, bias_ptr, sbb, sbi, sbj,
                   HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr):
    """scale * qk + bias, -inf where the key is out of range, causally hidden or masked."""
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

    q_tile = tl.zeros((BLOCK_M, BLOCK_D), dtype=q_ptr.dtype.element_ty)
    if Q_RESIDENT:
        q_tile = tl.load(q_rows + offs_d[None, :], mask=mask_m[:, None] & (offs_d < D)[None, :],
                         other=0.0)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)

    # Causal: the last key any row of this block sees is (m0 + BLOCK_M - 1) + (Lk - Lq); later
    # key blocks are skipped, not masked.
    hi = Lk
    if CAUSAL:
        hi = tl.minimum(Lk, pid_m * BLOCK_M + BLOCK_M + (Lk - Lq))
    for n0 in range(0, hi, BLOCK_N):
        offs_n = n0 + offs_n0
        mask_n = offs_n < Lk
        cols = offs_n.to(tl.int64)
        k_rows = k_ptr + b * skb + cols[None, :] * skl  # (1, BLOCK_N)
        qk = _scores(q_rows, k_rows, q_tile, mask_m, mask_n, D,
                     BLOCK_M, BLOCK_N, BLOCK_D, Q_RESIDENT, UPCAST)
        s = _masked_scores(qk, b, offs_m, offs_n, Lq, Lk, scale, bias_ptr, sbb, sbi, sbj,
                           HAS_BIAS, CAUSAL)
        # Online softmax. m_use = 0 while a row has seen no visible key (m = -inf), so that
        # exp(s - m_use) = exp(-inf) = 0 and alpha = exp(-inf) = 0 instead of exp(nan).
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_use)
        p = tl.exp(s - m_use[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)  # the softmax normaliser: before dropout
        if HAS_DROPOUT:
            keep = _dropout_keep(seed, ((b0 + b) * Lq + rows)[:, None] * Lk + cols[None, :],
                                 threshold)
            p = tl.where(keep, p * drop_scale, 0.0)
        vt = tl.load(v_ptr + b * svb + cols[:, None] * svl + offs_v[None, :],
                     mask=mask_n[:, None] & mask_v[None, :], other=0.0)
        acc = acc * alpha[:, None]
        if UPCAST:
            acc = _dot(p, vt, acc, UPCAST)
        else:
            acc = _dot(p.to(vt.dtype), vt, acc, UPCAST)
        m_i = m_new

    # l = 0 exactly when no key is visible (each visible key adds exp(s - m) with one term = 1).
    dead = l_i == 0.0
    inv_l = tl.where(dead, 0.0, 1.0 / tl.where(dead, 1.0, l_i))
    out = acc * inv_l[:, None]
    tl.store(out_ptr + b * sob + rows[:, None] * sol + offs_v[None, :],
             out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_v[None, :])
    lse = tl.where(dead, float("-inf"), m_i + tl.log(tl.where(dead, 1.0, l_i)))
    tl.store(lse_ptr + b * Lq + rows, lse, mask=mask_m & (pid_s == 0))


# --------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------


@triton.jit
def _bwd_delta_kernel(do_ptr, o_ptr, delta_ptr, sdb, sdl, sob, sol, Lq, Dv,
                      BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr):
    """Delta_i = sum_c dO_ic O_ic in fp32 (= rowsum(P_dropped * dP_dropped), see module doc)."""
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


@triton.jit
def _probs_and_dscores(q_rows, k_rows, q_tile, do_rows, v_rows, dov_tile, b, offs_m, offs_n,
                       lse, delta, Lq, Lk, D, Dv, scale, bias_ptr, sbb, sbi, sbj,
                       seed, threshold, drop_scale, b0,
                       HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                       UPCAST: tl.constexpr, Q_RESIDENT: tl.constexpr, DO_RESIDENT: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_D: tl.constexpr, BLOCK_DVC: tl.constexpr):
    """For a (query block, key block) pair: (P after dropout, dS) as fp32 (BLOCK_M x BLOCK_N).

    P = exp(s - lse) exactly (no rescaling: lse is final); rows with lse = -inf get P = 0 by
    subtracting +inf instead. dP = dO v^T contracts Dv in chunks (or one resident chunk)."""
    mask_m = offs_m < Lq
    mask_n = offs_n < Lk
    qk = _scores(q_rows, k_rows, q_tile, mask_m, mask_n, D,
                 BLOCK_M, BLOCK_N, BLOCK_D, Q_RESIDENT, UPCAST)
    s = _masked_scores(qk, b, offs_m, offs_n, Lq, Lk, scale, bias_ptr, sbb, sbi, sbj,
                       HAS_BIAS, CAUSAL)
    lse_use = tl.where(lse == float("-inf"), float("inf"), lse)
    p = tl.exp(s - lse_use[:, None])
    dp = _scores(do_rows, v_rows, dov_tile, mask_m, mask_n, Dv,
                 BLOCK_M, BLOCK_N, BLOCK_DVC, DO_RESIDENT, UPCAST)
    if HAS_DROPOUT:
        rows = offs_m.to(tl.int64)
        keep = _dropout_keep(seed, ((b0 + b) * Lq + rows)[:, None] * Lk
                             + offs_n.to(tl.int64)[None, :],
                             threshold)
        p_drop = tl.where(keep, p * drop_scale, 0.0)
        dp = tl.where(keep, dp * drop_scale, 0.0)
    else:
        p_drop = p
    ds = p * (dp - delta[:, None])
    return p_drop, ds


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
        if UPCAST:
            dv = _dot(tl.trans(p_drop), do_s, dv, UPCAST)
            dk = _dot(tl.trans(ds), q_s, dk, UPCAST)
        else:
            ds_lp = ds.to(q_s.dtype)
            dv = _dot(tl.trans(p_drop.to(do_s.dtype)), do_s, dv, UPCAST)
            dk = _dot(tl.trans(ds_lp), q_s, dk, UPCAST)
        if ATOMIC_DQ:
            if UPCAST:
                dq_part = _dot(ds, k_slice, tl.zeros((BLOCK_M, BLOCK_DK), dtype=tl.float32), UPCAST)
            else:
                dq_part = _dot(ds_lp, k_slice, tl.zeros((BLOCK_M, BLOCK_DK), dtype=tl.float32),
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
    offs_d = tl.arange(0, BLOCK_D)
    offs_c = tl.arange(0, BLOCK_DVC)
    q_tile = tl.zeros((BLOCK_M, BLOCK_D), dtype=q_ptr.dtype.element_ty)
    do_tile = tl.zeros((BLOCK_M, BLOCK_DVC), dtype=do_ptr.dtype.element_ty)
    if Q_RESIDENT:
        q_tile = tl.load(q_rows + offs_d[None, :], mask=mask_m[:, None] & (offs_d < D)[None, :],
                         other=0.0)
    if DO_RESIDENT:
        do_tile = tl.load(do_rows + offs_c[None, :], mask=mask_m[:, None] & (offs_c < Dv)[None, :],
                          other=0.0)
    lse = tl.load(lse_ptr + b * Lq + rows, mask=mask_m, other=float("-inf"))
    delta = tl.load(delta_ptr + b * Lq + rows, mask=mask_m, other=0.0)

    dq = tl.zeros((BLOCK_M, BLOCK_DK), dtype=tl.float32)
    hi = Lk
    if CAUSAL:
        hi = tl.minimum(Lk, pid_m * BLOCK_M + BLOCK_M + (Lk - Lq))
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
        if UPCAST:
            dq = _dot(ds, k_s, dq, UPCAST)
        else:
            dq = _dot(ds.to(k_s.dtype), k_s, dq, UPCAST)
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


def _p2(n: int, lo: int = 16) -> int:
    """Next power of two of n, at least lo (tl.dot needs every block dim >= 16)."""
    return max(lo, triton.next_power_of_2(max(int(n), 1)))


def _fwd_config(dtype: torch.dtype, Lq: int, Lk: int, D: int, Dv: int) -> dict:
    dp, dvp = _p2(D), _p2(Dv)
    if _interpreting():  # the interpreter's cost is per program and op: few small programs
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
    dp, dvp = _p2(D), _p2(Dv)
    if _interpreting():
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


def _dropout_args(dropout_p: float, seed: int):
    p = float(dropout_p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"attention: dropout_p must be in [0, 1), got {dropout_p}")
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF  # the key is the 64-bit two's complement pattern
    if seed >= 1 << 63:
        seed -= 1 << 64  # pass as int64: the kernel takes lo/hi 32 bits of the same pattern
    threshold = int(p * 16777216.0)  # floor(p 2^24), in double
    drop_scale = 1.0 / (1.0 - p)  # double, rounded once to fp32 when passed to the kernel
    return p > 0.0, seed, threshold, drop_scale


def _check_qkv(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"attention: {name} must be a 3-D tensor, got "
                             f"{getattr(t, 'shape', type(t).__name__)}")
    if q.dtype not in _DTYPES:
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


def _last_dim_contiguous(t):
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


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
                      _config: dict | None = None):
    """Returns (out (B, Lq, Dv) in q's dtype, lse (B, Lq) fp32). Wide heads take the GEMM
    strategy (``attention_gemm``; ATTNFAST_ATTN_STRATEGY). ``_config`` overrides the flash
    kernels' block sizes (tests of the chunked / sliced paths) and implies the flash kernels."""
    B, Lq, Lk, D, Dv = _check_qkv(q, k, v)
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    has_dropout, seed, threshold, drop_scale = _dropout_args(dropout_p, seed)
    out = torch.empty((B, Lq, Dv), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, Lq), dtype=torch.float32, device=q.device)
    if B == 0 or Lq == 0 or Dv == 0:
        lse.fill_(float("-inf") if Lk == 0 else 0.0)
        if Dv == 0 and B * Lq > 0:  # lse still needed: compute it with a 1-wide dummy v
            _, lse = attention_forward(q, k, v.new_zeros((B, Lk, 1)), bias, causal, scale,
                                       dropout_p, seed, _config)
        return out, lse
    bias_t, (sbb, sbi, sbj) = _bias_args(bias, q, B, Lq, Lk)
    if _config is None and attention_gemm.use_gemm_strategy(D, Dv):
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
            UPCAST=_interpreting() and q.dtype == torch.bfloat16, **cfg)
    return out, lse


def attention_backward(grad_out, q, k, v, out, lse, bias, causal: bool, scale: float,
                       dropout_p: float, seed: int, deterministic: bool,
                       _config: dict | None = None):
    """Returns (grad_q, grad_k, grad_v) in q's dtype. No gradient for bias."""
    B, Lq, Lk, D, Dv = _check_qkv(q, k, v)
    dev, dt = q.device, q.dtype
    for name, t, shape in (("grad_out", grad_out, (B, Lq, Dv)), ("out", out, (B, Lq, Dv))):
        if tuple(t.shape) != shape or t.dtype != dt or t.device != dev:
            raise ValueError(f"attention: {name} must be a {shape} {dt} tensor on {dev}, got "
                             f"{tuple(t.shape)} {t.dtype} on {t.device}")
    if tuple(lse.shape) != (B, Lq) or lse.dtype != torch.float32 or lse.device != dev:
        raise ValueError(f"attention: lse must be a ({B}, {Lq}) float32 tensor on {dev}, got "
                         f"{tuple(lse.shape)} {lse.dtype} on {lse.device}")
    q, k, v, grad_out, out = (_last_dim_contiguous(t) for t in (q, k, v, grad_out, out))
    lse = lse.contiguous()
    has_dropout, seed, threshold, drop_scale = _dropout_args(dropout_p, seed)
    dq = torch.zeros((B, Lq, D), dtype=dt, device=dev)
    dk = torch.zeros((B, Lk, D), dtype=dt, device=dev)
    dv = torch.zeros((B, Lk, Dv), dtype=dt, device=dev)
    if B == 0 or Lq == 0 or Lk == 0 or (D == 0 and Dv == 0):
        return dq, dk, dv
    bias_t, (sbb, sbi, sbj) = _bias_args(bias, q, B, Lq, Lk)
    if _config is None and attention_gemm.use_gemm_strategy(D, Dv):  # always deterministic
        attention_gemm.backward(grad_out, q, k, v, out, lse, bias_t, (sbb, sbi, sbj),
                                bias is not None, dq, dk, dv, causal, scale,
                                (has_dropout, seed, threshold, drop_scale))
        return dq, dk, dv
    cfg = dict(_config) if _config else _bwd_config(dt, D, Dv)
    warps = dict(num_warps=cfg.pop("num_warps"), num_stages=cfg.pop("num_stages"))
    upcast = _interpreting() and dt == torch.bfloat16
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
    dq_cfg.update(Q_RESIDENT=_p2(De) <= cfg["BLOCK_D"], DO_RESIDENT=_p2(Dve) <= cfg["BLOCK_DVC"])
    for b0, b1 in batch_slices(B):
        sl = slice(b0, b1)
        _bwd_dkdv_kernel[(triton.cdiv(Lk, cfg["BLOCK_N"]), n_slices, b1 - b0)](
            q[sl], k[sl], v[sl], bias_t[sl], grad_out[sl], lse[sl], delta[sl], dk[sl], dv[sl],
            dq_acc[sl], *strides, *scalars, b0, ATOMIC_DQ=atomic, **flags, **cfg, **warps)
        if D > 0 and not atomic:
            _bwd_dq_kernel[(triton.cdiv(Lq, cfg["BLOCK_M"]), triton.cdiv(D, cfg["BLOCK_DK"]), b1 - b0)](
                q[sl], k[sl], v[sl], bias_t[sl], grad_out[sl], lse[sl], delta[sl], dq[sl],
                *strides, *scalars, b0, **flags, **dq_cfg, **warps)
    if atomic:
        # A plain cast; the scale was applied before the atomic adds.
        n = dq.numel()
        _scale_cast_kernel[(triton.cdiv(n, 1024),)](dq_acc, dq, n, BLOCK=1024)
    return dq, dk, dv


# CUDA caps grid dimensions 1 and 2 at 65535 and the kernels put the batch in one of them, so
# the launchers run larger batches in slices: tensors sliced along the batch, and the slice's
# first batch b0 passed for the dropout counters (indexed by absolute batch).
MAX_GRID_BATCH = 65535


def batch_slices(B: int):
    """[b0, b1) batch ranges of at most MAX_GRID_BATCH (one empty range when B = 0)."""
    step = MAX_GRID_BATCH
    return [(b0, min(B, b0 + step)) for b0 in range(0, max(B, 1), step)]


def backward_delta(grad_out, out):
    """Delta = rowsum(dO O) in fp32 (B, Lq), the first step of both backward strategies."""
    B, Lq, Dv = out.shape
    delta = torch.empty((B, Lq), dtype=torch.float32, device=out.device)
    for b0, b1 in batch_slices(B):
        _bwd_delta_kernel[(triton.cdiv(Lq, 64), b1 - b0)](
            grad_out[b0:b1], out[b0:b1], delta[b0:b1], grad_out.stride(0), grad_out.stride(1),
            out.stride(0), out.stride(1), Lq, Dv, BLOCK_M=64, BLOCK_DV=min(_p2(max(Dv, 1)), 128))
    return delta


# The GEMM strategy builds on this module's jit helpers, so it is imported last.
from . import attention_gemm  # noqa: E402
