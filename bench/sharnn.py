"""SHA-RNN training benchmark: tokens/s and peak memory of a whole training step.

    python -m bench.sharnn [--quick] [--size tiny --size mid] [--dtype fp32 --dtype bf16]
                           [--dropout 0.1 --dropout 0] [--impl attnfast ...] [--no-compile]
                           [--batch 2] [--seq-len 1024] [--memory 3072] [--d-model 1024]
                           [--d-ff 4096] [--layers 2] [--threads N] [--no-breakdown] [--no-memory]
                           [--max-others 0.2] [--wait-quiet 60] [--compile-limit 4]

One step = forward of one segment of T tokens (memory and LSTM state carried from the previous
step), cross-entropy, backward, AdamW step, zero_grad: what a training loop runs per batch. The
memory is filled before timing, so every timed step attends to max_memory keys. Models:
  attnfast    attnfast.models.SHARNN(backend="auto"): attnfast's fused attention, Boom and
              LSTM (the ``cpu`` kernels here; the LSTMs are torch.nn.LSTM in a build without
              the LSTM kernels, attnfast.models.sharnn.lstm_runs_on_attnfast)
  reference   the same model on attnfast's reference layers (backend="reference", pure PyTorch:
              attention via masked_fill + logsumexp, dropout drawn with attnfast's Philox counter
              RNG written in int64 tensor ops, so that it is bit-exact with the kernels)
  original    the same model with SHA-RNN's own layer math (:class:`OriginalAttention`,
              :class:`OriginalBoom` below): eager attention with an explicit additive mask,
              plain Boom, nn.Dropout. It differs from ``reference`` (which is why it is here).
All three load one state_dict and run the same LayerNorms, embedding and decoder; reference and
original run torch.nn.LSTM (the fast pure-PyTorch LSTM, the peer the attnfast LSTM is measured
against).
Modes: eager, and ``torch.compile`` of the forward + loss (backward through AOTAutograd, the
optimizer eager), capped at ``--compile-limit`` recompiles per function (torch falls back to
eager past it). dtypes: fp32, and bf16 = ``torch.autocast(device, torch.bfloat16)`` around the
forward and loss (fp32 weights and optimizer).

Columns: median step ms (p10-p90), tokens/s (T * B / median), speed-ups in tokens/s against the
reference and the original model of the same run (> 1: faster), compiled / eager of the same
model (timed alternately with its eager steps), the useful GFLOP/s -- the GEMM FLOPs of LSTM,
Boom, attention (q projection, q k^T and p v over the visible pairs) and decoder, fwd + bwd = 3x
fwd -- and their fraction of the machine's physical peak (bench/peak) and of torch.mm 2048^3 in
the dtype measured in the run (``% gemm``: on CPUs with AMX torch's bf16 GEMMs pass the AVX-512
bf16 "peak"), the first step's loss (equal across models at dropout 0), and the peak extra memory
of one step (bench/harness.peak_memory: activations, gradients, temporaries; weights and
optimizer state existed before).
Timing on a shared machine: models run in turns, one step each per round; each timed step
records the CPU time other processes used meanwhile (:class:`OthersCPU`) and counts as quiet
when that stayed under ``--max-others`` cores; medians are of the quiet steps (column
``quiet/all``), rounds go on (up to 2 x reps) to collect them, and before each timed step the
script waits up to ``--wait-quiet`` seconds for a quiet machine (off under --quick).
Breakdown (eager, one step with hooks): forward time per layer kind from module hooks, backward
time from hooks on the autograd nodes each module's forward created; optimizer timed around
``opt.step()``; ``other`` is the rest (residual adds, casts, the autograd engine, the hooks).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import statistics
import sys
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from bench import harness
from bench import peak as _peak

from attnfast.models.sharnn import SHARNN, config_from_preset

IMPLS = ("attnfast", "reference", "original")
KINDS = ("lstm", "attention", "boom", "layernorm", "embedding", "decoder+loss", "dropout",
         "optimizer", "other")


@dataclasses.dataclass(frozen=True)
class Size:
    name: str
    preset: str
    seq_len: int
    batch: int
    max_memory: int
    overrides: tuple = ()  # extra SHARNNConfig fields (d_model, d_ff, n_layers)

    def config(self, dropout: float):
        return config_from_preset(self.preset, max_memory=self.max_memory, dropout=dropout,
                                  dropouth=dropout, dropouti=dropout, **dict(self.overrides))


# tiny: the preset that trains in minutes on 2 cores. mid: paper width (1024, Boom 4096), 2 layers,
# segments of 1024 over a 3072-position memory; batch 2 keeps a step to seconds on 2 cores (the
# activations of one step are < 2 GiB, far below 24 GiB).
SIZES = {
    "tiny": Size("tiny", "tiny", seq_len=128, batch=8, max_memory=256),
    "mid": Size("mid", "mid", seq_len=1024, batch=2, max_memory=3072),
}


# ---- SHA-RNN's own layer math (Merity 2019), written from the equations ---------------------
# Parameter names and shapes are attnfast's (= SHA-RNN's), so the same state_dict loads.

class _Overparam(nn.Module):
    """The value gate sigmoid(f) * tanh(c), [c; f] = l1(x)."""

    def __init__(self, d: int):
        super().__init__()
        self.l1 = nn.Linear(d, 2 * d)
        self.d = d

    def forward(self, x):
        c, f = self.l1(x).split(self.d, dim=-1)
        return torch.sigmoid(f) * torch.tanh(c)


class OriginalAttention(nn.Module):
    """SHA-RNN's attention (q=True, k=v=r=False, one head) with the block's memory handling,
    sequence-first: query = qln(q(x)) in fp32; keys = values = [memory; kv];
    out = drop(softmax(drop(qs * query) (ks * keys)^T / sqrt(D) + mask)) drop(vs * values),
    qs, ks = sigmoid(self.qs), sigmoid(self.ks), vs = vq(sigmoid(self.vs)), and ``mask`` the
    explicit additive (T, M + T) matrix [zeros(T, M) | triu(-inf, 1)]. Same call signature and
    memory truncation as attnfast.nn.SingleHeadAttention (batch_first=False)."""

    def __init__(self, d_model: int, dropout: float, max_memory: int):
        super().__init__()
        self.qs = nn.Parameter(torch.zeros(1, 1, d_model))
        self.ks = nn.Parameter(torch.zeros(1, 1, d_model))
        self.vs = nn.Parameter(torch.zeros(1, 1, d_model))
        self.qkvs = nn.Parameter(torch.zeros(1, 3, d_model))  # a parameter SHA-RNN keeps, unused
        self.q = nn.Linear(d_model, d_model)
        self.qln = nn.LayerNorm(d_model, eps=1e-12)
        self.r_gate = nn.Parameter(torch.ones(1, 1, d_model))  # unused unless r=True
        self.vq = _Overparam(d_model)
        self.drop = nn.Dropout(dropout) if dropout else None
        self.d_model, self.max_memory = d_model, max_memory

    def _drop(self, x):
        return self.drop(x) if self.drop is not None else x

    def forward(self, x, memory=None, kv=None, need_weights=False):
        t = x.shape[0]
        kv = x if kv is None else kv
        if memory is not None:
            keep = min(max(self.max_memory - t, 0), memory.shape[0])
            keys = torch.cat([memory[memory.shape[0] - keep:].to(kv.dtype), kv], dim=0)
        else:
            keys = kv
        n = keys.shape[0]
        new_memory = keys[n - min(self.max_memory, n):]
        m = n - t
        mask = torch.cat([torch.zeros(t, m, device=x.device),
                          torch.full((t, t), float("-inf"), device=x.device).triu(1)], dim=1)
        qs, ks = torch.sigmoid(self.qs), torch.sigmoid(self.ks)
        vs = self.vq(torch.sigmoid(self.vs))
        query = self.qln(self.q(x).float())
        q = self._drop(qs * query).transpose(0, 1)           # (B, T, D)
        k = (ks * keys).transpose(0, 1)                      # (B, M + T, D)
        v = self._drop(vs * keys).transpose(0, 1)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d_model) + mask
        weights = self._drop(torch.softmax(scores, dim=-1))
        out = torch.matmul(weights, v).transpose(0, 1)       # (T, B, D)
        return out, new_memory, (weights if need_weights else None)


class OriginalBoom(nn.Module):
    """SHA-RNN's Boom with shortcut: z = sum of the d_model-wide chunks of
    drop(gelu_sigmoid(linear1(x))), gelu_sigmoid(h) = h * sigmoid(1.702 h)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.drop = nn.Dropout(dropout) if dropout else None

    def forward(self, x):
        h = self.linear1(x)
        h = h * torch.sigmoid(1.702 * h)
        if self.drop is not None:
            h = self.drop(h)
        d = x.shape[-1]
        n = h.shape[-1] // d
        return h.narrow(-1, 0, n * d).unflatten(-1, (n, d)).sum(-2)


