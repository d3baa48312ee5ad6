"""Second derivatives and zero-width inputs behave as a torch user expects: the compiled kernels'
backward is first order, so a double backward through them raises (naming the op) instead of
returning zeros, while the reference differentiates twice; zero-width layers give the
reference's result on every backend, or a clear error where the layer is undefined."""
from __future__ import annotations

import pytest
import torch

import attnfast
from attnfast import memory as M
from conftest import require_backend


def _second_derivative(fn, *inputs):
    out = fn(*inputs)
    (g,) = torch.autograd.grad((out * torch.randn_like(out)).sum(), inputs[0], create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), inputs[0])
    return gg


def _ops():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, requires_grad=True)
    w = torch.randn(24, 8, requires_grad=True)
    mem = torch.randn(2, 6, 4, requires_grad=True)
    keys, strengths = torch.randn(2, 2, 4), torch.rand(2, 2) + 1
    return {
        "single_head_attention": (lambda q, backend: attnfast.single_head_attention(
            q, q, q, causal=True, backend=backend), x),
        "boom": (lambda q, backend: attnfast.boom(q, w, backend=backend), x),
        "content_addressing": (lambda m, backend: M.content_addressing(
            m, keys, strengths, backend=backend), mem),
        "dnc_allocation": (lambda u, backend: M.dnc_allocation(
            u, torch.tensor([[0.9, 0.4], [0.7, 0.2]]), backend=backend),
            torch.tensor([[0.1, 0.7, 0.3, 0.9], [0.5, 0.2, 0.8, 0.4]], requires_grad=True)),
    }


# simt: only attention and Boom dispatch to the harness (the memory ops have no simt backend).
@pytest.mark.parametrize("op,backend", [(op, "cpu") for op in _ops()]
                         + [("single_head_attention", "simt"), ("boom", "simt")])
def test_double_backward_raises_on_compiled_backends(op, backend):
    require_backend(backend)
    fn, x = _ops()[op]
    with pytest.raises(RuntimeError, match=f"attnfast.{op}: second derivatives"):
        _second_derivative(lambda t: fn(t, backend), x)


@pytest.mark.parametrize("op", list(_ops()))
def test_double_backward_works_on_the_reference(op):
    fn, x = _ops()[op]
    gg = _second_derivative(lambda t: fn(t, "reference"), x)
    assert torch.isfinite(gg).all() and gg.abs().sum() > 0


def test_create_graph_first_order_is_unchanged():
    require_backend("cpu")
    fn, x = _ops()["single_head_attention"]
    (plain,) = torch.autograd.grad(fn(x, "cpu").sum(), x)
    (with_graph,) = torch.autograd.grad(fn(x, "cpu").sum(), x, create_graph=True)
    assert torch.equal(plain, with_graph.detach()) and with_graph.requires_grad


def test_boom_zero_widths():
    require_backend("cpu")
    x = torch.randn(3, 4)
    w, b = torch.randn(0, 4), torch.randn(0)
    w2, b2 = torch.randn(4, 0), torch.randn(4)
    want = attnfast.boom(x, w, b, shortcut=False, weight2=w2, bias2=b2, backend="reference")
    torch.testing.assert_close(want, b2.expand(3, 4))  # no hidden units: the output bias alone
    torch.testing.assert_close(attnfast.boom(x, w, b, shortcut=False, weight2=w2, bias2=b2), want)
    with pytest.raises(attnfast.BackendUnavailable, match="zero-width layer"):
        attnfast.boom(x, w, b, shortcut=False, weight2=w2, bias2=b2, backend="cpu")
    for backend in ("reference", "cpu"):
        with pytest.raises(ValueError, match="shortcut=True needs d_model >= 1"):
            attnfast.boom(torch.randn(3, 0), torch.randn(8, 0), backend=backend)


def test_allocation_without_write_heads():
    require_backend("cpu")
    usage, gates = torch.rand(2, 5), torch.rand(2, 0)
    for backend in ("reference", "cpu"):
        out = M.dnc_allocation(usage, gates, backend=backend)
        assert out.shape == (2, 0, 5)
