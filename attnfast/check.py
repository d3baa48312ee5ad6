"""`python -m attnfast check`: the parity suite as a user command.

Every registered op (``attnfast.dispatch``'s registry: an op without sample inputs here is
itself a failure, so a new op cannot be skipped silently) runs on every backend available in
this process against the pure-PyTorch reference in float64, over a grid of shapes and dtypes,
forward and backward (a random cotangent, gradients for every differentiable input). The rule
is the test suite's: fp32 within an absolute/relative tolerance of the fp64 oracle; bf16/fp16
at most twice the error of the reference run in the same low precision, plus one epsilon of the
dtype at the output's scale. It prints a table, writes JSON, and exits non-zero on any failure.

On a GPU this checks the ``cuda`` and ``triton`` kernels on the user's own device. On a machine
without one it checks ``cpu``, ``triton`` under the Triton interpreter (switched on here when
there is no GPU) and ``simt`` (the CUDA kernels run on the CPU, when the test-only harness is
built), and says plainly that CUDA kernels on a real device were not checked.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Callable

import torch

F64 = torch.float64
LOW_PRECISION = (torch.bfloat16, torch.float16)
FP32_TOL = {"atol": 2e-5, "rtol": 2e-5}  # tests/conftest.py's, for the same oracle


# ---- sample inputs (float64, CPU) per op ---------------------------------------------------------

def _rand(g, *shape, lo=0.0, hi=1.0):
    return torch.rand(*shape, generator=g, dtype=F64) * (hi - lo) + lo


def _randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=F64)


def _dist(g, *shape, total=1.0):
    x = torch.rand(*shape, generator=g, dtype=F64) + 0.05
    return x / x.sum(-1, keepdim=True) * total


def _link(g, b, hw, n):
    return _rand(g, b, hw, n, n) / n * (1 - torch.eye(n, dtype=F64))


@dataclasses.dataclass
class Sample:
    """One call: ``fn(*args, backend=...)``; ``frozen`` names args that carry no gradient."""

    label: str
    args: tuple
    frozen: tuple = ()


def _attention(g, b, lq, lk, d, causal):
    from attnfast import single_head_attention

    def fn(q, k, v, backend):
        return single_head_attention(q, k, v, causal=causal, backend=backend)

    q, k, v = _randn(g, b, lq, d), _randn(g, b, lk, d), _randn(g, b, lk, d)
    return Sample(f"B{b} Lq{lq} Lk{lk} D{d}{' causal' if causal else ''}", (q, k, v)), fn


def _boom(g, lead, dm, dff):
    from attnfast import boom

    x, w, bias = _randn(g, *lead, dm), _randn(g, dff, dm) / math.sqrt(dm), _randn(g, dff) * 0.1
    return Sample(f"x{tuple(lead) + (dm,)} d_ff{dff}", (x, w, bias)), boom


def _lstm(g, t, b, i, h):
    from attnfast import lstm

    def fn(x, h0, c0, w_ih, w_hh, b_ih, b_hh, backend):
        return lstm(x, (h0, c0), w_ih, w_hh, b_ih, b_hh, backend=backend)

    # Weights at nn.LSTM's init scale (uniform in +-1/sqrt(H)), states and inputs O(1).
    k = 1 / math.sqrt(h)
    args = (_randn(g, t, b, i), _randn(g, b, h) * 0.5, _randn(g, b, h),
            _rand(g, 4 * h, i, lo=-k, hi=k), _rand(g, 4 * h, h, lo=-k, hi=k),
            _rand(g, 4 * h, lo=-k, hi=k), _rand(g, 4 * h, lo=-k, hi=k))
    return Sample(f"T{t} B{b} I{i} H{h}", args), fn


def _memory_samples(name: str, g, b: int, n: int, w: int, h: int, r: int):
    from attnfast import memory as M

    fn = getattr(M, name, None)
    if fn is None:
        return None
    label = f"B{b} N{n} W{w} H{h} R{r}"
    if name == "content_addressing":
        args = (_randn(g, b, n, w), _randn(g, b, h, w), _rand(g, b, h, lo=0.5, hi=5.0))
    elif name == "dnc_usage":
        return Sample(label, (_rand(g, b, n), _dist(g, b, h, n, total=0.8), _rand(g, b, r),
                              _dist(g, b, r, n)), frozen=(1,)), fn
    elif name == "dnc_allocation":
        args = (_rand(g, b, n), _rand(g, b, h))
    elif name == "dnc_write_weights":
        args = (_rand(g, b, n), _dist(g, b, h, n), _rand(g, b, h), _rand(g, b, h, lo=0.3))
    elif name == "memory_write":
        args = (_randn(g, b, n, w), _dist(g, b, h, n, total=0.9), _rand(g, b, h, w), _randn(g, b, h, w))
    elif name == "memory_read":
        args = (_randn(g, b, n, w), _dist(g, b, r, n))
    elif name == "dnc_link_update":
        args = (_link(g, b, h, n), _dist(g, b, h, n, total=0.7), _dist(g, b, h, n, total=0.8))
    elif name == "dnc_directional_read":
        args = (_link(g, b, h, n), _dist(g, b, r, n))
    elif name == "dnc_access_step":
        state = M.DNCState(_randn(g, b, n, w), _dist(g, b, r, n, total=0.9), _dist(g, b, h, n, total=0.8),
                           _link(g, b, h, n), _dist(g, b, h, n, total=0.7), _rand(g, b, n))
        iface = M.DNCInterface(
            write_vectors=_randn(g, b, h, w), erase_vectors=_rand(g, b, h, w), free_gate=_rand(g, b, r),
            allocation_gate=_rand(g, b, h), write_gate=_rand(g, b, h, lo=0.3),
            read_mode=_dist(g, b, r, 1 + 2 * h), write_keys=_randn(g, b, h, w),
            write_strengths=_rand(g, b, h, lo=0.5, hi=5.0), read_keys=_randn(g, b, r, w),
            read_strengths=_rand(g, b, r, lo=0.5, hi=5.0))
        # The previous write weights enter the usage without gradient (DeepMind's DNC).
        return Sample(label, (state, iface), frozen=("0.write_weights",)), fn
    elif name == "ntm_address":
        s = min(3, n - (1 - n % 2))
        args = (_randn(g, b, n, w), _randn(g, b, h, w), _rand(g, b, h, lo=0.5, hi=5.0), _rand(g, b, h),
                _dist(g, b, h, s), _rand(g, b, h, lo=1.0, hi=3.0), _dist(g, b, h, n))
    elif name == "graves_window":
        k, u, c = h + 1, n, w
        args = (_randn(g, b, k), _randn(g, b, k), _randn(g, b, k), _rand(g, b, k, hi=float(u)),
                _rand(g, b, u, c))
    elif name == "graves_window_sequence":
        k, u, c, t = h + 1, n, w, r + 2
        args = (_randn(g, b, t, k), _randn(g, b, t, k), _randn(g, b, t, k) - 1.0, _rand(g, b, u, c))
    else:
        return None
    return Sample(label, args), fn


MEMORY_GRID = [(2, 8, 5, 2, 3), (1, 1, 1, 1, 1), (3, 33, 7, 1, 2)]  # B N W H(w) R
ATTENTION_GRID = [(2, 5, 9, 16, True), (1, 1, 1, 1, False), (2, 33, 47, 40, True), (1, 64, 64, 64, False)]
BOOM_GRID = [((3, 7), 16, 48), ((1,), 8, 8), ((2, 5), 24, 100), ((64,), 64, 256)]
LSTM_GRID = [(4, 3, 7, 17), (1, 1, 1, 1), (5, 2, 16, 24), (32, 4, 32, 32)]  # T B I H


def samples_for(name: str, quick: bool, seed: int = 0):
    """[(Sample, fn)] for one op, or None when the op has no samples declared here."""
    g = torch.Generator().manual_seed(seed)
    if name == "single_head_attention":
        grid = ATTENTION_GRID[:2] if quick else ATTENTION_GRID
        return [_attention(g, *p) for p in grid]
    if name == "boom":
        grid = BOOM_GRID[:2] if quick else BOOM_GRID
        return [_boom(g, *p) for p in grid]
    if name == "lstm":
        grid = LSTM_GRID[:2] if quick else LSTM_GRID
        return [_lstm(g, *p) for p in grid]
    grid = MEMORY_GRID[:2] if quick else MEMORY_GRID
    out = [_memory_samples(name, g, *p) for p in grid]
    return None if any(o is None for o in out) else out


DTYPES = {"single_head_attention": (torch.float32, torch.bfloat16, torch.float16),
          "boom": (torch.float32, torch.bfloat16, torch.float16),
          "lstm": (torch.float32, torch.bfloat16, torch.float16)}
MEMORY_DTYPES = (torch.float32,)


# ---- running and comparing ----------------------------------------------------------------------

def _leaves(args, prefix=""):
    """(path, tensor) of every floating tensor in args, NamedTuples included."""
    out = []
    for i, a in enumerate(args):
        key = f"{prefix}{i}"
        if isinstance(a, torch.Tensor):
            out.append((key, a))
        elif isinstance(a, tuple) and hasattr(a, "_fields"):
            out += [(f"{key}.{f}", t) for f, t in zip(a._fields, a) if isinstance(t, torch.Tensor)]
    return out


def _rebuild(args, mapping):
    out = []
    for i, a in enumerate(args):
        key = f"{i}"
        if isinstance(a, torch.Tensor):
            out.append(mapping[key])
        elif isinstance(a, tuple) and hasattr(a, "_fields"):
            out.append(type(a)(*(mapping.get(f"{key}.{f}", t) for f, t in zip(a._fields, a))))
        else:
            out.append(a)
    return tuple(out)


def _flat_outputs(out):
    if isinstance(out, torch.Tensor):
        return [out]
    flat = []
    for o in out:
        flat += _flat_outputs(o) if isinstance(o, (tuple, list)) else [o]
    return [o for o in flat if isinstance(o, torch.Tensor) and o.is_floating_point()]


def _run(fn, sample: Sample, dtype, device, backend, cotangent_seed=1, layout=None):
    """(outputs, grads) in float64 on the CPU, the call made in ``dtype`` on ``device``.
    ``layout(tensor) -> tensor`` (same shape, other strides, e.g. a transposed copy) is applied
    to every input after it becomes a leaf, so gradients are those of the leaves."""
    leaves = _leaves(sample.args)
    mapping, views = {}, {}
    for key, t in leaves:
        x = t.to(dtype=dtype, device=device)
        mapping[key] = x.requires_grad_(key not in _frozen_keys(sample))
        views[key] = layout(mapping[key]) if layout is not None else mapping[key]
    args = _rebuild(sample.args, views)
    outs = _flat_outputs(fn(*args, backend=backend))
    g = torch.Generator().manual_seed(cotangent_seed)
    cots = [torch.randn(o.shape, generator=g, dtype=F64).to(dtype=o.dtype, device=o.device) for o in outs]
    wrt = [mapping[k] for k, _ in leaves if mapping[k].requires_grad]
    grads = torch.autograd.grad(outs, wrt, cots, allow_unused=True) if wrt else []
    grads = [torch.zeros_like(x) if gr is None else gr for x, gr in zip(wrt, grads)]
    return [o.detach().to("cpu", F64) for o in outs], [gr.detach().to("cpu", F64) for gr in grads]


def _frozen_keys(sample: Sample):
    return {str(f) for f in sample.frozen}


def _max_err(got, want):
    errs = [(a - b).abs().max().item() if a.numel() else 0.0 for a, b in zip(got, want)]
    return max(errs, default=0.0)


def _nonfinite(got, want):
    return any(bool((~torch.isfinite(a) & torch.isfinite(b)).any()) for a, b in zip(got, want))


def _within_twice_reference(got, want, same_precision_ref, dtype):
    """Each kernel output within twice the error the reference makes in the same precision (both
    against the fp64 oracle), plus one epsilon at the output's scale."""
    eps = torch.finfo(dtype).eps
    for a, o, lo in zip(got, want, same_precision_ref):
        if not o.numel():
            continue
        bound = 2.0 * (lo - o).abs().max().item() + eps * max(o.abs().max().item(), 1.0)
        if (a - o).abs().max().item() > bound:
            return False, bound
    return True, None


