"""attnfast.nn.SingleHeadAttention: SHA-RNN's single-head attention block on attnfast's fused op.

The math (Merity 2019, github smerity/sha-rnn, model.py ``Attention``; defaults q=True,
k=v=r=False, heads=1):
    qs, ks = sigmoid(self.qs), sigmoid(self.ks)
    vs     = sigmoid(f) * tanh(c),  [c; f] = vq.l1(sigmoid(self.vs))        ("Overparam" gate)
             (after ``vq_collapse()``: vs = self.vs, the collapsed value)
    query  = qln(q(x))                  (LayerNorm eps 1e-12, computed in fp32 like SHA-RNN)
    key    = k(key), value = v(value)   (only with k=True / v=True)
    out    = softmax(drop(qs * query) (ks * key)^T / sqrt(D / heads) + mask) drop(vs * value)
with dropout also on the attention weights, then (r=True only) SHA-RNN's gated GELU mix.

Where attnfast folds the gates (results unchanged, up to rounding):
  * the key gate goes into the query: (q) . (ks * k_j) = (q * ks) . k_j, so the keys -- the
    memory -- are used as stored and never rescaled;
  * in eval (or with dropout 0) the value gate goes onto the output: sum_j p_j (vs * v_j) =
    vs * sum_j p_j v_j, so the values are not rescaled either. In training with dropout the
    value dropout mask is per position and element, so drop(vs * value) is formed explicitly.

Memory (``forward(x, memory)``) follows SHA-RNN's two truncations: the model keeps at most
``max_memory - T`` memory positions before the segment of T queries is attended
(``SHARNN.forward``: ``m[-(num_max_positions - len(x)):]``), and the block returns the last
``max_memory`` positions of [memory; kv] (``Block.forward``: ``bigh[-len(pe):]``). So the keys
never number more than ``max_memory`` whatever the segment lengths. (For T >= max_memory
SHA-RNN's slice ``m[-0:]`` would keep the whole memory; attnfast keeps none: a Python quirk, not
a rule, and SHA-RNN never trains that way.)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attnfast.ops.attention import single_head_attention
from attnfast.ops.checks import backend_name, flag, floating_dtype, module_input


class Overparam(nn.Module):
    """SHA-RNN's value-gate over-parameterisation: sigmoid(f) * tanh(c), [c; f] = l1(x)."""

    def __init__(self, nhid: int, device=None, dtype=None):
        super().__init__()
        self.l1 = nn.Linear(nhid, 2 * nhid, device=device, dtype=dtype)
        self.nhid = nhid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, f = self.l1(x).split(self.nhid, dim=-1)
        return torch.sigmoid(f) * torch.tanh(c)


def memory_kept(memory_len: int, t: int, max_memory: int) -> int:
    """How many of the latest ``memory_len`` memory positions a segment of ``t`` queries
    attends: SHA-RNN's model-level trim ``mems[-(max_memory - T):]`` (none when
    T >= max_memory), so memory plus segment never exceed ``max_memory`` keys."""
    return min(max(max_memory - t, 0), memory_len)


def _gelu_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _is_bool(name: str, value) -> bool:
    return flag(name, value)  # a bool or 0/1: a tensor or a string ("no") is refused


