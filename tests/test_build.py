"""The build: the CUDA kernels compile for sm_80 and sm_90a without register spills (the
per-kernel resource report of bench/cuda_resources.py, built through CMakeLists.txt), and the
shipped extension carries no debug info."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import attnfast

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVCC = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")


@pytest.mark.skipif(not os.path.exists(NVCC), reason=f"nvcc not found at {NVCC}: no CUDA kernels to report on")
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cuda_resource_report_has_no_spills():
    r = subprocess.run([sys.executable, os.path.join("bench", "cuda_resources.py")], cwd=REPO,
                       capture_output=True, text=True, timeout=1500)
    print(r.stdout[-6000:])
    assert r.returncode == 0, f"resource report failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert "sm_80" in r.stdout and "sm_90a" in r.stdout


def test_release_build_has_no_debug_info():
    info = attnfast.build_info()
    if "error" in info:
        pytest.skip(f"extension not loaded: {info['error']}")
    so = attnfast._extension._C.__file__
    if shutil.which("readelf") is None:
        pytest.skip("readelf not installed")
    sections = subprocess.run(["readelf", "-S", so], capture_output=True, text=True).stdout
    assert ".debug_info" not in sections, f"{so} carries debug info (built with -g)"


def test_attention_tile_microbenchmark_builds_and_runs(tmp_path, monkeypatch):
    """bench/attention_tiles.cpp compiles against the current kernel headers (it runs the
    library's own tile GEMM) and prints a positive GFLOP/s for each of the seven products."""
    sys.path.insert(0, REPO)
    from bench import attention_tiles, peak

    missing = attention_tiles.NEEDED_FLAGS - peak.cpu_flags()
    if missing:
        pytest.skip(f"the tile micro-kernel is the AVX-512 one; this CPU lacks {sorted(missing)}")
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler to build bench/attention_tiles.cpp")
    monkeypatch.setenv("ATTNFAST_BENCH_CACHE", str(tmp_path))
    for dtype in ("fp32", "bf16"):
        rows = attention_tiles.attnfast_tiles(dtype, d=40, reps=1)
        assert [r["gemm"] for r in rows] == ["fwd S=QK^T", "fwd O+=PV", "bwd S=QK^T", "bwd dP=dOV^T",
                                             "bwd dV+=P^TdO", "bwd dK+=dS^TQ", "bwd dQ+=dSK"]
        assert all(r["attnfast"] > 0 for r in rows), rows
