"""DNC memory access: attnfast CPU kernels against the PyTorch reference, eager and compiled.

One "run" is T consecutive dnc_access_step calls (state carried over), B = 16, W = 64, R = 4,
Hw = 1, N in {128, 512, 2048}; "fwd" under no_grad, "fwd+bwd" also back-propagates the sum of
all read words through time to the interface tensors and the initial state.

Peers (all in one process, medians of the same run):
  eager      attnfast.reference.memory.dnc_access_step (plain PyTorch, autograd backward)
  compile    torch.compile of that same step function (compile time excluded: warm-up)
  attnfast   attnfast.memory.dnc_access_step(backend="cpu") (fused C++ ops)

Each peer also reports its page faults per run (x_kfaults). On the VM this project is measured on
a fault costs ~1 us and eager PyTorch takes ~800k of them per fwd run at N = 512 (fresh pages for
its link-sized temporaries), so its time moves with the allocator's state: compare the faults
before reading much into a ratio. attnfast serves its link tensors from a bounded block cache
(attnfast.memory.cpu_cache_info) and takes almost none.

The breakdown (--breakdown) profiles one attnfast fwd run and one fwd+bwd run and splits their
CPU time (profiler self time, which sums to the profiled total) by op group: the link update +
directional reads, the allocation + write weights, content addressing + erase/add write, the read
(+ read-mode mix), the usage (each forward and backward op), the small torch ops (aten::*: the
interface activations of the harness, gradient accumulation, any weight mix left in Python) and
autograd + Python (autograd's nodes and engine, the ops' Python backward wrappers).

    python -m bench.memory [--sizes 128,512,2048] [--steps 64] [--no-compile] [--breakdown]
                           [--device cuda]   (GPU: rows attnfast-cuda and attnfast-triton)
"""
from __future__ import annotations

import argparse
import collections
import resource
import sys

import torch

import attnfast
from attnfast import memory as M
from attnfast.reference import memory as ref
from bench import harness

B, W, R, HW = 16, 64, 4, 1


def make_problem(n: int, steps: int, requires_grad: bool, seed: int = 0, device="cpu"):
    """The initial state (memory a leaf) and, per interface field, a list of T per-step leaves,
    as a controller would produce them step by step. (One (T, ...) leaf indexed per step makes
    autograd's SelectBackward zero-fill the whole (T, ...) gradient at every step: O(T^2) work of
    the harness, small here: ~2 ms of attnfast's ~450 ms fwd+bwd run at N = 512.)"""
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device).requires_grad_(requires_grad)

    def per_step(*shape):
        return [leaf(*shape) for _ in range(steps)]

    state = M.dnc_initial_state(B, n, W, R, HW, device=device)
    state = state._replace(memory=leaf(B, n, W, scale=0.1))
    raw = dict(write_vectors=per_step(B, HW, W), erase=per_step(B, HW, W), free=per_step(B, R),
               alloc=per_step(B, HW), write=per_step(B, HW), mode=per_step(B, R, 1 + 2 * HW),
               wkeys=per_step(B, HW, W), wstr=per_step(B, HW), rkeys=per_step(B, R, W),
               rstr=per_step(B, R))
    return state, raw


def leaves_of(state, raw) -> list:
    return [state.memory] + [t for field in raw.values() for t in field]


def interfaces(raw, steps):
    sp = torch.nn.functional.softplus
    return [M.DNCInterface(raw["write_vectors"][t], torch.sigmoid(raw["erase"][t]),
                           torch.sigmoid(raw["free"][t]), torch.sigmoid(raw["alloc"][t]),
                           torch.sigmoid(raw["write"][t]), torch.softmax(raw["mode"][t], -1),
                           raw["wkeys"][t], sp(raw["wstr"][t]), raw["rkeys"][t], sp(raw["rstr"][t]))
            for t in range(steps)]


def unroll(step_fn, state, raw, steps):
    total = 0.0
    for x in interfaces(raw, steps):
        words, state = step_fn(state, x)
        total = total + words.sum()
    return total


def attnfast_rows(device: torch.device) -> dict:
    """attnfast's rows: "attnfast" (the cpu backend) on a CPU; one per GPU backend on a GPU."""
    if device.type == "cpu":
        return {"attnfast": lambda s, x: M.dnc_access_step(s, x, backend="cpu")}
    return {f"attnfast-{be}": (lambda be: lambda s, x: M.dnc_access_step(s, x, backend=be))(be)
            for be in ("cuda", "triton") if attnfast.backends()[be] is None}


