"""Kept probabilities: the attention forward keeps P = softmax(s) (fp32, (B, Lq, Lk), before
dropout) for the backward when it fits ATTNFAST_ATTN_KEEP_MIB, and the backward reads it instead
of recomputing it (csrc/schemas.h, attnfast/ops/attention.py keep_probs). Checked here: the kept
path and the recompute path give the same values (bitwise on the CPU kernels, which keep exactly
what they would recompute) and both match the float64 reference, over causal, masks, dropout,
odd and unit lengths, fp32 and bf16; the kept P itself; the policy (budget, grad mode, backend),
its env var and its explain line; opcheck of the keep path; the refusal of the backends that do
not keep; torch.compile fullgraph."""
from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
from torch.utils._python_dispatch import TorchDispatchMode

import attnfast
from attnfast.reference.attention import weights_and_lse
from attnfast.ops import attention as attn_ops
from attnfast.ops.seed import NO_SEED, seed_tensor
from conftest import assert_parity, require_backend
from test_attention import make_qkv, require, run_with_grads

ENV = attn_ops.KEEP_ENV
HUGE = str(1 << 40)


class _Calls(TorchDispatchMode):
    """Records keep_probs of every attention_forward call and whether every attention_backward
    call was given kept probs."""

    def __init__(self):
        super().__init__()
        self.keep, self.given = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name.startswith("attention_forward"):
            self.keep.append(args[8])
        elif name.startswith("attention_backward"):
            self.given.append(args[6] is not None and args[6].numel() > 0)
        return func(*args, **(kwargs or {}))


def _run(q, k, v, grad, **kw):
    calls = _Calls()
    with calls:
        res = run_with_grads(
            lambda a, b_, c, **k2: attnfast.single_head_attention(a, b_, c, backend="cpu", **k2),
            q, k, v, grad=grad, **kw)
    return res, calls


CASES = {
    # name: (B, Lq, Lk, D, Dv, kwargs)
    "plain": (2, 9, 13, 8, 8, {}),
    "causal bottom-right": (2, 7, 19, 16, 12, {"causal": True}),
    "causal Lq > Lk": (2, 13, 5, 8, 8, {"causal": True}),
    "masks": (2, 11, 17, 8, 8, {"mask": True}),
    "dropout": (2, 9, 70, 8, 8, {"causal": True, "dropout_p": 0.3, "training": True,
                                 "seed": 1234}),
    "Lq 1": (3, 1, 9, 8, 8, {"causal": True}),
    "Lk 1": (2, 6, 1, 8, 8, {}),
    "odd, several key blocks": (1, 67, 301, 9, 7, {"causal": True}),
}


def _kwargs(case, b, lq, lk):
    kw = dict(CASES[case][5])
    if kw.pop("mask", False):
        g = torch.Generator().manual_seed(5)
        mask = torch.rand(b, lq, lk, generator=g) > 0.3
        mask[0, 3] = False  # a fully masked row: P 0, output and gradients 0
        pad = torch.zeros(b, lk, dtype=torch.bool)
        pad[1, -3:] = True
        kw.update(attn_mask=mask, key_padding_mask=pad)
    return kw


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16],
                         ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", list(CASES))
