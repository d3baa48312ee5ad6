"""SHA-RNN's own layer signatures on attnfast's kernels: swap them into SHA-RNN's model code.

``Attention`` and ``Boom`` here take exactly the constructor arguments and the call signature of
the classes of the same names in SHA-RNN's ``model.py`` (github smerity/sha-rnn), have the same
parameters in the same order (so its state_dicts *and* optimizer states load) and return what
they return. In SHA-RNN's code, replace the two class definitions by::

    from attnfast.nn.sharnn import Attention, Boom

and nothing else changes: ``Block.forward`` still calls ``self.attn(q, k, bigh, attn_mask)``
with sequence-first tensors and the additive mask ``SHARNN.forward`` builds.

The additive mask is recognised: when it is SHA-RNN's bottom-right causal mask
(``[zeros(T, M) | triu(-inf, 1)]``), the kernels run causal and skip the masked blocks instead of
adding the mask (checked in eager mode, one comparison over the mask; under ``torch.compile``
the mask is added as given, which is exact too). Pass ``is_causal=True`` to skip the check.

The attention weights (SHA-RNN's ``focus``) cost an extra (B, 1, T, Lk) tensor; SHA-RNN's model
throws them away, so they are returned only with ``need_weights=True`` (else None).
"""
from __future__ import annotations

import torch

from attnfast.nn import attention as _attention
from attnfast.nn import boom as _boom
from attnfast.ops.checks import module_input


def is_bottom_right_causal(mask: torch.Tensor, t: int, lk: int) -> bool:
    """Whether an additive (T, Lk) mask is exactly SHA-RNN's causal mask (eager only)."""
    if mask.dim() < 2 or tuple(mask.shape[-2:]) != (t, lk) or mask.numel() != t * lk:
        return False
    if not mask.is_floating_point():
        return False
    # One pass to build the expected mask, one to compare: about what SHA-RNN's own attention
    # spends adding the mask to its scores.
    expected = torch.full((t, lk), float("-inf"), dtype=mask.dtype, device=mask.device)
    return bool(torch.equal(mask.reshape(t, lk), expected.triu_(lk - t + 1)))


class Attention(_attention.SingleHeadAttention):
    """SHA-RNN's ``Attention(nhid, q=True, k=False, v=False, r=False, heads=1, dropout=None)``.

    ``forward(query, key, value, attn_mask=None, batch_first=False, need_weights=False,
    is_causal=None) -> (mix, focus)``: sequence-first by default, as SHA-RNN; ``attn_mask`` is
    SHA-RNN's additive (T, Lk) mask (or any mask attnfast accepts). No memory handling here:
    SHA-RNN's block concatenates and trims the memory itself.
    """

    def __init__(self, nhid: int, q: bool = True, k: bool = False, v: bool = False,
                 r: bool = False, heads: int = 1, dropout: float | None = None,
                 backend: str | None = None, device=None, dtype=None):
        super().__init__(nhid, dropout=dropout, max_memory=0, causal=False, batch_first=False,
                         heads=heads, q=q, k=k, v=v, r=r, backend=backend, device=device, dtype=dtype)
        self.nhid = nhid

    def forward(self, query, key, value, attn_mask=None, batch_first=False, need_weights=False,
                is_causal=None, **kwargs):
        if kwargs:
            raise TypeError(f"Attention.forward got unexpected arguments {sorted(kwargs)}")
        batch_first = _attention._is_bool("batch_first", batch_first)
        need_weights = _attention._is_bool("need_weights", need_weights)
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, torch.Tensor) or t.dim() != 3:
                raise ValueError(f"{name} must be a 3-D tensor, got "
                                 f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if query.shape[-1] != self.d_model or key.shape[-1] != self.d_model:
            raise ValueError(f"query and key must end in nhid={self.d_model}, got "
                             f"{tuple(query.shape)} and {tuple(key.shape)}")
        if value.shape[-1] != self.d_model:
            raise ValueError(f"value must end in nhid={self.d_model} (the value gate's width), got "
                             f"{tuple(value.shape)}")
        for name, t in (("query", query), ("key", key), ("value", value)):
            module_input("Attention", name, t, self.qs)
        if attn_mask is not None and not isinstance(attn_mask, torch.Tensor):
            raise ValueError(f"attn_mask must be None or a tensor, got {type(attn_mask).__name__}")
        if attn_mask is not None and attn_mask.device != query.device:
            raise ValueError(f"attn_mask is on {attn_mask.device} but query is on {query.device}")
        if not batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        if key.shape[0] != query.shape[0] or value.shape[:2] != key.shape[:2]:
            raise ValueError(f"query {tuple(query.shape)}, key {tuple(key.shape)} and value "
                             f"{tuple(value.shape)} disagree on batch or length "
                             f"(batch_first={batch_first})")
        t, lk = query.shape[1], key.shape[1]
        causal = False
        if is_causal is not None:
            causal = _attention._is_bool("is_causal", is_causal)
            attn_mask = None if causal else attn_mask
        elif attn_mask is not None and not torch.compiler.is_compiling():
            if isinstance(attn_mask, torch.Tensor) and is_bottom_right_causal(attn_mask, t, lk):
                causal, attn_mask = True, None
        mix, focus = self._attend(query, key, value, causal=causal, attn_mask=attn_mask,
                                  need_weights=need_weights)
        if not batch_first:
            mix = mix.transpose(0, 1)
        return mix, focus


class Boom(_boom.Boom):
    """SHA-RNN's ``Boom(d_model, dim_feedforward=2048, dropout=0.1, shortcut=False)``."""

    def __init__(self, d_model: int, dim_feedforward: int = 2048, dropout: float | None = 0.1,
                 shortcut: bool = False, backend: str | None = None, device=None, dtype=None):
        super().__init__(d_model, dim_feedforward, dropout=dropout, shortcut=shortcut,
                         backend=backend, device=device, dtype=dtype)