def build_model(cfg, impl: str) -> SHARNN:
    if impl == "attnfast":
        return SHARNN(cfg, backend="auto")
    model = SHARNN(cfg, backend="reference")
    if impl == "original":
        for block in model.blocks:
            if block.attn is not None:
                block.attn = OriginalAttention(cfg.d_model, cfg.dropouth, cfg.max_memory)
            block.ff = OriginalBoom(cfg.d_model, cfg.d_ff, cfg.dropouth)
    return model


# ---- FLOPs ---------------------------------------------------------------------------------

def visible_pairs(lq: int, lk: int) -> int:
    """(i, j) pairs a causal bottom-right query block of lq rows sees among lk keys."""
    m = lk - lq
    return lq * m + lq * (lq + 1) // 2


def kind_flops(cfg, seq_len: int, batch: int, keys: int) -> dict:
    """Useful GEMM FLOPs of one training step per layer kind (fwd + bwd = 3x fwd)."""
    d, tokens = cfg.d_model, seq_len * batch
    n_attn = sum(cfg.uses_attention(i) for i in range(cfg.n_layers))
    fwd = {
        "lstm": cfg.n_layers * 2.0 * tokens * (4 * d) * (d + d),   # x W_ih^T and h W_hh^T
        "attention": n_attn * (2.0 * tokens * d * d                # q projection
                               + 4.0 * d * visible_pairs(seq_len, keys) * batch),  # q k^T, p v
        "boom": cfg.n_layers * 2.0 * tokens * d * cfg.d_ff,
        "decoder+loss": 2.0 * tokens * d * cfg.vocab_size,
    }
    return {k: 3.0 * v for k, v in fwd.items()}


# ---- the training step -----------------------------------------------------------------------

class _CrossEntropy(nn.Module):
    def forward(self, logits, targets):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


