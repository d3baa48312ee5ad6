"""Self-tests of the SIMT host harness (csrc/simt/): the CUDA kernels' runtime on the CPU.

The test kernels are csrc/simt/selftest_kernels.cuh (valid CUDA, built only into the test
extension attnfast._simt). Skipped with the reason when the extension is not built.
"""
from __future__ import annotations

import time

import pytest
import torch

from attnfast.ops.seed import seed_tensor
from attnfast.testing import simt

_ok, _reason = simt.simt_available()
pytestmark = pytest.mark.skipif(not _ok, reason=_reason)


def ops():
    return torch.ops.attnfast_simt


# ---- block reduction: shared memory (static + dynamic), shuffles, barriers ------------------------
@pytest.mark.parametrize("blocks,threads,n", [(1, 32, 7), (3, 256, 10_000), (2, 1024, 5000),
                                              (5, 64, 1)])
def test_reduce(blocks, threads, n):
    x = torch.randn(n)
    out = ops().selftest_reduce(x, blocks, threads)
    # Both in-kernel paths agree per block, and the blocks add up to the total.
    torch.testing.assert_close(out[:, 0], out[:, 1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, 0].sum().double(), x.double().sum(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("policy", ["forward", "reverse", "random"])
def test_schedule_order_does_not_change_a_synchronised_kernel(policy):
    x = torch.randn(3000)
    ref = ops().selftest_reduce(x, 2, 128)
    with simt.schedule(policy, seed=7):
        out = ops().selftest_reduce(x, 2, 128)
    assert torch.equal(out, ref)


# ---- votes and shuffles ---------------------------------------------------------------------------
def test_vote_and_shuffles():
    x = torch.randn(64)
    x[32:] = x[32:].abs() + 0.1  # warp 1: all positive
    out = ops().selftest_vote(x)
    pred = x > 0
    for w in range(2):
        p = pred[32 * w: 32 * w + 32]
        ballot = sum(1 << lane for lane in range(32) if p[lane])
        assert out[w, 0].item() & 0xFFFFFFFF == ballot
        assert out[w, 1].item() == int(bool(p.any()))
        assert out[w, 2].item() == int(bool(p.all()))
        assert out[w, 3].item() == int(pred.sum())  # __syncthreads_count over the block
        bits = x[32 * w + 31: 32 * w + 32].view(torch.int32).item()
        assert out[w, 4].item() == bits  # lane 0 read lane 31
        assert out[w, 5].item() == 0  # shfl_up at lane 0: own value
        assert out[w, 6].item() == 2  # xor 1 within width 4 at lane 3
        assert out[w, 7].item() == 7  # shfl_down 2 past the width-8 segment: own value


# ---- misuse is an error, never a hang ---------------------------------------------------------------
@pytest.mark.parametrize("mode,match", [
    (0, r"thread \(5,0,0\): returned while .* wait at __syncthreads"),
    (1, r"thread \(7,0,0\): returned while lanes .* wait at __shfl"),
    (2, r"deadlock: no thread can continue"),
    (3, r"deadlock: .*__syncwarp"),
])
def test_misuse_is_reported(mode, match):
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=match):
        ops().selftest_misuse(mode, 64)
    assert time.monotonic() - t0 < 10


# ---- shared memory bounds ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode,match", [
    (0, r"out-of-bounds write to dynamic shared memory"),
    (1, r"cp.async destination: bytes \[256, 272\)"),
    (2, r"ldmatrix row: bytes \[256, 272\)"),
])
def test_shared_memory_bounds(mode, match):
    with pytest.raises(RuntimeError, match=match):
        ops().selftest_bounds(264, mode)


def test_shared_memory_in_bounds():
    ops().selftest_bounds(264, 3)


def test_missing_barrier_reads_poisoned_shared_memory():
    # Dynamic shared memory starts each block as 0xff bytes (NaN): a read racing ahead of the
    # write it depends on shows up as NaN.
    bad = ops().selftest_race(8, False)
    assert torch.isnan(bad[:-1]).all()
    good = ops().selftest_race(8, True)
    torch.testing.assert_close(good, torch.tensor([1., 2, 3, 4, 5, 6, 7, 0]))


# ---- ldmatrix fragment layout (PTX ISA) ---------------------------------------------------------------
@pytest.mark.parametrize("x,trans", [(1, False), (2, False), (4, False), (2, True), (4, True)])
def test_ldmatrix_layout(x, trans):
    m = torch.arange(x * 64, dtype=torch.int16) * 3 + 1
    out = ops().selftest_ldmatrix(m, x, trans)
    mats = m.to(torch.int64).reshape(x, 8, 8)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for i in range(x):
            if trans:
                lo, hi = mats[i, 2 * t, g], mats[i, 2 * t + 1, g]
            else:
                lo, hi = mats[i, g, 2 * t], mats[i, g, 2 * t + 1]
            assert out[lane, i].item() & 0xFFFFFFFF == int(lo) | (int(hi) << 16), (lane, i)


