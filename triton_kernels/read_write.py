"""Triton kernels of the memory's read and write: the erase/add write of the NTM / DNC write
heads and the weighted read of the read heads, forward and backward, float32.

Semantics: the ``attnfast::memory_write_*`` and ``memory_read_*`` schemas (csrc/schemas.h);
formulas in the order of csrc/common/memory_math.h and the CPU loops. All accumulation in fp32;
no atomics (every sum has a fixed order: in-program tile reductions, loops in index order).

Kernels
-------
* write: ``_write_fwd`` per (b, row block); backward ``_write_bwd_rows`` per (b, row block)
  (grad_memory, grad_write_weights) and ``_write_bwd_cols`` per (b, h) (grad_erase, grad_add: sums
  over N in a fixed block order).
* read: ``_read_fwd`` per (b, r, column block) (a sum over slot blocks); ``_read_bwd`` per
  (b, slot block): d memory (heads in order) and d read weights (row dots over W).
* DNC read: ``_read_mix`` per (b, r) row (the read-mode mix), then the read above; backward: the
  mix recomputed, the read backward, then ``_read_mix_bwd`` per (b, r) row (d read_mode as
  in-program sums).

Interpreter (TRITON_INTERPRET=1, CPU tensors): fp32 only, every load is fp32 already.
Offsets that multiply sizes are int64.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import block_size, check_float32, row_block_shape, row_block_tile, weighted_row_sum

__all__ = ["write_forward", "write_backward", "memory_read_forward", "memory_read_backward",
           "read_mix_forward", "read_mix_backward"]


# ---- erase / add write --------------------------------------------------------------------------

@triton.jit
def _keep_without(ww_ptr, er_ptr, b, rows, rmask, cw, cmask, skip, N, W, Hw,
                  BN: tl.constexpr, BW: tl.constexpr):
    """prod_{h != skip} (1 - w_h,i e_h,c) over a (BN, BW) tile (skip = -1: all heads)."""
    keep = tl.full((BN, BW), 1.0, tl.float32)
    for h in range(0, Hw):
        if h != skip:
            w = tl.load(ww_ptr + (b * Hw + h) * N + rows, mask=rmask, other=0.0)
            e = tl.load(er_ptr + (b * Hw + h) * W + cw, mask=cmask, other=0.0)
            keep = keep * (1.0 - w[:, None] * e[None, :])
    return keep


@triton.jit
def _write_fwd(mem_ptr, ww_ptr, er_ptr, add_ptr, out_ptr, N, W, Hw,
               BN: tl.constexpr, BW: tl.constexpr):
    b, rows, rmask, cw, cmask, mk, offs = row_block_tile(N, W, BN, BW)
    keep = _keep_without(ww_ptr, er_ptr, b, rows, rmask, cw, cmask, -1, N, W, Hw, BN, BW)
    o = tl.load(mem_ptr + offs, mask=mk, other=0.0) * keep
    for h in range(0, Hw):
        w = tl.load(ww_ptr + (b * Hw + h) * N + rows, mask=rmask, other=0.0)
        v = tl.load(add_ptr + (b * Hw + h) * W + cw, mask=cmask, other=0.0)
        o += w[:, None] * v[None, :]
    tl.store(out_ptr + offs, o, mask=mk)


@triton.jit
def _write_bwd_rows(g_ptr, mem_ptr, ww_ptr, er_ptr, add_ptr, gm_ptr, gw_ptr, N, W, Hw,
                    BN: tl.constexpr, BW: tl.constexpr):
    b, rows, rmask, cw, cmask, mk, offs = row_block_tile(N, W, BN, BW)
    g = tl.load(g_ptr + offs, mask=mk, other=0.0)
    m = tl.load(mem_ptr + offs, mask=mk, other=0.0)
    keep = _keep_without(ww_ptr, er_ptr, b, rows, rmask, cw, cmask, -1, N, W, Hw, BN, BW)
    tl.store(gm_ptr + offs, g * keep, mask=mk)
    for h in range(0, Hw):
        other = _keep_without(ww_ptr, er_ptr, b, rows, rmask, cw, cmask, h, N, W, Hw, BN, BW)
        e = tl.load(er_ptr + (b * Hw + h) * W + cw, mask=cmask, other=0.0)
        v = tl.load(add_ptr + (b * Hw + h) * W + cw, mask=cmask, other=0.0)
        t = g * m * other  # dL / d(1 - w e_c)
        dw = tl.sum(g * v[None, :] - t * e[None, :], 1)
        tl.store(gw_ptr + (b * Hw + h) * N + rows, dw, mask=rmask)


@triton.jit
def _write_bwd_cols(g_ptr, mem_ptr, ww_ptr, er_ptr, ge_ptr, gv_ptr, N, W, Hw,
                    BN: tl.constexpr, BW: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)
    b = bh // Hw
    h = bh % Hw
    cw = tl.arange(0, BW)
    cmask = cw < W
    ge = tl.zeros((BW,), dtype=tl.float32)
    gv = tl.zeros((BW,), dtype=tl.float32)
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        mk = rmask[:, None] & cmask[None, :]
        offs = (b * N + rows.to(tl.int64))[:, None] * W + cw[None, :]
        g = tl.load(g_ptr + offs, mask=mk, other=0.0)
        m = tl.load(mem_ptr + offs, mask=mk, other=0.0)
        w = tl.load(ww_ptr + bh * N + rows, mask=rmask, other=0.0)
        other = _keep_without(ww_ptr, er_ptr, b, rows, rmask, cw, cmask, h, N, W, Hw, BN, BW)
        ge -= tl.sum(g * m * other * w[:, None], 0)
        gv += tl.sum(g * w[:, None], 0)
    tl.store(ge_ptr + bh * W + cw, ge, mask=cmask)
    tl.store(gv_ptr + bh * W + cw, gv, mask=cmask)


def write_forward(memory, ww, erase, add):
    check_float32(memory, ww, erase, add)
    B, N, W = memory.shape
    Hw = ww.shape[1]
    out = torch.empty_like(memory)
    if B * N * W > 0:
        BN, BW = row_block_shape(W)
        _write_fwd[(triton.cdiv(N, BN), B)](memory, ww, erase, add, out, N, W, Hw, BN=BN, BW=BW)
    return out


def write_backward(grad, memory, ww, erase, add):
    check_float32(grad, memory, ww, erase, add)
    B, N, W = memory.shape
    Hw = ww.shape[1]
    gm, gw, ge, gv = (torch.zeros_like(t) for t in (memory, ww, erase, add))
    if B * N > 0:
        BN, BW = row_block_shape(W)
        _write_bwd_rows[(triton.cdiv(N, BN), B)](grad, memory, ww, erase, add, gm, gw, N, W, Hw,
                                                 BN=BN, BW=BW)
        if Hw > 0 and W > 0:
            _write_bwd_cols[(B * Hw,)](grad, memory, ww, erase, ge, gv, N, W, Hw, BN=BN, BW=BW)
    return gm, gw, ge, gv


# ---- read ---------------------------------------------------------------------------------------

@triton.jit
def _read_fwd(m_ptr, rw_ptr, out_ptr, N, W, R, BN: tl.constexpr, BW: tl.constexpr):
    """words[b, r, cols] = sum_i rw[b, r, i] M[b, i, cols], slot blocks in order."""
    br = tl.program_id(1).to(tl.int64)
    b = br // R
    cw = tl.program_id(0) * BW + tl.arange(0, BW)
    cm = cw < W
    acc = weighted_row_sum(rw_ptr + br * N, m_ptr + b * N * W, N, cw, cm, W, BN, BW)
    tl.store(out_ptr + br * W + cw, acc, mask=cm)


@triton.jit
def _read_bwd(g_ptr, m_ptr, rw_ptr, dm_ptr, drw_ptr, N, W, R, BN: tl.constexpr, BW: tl.constexpr):
    """d M[b, rows] = sum_r rw[b, r, rows] g[b, r]; d rw[b, r, rows] = M[b, rows] . g[b, r]."""
    b, rows, rmask, cw, cm, mk, offs = row_block_tile(N, W, BN, BW)
    m = tl.load(m_ptr + offs, mask=mk, other=0.0)
    acc = tl.zeros((BN, BW), dtype=tl.float32)
    for r in range(0, R):
        g = tl.load(g_ptr + (b * R + r) * W + cw, mask=cm, other=0.0)
        w = tl.load(rw_ptr + (b * R + r) * N + rows, mask=rmask, other=0.0)
        acc += w[:, None] * g[None, :]
        tl.store(drw_ptr + (b * R + r) * N + rows, tl.sum(m * g[None, :], 1), mask=rmask)
    tl.store(dm_ptr + offs, acc, mask=mk)


def memory_read_forward(memory, rw):
    check_float32(memory, rw)
    B, N, W = memory.shape
    R = rw.shape[1]
    out = torch.zeros((B, R, W), dtype=memory.dtype, device=memory.device)
    if B * R * W > 0 and N > 0:
        BW = block_size(W, hi=64)
        _read_fwd[(triton.cdiv(W, BW), B * R)](memory, rw, out, N, W, R, BN=32, BW=BW)
    return out


def memory_read_backward(grad, memory, rw):
    check_float32(grad, memory, rw)
    B, N, W = memory.shape
    R = rw.shape[1]
    dm, dr = torch.zeros_like(memory), torch.zeros_like(rw)
    if B * N > 0:
        BN, BW = row_block_shape(W)
        _read_bwd[(triton.cdiv(N, BN), B)](grad, memory, rw, dm, dr, N, W, R, BN=BN, BW=BW)
    return dm, dr


# ---- DNC read: read-mode mix + read -------------------------------------------------------------

MIX_BLOCK = 256  # slots per step of the mix programs


@triton.jit
def _read_mix(c_ptr, f_ptr, b_ptr, mode_ptr, rw_ptr, N, Hw, BLK: tl.constexpr):
    """rw[br] = (pi_c c + sum_h pi_f,h f_h) + sum_h pi_b,h b_h (the CPU loop's order)."""
    br = tl.program_id(0).to(tl.int64)
    mrow = mode_ptr + br * (1 + 2 * Hw)
    pc = tl.load(mrow + 2 * Hw)
    for i0 in range(0, N, BLK):
        ri = i0 + tl.arange(0, BLK)
        mi = ri < N
        f = tl.zeros((BLK,), dtype=tl.float32)
        k = tl.zeros((BLK,), dtype=tl.float32)
        for h in range(0, Hw):
            row = (br * Hw + h) * N + ri
            f += tl.load(mrow + Hw + h) * tl.load(f_ptr + row, mask=mi, other=0.0)
            k += tl.load(mrow + h) * tl.load(b_ptr + row, mask=mi, other=0.0)
        c = tl.load(c_ptr + br * N + ri, mask=mi, other=0.0)
        tl.store(rw_ptr + br * N + ri, (pc * c + f) + k, mask=mi)


@triton.jit
def _read_mix_bwd(grw_ptr, drw_ptr, c_ptr, f_ptr, b_ptr, mode_ptr, dc_ptr, df_ptr, db_ptr,
                  dmode_ptr, N, Hw, BLK: tl.constexpr):
    """d rw = grad_rw + the read's d rw; d c, d f_h, d b_h = pi d rw; d pi = sums over the row."""
    br = tl.program_id(0).to(tl.int64)
    M = 1 + 2 * Hw
    mrow = mode_ptr + br * M
    pc = tl.load(mrow + 2 * Hw)
    acc = tl.zeros((BLK,), dtype=tl.float32)
    for i0 in range(0, N, BLK):
        ri = i0 + tl.arange(0, BLK)
        mi = ri < N
        d = (tl.load(drw_ptr + br * N + ri, mask=mi, other=0.0)
             + tl.load(grw_ptr + br * N + ri, mask=mi, other=0.0))
        tl.store(dc_ptr + br * N + ri, pc * d, mask=mi)
        acc += d * tl.load(c_ptr + br * N + ri, mask=mi, other=0.0)
    tl.store(dmode_ptr + br * M + 2 * Hw, tl.sum(acc, 0))
    for h in range(0, Hw):
        pf = tl.load(mrow + Hw + h)
        pb = tl.load(mrow + h)
        acc_f = tl.zeros((BLK,), dtype=tl.float32)
        acc_b = tl.zeros((BLK,), dtype=tl.float32)
        for i0 in range(0, N, BLK):
            ri = i0 + tl.arange(0, BLK)
            mi = ri < N
            row = (br * Hw + h) * N + ri
            d = (tl.load(drw_ptr + br * N + ri, mask=mi, other=0.0)
                 + tl.load(grw_ptr + br * N + ri, mask=mi, other=0.0))
            tl.store(df_ptr + row, pf * d, mask=mi)
            tl.store(db_ptr + row, pb * d, mask=mi)
            acc_f += d * tl.load(f_ptr + row, mask=mi, other=0.0)
            acc_b += d * tl.load(b_ptr + row, mask=mi, other=0.0)
        tl.store(dmode_ptr + br * M + Hw + h, tl.sum(acc_f, 0))
        tl.store(dmode_ptr + br * M + h, tl.sum(acc_b, 0))


def _mix(content, fwd, bwd, mode):
    B, R, N = content.shape
    rw = torch.empty_like(content)
    if B * R * N > 0:
        _read_mix[(B * R,)](content, fwd, bwd, mode, rw, N, fwd.shape[2], BLK=MIX_BLOCK)
    return rw


def read_mix_forward(memory, content, fwd, bwd, mode):
    check_float32(memory, content, fwd, bwd, mode)
    rw = _mix(content, fwd, bwd, mode)
    return rw, memory_read_forward(memory, rw)


def read_mix_backward(grad_rw, grad_words, memory, content, fwd, bwd, mode):
    check_float32(grad_rw, grad_words, memory, content, fwd, bwd, mode)
    B, R, N = content.shape
    dm, drw = memory_read_backward(grad_words, memory, _mix(content, fwd, bwd, mode))
    dc, df, db, dmode = (torch.empty_like(t) for t in (content, fwd, bwd, mode))
    if B * R > 0:
        _read_mix_bwd[(B * R,)](grad_rw, drw, content, fwd, bwd, mode, dc, df, db, dmode, N,
                                fwd.shape[2], BLK=MIX_BLOCK)
    return dm, dc, df, db, dmode
