"""Helpers shared by the Triton kernel modules: host-side launch plumbing (block sizes, batch
slices under the CUDA grid cap, argument checks, the dropout arguments) and the ``@triton.jit``
pieces that more than one module uses (the Philox keep mask, a weighted sum of matrix rows, the
row-block tile of a (B, N, W) tensor).

Kernel modules import from here; this module imports no kernel module (only the grid cap of
attnfast.ops.limits, a constants module).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from attnfast.ops.limits import CUDA_MAX_GRID_YZ

__all__ = ["FLOAT_DTYPES", "interpreting", "upcast_bf16", "block_size", "batch_slices",
           "last_dim_contiguous", "check_float32", "dropout_args", "dropout_keep",
           "weighted_row_sum", "row_block_shape", "row_block_tile"]

# The dtypes of the attention and Boom kernels (the memory kernels are float32 only).
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def interpreting() -> bool:
    """True under the Triton interpreter (TRITON_INTERPRET=1, CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def upcast_bf16(dtype: torch.dtype) -> bool:
    """Whether a kernel must upcast its dot operands to fp32: the interpreter mis-computes bf16
    arithmetic (tl.dot included), so bf16 runs in fp32 there."""
    return interpreting() and dtype == torch.bfloat16


def block_size(n: int, lo: int = 16, hi: int | None = None) -> int:
    """The next power of two of n, at least lo (tl.dot needs every block dim >= 16) and, with hi,
    at most hi."""
    p = max(lo, triton.next_power_of_2(max(int(n), 1)))
    return p if hi is None else min(p, max(lo, hi))


def batch_slices(B: int) -> list[tuple[int, int]]:
    """[b0, b1) batch ranges of at most CUDA_MAX_GRID_YZ (one empty range when B = 0).

    Launchers that put the batch in grid dimension 1 or 2 run one launch per range, on tensors
    sliced along the batch, passing b0 where a kernel indexes by absolute batch (dropout
    counters)."""
    step = CUDA_MAX_GRID_YZ
    return [(b0, min(B, b0 + step)) for b0 in range(0, max(B, 1), step)]


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """t itself if its last dim is dense (other strides are passed to the kernel), else a copy."""
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


def check_float32(*ts) -> None:
    """The float32-only kernels' dtype check (None entries, absent optional inputs, are skipped)."""
    for t in ts:
        if t is not None and t.dtype != torch.float32:
            raise ValueError(f"triton memory kernels take float32 tensors, got {t.dtype}")


def dropout_args(op: str, dropout_p: float, seed: int):
    """(has_dropout, seed as int64, threshold, scale) for the Philox contract of
    csrc/common/philox.h: an element is kept iff (r >> 8) >= threshold, kept values times scale."""
    p = float(dropout_p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{op}: dropout_p must be in [0, 1), got {dropout_p}")
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF  # the key is the 64-bit two's complement pattern
    if seed >= 1 << 63:
        seed -= 1 << 64  # pass as int64: the kernel takes lo/hi 32 bits of the same pattern
    threshold = int(p * 16777216.0)  # floor(p 2^24), in double
    scale = 1.0 / (1.0 - p)  # double, rounded once to fp32 when passed to the kernel
    return p > 0.0, seed, threshold, scale


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # sign(x) (1 - e) / (1 + e), e = exp(-2|x|): no overflow (as math::tanh_f32 on the host).
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0.0, -t, t)


@triton.jit
def dropout_keep(seed, idx, threshold):
    """The keep mask of element idx (int64 counter). Philox4x32-10, key (seed lo32, seed hi32),
    counter (idx lo32, idx hi32, 0, 0): tl.randint implements exactly this (triton/language/
    random.py: randint4x -> philox -> philox_impl) and returns the first output word as uint32,
    the word csrc/common/philox.h uses. keep iff (r >> 8) >= threshold."""
    r = tl.randint(seed, idx)
    return (r >> 8).to(tl.int32) >= threshold


@triton.jit
def weighted_row_sum(v_ptr, m_ptr, n, cols, cmask, ncols, BR: tl.constexpr, BC: tl.constexpr):
    """sum_i v[i] M[i, cols] for a vector v (n,) and a dense row-major M (n, ncols), cols a
    block of BC column indices; rows in blocks of BR in index order (a fixed summation order)."""
    acc = tl.zeros((BC,), dtype=tl.float32)
    for r0 in range(0, n, BR):
        rows = r0 + tl.arange(0, BR)
        rmask = rows < n
        v = tl.load(v_ptr + rows, mask=rmask, other=0.0)
        m = tl.load(m_ptr + rows.to(tl.int64)[:, None] * ncols + cols[None, :],
                    mask=rmask[:, None] & cmask[None, :], other=0.0)
        acc += tl.sum(v[:, None] * m, 0)
    return acc


def row_block_shape(W: int) -> tuple[int, int]:
    """(BN, BW) of a program that holds BN whole rows of width W: BW = W rounded up to a power of
    two, BN rows (16 to 64) so that the tile holds about 4096 elements."""
    BW = block_size(W)
    return max(16, min(64, 4096 // BW)), BW


@triton.jit
def row_block_tile(N, W, BN: tl.constexpr, BW: tl.constexpr):
    """This program's (BN x BW) tile of a dense row-major (B, N, W) tensor, on a grid of (row
    blocks, B): (batch b, row indices, row mask, column indices, column mask, tile mask, int64
    element offsets)."""
    b = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    rmask = rows < N
    cw = tl.arange(0, BW)
    cmask = cw < W
    mk = rmask[:, None] & cmask[None, :]
    offs = (b * N + rows.to(tl.int64))[:, None] * W + cw[None, :]
    return b, rows, rmask, cw, cmask, mk, offs
