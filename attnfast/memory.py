"""Differentiable memory addressing: NTM and DNC memory access, and Graves' soft window.

Functional, batched, differentiable ops. Shapes: memory (B, N, W); keys (B, H, W); strengths
(B, H) (already transformed: positive); weights (B, H, N); usage (B, N); link (B, Hw, N, N);
precedence (B, Hw, N). Semantics follow DeepMind's DNC (addressing.py / access.py); see
attnfast.reference.memory for the formulas and the two documented choices (sort key, 1-based
character index). Every function takes ``backend=`` like :func:`attnfast.boom`; ``attnfast.explain``
tells which backend runs. Every function has the ``cpu`` (C++ kernels), ``cuda``, ``simt`` (the
CUDA kernels under the SIMT harness) and ``triton`` backends, all float32 (and float64 except
Triton); under autocast they compute in float32. ``dnc_read_weights``, the read-mode mix, is a
few torch ops on every backend.
"""
from __future__ import annotations

import functools

import torch

from attnfast import _extension
from attnfast.ops import memory as _ops
from attnfast.ops.autocast import full_precision_call
from attnfast.ops.checks import floating_dtype, int_at_least
from attnfast.reference.memory import EPS, DNCInterface, DNCState  # noqa: F401
from attnfast.reference.memory import dnc_read_weights as _read_mix

__all__ = [
    "DNCState", "DNCInterface", "content_addressing", "ntm_address", "dnc_usage",
    "dnc_allocation", "dnc_write_weights", "memory_write", "memory_read", "dnc_link_update",
    "dnc_directional_read", "dnc_read_weights", "dnc_access_step", "dnc_initial_state",
    "graves_window", "graves_window_sequence", "cpu_cache_info", "empty_cpu_cache",
    "set_cpu_cache_limit",
]


def _run(name, inp, backend):
    return _ops.OPS[name](inp, backend)


def _named(name):
    """Names the public op (for ``attnfast.explain``) and gives it torch's "fp32" autocast
    policy: under autocast, bf16/fp16 inputs are widened and the op computes in fp32
    (usage products, link sums and sort keys are not safe in bf16; see ops/autocast.py)."""
    def deco(fn):
        @functools.wraps(fn)
        def op(*args, **kwargs):
            return full_precision_call(fn, args, kwargs)

        op.__attnfast_op__ = name
        return op
    return deco


@_named("content_addressing")
def content_addressing(memory, keys, strengths, *, backend=None) -> torch.Tensor:
    """Content weights softmax_i(beta_h cos(k_h, M_i)) -> (B, H, N).

    cos = k.M / (|k| |M| + eps), |x| = sqrt(sum x^2 + eps), eps = 1e-6. memory (B, N, W),
    keys (B, H, W), strengths (B, H) (transformed already: softplus / oneplus of the raw value).
    """
    return _run("content_addressing", _ops.prep_content(memory, keys, strengths), backend)


@_named("ntm_address")
def ntm_address(memory, key, strength, gate, shift, gamma, prev_weights, *, backend=None):
    """NTM addressing (Graves et al. 2014): content weights, interpolation with prev_weights by
    gate, circular shift by the distribution ``shift`` (B, H, S) over offsets -(S//2)..S//2 (S odd;
    offset +1 moves weight from i to i + 1), sharpening by gamma >= 1 -> (B, H, N)."""
    return _run("ntm_address", _ops.prep_ntm(memory, key, strength, gate, shift, gamma,
                                             prev_weights), backend)


@_named("dnc_usage")
def dnc_usage(usage, write_weights, free_gate, read_weights, *, backend=None):
    """Usage after the previous step's writes and the free gates -> (B, N).

    u' = u + (1 - u)(1 - prod_h (1 - ww_h)), u_t = u' prod_r (1 - f_r wr_r); write_weights
    (B, Hw, N) enter without gradient (as in DeepMind's DNC)."""
    return _run("dnc_usage", _ops.prep_usage(usage, write_weights, free_gate, read_weights),
                backend)


@_named("dnc_allocation")
def dnc_allocation(usage, write_gates=None, *, backend=None):
    """Allocation weights from usage (B, N) -> (B, N); with write_gates (B, Hw) -> (B, Hw, N),
    the heads allocated in sequence (u <- u + (1 - u) g_h a_h between heads). A stable sort of
    the usage (ties: lower index first); no gradient through the permutation."""
    return _run("dnc_allocation", _ops.prep_allocation(usage, write_gates), backend)


@_named("dnc_write_weights")
def dnc_write_weights(usage, content_weights, allocation_gate, write_gate, *, backend=None):
    """ww = gw (ga a + (1 - ga) c_w) -> (B, Hw, N), a = dnc_allocation(usage, ga * gw)."""
    return _run("dnc_write_weights", _ops.prep_write_weights(usage, content_weights,
                                                             allocation_gate, write_gate), backend)


@_named("memory_write")
def memory_write(memory, write_weights, erase, add, *, backend=None):
    """Erase then add: M * prod_h (1 - ww_h e_h^T) + sum_h ww_h v_h^T -> (B, N, W).
    write_weights (B, Hw, N), erase and add (B, Hw, W)."""
    return _run("memory_write", _ops.prep_memory_write(memory, write_weights, erase, add), backend)


@_named("memory_read")
def memory_read(memory, read_weights, *, backend=None):
    """Read words wr M -> (B, R, W)."""
    return _run("memory_read", _ops.prep_memory_read(memory, read_weights), backend)


@_named("dnc_link_update")
def dnc_link_update(link, precedence, write_weights, *, backend=None):
    """Temporal link update -> (link (B, Hw, N, N), precedence (B, Hw, N)):
    L[i, j] <- (1 - w_i - w_j) L[i, j] + w_i p[j] (diagonal 0); p <- (1 - sum w) p + w."""
    return _run("dnc_link_update", _ops.prep_link_update(link, precedence, write_weights), backend)


