"""Boom benchmark: attnfast's fused Boom against its peers, measured in the same run.

    python -m bench.boom [--quick] [--device cpu|cuda] [--dtype fp32 --dtype bf16]
                         [--backend cpu|cuda|triton|reference ...] [--no-compile]

SHA-RNN's size: 4096 tokens, d_model 1024 -> d_ff 4096, shortcut=True (chunk sum),
activation gelu_sigmoid, no dropout (p=0: inference, and the training step without dropout).
Rows per dtype and pass (forward under no_grad; forward+backward):
  attnfast-<backend>  attnfast.boom(..., backend=<backend>), each backend available on the device
  eager               SHA-RNN's Boom module verbatim (nn.Linear, GELU, narrow/view/sum)
  torch.compile       torch.compile of that same module (compile time excluded: warm-up)
  gemm                the bare GEMM x @ W^T (forward; fwd+bwd: F.linear's three GEMMs): the roof
Columns: median ms (p10-p90), GFLOP/s (forward 2*N*K*F, fwd+bwd 3x that), speed-ups vs eager,
vs torch.compile and vs the bare GEMM (x > 1: faster; vs gemm 1.0 = as fast as the GEMM alone),
% of the machine's physical peak (bench/peak), and the peak extra memory of an inference call
(bench/harness.peak_memory) with its ratio to eager's.
"""
from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench import harness
from bench import peak as _peak

TOKENS, D_MODEL, D_FF = 4096, 1024, 4096
ACTIVATION = "gelu_sigmoid"
PASSES = ("fwd", "fwd+bwd")
ATTNFAST_BACKENDS = ("cpu", "cuda", "triton", "reference")


# ---- SHA-RNN's Boom, verbatim (Merity 2019, github.com/Smerity/sha-rnn, model.py) -----------

class GELU(nn.Module):
    def forward(self, x):
        return torch.sigmoid(1.702 * x) * x


