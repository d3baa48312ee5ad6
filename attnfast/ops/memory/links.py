"""Temporal links: the DNC link matrix and precedence update, and the forward/backward reads
through the links. One fused op does both; the public link update and directional read are
that op with no read heads, or with all-zero write weights."""
from __future__ import annotations

import functools

import torch

from attnfast.ops import spec
from attnfast.ops.memory.common import grid_cap, inputs, public_op
from attnfast.reference import memory as ref


def _fake(link, precedence, write_weights, read_weights):
    b, hw, n = precedence.shape
    r = read_weights.shape[1]
    return (torch.empty_like(link), torch.empty_like(precedence), link.new_empty((b, r, hw, n)),
            link.new_empty((b, r, hw, n)))


def _example():
    g = spec.example_generator()
    n = 5
    link = torch.rand(2, 2, n, n, generator=g) / n * (1 - torch.eye(n))
    dist = functools.partial(spec.example_distribution, generator=g)
    return link, dist(2, 2, n, total=0.7), dist(2, 2, n, total=0.8), dist(2, 3, n, total=0.9)


# The backward recomputes the new link row by row from the saved inputs, so nothing
# (B, Hw, N, N)-sized is saved beyond the previous link, which exists anyway.
spec.register(spec.KernelOp(
    "dnc_link_read_forward", "dnc_link_read_backward", public="dnc_link_update", fake=_fake,
    fake_backward=lambda g_link, g_prec, g_fwd, g_bwd, *inputs: tuple(
        torch.empty_like(t) for t in inputs),
    triton="links:link_read_forward:link_read_backward", example=_example))


def link_update(ops, link, precedence, write_weights):
    # The fused op with no read heads (R = 0): just the link and precedence update.
    no_reads = write_weights.new_zeros((write_weights.shape[0], 0, write_weights.shape[2]))
    new_link, new_precedence, _, _ = ops.dnc_link_read_forward(link, precedence, write_weights,
                                                               no_reads)
    return new_link, new_precedence


def directional_read(ops, link, read_weights):
    # All-zero write weights leave the link as it is (its diagonal is zeroed, which a DNC link
    # already has) and read through it.
    zeros = link.new_zeros(link.shape[:3])
    _, _, forward, backward = ops.dnc_link_read_forward(link, zeros, zeros, read_weights)
    return forward, backward


def prep_link_update(link, precedence, write_weights):
    return inputs("dnc_link_update", [
        ("link", link, "B Hw N N"), ("precedence", precedence, "B Hw N"),
        ("write_weights", write_weights, "B Hw N")], (link, precedence, write_weights))


def prep_directional_read(link, read_weights):
    return inputs("dnc_directional_read", [("link", link, "B Hw N N"),
                                           ("read_weights", read_weights, "B R N")],
                  (link, read_weights))


# The link kernels of every GPU backend put one grid row per (batch, write head).
LINK_GRID_CAP = grid_cap(("cuda", "simt", "triton"))

PUBLIC_OPS = [
    public_op("dnc_link_update", prep_link_update, ref.dnc_link_update, link_update,
              ["dnc_link_read_forward"], [LINK_GRID_CAP]),
    public_op("dnc_directional_read", prep_directional_read, ref.dnc_directional_read,
              directional_read, ["dnc_link_read_forward"], [LINK_GRID_CAP]),
]
