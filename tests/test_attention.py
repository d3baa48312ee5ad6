"""attnfast.single_head_attention and the SDPA drop-in: every backend against the float64
reference (fp32 tight; bf16/fp16 within 2x of the reference's own low-precision error),
forward and dq/dk/dv, plus masks, dropout, errors, opcheck, gradcheck and determinism.
Shapes stay small: the whole file runs in about a minute on 2 CPU cores."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import attnfast
from attnfast import reference
from attnfast.ops import attention as attn_ops
from attnfast.ops.seed import NO_SEED, seed_tensor
from conftest import assert_parity, device_for, require_backend

# "simt": the CUDA kernels run on the CPU by the SIMT host harness (csrc/simt/).
BACKENDS = ["reference", "cpu", "cuda", "triton", "simt"]
COMPILED = ["cpu", "cuda", "triton", "simt"]


def require(backend):
    """Skip (with the dispatcher's reasons) when ``backend`` cannot run attention here."""
    require_backend(backend)
    q = torch.zeros(1, 1, 8, device=device_for(backend))
    probe = attn_ops.AttentionInputs(q, q, q, None, False, 1.0, 0.0, NO_SEED, False)
    reasons = attn_ops.ATTENTION.reasons(backend, probe)
    if reasons:
        pytest.skip(f"backend {backend!r} cannot run attention: {'; '.join(reasons)}")


def interpreted(backend) -> bool:
    """Triton on the CPU interpreter, or CUDA kernels under the SIMT harness: ~1000x slower than
    a GPU, so wide heads get tiny shapes."""
    return backend == "simt" or (backend == "triton" and device_for(backend) == "cpu")


def make_qkv(b, lq, lk, d, dv=None, dtype=torch.float32, device="cpu"):
    dv = d if dv is None else dv
    q = torch.randn(b, lq, d, dtype=torch.float64).to(device=device, dtype=dtype)
    k = torch.randn(b, lk, d, dtype=torch.float64).to(device=device, dtype=dtype)
    v = torch.randn(b, lk, dv, dtype=torch.float64).to(device=device, dtype=dtype)
    return q, k, v


def run_with_grads(fn, q, k, v, grad=None, **kw):
    """(out, dq, dk, dv) of fn(q, k, v, **kw) with the upstream gradient ``grad``."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v, **kw)
    if grad is None:
        grad = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out.backward(grad.to(device=out.device, dtype=out.dtype))
    return out.detach(), q.grad, k.grad, v.grad


def check_against_oracle(backend, q, k, v, names=("out", "dq", "dk", "dv"), fp32_tol=None, **kw):
    """Run ``backend`` in q's dtype and compare with the fp64 oracle (and, in low precision,
    with the error of the reference computed in that same low precision)."""
    def fn(backend_name):
        return lambda a, b_, c, **k2: attnfast.single_head_attention(a, b_, c, backend=backend_name, **k2)

    got = run_with_grads(fn(backend), q, k, v, **kw)
    # The oracle runs on the CPU: masks go along (floating masks in float64 for the fp64 run).
    cpu_kw = {n: a.cpu() if isinstance(a, torch.Tensor) else a for n, a in kw.items()}
    kw64 = {n: a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for n, a in cpu_kw.items()}
    oracle = run_with_grads(fn("reference"), q.double().cpu(), k.double().cpu(), v.double().cpu(), **kw64)
    low = None
    if q.dtype in (torch.bfloat16, torch.float16):
        low = run_with_grads(fn("reference"), q.cpu(), k.cpu(), v.cpu(), **cpu_kw)
    for i, name in enumerate(names):
        tol = fp32_tol or {}
        assert_parity(got[i], oracle[i], None if low is None else low[i], name=f"{backend} {name}", **tol)


# ---- forward + backward parity --------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [1, 8, 40, 64, 100, 128, 256, 512, 1024])
def test_parity_fp32_head_dims(backend, d):
    require(backend)
    dev = device_for(backend)
    lq, lk = (19, 45) if d >= 512 else (37, 83)  # Lk > Lq: a memory of Lk - Lq positions
    b = 2
    if interpreted(backend) and d >= 256:
        b, lq, lk = 1, 7, 19
    q, k, v = make_qkv(b, lq, lk, d, device=dev)
    check_against_oracle(backend, q, k, v, causal=True)
    check_against_oracle(backend, q, k, v[..., : max(1, d // 2)].contiguous(), causal=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lq,lk", [(1, 1), (1, 70), (65, 65), (70, 33), (130, 257)])
def test_parity_fp32_lengths(backend, causal, lq, lk):
    require(backend)
    q, k, v = make_qkv(1, lq, lk, 24, 20, device=device_for(backend))
    check_against_oracle(backend, q, k, v, causal=causal)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_wide_head_backward_blocks(dtype):
    """The CPU backward takes 128 x 128 blocks when max(D, Dv) >= 512 (64 x 64 otherwise): several
    query and key blocks, partial last blocks, a memory (Lk > Lq) and the causal diagonal crossing
    block boundaries."""
    require("cpu")
    q, k, v = make_qkv(1, 150, 301, 512, 520, dtype=dtype)
    check_against_oracle("cpu", q, k, v, causal=True)


@pytest.mark.parametrize("mode", ["causal", "mask_dropout"])
def test_cpu_forward_key_blocks(mode):
    """The CPU forward streams keys in blocks of 256: three of them here (256, 256, 88), the
    causal diagonal (keys 510-599) across the last boundary; an additive mask and dropout (Philox
    counters indexed by absolute key, whatever the block) checked against the reference."""
    require("cpu")
    q, k, v = make_qkv(2, 90, 600, 40, 24)
    if mode == "causal":
        check_against_oracle("cpu", q, k, v, causal=True)
    else:
        mask = torch.randn(2, 90, 600, generator=torch.Generator().manual_seed(5))
        check_against_oracle("cpu", q, k, v, attn_mask=mask, dropout_p=0.2, training=True, seed=7)


@pytest.mark.parametrize("lq,lk,d", [(200, 50, 24), (300, 40, 512)])
def test_cpu_backward_query_blocks_no_task_writes(lq, lk, d):
    """Causal with Lk < Lq: the first Lq - Lk queries see no key, and whole query blocks of them
    are never written by any backward task (whose first dQ product overwrites instead of
    accumulating): their dQ must come out 0, the rest exact."""
    require("cpu")
    q, k, v = make_qkv(2, lq, lk, d)
    check_against_oracle("cpu", q, k, v, causal=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [8, 64, 100, 1024])
def test_parity_low_precision(backend, dtype, d):
    require(backend)
    b, lq, lk = (1, 7, 19) if interpreted(backend) and d >= 256 else (2, 33, 71)
    q, k, v = make_qkv(b, lq, lk, d, dtype=dtype, device=device_for(backend))
    check_against_oracle(backend, q, k, v, causal=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d,dv", [(8, 8), (40, 24), (64, 64), (136, 72)])
@pytest.mark.parametrize("mode", ["causal_dropout", "bias"])
def test_simt_tensor_core_backward(dtype, d, dv, mode):
    """The CUDA tensor-core backward (attn_bwd_dkdv_tc_kernel / attn_bwd_dq_tc_kernel: bf16/fp16,
    D and Dv multiples of 8) under the SIMT harness: chunk tails (D = 40; D = 136 is three D
    chunks and three dK slices), Dv != D, lengths off the 64-wide tiles (several query and key
    blocks), causal with memory positions (Lk > Lq) plus dropout, or an additive fp32 mask
    broadcast over the batch (0 stride) with a fully masked row."""
    require("simt")
    # Marks the harness as loaded for attnfast.testing.simt, so the launch-log table printed at
    # the end of the session (attnfast.testing.simt_report) lists the kernels these cases ran.
    from attnfast.testing import simt
    simt.simt_available()
    b, lq, lk = (1, 70, 150) if d > 64 else (2, 70, 150)
    q, k, v = make_qkv(b, lq, lk, d, dv, dtype=dtype)
    if mode == "causal_dropout":
        check_against_oracle("simt", q, k, v, causal=True, dropout_p=0.2, training=True, seed=5)
    else:
        mask = torch.randn(1, lq, lk, generator=torch.Generator().manual_seed(4))
        mask[:, 3, :] = float("-inf")  # a dead row: zero output and gradients
        check_against_oracle("simt", q, k, v, attn_mask=mask)


@pytest.mark.parametrize("backend", ["simt", "cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["causal_memory_dropout", "mask_padding", "causal_short_memory"])
def test_gemm_strategy(backend, dtype, mode, monkeypatch):
    """The GEMM strategy of the GPU backends (csrc/cuda/attention_gemm.h,
    triton_kernels/attention_gemm.py: library GEMMs on chunks of query rows, row-softmax kernels
    between them), forced at small widths with 16-row chunks, so a case has
    4-5 chunks with a partial last one: causal with a memory (each chunk's key prefix grows),
    dropout (Philox counters at absolute positions), an additive mask broadcast over the batch
    with a dead row plus key padding, and causal with Lk < Lq (the first chunks see no key at all:
    zero output and dQ, lse -inf). Dv != D, non-contiguous q (a transposed view)."""
    require(backend)
    dev = device_for(backend)
    monkeypatch.setenv("ATTNFAST_ATTN_STRATEGY", "gemm")
    monkeypatch.setenv("ATTNFAST_ATTN_GEMM_ROWS", "16")
    lq, lk = (70, 50) if mode == "causal_short_memory" else (70, 110)
    q, k, v = make_qkv(2, lq, lk, 40, 24, dtype=dtype, device=dev)
    q = q.transpose(0, 1).contiguous().transpose(0, 1)  # batch stride smaller than row stride
    if mode == "causal_memory_dropout":
        check_against_oracle(backend, q, k, v, causal=True, dropout_p=0.2, training=True, seed=9)
    elif mode == "mask_padding":
        g = torch.Generator().manual_seed(8)
        mask = torch.randn(1, lq, lk, generator=g)
        mask[:, 5, :] = float("-inf")  # a dead row
        padding = torch.rand(2, lk, generator=g) > 0.8
        check_against_oracle(backend, q, k, v, attn_mask=mask.to(dev), key_padding_mask=padding.to(dev))
    else:
        check_against_oracle(backend, q, k, v, causal=True)


@pytest.mark.parametrize("backend", ["simt", "cuda", "triton"])
def test_strategies_agree_at_wide_heads(backend, monkeypatch):
    """Both strategies of the GPU backends at D = 512 (the GEMM one is the default there, the flash kernels run
    when ATTNFAST_ATTN_STRATEGY=flash), each against the reference; the GEMM backward is bitwise
    repeatable (fixed chunk order, no atomics)."""
    require(backend)
    dev = device_for(backend)
    q, k, v = make_qkv(1, 9, 21, 512, 264, dtype=torch.bfloat16, device=dev)
    for strategy in ("flash", "gemm"):
        monkeypatch.setenv("ATTNFAST_ATTN_STRATEGY", strategy)
        check_against_oracle(backend, q, k, v, causal=True)
    monkeypatch.setenv("ATTNFAST_ATTN_STRATEGY", "auto")
    first = run_with_grads(lambda *a, **kw: attnfast.single_head_attention(*a, backend=backend, **kw),
                           q, k, v, causal=True, dropout_p=0.3, training=True, seed=4)
    again = run_with_grads(lambda *a, **kw: attnfast.single_head_attention(*a, backend=backend, **kw),
                           q, k, v, causal=True, dropout_p=0.3, training=True, seed=4)
    for a, b in zip(first, again):
        assert torch.equal(a, b)


@pytest.mark.parametrize("b,lq,lk,d", [(4, 1024, 1024, 1024), (4, 1024, 3072, 1024),
                                       (16, 1024, 5000, 1024), (1, 4096, 4096, 512),
                                       (2, 16384, 16384, 128),
                                       (2, 300, 20000, 1024), (1, 1, 5000, 1024)])
@pytest.mark.parametrize("causal", [False, True])
def test_gemm_chunk_rows_bound_the_scores(b, lq, lk, d, causal, monkeypatch):
    """The GEMM strategy's chunks (the rule the CUDA glue shares): the fp32 scores of a chunk stay
    within max(2 B max(Lq, Lk) D, 4 Mi) values (linear in the lengths, not O(B Lq Lk)) unless one
    64-row chunk is already more; chunks are multiples of 64 rows or all of Lq; a long causal
    attention takes >= 4 chunks."""
    require("triton")
    monkeypatch.delenv("ATTNFAST_ATTN_GEMM_ROWS", raising=False)
    from attnfast.triton_kernels import attention_strategy
    rows = attention_strategy.chunk_rows(b, lq, lk, d, d, causal)
    assert 1 <= rows <= lq
    assert rows == lq or rows % 64 == 0
    assert b * rows * lk <= max(2 * b * max(lq, lk) * d, 1 << 22, b * 64 * lk)
    if causal and lq >= 4096:
        assert -(-lq // rows) >= 4


@pytest.mark.parametrize("backend", ["simt", "triton"])
@pytest.mark.parametrize("path", ["flash_fp32", "flash_tc_bf16", "gemm_fp16"])
def test_batch_slices(backend, path, monkeypatch):
    """GPUs cap the grid's batch dimension at 65535, so the CUDA and Triton launchers run larger
    batches in slices (pointers advanced, dropout counters offset to the slice's first batch).
    The harness build slices every 3 batches, and the Triton launchers are set to here: B = 8 is
    three slices, with a per-batch additive mask, dropout and a memory, on the flash kernels
    (CUDA: the exact-fp32 ones and the tensor-core ones) and the GEMM strategy's row kernels,
    forward and backward against the reference."""
    require(backend)
    if backend == "triton":
        from attnfast.triton_kernels import _common
        monkeypatch.setattr(_common, "CUDA_MAX_GRID_YZ", 3)
    dtype = {"flash_fp32": torch.float32, "flash_tc_bf16": torch.bfloat16,
             "gemm_fp16": torch.float16}[path]
    monkeypatch.setenv("ATTNFAST_ATTN_STRATEGY", "gemm" if path.startswith("gemm") else "flash")
    q, k, v = make_qkv(8, 11, 20, 16, 8, dtype=dtype)
    mask = torch.randn(8, 11, 20, generator=torch.Generator().manual_seed(2))
    check_against_oracle(backend, q, k, v, causal=True, attn_mask=mask, dropout_p=0.25,
                         training=True, seed=13)


@pytest.mark.parametrize("backend", ["simt", "triton"])
def test_strategy_env_rejects_bad_values(backend, monkeypatch):
    """An ATTNFAST_ATTN_STRATEGY or ATTNFAST_ATTN_GEMM_ROWS value the strategy rule does not
    accept is a ValueError at the call that names the variable, the value and the accepted
    values, the same from the C++ ops (simt: csrc/cuda/attention_strategy.h) as from the Triton
    ones (triton_kernels/attention_strategy.py, the authority; tests/test_attention_strategy.py
    holds the two rules against each other over a grid): nothing falls back silently."""
    require(backend)
    ext = attnfast._extension._C
    if backend == "simt" and not hasattr(ext, "attention_use_gemm"):
        pytest.skip("attnfast._C / _simt were built from sources older than "
                    "csrc/cuda/attention_strategy.h: rebuild the extensions")
    q, k, v = make_qkv(1, 9, 11, 16, 8)

    def run():
        return attnfast.single_head_attention(q, k, v, causal=True, backend=backend)

    monkeypatch.delenv("ATTNFAST_ATTN_GEMM_ROWS", raising=False)
    monkeypatch.setenv("ATTNFAST_ATTN_STRATEGY", "fast")
    with pytest.raises(ValueError, match=re.escape(
            'ATTNFAST_ATTN_STRATEGY="fast" is not valid; expected auto, flash or gemm')):
        run()
    monkeypatch.setenv("ATTNFAST_ATTN_STRATEGY", "gemm")  # the GEMM strategy reads the rows
    monkeypatch.setenv("ATTNFAST_ATTN_GEMM_ROWS", "-3")
    with pytest.raises(ValueError, match=re.escape(
            'ATTNFAST_ATTN_GEMM_ROWS="-3" is not valid; expected a positive integer')):
        run()
    monkeypatch.setenv("ATTNFAST_ATTN_GEMM_ROWS", "")  # empty: the default rule
    monkeypatch.setenv("ATTNFAST_ATTN_STRATEGY", "")  # empty: auto
    check_against_oracle(backend, q, k, v, causal=True)


# ---- masks -----------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["bool", "additive", "padding", "all"])
def test_masks(backend, kind):
    require(backend)
    dev = device_for(backend)
    b, lq, lk, d = 3, 21, 50, 16
    q, k, v = make_qkv(b, lq, lk, d, device=dev)
    g = torch.Generator().manual_seed(3)
    kw = {}
    if kind in ("bool", "all"):
        kw["attn_mask"] = (torch.rand(lq, lk, generator=g) > 0.3).to(dev)  # broadcast over batch
    if kind == "additive":
        kw["attn_mask"] = torch.randn(b, 1, lk, generator=g).to(dev)
    if kind in ("padding", "all"):
        kw["key_padding_mask"] = (torch.rand(b, lk, generator=g) > 0.7).to(dev)
    check_against_oracle(backend, q, k, v, causal=(kind == "all"), **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fully_masked_rows_are_zero(backend, dtype):
    require(backend)
    dev = device_for(backend)
    q, k, v = make_qkv(2, 9, 12, 8, dtype=dtype, device=dev)
    mask = torch.ones(2, 9, 12, dtype=torch.bool)
    mask[0, 3] = False
    mask[1, :, :] = False  # every row of batch 1
    pad = torch.zeros(2, 12, dtype=torch.bool)
    out, dq, dk, dv = run_with_grads(
        lambda a, b_, c: attnfast.single_head_attention(a, b_, c, attn_mask=mask.to(dev), backend=backend),
        q, k, v)
    for t in (out, dq, dk, dv):
        assert torch.isfinite(t).all()
    assert (out[0, 3] == 0).all() and (out[1] == 0).all() and (dq[1] == 0).all()
    assert (dk[1] == 0).all() and (dv[1] == 0).all()
    check_against_oracle(backend, q, k, v, attn_mask=mask.to(dev), key_padding_mask=pad.to(dev))


# ---- layouts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    require(backend)
    dev = device_for(backend)
    base = torch.randn(40, 2, 3, 64, dtype=torch.float64).float().to(dev)
    q = base[:17, :, 0, :32].transpose(0, 1)          # row stride 384, batch stride 192
    k = base[:, :, 1, ::2].transpose(0, 1)            # last dim strided: Python makes it contiguous
    v = base[:, :, 2, 8:32].transpose(0, 1)
    check_against_oracle(backend, q, k, v, causal=True)


@pytest.mark.parametrize("backend", COMPILED)
def test_empty_and_batch_one(backend):
    require(backend)
    dev = device_for(backend)
    q, k, v = make_qkv(1, 5, 6, 8, device=dev)
    check_against_oracle(backend, q, k, v, causal=True)
    e = attnfast.single_head_attention(q[:0], k[:0], v[:0], backend=backend)
    assert e.shape == (0, 5, 8)


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("lq,lk", [(0, 7), (5, 0)])
def test_zero_length_gradients(backend, lq, lk):
    """No queries: dK = dV = 0 (not uninitialised memory); no keys: out = 0 and dQ = 0."""
    require(backend)
    dev = device_for(backend)
    q, k, v = make_qkv(2, lq, lk, 8, dv=6, device=dev)
    for t in (q, k, v):
        t.requires_grad_(True)
    out = attnfast.single_head_attention(q, k, v, backend=backend)
    assert out.shape == (2, lq, 6)
    assert (out == 0).all()
    out.backward(torch.ones_like(out))
    for name, g, t in (("dq", q.grad, q), ("dk", k.grad, k), ("dv", v.grad, v)):
        assert g is not None and g.shape == t.shape, name
        assert (g == 0).all(), name


# ---- dropout ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_matches_reference_mask(backend):
    """Same seed -> the same Philox mask in every backend: parity with the reference."""
    require(backend)
    q, k, v = make_qkv(2, 23, 41, 16, device=device_for(backend))
    check_against_oracle(backend, q, k, v, causal=True, dropout_p=0.3, training=True, seed=1234)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_statistics(backend):
    require(backend)
    dev = device_for(backend)
    p = 0.25
    q = torch.zeros(4, 64, 8, device=dev)  # uniform weights 1/Lk
    k = torch.randn(4, 128, 8, device=dev)
    v = torch.ones(4, 128, 1, device=dev)
    out = attnfast.single_head_attention(q, k, v, dropout_p=p, training=True, seed=7, backend=backend)
    # out = (kept fraction) / (1 - p) per row; kept fraction ~ Binomial(128, 0.75) / 128.
    kept = out.double().cpu() * (1 - p)
    assert abs(kept.mean().item() - (1 - p)) < 0.01
    assert 0.02 < kept.std().item() < 0.06
    again = attnfast.single_head_attention(q, k, v, dropout_p=p, training=True, seed=7, backend=backend)
    assert torch.equal(out, again)
    evald = attnfast.single_head_attention(q, k, v, dropout_p=p, training=False, backend=backend)
    assert torch.allclose(evald.cpu(), torch.ones(4, 64, 1))


def test_dropout_seed_drawn_from_torch_generator():
    q, k, v = make_qkv(1, 8, 8, 4)
    torch.manual_seed(5)
    a = attnfast.single_head_attention(q, k, v, dropout_p=0.5, training=True, backend="reference")
    torch.manual_seed(5)
    b = attnfast.single_head_attention(q, k, v, dropout_p=0.5, training=True, backend="reference")
    assert torch.equal(a, b)


# ---- return_weights ----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_return_weights(backend):
    require(backend)
    q, k, v = make_qkv(2, 7, 11, 8, device=device_for(backend))
    out, w = attnfast.single_head_attention(q, k, v, causal=True, return_weights=True, backend=backend)
    ref_out, _, ref_w = reference.attention(q.double(), k.double(), v.double(), causal=True,
                                            return_weights=True)
    assert_parity(out, ref_out)
    assert_parity(w, ref_w)
    assert torch.allclose(w.sum(-1).double().cpu(), torch.ones(2, 7, dtype=torch.float64), atol=1e-5)
    assert (w[:, 0, 5:] == 0).all()  # bottom-right causal: query 0 sees keys 0..4


# ---- determinism -------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", COMPILED)
def test_deterministic_backward_is_bitwise_repeatable(backend):
    require(backend)
    q, k, v = make_qkv(1, 70, 150, 40, device=device_for(backend))
    torch.use_deterministic_algorithms(True)
    try:
        r1 = run_with_grads(lambda a, b_, c: attnfast.single_head_attention(a, b_, c, causal=True, backend=backend), q, k, v)
        r2 = run_with_grads(lambda a, b_, c: attnfast.single_head_attention(a, b_, c, causal=True, backend=backend), q, k, v)
    finally:
        torch.use_deterministic_algorithms(False)
    for x, y in zip(r1, r2):
        assert torch.equal(x, y)


# ---- the op contract: opcheck, gradcheck -------------------------------------------------------

@pytest.mark.parametrize("backend,strategy", [("cpu", None), ("cuda", "flash"), ("cuda", "gemm")])
def test_opcheck(backend, strategy, monkeypatch):
    require(backend)
    if strategy:  # the CUDA op's two strategies (csrc/cuda/attention_glue.h)
        monkeypatch.setenv("ATTNFAST_ATTN_STRATEGY", strategy)
    dev = device_for(backend)
    q, k, v = (t.requires_grad_(True) for t in make_qkv(2, 9, 13, 8, device=dev))
    pad = torch.zeros(2, 1, 13, device=dev).masked_fill(torch.rand(2, 1, 13, device=dev) > 0.7, float("-inf"))
    for args in [(q, k, v, None, False, 0.3, 0.0, NO_SEED, False),
                 (q, k, v, pad.expand(2, 9, 13), True, 0.25, 0.2, seed_tensor(11), False),
                 (q, k, v, None, True, 0.25, 0.2, seed_tensor(2**64 - 1), False)]:
        torch.library.opcheck(torch.ops.attnfast.attention_forward, args)
    for p, seed in ((0.0, NO_SEED), (0.2, seed_tensor(11))):
        out, lse, _ = torch.ops.attnfast.attention_forward(q, k, v, None, True, 0.3, p, seed, False)
        bwd_args = (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(),
                    lse.detach(), None, None, True, 0.3, p, seed, True)
        torch.library.opcheck(torch.ops.attnfast.attention_backward, bwd_args)


def test_gradcheck_reference_fp64():
    q, k, v = (t.requires_grad_(True) for t in make_qkv(2, 4, 6, 3, dtype=torch.float64))
    mask = torch.tensor([True, True, False, True, True, True])
    assert torch.autograd.gradcheck(
        lambda a, b_, c: attnfast.single_head_attention(a, b_, c, causal=True, attn_mask=mask,
                                                        backend="reference"), (q, k, v))


def test_lse_matches_reference():
    require("cpu")
    q, k, v = make_qkv(2, 10, 17, 8)
    mask = torch.ones(2, 10, 17, dtype=torch.bool)
    mask[1, 4] = False
    bias = attn_ops.build_bias(mask, None, (2, 10, 17), q.device)
    _, lse, _ = torch.ops.attnfast.attention_forward(q, k, v, bias, True, 0.5, 0.0, NO_SEED, False)
    _, ref = reference.attention(q.double(), k.double(), v.double(), bias, True, 0.5)
    assert lse.dtype == torch.float32 and torch.isneginf(lse[1, 4])
    assert_parity(lse, ref.float())


# ---- errors and dispatch -------------------------------------------------------------------------

@pytest.mark.parametrize("bad,match", [
    (lambda q, k, v: (q[0], k, v), "q must be 3-D"),
    (lambda q, k, v: (q, k[..., :3], v), "k must have shape"),
    (lambda q, k, v: (q, k, v[:, :2]), "v must have shape"),
    (lambda q, k, v: (q, k.double(), v), "k dtype"),
    (lambda q, k, v: (q.long(), k, v), "floating-point"),
])
def test_errors(bad, match):
    q, k, v = make_qkv(2, 4, 5, 8)
    with pytest.raises(ValueError, match=match):
        attnfast.single_head_attention(*bad(q, k, v))


def test_mask_errors():
    q, k, v = make_qkv(2, 4, 5, 8)
    with pytest.raises(ValueError, match="not broadcastable"):
        attnfast.single_head_attention(q, k, v, attn_mask=torch.ones(3, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        attnfast.single_head_attention(q, k, v, key_padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="dropout_p"):
        attnfast.single_head_attention(q, k, v, dropout_p=1.0)


def test_kernel_checks_name_the_argument():
    require("cpu")
    q, k, v = make_qkv(2, 4, 5, 8)
    with pytest.raises(RuntimeError, match="v must have shape"):
        torch.ops.attnfast.attention_forward(q, k, v[:, :3], None, False, 1.0, 0.0, NO_SEED, False)
    with pytest.raises(RuntimeError, match="bias"):
        torch.ops.attnfast.attention_forward(q, k, v, torch.zeros(2, 4, 4), False, 1.0, 0.0, NO_SEED,
                                             False)


def test_explain_names_every_backend():
    q, k, v = make_qkv(1, 3, 3, 4)
    text = attnfast.explain("single_head_attention", q, k, v)
    for name in BACKENDS:
        assert name in text
    assert "triton" in text and "-> runs" in text


# ---- the SDPA drop-in --------------------------------------------------------------------------

def sdpa_pair(*args, **kw):
    got = attnfast.scaled_dot_product_attention(*args, **kw)
    want = F.scaled_dot_product_attention(*(a.double() for a in args[:3]),
                                          **{k_: (v_.double() if isinstance(v_, torch.Tensor) and v_.is_floating_point() else v_)
                                             for k_, v_ in kw.items()})
    return got, want


@pytest.mark.parametrize("case", ["multihead", "gqa", "causal_square", "causal_topleft_wide",
                                  "causal_topleft_tall", "bool_mask", "float_mask", "scale"])
def test_sdpa_drop_in(case):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    q, k, v = r(2, 4, 9, 16), r(2, 4, 13, 16), r(2, 4, 13, 12)
    kw = {}
    if case == "gqa":
        k, v, kw = r(2, 2, 13, 16), r(2, 2, 13, 12), {"enable_gqa": True}
    elif case == "causal_square":
        k, v, kw = r(2, 4, 9, 16), r(2, 4, 9, 12), {"is_causal": True}
    elif case == "causal_topleft_wide":
        kw = {"is_causal": True}
    elif case == "causal_topleft_tall":
        q, kw = r(2, 4, 20, 16), {"is_causal": True}
    elif case == "bool_mask":
        kw = {"attn_mask": torch.rand(9, 13, generator=g) > 0.2}
        kw["attn_mask"][:, 0] = True
    elif case == "float_mask":
        kw = {"attn_mask": r(4, 9, 13)}
    elif case == "scale":
        kw = {"scale": 0.37}
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
    got, want = sdpa_pair(qg, kg, vg, **kw)
    assert_parity(got, want)
    got.sum().backward()
    qd, kd, vd = (t.double().requires_grad_(True) for t in (q, k, v))
    kw64 = {k_: (v_.double() if isinstance(v_, torch.Tensor) and v_.is_floating_point() else v_) for k_, v_ in kw.items()}
    F.scaled_dot_product_attention(qd, kd, vd, **kw64).sum().backward()
    for a, b_ in ((qg, qd), (kg, kd), (vg, vd)):
        assert_parity(a.grad, b_.grad)


def test_sdpa_bf16_and_3d():
    q, k, v = make_qkv(3, 10, 10, 32, dtype=torch.bfloat16)
    got = attnfast.scaled_dot_product_attention(q, k, v, is_causal=True)
    oracle = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    low = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert_parity(got, oracle, low)


def test_sdpa_dropout_goes_to_torch():
    q, k, v = make_qkv(1, 6, 6, 8)
    torch.manual_seed(3)
    got = attnfast.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(3)
    want = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    assert torch.equal(got, want)


def test_sdpa_routes_kernels_when_available():
    q, k, v = make_qkv(2, 5, 5, 8)
    route = attn_ops._sdpa_route(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), None, 0.0, True, None, False)
    assert route is not None and route[4] is True  # square: native causal, no mask
    assert attn_ops._sdpa_route(q.double(), k.double(), v.double(), None, 0.0, False, None, False) is None
    assert math.isclose(attnfast.scaled_dot_product_attention(q, k, v).sum().item(),
                        F.scaled_dot_product_attention(q, k, v).sum().item(), rel_tol=1e-4)


@pytest.mark.parametrize("blocks", ["2,64", "6,128", "130,192"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_block_size_override(blocks, dtype, monkeypatch):
    """ATTNFAST_ATTN_CPU_BLOCKS (the tuning knob, read per call) at odd query blocks: 2 rows,
    fewer rows than the 6-row register tile, more than 128, several key panels per block;
    both passes against the reference, with a mask and dropout."""
    require("cpu")
    monkeypatch.setenv("ATTNFAST_ATTN_CPU_BLOCKS", blocks)
    q, k, v = make_qkv(2, 150, 333, 40, 24, dtype=dtype)
    mask = torch.randn(2, 150, 333, generator=torch.Generator().manual_seed(6))
    check_against_oracle("cpu", q, k, v, causal=True, attn_mask=mask, dropout_p=0.1,
                         training=True, seed=11)


def test_cpu_block_size_override_rejects_bad_values():
    """A value the kernels cannot take is ignored with one warning (on stderr: it is raised in
    C++ inside the op) and the default blocks run."""
    require("cpu")
    code = ("import torch, attnfast; g = torch.Generator().manual_seed(0); "
            "q, k, v = (torch.randn(1, 9, 8, generator=g, dtype=torch.float64).float() for _ in range(3)); "
            "a = attnfast.single_head_attention(q, k, v, causal=True, backend='cpu'); "
            "b = attnfast.single_head_attention(q, k, v, causal=True, backend='reference'); "
            "print(float((a - b).abs().max()))")
    # bk not a multiple of 64; blocks past the bounds (a huge value corrupted the heap)
    for blocks in ("64,100", "2000000000,2000000000", "64,99999999999999999999"):
        env = dict(os.environ, ATTNFAST_ATTN_CPU_BLOCKS=blocks)
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        assert f"ignoring ATTNFAST_ATTN_CPU_BLOCKS=\"{blocks}\"" in r.stderr, r.stderr
        assert float(r.stdout.strip().splitlines()[-1]) < 1e-5


@pytest.mark.parametrize("isa", ["base", "avx2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_portable_isa_paths(isa, dtype, monkeypatch):
    """The non-AVX-512 builds of the CPU kernels (plain loops) on this machine."""
    require("cpu")
    monkeypatch.setenv("ATTNFAST_CPU_ISA", isa)
    q, k, v = make_qkv(2, 37, 70, 24, 20, dtype=dtype)
    check_against_oracle("cpu", q, k, v, causal=True, dropout_p=0.2, training=True, seed=3)
