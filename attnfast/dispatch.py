"""Backend selection that explains itself.

Every attnfast op has up to four implementations: ``reference`` (pure PyTorch, always
available, the oracle), ``cpu`` (C++ kernels), ``cuda`` (hand-written CUDA kernels) and
``triton``. A fifth, ``simt``, runs the CUDA kernels on the CPU through the SIMT host harness
(test builds only; never chosen by ``auto``): kernel authors and the tests use it to check the
CUDA code against the reference on machines without a GPU. Each implementation declares what it supports as a function returning the reasons it
refuses an input (empty: it takes it). ``backend="auto"`` takes the first implementation in
the device's preference order that accepts the input; an explicitly requested backend that
refuses raises :class:`BackendUnavailable` listing its reasons. :func:`explain` prints the whole
decision.

The process default comes from ``ATTNFAST_BACKEND`` (default ``auto``).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, Callable

import torch

from attnfast import _extension

BACKENDS = ("reference", "cpu", "cuda", "triton", "simt")
# Preference order of backend="auto" per device type; the reference always ends the list.
AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot take this input."""


def triton_interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_missing() -> str | None:
    for module in ("triton", "attnfast.triton_kernels"):
        if importlib.util.find_spec(module) is None:
            return f"the {module} package is not installed"
    return None


_STATUS: dict[str, str | None] | None = None


def backend_status() -> dict[str, str | None]:
    """Each backend -> None if it can run in this process, else the reason it cannot.

    Computed once per process (it depends only on the build, the installed packages, the GPU and
    TRITON_INTERPRET), so that dispatch costs a dict lookup and torch.compile can trace it.
    """
    global _STATUS
    if _STATUS is None:
        _STATUS = _compute_status()
    return _STATUS


def _compute_status() -> dict[str, str | None]:
    status: dict[str, str | None] = {"reference": None}
    status["cpu"] = None if _extension.loaded() else _extension.LOAD_ERROR
    if not _extension.loaded():
        status["cuda"] = _extension.LOAD_ERROR
    elif not _extension.has_cuda_kernels():
        status["cuda"] = f"attnfast._C was built without CUDA kernels ({_extension.cuda_missing_reason()})"
    elif not torch.cuda.is_available():
        status["cuda"] = "no CUDA device is available (torch.cuda.is_available() is False)"
    else:
        status["cuda"] = None
    status["simt"] = None if _extension.simt_loaded() else _extension.SIMT_LOAD_ERROR
    triton_err = _triton_missing()
    if triton_err:
        status["triton"] = triton_err
    elif not torch.cuda.is_available() and not triton_interpreter_on():
        status["triton"] = "no CUDA device, and the Triton interpreter is off (TRITON_INTERPRET=1)"
    else:
        status["triton"] = None
    return status


# What dispatch reads under torch.compile: a constant per backend. Dynamo evaluates it instead of
# tracing backend_status(), whose first call fills _STATUS -- traced, that is a mutation dynamo
# guards on (`_STATUS is None`), and the second call of a compiled function would recompile.
@torch.compiler.assume_constant_result
def unavailable_reason(backend: str) -> str | None:
    """None if ``backend`` can run in this process, else why not (``backend_status()[backend]``)."""
    return backend_status()[backend]


def backends() -> dict[str, str | None]:
    """Which backends can run in this process: name -> None if available, else why not."""
    return dict(backend_status())


def default_backend() -> str:
    name = os.environ.get("ATTNFAST_BACKEND", "auto")
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"ATTNFAST_BACKEND must be 'auto' or one of {BACKENDS}, got {name!r}")
    return name


@dataclasses.dataclass(frozen=True)
class Implementation:
    backend: str
    refuses: Callable[[Any], list[str]]  # reasons this implementation cannot take the input
    run: Callable[[Any], Any]


