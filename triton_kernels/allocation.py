"""Triton kernels of the DNC's usage bookkeeping: dynamic allocation (the free-list order of
the usages) and the usage update, forward and backward, float32.

Semantics: the ``attnfast::dnc_allocation_*`` and ``dnc_usage_*`` schemas (csrc/schemas.h);
formulas in the order of csrc/common/memory_math.h and the CPU loops. All accumulation in fp32;
no atomics (every sum has a fixed order).

Kernels
-------
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
* write weights: the gate product ga gw, the allocation above, then the mix
  gw (ga a + (1 - ga) c) a program per (b, h) row; the backward recomputes the allocation, the
  mix's gradients per row (gate gradients as in-program sums), the allocation backward, and adds
  its gate gradient to both gates'.
* usage: ``_usage_fwd`` per (b, slot block). Backward per b: d usage, d read weights through
  the exclusive product of the other heads' factors (no division by a factor that may be 0),
  d free summed over slot blocks in order.

Interpreter (TRITON_INTERPRET=1, CPU tensors): fp32 only, every load is fp32 already.
Offsets that multiply sizes are int64.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import block_size, check_float32

__all__ = ["allocation_forward", "allocation_backward", "write_weights_forward",
           "write_weights_backward", "dnc_usage_forward", "dnc_usage_backward"]

ALLOC_BLOCK = 32   # tile edge of the allocation's pairwise (slot x slot) tiles
USAGE_BLOCK = 256  # slots per program block of the usage kernels


# ---- allocation -------------------------------------------------------------------------------

@triton.jit
def _copy_row(src, dst, N, BLK: tl.constexpr):
    for i0 in range(0, N, BLK):
        ri = i0 + tl.arange(0, BLK)
        tl.store(dst + ri, tl.load(src + ri, mask=ri < N), mask=ri < N)


@triton.jit
def _free_factor(u, eps):
    """s = eps + (1 - eps) u >= eps > 0: the factor of a slot in the exclusive product."""
    return eps + (1.0 - eps) * u


@triton.jit
def _sorts_before(uj, rj, ui, ri):
    """(i, j) tile: slot j sorts before slot i in the stable ascending order of the usages."""
    return (uj[None, :] < ui[:, None]) | ((uj[None, :] == ui[:, None]) & (rj[None, :] < ri[:, None]))


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
            log_sj = tl.log(_free_factor(uj, eps))
            before = _sorts_before(uj, rj, ui, ri) & mj[None, :]
            acc += tl.sum(tl.where(before, log_sj[None, :], 0.0), 1)
        tl.store(out_ptr + ri, (1.0 - _free_factor(ui, eps)) * tl.exp(acc), mask=mi)


@triton.jit
def _usage_after_head(u_src, a_ptr, u_dst, g, N, BLK: tl.constexpr):
    """u_dst = u + (1 - u) g a for the usage u at u_src, a head's allocation a and its gate g
    (u_dst may be u_src: each element is read before it is written)."""
    for i0 in range(0, N, BLK):
        ri = i0 + tl.arange(0, BLK)
        mi = ri < N
        u = tl.load(u_src + ri, mask=mi, other=0.0)
        a = tl.load(a_ptr + ri, mask=mi, other=0.0)
        tl.store(u_dst + ri, u + ((1.0 - u) * g) * a, mask=mi)


@triton.jit
def _alloc_fwd(usage_ptr, gates_ptr, out_ptr, u_ptr, N, Hw, eps, BLK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    u_b = u_ptr + b * N  # the running usage (a global scratch row)
    _copy_row(usage_ptr + b * N, u_b, N, BLK)
    tl.debug_barrier()
    for h in range(0, Hw):
        out_h = out_ptr + (b * Hw + h) * N
        _alloc_head(u_b, out_h, N, eps, BLK)
        tl.debug_barrier()
        _usage_after_head(u_b, out_h, u_b, tl.load(gates_ptr + b * Hw + h), N, BLK)
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
        _usage_after_head(U + h * N, A + h * N, U + (h + 1) * N, tl.load(gates_ptr + b * Hw + h),
                          N, BLK)
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
                j_before_i = _sorts_before(uj, rj, ui, ri)
                j_after_i = (~j_before_i) & (rj[None, :] != ri[:, None]) & mj[None, :]
                j_before_i = j_before_i & mj[None, :]
                logp += tl.sum(tl.where(j_before_i, tl.log(_free_factor(uj, eps))[None, :], 0.0), 1)
                gaa = tl.load(ga + rj, mask=mj, other=0.0) * tl.load(A + h * N + rj, mask=mj, other=0.0)
                tail += tl.sum(tl.where(j_after_i, gaa[None, :], 0.0), 1)
            ds = tail / _free_factor(ui, eps) - tl.exp(logp) * gai
            d = tl.load(du + ri, mask=mi, other=0.0)
            tl.store(du + ri, d + ds * (1.0 - eps), mask=mi)
        tl.debug_barrier()
    _copy_row(du, gu_ptr + b * N, N, BLK)


def allocation_forward(usage, gates, eps):
    check_float32(usage, gates)
    B, N = usage.shape
    Hw = gates.shape[1]
    out = torch.empty((B, Hw, N), dtype=usage.dtype, device=usage.device)
    if B * Hw > 0 and N > 0:
        scratch = torch.empty((B, N), dtype=usage.dtype, device=usage.device)
        _alloc_fwd[(B,)](usage, gates, out, scratch, N, Hw, eps, BLK=ALLOC_BLOCK)
    return out


def allocation_backward(grad, usage, gates, eps):
    check_float32(grad, usage, gates)
    B, N = usage.shape
    Hw = gates.shape[1]
    gu, gg = torch.zeros_like(usage), torch.zeros_like(gates)
    if B > 0 and N > 0:
        ws = torch.empty((B * (2 * Hw + 3) * N,), dtype=usage.dtype, device=usage.device)
        _alloc_bwd[(B,)](grad, usage, gates, gu, gg, ws, N, Hw, eps, BLK=ALLOC_BLOCK)
    return gu, gg


# ---- write weights ----------------------------------------------------------------------------
# ww = gw (ga a + (1 - ga) c), a the allocation under the gates ga * gw: the gate product, the
# allocation kernels above, and the mix, a program per (b, h) row. The backward recomputes a.

MIX_BLOCK = 256  # slots per step of the mix programs


@triton.jit
def _gate_product(ga_ptr, gw_ptr, gates_ptr, n, BLK: tl.constexpr):
    k = tl.program_id(0).to(tl.int64) * BLK + tl.arange(0, BLK)
    m = k < n
    tl.store(gates_ptr + k, tl.load(ga_ptr + k, mask=m) * tl.load(gw_ptr + k, mask=m), mask=m)


@triton.jit
def _write_mix_fwd(ga_ptr, gw_ptr, c_ptr, w_ptr, N, BLK: tl.constexpr):
    """w[bh] <- gw (ga w + (1 - ga) c) in place, w holding the allocation (the CPU order)."""
    bh = tl.program_id(0).to(tl.int64)
    ga = tl.load(ga_ptr + bh)
    gw = tl.load(gw_ptr + bh)
    for i0 in range(0, N, BLK):
        ri = i0 + tl.arange(0, BLK)
        mi = ri < N
        a = tl.load(w_ptr + bh * N + ri, mask=mi, other=0.0)
        c = tl.load(c_ptr + bh * N + ri, mask=mi, other=0.0)
        tl.store(w_ptr + bh * N + ri, gw * (ga * a + (1.0 - ga) * c), mask=mi)


@triton.jit
def _write_mix_bwd(g_ptr, ga_ptr, gw_ptr, c_ptr, a_ptr, da_ptr, dc_ptr, dga_ptr, dgw_ptr, N,
                   BLK: tl.constexpr):
    """dt = g gw; d a = dt ga; d c = dt (1 - ga); d ga = sum dt (a - c); d gw = sum g t."""
    bh = tl.program_id(0).to(tl.int64)
    ga = tl.load(ga_ptr + bh)
    gw = tl.load(gw_ptr + bh)
    sa = tl.zeros((BLK,), dtype=tl.float32)
    sw = tl.zeros((BLK,), dtype=tl.float32)
    for i0 in range(0, N, BLK):
        ri = i0 + tl.arange(0, BLK)
        mi = ri < N
        g = tl.load(g_ptr + bh * N + ri, mask=mi, other=0.0)
        a = tl.load(a_ptr + bh * N + ri, mask=mi, other=0.0)
        c = tl.load(c_ptr + bh * N + ri, mask=mi, other=0.0)
        dt = g * gw
        sw += g * (ga * a + (1.0 - ga) * c)
        sa += dt * (a - c)
        tl.store(da_ptr + bh * N + ri, dt * ga, mask=mi)
        tl.store(dc_ptr + bh * N + ri, dt * (1.0 - ga), mask=mi)
    tl.store(dga_ptr + bh, tl.sum(sa, 0))
    tl.store(dgw_ptr + bh, tl.sum(sw, 0))


@triton.jit
def _write_gates_bwd(ga_ptr, gw_ptr, dg_ptr, dga_ptr, dgw_ptr, n, BLK: tl.constexpr):
    """The allocation's gate gradient dg (gate = ga gw): d ga += dg gw, d gw += dg ga."""
    k = tl.program_id(0).to(tl.int64) * BLK + tl.arange(0, BLK)
    m = k < n
    ga = tl.load(ga_ptr + k, mask=m, other=0.0)
    gw = tl.load(gw_ptr + k, mask=m, other=0.0)
    dg = tl.load(dg_ptr + k, mask=m, other=0.0)
    tl.store(dga_ptr + k, tl.load(dga_ptr + k, mask=m, other=0.0) + dg * gw, mask=m)
    tl.store(dgw_ptr + k, tl.load(dgw_ptr + k, mask=m, other=0.0) + dg * ga, mask=m)


