"""The GPU attention's strategy rule: flash kernels or the GEMM strategy, and the query rows of a
GEMM chunk, with ATTNFAST_ATTN_STRATEGY / ATTNFAST_ATTN_GEMM_ROWS.

triton_kernels/attention_strategy.py is the authority; csrc/cuda/attention_strategy.h is its C++
mirror, which the CUDA and SIMT attention ops apply and attnfast._C exposes
(attention_use_gemm, attention_chunk_rows). Here the authority is pinned down on its own, then
the mirror is held against it over a grid of (D, Dv, environment value) and of shapes: the same
answers, and the same ValueError, word for word, for every value that is not accepted.
"""
from __future__ import annotations

import importlib
import itertools

import pytest

from attnfast.triton_kernels import attention_strategy as rule

STRATEGY = "ATTNFAST_ATTN_STRATEGY"
ROWS = "ATTNFAST_ATTN_GEMM_ROWS"

# None: unset. Accepted values first, then rejected ones (case, spaces, a newline, numbers).
STRATEGY_VALUES = [None, "", "auto", "flash", "gemm",
                   "fast", "GEMM", "Auto", " gemm", "flash ", "auto\n", "0", "gemm,flash"]
ROWS_VALUES = [None, "", "1", "16", "64", "007", "100000000000000000000000000",
               "0", "000", "-3", "+16", " 16", "16 ", "1e3", "1_000", "0x10", "16.0", "abc",
               "\u0661\u0666"]  # Arabic-Indic digits: not decimal ASCII digits
WIDTHS = [(0, 0), (0, 1), (1, 1), (64, 64), (255, 256), (256, 256), (256, 257), (257, 16),
          (16, 300), (512, 264), (1024, 1024), (4096, 8)]
SHAPES = [(1, 1, 1, 1, 1), (2, 70, 110, 40, 24), (4, 1024, 1024, 1024, 1024),
          (4, 1024, 3072, 1024, 1024), (1, 4096, 4096, 512, 512), (2, 16384, 16384, 128, 128),
          (2, 300, 20000, 1024, 1024), (1, 1, 5000, 1024, 1024), (3, 0, 7, 8, 8), (0, 5, 5, 8, 8)]


def _set(monkeypatch, name, value):
    if value is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, value)


def _outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except ValueError as exc:
        return "ValueError", str(exc)


def _mirror():
    """attnfast._C if it exposes the C++ mirror of the rule, else skip."""
    try:
        ext = importlib.import_module("attnfast._C")
    except ImportError as exc:
        pytest.skip(f"attnfast._C is not built ({exc})")
    if not hasattr(ext, "attention_use_gemm"):
        pytest.skip("attnfast._C was built from sources older than csrc/cuda/attention_strategy.h "
                    "(no attention_use_gemm): rebuild the extension")
    return ext


# ---- the authority ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", STRATEGY_VALUES)
def test_strategy_values(value, monkeypatch):
    """Unset, empty and auto: GEMM iff max(D, Dv) > 256; flash and gemm force one; anything else
    is a ValueError that names the variable, the value and the accepted values."""
    _set(monkeypatch, STRATEGY, value)
    for D, Dv in WIDTHS:
        if value in (None, "", "auto"):
            assert rule.use_gemm_strategy(D, Dv) == (max(D, Dv) > 256)
        elif value in ("flash", "gemm"):
            assert rule.use_gemm_strategy(D, Dv) == (value == "gemm")
        else:
            with pytest.raises(ValueError) as info:
                rule.use_gemm_strategy(D, Dv)
            assert str(info.value) == (
                f'attnfast: ATTNFAST_ATTN_STRATEGY="{value}" is not valid; expected auto, flash '
                "or gemm (unset or empty means auto)")


@pytest.mark.parametrize("value", ROWS_VALUES)
def test_chunk_rows_values(value, monkeypatch):
    """A positive decimal integer overrides the rule (capped at Lq); unset or empty: the rule;
    anything else is a ValueError that names the variable, the value and what is accepted."""
    _set(monkeypatch, ROWS, value)
    for B, Lq, Lk, D, Dv in SHAPES:
        for causal in (False, True):
            if value in (None, ""):
                rows = rule.chunk_rows(B, Lq, Lk, D, Dv, causal)
                assert 1 <= rows <= max(Lq, 1)
                assert rows == max(Lq, 1) or rows % 64 == 0
            elif value.isascii() and value.isdigit() and int(value) > 0:
                assert rule.chunk_rows(B, Lq, Lk, D, Dv, causal) == min(int(value), max(Lq, 1))
            else:
                with pytest.raises(ValueError) as info:
                    rule.chunk_rows(B, Lq, Lk, D, Dv, causal)
                assert str(info.value) == (
                    f'attnfast: ATTNFAST_ATTN_GEMM_ROWS="{value}" is not valid; expected a '
                    "positive integer (decimal digits; unset or empty means the default rule)")


# ---- the C++ mirror against it ----------------------------------------------------------------

@pytest.mark.parametrize("value", STRATEGY_VALUES)
def test_cxx_strategy_matches(value, monkeypatch):
    ext = _mirror()
    _set(monkeypatch, STRATEGY, value)
    for D, Dv in WIDTHS:
        assert _outcome(ext.attention_use_gemm, D, Dv) == _outcome(rule.use_gemm_strategy, D, Dv)


@pytest.mark.parametrize("value", ROWS_VALUES)
def test_cxx_chunk_rows_matches(value, monkeypatch):
    ext = _mirror()
    _set(monkeypatch, ROWS, value)
    for (B, Lq, Lk, D, Dv), causal in itertools.product(SHAPES, (False, True)):
        args = (B, Lq, Lk, D, Dv, causal)
        assert _outcome(ext.attention_chunk_rows, *args) == _outcome(rule.chunk_rows, *args)
