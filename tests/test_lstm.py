"""The LSTM family: attnfast.lstm (one layer) and attnfast.nn.LSTM (the drop-in for
torch.nn.LSTM) on every backend against the float64 reference and torch.nn.LSTM, forward and
backward; state_dicts both ways; autocast; torch.compile; validation errors. A compiled backend
whose build lacks the LSTM kernels skips with spec.kernel_reasons' reason.
"""
from __future__ import annotations


import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
import torch._dynamo.utils

import attnfast
from attnfast.ops import spec
from attnfast.ops import lstm as lstm_ops
from attnfast.reference import lstm as reference_lstm
from conftest import FP32_TOL, assert_parity, device_for, require_backend

BACKENDS = ["reference", "cpu", "simt", "triton", "cuda"]
LOW = [torch.bfloat16, torch.float16]
# The SIMT harness and the Triton interpreter are slow: their cases stay within T<=5, B<=3, H<=24.
SLOW = ("simt", "triton")


def require(backend):
    require_backend(backend)
    if backend != "reference":
        reasons = spec.kernel_reasons(backend, ["lstm_forward"])
        if reasons:
            pytest.skip(f"backend {backend!r} lacks lstm_forward: {'; '.join(reasons)}")


def layer_inputs(T, B, I, H, *, bias=True, seed=0):
    """fp64 inputs of one layer: x, h0, c0, w_ih, w_hh, b_ih, b_hh (None without bias); weights
    at nn.LSTM's init scale, states and inputs O(1), so the gates leave the linear region."""
    g = torch.Generator().manual_seed(seed)
    k = 1 / H ** 0.5

    def u(*shape):
        return (torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * k

    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5
    c0 = torch.randn(B, H, generator=g, dtype=torch.float64)
    ws = [u(4 * H, I), u(4 * H, H)]
    bs = [u(4 * H), u(4 * H)] if bias else [None, None]
    return [x, h0, c0, *ws, *bs]


def _leaves(ts, dtype, device):
    return [None if t is None else t.detach().to(dtype=dtype, device=device).requires_grad_(True)
            for t in ts]


def _loss(y, h, c, seed=5):
    """A loss whose gradient reaches every output with distinct weights (y, h_n and c_n)."""
    g = torch.Generator().manual_seed(seed)
    wy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.device)
    wh = torch.randn(h.shape, generator=g, dtype=torch.float64).to(h.device)
    wc = torch.randn(c.shape, generator=g, dtype=torch.float64).to(c.device)
    return (y.double() * wy).sum() + (h.double() * wh).sum() + (c.double() * wc).sum()


def run_layer(backend, ts, dtype, device="cpu"):
    """attnfast.lstm on ``backend`` with the inputs ``ts`` in ``dtype``: outputs, gradients."""
    leaves = _leaves(ts, dtype, device)
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = leaves
    y, (h, c) = attnfast.lstm(x, (h0, c0), w_ih, w_hh, b_ih, b_hh, backend=backend)
    assert y.dtype == h.dtype == c.dtype == dtype
    used = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(_loss(y, h, c), used)
    return [y, h, c], list(grads)


NAMES = ["output", "h_n", "c_n"]
GRAD_NAMES = ["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"]


def check_layer(backend, T, B, I, H, dtype, bias=True):
    require(backend)
    ts = layer_inputs(T, B, I, H, bias=bias)
    outs, grads = run_layer(backend, ts, dtype, device_for(backend))
    want, want_grads = run_layer("reference", ts, torch.float64)
    low, low_grads = (run_layer("reference", ts, dtype) if dtype in LOW
                      else ([None] * 3, [None] * len(grads)))
    names = [n for n, t in zip(GRAD_NAMES, ts) if t is not None]
    for name, a, o, lo in zip(NAMES, outs, want, low):
        assert_parity(a, o, lo, name=f"{backend} {dtype} {name}")
    for name, a, o, lo in zip(names, grads, want_grads, low_grads):
        assert_parity(a, o, lo, name=f"{backend} {dtype} grad {name}")


