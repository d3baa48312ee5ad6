"""attnfast's Triton kernels: one module per concept (``attnfast.triton_kernels.<module>``; this
folder ships inside the attnfast package, never as a top-level ``triton_kernels``).

Each module holds ``@triton.jit`` kernels and plain-Python launchers taking and returning
torch tensors. They run on CUDA tensors, or on CPU tensors under the Triton interpreter
(``TRITON_INTERPRET=1`` set before the module is imported). attnfast imports these modules
lazily, only when the Triton backend is selected, so attnfast itself works without triton.

Modules
-------
attention           fused single-head attention: flash kernels, and the entry points
attention_gemm      attention's GEMM strategy for wide heads (library GEMMs + row kernels)
attention_scores    the per-score math both attention strategies share (masks, dropout, dS)
attention_strategy  the rule that picks a strategy (no triton import; the C++ side follows it)
boom                the Boom feed-forward layer
addressing          memory content addressing, NTM location addressing
allocation          DNC allocation, DNC usage
links               DNC temporal links with the directional reads
read_write          memory erase/add write, memory read
window              Graves' attention window
_common             helpers every kernel module may use; it imports no kernel module

The entry points are also attributes of this package (``attnfast.triton_kernels.content_forward``
...), each imported from its module on first use, so that callers need not know which module
holds which kernel.
"""
from __future__ import annotations

import importlib

_ENTRY_POINTS = {
    "attention": ("attention_forward", "attention_backward"),
    "boom": ("boom_forward", "boom_backward"),
    "addressing": ("content_forward", "content_backward",
                   "ntm_location_forward", "ntm_location_backward"),
    "allocation": ("allocation_forward", "allocation_backward",
                   "dnc_usage_forward", "dnc_usage_backward"),
    "links": ("link_read_forward", "link_read_backward"),
    "read_write": ("write_forward", "write_backward",
                   "memory_read_forward", "memory_read_backward"),
    "window": ("graves_window_forward", "graves_window_backward"),
}
_MODULE_OF = {name: module for module, names in _ENTRY_POINTS.items() for name in names}


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__():
    return sorted(set(globals()) | set(_MODULE_OF))
