"""The GPU caps that decide refusals in Python (attnfast/ops/limits.py) are the ones the C++
kernels enforce (csrc/cuda/limits.h, reported by the extension's build info)."""
from __future__ import annotations

import pytest

import attnfast
from attnfast.ops import limits


def test_python_caps_equal_the_kernels_caps():
    if attnfast.backends()["cpu"] is not None:
        pytest.skip(f"attnfast._C is not loaded: {attnfast.backends()['cpu']}")
    reported = attnfast.build_info()["limits"]
    assert reported == {"cuda_max_grid_yz": limits.CUDA_MAX_GRID_YZ,
                        "cuda_max_alloc_slots": limits.CUDA_MAX_ALLOC_SLOTS}