class SingleHeadAttention(nn.Module):
    """SHA-RNN's attention block.

    ``forward(x, memory=None, kv=None, need_weights=False)``: queries from x (B, T, D) -- or
    (T, B, D) with ``batch_first=False``, SHA-RNN's layout -- and keys/values ``[memory; kv]``
    along time (kv defaults to x; memory in x's layout, or None). Causal aligned bottom-right:
    query t sees every memory position and kv positions <= t (when ``causal``). Returns
    ``(output, new_memory, weights or None)`` in x's layout; the memory truncation rule is in the
    module docstring. Weights are (B, heads, T, Lk), as SHA-RNN returns them.

    Parameters, their names, their registration order (so a saved optimizer state loads) and
    their initialisation follow SHA-RNN's ``Attention``: ``qs``, ``ks``, ``vs`` zeros (1, 1, D);
    ``qkvs`` (1, 3, D) and ``r_gate`` (1, 1, D), which SHA-RNN keeps as (unused unless r=True)
    parameters; ``q`` Linear; ``qln`` LayerNorm(eps=1e-12); optional ``k``, ``v``, ``r``
    Linears; ``vq.l1`` Linear(D, 2D). A state_dict saved after SHA-RNN's ``vq_collapse()``
    (no ``vq.*`` keys) loads and puts the module in collapsed mode.

    Dropout (``dropout``; None means 0, as in SHA-RNN) on the gated query, the gated values and
    the attention weights. ``backend`` goes to :func:`attnfast.single_head_attention`.
    """

    def __init__(self, d_model: int, dropout: float | None = 0.1, max_memory: int = 5000,
                 causal: bool = True, batch_first: bool = True, heads: int = 1, q: bool = True,
                 k: bool = False, v: bool = False, r: bool = False, backend: str | None = None,
                 device=None, dtype=None):
        super().__init__()
        dropout = 0.0 if dropout is None else dropout
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"d_model must be an int >= 1, got {d_model!r}")
        if not isinstance(heads, int) or heads < 1 or d_model % heads:
            raise ValueError(f"heads must be an int >= 1 dividing d_model={d_model}, got {heads!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be None or a float in [0, 1), got {dropout!r}")
        if not isinstance(max_memory, int) or max_memory < 0:
            raise ValueError(f"max_memory must be an int >= 0, got {max_memory!r}")
        backend_name(backend)
        floating_dtype("dtype", dtype)
        factory = {"device": device, "dtype": dtype}
        # Registration order = SHA-RNN's (optimizer states are saved by parameter position).
        self.qs = nn.Parameter(torch.zeros(1, 1, d_model, **factory))
        self.ks = nn.Parameter(torch.zeros(1, 1, d_model, **factory))
        self.vs = nn.Parameter(torch.zeros(1, 1, d_model, **factory))
        self.qkvs = nn.Parameter(torch.zeros(1, 3, d_model, **factory))
        self.q = nn.Linear(d_model, d_model, **factory) if q else None
        self.qln = nn.LayerNorm(d_model, eps=1e-12, **factory)
        self.k = nn.Linear(d_model, d_model, **factory) if k else None
        self.v = nn.Linear(d_model, d_model, **factory) if v else None
        self.r = nn.Linear(2 * d_model, d_model, **factory) if r else None
        self.r_gate = nn.Parameter(torch.ones(1, 1, d_model, **factory))
        self.vq = Overparam(d_model, **factory)
        self.vq_collapsed = False
        self.d_model, self.heads, self.dropout, self.max_memory = d_model, heads, float(dropout), max_memory
        self.causal, self.batch_first = _is_bool("causal", causal), _is_bool("batch_first", batch_first)
        self.backend = backend

    # ---- SHA-RNN compatibility ----------------------------------------------------------------

    def vq_collapse(self) -> None:
        """SHA-RNN's ``vq_collapse``: store the value gate itself in ``vs`` and drop ``vq``."""
        with torch.no_grad():
            self.vs.data = self.vq(torch.sigmoid(self.vs)).data
        self.vq = None
        self.vq_collapsed = True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A checkpoint saved after vq_collapse() has no vq.* keys: load it in collapsed mode.
        if self.vq is not None and not any(key.startswith(prefix + "vq.") for key in state_dict):
            if prefix + "vs" in state_dict:
                self.vq = None
                self.vq_collapsed = True
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def value_gate(self) -> torch.Tensor:
        if self.vq is not None:
            return self.vq(torch.sigmoid(self.vs))
        return self.vs if self.vq_collapsed else torch.sigmoid(self.vs)

    # ---- forward --------------------------------------------------------------------------

    def _check(self, name, t, batch=None, batch_dim=0):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        # Floating, on the parameters' device; x and kv in their dtype too (memory is cast).
        module_input(type(self).__name__, name, t, self.qs, same_dtype=name != "memory")
        layout = "(B, T, d_model)" if self.batch_first else "(T, B, d_model)"
        if t.dim() != 3 or t.shape[-1] != self.d_model:
            raise ValueError(f"{name} must be {layout} with d_model={self.d_model}, got {tuple(t.shape)}")
        if batch is not None and t.shape[batch_dim] != batch:
            raise ValueError(
                f"{name} batch size {t.shape[batch_dim]} must match x's {batch} "
                f"(batch_first={self.batch_first}: tensors are {layout})")

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                kv: torch.Tensor | None = None, need_weights: bool = False):
        need_weights = _is_bool("need_weights", need_weights)
        bd = 0 if self.batch_first else 1
        self._check("x", x)
        kv = x if kv is None else kv
        self._check("kv", kv, x.shape[bd], bd)
        t = x.shape[1 - bd]
        if memory is not None:
            self._check("memory", memory, x.shape[bd], bd)
            keep = memory_kept(memory.shape[1 - bd], t, self.max_memory)
            memory = memory.narrow(1 - bd, memory.shape[1 - bd] - keep, keep)
            big = torch.cat([memory.to(kv.dtype), kv], dim=1 - bd)
        else:
            big = kv
        n = big.shape[1 - bd]
        new_memory = big.narrow(1 - bd, n - min(self.max_memory, n), min(self.max_memory, n))
        if not self.batch_first:
            x, big = x.transpose(0, 1), big.transpose(0, 1)
        out, weights = self._attend(x, big, big, causal=self.causal, attn_mask=None,
                                    need_weights=need_weights)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, new_memory, weights

    def _attend(self, query, key, value, *, causal: bool, attn_mask, need_weights: bool):
        """SHA-RNN's attention, batch-first: query (B, T, D), key/value (B, L, D)."""
        p = self.dropout if self.training else 0.0
        qs, ks, vs = torch.sigmoid(self.qs), torch.sigmoid(self.ks), self.value_gate()
        if self.q is not None:
            # SHA-RNN runs qln in fp32 (``.float()``) whatever the model's precision; fp64 stays
            # fp64, and the LayerNorm's parameters follow the input (a bf16 / fp64 module).
            query = self.q(query)
            query = query.to(torch.promote_types(query.dtype, torch.float32))
            query = F.layer_norm(query, self.qln.normalized_shape, self.qln.weight.to(query.dtype),
                                 self.qln.bias.to(query.dtype), self.qln.eps)
        if self.k is not None:
            key = self.k(key)
        if self.v is not None:
            value = self.v(value)
        q_gated = F.dropout(qs * query, p, self.training)
        q = (q_gated * ks).to(key.dtype)  # the key gate folded into the query
        if p > 0.0:
            value, out_gate = F.dropout(vs.to(value.dtype) * value, p, True), None
        else:
            out_gate = vs  # the value gate folded onto the output
        b, t, lk, h = q.shape[0], q.shape[1], key.shape[1], self.heads
        if attn_mask is not None and attn_mask.dim() >= 3:  # (B, T, Lk) or (B, H, T, Lk) -> (B H, T, Lk)
            m4 = attn_mask if attn_mask.dim() == 4 else attn_mask.unsqueeze(1)
            if m4.dim() != 4 or any(n not in (1, want) for n, want in zip(m4.shape, (b, h, t, lk))):
                raise ValueError(f"attn_mask must broadcast to (T, Lk) = ({t}, {lk}), (B, T, Lk) or "
                                 f"(B, heads, T, Lk) = ({b}, {h}, {t}, {lk}), got {tuple(attn_mask.shape)}")
            attn_mask = m4.expand(b, h, t, lk).reshape(b * h, t, lk)
        if h > 1:  # heads as extra batch entries: (B, T, H, D/H) -> (B H, T, D/H)
            q, key, value = (z.reshape(b, z.shape[1], h, -1).transpose(1, 2).reshape(b * h, z.shape[1], -1)
                             for z in (q, key, value))
        res = single_head_attention(q, key, value, causal=causal, attn_mask=attn_mask, dropout_p=p,
                                    training=self.training, scale=1.0 / math.sqrt(q.shape[-1]),
                                    return_weights=need_weights, backend=self.backend)
        out, weights = res if need_weights else (res, None)
        if h > 1:
            out = out.reshape(b, h, t, -1).transpose(1, 2).reshape(b, t, -1)
        if weights is not None:
            weights = weights.reshape(b, h, t, lk)
        if out_gate is not None:
            out = out * out_gate.to(out.dtype)
        if self.r is not None:  # SHA-RNN's optional output mix (r=True)
            mixed = F.dropout(torch.cat([out, q_gated.to(out.dtype)], dim=-1), p, self.training)
            out = torch.sigmoid(self.r_gate).to(out.dtype) * out + _gelu_sigmoid(self.r(mixed))
        return out, weights

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, heads={self.heads}, dropout={self.dropout}, "
                f"max_memory={self.max_memory}, causal={self.causal}, batch_first={self.batch_first}"
                + (", vq_collapsed=True" if self.vq_collapsed else ""))
