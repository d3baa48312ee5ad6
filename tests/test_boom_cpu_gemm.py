"""The CPU Boom forward's fused AVX-512 GEMM path (csrc/cpu/kernels/gemm*.h) on the shapes that
hit its edges: rows not a multiple of the 14-row micro-tile, several row tasks, K odd (bf16 pairs
padded), K longer than one K slab, d_ff not a multiple of the 32-column panel, chunk boundaries
inside a column block, f_used < d_ff, dropout, saved pre-activation. Checked against a float64
oracle and against the ATen-GEMM path of the same op (ATTNFAST_CPU_BOOM_GEMM=aten)."""
from __future__ import annotations

import pytest
import torch

import attnfast
from attnfast.ops.boom import ACTIVATIONS
from attnfast.ops.seed import seed_tensor
from attnfast.reference.boom import activation as ref_activation
from attnfast.reference.dropout import dropout_keep_mask, dropout_scale
from conftest import assert_parity, require_backend

# (N, K, F, chunk_width): see the module docstring for what each one exercises.
SHAPES = [
    (1, 8, 32, 8),
    (13, 7, 45, 7),         # odd K, F not a multiple of 32, f_used 42 < F
    (29, 33, 300, 40),      # chunk boundaries inside the 256-wide column block, f_used 280
    (130, 300, 96, 96),     # 2 row tasks on 2 threads, K > one fp32 slab (256 units)
    (57, 601, 70, 35),      # odd K > one bf16 slab (256 pairs = 512)
]


def _fused_available() -> bool:
    info = attnfast.build_info()
    return info.get("cpu_isa") == "avx512"


@pytest.fixture
def gemm_path(monkeypatch):
    def set_path(path):
        monkeypatch.setenv("ATTNFAST_CPU_BOOM_GEMM", path)
    return set_path


def oracle(x, w, b, act, chunk_width, p, seed, dtype=torch.float64):
    """(out, preact) in `dtype`, the op's contract written with torch ops."""
    x, w = x.to(dtype), w.to(dtype)
    z = x @ w.t() + (b.to(dtype) if b is not None else 0)
    h = ref_activation(z, act)
    if p > 0:
        keep = dropout_keep_mask(tuple(h.shape), p, seed, h.device)
        h = torch.where(keep, h * dropout_scale(p), torch.zeros_like(h))
    f_used = w.shape[0] // chunk_width * chunk_width
    out = h[:, :f_used].unflatten(-1, (f_used // chunk_width, chunk_width)).sum(-2)
    return out, z[:, :f_used]


def run_op(x, w, b, act, chunk_width, p, seed, save_preact):
    return torch.ops.attnfast.boom_forward(x, w, b, ACTIVATIONS[act], chunk_width, p,
                                           seed_tensor(seed), save_preact)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_gemm_forward(shape, dtype, gemm_path):
    require_backend("cpu")
    if not _fused_available():
        pytest.skip("the fused GEMM path needs the avx512 ISA level (CPU with AVX-512 BF16)")
    N, K, F, C = shape
    g = torch.Generator().manual_seed(N * 1000 + K)
    x = torch.randn(N, K, generator=g, dtype=torch.float64)
    w = torch.randn(F, K, generator=g, dtype=torch.float64) / K ** 0.5
    b = torch.randn(F, generator=g, dtype=torch.float64) * 0.1
    xs, ws, bs = x.to(dtype), w.to(dtype), b.to(dtype)
    for act, p, with_bias in (("gelu_sigmoid", 0.0, True), ("gelu", 0.3, False),
                              ("relu", 0.0, False), ("gelu_tanh", 0.0, True)):
        bias = bs if with_bias else None
        gemm_path("fused")
        out, pre = run_op(xs, ws, bias, act, C, p, 7, True)
        out_inf, _ = run_op(xs, ws, bias, act, C, p, 7, False)
        # The activation is taken of the fp32 pre-activation in both modes: identical outputs.
        torch.testing.assert_close(out_inf, out, rtol=0, atol=0)
        want, want_pre = oracle(x, w, b if with_bias else None, act, C, p, 7)
        low = None
        if dtype != torch.float32:
            low, low_pre = oracle(xs, ws, bias, act, C, p, 7, dtype=dtype)
        name = f"fused {act} p={p} bias={with_bias}"
        assert_parity(out, want, low, name=name + " out")
        assert_parity(pre, want_pre, None if low is None else low_pre, name=name + " preact")
        gemm_path("aten")
        out_aten, pre_aten = run_op(xs, ws, bias, act, C, p, 7, True)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=0.02, atol=0.02)
        torch.testing.assert_close(out.float(), out_aten.float(), **tol)
        torch.testing.assert_close(pre.float(), pre_aten.float(), **tol)


def test_fused_gemm_path_env_is_checked(gemm_path):
    require_backend("cpu")
    if not _fused_available():
        pytest.skip("the variable is only read where the fused GEMM path exists (avx512)")
    gemm_path("fastest")
    with pytest.raises(RuntimeError, match="ATTNFAST_CPU_BOOM_GEMM must be auto, fused or aten"):
        run_op(torch.randn(2, 4), torch.randn(8, 4), None, "relu", 4, 0.0, 0, False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_attnfast_gemm_backward(shape, dtype, gemm_path):
    """grad_x = dz W and grad_W = dz^T x through attnfast's GEMM (strided operand packing)."""
    require_backend("cpu")
    if not _fused_available():
        pytest.skip("attnfast's CPU GEMM needs the avx512 ISA level (CPU with AVX-512 BF16)")
    N, K, F, C = shape
    g = torch.Generator().manual_seed(N + K)
    x = torch.randn(N, K, generator=g, dtype=torch.float64)
    w = torch.randn(F, K, generator=g, dtype=torch.float64) / K ** 0.5
    b = torch.randn(F, generator=g, dtype=torch.float64) * 0.1
    grad = torch.randn(N, C, generator=g, dtype=torch.float64)
    act, p, seed = "gelu_sigmoid", 0.2, 5
    xs, ws, bs, gs = (t.to(dtype) for t in (x, w, b, grad))
    _, preact = run_op(xs, ws, bs, act, C, p, seed, True)
    got = {}
    for path in ("fused", "aten"):
        gemm_path(path)
        got[path] = torch.ops.attnfast.boom_backward(gs, xs, ws, preact, True, ACTIVATIONS[act],
                                                     C, p, seed_tensor(seed))
    names = ("grad_x", "grad_weight", "grad_bias")
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == torch.float32 else dict(rtol=0.02, atol=0.03)
    for name, fused, aten in zip(names, got["fused"], got["aten"]):
        assert fused.dtype == dtype and fused.shape == aten.shape, name
        torch.testing.assert_close(fused.float(), aten.float(), **tol, msg=lambda m: f"{name}: {m}")
    if dtype == torch.float32:  # and against the float64 oracle's autograd
        x64, w64, b64 = (t.clone().requires_grad_() for t in (x, w, b))
        out64, _ = oracle(x64, w64, b64, act, C, p, seed)
        out64.backward(grad)
        for name, fused, want in zip(names, got["fused"], (x64.grad, w64.grad, b64.grad)):
            assert_parity(fused, want, name=f"fused {name}")
