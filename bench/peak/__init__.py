"""The machine's physical peak (GFLOP/s), the denominator of every "% of peak" column.

CPU: ``fma_peak.cpp``, an FMA-throughput loop (12 independent accumulator chains per thread, no
memory traffic) on every core the process may run on: fp32 with AVX-512 ``vfmadd231ps`` (AVX2
``vfmadd231ps ymm`` on CPUs without AVX-512), bf16 with AVX512_BF16 ``vdpbf16ps`` (64 flop per
instruction). Built on demand with the system C++ compiler (``g++ -O2 -fopenmp``; the ISA is
chosen per function with target attributes) into the cache folder, loaded with ctypes. It is not
part of the shipped library. fp16 on CPU has no dot-product instruction here: it reports the fp32
peak (the kernels compute in fp32).

CUDA: no datasheet. The roof is the best throughput of a large ``torch.mm`` (8192^3) in the
dtype (fp32 with TF32 off, bf16/fp16 on the tensor cores): an achievable peak, slightly below
the datasheet's.

The result is cached per machine (CPU model, core count, ISA / GPU name, torch version for the
CUDA roof) in ``$ATTNFAST_BENCH_CACHE`` (default ``~/.cache/attnfast/bench``), file
``peak.json``. Interference (other processes) can only slow an FMA loop down, so the cache keeps
the best figure ever measured for the machine: ``peak(refresh=True)`` measures again and keeps
the higher figure per dtype, ``reset=True`` forgets the old one. The load average at measurement
time is recorded, and a warning is printed when the machine was busy. The whole record lands in
every result JSON.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "fma_peak.cpp"
FLOP_PER_INSTRUCTION = {"fp32_avx512": 32, "bf16_avx512": 64, "fp32_avx2": 16}


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "attnfast" / "bench"
    d = Path(os.environ.get("ATTNFAST_BENCH_CACHE", default))
    d.mkdir(parents=True, exist_ok=True)
    return d


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the whole host)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _build_library() -> ctypes.CDLL:
    src = SOURCE.read_bytes()
    tag = hashlib.sha1(src).hexdigest()[:12]
    lib = cache_dir() / f"libfma_peak-{tag}.so"
    if not lib.exists():
        cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
        if cxx is None:
            raise RuntimeError("no C++ compiler (g++/c++) to build bench/peak/fma_peak.cpp; set CXX")
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        cmd = [cxx, "-O2", "-fopenmp", "-shared", "-fPIC", str(SOURCE), "-o", str(tmp)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        tmp.replace(lib)  # atomic: concurrent engineers never load a half-written file
    so = ctypes.CDLL(str(lib))
    for name in FLOP_PER_INSTRUCTION:
        fn = getattr(so, f"fma_peak_{name}")
        fn.restype = ctypes.c_double
        fn.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    so.fma_peak_chains.restype = ctypes.c_int
    return so


def _kernel_gflops(so, name: str, threads: int, seconds: float, repeats: int) -> float:
    """Best GFLOP/s of `repeats` runs of about `seconds` each (best: interference only slows)."""
    fn = getattr(so, f"fma_peak_{name}")
    flop_per_iter = so.fma_peak_chains() * FLOP_PER_INSTRUCTION[name]
    checksum = ctypes.c_float()
    iters = 1 << 16
    while fn(iters, threads, ctypes.byref(checksum)) < seconds / 4:  # calibrate (warms up too)
        iters *= 2
    best = 0.0
    for _ in range(repeats):
        dt = fn(iters, threads, ctypes.byref(checksum))
        best = max(best, threads * iters * flop_per_iter / dt / 1e9)
    return best


def measure_cpu(seconds: float = 0.2, repeats: int = 5) -> dict:
    so = _build_library()
    threads = cpu_count()
    flags = cpu_flags()
    out = {"device": "cpu", "cpu": cpu_model(), "threads": threads,
           "method": f"FMA-throughput loop, {so.fma_peak_chains()} chains/thread, best of {repeats}"}
    if {"avx512f", "avx512_bf16"} <= flags:
        out["fp32_gflops"] = _kernel_gflops(so, "fp32_avx512", threads, seconds, repeats)
        out["bf16_gflops"] = _kernel_gflops(so, "bf16_avx512", threads, seconds, repeats)
        out["isa"] = {"fp32": "avx512 vfmadd231ps", "bf16": "avx512_bf16 vdpbf16ps"}
    elif "avx512f" in flags:
        out["fp32_gflops"] = _kernel_gflops(so, "fp32_avx512", threads, seconds, repeats)
        out["bf16_gflops"] = out["fp32_gflops"]  # no bf16 dot product: bf16 runs at fp32 speed
        out["isa"] = {"fp32": "avx512 vfmadd231ps", "bf16": "none (fp32 peak)"}
    elif {"avx2", "fma"} <= flags:
        out["fp32_gflops"] = _kernel_gflops(so, "fp32_avx2", threads, seconds, repeats)
        out["bf16_gflops"] = out["fp32_gflops"]
        out["isa"] = {"fp32": "avx2 vfmadd231ps ymm", "bf16": "none (fp32 peak)"}
    else:
        raise RuntimeError("fma_peak needs AVX2+FMA or AVX-512 (x86-64)")
    out["fp16_gflops"] = out["fp32_gflops"]
    return out


def measure_cuda(device=None, size: int = 8192, repeats: int = 10) -> dict:
    """Best TFLOP/s of a size^3 torch.mm per dtype (fp32 with TF32 off)."""
    device = torch.device(device or "cuda")
    out = {"device": "cuda", "gpu": torch.cuda.get_device_name(device),
           "method": f"best of {repeats} torch.mm {size}^3 (achievable roof, not the datasheet)"}
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
            a = torch.randn(size, size, device=device, dtype=dtype)
            b = torch.randn(size, size, device=device, dtype=dtype)
            for _ in range(3):
                torch.mm(a, b)
            best = float("inf")
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                torch.mm(a, b)
                end.record()
                end.synchronize()
                best = min(best, start.elapsed_time(end) / 1e3)
            out[f"{name}_gflops"] = 2 * size**3 / best / 1e9
            del a, b
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    return out


def machine_key(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda|{torch.cuda.get_device_name(device)}|torch {torch.__version__}"
    isa = "avx512_bf16" if "avx512_bf16" in cpu_flags() else "avx512f" if "avx512f" in cpu_flags() else "avx2"
    return f"cpu|{cpu_model()}|{cpu_count()} threads|{isa}"


def peak(device="cpu", refresh: bool = False, quick: bool = False, reset: bool = False) -> dict:
    """The cached peak record for this machine (measured on first use, or with refresh/reset)."""
    device = torch.device(device)
    key = machine_key(device)
    path = cache_dir() / "peak.json"
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not (refresh or reset) and key in cache:
        return dict(cache[key], cached=True)
    old = None if reset else cache.get(key)
    t0 = time.perf_counter()
    if device.type == "cuda":
        rec = measure_cuda(device, repeats=5 if quick else 10)
    else:
        rec = measure_cpu(seconds=0.1 if quick else 0.2, repeats=3 if quick else 5)
    rec.update(key=key, measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               measure_s=round(time.perf_counter() - t0, 2), load_avg_1min=_load_avg())
    if device.type == "cpu" and rec["load_avg_1min"] is not None and rec["load_avg_1min"] > 1.0:
        print(f"bench.peak: the load average was {rec['load_avg_1min']:.1f} while measuring the "
              f"peak on {rec['threads']} cores: the figure may be low; measure again on a quiet "
              "machine with `python -m bench.peak --refresh` (the cache keeps the best)")
    if old is not None:
        for name in ("fp32", "bf16", "fp16"):
            k = f"{name}_gflops"
            if old.get(k, 0.0) > rec.get(k, 0.0):
                rec[k] = old[k]
                rec.setdefault("kept_from", {})[name] = old.get("measured_at")
    cache[key] = rec
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    tmp.replace(path)
    return dict(rec, cached=False)


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def peak_gflops(record: dict, dtype: torch.dtype) -> float | None:
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype)
    return record.get(f"{name}_gflops") if name else None


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description="Measure (or show the cached) physical peak GFLOP/s.")
    p.add_argument("--device", default="cpu")
    p.add_argument("--refresh", action="store_true", help="measure again (the cache keeps the best)")
    p.add_argument("--reset", action="store_true", help="measure again and forget the cached figure")
    args = p.parse_args(argv)
    from bench import harness

    rec = peak(args.device, refresh=args.refresh, reset=args.reset)
    rows = [{"field": k, "value": json.dumps(v) if isinstance(v, dict) else v}
            for k, v in rec.items()]
    harness.print_table(rows, ["field", "value"],
                        title=f"physical peak (cached in {cache_dir() / 'peak.json'})")


if __name__ == "__main__":
    main()
