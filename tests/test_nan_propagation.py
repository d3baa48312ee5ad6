"""A NaN in the inputs reaches the outputs it feeds, on every backend as on the reference: the
cpu attention used to turn a query row with a NaN into a row of zeros (its row max skips NaN
and a NaN normaliser was read as a fully masked row)."""
from __future__ import annotations

import pytest
import torch

import attnfast
from conftest import device_for, require_backend


@pytest.mark.parametrize("backend", ["reference", "cpu", "simt", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_nan_reaches_exactly_the_rows_it_feeds(backend, dtype):
    require_backend(backend)
    dev = device_for(backend)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 5, 16, dtype=dtype, device=dev) for _ in range(3))
    q[0, 1, 3] = float("nan")           # one query row
    k2 = k.clone()
    k2[1, 4, 0] = float("nan")          # one key: rows that see it (causal: i >= 4) only
    out = attnfast.single_head_attention(q, k2, v, causal=True, backend=backend).float().cpu()
    nan_rows = out.isnan().any(-1)
    expected = torch.zeros(2, 5, dtype=torch.bool)
    expected[0, 1] = True
    expected[1, 4] = True
    assert torch.equal(nan_rows, expected), nan_rows
    assert out[nan_rows].isnan().all()  # the whole row, not a stray element


def test_fully_masked_rows_stay_zero_not_nan():
    require_backend("cpu")
    q, k, v = torch.randn(1, 3, 8), torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    out = attnfast.single_head_attention(q, k, v, attn_mask=mask, backend="cpu")
    assert torch.equal(out[0, 1], torch.zeros(8)) and torch.isfinite(out).all()