class Trainer:
    """A model, its AdamW, one fixed batch of tokens and the carried state."""

    def __init__(self, model: SHARNN, tokens: torch.Tensor, amp_dtype, device: torch.device):
        self.model, self.device, self.amp_dtype = model, device, amp_dtype
        self.inputs, self.targets = tokens[:-1], tokens[1:]
        self.loss_fn = _CrossEntropy()
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.state = None
        self.compiled = None
        self.last_loss = None

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def forward_loss(self, inputs, targets, state):
        logits, new_state = self.model(inputs, state)
        return self.loss_fn(logits, targets), new_state

    def fill_memory(self) -> None:
        """Forward segments (eval, no_grad) until the attention memory is full."""
        cfg = self.model.config
        segments = max(1, math.ceil(cfg.max_memory / self.inputs.shape[0]))
        self.model.eval()
        with torch.no_grad(), self.autocast():
            for _ in range(segments):
                _, self.state = self.model(self.inputs, self.state)
        self.model.train()
        self.state = self.state.detach()

    def keys(self) -> int:
        """Keys an attention block sees in the next step."""
        mem = next((m for m in self.state.mems if m is not None), None) if self.state else None
        t = self.inputs.shape[0]
        cfg = self.model.config
        held = 0 if mem is None else min(mem.shape[0], max(cfg.max_memory - t, 0))
        return held + t

    def step(self, compiled: bool = False, timer=None):
        fwd = self.compiled if compiled else self.forward_loss
        t0 = time.perf_counter()
        with self.autocast():
            loss, new_state = fwd(self.inputs, self.targets, self.state)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        self.state = new_state.detach()
        self.last_loss = loss.detach()
        if timer is not None:
            timer.update(fwd=t1 - t0, bwd=t2 - t1, opt=t3 - t2)
        return None


# ---- where the time goes -----------------------------------------------------------------------

def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def module_kinds(model: SHARNN, loss_fn: nn.Module):
    for block in model.blocks:
        yield block.rnn, "lstm"
        if block.attn is not None:
            yield block.attn, "attention"
        yield block.ff, "boom"
        for name in ("lnstart", "lnmid", "lnmem", "lnff", "lnxff"):
            yield getattr(block, name), "layernorm"
        yield block.drop, "dropout"
    yield model.encoder, "embedding"
    yield model.idrop, "dropout"
    yield model.drop, "dropout"
    yield model.decoder, "decoder+loss"
    yield loss_fn, "decoder+loss"


