"""Triton kernels of Graves' attention window (the soft window over a character sequence of
Graves' handwriting synthesis), forward and backward, float32.

Semantics: the ``attnfast::graves_window_*`` schemas (csrc/schemas.h); formulas in the order of
csrc/common/memory_math.h and the CPU loops. All accumulation in fp32; no atomics (every sum has
a fixed order: in-program tile reductions, loops in index order).

Kernels
-------
``_graves_kappa`` per b (the running sum of exp(kappa_hat) over t, vector over K); ``_graves_fwd``
per (b, t): phi over char blocks (a (K, U) tile), then window over column blocks. Backward: kappa
recomputed into a workspace; ``_graves_bwd_steps`` per (b, t) (unmasked phi and d phi = g_phi +
chars g_window into the workspace, then (K, U) tiles for d alpha_hat, d beta_hat, d kappa_t);
``_graves_bwd_chars`` per (b, char block) (d chars, d mask: sums over t in order);
``_graves_kappa_bwd`` per b (suffix sums over t).

Interpreter (TRITON_INTERPRET=1, CPU tensors): fp32 only, every load is fp32 already.
Offsets that multiply sizes are int64.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import block_size, check_float32, weighted_row_sum

__all__ = ["graves_window_forward", "graves_window_backward"]

BLOCK = 64  # chars / columns per program block


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
        acc = weighted_row_sum(phi_ptr + bt * U, ch_ptr + b * U * C, U, cc, cm, C, BU, BC)
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
    return block_size(K, 2), block_size(U, hi=BLOCK), block_size(C, hi=BLOCK)


def graves_window_forward(ah, bh, kh, k0, chars, mask):
    check_float32(ah, bh, kh, k0, chars, mask)
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
    check_float32(g_w, g_kappa, g_phi, ah, bh, kh, k0, chars, mask)
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
