"""Run attnfast's CUDA kernels on the CPU: the SIMT host harness (csrc/simt/, tests only).

The test-only extension ``attnfast._simt`` compiles the kernels of ``csrc/cuda/*_kernels.cuh`` as
host C++ and runs them thread by thread (see csrc/simt/README.md). Its ops live in
``torch.ops.attnfast_simt``: the kernel-backed ops with the schemas of ``torch.ops.attnfast``
(``boom_forward``, ``boom_backward``) on CPU tensors, the harness self-tests (``selftest_*``),
and ``launch_log`` / ``clear_launch_log`` / ``set_schedule``.

Where the extension comes from, in order:
  * ``ATTNFAST_SIMT_LIB=/path/to/lib.so``: a library built elsewhere (e.g. by :func:`build_dev`);
  * ``import attnfast._simt`` (built by setup.py);
  * ``ATTNFAST_SIMT_BUILD=1``: JIT-build it now with torch.utils.cpp_extension (a minute or two).

Typical test use::

    from attnfast.testing import simt
    ok, reason = simt.simt_available()
    pytestmark = pytest.mark.skipif(not ok, reason=reason)
    out, preact = simt.ops().boom_forward(x, w, b, 0, 16, 0.0, attnfast.ops.seed.NO_SEED, True)
"""
from __future__ import annotations

import contextlib
import glob
import importlib
import os
import tempfile
import threading
from typing import Iterator

import torch

_lock = threading.Lock()
_state: dict = {"tried": False, "ok": False, "reason": "not loaded yet", "source": None}

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Compiler flags of the harness extension (setup.py passes the same).
CFLAGS = ["-DATTNFAST_SIMT_HARNESS", "-std=c++20", "-pthread", "-O2"]
LDFLAGS = ["-pthread"]


def include_dirs(repo: str = _REPO) -> list[str]:
    return [os.path.join(repo, "csrc"), "/usr/local/cuda/include", "/usr/local/cuda/include/cccl"]


def sources(repo: str = _REPO) -> list[str]:
    return sorted(glob.glob(os.path.join(repo, "csrc", "simt", "*.cpp")))


def build_dev(build_directory: str | None = None, repo: str = _REPO, verbose: bool = False) -> str:
    """JIT-build the harness extension from ``repo``'s sources; returns the .so path (loaded)."""
    from torch.utils import cpp_extension

    os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")
    build_directory = build_directory or os.path.join(tempfile.gettempdir(), "attnfast_simt_build")
    os.makedirs(build_directory, exist_ok=True)
    cpp_extension.load(
        name="attnfast_simt_jit", sources=sources(repo), build_directory=build_directory,
        extra_cflags=CFLAGS, extra_ldflags=LDFLAGS, extra_include_paths=include_dirs(repo),
        verbose=verbose)
    return os.path.join(build_directory, "attnfast_simt_jit.so")


def _load() -> tuple[bool, str]:
    lib = os.environ.get("ATTNFAST_SIMT_LIB")
    if lib:
        torch.ops.load_library(lib)
        _state["source"] = lib
        return True, ""
    try:
        importlib.import_module("attnfast._simt")
        _state["source"] = "attnfast._simt"
        return True, ""
    except ImportError as e:
        err = e
    if os.environ.get("ATTNFAST_SIMT_BUILD") == "1":
        _state["source"] = build_dev()
        return True, ""
    return False, (f"the SIMT harness extension attnfast._simt is not built ({err}); build the "
                   "package, or set ATTNFAST_SIMT_BUILD=1 (JIT build) or ATTNFAST_SIMT_LIB=<.so>")


def simt_available() -> tuple[bool, str]:
    """(True, "") when the harness ops can run, else (False, why). Loads the extension once."""
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                _state["ok"], _state["reason"] = _load()
            except Exception as e:  # a broken build must skip with its message, not crash collection
                _state["ok"], _state["reason"] = False, f"loading the SIMT harness failed: {e}"
        return _state["ok"], _state["reason"]


def loaded() -> bool:
    """True if the harness was loaded in this process (does not try to load it): by this module,
    or by ``import attnfast`` (the explicit-only ``simt`` backend)."""
    from attnfast import _extension

    return bool(_state["ok"]) or _extension.simt_loaded()


def ops():
    """``torch.ops.attnfast_simt``; raises RuntimeError with the reason if unavailable."""
    ok, reason = simt_available()
    if not ok:
        raise RuntimeError(reason)
    return torch.ops.attnfast_simt


def _dtype_of(kernel: str, params: str) -> str:
    text = kernel[kernel.find("<"):] if "<" in kernel else params
    for token, name in (("__nv_bfloat16", "bf16"), ("__half", "fp16"), ("c10::BFloat16", "bf16"),
                        ("c10::Half", "fp16"), ("double", "fp64"), ("float", "fp32")):
        if token in text:
            return name
    return "-"


def launch_log() -> list[dict]:
    """Kernel launches run under the harness in this process, one dict per distinct
    (kernel, grid, block, smem): kernel, dtype, params, grid, block, smem, launches, status."""
    if not loaded():
        return []
    rows = []
    for line in torch.ops.attnfast_simt.launch_log().splitlines():
        kernel, params, grid, block, smem, launches, status = line.split("\t")
        rows.append(dict(kernel=kernel, dtype=_dtype_of(kernel, params), params=params, grid=grid,
                         block=block, smem=int(smem), launches=int(launches), status=status))
    return rows


def clear_launch_log() -> None:
    if loaded():
        torch.ops.attnfast_simt.clear_launch_log()


SCHEDULES = {"forward": 0, "reverse": 1, "random": 2}


def set_schedule(policy: str = "forward", seed: int = 0) -> None:
    """Order the harness runs a block's runnable threads in: forward (default), reverse, random.
    Results of a correctly synchronised kernel do not depend on it."""
    ops().set_schedule(SCHEDULES[policy], seed)


@contextlib.contextmanager
def schedule(policy: str, seed: int = 0) -> Iterator[None]:
    set_schedule(policy, seed)
    try:
        yield
    finally:
        set_schedule("forward")
