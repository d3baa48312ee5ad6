"""Addressing: content addressing (NTM and DNC) and NTM location addressing (interpolation,
circular shift, sharpening)."""
from __future__ import annotations

import functools

import torch

from attnfast.ops import spec
from attnfast.ops.memory.common import EPS, grid_cap, inputs, memory_slots_cap, public_op
from attnfast.reference import memory as ref

# ---- compiled ops ------------------------------------------------------------------------------


def _content_setup(ctx, inputs, output):
    # The backward works from the saved weights (the softmax output).
    memory, keys, strengths, eps = inputs
    ctx.save_for_backward(memory, keys, strengths, output)
    ctx.eps = eps


def _content_backward(ctx, backward_op, grad):
    memory, keys, strengths, weights = ctx.saved_tensors
    return (*backward_op(grad, memory, keys, strengths, weights, ctx.eps), None)


def _content_example():
    g = spec.example_generator()
    return (torch.randn(2, 5, 3, generator=g), torch.randn(2, 2, 3, generator=g),
            torch.rand(2, 2, generator=g) + 1, EPS)


spec.register(spec.KernelOp(
    "memory_content_forward", "memory_content_backward", public="content_addressing",
    fake=lambda memory, keys, strengths, eps: keys.new_empty(
        (keys.shape[0], keys.shape[1], memory.shape[1])),
    fake_backward=lambda grad, memory, keys, strengths, weights, eps: (
        torch.empty_like(memory), torch.empty_like(keys), torch.empty_like(strengths)),
    triton="addressing:content_forward:content_backward", example=_content_example,
    setup_context=_content_setup, backward_formula=_content_backward))

def _ntm_example():
    g = spec.example_generator()
    dist = functools.partial(spec.example_distribution, generator=g)
    return (dist(2, 2, 5), torch.rand(2, 2, generator=g), dist(2, 2, 5), dist(2, 2, 3),
            torch.rand(2, 2, generator=g) + 1)


# Interpolation with the previous weights, shift and sharpening fused; the backward recomputes
# what it needs from the saved inputs (all (B, H, N)-sized).
spec.register(spec.KernelOp(
    "ntm_location_forward", "ntm_location_backward", public="ntm_address",
    fake=lambda content, gate, prev_weights, shift, gamma: torch.empty_like(content),
    fake_backward=lambda grad, *inputs: tuple(torch.empty_like(t) for t in inputs),
    triton="addressing:ntm_location_forward:ntm_location_backward", example=_ntm_example))


# ---- public ops --------------------------------------------------------------------------------

def content_addressing(ops, memory, keys, strengths):
    return ops.memory_content_forward(memory, keys, strengths, EPS)


def ntm_address(ops, memory, key, strength, gate, shift, gamma, prev_weights):
    """Two compiled ops: content weights, then interpolation + shift + sharpening fused."""
    content = ops.memory_content_forward(memory, key, strength, EPS)
    return ops.ntm_location_forward(content, gate, prev_weights, shift, gamma)


def prep_content(memory, keys, strengths):
    return inputs("content_addressing", [("memory", memory, "B N W"), ("keys", keys, "B H W"),
                                         ("strengths", strengths, "B H")],
                  (memory, keys, strengths))


def prep_ntm(memory, key, strength, gate, shift, gamma, prev_weights):
    inp = inputs("ntm_address", [
        ("memory", memory, "B N W"), ("key", key, "B H W"), ("strength", strength, "B H"),
        ("gate", gate, "B H"), ("shift", shift, "B H S"), ("gamma", gamma, "B H"),
        ("prev_weights", prev_weights, "B H N")],
        (memory, key, strength, gate, shift, gamma, prev_weights))
    if inp.dims["S"] % 2 != 1 or inp.dims["S"] > inp.dims["N"]:
        raise ValueError(f"ntm_address: shift must have an odd last dim S <= N={inp.dims['N']} "
                         f"(offsets -(S//2)..S//2), got S={inp.dims['S']}")
    return inp


PUBLIC_OPS = [
    public_op("content_addressing", prep_content, ref.content_addressing, content_addressing,
              ["memory_content_forward"], [grid_cap(), memory_slots_cap]),
    public_op("ntm_address", prep_ntm, ref.ntm_address, ntm_address,
              ["memory_content_forward", "ntm_location_forward"], [grid_cap()]),
]
