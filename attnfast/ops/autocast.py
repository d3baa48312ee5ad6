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


def _widen_tree(obj):
    if isinstance(obj, torch.Tensor):
        return _cast(obj, torch.float32) if obj.dtype in (torch.float16, torch.bfloat16) else obj
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # NamedTuple (DNCState, DNCInterface)
        return type(obj)(*(_widen_tree(x) for x in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_widen_tree(x) for x in obj)
    return obj


def _first_tensor(obj):
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for x in obj:
            t = _first_tensor(x)
            if t is not None:
                return t
    return None


def full_precision_call(fn, args, kwargs):
    """``fn(*args, **kwargs)`` under the "fp32" policy: with autocast on for the arguments'
    device, bf16/fp16 tensors -- also inside tuples and NamedTuples such as a DNCState -- are
    widened to fp32 and autocast is off inside ``fn``."""
    first = _first_tensor(list(args) + list(kwargs.values()))
    if first is None or autocast_dtype(first.device.type) is None:
        return fn(*args, **kwargs)
    args = _widen_tree(tuple(args))
    kwargs = {k: _widen_tree(v) for k, v in kwargs.items()}
    with torch.autocast(first.device.type, enabled=False):
        return fn(*args, **kwargs)
