"""Backward formulas of the compiled ops are first order: their backward kernels have no
derivative of their own. Under ``create_graph=True`` torch would otherwise return gradients that
silently carry no graph (a second derivative of zero, as torch's own ``once_differentiable``
gives when only the op's inputs require grad). Here those gradients are tied to the op's saved
inputs through a node whose backward raises, naming the op and the way out."""
from __future__ import annotations

import functools

import torch


class _NoSecondDerivative(torch.autograd.Function):
    """Identity on the gradients; its inputs also include the tensors the second derivative would
    flow into, so differentiating the gradients reaches this node, which raises."""

    @staticmethod
    def forward(ctx, message, n, *tensors):
        ctx.message = message
        return tuple(t.view_as(t) for t in tensors[:n])

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(ctx.message)


def first_order(op_name: str):
    """Decorates a ``register_autograd`` backward ``(ctx, *grads)``: plain backward is unchanged;
    under ``create_graph=True`` a second differentiation of its gradients raises a RuntimeError
    naming ``op_name``."""
    message = (f"attnfast.{op_name}: second derivatives (double backward) are not implemented by "
               "the compiled kernels; use backend='reference' for higher-order gradients")

    def decorate(backward):
        @functools.wraps(backward)
        def wrapper(ctx, *grads):
            with torch.no_grad():
                outputs = backward(ctx, *grads)
            if not torch.is_grad_enabled():
                return outputs
            sources = [t for t in (*grads, *ctx.saved_tensors)
                       if isinstance(t, torch.Tensor) and t.requires_grad]
            if not sources:
                return outputs
            single = not isinstance(outputs, tuple)
            outputs = (outputs,) if single else outputs
            tensors = [o for o in outputs if isinstance(o, torch.Tensor)]
            guarded = iter(_NoSecondDerivative.apply(message, len(tensors), *tensors, *sources))
            wrapped = tuple(next(guarded) if isinstance(o, torch.Tensor) else o for o in outputs)
            return wrapped[0] if single else wrapped

        return wrapper

    return decorate
