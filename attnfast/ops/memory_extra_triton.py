"""The Triton kernels of the second memory group as torch custom ops: ``attnfast::<op>_triton`` for
NTM location addressing, Graves' window, DNC usage and the memory read, each forward with an
explicit backward op, fake kernels and autograd.

Same contract as the compiled schemas (csrc/schemas.h, "memory, second group"), float32 only.
The kernels (triton_kernels/memory_extra.py) are imported lazily inside the op bodies, so
importing attnfast never needs triton. attnfast/ops/memory.py adds the "triton" implementations
that call these ops. Every backward recomputes what it needs from the saved inputs (all
(B, H, N) or (B, T, K)-sized), like the compiled ops.
"""
from __future__ import annotations

from typing import Optional

import torch

Tensor = torch.Tensor


def _tk():
    from attnfast import triton_kernels as tk

    return tk


def _c(t: Tensor) -> Tensor:
    return t.contiguous()


@torch.library.custom_op("attnfast::ntm_location_forward_triton", mutates_args=())
def ntm_location_forward(content: Tensor, gate: Tensor, prev_weights: Tensor, shift: Tensor,
                         gamma: Tensor) -> Tensor:
    return _tk().ntm_location_forward(_c(content), _c(gate), _c(prev_weights), _c(shift), _c(gamma))


@torch.library.custom_op("attnfast::ntm_location_backward_triton", mutates_args=())
def ntm_location_backward(grad: Tensor, content: Tensor, gate: Tensor, prev_weights: Tensor,
                          shift: Tensor,
                          gamma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _tk().ntm_location_backward(_c(grad), _c(content), _c(gate), _c(prev_weights),
                                       _c(shift), _c(gamma))


@torch.library.custom_op("attnfast::graves_window_forward_triton", mutates_args=())
def graves_window_forward(alpha_hat: Tensor, beta_hat: Tensor, kappa_hat: Tensor, kappa0: Tensor,
                          chars: Tensor,
                          char_mask: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    mask = _c(char_mask) if char_mask is not None else None
    return _tk().graves_window_forward(_c(alpha_hat), _c(beta_hat), _c(kappa_hat), _c(kappa0),
                                       _c(chars), mask)


@torch.library.custom_op("attnfast::graves_window_backward_triton", mutates_args=())
def graves_window_backward(g_window: Tensor, g_kappa: Tensor, g_phi: Tensor, alpha_hat: Tensor,
                           beta_hat: Tensor, kappa_hat: Tensor, kappa0: Tensor, chars: Tensor,
                           char_mask: Optional[Tensor]
                           ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    mask = _c(char_mask) if char_mask is not None else None
    return _tk().graves_window_backward(_c(g_window), _c(g_kappa), _c(g_phi), _c(alpha_hat),
                                        _c(beta_hat), _c(kappa_hat), _c(kappa0), _c(chars), mask)


@torch.library.custom_op("attnfast::dnc_usage_forward_triton", mutates_args=())
def dnc_usage_forward(usage: Tensor, write_weights: Tensor, free_gate: Tensor,
                      read_weights: Tensor) -> Tensor:
    return _tk().dnc_usage_forward(_c(usage), _c(write_weights), _c(free_gate), _c(read_weights))


@torch.library.custom_op("attnfast::dnc_usage_backward_triton", mutates_args=())
def dnc_usage_backward(grad: Tensor, usage: Tensor, write_weights: Tensor, free_gate: Tensor,
                       read_weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return _tk().dnc_usage_backward(_c(grad), _c(usage), _c(write_weights), _c(free_gate),
                                    _c(read_weights))


@torch.library.custom_op("attnfast::memory_read_forward_triton", mutates_args=())
def memory_read_forward(memory: Tensor, read_weights: Tensor) -> Tensor:
    return _tk().memory_read_forward(_c(memory), _c(read_weights))


@torch.library.custom_op("attnfast::memory_read_backward_triton", mutates_args=())
def memory_read_backward(grad: Tensor, memory: Tensor,
                         read_weights: Tensor) -> tuple[Tensor, Tensor]:
    return _tk().memory_read_backward(_c(grad), _c(memory), _c(read_weights))


# ---- fake kernels ---------------------------------------------------------------------------------

@ntm_location_forward.register_fake
def _(content, gate, prev_weights, shift, gamma):
    return torch.empty_like(content)


@ntm_location_backward.register_fake
def _(grad, content, gate, prev_weights, shift, gamma):
    return tuple(torch.empty_like(t) for t in (content, gate, prev_weights, shift, gamma))


@graves_window_forward.register_fake
def _(alpha_hat, beta_hat, kappa_hat, kappa0, chars, char_mask):
    b, t, _ = alpha_hat.shape
    return (chars.new_empty((b, t, chars.shape[2])), torch.empty_like(kappa_hat),
            chars.new_empty((b, t, chars.shape[1])))


@graves_window_backward.register_fake
def _(g_window, g_kappa, g_phi, alpha_hat, beta_hat, kappa_hat, kappa0, chars, char_mask):
    dm = torch.empty_like(char_mask) if char_mask is not None else alpha_hat.new_empty((0,))
    return (torch.empty_like(alpha_hat), torch.empty_like(beta_hat), torch.empty_like(kappa_hat),
            torch.empty_like(kappa0), torch.empty_like(chars), dm)


@dnc_usage_forward.register_fake
def _(usage, write_weights, free_gate, read_weights):
    return torch.empty_like(usage)


@dnc_usage_backward.register_fake
def _(grad, usage, write_weights, free_gate, read_weights):
    return torch.empty_like(usage), torch.empty_like(free_gate), torch.empty_like(read_weights)


@memory_read_forward.register_fake
def _(memory, read_weights):
    return memory.new_empty((memory.shape[0], read_weights.shape[1], memory.shape[2]))


@memory_read_backward.register_fake
def _(grad, memory, read_weights):
    return torch.empty_like(memory), torch.empty_like(read_weights)


# ---- autograd (the explicit backward ops; the saved tensors are the inputs) ----------------------

def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _ntm_bwd(ctx, grad):
    return ntm_location_backward(grad, *ctx.saved_tensors)


def _graves_bwd(ctx, g_w, g_kappa, g_phi):
    *grads, g_mask = graves_window_backward(g_w, g_kappa, g_phi, *ctx.saved_tensors)
    return (*grads, g_mask if ctx.saved_tensors[-1] is not None else None)


def _usage_bwd(ctx, grad):
    gu, gf, gr = dnc_usage_backward(grad, *ctx.saved_tensors)
    return gu, None, gf, gr  # write_weights: stop_gradient, as in DeepMind's DNC


def _read_bwd(ctx, grad):
    return memory_read_backward(grad, *ctx.saved_tensors)


ntm_location_forward.register_autograd(_ntm_bwd, setup_context=_save_inputs)
graves_window_forward.register_autograd(_graves_bwd, setup_context=_save_inputs)
dnc_usage_forward.register_autograd(_usage_bwd, setup_context=_save_inputs)
memory_read_forward.register_autograd(_read_bwd, setup_context=_save_inputs)
