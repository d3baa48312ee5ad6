"""Autocast for attnfast's ops: under ``torch.autocast`` they behave as torch's own ops do.

torch sorts its ops into cast policies. attnfast follows the same ones:
  * Boom and attention are GEMM ops, like ``linear`` and ``scaled_dot_product_attention``:
    "lower precision" -- every floating input that is not fp64 is cast to the autocast dtype
    (bf16 or fp16), the op runs there (the kernels accumulate in fp32) and returns that dtype;
  * the memory ops (usage products, link sums, sort-based allocation) are precision-sensitive
    reductions, like torch's ``cumprod``/``softmax`` family: "fp32" -- lower-precision inputs are
    widened to fp32 and the result is fp32.
Inside the op autocast is switched off, so a backend's own torch calls (the reference's matmuls)
see the dtypes chosen here and nothing is cast twice. The casts are ordinary differentiable
``.to()`` calls: gradients flow back to the fp32 parameters in their own dtype, as with torch.
"""
from __future__ import annotations

import contextlib

import torch

_LOWER = (torch.float32, torch.float16, torch.bfloat16)


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force for ``device_type`` ("cpu", "cuda"), or None when off."""
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def _device_type(tensors) -> str | None:
    for t in tensors:
        if isinstance(t, torch.Tensor):
            return t.device.type
    return None


def _cast(t, dtype):
    if isinstance(t, torch.Tensor) and t.dtype in _LOWER and t.dtype != dtype:
        return t.to(dtype)
    return t


def lower_precision(*tensors):
    """``(tensors, context)``: under autocast, the floating tensors (fp64 excepted) in the
    autocast dtype and a context that switches autocast off for the op; else unchanged and a
    no-op context. Non-tensor entries (None) pass through."""
    device_type = _device_type(tensors)
    dtype = autocast_dtype(device_type) if device_type else None
    if dtype is None:
        return tensors, contextlib.nullcontext()
    return tuple(_cast(t, dtype) for t in tensors), torch.autocast(device_type, enabled=False)


def full_precision(*tensors):
    """``(tensors, context)``: under autocast, bf16/fp16 tensors widened to fp32 and a context
    that switches autocast off for the op; else unchanged and a no-op context."""
    device_type = _device_type(tensors)
    if device_type is None or autocast_dtype(device_type) is None:
        return tensors, contextlib.nullcontext()
    return tuple(_cast(t, torch.float32) for t in tensors), torch.autocast(device_type, enabled=False)
