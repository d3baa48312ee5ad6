"""Triton kernels of the memory addressing ops (NTM / DNC), forward and backward, float32.

Semantics: the ``attnfast::memory_content_*``, ``dnc_allocation_*``, ``memory_write_*`` and
``dnc_link_read_*`` schemas (csrc/schemas.h, "memory"); formulas in the order of
csrc/common/memory_math.h. All accumulation in fp32; no atomics (every sum has a fixed order).

Kernels
-------
* content: ``_content_fwd`` one program per (b, h): a loop over N blocks computes the cosine
  scores (stored to the output), with an online max / sum of exponentials, then a second loop
  normalises. Backward: ``_content_bwd_keys`` per (b, h) (grad_strengths, grad_keys, and per-(h, i)
  d dot and dD |k| into a workspace), ``_content_bwd_mem`` per (b, row block).
* allocation: one program per batch element, heads in sequence. The stable sort is not
  materialised: slot j sorts before slot i iff u_j < u_i or (u_j == u_i and j < i) -- exactly the
  stable ascending order (ties: lower index first) -- and the exclusive cumulative product in
  sorted order is exp(sum_{j before i} log s_j), a masked pairwise sum over (BLOCK x BLOCK)
  tiles: O(N^2) compares, no data-dependent control flow. (tl.sort in triton 3.8 is a bitonic
  network on values only, not stable on ties, and would need a key-index packing; counting is
  simpler and deterministic.) s = eps + (1 - eps) u >= eps > 0, so the logs are finite. The
  log-space product has a relative error ~ |sum log s| * 2^-24, well inside fp32 parity.
  Backward: with a_k = (1 - s_k) P_k, the reverse recurrence unrolls to
  ds_i = (sum_{k after i} ga_k a_k) / s_i - P_i ga_i (s_i >= eps, so the division is safe), again
  a masked pairwise sum. The usages each head saw and its allocation are recomputed into a
  workspace first.
* write: ``_write_fwd`` per (b, row block); backward ``_write_bwd_rows`` per (b, row block)
  (grad_memory, grad_write_weights) and ``_write_bwd_cols`` per (b, h) (grad_erase, grad_add: sums
  over N in a fixed block order).
* link: as the CUDA kernels, new_link is recomputed where needed: ``_link_fwd_cols`` per
  (b, h, column block) walks all rows (new_link, new_precedence, backward reads), ``_link_fwd_rows``
  per (b, h, row block) (forward reads). Backward: ``_link_bwd_rows`` (d link, the row sums),
  ``_link_bwd_cols`` (the column sums, precedence terms); the read-weight gradient is summed over
  write heads with torch in the launcher.

Interpreter (TRITON_INTERPRET=1, CPU tensors): fp32 only, every load is fp32 already.
Offsets that multiply sizes are int64.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 32     # tile edge of the pairwise / link tiles
BLOCK_R = 64   # rows per program of the row-blocked kernels


def _p2(n: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(max(1, n)))


def _check(*ts):
    for t in ts:
        if t.dtype != torch.float32:
            raise ValueError(f"triton memory kernels take float32 tensors, got {t.dtype}")


# ---- content addressing ---------------------------------------------------------------------------

@triton.jit
def _content_fwd(mem_ptr, key_ptr, beta_ptr, out_ptr, N, W, H, eps,
                 BN: tl.constexpr, BW: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    cw = tl.arange(0, BW)
    key = tl.load(key_ptr + bh * W + cw, mask=cw < W, other=0.0)
    knorm = tl.sqrt(tl.sum(key * key, 0) + eps)
    beta = tl.load(beta_ptr + bh)
    m_run = -float("inf")
    s_run = 0.0
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        m = tl.load(mem_ptr + (b * N + rows.to(tl.int64))[:, None] * W + cw[None, :],
                    mask=rmask[:, None] & (cw[None, :] < W), other=0.0)
        dot = tl.sum(m * key[None, :], 1)
        mnorm = tl.sqrt(tl.sum(m * m, 1) + eps)
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
    cw = tl.arange(0, BW)
    key = tl.load(key_ptr + bh * W + cw, mask=cw < W, other=0.0)
    knorm = tl.sqrt(tl.sum(key * key, 0) + eps)
    beta = tl.load(beta_ptr + bh)
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
        m = tl.load(mem_ptr + (b * N + rows.to(tl.int64))[:, None] * W + cw[None, :],
                    mask=rmask[:, None] & (cw[None, :] < W), other=0.0)
        dot = tl.sum(m * key[None, :], 1)
        mnorm = tl.sqrt(tl.sum(m * m, 1) + eps)
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
    b = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    rmask = rows < N
    cw = tl.arange(0, BW)
    mk = rmask[:, None] & (cw[None, :] < W)
    offs = (b * N + rows.to(tl.int64))[:, None] * W + cw[None, :]
    m = tl.load(mem_ptr + offs, mask=mk, other=0.0)
    mnorm = tl.sqrt(tl.sum(m * m, 1) + eps)
    cm = tl.zeros((BN,), dtype=tl.float32)
    acc = tl.zeros((BN, BW), dtype=tl.float32)
    for h in range(0, H):
        base = (b * H + h) * 2 * N
        cm += tl.load(ws_ptr + base + N + rows, mask=rmask, other=0.0)
        dd = tl.load(ws_ptr + base + rows, mask=rmask, other=0.0)
        key = tl.load(key_ptr + (b * H + h) * W + cw, mask=cw < W, other=0.0)
        acc += dd[:, None] * key[None, :]
    tl.store(gm_ptr + offs, (cm / mnorm)[:, None] * m + acc, mask=mk)


def content_forward(memory, keys, strengths, eps):
    _check(memory, keys, strengths)
    B, N, W = memory.shape
    H = keys.shape[1]
    out = torch.empty((B, H, N), dtype=memory.dtype, device=memory.device)
    if B * H > 0:
        BW = _p2(W)
        _content_fwd[(B * H,)](memory, keys, strengths, out, N, W, H, eps,
                               BN=max(16, min(64, 4096 // BW)), BW=BW)
    return out


def content_backward(grad, memory, keys, strengths, weights, eps):
    _check(grad, memory, keys, strengths, weights)
    B, N, W = memory.shape
    H = keys.shape[1]
    gm, gk, gs = torch.zeros_like(memory), torch.zeros_like(keys), torch.zeros_like(strengths)
    if B == 0 or N * W == 0:
        return gm, gk, gs
    ws = torch.empty((max(1, B * H * 2 * N),), dtype=memory.dtype, device=memory.device)
    BW = _p2(W)
    BN = max(16, min(64, 4096 // BW))
    if H > 0:
        _content_bwd_keys[(B * H,)](grad, memory, keys, strengths, weights, gk, gs, ws, N, W, H,
                                    eps, BN=BN, BW=BW)
    _content_bwd_mem[(triton.cdiv(N, BN), B)](memory, keys, ws, gm, N, W, H, eps, BN=BN, BW=BW)
    return gm, gk, gs


# ---- allocation --------------------------------------------------------------------------------------

@triton.jit
def _alloc_head(u_ptr, out_ptr, N, eps, BLK: tl.constexpr):
    """out[i] = (1 - s_i) exp(sum_{j sorts before i} log s_j) for the usage at u_ptr (N,)."""
    for i0 in range(0, N, BLK):
        ri = i0 + tl.arange(0, BLK)
        mi = ri < N
        ui = tl.load(u_ptr + ri, mask=mi, other=0.0)
        acc = tl.zeros((BLK,), dtype=tl.float32)
        for j0 in range(0, N, BLK):
            rj = j0 + tl.arange(0, BLK)
            mj = rj < N
            uj = tl.load(u_ptr + rj, mask=mj, other=0.0)
            log_sj = tl.log(eps + (1.0 - eps) * uj)
            before = ((uj[None, :] < ui[:, None])
                      | ((uj[None, :] == ui[:, None]) & (rj[None, :] < ri[:, None]))) & mj[None, :]
            acc += tl.sum(tl.where(before, log_sj[None, :], 0.0), 1)
        si = eps + (1.0 - eps) * ui
        tl.store(out_ptr + ri, (1.0 - si) * tl.exp(acc), mask=mi)


@triton.jit
def _alloc_fwd(usage_ptr, gates_ptr, out_ptr, u_ptr, N, Hw, eps, BLK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    u_b = u_ptr + b * N  # the running usage (a global scratch row)
    for i0 in range(0, N, BLK):
        ri = i0 + tl.arange(0, BLK)
        tl.store(u_b + ri, tl.load(usage_ptr + b * N + ri, mask=ri < N), mask=ri < N)
    tl.debug_barrier()
    for h in range(0, Hw):
        out_h = out_ptr + (b * Hw + h) * N
        _alloc_head(u_b, out_h, N, eps, BLK)
        tl.debug_barrier()
        g = tl.load(gates_ptr + b * Hw + h)
        for i0 in range(0, N, BLK):
            ri = i0 + tl.arange(0, BLK)
            mi = ri < N
            u = tl.load(u_b + ri, mask=mi, other=0.0)
            a = tl.load(out_h + ri, mask=mi, other=0.0)
            tl.store(u_b + ri, u + ((1.0 - u) * g) * a, mask=mi)
        tl.debug_barrier()


@triton.jit
def _alloc_bwd(grad_ptr, usage_ptr, gates_ptr, gu_ptr, gg_ptr, ws_ptr, N, Hw, eps,
               BLK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    U = ws_ptr + b * (2 * Hw + 3) * N  # (Hw + 1, N) usages, then A (Hw, N), du (N), ga (N)
    A = U + (Hw + 1) * N
    du = A + Hw * N
    ga = du + N
    for i0 in range(0, N, BLK):
        ri = i0 + tl.arange(0, BLK)
        mi = ri < N
        tl.store(U + ri, tl.load(usage_ptr + b * N + ri, mask=mi), mask=mi)
        tl.store(du + ri, tl.zeros((BLK,), dtype=tl.float32), mask=mi)
    tl.debug_barrier()
    for h in range(0, Hw):  # recompute the forward
        _alloc_head(U + h * N, A + h * N, N, eps, BLK)
        tl.debug_barrier()
        g = tl.load(gates_ptr + b * Hw + h)
        for i0 in range(0, N, BLK):
            ri = i0 + tl.arange(0, BLK)
            mi = ri < N
            u = tl.load(U + h * N + ri, mask=mi, other=0.0)
            a = tl.load(A + h * N + ri, mask=mi, other=0.0)
            tl.store(U + (h + 1) * N + ri, u + ((1.0 - u) * g) * a, mask=mi)
        tl.debug_barrier()
    for hh in range(0, Hw):
        h = Hw - 1 - hh
        g = tl.load(gates_ptr + b * Hw + h)
        dg = 0.0
        for i0 in range(0, N, BLK):
            ri = i0 + tl.arange(0, BLK)
            mi = ri < N
            u = tl.load(U + h * N + ri, mask=mi, other=0.0)
            a = tl.load(A + h * N + ri, mask=mi, other=0.0)
            d = tl.load(du + ri, mask=mi, other=0.0)
            free = 1.0 - u
            dg += tl.sum(d * free * a, 0)
            tl.store(ga + ri, tl.load(grad_ptr + (b * Hw + h) * N + ri, mask=mi, other=0.0)
                     + d * free * g, mask=mi)
            tl.store(du + ri, d * (1.0 - g * a), mask=mi)
        tl.store(gg_ptr + b * Hw + h, dg)
        tl.debug_barrier()
        # ds_i = (sum_{k after i} ga_k a_k) / s_i - P_i ga_i, P_i = exp(sum_{j before i} log s_j)
        for i0 in range(0, N, BLK):
            ri = i0 + tl.arange(0, BLK)
            mi = ri < N
            ui = tl.load(U + h * N + ri, mask=mi, other=0.0)
            gai = tl.load(ga + ri, mask=mi, other=0.0)
            logp = tl.zeros((BLK,), dtype=tl.float32)
            tail = tl.zeros((BLK,), dtype=tl.float32)
            for j0 in range(0, N, BLK):
                rj = j0 + tl.arange(0, BLK)
                mj = rj < N
                uj = tl.load(U + h * N + rj, mask=mj, other=0.0)
                j_before_i = ((uj[None, :] < ui[:, None])
                              | ((uj[None, :] == ui[:, None]) & (rj[None, :] < ri[:, None])))
                j_after_i = (~j_before_i) & (rj[None, :] != ri[:, None]) & mj[None, :]
                j_before_i = j_before_i & mj[None, :]
                logp += tl.sum(tl.where(j_before_i, tl.log(eps + (1.0 - eps) * uj)[None, :], 0.0), 1)
                gaa = tl.load(ga + rj, mask=mj, other=0.0) * tl.load(A + h * N + rj, mask=mj, other=0.0)
                tail += tl.sum(tl.where(j_after_i, gaa[None, :], 0.0), 1)
            si = eps + (1.0 - eps) * ui
            ds = tail / si - tl.exp(logp) * gai
            d = tl.load(du + ri, mask=mi, other=0.0)
            tl.store(du + ri, d + ds * (1.0 - eps), mask=mi)
        tl.debug_barrier()
    for i0 in range(0, N, BLK):
        ri = i0 + tl.arange(0, BLK)
        tl.store(gu_ptr + b * N + ri, tl.load(du + ri, mask=ri < N), mask=ri < N)


def allocation_forward(usage, gates, eps):
    _check(usage, gates)
    B, N = usage.shape
    Hw = gates.shape[1]
    out = torch.empty((B, Hw, N), dtype=usage.dtype, device=usage.device)
    if B * Hw > 0 and N > 0:
        scratch = torch.empty((B, N), dtype=usage.dtype, device=usage.device)
        _alloc_fwd[(B,)](usage, gates, out, scratch, N, Hw, eps, BLK=BLOCK)
    return out


def allocation_backward(grad, usage, gates, eps):
    _check(grad, usage, gates)
    B, N = usage.shape
    Hw = gates.shape[1]
    gu, gg = torch.zeros_like(usage), torch.zeros_like(gates)
    if B > 0 and N > 0:
        ws = torch.empty((B * (2 * Hw + 3) * N,), dtype=usage.dtype, device=usage.device)
        _alloc_bwd[(B,)](grad, usage, gates, gu, gg, ws, N, Hw, eps, BLK=BLOCK)
    return gu, gg


# ---- erase / add write ------------------------------------------------------------------------------

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
    b = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    rmask = rows < N
    cw = tl.arange(0, BW)
    cmask = cw < W
    mk = rmask[:, None] & cmask[None, :]
    offs = (b * N + rows.to(tl.int64))[:, None] * W + cw[None, :]
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
    b = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    rmask = rows < N
    cw = tl.arange(0, BW)
    cmask = cw < W
    mk = rmask[:, None] & cmask[None, :]
    offs = (b * N + rows.to(tl.int64))[:, None] * W + cw[None, :]
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


def _write_blocks(N, W):
    BW = _p2(W)
    return max(16, min(BLOCK_R, 4096 // BW)), BW


def write_forward(memory, ww, erase, add):
    _check(memory, ww, erase, add)
    B, N, W = memory.shape
    Hw = ww.shape[1]
    out = torch.empty_like(memory)
    if B * N * W > 0:
        BN, BW = _write_blocks(N, W)
        _write_fwd[(triton.cdiv(N, BN), B)](memory, ww, erase, add, out, N, W, Hw, BN=BN, BW=BW)
    return out


def write_backward(grad, memory, ww, erase, add):
    _check(grad, memory, ww, erase, add)
    B, N, W = memory.shape
    Hw = ww.shape[1]
    gm, gw, ge, gv = (torch.zeros_like(t) for t in (memory, ww, erase, add))
    if B * N > 0:
        BN, BW = _write_blocks(N, W)
        _write_bwd_rows[(triton.cdiv(N, BN), B)](grad, memory, ww, erase, add, gm, gw, N, W, Hw,
                                                 BN=BN, BW=BW)
        if Hw > 0 and W > 0:
            _write_bwd_cols[(B * Hw,)](grad, memory, ww, erase, ge, gv, N, W, Hw, BN=BN, BW=BW)
    return gm, gw, ge, gv


# ---- temporal link + directional reads ------------------------------------------------------------

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
def _link_fwd_cols(L_ptr, p_ptr, w_ptr, rw_ptr, nl_ptr, np_ptr, bk_ptr, Hw, N, R,
                   BI: tl.constexpr, BJ: tl.constexpr):
    bh = tl.program_id(1).to(tl.int64)
    b = bh // Hw
    h = bh % Hw
    rj = tl.program_id(0) * BJ + tl.arange(0, BJ)
    mj = rj < N
    Lb = L_ptr + bh * N * N
    wb = w_ptr + bh * N
    pb = p_ptr + bh * N
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
        acc = tl.zeros((BJ,), dtype=tl.float32)
        for i0 in range(0, N, BI):
            ri = i0 + tl.arange(0, BI)
            mi = ri < N
            nl, _ = _new_link_tile(Lb, wb, pb, ri, rj, mi, mj, N)
            rwi = tl.load(rw_ptr + (b * R + r) * N + ri, mask=mi, other=0.0)
            acc += tl.sum(rwi[:, None] * nl, 0)
        tl.store(bk_ptr + ((b * R + r) * Hw + h) * N + rj, acc, mask=mj)


@triton.jit
def _link_fwd_rows(L_ptr, p_ptr, w_ptr, rw_ptr, fw_ptr, Hw, N, R,
                   BI: tl.constexpr, BJ: tl.constexpr):
    bh = tl.program_id(1).to(tl.int64)
    b = bh // Hw
    h = bh % Hw
    ri = tl.program_id(0) * BI + tl.arange(0, BI)
    mi = ri < N
    for r in range(0, R):
        acc = tl.zeros((BI,), dtype=tl.float32)
        for j0 in range(0, N, BJ):
            rj = j0 + tl.arange(0, BJ)
            mj = rj < N
            nl, _ = _new_link_tile(L_ptr + bh * N * N, w_ptr + bh * N, p_ptr + bh * N, ri, rj,
                                   mi, mj, N)
            rwj = tl.load(rw_ptr + (b * R + r) * N + rj, mask=mj, other=0.0)
            acc += tl.sum(nl * rwj[None, :], 1)
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
    bh = tl.program_id(1).to(tl.int64)
    b = bh // Hw
    h = bh % Hw
    ri = tl.program_id(0) * BI + tl.arange(0, BI)
    mi = ri < N
    Lb = L_ptr + bh * N * N
    wb = w_ptr + bh * N
    pb = p_ptr + bh * N
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
        acc = tl.zeros((BI,), dtype=tl.float32)
        for j0 in range(0, N, BJ):
            rj = j0 + tl.arange(0, BJ)
            mj = rj < N
            nl, _ = _new_link_tile(Lb, wb, pb, ri, rj, mi, mj, N)
            gbj = tl.load(gb_ptr + ((b * R + r) * Hw + h) * N + rj, mask=mj, other=0.0)
            acc += tl.sum(nl * gbj[None, :], 1)
        tl.store(wsb + (1 + r) * N + ri, acc, mask=mi)


@triton.jit
def _link_bwd_cols(gL_ptr, gp_ptr, gf_ptr, gb_ptr, L_ptr, p_ptr, w_ptr, rw_ptr, dp_ptr, dw_ptr,
                   ws_ptr, Hw, N, R, BI: tl.constexpr, BJ: tl.constexpr):
    bh = tl.program_id(1).to(tl.int64)
    b = bh // Hw
    h = bh % Hw
    rj = tl.program_id(0) * BJ + tl.arange(0, BJ)
    mj = rj < N
    Lb = L_ptr + bh * N * N
    wb = w_ptr + bh * N
    pb = p_ptr + bh * N
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
        acc = tl.zeros((BJ,), dtype=tl.float32)
        for i0 in range(0, N, BI):
            ri = i0 + tl.arange(0, BI)
            mi = ri < N
            nl, _ = _new_link_tile(Lb, wb, pb, ri, rj, mi, mj, N)
            gfi = tl.load(gf_ptr + ((b * R + r) * Hw + h) * N + ri, mask=mi, other=0.0)
            acc += tl.sum(gfi[:, None] * nl, 0)
        row_part = tl.load(wsb + (1 + r) * N + rj, mask=mj, other=0.0)
        tl.store(wsb + (1 + r) * N + rj, row_part + acc, mask=mj)
    tl.store(dp_ptr + bh * N + rj, dp, mask=mj)
    tl.store(dw_ptr + bh * N + rj, dw + tl.load(wsb + rj, mask=mj, other=0.0), mask=mj)


def link_read_forward(link, prec, ww, rw):
    _check(link, prec, ww, rw)
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
    _check(g_link, g_prec, g_fwd, g_bwd, link, prec, ww, rw)
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
