"""``python -m attnfast inspect``: what a SHA-RNN checkpoint looks at, and what it remembers.

Two pictures of one passage of bytes, each saved as a PNG with its numbers beside it:

* Attention maps. For every attention block, the weights (heads, T, Lk) its head puts on each
  key: first the Lk - T memory positions carried over from the text before the passage, then
  the passage itself (bottom-right causal: query t sees all of the memory and passage bytes
  <= t). The model runs in eval mode. With ``--split``, the LSTM state and the memory are first
  warmed on the ``--warmup`` bytes that come before the passage in the split. With ``--text``
  there is nothing before the passage, so the state starts cold.
* The sequential Jacobian (Graves, "Supervised Sequence Labelling with Recurrent Neural
  Networks", 2012): for chosen output positions t, the Frobenius norm ||d y_t / d x_s|| for
  every s <= t. Here x_s is the embedding vector of byte s (the encoder's output; in eval mode
  embedding dropout is off) and y_t is the final hidden activation at t (the decoder's input),
  or with ``--jacobian-of logprobs`` the log-softmax of the logits. The warmed LSTM state and
  memory are held constant, so only the passage's own inputs are differentiated.

The Jacobian uses ``torch.func`` (one ``vjp`` per output position, ``vmap`` over the one-hot
cotangents) in fp32. attnfast's compiled ops (``cpu``, ``cuda``, ``triton``, ``simt``) register
plain autograd formulas but no ``vmap`` rule, so torch.func refuses them. In that case the
Jacobian falls back to the ``reference`` backend and says so; the attention maps still use the
model's own backend.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import time

import torch
import torch.nn.functional as F

from attnfast.cli import CLIError
from attnfast.dispatch import BACKENDS, BackendUnavailable, default_backend
from attnfast.models.sharnn import SHARNN, SHARNNState
from attnfast.nn.attention import SingleHeadAttention, memory_kept
from attnfast.nn.boom import Boom
from attnfast.nn.lstm import LSTM

DEFAULT_LENGTH = 128
DEFAULT_POSITION_COUNT = 8
JACOBIAN_OUTPUTS = ("hidden", "logprobs")
# Each vmapped backward holds a few tensors of (cotangents, t + 1, widest layer) floats. Chunk
# the cotangents so one such tensor stays under 2^24 elements (64 MiB). At the tiny preset all
# 128 cotangents of a 128-byte passage fit in one chunk.
_VMAP_CHUNK_ELEMENTS = 1 << 24
# Look-back summaries: the fewest recent bytes that hold this share of a row's summed norms.
_SENSITIVITY_SHARE = 0.9


# ---- the passage and the state before it ----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Passage:
    """The bytes to inspect (``tokens`` (T,) int64) and the bytes just before them that warm
    the state (``context`` (C,) int64, possibly empty). ``source`` says where they came from."""

    tokens: torch.Tensor
    context: torch.Tensor
    source: str


def passage_from_text(text: bytes) -> Passage:
    if not text:
        raise CLIError("--text is empty; give at least one character")
    tokens = torch.tensor(list(text), dtype=torch.long)
    return Passage(tokens, tokens[:0], f"--text ({len(text)} bytes)")


def passage_from_split(data: torch.Tensor, name: str, length: int, offset: int | None,
                       warmup: int) -> Passage:
    """``length`` bytes of the 1-D uint8 split ``data`` starting at ``offset``. The default
    offset is ``warmup``, so a full warm-up context comes first when the split is long enough.
    The ``warmup`` bytes before the passage become its context."""
    n = data.numel()
    if length > n:
        raise CLIError(f"--length {length} is longer than the {name} split ({n} bytes)")
    if offset is None:
        offset = min(warmup, n - length)
    if not 0 <= offset <= n - length:
        raise CLIError(f"--offset must be in [0, {n - length}] for {length} bytes of the {name} "
                       f"split ({n} bytes), got {offset}")
    tokens = data[offset: offset + length].long()
    context = data[max(offset - warmup, 0): offset].long()
    return Passage(tokens, context, f"{name} split, bytes [{offset}, {offset + length})")


@torch.no_grad()
def warm_state(model: SHARNN, context: torch.Tensor, segment: int) -> SHARNNState | None:
    """The LSTM state and attention memory after the model has read ``context`` (1-D int64)
    in segments of ``segment`` bytes, as evaluation carries them. Returns None for no context.
    The caller puts the model in eval mode."""
    if context.numel() == 0:
        return None
    device = _device_of(model)
    state = None
    for chunk in context.split(max(segment, 1)):
        _, state = model(chunk.view(-1, 1).to(device), state)
    return state


def trim_memory(state: SHARNNState | None, length: int, max_memory: int) -> SHARNNState | None:
    """``state`` with each memory cut to the last ``max_memory - length`` positions. That is
    the cut SingleHeadAttention makes before it attends a segment of ``length`` queries. Cutting
    first means every prefix of the passage sees the same memory as the whole passage does."""
    if state is None:
        return None
    mems = []
    for m in state.mems:
        keep = 0 if m is None else memory_kept(m.shape[0], length, max_memory)
        mems.append(None if keep == 0 else m[m.shape[0] - keep:])
    return SHARNNState(list(state.hidden), mems)


# ---- attention maps -------------------------------------------------------------------------

def _ask_for_weights(module, args, kwargs):
    return args, {**kwargs, "need_weights": True}


def _keep_weights(store: dict, index: int, module, args, kwargs, output):
    store[index] = output[2].detach()


@torch.no_grad()
def attention_maps(model: SHARNN, tokens: torch.Tensor, state: SHARNNState | None = None):
    """Run ``tokens`` ((T,) int64) through ``model`` with each attention block asked for its
    weights. Returns ``({block index: weights (heads, T, Lk) fp32 on the CPU}, logits (T, V))``.
    Lk - T is the number of memory keys in front of the passage. The model's output is exactly
    what it would be without the hooks; the caller puts the model in eval mode."""
    captured: dict[int, torch.Tensor] = {}
    handles = []
    try:
        for i, block in enumerate(model.blocks):
            if block.attn is None:
                continue
            handles.append(block.attn.register_forward_pre_hook(_ask_for_weights, with_kwargs=True))
            handles.append(block.attn.register_forward_hook(
                functools.partial(_keep_weights, captured, i), with_kwargs=True))
        logits, _ = model(tokens.view(-1, 1).to(_device_of(model)), state)
    finally:
        for handle in handles:
            handle.remove()
    return {i: w[0].float().cpu() for i, w in sorted(captured.items())}, logits[:, 0].float().cpu()


# ---- the sequential Jacobian ----------------------------------------------------------------

@dataclasses.dataclass
class SequentialJacobian:
    norms: torch.Tensor   # (P, T) fp32 on the CPU: ||d y_t / d x_s||_F for s <= t, 0 for s > t
    positions: list       # the P output positions t
    output: str           # "hidden" or "logprobs": what y_t is
    backend: str          # the backend the Jacobian ran on
    note: str | None      # why that is not the model's own backend, if it is not
    seconds: float


@contextlib.contextmanager
def _layers_on_backend(model: SHARNN, backend: str | None):
    """Temporarily point every attention, Boom and attnfast LSTM layer of ``model`` at
    ``backend``."""
    layers = [m for m in model.modules() if isinstance(m, (SingleHeadAttention, Boom, LSTM))]
    saved = [m.backend for m in layers]
    try:
        for m in layers:
            m.backend = backend
        yield
    finally:
        for m, b in zip(layers, saved):
            m.backend = b


@contextlib.contextmanager
def _op_level_rnn(device: torch.device):
    """Make nn.LSTM run as ordinary aten ops, which vmap can batch. oneDNN's fused CPU LSTM
    has a single backward node, and under vmap that node works one cotangent at a time while
    computing the weight gradients too (tens of times slower, measured on a CPU). cuDNN's RNN
    backward refuses eval mode altogether."""
    saved = torch.backends.mkldnn.set_flags(_enabled=False, _fp32_precision=None)
    try:
        if device.type == "cuda":
            with torch.backends.cudnn.flags(enabled=False):
                yield
        else:
            yield
    finally:
        torch.backends.mkldnn.set_flags(_enabled=saved[0], _fp32_precision=None)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def outputs_from_embeddings(model: SHARNN, tokens: torch.Tensor, embedded: torch.Tensor,
                            state: SHARNNState | None, output: str) -> torch.Tensor:
    """y for the (T, 1) ``tokens`` whose embedding output is replaced by ``embedded``
    (T, 1, d_model). A forward hook on the encoder swaps it in, so the rest of the model's
    forward runs unchanged. Returns (T, 1, d_model) final hidden activations, or (T, 1, V)
    fp32 log-probs."""
    handle = model.encoder.register_forward_hook(lambda module, args, out: embedded)
    try:
        hidden, _ = model.hidden_states(tokens, state)
    finally:
        handle.remove()
    if output == "logprobs":
        return F.log_softmax(model.decoder(hidden).float(), dim=-1)
    return hidden


def _jacobian_row(model, tokens, embedded, state, t: int, output: str, causal_prefix: bool):
    """(n,) norms ||d y_t / d x_s||_F for s < n, where n = t + 1 (``causal_prefix``: only the
    bytes up to t are run, which is exact because the model is causal) or n = T."""
    n = t + 1 if causal_prefix else tokens.numel()
    toks, emb = tokens[:n].view(n, 1), embedded[:n]

    def y_t(e):
        return outputs_from_embeddings(model, toks, e, state, output)[t, 0]

    y, pull = torch.func.vjp(y_t, emb)
    width = max(model.config.d_ff, model.config.vocab_size, y.numel())
    chunk = max(1, _VMAP_CHUNK_ELEMENTS // (n * width))
    cotangents = torch.eye(y.numel(), dtype=y.dtype, device=y.device)
    (rows,) = torch.func.vmap(pull, chunk_size=chunk)(cotangents)  # (D_out, n, 1, D_in)
    return torch.linalg.vector_norm(rows, dim=(0, 2, 3))


def sequential_jacobian(model: SHARNN, tokens: torch.Tensor, positions, state: SHARNNState | None = None,
                        output: str = "hidden", causal_prefix: bool = True) -> SequentialJacobian:
    """Norms of the sequential Jacobian of ``model`` (fp32, eval mode) over ``tokens`` ((T,)
    int64), after ``state``, at the output ``positions``. See the module docstring for what is
    differentiated. The model's backend is tried first; if torch.func cannot run it, the
    reference backend is used and ``note`` says why."""
    if output not in JACOBIAN_OUTPUTS:
        raise ValueError(f"output must be one of {JACOBIAN_OUTPUTS}, got {output!r}")
    t_len = tokens.numel()
    positions = [int(p) for p in positions]
    if not positions or any(not 0 <= p < t_len for p in positions):
        raise ValueError(f"positions must be a non-empty list of ints in [0, {t_len - 1}], got {positions}")
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        raise ValueError(f"the sequential Jacobian is computed in fp32; the model is {dtype}")
    device = _device_of(model)
    tokens = tokens.to(device)
    state = trim_memory(state, t_len, model.config.max_memory)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        # torch.func's transforms ignore an outer no_grad, so the Jacobian is unchanged by it;
        # without it the parameters (which require grad) would also record an unused graph.
        with torch.no_grad(), _op_level_rnn(device):
            embedded = model.encoder(tokens).view(t_len, 1, -1)
            own = model.backend or default_backend()
            backend, note = own, None
            norms = torch.zeros(len(positions), t_len)
            for row, t in enumerate(positions):
                if backend != "reference":
                    try:  # the layers as they are
                        values = _jacobian_row(model, tokens, embedded, state, t, output, causal_prefix)
                    except (RuntimeError, NotImplementedError) as e:
                        reason = " ".join(str(e).split()).split(". ")[0][:200]
                        note = f"backend {own!r} cannot run under torch.func ({reason}); used 'reference'"
                        backend = "reference"
                if backend == "reference":
                    with _layers_on_backend(model, "reference"):
                        values = _jacobian_row(model, tokens, embedded, state, t, output, causal_prefix)
                norms[row, :values.numel()] = values.float().cpu()
    finally:
        model.train(was_training)
    return SequentialJacobian(norms, positions, output, backend, note, time.perf_counter() - start)


def look_back(row: torch.Tensor, t: int, share: float = _SENSITIVITY_SHARE) -> int:
    """The fewest most recent bytes (t, t-1, ...) whose norms add up to ``share`` of the sum
    over s <= t: a one-number summary of how far back output t reaches."""
    values = row[: t + 1].flip(0).double()
    total = float(values.sum())
    if total == 0.0:
        return 0
    return int(torch.searchsorted(values.cumsum(0), share * total)) + 1


# ---- pictures -------------------------------------------------------------------------------

def byte_label(value: int) -> str:
    """A short tick label for a byte: the character, or a visible stand-in for spaces and
    control bytes."""
    special = {32: "\u2423", 10: "\u21b5", 9: "\u21e5", 13: "\u240d"}
    if value in special:
        return special[value]
    return chr(value) if 33 <= value < 127 else f"{value:02x}"


def _set_byte_ticks(axis, values: list, max_labels: int = 160) -> None:
    """Label every byte when there are at most ``max_labels``. Otherwise label about 48 of
    them, each with its index."""
    if len(values) <= max_labels:
        ticks, labels = list(range(len(values))), [byte_label(v) for v in values]
    else:
        ticks = list(range(0, len(values), math.ceil(len(values) / 48)))
        labels = [f"{i} {byte_label(values[i])}" for i in ticks]
    axis.set_ticks(ticks)
    axis.set_ticklabels(labels, fontsize=5)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_attention(weights: torch.Tensor, keys: list, queries: list, path: str, title: str) -> None:
    """Heatmap of (heads, T, Lk) weights (averaged over heads) with the query bytes down the
    side and the key bytes (memory, then passage) along the bottom."""
    plt = _pyplot()
    from matplotlib.colors import PowerNorm
    w = weights.mean(0)
    t_len, lk = w.shape
    peak = max(float(w.max()), 1e-12)
    # Keys a query may not see (after it in the passage) are blank, not dark like a weight of 0.
    hidden = torch.arange(lk).unsqueeze(0) > torch.arange(t_len).unsqueeze(1) + (lk - t_len)
    w = w.masked_fill(hidden, float("nan")).numpy()
    fig, ax = plt.subplots(figsize=(2.5 + 0.09 * min(lk, 160), 2.0 + 0.09 * min(t_len, 160)))
    # sqrt colour scale: attention is peaky, and a linear scale hides the broad tail.
    image = ax.imshow(w, aspect="auto", interpolation="nearest", cmap="viridis",
                      norm=PowerNorm(0.5, vmin=0.0, vmax=peak))
    if lk > t_len:
        ax.axvline(lk - t_len - 0.5, color="white", linewidth=0.8)
    _set_byte_ticks(ax.xaxis, keys)
    _set_byte_ticks(ax.yaxis, queries)
    ax.tick_params(axis="x", labelrotation=90)
    ax.set_xlabel(f"key: {lk - t_len} memory bytes | {t_len} passage bytes")
    ax.set_ylabel("query (passage byte)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03, label="attention weight (sqrt scale)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_jacobian(jac: SequentialJacobian, passage: list, path: str, title: str) -> None:
    """Above: heatmap of the norms, output positions t against input positions s, log colour
    scale (blank where s > t: no dependence). Below: each row against the look-back t - s."""
    plt = _pyplot()
    from matplotlib.colors import LogNorm
    norms = jac.norms.numpy()
    positive = norms[norms > 0]
    vmax = float(positive.max()) if positive.size else 1.0
    vmin = max(float(positive.min()) if positive.size else vmax, vmax * 1e-8)
    width = 3.0 + 0.09 * min(len(passage), 160)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 3.0 + 0.25 * len(jac.positions) + 3.0),
                                      gridspec_kw={"height_ratios": [max(len(jac.positions), 3), 8]})
    masked = torch.from_numpy(norms).masked_fill(torch.from_numpy(norms) <= 0, float("nan")).numpy()
    image = top.imshow(masked, aspect="auto", interpolation="nearest", cmap="magma",
                       norm=LogNorm(vmin=vmin, vmax=vmax))
    _set_byte_ticks(top.xaxis, passage)
    top.tick_params(axis="x", labelrotation=90)
    top.set_yticks(range(len(jac.positions)))
    top.set_yticklabels([f"t={t} {byte_label(passage[t])}" for t in jac.positions], fontsize=6)
    top.set_xlabel("input position s (passage byte)")
    top.set_title(title, fontsize=9)
    fig.colorbar(image, ax=top, fraction=0.03, label="||dy_t/dx_s||_F")
    for row, t in enumerate(jac.positions):
        values = norms[row, : t + 1][::-1]  # index k = look-back t - s
        keep = values > 0
        bottom.semilogy(torch.arange(t + 1).numpy()[keep], values[keep], linewidth=0.9, label=f"t={t}")
    bottom.set_xlabel("look-back t - s (bytes)")
    bottom.set_ylabel("||dy_t/dx_s||_F")
    bottom.grid(True, which="major", linewidth=0.3)
    bottom.legend(fontsize=6, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the whole inspection -------------------------------------------------------------------

@dataclasses.dataclass
class Report:
    passage: Passage
    state_note: str           # how the state was warmed (or that it was not)
    attention: dict           # block index -> (heads, T, Lk) weights
    memory_keys: list         # the bytes behind the memory keys in front of the passage (for labels)
    bits_per_byte: float      # the model's bpc on the passage's predictable bytes (nan if T = 1)
    jacobian: SequentialJacobian
    attention_seconds: float


def default_positions(length: int, count: int = DEFAULT_POSITION_COUNT) -> list:
    """``count`` evenly spaced output positions ending at the last byte."""
    return sorted({max(round(length * (k + 1) / count) - 1, 0) for k in range(count)})


def parse_positions(spec: str | None, length: int) -> list:
    """``--positions``: comma-separated 0-based byte positions in the passage, or ``all``."""
    if spec is None:
        return default_positions(length)
    if spec.strip() == "all":
        return list(range(length))
    try:
        positions = [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise CLIError(f"--positions must be comma-separated integers or 'all', got {spec!r}") from None
    bad = [p for p in positions if not 0 <= p < length]
    if not positions or bad:
        raise CLIError(f"--positions must be in [0, {length - 1}] for a {length}-byte passage, got "
                       f"{spec!r}" + (f" ({', '.join(map(str, bad))} out of range)" if bad else ""))
    return sorted(set(positions))


def inspect_passage(model: SHARNN, passage: Passage, positions, output: str = "hidden",
                    warm_segment: int | None = None) -> Report:
    """Attention maps and the sequential Jacobian of ``passage`` (state warmed on its context)."""
    if passage.tokens.numel() == 0:
        raise CLIError("the passage is empty")
    vocab = model.config.vocab_size
    if int(passage.tokens.max()) >= vocab or (passage.context.numel() and int(passage.context.max()) >= vocab):
        raise CLIError(f"the passage has byte values >= the model's vocabulary of {vocab}")
    was_training = model.training
    model.eval()
    try:
        state = warm_state(model, passage.context, warm_segment or passage.tokens.numel())
        start = time.perf_counter()
        weights, logits = attention_maps(model, passage.tokens, state)
        attention_seconds = time.perf_counter() - start
    finally:
        model.train(was_training)
    if state is None:
        state_note = "cold start: no text before the passage (empty LSTM state and memory)"
    else:
        state_note = (f"state and memory warmed on the {passage.context.numel()} bytes before "
                      "the passage")
    t_len = passage.tokens.numel()
    memory_len = max((w.shape[-1] - t_len for w in weights.values()), default=0)
    memory_keys = passage.context[passage.context.numel() - memory_len:].tolist() if memory_len else []
    if t_len > 1:
        nats = F.cross_entropy(logits[:-1], passage.tokens[1:], reduction="mean")
        bits = float(nats) / math.log(2)
    else:
        bits = float("nan")
    jac = sequential_jacobian(model, passage.tokens, positions, state, output)
    return Report(passage, state_note, weights, memory_keys, bits, jac, attention_seconds)


def _attention_summary(weights: torch.Tensor, t_len: int) -> dict:
    """Where the (heads, T, Lk) weights go: the share on memory keys, and the mean distance in
    bytes from each query to the keys it attends (memory key j of M is M - j bytes before the
    passage)."""
    w = weights.double().mean(0)  # (T, Lk)
    lk = w.shape[-1]
    memory = lk - t_len
    query_pos = torch.arange(t_len, dtype=torch.float64).unsqueeze(1) + memory
    distance = (query_pos - torch.arange(lk, dtype=torch.float64)).clamp(min=0)
    return {"memory_keys": memory, "passage_keys": t_len,
            "share_on_memory": float(w[:, :memory].sum(-1).mean()) if memory else 0.0,
            "mean_distance_bytes": float((w * distance).sum(-1).mean())}


def write_report(report: Report, out_dir: str) -> list:
    """PNG heatmaps, their numbers (.npy) and summary.json in ``out_dir``; returns the paths."""
    import numpy as np

    os.makedirs(out_dir, exist_ok=True)
    passage = report.passage.tokens.tolist()
    t_len = len(passage)
    files, blocks = [], {}
    for i, w in report.attention.items():
        stem = os.path.join(out_dir, f"attention_block{i}")
        np.save(stem + ".npy", w.numpy())
        memory = w.shape[-1] - t_len
        plot_attention(w, report.memory_keys[len(report.memory_keys) - memory:] + passage if memory
                       else passage, passage, stem + ".png",
                       f"block {i} attention (mean of {w.shape[0]} heads)" if w.shape[0] > 1
                       else f"block {i} attention")
        files += [stem + ".png", stem + ".npy"]
        blocks[str(i)] = _attention_summary(w, t_len)
    jac = report.jacobian
    stem = os.path.join(out_dir, "jacobian")
    np.save(stem + ".npy", jac.norms.numpy())
    what = "final hidden state" if jac.output == "hidden" else "log-probs"
    plot_jacobian(jac, passage, stem + ".png",
                  f"sequential Jacobian: ||d {what}_t / d embedding_s||_F ({jac.backend} backend)")
    files += [stem + ".png", stem + ".npy"]
    summary = {
        "passage": bytes(passage).decode("utf-8", errors="replace"),
        "source": report.passage.source,
        "state": report.state_note,
        "bits_per_byte": None if math.isnan(report.bits_per_byte) else report.bits_per_byte,
        "attention": blocks,
        "attention_seconds": report.attention_seconds,
        "jacobian": {
            "output": jac.output, "with_respect_to": "input embedding vectors of the passage",
            "norm": "Frobenius", "positions": jac.positions, "backend": jac.backend,
            "note": jac.note, "seconds": jac.seconds,
            "look_back_bytes": {str(t): look_back(jac.norms[r], t) for r, t in enumerate(jac.positions)},
            "array": "jacobian.npy: (positions, T) float32, row r is output position positions[r]",
        },
    }
    path = os.path.join(out_dir, "summary.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, allow_nan=True)
    files.append(path)
    return files


def summary_text(report: Report, files: list) -> str:
    passage = report.passage.tokens.tolist()
    t_len = len(passage)
    text = bytes(passage).decode("utf-8", errors="replace")
    shown = text if len(text) <= 60 else text[:57] + "..."
    lines = [f"passage: {t_len} bytes, {report.passage.source}: {shown!r}",
             f"state: {report.state_note}",
             f"model bpc on the passage: {report.bits_per_byte:.3f}"]
    if not report.attention:
        lines.append("attention: the model has no attention blocks")
    for i, w in report.attention.items():
        s = _attention_summary(w, t_len)
        last = w.mean(0)[-1]
        top = last.topk(min(3, last.numel()))
        keys = report.memory_keys[len(report.memory_keys) - s["memory_keys"]:] + passage \
            if s["memory_keys"] else passage
        peaks = ", ".join(f"{byte_label(keys[j])!s}@{w.shape[-1] - 1 - j} back ({float(v):.2f})"
                          for v, j in zip(top.values.tolist(), top.indices.tolist()))
        lines.append(f"attention block {i}: {s['memory_keys']} memory + {s['passage_keys']} passage "
                     f"keys; {100 * s['share_on_memory']:.1f}% of the weight on memory; mean distance "
                     f"{s['mean_distance_bytes']:.1f} bytes; last byte attends most to {peaks}")
    jac = report.jacobian
    what = "final hidden state" if jac.output == "hidden" else "log-probs"
    lines.append(f"sequential Jacobian of the {what} w.r.t. the input embeddings "
                 f"({jac.backend} backend, {jac.seconds:.2f} s; attention maps {report.attention_seconds:.2f} s)")
    if jac.note:
        lines.append(f"  note: {jac.note}")
    for r, t in enumerate(jac.positions):
        row = jac.norms[r]
        lines.append(f"  t={t:<4d} {byte_label(passage[t])!s:>2}  |dy_t/dx_t| {float(row[t]):.3g}  "
                     f"{int(100 * _SENSITIVITY_SHARE)}% of the norm within the last "
                     f"{look_back(row, t)} bytes")
    lines.append("wrote: " + ", ".join(files))
    return "\n".join(lines)


# ---- command line ---------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint directory")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the PNGs, .npy and summary.json go")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--text", help="the passage (UTF-8); the state starts cold")
    source.add_argument("--split", choices=("train", "valid", "test"),
                        help="take the passage from this split of the corpus (default: valid)")
    parser.add_argument("--data", metavar="FILE", help="corpus file for --split (default: the "
                        "Python standard library's sources, as train uses)")
    parser.add_argument("--max-bytes", type=int, metavar="N", help="read at most N bytes of the corpus")
    parser.add_argument("--length", type=int, metavar="N",
                        help=f"passage bytes (default: {DEFAULT_LENGTH}; with --text, the first N bytes)")
    parser.add_argument("--offset", type=int, metavar="N",
                        help="start of the passage in the split (default: --warmup, so the state is warm)")
    parser.add_argument("--warmup", type=int, metavar="N",
                        help="bytes before the passage that warm the state and memory "
                             "(default: the model's max_memory)")
    parser.add_argument("--positions", metavar="P1,P2,...",
                        help=f"output positions of the Jacobian, 0-based in the passage, or 'all' "
                             f"(slow: one backward per position; default: {DEFAULT_POSITION_COUNT} "
                             "evenly spaced, ending at the last byte)")
    parser.add_argument("--jacobian-of", choices=JACOBIAN_OUTPUTS, default="hidden",
                        help="y_t: the final hidden activation (default) or the log-probs")
    parser.add_argument("--backend", help="attnfast backend of the attention and Boom layers")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")


def run(args: argparse.Namespace) -> int:
    from attnfast.cli.checkpoint import load_model

    if args.length is not None and args.length < 1:
        raise CLIError(f"--length must be >= 1, got {args.length}")
    if args.warmup is not None and args.warmup < 0:
        raise CLIError(f"--warmup must be >= 0, got {args.warmup}")
    if args.text is not None:
        given = [f"--{n.replace('_', '-')}" for n in ("data", "max_bytes", "offset", "warmup")
                 if getattr(args, n) is not None]
        if given:
            raise CLIError(f"{', '.join(given)} only apply to a passage from --split, not --text")
    if args.backend is not None and args.backend not in ("auto",) + BACKENDS:
        raise CLIError(f"--backend must be auto or one of {', '.join(BACKENDS)}, got {args.backend!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is available")
    if args.text is not None:
        text = args.text.encode("utf-8", errors="surrogateescape")
        if not text:
            raise CLIError("--text is empty; give at least one character")
        text = text[: args.length] if args.length else text
        t_len = len(text)
    else:
        t_len = args.length or DEFAULT_LENGTH
    positions = parse_positions(args.positions, t_len)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, _ = load_model(args.checkpoint, backend=args.backend, map_location=device)
    if args.text is not None:
        passage = passage_from_text(text)
    else:
        from attnfast.cli.data import load_corpus

        split = args.split or "valid"
        corpus = load_corpus(args.data, args.max_bytes)
        warmup = model.config.max_memory if args.warmup is None else args.warmup
        passage = passage_from_split(corpus.split(split), split, t_len, args.offset, warmup)
    try:
        report = inspect_passage(model, passage, positions, output=args.jacobian_of)
    except BackendUnavailable as e:
        raise CLIError(" ".join(str(e).split())) from None
    files = write_report(report, args.out)
    print(summary_text(report, files))
    return 0