def _within(got, want, same_precision_ref, dtype):
    """(ok, tolerance text) for one list of tensors."""
    if _nonfinite(got, want):
        return False, "non-finite where the oracle is finite"
    if dtype in LOW_PRECISION:
        ok, bound = _within_twice_reference(got, want, same_precision_ref, dtype)
        return ok, "2x low-precision reference" if ok else f"> 2x low-precision reference ({bound:.2e})"
    tol = FP32_TOL
    text = f"atol {tol['atol']:.0e} rtol {tol['rtol']:.0e}"
    if all(torch.allclose(a, o, atol=tol["atol"], rtol=tol["rtol"]) for a, o in zip(got, want)
           if a.numel()):
        return True, text
    # Ill-conditioned outputs (Graves' window gradients through exp(alpha_hat) and
    # beta (kappa - u)^2, say) lose more than 2e-5 in any fp32 evaluation, the reference's
    # included: then the fp32 rule is the low-precision one.
    ok, bound = _within_twice_reference(got, want, same_precision_ref, dtype)
    return ok, f"{text}, or 2x fp32 reference" if ok else f"{text} and > 2x fp32 reference ({bound:.2e})"


@dataclasses.dataclass
class Result:
    op: str
    backend: str
    dtype: str
    case: str
    fwd_err: float
    bwd_err: float
    tolerance: str
    ok: bool
    note: str = ""


