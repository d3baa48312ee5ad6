"""The Triton attention kernels as torch custom ops: ``attnfast::attention_forward_triton`` and
``attnfast::attention_backward_triton``, with fake kernels and autograd.

Same contract as the compiled ``attention_forward`` / ``attention_backward`` schemas
(csrc/schemas.h); the Triton kernels are Python functions, so their ops are defined here
rather than in C++. attnfast.triton_kernels.attention is imported lazily, inside the op bodies, so
importing attnfast never needs triton. attnfast/ops/attention.py imports this module; its
``_run_triton`` then finds ``torch.ops.attnfast.attention_forward_triton``.
"""
from __future__ import annotations

import torch

from attnfast.ops import seed as seed_ops

FORWARD_TRITON = "attnfast::attention_forward_triton"
BACKWARD_TRITON = "attnfast::attention_backward_triton"


@torch.library.custom_op(FORWARD_TRITON, mutates_args=())
def attention_forward_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             bias: torch.Tensor | None, causal: bool, scale: float,
                             dropout_p: float, seed: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    from attnfast.triton_kernels import attention as tk

    # Custom ops run eagerly: reading the seed here is no graph break.
    return tk.attention_forward(q, k, v, bias, causal, scale, dropout_p,
                                seed_ops.seed_int(seed, "attention_forward_triton: seed"))


@torch.library.custom_op(BACKWARD_TRITON, mutates_args=())
def attention_backward_triton(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                              v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                              bias: torch.Tensor | None, causal: bool, scale: float,
                              dropout_p: float, seed: torch.Tensor, deterministic: bool
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from attnfast.triton_kernels import attention as tk

    return tk.attention_backward(grad_out, q, k, v, out, lse, bias, causal, scale, dropout_p,
                                 seed_ops.seed_int(seed, "attention_backward_triton: seed"),
                                 deterministic)


@attention_forward_triton.register_fake
def _fake_forward(q, k, v, bias, causal, scale, dropout_p, seed):
    seed_ops.check_seed_tensor(seed, "attention_forward_triton: seed")
    out = q.new_empty((q.shape[0], q.shape[1], v.shape[2]))
    lse = q.new_empty((q.shape[0], q.shape[1]), dtype=torch.float32)
    return out, lse


@attention_backward_triton.register_fake
def _fake_backward(grad_out, q, k, v, out, lse, bias, causal, scale, dropout_p, seed,
                   deterministic):
    seed_ops.check_seed_tensor(seed, "attention_backward_triton: seed")
    # Contiguous, as the launcher returns them (empty_like would copy a transposed q's strides).
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, bias, causal, scale, dropout_p, seed = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, bias, seed)
    ctx.args = (causal, scale, dropout_p)


def _backward(ctx, grad_out, _grad_lse):
    # lse is an auxiliary output kept for the backward; no gradient flows through it. The bias
    # is a mask: no gradient either. deterministic follows torch's global switch.
    q, k, v, out, lse, bias, seed = ctx.saved_tensors
    causal, scale, dropout_p = ctx.args
    gq, gk, gv = attention_backward_triton(
        grad_out.contiguous(), q, k, v, out, lse, bias, causal, scale, dropout_p, seed,
        torch.are_deterministic_algorithms_enabled())
    return gq, gk, gv, None, None, None, None, None


attention_forward_triton.register_autograd(_backward, setup_context=_setup_context)
