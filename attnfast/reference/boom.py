"""The Boom layer (Merity, "Single Headed Attention RNN", 2019) in plain PyTorch."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from attnfast.reference.dropout import dropout_keep_mask, dropout_scale

SIGMOID_GELU_SLOPE = 1.702


def activation(z: torch.Tensor, name: str) -> torch.Tensor:
    if name == "gelu_sigmoid":  # SHA-RNN's GELU
        return z * torch.sigmoid(SIGMOID_GELU_SLOPE * z)
    if name == "gelu":
        return F.gelu(z)
    if name == "gelu_tanh":
        return F.gelu(z, approximate="tanh")
    if name == "relu":
        return F.relu(z)
    raise ValueError(f"unknown activation {name!r}")


def boom(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    shortcut: bool = True,
    weight2: torch.Tensor | None = None,
    bias2: torch.Tensor | None = None,
    activation_name: str = "gelu_sigmoid",
    dropout_p: float = 0.0,
    seed: int | torch.Tensor = 0,  # an int, or the ops' seed tensor (reference/dropout.py)
) -> torch.Tensor:
    """y = chunk_sum(dropout(act(x W^T + b))) with shortcut, else linear2(dropout(act(...))).

    Dropout (dropout_p > 0) uses attnfast's Philox mask over the (rows, d_ff) activation, so the
    result equals the compiled backends' for the same seed.
    """
    h = activation(F.linear(x, weight, bias), activation_name)
    if dropout_p > 0.0:
        rows = h.numel() // h.shape[-1] if h.shape[-1] else 0
        keep = dropout_keep_mask((rows, h.shape[-1]), dropout_p, seed, h.device).reshape(h.shape)
        h = torch.where(keep, h * dropout_scale(dropout_p), torch.zeros_like(h))
    if not shortcut:
        return F.linear(h, weight2, bias2)
    d_model = x.shape[-1]
    n_chunks = h.shape[-1] // d_model
    h = h.narrow(-1, 0, n_chunks * d_model)
    return h.unflatten(-1, (n_chunks, d_model)).sum(-2)