class Breakdown:
    """Per layer kind, the forward time (module pre/post hooks) and the backward time (pre/post
    hooks on every autograd node the module's forward created: the nodes reachable from its
    outputs without passing its inputs' nodes or a leaf). On the CPU the autograd engine runs the
    nodes one at a time on the calling thread, so the node hooks bracket each node's work."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.fwd, self.bwd = defaultdict(float), defaultdict(float)
        self._open, self._tagged, self._handles = {}, set(), []
        self._node_t0 = 0.0
        for module, kind in module_kinds(trainer.model, trainer.loss_fn):
            self._handles.append(module.register_forward_pre_hook(
                functools.partial(self._pre, kind), with_kwargs=True))
            self._handles.append(module.register_forward_hook(
                functools.partial(self._post, kind), with_kwargs=True))

    def _sync(self):
        harness.synchronize(self.trainer.device)

    def _pre(self, kind, module, args, kwargs):
        self._sync()
        stops = {t.grad_fn for t in _tensors((args, kwargs)) if t.grad_fn is not None}
        self._open[id(module)] = (time.perf_counter(), stops)

    def _post(self, kind, module, args, kwargs, output):
        self._sync()
        t0, stops = self._open.pop(id(module))
        self.fwd[kind] += time.perf_counter() - t0
        todo = [t.grad_fn for t in _tensors(output) if t.grad_fn is not None]
        while todo:
            node = todo.pop()
            if node is None or node in stops or node in self._tagged:
                continue
            if type(node).__name__ == "AccumulateGrad":
                continue
            self._tagged.add(node)
            node.register_prehook(self._node_pre)
            node.register_hook(functools.partial(self._node_post, kind))
            todo.extend(n for n, _ in node.next_functions)

    def _node_pre(self, grad_outputs):
        self._sync()
        self._node_t0 = time.perf_counter()

    def _node_post(self, kind, grad_inputs, grad_outputs):
        self._sync()
        self.bwd[kind] += time.perf_counter() - self._node_t0

    def run(self, steps: int, good_s: float | None = None, max_others: float = 0.2,
            wait_s: float = 0.0) -> list[dict]:
        """Up to ``steps`` hooked training steps, stopping at the first one that is quiet
        (:class:`OthersCPU`) or takes at most ``good_s``; per step: seconds per kind and phase."""
        out = []
        try:
            for _ in range(steps):
                self.fwd.clear()
                self.bwd.clear()
                phases = {}
                if wait_s > 0:
                    wait_quiet(max_others, wait_s)
                with OthersCPU() as oc:
                    self.trainer.step(timer=phases)
                self._tagged.clear()
                kinds = {k: self.fwd.get(k, 0.0) + self.bwd.get(k, 0.0) for k in KINDS}
                kinds["optimizer"] = phases["opt"]
                step = phases["fwd"] + phases["bwd"] + phases["opt"]
                kinds["other"] = step - sum(v for k, v in kinds.items() if k != "other")
                out.append({"step_s": step, "phases_s": phases, "kinds_s": kinds,
                            "fwd_s": dict(self.fwd), "bwd_s": dict(self.bwd),
                            "others_cores": oc.cores()})
                if (good_s is not None and step <= good_s) or oc.disturbed(max_others) is False:
                    break
        finally:
            for h in self._handles:
                h.remove()
            self._tagged.clear()
        return out


def summarize_breakdown(steps: list[dict], flops: dict) -> dict:
    """The shortest hooked step (the one least disturbed by other processes on a shared
    machine), whole: its parts add up to its total."""
    step = min(steps, key=lambda s: s["step_s"])
    kinds = {}
    for k in KINDS:
        total = step["kinds_s"][k]
        kinds[k] = {"fwd_s": step["fwd_s"].get(k, 0.0), "bwd_s": step["bwd_s"].get(k, 0.0),
                    "total_s": total, "share": total / step["step_s"] if step["step_s"] else None,
                    "gflops": harness.gflops(flops.get(k), total * 1e3) if k in flops else None}
    return {"steps": len(steps), "step_s": step["step_s"], "phases_s": step["phases_s"],
            "others_cores": step["others_cores"],
            "all_steps_s": [s["step_s"] for s in steps], "kinds": kinds}


# ---- timing --------------------------------------------------------------------------------

class OthersCPU:
    """CPU time used by *other* processes while a call ran, in cores (Linux /proc; None
    elsewhere): busy jiffies of the whole machine minus this process's. On this shared 2-core
    machine a step that another process cut into can take 10x longer (the OpenMP threads of the
    LSTM's 2 x T time steps wait for a descheduled partner at every barrier), so each timed step
    is labelled quiet or disturbed and the medians are of the quiet steps."""

    HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _busy() -> int:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return sum(v) - v[3] - v[4]  # all but idle and iowait

    @staticmethod
    def _own() -> int:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime of every thread

    def __enter__(self):
        try:
            self.b0, self.s0 = self._busy(), self._own()
        except OSError:
            self.b0 = None
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.jiffies = None
        if self.b0 is not None:
            self.jiffies = max(0, (self._busy() - self.b0) - (self._own() - self.s0))
        return False

    def disturbed(self, max_cores: float) -> bool | None:
        """Whether the others used more than ``max_cores`` on average (2 ticks of slack for the
        10 ms resolution)."""
        if self.jiffies is None:
            return None
        return self.jiffies > max(2, max_cores * self.wall * self.HZ)

    def cores(self) -> float | None:
        return None if self.jiffies is None else self.jiffies / self.HZ / max(self.wall, 1e-9)


def wait_quiet(max_others: float, max_wait_s: float, probe_s: float = 1.0) -> float:
    """Sleep until other processes use at most ``max_others`` cores over a ``probe_s`` probe, or
    ``max_wait_s`` have passed; returns the seconds waited. Starting a step while another
    process holds a core mostly buys a disturbed step ten times longer than a quiet one."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait_s:
        with OthersCPU() as oc:
            time.sleep(probe_s)
        if oc.jiffies is None or oc.cores() <= max_others:
            break
    return time.perf_counter() - t0


def round_robin(calls: dict, device, warmup: int, reps: int, log=None, *,
                max_others: float = 0.2, max_rounds: int | None = None,
                wait_s: float = 0.0) -> dict:
    """Timings of callables timed in turns (one call of each per round), so that load from other
    processes on a shared machine hits every contender alike. Each timed call is quiet or
    disturbed (:class:`OthersCPU`: others used more than ``max_others`` cores); rounds go on
    until every contender has ``reps`` quiet calls or ``max_rounds`` (default 2 x reps) timed
    rounds were run. The reported timing is the median of the quiet calls (of all calls when
    a contender got none). Before each timed call, :func:`wait_quiet` waits up to ``wait_s``.
    Warm-up wall times are returned too (compilation shows there)."""
    max_rounds = max(reps, max_rounds if max_rounds is not None else 2 * reps)
    every = {name: [] for name in calls}
    quiet = {name: [] for name in calls}
    warm = {name: [] for name in calls}
    rnd = 0
    while rnd < warmup + max_rounds:
        if rnd >= warmup + reps and all(len(q) >= reps for q in quiet.values()):
            break
        for name, call in calls.items():
            if wait_s > 0 and rnd >= warmup:
                wait_quiet(max_others, wait_s)
            harness.synchronize(device)
            with OthersCPU() as oc:
                call()
                harness.synchronize(device)
            ms = oc.wall * 1e3
            if rnd < warmup:
                warm[name].append(ms)
            else:
                every[name].append(ms)
                if not oc.disturbed(max_others):
                    quiet[name].append(ms)
            if log:
                others = oc.cores()
                log(f"  {'warm' if rnd < warmup else 'rep'} {rnd}: {name} {ms:.0f} ms"
                    + ("" if others is None else f" (others {others:.2f} cores)"))
        rnd += 1
    out = {}
    for name in calls:
        if not every[name]:
            out[name] = (None, warm[name], None)
            continue
        t = harness.summarize(quiet[name] or every[name])
        out[name] = (t, warm[name], {"quiet": len(quiet[name]), "all": len(every[name]),
                                     "all_median_ms": statistics.median(every[name]),
                                     "all_ms": every[name]})
    return out


class _LimitHits(logging.Handler):
    """Counts dynamo's "hit config.recompile_limit" warnings (the frame then runs eager)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.hits = 0

    def emit(self, record):
        if "recompile_limit" in record.getMessage() or "cache_size_limit" in record.getMessage():
            self.hits += 1


def dynamo_counts(limit_hits: _LimitHits | None = None) -> dict:
    """Dynamo's counters since the last reset: frames compiled (each compile and recompile of a
    frame), distinct graphs, graph breaks (with the first line of each distinct reason)."""
    from torch._dynamo.utils import counters

    return {"frames_compiled": int(counters["frames"].get("total", 0)),
            "graphs": int(counters["stats"].get("unique_graphs", 0)),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "recompile_limit_hits": None if limit_hits is None else limit_hits.hits,
            "break_reasons": sorted({r.splitlines()[0][:80] for r in counters["graph_break"]})}


def gemm_roof(dtype, device, n: int) -> float:
    """torch.mm n^3 in the dtype, GFLOP/s: what torch's own GEMM reaches on this machine now."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = harness.time_fn(lambda: torch.mm(a, b), device, warmup=2, reps=5)
    return harness.gflops(2.0 * n**3, t.median_ms)


