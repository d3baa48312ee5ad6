"""Triton kernels of the Boom layer (Merity's SHA-RNN feed-forward), forward and backward.

    z   = x W^T + b                          x (N, K), W (F, K), b (F,) or None
    h   = dropout(act(z))                    (N, F)
    out = sum_{j < F // C} h[:, j C : (j + 1) C]        (N, C); columns >= (F // C) C dropped

Semantics are those of the ``attnfast::boom_forward`` / ``boom_backward`` schemas
(csrc/schemas.h): activations mirror csrc/common/activations.h, dropout is the counter-based
Philox4x32-10 contract of csrc/common/philox.h with element index i = n * F + f (the FULL F is
the row stride, also for the dropped remainder columns).

Kernels
-------
* ``_boom_fwd_kernel``: a program owns a (BLOCK_M x BLOCK_N) tile of ``out`` and loops over the
  chunks j. Per chunk: a K loop of ``tl.dot`` into an fp32 accumulator (fp32 inputs use exact
  fp32 products, ``input_precision="ieee"``, never TF32), then bias + activation + dropout on
  the accumulator, summed into a second fp32 accumulator. ``out`` is stored once, rounded once.
  The (N, F) activation never touches memory; the pre-activation tile is stored only when
  ``save_preact``. No atomics.
* ``_boom_bwd_dx_kernel``: grad_x = dz @ W[:F_used]. A program owns a (BLOCK_M x BLOCK_K) tile
  of grad_x; its prologue builds each (BLOCK_M x BLOCK_F) dz tile on the fly from grad_out
  (column f % C), the saved pre-activation, act' and the dropout mask. No dz tensor in memory.
* ``_boom_bwd_dw_kernel``: grad_weight = dz^T @ x. A program owns a (BLOCK_F x BLOCK_K) tile of
  grad_weight and loops over all N building dz^T tiles the same way; the programs of the first
  K tile also reduce those dz^T tiles over N into grad_bias (deterministic: a fixed loop order,
  no float atomics). Rows >= F_used of grad_weight / grad_bias are zero-filled by the launcher.

Both backward kernels rebuild each dz element once per K tile (cdiv(K, BLOCK_K) times): cheap
without dropout, but with dropout the Philox work grows with K / BLOCK_K, hence wide K tiles.
Tile rows/columns past the end wrap onto valid ones (offs % size), so operand loads carry only
the reduction-dim mask; wrapped lanes are never stored.

dz is rounded to the input dtype before the bf16/fp16 tensor-core dots (fp32 inputs: exact
fp32); grad_bias sums the fp32 dz. All offsets that multiply sizes are int64.

Interpreter (TRITON_INTERPRET=1, CPU tensors): bf16 arithmetic is broken there, so every load is
upcast with ``.to(tl.float32)`` before math, and bf16 dot operands are upcast to fp32 (UPCAST).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (FLOAT_DTYPES, block_size, dropout_args, dropout_keep, interpreting,
                      sigmoid, tanh, upcast_bf16)

__all__ = ["boom_forward", "boom_backward", "ACTIVATIONS"]

# Keep in sync with csrc/common/activations.h::Activation and attnfast/ops/boom.py.
ACTIVATIONS = {"gelu_sigmoid": 0, "gelu": 1, "gelu_tanh": 2, "relu": 3}

# --------------------------------------------------------------------------------------------
# Per-element math (fp32), mirroring csrc/common/activations.h
# --------------------------------------------------------------------------------------------


@triton.jit
def _act_fwd(x, ACT: tl.constexpr):
    if ACT == 0:  # gelu_sigmoid: x * sigmoid(1.702 x)
        y = x * sigmoid(1.702 * x)
    elif ACT == 1:  # gelu: 0.5 x (1 + erf(x / sqrt 2))
        y = 0.5 * x * (1.0 + tl.erf(x * 0.70710678118654752))
    elif ACT == 2:  # gelu_tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        u = 0.79788456080286536 * (x + 0.044715 * x * x * x)
        y = 0.5 * x * (1.0 + tanh(u))
    else:  # relu
        y = tl.where(x > 0.0, x, 0.0)
    return y


@triton.jit
def _act_bwd(x, ACT: tl.constexpr):
    if ACT == 0:  # s + a x s (1 - s)
        s = sigmoid(1.702 * x)
        g = s + 1.702 * x * s * (1.0 - s)
    elif ACT == 1:  # Phi(x) + x phi(x)
        cdf = 0.5 * (1.0 + tl.erf(x * 0.70710678118654752))
        pdf = 0.39894228040143268 * tl.exp(-0.5 * x * x)
        g = cdf + x * pdf
    elif ACT == 2:
        u = 0.79788456080286536 * (x + 0.044715 * x * x * x)
        t = tanh(u)
        du = 0.79788456080286536 * (1.0 + 3.0 * 0.044715 * x * x)
        g = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
    else:
        g = tl.where(x > 0.0, 1.0, 0.0)
    return g


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _grouped_pid(pid, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    # Super-grouped tile order: GROUP_M row tiles share the column tiles they stream (L2 reuse).
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _boom_fwd_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, pre_ptr,
    N, K, F, C, NCHUNKS,
    seed, threshold, scale,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    SAVE_PREACT: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = _grouped_pid(tl.program_id(0), tl.cdiv(N, BLOCK_M), tl.cdiv(C, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_mc = (offs_m < N)[:, None] & (offs_c < C)[None, :]
    # Out-of-range rows / columns wrap onto valid ones: the operand loads need only the K mask,
    # and the wrapped lanes are never stored.
    rows = (offs_m % N).to(tl.int64)
    ocol = offs_c % C
    f_used = NCHUNKS * C  # < F < 2^31; row offsets are int64 (rows) * f_used
    x_tile = x_ptr + rows[:, None] * K + offs_k[None, :]  # (BLOCK_M, BLOCK_K)

    out_acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for j in range(0, NCHUNKS):
        cols = (j * C + ocol).to(tl.int64)  # column f of z
        a_ptrs = x_tile
        b_ptrs = w_ptr + cols[None, :] * K + offs_k[:, None]  # (BLOCK_K, BLOCK_N) = W^T tile
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            a = tl.load(a_ptrs, mask=offs_k[None, :] < K - k0, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < K - k0, other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision="ieee")
            a_ptrs += BLOCK_K
            b_ptrs += BLOCK_K
        if HAS_BIAS:
            acc += tl.load(b_ptr + cols).to(tl.float32)[None, :]
        if SAVE_PREACT:
            tl.store(pre_ptr + rows[:, None] * f_used + cols[None, :],
                     acc.to(pre_ptr.dtype.element_ty), mask=mask_mc)
        h = _act_fwd(acc, ACT)
        if HAS_DROPOUT:
            keep = dropout_keep(seed, rows[:, None] * F + cols[None, :], threshold)
            h = tl.where(keep, h * scale, 0.0)
        out_acc += h
    tl.store(out_ptr + rows[:, None] * C + ocol[None, :], out_acc.to(out_ptr.dtype.element_ty),
             mask=mask_mc)


@triton.jit
def _boom_bwd_dx_kernel(
    go_ptr, pre_ptr, w_ptr, gx_ptr,
    N, K, F, C, F_USED,
    seed, threshold, scale,
    ACT: tl.constexpr, HAS_DROPOUT: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_F: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_k = _grouped_pid(tl.program_id(0), tl.cdiv(N, BLOCK_M), tl.cdiv(K, BLOCK_K), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_f = tl.arange(0, BLOCK_F)
    mask_mk = (offs_m < N)[:, None] & (offs_k < K)[None, :]
    rows = (offs_m % N).to(tl.int64)  # wrapped: loads need only the F mask
    kcol = offs_k % K
    pre_ptrs = pre_ptr + rows[:, None] * F_USED + offs_f[None, :]  # (BLOCK_M, BLOCK_F)
    go_rows = go_ptr + rows[:, None] * C
    w_ptrs = w_ptr + offs_f.to(tl.int64)[:, None] * K + kcol[None, :]  # (BLOCK_F, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for f0 in range(0, F_USED, BLOCK_F):
        ff = f0 + offs_f
        mask_f = ff < F_USED
        # dz tile (BLOCK_M, BLOCK_F) in fp32; lanes f >= F_used load grad_out 0 -> dz = 0.
        pre = tl.load(pre_ptrs, mask=mask_f[None, :], other=0.0)
        go = tl.load(go_rows + (ff % C)[None, :], mask=mask_f[None, :], other=0.0)
        dz = go.to(tl.float32) * _act_bwd(pre.to(tl.float32), ACT)
        if HAS_DROPOUT:
            keep = dropout_keep(seed, rows[:, None] * F + ff[None, :], threshold)
            dz = tl.where(keep, dz * scale, 0.0)
        w = tl.load(w_ptrs, mask=mask_f[:, None], other=0.0)
        if UPCAST:
            w = w.to(tl.float32)
        else:
            dz = dz.to(w.dtype)
        acc = tl.dot(dz, w, acc, input_precision="ieee")
        pre_ptrs += BLOCK_F
        w_ptrs += BLOCK_F * K
    tl.store(gx_ptr + rows[:, None] * K + kcol[None, :], acc.to(gx_ptr.dtype.element_ty),
             mask=mask_mk)


@triton.jit
def _boom_bwd_dw_kernel(
    go_ptr, pre_ptr, x_ptr, gw_ptr, gb_ptr,
    N, K, F, C, F_USED,
    seed, threshold, scale,
    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_DROPOUT: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_F: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr, GROUP_M: tl.constexpr,
):
    # At least one K tile, so that K == 0 still produces grad_bias (the launcher's grid matches).
    num_pid_k = tl.maximum(tl.cdiv(K, BLOCK_K), 1)
    pid_f, pid_k = _grouped_pid(tl.program_id(0), tl.cdiv(F_USED, BLOCK_F), num_pid_k, GROUP_M)
    offs_f = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_m = tl.arange(0, BLOCK_M)
    mask_f = offs_f < F_USED
    mask_k = offs_k < K
    fcol = offs_f % F_USED  # wrapped: loads need only the N mask
    kcol = offs_k % tl.maximum(K, 1)
    # dz^T tiles are (BLOCK_F, BLOCK_M); the row index n advances along dim 1.
    pre_ptrs = pre_ptr + offs_m.to(tl.int64)[None, :] * F_USED + fcol[:, None]
    go_ptrs = go_ptr + offs_m.to(tl.int64)[None, :] * C + (fcol % C)[:, None]
    x_ptrs = x_ptr + offs_m.to(tl.int64)[:, None] * K + kcol[None, :]  # (BLOCK_M, BLOCK_K)

    acc = tl.zeros((BLOCK_F, BLOCK_K), dtype=tl.float32)
    bsum = tl.zeros((BLOCK_F,), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_M):
        mask_n = offs_m < N - n0
        pre = tl.load(pre_ptrs, mask=mask_n[None, :], other=0.0)
        go = tl.load(go_ptrs, mask=mask_n[None, :], other=0.0)
        dzt = go.to(tl.float32) * _act_bwd(pre.to(tl.float32), ACT)
        if HAS_DROPOUT:
            nn = (n0 + offs_m).to(tl.int64)
            keep = dropout_keep(seed, nn[None, :] * F + fcol[:, None], threshold)
            dzt = tl.where(keep, dzt * scale, 0.0)
        if HAS_BIAS:
            bsum += tl.sum(dzt, axis=1)
        xt = tl.load(x_ptrs, mask=mask_n[:, None] & (kcol < K)[None, :], other=0.0)  # K may be 0
        if UPCAST:
            xt = xt.to(tl.float32)
        else:
            dzt = dzt.to(xt.dtype)
        acc = tl.dot(dzt, xt, acc, input_precision="ieee")
        pre_ptrs += BLOCK_M * F_USED
        go_ptrs += BLOCK_M * C
        x_ptrs += BLOCK_M * K
    cols = fcol.to(tl.int64)
    tl.store(gw_ptr + cols[:, None] * K + kcol[None, :], acc.to(gw_ptr.dtype.element_ty),
             mask=mask_f[:, None] & mask_k[None, :])
    if HAS_BIAS:
        # Every K tile computed the same sums; the first one stores them.
        tl.store(gb_ptr + cols, bsum.to(gb_ptr.dtype.element_ty), mask=mask_f & (pid_k == 0))


# --------------------------------------------------------------------------------------------
# Block-size heuristics
# --------------------------------------------------------------------------------------------


# GPU choices come from compiling for sm_90 (triton.compile + ptxas -v, no GPU here) and keeping
# the largest tiles without register spills; they are a starting point for tuning on hardware.
# Forward: two live fp32 accumulators plus the epilogue (activation, Philox) per chunk -> 64x64
# tiles with 8 warps (128x64 and 128x128 spilled). Backward: the dz prologue is recomputed once
# per K tile, so the K tiles are wide.


def _config(tile_m: tuple, tile_n: tuple, step: tuple) -> dict:
    """Block sizes of a program with a (tile_m x tile_n) output tile and a reduction loop (step):
    tile_m, tile_n = (name, extent, GPU cap), step = (name, extent). On a GPU the reduction
    block is 32 and tiles of 64x64 or more take 8 warps; under the interpreter, whose cost is per
    program and op, every block is its extent's next power of two up to 32."""
    (name_m, m, cap_m), (name_n, n, cap_n), (name_k, k) = tile_m, tile_n, step
    if interpreting():
        return {name_m: block_size(m, hi=32), name_n: block_size(n, hi=32),
                name_k: block_size(k, hi=32), "GROUP_M": 8, "num_warps": 4, "num_stages": 1}
    bm, bn = block_size(m, hi=cap_m), block_size(n, hi=cap_n)
    return {name_m: bm, name_n: bn, name_k: 32, "GROUP_M": 8,
            "num_warps": 8 if bm * bn >= 64 * 64 else 4, "num_stages": 3}


