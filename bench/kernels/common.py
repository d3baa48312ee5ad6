"""The pytest-benchmark suite's shared parts: the backend rows and :func:`measure`.

Rows: ``reference-cpu`` and ``cpu`` on the CPU; ``reference-cuda``, ``cuda`` and ``triton`` on a
GPU. A row that cannot run in this process is skipped with the reason (no GPU, a backend not
built); ``triton`` is also skipped under ``TRITON_INTERPRET=1`` (the interpreter is not a speed
measure). An op without an implementation for a backend, or a backend that refuses the input
(dtype, size), is skipped with dispatch's own reasons (``attnfast.BackendUnavailable``).

:func:`measure` times one case with ``benchmark.pedantic``:
  1. two untimed calls (the first checks that the backend takes the input; first-call costs:
     allocations, thread pools, autotuning), then one timed call ``t``;
  2. ``iterations`` calls per round, enough for a round of at least ``--benchmark-min-time``
     and 0.1 ms (1 ms on a GPU); on a GPU the last call of each round synchronizes the
     device, so a round times all of its calls' work;
  3. ``rounds`` to fill ``--benchmark-max-time`` (at least ``--benchmark-min-rounds``), after
     warm-up rounds worth a tenth of that time (at least one).
The forward pass runs under ``torch.no_grad``; forward+backward computes the gradients of every
floating-point input (``torch.autograd.grad`` with fixed random output gradients: nothing
accumulates between calls).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Callable

import pytest
import torch

import attnfast
from attnfast import dispatch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PASSES = ("fwd", "fwd+bwd")

# (row id, attnfast backend, device)
ROWS = (("reference-cpu", "reference", "cpu"), ("cpu", "cpu", "cpu"),
        ("reference-cuda", "reference", "cuda"), ("cuda", "cuda", "cuda"),
        ("triton", "triton", "cuda"))

# What measure() timed, for the summary table of conftest.py: dicts of group, row, median_s, ...
RESULTS: list[dict] = []


def row_skip_reason(backend: str, device: str) -> str | None:
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device: the reference-cuda, cuda and triton rows need a GPU"
    if backend == "triton" and dispatch.triton_interpreter_on():
        return "TRITON_INTERPRET=1: the Triton interpreter is not a speed measure"
    return attnfast.backends()[backend]


def row_params() -> list:
    """The ``row`` parameter of every benchmark: (backend, device), skipped with a reason."""
    out = []
    for rid, backend, device in ROWS:
        reason = row_skip_reason(backend, device)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        out.append(pytest.param((backend, device), id=rid, marks=marks))
    return out


@dataclasses.dataclass(frozen=True)
class Case:
    """One op at one shape. ``make(g)`` builds the inputs (float64 or integer, on the CPU; they
    are moved to the row's device and dtype); ``call(*inputs, backend=...)`` runs the op and
    returns a tensor or a (nested) tuple of tensors."""
    op: str
    shape: str                      # the label in the group, e.g. "B16 N128 W64 R4 Hw1"
    dims: dict                      # the shape as numbers (extra_info)
    make: Callable[[torch.Generator], list]
    call: Callable[..., object]
    gflop_fwd: float | None = None  # useful GFLOP of one forward call (None: not meaningful)
    bwd_factor: float = 3.0         # GFLOP of forward+backward / forward
    no_grad: tuple[int, ...] = ()   # input indices that take no gradient (masks)
    fixed_dtype: torch.dtype | None = None  # the ops that run in one dtype only (memory: fp32)

    def id(self) -> str:
        return self.shape.replace(" ", "-")


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}.get(dtype, str(dtype).replace("torch.", ""))


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


def measure(benchmark, config, case: Case, pass_: str, row: tuple[str, str],
            dtype: torch.dtype) -> None:
    backend, device = row
    dtype = case.fixed_dtype or dtype
    train = pass_ == "fwd+bwd"
    g = torch.Generator().manual_seed(0)
    inputs = [t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
              for t in case.make(g)]
    leaves = [t.requires_grad_(True) for i, t in enumerate(inputs)
              if train and t.is_floating_point() and i not in case.no_grad]

    def forward():
        return case.call(*inputs, backend=backend)

    try:  # the first call: does the backend take this input? (and first-call costs)
        with torch.set_grad_enabled(train):
            first = forward()
    except attnfast.BackendUnavailable as exc:
        pytest.skip(str(exc))
    grads = [torch.randn(o.shape, generator=g).to(o) for o in _tensors(first) if o.requires_grad]
    del first

    def step():
        if train:
            outs = [o for o in _tensors(forward()) if o.requires_grad]
            torch.autograd.grad(outs, leaves, grads, allow_unused=True)
        else:
            with torch.no_grad():
                forward()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    step()  # untimed (the first backward's costs), then one timed call
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    t = max(time.perf_counter() - t0, 1e-7)

    min_time = float(config.getoption("benchmark_min_time"))  # pytest-benchmark keeps strings
    max_time = float(config.getoption("benchmark_max_time"))
    iterations = max(1, math.ceil(max(min_time, 1e-3 if device == "cuda" else 1e-4) / t))
    round_s = t * iterations
    rounds = max(config.getoption("benchmark_min_rounds"), math.ceil(max_time / round_s))
    warmup_rounds = min(rounds, max(1, math.ceil(0.1 * max_time / round_s)))
    calls = itertools.count(1)

    def target():
        step()
        if next(calls) % iterations == 0:
            sync()  # once per round: the round's timer then covers all of its calls' work

    gflop = case.gflop_fwd * (case.bwd_factor if train else 1.0) if case.gflop_fwd else None
    group = f"{case.op} {case.shape} {dtype_name(dtype)} {pass_}"
    benchmark.group = group
    benchmark.extra_info.update(
        op=case.op, shape=case.dims, dtype=dtype_name(dtype), backend=backend, device=device,
        **{"pass": pass_}, gflop=gflop, torch_threads=torch.get_num_threads())
    benchmark.pedantic(target, rounds=rounds, iterations=iterations, warmup_rounds=warmup_rounds)
    if benchmark.stats:
        RESULTS.append(dict(group=group, row=_row_id(row), device=device, backend=backend,
                            median_s=benchmark.stats["median"], gflop=gflop))


def _row_id(row: tuple[str, str]) -> str:
    backend, device = row
    return next(rid for rid, b, d in ROWS if (b, d) == (backend, device))
