"""Microbenchmark of the cpu link kernels alone: torch.ops.attnfast.dnc_link_read_forward /
_backward (link update fused with both directional reads) at B = 16, Hw = 1, R = 4.

For each N and thread count: median ms of the forward (its outputs dropped at once, so their
blocks are reused; and kept alive for 64 calls, as autograd keeps them over a 64-step unroll),
of the backward, and of a copy of one link into an existing tensor (the memory roof: it reads and
writes N x N once, the forward reads one and writes one, the backward reads two and writes one). Page faults per call
come with each row: with the block cache off (ATTNFAST_CPU_CACHE_MB=0) the kept-alive forward
shows what fresh pages cost.

    python -m bench.memory_link [--sizes 512,2048] [--threads 1,2] [--reps 20]
"""
from __future__ import annotations

import argparse
import resource

import torch

import attnfast  # noqa: F401  (registers torch.ops.attnfast)
from bench import harness

B, HW, R = 16, 1, 4


def timed(fn, reps):
    fn()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = harness.time_fn(fn, warmup=0, reps=reps)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / reps
    return round(t.median_ms, 3), round(faults)


def case(n, reps):
    g = torch.Generator().manual_seed(0)
    link = torch.rand(B, HW, n, n, generator=g) / n
    prec = torch.rand(B, HW, n, generator=g) / n
    ww = torch.softmax(torch.randn(B, HW, n, generator=g), -1)
    rw = torch.softmax(torch.randn(B, R, n, generator=g), -1)
    grads = (torch.randn_like(link), torch.randn_like(prec), torch.randn(B, R, HW, n, generator=g),
             torch.randn(B, R, HW, n, generator=g))
    ops = torch.ops.attnfast
    dst = torch.empty_like(link)
    kept = []

    def forward_kept():
        kept.append(ops.dnc_link_read_forward(link, prec, ww, rw))
        if len(kept) > 64:
            kept.pop(0)

    rows = {
        "fwd": timed(lambda: ops.dnc_link_read_forward(link, prec, ww, rw), reps),
        "fwd, outputs kept": timed(forward_kept, reps),
        "bwd": timed(lambda: ops.dnc_link_read_backward(*grads, link, prec, ww, rw), reps),
        "copy (roof)": timed(lambda: dst.copy_(link), reps),
    }
    kept.clear()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="512,2048")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--reps", type=int, default=20)
    a, _ = p.parse_known_args(argv)
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        for threads in (int(s) for s in a.threads.split(",")):
            torch.set_num_threads(threads)
            for what, (ms, faults) in case(n, a.reps).items():
                gb = B * HW * n * n * 4 / 1e9
                rows.append({"N": n, "threads": threads, "call": what, "ms": ms, "faults": faults,
                             "link GB/s": round(gb / (ms / 1e3), 1)})
    harness.print_table(rows, ["N", "threads", "call", "ms", "faults", "link GB/s"],
                        title=f"cpu link kernels, B={B} Hw={HW} R={R} fp32 (median ms per call; "
                              f"link GB/s = one link's bytes / time; cache limit "
                              f"{attnfast.memory.cpu_cache_info()['limit_bytes'] >> 20} MB)")
    return 0


if __name__ == "__main__":
    main()
