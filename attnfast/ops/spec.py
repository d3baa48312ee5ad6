"""One declaration per compiled op, applied to every backend that has kernels for it.

A compiled op is a forward with an explicit backward op (csrc/schemas.h holds both schemas). It is
declared once, as a :class:`KernelOp`: its fake (meta) functions, its autograd formula and where
its Triton kernels live. :func:`register` applies the declaration to

  * ``attnfast::<op>``       -- the C++ CPU kernels and the CUDA kernels (attnfast._C),
  * ``attnfast_simt::<op>``  -- the CUDA kernels under the SIMT harness (attnfast._simt),
  * ``attnfast::<op>_triton`` -- the Triton kernels, defined here with the schema of the C++ op,

so the three namespaces cannot drift apart. :func:`kernels` gives a backend's ops under the
schema names, which lets a composition of ops (a DNC step, say) be written once for all backends,
and :func:`kernel_reasons` says why a backend lacks an op.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import types
from typing import Callable

import torch

from attnfast import _extension
from attnfast.dispatch import Implementation
from attnfast.ops import seed as seed_ops
from attnfast.ops.first_order import first_order

COMPILED_BACKENDS = ("cpu", "cuda", "simt", "triton")
_NAMESPACE = {"cpu": "attnfast", "cuda": "attnfast", "simt": "attnfast_simt", "triton": "attnfast"}


def save_inputs(ctx, inputs, output):
    """The usual setup_context: every input is saved (tensors, None or plain values)."""
    ctx.save_for_backward(*(t if isinstance(t, torch.Tensor) or t is None else None
                            for t in inputs))
    ctx.plain = tuple(None if isinstance(t, torch.Tensor) or t is None else t for t in inputs)


def backward_from_inputs(ctx, backward_op, *grads):
    """The usual backward formula: ``backward_op(*grads, *inputs)`` gives a gradient per input."""
    inputs = [t if p is None else p for t, p in zip(ctx.saved_tensors, ctx.plain)]
    return backward_op(*grads, *inputs)


@dataclasses.dataclass(frozen=True)
class KernelOp:
    """A compiled forward op and its backward op, declared once.

    forward, backward: the schema names (csrc/schemas.h).
    public: the public op it serves (named in errors, e.g. of double backward).
    fake, fake_backward: the meta functions (output shapes, dtypes, strides) of the two ops.
    setup_context, backward_formula: the autograd formula; ``backward_formula(ctx, backward_op,
        *grads)`` returns a gradient (or None) per forward input, ``backward_op`` being the
        backend's backward op.
    triton: ``"module:forward_fn:backward_fn"`` in attnfast.triton_kernels. The Triton functions
        take the schema's arguments, the dropout seed as an int.
    example: a function returning small valid arguments of the forward (fp32, CPU), for the
        contract test of every declared op on every backend (tests/test_op_declarations.py).
    dense: the kernels index dense row-major tensors; the backends' entry points (:func:`kernels`
        and the Triton ops) make every tensor contiguous. Otherwise the caller prepares the strides
        the schema states.
    """

    forward: str
    backward: str
    public: str
    fake: Callable
    fake_backward: Callable
    triton: str
    example: Callable
    setup_context: Callable = save_inputs
    backward_formula: Callable = backward_from_inputs
    dense: bool = True


_DECLARED: dict[str, KernelOp] = {}
_TRITON_DEFINED: set[str] = set()


def _dense(args):
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)


def _schema(name: str):
    """The schema of ``name`` from the extension that defines it (attnfast._C, else the SIMT
    module, which defines the same table), or None when neither is loaded."""
    for namespace in ("attnfast", "attnfast_simt"):
        if _defined(f"{namespace}::{name}"):
            return getattr(getattr(torch.ops, namespace), name).default._schema
    return None


def _defined(qualname: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(qualname, "")
        return True
    except RuntimeError:
        return False


def _autograd_backward(op: KernelOp, backward_op):
    @first_order(op.public)
    def backward(ctx, *grads):
        grads = tuple(g.contiguous() if isinstance(g, torch.Tensor) else g for g in grads)
        return op.backward_formula(ctx, backward_op, *grads)

    return backward


def _register_namespace(op: KernelOp, namespace: str, forward: str, backward: str):
    torch.library.register_fake(f"{namespace}::{forward}")(op.fake)
    torch.library.register_fake(f"{namespace}::{backward}")(op.fake_backward)
    backward_op = getattr(getattr(torch.ops, namespace), backward)
    torch.library.register_autograd(f"{namespace}::{forward}", _autograd_backward(op, backward_op),
                                    setup_context=op.setup_context)


def _triton_body(op: KernelOp, qualname: str, fn_name: str, schema):
    module_name = op.triton.split(":")[0]
    seed_at = [i for i, a in enumerate(schema.arguments) if a.name == "seed"]

    def body(*args):
        # Imported here: importing attnfast never needs triton.
        fn = getattr(importlib.import_module(f"attnfast.triton_kernels.{module_name}"), fn_name)
        args = list(_dense(args) if op.dense else args)
        for i in seed_at:  # custom ops run eagerly: reading the seed here is no graph break
            args[i] = seed_ops.seed_int(args[i], f"{qualname}: seed")
        return fn(*args)

    return body


def _define_triton(op: KernelOp):
    """``attnfast::<forward>_triton`` and ``attnfast::<backward>_triton``: the schemas of the
    C++ ops, the Triton functions as their CPU (interpreter) and CUDA kernels."""
    _, forward_fn, backward_fn = op.triton.split(":")
    for name, fn_name in ((op.forward, forward_fn), (op.backward, backward_fn)):
        schema = _schema(name)
        qualname = f"attnfast::{name}_triton"
        signature = str(schema)
        signature = signature[signature.index("("):]
        torch.library.define(qualname, signature)
        torch.library.impl(qualname, ("cpu", "cuda"), _triton_body(op, qualname, fn_name, schema))
    _register_namespace(op, "attnfast", f"{op.forward}_triton", f"{op.backward}_triton")
    _TRITON_DEFINED.add(op.forward)


def declared() -> dict[str, KernelOp]:
    """Every declared op, by the schema name of its forward."""
    return dict(_DECLARED)


def register(op: KernelOp) -> KernelOp:
    """Applies ``op``'s declaration to every namespace that has it (see the module docstring)."""
    _DECLARED[op.forward] = op
    if _extension.loaded() and _defined(f"attnfast::{op.forward}"):
        _register_namespace(op, "attnfast", op.forward, op.backward)
        _add_entry("cpu", op)
        _add_entry("cuda", op)
    if _extension.simt_loaded() and _defined(f"attnfast_simt::{op.forward}"):
        _register_namespace(op, "attnfast_simt", op.forward, op.backward)
        _add_entry("simt", op)
    if _schema(op.forward) is not None and _schema(op.backward) is not None:
        _define_triton(op)
        _add_entry("triton", op)
    return op


