"""attnfast.nn.SingleHeadAttention against an independent, plainly written SHA-RNN attention
(Merity's model.py math, no folding, explicit mask), with memory carried across segments."""
from __future__ import annotations

import math

import pytest
import torch

import attnfast
from conftest import assert_parity, device_for, require_backend
from test_attention import require

BACKENDS = ["reference", "cpu", "cuda", "triton"]


def sha_rnn_attention(params, x, mem):
    """SHA-RNN's Attention.forward (q=True, no k/v/r projections) + Block's memory handling,
    written out in float64: gates on q, k, v; causal mask [zeros(T, M) | triu(-inf, 1)]."""
    p = {k: v.double() for k, v in params.items()}
    qs, ks = torch.sigmoid(p["qs"]), torch.sigmoid(p["ks"])
    c, f = torch.nn.functional.linear(torch.sigmoid(p["vs"]), p["vq.l1.weight"], p["vq.l1.bias"]).chunk(2, -1)
    vs = torch.sigmoid(f) * torch.tanh(c)
    query = torch.nn.functional.linear(x, p["q.weight"], p["q.bias"])
    query = torch.nn.functional.layer_norm(query, (x.shape[-1],), p["qln.weight"], p["qln.bias"], eps=1e-12)
    big = x if mem is None else torch.cat([mem, x], dim=1)
    q, k, v = qs * query, ks * big, vs * big
    t, m = x.shape[1], big.shape[1] - x.shape[1]
    mask = torch.cat([torch.zeros(t, m, dtype=torch.float64),
                      torch.triu(torch.full((t, t), float("-inf"), dtype=torch.float64), diagonal=1)], dim=-1)
    scores = q @ k.transpose(1, 2) / math.sqrt(x.shape[-1]) + mask
    w = torch.softmax(scores, dim=-1)
    return w @ v, big, w


def randomised(module):
    """Non-trivial gate values (SHA-RNN starts them at zero)."""
    with torch.no_grad():
        for name in ("qs", "ks", "vs"):
            getattr(module, name).normal_(0, 1)
        module.qln.weight.normal_(1, 0.2)
        module.qln.bias.normal_(0, 0.2)
    return module


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_segments_with_memory(backend):
    """SHA-RNN's two truncations: the memory is cut to its last ``max_memory - T`` positions
    before a segment of T queries attends to it, and the new memory is the last ``max_memory``
    positions of [memory; x]. Segment lengths 13, 21, 9 with max_memory 30 make both cuts bite:
    segment 2 sees 9 of the 13 remembered positions, segment 3 sees 21 of the 30."""
    require(backend)
    dev = device_for(backend)
    d, b, max_mem = 48, 2, 30
    m = randomised(attnfast.nn.SingleHeadAttention(d, dropout=0.1, max_memory=max_mem, backend=backend)).eval().to(dev)
    params = {k: v.detach().cpu() for k, v in m.state_dict().items()}
    mem = ref_mem = None
    for seg, t in enumerate((13, 21, 9)):
        x = torch.randn(b, t, d, dtype=torch.float64)
        out, mem, w = m(x.float().to(dev), mem, need_weights=True)
        trimmed = None if ref_mem is None else ref_mem[:, ref_mem.shape[1] - min(max_mem - t, ref_mem.shape[1]):]
        ref, big, ref_w = sha_rnn_attention(params, x.float().double(), trimmed)
        ref_mem = big[:, -max_mem:]
        assert w.shape == (b, 1, t, big.shape[1]), f"segment {seg}: weights {tuple(w.shape)}"
        assert_parity(out, ref, name=f"segment {seg} output", atol=5e-5, rtol=5e-5)
        assert_parity(w[:, 0], ref_w, name=f"segment {seg} weights", atol=5e-5, rtol=5e-5)
        assert mem.shape == ref_mem.shape and torch.allclose(mem.cpu().double(), ref_mem, atol=1e-6)
    assert [mem.shape[1], big.shape[1]] == [max_mem, max_mem]  # 21 kept + 9 new; then all 30 kept


def test_grads_match_plain_reference():
    require("cpu")
    d, t = 32, 9
    m = randomised(attnfast.nn.SingleHeadAttention(d, dropout=0.0, backend="cpu"))
    x = torch.randn(2, t, d)
    mem = torch.randn(2, 5, d)
    out, _, _ = m(x, mem)
    out.square().sum().backward()
    params = {k: v.detach().clone().double().requires_grad_(True) for k, v in m.named_parameters()}
    ref, _, _ = sha_rnn_attention({**{k: v.detach() for k, v in m.state_dict().items()}, **params},
                                  x.double(), mem.double())
    ref.square().sum().backward()
    unused = {"qkvs", "r_gate"}  # SHA-RNN's parameters that q=True, r=False never reads
    for name, p in m.named_parameters():
        if name in unused:
            assert p.grad is None and params[name].grad is None, f"{name} should get no gradient"
            continue
        assert_parity(p.grad, params[name].grad, name=f"grad {name}", atol=1e-4, rtol=1e-4)


def test_state_dict_names_follow_sha_rnn():
    m = attnfast.nn.SingleHeadAttention(16)
    keys = set(m.state_dict())
    assert keys == {"qs", "ks", "vs", "qkvs", "r_gate", "q.weight", "q.bias", "qln.weight",
                    "qln.bias", "vq.l1.weight", "vq.l1.bias"}
    assert m.qln.eps == 1e-12 and (m.qs == 0).all() and (m.vs == 0).all()


def test_training_dropout_runs_and_is_seedable():
    m = attnfast.nn.SingleHeadAttention(16, dropout=0.3).train()
    x = torch.randn(2, 7, 16, requires_grad=True)
    torch.manual_seed(9)
    a, _, _ = m(x, torch.randn(2, 4, 16))
    torch.manual_seed(9)
    b, _, _ = m(x, torch.randn(2, 4, 16))
    assert torch.equal(a, b)
    a.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_kv_and_errors():
    m = attnfast.nn.SingleHeadAttention(8, max_memory=4).eval()
    x, kv = torch.randn(1, 3, 8), torch.randn(1, 6, 8)
    out, mem, w = m(x, kv=kv)
    assert out.shape == (1, 3, 8) and torch.equal(mem, kv[:, -4:]) and w is None
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(1, 3, 5))
    with pytest.raises(ValueError, match="batch size"):
        m(x, memory=torch.randn(2, 2, 8))


def test_compile_fullgraph_module():
    require("cpu")
    torch._dynamo.reset()
    m = randomised(attnfast.nn.SingleHeadAttention(16, dropout=0.1, backend="cpu")).eval()
    x, mem = torch.randn(2, 5, 16, requires_grad=True), torch.randn(2, 3, 16)
    compiled = torch.compile(m, fullgraph=True)
    y, _, _ = compiled(x, mem)
    y_eager, _, _ = m(x, mem)
    assert_parity(y, y_eager.double())
    y.sum().backward()
    gx = x.grad.clone()
    x.grad = None
    y_eager.sum().backward()
    assert_parity(gx, x.grad.double())