# ---- one case: size x dtype x dropout ------------------------------------------------------

def run_case(size: Size, dtype_name: str, dropout: float, impls: list[str], device, *, args,
             peak_record: dict, roof: float | None, log) -> tuple[list[dict], list[dict]]:
    cfg = size.config(dropout)
    amp = None if dtype_name == "fp32" else harness.DTYPES[dtype_name]
    peak = _peak.peak_gflops(peak_record, harness.DTYPES[dtype_name])
    torch.manual_seed(0)
    state_dict = build_model(cfg, "reference").state_dict()
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, cfg.vocab_size, (size.seq_len + 1, size.batch), generator=g).to(device)
    trainers = {}
    for impl in impls:
        torch.manual_seed(0)
        model = build_model(cfg, impl)
        model.load_state_dict(state_dict)
        trainers[impl] = Trainer(model.to(device), tokens, amp, device)
        trainers[impl].fill_memory()
    keys = trainers[impls[0]].keys()
    flops = kind_flops(cfg, size.seq_len, size.batch, keys)
    step_flop = sum(flops.values())
    tokens_per_step = size.seq_len * size.batch
    label = dict(size=size.name, dtype=dtype_name, dropout=dropout)
    log(f"{size.name} {dtype_name} dropout {dropout}: T {size.seq_len} B {size.batch} keys {keys}, "
        f"{step_flop / 1e9:.1f} GFLOP/step")

    # First step of every model from the same weights, tokens and (prefilled) state: with
    # dropout 0 the losses must agree, so that a fast wrong model cannot top the table.
    first_loss = {}
    for impl, tr in trainers.items():
        tr.step()
        first_loss[impl] = float(tr.last_loss)
    loss_ok = {impl: None for impl in trainers}
    if dropout == 0.0:
        want = first_loss.get("original", first_loss[impls[0]])
        tol = 1e-4 if amp is None else 2e-2
        for impl, loss in first_loss.items():
            loss_ok[impl] = abs(loss - want) <= tol * abs(want)
            if not loss_ok[impl]:
                log(f"WARNING: {impl}'s first loss {loss:.6f} differs from {want:.6f} (rel tol {tol})")

    rows = []
    # The first step above warms every model up (AdamW state, allocations); at tiny size one more
    # untimed round, at the larger sizes (seconds a step) none.
    warmup = args.warmup if args.warmup is not None else (1 if size.name == "tiny" else 0)
    reps = args.reps or (3 if args.quick else 5)
    if size.name != "tiny" and args.reps is None:
        reps = 3
    res = round_robin({impl: tr.step for impl, tr in trainers.items()}, device, warmup, reps, log,
                      max_others=args.max_others, max_rounds=args.max_rounds, wait_s=args.wait_quiet)
    for impl, (t, _, q) in res.items():
        rows.append(dict(**label, mode="eager", impl=impl, timing=t.as_dict(), quiet=q,
                         tokens_per_s=tokens_per_step / (t.median_ms / 1e3),
                         gflops=harness.gflops(step_flop, t.median_ms), peak_gflops=peak,
                         first_loss=first_loss[impl], loss_ok=loss_ok[impl], step_flop=step_flop,
                         keys=keys, gemm_roof_gflops=roof))

    if not args.no_compile:
        rows += compile_rows(trainers, label, device, args, tokens_per_step, step_flop, peak, keys, log)
        for r in rows:
            r["gemm_roof_gflops"] = roof

    eager_by = {r["impl"]: r for r in rows if r["mode"] == "eager"}
    for r in rows:
        if r["mode"] == "compile":
            continue  # measured in compile_rows, while the compiled function exists
        r["mem_bytes"] = None
        if args.no_memory or r["timing"] is None:
            continue
        if r["timing"]["median_ms"] > args.extra_step_max_s * 1e3:
            r["mem_note"] = f"skipped: step > {args.extra_step_max_s:.0f} s"
            continue
        tr = trainers[r["impl"]]
        r["mem_bytes"] = harness.peak_memory(
            functools.partial(tr.step, compiled=r["mode"] == "compile"), device)

    breakdowns = []
    if not args.no_breakdown:
        for impl, tr in trainers.items():
            if eager_by[impl]["timing"]["median_ms"] > args.extra_step_max_s * 1e3:
                log(f"  breakdown of {impl} skipped: step > {args.extra_step_max_s:.0f} s")
                continue
            # Hooked steps until one is within 25% of the timed median (at most 3; 1 under --quick).
            steps = Breakdown(tr).run(args.breakdown_steps or (1 if args.quick else 3),
                                      good_s=1.25 * eager_by[impl]["timing"]["median_ms"] / 1e3,
                                      max_others=args.max_others, wait_s=args.wait_quiet)
            bd = summarize_breakdown(steps, flops)
            bd.update(label, impl=impl, timed_step_ms=eager_by[impl]["timing"]["median_ms"])
            breakdowns.append(bd)
    return rows, breakdowns