def device_reasons(inp, backend: str, dtypes: tuple[torch.dtype, ...]) -> list[str]:
    """The common device/dtype rules of the compiled backends, for inputs with .device/.dtype."""
    reasons = []
    dev = inp.device.type
    if backend in ("cpu", "simt") and dev != "cpu":
        reasons.append(f"tensors are on {inp.device}, the {backend} backend takes CPU tensors")
    if backend == "cuda" and dev != "cuda":
        reasons.append(f"tensors are on {inp.device}, the cuda backend takes CUDA tensors")
    if backend == "triton" and dev != "cuda" and not (dev == "cpu" and triton_interpreter_on()):
        reasons.append(
            f"tensors are on {inp.device}; triton takes CUDA tensors (or CPU tensors under "
            "TRITON_INTERPRET=1)"
        )
    if inp.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        reasons.append(f"dtype {str(inp.dtype).replace('torch.', '')} is not one of {names}")
    return reasons


class Op:
    """One attnfast op: how to normalise its arguments and its implementations."""

    def __init__(self, name: str, prepare: Callable[..., Any], implementations: list[Implementation],
                 auto_order: dict[str, tuple[str, ...]] | None = None,
                 notes: Callable[[Any, str], list[str]] | None = None):
        self.name = name
        # notes(inp, chosen_backend): extra lines for explain() about how the chosen backend
        # will run this input (e.g. attention's keep-or-recompute policy).
        self.notes = notes
        self.prepare = prepare
        self.implementations = {impl.backend: impl for impl in implementations}
        # Per-op preference of backend="auto" where measurements say the default is wrong.
        self.auto_order = {**AUTO_ORDER, **(auto_order or {})}

    def reasons(self, backend: str, inp) -> list[str]:
        if backend not in self.implementations:
            return [f"{self.name} has no {backend} implementation"]
        status = unavailable_reason(backend)
        if status is not None:
            return [status]
        return self.implementations[backend].refuses(inp)

    def candidates(self, inp) -> tuple[str, ...]:
        return self.auto_order.get(inp.device.type, ("reference",))

    def select(self, inp, backend: str | None) -> Implementation:
        backend = backend or default_backend()
        if backend != "auto":
            if backend not in BACKENDS:
                raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
            reasons = self.reasons(backend, inp)
            if reasons:
                raise BackendUnavailable(
                    f"attnfast.{self.name}: backend {backend!r} cannot take this input: "
                    + "; ".join(reasons)
                    + f". Use backend='auto' to fall back; attnfast.explain(...) lists all backends."
                )
            return self.implementations[backend]
        for name in self.candidates(inp):
            if not self.reasons(name, inp):
                return self.implementations[name]
        return self.implementations["reference"]

    def __call__(self, inp, backend: str | None = None):
        return self.select(inp, backend).run(inp)

    def explain(self, inp, backend: str | None = None) -> str:
        chosen = self.select(inp, backend).backend
        lines = [f"attnfast.{self.name} on {inp.device} / {str(inp.dtype).replace('torch.', '')}:"]
        order = list(self.candidates(inp))
        for name in order + [b for b in BACKENDS if b not in order]:
            reasons = self.reasons(name, inp)
            if name == chosen:
                mark = "-> runs"
            elif not reasons:
                mark = "   could run (lower in the auto order)" if name in order else "   could run (only when asked for)"
            else:
                mark = "   refused: " + "; ".join(reasons)
            lines.append(f"  {name:9s} {mark}")
        if self.notes is not None:
            lines += [f"  {chosen}: {note}" for note in self.notes(inp, chosen)]
        return "\n".join(lines)


_OPS: dict[str, Op] = {}


def register(op: Op) -> Op:
    _OPS[op.name] = op
    return op


def explain(op, *args, backend: str | None = None, **kwargs) -> str:
    """Which backend ``op(*args, **kwargs)`` would run on, and why every other one was refused.

    ``op`` is a public attnfast function (``attnfast.boom``) or its name (``"boom"``). A function
    that routes between attnfast and torch (``attnfast.scaled_dot_product_attention``) explains
    itself through its ``__attnfast_explain__``.
    """
    explainer = getattr(op, "__attnfast_explain__", None)
    if explainer is not None:
        return explainer(*args, backend=backend, **kwargs)
    name = op if isinstance(op, str) else getattr(op, "__attnfast_op__", getattr(op, "__name__", ""))
    if name not in _OPS:
        raise ValueError(f"unknown attnfast op {op!r}; known: {sorted(_OPS)}")
    entry = _OPS[name]
    return entry.explain(entry.prepare(*args, **kwargs), backend)