# ---- cp.async + ldmatrix + mma against a plain matmul ---------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b_kmajor", [False, True])
@pytest.mark.parametrize("M,N,K", [(16, 8, 16), (32, 24, 48), (48, 16, 64)])
def test_mma_matches_matmul(dtype, b_kmajor, M, N, K):
    a = torch.randn(M, K).to(dtype)
    bt = torch.randn(N, K).to(dtype)
    b = bt.t().contiguous() if b_kmajor else bt
    d = ops().selftest_mma(a, b, b_kmajor)
    ref = a.double() @ bt.double().t()
    # Products are exact; only the fp32 rounding of each 16-wide step's sum remains.
    torch.testing.assert_close(d.double(), ref, rtol=1e-5, atol=1e-5 * K ** 0.5)


def test_launch_log_records_kernels():
    ops().selftest_reduce(torch.randn(100), 2, 64)
    ops().selftest_mma(torch.randn(16, 16).bfloat16(), torch.randn(8, 16).bfloat16(), False)
    rows = simt.launch_log()
    names = {r["kernel"]: r for r in rows}
    red = [r for k, r in names.items() if "reduce_kernel" in k]
    assert red and red[0]["grid"] == "(2,1,1)" and red[0]["block"] == "(64,1,1)"
    assert red[0]["smem"] == 64 * 4 and red[0]["status"] == "ok" and red[0]["launches"] >= 1
    mma = [r for k, r in names.items() if "mma_kernel" in k]
    assert mma and mma[0]["dtype"] == "bf16"


# ---- the library's kernels under the harness (csrc/cuda/boom_kernels.cuh) -------------------------------
ACTS = ["gelu_sigmoid", "gelu", "gelu_tanh", "relu"]


def _boom_reference(x, w, b, act, C, p, seed):
    """float64 semantics of boom_forward: (out, preact)."""
    from attnfast.reference.boom import activation
    from attnfast.reference.dropout import dropout_keep_mask, dropout_scale

    N, F = x.shape[0], w.shape[0]
    f_used = (F // C) * C
    z = x.double() @ w.double().t() + (b.double() if b is not None else 0.0)
    h = activation(z, ACTS[act])
    if p > 0:
        keep = dropout_keep_mask((N, F), p, seed)
        h = torch.where(keep, h * dropout_scale(p), torch.zeros_like(h))
    out = h[:, :f_used].reshape(N, F // C, C).sum(1)
    return out, z[:, :f_used]


TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
       torch.float16: dict(rtol=4e-3, atol=4e-3)}


@pytest.mark.parametrize("strategy", ["gemm", "fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("N,K,F,C,act,p,bias", [
    (5, 16, 64, 16, 0, 0.0, True),     # tensor-core path for bf16/fp16 (K % 8 == 0)
    (37, 64, 192, 64, 1, 0.25, True),
    (19, 24, 100, 33, 2, 0.0, False),  # F % C != 0: a dropped remainder
    (40, 13, 70, 70, 3, 0.1, True),    # K odd: the SIMT path for every dtype
])
def test_boom_kernels_under_harness(monkeypatch, strategy, dtype, N, K, F, C, act, p, bias):
    # As on CUDA: ATTNFAST_BOOM_CUDA=fused runs the fused GEMM kernel (tensor cores for bf16/fp16
    # when K % 8 == 0), otherwise a library GEMM then the epilogue kernel.
    monkeypatch.setenv("ATTNFAST_BOOM_CUDA", strategy)
    g = torch.Generator().manual_seed(N * 1000 + F)
    x = torch.randn(N, K, generator=g).to(dtype)
    w = (torch.randn(F, K, generator=g) / K ** 0.5).to(dtype)
    b = torch.randn(F, generator=g).to(dtype) if bias else None
    seed = 1234
    out, preact = ops().boom_forward(x, w, b, act, C, p, seed_tensor(seed), True)
    ref_out, ref_z = _boom_reference(x, w, b, act, C, p, seed)
    torch.testing.assert_close(preact.double(), ref_z, **TOL[dtype])
    torch.testing.assert_close(out.double(), ref_out, **TOL[dtype])

    # Backward from the kernel's saved preact, against autograd of the float64 semantics.
    gout = torch.randn(N, C, generator=g).to(dtype)
    gx, gw, gb = ops().boom_backward(gout, x, w, preact, bias, act, C, p, seed_tensor(seed))
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    bd = b.double().requires_grad_() if bias else None
    ref, _ = _boom_reference(xd, wd, bd, act, C, p, seed)
    ref.backward(gout.double())
    tol = {k: v * 4 for k, v in TOL[dtype].items()}
    torch.testing.assert_close(gx.double(), xd.grad, **tol)
    torch.testing.assert_close(gw.double(), wd.grad, **tol)
    if bias:
        torch.testing.assert_close(gb.double(), bd.grad, **tol)
    else:
        assert gb.numel() == 0
