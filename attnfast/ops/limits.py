"""Hardware and kernel limits that decide which backend can take an input, in one place.

The C++ side keeps its copies in csrc/cuda/limits.h, which the kernels and their glue use, and
reports them in ``attnfast.build_info()["limits"]``; tests/test_limits.py checks that the two agree.
"""
from __future__ import annotations

# CUDA caps gridDim.y and gridDim.z at 65535 blocks. Kernels that put a batch-like count there
# (the batch of the attention grids, B * write heads of the memory kernels) split or refuse past it.
CUDA_MAX_GRID_YZ = 65535

# The CUDA DNC allocation sorts all N usages of a row inside one block's shared memory.
CUDA_MAX_ALLOC_SLOTS = 8192
