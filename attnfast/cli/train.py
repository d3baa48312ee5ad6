"""``python -m attnfast train``: train the SHA-RNN byte-level language model.

The recipe is SHA-RNN's ``main.py``: the training split as B contiguous streams walked in order;
each step a segment of random length (``bptt`` with probability 0.95, else ``bptt / 2``, then
N(that, 5), truncated to an int, at least 5, at most ``bptt``); the LSTM hidden state and the
attention memory carried from segment to segment and detached between them (reset at each new
epoch); cross entropy in nats (bpc = nats / ln 2); the learning rate warmed up linearly over
``--warmup`` steps then constant; gradients clipped to a global norm of ``--clip``; AdamW, or
LAMB (``pytorch_optimizer.Lamb``). Under torchrun, DDP or FSDP2 (``attnfast.cli.distributed``).

Everything the run needs to continue is in the checkpoint (``attnfast.cli.checkpoint``):
``--resume`` after N steps gives the same per-step losses as one run (bitwise in fp32 on a
deterministic backend). The first Ctrl-C stops after the step in progress, saves and exits 130.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
import zlib

import torch
import torch.nn.functional as F

from attnfast.cli import BACKEND_HELP, CLIError, check_backend
from attnfast.cli import checkpoint as ckpt
from attnfast.cli import distributed as dp
from attnfast.cli.data import MIN_CORPUS_BYTES, batchify, load_corpus, segment
from attnfast.cli.evaluate import autocast_for, evaluate
from attnfast.models.sharnn import (ATTENTION_PLACES, PRESETS, SHARNN, SHARNNConfig, SHARNNState,
                                    config_from_preset, count_parameters)

LOG_FILE = "log.jsonl"
PLOT_FILE = "bpc.png"
INTERRUPTED_EXIT = 130  # 128 + SIGINT, the shell's convention

# Settings that define the run. Defaults are SHA-RNN's where it has one (batch 16, bptt 1024,
# lr 2e-3, warmup 800, clip 0.25, weight decay 1.2e-6, seed 1111). On --resume they come from
# the checkpoint and may not be changed.
RUN_DEFAULTS = {
    "preset": "tiny", "data": None, "max_bytes": None,
    "batch_size": 16, "bptt": 1024, "lr": 2e-3, "warmup": 800, "clip": 0.25,
    "optimizer": "adamw", "weight_decay": 1.2e-6, "seed": 1111, "bf16": False,
}
MODEL_OVERRIDES = ("d_model", "d_ff", "n_layers", "max_memory", "attention",
                   "dropout", "dropouth", "dropouti")
# Settings that may differ between a run and its --resume (they do not change the training);
# on --resume those not given are the checkpoint's.
SESSION_DEFAULTS = {"eval_every": 500, "save_every": None, "eval_batch_size": 10, "eval_bytes": None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("the run (fixed once started; --resume reads them from the checkpoint)")
    run.add_argument("--preset", help=f"model size: {', '.join(PRESETS)} (default: tiny)")
    run.add_argument("--data", metavar="FILE",
                     help="byte corpus (any text, or enwik8); default: the Python standard library's sources")
    run.add_argument("--max-bytes", type=int, metavar="N", help="read at most N bytes of the corpus")
    run.add_argument("--batch-size", type=int, metavar="B", help="contiguous streams per step (default: 16)")
    run.add_argument("--bptt", type=int, metavar="T", help="segment length (default: 1024)")
    run.add_argument("--lr", type=float, help="peak learning rate (default: 2e-3)")
    run.add_argument("--warmup", type=int, metavar="STEPS", help="linear warmup steps (default: 800)")
    run.add_argument("--clip", type=float, help="clip gradients to this global norm; 0: off (default: 0.25)")
    run.add_argument("--optimizer", choices=("adamw", "lamb"), help="default: adamw")
    run.add_argument("--weight-decay", type=float, help="default: 1.2e-6")
    run.add_argument("--seed", type=int, help="default: 1111")
    run.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                     help="bfloat16 autocast on the run's device")
    model = parser.add_argument_group("model overrides of the preset")
    model.add_argument("--d-model", type=int)
    model.add_argument("--d-ff", type=int)
    model.add_argument("--n-layers", type=int)
    model.add_argument("--max-memory", type=int)
    model.add_argument("--attention", choices=ATTENTION_PLACES)
    model.add_argument("--dropout", type=float, help="output dropout (SHA-RNN's --dropout)")
    model.add_argument("--dropouth", type=float, help="dropout inside the blocks")
    model.add_argument("--dropouti", type=float, help="embedding dropout")
    session = parser.add_argument_group("this session")
    session.add_argument("--steps", type=int, required=True, metavar="N",
                         help="train until step N (with --resume: the total, counting earlier steps)")
    session.add_argument("--out", required=True, metavar="DIR",
                         help="directory of the checkpoint, log.jsonl and bpc.png")
    session.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    session.add_argument("--eval-every", type=int, metavar="N",
                         help="valid bpc every N steps, 0: only at the end (default: 500)")
    session.add_argument("--save-every", type=int, metavar="N",
                         help="checkpoint every N steps (default: at each evaluation); always at the end")
    session.add_argument("--eval-batch-size", type=int, metavar="B", help="default: 10 (SHA-RNN's)")
    session.add_argument("--eval-bytes", type=int, metavar="N",
                         help="evaluate on the first N bytes of the valid split (default: all of it)")
    session.add_argument("--backend", help=BACKEND_HELP)
    session.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    session.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    session.add_argument("--fsdp", action="store_true",
                         help="under torchrun: shard with FSDP2 (fully_shard) instead of DDP")
    session.add_argument("--no-progress", action="store_true", help="no progress bar")


# ----------------------------------------------------------------------------- settings

def _check(condition: bool, message: str) -> None:
    if not condition:
        raise CLIError(message)


def resolve_settings(args: argparse.Namespace, saved: dict | None) -> dict:
    """The run's settings: the command line over the defaults, or on --resume the checkpoint's
    (a different value given on the command line is an error)."""
    run = {}
    for key in (*RUN_DEFAULTS, *MODEL_OVERRIDES):
        given = getattr(args, key)
        if key == "data" and given is not None:
            given = os.path.abspath(given)
        if saved is None:
            run[key] = given if given is not None else RUN_DEFAULTS.get(key)
        else:
            if given is not None and given != saved.get(key):
                raise CLIError(f"--{key.replace('_', '-')} {given} differs from the checkpoint's "
                               f"{saved.get(key)}; --resume continues the same run")
            run[key] = saved.get(key)
    for key, default in SESSION_DEFAULTS.items():  # given, else the checkpoint's, else the default
        given = getattr(args, key)
        run[key] = given if given is not None else (saved or {}).get(key, default)
    if args.eval_every is not None and args.save_every is None:
        run["save_every"] = None  # follows the new --eval-every
    if run["save_every"] is None:
        run["save_every"] = run["eval_every"]
    _validate(run, args)
    return run


def _validate(run: dict, args) -> None:
    _check(args.steps >= 1, f"--steps must be >= 1, got {args.steps}")
    for key in ("batch_size", "bptt", "eval_batch_size"):
        _check(run[key] >= 1, f"--{key.replace('_', '-')} must be >= 1, got {run[key]}")
    for key in ("warmup", "eval_every", "save_every"):
        _check(run[key] >= 0, f"--{key.replace('_', '-')} must be >= 0, got {run[key]}")
    _check(math.isfinite(run["lr"]) and run["lr"] > 0, f"--lr must be a positive number, got {run['lr']}")
    _check(math.isfinite(run["clip"]) and run["clip"] >= 0, f"--clip must be >= 0, got {run['clip']}")
    _check(math.isfinite(run["weight_decay"]) and run["weight_decay"] >= 0,
           f"--weight-decay must be >= 0, got {run['weight_decay']}")
    _check(run["max_bytes"] is None or run["max_bytes"] >= MIN_CORPUS_BYTES,
           f"--max-bytes must be >= {MIN_CORPUS_BYTES} (enough to split 90/5/5), got {run['max_bytes']}")
    _check(run["eval_bytes"] is None or run["eval_bytes"] >= 1,
           f"--eval-bytes must be >= 1, got {run['eval_bytes']}")


def model_config(run: dict) -> SHARNNConfig:
    overrides = {k: run[k] for k in MODEL_OVERRIDES if run[k] is not None}
    try:
        return config_from_preset(run["preset"], **overrides)
    except ValueError as e:
        raise CLIError(str(e)) from None


def corpus_fingerprint(corpus) -> dict:
    return {"bytes": [corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()],
            "train_crc32": zlib.crc32(corpus.train.numpy())}


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "lamb":
        from pytorch_optimizer import Lamb
        return Lamb(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def draw_seq_len(gen: torch.Generator, bptt: int) -> int:
    """SHA-RNN's variable segment length: bptt (p = 0.95) or bptt / 2, then N(that, 5)
    truncated to an int, clamped to [5, bptt] (to bptt when bptt < 5)."""
    base = bptt if torch.rand((), generator=gen).item() < 0.95 else bptt / 2.0
    drawn = int(torch.normal(float(base), 5.0, (), generator=gen).item())
    return min(max(5, drawn), bptt)


def lr_at(step: int, base: float, warmup: int) -> float:
    """Learning rate of the step with 0-based index ``step``: linear warmup to ``base``."""
    return base if warmup <= 0 else base * min(1.0, (step + 1) / warmup)


# ----------------------------------------------------------------------------- log and plot

class RunLog:
    """log.jsonl (one record per step, plus valid records) and bpc.png; rank 0 only."""

    def __init__(self, out: str, resume_step: int | None, enabled: bool):
        self.path, self.plot_path, self.enabled = os.path.join(out, LOG_FILE), os.path.join(out, PLOT_FILE), enabled
        self.train: list[tuple[int, float]] = []
        self.valid: list[tuple[int, float]] = []
        if not enabled:
            return
        kept = []
        if resume_step is not None and os.path.exists(self.path):
            # Records past the checkpoint's step belong to steps that will be run again.
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    with contextlib.suppress(json.JSONDecodeError):
                        record = json.loads(line)
                        if isinstance(record, dict) and record.get("step", math.inf) <= resume_step:
                            kept.append(record)
                            self._remember(record)
        ckpt.atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.file = open(self.path, "a", encoding="utf-8")

    def _remember(self, record: dict) -> None:
        if "bpc" in record:
            self.train.append((record["step"], record["bpc"]))
        if "valid_bpc" in record:
            self.valid.append((record["step"], record["valid_bpc"]))

    def write(self, record: dict) -> None:
        if self.enabled:
            self._remember(record)
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def plot(self) -> None:
        if not self.enabled or not self.train:
            return
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        fig = Figure(figsize=(7, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(*zip(*self.train), lw=0.6, alpha=0.7, label="train (per step)")
        if self.valid:
            ax.plot(*zip(*self.valid), "o-", label="valid")
        ax.set_xlabel("step")
        ax.set_ylabel("bits per character")
        ax.grid(alpha=0.3)
        ax.legend()
        with ckpt.temporary_beside(self.plot_path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
            ckpt.commit(tmp, self.plot_path)

    def close(self) -> None:
        if self.enabled:
            self.file.close()


# ----------------------------------------------------------------------------- Ctrl-C

class StopRequest:
    """The first SIGINT asks the loop to stop after the step in progress (so the checkpoint is
    of a finished step); a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        print("\nattnfast train: stopping after this step to save a checkpoint (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# ----------------------------------------------------------------------------- the trainer

def _pack_state(state: SHARNNState | None, ctx: dp.Distributed):
    """The carried state with every rank's streams (a collective), on the CPU."""
    if state is None:
        return None
    return {"hidden": [[dp.gather_streams(t, ctx).cpu() for t in hc] for hc in state.hidden],
            "mems": [None if m is None else dp.gather_streams(m, ctx).cpu() for m in state.mems]}


def _unpack_state(packed, streams: slice, device) -> SHARNNState | None:
    if packed is None:
        return None
    return SHARNNState([tuple(t[:, streams].to(device) for t in hc) for hc in packed["hidden"]],
                       [None if m is None else m[:, streams].to(device) for m in packed["mems"]])


@dataclasses.dataclass
class Position:
    step: int = 0      # optimizer steps done
    row: int = 0       # next row of the (N, B) training streams
    epoch: int = 0


class Trainer:
    def __init__(self, args: argparse.Namespace, ctx: dp.Distributed, device: torch.device):
        self.args, self.ctx, self.device, self.out = args, ctx, device, args.out
        meta = self._existing_checkpoint(args)
        self.run = resolve_settings(args, meta.get("train_args") if meta else None)
        run = self.run
        _check(run["batch_size"] % ctx.world_size == 0,
               f"--batch-size {run['batch_size']} must be a multiple of the {ctx.world_size} processes")
        _check(run["eval_batch_size"] % ctx.world_size == 0,
               f"--eval-batch-size {run['eval_batch_size']} must be a multiple of the {ctx.world_size} processes")
        self.config = model_config(run)
        corpus = load_corpus(run["data"], run["max_bytes"])
        self.corpus_source, self.fingerprint = corpus.source, corpus_fingerprint(corpus)
        if meta and meta.get("data") != self.fingerprint:
            raise CLIError(f"the corpus ({corpus.source}) is not the one the checkpoint in {self.out} "
                           "was trained on")
        self.streams = batchify(corpus.train, run["batch_size"])[:, ctx.local_streams(run["batch_size"])]
        self.valid = corpus.valid if run["eval_bytes"] is None else corpus.valid[: run["eval_bytes"]]
        _check(self.valid.numel() // run["eval_batch_size"] >= 2,
               f"the valid split ({self.valid.numel()} bytes) is too short for --eval-batch-size "
               f"{run['eval_batch_size']}; lower it or give a larger corpus")

        torch.manual_seed(run["seed"])  # the same on every rank: same init, same dropout draws
        model = SHARNN(self.config, backend=check_backend(args.backend)).to(device)
        if meta:
            ckpt.load_weights(model, self.out, meta, device=device)
            trainer_state = ckpt.load_trainer_state(self.out, meta)
        self.n_params = count_parameters(model)
        os.makedirs(self.out, exist_ok=True)
        self.runner = dp.wrap(model, ctx, args.fsdp)
        self.model = model  # unwrapped (FSDP2 shards it in place): evaluation and state dicts
        self.optimizer = make_optimizer(run["optimizer"], model.parameters(), run["lr"], run["weight_decay"])
        self.seq_gen = torch.Generator().manual_seed(run["seed"])
        self.pos, self.carried, self.valid_bpc = Position(), None, None
        if meta:
            dp.load_optimizer_state(model, self.optimizer, trainer_state["optimizer"])
            self._restore(trainer_state)
        if args.compile:
            self.runner = torch.compile(self.runner, dynamic=True)
        self._export = None
        self.last_saved = self.pos.step if meta else None

    def _existing_checkpoint(self, args) -> dict | None:
        has = os.path.exists(os.path.join(args.out, ckpt.CONFIG_FILE))
        if args.resume:
            if not has:
                raise CLIError(f"--resume: {args.out} holds no checkpoint ({ckpt.CONFIG_FILE} missing)")
            meta = ckpt.read_meta(args.out)
            _check(args.steps > meta["step"], f"--steps {args.steps}: the checkpoint in {args.out} is "
                   f"already at step {meta['step']}; ask for more steps to continue it")
            _check("train_args" in meta, f"the checkpoint in {args.out} has no training state to resume")
            return meta
        if has:
            raise CLIError(f"{args.out} already holds a checkpoint; pass --resume to continue it "
                           "or choose another --out")
        return None

    # -- state of the run -------------------------------------------------------------

    def _restore(self, state: dict) -> None:
        self.pos = Position(state["step"], state["row"], state["epoch"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.seq_gen.set_state(state["rng"]["seq_len"])
        self.carried = _unpack_state(state["carried"], self.ctx.local_streams(self.run["batch_size"]), self.device)
        self.valid_bpc = state.get("valid_bpc")

    def save(self) -> None:
        """A checkpoint of the finished step (every rank takes part; rank 0 writes)."""
        weights = dp.full_model_state(self.model)
        optimizer = dp.full_optimizer_state(self.model, self.optimizer)
        carried = _pack_state(self.carried, self.ctx)
        if self.ctx.is_main:
            if self._export is None:  # a plain CPU twin, for safetensors' tied-weight handling
                with torch.random.fork_rng(devices=[]):
                    self._export = SHARNN(self.config)
            self._export.load_state_dict(weights)
            rng = {"torch": torch.get_rng_state(), "seq_len": self.seq_gen.get_state(),
                   "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
            trainer_state = {"optimizer": optimizer, "row": self.pos.row, "epoch": self.pos.epoch,
                             "rng": rng, "carried": carried, "valid_bpc": self.valid_bpc}
            meta = {"step": self.pos.step, "train_args": self.run, "data": self.fingerprint,
                    "world_size": self.ctx.world_size,
                    "parallel": ("fsdp2" if self.args.fsdp else "ddp") if self.ctx.enabled else "none",
                    "valid_bpc": self.valid_bpc, "torch": torch.__version__}
            ckpt.save_checkpoint(self.out, self._export, meta, trainer_state)
        dp.barrier(self.ctx)
        self.last_saved = self.pos.step

    # -- one step ---------------------------------------------------------------------

    def step(self) -> dict:
        run, pos = self.run, self.pos
        seq_len = draw_seq_len(self.seq_gen, run["bptt"])
        if pos.row >= self.streams.shape[0] - 2:  # fewer than two rows left: a new epoch
            pos.row, pos.epoch, self.carried = 0, pos.epoch + 1, None
        inputs, targets = segment(self.streams, pos.row, seq_len)
        inputs = inputs.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        lr = lr_at(pos.step, run["lr"], run["warmup"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast_for(self.device, run["bf16"]):
            logits, state = self.runner(inputs, self.carried)
        # This rank's mean over its tokens; DDP/FSDP2 average the gradients over ranks.
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = None
        if run["clip"] > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), run["clip"])
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        self.optimizer.step()
        self.carried = state.detach()
        pos.row += inputs.shape[0]
        pos.step += 1
        return {"step": pos.step, "loss": loss.detach().double().cpu(), "lr": lr,
                "seq_len": int(inputs.shape[0]), "epoch": pos.epoch, "grad_norm": grad_norm}

    def evaluate(self):
        result = evaluate(self.model, self.valid, batch_size=self.run["eval_batch_size"],
                          bptt=self.run["bptt"], bf16=self.run["bf16"], ctx=self.ctx)
        self.valid_bpc = result.bpc
        return result

    # -- the loop ---------------------------------------------------------------------

    def train(self) -> int:
        from tqdm import tqdm
        args, run, ctx = self.args, self.run, self.ctx
        log = RunLog(self.out, self.pos.step if args.resume else None, ctx.is_main)
        if ctx.is_main:
            mode = f", {ctx.world_size} processes ({'FSDP2' if args.fsdp else 'DDP'})" if ctx.enabled else ""
            print(f"attnfast train: {self.n_params:,} parameters on {self.device}{mode}; "
                  f"corpus {self.corpus_source}; from step {self.pos.step} to {args.steps}", flush=True)
        bar = tqdm(total=args.steps, initial=self.pos.step, unit="step", file=sys.stderr, dynamic_ncols=True,
                   disable=args.no_progress or not ctx.is_main or not sys.stderr.isatty())
        start_step, started, tokens, record = self.pos.step, time.perf_counter(), 0, None
        interrupted = False
        try:
            with StopRequest() as stop:
                while self.pos.step < args.steps:
                    t0 = time.perf_counter()
                    record = self.step()
                    # One small all-reduce per step: the mean loss and whether any rank was
                    # asked to stop (so that every rank stops after the same step).
                    reduced = dp.mean_over_ranks(torch.stack(
                        [record["loss"], torch.tensor(float(stop.requested), dtype=torch.float64)]), ctx)
                    record["loss"] = float(reduced[0])
                    record["bpc"] = record["loss"] / math.log(2)
                    step_tokens = record["seq_len"] * run["batch_size"]
                    tokens += step_tokens
                    record["tokens_per_s"] = step_tokens / (time.perf_counter() - t0)
                    log.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", bpc=f"{record['bpc']:.3f}",
                                    tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
                    bar.update(1)
                    step = self.pos.step
                    if bool(reduced[1] > 0):
                        interrupted = True
                        break
                    if run["eval_every"] and step % run["eval_every"] == 0 and step < args.steps:
                        self._eval_and_log(log)
                    if run["save_every"] and step % run["save_every"] == 0 and step < args.steps:
                        self.save()
        except KeyboardInterrupt:
            bar.close()
            log.close()
            last = "none" if self.last_saved is None else f"step {self.last_saved}"
            print(f"attnfast train: aborted during step {self.pos.step + 1}, nothing saved "
                  f"(last checkpoint: {last})", file=sys.stderr, flush=True)
            return INTERRUPTED_EXIT
        bar.close()
        if interrupted:
            if self.last_saved != self.pos.step:
                self.save()
            log.plot()
            log.close()
            if ctx.is_main:
                print(f"attnfast train: interrupted at step {self.pos.step}; checkpoint saved in "
                      f"{self.out} (continue with --resume)", file=sys.stderr, flush=True)
            return INTERRUPTED_EXIT
        valid = self._eval_and_log(log)
        self.save()
        log.close()
        if ctx.is_main:
            elapsed = time.perf_counter() - started
            last = f"train loss {record['loss']:.4f} nats ({record['bpc']:.4f} bpc), " if record else ""
            print(f"done: step {self.pos.step} ({self.pos.step - start_step} steps in {elapsed:.1f} s, "
                  f"{tokens / max(elapsed, 1e-9):.0f} tokens/s), {last}valid bpc {valid.bpc:.4f}; "
                  f"checkpoint in {self.out}", flush=True)
        return 0

    def _eval_and_log(self, log: RunLog):
        result = self.evaluate()
        log.write({"step": self.pos.step, "valid_loss": result.loss, "valid_bpc": result.bpc,
                   "valid_bytes": result.bytes})
        log.plot()
        return result


def run(args: argparse.Namespace) -> int:
    ctx, device = dp.setup(args.device)
    try:
        return Trainer(args, ctx, device).train()
    finally:
        dp.teardown(ctx)