def _device_for(backend: str) -> str:
    if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def check(ops=None, backends=None, quick=False, progress: Callable[[str], None] | None = None):
    """Run the parity grid; returns (results, notes): notes say what could not be checked."""
    from attnfast import dispatch

    status = dispatch.backend_status()
    notes = []
    if not torch.cuda.is_available():
        notes.append("no CUDA device: the cuda backend (hand-written CUDA kernels on a real GPU) "
                     "was not checked; triton ran under the Triton interpreter and simt ran the "
                     "CUDA kernels thread by thread on the CPU, where available")
    names = list(dispatch._OPS) if not ops else list(ops)
    results = []
    for name in names:
        if name not in dispatch._OPS:
            raise ValueError(f"unknown op {name!r}; ops: {', '.join(sorted(dispatch._OPS))}")
        op = dispatch._OPS[name]
        samples = samples_for(name, quick)
        if samples is None:
            results.append(Result(name, "-", "-", "-", math.nan, math.nan, "-", False,
                                  "no sample inputs declared in attnfast/check.py"))
            continue
        for backend in op.implementations:
            if backend == "reference" or (backends and backend not in backends):
                continue
            if status[backend] is not None:
                if backends:
                    notes.append(f"{backend}: not available ({status[backend]})")
                continue
            for dtype in DTYPES.get(name, MEMORY_DTYPES):
                for sample, fn in samples:
                    if progress:
                        progress(f"{name} {backend} {dtype} {sample.label}")
                    results.append(_check_one(name, fn, sample, backend, dtype))
    return results, notes


