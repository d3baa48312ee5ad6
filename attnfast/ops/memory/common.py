"""What every memory op shares: argument checks, the dtype rules and caps of the compiled
backends, and the builder of a public op from a composition of compiled ops."""
from __future__ import annotations

import dataclasses

import torch

from attnfast.dispatch import Implementation, Op, device_reasons
from attnfast.ops import spec
from attnfast.ops.limits import CUDA_MAX_ALLOC_SLOTS, CUDA_MAX_GRID_YZ
from attnfast.reference import memory as ref

EPS = ref.EPS
# The DNC state is kept in full precision: the C++ and CUDA kernels take fp32 and fp64, the
# Triton kernels fp32 (under autocast the public ops widen bf16/fp16 inputs, ops/autocast.py).
KERNEL_DTYPES = {"cpu": (torch.float32, torch.float64), "cuda": (torch.float32, torch.float64),
                 "simt": (torch.float32, torch.float64), "triton": (torch.float32,)}


@dataclasses.dataclass
class MemoryInputs:
    """Validated arguments of one public memory function; device/dtype of its first tensor, and
    the sizes of the named axes (B, N, W, H, Hw, R, ...)."""
    args: tuple
    device: torch.device
    dtype: torch.dtype
    dims: dict


def check_tensors(op: str, specs, dims: dict | None = None) -> dict:
    """specs: (name, tensor, "B N W") triples. Checks type, rank, floating dtype, a common
    dtype/device and that each named axis has one size across tensors; returns the sizes."""
    dims = {} if dims is None else dims
    first = None
    for name, t, axes in specs:
        axes = axes.split()
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name} must be a torch.Tensor of shape ({', '.join(axes)}), "
                             f"got {type(t).__name__}")
        if t.dim() != len(axes):
            raise ValueError(f"{op}: {name} must be {len(axes)}-D ({', '.join(axes)}), "
                             f"got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
        if first is None:
            first = (name, t)
        elif t.dtype != first[1].dtype or t.device != first[1].device:
            raise ValueError(f"{op}: {name} is {t.dtype} on {t.device} but {first[0]} is "
                             f"{first[1].dtype} on {first[1].device}; all tensors must match")
        for ax, size in zip(axes, t.shape):
            if ax in dims and dims[ax] != size:
                want = ", ".join(f"{a}={dims[a]}" if a in dims else a for a in axes)
                raise ValueError(f"{op}: {name} must have shape ({want}), got {tuple(t.shape)} "
                                 f"({ax} is {dims[ax]} elsewhere)")
            dims.setdefault(ax, int(size))
    return dims


def inputs(op: str, specs, args) -> MemoryInputs:
    """Checks ``specs`` (see check_tensors) and packs ``args`` for the implementations."""
    dims = check_tensors(op, specs)
    t = specs[0][1]
    return MemoryInputs(tuple(args), t.device, t.dtype, dims)


# ---- what the compiled backends refuse ----------------------------------------------------------

def dtype_reasons(backend: str, inp) -> list[str]:
    reasons = device_reasons(inp, backend, KERNEL_DTYPES[backend])
    if backend == "triton" and inp.dtype == torch.float64:
        reasons.append("the Triton memory kernels are float32 only (use cpu/cuda/reference "
                       "for float64)")
    return reasons


def grid_cap(backends=("cuda", "simt")):
    """The cap of kernels that put one grid row per (batch, write head): CUDA caps a grid's y
    dimension at 65535 blocks. ``backends``: those whose kernels have that grid."""
    def reasons(backend: str, inp) -> list[str]:
        blocks = inp.dims.get("B", 1) * max(inp.dims.get("Hw", 1), 1)
        if backend in backends and blocks > CUDA_MAX_GRID_YZ:
            return [f"B x write heads = {blocks} > {CUDA_MAX_GRID_YZ}: the {backend} kernels put "
                    "one grid row per (batch, head), and CUDA caps a grid's y dimension there"]
        return []

    return reasons


def allocation_cap(backend: str, inp) -> list[str]:
    """The CUDA allocation sort keeps all N usages of a row in one block's shared memory."""
    n = inp.dims.get("N", 0)
    if backend in ("cuda", "simt") and n > CUDA_MAX_ALLOC_SLOTS:
        return [f"N={n} memory slots > {CUDA_MAX_ALLOC_SLOTS}: the CUDA allocation sort keeps all "
                "N usages in one block's shared memory"]
    return []


def memory_slots_cap(backend: str, inp) -> list[str]:
    """The C++/CUDA content-addressing kernels check N >= 1 memory slots (csrc/checks/memory.h);
    a memory of N = 0 slots goes to the reference (or Triton), which give the empty result."""
    if backend in ("cpu", "cuda", "simt") and inp.dims.get("N") == 0:
        return [f"N=0 memory slots: the {backend} content-addressing kernel needs N >= 1"]
    return []


def public_op(name: str, prepare, reference, composition, kernels, caps=()) -> Op:
    """A public memory op: ``reference(*args)`` is the oracle; ``composition(ops, *args)``
    computes it from the compiled forward ops ``kernels`` (schema names) of any backend, ``ops``
    being :func:`attnfast.ops.spec.kernels` of the backend; ``caps`` add refusals (``(backend,
    inp) -> reasons``) to the dtype and device rules."""
    def refuses(backend, inp):
        return dtype_reasons(backend, inp) + [r for cap in caps for r in cap(backend, inp)]

    return Op(name, prepare, [
        Implementation("reference", lambda inp: [], lambda inp: reference(*inp.args)),
        *spec.compiled_implementations(kernels, lambda ops, inp: composition(ops, *inp.args),
                                       refuses),
    ])

