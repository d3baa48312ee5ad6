"""The dropout seed of the ops with dropout (Boom, attention), carried as a tensor.

Every backend keys its dropout mask with a 64-bit Philox key (csrc/common/philox.h). The ops take
it as a 0-dim int64 CPU tensor holding the key's bit pattern (keys in [2^63, 2^64) are stored
wrapped to negative int64); the C++ glue reads it once on the host (csrc/checks/seed.h), the
Triton ops and the reference read it in Python. A tensor, never a Python int, because under
torch.compile an int seed is either a graph break (``.item()``) or a constant that dynamo guards
on, so every fresh seed recompiled the graph; as a tensor it is just another graph value, as
the philox seed/offset of torch's SDPA are.

The draw when no seed is given: ``torch.randint(0, 2**62, (), dtype=torch.int64)`` on the CPU,
one draw from torch's CPU generator (so ``torch.manual_seed`` gives the masks it always gave).
Inside a compiled region the draw goes through the opaque op ``attnfast::dropout_seed``: inductor
would otherwise replace ``randint`` by its own RNG (unless ``fallback_random``) and a compiled
step would draw other masks than the same step in eager. The op is tagged
``nondeterministic_seeded``, which keeps it from being constant-folded at trace time, merged with
another draw (CSE), recomputed in the backward, or reordered against the other random ops.
"""
from __future__ import annotations

import operator

import torch

SEED_HIGH = 2**62  # the drawn seeds are in [0, 2^62)
_U64 = 2**64

# The seed passed when there is no dropout (the kernels ignore it): one tensor for every call.
NO_SEED = torch.zeros((), dtype=torch.int64, device="cpu")


@torch.library.custom_op("attnfast::dropout_seed", mutates_args=(),
                         tags=(torch.Tag.nondeterministic_seeded,))
def _dropout_seed_op() -> torch.Tensor:
    return torch.randint(0, SEED_HIGH, (), dtype=torch.int64, device="cpu")


@_dropout_seed_op.register_fake
def _dropout_seed_fake() -> torch.Tensor:
    return torch.empty((), dtype=torch.int64, device="cpu")


def draw() -> torch.Tensor:
    """A fresh seed from torch's CPU generator, as a 0-dim int64 CPU tensor."""
    if torch.compiler.is_compiling():
        return torch.ops.attnfast.dropout_seed()
    # Eager: the same draw without the custom op's dispatch overhead.
    return torch.randint(0, SEED_HIGH, (), dtype=torch.int64, device="cpu")


def check_seed_tensor(seed, where: str = "seed") -> None:
    """Raises ValueError unless ``seed`` is a one-element int64 CPU tensor (metadata only, so
    it traces without a graph break)."""
    if not isinstance(seed, torch.Tensor):
        raise ValueError(f"{where} must be a one-element int64 CPU tensor, "
                         f"got {type(seed).__name__}")
    if seed.dtype != torch.int64:
        raise ValueError(f"{where} must be an int64 tensor (the 64-bit Philox key), "
                         f"got {seed.dtype}")
    if seed.numel() != 1:
        raise ValueError(f"{where} must have one element (a 0-dim tensor), "
                         f"got shape {tuple(seed.shape)}")
    if seed.device.type != "cpu":
        raise ValueError(f"{where} must be a CPU tensor (it is read on the host), "
                         f"got device {seed.device}")


def seed_tensor(seed) -> torch.Tensor:
    """A user's seed as the ops take it: an int in [0, 2^64) (wrapped to the int64 bit pattern
    from 2^63 on) or a one-element int64 CPU tensor (used as it is)."""
    if isinstance(seed, torch.Tensor):
        check_seed_tensor(seed)
        return seed.reshape(())
    if isinstance(seed, bool):
        raise ValueError(f"seed must be an int in [0, 2**64) or an int64 tensor, got {seed!r}")
    try:
        value = operator.index(seed)
    except TypeError:
        raise ValueError(f"seed must be an int in [0, 2**64) or an int64 tensor, got "
                         f"{type(seed).__name__} {seed!r}") from None
    if not 0 <= value < _U64:
        raise ValueError(f"seed must be in [0, 2**64), got {value}")
    return torch.tensor(value - _U64 if value >= 2**63 else value, dtype=torch.int64, device="cpu")


def resolve(seed, dropout_p: float) -> torch.Tensor:
    """The seed tensor of a call with effective dropout probability ``dropout_p``: the user's
    (validated even without dropout), a fresh draw when None and dropout is active, else
    :data:`NO_SEED`."""
    if seed is not None:
        t = seed_tensor(seed)
        return t if dropout_p > 0.0 else NO_SEED
    return draw() if dropout_p > 0.0 else NO_SEED


def seed_int(seed: torch.Tensor, where: str = "seed") -> int:
    """The key as a Python int (the int64 bit pattern), for the Python kernels (Triton) that
    launch eagerly inside their custom op."""
    check_seed_tensor(seed, where)
    return int(seed.item())
