"""Memory addressing ops (NTM, DNC, Graves' window): argument checks, backend implementations,
fake kernels and autograd of the compiled ops.

Compiled-op contract (csrc/schemas.h, "memory" section): a few fused ops, each with an explicit
backward op, float32/float64, contiguous inputs, explicit shapes:

  memory_content_forward(memory (B,N,W), keys (B,H,W), strengths (B,H), eps) -> weights (B,H,N)
  dnc_allocation_forward(usage (B,N), write_gates (B,Hw), eps) -> allocation (B,Hw,N)
  memory_write_forward(memory, write_weights (B,Hw,N), erase (B,Hw,W), add (B,Hw,W)) -> memory
  dnc_link_read_forward(link (B,Hw,N,N), precedence (B,Hw,N), write_weights (B,Hw,N),
                        read_weights (B,R,N)) -> (link, precedence, forward, backward (B,R,Hw,N))

The public functions that have no op of their own are compositions of these plus a few torch
ops (usage, write-weight mix, read-mode mix, the read bmm); each says so in explain().
"""
from __future__ import annotations

import dataclasses

import torch

from attnfast import _extension, dispatch
from attnfast import reference as _ref_pkg  # noqa: F401  (keeps the import order of boom)
from attnfast.dispatch import Implementation, Op, device_reasons
from attnfast.ops.first_order import first_order
from attnfast.reference import memory as ref

KERNEL_DTYPES = (torch.float32, torch.float64)
EPS = ref.EPS


# ---- argument checks ---------------------------------------------------------------------------

@dataclasses.dataclass
class MemoryInputs:
    """Validated arguments of one public memory function; device/dtype of its first tensor."""
    args: tuple
    kwargs: dict
    device: torch.device
    dtype: torch.dtype
    dims: dict


