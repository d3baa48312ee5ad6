"""Triton kernels of the second group of memory ops (NTM location addressing, Graves' window,
DNC usage, memory read), forward and backward, float32.

Semantics: the ``attnfast::ntm_location_*``, ``graves_window_*``, ``dnc_usage_*`` and
``memory_read_*`` schemas (csrc/schemas.h, "memory, second group"); formulas in the order of
csrc/common/memory_math.h and the CPU loops. All accumulation in fp32; no atomics (every sum has
a fixed order: in-program tile reductions, loops in index order).

Kernels
-------
* ntm_location: one program per (b, h), slot blocks in a loop. The circular shift is a gather:
  ws[i] = sum_k s_k wg[(i + S//2 - k) mod N], wg = g c + (1 - g) w_prev reloaded at each tap.
  Sharpening p = ws^gamma as exp(gamma log ws) where ws > 0, else exactly 0 (no log 0 in the
  gamma gradient); relative error ~ |gamma log ws| 2^-24, well inside fp32 parity.
  Backward: a (2, N) workspace row per (b, h) (ws, then p -> d ws in place); sums for the
  normaliser, g.w, d gamma, one per tap for d shift, d gate; the adjoint shift for d content /
  d prev is the gather with the opposite taps.
* graves: ``_graves_kappa`` per b (the running sum of exp(kappa_hat) over t, vector over K);
  ``_graves_fwd`` per (b, t): phi over char blocks (a (K, U) tile), then window over column blocks.
  Backward: kappa recomputed into a workspace; ``_graves_bwd_steps`` per (b, t) (unmasked phi and
  d phi = g_phi + chars g_window into the workspace, then (K, U) tiles for d alpha_hat,
  d beta_hat, d kappa_t); ``_graves_bwd_chars`` per (b, char block) (d chars, d mask: sums over t
  in order); ``_graves_kappa_bwd`` per b (suffix sums over t).
* usage: ``_usage_fwd`` per (b, slot block). Backward per b: d usage, d read weights through
  the exclusive product of the other heads' factors (no division by a factor that may be 0),
  d free summed over slot blocks in order.
* read: ``_read_fwd`` per (b, r, column block) (a sum over slot blocks); ``_read_bwd`` per
  (b, slot block): d memory (heads in order) and d read weights (row dots over W).

Interpreter (TRITON_INTERPRET=1, CPU tensors): fp32 only, every load is fp32 already.
Offsets that multiply sizes are int64.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 64  # slots / chars per program block


def _p2(n: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(max(1, n)))


def _check(*ts):
    for t in ts:
        if t is not None and t.dtype != torch.float32:
            raise ValueError(f"triton memory kernels take float32 tensors, got {t.dtype}")


# ---- NTM location addressing ------------------------------------------------------------------------

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
def _ntm_fwd(c_ptr, g_ptr, wp_ptr, s_ptr, gam_ptr, out_ptr, N, S, BN: tl.constexpr):
    bh = tl.program_id(0).to(tl.int64)
    c_row, wp_row, out_row = c_ptr + bh * N, wp_ptr + bh * N, out_ptr + bh * N
    g = tl.load(g_ptr + bh)
    gam = tl.load(gam_ptr + bh)
    total = 0.0
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        p = _sharpen(_ntm_shifted(c_row, wp_row, s_ptr + bh * S, g, rows, rmask, N, S, BN), gam)
        p = tl.where(rmask, p, 0.0)
        tl.store(out_row + rows, p, mask=rmask)
        total += tl.sum(p, 0)
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
    total = 0.0
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        w = _ntm_shifted(c_row, wp_row, s_row, g, rows, rmask, N, S, BN)
        p = tl.where(rmask, _sharpen(w, gam), 0.0)
        tl.store(wsh + rows, w, mask=rmask)
        tl.store(dws + rows, p, mask=rmask)
        total += tl.sum(p, 0)
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
    _check(content, gate, prev, shift, gamma)
    B, H, N = content.shape
    S = shift.shape[2]
    out = torch.empty_like(content)
    if B * H > 0 and N > 0:
        _ntm_fwd[(B * H,)](content, gate, prev, shift, gamma, out, N, S, BN=min(BLOCK, _p2(N)))
    return out


def ntm_location_backward(grad, content, gate, prev, shift, gamma):
    _check(grad, content, gate, prev, shift, gamma)
    B, H, N = content.shape
    S = shift.shape[2]
    dc, dg, dp = torch.empty_like(content), torch.empty_like(gate), torch.empty_like(prev)
    ds, dgam = torch.empty_like(shift), torch.empty_like(gamma)
    if B * H > 0 and N > 0:
        ws = torch.empty((B * H * 2 * N,), dtype=content.dtype, device=content.device)
        _ntm_bwd[(B * H,)](grad, content, gate, prev, shift, gamma, dc, dg, dp, ds, dgam, ws, N, S,
                           BN=min(BLOCK, _p2(N)))
    return dc, dg, dp, ds, dgam


# ---- Graves' window -----------------------------------------------------------------------------------

@triton.jit
def _graves_kappa(kh_ptr, k0_ptr, kap_ptr, T, K, BK: tl.constexpr):
    """kappa[b, t] = (sum_{t' <= t} exp(kappa_hat[b, t'])) + kappa0[b] (the cumsum, then the offset)."""
    b = tl.program_id(0).to(tl.int64)
    ck = tl.arange(0, BK)
    km = ck < K
    k0 = tl.load(k0_ptr + b * K + ck, mask=km, other=0.0)
    run = tl.zeros((BK,), dtype=tl.float32)
    for t in range(0, T):
        o = (b * T + t) * K + ck
        run += tl.exp(tl.load(kh_ptr + o, mask=km, other=0.0))
        tl.store(kap_ptr + o, run + k0, mask=km)


@triton.jit
def _graves_raw(ah_ptr, bh_ptr, kap_ptr, bt, K, cu, umask, BK: tl.constexpr):
    """Unmasked phi at chars cu of step bt: sum_k alpha_k exp(-beta_k (kappa_k - (u + 1))^2)."""
    ck = tl.arange(0, BK)
    km = ck < K
    alpha = tl.exp(tl.load(ah_ptr + bt * K + ck, mask=km, other=0.0))
    nbeta = -tl.exp(tl.load(bh_ptr + bt * K + ck, mask=km, other=0.0))
    kap = tl.load(kap_ptr + bt * K + ck, mask=km, other=0.0)
    d = kap[:, None] - (cu + 1).to(tl.float32)[None, :]
    term = alpha[:, None] * tl.exp(nbeta[:, None] * d * d)
    return tl.sum(tl.where(km[:, None] & umask[None, :], term, 0.0), 0)


@triton.jit
def _graves_fwd(ah_ptr, bh_ptr, kap_ptr, ch_ptr, mask_ptr, win_ptr, phi_ptr, T, K, U, C,
                HAS_MASK: tl.constexpr, BK: tl.constexpr, BU: tl.constexpr, BC: tl.constexpr):
    bt = tl.program_id(0).to(tl.int64)
    b = bt // T
    for u0 in range(0, U, BU):
        cu = u0 + tl.arange(0, BU)
        um = cu < U
        phi = _graves_raw(ah_ptr, bh_ptr, kap_ptr, bt, K, cu, um, BK)
        if HAS_MASK:
            phi = phi * tl.load(mask_ptr + b * U + cu, mask=um, other=0.0)
        tl.store(phi_ptr + bt * U + cu, phi, mask=um)
    tl.debug_barrier()
    for c0 in range(0, C, BC):
        cc = c0 + tl.arange(0, BC)
        cm = cc < C
        acc = tl.zeros((BC,), dtype=tl.float32)
        for u0 in range(0, U, BU):
            cu = u0 + tl.arange(0, BU)
            um = cu < U
            phi = tl.load(phi_ptr + bt * U + cu, mask=um, other=0.0)
            tile = tl.load(ch_ptr + (b * U + cu.to(tl.int64))[:, None] * C + cc[None, :],
                           mask=um[:, None] & cm[None, :], other=0.0)
            acc += tl.sum(phi[:, None] * tile, 0)
        tl.store(win_ptr + bt * C + cc, acc, mask=cm)


@triton.jit
def _graves_bwd_steps(gw_ptr, gk_ptr, gp_ptr, ah_ptr, bh_ptr, kap_ptr, ch_ptr, mask_ptr, da_ptr,
                      db_ptr, dk_ptr, raw_ptr, dphi_ptr, T, K, U, C, HAS_MASK: tl.constexpr,
                      BK: tl.constexpr, BU: tl.constexpr, BC: tl.constexpr):
    """With draw = dphi mask, e = exp(-beta d^2), d = kappa - u: d alpha_hat = alpha sum draw e,
    d beta_hat = -beta alpha sum draw e d^2, d kappa_t = g_kappa - 2 beta alpha sum draw e d."""
    bt = tl.program_id(0).to(tl.int64)
    b = bt // T
    for u0 in range(0, U, BU):
        cu = u0 + tl.arange(0, BU)
        um = cu < U
        tl.store(raw_ptr + bt * U + cu, _graves_raw(ah_ptr, bh_ptr, kap_ptr, bt, K, cu, um, BK),
                 mask=um)
        dot = tl.zeros((BU,), dtype=tl.float32)
        for c0 in range(0, C, BC):
            cc = c0 + tl.arange(0, BC)
            cm = cc < C
            tile = tl.load(ch_ptr + (b * U + cu.to(tl.int64))[:, None] * C + cc[None, :],
                           mask=um[:, None] & cm[None, :], other=0.0)
            gw = tl.load(gw_ptr + bt * C + cc, mask=cm, other=0.0)
            dot += tl.sum(tile * gw[None, :], 1)
        tl.store(dphi_ptr + bt * U + cu, tl.load(gp_ptr + bt * U + cu, mask=um, other=0.0) + dot,
                 mask=um)
    tl.debug_barrier()
    ck = tl.arange(0, BK)
    km = ck < K
    alpha = tl.exp(tl.load(ah_ptr + bt * K + ck, mask=km, other=0.0))
    beta = tl.exp(tl.load(bh_ptr + bt * K + ck, mask=km, other=0.0))
    kap = tl.load(kap_ptr + bt * K + ck, mask=km, other=0.0)
    sa = tl.zeros((BK,), dtype=tl.float32)
    sb = tl.zeros((BK,), dtype=tl.float32)
    sk = tl.zeros((BK,), dtype=tl.float32)
    for u0 in range(0, U, BU):
        cu = u0 + tl.arange(0, BU)
        um = cu < U
        draw = tl.load(dphi_ptr + bt * U + cu, mask=um, other=0.0)
        if HAS_MASK:
            draw = draw * tl.load(mask_ptr + b * U + cu, mask=um, other=0.0)
        d = kap[:, None] - (cu + 1).to(tl.float32)[None, :]
        de = tl.where(km[:, None] & um[None, :], draw[None, :] * tl.exp(-beta[:, None] * d * d), 0.0)
        sa += tl.sum(de, 1)
        sb += tl.sum(de * d * d, 1)
        sk += tl.sum(de * d, 1)
    tl.store(da_ptr + bt * K + ck, alpha * sa, mask=km)
    tl.store(db_ptr + bt * K + ck, -beta * alpha * sb, mask=km)
    gk = tl.load(gk_ptr + bt * K + ck, mask=km, other=0.0)
    tl.store(dk_ptr + bt * K + ck, gk - 2.0 * beta * alpha * sk, mask=km)


@triton.jit
def _graves_bwd_chars(gw_ptr, mask_ptr, raw_ptr, dphi_ptr, dch_ptr, dm_ptr, T, U, C,
                      HAS_MASK: tl.constexpr, BU: tl.constexpr, BC: tl.constexpr):
    """d chars[b, u, c] = sum_t phi[t, u] g_window[t, c]; d mask[b, u] = sum_t dphi[t, u] raw[t, u]."""
    b = tl.program_id(1).to(tl.int64)
    cu = tl.program_id(0) * BU + tl.arange(0, BU)
    um = cu < U
    if HAS_MASK:
        m = tl.load(mask_ptr + b * U + cu, mask=um, other=0.0)
        dm = tl.zeros((BU,), dtype=tl.float32)
        for t in range(0, T):
            o = (b * T + t) * U + cu
            dm += tl.load(dphi_ptr + o, mask=um, other=0.0) * tl.load(raw_ptr + o, mask=um, other=0.0)
        tl.store(dm_ptr + b * U + cu, dm, mask=um)
    for c0 in range(0, C, BC):
        cc = c0 + tl.arange(0, BC)
        cm = cc < C
        acc = tl.zeros((BU, BC), dtype=tl.float32)
        for t in range(0, T):
            bt = b * T + t
            pu = tl.load(raw_ptr + bt * U + cu, mask=um, other=0.0)
            if HAS_MASK:
                pu = pu * m
            acc += pu[:, None] * tl.load(gw_ptr + bt * C + cc, mask=cm, other=0.0)[None, :]
        tl.store(dch_ptr + (b * U + cu.to(tl.int64))[:, None] * C + cc[None, :], acc,
                 mask=um[:, None] & cm[None, :])


@triton.jit
def _graves_kappa_bwd(kh_ptr, dk_ptr, dk0_ptr, T, K, BK: tl.constexpr):
    """d kappa_hat_t = exp(kappa_hat_t) sum_{t' >= t} d kappa_t'; d kappa0 = the total."""
    b = tl.program_id(0).to(tl.int64)
    ck = tl.arange(0, BK)
    km = ck < K
    acc = tl.zeros((BK,), dtype=tl.float32)
    for tt in range(0, T):
        o = (b * T + (T - 1 - tt)) * K + ck
        acc += tl.load(dk_ptr + o, mask=km, other=0.0)
        tl.store(dk_ptr + o, acc * tl.exp(tl.load(kh_ptr + o, mask=km, other=0.0)), mask=km)
    tl.store(dk0_ptr + b * K + ck, acc, mask=km)


def _graves_blocks(K, U, C):
    return _p2(K, 2), min(BLOCK, _p2(U)), min(BLOCK, _p2(C))


def graves_window_forward(ah, bh, kh, k0, chars, mask):
    _check(ah, bh, kh, k0, chars, mask)
    B, T, K = ah.shape
    U, C = chars.shape[1], chars.shape[2]
    win = torch.zeros((B, T, C), dtype=ah.dtype, device=ah.device)
    kap = torch.empty_like(ah)
    phi = torch.zeros((B, T, U), dtype=ah.dtype, device=ah.device)
    if B * T == 0:
        return win, kap, phi
    BK, BU, BC = _graves_blocks(K, U, C)
    _graves_kappa[(B,)](kh, k0, kap, T, K, BK=BK)
    _graves_fwd[(B * T,)](ah, bh, kap, chars, mask if mask is not None else ah, win, phi, T, K, U,
                          C, HAS_MASK=mask is not None, BK=BK, BU=BU, BC=BC)
    return win, kap, phi


def graves_window_backward(g_w, g_kappa, g_phi, ah, bh, kh, k0, chars, mask):
    _check(g_w, g_kappa, g_phi, ah, bh, kh, k0, chars, mask)
    B, T, K = ah.shape
    U, C = chars.shape[1], chars.shape[2]
    da, db, dk = torch.empty_like(ah), torch.empty_like(bh), torch.empty_like(kh)
    dk0, dch = torch.zeros_like(k0), torch.zeros_like(chars)
    dm = torch.zeros_like(mask) if mask is not None else ah.new_empty((0,))
    if B == 0 or T == 0:
        return da, db, dk, dk0, dch, dm
    BK, BU, BC = _graves_blocks(K, U, C)
    kap = torch.empty_like(ah)
    raw = torch.empty((B, T, U), dtype=ah.dtype, device=ah.device)
    dphi = torch.empty((B, T, U), dtype=ah.dtype, device=ah.device)
    m = mask if mask is not None else ah
    _graves_kappa[(B,)](kh, k0, kap, T, K, BK=BK)
    _graves_bwd_steps[(B * T,)](g_w, g_kappa, g_phi, ah, bh, kap, chars, m, da, db, dk, raw, dphi,
                                T, K, U, C, HAS_MASK=mask is not None, BK=BK, BU=BU, BC=BC)
    if U > 0:
        _graves_bwd_chars[(triton.cdiv(U, BU), B)](g_w, m, raw, dphi, dch, dm if mask is not None
                                                   else ah, T, U, C, HAS_MASK=mask is not None,
                                                   BU=BU, BC=BC)
    _graves_kappa_bwd[(B,)](kh, dk, dk0, T, K, BK=BK)
    return da, db, dk, dk0, dch, dm


# ---- DNC usage ------------------------------------------------------------------------------------

@triton.jit
def _usage_factors(ww_ptr, f_ptr, rw_ptr, b, rows, rmask, N, Hw, R, BN: tl.constexpr):
    """keep = prod_h (1 - ww_h), psi = prod_r (1 - f_r rw_r) over a slot block, heads in order."""
    keep = tl.full((BN,), 1.0, tl.float32)
    for h in range(0, Hw):
        keep = keep * (1.0 - tl.load(ww_ptr + (b * Hw + h) * N + rows, mask=rmask, other=0.0))
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
            keep = tl.full((BN,), 1.0, tl.float32)
            for h in range(0, Hw):
                keep = keep * (1.0 - tl.load(ww_ptr + (b * Hw + h) * N + rows, mask=rmask, other=0.0))
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
    _check(usage, ww, free_gate, rw)
    B, N = usage.shape
    Hw, R = ww.shape[1], rw.shape[1]
    out = torch.empty_like(usage)
    if B * N > 0:
        BN = min(BLOCK * 4, _p2(N))
        _usage_fwd[(triton.cdiv(N, BN), B)](usage, ww, free_gate, rw, out, N, Hw, R, BN=BN)
    return out


def dnc_usage_backward(grad, usage, ww, free_gate, rw):
    _check(grad, usage, ww, free_gate, rw)
    B, N = usage.shape
    Hw, R = ww.shape[1], rw.shape[1]
    du, dr = torch.empty_like(usage), torch.empty_like(rw)
    df = torch.zeros_like(free_gate)
    if B > 0 and N > 0:
        _usage_bwd[(B,)](grad, usage, ww, free_gate, rw, du, df, dr, N, Hw, R,
                         BN=min(BLOCK * 4, _p2(N)))
    return du, df, dr


# ---- memory read ----------------------------------------------------------------------------------

@triton.jit
def _read_fwd(m_ptr, rw_ptr, out_ptr, N, W, R, BN: tl.constexpr, BW: tl.constexpr):
    """words[b, r, cols] = sum_i rw[b, r, i] M[b, i, cols], slot blocks in order."""
    br = tl.program_id(1).to(tl.int64)
    b = br // R
    cw = tl.program_id(0) * BW + tl.arange(0, BW)
    cm = cw < W
    acc = tl.zeros((BW,), dtype=tl.float32)
    for n0 in range(0, N, BN):
        rows = n0 + tl.arange(0, BN)
        rmask = rows < N
        w = tl.load(rw_ptr + br * N + rows, mask=rmask, other=0.0)
        m = tl.load(m_ptr + (b * N + rows.to(tl.int64))[:, None] * W + cw[None, :],
                    mask=rmask[:, None] & cm[None, :], other=0.0)
        acc += tl.sum(w[:, None] * m, 0)
    tl.store(out_ptr + br * W + cw, acc, mask=cm)


@triton.jit
def _read_bwd(g_ptr, m_ptr, rw_ptr, dm_ptr, drw_ptr, N, W, R, BN: tl.constexpr, BW: tl.constexpr):
    """d M[b, rows] = sum_r rw[b, r, rows] g[b, r]; d rw[b, r, rows] = M[b, rows] . g[b, r]."""
    b = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    rmask = rows < N
    cw = tl.arange(0, BW)
    cm = cw < W
    mk = rmask[:, None] & cm[None, :]
    offs = (b * N + rows.to(tl.int64))[:, None] * W + cw[None, :]
    m = tl.load(m_ptr + offs, mask=mk, other=0.0)
    acc = tl.zeros((BN, BW), dtype=tl.float32)
    for r in range(0, R):
        g = tl.load(g_ptr + (b * R + r) * W + cw, mask=cm, other=0.0)
        w = tl.load(rw_ptr + (b * R + r) * N + rows, mask=rmask, other=0.0)
        acc += w[:, None] * g[None, :]
        tl.store(drw_ptr + (b * R + r) * N + rows, tl.sum(m * g[None, :], 1), mask=rmask)
    tl.store(dm_ptr + offs, acc, mask=mk)


def memory_read_forward(memory, rw):
    _check(memory, rw)
    B, N, W = memory.shape
    R = rw.shape[1]
    out = torch.zeros((B, R, W), dtype=memory.dtype, device=memory.device)
    if B * R * W > 0 and N > 0:
        BW = min(64, _p2(W))
        _read_fwd[(triton.cdiv(W, BW), B * R)](memory, rw, out, N, W, R, BN=32, BW=BW)
    return out


def memory_read_backward(grad, memory, rw):
    _check(grad, memory, rw)
    B, N, W = memory.shape
    R = rw.shape[1]
    dm, dr = torch.zeros_like(memory), torch.zeros_like(rw)
    if B * N > 0:
        BW = _p2(W)
        BN = max(16, min(64, 4096 // BW))
        _read_bwd[(triton.cdiv(N, BN), B)](grad, memory, rw, dm, dr, N, W, R, BN=BN, BW=BW)
    return dm, dr
