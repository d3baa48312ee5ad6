"""LSTM benchmark: one layer at SHA-RNN's shapes, attnfast's CPU recurrence against torch's
nn.LSTM (its oneDNN path on the CPU), measured in the same run.

    python -m bench.lstm [--quick] [--dtype fp32 --dtype bf16] [--batch 2 --batch 16]
                         [--seq-len 1024] [--hidden 1024] [--input 1024] [--zigzag-off]

H = I = 1024, T = 1024 (--quick: T = 128, few repetitions), B = 2 and 16; bf16 rows run with
bf16 weights and inputs on both sides. Rows per batch, dtype and pass (forward under no_grad;
forward+backward of the output with a random gradient):
  attnfast   attnfast.nn.LSTM (backend "cpu") on the same state_dict: gates_x = F.linear(x,
             w_ih, b) (one GEMM), the recurrence kernels lstm_forward / lstm_backward, the weight
             and input gradients as GEMMs (grad_w_hh = dA^T [h0; h[:-1]], grad_w_ih = dA^T x,
             grad_x = dA w_ih) through autograd, as a user runs it
  attnfast-zz0  the same with ATTNFAST_CPU_LSTM_ZIGZAG=0 (tiles ascending every step; --zigzag-off)
  torch      torch.nn.LSTM(1024, 1024) on the same weights
Columns: median ms (p10-p90), GFLOP/s (forward 8 T B H (I + H), fwd+bwd 3x), % of the fp32
physical peak (bench/peak), speed-up vs torch, and the recurrence's physical limit: the bytes of
w_hh read per step (4H x H x 2 for the bf16 forward's panels at B <= 6, x 4 for fp32, for bf16
from B = 7 on and for the backward's panels) x T over the read bandwidth of the threads (`read GB/s`: one core summing a 16 MiB fp32
tensor, i.e. L3 on this machine, times the threads: an assumption, see the notes).
--thread-time: one thread, the ops' per-step CPU time of the calling thread (robust on a shared
machine), the w_hh bytes per step over it, and torch's layer on one thread beside them.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

import torch
import torch.nn.functional as F

import attnfast
import attnfast.nn  # noqa: F401
from bench import harness
from bench import peak as _peak

PASSES = ("fwd", "fwd+bwd")
COLUMNS = ["B", "dtype", "pass", "impl", "ms", "p10-p90", "GFLOP/s", "% fp32 peak", "x torch",
           "limit ms", "x limit"]


@contextlib.contextmanager
def _env(name: str, value: str | None):
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def read_bandwidth_gbs(nbytes: int, reps: int = 200) -> float:
    """GB/s of one core's streaming read of an nbytes buffer, repeated (so it is served from the
    cache level that holds it): torch.sum on one thread; the best of `reps` runs (other processes
    can only slow a read down). One thread, because a 2-thread torch.sum of a few MiB measures
    the wake-up of the second thread on a busy machine (1-4 GB/s here) rather than the cache."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        buf = torch.ones(nbytes // 4)
        buf.sum()
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            buf.sum()
            best = min(best, (time.perf_counter_ns() - t0) / 1e9)
    finally:
        torch.set_num_threads(threads)
    return nbytes / best / 1e9


