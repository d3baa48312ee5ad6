"""Memory modules on attnfast.memory: DNCMemoryAccess, DNC, NTMMemory, GravesWindow.

States are NamedTuples of tensors (documented on each class), so they pass through
torch.compile, checkpointing and ``detach`` loops unchanged.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from attnfast import memory as M
from attnfast.memory import DNCInterface, DNCState
from attnfast.ops.checks import backend_name, floating_dtype, int_at_least, module_input


def _strength(raw: torch.Tensor, op: str) -> torch.Tensor:
    # softplus (DeepMind's code) or oneplus = 1 + softplus (the DNC paper): strengths > 0 / >= 1.
    return F.softplus(raw) if op == "softplus" else 1 + F.softplus(raw)


def _check_strength_op(op):
    if op not in ("softplus", "oneplus"):
        raise ValueError(f"strength_op must be 'softplus' or 'oneplus', got {op!r}")


class DNCMemoryAccess(nn.Module):
    """DeepMind's ``MemoryAccess``: one DNC memory access per call.

    The interface vector is laid out in the order of DeepMind's ``_read_inputs``:
    write_vectors (Hw W), erase_vectors (Hw W, sigmoid), free_gate (R, sigmoid),
    allocation_gate (Hw, sigmoid), write_gate (Hw, sigmoid), read_mode (R (1 + 2 Hw), softmax per
    read head), write_keys (Hw W), write_strengths (Hw), read_keys (R W), read_strengths (R).
    With ``input_size`` given, one linear layer maps the controller output to it (DeepMind's
    per-part linears, concatenated); otherwise ``inputs`` is the raw interface vector
    (``input_size == interface_size``). ``strength_op``: "softplus" (DeepMind) or "oneplus"
    (paper). State: :class:`attnfast.memory.DNCState`.
    """

    def __init__(self, memory_size=128, word_size=20, num_reads=1, num_writes=1,
                 input_size: int | None = None, strength_op="softplus", backend=None,
                 device=None, dtype=None):
        super().__init__()
        _check_strength_op(strength_op)
        for name, v in (("memory_size", memory_size), ("word_size", word_size),
                        ("num_reads", num_reads), ("num_writes", num_writes)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if input_size is not None:
            int_at_least("input_size", input_size, 1)
        backend_name(backend)
        floating_dtype("dtype", dtype)
        self.memory_size, self.word_size = memory_size, word_size
        self.num_reads, self.num_writes = num_reads, num_writes
        self.strength_op, self.backend = strength_op, backend
        hw, r, w = num_writes, num_reads, word_size
        self.sizes = [("write_vectors", hw * w), ("erase_vectors", hw * w), ("free_gate", r),
                      ("allocation_gate", hw), ("write_gate", hw), ("read_mode", r * (1 + 2 * hw)),
                      ("write_keys", hw * w), ("write_strengths", hw), ("read_keys", r * w),
                      ("read_strengths", r)]
        self.interface_size = sum(s for _, s in self.sizes)
        if input_size is None:
            self.linear = None
            self.input_size = self.interface_size
        else:
            self.linear = nn.Linear(input_size, self.interface_size, device=device, dtype=dtype)
            self.input_size = input_size
        self._factory = {"device": device, "dtype": dtype}

    def interface(self, inputs: torch.Tensor) -> DNCInterface:
        """Split and activate the interface vector (B, input_size) -> DNCInterface."""
        module_input("DNCMemoryAccess", "inputs", inputs,
                     None if self.linear is None else self.linear.weight)
        if inputs.dim() != 2 or inputs.shape[1] != self.input_size:
            raise ValueError(f"DNCMemoryAccess: inputs must be (B, input_size={self.input_size}), "
                             f"got {tuple(inputs.shape)}")
        x = inputs if self.linear is None else self.linear(inputs)
        parts = dict(zip([n for n, _ in self.sizes], x.split([s for _, s in self.sizes], dim=1)))
        b, hw, r, w = x.shape[0], self.num_writes, self.num_reads, self.word_size
        return DNCInterface(
            write_vectors=parts["write_vectors"].reshape(b, hw, w),
            erase_vectors=torch.sigmoid(parts["erase_vectors"]).reshape(b, hw, w),
            free_gate=torch.sigmoid(parts["free_gate"]),
            allocation_gate=torch.sigmoid(parts["allocation_gate"]),
            write_gate=torch.sigmoid(parts["write_gate"]),
            read_mode=torch.softmax(parts["read_mode"].reshape(b, r, 1 + 2 * hw), dim=-1),
            write_keys=parts["write_keys"].reshape(b, hw, w),
            write_strengths=_strength(parts["write_strengths"], self.strength_op),
            read_keys=parts["read_keys"].reshape(b, r, w),
            read_strengths=_strength(parts["read_strengths"], self.strength_op),
        )

    def initial_state(self, batch_size: int) -> DNCState:
        p = next(self.parameters(), None)
        dtype = p.dtype if p is not None else self._factory["dtype"]
        device = p.device if p is not None else self._factory["device"]
        return M.dnc_initial_state(batch_size, self.memory_size, self.word_size, self.num_reads,
                                   self.num_writes, dtype=dtype, device=device)

    def forward(self, inputs: torch.Tensor, state: DNCState):
        """inputs (B, input_size), state DNCState -> (read_words (B, R, W), new DNCState)."""
        return M.dnc_access_step(state, self.interface(inputs), backend=self.backend)

    def extra_repr(self):
        return (f"memory_size={self.memory_size}, word_size={self.word_size}, "
                f"num_reads={self.num_reads}, num_writes={self.num_writes}, "
                f"input_size={self.input_size}, strength_op={self.strength_op!r}")


class DNCCoreState(NamedTuple):
    """State of :class:`DNC`: the access state, the LSTM controller's (h, c) each (B, hidden_size)
    and the previous read words (B, R, W)."""
    access: DNCState
    controller: tuple
    read_words: torch.Tensor


class DNC(nn.Module):
    """Differentiable Neural Computer (DeepMind's DNC core): an LSTM controller fed with
    [x_t, previous read words], a DNCMemoryAccess driven by the controller output, and a linear
    output layer over [controller output, read words]. ``clip_value`` clips the controller and
    final outputs like DeepMind's ``clip_value`` (None: no clipping).

    ``forward(x, state=None)``: x (B, T, input_size) (batch first) -> (outputs (B, T, output_size),
    DNCCoreState).
    """

    def __init__(self, input_size, output_size, hidden_size=64, memory_size=16, word_size=16,
                 num_reads=1, num_writes=1, clip_value: float | None = None,
                 strength_op="softplus", backend=None):
        super().__init__()
        for name, size in (("input_size", input_size), ("output_size", output_size),
                           ("hidden_size", hidden_size)):
            int_at_least(name, size, 1)
        if clip_value is not None and (isinstance(clip_value, bool)
                                       or not isinstance(clip_value, (int, float))
                                       or not clip_value > 0):
            raise ValueError(f"clip_value must be None or a number > 0, got {clip_value!r}")
        self.access = DNCMemoryAccess(memory_size, word_size, num_reads, num_writes,
                                      input_size=hidden_size, strength_op=strength_op,
                                      backend=backend)
        self.controller = nn.LSTMCell(input_size + num_reads * word_size, hidden_size)
        self.output = nn.Linear(hidden_size + num_reads * word_size, output_size)
        self.input_size, self.output_size, self.hidden_size = input_size, output_size, hidden_size
        self.clip_value = clip_value

    def _clip(self, x):
        return x if self.clip_value is None else x.clamp(-self.clip_value, self.clip_value)

    def initial_state(self, batch_size: int) -> DNCCoreState:
        int_at_least("batch_size", batch_size, 0)
        p = self.output.weight
        h = p.new_zeros(batch_size, self.hidden_size)
        reads = p.new_zeros(batch_size, self.access.num_reads, self.access.word_size)
        return DNCCoreState(self.access.initial_state(batch_size), (h, h.clone()), reads)

    def step(self, x_t: torch.Tensor, state: DNCCoreState):
        b = x_t.shape[0]
        h, c = self.controller(torch.cat([x_t, state.read_words.reshape(b, -1)], 1), state.controller)
        out = self._clip(h)
        reads, access = self.access(out, state.access)
        y = self._clip(self.output(torch.cat([out, reads.reshape(b, -1)], 1)))
        return y, DNCCoreState(access, (h, c), reads)

    def _check_state(self, state, b: int) -> None:
        """The controller part of a state (the access part is checked by dnc_access_step): a
        state of another batch size was reshaped into the controller input."""
        r, w, hid = self.access.num_reads, self.access.word_size, self.hidden_size
        if not isinstance(state, DNCCoreState):
            raise ValueError(f"DNC: state must be a DNCCoreState (as returned by forward or "
                             f"initial_state) or None, got {type(state).__name__}")
        hc = state.controller
        if (not isinstance(hc, (tuple, list)) or len(hc) != 2
                or any(not isinstance(t, torch.Tensor) or tuple(t.shape) != (b, hid) for t in hc)):
            raise ValueError(f"DNC: state.controller must be the LSTM's (h, c), each (B={b}, "
                             f"hidden_size={hid})")
        rw = state.read_words
        if not isinstance(rw, torch.Tensor) or tuple(rw.shape) != (b, r, w):
            got = tuple(rw.shape) if isinstance(rw, torch.Tensor) else type(rw).__name__
            raise ValueError(f"DNC: state.read_words must be (B={b}, R={r}, W={w}), got {got}")

    def forward(self, x: torch.Tensor, state: DNCCoreState | None = None):
        module_input("DNC", "x", x, self.output.weight)
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"DNC: x must be (B, T, input_size={self.input_size}), got {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError(f"DNC: x must have T >= 1 steps, got {tuple(x.shape)}")
        if state is not None:
            self._check_state(state, x.shape[0])
        state = self.initial_state(x.shape[0]) if state is None else state
        ys = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state)
            ys.append(y)
        return torch.stack(ys, 1), state


class NTMState(NamedTuple):
    """State of :class:`NTMMemory`: memory (B, N, W), read_weights (B, R, N), write_weights
    (B, Hw, N)."""
    memory: torch.Tensor
    read_weights: torch.Tensor
    write_weights: torch.Tensor


class NTMMemory(nn.Module):
    """Neural Turing Machine memory (Graves et al. 2014): write heads (erase/add) address the
    previous memory, read heads the written one, each with content + location addressing.

    Per head the controller output is mapped (one linear layer) to key (W), strength (softplus),
    gate (sigmoid), shift (softmax over 2 shift_range + 1 offsets), gamma (1 + softplus), and per
    write head erase (W, sigmoid) and add (W). ``forward(inputs (B, input_size), state)`` ->
    (read_words (B, R, W), NTMState).
    """

    def __init__(self, input_size, memory_size=128, word_size=20, num_reads=1, num_writes=1,
                 shift_range=1, backend=None):
        super().__init__()
        for name, size in (("input_size", input_size), ("memory_size", memory_size),
                           ("word_size", word_size), ("num_reads", num_reads),
                           ("num_writes", num_writes)):
            int_at_least(name, size, 1)
        int_at_least("shift_range", shift_range, 0)
        backend_name(backend)
        if 2 * shift_range + 1 > memory_size:
            raise ValueError(f"shift window 2*shift_range+1={2 * shift_range + 1} exceeds "
                             f"memory_size={memory_size}")
        self.memory_size, self.word_size = memory_size, word_size
        self.num_reads, self.num_writes, self.shift_range = num_reads, num_writes, shift_range
        self.backend = backend
        self.head_size = word_size + 3 + 2 * shift_range + 1
        heads = num_reads + num_writes
        self.linear = nn.Linear(input_size, heads * self.head_size + num_writes * 2 * word_size)
        self.input_size = input_size

    def initial_state(self, batch_size: int) -> NTMState:
        int_at_least("batch_size", batch_size, 0)
        p = self.linear.weight
        n = self.memory_size
        mem = p.new_full((batch_size, n, self.word_size), 1e-6)
        rw = p.new_zeros(batch_size, self.num_reads, n)
        rw[..., 0] = 1
        ww = p.new_zeros(batch_size, self.num_writes, n)
        ww[..., 0] = 1
        return NTMState(mem, rw, ww)

    def _address(self, memory, params, prev):
        w = self.word_size
        key, s, g, gamma = params[..., :w], params[..., w], params[..., w + 1], params[..., w + 2]
        shift = torch.softmax(params[..., w + 3:], dim=-1)
        return M.ntm_address(memory, key, F.softplus(s), torch.sigmoid(g), shift,
                             1 + F.softplus(gamma), prev, backend=self.backend)

    def forward(self, inputs: torch.Tensor, state: NTMState):
        module_input("NTMMemory", "inputs", inputs, self.linear.weight, dims=2)
        if inputs.shape[1] != self.input_size:
            raise ValueError(f"NTMMemory: inputs must be (B, input_size={self.input_size}), got "
                             f"{tuple(inputs.shape)}")
        b, n, w = inputs.shape[0], self.memory_size, self.word_size
        want = {"memory": (b, n, w), "read_weights": (b, self.num_reads, n),
                "write_weights": (b, self.num_writes, n)}
        if not isinstance(state, tuple) or len(state) != 3:
            raise ValueError(f"NTMMemory: state must be an NTMState {tuple(want)}, got "
                             f"{type(state).__name__}")
        for (name, shape), t in zip(want.items(), state):
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"NTMMemory: state.{name} must be {shape} (batch {b}), got {got}")
        state = NTMState(*state)
        x = self.linear(inputs)
        hs, r, hw, w = self.head_size, self.num_reads, self.num_writes, self.word_size
        heads = x[:, :(r + hw) * hs].reshape(b, r + hw, hs)
        ea = x[:, (r + hw) * hs:].reshape(b, hw, 2 * w)
        ww = self._address(state.memory, heads[:, r:], state.write_weights)
        memory = M.memory_write(state.memory, ww, torch.sigmoid(ea[..., :w]), ea[..., w:],
                                backend=self.backend)
        rw = self._address(memory, heads[:, :r], state.read_weights)
        return M.memory_read(memory, rw, backend=self.backend), NTMState(memory, rw, ww)


class GravesWindow(nn.Module):
    """Graves' soft attention window (handwriting synthesis, Graves 2013, eq. 46-51): a linear
    layer maps the input to K mixture parameters (a^, b^, k^).

    ``forward(inputs, chars, char_mask=None, kappa=None)``: inputs (B, input_size) for one step
    (kappa: the previous kappa, zeros when None) or (B, T, input_size) for a whole sequence
    (kappa: the kappa before step 0); chars (B, U, C) -> (w, kappa, phi) of
    :func:`attnfast.memory.graves_window` / ``graves_window_sequence``.
    """

    def __init__(self, input_size, num_components=10, backend=None):
        super().__init__()
        int_at_least("input_size", input_size, 1)
        int_at_least("num_components", num_components, 1)
        backend_name(backend)
        self.linear = nn.Linear(input_size, 3 * num_components)
        self.num_components, self.backend = num_components, backend
        self.input_size = input_size

    def forward(self, inputs, chars, char_mask=None, kappa=None):
        module_input("GravesWindow", "inputs", inputs, self.linear.weight, dims=(2, 3))
        if inputs.shape[-1] != self.input_size:
            raise ValueError(f"GravesWindow: inputs must be (B, input_size={self.input_size}) or "
                             f"(B, T, input_size), got {tuple(inputs.shape)}")
        a, b, k = self.linear(inputs).chunk(3, dim=-1)
        if inputs.dim() == 3:
            return M.graves_window_sequence(a, b, k, chars, char_mask, kappa, backend=self.backend)
        if kappa is None:
            kappa = a.new_zeros(a.shape)
        return M.graves_window(a, b, k, kappa, chars, char_mask, backend=self.backend)