def unfused_step(state, x):
    """The cpu access step as composed before its weight mixes were fused (commit 6090798): the
    write-weight mix and the read-mode mix as torch ops around dnc_allocation_forward and
    memory_read_forward, every compiled op as in dnc_access_step. Same checks and backend choice
    as the public op, so --unfused times the two compositions in one process (the machine's load
    moves between processes)."""
    from attnfast.ops import memory as ops_memory, spec
    from attnfast.ops.memory import allocation
    inp = ops_memory.prep_access_step(state, x)
    ops_memory.OPS["dnc_access_step"].select(inp, "cpu")
    s, x = inp.args
    ops, eps = spec.kernels("cpu"), ref.EPS
    usage = allocation.usage(ops, s.usage, s.write_weights, x.free_gate, s.read_weights)
    write_content = ops.memory_content_forward(s.memory, x.write_keys, x.write_strengths, eps)
    alloc = ops.dnc_allocation_forward(usage, x.allocation_gate * x.write_gate, eps)
    ga, gw = x.allocation_gate[:, :, None], x.write_gate[:, :, None]
    write_weights = gw * (ga * alloc + (1 - ga) * write_content)
    memory = ops.memory_write_forward(s.memory, write_weights, x.erase_vectors, x.write_vectors)
    link, precedence, fwd, bwd = ops.dnc_link_read_forward(s.link, s.precedence, write_weights,
                                                           s.read_weights)
    read_content = ops.memory_content_forward(memory, x.read_keys, x.read_strengths, eps)
    read_weights = ref.dnc_read_weights(read_content, fwd, bwd, x.read_mode)
    words = ops.memory_read_forward(memory, read_weights)
    return words, ref.DNCState(memory, read_weights, write_weights, link, precedence, usage)


def peers(no_compile: bool, device: torch.device, unfused: bool = False):
    out = {"eager": ref.dnc_access_step}
    out.update(attnfast_rows(device))
    if unfused and device.type == "cpu":
        out["attnfast-unfused"] = unfused_step
    if not no_compile:
        out["compile"] = torch.compile(ref.dnc_access_step, dynamic=False)
    return out


def bench_case(n, steps, mode, fns, reps, device=torch.device("cpu")):
    state, raw = make_problem(n, steps, requires_grad=(mode == "fwd+bwd"), device=device)
    leaves = leaves_of(state, raw)

    def run(fn):
        if mode == "fwd":
            with torch.no_grad():
                return unroll(fn, state, raw, steps)
        loss = unroll(fn, state, raw, steps)
        torch.autograd.grad(loss, leaves)

    row = {"N": n, "T": steps, "mode": mode}
    for name, fn in fns.items():
        run(fn)  # warm-up (compiles the compiled peer), outside the fault count
        harness.synchronize(device)
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        row[name + "_ms"] = harness.time_fn(lambda: run(fn), device, warmup=0, reps=reps).median_ms
        if device.type == "cpu":
            # Page faults per run (fresh pages for link-sized tensors): on a VM they cost ~1 us
            # each and explain most of the run-to-run spread of the eager and compiled peers.
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
            row[name + "_kfaults"] = round(faults / reps / 1e3, 1)
    for impl in (k for k in fns if k.startswith("attnfast")):
        prefix = "" if impl == "attnfast" else impl.removeprefix("attnfast-") + "_"
        for peer in ("eager", "compile"):
            if peer + "_ms" in row:
                row[prefix + "vs_" + peer] = harness.ratio(row[peer + "_ms"], row[impl + "_ms"])
    return row


def fused_vs_unfused(n, steps, reps):
    """--unfused: the fused and the pre-fusion step (unfused_step) in alternating runs, so that
    both see the same load: medians of each and of the per-pair ratio unfused / fused."""
    import statistics
    import time
    rows = []
    fns = {"fused": lambda s, x: M.dnc_access_step(s, x, backend="cpu"), "unfused": unfused_step}
    for mode in ("fwd", "fwd+bwd"):
        state, raw = make_problem(n, steps, requires_grad=(mode == "fwd+bwd"))
        leaves = leaves_of(state, raw)

        def run(fn):
            t0 = time.perf_counter_ns()
            if mode == "fwd":
                with torch.no_grad():
                    unroll(fn, state, raw, steps)
            else:
                torch.autograd.grad(unroll(fn, state, raw, steps), leaves)
            return (time.perf_counter_ns() - t0) / 1e6

        for fn in fns.values():
            run(fn)  # warm-up
        times = {k: [] for k in fns}
        for _ in range(reps):
            for k, fn in fns.items():
                times[k].append(run(fn))
        ratios = [u / f for u, f in zip(times["unfused"], times["fused"])]
        rows.append({"N": n, "T": steps, "mode": mode, "pairs": reps,
                     "fused_ms": round(statistics.median(times["fused"]), 2),
                     "unfused_ms": round(statistics.median(times["unfused"]), 2),
                     "unfused/fused": round(statistics.median(ratios), 3)})
    return rows


# Breakdown groups of the attnfast ops, by a substring of the profiler key (first match wins).
_OP_GROUPS = [("link_read", "link update + reads"),
              ("allocation", "allocation + write weights"), ("write_weights", "allocation + write weights"),
              ("memory_content", "content + erase/add"), ("memory_write", "content + erase/add"),
              ("read", "read (+ mode mix)"), ("usage", "usage")]