def check_tensors(op: str, specs, dims: dict | None = None) -> dict:
    """specs: (name, tensor, "B N W") triples. Checks type, rank, floating dtype, a common
    dtype/device and that each named axis has one size across tensors; returns the sizes."""
    dims = {} if dims is None else dims
    first = None
    for name, t, axes in specs:
        axes = axes.split()
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name} must be a torch.Tensor of shape ({', '.join(axes)}), "
                             f"got {type(t).__name__}")
        if t.dim() != len(axes):
            raise ValueError(f"{op}: {name} must be {len(axes)}-D ({', '.join(axes)}), "
                             f"got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
        if first is None:
            first = (name, t)
        elif t.dtype != first[1].dtype or t.device != first[1].device:
            raise ValueError(f"{op}: {name} is {t.dtype} on {t.device} but {first[0]} is "
                             f"{first[1].dtype} on {first[1].device}; all tensors must match")
        for ax, size in zip(axes, t.shape):
            if ax in dims and dims[ax] != size:
                want = ", ".join(f"{a}={dims[a]}" if a in dims else a for a in axes)
                raise ValueError(f"{op}: {name} must have shape ({want}), got {tuple(t.shape)} "
                                 f"({ax} is {dims[ax]} elsewhere)")
            dims.setdefault(ax, int(size))
    return dims


def _inputs(op, specs, args, kwargs=None, dims=None) -> MemoryInputs:
    dims = check_tensors(op, specs, dims)
    t = specs[0][1]
    return MemoryInputs(tuple(args), kwargs or {}, t.device, t.dtype, dims)


def _cpu_refuses(inp: MemoryInputs) -> list[str]:
    return device_reasons(inp, "cpu", KERNEL_DTYPES)


def _c(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous()


# ---- fake kernels and autograd of the compiled ops ---------------------------------------------

def _fake_content(memory, keys, strengths, eps):
    return keys.new_empty((keys.shape[0], keys.shape[1], memory.shape[1]))


def _fake_content_bwd(grad, memory, keys, strengths, weights, eps):
    return torch.empty_like(memory), torch.empty_like(keys), torch.empty_like(strengths)


def _fake_alloc(usage, write_gates, eps):
    return usage.new_empty((usage.shape[0], write_gates.shape[1], usage.shape[1]))


def _fake_alloc_bwd(grad, usage, write_gates, eps):
    return torch.empty_like(usage), torch.empty_like(write_gates)


def _fake_write(memory, write_weights, erase, add):
    return torch.empty_like(memory)


def _fake_write_bwd(grad, memory, write_weights, erase, add):
    return (torch.empty_like(memory), torch.empty_like(write_weights), torch.empty_like(erase),
            torch.empty_like(add))


def _fake_link(link, precedence, write_weights, read_weights):
    b, hw, n = precedence.shape
    r = read_weights.shape[1]
    return (torch.empty_like(link), torch.empty_like(precedence),
            link.new_empty((b, r, hw, n)), link.new_empty((b, r, hw, n)))


def _fake_link_bwd(g_link, g_prec, g_fwd, g_bwd, link, precedence, write_weights, read_weights):
    return (torch.empty_like(link), torch.empty_like(precedence), torch.empty_like(write_weights),
            torch.empty_like(read_weights))


def _register_compiled():
    ops = torch.ops.attnfast
    for name, fake in (("memory_content_forward", _fake_content),
                       ("memory_content_backward", _fake_content_bwd),
                       ("dnc_allocation_forward", _fake_alloc),
                       ("dnc_allocation_backward", _fake_alloc_bwd),
                       ("memory_write_forward", _fake_write),
                       ("memory_write_backward", _fake_write_bwd),
                       ("dnc_link_read_forward", _fake_link),
                       ("dnc_link_read_backward", _fake_link_bwd)):
        torch.library.register_fake(f"attnfast::{name}")(fake)

    # content addressing: backward from the saved weights (the softmax output).
    def content_ctx(ctx, inputs, output):
        memory, keys, strengths, eps = inputs
        ctx.save_for_backward(memory, keys, strengths, output)
        ctx.eps = eps

    @first_order("content_addressing")
    def content_bwd(ctx, grad):
        memory, keys, strengths, weights = ctx.saved_tensors
        gm, gk, gs = ops.memory_content_backward(_c(grad), memory, keys, strengths, weights, ctx.eps)
        return gm, gk, gs, None

    torch.library.register_autograd("attnfast::memory_content_forward", content_bwd,
                                    setup_context=content_ctx)

    # allocation: the backward re-sorts (O(N log N)) rather than saving permutations.
    def alloc_ctx(ctx, inputs, output):
        usage, write_gates, eps = inputs
        ctx.save_for_backward(usage, write_gates)
        ctx.eps = eps

    @first_order("dnc_allocation")
    def alloc_bwd(ctx, grad):
        usage, write_gates = ctx.saved_tensors
        gu, gg = ops.dnc_allocation_backward(_c(grad), usage, write_gates, ctx.eps)
        return gu, gg, None

    torch.library.register_autograd("attnfast::dnc_allocation_forward", alloc_bwd,
                                    setup_context=alloc_ctx)

    def write_ctx(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @first_order("memory_write")
    def write_bwd(ctx, grad):
        return ops.memory_write_backward(_c(grad), *ctx.saved_tensors)

    torch.library.register_autograd("attnfast::memory_write_forward", write_bwd,
                                    setup_context=write_ctx)

    # link + reads: the backward recomputes the new link row by row from the saved inputs, so
    # nothing (B, Hw, N, N)-sized is saved beyond the previous link, which exists anyway.
    def link_ctx(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @first_order("dnc_link_update")
    def link_bwd(ctx, g_link, g_prec, g_fwd, g_bwd):
        return ops.dnc_link_read_backward(_c(g_link), _c(g_prec), _c(g_fwd), _c(g_bwd),
                                          *ctx.saved_tensors)

    torch.library.register_autograd("attnfast::dnc_link_read_forward", link_bwd,
                                    setup_context=link_ctx)


_HAS_OPS = _extension.loaded() and hasattr(torch.ops.attnfast, "dnc_link_read_forward")
if _HAS_OPS:
    _register_compiled()


def _cpu_status(inp) -> list[str]:
    if not _HAS_OPS:
        return ["attnfast._C was built without the memory ops (rebuild the extension)"]
    return _cpu_refuses(inp)


# ---- CPU compositions (compiled ops + a few torch ops) -----------------------------------------

def cpu_content_addressing(memory, keys, strengths, eps=EPS):
    return torch.ops.attnfast.memory_content_forward(_c(memory), _c(keys), _c(strengths), eps)


def cpu_allocation(usage, write_gates, eps=EPS):
    return torch.ops.attnfast.dnc_allocation_forward(_c(usage), _c(write_gates), eps)


def cpu_memory_write(memory, write_weights, erase, add):
    return torch.ops.attnfast.memory_write_forward(_c(memory), _c(write_weights), _c(erase), _c(add))


def cpu_link_read(link, precedence, write_weights, read_weights):
    return torch.ops.attnfast.dnc_link_read_forward(_c(link), _c(precedence), _c(write_weights),
                                                    _c(read_weights))


def cpu_write_weights(usage, content_weights, allocation_gate, write_gate, eps=EPS):
    alloc = cpu_allocation(usage, allocation_gate * write_gate, eps)
    ga, gw = allocation_gate[:, :, None], write_gate[:, :, None]
    return gw * (ga * alloc + (1 - ga) * content_weights)


def cpu_access_step(state: ref.DNCState, x: ref.DNCInterface, eps=EPS):
    """dnc_access_step on the compiled ops: usage, content (x2), allocation, erase/add write, the
    fused link update + directional reads and the read; the two weight mixes are torch ops."""
    s = state
    usage = cpu_usage(s.usage, s.write_weights, x.free_gate, s.read_weights)
    write_content = cpu_content_addressing(s.memory, x.write_keys, x.write_strengths, eps)
    write_weights = cpu_write_weights(usage, write_content, x.allocation_gate, x.write_gate, eps)
    memory = cpu_memory_write(s.memory, write_weights, x.erase_vectors, x.write_vectors)
    link, precedence, fwd, bwd = cpu_link_read(s.link, s.precedence, write_weights, s.read_weights)
    read_content = cpu_content_addressing(memory, x.read_keys, x.read_strengths, eps)
    read_weights = ref.dnc_read_weights(read_content, fwd, bwd, x.read_mode)
    read_words = cpu_memory_read(memory, read_weights)
    return read_words, ref.DNCState(memory, read_weights, write_weights, link, precedence, usage)


# ---- second group of compiled ops: NTM location, Graves' window, usage, read ------------------
# (csrc/cpu/memory_extra.cpp; schemas in csrc/schemas.h, "memory, second group")

def _fake_ntm(content, gate, prev_weights, shift, gamma):
    return torch.empty_like(content)


def _fake_ntm_bwd(grad, content, gate, prev_weights, shift, gamma):
    return (torch.empty_like(content), torch.empty_like(gate), torch.empty_like(prev_weights),
            torch.empty_like(shift), torch.empty_like(gamma))


def _fake_graves(alpha_hat, beta_hat, kappa_hat, kappa0, chars, char_mask):
    b, t, _ = alpha_hat.shape
    return (chars.new_empty((b, t, chars.shape[2])), torch.empty_like(kappa_hat),
            chars.new_empty((b, t, chars.shape[1])))


def _fake_graves_bwd(g_w, g_kappa, g_phi, alpha_hat, beta_hat, kappa_hat, kappa0, chars, char_mask):
    dm = torch.empty_like(char_mask) if char_mask is not None else alpha_hat.new_empty((0,))
    return (torch.empty_like(alpha_hat), torch.empty_like(beta_hat), torch.empty_like(kappa_hat),
            torch.empty_like(kappa0), torch.empty_like(chars), dm)


def _fake_usage(usage, write_weights, free_gate, read_weights):
    return torch.empty_like(usage)


def _fake_usage_bwd(grad, usage, write_weights, free_gate, read_weights):
    return torch.empty_like(usage), torch.empty_like(free_gate), torch.empty_like(read_weights)


def _fake_read(memory, read_weights):
    return memory.new_empty((memory.shape[0], read_weights.shape[1], memory.shape[2]))


def _fake_read_bwd(grad, memory, read_weights):
    return torch.empty_like(memory), torch.empty_like(read_weights)


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _register_compiled_extra():
    ops = torch.ops.attnfast
    for name, fake in (("ntm_location_forward", _fake_ntm), ("ntm_location_backward", _fake_ntm_bwd),
                       ("graves_window_forward", _fake_graves),
                       ("graves_window_backward", _fake_graves_bwd),
                       ("dnc_usage_forward", _fake_usage), ("dnc_usage_backward", _fake_usage_bwd),
                       ("memory_read_forward", _fake_read), ("memory_read_backward", _fake_read_bwd)):
        torch.library.register_fake(f"attnfast::{name}")(fake)

    # Every backward recomputes what it needs from the saved inputs (all small: (B, H, N) or
    # (B, T, K)-sized), so no intermediate of the forward is kept.
    @first_order("ntm_address")
    def ntm_bwd(ctx, grad):
        return ops.ntm_location_backward(_c(grad), *ctx.saved_tensors)

    @first_order("graves_window")
    def graves_bwd(ctx, g_w, g_kappa, g_phi):
        *grads, g_mask = ops.graves_window_backward(_c(g_w), _c(g_kappa), _c(g_phi),
                                                    *ctx.saved_tensors)
        return (*grads, g_mask if ctx.saved_tensors[-1] is not None else None)

    @first_order("dnc_usage")
    def usage_bwd(ctx, grad):
        gu, gf, gr = ops.dnc_usage_backward(_c(grad), *ctx.saved_tensors)
        return gu, None, gf, gr  # write_weights: stop_gradient, as in DeepMind's DNC

    @first_order("memory_read")
    def read_bwd(ctx, grad):
        return ops.memory_read_backward(_c(grad), *ctx.saved_tensors)

    for name, bwd in (("ntm_location_forward", ntm_bwd), ("graves_window_forward", graves_bwd),
                      ("dnc_usage_forward", usage_bwd), ("memory_read_forward", read_bwd)):
        torch.library.register_autograd(f"attnfast::{name}", bwd, setup_context=_save_inputs)


_HAS_EXTRA_OPS = _extension.loaded() and hasattr(torch.ops.attnfast, "memory_read_forward")
if _HAS_EXTRA_OPS:
    _register_compiled_extra()


def _cpu_status_extra(inp) -> list[str]:
    if not _HAS_EXTRA_OPS:
        return ["attnfast._C was built without the second group of memory ops "
                "(ntm_location, graves_window, dnc_usage, memory_read: rebuild the extension)"]
    return _cpu_refuses(inp)


def _cpu_extra(fn):
    return Implementation("cpu", _cpu_status_extra, lambda inp: fn(*inp.args))


def cpu_usage(usage, write_weights, free_gate, read_weights):
    # write_weights detached, as the reference: no gradient (and no requires_grad) through them.
    return torch.ops.attnfast.dnc_usage_forward(_c(usage), _c(write_weights.detach()),
                                                _c(free_gate), _c(read_weights))


def cpu_memory_read(memory, read_weights):
    return torch.ops.attnfast.memory_read_forward(_c(memory), _c(read_weights))


def cpu_ntm_address(memory, key, strength, gate, shift, gamma, prev_weights, eps=EPS):
    """Two compiled ops: content weights, then interpolation + shift + sharpening fused."""
    content = cpu_content_addressing(memory, key, strength, eps)
    return torch.ops.attnfast.ntm_location_forward(content, _c(gate), _c(prev_weights), _c(shift),
                                                   _c(gamma))


def cpu_graves_window_sequence(alpha_hat, beta_hat, kappa_hat, chars, char_mask=None, kappa0=None):
    if kappa0 is None:
        kappa0 = alpha_hat.new_zeros((alpha_hat.shape[0], alpha_hat.shape[2]))
    if char_mask is not None:
        char_mask = _c(char_mask.to(alpha_hat.dtype))  # as the reference: phi * mask.to(phi.dtype)
    return torch.ops.attnfast.graves_window_forward(_c(alpha_hat), _c(beta_hat), _c(kappa_hat),
                                                    _c(kappa0), _c(chars), char_mask)


def cpu_graves_window(alpha_hat, beta_hat, kappa_hat, kappa_prev, chars, char_mask=None):
    w, kappa, phi = cpu_graves_window_sequence(alpha_hat[:, None], beta_hat[:, None],
                                               kappa_hat[:, None], chars, char_mask, kappa_prev)
    return w[:, 0], kappa[:, 0], phi[:, 0]


# ---- end of the second group -------------------------------------------------------------------


# ---- prepare functions (validation) and the Op table -------------------------------------------

def prep_content(memory, keys, strengths):
    return _inputs("content_addressing", [("memory", memory, "B N W"), ("keys", keys, "B H W"),
                                          ("strengths", strengths, "B H")],
                   (memory, keys, strengths))


def prep_usage(usage, write_weights, free_gate, read_weights):
    return _inputs("dnc_usage", [("usage", usage, "B N"), ("write_weights", write_weights, "B Hw N"),
                                 ("free_gate", free_gate, "B R"), ("read_weights", read_weights, "B R N")],
                   (usage, write_weights, free_gate, read_weights))


def prep_allocation(usage, write_gates=None):
    specs = [("usage", usage, "B N")]
    if write_gates is not None:
        specs.append(("write_gates", write_gates, "B Hw"))
    return _inputs("dnc_allocation", specs, (usage, write_gates))


def prep_write_weights(usage, content_weights, allocation_gate, write_gate):
    return _inputs("dnc_write_weights", [
        ("usage", usage, "B N"), ("content_weights", content_weights, "B Hw N"),
        ("allocation_gate", allocation_gate, "B Hw"), ("write_gate", write_gate, "B Hw")],
        (usage, content_weights, allocation_gate, write_gate))


def prep_memory_write(memory, write_weights, erase, add):
    return _inputs("memory_write", [
        ("memory", memory, "B N W"), ("write_weights", write_weights, "B Hw N"),
        ("erase", erase, "B Hw W"), ("add", add, "B Hw W")], (memory, write_weights, erase, add))


def prep_memory_read(memory, read_weights):
    return _inputs("memory_read", [("memory", memory, "B N W"), ("read_weights", read_weights, "B R N")],
                   (memory, read_weights))


def prep_link_update(link, precedence, write_weights):
    return _inputs("dnc_link_update", [
        ("link", link, "B Hw N N"), ("precedence", precedence, "B Hw N"),
        ("write_weights", write_weights, "B Hw N")], (link, precedence, write_weights))


def prep_directional_read(link, read_weights):
    return _inputs("dnc_directional_read", [("link", link, "B Hw N N"),
                                            ("read_weights", read_weights, "B R N")],
                   (link, read_weights))


def prep_access_step(state, interface):
    if not isinstance(state, tuple) or len(state) != len(ref.DNCState._fields):
        raise ValueError(f"dnc_access_step: state must be a DNCState {ref.DNCState._fields}, "
                         f"got {type(state).__name__}")
    if not isinstance(interface, tuple) or len(interface) != len(ref.DNCInterface._fields):
        raise ValueError(f"dnc_access_step: interface must be a DNCInterface "
                         f"{ref.DNCInterface._fields}, got {type(interface).__name__}")
    s, x = ref.DNCState(*state), ref.DNCInterface(*interface)
    dims = check_tensors("dnc_access_step", [
        ("state.memory", s.memory, "B N W"), ("state.read_weights", s.read_weights, "B R N"),
        ("state.write_weights", s.write_weights, "B Hw N"), ("state.link", s.link, "B Hw N N"),
        ("state.precedence", s.precedence, "B Hw N"), ("state.usage", s.usage, "B N"),
        ("interface.write_vectors", x.write_vectors, "B Hw W"),
        ("interface.erase_vectors", x.erase_vectors, "B Hw W"),
        ("interface.free_gate", x.free_gate, "B R"),
        ("interface.allocation_gate", x.allocation_gate, "B Hw"),
        ("interface.write_gate", x.write_gate, "B Hw"),
        ("interface.read_mode", x.read_mode, "B R M"),
        ("interface.write_keys", x.write_keys, "B Hw W"),
        ("interface.write_strengths", x.write_strengths, "B Hw"),
        ("interface.read_keys", x.read_keys, "B R W"),
        ("interface.read_strengths", x.read_strengths, "B R")])
    if dims["M"] != 1 + 2 * dims["Hw"]:
        raise ValueError(f"dnc_access_step: interface.read_mode must have shape (B, R, 1 + 2 Hw = "
                         f"{1 + 2 * dims['Hw']}), got {tuple(x.read_mode.shape)}")
    return MemoryInputs((s, x), {}, s.memory.device, s.memory.dtype, dims)


def prep_ntm(memory, key, strength, gate, shift, gamma, prev_weights):
    inp = _inputs("ntm_address", [
        ("memory", memory, "B N W"), ("key", key, "B H W"), ("strength", strength, "B H"),
        ("gate", gate, "B H"), ("shift", shift, "B H S"), ("gamma", gamma, "B H"),
        ("prev_weights", prev_weights, "B H N")],
        (memory, key, strength, gate, shift, gamma, prev_weights))
    if inp.dims["S"] % 2 != 1 or inp.dims["S"] > inp.dims["N"]:
        raise ValueError(f"ntm_address: shift must have an odd last dim S <= N={inp.dims['N']} "
                         f"(offsets -(S//2)..S//2), got S={inp.dims['S']}")
    return inp


def prep_graves(alpha_hat, beta_hat, kappa_hat, kappa_prev, chars, char_mask=None):
    specs = [("alpha_hat", alpha_hat, "B K"), ("beta_hat", beta_hat, "B K"),
             ("kappa_hat", kappa_hat, "B K"), ("kappa_prev", kappa_prev, "B K"),
             ("chars", chars, "B U C")]
    dims = check_tensors("graves_window", specs)
    _check_mask("graves_window", char_mask, dims)
    return MemoryInputs((alpha_hat, beta_hat, kappa_hat, kappa_prev, chars, char_mask), {},
                        alpha_hat.device, alpha_hat.dtype, dims)


def prep_graves_seq(alpha_hat, beta_hat, kappa_hat, chars, char_mask=None, kappa0=None):
    specs = [("alpha_hat", alpha_hat, "B T K"), ("beta_hat", beta_hat, "B T K"),
             ("kappa_hat", kappa_hat, "B T K"), ("chars", chars, "B U C")]
    if kappa0 is not None:
        specs.append(("kappa0", kappa0, "B K"))
    dims = check_tensors("graves_window_sequence", specs)
    _check_mask("graves_window_sequence", char_mask, dims)
    return MemoryInputs((alpha_hat, beta_hat, kappa_hat, chars, char_mask, kappa0), {},
                        alpha_hat.device, alpha_hat.dtype, dims)


def _check_mask(op, mask, dims):
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (dims["B"], dims["U"]):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{op}: char_mask must be a (B={dims['B']}, U={dims['U']}) tensor, got {shape}")


def _ref(fn):
    return Implementation("reference", lambda inp: [], lambda inp: fn(*inp.args))


def _cpu(fn):
    return Implementation("cpu", _cpu_status, lambda inp: fn(*inp.args))


def _alloc_cpu(usage, write_gates):
    if write_gates is None:
        return cpu_allocation(usage, usage.new_ones((usage.shape[0], 1)))[:, 0]
    return cpu_allocation(usage, write_gates)


def _link_update_cpu(link, precedence, write_weights):
    # The fused op with no read heads (R = 0): just the link and precedence update.
    empty_reads = write_weights.new_zeros((write_weights.shape[0], 0, write_weights.shape[2]))
    new_link, new_prec, _, _ = cpu_link_read(link, precedence, write_weights, empty_reads)
    return new_link, new_prec


def _directional_read_cpu(link, read_weights):
    # Reads through a given link: the fused op with all-zero write weights leaves the link as
    # it is (its diagonal is zeroed, which a DNC link already has) and reads through it.
    b, hw, n, _ = link.shape
    zeros = link.new_zeros((b, hw, n))
    _, _, fwd, bwd = cpu_link_read(link, zeros, zeros, read_weights)
    return fwd, bwd


OPS = {op.name: dispatch.register(op) for op in [
    Op("content_addressing", prep_content,
       [_ref(ref.content_addressing), _cpu(cpu_content_addressing)]),
    Op("dnc_usage", prep_usage, [_ref(ref.dnc_usage), _cpu_extra(cpu_usage)]),
    Op("dnc_allocation", prep_allocation, [_ref(ref.dnc_allocation), _cpu(_alloc_cpu)]),
    Op("dnc_write_weights", prep_write_weights,
       [_ref(ref.dnc_write_weights), _cpu(cpu_write_weights)]),
    Op("memory_write", prep_memory_write, [_ref(ref.memory_write), _cpu(cpu_memory_write)]),
    Op("memory_read", prep_memory_read, [_ref(ref.memory_read), _cpu_extra(cpu_memory_read)]),
    Op("dnc_link_update", prep_link_update, [_ref(ref.dnc_link_update), _cpu(_link_update_cpu)]),
    Op("dnc_directional_read", prep_directional_read,
       [_ref(ref.dnc_directional_read), _cpu(_directional_read_cpu)]),
    Op("dnc_access_step", prep_access_step, [_ref(ref.dnc_access_step), _cpu_extra(cpu_access_step)]),
    Op("ntm_address", prep_ntm, [_ref(ref.ntm_address), _cpu_extra(cpu_ntm_address)]),
    Op("graves_window", prep_graves, [_ref(ref.graves_window), _cpu_extra(cpu_graves_window)]),
    Op("graves_window_sequence", prep_graves_seq,
       [_ref(ref.graves_window_sequence), _cpu_extra(cpu_graves_window_sequence)]),
]}


# ==== GPU backends of the four fused ops (cuda, triton) ==========================================
# cuda: the CUDA kernels (csrc/cuda/memory*.cu) are registered under the same torch.ops.attnfast
# ops as the CPU kernels, so the compositions above run them for CUDA tensors. triton: the Triton
# kernels (triton_kernels/memory.py) as torch custom ops, fp32 only (attnfast/ops/memory_triton.py).
# Both cover content addressing, allocation, erase/add write and the link update + directional
# reads; dnc_access_step composes them with the reference's usage and read (torch ops on the GPU).

CUDA_MAX_ALLOC_SLOTS = 8192  # the CUDA allocation kernels keep all N usages in shared memory


def _cuda_kernels_registered() -> bool:
    return _HAS_OPS and torch._C._dispatch_has_kernel_for_dispatch_key(
        "attnfast::dnc_link_read_forward", "CUDA")


_CUDA_MEMORY = _cuda_kernels_registered()


CUDA_MAX_GRID_Y = 65535  # CUDA's cap on gridDim.y, where the memory kernels put B or B * Hw


def _cuda_status(inp) -> list[str]:
    if not _CUDA_MEMORY:
        return ["attnfast._C has no CUDA kernels for the memory ops (built without CUDA, or "
                "before csrc/cuda/memory.cu existed: rebuild the extension)"]
    return device_reasons(inp, "cuda", KERNEL_DTYPES)


def _grid_reasons(inp, kernels: str = "the CUDA content, write and link kernels") -> list[str]:
    """The grid cap of kernels that put one grid row per (batch, write head)."""
    blocks = inp.dims.get("B", 1) * max(inp.dims.get("Hw", 1), 1)
    if blocks > CUDA_MAX_GRID_Y:
        return [f"B x write heads = {blocks} > {CUDA_MAX_GRID_Y}: {kernels} put one grid row "
                "per (batch, head), and CUDA caps a grid's y dimension there"]
    return []


def _cuda_grid_status(inp) -> list[str]:
    return _cuda_status(inp) + _grid_reasons(inp)


def _cuda_alloc_status(inp) -> list[str]:
    reasons = _cuda_status(inp)
    n = inp.dims.get("N", 0)
    if n > CUDA_MAX_ALLOC_SLOTS:
        reasons.append(f"N={n} memory slots > {CUDA_MAX_ALLOC_SLOTS}: the CUDA allocation sort "
                       "keeps all N usages in one block's shared memory")
    return reasons


def _cuda_extra_registered() -> bool:
    return _HAS_EXTRA_OPS and torch._C._dispatch_has_kernel_for_dispatch_key(
        "attnfast::memory_read_forward", "CUDA")


_CUDA_MEMORY_EXTRA = _cuda_extra_registered()


def _cuda_extra_missing() -> list[str]:
    """Why the second group's CUDA kernels cannot run ([] when they are registered)."""
    if _CUDA_MEMORY_EXTRA:
        return []
    return ["attnfast._C has no CUDA kernels for the second group of memory ops (ntm_location, "
            "graves_window, dnc_usage, memory_read: built without CUDA, or before "
            "csrc/cuda/memory_extra.cu existed: rebuild the extension)"]


def gpu_access_step(content, write_weights_fn, write, link_read, state, x, eps=EPS, *,
                    usage_fn=ref.dnc_usage, read_fn=ref.memory_read):
    """dnc_access_step from the fused ops given; the read-mode mix is torch ops (the reference's
    formula), and so are the usage and the read unless usage_fn / read_fn are given."""
    s = state
    usage = usage_fn(s.usage, s.write_weights, x.free_gate, s.read_weights)
    write_content = content(s.memory, x.write_keys, x.write_strengths, eps)
    write_weights = write_weights_fn(usage, write_content, x.allocation_gate, x.write_gate, eps)
    memory = write(s.memory, write_weights, x.erase_vectors, x.write_vectors)
    link, precedence, fwd, bwd = link_read(s.link, s.precedence, write_weights, s.read_weights)
    read_content = content(memory, x.read_keys, x.read_strengths, eps)
    read_weights = ref.dnc_read_weights(read_content, fwd, bwd, x.read_mode)
    read_words = read_fn(memory, read_weights)
    return read_words, ref.DNCState(memory, read_weights, write_weights, link, precedence, usage)


def _cuda_access_step(state, x, eps=EPS):
    # usage and read: the second group's CUDA kernels (csrc/cuda/memory_extra.cu).
    return gpu_access_step(cpu_content_addressing, cpu_write_weights, cpu_memory_write,
                           cpu_link_read, state, x, eps, usage_fn=cpu_usage,
                           read_fn=cpu_memory_read)


def _add_backend(name: str, backend: str, status, fn):
    OPS[name].implementations[backend] = Implementation(backend, status,
                                                        lambda inp: fn(*inp.args))


# The cpu_* compositions call torch.ops.attnfast.*, which run the CUDA kernels on CUDA tensors.
for _name, _status, _fn in (
        ("content_addressing", _cuda_grid_status, cpu_content_addressing),
        ("dnc_allocation", _cuda_alloc_status, _alloc_cpu),
        ("dnc_write_weights", _cuda_alloc_status, cpu_write_weights),
        ("memory_write", _cuda_grid_status, cpu_memory_write),
        ("dnc_link_update", _cuda_grid_status, _link_update_cpu),
        ("dnc_directional_read", _cuda_grid_status, _directional_read_cpu),
        ("dnc_access_step",
         lambda inp: _cuda_alloc_status(inp) + _grid_reasons(inp) + _cuda_extra_missing(),
         _cuda_access_step)):
    _add_backend(_name, "cuda", _status, _fn)


# triton: the custom ops of attnfast/ops/memory_triton.py (triton itself is imported lazily).
from attnfast.ops import memory_extra_triton as _mx  # noqa: E402
from attnfast.ops import memory_triton as _mt  # noqa: E402

_TRITON_IMPORT_ERROR: list = []  # memo: why attnfast.triton_kernels.memory cannot be imported (or None)


def _triton_status(inp) -> list[str]:
    reasons = device_reasons(inp, "triton", (torch.float32, torch.float64))
    if inp.dtype == torch.float64:
        reasons.append("the Triton memory kernels are float32 only (use cpu/cuda/reference "
                       "for float64)")
    elif inp.dtype != torch.float32:
        reasons.append(f"dtype {inp.dtype} is not float32 (the DNC state is kept in full "
                       "precision)")
    if not _TRITON_IMPORT_ERROR:
        try:
            from attnfast.triton_kernels import addressing, allocation, links, read_write  # noqa: F401
            _TRITON_IMPORT_ERROR.append(None)
        except Exception as exc:  # noqa: BLE001  (any import failure is a reason to refuse)
            _TRITON_IMPORT_ERROR.append(f"triton_kernels/memory.py cannot be imported ({exc})")
    if _TRITON_IMPORT_ERROR[0]:
        reasons.append(_TRITON_IMPORT_ERROR[0])
    return reasons


_TRITON_EXTRA_IMPORT_ERROR: list = []  # memo: why attnfast.triton_kernels.memory_extra cannot be imported


def _triton_status_extra(inp) -> list[str]:
    """_triton_status plus the second group's kernel module (triton_kernels/memory_extra.py)."""
    reasons = _triton_status(inp)
    if not _TRITON_EXTRA_IMPORT_ERROR:
        try:
            from attnfast.triton_kernels import addressing, allocation, read_write, window  # noqa: F401
            _TRITON_EXTRA_IMPORT_ERROR.append(None)
        except Exception as exc:  # noqa: BLE001  (any import failure is a reason to refuse)
            _TRITON_EXTRA_IMPORT_ERROR.append(
                f"triton_kernels/memory_extra.py cannot be imported ({exc})")
    if _TRITON_EXTRA_IMPORT_ERROR[0] and _TRITON_EXTRA_IMPORT_ERROR[0] not in reasons:
        reasons.append(_TRITON_EXTRA_IMPORT_ERROR[0])
    return reasons


def triton_usage(usage, write_weights, free_gate, read_weights):
    # write_weights detached, as the reference (stop_gradient).
    return _mx.dnc_usage_forward(usage, write_weights.detach(), free_gate, read_weights)


def triton_allocation(usage, write_gates=None, eps=EPS):
    if write_gates is None:
        return _mt.allocation_forward(usage, usage.new_ones((usage.shape[0], 1)), eps)[:, 0]
    return _mt.allocation_forward(usage, write_gates, eps)


def triton_write_weights(usage, content_weights, allocation_gate, write_gate, eps=EPS):
    alloc = _mt.allocation_forward(usage, allocation_gate * write_gate, eps)
    ga, gw = allocation_gate[:, :, None], write_gate[:, :, None]
    return gw * (ga * alloc + (1 - ga) * content_weights)


def triton_link_update(link, precedence, write_weights):
    empty_reads = write_weights.new_zeros((write_weights.shape[0], 0, write_weights.shape[2]))
    new_link, new_prec, _, _ = _mt.link_read_forward(link, precedence, write_weights, empty_reads)
    return new_link, new_prec


def triton_directional_read(link, read_weights):
    zeros = link.new_zeros(link.shape[:3])  # all-zero write weights: reads through `link`
    _, _, fwd, bwd = _mt.link_read_forward(link, zeros, zeros, read_weights)
    return fwd, bwd


def _triton_access_step(state, x, eps=EPS):
    # usage and read: the second group's Triton ops (attnfast/ops/memory_extra_triton.py).
    return gpu_access_step(lambda m, k, s, e: _mt.content_forward(m, k, s, e), triton_write_weights,
                           _mt.write_forward, _mt.link_read_forward, state, x, eps,
                           usage_fn=triton_usage, read_fn=_mx.memory_read_forward)


for _name, _fn in (
        ("content_addressing", lambda m, k, s: _mt.content_forward(m, k, s, EPS)),
        ("dnc_allocation", triton_allocation),
        ("dnc_write_weights", triton_write_weights),
        ("memory_write", _mt.write_forward),
        ("dnc_link_update", triton_link_update),
        ("dnc_directional_read", triton_directional_read),
        ("dnc_access_step", _triton_access_step)):
    status = _triton_status_extra if _name == "dnc_access_step" else _triton_status
    if _name in ("dnc_link_update", "dnc_directional_read", "dnc_access_step"):
        status = (lambda base: lambda inp: base(inp) + _grid_reasons(
            inp, "the Triton link kernels"))(status)
    _add_backend(_name, "triton", status, _fn)
# ==== end of the GPU backends ====================================================================


# ==== GPU backends of the second group (cuda, triton) ============================================
# ntm_address, graves_window(_sequence), dnc_usage and memory_read. cuda: the CUDA kernels of
# csrc/cuda/memory_extra.cu are registered under the same torch.ops.attnfast ops as the CPU
# kernels, so the cpu_* compositions run them on CUDA tensors (ntm_address also needs the content
# kernel of the first group). triton: the custom ops of attnfast/ops/memory_extra_triton.py
# (fp32 only; ntm_address takes its content weights from memory_triton's content op).

def _cuda_status_extra(inp) -> list[str]:
    return _cuda_extra_missing() or device_reasons(inp, "cuda", KERNEL_DTYPES)


def _cuda_status_ntm(inp) -> list[str]:
    return _cuda_status(inp) + _cuda_extra_missing()


def triton_ntm_address(memory, key, strength, gate, shift, gamma, prev_weights, eps=EPS):
    content = _mt.content_forward(memory, key, strength, eps)
    return _mx.ntm_location_forward(content, gate, prev_weights, shift, gamma)


def triton_graves_window_sequence(alpha_hat, beta_hat, kappa_hat, chars, char_mask=None,
                                  kappa0=None):
    if kappa0 is None:
        kappa0 = alpha_hat.new_zeros((alpha_hat.shape[0], alpha_hat.shape[2]))
    if char_mask is not None:
        char_mask = char_mask.to(alpha_hat.dtype)  # as the reference: phi * mask.to(phi.dtype)
    return _mx.graves_window_forward(alpha_hat, beta_hat, kappa_hat, kappa0, chars, char_mask)


def triton_graves_window(alpha_hat, beta_hat, kappa_hat, kappa_prev, chars, char_mask=None):
    w, kappa, phi = triton_graves_window_sequence(alpha_hat[:, None], beta_hat[:, None],
                                                  kappa_hat[:, None], chars, char_mask, kappa_prev)
    return w[:, 0], kappa[:, 0], phi[:, 0]


for _name, _status, _fn in (
        ("ntm_address", _cuda_status_ntm, cpu_ntm_address),
        ("graves_window", _cuda_status_extra, cpu_graves_window),
        ("graves_window_sequence", _cuda_status_extra, cpu_graves_window_sequence),
        ("dnc_usage", _cuda_status_extra, cpu_usage),
        ("memory_read", _cuda_status_extra, cpu_memory_read)):
    _add_backend(_name, "cuda", _status, _fn)

for _name, _fn in (
        ("ntm_address", triton_ntm_address),
        ("graves_window", triton_graves_window),
        ("graves_window_sequence", triton_graves_window_sequence),
        ("dnc_usage", triton_usage),
        ("memory_read", _mx.memory_read_forward)):
    _add_backend(_name, "triton", _triton_status_extra, _fn)
# ==== end of the GPU backends of the second group ================================================
