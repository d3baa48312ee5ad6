"""Loads the compiled extension attnfast._C.

If it is missing (a pure-Python checkout) or was built against another torch, importing
attnfast still works: a warning says why, and every op runs on the PyTorch reference.
"""
from __future__ import annotations

import warnings

import torch

_C = None
LOAD_ERROR: str | None = None

try:
    from attnfast import _C as _compiled  # noqa: F401  (registers torch.ops.attnfast.*)

    _built_for = _compiled.build_info().get("torch_version", "")
    if _built_for.split("+")[0] != torch.__version__.split("+")[0]:
        LOAD_ERROR = (
            f"attnfast._C was built against torch {_built_for} but torch {torch.__version__} "
            "is running; rebuild with `pip install --no-build-isolation -e .`"
        )
    else:
        _C = _compiled
except (ImportError, OSError) as exc:  # missing, or undefined symbols from another torch
    LOAD_ERROR = f"attnfast._C could not be loaded ({exc})"

if LOAD_ERROR is not None:
    warnings.warn(
        f"{LOAD_ERROR}. attnfast falls back to its PyTorch reference implementations.",
        RuntimeWarning,
        stacklevel=2,
    )


# The SIMT host harness (tests and kernel authors only): attnfast._simt compiles the CUDA
# kernels as host C++ and runs them thread by thread on the CPU (csrc/simt/README.md). It is the
# explicit-only backend "simt"; missing is normal (ATTNFAST_NO_SIMT=1 builds), so no warning.
SIMT_LOAD_ERROR: str | None = None
if _C is not None:
    try:
        from attnfast import _simt  # noqa: F401  (registers torch.ops.attnfast_simt.*)
    except (ImportError, OSError) as exc:
        SIMT_LOAD_ERROR = ("the SIMT harness extension attnfast._simt is not built (a test-only "
                           f"build; ATTNFAST_NO_SIMT=1 or no CUDA headers) [{exc}]")
else:
    SIMT_LOAD_ERROR = LOAD_ERROR


def simt_loaded() -> bool:
    return SIMT_LOAD_ERROR is None


def loaded() -> bool:
    return _C is not None


def build_info() -> dict:
    """How the compiled extension was built (backends, CUDA archs, compiler, torch, OpenMP, CPU
    ISA in use), or why it is not available."""
    if _C is None:
        return {"backends": [], "error": LOAD_ERROR}
    return dict(_C.build_info())


# Fixed for the life of the process; read once so dispatch stays traceable by torch.compile.
_STATIC_INFO = dict(_C.build_info()) if _C is not None else {}


def has_cuda_kernels() -> bool:
    return "cuda" in _STATIC_INFO.get("backends", ())


def cuda_missing_reason() -> str:
    return _STATIC_INFO.get("cuda_missing_reason") or "not built"