def _group(key: str) -> str:
    # Under autograd a compiled forward runs inside torch.library's autograd Function
    # ("GeneratedBackwardFor_attnfast_<op>_default"), which redispatches to the kernel without a
    # profiler record of its own: that record's self time is the forward kernel (plus the
    # wrapper's few us). Its "...Backward" twin is the autograd node calling the backward op.
    fwd_wrapper = key.startswith("GeneratedBackwardFor_attnfast_") and not key.endswith("Backward")
    if key.startswith("attnfast::") or fwd_wrapper:
        return next((g for sub, g in _OP_GROUPS if sub in key), "other attnfast ops")
    if key.startswith("aten::"):
        return "small torch ops"
    return "autograd + Python"  # autograd nodes and engine, the ops' Python backward wrappers


def breakdown(n, steps, mode="fwd+bwd"):
    state, raw = make_problem(n, steps, requires_grad=(mode == "fwd+bwd"))
    leaves = leaves_of(state, raw)
    fn = lambda s, x: M.dnc_access_step(s, x, backend="cpu")  # noqa: E731

    def run():
        if mode == "fwd":
            with torch.no_grad():
                return unroll(fn, state, raw, steps)
        return torch.autograd.grad(unroll(fn, state, raw, steps), leaves)

    run()  # warm-up
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    groups = collections.Counter()
    for ev in prof.key_averages():
        groups[_group(ev.key)] += ev.self_cpu_time_total / 1e3
    total = sum(groups.values())
    return [{"N": n, "T": steps, "mode": mode, "part": k, "ms": round(v, 1),
             "share": f"{100 * v / total:.0f}%"} for k, v in groups.most_common()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N = 512 only, T = 16, 3 repetitions")
    p.add_argument("--sizes", default="128,512,2048")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--big-steps", type=int, default=8,
                   help="T at N >= 2048 (fwd+bwd: T/2; eager saves several 256 MB link-sized "
                        "tensors per step)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for every peer (1 on a shared 2-core machine: OpenMP "
                        "spin-waits make oversubscribed multi-threaded runs meaningless)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default: the issue's targets are CPU ones) or cuda (rows for the cuda "
                        "and triton backends; no page-fault columns, no breakdown)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--breakdown", action="store_true")
    p.add_argument("--unfused", action="store_true",
                   help="cpu: also time the step composed as before its weight mixes were fused "
                        "(row attnfast-unfused, same process; then both in alternating runs)")
    p.add_argument("--json", default=None)
    a, _ = p.parse_known_args(argv)  # `python -m bench` passes every table the same flags
    if a.quick:
        a.sizes, a.steps, a.reps = "512", 16, 3
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    fns = peers(a.no_compile, device, a.unfused)
    rows = []
    for n in [int(s) for s in a.sizes.split(",")]:
        for mode in ("fwd", "fwd+bwd"):
            steps = a.steps if n < 2048 else (a.big_steps if mode == "fwd" else a.big_steps // 2)
            rows.append(bench_case(n, steps, mode, fns, a.reps, device))
            rows[-1] = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in rows[-1].items()}
            times = ", ".join(f"{k[:-3]} {v} ms" for k, v in rows[-1].items()
                              if k.endswith("_ms"))
            print(f"bench.memory: N {n} T {steps} {mode}: {times}", file=sys.stderr, flush=True)
    cols = ["N", "T", "mode"] + [k for k in rows[0] if k.endswith("_ms")] + \
        [k for k in rows[0] if "vs_" in k] + [k for k in rows[0] if k.endswith("_kfaults")]
    env = harness.environment(device)
    harness.print_table(rows, cols, title=f"DNC access step on {device.type}, B={B} W={W} R={R} "
                        f"Hw={HW} (ms per run of T steps; vs_x = x_ms / attnfast_ms; x_kfaults = "
                        f"thousands of page faults per run)")
    pairs = []
    if a.unfused and device.type == "cpu":
        for n in [int(s) for s in a.sizes.split(",")]:
            pairs += fused_vs_unfused(n, a.steps if n < 2048 else a.big_steps // 2, max(a.reps, 9))
        harness.print_table(pairs, list(pairs[0]), title="fused vs pre-fusion step, alternating "
                            "runs (medians; unfused/fused: median of the per-pair ratios)")
    parts = []
    if a.breakdown and device.type != "cpu":
        print("--breakdown profiles the cpu backend only; skipped on", device)
    elif a.breakdown:
        for n in [int(s) for s in a.sizes.split(",")]:
            for mode in ("fwd", "fwd+bwd"):
                parts += breakdown(n, a.steps if n < 2048 else a.big_steps // 2, mode)
        harness.print_table(parts, ["N", "T", "mode", "part", "ms", "share"],
                            title="attnfast: where the time goes (profiler self CPU time)")
    path = a.json or harness.default_json_path("memory", device.type)
    harness.save_json(path, {"env": env, "rows": rows, "breakdown": parts, "unfused": pairs})
    return 0


if __name__ == "__main__":
    main()
