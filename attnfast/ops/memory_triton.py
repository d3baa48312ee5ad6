"""The Triton memory-addressing kernels as torch custom ops: ``attnfast::<op>_triton`` for the
four fused ops (content addressing, DNC allocation, erase/add write, link update + directional
reads), each forward with an explicit backward op, fake kernels and autograd.

Same contract as the compiled schemas (csrc/schemas.h, "memory"), float32 only. The kernels
(triton_kernels/memory.py) are imported lazily inside the op bodies, so importing attnfast never
needs triton. attnfast/ops/memory.py adds the "triton" implementations that call these ops.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def _tk():
    from attnfast import triton_kernels as tk

    return tk


def _c(t: Tensor) -> Tensor:
    # The kernels index dense row-major tensors. Every op -- backward included: autograd hands it
    # the forward's *saved* inputs, which keep the caller's strides -- makes its inputs so.
    return t.contiguous()


@torch.library.custom_op("attnfast::memory_content_forward_triton", mutates_args=())
def content_forward(memory: Tensor, keys: Tensor, strengths: Tensor, eps: float) -> Tensor:
    return _tk().content_forward(_c(memory), _c(keys), _c(strengths), eps)


@torch.library.custom_op("attnfast::memory_content_backward_triton", mutates_args=())
def content_backward(grad: Tensor, memory: Tensor, keys: Tensor, strengths: Tensor,
                     weights: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    return _tk().content_backward(_c(grad), _c(memory), _c(keys), _c(strengths), _c(weights), eps)


@torch.library.custom_op("attnfast::dnc_allocation_forward_triton", mutates_args=())
def allocation_forward(usage: Tensor, write_gates: Tensor, eps: float) -> Tensor:
    return _tk().allocation_forward(_c(usage), _c(write_gates), eps)


@torch.library.custom_op("attnfast::dnc_allocation_backward_triton", mutates_args=())
def allocation_backward(grad: Tensor, usage: Tensor, write_gates: Tensor,
                        eps: float) -> tuple[Tensor, Tensor]:
    return _tk().allocation_backward(_c(grad), _c(usage), _c(write_gates), eps)


@torch.library.custom_op("attnfast::memory_write_forward_triton", mutates_args=())
def write_forward(memory: Tensor, write_weights: Tensor, erase: Tensor, add: Tensor) -> Tensor:
    return _tk().write_forward(_c(memory), _c(write_weights), _c(erase), _c(add))


@torch.library.custom_op("attnfast::memory_write_backward_triton", mutates_args=())
def write_backward(grad: Tensor, memory: Tensor, write_weights: Tensor, erase: Tensor,
                   add: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _tk().write_backward(_c(grad), _c(memory), _c(write_weights), _c(erase), _c(add))


@torch.library.custom_op("attnfast::dnc_link_read_forward_triton", mutates_args=())
def link_read_forward(link: Tensor, precedence: Tensor, write_weights: Tensor,
                      read_weights: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _tk().link_read_forward(_c(link), _c(precedence), _c(write_weights), _c(read_weights))


@torch.library.custom_op("attnfast::dnc_link_read_backward_triton", mutates_args=())
def link_read_backward(g_link: Tensor, g_prec: Tensor, g_fwd: Tensor, g_bwd: Tensor, link: Tensor,
                       precedence: Tensor, write_weights: Tensor,
                       read_weights: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _tk().link_read_backward(_c(g_link), _c(g_prec), _c(g_fwd), _c(g_bwd), _c(link),
                                    _c(precedence), _c(write_weights), _c(read_weights))


# ---- fake kernels ---------------------------------------------------------------------------------

@content_forward.register_fake
def _(memory, keys, strengths, eps):
    return keys.new_empty((keys.shape[0], keys.shape[1], memory.shape[1]))


@content_backward.register_fake
def _(grad, memory, keys, strengths, weights, eps):
    return torch.empty_like(memory), torch.empty_like(keys), torch.empty_like(strengths)


@allocation_forward.register_fake
def _(usage, write_gates, eps):
    return usage.new_empty((usage.shape[0], write_gates.shape[1], usage.shape[1]))


@allocation_backward.register_fake
def _(grad, usage, write_gates, eps):
    return torch.empty_like(usage), torch.empty_like(write_gates)


@write_forward.register_fake
def _(memory, write_weights, erase, add):
    return torch.empty_like(memory)


@write_backward.register_fake
def _(grad, memory, write_weights, erase, add):
    return tuple(torch.empty_like(t) for t in (memory, write_weights, erase, add))


@link_read_forward.register_fake
def _(link, precedence, write_weights, read_weights):
    b, hw, n = precedence.shape
    r = read_weights.shape[1]
    return (torch.empty_like(link), torch.empty_like(precedence), link.new_empty((b, r, hw, n)),
            link.new_empty((b, r, hw, n)))


@link_read_backward.register_fake
def _(g_link, g_prec, g_fwd, g_bwd, link, precedence, write_weights, read_weights):
    return tuple(torch.empty_like(t) for t in (link, precedence, write_weights, read_weights))


# ---- autograd (the explicit backward ops; same saved tensors as the compiled ops) ---------------

def _content_ctx(ctx, inputs, output):
    memory, keys, strengths, eps = inputs
    ctx.save_for_backward(memory, keys, strengths, output)
    ctx.eps = eps


def _content_bwd(ctx, grad):
    memory, keys, strengths, weights = ctx.saved_tensors
    return (*content_backward(grad, memory, keys, strengths, weights, ctx.eps), None)


def _alloc_ctx(ctx, inputs, output):
    usage, write_gates, eps = inputs
    ctx.save_for_backward(usage, write_gates)
    ctx.eps = eps


def _alloc_bwd(ctx, grad):
    usage, write_gates = ctx.saved_tensors
    return (*allocation_backward(grad, usage, write_gates, ctx.eps), None)


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _write_bwd(ctx, grad):
    return write_backward(grad, *ctx.saved_tensors)


def _link_bwd(ctx, g_link, g_prec, g_fwd, g_bwd):
    return link_read_backward(g_link, g_prec, g_fwd, g_bwd, *ctx.saved_tensors)


content_forward.register_autograd(_content_bwd, setup_context=_content_ctx)
allocation_forward.register_autograd(_alloc_bwd, setup_context=_alloc_ctx)
write_forward.register_autograd(_write_bwd, setup_context=_save_inputs)
link_read_forward.register_autograd(_link_bwd, setup_context=_save_inputs)
