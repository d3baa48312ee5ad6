"""The shared benchmark harness: small functions, no framework.

- :func:`time_fn` times a callable: warm-up, then repeated runs until both ``reps`` and
  ``min_time_s`` are reached; median, p10, p90 in ms. CUDA: CUDA events around each run (the
  stream is synchronised before and after); CPU: ``time.perf_counter_ns``.
- :func:`peak_memory` measures the peak extra memory of one call: the highest point reached by
  the bytes allocated during the call, above what was allocated before it (the outputs count;
  the inputs do not).
  * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the
    ``memory_allocated`` before the call.
  * CPU: torch keeps no allocator statistics for the CPU, so the call runs once under
    ``torch.profiler`` with ``profile_memory=True``: c10's CPU allocator then reports every
    allocation and free (size and time stamp), including those made inside C++ custom ops
    and torch.compile's generated code; the running sum's maximum is the peak. It does not see
    memory taken with raw ``malloc``/``new`` bypassing c10 (``std::vector`` scratch inside a
    kernel, oneDNN/MKL packing buffers, OpenMP stacks); attnfast's CPU kernels allocate their
    buffers through ATen, so only a few KB of per-thread scratch is missed. attnfast's CPU
    block cache (large scratch and link tensors, ``aligned_alloc``) is switched off for the
    measured call, so that those buffers come from ATen and are counted.
- :func:`gflops`, :func:`ratio`: arithmetic for the table columns.
- :func:`environment`: the stamp every result carries (machine, CPU model, cores, GPU, torch,
  triton, attnfast build_info, git commit, date).
- :func:`print_table`, :func:`save_json`: the outputs (tabulate on stdout; JSON under
  ``bench/results/`` by default, git-ignored).
- :func:`common_args`: the command-line flags every benchmark script shares.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---- timing ------------------------------------------------------------------------------

@dataclasses.dataclass
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    reps: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _percentile(sorted_xs: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_xs) == 1:
        return sorted_xs[0]
    pos = q * (len(sorted_xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def summarize(times_ms: Iterable[float]) -> Timing:
    xs = sorted(times_ms)
    return Timing(statistics.median(xs), _percentile(xs, 0.1), _percentile(xs, 0.9), len(xs))


def time_fn(fn: Callable[[], object], device: torch.device | str = "cpu", *, warmup: int = 2,
            reps: int = 10, min_time_s: float = 0.0, max_reps: int = 1000) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then at least ``reps`` timed calls and more (up to
    ``max_reps``) until ``min_time_s`` of timed calls have elapsed."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    spent = 0.0
    while len(times) < reps or (spent < min_time_s and len(times) < max_reps):
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter_ns()
            fn()
            ms = (time.perf_counter_ns() - t0) / 1e6
        times.append(ms)
        spent += ms / 1e3
    return summarize(times)


# ---- memory ------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_fd(fd: int):
    """Silence a file descriptor (the profiler's native logging writes straight to it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


@contextlib.contextmanager
def _attnfast_cpu_cache_off():
    """attnfast's CPU block cache hands out aligned_alloc blocks the profiler cannot see; with
    it off, the same buffers come from at::empty."""
    import attnfast.memory as am

    limit_mb = am.cpu_cache_info()["limit_bytes"] >> 20
    am.set_cpu_cache_limit(0)
    try:
        yield
    finally:
        am.set_cpu_cache_limit(limit_mb)


def _cpu_peak_memory(fn: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    with _quiet_fd(2), _quiet_fd(1), _attnfast_cpu_cache_off():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn()
            del out
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak bytes allocated by one call of ``fn()`` above what was allocated before it (its
    output included: it is dropped only after the peak is read). Warm ``fn`` up first (lazy
    initialisation and compilation would count)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return peak
    return _cpu_peak_memory(fn)


# ---- arithmetic --------------------------------------------------------------------------

def gflops(flop: float | None, ms: float | None) -> float | None:
    if not flop or not ms:
        return None
    return flop / (ms * 1e-3) / 1e9


def ratio(reference_ms: float | None, ms: float | None) -> float | None:
    """``reference_ms / ms``: > 1 means faster than the reference (a speed-up)."""
    if not reference_ms or not ms:
        return None
    return reference_ms / ms


def fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def mib(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / 2**20


# ---- the stamp ---------------------------------------------------------------------------

def git_commit() -> dict:
    def git(*args):
        try:
            r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": None if status is None else bool(status)}


def environment(device: torch.device | str = "cpu") -> dict:
    from bench import peak as _peak

    device = torch.device(device)
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # not installed, or no driver
        triton_version = None
    try:
        import attnfast

        build_info = attnfast.build_info()
    except Exception as exc:
        build_info = {"error": f"{type(exc).__name__}: {exc}"}
    env = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _peak.cpu_model(),
        "cpu_cores": _peak.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": _peak._load_avg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "attnfast_build_info": build_info,
        "git": git_commit(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    return env


# ---- output ------------------------------------------------------------------------------

def print_table(rows: list[dict], columns: list[str], title: str | None = None) -> str:
    from tabulate import tabulate

    text = tabulate([[r.get(c, "") for c in columns] for r in rows], headers=columns,
                    tablefmt="github", disable_numparse=True)
    if title:
        text = f"{title}\n{text}"
    print(text, flush=True)
    return text


def default_json_path(name: str, device: torch.device | str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return RESULTS / f"{name}-{torch.device(device).type}-{stamp}.json"


def save_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path


def common_args(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="few repetitions: a smoke run, not a measurement")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", action="append", choices=sorted(DTYPES),
                   help="dtypes to run (repeatable; default fp32 and bf16)")
    p.add_argument("--reps", type=int, default=None, help="timed runs per row (minimum)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per row")
    p.add_argument("--json", default=None, help="result file (default bench/results/<name>-<device>-<date>.json)")
    p.add_argument("--no-json", action="store_true", help="do not write a result file")
    p.add_argument("--refresh-peak", action="store_true", help="measure the physical peak again")
    return p


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
