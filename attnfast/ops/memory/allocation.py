"""Allocation: DNC usage (retention by the free gates, then the writes), the sort-based
allocation weights and the write weights that mix them with content weights (one compiled op
pair: the allocation and the gate mix in one kernel)."""
from __future__ import annotations

import functools

import torch

from attnfast.ops import spec
from attnfast.ops.memory.common import EPS, allocation_cap, inputs, public_op
from attnfast.reference import memory as ref

# ---- compiled ops ------------------------------------------------------------------------------


def _allocation_setup(ctx, inputs, output):
    # The backward re-sorts (O(N log N)) rather than saving permutations.
    usage, write_gates, eps = inputs
    ctx.save_for_backward(usage, write_gates)
    ctx.eps = eps


def _allocation_backward(ctx, backward_op, grad):
    usage, write_gates = ctx.saved_tensors
    return (*backward_op(grad, usage, write_gates, ctx.eps), None)


def _allocation_example():
    g = spec.example_generator()
    return torch.rand(2, 5, generator=g), torch.rand(2, 2, generator=g), EPS


spec.register(spec.KernelOp(
    "dnc_allocation_forward", "dnc_allocation_backward", public="dnc_allocation",
    fake=lambda usage, write_gates, eps: usage.new_empty(
        (usage.shape[0], write_gates.shape[1], usage.shape[1])),
    fake_backward=lambda grad, usage, write_gates, eps: (
        torch.empty_like(usage), torch.empty_like(write_gates)),
    triton="allocation:allocation_forward:allocation_backward", example=_allocation_example,
    setup_context=_allocation_setup, backward_formula=_allocation_backward))


def _write_weights_backward(ctx, backward_op, grad):
    return (*spec.backward_from_inputs(ctx, backward_op, grad), None)  # eps: no gradient


def _write_weights_example():
    g = spec.example_generator()
    return (torch.rand(2, 5, generator=g), spec.example_distribution(2, 2, 5, generator=g),
            torch.rand(2, 2, generator=g), torch.rand(2, 2, generator=g), EPS)


# The backward recomputes the allocation from the saved inputs.
spec.register(spec.KernelOp(
    "dnc_write_weights_forward", "dnc_write_weights_backward", public="dnc_write_weights",
    fake=lambda usage, content_weights, allocation_gate, write_gate, eps: usage.new_empty(
        (usage.shape[0], content_weights.shape[1], usage.shape[1])),
    fake_backward=lambda grad, usage, content_weights, allocation_gate, write_gate, eps: tuple(
        torch.empty_like(t) for t in (usage, content_weights, allocation_gate, write_gate)),
    triton="allocation:write_weights_forward:write_weights_backward",
    example=_write_weights_example, backward_formula=_write_weights_backward))


def _usage_backward(ctx, backward_op, grad):
    gu, gf, gr = spec.backward_from_inputs(ctx, backward_op, grad)
    return gu, None, gf, gr  # write_weights: stop_gradient, as in DeepMind's DNC


def _usage_example():
    g = spec.example_generator()
    dist = functools.partial(spec.example_distribution, generator=g)
    return torch.rand(2, 5, generator=g), dist(2, 2, 5), torch.rand(2, 3, generator=g), dist(2, 3, 5)


spec.register(spec.KernelOp(
    "dnc_usage_forward", "dnc_usage_backward", public="dnc_usage",
    fake=lambda usage, write_weights, free_gate, read_weights: torch.empty_like(usage),
    fake_backward=lambda grad, usage, write_weights, free_gate, read_weights: (
        torch.empty_like(usage), torch.empty_like(free_gate), torch.empty_like(read_weights)),
    triton="allocation:dnc_usage_forward:dnc_usage_backward", example=_usage_example,
    backward_formula=_usage_backward))


# ---- public ops --------------------------------------------------------------------------------

def usage(ops, usage, write_weights, free_gate, read_weights):
    # write_weights detached, as the reference: no gradient (and no requires_grad) through them.
    return ops.dnc_usage_forward(usage, write_weights.detach(), free_gate, read_weights)


def allocation(ops, usage, write_gates=None):
    if write_gates is None:  # one write head, gate 1: (B, N)
        return ops.dnc_allocation_forward(usage, usage.new_ones((usage.shape[0], 1)), EPS)[:, 0]
    return ops.dnc_allocation_forward(usage, write_gates, EPS)


def write_weights(ops, usage, content_weights, allocation_gate, write_gate):
    return ops.dnc_write_weights_forward(usage, content_weights, allocation_gate, write_gate, EPS)


def prep_usage(usage, write_weights, free_gate, read_weights):
    return inputs("dnc_usage", [("usage", usage, "B N"), ("write_weights", write_weights, "B Hw N"),
                                ("free_gate", free_gate, "B R"),
                                ("read_weights", read_weights, "B R N")],
                  (usage, write_weights, free_gate, read_weights))


def prep_allocation(usage, write_gates=None):
    specs = [("usage", usage, "B N")]
    if write_gates is not None:
        specs.append(("write_gates", write_gates, "B Hw"))
    return inputs("dnc_allocation", specs, (usage, write_gates))


def prep_write_weights(usage, content_weights, allocation_gate, write_gate):
    return inputs("dnc_write_weights", [
        ("usage", usage, "B N"), ("content_weights", content_weights, "B Hw N"),
        ("allocation_gate", allocation_gate, "B Hw"), ("write_gate", write_gate, "B Hw")],
        (usage, content_weights, allocation_gate, write_gate))


PUBLIC_OPS = [
    public_op("dnc_usage", prep_usage, ref.dnc_usage, usage, ["dnc_usage_forward"]),
    public_op("dnc_allocation", prep_allocation, ref.dnc_allocation, allocation,
              ["dnc_allocation_forward"], [allocation_cap]),
    public_op("dnc_write_weights", prep_write_weights, ref.dnc_write_weights, write_weights,
              ["dnc_write_weights_forward"], [allocation_cap]),
]
