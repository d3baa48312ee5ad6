"""Memory modules: DNC unrolled over 20 steps with gradients through time (every backend against
the reference), NTMMemory, GravesWindow, and a short copy-task training run."""
from __future__ import annotations

import pytest
import torch

from attnfast import nn as ann
from attnfast.ops import memory as memory_ops
from conftest import assert_parity
from conftest import require_backend as _require_backend


def require_backend(backend):
    _require_backend(backend)


def _dnc(backend, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    cfg = dict(hidden_size=16, memory_size=8, word_size=5, num_reads=2, num_writes=2)
    cfg.update(kw)
    return ann.DNC(4, 3, backend=backend, **cfg).to(dtype)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_dnc_bptt_20_steps(backend):
    require_backend(backend)
    x = torch.randn(3, 20, 4, generator=torch.Generator().manual_seed(1))
    oracle = _dnc("reference", torch.float64)
    model = _dnc(backend)
    y64, s64 = oracle(x.double())
    y32, s32 = model(x)
    assert_parity(y32, y64, name="dnc outputs", atol=1e-4, rtol=1e-3)
    assert torch.diagonal(s32.access.link, dim1=-2, dim2=-1).abs().max() == 0
    u = s32.access.usage
    assert ((u >= 0) & (u <= 1)).all()
    (y64 ** 2).sum().backward()
    (y32 ** 2).sum().backward()
    for (name, p64), p32 in zip(oracle.named_parameters(), model.parameters()):
        assert torch.isfinite(p32.grad).all(), name
        assert_parity(p32.grad, p64.grad, name=f"grad {name}", atol=2e-4, rtol=2e-3)


def test_dnc_memory_access_layout():
    acc = ann.DNCMemoryAccess(memory_size=16, word_size=4, num_reads=2, num_writes=1)
    # DeepMind's interface size: Hw W (write) + Hw W (erase) + R + Hw + Hw + R (1 + 2 Hw)
    # + Hw W (write keys) + Hw + R W + R
    assert acc.input_size == 4 + 4 + 2 + 1 + 1 + 2 * 3 + 4 + 1 + 8 + 2
    state = acc.initial_state(3)
    words, state = acc(torch.randn(3, acc.input_size), state)
    assert words.shape == (3, 2, 4) and state.link.shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match="strength_op"):
        ann.DNCMemoryAccess(strength_op="exp")
    with pytest.raises(ValueError, match="inputs must be"):
        acc(torch.randn(3, 5), state)
    ones = ann.DNCMemoryAccess(8, 4, strength_op="oneplus")
    assert (ones.interface(torch.randn(2, ones.input_size)).read_strengths >= 1).all()


def test_ntm_memory_and_graves_window():
    torch.manual_seed(0)
    ntm = ann.NTMMemory(input_size=6, memory_size=10, word_size=4, num_reads=2, num_writes=1)
    state = ntm.initial_state(2)
    loss = 0
    for _ in range(5):
        words, state = ntm(torch.randn(2, 6), state)
        loss = loss + words.pow(2).sum()
    loss.backward()
    assert torch.isfinite(ntm.linear.weight.grad).all()
    assert torch.allclose(state.read_weights.sum(-1), torch.ones(2, 2))
    win = ann.GravesWindow(input_size=7, num_components=3)
    chars = torch.nn.functional.one_hot(torch.randint(0, 5, (2, 9)), 5).float()
    w, kappa, phi = win(torch.randn(2, 6, 7), chars)
    assert w.shape == (2, 6, 5) and kappa.shape == (2, 6, 3) and phi.shape == (2, 6, 9)
    assert (kappa[:, 1:] > kappa[:, :-1]).all()  # kappa only moves forward
    w1, k1, _ = win(torch.randn(2, 7), chars)
    assert w1.shape == (2, 5) and k1.shape == (2, 3)


def test_copy_task_loss_falls():
    """A short version of `python -m bench.dnc_copy`: the loss must fall clearly."""
    from bench.dnc_copy import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threading only adds contention on a shared machine
    try:
        _, hist = train(steps=300, batch=8, max_len=4, bits=4, lr=3e-3, curriculum=False,
                        log=lambda *_: None, model_kw=dict(hidden=32, memory_size=8, word_size=8))
    finally:
        torch.set_num_threads(threads)
    first = sum(h[1] for h in hist[:20]) / 20
    last = sum(h[1] for h in hist[-20:]) / 20
    assert last < 0.8 * first, f"copy-task loss did not fall: {first:.3f} -> {last:.3f}"
