"""NTM/DNC memory ops, one call each (attnfast.memory), in fp32 (what their kernels take).

Shapes: B 16, W 64, R 4 read heads, Hw 1 write head (bench/memory.py's DNC), N 128 memory
slots by default, 512 and 2048 with --big-shapes (the link is B x Hw x N x N: 256 MB at 2048);
Graves' window over a sequence: B 16, T 256 steps, K 10 mixtures, U 64 characters, C 64.
GFLOP only where the op is GEMM-like (content addressing, read, directional read; forward+
backward 3x the forward); the others are memory-bound: compare their times.
"""
import pytest
import torch

from attnfast import memory as M
from bench.kernels.common import PASSES, Case, measure

B, W, R, HW = 16, 64, 4, 1
NS = [128, pytest.param(512, marks=pytest.mark.big), pytest.param(2048, marks=pytest.mark.big)]


def rand(g, *shape, lo=0.0, hi=1.0):
    return torch.rand(*shape, generator=g) * (hi - lo) + lo


def dist(g, *shape, total=1.0):
    """Random weightings summing to ``total`` over the last dim."""
    x = torch.rand(*shape, generator=g) + 0.05
    return x / x.sum(-1, keepdim=True) * total


def link(g, n):
    out = rand(g, B, HW, n, n) / n
    out.diagonal(dim1=-2, dim2=-1).zero_()  # a DNC link's diagonal is zero
    return out


def state(g, n):
    return [torch.randn(B, n, W, generator=g), dist(g, B, R, n, total=0.9),
            dist(g, B, HW, n, total=0.8), link(g, n), dist(g, B, HW, n, total=0.7), rand(g, B, n)]


def interface(g):
    return [torch.randn(B, HW, W, generator=g), rand(g, B, HW, W), rand(g, B, R), rand(g, B, HW),
            rand(g, B, HW, lo=0.3), dist(g, B, R, 1 + 2 * HW), torch.randn(B, HW, W, generator=g),
            rand(g, B, HW, lo=0.5, hi=5.0), torch.randn(B, R, W, generator=g),
            rand(g, B, R, lo=0.5, hi=5.0)]


def access_step(*ts, backend):
    return M.dnc_access_step(M.DNCState(*ts[:6]), M.DNCInterface(*ts[6:]), backend=backend)


# op -> (inputs(g, n), GFLOP of one forward(n) or None)
OPS = {
    "content_addressing": (
        lambda g, n: [torch.randn(B, n, W, generator=g), torch.randn(B, R, W, generator=g),
                      rand(g, B, R, lo=0.5, hi=5.0)],
        lambda n: 2.0 * B * R * n * W),
    "dnc_usage": (
        lambda g, n: [rand(g, B, n), dist(g, B, HW, n, total=0.8), rand(g, B, R),
                      dist(g, B, R, n, total=0.9)], None),
    "dnc_allocation": (lambda g, n: [rand(g, B, n), rand(g, B, HW)], None),
    "dnc_write_weights": (
        lambda g, n: [rand(g, B, n), dist(g, B, HW, n), rand(g, B, HW), rand(g, B, HW, lo=0.3)],
        None),
    "memory_write": (
        lambda g, n: [torch.randn(B, n, W, generator=g), dist(g, B, HW, n), rand(g, B, HW, W),
                      torch.randn(B, HW, W, generator=g)], None),
    "memory_read": (
        lambda g, n: [torch.randn(B, n, W, generator=g), dist(g, B, R, n)],
        lambda n: 2.0 * B * R * n * W),
    "dnc_link_update": (
        lambda g, n: [link(g, n), dist(g, B, HW, n, total=0.7), dist(g, B, HW, n, total=0.8)],
        None),
    "dnc_directional_read": (
        lambda g, n: [link(g, n), dist(g, B, R, n)], lambda n: 4.0 * B * R * HW * n * n),
    "dnc_access_step": (lambda g, n: state(g, n) + interface(g), None),
    "ntm_address": (
        lambda g, n: [torch.randn(B, n, W, generator=g), torch.randn(B, R, W, generator=g),
                      rand(g, B, R, lo=0.5, hi=5.0), rand(g, B, R), dist(g, B, R, 3),
                      rand(g, B, R, lo=1.0, hi=3.0), dist(g, B, R, n)],
        lambda n: 2.0 * B * R * n * W),
}


def memory_case(op, n):
    make, flop = OPS[op]
    call = access_step if op == "dnc_access_step" else getattr(M, op)
    return Case(op=op, shape=f"B{B} N{n} W{W} R{R} Hw{HW}", dims=dict(B=B, N=n, W=W, R=R, Hw=HW),
                make=lambda g: make(g, n), call=call,
                gflop_fwd=flop(n) / 1e9 if flop else None, fixed_dtype=torch.float32)


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("n", NS, ids=lambda n: f"N{n}")
@pytest.mark.parametrize("op", list(OPS))
def test_memory(benchmark, pytestconfig, op, n, pass_, row):
    measure(benchmark, pytestconfig, memory_case(op, n), pass_, row, torch.float32)


def graves_case(b, t, k, u, c):
    def make(g):
        chars = torch.nn.functional.one_hot(torch.randint(0, c, (b, u), generator=g), c).float()
        mask = torch.ones(b, u)
        mask[b // 2:, 3 * u // 4:] = 0  # half the batch padded
        return [torch.randn(b, t, k, generator=g) * 0.5 for _ in range(3)] + [chars, mask]

    return Case(op="graves_window_sequence", shape=f"B{b} T{t} K{k} U{u} C{c}",
                dims=dict(B=b, T=t, K=k, U=u, C=c), make=make, call=M.graves_window_sequence,
                no_grad=(3, 4), fixed_dtype=torch.float32)


GRAVES = [graves_case(16, 256, 10, 64, 64),
          pytest.param(graves_case(16, 1024, 10, 256, 64), marks=pytest.mark.big)]


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("shape", GRAVES, ids=Case.id)
def test_graves_window(benchmark, pytestconfig, shape, pass_, row):
    measure(benchmark, pytestconfig, shape, pass_, row, torch.float32)