# ---- the backends' ops ---------------------------------------------------------------------------

# Per backend, its forward ops under their schema names; filled by register() at import time.
_KERNELS = {backend: types.SimpleNamespace() for backend in COMPILED_BACKENDS}


def _add_entry(backend: str, op: KernelOp):
    namespace = getattr(torch.ops, _NAMESPACE[backend])
    packet = getattr(namespace, f"{op.forward}_triton" if backend == "triton" else op.forward)
    if op.dense:
        def entry(*args):
            return packet(*_dense(args))
    else:
        entry = packet
    setattr(_KERNELS[backend], op.forward, entry)


def kernels(backend: str) -> types.SimpleNamespace:
    """The compiled forward ops of ``backend`` under their schema names (``kernels("simt")
    .memory_read_forward(...)``); dense ops take any strides. An op the backend lacks
    (:func:`kernel_reasons`) is not there."""
    return _KERNELS[backend]


def _has_kernel(qualname: str, key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(qualname, key)
    except RuntimeError:  # no such op
        return False


@functools.cache
def _missing(backend: str, name: str) -> str | None:
    if backend == "triton":
        if name not in _TRITON_DEFINED:
            return (f"the Triton op {name}_triton is not defined: its schema comes from attnfast._C "
                    "or attnfast._simt, and neither is loaded")
        module = _DECLARED[name].triton.split(":")[0]
        try:
            importlib.import_module(f"attnfast.triton_kernels.{module}")
        except Exception as exc:  # noqa: BLE001  (any import failure is a reason to refuse)
            return f"triton_kernels/{module}.py cannot be imported ({exc})"
        return None
    key = "CUDA" if backend == "cuda" else "CPU"
    if not _has_kernel(f"{_NAMESPACE[backend]}::{name}", key):
        module = "attnfast._simt" if backend == "simt" else "attnfast._C"
        return f"{module} has no {key} kernel for {name} (rebuild the extension)"
    return None


# A constant for the process: called as one under torch.compile (a cache filled while dynamo
# traces the first call would be a guarded mutation, and the second call would recompile).
@torch.compiler.assume_constant_result
def _missing_constant(backend: str, name: str) -> str | None:
    return _missing(backend, name)


def example_generator() -> torch.Generator:
    """The generator of the declarations' examples (fixed seed: the same inputs every run)."""
    return torch.Generator().manual_seed(0)


def example_distribution(*shape, generator: torch.Generator, total: float = 1.0) -> torch.Tensor:
    """Positive fp32 weights summing to ``total`` over the last dim (attention-like weights)."""
    x = torch.rand(*shape, generator=generator) + 0.05
    return x / x.sum(-1, keepdim=True) * total


def kernel_reasons(backend: str, names) -> list[str]:
    """Why ``backend`` cannot run the ops ``names`` (schema names of forwards): [] when it can."""
    return [r for r in (_missing_constant(backend, n) for n in names) if r is not None]


def compiled_implementations(names, run, refuses) -> list:
    """The ``cpu``, ``cuda``, ``simt`` and ``triton`` implementations of a public op that runs the
    compiled ops ``names``: ``run(kernels(backend), inp)`` computes it; a backend refuses when it
    lacks one of the ops or when ``refuses(backend, inp)`` gives reasons (dtype, device, caps)."""
    def make(backend):
        return Implementation(backend,
                              lambda inp: kernel_reasons(backend, names) + refuses(backend, inp),
                              lambda inp: run(kernels(backend), inp))

    return [make(backend) for backend in COMPILED_BACKENDS]