def compile_rows(trainers, label, device, args, tokens_per_step, step_flop, peak, keys, log):
    """Per model: a fresh torch.compile of forward + loss (dynamo reset first, so the recompile
    limit and the counters are per model), warm-up (compilation), then its compiled and eager
    steps timed in turns."""
    import torch._dynamo

    rows = []
    hits = _LimitHits()
    logging.getLogger("torch._dynamo").addHandler(hits)
    torch._dynamo.config.recompile_limit = args.compile_limit
    torch._dynamo.config.accumulated_recompile_limit = max(64, 4 * args.compile_limit)
    for impl, tr in trainers.items():
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        hits.hits = 0
        tr.compiled = torch.compile(tr.forward_loss)
        t0 = time.perf_counter()
        try:
            res = round_robin({"compile": functools.partial(tr.step, compiled=True)}, device,
                              args.compile_warmup, 0, log)
            after_warm = dynamo_counts(hits)
            res = round_robin({"compile": functools.partial(tr.step, compiled=True),
                               "eager": tr.step}, device, 0, args.compile_reps or
                              (3 if label["size"] != "tiny" else 5), log,
                              max_others=args.max_others, max_rounds=args.max_rounds,
                              wait_s=args.wait_quiet)
            error = None
        except Exception as exc:  # a compile failure is a result, not a crash of the benchmark
            lines = str(exc).splitlines() or [""]
            where = next((x for x in lines if x.startswith("Error in op:")), "")
            error = f"{type(exc).__name__}: {lines[0][:160]}" + (f" ({where})" if where else "")
            res, after_warm = None, None
            log(f"  compile {impl} failed: {error}")
        final = dynamo_counts(hits)
        wall = time.perf_counter() - t0
        row = dict(**label, mode="compile", impl=impl, error=error, compile_wall_s=wall,
                   dynamo_after_warmup=after_warm, dynamo=final, peak_gflops=peak,
                   step_flop=step_flop, keys=keys, timing=None, tokens_per_s=None, gflops=None,
                   paired_eager_ms=None, first_loss=None)
        if res is not None:
            t, _, q = res["compile"]
            row.update(timing=t.as_dict(), quiet=q, tokens_per_s=tokens_per_step / (t.median_ms / 1e3),
                       gflops=harness.gflops(step_flop, t.median_ms),
                       paired_eager_ms=res["eager"][0].median_ms,
                       recompiled_while_timed=(final["frames_compiled"] > after_warm["frames_compiled"]))
        row["mem_bytes"] = None
        if res is not None and not args.no_memory:
            if row["timing"]["median_ms"] > args.extra_step_max_s * 1e3:
                row["mem_note"] = f"skipped: step > {args.extra_step_max_s:.0f} s"
            else:
                row["mem_bytes"] = harness.peak_memory(functools.partial(tr.step, compiled=True), device)
        log(f"  compile {impl}: {wall:.0f} s for warm-up + timing; dynamo {final}")
        rows.append(row)
        tr.compiled = None
    torch._dynamo.reset()
    logging.getLogger("torch._dynamo").removeHandler(hits)
    return rows


def add_ratios(rows: list[dict]) -> None:
    for r in rows:
        peers = {q["impl"]: q for q in rows
                 if all(q[k] == r[k] for k in ("size", "dtype", "dropout", "mode"))}
        ms = r["timing"]["median_ms"] if r["timing"] else None
        for peer in ("reference", "original"):
            p = peers.get(peer)
            r[f"vs_{peer}"] = harness.ratio(p["timing"]["median_ms"] if p and p["timing"] else None, ms)
        r["vs_eager"] = harness.ratio(r.get("paired_eager_ms"), ms) if r["mode"] == "compile" else None
        peak = r["peak_gflops"]
        r["pct_of_peak"] = 100.0 * r["gflops"] / peak if r["gflops"] and peak else None
        roof = r.get("gemm_roof_gflops")
        r["pct_of_gemm"] = 100.0 * r["gflops"] / roof if r["gflops"] and roof else None


COLUMNS = ["size", "dtype", "dropout", "mode", "impl", "step ms (p10-p90)", "quiet/all", "tokens/s",
           "x reference", "x original", "x eager", "GFLOP/s", "% peak", "% gemm", "step mem MiB", "loss@1"]


def table_rows(rows):
    f = harness.fmt
    out = []
    for r in rows:
        t = r["timing"]
        out.append({
            "size": r["size"], "dtype": r["dtype"], "dropout": f"{r['dropout']:g}", "mode": r["mode"],
            "impl": r["impl"],
            "step ms (p10-p90)": (f"{t['median_ms']:.0f} ({t['p10_ms']:.0f}-{t['p90_ms']:.0f})" if t
                                  else f"failed: {r.get('error')}"),
            "quiet/all": f"{r['quiet']['quiet']}/{r['quiet']['all']}" if r.get("quiet") else "-",
            "tokens/s": f(r["tokens_per_s"], ".0f"),
            "x reference": f(r["vs_reference"]), "x original": f(r["vs_original"]),
            "x eager": f(r["vs_eager"]), "GFLOP/s": f(r["gflops"], ".1f"),
            "% peak": f(r["pct_of_peak"], ".1f"), "% gemm": f(r["pct_of_gemm"], ".0f"),
            "step mem MiB": f(harness.mib(r.get("mem_bytes")), ".0f"),
            "loss@1": f(r.get("first_loss"), ".5f") + ("" if r.get("loss_ok") is not False else " MISMATCH"),
        })
    return out


