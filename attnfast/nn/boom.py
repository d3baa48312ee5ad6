"""attnfast.nn.Boom: SHA-RNN's Boom feed-forward block on attnfast's fused op."""
from __future__ import annotations

import torch
from torch import nn

from attnfast.ops.boom import ACTIVATIONS, boom
from attnfast.ops.checks import backend_name, flag, floating_dtype, int_at_least, probability


class Boom(nn.Module):
    """Boom layer (Merity 2019): up-projection, activation, dropout, then chunk-sum
    (``shortcut=True``) or a down-projection (``shortcut=False``).

    Parameter names and initialisation follow SHA-RNN's ``Boom`` (``linear1``, and ``linear2``
    when ``shortcut=False``: both ``nn.Linear``), so its state_dict loads either way. SHA-RNN's
    own argument names and defaults (``dim_feedforward=2048``, ``dropout=0.1``,
    ``shortcut=False``) are those of :class:`attnfast.nn.sharnn.Boom`.
    """

    def __init__(self, d_model: int, d_ff: int | None = None, dropout: float | None = 0.0,
                 shortcut: bool = True, activation: str = "gelu_sigmoid",
                 backend: str | None = None, device=None, dtype=None):
        super().__init__()
        int_at_least("d_model", d_model, 1)
        d_ff = 4 * d_model if d_ff is None else int_at_least("d_ff", d_ff, 1)
        dropout = probability("dropout", dropout)  # None: SHA-RNN's "no dropout"
        shortcut = flag("shortcut", shortcut)
        if shortcut and d_ff < d_model:
            raise ValueError(f"shortcut=True needs d_ff >= d_model, got d_ff={d_ff}, d_model={d_model}")
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        backend_name(backend)
        floating_dtype("dtype", dtype)
        factory = {"device": device, "dtype": dtype}
        self.linear1 = nn.Linear(d_model, d_ff, **factory)
        self.linear2 = None if shortcut else nn.Linear(d_ff, d_model, **factory)
        self.d_model, self.d_ff = d_model, d_ff
        self.dropout, self.shortcut, self.activation = dropout, shortcut, activation
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return boom(
            x, self.linear1.weight, self.linear1.bias, shortcut=self.shortcut,
            weight2=None if self.shortcut else self.linear2.weight,
            bias2=None if self.shortcut else self.linear2.bias,
            activation=self.activation, dropout_p=self.dropout, training=self.training,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_ff={self.d_ff}, dropout={self.dropout}, "
                f"shortcut={self.shortcut}, activation={self.activation!r}")