@_named("dnc_directional_read")
def dnc_directional_read(link, read_weights, *, backend=None):
    """Forward f = L wr and backward b = L^T wr weights, each (B, R, Hw, N). The link's
    diagonal must be zero (as every DNC link's is): the cpu backend does not read it."""
    return _run("dnc_directional_read", _ops.prep_directional_read(link, read_weights), backend)


def dnc_read_weights(content, forward, backward, read_mode):
    """wr = pi_content c + sum_h pi_fwd,h f_h + sum_h pi_bwd,h b_h -> (B, R, N); read_mode
    (B, R, 1 + 2 Hw) laid out [backward x Hw, forward x Hw, content]. (Plain torch ops.)"""
    dims = _ops.check_tensors("dnc_read_weights", [
        ("content", content, "B R N"), ("forward", forward, "B R Hw N"),
        ("backward", backward, "B R Hw N"), ("read_mode", read_mode, "B R M")])
    if dims["M"] != 1 + 2 * dims["Hw"]:
        raise ValueError(f"dnc_read_weights: read_mode must have shape (B, R, 1 + 2 Hw = "
                         f"{1 + 2 * dims['Hw']}), got {tuple(read_mode.shape)}")
    return _read_mix(content, forward, backward, read_mode)


@_named("dnc_access_step")
def dnc_access_step(memory_state, interface, *, backend=None):
    """One DNC memory access step: usage -> allocation -> write weights -> erase/add -> link ->
    reads. ``memory_state`` a :class:`DNCState`, ``interface`` a :class:`DNCInterface`.
    Returns (read_words (B, R, W), new DNCState)."""
    return _run("dnc_access_step", _ops.prep_access_step(memory_state, interface), backend)


def dnc_initial_state(batch_size, memory_size, word_size, num_reads, num_writes, *,
                      dtype=None, device=None) -> DNCState:
    """All-zero DNCState (DeepMind's initial state)."""
    int_at_least("batch_size", batch_size, 0)
    for name, size in (("memory_size", memory_size), ("word_size", word_size),
                       ("num_reads", num_reads), ("num_writes", num_writes)):
        int_at_least(name, size, 1)
    floating_dtype("dtype", dtype)
    z = dict(dtype=dtype, device=device)
    b, n = batch_size, memory_size
    return DNCState(torch.zeros(b, n, word_size, **z), torch.zeros(b, num_reads, n, **z),
                    torch.zeros(b, num_writes, n, **z), torch.zeros(b, num_writes, n, n, **z),
                    torch.zeros(b, num_writes, n, **z), torch.zeros(b, n, **z))


@_named("graves_window")
def graves_window(alpha_hat, beta_hat, kappa_hat, kappa_prev, chars, char_mask=None, *,
                  backend=None):
    """One step of Graves' soft window (handwriting synthesis). (B, K) raw parameters and
    kappa_prev; chars (B, U, C); char_mask (B, U) or None -> (w (B, C), kappa (B, K), phi (B, U)).
    alpha = exp(a^), beta = exp(b^), kappa = kappa_prev + exp(k^),
    phi(u) = sum_k alpha_k exp(-beta_k (kappa_k - u)^2) for u = 1..U, w = sum_u phi(u) c_u."""
    return _run("graves_window", _ops.prep_graves(alpha_hat, beta_hat, kappa_hat, kappa_prev,
                                                  chars, char_mask), backend)


@_named("graves_window_sequence")
def graves_window_sequence(alpha_hat, beta_hat, kappa_hat, chars, char_mask=None, kappa0=None, *,
                           backend=None):
    """Graves' window over a whole sequence, (B, T, K) parameters -> (w (B, T, C), kappa (B, T, K),
    phi (B, T, U)); kappa is a cumulative sum, so all steps are computed at once."""
    return _run("graves_window_sequence", _ops.prep_graves_seq(alpha_hat, beta_hat, kappa_hat,
                                                               chars, char_mask, kappa0), backend)


# ---- the CPU block cache of the link-sized tensors (csrc/cpu/block_cache.h) --------------------

def cpu_cache_info() -> dict:
    """What the CPU block cache holds: ``cached_bytes`` (free blocks kept), ``limit_bytes``,
    ``hits`` and ``misses`` since start. The cpu backend serves the (B, Hw, N, N) link and link
    gradient tensors from it, and the attention kernels' outputs, gradients, packed K/V operands
    and dQ buffers (only tensors of 1 MiB or more), because fresh pages for them cost more than
    the kernels that use them (a page fault per 4 KiB, an munmap per free). The limit comes from
    ``ATTNFAST_CPU_CACHE_MB`` (default 512; 0 turns the cache off)."""
    if not _extension.loaded():
        return {"cached_bytes": 0, "limit_bytes": 0, "hits": 0, "misses": 0}
    return dict(_extension._C.cpu_cache_info())


def empty_cpu_cache() -> None:
    """Return every block the CPU cache holds to the system (tensors in use are not affected)."""
    if _extension.loaded():
        _extension._C.cpu_cache_clear()


def set_cpu_cache_limit(megabytes: int) -> None:
    """Bound the CPU block cache to ``megabytes`` (0 turns it off) and trim it to that bound."""
    max_mb = (2**63 - 1) >> 20  # the limit is kept in bytes, as an int64
    if not isinstance(megabytes, int) or isinstance(megabytes, bool) or not 0 <= megabytes <= max_mb:
        raise ValueError(f"megabytes must be an int in [0, {max_mb}], got {megabytes!r}")
    if _extension.loaded():
        _extension._C.set_cpu_cache_limit(megabytes << 20)
