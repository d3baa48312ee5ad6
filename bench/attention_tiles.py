"""Microbenchmark of the CPU attention kernel's tile GEMMs, one thread: attnfast's AVX-512
micro-kernel (the library's own code, compiled from ``csrc/`` into a small program by
``attention_tiles.cpp``) against ATen's ``torch.mm`` / ``addmm_`` (MKL or oneDNN) on the same
tile shapes in the same loop order. This is the measurement behind the CPU kernel's choice of
its own micro-kernel over ATen GEMMs on tiles.

Shapes: Lq = Lk = 1024, head dim D (default 1024); the forward's two products on 64 x 64 blocks,
the backward's five on 128 x 128 blocks. ATen gets every advantage: its bf16 products write bf16
(attnfast accumulates and writes fp32), operands are views of contiguous tensors, and the
Python call overhead (~5 us) is small against a ~0.3-2 ms product.

    python -m bench.attention_tiles [--dtype fp32 --dtype bf16] [--d 1024] [--reps 3]

Needs an x86-64 CPU with AVX-512 (F, BW, VL, DQ, BF16) and a C++20 compiler (``g++``, or $CXX);
the program is built on demand into the bench cache folder (see bench/peak).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import torch

from bench import harness, peak

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCE = HERE / "attention_tiles.cpp"
# Every header the program includes: a change to any of them rebuilds it.
HEADER_DIRS = [ROOT / "csrc" / "cpu" / "kernels", ROOT / "csrc" / "common"]
HEADERS = [ROOT / "csrc" / "cpu" / "isa_kernels.h"]
NEEDED_FLAGS = {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16"}


def build() -> Path:
    digest = hashlib.sha1(SOURCE.read_bytes())
    for path in sorted(HEADERS + [p for d in HEADER_DIRS for p in d.glob("*.h")]):
        digest.update(path.read_bytes())
    exe = peak.cache_dir() / f"attention_tiles-{digest.hexdigest()[:12]}"
    if not exe.exists():
        cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
        if cxx is None:
            raise RuntimeError("no C++ compiler (g++/c++) to build bench/attention_tiles.cpp; set CXX")
        tmp = exe.with_suffix(f".{os.getpid()}.tmp")
        cmd = [cxx, "-O3", "-std=c++20", "-fopenmp", f"-I{ROOT / 'csrc'}", str(SOURCE), "-o", str(tmp)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        tmp.replace(exe)
    return exe


def attnfast_tiles(dtype: str, d: int, reps: int) -> list[dict]:
    out = subprocess.run([str(build()), dtype, str(d), str(reps)], check=True, capture_output=True,
                         text=True).stdout
    rows = []
    for line in out.splitlines():
        *name, m, n, k, gf = line.split()
        rows.append({"gemm": " ".join(name), "M": int(m), "N": int(n), "K": int(k), "attnfast": float(gf)})
    return rows


def aten_tiles(dtype: torch.dtype, d: int, reps: int) -> dict[str, float]:
    """GFLOP/s of torch.mm on the same products, loops and block sizes as attention_tiles.cpp."""
    L, fb, bb = 1024, 64, 128
    g = torch.Generator().manual_seed(0)
    Q, dO, K, V = (torch.randn(L, d, generator=g).to(dtype) for _ in range(4))
    S, O = torch.empty(bb, bb, dtype=dtype), torch.zeros(fb, d, dtype=dtype)
    P, dS = (torch.randn(bb, bb, generator=g).to(dtype) for _ in range(2))
    dK, dV, dQ = torch.zeros(bb, d, dtype=dtype), torch.zeros(bb, d, dtype=dtype), torch.zeros(L, d, dtype=dtype)
    names = ["fwd S=QK^T", "fwd O+=PV", "bwd S=QK^T", "bwd dP=dOV^T", "bwd dV+=P^TdO",
             "bwd dK+=dS^TQ", "bwd dQ+=dSK"]
    per_rep = {n: [] for n in names}
    for _ in range(reps):
        t = dict.fromkeys(names, 0.0)
        for i0 in range(0, L, fb):
            for j0 in range(0, L, fb):
                a = time.perf_counter()
                torch.mm(Q[i0:i0 + fb], K[j0:j0 + fb].t(), out=S[:fb, :fb])
                b = time.perf_counter()
                O.addmm_(P[:fb, :fb], V[j0:j0 + fb])
                c = time.perf_counter()
                t["fwd S=QK^T"] += b - a
                t["fwd O+=PV"] += c - b
        for j0 in range(0, L, bb):
            for i0 in range(0, L, bb):
                Qi, dOi, Kj, Vj = Q[i0:i0 + bb], dO[i0:i0 + bb], K[j0:j0 + bb], V[j0:j0 + bb]
                m = [time.perf_counter()]
                torch.mm(Qi, Kj.t(), out=S)
                m.append(time.perf_counter())
                torch.mm(dOi, Vj.t(), out=S)
                m.append(time.perf_counter())
                dV.addmm_(P.t(), dOi)
                m.append(time.perf_counter())
                dK.addmm_(dS.t(), Qi)
                m.append(time.perf_counter())
                dQ[i0:i0 + bb].addmm_(dS, Kj)
                m.append(time.perf_counter())
                for i, name in enumerate(names[2:]):
                    t[name] += m[i + 1] - m[i]
        for n in names:
            per_rep[n].append(t[n])
    shapes = {"fwd S=QK^T": (fb, fb, d, (L // fb) ** 2), "fwd O+=PV": (fb, d, fb, (L // fb) ** 2)}
    for n in names[2:]:
        shapes[n] = (bb, bb, d, (L // bb) ** 2) if n in ("bwd S=QK^T", "bwd dP=dOV^T") else (bb, d, bb, (L // bb) ** 2)
    return {n: 2.0 * m * nn * k * calls / statistics.median(per_rep[n]) / 1e9
            for n, (m, nn, k, calls) in shapes.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", action="append", choices=["fp32", "bf16"])
    p.add_argument("--d", type=int, default=1024, help="head dim (default 1024)")
    p.add_argument("--reps", type=int, default=3, help="timed passes over all tiles (median)")
    a, _ = p.parse_known_args(argv)
    missing = NEEDED_FLAGS - peak.cpu_flags()
    if missing:
        print(f"attention_tiles: skipped: this CPU lacks {sorted(missing)} "
              "(the micro-kernel measured here is the AVX-512 one)")
        return 0
    torch.set_num_threads(1)
    machine = peak.peak()
    threads = machine.get("threads", 1)
    for dtype in a.dtype or ["fp32", "bf16"]:
        core_peak = machine[f"{dtype}_gflops"] / threads
        rows = attnfast_tiles(dtype, a.d, a.reps)
        aten = aten_tiles(torch.float32 if dtype == "fp32" else torch.bfloat16, a.d, a.reps)
        for r in rows:
            r["aten"] = aten[r["gemm"]]
            r["x aten"] = harness.fmt(r["attnfast"] / r["aten"])
            r["% 1-core peak"] = harness.fmt(100 * r["attnfast"] / core_peak, ".0f")
            r["attnfast"], r["aten"] = harness.fmt(r["attnfast"], ".0f"), harness.fmt(r["aten"], ".0f")
        harness.print_table(
            rows, ["gemm", "M", "N", "K", "attnfast", "aten", "x aten", "% 1-core peak"],
            title=f"attention CPU tile GEMMs, {dtype}, D={a.d}, one thread (GFLOP/s, median of "
                  f"{a.reps} passes; one core's peak {core_peak:.0f} GFLOP/s)")
    return 0


if __name__ == "__main__":
    main()