class ShaRnnBoom(nn.Module):
    def __init__(self, d_model, dim_feedforward=2048, dropout=0.1, shortcut=False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout) if dropout else None
        if not shortcut:
            self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.shortcut = shortcut
        self.act = GELU()

    def forward(self, input):
        x = self.act(self.linear1(input))
        if self.dropout:
            x = self.dropout(x)
        if self.shortcut:
            # Trim the end off if the size is different
            ninp = input.shape[-1]
            x = torch.narrow(x, -1, 0, x.shape[-1] // ninp * ninp)
            # Divide the hidden size evenly into chunks
            x = x.view(*x.shape[:-1], x.shape[-1] // ninp, ninp)
            # Collapse the chunks through summation
            z = x.sum(dim=-2)
        else:
            z = self.linear2(x)
        return z


# ---- contenders: name -> forward function of x ----------------------------------------------

def available_backends(device: torch.device, requested: list[str] | None) -> list[str]:
    import attnfast

    status = attnfast.backends()
    on_device = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}.get(device.type, ())
    names = requested or [b for b in on_device if status.get(b) is None]
    for b in names:
        if status.get(b) is not None:
            print(f"bench.boom: skipping backend {b!r}: {status[b]}", file=sys.stderr)
    return [b for b in names if status.get(b) is None]


def contenders(module: ShaRnnBoom, backends: list[str], with_compile: bool) -> dict:
    import attnfast

    w, b = module.linear1.weight, module.linear1.bias
    out = {}
    for name in backends:
        out[f"attnfast-{name}"] = (lambda be: lambda x: attnfast.boom(
            x, w, b, shortcut=True, activation=ACTIVATION, backend=be))(name)
    out["eager"] = module
    if with_compile:
        out["torch.compile"] = torch.compile(module)
    out["gemm"] = lambda x: F.linear(x, w)  # x @ W^T, no bias: the GEMM alone
    return out


def step(fn, x: torch.Tensor, params: list[torch.Tensor], pass_: str):
    """One call of the measured pass. fwd+bwd drops the gradients first (no accumulation)."""
    if pass_ == "fwd":
        with torch.no_grad():
            return fn(x)
    x.grad = None
    for p in params:
        p.grad = None
    y = fn(x)
    y.backward(torch.ones_like(y))
    return None


# ---- the run -------------------------------------------------------------------------------

def run(device: torch.device, dtype: torch.dtype, backends: list[str], *, quick: bool,
        with_compile: bool, peak_record: dict, reps: int | None, warmup: int | None,
        tokens: int = TOKENS, d_model: int = D_MODEL, d_ff: int = D_FF) -> list[dict]:
    torch.manual_seed(0)
    module = ShaRnnBoom(d_model, d_ff, dropout=0.0, shortcut=True).to(device=device, dtype=dtype)
    x = torch.randn(tokens, d_model, device=device, dtype=dtype)
    params = list(module.parameters())
    fns = contenders(module, backends, with_compile)
    flop_fwd = 2.0 * tokens * d_model * d_ff
    peak = _peak.peak_gflops(peak_record, dtype)
    timing = dict(warmup=warmup if warmup is not None else (1 if quick else 3),
                  min_time_s=0.05 if quick else 1.0)
    # --quick is a smoke run: 3 timed forward calls, 2 forward+backward (the slow ones on CPU).
    default_reps = {"fwd": 3, "fwd+bwd": 2} if quick else {"fwd": 10, "fwd+bwd": 10}

    with torch.no_grad():  # a sanity check, so a fast wrong kernel cannot top the table
        want = module(x).float()
        errs = {n: ((f(x).float() - want).abs().max() / want.abs().max().clamp_min(1e-6)).item()
                for n, f in fns.items() if n.startswith("attnfast")}

    rows = []
    for pass_ in PASSES:
        xin = x.detach().requires_grad_(pass_ == "fwd+bwd")
        for p in params:
            p.requires_grad_(pass_ == "fwd+bwd")
        flop = flop_fwd * (1 if pass_ == "fwd" else 3)
        for name, fn in fns.items():
            call = (lambda f: lambda: step(f, xin, params, pass_))(fn)
            t0 = time.perf_counter()
            t = harness.time_fn(call, device, reps=reps or default_reps[pass_], **timing)
            mem = harness.peak_memory(call, device) if pass_ == "fwd" else None
            rows.append(dict(
                dtype=str(dtype).replace("torch.", ""), **{"pass": pass_}, impl=name,
                timing=t.as_dict(), gflops=harness.gflops(flop, t.median_ms), flop=flop,
                peak_gflops=peak, peak_mem_bytes=mem, max_rel_err_vs_eager=errs.get(name),
                wall_s=round(time.perf_counter() - t0, 2)))
    add_ratios(rows)
    return rows


def add_ratios(rows: list[dict]) -> None:
    """Speed-ups against the peers of the same dtype and pass, measured in this run."""
    for r in rows:
        peers = {q["impl"]: q for q in rows if q["dtype"] == r["dtype"] and q["pass"] == r["pass"]}
        ms = r["timing"]["median_ms"]
        for peer, key in (("eager", "vs_eager"), ("torch.compile", "vs_compile"), ("gemm", "vs_gemm")):
            r[key] = harness.ratio(peers[peer]["timing"]["median_ms"], ms) if peer in peers else None
        r["pct_of_peak"] = 100.0 * r["gflops"] / r["peak_gflops"] if r["peak_gflops"] else None
        eager_mem = peers.get("eager", {}).get("peak_mem_bytes")
        r["mem_vs_eager"] = (r["peak_mem_bytes"] / eager_mem
                             if r["peak_mem_bytes"] is not None and eager_mem else None)


COLUMNS = ["dtype", "pass", "impl", "median ms", "p10-p90 ms", "GFLOP/s", "x eager", "x compile",
           "x gemm", "% peak", "infer mem MiB", "mem / eager"]


def table_rows(rows: list[dict]) -> list[dict]:
    f = harness.fmt
    return [{
        "dtype": r["dtype"], "pass": r["pass"], "impl": r["impl"],
        "median ms": f(r["timing"]["median_ms"], ".1f"),
        "p10-p90 ms": f"{r['timing']['p10_ms']:.1f}-{r['timing']['p90_ms']:.1f}",
        "GFLOP/s": f(r["gflops"], ".0f"),
        "x eager": f(r["vs_eager"]), "x compile": f(r["vs_compile"]), "x gemm": f(r["vs_gemm"]),
        "% peak": f(r["pct_of_peak"], ".1f"),
        "infer mem MiB": f(harness.mib(r["peak_mem_bytes"]), ".1f"),
        "mem / eager": f(r["mem_vs_eager"]),
    } for r in rows]


def main(argv=None) -> int:
    p = harness.common_args(__doc__.splitlines()[0])
    p.add_argument("--backend", action="append", choices=ATTNFAST_BACKENDS,
                   help="attnfast backends (repeatable; default: every one available on the device)")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile peer")
    p.add_argument("--tokens", type=int, default=TOKENS)
    p.add_argument("--d-model", type=int, default=D_MODEL)
    p.add_argument("--d-ff", type=int, default=D_FF)
    args = p.parse_args(argv)

    device = harness.resolve_device(args.device)
    dtypes = [harness.DTYPES[d] for d in (args.dtype or ["fp32", "bf16"])]
    backends = available_backends(device, args.backend)
    t0 = time.perf_counter()
    peak_record = _peak.peak(device, refresh=args.refresh_peak, quick=args.quick)
    env = harness.environment(device)
    env["cuda_matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32

    rows = []
    for dtype in dtypes:
        rows += run(device, dtype, backends, quick=args.quick, with_compile=not args.no_compile,
                    peak_record=peak_record, reps=args.reps, warmup=args.warmup,
                    tokens=args.tokens, d_model=args.d_model, d_ff=args.d_ff)

    unit = "" if device.type == "cuda" else f" ({env['cpu_cores']} cores)"
    peaks = ", ".join(f"{k.split('_')[0]} {peak_record[k]:.0f}" for k in ("fp32_gflops", "bf16_gflops"))
    title = (f"Boom {args.tokens} x {args.d_model} -> {args.d_ff}, shortcut, {ACTIVATION} on "
             f"{env['gpu'] or env['cpu']}{unit}; physical peak GFLOP/s: {peaks}; "
             f"torch {env['torch']}, commit {str(env['git']['commit'])[:10]}"
             f"{' (dirty)' if env['git']['dirty'] else ''}, load avg {env['load_avg_1min']}")
    harness.print_table(table_rows(rows), COLUMNS, title=title)
    print(f"(x ...: speed-up, > 1 is faster; infer mem: peak extra memory of one no_grad call; "
          f"{time.perf_counter() - t0:.0f} s)")
    if not args.no_json:
        path = harness.save_json(args.json or harness.default_json_path("boom", device), {
            "benchmark": "boom", "quick": args.quick, "environment": env, "peak": peak_record,
            "shape": {"tokens": args.tokens, "d_model": args.d_model, "d_ff": args.d_ff,
                      "shortcut": True, "activation": ACTIVATION, "dropout": 0.0},
            "rows": rows})
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
