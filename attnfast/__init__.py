"""attnfast: fused kernels for single-head attention, the Boom layer, the LSTM layer and NTM/DNC
memory.

Every op runs on one of four backends -- ``reference`` (pure PyTorch), ``cpu`` (C++ kernels),
``cuda`` (hand-written CUDA kernels), ``triton`` -- chosen per call (``backend=...``) or by
``ATTNFAST_BACKEND``; ``explain(op, *args)`` says which one runs and why. Test builds add ``simt``:
the CUDA kernels run on the CPU by the SIMT host harness.
"""
from attnfast import _extension
from attnfast._extension import build_info
from attnfast.dispatch import BackendUnavailable, backends, explain
from attnfast.ops.attention import scaled_dot_product_attention, single_head_attention
from attnfast.ops.boom import boom
from attnfast.ops.lstm import lstm
from attnfast import memory  # noqa: F401  (NTM/DNC memory addressing, Graves' window)
from attnfast import models, nn, reference  # noqa: F401  (models: SHA-RNN on these layers)

__version__ = "0.1.0"

__all__ = [
    "single_head_attention", "scaled_dot_product_attention", "boom", "lstm", "memory", "nn", "models", "reference",
    "build_info", "backends", "explain", "BackendUnavailable",
]
