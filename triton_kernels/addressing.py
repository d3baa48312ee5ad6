"""Triton kernels of memory addressing: content (cosine) addressing and NTM location addressing
(interpolation, circular shift, sharpening), forward and backward, float32.

Semantics: the ``attnfast::memory_content_*`` and ``ntm_location_*`` schemas (csrc/schemas.h);
formulas in the order of csrc/common/memory_math.h and the CPU loops. All accumulation in fp32;
no atomics (every sum has a fixed order: in-program tile reductions, loops in index order).

Kernels
-------
* content: ``_content_fwd`` one program per (b, h): a loop over N blocks computes the cosine
  scores (stored to the output), with an online max / sum of exponentials, then a second loop
  normalises. Backward: ``_content_bwd_keys`` per (b, h) (grad_strengths, grad_keys, and per-(h, i)
  d dot and dD |k| into a workspace), ``_content_bwd_mem`` per (b, row block).
* ntm_location: one program per (b, h), slot blocks in a loop. The circular shift is a gather:
  ws[i] = sum_k s_k wg[(i + S//2 - k) mod N], wg = g c + (1 - g) w_prev reloaded at each tap.
  Sharpening p = ws^gamma as exp(gamma log ws) where ws > 0, else exactly 0 (no log 0 in the
  gamma gradient); relative error ~ |gamma log ws| 2^-24, well inside fp32 parity.
  Backward: a (2, N) workspace row per (b, h) (ws, then p -> d ws in place); sums for the
  normaliser, g.w, d gamma, one per tap for d shift, d gate; the adjoint shift for d content /
  d prev is the gather with the opposite taps.

Interpreter (TRITON_INTERPRET=1, CPU tensors): fp32 only, every load is fp32 already.
Offsets that multiply sizes are int64.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import block_size, check_float32, row_block_shape, row_block_tile

__all__ = ["content_forward", "content_backward", "ntm_location_forward", "ntm_location_backward"]

NTM_BLOCK = 64  # slots per block of the NTM location programs


# ---- content addressing ---------------------------------------------------------------------

@triton.jit
def _key_and_norm(key_ptr, beta_ptr, bh, W, eps, BW: tl.constexpr):
    """Head bh's column indices, key (BW,), key norm sqrt(|k|^2 + eps) and strength."""
    cw = tl.arange(0, BW)
    key = tl.load(key_ptr + bh * W + cw, mask=cw < W, other=0.0)
    knorm = tl.sqrt(tl.sum(key * key, 0) + eps)
    return cw, key, knorm, tl.load(beta_ptr + bh)


@triton.jit
def _slot_dots(mem_ptr, key, b, rows, rmask, cw, N, W, eps):
    """Memory rows ``rows`` of batch b (BN, BW), their dots with key, their norms
    sqrt(|m|^2 + eps)."""
    m = tl.load(mem_ptr + (b * N + rows.to(tl.int64))[:, None] * W + cw[None, :],
                mask=rmask[:, None] & (cw[None, :] < W), other=0.0)
    return m, tl.sum(m * key[None, :], 1), tl.sqrt(tl.sum(m * m, 1) + eps)


