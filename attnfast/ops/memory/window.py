"""Graves' soft window over a character sequence (handwriting synthesis): a mixture of
Gaussians over character positions, kappa advancing monotonically."""
from __future__ import annotations

import functools

import torch

from attnfast.ops import spec
from attnfast.ops.memory.common import check_tensors, MemoryInputs, public_op
from attnfast.reference import memory as ref


def _fake(alpha_hat, beta_hat, kappa_hat, kappa0, chars, char_mask):
    b, t, _ = alpha_hat.shape
    return (chars.new_empty((b, t, chars.shape[2])), torch.empty_like(kappa_hat),
            chars.new_empty((b, t, chars.shape[1])))


def _fake_backward(g_w, g_kappa, g_phi, alpha_hat, beta_hat, kappa_hat, kappa0, chars, char_mask):
    g_mask = torch.empty_like(char_mask) if char_mask is not None else alpha_hat.new_empty((0,))
    return (torch.empty_like(alpha_hat), torch.empty_like(beta_hat), torch.empty_like(kappa_hat),
            torch.empty_like(kappa0), torch.empty_like(chars), g_mask)


def _example():
    g = spec.example_generator()
    b, t, k, u, c = 2, 3, 2, 5, 4
    alpha_hat, beta_hat, kappa_hat = (torch.randn(b, t, k, generator=g) for _ in range(3))
    return (alpha_hat, beta_hat, kappa_hat, torch.rand(b, k, generator=g),
            torch.rand(b, u, c, generator=g), (torch.rand(b, u, generator=g) > 0.3).float())


def _backward(ctx, backward_op, g_w, g_kappa, g_phi):
    *grads, g_mask = spec.backward_from_inputs(ctx, backward_op, g_w, g_kappa, g_phi)
    return (*grads, g_mask if ctx.saved_tensors[-1] is not None else None)


# All T steps of the window in one op; the backward recomputes from the saved inputs
# ((B, T, K)-sized).
spec.register(spec.KernelOp(
    "graves_window_forward", "graves_window_backward", public="graves_window", fake=_fake,
    fake_backward=_fake_backward,
    triton="window:graves_window_forward:graves_window_backward", example=_example,
    backward_formula=_backward))


def window_sequence(ops, alpha_hat, beta_hat, kappa_hat, chars, char_mask=None, kappa0=None):
    if kappa0 is None:
        kappa0 = alpha_hat.new_zeros((alpha_hat.shape[0], alpha_hat.shape[2]))
    if char_mask is not None:
        char_mask = char_mask.to(alpha_hat.dtype)  # as the reference: phi * mask.to(phi.dtype)
    return ops.graves_window_forward(alpha_hat, beta_hat, kappa_hat, kappa0, chars, char_mask)


def window(ops, alpha_hat, beta_hat, kappa_hat, kappa_prev, chars, char_mask=None):
    w, kappa, phi = window_sequence(ops, alpha_hat[:, None], beta_hat[:, None],
                                    kappa_hat[:, None], chars, char_mask, kappa_prev)
    return w[:, 0], kappa[:, 0], phi[:, 0]


def _check_mask(op, mask, dims, device):
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (dims["B"], dims["U"]):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{op}: char_mask must be a (B={dims['B']}, U={dims['U']}) tensor, "
                         f"got {shape}")
    if mask.device != device:
        raise ValueError(f"{op}: char_mask is on {mask.device} but chars is on {device}")


def prep_graves(alpha_hat, beta_hat, kappa_hat, kappa_prev, chars, char_mask=None):
    dims = check_tensors("graves_window", [
        ("alpha_hat", alpha_hat, "B K"), ("beta_hat", beta_hat, "B K"),
        ("kappa_hat", kappa_hat, "B K"), ("kappa_prev", kappa_prev, "B K"),
        ("chars", chars, "B U C")])
    _check_mask("graves_window", char_mask, dims, chars.device)
    return MemoryInputs((alpha_hat, beta_hat, kappa_hat, kappa_prev, chars, char_mask),
                        alpha_hat.device, alpha_hat.dtype, dims)


def prep_graves_seq(alpha_hat, beta_hat, kappa_hat, chars, char_mask=None, kappa0=None):
    specs = [("alpha_hat", alpha_hat, "B T K"), ("beta_hat", beta_hat, "B T K"),
             ("kappa_hat", kappa_hat, "B T K"), ("chars", chars, "B U C")]
    if kappa0 is not None:
        specs.append(("kappa0", kappa0, "B K"))
    dims = check_tensors("graves_window_sequence", specs)
    _check_mask("graves_window_sequence", char_mask, dims, chars.device)
    return MemoryInputs((alpha_hat, beta_hat, kappa_hat, chars, char_mask, kappa0),
                        alpha_hat.device, alpha_hat.dtype, dims)


PUBLIC_OPS = [
    public_op("graves_window", prep_graves, ref.graves_window, window,
              ["graves_window_forward"]),
    public_op("graves_window_sequence", prep_graves_seq, ref.graves_window_sequence,
              window_sequence, ["graves_window_forward"]),
]
