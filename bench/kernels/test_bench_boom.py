"""Boom (SHA-RNN's feed-forward): shortcut (chunk sum), gelu_sigmoid, no dropout.

GFLOP: forward 2 N K F (the GEMM x W^T), forward+backward 3x that, as in bench/boom.py.
"""
import pytest
import torch

import attnfast
from bench.kernels.common import PASSES, Case, measure


def case(n, k, f):
    return Case(
        op="boom", shape=f"N{n} {k}->{f}", dims=dict(N=n, d_model=k, d_ff=f),
        make=lambda g: [torch.randn(n, k, generator=g), torch.randn(f, k, generator=g) / k**0.5,
                        torch.randn(f, generator=g) * 0.1],
        call=lambda x, w, b, backend: attnfast.boom(x, w, b, shortcut=True,
                                                    activation="gelu_sigmoid", backend=backend),
        gflop_fwd=2.0 * n * k * f / 1e9)


CASES = [
    case(1024, 256, 1024),
    pytest.param(case(4096, 1024, 4096), marks=pytest.mark.big),  # SHA-RNN: 4096 tokens
]


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("shape", CASES, ids=Case.id)
def test_boom(benchmark, pytestconfig, shape, pass_, dtype, row):
    measure(benchmark, pytestconfig, shape, pass_, row, dtype)
