"""Dropout under torch.compile: the seed is a tensor, so a training step with dropout compiles
with ``fullgraph=True``, never recompiles because of a seed, and draws the same masks as eager
for the same generator state. Plus the seed's contract: any key in [0, 2^64) on every backend
(the same mask as the reference), a ValueError naming ``seed`` for the others, and the ops'
checks of the seed tensor itself."""
from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
import torch._dynamo.utils

import attnfast
from attnfast import reference
from attnfast.models import SHARNN, config_from_preset
from attnfast.models.sharnn import lstm_runs_on_attnfast
from attnfast.ops import seed as seed_ops
from conftest import assert_parity, device_for, require_backend

STEPS = 20


def _require(backend):
    require_backend(backend)


def _train_steps(fn, params, inputs, steps=STEPS, seed0=100):
    """``steps`` training calls (forward + backward) with ``torch.manual_seed(seed0 + i)``
    before each: (outputs, gradients of ``params`` and of the inputs that require grad)."""
    outs, grads = [], []
    for i in range(steps):
        torch.manual_seed(seed0 + i)
        for t in list(params) + list(inputs):
            t.grad = None
        out = fn(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        out.float().square().mean().backward()  # a gradient that depends on the masks
        outs.append(out.detach().clone())
        grads.append([t.grad.clone() for t in list(params) + list(inputs) if t.grad is not None])
    return outs, grads


def _compiled_equals_eager(module, inputs, *, fullgraph=True, atol=0.0, rtol=0.0):
    """Compiles a copy of ``module`` (inductor, counted), runs STEPS training calls on it and
    on ``module`` with the same generator states, compares, and returns the compile counter."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = module
    compiled_mod = copy.deepcopy(module)
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(compiled_mod, backend=counter, fullgraph=fullgraph)
    inputs_e = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    inputs_c = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    got_out, got_grad = _train_steps(compiled, list(compiled_mod.parameters()), inputs_c)
    want_out, want_grad = _train_steps(eager, list(eager.parameters()), inputs_e)
    for i, (g, w) in enumerate(zip(got_out, want_out)):
        torch.testing.assert_close(g, w, atol=atol, rtol=rtol, msg=lambda m: f"step {i} output: {m}")
    for i, (gs, ws) in enumerate(zip(got_grad, want_grad)):
        assert len(gs) == len(ws), f"step {i}: {len(gs)} gradients compiled, {len(ws)} eager"
        for j, (g, w) in enumerate(zip(gs, ws)):
            torch.testing.assert_close(g, w, atol=atol, rtol=rtol,
                                       msg=lambda m: f"step {i} gradient {j}: {m}")
    # Each call drew a fresh seed: the masks (hence the outputs for one input) change per call.
    assert not torch.equal(got_out[0], got_out[1])
    return counter


def _assert_no_recompiles(counter, frames=1):
    # Each (re)compilation is one more graph handed to the backend.
    assert counter.frame_count == frames, (
        f"{counter.frame_count} graphs compiled over {STEPS} calls (expected {frames}); "
        "TORCH_LOGS=recompiles says why")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames


def _compile_skip(backend):
    if backend == "triton":
        pytest.importorskip("triton")
    _require(backend)


# ---- modules with dropout, compiled ------------------------------------------------------------

@pytest.mark.parametrize("backend", ["cpu", "simt", "triton"])
def test_boom_dropout_compiles_fullgraph_without_recompiles(backend):
    _compile_skip(backend)
    dev = device_for(backend)
    torch.manual_seed(0)
    m = attnfast.nn.Boom(16, 48, dropout=0.1, backend=backend, device=dev).train()
    x = torch.randn(2, 5, 16, device=dev, requires_grad=True)
    # The Boom op's only randomness is attnfast's seed draw, which the compiled graph makes
    # from torch's generator exactly as eager does (attnfast/ops/seed.py): bit-identical results
    # with inductor's default random handling.
    counter = _compiled_equals_eager(m, [x])
    _assert_no_recompiles(counter)


@pytest.mark.parametrize("backend", ["cpu", "simt", "triton"])
def test_single_head_attention_dropout_compiles_fullgraph_without_recompiles(backend):
    _compile_skip(backend)
    dev = device_for(backend)
    torch.manual_seed(0)
    m = attnfast.nn.SingleHeadAttention(16, dropout=0.1, max_memory=8, backend=backend,
                                        device=dev).train()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 5, 16, device=dev, requires_grad=True)
    mem = torch.randn(2, 3, 16, device=dev)
    # The module's own query/value dropouts are torch's F.dropout, which inductor by default
    # draws from its own RNG; fallback_random makes them draw as eager does, so the whole step
    # can be compared bit for bit (attnfast's seed draw matches eager either way).
    with torch._inductor.config.patch(fallback_random=True):
        counter = _compiled_equals_eager(m, [x, mem], atol=1e-6, rtol=1e-5)
    _assert_no_recompiles(counter)


def test_functional_attention_dropout_matches_eager_with_default_inductor():
    """attnfast's own draw needs no fallback_random: the compiled seed is eager's."""
    _require("cpu")
    torch._dynamo.reset()
    q, k, v = (torch.randn(2, 9, 8) for _ in range(3))

    def f(q_, k_, v_):
        return attnfast.single_head_attention(q_, k_, v_, causal=True, dropout_p=0.3,
                                              training=True, backend="cpu")

    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    cf = torch.compile(f, backend=counter, fullgraph=True)
    for i in range(5):
        torch.manual_seed(i)
        got = cf(q, k, v)
        torch.manual_seed(i)
        want = f(q, k, v)
        assert torch.equal(got, want), f"call {i}"
    assert counter.frame_count == 1


def test_sharnn_training_step_compiles_without_recompiles():
    _require("cpu")
    torch.manual_seed(0)
    cfg = config_from_preset("tiny", d_model=32, d_ff=64, max_memory=16)
    model = SHARNN(cfg, backend="cpu").train()
    tokens = torch.randint(0, cfg.vocab_size, (8, 2))

    def logits(m):
        return lambda t: m(t)[0]

    # With this build's LSTM kernels the blocks run attnfast.nn.LSTM and the whole step is one
    # graph (fullgraph=True). Without them they run nn.LSTM, which makes fullgraph impossible:
    # dynamo refuses to trace RNN modules ("Attempted to wrap RNN, GRU, or LSTM";
    # torch._dynamo.config.allow_rnn is experimental), so each block's LSTM call is a graph
    # break. Default mode, then: the only graph breaks are the LSTMs', none comes from
    # attnfast's ops, and the 20 steps compile each frame once.
    fullgraph = lstm_runs_on_attnfast("cpu")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled_model = copy.deepcopy(model)
    compiled = torch.compile(logits(compiled_model), backend=counter, fullgraph=fullgraph)
    params = list(compiled_model.parameters())
    with torch._inductor.config.patch(fallback_random=True):  # nn.Dropout draws as in eager
        _train_steps(compiled, params, [tokens], steps=1, seed0=99)  # compiles every graph
        frames = counter.frame_count
        got_out, got_grad = _train_steps(compiled, params, [tokens])
        _train_steps(compiled, params, [tokens], seed0=500)
    # 41 training calls, and no graph compiled after the first.
    assert counter.frame_count == frames, f"{counter.frame_count - frames} recompiles"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames
    breaks = dict(torch._dynamo.utils.counters["graph_break"])
    assert fullgraph or breaks, "expected the LSTM graph breaks"
    assert not (fullgraph and breaks), f"graph breaks with attnfast's LSTM: {breaks}"
    for reason in breaks:
        assert "LSTM" in reason, f"a graph break not caused by nn.LSTM: {reason}"
    want_out, want_grad = _train_steps(logits(model), list(model.parameters()), [tokens])
    for i, (g, w) in enumerate(zip(got_out, want_out)):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4, msg=lambda m: f"step {i}: {m}")
    for gs, ws in zip(got_grad, want_grad):
        for g, w in zip(gs, ws):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def test_seed_draw_is_the_old_draw():
    """For a torch.manual_seed, the drawn seed is the one int(torch.randint(0, 2**62, ()).item())
    gave before the seed became a tensor: the masks of a seeded run do not change."""
    x, w = torch.randn(4, 8), torch.randn(24, 8)
    torch.manual_seed(11)
    old = int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
    torch.manual_seed(11)
    drawn = attnfast.boom(x, w, dropout_p=0.5, training=True, backend="reference")
    given = attnfast.boom(x, w, dropout_p=0.5, training=True, seed=old, backend="reference")
    assert torch.equal(drawn, given)


# ---- the seed's contract -------------------------------------------------------------------------

ALL = ["reference", "cpu", "simt", "triton", "cuda"]


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("seed", [2**64 - 1, 2**63, 2**63 - 1, 0])
def test_seed_full_range_same_mask_as_reference(backend, seed):
    _require(backend)
    dev = device_for(backend)
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(6, 16, generator=g), torch.randn(48, 16, generator=g)
    out = attnfast.boom(x.to(dev), w.to(dev), dropout_p=0.3, training=True, seed=seed, backend=backend)
    ref = attnfast.boom(x.double(), w.double(), dropout_p=0.3, training=True, seed=seed,
                        backend="reference")
    assert_parity(out, ref)
    q, k, v = (torch.randn(2, 9, 8, generator=g) for _ in range(3))
    out = attnfast.single_head_attention(q.to(dev), k.to(dev), v.to(dev), causal=True, dropout_p=0.3,
                                         training=True, seed=seed, backend=backend)
    ref = attnfast.single_head_attention(q.double(), k.double(), v.double(), causal=True,
                                         dropout_p=0.3, training=True, seed=seed, backend="reference")
    assert_parity(out, ref)


def test_reference_mask_from_tensor_and_int_seeds():
    for seed in (0, 1, 2**32 + 5, 2**63 - 1, 2**63, 2**64 - 1):
        t = seed_ops.seed_tensor(seed)
        assert t.dtype == torch.int64 and t.dim() == 0 and t.device.type == "cpu"
        assert int(t) % 2**64 == seed
        a = reference.dropout_keep_mask((7, 33), 0.4, seed)
        b = reference.dropout_keep_mask((7, 33), 0.4, t)
        assert torch.equal(a, b), seed
    assert not torch.equal(reference.dropout_keep_mask((64,), 0.5, 2**64 - 1),
                           reference.dropout_keep_mask((64,), 0.5, 2**63 - 1))


@pytest.mark.parametrize("bad", [-1, 2**64, -(2**63), 1.5, "7"])
def test_seed_out_of_range_rejected(bad):
    x, w = torch.randn(3, 8), torch.randn(16, 8)
    with pytest.raises(ValueError, match="seed"):
        attnfast.boom(x, w, dropout_p=0.1, training=True, seed=bad)
    q = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="seed"):
        attnfast.single_head_attention(q, q, q, dropout_p=0.1, training=True, seed=bad)


@pytest.mark.parametrize("bad", [torch.tensor(1.0), torch.tensor([1, 2]), torch.tensor(3, dtype=torch.int32),
                                 torch.zeros((), dtype=torch.int64, device="meta")])
def test_public_api_rejects_bad_seed_tensors(bad):
    x, w = torch.randn(3, 8), torch.randn(16, 8)
    with pytest.raises(ValueError, match="seed"):
        attnfast.boom(x, w, dropout_p=0.1, training=True, seed=bad)


def test_tensor_seed_accepted_and_equals_int_seed():
    x, w = torch.randn(3, 8), torch.randn(16, 8)
    a = attnfast.boom(x, w, dropout_p=0.5, training=True, seed=torch.tensor(-1))
    b = attnfast.boom(x, w, dropout_p=0.5, training=True, seed=2**64 - 1)
    assert torch.equal(a, b)


def _boom_op(backend):
    if backend == "triton":
        pytest.importorskip("triton")
        return torch.ops.attnfast.boom_forward_triton, torch.ops.attnfast.boom_backward_triton
    ns = torch.ops.attnfast_simt if backend == "simt" else torch.ops.attnfast
    return ns.boom_forward, ns.boom_backward


def _attention_op(backend):
    if backend == "triton":
        pytest.importorskip("triton")
        return torch.ops.attnfast.attention_forward_triton, torch.ops.attnfast.attention_backward_triton
    ns = torch.ops.attnfast_simt if backend == "simt" else torch.ops.attnfast
    return ns.attention_forward, ns.attention_backward


BAD_SEEDS = {
    "float32": (torch.tensor(1.0), "int64"),
    "int32": (torch.tensor(1, dtype=torch.int32), "int64"),
    "two elements": (torch.tensor([1, 2]), "one element"),
    # A non-CPU seed: the dispatcher sends CPU inputs with a meta seed to the fake kernel,
    # which checks it as the C++ glue does for a CUDA seed.
    "meta": (torch.zeros((), dtype=torch.int64, device="meta"), "CPU"),
}


@pytest.mark.parametrize("backend", ["cpu", "simt", "triton"])
@pytest.mark.parametrize("case", sorted(BAD_SEEDS))
def test_ops_reject_bad_seed_tensors(backend, case):
    _require(backend)
    bad, what = BAD_SEEDS[case]
    fwd, bwd = _boom_op(backend)
    x, w, b = torch.randn(4, 8), torch.randn(16, 8), torch.randn(16)
    with pytest.raises((RuntimeError, ValueError), match=f"seed.*{what}|{what}.*seed"):
        fwd(x, w, b, 0, 8, 0.1, bad, True)
    good = seed_ops.seed_tensor(5)
    out, pre = fwd(x, w, b, 0, 8, 0.1, good, True)
    with pytest.raises((RuntimeError, ValueError), match=f"seed.*{what}|{what}.*seed"):
        bwd(torch.ones_like(out), x, w, pre, True, 0, 8, 0.1, bad)
    afwd, abwd = _attention_op(backend)
    q = torch.randn(1, 4, 8)
    with pytest.raises((RuntimeError, ValueError), match=f"seed.*{what}|{what}.*seed"):
        afwd(q, q, q, None, True, 0.5, 0.1, bad, False)
    o, lse, _ = afwd(q, q, q, None, True, 0.5, 0.1, good, False)
    with pytest.raises((RuntimeError, ValueError), match=f"seed.*{what}|{what}.*seed"):
        abwd(torch.ones_like(o), q, q, q, o, lse, None, None, True, 0.5, 0.1, bad, False)


def test_seed_saved_for_backward_as_tensor():
    """The backward regenerates the forward's mask from the saved seed tensor, whatever
    happens to torch's generator in between."""
    _require("cpu")
    x = torch.randn(5, 8, requires_grad=True)
    w = torch.randn(24, 8, requires_grad=True)
    torch.manual_seed(1)
    y = attnfast.boom(x, w, dropout_p=0.4, training=True, backend="cpu")
    torch.manual_seed(999)
    torch.rand(10)
    y.square().sum().backward()
    xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    torch.manual_seed(1)
    yr = attnfast.boom(xr, wr, dropout_p=0.4, training=True, backend="reference")
    yr.square().sum().backward()
    assert_parity(y, yr)
    assert_parity(x.grad, xr.grad, atol=1e-4, rtol=1e-4)
    assert_parity(w.grad, wr.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["cpu", "simt", "triton"])
def test_opcheck_transposed_inputs_with_dropout(backend):
    """Fake kernels against the real ops for (T, B, D) views seen as (B, T, D) -- SHA-RNN's
    layout: the backward's gradients are contiguous in every backend, so the fake's must be."""
    _require(backend)
    fwd, bwd = _attention_op(backend)
    q, k, v = (torch.randn(7, 2, 8).transpose(0, 1) for _ in range(3))
    seed = seed_ops.seed_tensor(2**64 - 3)
    torch.library.opcheck(fwd, (q, k, v, None, True, 0.3, 0.2, seed, False))
    out, lse, _ = fwd(q, k, v, None, True, 0.3, 0.2, seed, False)
    torch.library.opcheck(bwd, (torch.randn_like(out), q, k, v, out, lse, None, None, True, 0.3,
                                0.2, seed, True))
    if backend == "cpu":  # the CPU kernels keep the probabilities: the same with them
        torch.library.opcheck(fwd, (q, k, v, None, True, 0.3, 0.2, seed, True))
        out, lse, probs = fwd(q, k, v, None, True, 0.3, 0.2, seed, True)
        torch.library.opcheck(bwd, (torch.randn_like(out), q, k, v, out, lse, probs, None, True,
                                    0.3, 0.2, seed, True))


def test_fresh_process_compiles_once():
    """In a fresh process whose first attnfast call is compiled: no recompile on the second call
    (lazily computed dispatch state must not be traced as a guarded mutation)."""
    _require("cpu")
    import os
    import subprocess
    import sys

    code = (
        "import torch, torch._dynamo.testing, attnfast\n"
        "cnt = torch._dynamo.testing.CompileCounterWithBackend('inductor')\n"
        "m = attnfast.nn.Boom(8, 16, dropout=0.2, backend='cpu').train()\n"
        "a = attnfast.nn.SingleHeadAttention(8, dropout=0.2, backend='cpu').train()\n"
        "f = torch.compile(lambda x: m(x) + a(x)[0], backend=cnt, fullgraph=True)\n"
        "x = torch.randn(2, 3, 8, requires_grad=True)\n"
        "for _ in range(4):\n"
        "    f(x).sum().backward()\n"
        "print('frames', cnt.frame_count)\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=repo, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "frames 1" in r.stdout, r.stdout + r.stderr[-3000:]
