"""Differentiable memory addressing (NTM, DNC, Graves' soft window) in plain PyTorch.

Follows DeepMind's DNC (deepmind/dnc, addressing.py and access.py) formula by formula; autograd
gives the backward. Shapes: memory (B, N, W); R read heads, Hw write heads; weights (B, H, N);
usage (B, N); link (B, Hw, N, N); precedence (B, Hw, N). ``EPS = 1e-6`` as in DeepMind's code.

Two documented choices where the formulas leave room:
* Allocation sorts the usage *passed in* (before the ``eps + (1 - eps) u`` squashing, a monotone
  map) with a stable ascending sort, so ties go to the lower index. DeepMind sorts the squashed
  non-usage with ``top_k`` (also lower index first); the orders differ only where rounding in the
  squashing creates a new tie, and sorting the raw value lets every backend agree bit for bit on
  the permutation. As in DeepMind's code, no gradient flows through the permutation: the
  allocation's gradient flows through the sorted usage values.
* Graves' window indexes characters from 1 (the paper's u = 1..U).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

EPS = 1e-6


# ---- state and interface of one DNC memory access step --------------------------------------

class DNCState(NamedTuple):
    """State of a DNC memory between steps (all float tensors on one device).

    memory (B, N, W); read_weights (B, R, N); write_weights (B, Hw, N); link (B, Hw, N, N) with a
    zero diagonal; precedence (B, Hw, N); usage (B, N) in [0, 1].
    """
    memory: torch.Tensor
    read_weights: torch.Tensor
    write_weights: torch.Tensor
    link: torch.Tensor
    precedence: torch.Tensor
    usage: torch.Tensor


class DNCInterface(NamedTuple):
    """The controller's interface to one DNC access step, already activated (DeepMind's
    ``MemoryAccess._read_inputs`` after its sigmoids/softmax; strengths already transformed).

    write_vectors, erase_vectors (B, Hw, W) (erase in [0, 1]); free_gate (B, R);
    allocation_gate, write_gate (B, Hw); read_mode (B, R, 1 + 2 Hw), a distribution laid out as
    [backward x Hw, forward x Hw, content]; write_keys (B, Hw, W); write_strengths (B, Hw) > 0;
    read_keys (B, R, W); read_strengths (B, R) > 0.
    """
    write_vectors: torch.Tensor
    erase_vectors: torch.Tensor
    free_gate: torch.Tensor
    allocation_gate: torch.Tensor
    write_gate: torch.Tensor
    read_mode: torch.Tensor
    write_keys: torch.Tensor
    write_strengths: torch.Tensor
    read_keys: torch.Tensor
    read_strengths: torch.Tensor


# ---- content addressing -----------------------------------------------------------------------

def vector_norms(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """|x| = sqrt(sum x^2 + eps) over the last dim (eps keeps the gradient finite at x = 0)."""
    return torch.sqrt((x * x).sum(-1) + eps)


def content_addressing(memory: torch.Tensor, keys: torch.Tensor, strengths: torch.Tensor,
                       eps: float = EPS) -> torch.Tensor:
    """softmax_i(beta_h * cos(k_h, M_i)) -> (B, H, N); cos = k.M / (|k| |M| + eps)."""
    dot = torch.matmul(keys, memory.transpose(1, 2))                      # (B, H, N)
    norm = vector_norms(keys, eps)[:, :, None] * vector_norms(memory, eps)[:, None, :]
    similarity = dot / (norm + eps)
    return torch.softmax(similarity * strengths[:, :, None], dim=-1)


# ---- DNC dynamic allocation --------------------------------------------------------------------

def dnc_usage(usage: torch.Tensor, write_weights: torch.Tensor, free_gate: torch.Tensor,
              read_weights: torch.Tensor) -> torch.Tensor:
    """u' = u + (1 - u)(1 - prod_h (1 - ww_h)); u_t = u' prod_r (1 - f_r wr_r).

    The previous step's write weights enter without gradient (DeepMind's stop_gradient).
    """
    ww = write_weights.detach()
    written = 1 - torch.prod(1 - ww, dim=1)
    u = usage + (1 - usage) * written
    psi = torch.prod(1 - free_gate[:, :, None] * read_weights, dim=1)
    return u * psi


def _allocation_one(usage: torch.Tensor, eps: float) -> torch.Tensor:
    order = torch.sort(usage, dim=-1, stable=True).indices                 # no gradient
    squashed = eps + (1 - eps) * usage
    s = torch.gather(squashed, -1, order)
    ones = torch.ones_like(s[:, :1])
    prod_before = torch.cumprod(torch.cat([ones, s[:, :-1]], dim=-1), dim=-1)  # exclusive cumprod
    sorted_alloc = (1 - s) * prod_before
    return torch.zeros_like(sorted_alloc).scatter(-1, order, sorted_alloc)


def dnc_allocation(usage: torch.Tensor, write_gates: torch.Tensor | None = None,
                   eps: float = EPS) -> torch.Tensor:
    """Allocation weights. usage (B, N) -> (B, N); with write_gates (B, Hw) -> (B, Hw, N), the heads
    allocated in sequence with u <- u + (1 - u) g_h a_h in between."""
    if write_gates is None:
        return _allocation_one(usage, eps)
    out = []
    for h in range(write_gates.shape[1]):
        a = _allocation_one(usage, eps)
        out.append(a)
        usage = usage + (1 - usage) * write_gates[:, h:h + 1] * a
    if not out:  # no write heads: an empty (B, 0, N), as the kernels return
        return usage.new_zeros((usage.shape[0], 0, usage.shape[1]))
    return torch.stack(out, dim=1)


def dnc_write_weights(usage: torch.Tensor, content_weights: torch.Tensor,
                      allocation_gate: torch.Tensor, write_gate: torch.Tensor,
                      eps: float = EPS) -> torch.Tensor:
    """ww = gw (ga a + (1 - ga) c_w), a the allocation with write gates ga * gw. -> (B, Hw, N)."""
    alloc = dnc_allocation(usage, allocation_gate * write_gate, eps)
    ga, gw = allocation_gate[:, :, None], write_gate[:, :, None]
    return gw * (ga * alloc + (1 - ga) * content_weights)


# ---- memory write / read -----------------------------------------------------------------------

def memory_write(memory: torch.Tensor, write_weights: torch.Tensor, erase: torch.Tensor,
                 add: torch.Tensor) -> torch.Tensor:
    """M <- M * prod_h (1 - ww_h e_h^T) + sum_h ww_h v_h^T."""
    keep = torch.prod(1 - write_weights[:, :, :, None] * erase[:, :, None, :], dim=1)
    return memory * keep + torch.matmul(write_weights.transpose(1, 2), add)


def memory_read(memory: torch.Tensor, read_weights: torch.Tensor) -> torch.Tensor:
    """r = wr M -> (B, R, W)."""
    return torch.matmul(read_weights, memory)


# ---- DNC temporal links ------------------------------------------------------------------------

def dnc_link_update(link: torch.Tensor, precedence: torch.Tensor, write_weights: torch.Tensor):
    """L[i, j] <- (1 - w_i - w_j) L[i, j] + w_i p[j], zero diagonal; p <- (1 - sum w) p + w."""
    wi = write_weights[:, :, :, None]
    wj = write_weights[:, :, None, :]
    new_link = (1 - wi - wj) * link + wi * precedence[:, :, None, :]
    n = link.shape[-1]
    # An exact zero on the diagonal (as DeepMind's and every kernel), not a product with 0 that
    # would keep a NaN or inf of the old link there.
    diagonal = torch.eye(n, dtype=torch.bool, device=link.device)
    new_link = new_link.masked_fill(diagonal, 0)
    new_prec = (1 - write_weights.sum(-1, keepdim=True)) * precedence + write_weights
    return new_link, new_prec


def dnc_directional_read(link: torch.Tensor, read_weights: torch.Tensor):
    """forward f = L wr, backward b = L^T wr per write head -> two (B, R, Hw, N).

    A DNC link has a zero diagonal (dnc_link_update keeps it so); the diagonal is treated as
    zero here and gets no gradient, the contract of every compiled backend (which never read it).
    """
    n = link.shape[-1]
    link = link * (1 - torch.eye(n, dtype=link.dtype, device=link.device))
    fwd = torch.einsum("bhij,brj->brhi", link, read_weights)
    bwd = torch.einsum("bhij,bri->brhj", link, read_weights)
    return fwd, bwd


def dnc_read_weights(content: torch.Tensor, forward: torch.Tensor, backward: torch.Tensor,
                     read_mode: torch.Tensor) -> torch.Tensor:
    """wr = pi_content c + sum_h pi_fwd,h f_h + sum_h pi_bwd,h b_h; read_mode laid out as
    [backward x Hw, forward x Hw, content] (DeepMind's)."""
    hw = forward.shape[2]
    pb, pf, pc = read_mode[..., :hw], read_mode[..., hw:2 * hw], read_mode[..., 2 * hw]
    return (pc[..., None] * content + (pf[..., None] * forward).sum(2)
            + (pb[..., None] * backward).sum(2))


def dnc_access_step(state: DNCState, interface: DNCInterface, eps: float = EPS):
    """One DNC memory access step (DeepMind's MemoryAccess._build) -> (read_words (B, R, W), state).

    usage -> write content weights on the old memory -> allocation -> write weights -> erase/add
    -> link and precedence -> read content weights on the new memory, directional reads through
    the new link with the previous read weights -> read weights -> read words.
    """
    s, x = state, interface
    usage = dnc_usage(s.usage, s.write_weights, x.free_gate, s.read_weights)
    write_content = content_addressing(s.memory, x.write_keys, x.write_strengths, eps)
    write_weights = dnc_write_weights(usage, write_content, x.allocation_gate, x.write_gate, eps)
    memory = memory_write(s.memory, write_weights, x.erase_vectors, x.write_vectors)
    link, precedence = dnc_link_update(s.link, s.precedence, write_weights)
    read_content = content_addressing(memory, x.read_keys, x.read_strengths, eps)
    fwd, bwd = dnc_directional_read(link, s.read_weights)
    read_weights = dnc_read_weights(read_content, fwd, bwd, x.read_mode)
    read_words = memory_read(memory, read_weights)
    return read_words, DNCState(memory, read_weights, write_weights, link, precedence, usage)


# ---- NTM location addressing -------------------------------------------------------------------

def ntm_shift_sharpen(weights: torch.Tensor, shift: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Circular convolution w~(i) = sum_j w(j) s((i - j) mod N), s over the odd window of
    offsets -(S//2)..S//2 (the paper's convention: offset +1 moves weight to i + 1), then
    sharpening w~^gamma / sum w~^gamma. weights (B, H, N), shift (B, H, S), gamma (B, H) >= 1."""
    size = shift.shape[-1]
    half = size // 2
    shifted = sum(shift[..., k:k + 1] * torch.roll(weights, k - half, dims=-1) for k in range(size))
    # w~ can be exactly 0 (a one-hot shift of a one-hot weighting); 0^gamma = 0 with no NaN in the
    # gradient of gamma (d/dgamma w^gamma = w^gamma log w).
    positive = shifted > 0
    safe = torch.where(positive, shifted, torch.ones_like(shifted))
    powered = torch.where(positive, safe ** gamma[..., None], torch.zeros_like(shifted))
    return powered / powered.sum(-1, keepdim=True)


def ntm_address(memory, key, strength, gate, shift, gamma, prev_weights, eps: float = EPS):
    """NTM addressing: content, interpolation w_g = g c + (1 - g) w_prev, shift, sharpen.
    key (B, H, W); strength, gate, gamma (B, H); shift (B, H, S); prev_weights (B, H, N)."""
    content = content_addressing(memory, key, strength, eps)
    g = gate[..., None]
    return ntm_shift_sharpen(g * content + (1 - g) * prev_weights, shift, gamma)


# ---- Graves' soft window -----------------------------------------------------------------------

def graves_window_sequence(alpha_hat, beta_hat, kappa_hat, chars, char_mask=None, kappa0=None):
    """Graves' attention window over a whole sequence (the window parameters of every step given).

    alpha_hat, beta_hat, kappa_hat (B, T, K); chars (B, U, C) (one-hot or embedded text);
    char_mask (B, U) (1 for real characters, 0 for padding) or None; kappa0 (B, K) or None (0).
    kappa_t = kappa_{t-1} + exp(kappa_hat_t); phi(t, u) = sum_k alpha_k exp(-beta_k (kappa_k - u)^2)
    with u = 1..U; w_t = sum_u phi(t, u) c_u. Returns (w (B, T, C), kappa (B, T, K), phi (B, T, U)).
    """
    alpha, beta = torch.exp(alpha_hat), torch.exp(beta_hat)
    kappa = torch.cumsum(torch.exp(kappa_hat), dim=1)
    if kappa0 is not None:
        kappa = kappa + kappa0[:, None, :]
    u = torch.arange(1, chars.shape[1] + 1, dtype=chars.dtype, device=chars.device)
    dist = kappa[:, :, :, None] - u                                        # (B, T, K, U)
    phi = (alpha[..., None] * torch.exp(-beta[..., None] * dist * dist)).sum(2)
    if char_mask is not None:
        phi = phi * char_mask[:, None, :].to(phi.dtype)
    return torch.matmul(phi, chars), kappa, phi


def graves_window(alpha_hat, beta_hat, kappa_hat, kappa_prev, chars, char_mask=None):
    """One step of Graves' window: (B, K) parameters and kappa_prev -> (w (B, C), kappa (B, K),
    phi (B, U))."""
    w, kappa, phi = graves_window_sequence(alpha_hat[:, None], beta_hat[:, None],
                                           kappa_hat[:, None], chars, char_mask, kappa_prev)
    return w[:, 0], kappa[:, 0], phi[:, 0]