def test_kept_equals_recomputed_and_reference(case, dtype, monkeypatch):
    """Forward and dq/dk/dv with the probabilities kept equal those with them recomputed
    (bitwise: the CPU forward keeps exactly what the backward recomputes), and both match the
    float64 reference (bf16 / fp16: within 2x of the reference's error in that dtype)."""
    require("cpu")
    b, lq, lk, d, dv, _ = CASES[case]
    q, k, v = make_qkv(b, lq, lk, d, dv, dtype=dtype)
    kw = _kwargs(case, b, lq, lk)
    grad = torch.randn(b, lq, dv, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    monkeypatch.setenv(ENV, "0")
    recomputed, calls = _run(q, k, v, grad, **kw)
    assert calls.keep == [False] and calls.given == [False]
    monkeypatch.setenv(ENV, HUGE)
    kept, calls = _run(q, k, v, grad, **kw)
    assert calls.keep == [True] and calls.given == [True]
    for name, a, r in zip(("out", "dq", "dk", "dv"), kept, recomputed):
        assert torch.equal(a, r), f"{case} {name}: kept and recomputed differ"
    kw64 = {n: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
            for n, t in kw.items()}

    def ref(a, b_, c, **k2):
        return attnfast.single_head_attention(a, b_, c, backend="reference", **k2)

    oracle = run_with_grads(ref, q.double(), k.double(), v.double(), grad=grad, **kw64)
    low = run_with_grads(ref, q, k, v, grad=grad, **kw) if dtype != torch.float32 else [None] * 4
    for i, name in enumerate(("out", "dq", "dk", "dv")):
        assert_parity(kept[i], oracle[i], low[i], name=f"kept {case} {name}")


@pytest.mark.parametrize("dropout_p", [0.0, 0.4])
def test_kept_probs_are_the_softmax_before_dropout(dropout_p):
    """The op's probs output: softmax(s) of the reference (fp64) before dropout, 0 on masked and
    causally hidden keys and on a fully masked row; an empty (0,) tensor without keep_probs."""
    require("cpu")
    b, lq, lk, d = 2, 10, 23, 8
    q, k, v = make_qkv(b, lq, lk, d)
    mask = torch.ones(b, lq, lk, dtype=torch.bool)
    mask[1, 4] = False
    mask[0, :, 2] = False
    bias = attn_ops.build_bias(mask, None, (b, lq, lk), q.device)
    seed = seed_tensor(77)
    out, lse, probs = torch.ops.attnfast.attention_forward(q, k, v, bias, True, 0.4, dropout_p,
                                                           seed, True)
    assert probs.shape == (b, lq, lk) and probs.dtype == torch.float32 and probs.is_contiguous()
    want, _ = weights_and_lse(q.double(), k.double(), bias, True, 0.4, 0.0, NO_SEED)
    torch.testing.assert_close(probs.double(), want, atol=1e-6, rtol=1e-5)
    assert torch.all(probs[1, 4] == 0) and torch.all(probs[0, :, 2] == 0)
    hidden = torch.ones(lq, lk, dtype=torch.bool).triu(lk - lq + 1)  # keys past i + Lk - Lq
    assert torch.all(probs[:, hidden] == 0)
    out2, lse2, none = torch.ops.attnfast.attention_forward(q, k, v, bias, True, 0.4, dropout_p,
                                                            seed, False)
    assert none.shape == (0,)
    assert torch.equal(out, out2) and torch.equal(lse, lse2)


def test_budget_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert attn_ops.keep_budget_mib() == attn_ops.DEFAULT_KEEP_MIB == 256
    monkeypatch.setenv(ENV, "")
    assert attn_ops.keep_budget_mib() == 256
    monkeypatch.setenv(ENV, "0")
    assert attn_ops.keep_budget_mib() == 0
    monkeypatch.setenv(ENV, "4096")
    assert attn_ops.keep_budget_mib() == 4096
    for bad in ("-1", "1.5", " 8", "lots", "٣"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(ValueError, match=f"{ENV}.*not valid"):
            attn_ops.keep_budget_mib()


def test_bad_budget_raises_from_the_public_call(monkeypatch):
    require("cpu")
    q, k, v = (t.requires_grad_(True) for t in make_qkv(1, 3, 4, 8))
    monkeypatch.setenv(ENV, "256MiB")
    with pytest.raises(ValueError, match=ENV):
        attnfast.single_head_attention(q, k, v, backend="cpu")


def _sharnn_inputs(requires_grad=True):
    # SHA-RNN's attention shape, B 2 Lq 1024 Lk 3072, with D = 1: the policy reads shapes only.
    q = torch.zeros(2, 1024, 1, requires_grad=requires_grad)
    k = torch.zeros(2, 3072, 1)
    return attn_ops.prepare(q, k, k)


def test_policy(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    inp = _sharnn_inputs()
    assert attn_ops.keep_probs("cpu", inp)
    assert attn_ops.keep_probs_reason("cpu", inp) == (
        f"keeps probabilities: 24.0 MiB <= budget 256 MiB ({ENV})")
    for backend in ("cuda", "triton", "simt", "reference"):
        assert not attn_ops.keep_probs(backend, inp)
    with torch.no_grad():
        assert not attn_ops.keep_probs("cpu", inp)
    assert not attn_ops.keep_probs("cpu", _sharnn_inputs(requires_grad=False))
    monkeypatch.setenv(ENV, "24")
    assert attn_ops.keep_probs("cpu", inp)  # the budget is inclusive
    monkeypatch.setenv(ENV, "23")
    assert not attn_ops.keep_probs("cpu", inp)
    assert attn_ops.keep_probs_reason("cpu", inp) == (
        f"recomputes: 24.0 MiB > budget 23 MiB ({ENV})")


def test_explain_shows_the_policy(monkeypatch):
    require("cpu")
    monkeypatch.delenv(ENV, raising=False)
    q = torch.zeros(2, 1024, 1, requires_grad=True)
    k = torch.zeros(2, 3072, 1)
    text = attnfast.explain("single_head_attention", q, k, k, backend="cpu")
    assert f"cpu: backward: keeps probabilities: 24.0 MiB <= budget 256 MiB ({ENV})" in text
    monkeypatch.setenv(ENV, "0")
    text = attnfast.explain(attnfast.single_head_attention, q, k, k, backend="cpu")
    assert "cpu: backward: recomputes: 24.0 MiB > budget 0 MiB" in text
    text = attnfast.explain(attnfast.single_head_attention, q.detach(), k, k, backend="cpu")
    assert "keeps nothing: no backward will run" in text
    text = attnfast.explain(attnfast.single_head_attention, q, k, k, backend="reference")
    assert "reference: backward: torch autograd" in text
    if attnfast.backends()["simt"] is None:
        text = attnfast.explain(attnfast.single_head_attention, q, k, k, backend="simt")
        assert "simt: backward: recomputes: the simt kernels recompute" in text


def test_explain_sdpa_shows_the_policy(monkeypatch):
    require("cpu")
    monkeypatch.delenv(ENV, raising=False)
    # SDPA's (B, H, L, D) with the heads folded into the batch: 2 x 1 x 1024 x 3072.
    q = torch.zeros(2, 1, 1024, 8, requires_grad=True)
    k = torch.zeros(2, 1, 3072, 8)
    text = attnfast.explain(attnfast.scaled_dot_product_attention, q, k, k)
    assert f"cpu: backward: keeps probabilities: 24.0 MiB <= budget 256 MiB ({ENV})" in text
    text = attnfast.explain(attnfast.scaled_dot_product_attention, q, k, k, dropout_p=0.1)
    assert "torch's scaled_dot_product_attention" in text


def test_no_keep_without_a_backward(monkeypatch):
    require("cpu")
    monkeypatch.setenv(ENV, HUGE)
    q, k, v = make_qkv(2, 5, 7, 8)
    for grad_mode, rg in ((True, False), (False, True)):
        calls = _Calls()
        with torch.set_grad_enabled(grad_mode), calls:
            attnfast.single_head_attention(q.requires_grad_(rg), k, v, backend="cpu")
        assert calls.keep == [False]


def test_opcheck_keep_path():
    require("cpu")
    q, k, v = (t.requires_grad_(True) for t in make_qkv(2, 9, 13, 8))
    for args in [(q, k, v, None, True, 0.3, 0.0, NO_SEED, True),
                 (q, k, v, None, False, 0.3, 0.2, seed_tensor(11), True)]:
        torch.library.opcheck(torch.ops.attnfast.attention_forward, args)
        out, lse, probs = torch.ops.attnfast.attention_forward(*args)
        bwd = (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(),
               lse.detach(), probs.detach(), None, args[4], 0.3, args[6], args[7], True)
        torch.library.opcheck(torch.ops.attnfast.attention_backward, bwd)


def test_backward_rejects_wrong_probs():
    require("cpu")
    q, k, v = make_qkv(2, 4, 6, 8)
    out, lse, probs = torch.ops.attnfast.attention_forward(q, k, v, None, False, 0.3, 0.0,
                                                           NO_SEED, True)
    for bad in (probs[:, :, :5], probs.double(), probs.transpose(1, 2).contiguous().transpose(1, 2)):
        with pytest.raises(RuntimeError, match="probs must be"):
            torch.ops.attnfast.attention_backward(torch.ones_like(out), q, k, v, out, lse, bad,
                                                  None, False, 0.3, 0.0, NO_SEED, False)


@pytest.mark.parametrize("backend", ["simt", "triton"])
def test_backends_that_recompute_refuse_to_keep(backend):
    """The CUDA kernels (here under the SIMT harness) and Triton refuse keep_probs=True with an
    error saying so (never an empty tensor in place of the probs), and their backward ignores
    probs (recomputes): the same gradients as without."""
    require(backend)
    q, k, v = make_qkv(1, 4, 6, 8)
    suffix = "_triton" if backend == "triton" else ""
    ns = torch.ops.attnfast_simt if backend == "simt" else torch.ops.attnfast
    fwd = getattr(ns, "attention_forward" + suffix)
    bwd = getattr(ns, "attention_backward" + suffix)
    with pytest.raises((RuntimeError, ValueError), match="keep_probs=True is not implemented"):
        fwd(q, k, v, None, True, 0.3, 0.0, NO_SEED, True)
    out, lse, none = fwd(q, k, v, None, True, 0.3, 0.0, NO_SEED, False)
    assert none.shape == (0,)
    go = torch.randn_like(out)
    _, _, probs = torch.ops.attnfast.attention_forward(q, k, v, None, True, 0.3, 0.0, NO_SEED, True)
    with_probs = bwd(go, q, k, v, out, lse, probs, None, True, 0.3, 0.0, NO_SEED, True)
    without = bwd(go, q, k, v, out, lse, None, None, True, 0.3, 0.0, NO_SEED, True)
    for a, b_ in zip(with_probs, without):
        assert torch.equal(a, b_)


def test_compile_fullgraph_keeps(monkeypatch):
    """torch.compile(fullgraph=True) of a training call: the keep decision traces without a graph
    break, the compiled forward keeps (the same values as eager, bitwise) and a second call does
    not recompile."""
    require("cpu")
    monkeypatch.setenv(ENV, HUGE)
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")

    def fn(q, k, v):
        return attnfast.single_head_attention(q, k, v, causal=True, backend="cpu")

    compiled = torch.compile(fn, backend=counter, fullgraph=True)
    q, k, v = make_qkv(2, 7, 11, 8)
    grad = torch.randn(2, 7, 8, dtype=torch.float64)
    calls = _Calls()
    with calls:
        want = run_with_grads(fn, q, k, v, grad=grad)
    assert calls.keep == [True]
    for _ in range(2):
        got = run_with_grads(compiled, q, k, v, grad=grad)
        for a, b_ in zip(got, want):
            assert torch.equal(a, b_)
    assert counter.frame_count == 1
    # The compiled graph calls the op with keep_probs=True (its last argument), a constant.
    calls = [n for g in counter.graphs for n in g.graph.nodes
             if n.op == "call_function" and "attention_forward" in str(n.target)]
    assert len(calls) == 1 and calls[0].args[-1] is True


def test_sharnn_dropin_step_keeps(monkeypatch):
    """A training-style call at a SHA-RNN-like shape ratio keeps under the default budget."""
    require_backend("cpu")
    monkeypatch.delenv(ENV, raising=False)
    q, k, v = make_qkv(2, 16, 48, 8)
    calls = _Calls()
    with calls:
        run_with_grads(lambda a, b_, c: attnfast.single_head_attention(a, b_, c, causal=True), q, k, v)
    assert calls.keep == [True] and calls.given == [True]
