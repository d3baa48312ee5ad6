"""Argument checks shared by the public ops and modules: one wording for every flag."""
from __future__ import annotations

import torch


def flag(name: str, value) -> bool:
    """``value`` as a bool, or ValueError naming ``name``: a bool, or the int 0 or 1. Anything
    else -- a tensor (a mask passed in the flag's place), a string ("no" would be truthy),
    None -- is refused rather than read through ``bool()``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not isinstance(value, torch.Tensor) and value in (0, 1):
        return bool(value)
    got = "a tensor (a mask passed in its place?)" if isinstance(value, torch.Tensor) else repr(value)
    raise ValueError(f"{name} must be a bool, got {got}")


def int_at_least(name: str, value, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum`` (not a bool), else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def floating_dtype(name: str, dtype) -> None:
    """None or a floating torch.dtype, else ValueError naming ``name``."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"{name} must be None or a floating-point torch.dtype, got {dtype!r}")