@triton.jit
def _content_fwd(mem_ptr, key_ptr, beta_ptr, out_ptr, N, W, H, eps,
                 BN: tl.constexpr, BW: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    cw, key, knorm, beta = _key_and_norm(key_ptr, beta_ptr, bh, W, eps, BW)
    m_run = -float("inf")
    s_run = 0.0
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        _, dot, mnorm = _slot_dots(mem_ptr, key, b, rows, rmask, cw, N, W, eps)
        z = beta * (dot / (knorm * mnorm + eps))
        z = tl.where(rmask, z, -float("inf"))
        tl.store(out_ptr + bh * N + rows, z, mask=rmask)
        m_new = tl.maximum(m_run, tl.max(z, 0))
        s_run = s_run * tl.exp(m_run - m_new) + tl.sum(tl.where(rmask, tl.exp(z - m_new), 0.0), 0)
        m_run = m_new
    inv = 1.0 / s_run
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        z = tl.load(out_ptr + bh * N + rows, mask=rmask, other=0.0)
        tl.store(out_ptr + bh * N + rows, tl.exp(z - m_run) * inv, mask=rmask)


@triton.jit
def _content_bwd_keys(g_ptr, mem_ptr, key_ptr, beta_ptr, w_ptr, gk_ptr, gs_ptr, ws_ptr,
                      N, W, H, eps, BN: tl.constexpr, BW: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    cw, key, knorm, beta = _key_and_norm(key_ptr, beta_ptr, bh, W, eps, BW)
    gw = 0.0
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        gw += tl.sum(tl.load(g_ptr + bh * N + rows, mask=rmask, other=0.0)
                     * tl.load(w_ptr + bh * N + rows, mask=rmask, other=0.0), 0)
    gbeta = 0.0
    dd_mnorm = 0.0
    gk = tl.zeros((BW,), dtype=tl.float32)
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        m, dot, mnorm = _slot_dots(mem_ptr, key, b, rows, rmask, cw, N, W, eps)
        D = knorm * mnorm + eps
        sim = dot / D
        w = tl.load(w_ptr + bh * N + rows, mask=rmask, other=0.0)
        g = tl.load(g_ptr + bh * N + rows, mask=rmask, other=0.0)
        gs = w * (g - gw)
        gbeta += tl.sum(gs * sim, 0)
        gsim = beta * gs
        gdot = gsim / D
        gD = -gsim * sim / D
        dd_mnorm += tl.sum(gD * mnorm, 0)
        gk += tl.sum(gdot[:, None] * m, 0)
        tl.store(ws_ptr + bh * 2 * N + rows, gdot, mask=rmask)
        tl.store(ws_ptr + bh * 2 * N + N + rows, gD * knorm, mask=rmask)
    tl.store(gs_ptr + bh, gbeta)
    tl.store(gk_ptr + bh * W + cw, gk + (dd_mnorm / knorm) * key, mask=cw < W)


@triton.jit
def _content_bwd_mem(mem_ptr, key_ptr, ws_ptr, gm_ptr, N, W, H, eps,
                     BN: tl.constexpr, BW: tl.constexpr):
    b, rows, rmask, cw, cmask, mk, offs = row_block_tile(N, W, BN, BW)
    m = tl.load(mem_ptr + offs, mask=mk, other=0.0)
    mnorm = tl.sqrt(tl.sum(m * m, 1) + eps)
    cm = tl.zeros((BN,), dtype=tl.float32)
    acc = tl.zeros((BN, BW), dtype=tl.float32)
    for h in range(0, H):
        base = (b * H + h) * 2 * N
        cm += tl.load(ws_ptr + base + N + rows, mask=rmask, other=0.0)
        dd = tl.load(ws_ptr + base + rows, mask=rmask, other=0.0)
        key = tl.load(key_ptr + (b * H + h) * W + cw, mask=cmask, other=0.0)
        acc += dd[:, None] * key[None, :]
    tl.store(gm_ptr + offs, (cm / mnorm)[:, None] * m + acc, mask=mk)


def content_forward(memory, keys, strengths, eps):
    check_float32(memory, keys, strengths)
    B, N, W = memory.shape
    H = keys.shape[1]
    out = torch.empty((B, H, N), dtype=memory.dtype, device=memory.device)
    if B * H > 0:
        BN, BW = row_block_shape(W)
        _content_fwd[(B * H,)](memory, keys, strengths, out, N, W, H, eps, BN=BN, BW=BW)
    return out


def content_backward(grad, memory, keys, strengths, weights, eps):
    check_float32(grad, memory, keys, strengths, weights)
    B, N, W = memory.shape
    H = keys.shape[1]
    gm, gk, gs = torch.zeros_like(memory), torch.zeros_like(keys), torch.zeros_like(strengths)
    if B == 0 or N * W == 0:
        return gm, gk, gs
    ws = torch.empty((max(1, B * H * 2 * N),), dtype=memory.dtype, device=memory.device)
    BN, BW = row_block_shape(W)
    if H > 0:
        _content_bwd_keys[(B * H,)](grad, memory, keys, strengths, weights, gk, gs, ws, N, W, H,
                                    eps, BN=BN, BW=BW)
    _content_bwd_mem[(triton.cdiv(N, BN), B)](memory, keys, ws, gm, N, W, H, eps, BN=BN, BW=BW)
    return gm, gk, gs


# ---- NTM location addressing ----------------------------------------------------------------

@triton.jit
def _ntm_shifted(c_ptr, wp_ptr, s_ptr, g, rows, rmask, N, S, BN: tl.constexpr):
    """ws[rows] = sum_k s_k wg[(rows + S//2 - k) mod N] (taps in order, as the CPU loop)."""
    half = S // 2
    acc = tl.zeros((BN,), dtype=tl.float32)
    for k in range(0, S):
        j = ((rows + half - k) % N + N) % N
        c = tl.load(c_ptr + j, mask=rmask, other=0.0)
        wp = tl.load(wp_ptr + j, mask=rmask, other=0.0)
        acc += tl.load(s_ptr + k) * (g * c + (1.0 - g) * wp)
    return acc


@triton.jit
def _sharpen(ws, gamma):
    """ws^gamma where ws > 0, else exactly 0 (and no log 0)."""
    pos = ws > 0.0
    return tl.where(pos, tl.exp(gamma * tl.log(tl.where(pos, ws, 1.0))), 0.0)


@triton.jit
def _ntm_sharpened(c_row, wp_row, s_row, g, gam, p_row, w_row, N, S, BN: tl.constexpr,
                   STORE_W: tl.constexpr):
    """The unnormalised weights p = ws^gamma of a (b, h) row into p_row (with STORE_W, the
    shifted weights ws into w_row too), slot blocks in order; returns sum p."""
    total = 0.0
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        w = _ntm_shifted(c_row, wp_row, s_row, g, rows, rmask, N, S, BN)
        p = tl.where(rmask, _sharpen(w, gam), 0.0)
        if STORE_W:
            tl.store(w_row + rows, w, mask=rmask)
        tl.store(p_row + rows, p, mask=rmask)
        total += tl.sum(p, 0)
    return total


@triton.jit
def _ntm_fwd(c_ptr, g_ptr, wp_ptr, s_ptr, gam_ptr, out_ptr, N, S, BN: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)
    c_row, wp_row, out_row = c_ptr + bh * N, wp_ptr + bh * N, out_ptr + bh * N
    g = tl.load(g_ptr + bh)
    gam = tl.load(gam_ptr + bh)
    total = _ntm_sharpened(c_row, wp_row, s_ptr + bh * S, g, gam, out_row, out_row, N, S, BN,
                           False)
    inv = 1.0 / total  # total = 0 only for all-zero inputs: NaN, as the reference
    tl.debug_barrier()
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        tl.store(out_row + rows, tl.load(out_row + rows, mask=rmask, other=0.0) * inv, mask=rmask)


@triton.jit
def _ntm_bwd(go_ptr, c_ptr, g_ptr, wp_ptr, s_ptr, gam_ptr, dc_ptr, dg_ptr, dwp_ptr, ds_ptr,
             dgam_ptr, ws_ptr, N, S, BN: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)
    c_row, wp_row, go_row = c_ptr + bh * N, wp_ptr + bh * N, go_ptr + bh * N
    s_row = s_ptr + bh * S
    wsh = ws_ptr + bh * 2 * N  # shifted weights
    dws = wsh + N              # p, then d shifted weights
    g = tl.load(g_ptr + bh)
    gam = tl.load(gam_ptr + bh)
    total = _ntm_sharpened(c_row, wp_row, s_row, g, gam, dws, wsh, N, S, BN, True)
    inv = 1.0 / total
    tl.debug_barrier()
    gdot = 0.0
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        p = tl.load(dws + rows, mask=rmask, other=0.0)
        gdot += tl.sum(tl.load(go_row + rows, mask=rmask, other=0.0) * (p * inv), 0)
    dgam = 0.0
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        p = tl.load(dws + rows, mask=rmask, other=0.0)
        w = tl.load(wsh + rows, mask=rmask, other=0.0)
        dp = (tl.load(go_row + rows, mask=rmask, other=0.0) - gdot) * inv
        pos = (w > 0.0) & rmask
        logw = tl.log(tl.where(pos, w, 1.0))
        dgam += tl.sum(tl.where(pos, dp * p * logw, 0.0), 0)
        # gamma w^(gamma - 1) = gamma p / w (w > 0): p is w^gamma already.
        d = tl.where(pos, dp * gam * tl.exp((gam - 1.0) * logw), 0.0)
        tl.store(dws + rows, d, mask=rmask)
    tl.store(dgam_ptr + bh, dgam)
    tl.debug_barrier()
    half = S // 2
    for k in range(0, S):
        o = ((k - half) % N + N) % N
        ds = 0.0
        for n0 in range(0, N, BN):
            rows = n0 + tl.arange(0, BN)
            rmask = rows < N
            j = tl.where(rows >= o, rows - o, rows - o + N)
            wg = g * tl.load(c_row + j, mask=rmask, other=0.0) + (1.0 - g) * tl.load(
                wp_row + j, mask=rmask, other=0.0)
            ds += tl.sum(tl.load(dws + rows, mask=rmask, other=0.0) * wg, 0)
        tl.store(ds_ptr + bh * S + k, ds)
    dg = 0.0
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        dwg = tl.zeros((BN,), dtype=tl.float32)
        for k in range(0, S):
            src = ((rows + k - half) % N + N) % N
            dwg += tl.load(s_row + k) * tl.load(dws + src, mask=rmask, other=0.0)
        tl.store(dc_ptr + bh * N + rows, g * dwg, mask=rmask)
        tl.store(dwp_ptr + bh * N + rows, (1.0 - g) * dwg, mask=rmask)
        c = tl.load(c_row + rows, mask=rmask, other=0.0)
        wp = tl.load(wp_row + rows, mask=rmask, other=0.0)
        dg += tl.sum(dwg * (c - wp), 0)
    tl.store(dg_ptr + bh, dg)


def ntm_location_forward(content, gate, prev, shift, gamma):
    check_float32(content, gate, prev, shift, gamma)
    B, H, N = content.shape
    S = shift.shape[2]
    out = torch.empty_like(content)
    if B * H > 0 and N > 0:
        _ntm_fwd[(B * H,)](content, gate, prev, shift, gamma, out, N, S,
                           BN=block_size(N, hi=NTM_BLOCK))
    return out


def ntm_location_backward(grad, content, gate, prev, shift, gamma):
    check_float32(grad, content, gate, prev, shift, gamma)
    B, H, N = content.shape
    S = shift.shape[2]
    dc, dg, dp = torch.empty_like(content), torch.empty_like(gate), torch.empty_like(prev)
    ds, dgam = torch.empty_like(shift), torch.empty_like(gamma)
    if B * H > 0 and N > 0:
        ws = torch.empty((B * H * 2 * N,), dtype=content.dtype, device=content.device)
        _ntm_bwd[(B * H,)](grad, content, gate, prev, shift, gamma, dc, dg, dp, ds, dgam, ws, N, S,
                           BN=block_size(N, hi=NTM_BLOCK))
    return dc, dg, dp, ds, dgam

