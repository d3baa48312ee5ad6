"""Determinism and concurrency: under ``torch.use_deterministic_algorithms(True)`` every backward
of the CPU-side backends is bitwise repeatable; CPU kernels called from several Python threads
at once give the serial results; the CPU block cache stays within its limit; repeated calls do not
grow the resident memory."""
from __future__ import annotations

import os
import threading

import pytest
import torch

import attnfast
from attnfast import memory as M
from conftest import device_for, require_backend
from memory_cases import interface


def _grads(backend, seed=0):
    dev = device_for(backend)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 37, 24, generator=g).to(dev).requires_grad_(True)
    w = (torch.randn(72, 24, generator=g) / 5).to(dev).requires_grad_(True)
    k = torch.randn(3, 53, 24, generator=g).to(dev).requires_grad_(True)
    out = attnfast.single_head_attention(x, k, k, causal=True, dropout_p=0.2, training=True,
                                         seed=7, backend=backend)
    out = out + attnfast.boom(x, w, dropout_p=0.1, training=True, seed=3, backend=backend)
    cot = torch.randn(out.shape, generator=g).to(dev)
    return [out.detach()] + list(torch.autograd.grad(out, (x, w, k), cot))


@pytest.mark.parametrize("backend", ["cpu", "simt", "triton"])
def test_backward_bitwise_repeatable_under_deterministic_algorithms(backend):
    require_backend(backend)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = _grads(backend), _grads(backend)
    finally:
        torch.use_deterministic_algorithms(before)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_memory_backward_bitwise_repeatable():
    require_backend("cpu")
    g = torch.Generator().manual_seed(1)
    mem = torch.randn(2, 33, 7, generator=g, requires_grad=True)
    keys, s = torch.randn(2, 3, 7, generator=g), torch.rand(2, 3, generator=g) + 1

    def run():
        w = M.content_addressing(mem, keys, s, backend="cpu")
        out = M.memory_read(mem, w, backend="cpu")
        return torch.autograd.grad(out.square().sum(), mem)[0]

    torch.use_deterministic_algorithms(True)
    try:
        assert torch.equal(run(), run())
    finally:
        torch.use_deterministic_algorithms(False)


def test_cpu_kernels_from_several_threads_match_serial():
    require_backend("cpu")
    inputs = [torch.randn(2, 65, 32, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    w = torch.randn(128, 32, generator=torch.Generator().manual_seed(99)) / 6

    def work(x):
        y = attnfast.single_head_attention(x, x, x, causal=True, backend="cpu")
        return attnfast.boom(y, w, backend="cpu")

    serial = [work(x) for x in inputs]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def thread_main(i):
        try:
            for _ in range(5):  # repeated, so the calls overlap
                results[i] = work(inputs[i])
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for i, want in enumerate(serial):
        assert torch.equal(results[i], want)


def test_block_cache_stays_within_its_limit():
    require_backend("cpu")
    info = M.cpu_cache_info()
    before = info["limit_bytes"] >> 20
    try:
        M.set_cpu_cache_limit(3)
        for n in (300, 400, 500, 300):  # link tensors of 0.36-1 MB each, and their gradients
            link = torch.rand(2, 1, n, n) * (1 - torch.eye(n))
            prec = torch.softmax(torch.randn(2, 1, n), -1)
            ww = torch.softmax(torch.randn(2, 1, n), -1)
            new_link, _ = M.dnc_link_update(link, prec, ww, backend="cpu")
            del new_link
            assert M.cpu_cache_info()["cached_bytes"] <= 3 << 20
    finally:
        M.set_cpu_cache_limit(before)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm (Linux)")
@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's quarantine keeps freed memory resident")
def test_repeated_calls_keep_resident_memory_flat():
    """60 more training-style calls (forward + backward) of attention, Boom and the DNC step on
    the compiled CPU backend, after a warm-up, leave the resident set where it was: each call
    allocates over 1 MiB of outputs and gradients, so a leak of one call's tensors would add
    more than 60 MiB; the bound is 16 MiB (allocator and block-cache noise)."""
    require_backend("cpu")
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 128, 256, generator=g, requires_grad=True)
    kv = torch.randn(2, 256, 256, generator=g, requires_grad=True)
    x = torch.randn(256, 256, generator=g, requires_grad=True)
    w = torch.randn(1024, 256, generator=g, requires_grad=True)
    state = M.dnc_initial_state(4, 64, 32, 2, 1)
    x_dnc = interface(4, 64, 32, 2, 1, g, torch.float32)

    def calls():
        out = attnfast.single_head_attention(q, kv, kv, causal=True, backend="cpu")
        out.sum().backward()
        attnfast.boom(x, w, backend="cpu").sum().backward()
        words, _ = M.dnc_access_step(state, x_dnc, backend="cpu")
        words.sum()

    for _ in range(10):
        calls()
    before = _resident_bytes()
    for _ in range(60):
        calls()
    grown = _resident_bytes() - before
    assert grown < 16 << 20, f"resident memory grew by {grown >> 20} MiB over 60 calls"
