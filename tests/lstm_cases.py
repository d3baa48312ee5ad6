"""Inputs, oracle and parity check shared by the LSTM recurrence kernel tests
(tests/test_lstm_simt.py: the CUDA kernels under the SIMT harness; tests/test_lstm_triton.py: the
Triton kernels).

The oracle is attnfast/reference/lstm.py's lstm_recurrence in float64 on the kernel's inputs
(rounded to the tested dtype first), backward by autograd with the op's cotangents: grad_h for
every h_t (the final state's gradient already in grad_h[T-1]) and grad_c for every c_t. The gates
oracle is the activated (i, f, g, o) recomputed from the oracle's h. bf16/fp16 outputs are held to
conftest's rule: at most 2x the error of the same reference run in that dtype (plus a floor).
"""
from __future__ import annotations

import torch

from attnfast.reference.lstm import lstm_recurrence
from conftest import assert_parity

F64 = torch.float64
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# (T, B, H): H = 1, H not a multiple of 4 / 16 / 32, B = 1, T = 1.
SHAPES = [(1, 1, 1), (3, 3, 5), (2, 1, 16), (5, 3, 17), (4, 1, 5), (2, 3, 16)]


def make_inputs(T: int, B: int, H: int, seed: int = 0, scale: float = 1.0) -> dict:
    """float64 inputs and cotangents; w_hh ~ 1/sqrt(H) like nn.LSTM's init, gates_x ~ scale."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, s=1.0):
        return torch.randn(*shape, generator=g, dtype=F64) * s

    return dict(gates_x=randn(T, B, 4 * H, s=scale), h0=randn(B, H, s=0.5), c0=randn(B, H),
                w_hh=randn(4 * H, H, s=H ** -0.5), grad_h=randn(T, B, H), grad_c=randn(T, B, H))


def cast(inp: dict, dtype: torch.dtype) -> dict:
    """Every tensor in ``dtype``, except grad_c: the gradient of the fp32 output c stays fp32
    (float64 for the oracle)."""
    return {k: v.to(torch.float32 if k == "grad_c" and dtype != F64 else dtype)
            for k, v in inp.items()}


def reference(inp: dict) -> dict:
    """h, c, gates and the gradients of gates_x, h0, c0, computed in the inputs' dtype (T > 0)."""
    leaves = [inp[k].detach().clone().requires_grad_(True) for k in ("gates_x", "h0", "c0")]
    gx, h0, c0 = leaves
    w = inp["w_hh"]
    h, c = lstm_recurrence(gx, h0, c0, w)
    grads = torch.autograd.grad([h, c], leaves, [inp["grad_h"], inp["grad_c"].to(c.dtype)])
    with torch.no_grad():
        h_prev = torch.cat([h0[None], h[:-1]])
        i, f, gg, o = (gx + h_prev @ w.t()).chunk(4, dim=-1)
        gates = torch.cat([torch.sigmoid(i), torch.sigmoid(f), torch.tanh(gg), torch.sigmoid(o)],
                          -1)
    return dict(h=h.detach(), c=c.detach(), gates=gates, grads=[gr.detach() for gr in grads])


def check_parity(forward, backward, T: int, B: int, H: int, dtype: torch.dtype, device="cpu",
                 seed: int = 0, scale: float = 1.0, name: str = "lstm"):
    """forward(gates_x, h0, c0, w_hh, save_gates) and backward(grad_h, grad_c, c0, w_hh, c,
    gates) (the schema's arguments and outputs) against the float64 oracle; returns the outputs.
    A grad_c of None is a zero gradient: bitwise the result of passing zeros."""
    x = {k: v.to(device) for k, v in cast(make_inputs(T, B, H, seed, scale), dtype).items()}
    oracle = reference(cast(x, F64))
    low = reference(x) if dtype != torch.float32 else None
    lo = (lambda key: low[key]) if low is not None else (lambda key: None)
    tag = f"{name} {dtype} T={T} B={B} H={H}"

    h, c, gates = forward(x["gates_x"], x["h0"], x["c0"], x["w_hh"], True)
    assert (h.dtype, c.dtype, gates.dtype) == (dtype, torch.float32, dtype), tag
    assert_parity(h, oracle["h"], lo("h"), name=f"{tag} h")
    # c is fp32 whatever the dtype: held to the low-precision rule after rounding to the dtype.
    assert_parity(c if dtype == torch.float32 else c.to(dtype), oracle["c"], lo("c"),
                  name=f"{tag} c")
    assert_parity(gates, oracle["gates"], lo("gates"), name=f"{tag} gates")

    back = backward(x["grad_h"], x["grad_c"], x["c0"], x["w_hh"], c, gates)
    without_c = backward(x["grad_h"], None, x["c0"], x["w_hh"], c, gates)
    zero_c = backward(x["grad_h"], torch.zeros_like(x["grad_c"]), x["c0"], x["w_hh"], c, gates)
    for a, b in zip(without_c, zero_c):
        assert torch.equal(a, b), f"{tag}: grad_c=None differs from zeros"
    for k, what in enumerate(("grad_gates_x", "grad_h0", "grad_c0")):
        assert back[k].dtype == dtype, f"{tag} {what}: dtype {back[k].dtype}"
        assert_parity(back[k], oracle["grads"][k], low["grads"][k] if low else None,
                      name=f"{tag} {what}")
    return (h, c, gates), back


