"""The contract of every declared compiled op (attnfast/ops/spec.py) on every backend that has it:
``torch.library.opcheck`` of the forward with its declaration's example (schema, fake kernel,
autograd registration, dynamic-shape tracing) and of the backward op with the forward's outputs,
and the backends' agreement on the example's values and gradients. A new op is covered by its
declaration alone."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attnfast.ops import spec
from conftest import FP32_TOL, device_for, require_backend

DECLARED = spec.declared()
OP_BACKENDS = [(name, backend) for name in DECLARED for backend in spec.COMPILED_BACKENDS]
NAMESPACE = {"cpu": "attnfast", "cuda": "attnfast", "simt": "attnfast_simt", "triton": "attnfast"}


def _op(name, backend):
    suffix = "_triton" if backend == "triton" else ""
    return getattr(getattr(torch.ops, NAMESPACE[backend]), name + suffix)


def _example(name, backend, requires_grad=True):
    dev = device_for(backend)

    def prepare(a):
        if not isinstance(a, torch.Tensor) or a.dtype == torch.int64:  # the seed stays on the CPU
            return a
        a = a.to(dev)
        return a.requires_grad_(True) if requires_grad and a.is_floating_point() else a

    return tuple(prepare(a) for a in DECLARED[name].example())


def _require(name, backend):
    require_backend(backend)
    reasons = spec.kernel_reasons(backend, [name])
    if reasons:
        pytest.skip(f"backend {backend!r} lacks {name}: {'; '.join(reasons)}")


class _RecordCalls(TorchDispatchMode):
    """Records the arguments of every call of one op (its overload packet)."""

    def __init__(self, packet):
        super().__init__()
        self.packet, self.calls = packet, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket is self.packet:
            self.calls.append((args, kwargs))
        return func(*args, **kwargs)


@pytest.mark.parametrize("name,backend", OP_BACKENDS)
def test_opcheck(name, backend):
    """opcheck of the forward on the example, and of the backward op on the arguments the
    autograd formula gives it (recorded while differentiating the forward)."""
    _require(name, backend)
    args = _example(name, backend)
    forward, backward = _op(name, backend), _op(DECLARED[name].backward, backend)
    torch.library.opcheck(forward, args)
    outputs = forward(*args)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    with _RecordCalls(backward) as record:
        torch.autograd.grad(outputs, inputs, [torch.ones_like(o) for o in outputs],
                            allow_unused=True)
    assert len(record.calls) == 1, f"the backward ran {len(record.calls)} times"
    # Detached: autograd calls the backward op with grad mode off (the op has no derivative).
    bwd_args, bwd_kwargs = torch.utils._pytree.tree_map_only(
        torch.Tensor, torch.Tensor.detach, record.calls[0])
    torch.library.opcheck(backward, bwd_args, bwd_kwargs)


@pytest.mark.parametrize("name", list(DECLARED))
def test_backends_agree_with_cpu(name):
    """Every backend's forward outputs and input gradients on the example equal the cpu kernels'
    (fp32, conftest's tolerance): the declaration wires each backend the same way."""
    _require(name, "cpu")
    args = _example(name, "cpu")
    ref_out, ref_grads = _run(name, "cpu", args)
    checked = 0
    for backend in ("simt", "triton", "cuda"):
        if require_skip(name, backend):
            continue
        out, grads = _run(name, backend, _example(name, backend))
        for a, b in zip(out, ref_out):
            torch.testing.assert_close(a.cpu(), b, **FP32_TOL)
        for a, b in zip(grads, ref_grads):
            if b is not None:
                torch.testing.assert_close(a.cpu(), b, **FP32_TOL)
        checked += 1
    if not checked:
        pytest.skip("no second backend can run here")


def require_skip(name, backend):
    try:
        _require(name, backend)
    except pytest.skip.Exception:
        return True
    return False


def _run(name, backend, args):
    out = _op(name, backend)(*args)
    out = out if isinstance(out, tuple) else (out,)
    # The differentiable outputs: the first (a boom pre-activation or attention lse is auxiliary).
    loss = (out[0].float() * torch.linspace(-1, 1, out[0].numel()).view_as(out[0]).to(out[0].device)).sum()
    for o in out[1:]:
        if DECLARED[name].forward.startswith(("memory", "dnc", "ntm", "graves")):
            loss = loss + (o.float() ** 2).sum()
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [o.detach() for o in out], grads
