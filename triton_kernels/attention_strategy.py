"""The strategy rule of the GPU attention backends (CUDA, its SIMT harness, Triton): which of
the two strategies runs -- the flash kernels, or library GEMMs on chunks of query rows with row
kernels between them -- and how many query rows a GEMM chunk holds, with the environment
variables that override both.

This module is the authority. csrc/cuda/attention_strategy.h is its C++ mirror (the CUDA op and
the SIMT harness op follow it); tests/test_attention_strategy.py checks that the two give the same
answers and the same errors over a grid of shapes and environment values whenever the compiled
extension exposes the mirror (attnfast._C.attention_use_gemm / attention_chunk_rows). Change the
rule here first, then the mirror. Plain Python: importing it needs neither triton nor torch.

Environment (read at every call)
--------------------------------
``ATTNFAST_ATTN_STRATEGY``: ``auto`` (also when unset or empty), ``flash`` or ``gemm``.
``ATTNFAST_ATTN_GEMM_ROWS``: query rows per GEMM chunk, a positive integer written in decimal
digits only (no sign, no spaces); unset or empty: the rule of ``chunk_rows``.
Any other value raises ValueError naming the variable, the value and the accepted values (in C++:
c10::ValueError, which reaches Python as ValueError with the same message); nothing falls back
silently.

Why the rule is what it is
--------------------------
* Strategy: the flash kernels keep a (BLOCK_M x Dv-slice) fp32 output tile on chip, so past a
  head width of 256 they split Dv into slices that each recompute S = q k^T (at D = Dv = 1024:
  5 GEMM-units of work in the Triton kernels, 9 in the CUDA ones, against the 2 of one pass), and
  their tile loops stay below what the library GEMMs reach. At such widths a chunk row does ~4 D
  flops per score and moves ~6-8 bytes per score, so materialising S for a chunk of rows costs
  little next to the GEMMs (bench/notes/attention_gpu.md has the figures and their sources).
* Chunk rows: the chunk's S buffer (B x rows x Lk fp32) stays within
  max(2 B max(Lq, Lk) max(D, Dv), 4 Mi) values -- linear in the sequence lengths, about the size
  of the inputs, never O(B Lq Lk) -- and a causal attention is cut into chunks of at most
  max(1024, Lq / 4) rows so that most of the masked triangle of a long sequence is skipped.
  Chunks are multiples of 64 rows (or all of Lq). They are that large because the backward's
  dK/dV GEMMs contract over the chunk's rows and read and write their fp32 accumulators once per
  chunk (8 bytes per (key, column) against 2 x rows flops: traffic-bound below ~1000 rows on an
  H100/H200), and because a chunk's GEMMs must fill the GPU (B x rows x Lk / (128 x 256) output
  tiles should be a few waves over ~132 SMs). The rule comes from that arithmetic; it has not
  been tuned on a GPU.
"""
from __future__ import annotations

import os

__all__ = ["STRATEGY_ENV", "GEMM_ROWS_ENV", "WIDE_HEAD", "use_gemm_strategy", "chunk_rows"]

STRATEGY_ENV = "ATTNFAST_ATTN_STRATEGY"
GEMM_ROWS_ENV = "ATTNFAST_ATTN_GEMM_ROWS"
WIDE_HEAD = 256  # auto takes the GEMM strategy when max(D, Dv) exceeds this


def use_gemm_strategy(D: int, Dv: int) -> bool:
    """Whether the GEMM strategy runs for head widths D (q, k) and Dv (v)."""
    value = os.environ.get(STRATEGY_ENV, "")
    if value in ("", "auto"):
        return max(D, Dv) > WIDE_HEAD
    if value in ("flash", "gemm"):
        return value == "gemm"
    raise ValueError(f'attnfast: {STRATEGY_ENV}="{value}" is not valid; expected auto, flash or '
                     'gemm (unset or empty means auto)')


def _rows_override() -> int | None:
    value = os.environ.get(GEMM_ROWS_ENV, "")
    if value == "":
        return None
    if value.isascii() and value.isdigit() and int(value) > 0:
        return int(value)
    raise ValueError(f'attnfast: {GEMM_ROWS_ENV}="{value}" is not valid; expected a positive '
                     'integer (decimal digits; unset or empty means the default rule)')


def chunk_rows(B: int, Lq: int, Lk: int, D: int, Dv: int, causal: bool) -> int:
    """Query rows per chunk of the GEMM strategy, between 1 and max(Lq, 1)."""
    rows = _rows_override()
    if rows is not None:
        return min(rows, max(Lq, 1))
    budget = max(2 * B * max(Lq, Lk) * max(D, Dv, 1), 1 << 22)
    rows = budget // max(B * Lk, 1)
    if causal:
        rows = min(rows, max(1024, -(-Lq // 256) * 64))
    rows = max(64, rows // 64 * 64)
    return min(rows, max(Lq, 1))