def check_empty(forward, backward, T: int, B: int, H: int, dtype=torch.float32, device="cpu"):
    """T = 0 or B = 0: empty outputs of the schema's shapes; with T = 0, grad_h0 = grad_c0 = 0
    (no step ran)."""
    x = {k: v.to(device) for k, v in cast(make_inputs(T, B, H), dtype).items()}
    for save in (True, False):
        h, c, gates = forward(x["gates_x"], x["h0"], x["c0"], x["w_hh"], save)
        assert h.shape == (T, B, H) and h.dtype == dtype
        assert c.shape == (T, B, H) and c.dtype == torch.float32
        assert gates.shape == ((T, B, 4 * H) if save else (0,))
        gx, gh0, gc0 = backward(x["grad_h"], x["grad_c"], x["c0"], x["w_hh"], c, gates)
        assert gx.shape == (T, B, 4 * H) and gx.dtype == dtype
        assert gh0.shape == (B, H) and gc0.shape == (B, H)
        if T == 0:
            assert torch.equal(gh0, torch.zeros_like(gh0))
            assert torch.equal(gc0, torch.zeros_like(gc0))


def run_pair(forward, backward, x: dict):
    """Forward (gates saved) then backward on x: (h, c, gates, grad_gates_x, grad_h0, grad_c0)."""
    h, c, gates = forward(x["gates_x"], x["h0"], x["c0"], x["w_hh"], True)
    return (h, c, gates) + tuple(backward(x["grad_h"], x["grad_c"], x["c0"], x["w_hh"], c, gates))


def check_strided(forward, backward, device="cpu", dtype=torch.float32):
    """Non-contiguous inputs (gates_x from a batch-first tensor, w_hh a transpose, h0/c0/grads
    column slices) give bitwise the results of their contiguous copies."""
    T, B, H = 3, 3, 5
    x = {k: v.to(device) for k, v in cast(make_inputs(T, B, H, seed=3), dtype).items()}
    s = dict(gates_x=x["gates_x"].transpose(0, 1).contiguous().transpose(0, 1),
             w_hh=x["w_hh"].t().contiguous().t(),
             h0=torch.cat([x["h0"], x["h0"]], 1)[:, :H], c0=torch.cat([x["c0"], x["c0"]], 1)[:, H:],
             grad_h=x["grad_h"].transpose(0, 1).contiguous().transpose(0, 1),
             grad_c=x["grad_c"].transpose(0, 1).contiguous().transpose(0, 1))
    assert not any(v.is_contiguous() for v in s.values())
    for a, b in zip(run_pair(forward, backward, x), run_pair(forward, backward, s)):
        assert torch.equal(a, b)


def bad_arguments(T: int = 2, B: int = 3, H: int = 5):
    """(description, forward-or-backward, kwargs override, error text) of inputs every kernel
    must refuse, naming the argument."""
    f32 = torch.float32
    return [
        ("w_hh not (4H, H)", "forward", dict(w_hh=torch.zeros(4 * H, H + 1)),
         "w_hh must have shape"),
        ("gates_x 4H wrong", "forward", dict(gates_x=torch.zeros(T, B, 4 * H + 1)),
         "gates_x must have shape"),
        ("h0 wrong B", "forward", dict(h0=torch.zeros(B + 1, H)), "h0 must have shape"),
        ("c0 wrong dtype", "forward", dict(c0=torch.zeros(B, H, dtype=F64)),
         r"c0 must be (Float|torch\.float32), got"),
        ("w_hh int", "forward", dict(w_hh=torch.zeros(4 * H, H, dtype=torch.int32)),
         "w_hh must be float32, bfloat16 or float16"),
        ("grad_h and c disagree on T", "backward", dict(grad_h=torch.zeros(T + 1, B, H)),
         "c must have shape"),
        ("grad_c wrong H", "backward", dict(grad_c=torch.zeros(T, B, H + 1)),
         "grad_c must have shape"),
        ("grad_c not fp32", "backward", dict(grad_c=torch.zeros(T, B, H, dtype=F64)),
         r"grad_c must be (Float|torch\.float32), got"),
        ("c not fp32", "backward", dict(c=torch.zeros(T, B, H, dtype=torch.float16)),
         r"c must be (Float|torch\.float32), got"),
        ("gates not saved", "backward", dict(gates=torch.zeros(0, dtype=f32)), "save_gates=True"),
    ]


def call_with(forward, backward, which: str, override: dict, T: int = 2, B: int = 3, H: int = 5):
    x = cast(make_inputs(T, B, H), torch.float32)
    x["c"] = torch.zeros(T, B, H)
    x["gates"] = torch.zeros(T, B, 4 * H)
    x.update(override)
    if which == "forward":
        return forward(x["gates_x"], x["h0"], x["c0"], x["w_hh"], True)
    return backward(x["grad_h"], x["grad_c"], x["c0"], x["w_hh"], x["c"], x["gates"])
