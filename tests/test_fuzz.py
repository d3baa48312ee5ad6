"""Differential fuzzing: every op x every available compiled backend against the float64 reference,
forward and backward, over hypothesis-drawn shapes (0, 1, primes, larger), layouts (contiguous,
transposed copies, batch-expanded views, sliced views) and dtypes. The comparison rule is
``attnfast.check``'s (the test suite's): fp32 within 2e-5 of the fp64 oracle (or, for an
ill-conditioned output that the fp32 reference misses by more, within twice the fp32 reference's
error), bf16/fp16 within twice the reference's own low-precision error.

CI runs a fixed budget per op (``FUZZ_EXAMPLES``, derandomized so CI is repeatable); set
``ATTNFAST_FUZZ_EXAMPLES=500`` for a long run. A failure prints the drawn case (op, backend,
dtype, sizes, layout, seed): ``attnfast.check.samples`` rebuilds it.
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnfast import check, dispatch
from attnfast.ops import spec
from conftest import require_backend

FUZZ_EXAMPLES = int(os.environ.get("ATTNFAST_FUZZ_EXAMPLES", "12"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SIZES = st.sampled_from([1, 2, 3, 5, 7, 8, 13, 16, 31, 33])   # 1, primes, powers of two, odd
ROWS = st.sampled_from([0, 1, 2, 3, 5, 17])                    # batch/row counts, 0 included


def _transposed(t):
    """Same values, the first and last dims swapped in memory (non-contiguous)."""
    return t.transpose(0, -1).contiguous().transpose(0, -1) if t.dim() > 1 else t


def _sliced(t):
    """Same values, every other element of a twice-as-long buffer along the last dim."""
    if t.dim() == 0 or t.shape[-1] == 0:
        return t
    wide = torch.repeat_interleave(t, 2, dim=-1)
    return wide[..., ::2]


def _batch_expanded(t):
    """Batch entries all equal to the first: a 0-stride view along dim 0."""
    if t.dim() < 2 or t.shape[0] == 0:
        return t
    return t[:1].expand(t.shape)


LAYOUTS = {"contiguous": None, "transposed": _transposed, "sliced": _sliced,
           "batch-expanded": _batch_expanded}


def _backends(op_name):
    op = dispatch._OPS[op_name]
    return [b for b in op.implementations if b not in ("reference", "cuda")]


def _assert_ok(result, case):
    assert result.ok, (f"{result.op} on {result.backend} ({result.dtype}) disagrees with the "
                       f"reference: {result.note} (fwd err {result.fwd_err:.3e}, grad err "
                       f"{result.bwd_err:.3e}, tolerance {result.tolerance}); case {case}")


def _case(data, op_name, backend, builder):
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    layout = data.draw(st.sampled_from(sorted(LAYOUTS)), label="layout")
    dtypes = check.DTYPES.get(op_name, check.MEMORY_DTYPES)
    dtype = data.draw(st.sampled_from(dtypes), label="dtype")
    sample, fn = builder(torch.Generator().manual_seed(seed))
    result = check._check_one(op_name, fn, sample, backend, dtype, LAYOUTS[layout])
    _assert_ok(result, dict(seed=seed, layout=layout, dtype=str(dtype), sizes=sample.label))


@pytest.mark.parametrize("backend", _backends("single_head_attention"))
@FUZZ
@given(data=st.data())
def test_fuzz_attention(backend, data):
    require_backend(backend)
    b, lq, lk, d = (data.draw(ROWS, label="B"), data.draw(ROWS, label="Lq"),
                    data.draw(ROWS, label="Lk"), data.draw(SIZES, label="D"))
    causal = data.draw(st.booleans(), label="causal")
    _case(data, "single_head_attention", backend,
          lambda g: check._attention(g, b, lq, lk, d, causal))


@pytest.mark.parametrize("backend", _backends("boom"))
@FUZZ
@given(data=st.data())
def test_fuzz_boom(backend, data):
    require_backend(backend)
    rows, dm = data.draw(ROWS, label="rows"), data.draw(SIZES, label="d_model")
    dff = dm * data.draw(st.integers(1, 4), label="chunks") + data.draw(st.sampled_from([0, 0, 1, 3]), label="extra")
    lead = (rows,) if data.draw(st.booleans(), label="2d") else (2, rows)
    _case(data, "boom", backend, lambda g: check._boom(g, lead, dm, dff))


@pytest.mark.parametrize("backend", _backends("lstm"))
@FUZZ
@given(data=st.data())
def test_fuzz_lstm(backend, data):
    require_backend(backend)
    reasons = spec.kernel_reasons(backend, ["lstm_forward"])
    if reasons:
        pytest.skip(f"backend {backend!r} lacks lstm_forward: {'; '.join(reasons)}")
    # T, B >= 1: the compiled backends leave empty sequences and batches to the reference (an
    # explicit backend refuses them); small T, B, H: the SIMT harness and interpreter are slow.
    t, b = data.draw(st.sampled_from([1, 2, 3, 5]), label="T"), data.draw(st.sampled_from([1, 2, 3]), label="B")
    i = data.draw(SIZES, label="I")
    h = data.draw(st.sampled_from([1, 2, 3, 5, 8, 13, 16, 17, 24]), label="H")
    _case(data, "lstm", backend, lambda g: check._lstm(g, t, b, i, h))


MEMORY_OPS = [name for name in dispatch._OPS if name not in check.DTYPES]


@pytest.mark.parametrize("op_name,backend", [(op, b) for op in MEMORY_OPS for b in _backends(op)])
@FUZZ
@given(data=st.data())
def test_fuzz_memory(op_name, backend, data):
    require_backend(backend)
    b = data.draw(st.sampled_from([1, 2, 3]), label="B")
    n, w = data.draw(SIZES, label="N"), data.draw(SIZES, label="W")
    h, r = data.draw(st.integers(1, 3), label="H"), data.draw(st.integers(1, 3), label="R")
    _case(data, op_name, backend, lambda g: check._memory_samples(op_name, g, b, n, w, h, r))


def test_every_registered_op_has_fuzz_samples():
    """A new op falls into MEMORY_OPS above; without sample inputs in attnfast/check.py it fails
    here by name rather than being fuzzed by nothing."""
    g = torch.Generator().manual_seed(0)
    missing = [op for op in MEMORY_OPS if check._memory_samples(op, g, 2, 8, 5, 2, 3) is None]
    assert not missing, f"no sample inputs in attnfast/check.py for {missing}"
