"""The CUDA LSTM recurrence kernels (csrc/cuda/lstm_kernels.cuh, through the glue the CUDA ops use,
csrc/cuda/lstm_glue.h) run on the CPU by the SIMT harness (torch.ops.attnfast_simt.lstm_*), against
the float64 reference (tests/lstm_cases.py): forward and backward, fp32 within conftest's FP32_TOL,
bf16/fp16 within 2x the reference's own error in that dtype; shapes with H = 1, H not a multiple of
the kernels' 8 units / 32 columns per block, B = 1 and B past the batch passes of 8 (forward) / 16
(backward) rows (partial passes); T = 0 and B = 0; gates not saved; non-contiguous inputs;
argument errors; results that do not depend on the harness's thread schedule (the backward's
shared-memory reduction); one launch per time step. On a machine with a GPU the CUDA ops themselves
(torch.ops.attnfast.lstm_*) run the same parity cases, plus a larger one.
"""
from __future__ import annotations

import pytest
import torch

from attnfast.testing import simt
from lstm_cases import (DTYPES, SHAPES, bad_arguments, call_with, cast, check_empty, check_parity,
                        check_strided, make_inputs, run_pair)

_OK, _WHY = simt.simt_available()


def ops():
    if not _OK:
        pytest.skip(f"SIMT harness unavailable: {_WHY}")
    if not hasattr(simt.ops(), "lstm_forward"):
        pytest.skip("attnfast._simt was built without the LSTM ops (rebuild the extension)")
    return simt.ops()


def fwd(*args):
    return ops().lstm_forward(*args)


def bwd(*args):
    return ops().lstm_backward(*args)


# (2, 6, 33): two forward units blocks' worth of warps past H and two backward column blocks
# (the second partial); (2, 17, 9): three forward batch passes of 8 and two backward passes of
# 16, the last ones partial.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(2, 6, 33), (2, 17, 9)])
def test_parity(shape, dtype):
    check_parity(fwd, bwd, *shape, dtype, name="simt")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_saturated_gates(dtype):
    """Pre-activations of |a| ~ 30: sigmoid/tanh saturate to 0/1 without NaN or lost accuracy."""
    check_parity(fwd, bwd, 3, 3, 5, dtype, scale=30.0, name="simt saturated")


def test_gates_not_saved():
    x = cast(make_inputs(3, 3, 5), torch.float32)
    h, c, gates = fwd(x["gates_x"], x["h0"], x["c0"], x["w_hh"], True)
    h2, c2, none = fwd(x["gates_x"], x["h0"], x["c0"], x["w_hh"], False)
    assert none.shape == (0,) and torch.equal(h, h2) and torch.equal(c, c2)
    with pytest.raises(RuntimeError, match=r"gates must have shape.*save_gates=True"):
        bwd(x["grad_h"], x["grad_c"], x["c0"], x["w_hh"], c, none)


@pytest.mark.parametrize("shape", [(0, 3, 5), (0, 1, 16), (3, 0, 5), (0, 0, 5)])
def test_empty(shape):
    check_empty(fwd, bwd, *shape)


def test_strided_inputs():
    ops()
    check_strided(fwd, bwd)


@pytest.mark.parametrize("case", bad_arguments(), ids=lambda c: c[0])
def test_argument_errors(case):
    ops()
    _, which, override, text = case
    with pytest.raises(RuntimeError, match=text):
        call_with(fwd, bwd, which, override)


@pytest.mark.parametrize("policy", ["reverse", "random"])
def test_schedule_independent(policy):
    """The backward block reduces its 8 warps' partials through shared memory in a fixed order
    behind a barrier, and rewrites them in the next batch pass behind another: any thread
    schedule gives bitwise the same results (B = 17: two passes of 16)."""
    x = cast(make_inputs(3, 17, 33, seed=5), torch.bfloat16)
    base = run_pair(fwd, bwd, x)
    with simt.schedule(policy, seed=7):
        other = run_pair(fwd, bwd, x)
    for a, b in zip(base, other):
        assert torch.equal(a, b)


def test_one_launch_per_step():
    """T forward step launches; T backward step launches + the final (grad_h0, grad_c0) one."""
    def counts():
        out = {"forward": 0, "backward": 0}
        for row in simt.launch_log():
            for name in out:
                if f"lstm_{name}_step_kernel" in row["kernel"]:
                    out[name] += row["launches"]
                    assert row["status"] == "ok", row
        return out

    T = 4
    x = cast(make_inputs(T, 3, 5), torch.float32)
    before = counts()
    run_pair(fwd, bwd, x)
    after = counts()
    assert {k: after[k] - before[k] for k in after} == {"forward": T, "backward": T + 1}


# ---- the CUDA ops themselves (only with a GPU; picked up by .ci/gpu-check: the ids name cuda) --

def _cuda_ops():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the CUDA ops run only there (the SIMT tests above run their "
                    "kernels on the CPU)")
    if not hasattr(torch.ops.attnfast, "lstm_forward"):
        pytest.skip("attnfast._C was built without the LSTM ops (rebuild the extension)")
    return torch.ops.attnfast


# (3, 70, 300): several blocks and batch passes at once, closer to a real layer.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(2, 6, 33), (2, 17, 9), (3, 70, 300)])
def test_cuda_ops_parity(shape, dtype):
    ops_ = _cuda_ops()
    check_parity(ops_.lstm_forward, ops_.lstm_backward, *shape, dtype, device="cuda", name="cuda")


@pytest.mark.parametrize("shape", [(0, 3, 5), (3, 0, 5)])
def test_cuda_ops_empty(shape):
    ops_ = _cuda_ops()
    check_empty(ops_.lstm_forward, ops_.lstm_backward, *shape, device="cuda")