def _gates(ga, gw):
    gates = torch.empty_like(ga)
    if ga.numel() > 0:
        _gate_product[(triton.cdiv(ga.numel(), MIX_BLOCK),)](ga, gw, gates, ga.numel(),
                                                             BLK=MIX_BLOCK)
    return gates


def write_weights_forward(usage, content, ga, gw, eps):
    check_float32(usage, content, ga, gw)
    B, N = usage.shape
    Hw = content.shape[1]
    out = allocation_forward(usage, _gates(ga, gw), eps)
    if B * Hw > 0 and N > 0:
        _write_mix_fwd[(B * Hw,)](ga, gw, content, out, N, BLK=MIX_BLOCK)
    return out


def write_weights_backward(grad, usage, content, ga, gw, eps):
    check_float32(grad, usage, content, ga, gw)
    B, N = usage.shape
    Hw = content.shape[1]
    gates = _gates(ga, gw)
    alloc = allocation_forward(usage, gates, eps)
    d_alloc, d_content = torch.empty_like(content), torch.empty_like(content)
    d_ga, d_gw = torch.zeros_like(ga), torch.zeros_like(gw)
    if B * Hw > 0:
        _write_mix_bwd[(B * Hw,)](grad, ga, gw, content, alloc, d_alloc, d_content, d_ga, d_gw,
                                  N, BLK=MIX_BLOCK)
    d_usage, dg = allocation_backward(d_alloc, usage, gates, eps)
    if B * Hw > 0:
        _write_gates_bwd[(triton.cdiv(B * Hw, MIX_BLOCK),)](ga, gw, dg, d_ga, d_gw, B * Hw,
                                                           BLK=MIX_BLOCK)
    return d_usage, d_content, d_ga, d_gw


