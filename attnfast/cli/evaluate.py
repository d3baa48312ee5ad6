"""``python -m attnfast eval``: bits per character of a checkpoint on a split.

As SHA-RNN's paper evaluates: no dropout, the split cut into B contiguous streams, segments of
``bptt`` bytes in order, with the LSTM hidden state and the attention memory carried from each
segment to the next through the whole split. The result is the mean cross entropy over every
predicted byte, in nats, and bpc = nats / ln 2.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys

import torch
import torch.nn.functional as F

from attnfast.cli import BACKEND_HELP, CLIError, check_backend
from attnfast.cli.checkpoint import load_model
from attnfast.cli.data import SPLITS, batchify, load_corpus, segment
from attnfast.cli.distributed import Distributed, sum_over_ranks

DEFAULT_BATCH_SIZE = 10  # SHA-RNN's eval_batch_size


@dataclasses.dataclass(frozen=True)
class EvalResult:
    loss: float      # mean cross entropy per predicted byte, nats
    bytes: int       # predicted bytes (targets) counted

    @property
    def bpc(self) -> float:
        return self.loss / math.log(2)

    def line(self, split: str) -> str:
        return f"{split} bpc {self.bpc:.4f} (loss {self.loss:.4f} nats, {self.bytes} bytes)"


def autocast_for(device: torch.device, bf16: bool):
    """torch.autocast to bfloat16 on the run's device type, or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: torch.Tensor, *, batch_size: int = DEFAULT_BATCH_SIZE,
             bptt: int = 1024, carry: bool = True, bf16: bool = False,
             ctx: Distributed = Distributed(), progress: bool = False) -> EvalResult:
    """Cross entropy of ``model`` on the byte tensor ``data``: ``batch_size`` contiguous
    streams, segments of ``bptt``; hidden state and memory carried through the whole split
    (``carry=False`` starts every segment afresh, for comparison). Under torchrun each rank
    runs its share of the streams and the sums are added over ranks. Leaves the model's mode
    and torch's RNG as they were."""
    if bptt < 1:
        raise CLIError(f"bptt must be >= 1, got {bptt}")
    if batch_size < 1 or batch_size % ctx.world_size:
        raise CLIError(f"eval batch size must be a positive multiple of the {ctx.world_size} "
                       f"processes, got {batch_size}")
    device = next(model.parameters()).device
    streams = batchify(data, batch_size)[:, ctx.local_streams(batch_size)]
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    state = None
    starts = range(0, streams.shape[0] - 1, bptt)
    bar = _progress(len(starts), progress and ctx.is_main)
    try:
        with torch.random.fork_rng(devices=[]):
            for start in starts:
                inputs, targets = segment(streams, start, bptt)
                inputs, targets = inputs.to(device), targets.to(device)
                with autocast_for(device, bf16):
                    logits, state = model(inputs, state if carry else None)
                # fp32 log-softmax, fp64 sum: millions of terms
                total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                         targets.reshape(-1), reduction="sum").double()
                bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    counted = (streams.shape[0] - 1) * streams.shape[1]
    sums = sum_over_ranks(torch.stack([total.cpu(), torch.tensor(float(counted), dtype=torch.float64)]), ctx)
    return EvalResult(float(sums[0] / sums[1]), int(sums[1]))


def _progress(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc="eval", unit="seg", disable=not (enabled and sys.stderr.isatty()),
                leave=False, file=sys.stderr)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="DIR",
                        help="checkpoint directory written by 'train' (its --out)")
    parser.add_argument("--split", default="valid", choices=SPLITS[1:] + SPLITS[:1],
                        help="which split to evaluate (default: valid)")
    parser.add_argument("--data", metavar="FILE",
                        help="corpus file (default: the one the checkpoint was trained on)")
    parser.add_argument("--corpus-max-bytes", type=int, metavar="N",
                        help="read at most N bytes of the corpus before splitting it 90/5/5 "
                             "(default: the checkpoint's, so the split is the one trained with)")
    parser.add_argument("--max-bytes", type=int, metavar="N",
                        help="evaluate only the first N bytes of the split (quick checks)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="B",
                        help=f"contiguous streams (default: {DEFAULT_BATCH_SIZE}; SHA-RNN's test used 1)")
    parser.add_argument("--bptt", type=int, metavar="T", help="segment length (default: the training --bptt)")
    parser.add_argument("--no-carry", action="store_true",
                        help="start every segment with empty memory and hidden state (ablation)")
    parser.add_argument("--backend", help=BACKEND_HELP)
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--bf16", action="store_true", help="run under bfloat16 autocast")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _positive(name: str, value) -> None:
    if value is not None and value < 1:
        raise CLIError(f"{name} must be >= 1, got {value}")


def run(args: argparse.Namespace) -> int:
    for name in ("max_bytes", "corpus_max_bytes", "batch_size", "bptt"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, meta = load_model(args.checkpoint, backend=check_backend(args.backend), map_location=device)
    trained = meta.get("train_args", {})
    data_path = args.data if args.data is not None else trained.get("data")
    corpus_max = args.corpus_max_bytes if args.corpus_max_bytes is not None else trained.get("max_bytes")
    corpus = load_corpus(data_path, corpus_max)
    data = corpus.split(args.split)
    if args.max_bytes is not None:
        data = data[: args.max_bytes]
    bptt = args.bptt or trained.get("bptt") or 1024
    result = evaluate(model, data, batch_size=args.batch_size, bptt=bptt, carry=not args.no_carry,
                      bf16=args.bf16, progress=not args.no_progress)
    print(result.line(args.split) + f" [step {meta['step']}, {args.batch_size} streams, "
          f"bptt {bptt}{', memory reset per segment' if args.no_carry else ''}]")
    return 0
