"""Single-head attention benchmark: attnfast against its peers, measured in the same run.

    python -m bench.attention [--quick] [--device cpu|cuda] [--dtype fp32 --dtype bf16]
                              [--shapes sha|small|all] [--passes fwd fwd+bwd] [--backend cpu ...]

Shapes (causal, bottom-right aligned: the SHA-RNN memory case when Lk > Lq):
  sha    B in {4, 16}, Lq 1024, Lk in {1024, 3072, 5000}, D = Dv = 1024   (Merity's SHA-RNN)
  small  B*H = 32, L = 1024, D in {64, 128}
Rows per shape, dtype and pass (forward under no_grad; forward + backward):
  attnfast-<backend>  attnfast.single_head_attention(q, k, v, causal=True, backend=...);
                      `--backend cuda:flash` (or `:gemm`) times a GPU backend with
                      ATTNFAST_ATTN_STRATEGY set (the flash kernels or the GEMM strategy of wide
                      heads). Default: the CPU kernels on the CPU; on a GPU the cuda and triton
                      backends, plus their flash kernels at head dims > 256. `--backend cpu:keep`
                      / `cpu:recompute` time the CPU backend with ATTNFAST_ATTN_KEEP_MIB set so
                      that the forward keeps the probabilities for the backward / never does.
  sdpa                torch SDPA (attn_mask=causal_lower_right(Lq, Lk) when Lk > Lq, else is_causal)
  eager               the math written out: softmax(q k^T * scale + mask) v (SHA-RNN's attention())
  compile             torch.compile of that eager function (compile time excluded; off with
                      --no-compile and under --quick)
  gemm                the roof: torch.mm 2048^3 in the same dtype, as GFLOP/s (one row per dtype)
Columns: median ms (p10-p90), GFLOP/s of the useful work (forward 4 D x visible (i, j) pairs; fwd+bwd
3.5x that: 2 GEMMs forward, 5 backward), speed-up vs sdpa / eager / the best peer, fraction of the
GEMM roof and of the machine's physical peak (bench/peak: an FMA-throughput loop on the CPU), and
the peak extra memory of one forward call (bench/harness.peak_memory).
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from bench import harness
from bench import peak as _peak

import attnfast
from attnfast.reference.attention import causal_keep

SHAPES = {
    "sha": [(b, 1024, lk, 1024) for b in (4, 16) for lk in (1024, 3072, 5000)],
    "small": [(32, 1024, 1024, 64), (32, 1024, 1024, 128)],
}
SHAPES["all"] = SHAPES["sha"] + SHAPES["small"]


def visible_pairs(lq: int, lk: int) -> int:
    off = lk - lq
    return sum(min(lk, max(0, i + off + 1)) for i in range(lq))


def eager_attention(q, k, v, mask):
    s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + mask
    return torch.matmul(torch.softmax(s, dim=-1), v)


def compiled_eager():
    """A fresh torch.compile of eager_attention. Dynamo's recompile limit (8) counts every shape,
    dtype and grad mode of one function, past which it quietly runs eager; the cache is reset so
    that each case gets its own compiled graph."""
    torch._dynamo.reset()
    return torch.compile(eager_attention, dynamic=False)


def peers(lq: int, lk: int, dtype, device, with_compile: bool):
    from torch.nn.attention.bias import causal_lower_right

    mask = torch.zeros(lq, lk, dtype=dtype, device=device).masked_fill(
        ~causal_keep(lq, lk, device), float("-inf"))
    if lk == lq:
        sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    else:
        bias = causal_lower_right(lq, lk)
        sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # noqa: E731
    out = {"sdpa": sdpa, "eager": lambda q, k, v: eager_attention(q, k, v, mask)}
    if with_compile:
        fn = compiled_eager()
        out["compile"] = lambda q, k, v: fn(q, k, v, mask)
    return out


def gemm_roof(dtype, device, reps, warmup) -> float:
    n = 2048
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    t = harness.time_fn(lambda: torch.mm(a, b), device, warmup=warmup, reps=reps)
    return harness.gflops(2.0 * n**3, t.median_ms)


# Rows added by default on a GPU: the flash kernels of wide heads (where auto takes the GEMM
# strategy); left out at head dims <= 256, where they are what auto runs anyway.
DEFAULT_FLASH_ROWS = ("cuda:flash", "triton:flash")


_USER_STRATEGY = os.environ.get("ATTNFAST_ATTN_STRATEGY")
_USER_KEEP = os.environ.get("ATTNFAST_ATTN_KEEP_MIB")
# "name:keep" / "name:recompute": the keep-probabilities budget (attnfast/ops/attention.py).
KEEP_SPECS = {"keep": str(1 << 40), "recompute": "0"}


def _set_env(name, value):
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def attnfast_call(spec: str):
    """attnfast's attention for a backend spec "name", "name:strategy" or "name:keep|recompute".
    The GPU backends read ATTNFAST_ATTN_STRATEGY per call, forward and backward, and the forward
    reads ATTNFAST_ATTN_KEEP_MIB, so each call sets both (the user's own values where the spec
    names neither) and leaves them for the backward that follows in the same timed call."""
    backend, _, option = spec.partition(":")
    keep = KEEP_SPECS.get(option, _USER_KEEP)
    strategy = (option if option not in KEEP_SPECS else None) or _USER_STRATEGY

    def fn(q, k, v):
        _set_env("ATTNFAST_ATTN_STRATEGY", strategy)
        _set_env("ATTNFAST_ATTN_KEEP_MIB", keep)
        return attnfast.single_head_attention(q, k, v, causal=True, backend=backend)
    return fn


def bench_case(shape, dtype, pass_, backends, device, reps, warmup, roof, peak=None,
               with_compile=False):
    b, lq, lk, d = shape
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(b, n, d, generator=g).to(device=device, dtype=dtype) for n in (lq, lk, lk))
    flop = 4.0 * d * visible_pairs(lq, lk) * b * (3.5 if pass_ == "fwd+bwd" else 1.0)
    impls = {f"attnfast-{spec}": attnfast_call(spec) for spec in backends
             if not (spec.endswith(":flash") and d <= 256 and spec in DEFAULT_FLASH_ROWS)}
    impls.update(peers(lq, lk, dtype, device, with_compile))
    calls = {}
    for name, fn in impls.items():
        if pass_ == "fwd":
            def call(fn=fn):
                with torch.no_grad():
                    return fn(q, k, v)
        else:
            qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
            grad = torch.randn(b, lq, d, dtype=dtype, device=device)

            def call(fn=fn, qg=qg, kg=kg, vg=vg, grad=grad):
                fn(qg, kg, vg).backward(grad)
        calls[name] = call
    # Round-robin: one timed call of each implementation per round, so that load from other
    # processes on a shared machine hits every row alike (the ratios are what we report).
    times = {name: [] for name in calls}
    for rnd in range(warmup + reps):
        for name, call in calls.items():
            t = harness.time_fn(call, device, warmup=0, reps=1)
            if rnd >= warmup:
                times[name].append(t.median_ms)
    rows = []
    for name, call in calls.items():
        t = harness.summarize(times[name])
        mem = harness.peak_memory(call, device) if pass_ == "fwd" else None
        rows.append(dict(shape=f"B{b} Lq{lq} Lk{lk} D{d}", dtype=str(dtype).replace("torch.", ""),
                         pass_=pass_, impl=name, ms=t.median_ms, p10=t.p10_ms, p90=t.p90_ms,
                         gflops=harness.gflops(flop, t.median_ms), mem=mem, roof=roof))
    best_peer = min(r["ms"] for r in rows if not r["impl"].startswith("attnfast"))
    by = {r["impl"]: r["ms"] for r in rows}
    for r in rows:
        r["x_sdpa"] = harness.ratio(by["sdpa"], r["ms"])
        r["x_eager"] = harness.ratio(by["eager"], r["ms"])
        r["x_best"] = harness.ratio(best_peer, r["ms"])
        r["pct_roof"] = 100.0 * r["gflops"] / roof if roof else None
        r["pct_peak"] = 100.0 * r["gflops"] / peak if peak else None
    return rows


def main(argv=None):
    p = harness.common_args(__doc__.splitlines()[0])
    p.add_argument("--shapes", choices=sorted(SHAPES), default="all")
    p.add_argument("--passes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    p.add_argument("--backend", action="append", default=None, help="attnfast backends to time")
    p.add_argument("--max-shapes", type=int, default=None, help="only the first N shapes")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile peer")
    p.add_argument("--batch", type=int, action="append", default=None,
                   help="only shapes with this batch size (repeatable)")
    p.add_argument("--lk", type=int, action="append", default=None,
                   help="only shapes with this key length (repeatable)")
    p.add_argument("--shape", action="append", default=None, metavar="B,LQ,LK,D",
                   help="time this shape instead of --shapes (repeatable), e.g. 2,1024,3072,1024")
    args = p.parse_args(argv)
    device = harness.resolve_device(args.device)
    dtypes = [harness.DTYPES[d] for d in (args.dtype or ["fp32", "bf16"])]
    if args.backend:
        backends = args.backend
    elif device.type == "cuda":
        available = [b for b in ("cuda", "triton") if attnfast.backends()[b] is None]
        backends = available + [f"{b}:flash" for b in available]
    else:
        backends = ["cpu"] if attnfast.backends()["cpu"] is None else []
    reps = args.reps or (2 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else 1
    shapes = [s for s in SHAPES[args.shapes] if (args.batch is None or s[0] in args.batch)
              and (args.lk is None or s[2] in args.lk)][: args.max_shapes]
    if args.shape:
        shapes = [tuple(int(x) for x in spec.split(",")) for spec in args.shape]
        if any(len(sh) != 4 for sh in shapes):
            p.error("--shape takes B,LQ,LK,D")
    elif args.quick and args.max_shapes is None:
        # --quick: the SHA-RNN memory case (B4, Lq 1024, Lk 3072, D 1024) and one small head.
        shapes = [s for s in shapes if s in ((4, 1024, 3072, 1024), (32, 1024, 1024, 64))]
    peak_record = _peak.peak(device, refresh=args.refresh_peak, quick=args.quick)
    rows = []
    for dtype in dtypes:
        roof = gemm_roof(dtype, device, reps, warmup)
        for shape in shapes:
            for pass_ in args.passes:
                rows += bench_case(shape, dtype, pass_, backends, device, reps, warmup, roof,
                                   peak=_peak.peak_gflops(peak_record, dtype),
                                   with_compile=not (args.no_compile or args.quick))
    f = harness.fmt
    table = [{
        "shape": r["shape"], "dtype": r["dtype"], "pass": r["pass_"], "impl": r["impl"],
        "ms (p10-p90)": f"{r['ms']:.1f} ({r['p10']:.1f}-{r['p90']:.1f})",
        "GFLOP/s": f(r["gflops"], ".0f"), "x sdpa": f(r["x_sdpa"]), "x eager": f(r["x_eager"]),
        "x best peer": f(r["x_best"]), "% gemm roof": f(r["pct_roof"], ".0f"),
        "% peak": f(r["pct_peak"], ".0f"),
        "fwd mem MiB": f(harness.mib(r["mem"]), ".1f"),
    } for r in rows]
    env = harness.environment(device)
    cols = ["shape", "dtype", "pass", "impl", "ms (p10-p90)", "GFLOP/s", "x sdpa", "x eager",
            "x best peer", "% gemm roof", "% peak", "fwd mem MiB"]
    roofs = sorted({(r["dtype"], round(r["roof"])) for r in rows})
    peaks = ", ".join(f"{k.split('_')[0]} {peak_record[k]:.0f}" for k in ("fp32_gflops", "bf16_gflops"))
    harness.print_table(table, cols, title=f"single-head attention, causal, {env.get('cpu') or env.get('gpu')}; "
                        f"GEMM roof GFLOP/s: {roofs}; physical peak GFLOP/s: {peaks}")
    if not args.no_json:
        path = harness.save_json(args.json or harness.default_json_path("attention", device),
                                 {"environment": env, "peak": peak_record, "rows": rows})
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    main()
