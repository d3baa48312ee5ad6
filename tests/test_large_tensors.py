"""Tensors past 2**31 elements through the C++ CPU kernels (``backend="cpu"``).

Every test makes one index product of a CPU kernel pass 2**31 (INT32_MAX + 1), so the test
fails (wrong values, or a crash) if that product were computed in 32 bits; the comment above
each test names the index and the kernel line. Each compares a slice of the result with the
reference run on that slice alone (never on the full tensor), in float64 (and in the same low
precision, for bf16: the parity rule of conftest.assert_parity).

Memory: the large inputs are ``lazy_zeros`` tensors -- anonymous mappings that the OS fills with
zeros and commits page by page on first write -- with only the compared slice written, so an
input of 8 GiB costs no memory until a kernel writes into it; the kernels' large outputs (and
gradients) are ordinary tensors. A test that reads the wrong place (a wrapped 32-bit offset)
reads zeros or faults, either way the slice differs (checked: each index of the comments cast
to int32 in the kernel source, one at a time, made its test fail or crash). The peak resident
set of each test (the whole process, ~0.7 GiB of it torch) is in its docstring; a test skips
when /proc/meminfo's MemAvailable is below its need. Whole file: ~2 min on 2 cores, peak 13 GiB
(the Boom test; the others 2-10.4 GiB).

Not run on ``simt``: the harness runs each CUDA thread as a fiber on one core (microseconds per
block barrier), and 2**31 elements would take hours there.
"""
from __future__ import annotations

import math
import mmap

import pytest
import torch

import attnfast
from attnfast import memory as M
from attnfast.ops import seed as seed_ops
from attnfast.reference import memory as ref_mem
from attnfast.reference.attention import weights_and_lse
from attnfast.reference.boom import boom as ref_boom
from attnfast.reference.dropout import dropout_scale, keep_threshold, philox_first_word
from conftest import assert_parity, require_backend

pytestmark = pytest.mark.large

INT32_LIMIT = 2**31  # an index at or past this wraps in a signed 32-bit int
F64, BF16 = torch.float64, torch.bfloat16
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)  # Linux value; no commit charge


def lazy_zeros(shape, dtype) -> torch.Tensor:
    """A zero tensor that costs memory only where it is written: an anonymous private mapping
    (zero-filled by the OS, pages committed on first write; reads of untouched pages all map the
    OS's one zero page). The tensor keeps the mapping alive."""
    numel = math.prod(shape)
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | _MAP_NORESERVE)
    if hasattr(mmap, "MADV_HUGEPAGE"):  # reads of untouched 2 MiB: one fault, the huge zero page
        buf.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(buf, dtype=dtype, count=numel).view(shape)


def mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def need(gib: float):
    """Skip unless the machine has `gib` GiB available now (plus 1 GiB of headroom)."""
    require_backend("cpu")
    have = mem_available_gib()
    if have < gib + 1.0:
        pytest.skip(f"needs ~{gib:.0f} GiB of free memory for its >2**31-element tensors, "
                    f"MemAvailable is {have:.1f} GiB")


def randn(shape, g, dtype=torch.float32, scale=1.0):
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def close(actual, oracle, name, tol=1e-4):
    """fp32 kernels against a float64 oracle, normwise: max |a - o| <= tol * max |o| (the
    elementwise rule of assert_parity is meaningless for weights of size ~1/N)."""
    a, o = actual.detach().double(), oracle.detach().double()
    assert a.shape == o.shape, f"{name}: shape {tuple(a.shape)} != {tuple(o.shape)}"
    err, scale = (a - o).abs().max().item(), o.abs().max().item()
    assert err <= tol * scale, f"{name}: max error {err:.3e} > {tol} x max |oracle| {scale:.3e}"


