"""attnfast.nn.LSTM: a drop-in for torch.nn.LSTM on attnfast's LSTM op (attnfast.lstm)."""
from __future__ import annotations

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from attnfast.ops.checks import backend_name, floating_dtype
from attnfast.ops.lstm import lstm


class LSTM(nn.Module):
    """torch.nn.LSTM's constructor, parameters (``weight_ih_l{k}``, ``weight_hh_l{k}``,
    ``bias_ih_l{k}``, ``bias_hh_l{k}``, ``..._reverse``), initialisation and forward, so a torch
    LSTM's state_dict loads unchanged and vice versa; plus ``backend`` for attnfast's op.

    ``forward(input, hx=None) -> (output, (h_n, c_n))``: input (L, N, H_in), (N, L, H_in) with
    ``batch_first`` or unbatched (L, H_in); hx ``(h_0, c_0)``, each (D * num_layers, N, H_out)
    ((D * num_layers, H_out) unbatched). Every layer and direction is one call of
    :func:`attnfast.lstm` (the reverse direction runs on the flipped sequence); dropout between
    layers in training. Not supported: ``proj_size > 0`` and PackedSequence inputs.

    It is not a subclass of torch.nn.LSTM on purpose: torch.compile breaks the graph on any
    ``nn.RNNBase``, and this module is meant to compile with ``fullgraph=True``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, backend: str | None = None):
        super().__init__()
        # torch.nn.RNNBase's checks, with its exception types and messages.
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=2)
        for name, value in (("bias", bias), ("batch_first", batch_first),
                            ("bidirectional", bidirectional)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers), ("proj_size", proj_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size != 0:
            raise ValueError(f"attnfast.nn.LSTM: proj_size={proj_size} is not supported (the "
                             "recurrence kernels have no projection); use torch.nn.LSTM")
        backend_name(backend)
        floating_dtype("dtype", dtype)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
        self.dropout, self.proj_size, self.backend = float(dropout), proj_size, backend
        factory = {"device": device, "dtype": dtype}
        # Registration order = torch's (layer, direction, then w_ih, w_hh, b_ih, b_hh): the same
        # parameters() order, hence the same initial values from the same seed.
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes():
                name = f"l{layer}{suffix}"
                setattr(self, f"weight_ih_{name}",
                        nn.Parameter(torch.empty(4 * hidden_size, layer_input, **factory)))
                setattr(self, f"weight_hh_{name}",
                        nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory)))
                if bias:
                    setattr(self, f"bias_ih_{name}", nn.Parameter(torch.empty(4 * hidden_size, **factory)))
                    setattr(self, f"bias_hh_{name}", nn.Parameter(torch.empty(4 * hidden_size, **factory)))
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    def reset_parameters(self) -> None:
        """torch.nn.LSTM's: every parameter uniform in +-1/sqrt(hidden_size)."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """A no-op (cuDNN's weight packing has no counterpart here); for code written for
        torch.nn.LSTM."""

    def _layer_parameters(self, layer: int, suffix: str):
        name = f"l{layer}{suffix}"
        return (getattr(self, f"weight_ih_{name}"), getattr(self, f"weight_hh_{name}"),
                getattr(self, f"bias_ih_{name}", None), getattr(self, f"bias_hh_{name}", None))

    def _check_input(self, input: torch.Tensor, hx):
        """torch.nn.LSTM's argument checks and their exception types; returns (input (L, N, H_in)
        sequence-first, hx or None, batched)."""
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise TypeError("attnfast.nn.LSTM does not support PackedSequence inputs; pad the "
                            "sequences (nn.utils.rnn.pad_packed_sequence) or use torch.nn.LSTM")
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        weight = self.weight_ih_l0
        if input.dtype != weight.dtype and not (
                input.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(input.device.type)):
            raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype "
                             f"({weight.dtype}). Convert input: input.to({weight.dtype}), or "
                             f"convert model: model.to({input.dtype})")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected "
                               f"{self.input_size}, got {input.shape[-1]}")
        if not batched:
            input = input.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        if input.shape[0] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError("hx must be None or a pair (h_0, c_0)")
            rank = 3 if batched else 2
            if hx[0].dim() != rank or hx[1].dim() != rank:
                kind = "batched 3-D" if batched else "unbatched 2-D"
                raise RuntimeError(f"For {kind} input, hx and cx should also be {rank}-D but got "
                                   f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            if not batched:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            expected = [self.num_layers * self.num_directions, input.shape[1], self.hidden_size]
            for i, t in enumerate(hx):
                if list(t.shape) != expected:
                    raise RuntimeError(f"Expected hidden[{i}] size {tuple(expected)}, got {list(t.shape)}")
        return input, hx, batched

    def forward(self, input: torch.Tensor, hx=None):
        x, hx, batched = self._check_input(input, hx)
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outputs = []
            for d, suffix in enumerate(self._suffixes()):
                k = layer * self.num_directions + d
                state = None if hx is None else (hx[0][k], hx[1][k])
                seq = x if d == 0 else x.flip(0)  # the reverse direction: the flipped sequence
                out, (h, c) = lstm(seq, state, *self._layer_parameters(layer, suffix),
                                   backend=self.backend)
                outputs.append(out if d == 0 else out.flip(0))
                h_n.append(h)
                c_n.append(c)
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
            if layer < self.num_layers - 1 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, training=True)
        h_n, c_n = torch.stack(h_n), torch.stack(c_n)
        if not batched:
            return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        if self.batch_first:
            x = x.transpose(0, 1)
        return x, (h_n, c_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        if self.backend is not None:
            s += f", backend={self.backend!r}"
        return s
