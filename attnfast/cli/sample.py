"""``python -m attnfast sample``: generate bytes from a checkpoint.

The prompt runs through the model as one segment; then one byte at a time, each fed back with
the LSTM hidden state and the attention memory carried (the memory keeps the last
``max_memory`` positions, as in training). Bytes are drawn from softmax(logits / temperature),
restricted to the ``top_k`` most likely when given; temperature 0 takes the most likely byte.
"""
from __future__ import annotations

import argparse
import math
import secrets
import sys

import torch

from attnfast.cli import BACKEND_HELP, CLIError, check_backend
from attnfast.cli.checkpoint import load_model
from attnfast.cli.evaluate import autocast_for


@torch.no_grad()
def generate(model: torch.nn.Module, prompt: bytes, length: int, *, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = None, bf16: bool = False) -> bytes:
    """``length`` bytes following ``prompt`` (a newline when empty). Seeded by ``seed`` alone
    (a private generator; torch's global RNG is untouched)."""
    if length < 0:
        raise CLIError(f"length must be >= 0, got {length}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise CLIError(f"temperature must be a number >= 0, got {temperature}")
    vocab = model.config.vocab_size
    if top_k is not None and not 1 <= top_k <= vocab:
        raise CLIError(f"top_k must be in [1, {vocab}], got {top_k}")
    prompt = prompt or b"\n"
    if max(prompt) >= vocab:
        raise CLIError(f"the prompt has byte values >= the model's vocabulary of {vocab}")
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else secrets.randbits(63))
    was_training = model.training
    model.eval()
    out = bytearray()
    try:
        tokens = torch.tensor(list(prompt), dtype=torch.long, device=device).view(-1, 1)
        state = None
        for _ in range(length):
            with autocast_for(device, bf16):
                logits, state = model(tokens, state)
            logits = logits[-1, 0].float()
            if temperature == 0:
                nxt = int(logits.argmax())
            else:
                logits = logits / temperature
                if top_k is not None and top_k < vocab:
                    kth = torch.topk(logits, top_k).values[-1]
                    logits = logits.masked_fill(logits < kth, -math.inf)
                nxt = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen))
            out.append(nxt)
            tokens = torch.tensor([[nxt]], dtype=torch.long, device=device)
    finally:
        model.train(was_training)
    return bytes(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint directory")
    parser.add_argument("--prompt", default="", help="text to continue (UTF-8; default: a newline)")
    parser.add_argument("--length", type=int, default=256, metavar="N", help="bytes to generate (default: 256)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="softmax temperature; 0 takes the most likely byte (default: 1.0)")
    parser.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely bytes")
    parser.add_argument("--seed", type=int, help="seed of the sampling (default: random)")
    parser.add_argument("--echo-prompt", action="store_true", help="print the prompt before the continuation")
    parser.add_argument("--backend", help=BACKEND_HELP)
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--bf16", action="store_true", help="run under bfloat16 autocast")


def run(args: argparse.Namespace) -> int:
    if args.length < 0:
        raise CLIError(f"--length must be >= 0, got {args.length}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise CLIError(f"--temperature must be a number >= 0, got {args.temperature}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, _ = load_model(args.checkpoint, backend=check_backend(args.backend), map_location=device)
    prompt = args.prompt.encode("utf-8", errors="surrogateescape")
    if args.top_k is not None and not 1 <= args.top_k <= model.config.vocab_size:
        raise CLIError(f"--top-k must be in [1, {model.config.vocab_size}], got {args.top_k}")
    text = generate(model, prompt, args.length, temperature=args.temperature, top_k=args.top_k,
                    seed=args.seed, bf16=args.bf16)
    if args.echo_prompt:
        text = prompt + text
    decoded = text.decode("utf-8", errors="replace") + "\n"
    if hasattr(sys.stdout, "buffer"):  # UTF-8 whatever the locale's encoding
        sys.stdout.flush()
        sys.stdout.buffer.write(decoded.encode("utf-8"))
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(decoded)
    return 0