def _fwd_config(dtype: torch.dtype, N: int, K: int, C: int) -> dict:
    return _config(("BLOCK_M", N, 64), ("BLOCK_N", C, 64), ("BLOCK_K", K))


def _bwd_dx_config(dtype: torch.dtype, N: int, K: int, F_used: int) -> dict:
    return _config(("BLOCK_M", N, 128), ("BLOCK_K", K, 64 if dtype == torch.float32 else 128),
                   ("BLOCK_F", F_used))


def _bwd_dw_config(dtype: torch.dtype, N: int, K: int, F_used: int) -> dict:
    return _config(("BLOCK_F", F_used, 128), ("BLOCK_K", K, 128), ("BLOCK_M", N))


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _check_activation(activation: int) -> int:
    activation = int(activation)
    if activation not in (0, 1, 2, 3):
        raise ValueError(f"boom: activation must be 0 (gelu_sigmoid), 1 (gelu), 2 (gelu_tanh) "
                         f"or 3 (relu), got {activation}")
    return activation


def _check_chunk(chunk_width: int, F: int) -> int:
    C = int(chunk_width)
    if not 1 <= C <= F:
        raise ValueError(f"boom: chunk_width must be in [1, {F}] (d_ff), got {chunk_width}")
    return C


def _check_2d(name: str, t: torch.Tensor, dtype: torch.dtype, device: torch.device, shape=None):
    if t.dim() != 2:
        raise ValueError(f"boom: {name} must be 2-D, got shape {tuple(t.shape)}")
    if t.dtype != dtype:
        raise ValueError(f"boom: {name} must have dtype {dtype}, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"boom: {name} must be on {device}, got {t.device}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"boom: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    return t.contiguous()


def _check_layer(x, weight, activation: int, chunk_width: int):
    """(x, weight) made contiguous, N, K, F, the activation and the chunk width C, checked."""
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"boom: x must be float32, bfloat16 or float16, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"boom: x must be 2-D (N, K), got shape {tuple(x.shape)}")
    N, K = x.shape
    if weight.dim() != 2 or weight.shape[1] != K:
        raise ValueError(f"boom: weight must have shape (d_ff, {K}), got {tuple(weight.shape)}")
    F = weight.shape[0]
    weight = _check_2d("weight", weight, x.dtype, x.device)
    return (x.contiguous(), weight, N, K, F, _check_activation(activation),
            _check_chunk(chunk_width, F))


def boom_forward(x, weight, bias, activation: int, chunk_width: int, dropout_p: float, seed: int,
                 save_preact: bool):
    """Returns (out (N, C), preact (N, F_used) or an empty (0,) tensor), both in x's dtype."""
    x, weight, N, K, F, act, C = _check_layer(x, weight, activation, chunk_width)
    if bias is not None:
        if bias.shape != (F,) or bias.dtype != x.dtype or bias.device != x.device:
            raise ValueError(f"boom: bias must be a ({F},) {x.dtype} tensor on {x.device}, got "
                             f"{tuple(bias.shape)} {bias.dtype} on {bias.device}")
        bias = bias.contiguous()
    nchunks = F // C
    f_used = nchunks * C
    has_dropout, seed, threshold, scale = dropout_args("boom", dropout_p, seed)

    out = torch.empty((N, C), dtype=x.dtype, device=x.device)
    if save_preact:
        preact = torch.empty((N, f_used), dtype=x.dtype, device=x.device)
    else:
        preact = torch.empty(0, dtype=x.dtype, device=x.device)
    if N == 0:
        return out, preact

    cfg = _fwd_config(x.dtype, N, K, C)
    grid = (triton.cdiv(N, cfg["BLOCK_M"]) * triton.cdiv(C, cfg["BLOCK_N"]),)
    _boom_fwd_kernel[grid](
        x, weight, bias if bias is not None else x, out, preact if save_preact else out,
        N, K, F, C, nchunks, seed, threshold, scale,
        HAS_BIAS=bias is not None, ACT=act, HAS_DROPOUT=has_dropout,
        SAVE_PREACT=bool(save_preact), UPCAST=upcast_bf16(x.dtype), **cfg)
    return out, preact


def boom_backward(grad_out, x, weight, preact, has_bias: bool, activation: int, chunk_width: int,
                  dropout_p: float, seed: int):
    """Returns (grad_x (N, K), grad_weight (F, K), grad_bias (F,) or an empty (0,) tensor)."""
    x, weight, N, K, F, act, C = _check_layer(x, weight, activation, chunk_width)
    dev, dt = x.device, x.dtype
    f_used = (F // C) * C
    grad_out = _check_2d("grad_out", grad_out, dt, dev, (N, C))
    preact = _check_2d("preact", preact, dt, dev, (N, f_used))
    has_dropout, seed, threshold, scale = dropout_args("boom", dropout_p, seed)
    upcast = upcast_bf16(dt)

    grad_x = torch.empty((N, K), dtype=dt, device=dev)
    grad_w = torch.empty((F, K), dtype=dt, device=dev)
    grad_b = torch.empty(F if has_bias else 0, dtype=dt, device=dev)
    if f_used < F:
        grad_w[f_used:].zero_()
        if has_bias:
            grad_b[f_used:].zero_()

    if N > 0 and K > 0:
        cfg = _bwd_dx_config(dt, N, K, f_used)
        grid = (triton.cdiv(N, cfg["BLOCK_M"]) * triton.cdiv(K, cfg["BLOCK_K"]),)
        _boom_bwd_dx_kernel[grid](
            grad_out, preact, weight, grad_x, N, K, F, C, f_used, seed, threshold, scale,
            ACT=act, HAS_DROPOUT=has_dropout, UPCAST=upcast, **cfg)

    # Also with N == 0 (zero gradients) and K == 0 (grad_bias still needed): one K tile at least.
    cfg = _bwd_dw_config(dt, N, K, f_used)
    grid = (triton.cdiv(f_used, cfg["BLOCK_F"]) * max(1, triton.cdiv(K, cfg["BLOCK_K"])),)
    _boom_bwd_dw_kernel[grid](
        grad_out, preact, x, grad_w, grad_b if has_bias else grad_w,
        N, K, F, C, f_used, seed, threshold, scale,
        HAS_BIAS=bool(has_bias), ACT=act, HAS_DROPOUT=has_dropout, UPCAST=upcast, **cfg)
    return grad_x, grad_w, grad_b
