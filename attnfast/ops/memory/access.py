"""The DNC access step: one time step of DeepMind's memory access module, composed of the
compiled ops of every concept (usage, content, write weights = allocation + gate mix, write,
links, read = read-mode mix + read): seven compiled ops, no torch op between them."""
from __future__ import annotations

from attnfast.ops.memory import allocation, links
from attnfast.ops.memory.common import (EPS, MemoryInputs, allocation_cap, check_tensors,
                                        memory_slots_cap, public_op)
from attnfast.reference import memory as ref


def access_step(ops, state: ref.DNCState, x: ref.DNCInterface):
    s = state
    usage = allocation.usage(ops, s.usage, s.write_weights, x.free_gate, s.read_weights)
    write_content = ops.memory_content_forward(s.memory, x.write_keys, x.write_strengths, EPS)
    write_weights = ops.dnc_write_weights_forward(usage, write_content, x.allocation_gate,
                                                  x.write_gate, EPS)
    memory = ops.memory_write_forward(s.memory, write_weights, x.erase_vectors, x.write_vectors)
    link, precedence, forward, backward = ops.dnc_link_read_forward(
        s.link, s.precedence, write_weights, s.read_weights)
    read_content = ops.memory_content_forward(memory, x.read_keys, x.read_strengths, EPS)
    read_weights, read_words = ops.dnc_read_mix_forward(memory, read_content, forward, backward,
                                                        x.read_mode)
    return read_words, ref.DNCState(memory, read_weights, write_weights, link, precedence, usage)


def prep_access_step(state, interface):
    if not isinstance(state, tuple) or len(state) != len(ref.DNCState._fields):
        raise ValueError(f"dnc_access_step: state must be a DNCState {ref.DNCState._fields}, "
                         f"got {type(state).__name__}")
    if not isinstance(interface, tuple) or len(interface) != len(ref.DNCInterface._fields):
        raise ValueError(f"dnc_access_step: interface must be a DNCInterface "
                         f"{ref.DNCInterface._fields}, got {type(interface).__name__}")
    s, x = ref.DNCState(*state), ref.DNCInterface(*interface)
    dims = check_tensors("dnc_access_step", [
        ("state.memory", s.memory, "B N W"), ("state.read_weights", s.read_weights, "B R N"),
        ("state.write_weights", s.write_weights, "B Hw N"), ("state.link", s.link, "B Hw N N"),
        ("state.precedence", s.precedence, "B Hw N"), ("state.usage", s.usage, "B N"),
        ("interface.write_vectors", x.write_vectors, "B Hw W"),
        ("interface.erase_vectors", x.erase_vectors, "B Hw W"),
        ("interface.free_gate", x.free_gate, "B R"),
        ("interface.allocation_gate", x.allocation_gate, "B Hw"),
        ("interface.write_gate", x.write_gate, "B Hw"),
        ("interface.read_mode", x.read_mode, "B R M"),
        ("interface.write_keys", x.write_keys, "B Hw W"),
        ("interface.write_strengths", x.write_strengths, "B Hw"),
        ("interface.read_keys", x.read_keys, "B R W"),
        ("interface.read_strengths", x.read_strengths, "B R")])
    if dims["M"] != 1 + 2 * dims["Hw"]:
        raise ValueError(f"dnc_access_step: interface.read_mode must have shape (B, R, 1 + 2 Hw = "
                         f"{1 + 2 * dims['Hw']}), got {tuple(x.read_mode.shape)}")
    return MemoryInputs((s, x), s.memory.device, s.memory.dtype, dims)


PUBLIC_OPS = [
    public_op("dnc_access_step", prep_access_step, ref.dnc_access_step, access_step,
              ["dnc_usage_forward", "memory_content_forward", "dnc_write_weights_forward",
               "memory_write_forward", "dnc_link_read_forward", "dnc_read_mix_forward"],
              [allocation_cap, links.LINK_GRID_CAP, memory_slots_cap]),
]