def compile_table(rows):
    out = []
    for r in rows:
        if r["mode"] != "compile":
            continue
        d, w = r["dynamo"], r["dynamo_after_warmup"] or {}
        out.append({"size": r["size"], "dtype": r["dtype"], "dropout": f"{r['dropout']:g}",
                    "impl": r["impl"], "warm-up + timing s": f"{r['compile_wall_s']:.0f}",
                    "frames compiled (after warm-up)":
                        f"{d['frames_compiled']} ({w.get('frames_compiled', '-')})",
                    "graphs": str(d["graphs"]), "graph breaks": str(d["graph_breaks"]),
                    "limit hits": str(d["recompile_limit_hits"]),
                    "compiled while timed": str(r.get("recompiled_while_timed", "-")),
                    "break reasons": "; ".join(x[:50] for x in d["break_reasons"][:3])})
    return out


def breakdown_table(bds):
    f = harness.fmt
    out = []
    for bd in bds:
        for k in KINDS:
            v = bd["kinds"][k]
            out.append({"size": bd["size"], "dtype": bd["dtype"], "dropout": f"{bd['dropout']:g}",
                        "impl": bd["impl"], "kind": k, "fwd ms": f(v["fwd_s"] * 1e3, ".0f"),
                        "bwd ms": f(v["bwd_s"] * 1e3, ".0f"), "total ms": f(v["total_s"] * 1e3, ".0f"),
                        "% step": f(100 * v["share"], ".1f"), "GFLOP/s": f(v["gflops"], ".1f")})
        out.append({"size": bd["size"], "dtype": bd["dtype"], "dropout": f"{bd['dropout']:g}",
                    "impl": bd["impl"], "kind": "= step (hooked)",
                    "total ms": f"{bd['step_s'] * 1e3:.0f}",
                    "GFLOP/s": ("" if bd.get("others_cores") is None
                                else f"others {bd['others_cores']:.2f} cores"),
                    "% step": f"timed {bd['timed_step_ms']:.0f} ms"})
    return out


def lstm_summary(bds) -> list[str]:
    """Per case: the LSTM's share of attnfast's step and the bound it puts on the speed-up."""
    lines = []
    for bd in bds:
        if bd["impl"] != "attnfast":
            continue
        k = bd["kinds"]
        fused = k["attention"]["share"] + k["boom"]["share"]
        lines.append(f"{bd['size']} {bd['dtype']} dropout {bd['dropout']:g}: LSTM "
                     f"{100 * k['lstm']['share']:.0f}% of attnfast's step; attention + Boom "
                     f"{100 * fused:.0f}% (if they cost nothing, the step would be at most "
                     f"{1 / max(1e-9, 1 - fused):.2f}x faster)")
    return lines


def parse_sizes(args) -> list[Size]:
    names = args.size or (["tiny"] if args.quick else ["tiny", "mid"])
    sizes = []
    for name in names:
        s = SIZES[name]
        over = {}
        if args.d_model is not None:
            over["d_model"] = args.d_model
        if args.d_ff is not None:
            over["d_ff"] = args.d_ff
        if args.layers is not None:
            over["n_layers"] = args.layers
        s = dataclasses.replace(
            s, seq_len=args.seq_len or s.seq_len, batch=(args.batch[-1] if args.batch else s.batch),
            max_memory=s.max_memory if args.memory is None else args.memory,
            overrides=tuple(sorted(over.items())))
        sizes.append(s)
    return sizes


