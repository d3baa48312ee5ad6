"""SHA-RNN (Merity 2019, "Single Headed Attention RNN: Stop Thinking With Your Head") on
attnfast's layers.

The block follows SHA-RNN's ``model.py`` exactly (github smerity/sha-rnn, ``Block`` with
``rnn=True, residual=False``), sequence-first like it:

    h = LSTM(lnstart(h)); h = drop(h)                       (no residual around the LSTM)
    if attention:  mh = lnmem(h); h = lnmid(h)
                   h = h + drop(Attention(h, memory=[mem; mh]))      (bottom-right causal)
    h, x = lnff(h), lnxff(h);  h = h + drop(Boom(x))                 (the residual is lnff(h))

LayerNorms have eps 1e-12, there is no positional encoding, the embedding is tied to the
decoder, and each attention block carries a memory of at most ``max_memory`` past positions
(its LayerNorm'd ``mh``) across segments, as the LSTMs carry their hidden state. The caller
detaches both between batches (:func:`detach_state`). Dropouts: ``dropouti`` on the embedding,
``dropouth`` inside the blocks, ``dropout`` on the output (SHA-RNN's names).

Parameter names, shapes and registration order are SHA-RNN's, so a state_dict of its model
(and an optimizer state saved next to it) loads. Initialisation is SHA-RNN's too: every Linear
and the embedding N(0, 0.1 / sqrt(d_model)), biases 0; its LayerNorms (apex FusedLayerNorm, not
an ``nn.LayerNorm``, so its init rule skipped them) start at weight 1, bias 0; the LSTMs keep
torch's default. The LSTMs are attnfast.nn.LSTM on the model's backend where this build has the
LSTM kernels, else torch.nn.LSTM (:func:`lstm_runs_on_attnfast`): the same parameters either way.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from attnfast.dispatch import default_backend
from attnfast.nn.attention import SingleHeadAttention
from attnfast.nn.boom import Boom
from attnfast.nn.lstm import LSTM
from attnfast.ops.checks import backend_name, flag
from attnfast.ops.spec import kernel_reasons

ATTENTION_PLACES = ("second_to_last", "all", "none")


@dataclasses.dataclass(frozen=True)
class SHARNNConfig:
    """SHA-RNN's hyper-parameters. Defaults: the paper's enwik8 model (``--emsize 1024
    --nhid 4096 --nlayers 4``, dropouts 0.1, memory 5000) over a byte vocabulary."""

    vocab_size: int = 256
    d_model: int = 1024          # SHA-RNN's emsize / ninp
    d_ff: int = 4096             # SHA-RNN's nhid: the Boom width
    n_layers: int = 4
    attention: str = "second_to_last"  # which blocks attend: SHA-RNN's default, or "all"
    max_memory: int = 5000       # SHA-RNN's num_max_positions
    dropout: float = 0.1         # on the model output
    dropouth: float = 0.1        # inside the blocks
    dropouti: float = 0.1        # on the embedding
    tie_weights: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "d_ff", "n_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.d_ff < self.d_model:
            raise ValueError(f"d_ff must be >= d_model (Boom sums d_model-wide chunks), got "
                             f"d_ff={self.d_ff} < d_model={self.d_model}")
        if self.attention not in ATTENTION_PLACES:
            raise ValueError(f"attention must be one of {ATTENTION_PLACES}, got {self.attention!r}")
        if (isinstance(self.max_memory, bool) or not isinstance(self.max_memory, int)
                or self.max_memory < 0):
            raise ValueError(f"max_memory must be an int >= 0, got {self.max_memory!r}")
        for name in ("dropout", "dropouth", "dropouti"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not 0.0 <= value < 1.0):
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        flag("tie_weights", self.tie_weights)

    def uses_attention(self, layer: int) -> bool:
        if self.attention == "all":
            return True
        return self.attention == "second_to_last" and layer == max(self.n_layers - 2, 0)


PRESETS: dict[str, SHARNNConfig] = {
    # The paper's enwik8 model: ~54M parameters with a byte vocabulary.
    "paper": SHARNNConfig(),
    # Paper width, half the depth: the mid-size model of the benchmarks.
    "mid": SHARNNConfig(n_layers=2, max_memory=3072),
    # Trains on a 2-core CPU in minutes.
    "tiny": SHARNNConfig(d_model=128, d_ff=512, n_layers=2, max_memory=256),
}


def config_from_preset(name: str, **overrides) -> SHARNNConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(sorted(PRESETS))}")
    return dataclasses.replace(PRESETS[name], **overrides)


def lstm_runs_on_attnfast(backend: str | None) -> bool:
    """Whether a model on ``backend`` runs its LSTMs on attnfast's LSTM (else on torch.nn.LSTM).

    "reference": no -- torch's fused LSTM is the fast pure-PyTorch path (attnfast's reference
    LSTM is a Python loop over the steps, the kernels' oracle), and bench/sharnn.py's
    "reference" and "original" models keep comparing against it. A compiled backend (or "auto",
    whose CPU choice is "cpu"): yes when this build has its LSTM kernels; a build without them
    keeps torch's LSTM, so the model runs as it did before the kernels existed.
    """
    backend = backend or default_backend()
    if backend == "reference":
        return False
    return not kernel_reasons("cpu" if backend == "auto" else backend, ["lstm_forward"])


def _lstm(d: int, backend: str | None) -> nn.Module:
    # Both have torch.nn.LSTM's parameters (weight_ih_l0, ...) and init: the same state_dict.
    if lstm_runs_on_attnfast(backend):
        return LSTM(input_size=d, hidden_size=d, batch_first=False, backend=backend)
    return nn.LSTM(input_size=d, hidden_size=d, batch_first=False)


class Block(nn.Module):
    """One SHA-RNN block (sequence-first): LSTM, optional attention over memory, Boom."""

    def __init__(self, cfg: SHARNNConfig, use_attn: bool, backend: str | None = None):
        super().__init__()
        d = cfg.d_model
        # Registration order = SHA-RNN's Block: attn, ff, the six LayerNorms, rnn.
        self.attn = (SingleHeadAttention(d, dropout=cfg.dropouth, max_memory=cfg.max_memory,
                                         causal=True, batch_first=False, backend=backend)
                     if use_attn else None)
        self.ff = Boom(d, cfg.d_ff, dropout=cfg.dropouth, shortcut=True, backend=backend)
        self.lnstart = nn.LayerNorm(d, eps=1e-12)
        self.lnmid = nn.LayerNorm(d, eps=1e-12)
        self.lnmem = nn.LayerNorm(d, eps=1e-12)
        self.lnout = nn.LayerNorm(d, eps=1e-12)  # unused, as in SHA-RNN; kept so its state_dict loads
        self.lnff = nn.LayerNorm(d, eps=1e-12)
        self.lnxff = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropouth)
        self.rnn = _lstm(d, backend)

    def forward(self, h, mem=None, hidden=None):
        h = self.lnstart(h)
        x, new_hidden = self.rnn(h, hidden)
        h = self.drop(x).to(h.dtype)  # SHA-RNN: x.float() (the LSTM may run in bf16 under autocast)
        new_mem = None
        if self.attn is not None:
            mh = self.lnmem(h)
            h = self.lnmid(h)
            x, new_mem, _ = self.attn(h, memory=mem, kv=mh)
            h = self.drop(x) + h
        h, x = self.lnff(h), self.lnxff(h)
        h = self.drop(self.ff(x)) + h
        return h, new_mem, new_hidden


@dataclasses.dataclass
class SHARNNState:
    """What one segment hands the next: per block the LSTM (h, c) and the attention memory
    (None for blocks without attention)."""

    hidden: list
    mems: list

    def detach(self) -> "SHARNNState":
        return SHARNNState([tuple(t.detach() for t in hc) for hc in self.hidden],
                           [None if m is None else m.detach() for m in self.mems])


def detach_state(state: SHARNNState | None) -> SHARNNState | None:
    """The state with its history cut, so backpropagation stops at the segment boundary."""
    return None if state is None else state.detach()


class SHARNN(nn.Module):
    """The SHA-RNN language model. ``forward(tokens (T, B), state=None) -> (logits (T, B, V),
    state)``; ``hidden_states(tokens, state)`` gives the final (T, B, d_model) activations
    instead of the logits. ``backend`` goes to every attention, Boom and LSTM layer (the LSTMs:
see :func:`lstm_runs_on_attnfast`)."""

    def __init__(self, config: SHARNNConfig | None = None, backend: str | None = None, **overrides):
        super().__init__()
        if config is not None and not isinstance(config, SHARNNConfig):
            raise ValueError(f"config must be a SHARNNConfig or None, got {type(config).__name__}")
        backend_name(backend)
        cfg = dataclasses.replace(config or SHARNNConfig(), **overrides)
        self.config, self.backend = cfg, backend
        self.blocks = nn.ModuleList(Block(cfg, cfg.uses_attention(i), backend) for i in range(cfg.n_layers))
        self.encoder = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size)
        if cfg.tie_weights:
            self.decoder.weight = self.encoder.weight
        self.drop = nn.Dropout(cfg.dropout)
        self.idrop = nn.Dropout(cfg.dropouti)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.1 / math.sqrt(self.config.d_model))
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def hidden_states(self, tokens: torch.Tensor, state: SHARNNState | None = None):
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
            raise ValueError("tokens must be an integer tensor of shape (T, B) (sequence first), got "
                             + (f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, torch.Tensor)
                                else type(tokens).__name__))
        if tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be int64 or int32 (nn.Embedding's index types), got {tokens.dtype}")
        if tokens.device != self.encoder.weight.device:
            raise ValueError(f"tokens are on {tokens.device} but the model is on {self.encoder.weight.device}")
        if tokens.shape[0] == 0:
            raise ValueError(f"tokens must have T >= 1 steps (the LSTMs take no empty sequence), got "
                             f"{tuple(tokens.shape)}")
        if tokens.numel() and not torch.compiler.is_compiling():
            # Eager only (one reduction): an index out of range is a device-side assert on CUDA.
            lo, hi = (int(x) for x in torch.aminmax(tokens))
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(f"tokens must be in [0, vocab_size={self.config.vocab_size}), got "
                                 f"values in [{lo}, {hi}]")
        if state is not None:
            self._check_state(state, tokens.shape[1])
        h = self.idrop(self.encoder(tokens))
        hidden, mems = [], []
        for i, block in enumerate(self.blocks):
            h, mem, hc = block(h, None if state is None else state.mems[i],
                               None if state is None else state.hidden[i])
            hidden.append(hc)
            mems.append(mem)
        return self.drop(h), SHARNNState(hidden, mems)

    def _check_state(self, state, batch: int) -> None:
        """A state from another model (depth, width, attention places) or batch is refused with
        the reason instead of an LSTM shape error or a memory silently ignored."""
        if not isinstance(state, SHARNNState):
            raise ValueError(f"state must be a SHARNNState (as returned by forward) or None, got "
                             f"{type(state).__name__}")
        n, d = len(self.blocks), self.config.d_model
        if len(state.hidden) != n or len(state.mems) != n:
            raise ValueError(f"state has {len(state.hidden)} LSTM states and {len(state.mems)} memories, "
                             f"the model {n} blocks")
        for i, (block, hc, mem) in enumerate(zip(self.blocks, state.hidden, state.mems)):
            if (not isinstance(hc, (tuple, list)) or len(hc) != 2
                    or any(not isinstance(t, torch.Tensor) or tuple(t.shape) != (1, batch, d) for t in hc)):
                got = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                       for t in (hc if isinstance(hc, (tuple, list)) else [hc])]
                raise ValueError(f"state.hidden[{i}] must be the LSTM's (h, c), each (1, {batch}, {d}) "
                                 f"(batch {batch}, d_model {d}), got {got}")
            dev, dtype = self.encoder.weight.device, block.rnn.weight_ih_l0.dtype
            autocast = dev.type in ("cpu", "cuda") and torch.is_autocast_enabled(dev.type)
            for t in hc:
                if t.device != dev or not t.is_floating_point() or (t.dtype != dtype and not autocast):
                    raise ValueError(f"state.hidden[{i}] must be {dtype} tensors on {dev} (the "
                                     f"model's), got {t.dtype} on {t.device}")
            if block.attn is None and mem is not None:
                raise ValueError(f"state.mems[{i}] must be None: block {i} has no attention here "
                                 f"(attention={self.config.attention!r}); the state comes from another model")
            if mem is not None and (not isinstance(mem, torch.Tensor) or mem.dim() != 3
                                    or tuple(mem.shape[1:]) != (batch, d)):
                got = tuple(mem.shape) if isinstance(mem, torch.Tensor) else type(mem).__name__
                raise ValueError(f"state.mems[{i}] must be (M, {batch}, {d}) (batch {batch}, "
                                 f"d_model {d}) or None, got {got}")
            if mem is not None and (mem.device != dev or not mem.is_floating_point()):
                raise ValueError(f"state.mems[{i}] must be a floating tensor on {dev} (the "
                                 f"model's), got {mem.dtype} on {mem.device}")

    def forward(self, tokens: torch.Tensor, state: SHARNNState | None = None):
        h, state = self.hidden_states(tokens, state)
        return self.decoder(h), state


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())