def run(dtype, B, T, H, I, *, quick, reps, warmup, peak_record, bw_gbs, zigzag_off):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(I, H).to(dtype)
    x = torch.randn(T, B, I, dtype=dtype)
    h0 = torch.zeros(B, H, dtype=dtype)
    c0 = torch.zeros(B, H, dtype=dtype)
    grad_out = torch.randn(T, B, H, dtype=dtype)
    flop_fwd = 8.0 * T * B * H * (I + H)
    peak = _peak.peak_gflops(peak_record, torch.float32)
    # w_hh bytes streamed per step: the forward's panels are bf16 for bf16 at B <= 6 (AVX-512
    # BF16), fp32 otherwise; the backward's are fp32. Both cores stream disjoint halves, at one core's
    # measured read bandwidth each (an assumption: L3 serving two cores at twice one core's rate).
    cores = min(torch.get_num_threads(), max(1, (H + 63) // 64))
    fwd_bytes = 4 * H * H * (2 if dtype == torch.bfloat16 and B <= 6 else 4)
    bwd_bytes = 4 * H * H * 4
    limit_fwd_ms = fwd_bytes * T / (cores * bw_gbs * 1e9) * 1e3
    limit_bwd_ms = bwd_bytes * T / (cores * bw_gbs * 1e9) * 1e3
    default_reps = 3 if quick else 7
    reps = reps or default_reps
    warmup = 1 if warmup is None else warmup

    def torch_fwd():
        with torch.no_grad():
            return lstm(x, (h0[None], c0[None]))

    def torch_fwd_bwd():
        xr = x.detach().requires_grad_()
        out, _ = lstm(xr, (h0[None], c0[None]))
        out.backward(grad_out)
        return out

    # attnfast's drop-in on the same weights (its state_dict is nn.LSTM's), on the cpu kernels.
    af = attnfast.nn.LSTM(I, H, backend="cpu").to(dtype)
    af.load_state_dict(lstm.state_dict())

    def af_fwd():
        with torch.no_grad():
            return af(x, (h0[None], c0[None]))

    def af_fwd_bwd():
        xr = x.detach().requires_grad_()
        out, _ = af(xr, (h0[None], c0[None]))
        out.backward(grad_out)
        return out

    impls = [("torch", torch_fwd, torch_fwd_bwd, None), ("attnfast", af_fwd, af_fwd_bwd, None)]
    if zigzag_off:
        impls.append(("attnfast-zz0", af_fwd, af_fwd_bwd, "0"))
    rows = []
    for pas in PASSES:
        torch_ms = None
        for name, fwd, fwd_bwd, zz in impls:
            fn = fwd if pas == "fwd" else fwd_bwd
            try:
                with _env("ATTNFAST_CPU_LSTM_ZIGZAG", zz):
                    t = harness.time_fn(fn, "cpu", warmup=warmup, reps=reps)
            except RuntimeError as e:  # e.g. a dtype torch's LSTM does not run on this CPU
                print(f"{name} {pas} {dtype}: {str(e).splitlines()[0]}", file=sys.stderr)
                continue
            flop = flop_fwd * (1 if pas == "fwd" else 3)
            limit = limit_fwd_ms + (0 if pas == "fwd" else limit_bwd_ms)
            if name == "torch":
                torch_ms = t.median_ms
            g = harness.gflops(flop, t.median_ms)
            rows.append({
                "B": B, "dtype": str(dtype).replace("torch.", ""), "pass": pas, "impl": name,
                "ms": harness.fmt(t.median_ms, ".1f"),
                "p10-p90": f"{t.p10_ms:.1f}-{t.p90_ms:.1f}",
                "GFLOP/s": harness.fmt(g, ".1f"),
                "% fp32 peak": harness.fmt(g / peak * 100 if g and peak else None, ".1f"),
                "x torch": harness.fmt(harness.ratio(torch_ms, t.median_ms), ".2f"),
                "limit ms": harness.fmt(limit, ".1f"),
                "x limit": harness.fmt(t.median_ms / limit, ".2f"),
                "median_ms": t.median_ms, "T": T, "H": H, "I": I,
            })
    return rows


def thread_time_table(dtypes, batches, T, H, I, reps) -> list[dict]:
    """One thread, the calling thread's CPU time (time.thread_time_ns: unaffected by being
    descheduled, so robust on a shared machine): the recurrence ops alone and torch's whole
    layer (oneDNN on one thread also runs on the calling thread), best of `reps`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for dtype in dtypes:
            for B in batches:
                torch.manual_seed(0)
                lstm = torch.nn.LSTM(I, H).to(dtype)
                x = torch.randn(T, B, I, dtype=dtype)
                h0 = torch.zeros(B, H, dtype=dtype)
                w_ih, w_hh = lstm.weight_ih_l0.detach(), lstm.weight_hh_l0.detach()
                bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()
                gx = F.linear(x, w_ih, bias)
                fwd = torch.ops.attnfast.lstm_forward(gx, h0, h0, w_hh, True)
                gh = torch.randn(T, B, H, dtype=dtype)

                def best(fn):
                    fn()
                    out = float("inf")
                    for _ in range(reps):
                        t0 = time.thread_time_ns()
                        fn()
                        out = min(out, (time.thread_time_ns() - t0) / 1e6)
                    return out

                with torch.no_grad():
                    f_ms = best(lambda: torch.ops.attnfast.lstm_forward(gx, h0, h0, w_hh, False))
                    b_ms = best(lambda: torch.ops.attnfast.lstm_backward(gh, None, h0, w_hh, fwd[1],
                                                                         fwd[2]))
                    t_ms = best(lambda: lstm(x, (h0[None], h0[None])))
                    g_ms = best(lambda: F.linear(x, w_ih, bias))
                fb = 4 * H * H * (2 if dtype == torch.bfloat16 and B <= 6 else 4)
                rows.append({
                    "B": B, "dtype": str(dtype).replace("torch.", ""),
                    "fwd us/step": f"{f_ms / T * 1e3:.0f}", "bwd us/step": f"{b_ms / T * 1e3:.0f}",
                    "fwd w_hh GB/s": f"{fb * T / (f_ms * 1e6):.1f}",
                    "bwd w_hh GB/s": f"{4 * H * H * 4 * T / (b_ms * 1e6):.1f}",
                    "torch layer fwd us/step": f"{t_ms / T * 1e3:.0f}",
                    "input GEMM us/step": f"{g_ms / T * 1e3:.0f}",
                    "x torch (fwd: ops + GEMM)": f"{t_ms / (f_ms + g_ms):.2f}",
                })
    finally:
        torch.set_num_threads(threads)
    return rows


def main(argv=None) -> int:
    p = harness.common_args("One LSTM layer: attnfast's CPU recurrence vs torch.nn.LSTM.")
    p.add_argument("--batch", type=int, action="append", help="batch sizes (default 2 and 16)")
    p.add_argument("--seq-len", type=int, default=None, help="T (default 1024, --quick 128)")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--input", type=int, default=1024)
    p.add_argument("--zigzag-off", action="store_true",
                   help="add rows with ATTNFAST_CPU_LSTM_ZIGZAG=0")
    p.add_argument("--thread-time", action="store_true",
                   help="instead: one thread, per-step CPU time of the ops (robust when shared)")
    args = p.parse_args(argv)
    device = harness.resolve_device(args.device)
    if device.type != "cpu":
        print("bench.lstm: CPU only (attnfast's LSTM kernels here are the CPU ones); skipped")
        return 0
    t0 = time.perf_counter()
    dtypes = [harness.DTYPES[d] for d in (args.dtype or ["fp32", "bf16"])]
    batches = args.batch or [2, 16]
    T = args.seq_len or (128 if args.quick else 1024)
    H, I = args.hidden, args.input
    if args.thread_time:
        rows = thread_time_table(dtypes, batches, T, H, I, args.reps or 5)
        harness.print_table(rows, list(rows[0]), title=f"LSTM T {T}, H {H}, I {I}: one thread, "
                            f"thread CPU time, best of {args.reps or 5}")
        return 0
    peak_record = _peak.peak("cpu", refresh=args.refresh_peak, quick=args.quick)
    bw = read_bandwidth_gbs(4 * H * H * 4)
    env = harness.environment(device)
    rows = []
    for dtype in dtypes:
        for B in batches:
            rows += run(dtype, B, T, H, I, quick=args.quick, reps=args.reps, warmup=args.warmup,
                        peak_record=peak_record, bw_gbs=bw, zigzag_off=args.zigzag_off)
    title = (f"LSTM layer T {T}, H {H}, I {I} on {env['cpu']} ({env['cpu_cores']} cores, "
             f"{torch.get_num_threads()} threads); fp32 peak {peak_record['fp32_gflops']:.0f} "
             f"GFLOP/s; one core's read GB/s of a {4 * H * H * 4 >> 20} MiB buffer {bw:.1f}; torch "
             f"{env['torch']}, commit {str(env['git']['commit'])[:10]}"
             f"{' (dirty)' if env['git']['dirty'] else ''}, load avg {env['load_avg_1min']}")
    harness.print_table(rows, COLUMNS, title=title)
    print(f"(x torch > 1: faster than torch; x limit: times the recurrence's bandwidth limit; "
          f"{time.perf_counter() - t0:.0f} s)")
    if not args.no_json:
        path = harness.save_json(args.json or harness.default_json_path("lstm", device), {
            "benchmark": "lstm", "quick": args.quick, "environment": env, "peak": peak_record,
            "read_gbs": bw, "shape": {"T": T, "H": H, "I": I}, "rows": rows})
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