def main(argv=None) -> int:
    p = harness.common_args(__doc__.splitlines()[0])
    p.add_argument("--size", action="append", choices=sorted(SIZES),
                   help="model sizes (repeatable; default tiny and mid, --quick: tiny)")
    p.add_argument("--impl", action="append", choices=IMPLS, help="models (repeatable; default all)")
    p.add_argument("--dropout", type=float, action="append",
                   help="dropout, dropouth and dropouti of the model (repeatable; default 0.1 and 0)")
    p.add_argument("--batch", type=int, action="append", help="batch size (the last one given)")
    p.add_argument("--seq-len", type=int, default=None, help="segment length T")
    p.add_argument("--memory", type=int, default=None, help="max_memory (attention keys)")
    p.add_argument("--d-model", type=int, default=None)
    p.add_argument("--d-ff", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's, every core); %% peak is then "
                        "against that many cores' share of the peak")
    p.add_argument("--no-compile", action="store_true", help="leave out torch.compile (off under --quick)")
    p.add_argument("--compile", action="store_true", help="time torch.compile under --quick too")
    p.add_argument("--compile-limit", type=int, default=4,
                   help="dynamo recompile limit per function (past it torch runs that frame eager)")
    p.add_argument("--compile-warmup", type=int, default=2, help="untimed compiled steps")
    p.add_argument("--compile-reps", type=int, default=None, help="timed compiled (and eager) steps")
    p.add_argument("--max-others", type=float, default=0.2,
                   help="a timed step is disturbed when other processes used more than this many "
                        "cores meanwhile (medians are of the quiet steps)")
    p.add_argument("--max-rounds", type=int, default=None,
                   help="most timed rounds while waiting for quiet steps (default 2 x reps)")
    p.add_argument("--wait-quiet", type=float, default=None,
                   help="before each timed step, wait up to this many seconds for the other "
                        "processes to use <= --max-others cores (default 60; --quick: 0)")
    p.add_argument("--no-breakdown", action="store_true", help="leave out the per-layer breakdown")
    p.add_argument("--breakdown-steps", type=int, default=None,
                   help="most hooked steps per breakdown (default 3, --quick 1)")
    p.add_argument("--no-memory", action="store_true", help="leave out the peak-memory step")
    p.add_argument("--extra-step-max-s", type=float, default=60.0,
                   help="skip the memory and breakdown steps of rows slower than this")
    args, unknown = p.parse_known_args(argv)
    if unknown:  # `python -m bench` passes every table the same flags
        print(f"bench.sharnn: ignoring {' '.join(unknown)}", file=sys.stderr)
    if args.quick and not args.compile:
        args.no_compile = True
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.quick else 60.0
    if args.quick and args.max_rounds is None:
        args.max_rounds = args.reps or 3  # a smoke run: no extra rounds waiting for quiet steps

    device = harness.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = args.dtype or ["fp32", "bf16"]
    dropouts = args.dropout if args.dropout is not None else [0.1, 0.0]
    impls = args.impl or list(IMPLS)
    sizes = parse_sizes(args)
    t0 = time.perf_counter()
    peak_record = dict(_peak.peak(device, refresh=args.refresh_peak, quick=args.quick))
    env = harness.environment(device)
    if device.type == "cpu" and env["torch_threads"] < env["cpu_cores"]:
        # The FMA loop ran on every core: the peak of the threads used is their share.
        share = env["torch_threads"] / env["cpu_cores"]
        for k in ("fp32_gflops", "bf16_gflops", "fp16_gflops"):
            if peak_record.get(k):
                peak_record[k] *= share
        peak_record["scaled_to_threads"] = env["torch_threads"]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    roofs = {d: gemm_roof(harness.DTYPES[d], device, 1024 if args.quick else 2048) for d in dtypes}
    rows, bds = [], []
    for size in sizes:
        for dtype_name in dtypes:
            for dropout in dropouts:
                r, b = run_case(size, dtype_name, dropout, impls, device, args=args,
                                peak_record=peak_record, roof=roofs[dtype_name], log=log)
                rows += r
                bds += b
    add_ratios(rows)

    peaks = ", ".join(f"{k.split('_')[0]} {peak_record[k]:.0f}" for k in ("fp32_gflops", "bf16_gflops"))
    shapes = "; ".join(f"{s.name}: d {s.config(0).d_model}, Boom {s.config(0).d_ff}, {s.config(0).n_layers} "
                       f"layers, T {s.seq_len}, B {s.batch}, memory {s.max_memory}" for s in sizes)
    gemms = ", ".join(f"{d} {v:.0f}" for d, v in roofs.items())
    title = (f"SHA-RNN training step (fwd + bwd + AdamW) on {env['gpu'] or env['cpu']} "
             f"({env['cpu_cores']} cores, {env['torch_threads']} threads); {shapes}; physical peak "
             f"GFLOP/s: {peaks}; torch.mm "
             f"GFLOP/s (the % gemm roof): {gemms}; torch "
             f"{env['torch']}, commit {str(env['git']['commit'])[:10]}"
             f"{' (dirty)' if env['git']['dirty'] else ''}, load avg {env['load_avg_1min']}")
    harness.print_table(table_rows(rows), COLUMNS, title=title)
    print(f"(step ms: median of the quiet steps -- other processes used <= {args.max_others} cores "
          "meanwhile -- or of all when none was quiet; quiet/all: their count)")
    print("(x reference / x original: tokens/s against that model in the same case and mode; x eager: "
          "compiled against the same model's eager steps timed in turns with it; loss@1: first step "
          "from the shared weights, equal across models at dropout 0)")
    if device.type == "cpu" and "amx_bf16" in _peak.cpu_flags() and "bf16" in dtypes:
        print("(this CPU has AMX: torch's bf16 GEMMs (oneDNN) run on it, above the bf16 'physical "
              "peak' of bench/peak, which is the AVX-512 vdpbf16ps loop; for bf16 read % gemm)")
    if any(r["mode"] == "compile" for r in rows):
        harness.print_table(compile_table(rows), ["size", "dtype", "dropout", "impl", "warm-up + timing s",
                                                  "frames compiled (after warm-up)", "graphs", "graph breaks",
                                                  "limit hits", "compiled while timed", "break reasons"],
                            title=f"torch.compile (recompile limit {args.compile_limit})")
    if bds:
        harness.print_table(breakdown_table(bds), ["size", "dtype", "dropout", "impl", "kind", "fwd ms",
                                                   "bwd ms", "total ms", "% step", "GFLOP/s"],
                            title="Where the step's time goes (eager; the shortest of up to 3 hooked steps, "
                                  "stopping at one within 25% of the timed median)")
        for line in lstm_summary(bds):
            print(line)
    load = _peak._load_avg()
    print(f"({time.perf_counter() - t0:.0f} s; load avg now {load})")
    if not args.no_json:
        path = harness.save_json(args.json or harness.default_json_path("sharnn", device), {
            "benchmark": "sharnn", "quick": args.quick, "environment": env, "peak": peak_record,
            "sizes": [dataclasses.asdict(s) for s in sizes], "gemm_roof_gflops": roofs, "rows": rows,
            "breakdowns": bds, "args": vars(args)})
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
