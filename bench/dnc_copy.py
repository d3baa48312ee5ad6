"""Train attnfast.nn.DNC on the copy task on the CPU (DeepMind's repeat-copy with one repeat).

Each sequence: L in [1, max_len] random bit vectors (``bits`` wide) with a 0 flag channel, then one
delimiter step (flag 1), then L blank steps during which the model must output the L vectors.
Loss: binary cross-entropy over the output phase; bit error: wrong bits (threshold 0.5) per
sequence, averaged over the batch. Stops when the running bit error (mean of the last 50 batches)
is below ``--target`` or after ``--steps`` batches.

    python -m bench.dnc_copy [--steps 20000] [--backend cpu|reference] [--max-len 20]
"""
from __future__ import annotations

import argparse
import collections
import time

import torch
import torch.nn.functional as F

from attnfast.nn import DNC


def make_batch(batch: int, max_len: int, bits: int, generator: torch.Generator, min_len: int = 1):
    """-> inputs (B, 2 Lmax + 1, bits + 1), targets (B, 2 Lmax + 1, bits), mask (B, 2 Lmax + 1)."""
    lens = torch.randint(min_len, max_len + 1, (batch,), generator=generator)
    t = 2 * int(lens.max()) + 1
    x = torch.zeros(batch, t, bits + 1)
    y = torch.zeros(batch, t, bits)
    mask = torch.zeros(batch, t)
    for b, n in enumerate(lens.tolist()):
        seq = torch.randint(0, 2, (n, bits), generator=generator).float()
        x[b, :n, :bits] = seq
        x[b, n, bits] = 1.0
        y[b, n + 1:2 * n + 1] = seq
        mask[b, n + 1:2 * n + 1] = 1.0
    return x, y, mask


def masked_loss(logits, y, mask):
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1)
    return (bce * mask).sum() / mask.shape[0]


def bit_errors(logits, y, mask):
    wrong = ((logits > 0).float() != y).float().sum(-1) * mask
    return wrong.sum().item() / mask.shape[0]


def evaluate(model, max_len, bits, batches=20, seed=1234):
    """Bit errors per sequence on fresh sequences of every length 1..max_len (64 per batch)."""
    g = torch.Generator().manual_seed(seed)
    errs = []
    with torch.no_grad():
        for _ in range(batches):
            x, y, mask = make_batch(64, max_len, bits, g)
            logits, _ = model(x)
            errs.append(bit_errors(logits, y, mask))
    return sum(errs) / len(errs)


def build(bits=6, hidden=64, memory_size=32, word_size=16, num_reads=1, backend=None):
    return DNC(bits + 1, bits, hidden_size=hidden, memory_size=memory_size, word_size=word_size,
               num_reads=num_reads, num_writes=1, clip_value=20.0, backend=backend)


def train(steps=20000, batch=16, max_len=20, bits=6, lr=2e-3, backend=None, target=0.01,
          seed=0, log_every=200, curriculum=True, log=print, model_kw=None,
          max_seconds=None):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = build(bits=bits, backend=backend, **(model_kw or {}))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    recent = collections.deque(maxlen=50)
    cur_len = 2 if curriculum else max_len
    history = []
    t0 = time.time()
    for step in range(1, steps + 1):
        x, y, mask = make_batch(batch, cur_len, bits, g)
        logits, _ = model(x)
        loss = masked_loss(logits, y, mask)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        recent.append(bit_errors(logits.detach(), y, mask))
        err = sum(recent) / len(recent)
        history.append((step, loss.item(), err, cur_len))
        if curriculum and cur_len < max_len and len(recent) == recent.maxlen and err < 0.05:
            cur_len = min(max_len, cur_len + 2)  # lengthen once the current lengths are learnt
            recent.clear()
        if step % log_every == 0:
            log(f"step {step:6d}  max_len {cur_len:2d}  loss {loss.item():8.4f}  "
                f"bit err/seq {err:7.4f}  {time.time() - t0:7.1f}s")
        if max_seconds is not None and time.time() - t0 > max_seconds:
            log(f"time limit: stopped after {step} steps at max_len {cur_len}, bit error {err:.4f}")
            break
        if cur_len == max_len and len(recent) == recent.maxlen and err < target:
            held_out = evaluate(model, max_len, bits, batches=10)  # 640 fresh sequences
            log(f"step {step}: training bit error {err:.4f}, held-out {held_out:.4f} per sequence")
            if held_out < target:
                log(f"reached held-out bit error {held_out:.4f} < {target} per sequence at "
                    f"max_len {max_len} after {step} steps ({time.time() - t0:.0f}s)")
                break
            recent.clear()
    return model, history


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--bits", type=int, default=6)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--backend", default=None)
    p.add_argument("--target", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-curriculum", action="store_true")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: the per-step work is tiny, threads only add overhead)")
    p.add_argument("--max-minutes", type=float, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, hist = train(a.steps, a.batch, a.max_len, a.bits, a.lr, a.backend, a.target, a.seed,
                        curriculum=not a.no_curriculum,
                        max_seconds=None if a.max_minutes is None else 60 * a.max_minutes)
    # Final evaluation on fresh sequences of every length 1..max_len (another seed).
    err = evaluate(model, a.max_len, a.bits, batches=20, seed=4321)
    print(f"final eval: bit error per sequence {err:.4f} over 1280 sequences "
          f"of length 1..{a.max_len} (train steps {hist[-1][0]})", flush=True)

if __name__ == "__main__":
    main()
