"""Single-head attention, causal bottom-right (the SHA-RNN memory case when Lk > Lq).

GFLOP: forward 4 D per visible (query, key) pair (q k^T and p v), forward+backward 3.5x that
(2 GEMMs forward, 5 backward), as in bench/attention.py.
"""
import pytest
import torch

import attnfast
from bench.attention import visible_pairs
from bench.kernels.common import PASSES, Case, measure


def case(b, lq, lk, d):
    return Case(
        op="attention", shape=f"B{b} Lq{lq} Lk{lk} D{d}", dims=dict(B=b, Lq=lq, Lk=lk, D=d, Dv=d),
        make=lambda g: [torch.randn(b, n, d, generator=g) for n in (lq, lk, lk)],
        call=lambda q, k, v, backend: attnfast.single_head_attention(q, k, v, causal=True,
                                                                     backend=backend),
        gflop_fwd=4.0 * d * visible_pairs(lq, lk) * b / 1e9, bwd_factor=3.5)


CASES = [
    case(8, 256, 512, 64),      # a small head with a memory of 256 earlier positions
    case(2, 256, 768, 1024),    # SHA-RNN's head (D 1024), a quarter of its lengths
    pytest.param(case(32, 1024, 1024, 64), marks=pytest.mark.big),
    pytest.param(case(4, 1024, 3072, 1024), marks=pytest.mark.big),   # SHA-RNN: B 4, memory 2048
]


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("shape", CASES, ids=Case.id)
def test_attention(benchmark, pytestconfig, shape, pass_, dtype, row):
    measure(benchmark, pytestconfig, shape, pass_, row, dtype)
