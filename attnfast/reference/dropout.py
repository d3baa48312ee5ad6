"""attnfast's counter-based dropout RNG in pure PyTorch, bit-exact with csrc/common/philox.h.

Philox4x32-10 with key (seed lo32, seed hi32) and counter (i lo32, i hi32, 0, 0), where i is the
element's flat row-major index; keep iff (first word >> 8) >= floor(p * 2^24). Computed with
int64 tensors: a product of two 32-bit values wraps modulo 2^64 in int64 two's complement,
which keeps exactly the 64 bits of the unsigned product.

The seed is a Python int (any, taken modulo 2^64) or the ops' seed tensor (a one-element int64
tensor holding the key's bit pattern; attnfast/ops/seed.py). From a tensor the key words are
tensor ops too -- no ``.item()`` -- so the reference traces under torch.compile as well.
"""
from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_MUL_A, _MUL_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85


def _key_words(seed):
    """(lo32, hi32) of the 64-bit key: ints for an int seed, 0-dim int64 tensors for a tensor."""
    if isinstance(seed, torch.Tensor):
        # int64 bit pattern: the arithmetic shift sign-extends, the mask keeps the right bits.
        s = seed.reshape(()).to(torch.int64)
        return s & _M32, (s >> 32) & _M32
    seed = int(seed) & ((1 << 64) - 1)
    return seed & _M32, (seed >> 32) & _M32


def philox_first_word(index: torch.Tensor, seed) -> torch.Tensor:
    """First 32-bit output word of Philox4x32-10 at counters ``index`` (int64), as int64."""
    c0 = index & _M32
    c1 = (index >> 32) & _M32
    c2 = torch.zeros_like(index)
    c3 = torch.zeros_like(index)
    k0, k1 = _key_words(seed)
    for _ in range(10):
        prod_b = c2 * _MUL_B
        prod_a = c0 * _MUL_A
        c0, c2 = ((prod_b >> 32) & _M32) ^ c1 ^ k0, ((prod_a >> 32) & _M32) ^ c3 ^ k1
        c1, c3 = prod_b & _M32, prod_a & _M32
        k0, k1 = (k0 + _KEY_A) & _M32, (k1 + _KEY_B) & _M32
    return c0


def keep_threshold(p: float) -> int:
    return int(p * 16777216.0)


def dropout_keep_mask(shape, p: float, seed, device=None) -> torch.Tensor:
    """Boolean keep-mask of the given shape (flat row-major counters starting at 0); ``seed``
    an int or the ops' seed tensor."""
    numel = 1
    for s in shape:
        numel *= int(s)
    index = torch.arange(numel, dtype=torch.int64, device=device)
    word = philox_first_word(index, seed)
    return ((word >> 8) >= keep_threshold(p)).reshape(shape)


# Evaluated once while torch.compile traces (p is a constant there): rounding through a tensor
# would otherwise be a graph break (a tensor -> float conversion) in every compiled step.
@torch.compiler.assume_constant_result
def dropout_scale(p: float) -> float:
    """1 / (1 - p), rounded to float32 once (as every backend does)."""
    return float(torch.tensor(1.0 / (1.0 - p), dtype=torch.float32))