def _check_one(name, fn, sample, backend, dtype, layout=None) -> Result:
    dt = str(dtype).replace("torch.", "")
    device = _device_for(backend)
    try:
        want_o, want_g = _run(fn, sample, F64, "cpu", "reference", layout=layout)
        got_o, got_g = _run(fn, sample, dtype, device, backend, layout=layout)
        # The reference in the kernel's precision: the measure of the op's conditioning.
        low_o, low_g = _run(fn, sample, dtype, "cpu", "reference", layout=layout)
    except Exception as e:  # a crash is a failure with its message, never a silent skip
        return Result(name, backend, dt, sample.label, math.nan, math.nan, "-", False,
                      f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
    ok_f, tol_f = _within(got_o, want_o, low_o, dtype)
    ok_b, tol_b = _within(got_g, want_g, low_g, dtype)
    return Result(name, backend, dt, sample.label, _max_err(got_o, want_o), _max_err(got_g, want_g),
                  tol_f if ok_f or not ok_b else tol_b, ok_f and ok_b,
                  "" if ok_f and ok_b else ("forward" if not ok_f else "backward") + " outside tolerance")


# ---- command line ---------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="two shapes per op instead of the full grid")
    parser.add_argument("--op", action="append", default=None, metavar="NAME",
                        help="check only this op (repeatable); default: every registered op")
    parser.add_argument("--backend", action="append", default=None, metavar="NAME",
                        help="check only this backend (repeatable): cpu, cuda, triton, simt")
    parser.add_argument("--json", default="attnfast-check.json", metavar="FILE",
                        help="where to write the results (default: %(default)s)")


def _interpret_triton_on_cpu() -> None:
    """Without a GPU the Triton kernels run under the Triton interpreter, which Triton reads
    from TRITON_INTERPRET when it is imported -- and importing attnfast imports it (through
    torch.compiler). If it was imported without the variable, run this command again with it."""
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return
    os.environ["TRITON_INTERPRET"] = "1"
    if "triton" in sys.modules and getattr(sys, "orig_argv", None):
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def run(args) -> int:
    _interpret_triton_on_cpu()
    from tabulate import tabulate

    start = time.perf_counter()
    try:
        results, notes = check(args.op, args.backend, args.quick)
    except ValueError as e:
        print(f"attnfast check: {e}", file=sys.stderr)
        return 2
    rows = [(r.op, r.backend, r.dtype, r.case, f"{r.fwd_err:.2e}", f"{r.bwd_err:.2e}", r.tolerance,
             "ok" if r.ok else "FAIL " + r.note) for r in results]
    print(tabulate(rows, headers=["op", "backend", "dtype", "case", "max err fwd", "max err grad",
                                  "tolerance", "result"]))
    failed = [r for r in results if not r.ok]
    backends = sorted({r.backend for r in results if r.backend != "-"})
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed "
          f"({len({r.op for r in results})} ops; backends checked: {', '.join(backends) or 'none'}; "
          f"{time.perf_counter() - start:.0f} s)")
    for note in notes:
        print(f"not checked: {note}")
    with open(args.json, "w") as f:
        json.dump({"results": [dataclasses.asdict(r) for r in results], "not_checked": notes,
                   "torch": torch.__version__, "cuda": torch.cuda.is_available()}, f, indent=1)
    print(f"results written to {args.json}")
    return 1 if failed or not results else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnfast check", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
