"""Reading and writing the memory: the erase/add write of every write head, the weighted read of
every read head, and the DNC read (the read-mode mix of content, forward and backward weightings,
then the read: one compiled op pair, used by the DNC access step)."""
from __future__ import annotations

import functools

import torch

from attnfast.ops import spec
from attnfast.ops.memory.common import grid_cap, inputs, public_op
from attnfast.reference import memory as ref

def _write_example():
    g = spec.example_generator()
    return (torch.randn(2, 5, 3, generator=g), spec.example_distribution(2, 2, 5, generator=g),
            torch.rand(2, 2, 3, generator=g), torch.randn(2, 2, 3, generator=g))


def _read_example():
    g = spec.example_generator()
    return torch.randn(2, 5, 3, generator=g), spec.example_distribution(2, 2, 5, generator=g)


# Both backwards work from the saved inputs.
spec.register(spec.KernelOp(
    "memory_write_forward", "memory_write_backward", public="memory_write",
    fake=lambda memory, write_weights, erase, add: torch.empty_like(memory),
    fake_backward=lambda grad, *inputs: tuple(torch.empty_like(t) for t in inputs),
    triton="read_write:write_forward:write_backward", example=_write_example))

spec.register(spec.KernelOp(
    "memory_read_forward", "memory_read_backward", public="memory_read",
    fake=lambda memory, read_weights: memory.new_empty(
        (memory.shape[0], read_weights.shape[1], memory.shape[2])),
    fake_backward=lambda grad, memory, read_weights: (
        torch.empty_like(memory), torch.empty_like(read_weights)),
    triton="read_write:memory_read_forward:memory_read_backward", example=_read_example))


def _read_mix_example():
    g = spec.example_generator()
    dist = functools.partial(spec.example_distribution, generator=g)
    return (torch.randn(2, 5, 3, generator=g), dist(2, 3, 5), dist(2, 3, 2, 5), dist(2, 3, 2, 5),
            dist(2, 3, 5))


# The DNC read: the read-mode mix of content, forward and backward weightings, then the read;
# the backward recomputes the mix from the saved inputs.
spec.register(spec.KernelOp(
    "dnc_read_mix_forward", "dnc_read_mix_backward", public="dnc_access_step",
    fake=lambda memory, content, forward, backward, read_mode: (
        content.new_empty(content.shape),
        memory.new_empty((memory.shape[0], content.shape[1], memory.shape[2]))),
    fake_backward=lambda grad_rw, grad_words, *inputs: tuple(torch.empty_like(t) for t in inputs),
    triton="read_write:read_mix_forward:read_mix_backward", example=_read_mix_example))


def memory_write(ops, memory, write_weights, erase, add):
    return ops.memory_write_forward(memory, write_weights, erase, add)


def memory_read(ops, memory, read_weights):
    return ops.memory_read_forward(memory, read_weights)


def prep_memory_write(memory, write_weights, erase, add):
    return inputs("memory_write", [
        ("memory", memory, "B N W"), ("write_weights", write_weights, "B Hw N"),
        ("erase", erase, "B Hw W"), ("add", add, "B Hw W")], (memory, write_weights, erase, add))


def prep_memory_read(memory, read_weights):
    return inputs("memory_read", [("memory", memory, "B N W"),
                                  ("read_weights", read_weights, "B R N")],
                  (memory, read_weights))


PUBLIC_OPS = [
    public_op("memory_write", prep_memory_write, ref.memory_write, memory_write,
              ["memory_write_forward"], [grid_cap()]),
    public_op("memory_read", prep_memory_read, ref.memory_read, memory_read,
              ["memory_read_forward"]),
]