# ---- usage ------------------------------------------------------------------------------------

@triton.jit
def _unwritten(ww_ptr, b, rows, rmask, N, Hw, BN: tl.constexpr):
    """prod_h (1 - ww_h) over a slot block, heads in order."""
    keep = tl.full((BN,), 1.0, tl.float32)
    for h in range(0, Hw):
        keep = keep * (1.0 - tl.load(ww_ptr + (b * Hw + h) * N + rows, mask=rmask, other=0.0))
    return keep


@triton.jit
def _usage_factors(ww_ptr, f_ptr, rw_ptr, b, rows, rmask, N, Hw, R, BN: tl.constexpr):
    """keep = prod_h (1 - ww_h), psi = prod_r (1 - f_r rw_r) over a slot block, heads in order."""
    keep = _unwritten(ww_ptr, b, rows, rmask, N, Hw, BN)
    psi = tl.full((BN,), 1.0, tl.float32)
    for r in range(0, R):
        f = tl.load(f_ptr + b * R + r)
        psi = psi * (1.0 - f * tl.load(rw_ptr + (b * R + r) * N + rows, mask=rmask, other=0.0))
    return keep, psi


@triton.jit
def _usage_fwd(u_ptr, ww_ptr, f_ptr, rw_ptr, out_ptr, N, Hw, R, BN: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    rmask = rows < N
    keep, psi = _usage_factors(ww_ptr, f_ptr, rw_ptr, b, rows, rmask, N, Hw, R, BN)
    u = tl.load(u_ptr + b * N + rows, mask=rmask, other=0.0)
    written = 1.0 - keep
    tl.store(out_ptr + b * N + rows, (u + (1.0 - u) * written) * psi, mask=rmask)


@triton.jit
def _usage_bwd(g_ptr, u_ptr, ww_ptr, f_ptr, rw_ptr, du_ptr, df_ptr, drw_ptr, N, Hw, R,
               BN: tl.constexpr):
    """d usage = g psi (1 - written); d psi = g u'; d rw_r = -f_r excl_r,
    excl_r = d psi prod_{q != r} (1 - f_q rw_q); d f_r = -sum excl_r rw_r."""
    b = tl.program_id(0).to(tl.int64)
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        keep, psi = _usage_factors(ww_ptr, f_ptr, rw_ptr, b, rows, rmask, N, Hw, R, BN)
        g = tl.load(g_ptr + b * N + rows, mask=rmask, other=0.0)
        tl.store(du_ptr + b * N + rows, g * psi * keep, mask=rmask)  # 1 - written = keep
    for r in range(0, R):
        f_r = tl.load(f_ptr + b * R + r)
        df = 0.0
        for n0 in range(0, N, BN):
            rows = n0 + tl.arange(0, BN)
            rmask = rows < N
            keep = _unwritten(ww_ptr, b, rows, rmask, N, Hw, BN)
            u = tl.load(u_ptr + b * N + rows, mask=rmask, other=0.0)
            g = tl.load(g_ptr + b * N + rows, mask=rmask, other=0.0)
            excl = g * (u + (1.0 - u) * (1.0 - keep))
            for q in range(0, R):
                if q != r:
                    f = tl.load(f_ptr + b * R + q)
                    excl = excl * (1.0 - f * tl.load(rw_ptr + (b * R + q) * N + rows, mask=rmask,
                                                     other=0.0))
            w = tl.load(rw_ptr + (b * R + r) * N + rows, mask=rmask, other=0.0)
            tl.store(drw_ptr + (b * R + r) * N + rows, -f_r * excl, mask=rmask)
            df += tl.sum(tl.where(rmask, excl * w, 0.0), 0)
        tl.store(df_ptr + b * R + r, -df)


def dnc_usage_forward(usage, ww, free_gate, rw):
    check_float32(usage, ww, free_gate, rw)
    B, N = usage.shape
    Hw, R = ww.shape[1], rw.shape[1]
    out = torch.empty_like(usage)
    if B * N > 0:
        BN = block_size(N, hi=USAGE_BLOCK)
        _usage_fwd[(triton.cdiv(N, BN), B)](usage, ww, free_gate, rw, out, N, Hw, R, BN=BN)
    return out


def dnc_usage_backward(grad, usage, ww, free_gate, rw):
    check_float32(grad, usage, ww, free_gate, rw)
    B, N = usage.shape
    Hw, R = ww.shape[1], rw.shape[1]
    du, dr = torch.empty_like(usage), torch.empty_like(rw)
    df = torch.zeros_like(free_gate)
    if B > 0 and N > 0:
        _usage_bwd[(B,)](grad, usage, ww, free_gate, rw, du, df, dr, N, Hw, R,
                         BN=block_size(N, hi=USAGE_BLOCK))
    return du, df, dr