# (T, B, I, H): one step / one sequence / width 1; H = 17 (no vector width divides it); I != H.
SHAPES = [(1, 1, 1, 1), (1, 3, 5, 17), (5, 1, 17, 17), (4, 3, 7, 17), (3, 2, 24, 9), (5, 3, 8, 24)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
def test_layer_fp32_matches_fp64_reference(backend, shape):
    check_layer(backend, *shape, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_without_bias(backend):
    check_layer(backend, 3, 2, 6, 5, torch.float32, bias=False)


# Compiled backends only: the reference in bf16/fp16 is the yardstick itself (the rule would hold
# trivially).
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_layer_low_precision_within_twice_the_reference_error(backend, dtype):
    check_layer(backend, 5, 3, 12, 17, dtype)


@pytest.mark.parametrize("backend", ["reference", "cpu", "cuda"])
def test_layer_long_sequence_fp32(backend):
    """T = 64: the fp32 cell state and dh/dc carried over many steps."""
    check_layer(backend, 64, 4, 16, 32, torch.float32)


def test_reference_layer_in_fp64_matches_torch_lstm():
    """The oracle itself: attnfast.reference.lstm equals nn.LSTM in fp64 (to rounding)."""
    x, h0, c0, *ps = layer_inputs(6, 3, 7, 5)
    m = torch.nn.LSTM(7, 5).double()
    with torch.no_grad():
        for p, v in zip((m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0), ps):
            p.copy_(v)
    y, (h, c) = m(x, (h0[None], c0[None]))
    ry, (rh, rc) = reference_lstm.lstm(x, h0, c0, *ps)
    torch.testing.assert_close(ry, y, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(rh, h[0], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(rc, c[0], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "cpu", "simt", "triton", "cuda"])
def test_layer_non_contiguous_inputs(backend):
    """A strided x (a slice of a batch-first tensor) and a transposed-storage w_hh."""
    require(backend)
    dev = device_for(backend)
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = [t.float().to(dev) for t in layer_inputs(4, 3, 6, 5)]
    x_nc = torch.stack([x, x], -1).transpose(0, 1).contiguous().transpose(0, 1)[..., 0]
    w_hh_nc = w_hh.t().contiguous().t()
    assert not x_nc.is_contiguous() and not w_hh_nc.is_contiguous()
    y, (h, c) = attnfast.lstm(x_nc, (h0, c0), w_ih, w_hh_nc, b_ih, b_hh, backend=backend)
    ry, (rh, rc) = attnfast.lstm(x_nc.contiguous(), (h0, c0), w_ih, w_hh, b_ih, b_hh,
                                 backend="reference")
    for a, b in ((y, ry), (h, rh), (c, rc)):
        torch.testing.assert_close(a.cpu(), b.cpu(), **FP32_TOL)


@pytest.mark.parametrize("T,B", [(0, 3), (4, 0), (0, 0)])
def test_empty_sequence_or_batch(T, B):
    """T = 0: no step, the final states are the initial ones; B = 0: empty outputs. Under auto
    the compiled backends refuse (explain says why) and the reference computes it."""
    x, h0, c0, *ps = [t.float() for t in layer_inputs(T, B, 6, 5)]
    y, (h, c) = attnfast.lstm(x, (h0, c0), *ps)
    assert y.shape == (T, B, 5) and h.shape == c.shape == (B, 5)
    if T == 0:
        torch.testing.assert_close(h, h0)
        torch.testing.assert_close(c, c0)
    reasons = lstm_ops._refuses("cpu", lstm_ops.prepare(x, (h0, c0), *ps))
    assert any("empty LSTM" in r for r in reasons), reasons


def test_zero_initial_state_by_default():
    x, h0, c0, *ps = [t.float() for t in layer_inputs(3, 2, 4, 5)]
    y, (h, c) = attnfast.lstm(x, None, *ps)
    ry, (rh, rc) = attnfast.lstm(x, (torch.zeros_like(h0), torch.zeros_like(c0)), *ps)
    assert torch.equal(y, ry) and torch.equal(h, rh) and torch.equal(c, rc)


def test_compiled_backends_refuse_fp64_and_explain_says_why():
    x, h0, c0, *ps = layer_inputs(3, 2, 4, 5)
    inp = lstm_ops.prepare(x, (h0, c0), *ps)
    for backend in ("cpu", "simt", "triton", "cuda"):
        assert any("float64" in r for r in lstm_ops._refuses(backend, inp)), backend
    text = attnfast.explain("lstm", x, (h0, c0), *ps)
    assert "attnfast.lstm on cpu / float64" in text and "reference -> runs" in text, text
    assert "dtype float64 is not one of" in text or "no CPU kernel" in text, text


# ---- the module against torch.nn.LSTM ------------------------------------------------------------

def _pair(backend, dev, **kw):
    """(torch.nn.LSTM, attnfast.nn.LSTM) with equal parameters (torch's init, copied by
    state_dict into ours)."""
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(**kw).to(dev)
    ours = attnfast.nn.LSTM(**kw, backend=backend).to(dev)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


MODULE_CASES = {
    "plain": (dict(input_size=6, hidden_size=5), (4, 3, 6)),
    "two_layers": (dict(input_size=6, hidden_size=5, num_layers=2), (4, 3, 6)),
    "bidirectional": (dict(input_size=6, hidden_size=5, num_layers=2, bidirectional=True), (4, 3, 6)),
    "batch_first": (dict(input_size=6, hidden_size=5, batch_first=True), (3, 4, 6)),
    "unbatched": (dict(input_size=6, hidden_size=5, num_layers=2), (4, 6)),
    "unbatched_batch_first": (dict(input_size=6, hidden_size=5, batch_first=True), (4, 6)),
    "no_bias_H17": (dict(input_size=3, hidden_size=17, bias=False), (5, 2, 3)),
    "B1_T1": (dict(input_size=4, hidden_size=4), (1, 1, 4)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(MODULE_CASES))
@pytest.mark.parametrize("with_hx", [False, True], ids=["no_hx", "hx"])
def test_module_matches_torch_lstm(backend, case, with_hx):
    """Outputs, final states and the gradients of every parameter, the input and (h_0, c_0)."""
    require(backend)
    dev = device_for(backend)
    kw, shape = MODULE_CASES[case]
    theirs, ours = _pair(backend, dev, **kw)
    x = torch.randn(*shape, device=dev)
    batched = len(shape) == 3
    n = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    batch = (shape[0] if kw.get("batch_first") else shape[1]) if batched else None
    state_shape = (n, batch, kw["hidden_size"]) if batched else (n, kw["hidden_size"])
    hx = (torch.randn(state_shape, device=dev), torch.randn(state_shape, device=dev)) if with_hx else None
    results = []
    for m in (theirs, ours):
        xi = x.clone().requires_grad_(True)
        hxi = None if hx is None else tuple(t.clone().requires_grad_(True) for t in hx)
        y, (h, c) = m(xi, hxi)
        loss = _loss(y, h, c)
        leaves = [xi, *(hxi or ()), *m.parameters()]
        results.append(([y, h, c], torch.autograd.grad(loss, leaves)))
    (want, want_g), (got, got_g) = results
    for name, a, b in zip(NAMES, got, want):
        assert a.shape == b.shape, f"{name}: {tuple(a.shape)} != torch's {tuple(b.shape)}"
        torch.testing.assert_close(a, b, **FP32_TOL, msg=lambda m: f"{case} {name}: {m}")
    names = ["x", *(["h_0", "c_0"] if with_hx else []), *(n for n, _ in ours.named_parameters())]
    for name, a, b in zip(names, got_g, want_g):
        torch.testing.assert_close(a, b, **FP32_TOL, msg=lambda m: f"{case} grad {name}: {m}")


@pytest.mark.parametrize("backend", ["reference", "cpu", "cuda"])
def test_module_bidirectional_batch_first_three_layers(backend):
    require(backend)
    dev = device_for(backend)
    kw = dict(input_size=7, hidden_size=9, num_layers=3, bidirectional=True, batch_first=True)
    theirs, ours = _pair(backend, dev, **kw)
    x = torch.randn(2, 6, 7, device=dev)
    (y, (h, c)), (ry, (rh, rc)) = ours(x), theirs(x)
    for a, b in ((y, ry), (h, rh), (c, rc)):
        torch.testing.assert_close(a, b, **FP32_TOL)


def test_state_dict_round_trip_both_ways():
    kw = dict(input_size=6, hidden_size=5, num_layers=2, bidirectional=True)
    theirs = torch.nn.LSTM(**kw)
    ours = attnfast.nn.LSTM(**kw)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())  # strict: same keys, same shapes
    for k, v in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    ours2 = attnfast.nn.LSTM(**kw)
    theirs2 = torch.nn.LSTM(**kw)
    theirs2.load_state_dict(ours2.state_dict())
    x = torch.randn(3, 2, 6)
    torch.testing.assert_close(ours2(x)[0], theirs2(x)[0], **FP32_TOL)


def test_same_init_as_torch_from_the_same_seed():
    kw = dict(input_size=6, hidden_size=5, num_layers=2, bidirectional=True, bias=True)
    torch.manual_seed(3)
    theirs = torch.nn.LSTM(**kw)
    torch.manual_seed(3)
    ours = attnfast.nn.LSTM(**kw)
    for (k, a), (k2, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert k == k2 and torch.equal(a, b), k


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    m = attnfast.nn.LSTM(6, 5, num_layers=2, dropout=0.5)
    x = torch.randn(4, 3, 6)
    m.eval()
    assert torch.equal(m(x)[0], m(x)[0])
    m.train()
    torch.manual_seed(1)
    a = m(x)[0]
    torch.manual_seed(2)
    b = m(x)[0]
    assert not torch.equal(a, b)
    torch.manual_seed(1)
    assert torch.equal(m(x)[0], a)  # the masks come from torch's generator


# ---- autocast ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_autocast_cpu_bf16_dtypes_match_torch_lstm(backend):
    """torch's LSTM under CPU autocast runs in bf16 (oneDNN's mkldnn_rnn_layer is on autocast's
    lower-precision list): output, h_n and c_n are bf16; ours too, and equal to an explicit bf16
    run on the same backend; gradients land on the fp32 parameters in fp32."""
    require(backend)
    theirs, ours = _pair(backend, "cpu", input_size=6, hidden_size=5, num_layers=2)
    x = torch.randn(4, 3, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ty, (th, tc) = theirs(x)
        y, (h, c) = ours(x)
    assert (y.dtype, h.dtype, c.dtype) == (ty.dtype, th.dtype, tc.dtype) == (torch.bfloat16,) * 3
    torch.testing.assert_close(y.float(), ty.float(), atol=3e-2, rtol=3e-2)
    explicit = attnfast.nn.LSTM(6, 5, num_layers=2, backend=backend).to(torch.bfloat16)
    explicit.load_state_dict(ours.state_dict())
    ey, (eh, ec) = explicit(x.bfloat16())
    assert torch.equal(y, ey) and torch.equal(h, eh) and torch.equal(c, ec)
    y.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in ours.parameters())


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_autocast_functional_casts_states_and_weights(backend):
    require(backend)
    x, h0, c0, *ps = [t.float() for t in layer_inputs(3, 2, 4, 5)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, (h, c) = attnfast.lstm(x, (h0, c0), *ps, backend=backend)
    assert y.dtype == h.dtype == c.dtype == torch.bfloat16
    ry, (rh, rc) = attnfast.lstm(x.bfloat16(), (h0.bfloat16(), c0.bfloat16()),
                                 *[p.bfloat16() for p in ps], backend=backend)
    assert torch.equal(y, ry) and torch.equal(h, rh) and torch.equal(c, rc)


def test_fp64_is_not_cast_under_autocast():
    x, h0, c0, *ps = layer_inputs(3, 2, 4, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, (h, c) = attnfast.lstm(x, (h0, c0), *ps)
    assert y.dtype == torch.float64


# ---- torch.compile -------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "cpu", "simt", "triton"])
def test_module_compiles_fullgraph_with_dropout_without_recompiles(backend):
    """torch.nn.LSTM breaks dynamo's graph; attnfast.nn.LSTM compiles whole: two layers with
    inter-layer dropout in training mode, 5 training calls, one graph, the same results as eager
    for the same generator states (inductor's fallback_random draws the masks as eager does)."""
    require(backend)
    if backend == "triton":
        pytest.importorskip("triton")
    dev = device_for(backend)
    torch.manual_seed(0)
    m = attnfast.nn.LSTM(6, 5, num_layers=2, dropout=0.3, backend=backend, device=dev).train()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(m, backend=counter, fullgraph=True)
    with torch._inductor.config.patch(fallback_random=True):
        for i in range(5):
            x = torch.randn(4, 3, 6, device=dev, requires_grad=True)
            outs = []
            for fn in (compiled, m):
                torch.manual_seed(100 + i)
                xi = x.detach().clone().requires_grad_(True)
                y, (h, c) = fn(xi)
                (y.square().mean() + c.sum()).backward()
                outs.append((y.detach(), xi.grad, [p.grad.clone() for p in m.parameters()]))
                m.zero_grad()
            (cy, cgx, cg), (ey, egx, eg) = outs
            torch.testing.assert_close(cy, ey, **FP32_TOL)
            torch.testing.assert_close(cgx, egx, **FP32_TOL)
            for a, b in zip(cg, eg):
                torch.testing.assert_close(a, b, **FP32_TOL)
    assert counter.frame_count == 1, (
        f"{counter.frame_count} graphs over 5 calls (expected 1); TORCH_LOGS=recompiles says why")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


# ---- the autograd formula: every output's gradient -------------------------------------------

@pytest.mark.parametrize("backend", ["cpu", "simt", "triton", "cuda"])
@pytest.mark.parametrize("pick", ["output", "h_n", "c_n", "h_n+c_n"])
def test_gradient_through_each_output(backend, pick):
    """Only h_n, only c_n, or the output used: the unused outputs' gradients stay None in the
    autograd formula (no zeros filled) and every input's gradient is the reference's."""
    require(backend)
    dev = device_for(backend)
    x, h0, c0, *ps = [t.float().to(dev).requires_grad_(True) for t in layer_inputs(3, 2, 4, 5)]

    def loss(y, h, c):
        return {"output": y.sum(), "h_n": h.sum(), "c_n": c.sum(), "h_n+c_n": (h * c).sum()}[pick]

    got = torch.autograd.grad(loss(*_flat(attnfast.lstm(x, (h0, c0), *ps, backend=backend))),
                              [x, h0, c0, *ps])
    want = torch.autograd.grad(loss(*_flat(attnfast.lstm(x, (h0, c0), *ps, backend="reference"))),
                               [x, h0, c0, *ps])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **FP32_TOL)


def _flat(result):
    y, (h, c) = result
    return y, h, c


@pytest.mark.parametrize("backend", ["cpu", "simt", "triton", "cuda"])
def test_op_backward_takes_every_steps_cell_state_gradient(backend):
    """The compiled op's c output is every step's cell state: a loss on c[t] for t < T-1 (not only
    on the final state) back-propagates through the op's autograd formula as through the
    reference."""
    require(backend)
    dev = device_for(backend)
    T, B, H = 4, 2, 5
    g = torch.Generator().manual_seed(5)
    gx, h0, c0 = (torch.randn(*s, generator=g).to(dev).requires_grad_(True)
                  for s in ((T, B, 4 * H), (B, H), (B, H)))
    w_hh = (torch.randn(4 * H, H, generator=g) / H ** 0.5).to(dev).requires_grad_(True)
    weights = torch.randn(T, B, H, generator=g).to(dev)
    forward = spec.kernels(backend).lstm_forward
    h, c, _ = forward(gx, h0, c0, w_hh, True)
    got = torch.autograd.grad((c * weights).sum() + h[1].sum(), [gx, h0, c0, w_hh])
    rh, rc = reference_lstm.lstm_recurrence(gx, h0, c0, w_hh)
    want = torch.autograd.grad((rc * weights).sum() + rh[1].sum(), [gx, h0, c0, w_hh])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **FP32_TOL)


# ---- validation ----------------------------------------------------------------------------------

def _valid():
    return [t.float() for t in layer_inputs(3, 2, 4, 5)]


@pytest.mark.parametrize("change,match", [
    (lambda a: {**a, "x": a["x"][0]}, "x must be 3-D"),
    (lambda a: {**a, "x": a["x"].long()}, "x must be a floating-point"),
    (lambda a: {**a, "weight_hh": a["weight_hh"][:, :4]}, "weight_hh must be"),
    (lambda a: {**a, "weight_ih": a["weight_ih"][:, :3]}, r"weight_ih must be .*\(20, 4\)"),
    (lambda a: {**a, "bias_ih": a["bias_ih"][:7]}, r"bias_ih must have shape \(20,\)"),
    (lambda a: {**a, "bias_hh": a["bias_hh"].double()}, "bias_hh dtype"),
    (lambda a: {**a, "hx": (a["hx"][0][:1], a["hx"][1])}, r"h0 must be \(B, hidden_size\) = \(2, 5\)"),
    (lambda a: {**a, "hx": (a["hx"][0], a["hx"][1][None])}, "c0 must be 2-D"),
    (lambda a: {**a, "hx": a["hx"][0]}, "hx must be None or a pair"),
    (lambda a: {**a, "weight_ih": a["weight_ih"].to("meta")}, "weight_ih is on meta"),
])
def test_functional_validation(change, match):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = _valid()
    args = dict(x=x, hx=(h0, c0), weight_ih=w_ih, weight_hh=w_hh, bias_ih=b_ih, bias_hh=b_hh)
    with pytest.raises(ValueError, match=match):
        attnfast.lstm(**change(args))


def _same_error(make_call):
    """Ours raises the exception type torch.nn.LSTM raises for the same misuse."""
    with pytest.raises(Exception) as theirs:
        make_call(torch.nn.LSTM)
    with pytest.raises(type(theirs.value)):
        make_call(attnfast.nn.LSTM)
    return theirs.value


@pytest.mark.parametrize("call", [
    lambda M: M(4, 5)(torch.randn(2, 3, 4, 4)),                                   # 4-D input
    lambda M: M(4, 5)(torch.randn(2, 3, 6)),                                      # input_size
    lambda M: M(4, 5)(torch.randn(2, 3, 4).double()),                             # dtype
    lambda M: M(4, 5)(torch.randn(0, 3, 4)),                                      # T = 0
    lambda M: M(4, 5)(torch.randn(2, 3, 4), (torch.zeros(1, 2, 5), torch.zeros(1, 3, 5))),
    lambda M: M(4, 5)(torch.randn(2, 3, 4), (torch.zeros(1, 3, 5), torch.zeros(1, 3, 4))),
    lambda M: M(4, 5)(torch.randn(2, 3, 4), (torch.zeros(3, 5), torch.zeros(3, 5))),  # 2-D hx
    lambda M: M(4, 5)(torch.randn(2, 4), (torch.zeros(1, 1, 5), torch.zeros(1, 1, 5))),
    lambda M: M(4, 5, num_layers=2)(torch.randn(2, 3, 4), (torch.zeros(1, 3, 5),) * 2),
    lambda M: M(4, 0),
    lambda M: M(0, 5),
    lambda M: M(4, 5, num_layers=0),
    lambda M: M(4, 5, dropout=1.5),
    lambda M: M(4, 5, bias="yes"),
    lambda M: M(4, 5.0),
])
def test_module_errors_match_torch(call):
    _same_error(call)


def test_unsupported_features_say_so():
    with pytest.raises(ValueError, match="proj_size=2 is not supported"):
        attnfast.nn.LSTM(4, 5, proj_size=2)
    seq = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(3, 2, 4), [3, 2])
    with pytest.raises(TypeError, match="PackedSequence"):
        attnfast.nn.LSTM(4, 5)(seq)
    with pytest.raises(ValueError, match="backend"):
        attnfast.nn.LSTM(4, 5, backend="gpu")
