"""Shared test configuration: tolerance tables tied to precision, the parity assert helper, and
backend availability markers.

Parity rule (after flash-attention's tests): a kernel run in a low precision must be within
``LOW_PRECISION_FACTOR`` times the error that the *reference* makes in the same low precision,
both measured against the reference run in float64 (plus a small absolute floor). In fp32 the
kernel must match the float64 oracle within tight absolute/relative tolerances.
"""
from __future__ import annotations

import os

import pytest
import torch

# The Triton interpreter must be switched on before any @triton.jit function is defined, i.e.
# before attnfast / attnfast.triton_kernels are imported. Only on machines without a GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import attnfast  # noqa: E402
from attnfast import dispatch  # noqa: E402

pytest_plugins = ["attnfast.testing.simt_report"] if os.path.exists(
    os.path.join(os.path.dirname(attnfast.__file__), "testing", "simt_report.py")) else []

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

# Absolute/relative tolerances of fp32 kernels against the float64 oracle.
FP32_TOL = {"atol": 2e-5, "rtol": 2e-5}
LOW_PRECISION_FACTOR = 2.0
# Plus an absolute floor of one epsilon of the dtype (scaled by the output's magnitude), so an
# output that the low-precision reference happens to get exactly right does not demand
# bit-exactness from the kernel.


def backend_skip_reason(backend: str) -> str | None:
    return dispatch.backend_status()[backend]


def device_for(backend: str) -> str:
    if backend in ("cuda",):
        return "cuda"
    if backend == "triton":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


def require_backend(backend: str):
    reason = backend_skip_reason(backend)
    if reason is not None:
        pytest.skip(f"backend {backend!r} unavailable: {reason}")


def _fmt_worst(actual: torch.Tensor, expected: torch.Tensor) -> str:
    diff = (actual.double() - expected.double()).abs()
    flat = int(diff.reshape(-1).argmax())
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    return (f"worst |diff|={diff.reshape(-1)[flat].item():.3e} at {idx}: "
            f"actual={actual.reshape(-1)[flat].item():.6g} expected={expected.reshape(-1)[flat].item():.6g}")


def assert_parity(actual: torch.Tensor, oracle: torch.Tensor, low_ref: torch.Tensor | None = None,
                  *, name: str = "output", atol: float | None = None, rtol: float | None = None):
    """``actual`` (any dtype) against the float64 ``oracle``.

    fp32/fp64: within FP32_TOL (or the given atol/rtol). bf16/fp16: max error at most
    LOW_PRECISION_FACTOR x the max error of ``low_ref`` (the reference computed in the same low
    precision) plus a dtype floor. NaN/Inf anywhere the oracle is finite fails.
    """
    assert actual.shape == oracle.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(oracle.shape)}"
    if actual.numel() == 0:
        return
    a, o = actual.detach().double().cpu(), oracle.detach().double().cpu()
    bad = ~torch.isfinite(a) & torch.isfinite(o)
    assert not bad.any(), f"{name}: {int(bad.sum())} non-finite values where the oracle is finite"
    if actual.dtype in (torch.float32, torch.float64):
        tol = dict(FP32_TOL)
        if atol is not None:
            tol["atol"] = atol
        if rtol is not None:
            tol["rtol"] = rtol
        ok = torch.allclose(a, o, **tol, equal_nan=True)
        assert ok, f"{name} ({actual.dtype}) vs oracle, tol {tol}: {_fmt_worst(a, o)}"
        return
    assert low_ref is not None, "low-precision comparisons need the low-precision reference"
    ref_err = (low_ref.detach().double().cpu() - o).abs().max().item()
    err = (a - o).abs().max().item()
    floor = torch.finfo(actual.dtype).eps * max(1.0, o.abs().max().item())
    bound = LOW_PRECISION_FACTOR * ref_err + floor
    assert err <= bound, (f"{name} ({actual.dtype}): max error {err:.3e} > {LOW_PRECISION_FACTOR} x "
                          f"reference-in-{actual.dtype} error {ref_err:.3e} (+floor) = {bound:.3e}; "
                          f"{_fmt_worst(a, o)}")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test, restored after. For tests of tiny models: a
    second thread only adds synchronisation, and on a busy 2-core machine the waiting threads
    spin (measured: steps 30x slower). Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    """~12 KB of text (this repository's model source): enough for 4 streams of 16 bytes."""
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    source = os.path.join(os.path.dirname(attnfast.__file__), "models", "sharnn.py")
    with open(source, "rb") as f:
        path.write_bytes((f.read() * 2)[:12000])
    return str(path)
