"""The "swap into SHA-RNN's own code" promise of attnfast.nn.sharnn: SHA-RNN's Block and model
forward, written plainly here with their Attention and Boom classes injected, give the same
outputs and gradients with plain classes (written from SHA-RNN's equations) and with attnfast's;
state dicts and optimizer states pass both ways; the causal-mask detection; SingleHeadAttention's
layouts and misuse errors; torch.compile.
"""
from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnfast
import attnfast.nn.attention as attention_module
from attnfast.nn.sharnn import Attention, Boom, is_bottom_right_causal
from conftest import assert_parity, device_for
from test_attention import require

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest
FP64_TOL = {"atol": 1e-12, "rtol": 1e-12}


# ---- plain classes, from SHA-RNN's equations ----------------------------------------------------

def gelu_sigmoid(x):
    return x * torch.sigmoid(1.702 * x)


class PlainOverparam(nn.Module):
    def __init__(self, nhid):
        super().__init__()
        self.l1 = nn.Linear(nhid, 2 * nhid)
        self.nhid = nhid

    def forward(self, x):
        c, f = self.l1(x).split(self.nhid, dim=-1)
        return torch.sigmoid(f) * torch.tanh(c)


class PlainAttention(nn.Module):
    """SHA-RNN's Attention: gates, optional projections, heads, additive mask, optional r-mix.
    Sequence-first (T, B, D) in and out; focus (B, heads, T, Lk). Runs in the input's precision
    (SHA-RNN's ``.float()`` before qln is a no-op for the fp32 / fp64 inputs used here)."""

    def __init__(self, nhid, q=True, k=False, v=False, r=False, heads=1, dropout=None):
        super().__init__()
        # Assignment order = SHA-RNN's (nn.Module yields own parameters first, then submodules).
        self.qs = nn.Parameter(torch.zeros(1, 1, nhid))
        self.ks = nn.Parameter(torch.zeros(1, 1, nhid))
        self.vs = nn.Parameter(torch.zeros(1, 1, nhid))
        self.qkvs = nn.Parameter(torch.zeros(1, 3, nhid))
        self.heads, self.nhid = heads, nhid
        self.q = nn.Linear(nhid, nhid) if q else None
        self.qln = nn.LayerNorm(nhid, eps=1e-12)
        self.k = nn.Linear(nhid, nhid) if k else None
        self.v = nn.Linear(nhid, nhid) if v else None
        self.r = nn.Linear(2 * nhid, nhid) if r else None
        self.r_gate = nn.Parameter(torch.ones(1, 1, nhid))
        self.vq = PlainOverparam(nhid)
        self.drop = nn.Dropout(dropout) if dropout else None

    def vq_collapse(self):
        with torch.no_grad():
            self.vs.data = self.vq(torch.sigmoid(self.vs)).data
        self.vq = None

    def dropout(self, x):
        return x if self.drop is None else self.drop(x)

    def forward(self, query, key, value, attn_mask=None, **kwargs):
        qs, ks = torch.sigmoid(self.qs), torch.sigmoid(self.ks)
        vs = self.vs if self.vq is None else self.vq(torch.sigmoid(self.vs))
        if self.q is not None:
            query = self.qln(self.q(query))
        if self.k is not None:
            key = self.k(key)
        if self.v is not None:
            value = self.v(value)
        q, k, v = qs * query, ks * key, vs * value
        q, v = self.dropout(q), self.dropout(v)
        t, b, d = q.shape
        lk, h = k.shape[0], self.heads

        def split_heads(z):  # (L, B, D) -> (B, heads, L, D / heads)
            return z.reshape(z.shape[0], b, h, d // h).permute(1, 2, 0, 3)

        scores = split_heads(q) @ split_heads(k).transpose(-1, -2) / math.sqrt(d / h)
        if attn_mask is not None:
            scores = scores + attn_mask
        focus = self.dropout(torch.softmax(scores, dim=-1))
        mix = (focus @ split_heads(v)).permute(2, 0, 1, 3).reshape(t, b, d)
        if self.r is not None:
            r = gelu_sigmoid(self.r(self.dropout(torch.cat([mix, q], dim=-1))))
            mix = torch.sigmoid(self.r_gate) * mix + r
        assert focus.shape == (b, h, t, lk)
        return mix, focus


class PlainBoom(nn.Module):
    def __init__(self, d_model, dim_feedforward=2048, dropout=0.1, shortcut=False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.drop = nn.Dropout(dropout) if dropout else None
        self.linear2 = None if shortcut else nn.Linear(dim_feedforward, d_model)
        self.shortcut = shortcut

    def forward(self, x_in):
        x = gelu_sigmoid(self.linear1(x_in))
        if self.drop is not None:
            x = self.drop(x)
        if self.linear2 is not None:
            return self.linear2(x)
        d = x_in.shape[-1]
        n = x.shape[-1] // d
        return x[..., :n * d].reshape(*x.shape[:-1], n, d).sum(dim=-2)


# ---- SHA-RNN's Block and model forward, with the layer classes injected -------------------------

class SHARNNBlock(nn.Module):
    def __init__(self, d, d_ff, attention_cls, boom_cls, use_attn, dropout):
        super().__init__()
        self.attn = attention_cls(d, heads=1, r=False, dropout=dropout) if use_attn else None
        self.ff = boom_cls(d, d_ff, dropout=dropout, shortcut=True)
        self.lnstart = nn.LayerNorm(d, eps=1e-12)
        self.lnmid = nn.LayerNorm(d, eps=1e-12)
        self.lnmem = nn.LayerNorm(d, eps=1e-12)
        self.lnout = nn.LayerNorm(d, eps=1e-12)
        self.lnff = nn.LayerNorm(d, eps=1e-12)
        self.lnxff = nn.LayerNorm(d, eps=1e-12)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.LSTM(d, d)

    def forward(self, h, max_memory, attn_mask, mem=None, hidden=None):
        h = self.lnstart(h)
        x, new_hidden = self.rnn(h, hidden)
        h = self.dropout(x)
        new_mem = None
        if self.attn is not None:
            mh = self.lnmem(h)
            h = self.lnmid(h)
            bigh = mh if mem is None else torch.cat([mem, mh], dim=0)
            new_mem = bigh[-max_memory:]
            q, k = h, bigh
            x, _ = self.attn(q, k, bigh, attn_mask)  # exactly SHA-RNN's call
            h = self.dropout(x) + h
        h, x = self.lnff(h), self.lnxff(h)
        x = self.ff(x)  # exactly SHA-RNN's call
        h = self.dropout(x) + h
        return h, new_mem, new_hidden


class SHARNNModel(nn.Module):
    def __init__(self, attention_cls, boom_cls, ntoken=19, d=16, d_ff=40, nlayers=3, max_memory=30,
                 dropout=0.0):
        super().__init__()
        self.blocks = nn.ModuleList(SHARNNBlock(d, d_ff, attention_cls, boom_cls, i == nlayers - 2, dropout)
                                    for i in range(nlayers))
        self.encoder = nn.Embedding(ntoken, d)
        self.decoder = nn.Linear(d, ntoken)
        self.decoder.weight = self.encoder.weight
        self.idrop, self.drop = nn.Dropout(dropout), nn.Dropout(dropout)
        self.max_memory = max_memory

    def forward(self, x, hidden=None, mems=None):
        t = x.shape[0]
        h = self.idrop(self.encoder(x))
        if mems is not None:  # SHA-RNN's pre-trim
            mems = [None if m is None else m[max(m.shape[0] - (self.max_memory - t), 0):] for m in mems]
        m_len = max((m.shape[0] for m in mems if m is not None), default=0) if mems else 0
        attn_mask = sha_rnn_mask(t, m_len, h.dtype).to(h.device)
        new_hidden, new_mems = [], []
        for i, block in enumerate(self.blocks):
            h, mem, hc = block(h, self.max_memory, attn_mask, None if mems is None else mems[i],
                               None if hidden is None else hidden[i])
            new_hidden.append(hc)
            new_mems.append(mem)
        return self.decoder(self.drop(h)), new_hidden, new_mems


def randomise(module, seed=0):
    """Move every parameter off its init (zero gates, unit LayerNorms) so none can be ignored."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.3 if p.dim() == 1 and "ln" in name else 1.0 / math.sqrt(p.shape[-1]) if p.dim() == 2 else 0.8
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return module


def run_segments_on(model, tokens_list, device):
    hidden = mems = None
    outputs = []
    for tokens in tokens_list:
        logits, hidden, mems = model(tokens.to(device), hidden, mems)
        outputs.append(logits.cpu())
    return outputs, [None if m is None else m.cpu() for m in mems]


@pytest.mark.parametrize("backend", ["reference", "cpu", "cuda"])
def test_sha_rnn_model_code_with_attnfast_layers_swapped_in(backend):
    require(backend)
    dev = device_for(backend)
    plain = randomise(SHARNNModel(PlainAttention, PlainBoom)).double()
    swapped = SHARNNModel(functools.partial(Attention, backend=backend), functools.partial(Boom, backend=backend))
    swapped.load_state_dict(plain.state_dict(), strict=True)
    swapped.to(dev)
    assert [n for n, _ in swapped.named_parameters()] == [n for n, _ in plain.named_parameters()]
    gen = torch.Generator().manual_seed(1)
    tokens = [torch.randint(0, 19, (t, 3), generator=gen) for t in (11, 23, 8)]  # memory 11 -> 7+23 -> 22+8
    targets = [torch.randint(0, 19, tk.shape, generator=gen) for tk in tokens]
    outs, mems = run_segments_on(plain, tokens, "cpu")
    swapped_outs, swapped_mems = run_segments_on(swapped, tokens, dev)
    for seg, (out, ref) in enumerate(zip(swapped_outs, outs)):
        assert_parity(out, ref, name=f"{backend} segment {seg} logits")
    assert mems[1].shape[0] == 30
    assert_parity(swapped_mems[1], mems[1], name="memory")

    def loss(outputs):
        return sum(F.cross_entropy(o.reshape(-1, 19), y.reshape(-1)) for o, y in zip(outputs, targets))

    loss(outs).backward()
    loss(swapped_outs).backward()
    plain_params = dict(plain.named_parameters())
    for name, p in swapped.named_parameters():
        ref = plain_params[name].grad
        assert (p.grad is None) == (ref is None), f"{name}: grad {p.grad is None=} vs plain {ref is None=}"
        if ref is not None:
            assert_parity(p.grad, ref, name=f"{backend} grad {name}", atol=5e-5, rtol=5e-5)


# ---- state dicts and optimizer states, both ways ------------------------------------------------

ATTENTION_VARIANTS = [dict(), dict(heads=2), dict(k=True), dict(v=True), dict(r=True),
                      dict(k=True, v=True, r=True, heads=4)]


def adamw_after_a_step(params, seed):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=1e-2)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    return opt


def assert_optimizer_state_follows(source_opt, source_module, target_module):
    target_opt = torch.optim.AdamW(list(target_module.parameters()), lr=1e-2)
    target_opt.load_state_dict(source_opt.state_dict())
    src = dict(source_module.named_parameters())
    for name, p in target_module.named_parameters():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(target_opt.state[p][key], source_opt.state[src[name]][key]), f"{name} {key}"
    return target_opt


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS, ids=lambda v: "-".join(f"{k}{v[k]}" for k in v) or "default")
def test_attention_state_and_optimizer_round_trip(variant):
    plain = randomise(PlainAttention(16, dropout=0.1, **variant))
    fast = Attention(16, dropout=0.1, **variant)
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in plain.named_parameters()]
    opt = adamw_after_a_step(list(plain.parameters()), seed=2)
    fast.load_state_dict(plain.state_dict(), strict=True)
    assert dict(fast.named_parameters())["qkvs"].shape == (1, 3, 16)  # parameters, as in SHA-RNN
    assert dict(fast.named_parameters())["r_gate"].shape == (1, 1, 16)
    fast_opt = assert_optimizer_state_follows(opt, plain, fast)
    fast_opt.step()  # and back
    back = PlainAttention(16, **variant)
    back.load_state_dict(fast.state_dict(), strict=True)
    assert_optimizer_state_follows(fast_opt, fast, back)
    for name, value in back.state_dict().items():
        assert torch.equal(value, fast.state_dict()[name]), name


@pytest.mark.parametrize("shortcut", [True, False])
def test_boom_state_and_optimizer_round_trip(shortcut):
    plain = randomise(PlainBoom(16, 40, shortcut=shortcut))
    fast = Boom(16, 40, shortcut=shortcut)
    opt = adamw_after_a_step(list(plain.parameters()), seed=3)
    fast.load_state_dict(plain.state_dict(), strict=True)
    fast_opt = assert_optimizer_state_follows(opt, plain, fast)
    back = PlainBoom(16, 40, shortcut=shortcut)
    back.load_state_dict(fast.state_dict(), strict=True)
    assert_optimizer_state_follows(fast_opt, fast, back)
    x = torch.randn(5, 2, 16)
    assert_parity(fast.eval()(x), plain.eval().double()(x.double()), name=f"Boom shortcut={shortcut}")


def test_vq_collapsed_state_dict_loads_in_collapsed_mode():
    plain = randomise(PlainAttention(16))
    plain.vq_collapse()
    sd = plain.state_dict()
    assert not any(k.startswith("vq.") for k in sd)
    fast = Attention(16, backend="reference")
    fast.load_state_dict(sd, strict=True)
    assert fast.vq is None and fast.vq_collapsed
    q, big, mask = sha_rnn_inputs(t=6, m=4, b=2, d=16)
    out, _ = fast.eval()(q, big, big, mask)
    ref, _ = plain.double()(q.double(), big.double(), big.double(), mask.double())
    assert_parity(out, ref, name="collapsed output")
    # attnfast's own vq_collapse gives the same state
    other = randomise(PlainAttention(16), seed=7)
    own = Attention(16)
    own.load_state_dict(other.state_dict())
    own.vq_collapse()
    other.vq_collapse()
    assert own.vq is None and set(own.state_dict()) == set(sd)
    assert torch.allclose(own.vs, other.vs, atol=1e-6)


# ---- the causal-mask detection ------------------------------------------------------------------

def sha_rnn_mask(t, m, dtype=torch.float32):
    return torch.cat([torch.zeros(t, m, dtype=dtype),
                      torch.triu(torch.full((t, t), float("-inf"), dtype=dtype), diagonal=1)], dim=-1)


def sha_rnn_inputs(t, m, b, d, seed=4):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(t, b, d, generator=gen)
    big = torch.randn(m + t, b, d, generator=gen)
    return q, big, sha_rnn_mask(t, m)


def test_is_bottom_right_causal():
    t, m = 5, 3
    assert is_bottom_right_causal(sha_rnn_mask(t, 0), t, t)
    assert is_bottom_right_causal(sha_rnn_mask(t, m), t, t + m)
    assert is_bottom_right_causal(sha_rnn_mask(t, m, torch.float64), t, t + m)
    assert is_bottom_right_causal(sha_rnn_mask(t, m)[None], t, t + m)
    for i, j, value in ((0, m, float("-inf")),       # a kept key masked
                        (1, m + 3, 0.0),            # a future key let through
                        (2, 0, -1.0),               # a memory key penalised, not masked
                        (t - 1, t + m - 1, 0.5)):   # the diagonal shifted
        mask = sha_rnn_mask(t, m)
        mask[i, j] = value
        assert not is_bottom_right_causal(mask, t, t + m), (i, j, value)
    top_left = torch.triu(torch.full((t, t + m), float("-inf")), diagonal=1)
    assert not is_bottom_right_causal(top_left, t, t + m)
    assert not is_bottom_right_causal(sha_rnn_mask(t, m) == 0, t, t + m)  # bool (True = keep)
    assert not is_bottom_right_causal(sha_rnn_mask(t, m), t, t + m + 1)   # another shape
    assert not is_bottom_right_causal(sha_rnn_mask(t, m).expand(2, t, t + m), t, t + m)  # per batch


@pytest.fixture
def attention_calls(monkeypatch):
    """Records how the compat Attention calls the fused op (causal flag, mask or not)."""
    calls = []
    original = attention_module.single_head_attention

    def spy(*args, **kwargs):
        calls.append((kwargs["causal"], kwargs["attn_mask"] is not None))
        return original(*args, **kwargs)

    monkeypatch.setattr(attention_module, "single_head_attention", spy)
    return calls


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_detected_explicit_and_additive_masks_agree(backend, attention_calls):
    require(backend)
    t, m, b, d = 7, 5, 2, 16
    plain = randomise(PlainAttention(d)).double()
    fast = Attention(d, backend=backend)
    fast.load_state_dict(plain.state_dict())
    q, big, mask = sha_rnn_inputs(t, m, b, d)
    ref, _ = plain(q.double(), big.double(), big.double(), mask.double())
    detected, _ = fast(q, big, big, mask)
    explicit, _ = fast(q, big, big, is_causal=True)
    explicit_with_mask, _ = fast(q, big, big, mask, is_causal=True)
    additive, _ = fast(q, big, big, mask.expand(b, t, t + m))  # per-batch: not the detected form
    assert attention_calls == [(True, False), (True, False), (True, False), (False, True)]
    for name, out in (("detected", detected), ("is_causal", explicit), ("is_causal with mask", explicit_with_mask),
                      ("additive", additive)):
        assert_parity(out, ref, name=f"{backend} {name}")
    # a top-left mask is not mistaken for SHA-RNN's: it is added as given
    top_left = torch.triu(torch.full((t, t + m), float("-inf")), diagonal=1)
    out, _ = fast(q, big, big, top_left)
    ref_top_left, _ = plain(q.double(), big.double(), big.double(), top_left.double())
    assert attention_calls[-1] == (False, True)
    assert_parity(out, ref_top_left, name="top-left mask")


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS, ids=lambda v: "-".join(f"{k}{v[k]}" for k in v) or "default")
@pytest.mark.parametrize("backend", ["reference", "cpu", "cuda"])
def test_attention_variants_match_plain(backend, variant):
    """heads, k/v projections and the r-mix, with SHA-RNN's mask over a memory: output, focus
    (B, heads, T, Lk) and every gradient."""
    require(backend)
    dev = device_for(backend)
    t, m, b, d = 6, 4, 3, 16
    plain = randomise(PlainAttention(d, **variant), seed=5).double()
    fast = Attention(d, backend=backend, **variant)
    fast.load_state_dict(plain.state_dict(), strict=True)
    fast.to(dev)
    q, big, mask = sha_rnn_inputs(t, m, b, d)
    q_fast, big_fast = q.to(dev, copy=True).requires_grad_(), big.to(dev, copy=True).requires_grad_()
    q_ref, big_ref = q.double().requires_grad_(), big.double().requires_grad_()
    out, focus = fast(q_fast, big_fast, big_fast, mask.to(dev), need_weights=True)
    ref, ref_focus = plain(q_ref, big_ref, big_ref, mask.double())
    heads = variant.get("heads", 1)
    assert focus.shape == (b, heads, t, m + t)
    assert_parity(out, ref, name="output")
    assert_parity(focus, ref_focus, name="focus")
    assert fast(q_fast, big_fast, big_fast, mask.to(dev))[1] is None  # weights only on request
    probe = torch.randn(out.shape, dtype=torch.float64)
    (out * probe.float().to(dev)).sum().backward()
    (ref * probe).sum().backward()
    assert_parity(q_fast.grad, q_ref.grad, name="grad query", atol=5e-5, rtol=5e-5)
    assert_parity(big_fast.grad, big_ref.grad, name="grad key/value", atol=5e-5, rtol=5e-5)
    plain_params = dict(plain.named_parameters())
    for name, p in fast.named_parameters():
        ref_grad = plain_params[name].grad
        assert (p.grad is None) == (ref_grad is None), f"{name}: grad {p.grad is None=} vs plain {ref_grad is None=}"
        if ref_grad is not None:
            assert_parity(p.grad, ref_grad, name=f"grad {name}", atol=5e-5, rtol=5e-5)


def test_compat_attention_errors():
    fast = Attention(16)
    q, big, mask = sha_rnn_inputs(4, 2, 2, 16)
    with pytest.raises(ValueError, match="batch_first must be a bool, got a tensor"):
        fast(q, big, big, mask, mask)  # a second mask passed by position
    with pytest.raises(ValueError, match="need_weights must be a bool"):
        fast(q, big, big, mask, need_weights=mask)
    with pytest.raises(ValueError, match="query must be a 3-D tensor"):
        fast(q[0], big, big, mask)
    with pytest.raises(ValueError, match="nhid=16"):
        fast(q[..., :8], big, big)
    with pytest.raises(ValueError, match="disagree on batch or length"):
        fast(q, big[:, :1], big[:, :1])
    with pytest.raises(TypeError, match="unexpected arguments"):
        fast(q, big, big, mask, dropout=0.5)


# ---- SingleHeadAttention: layouts and misuse ----------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_sequence_first_is_the_transposed_batch_first(backend):
    require(backend)
    d, b = 16, 3
    batch_first = randomise(attnfast.nn.SingleHeadAttention(d, max_memory=12, backend=backend)).eval()
    seq_first = attnfast.nn.SingleHeadAttention(d, max_memory=12, batch_first=False, backend=backend).eval()
    seq_first.load_state_dict(batch_first.state_dict())
    mem_bf = mem_sf = None
    for t in (5, 9, 4):
        x = torch.randn(b, t, d)
        out_bf, mem_bf, w_bf = batch_first(x, mem_bf, need_weights=True)
        out_sf, mem_sf, w_sf = seq_first(x.transpose(0, 1), mem_sf, need_weights=True)
        assert out_sf.shape == (t, b, d) and mem_sf.shape[1] == b
        torch.testing.assert_close(out_sf, out_bf.transpose(0, 1), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(mem_sf, mem_bf.transpose(0, 1), atol=0, rtol=0)
        torch.testing.assert_close(w_sf, w_bf, atol=1e-6, rtol=1e-6)  # weights are (B, heads, T, Lk) in both
    assert mem_bf.shape == (b, 12, d)


def test_single_head_attention_misuse_raises_clear_errors():
    d, b, t = 16, 2, 5
    batch_first = attnfast.nn.SingleHeadAttention(d)
    seq_first = attnfast.nn.SingleHeadAttention(d, batch_first=False)
    x = torch.randn(b, t, d)
    with pytest.raises(ValueError, match=r"memory batch size 3 must match x's 2 \(batch_first=True"):
        batch_first(x, torch.randn(3, 4, d))
    with pytest.raises(ValueError, match=r"memory batch size 3 must match x's 2 \(batch_first=False"):
        seq_first(x.transpose(0, 1), torch.randn(4, 3, d))
    # a sequence-first x (T=5, B=2) given to a batch-first module with a batch-first memory
    with pytest.raises(ValueError, match=r"memory batch size 2 must match x's 5"):
        batch_first(x.transpose(0, 1), torch.randn(b, 4, d))
    with pytest.raises(ValueError, match=r"kv batch size"):
        batch_first(x, kv=torch.randn(3, t, d))
    with pytest.raises(ValueError, match="need_weights must be a bool, got a tensor"):
        batch_first(x, None, None, torch.ones(t, t))
    with pytest.raises(ValueError, match="batch_first must be a bool, got a tensor"):
        attnfast.nn.SingleHeadAttention(d, batch_first=torch.tensor(True))
    with pytest.raises(ValueError, match=r"x must be \(B, T, d_model\) with d_model=16, got \(2, 5, 12\)"):
        batch_first(torch.randn(b, t, 12))
    with pytest.raises(ValueError, match=r"memory must be \(T, B, d_model\) with d_model=16"):
        seq_first(x.transpose(0, 1), torch.randn(4, b, 8))
    with pytest.raises(ValueError, match="x must be a torch.Tensor"):
        batch_first(x.tolist())
    with pytest.raises(ValueError, match="heads must be an int >= 1 dividing d_model=16"):
        attnfast.nn.SingleHeadAttention(d, heads=3)


# ---- torch.compile ------------------------------------------------------------------------------

class AttendOverMemory(nn.Module):
    """SHA-RNN's attention step: memory concatenated, its additive mask built, the compat layer."""

    def __init__(self, d):
        super().__init__()
        self.attn = Attention(d, backend="cpu")

    def forward(self, h, mem, mask):
        big = torch.cat([mem, h], dim=0)
        mix, _ = self.attn(h, big, big, mask)
        return mix + h


def compile_inputs(t=6, m=4, b=2, d=16):
    module = AttendOverMemory(d).eval()  # eval: no dropout
    module.attn.load_state_dict(randomise(PlainAttention(d)).state_dict())
    gen = torch.Generator().manual_seed(6)
    h, mem = torch.randn(t, b, d, generator=gen), torch.randn(m, b, d, generator=gen)
    other = torch.zeros(t, m + t)  # a mask that is not SHA-RNN's: one key masked for every query
    other[:, 1] = float("-inf")
    return module, h, mem, (sha_rnn_mask(t, m), other)


def test_compile_fullgraph_matches_eager():
    """Under torch.compile the mask is not inspected (no data-dependent branch in the graph): it
    is added as given, SHA-RNN's or any other, and the result is the eager one."""
    require("cpu")
    torch._dynamo.reset()
    module, h, mem, masks = compile_inputs()
    compiled = torch.compile(module, fullgraph=True)
    with torch.no_grad():
        for mask in masks:
            assert_parity(compiled(h, mem, mask), module(h, mem, mask).double(), name="compiled output")
        plain = PlainAttention(h.shape[-1]).double()
        plain.load_state_dict(module.attn.state_dict())
        big = torch.cat([mem, h]).double()
        for mask in masks:
            ref, _ = plain(h.double(), big, big, mask.double())
            assert_parity(compiled(h, mem, mask), ref + h.double(), name="compiled output vs plain")


FAKE_BACKWARD_STRIDES = (
    "attnfast/ops/attention.py _fake_backward returns torch.empty_like(k) / empty_like(v), which "
    "keep the strides of SHA-RNN's sequence-first keys seen batch-first (a transposed view), while "
    "the kernels return contiguous gradients, so inductor's stride check fails. Fix: "
    "q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape) (attention_triton.py too)")


def test_compile_fullgraph_backward_with_sequence_first_keys():
    require("cpu")
    torch._dynamo.reset()
    module, h, mem, masks = compile_inputs()
    compiled = torch.compile(module, fullgraph=True)
    for mask in masks:
        hc, he = h.clone().requires_grad_(), h.clone().requires_grad_()
        out = compiled(hc, mem, mask)
        try:
            out.sum().backward()
        except AssertionError as error:  # only the known fake-kernel stride mismatch is excused
            if "attnfast.attention_backward" in str(error) and "stride" in str(error):
                pytest.xfail(FAKE_BACKWARD_STRIDES)
            raise
        eager = module(he, mem, mask)
        eager.sum().backward()
        assert_parity(out, eager.double(), name="compiled output")
        assert_parity(hc.grad, he.grad.double(), name="compiled grad")
