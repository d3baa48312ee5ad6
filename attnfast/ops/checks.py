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


def probability(name: str, value) -> float:
    """``value`` as a float if it is a number in [0, 1) (None counts as 0, SHA-RNN's "no
    dropout"), else ValueError naming ``name``."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be None or a float in [0, 1), got {value!r}")
    return float(value)


def backend_name(value):
    """``value`` if it names a backend (None, "auto" or one of attnfast.dispatch.BACKENDS), else
    ValueError: a module refuses a misspelt backend when it is built, not at its first call."""
    from attnfast.dispatch import BACKENDS
    if value is not None and (not isinstance(value, str) or value not in ("auto", *BACKENDS)):
        raise ValueError(f"backend must be None, 'auto' or one of {BACKENDS}, got {value!r}")
    return value


def module_input(where: str, name: str, t, like: torch.Tensor | None, dims=None,
                 same_dtype: bool = True) -> None:
    """A module's tensor input: a floating tensor with ``dims`` dimensions (an int or a tuple of
    the allowed counts), on the device of the module's parameter ``like`` and, unless autocast
    is on there, of its dtype (torch's layers would raise 'mat1 and mat2 must have the same
    dtype' or compute on another device)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if dims is not None and t.dim() not in ((dims,) if isinstance(dims, int) else dims):
        want = dims if isinstance(dims, int) else " or ".join(map(str, dims))
        raise ValueError(f"{where}: {name} must be {want}-D, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{where}: {name} must be a floating-point tensor, got {t.dtype}")
    if like is None:
        return
    if t.device != like.device:
        raise ValueError(f"{where}: {name} is on {t.device} but the module's parameters are on "
                         f"{like.device}")
    autocast = t.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(t.device.type)
    if same_dtype and t.dtype != like.dtype and not autocast:
        raise ValueError(f"{where}: {name} is {t.dtype} but the module's parameters are "
                         f"{like.dtype} (convert one, or run under torch.autocast)")