def ref_grads(fn, inputs, cotangents, dtype):
    """fn(*inputs) in `dtype` (inputs detached and converted), and the input gradients for the
    given output cotangents."""
    xs = [t.detach().to(dtype).requires_grad_(True) for t in inputs]
    out = fn(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    grads = torch.autograd.grad(outs, xs, [c.to(dtype) for c in cotangents])
    return out, grads


# ---- Boom -------------------------------------------------------------------------------------
# x (N, K) W^T -> the pre-activation (N, d_ff), saved for the backward, and dz (N, d_ff) in the
# backward. Index: element (row, f) of both at row * d_ff + f: kernels/gemm_boom_impl.h
# `preact + grow * f_used` (the fused GEMM's epilogue), kernels/boom_impl.h `r * a.ldz` (the dz
# pass) and kernels/gemm_impl.h pack_panel `src + 2 * u * s_k` (dW = dz^T x packs dz^T, its
# k = row at row * d_ff). Here d_ff = 4096, so rows >= 524288 are past 2**31: the last 112.

def test_boom_preactivation_rows_past_int32():
    """bf16, forward + backward through autograd: the pre-activation and dz, 4.0 GiB each, are
    the tensors past 2**31 elements. Peak ~13 GiB: autograd also materialises a zero gradient
    for the pre-activation (the op's second output), another 4 GiB."""
    need(13)
    N, K, F, S = 2**19 + 112, 16, 4096, 64
    assert (N - S) * F >= INT32_LIMIT
    g = torch.Generator().manual_seed(0)
    x = randn((N, K), g, BF16).requires_grad_(True)
    w = randn((F, K), g, BF16, scale=K**-0.5).requires_grad_(True)
    b = randn((F,), g, BF16, scale=0.1).requires_grad_(True)
    y = attnfast.boom(x, w, b, backend="cpu")
    assert y.shape == (N, K)
    # The gradient only on the last S rows: dz is 0 elsewhere, so dW and db are the slice's own.
    gy = lazy_zeros((N, K), BF16)
    gy[-S:] = randn((S, K), g, BF16)
    y.backward(gy)

    inputs, cot = (x[-S:], w, b), (gy[-S:],)
    o64, g64 = ref_grads(ref_boom, inputs, cot, F64)
    o16, g16 = ref_grads(ref_boom, inputs, cot, BF16)
    assert_parity(y[-S:], o64, o16, name="boom forward, last rows")
    assert_parity(x.grad[-S:], g64[0], g16[0], name="boom grad x, last rows")
    assert_parity(w.grad, g64[1], g16[1], name="boom grad weight")
    assert_parity(b.grad, g64[2], g16[2], name="boom grad bias")
    assert x.grad[:S].abs().max() == 0
    with torch.no_grad():
        first64 = ref_boom(x[:S].double(), w.double(), b.double())
        assert_parity(y[:S], first64, ref_boom(x[:S], w, b), name="boom forward, first rows")


# ---- attention ----------------------------------------------------------------------------------

def _attention_slice(q, k, v, bias=None, causal=False, dropout=None):
    """The reference output and lse of a slice of query rows. `dropout`: (p, seed, counter0)
    with counter0 (Lq', Lk) int64, the global Philox counters of the slice's weights (the
    reference's own dropout numbers the slice's weights from 0)."""
    w, lse = weights_and_lse(q, k, bias, causal)
    if dropout is not None:
        p, seed, counters = dropout
        keep = (philox_first_word(counters, seed) >> 8) >= keep_threshold(p)
        w = torch.where(keep, w * dropout_scale(p), torch.zeros_like(w))
    return torch.matmul(w.to(v.dtype), v), lse


# q (1, Lq, D) with Lq * D > 2**31: query row i starts at element i * D. Index: kernels/
# attention_impl.h attn_forward_typed `a.q + b * a.sqb + i0 * a.sqr` and `a.out + b * a.sob +
# i0 * a.sor` with i0 * 1024 >= 2**31 for i0 >= 2**21: the last 64 rows.

def test_attention_query_rows_past_int32():
    """bf16 forward, one batch of 2**21 + 64 queries of width 1024 (q and out 4.0 GiB each; q
    is lazy). Peak ~4.7 GiB."""
    need(5)
    Lq, Lk, D, S = 2**21 + 64, 16, 1024, 64
    assert (Lq - S) * D >= INT32_LIMIT
    g = torch.Generator().manual_seed(1)
    q = lazy_zeros((1, Lq, D), BF16)
    q[:, :S] = randn((1, S, D), g, BF16)
    q[:, -S:] = randn((1, S, D), g, BF16)
    k, v = randn((1, Lk, D), g, BF16), randn((1, Lk, D), g, BF16)
    out = attnfast.single_head_attention(q, k, v, backend="cpu")
    for rows, name in ((slice(Lq - S, Lq), "last"), (slice(0, S), "first")):
        o64, _ = _attention_slice(q[:, rows].double(), k.double(), v.double())
        o16, _ = _attention_slice(q[:, rows], k, v)
        assert_parity(out[:, rows], o64, o16, name=f"attention forward, {name} rows")
    # a zero query row weighs every key alike: the mean of v
    mid = Lq // 2
    assert_parity(out[:, mid], v.double().mean(1), v.mean(1), name="attention forward, zero row")


# q (B, 1024, 1024) with B = 2049: batch b starts at element b * 2**20. Index: kernels/
# attention_impl.h `a.q + b * a.sqb` (forward) and `Q = a.q + b * a.sqb` (backward), 2**31 for
# the last batch element; its dq rows through csrc/cpu/attention.cpp sum_dq.

@pytest.mark.usefixtures("one_thread")
def test_attention_batch_past_int32():
    """bf16 forward + backward through autograd, B = 2049 (q and dq 4.0 GiB each; q lazy, only
    its last batch element written). Peak ~4.9 GiB. One thread: the kernels run the batch
    elements one after another, each a handful of small parallel regions, and on a busy 2-core
    machine the second thread's waiting made the test 6x slower (45 s instead of 7 s)."""
    need(6)
    B, Lq, Lk, D, Dv = 2049, 1024, 16, 1024, 16
    assert (B - 1) * Lq * D >= INT32_LIMIT
    g = torch.Generator().manual_seed(2)
    q = lazy_zeros((B, Lq, D), BF16)
    q[-1] = randn((Lq, D), g, BF16)
    k = lazy_zeros((B, Lk, D), BF16)
    k[-1] = randn((Lk, D), g, BF16)
    v = randn((B, Lk, Dv), g, BF16)
    for t in (q, k, v):
        t.requires_grad_(True)
    out = attnfast.single_head_attention(q, k, v, causal=False, backend="cpu")
    go = torch.zeros(B, Lq, Dv, dtype=BF16)
    go[-1] = randn((Lq, Dv), g, BF16)
    out.backward(go)

    def fn(q, k, v):
        return _attention_slice(q, k, v)[0]
    inputs, cot = (q[-1:], k[-1:], v[-1:]), (go[-1:],)
    o64, g64 = ref_grads(fn, inputs, cot, F64)
    o16, g16 = ref_grads(fn, inputs, cot, BF16)
    assert_parity(out[-1:], o64, o16, name="attention forward, last batch element")
    for t, name, a, b in zip((q, k, v), "qkv", g64, g16):
        assert_parity(t.grad[-1:], a, b, name=f"attention grad {name}, last batch element")
    assert q.grad[0].abs().max() == 0 and k.grad[0].abs().max() == 0


# The (B, Lq, Lk) score matrix past 2**32 entries: Lq = 2**21 + 2048 queries, Lk = 2048 keys,
# causal (bottom-right: query i sees keys j <= i - (Lq - Lk), so only the last 2048 rows see any
# key and the kernels skip every other row's blocks: 2**22 scores computed, not 2**32).
# Indices: the additive mask (B, Lq, Lk) at `b * a.sbb + i * a.sbq + j0 * a.sbk`
# (attention_impl.h, forward and backward), up to 2**32 + 2**22; the dropout counter
# `(b * Lq + i) * Lk + j0` (philox::keep), also past 2**32, so even an unsigned 32-bit counter
# would give another mask. Through the registered ops: the public API turns any attn_mask into a
# new dense fp32 tensor (17 GiB here), which this test's lazy mask avoids.

def test_attention_scores_past_int32():
    """fp32 forward + backward with a (1, Lq, Lk) mask of 2**32 + 2**22 entries (17 GiB of
    address space, 16 MiB of it written) and dropout. Peak ~2.2 GiB."""
    need(2.5)
    Lk, D, p = 2048, 16, 0.25
    Lq = 2**21 + Lk
    assert (Lq - Lk) * Lk >= 2**32
    g = torch.Generator().manual_seed(3)
    q = lazy_zeros((1, Lq, D), torch.float32)
    q[:, -Lk:] = randn((1, Lk, D), g)
    k, v = randn((1, Lk, D), g), randn((1, Lk, D), g)
    bias = lazy_zeros((1, Lq, Lk), torch.float32)
    bias[:, -Lk:] = randn((1, Lk, Lk), g)
    seed = seed_ops.seed_tensor(0x1234_5678_9ABC)
    scale = D**-0.5
    out, lse, _ = torch.ops.attnfast.attention_forward(q, k, v, bias, True, scale, p, seed, False)
    go = lazy_zeros((1, Lq, D), torch.float32)
    go[:, -Lk:] = randn((1, Lk, D), g)
    dq, dk, dv = torch.ops.attnfast.attention_backward(go, q, k, v, out, lse, None, bias, True,
                                                       scale, p, seed, False)
    rows = torch.arange(Lq - Lk, Lq, dtype=torch.int64)
    counters = rows[:, None] * Lk + torch.arange(Lk, dtype=torch.int64)[None, :]
    assert counters.max() >= 2**32

    def fn(q, k, v):
        return _attention_slice(q, k, v, bias[:, -Lk:].double(), True, (p, seed, counters))[0]
    o64, lse64 = _attention_slice(q[:, -Lk:].double(), k.double(), v.double(),
                                  bias[:, -Lk:].double(), True, (p, seed, counters))
    _, g64 = ref_grads(fn, (q[:, -Lk:], k, v), (go[:, -Lk:],), F64)
    assert_parity(out[:, -Lk:], o64, name="attention forward, rows that see keys", atol=1e-5)
    assert_parity(lse[:, -Lk:], lse64, name="attention lse", atol=1e-5)
    assert_parity(dq[:, -Lk:], g64[0], name="attention grad q", atol=1e-5, rtol=1e-4)
    assert_parity(dk, g64[1], name="attention grad k", atol=1e-5, rtol=1e-4)
    assert_parity(dv, g64[2], name="attention grad v", atol=1e-5, rtol=1e-4)
    # rows that see no key: output 0, lse -inf, no gradient
    assert out[:, :Lk].abs().max() == 0 and torch.isneginf(lse[:, : Lq - Lk]).all()
    assert dq[:, :Lk].abs().max() == 0


# ---- memory -------------------------------------------------------------------------------------
# memory (B, N, W) = (257, 2**16, 128): batch b starts at element b * N * W = b * 2**23, 2**31 for
# the last one (many small batch elements rather than a few big ones, so that the reference on
# the last one is cheap). Indices: kernels/memory_addressing_impl.h `a.memory + b * N * W`
# (content forward and backward), kernels/memory_read_write_impl.h `(b * N + i) * W` (erase/add
# write: memory, out, grad, grad_memory) and `a.memory + b * N * W` (read forward and backward;
# d_memory).
MEM_B, MEM_N, MEM_W = 257, 2**16, 128


@pytest.fixture(scope="module")
def big_memory():
    """(257, 2**16, 128) fp32, lazy: only the last batch element (32 MiB) is written."""
    assert (MEM_B - 1) * MEM_N * MEM_W >= INT32_LIMIT
    memory = lazy_zeros((MEM_B, MEM_N, MEM_W), torch.float32)
    memory[-1] = randn((MEM_N, MEM_W), torch.Generator().manual_seed(4))
    return memory


def _last(t):
    return t[-1:]


def test_content_addressing_memory_past_int32(big_memory):
    """Forward + backward through autograd: grad_memory (8.0 GiB) is the written tensor past
    2**31 elements. Peak ~9.8 GiB."""
    need(10)
    B, N, W, H = MEM_B, MEM_N, MEM_W, 2
    g = torch.Generator().manual_seed(5)
    memory = big_memory.detach().requires_grad_(True)
    keys = randn((B, H, W), g).requires_grad_(True)
    strengths = (torch.rand(B, H, generator=g) * 20 + 20).requires_grad_(True)  # peaked weights
    weights = M.content_addressing(memory, keys, strengths, backend="cpu")
    gw = torch.zeros(B, H, N)
    gw[-1] = randn((H, N), g)
    weights.backward(gw)
    o64, g64 = ref_grads(ref_mem.content_addressing, (_last(memory), _last(keys), _last(strengths)),
                         (_last(gw),), F64)
    close(weights[-1:], o64, "content weights, last batch element")
    for t, name, o in zip((memory, keys, strengths), ("memory", "keys", "strengths"), g64):
        close(t.grad[-1:], o, f"content grad {name}, last batch element")


def test_memory_write_past_int32(big_memory):
    """Forward through the public op, then the backward op on its own (out and grad_memory,
    8.0 GiB each, one after the other). Peak ~10.4 GiB."""
    need(10.5)
    B, N, W, Hw = MEM_B, MEM_N, MEM_W, 2
    g = torch.Generator().manual_seed(6)
    ww = torch.zeros(B, Hw, N)
    ww[-1] = torch.rand(Hw, N, generator=g) / N * 4
    ww[-1, :, -8:] = torch.rand(Hw, 8, generator=g)  # a few rows written for real
    erase = torch.rand(B, Hw, W, generator=g)
    add = randn((B, Hw, W), g)
    inputs = (big_memory, ww, erase, add)
    with torch.no_grad():
        out = M.memory_write(*inputs, backend="cpu")
    o64 = ref_mem.memory_write(*(_last(t).double() for t in inputs))
    close(out[-1:], o64, "memory write, last batch element", tol=1e-5)
    assert out[0].abs().max() == 0  # zero memory, zero write weights
    del out
    # The backward op (what autograd calls) with a lazy grad_out: through autograd the forward's
    # 8 GiB output would still be alive when the backward allocates grad_memory.
    gout = lazy_zeros((B, N, W), torch.float32)
    gout[-1] = randn((N, W), g)
    grads = torch.ops.attnfast.memory_write_backward(gout, *inputs)
    _, g64 = ref_grads(ref_mem.memory_write, tuple(_last(t) for t in inputs), (_last(gout),), F64)
    # (tol 1e-4: grad erase and grad add are fp32 sums over the N = 2**19 memory rows)
    for a, o, name in zip(grads, g64, ("memory", "write_weights", "erase", "add")):
        close(a[-1:], o, f"memory write grad {name}, last batch element")


def test_memory_read_past_int32(big_memory):
    """Forward + backward through autograd: d_memory (8.0 GiB). Peak ~9.9 GiB."""
    need(10)
    B, N, W, R = MEM_B, MEM_N, MEM_W, 3
    g = torch.Generator().manual_seed(7)
    memory = big_memory.detach().requires_grad_(True)
    rw = torch.zeros(B, R, N)
    rw[-1] = torch.rand(R, N, generator=g) / N
    rw.requires_grad_(True)
    words = M.memory_read(memory, rw, backend="cpu")
    gwords = torch.zeros(B, R, W)
    gwords[-1] = randn((R, W), g)
    words.backward(gwords)
    o64, g64 = ref_grads(ref_mem.memory_read, (_last(memory), _last(rw)), (_last(gwords),), F64)
    close(words[-1:], o64, "memory read, last batch element")
    close(memory.grad[-1:], g64[0], "memory read grad memory, last batch element")
    close(rw.grad[-1:], g64[1], "memory read grad read_weights, last batch element")


# The link (1, 1, N, N) with N = 46400: row i starts at element i * N, past 2**31 for
# i >= 46282. Indices: kernels/memory_links_impl.h link_forward_impl `L + i * N`, `NL + i * N` and
# link_backward_impl `gL + i * N`, `dL + i * N`. Through the registered op that
# dnc_link_update, dnc_directional_read and dnc_access_step all call (the fused link update and
# directional reads), forward and backward: each public function returns only half its outputs.
# The write weights, precedence, read weights and the gradients are 0 outside the last K slots S,
# so on S x S everything equals the reference run on the (K, K) sub-link.

def test_link_past_int32():
    """fp32 forward + backward, R = 2 read heads: new_link and grad_link (8.0 GiB each, one
    after the other; the input link and its gradient are lazy). Peak ~9.2 GiB."""
    need(9.5)
    N, K, R = 46400, 64, 2
    assert (N - K) * N >= INT32_LIMIT
    g = torch.Generator().manual_seed(8)
    S = slice(N - K, N)
    sub = torch.rand(K, K, generator=g) / K * (1 - torch.eye(K))
    link = lazy_zeros((1, 1, N, N), torch.float32)
    link[0, 0, S, S] = sub
    prec, ww, rw = torch.zeros(1, 1, N), torch.zeros(1, 1, N), torch.zeros(1, R, N)
    prec[..., S] = torch.rand(1, 1, K, generator=g) / K
    ww[..., S] = torch.rand(1, 1, K, generator=g) / K
    rw[..., S] = torch.rand(1, R, K, generator=g) / K
    new_link, new_prec, fwd, bwd = torch.ops.attnfast.dnc_link_read_forward(link, prec, ww, rw)

    def fn(link, prec, ww, rw):
        new_link, new_prec = ref_mem.dnc_link_update(link, prec, ww)
        return (new_link, new_prec) + ref_mem.dnc_directional_read(new_link, rw)
    sub_inputs = (link[..., S, S], prec[..., S], ww[..., S], rw[..., S])
    outs = (new_link[..., S, S].clone(), new_prec[..., S], fwd[..., S], bwd[..., S])
    assert new_link[0, 0, :K].abs().max() == 0
    del new_link  # (8 GiB) before the backward allocates grad_link
    for a, o, name in zip(outs, fn(*(t.double() for t in sub_inputs)),
                          ("new link", "new precedence", "forward read", "backward read")):
        close(a, o, f"link {name}, last slots", tol=1e-5)
    g_link = lazy_zeros((1, 1, N, N), torch.float32)
    g_link[0, 0, S, S] = randn((K, K), g)
    g_prec, g_fwd, g_bwd = torch.zeros(1, 1, N), torch.zeros(1, R, 1, N), torch.zeros(1, R, 1, N)
    g_prec[..., S], g_fwd[..., S], g_bwd[..., S] = (randn(t[..., S].shape, g)
                                                    for t in (g_prec, g_fwd, g_bwd))
    grads = torch.ops.attnfast.dnc_link_read_backward(g_link, g_prec, g_fwd, g_bwd,
                                                      link, prec, ww, rw)
    cot = (g_link[..., S, S], g_prec[..., S], g_fwd[..., S], g_bwd[..., S])
    _, g64 = ref_grads(fn, sub_inputs, cot, F64)
    d_link, d_prec, d_ww, d_rw = grads
    for a, o, name in zip((d_link[..., S, S], d_prec[..., S], d_ww[..., S], d_rw[..., S]), g64,
                          ("link", "precedence", "write weights", "read weights")):
        close(a, o, f"link grad {name}, last slots", tol=1e-5)
    assert d_link[0, 0, :K].abs().max() == 0
