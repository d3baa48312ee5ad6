"""Triton kernels of the DNC's temporal link matrix: the link / precedence update fused with the
directional (forward and backward) reads, forward and backward, float32.

Semantics: the ``attnfast::dnc_link_read_*`` schemas (csrc/schemas.h); formulas in the order of
csrc/common/memory_math.h. All accumulation in fp32; no atomics (every sum has a fixed order).

Kernels
-------
As the CUDA kernels, new_link is recomputed where needed: ``_link_fwd_cols`` per (b, h, column
block) walks all rows (new_link, new_precedence, backward reads), ``_link_fwd_rows`` per (b, h,
row block) (forward reads). Backward: ``_link_bwd_rows`` (d link, the row sums),
``_link_bwd_cols`` (the column sums, precedence terms); the read-weight gradient is summed over
write heads with torch in the launcher.

Interpreter (TRITON_INTERPRET=1, CPU tensors): fp32 only, every load is fp32 already.
Offsets that multiply sizes are int64.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_float32

__all__ = ["link_read_forward", "link_read_backward"]

BLOCK = 32  # tile edge of the (row x column) link tiles


@triton.jit
def _link_program(L_ptr, w_ptr, p_ptr, Hw, N):
    """Program (., b * Hw + h): (bh, b, h, and the (N, N) link, (N,) write weights and (N,)
    precedence of that (batch, write head))."""
    bh = tl.program_id(1).to(tl.int64)
    return bh, bh // Hw, bh % Hw, L_ptr + bh * N * N, w_ptr + bh * N, p_ptr + bh * N


@triton.jit
def _new_link_tile(L_ptr, w_ptr, p_ptr, ri, rj, mi, mj, N):
    """new_link over an (rows ri) x (cols rj) tile; 0 on the diagonal and outside."""
    mk = mi[:, None] & mj[None, :]
    L = tl.load(L_ptr + ri.to(tl.int64)[:, None] * N + rj[None, :], mask=mk, other=0.0)
    wi = tl.load(w_ptr + ri, mask=mi, other=0.0)
    wj = tl.load(w_ptr + rj, mask=mj, other=0.0)
    pj = tl.load(p_ptr + rj, mask=mj, other=0.0)
    nl = (1.0 - wi[:, None] - wj[None, :]) * L + wi[:, None] * pj[None, :]
    return tl.where(mk & (ri[:, None] != rj[None, :]), nl, 0.0), L


@triton.jit
def _new_link_col_sums(Lb, wb, pb, x_ptr, rj, mj, N, BI: tl.constexpr, BJ: tl.constexpr):
    """sum_i x_i new_link[i, rj] (rows in blocks of BI, in order)."""
    acc = tl.zeros((BJ,), dtype=tl.float32)
    for i0 in range(0, N, BI):
        ri = i0 + tl.arange(0, BI)
        mi = ri < N
        nl, _ = _new_link_tile(Lb, wb, pb, ri, rj, mi, mj, N)
        xi = tl.load(x_ptr + ri, mask=mi, other=0.0)
        acc += tl.sum(xi[:, None] * nl, 0)
    return acc


@triton.jit
def _new_link_row_sums(Lb, wb, pb, y_ptr, ri, mi, N, BI: tl.constexpr, BJ: tl.constexpr):
    """sum_j new_link[ri, j] y_j (columns in blocks of BJ, in order)."""
    acc = tl.zeros((BI,), dtype=tl.float32)
    for j0 in range(0, N, BJ):
        rj = j0 + tl.arange(0, BJ)
        mj = rj < N
        nl, _ = _new_link_tile(Lb, wb, pb, ri, rj, mi, mj, N)
        yj = tl.load(y_ptr + rj, mask=mj, other=0.0)
        acc += tl.sum(nl * yj[None, :], 1)
    return acc


@triton.jit
def _link_fwd_cols(L_ptr, p_ptr, w_ptr, rw_ptr, nl_ptr, np_ptr, bk_ptr, Hw, N, R,
                   BI: tl.constexpr, BJ: tl.constexpr):
    bh, b, h, Lb, wb, pb = _link_program(L_ptr, w_ptr, p_ptr, Hw, N)
    rj = tl.program_id(0) * BJ + tl.arange(0, BJ)
    mj = rj < N
    wsum = 0.0
    for i0 in range(0, N, BI):
        ri = i0 + tl.arange(0, BI)
        wsum += tl.sum(tl.load(wb + ri, mask=ri < N, other=0.0), 0)
    pj = tl.load(pb + rj, mask=mj, other=0.0)
    wj = tl.load(wb + rj, mask=mj, other=0.0)
    tl.store(np_ptr + bh * N + rj, (1.0 - wsum) * pj + wj, mask=mj)
    for i0 in range(0, N, BI):
        ri = i0 + tl.arange(0, BI)
        mi = ri < N
        nl, _ = _new_link_tile(Lb, wb, pb, ri, rj, mi, mj, N)
        tl.store(nl_ptr + bh * N * N + ri.to(tl.int64)[:, None] * N + rj[None, :], nl,
                 mask=mi[:, None] & mj[None, :])
    for r in range(0, R):
        acc = _new_link_col_sums(Lb, wb, pb, rw_ptr + (b * R + r) * N, rj, mj, N, BI, BJ)
        tl.store(bk_ptr + ((b * R + r) * Hw + h) * N + rj, acc, mask=mj)


@triton.jit
def _link_fwd_rows(L_ptr, p_ptr, w_ptr, rw_ptr, fw_ptr, Hw, N, R,
                   BI: tl.constexpr, BJ: tl.constexpr):
    bh, b, h, Lb, wb, pb = _link_program(L_ptr, w_ptr, p_ptr, Hw, N)
    ri = tl.program_id(0) * BI + tl.arange(0, BI)
    mi = ri < N
    for r in range(0, R):
        acc = _new_link_row_sums(Lb, wb, pb, rw_ptr + (b * R + r) * N, ri, mi, N, BI, BJ)
        tl.store(fw_ptr + ((b * R + r) * Hw + h) * N + ri, acc, mask=mi)


@triton.jit
def _link_grad_tile(gL_ptr, gf_ptr, gb_ptr, rw_ptr, b, h, ri, rj, mi, mj, Hw, N, R,
                    BI: tl.constexpr, BJ: tl.constexpr):
    """Total gradient on new_link over the tile (0 on the diagonal and outside)."""
    mk = mi[:, None] & mj[None, :]
    G = tl.load(gL_ptr + ri.to(tl.int64)[:, None] * N + rj[None, :], mask=mk, other=0.0)
    for r in range(0, R):
        o = ((b * R + r) * Hw + h) * N
        gfi = tl.load(gf_ptr + o + ri, mask=mi, other=0.0)
        gbj = tl.load(gb_ptr + o + rj, mask=mj, other=0.0)
        rwi = tl.load(rw_ptr + (b * R + r) * N + ri, mask=mi, other=0.0)
        rwj = tl.load(rw_ptr + (b * R + r) * N + rj, mask=mj, other=0.0)
        G += gfi[:, None] * rwj[None, :] + rwi[:, None] * gbj[None, :]
    return tl.where(mk & (ri[:, None] != rj[None, :]), G, 0.0)


@triton.jit
def _link_bwd_rows(gL_ptr, gf_ptr, gb_ptr, L_ptr, p_ptr, w_ptr, rw_ptr, dL_ptr, ws_ptr,
                   Hw, N, R, BI: tl.constexpr, BJ: tl.constexpr):
    bh, b, h, Lb, wb, pb = _link_program(L_ptr, w_ptr, p_ptr, Hw, N)
    ri = tl.program_id(0) * BI + tl.arange(0, BI)
    mi = ri < N
    wsb = ws_ptr + bh * (1 + R) * N
    wi = tl.load(wb + ri, mask=mi, other=0.0)
    dwi = tl.zeros((BI,), dtype=tl.float32)
    for j0 in range(0, N, BJ):
        rj = j0 + tl.arange(0, BJ)
        mj = rj < N
        G = _link_grad_tile(gL_ptr + bh * N * N, gf_ptr, gb_ptr, rw_ptr, b, h, ri, rj, mi, mj,
                            Hw, N, R, BI, BJ)
        L = tl.load(Lb + ri.to(tl.int64)[:, None] * N + rj[None, :],
                    mask=mi[:, None] & mj[None, :], other=0.0)
        wj = tl.load(wb + rj, mask=mj, other=0.0)
        pj = tl.load(pb + rj, mask=mj, other=0.0)
        tl.store(dL_ptr + bh * N * N + ri.to(tl.int64)[:, None] * N + rj[None, :],
                 G * (1.0 - wi[:, None] - wj[None, :]), mask=mi[:, None] & mj[None, :])
        dwi += tl.sum(G * (pj[None, :] - L), 1)
    tl.store(wsb + ri, dwi, mask=mi)
    for r in range(0, R):
        acc = _new_link_row_sums(Lb, wb, pb, gb_ptr + ((b * R + r) * Hw + h) * N, ri, mi, N,
                                 BI, BJ)
        tl.store(wsb + (1 + r) * N + ri, acc, mask=mi)


@triton.jit
def _link_bwd_cols(gL_ptr, gp_ptr, gf_ptr, gb_ptr, L_ptr, p_ptr, w_ptr, rw_ptr, dp_ptr, dw_ptr,
                   ws_ptr, Hw, N, R, BI: tl.constexpr, BJ: tl.constexpr):
    bh, b, h, Lb, wb, pb = _link_program(L_ptr, w_ptr, p_ptr, Hw, N)
    rj = tl.program_id(0) * BJ + tl.arange(0, BJ)
    mj = rj < N
    wsb = ws_ptr + bh * (1 + R) * N
    wsum = 0.0
    gpp = 0.0
    for i0 in range(0, N, BI):
        ri = i0 + tl.arange(0, BI)
        mi = ri < N
        wsum += tl.sum(tl.load(wb + ri, mask=mi, other=0.0), 0)
        gpp += tl.sum(tl.load(gp_ptr + bh * N + ri, mask=mi, other=0.0)
                      * tl.load(pb + ri, mask=mi, other=0.0), 0)
    gpj = tl.load(gp_ptr + bh * N + rj, mask=mj, other=0.0)
    dp = gpj * (1.0 - wsum)
    dw = gpj - gpp
    for i0 in range(0, N, BI):
        ri = i0 + tl.arange(0, BI)
        mi = ri < N
        G = _link_grad_tile(gL_ptr + bh * N * N, gf_ptr, gb_ptr, rw_ptr, b, h, ri, rj, mi, mj,
                            Hw, N, R, BI, BJ)
        L = tl.load(Lb + ri.to(tl.int64)[:, None] * N + rj[None, :],
                    mask=mi[:, None] & mj[None, :], other=0.0)
        wi = tl.load(wb + ri, mask=mi, other=0.0)
        dw -= tl.sum(G * L, 0)
        dp += tl.sum(G * wi[:, None], 0)
    for r in range(0, R):
        acc = _new_link_col_sums(Lb, wb, pb, gf_ptr + ((b * R + r) * Hw + h) * N, rj, mj, N,
                                 BI, BJ)
        row_part = tl.load(wsb + (1 + r) * N + rj, mask=mj, other=0.0)
        tl.store(wsb + (1 + r) * N + rj, row_part + acc, mask=mj)
    tl.store(dp_ptr + bh * N + rj, dp, mask=mj)
    tl.store(dw_ptr + bh * N + rj, dw + tl.load(wsb + rj, mask=mj, other=0.0), mask=mj)


def link_read_forward(link, prec, ww, rw):
    check_float32(link, prec, ww, rw)
    B, Hw, N, _ = link.shape
    R = rw.shape[1]
    nl, np_ = torch.empty_like(link), torch.empty_like(prec)
    fwd = torch.empty((B, R, Hw, N), dtype=link.dtype, device=link.device)
    bwd = torch.empty((B, R, Hw, N), dtype=link.dtype, device=link.device)
    if B * Hw > 0 and N > 0:
        grid = (triton.cdiv(N, BLOCK), B * Hw)
        _link_fwd_cols[grid](link, prec, ww, rw, nl, np_, bwd, Hw, N, R, BI=BLOCK, BJ=BLOCK)
        if R > 0:
            _link_fwd_rows[grid](link, prec, ww, rw, fwd, Hw, N, R, BI=BLOCK, BJ=BLOCK)
    return nl, np_, fwd, bwd


def link_read_backward(g_link, g_prec, g_fwd, g_bwd, link, prec, ww, rw):
    check_float32(g_link, g_prec, g_fwd, g_bwd, link, prec, ww, rw)
    B, Hw, N, _ = link.shape
    R = rw.shape[1]
    dl, dp, dw = torch.empty_like(link), torch.empty_like(prec), torch.empty_like(ww)
    if B * Hw == 0 or N == 0:
        return dl, dp, dw, torch.zeros_like(rw)
    ws = torch.empty((B, Hw, 1 + R, N), dtype=link.dtype, device=link.device)
    grid = (triton.cdiv(N, BLOCK), B * Hw)
    _link_bwd_rows[grid](g_link, g_fwd, g_bwd, link, prec, ww, rw, dl, ws, Hw, N, R,
                         BI=BLOCK, BJ=BLOCK)
    _link_bwd_cols[grid](g_link, g_prec, g_fwd, g_bwd, link, prec, ww, rw, dp, dw, ws, Hw, N, R,
                         BI=BLOCK, BJ=BLOCK)
    # the read weights' gradient: sum over write heads (a fixed-order torch reduction).
    d_rw = ws[:, :, 1:, :].sum(dim=1)
    return dl, dp, dw, d_rw
