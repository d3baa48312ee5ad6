"""The Triton LSTM recurrence kernels (triton_kernels/lstm.py, called directly: the torch op
attnfast::lstm_forward_triton comes with attnfast/ops/lstm.py) against the float64 reference
(tests/lstm_cases.py): forward and backward, fp32 within conftest's FP32_TOL, bf16/fp16 within 2x
the reference's own error in that dtype; H = 1, H not a multiple of 16, B = 1, T = 1; T = 0 and
B = 0; gates not saved; non-contiguous inputs; argument errors (ValueError naming the argument).
Under the Triton interpreter on CPU tensors when there is no GPU: tiny shapes.
"""
from __future__ import annotations

import pytest
import torch

from conftest import device_for, require_backend
from lstm_cases import (DTYPES, SHAPES, bad_arguments, call_with, cast, check_empty, check_parity,
                        check_strided, make_inputs)

DEV = device_for("triton")


@pytest.fixture(autouse=True)
def _triton():
    require_backend("triton")


def _lstm():
    from attnfast.triton_kernels import lstm  # imported after the backend check: needs triton
    return lstm


def fwd(*args):
    return _lstm().lstm_forward(*args)


def bwd(*args):
    return _lstm().lstm_backward(*args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_parity(shape, dtype):
    check_parity(fwd, bwd, *shape, dtype, device=DEV, name="triton")


# The interpreter evaluates exp(-a) in numpy: for a < -88 it overflows to inf (a warning) and
# sigmoid = 1 / (1 + inf) = 0 exactly, which is the point of the test.
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_saturated_gates():
    """Pre-activations of |a| ~ 30: sigmoid/tanh saturate to 0/1 without NaN or lost accuracy."""
    check_parity(fwd, bwd, 3, 3, 5, torch.float32, device=DEV, scale=30.0, name="triton saturated")


def test_gates_not_saved():
    x = {k: v.to(DEV) for k, v in cast(make_inputs(3, 3, 5), torch.float32).items()}
    h, c, gates = fwd(x["gates_x"], x["h0"], x["c0"], x["w_hh"], True)
    h2, c2, none = fwd(x["gates_x"], x["h0"], x["c0"], x["w_hh"], False)
    assert none.shape == (0,) and torch.equal(h, h2) and torch.equal(c, c2)
    with pytest.raises(ValueError, match=r"gates must have shape.*save_gates=True"):
        bwd(x["grad_h"], x["grad_c"], x["c0"], x["w_hh"], c, none)


@pytest.mark.parametrize("shape", [(0, 3, 5), (0, 1, 16), (3, 0, 5), (0, 0, 5)])
def test_empty(shape):
    check_empty(fwd, bwd, *shape, device=DEV)


def test_strided_inputs():
    check_strided(fwd, bwd, device=DEV)


@pytest.mark.parametrize("case", bad_arguments(), ids=lambda c: c[0])
def test_argument_errors(case):
    _, which, override, text = case
    with pytest.raises(ValueError, match=text):
        call_with(fwd, bwd, which, override)


@pytest.mark.parametrize("shape", [(64, 1024), (3, 17)])  # (B, H): the largest tiles, the smallest
def test_kernels_compile_for_sm90_without_spills(shape):
    """The interpreter runs the kernels but never compiles them: compile them for sm_90 with their
    GPU launch configuration (tests/triton_compile_check.py, in a process without
    TRITON_INTERPRET) and require no stack frame (register spills go there)."""
    import os
    import subprocess
    import sys

    import triton

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                             "cuobjdump")
    if not os.path.exists(cuobjdump):
        pytest.skip(f"triton ships no cuobjdump at {cuobjdump}")
    here = os.path.dirname(os.path.abspath(__file__))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(here), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, os.path.join(here, "triton_compile_check.py"),
                        *map(str, shape)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    lines = r.stdout.split("\n")
    lines = [line for line in lines if line]
    assert len(lines) == 9, r.stdout  # 3 kernels x 3 dtypes
    assert all(line.endswith("STACK:0") for line in lines), r.stdout
