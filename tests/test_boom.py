"""Boom: every backend against the float64 reference, forward and backward."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import attnfast
from attnfast import reference
from attnfast.ops.boom import ACTIVATIONS
from attnfast.ops.seed import NO_SEED, seed_tensor
from conftest import assert_parity, device_for, require_backend

# "simt": the CUDA kernels run on the CPU by the SIMT host harness (csrc/simt/), through the
# same Python glue as the real CUDA backend, so they face the same tests and tolerances;
# "simt-fused" runs the fused tensor-core kernel instead of the GEMM + epilogue strategy.
KERNEL_BACKENDS = ["cpu", "triton", "cuda", "simt", "simt-fused"]
LOW = [torch.bfloat16, torch.float16]


def make_inputs(shape, d_ff, dtype, device, bias=True, shortcut=True, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    d_model = shape[-1]
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    w = torch.randn(d_ff, d_model, generator=g, dtype=torch.float64) / max(1, d_model) ** 0.5
    b = torch.randn(d_ff, generator=g, dtype=torch.float64) * 0.1 if bias else None
    w2 = None if shortcut else torch.randn(d_model, d_ff, generator=g, dtype=torch.float64) / d_ff ** 0.5
    ts = [x, w, b, w2]
    out = []
    for t in ts:
        if t is None:
            out.append(None)
            continue
        t = t.to(dtype=dtype, device=device)
        out.append(t.requires_grad_(requires_grad))
    return out


def run_boom(backend, x, w, b, w2=None, **kw):
    if backend == "simt-fused":
        os.environ["ATTNFAST_BOOM_CUDA"] = "fused"
        try:
            return attnfast.boom(x, w, b, shortcut=w2 is None, weight2=w2, backend="simt", **kw)
        finally:
            os.environ.pop("ATTNFAST_BOOM_CUDA", None)
    return attnfast.boom(x, w, b, shortcut=w2 is None, weight2=w2, backend=backend, **kw)


def oracle_and_low(x, w, b, w2, dtype, **kw):
    """(float64 oracle, reference in the kernel's own dtype)."""
    as64 = [None if t is None else t.detach().double().cpu() for t in (x, w, b, w2)]
    oracle = run_boom("reference", *as64, **kw)
    low = None
    if dtype in LOW:
        lowin = [None if t is None else t.detach().to(dtype).cpu() for t in (x, w, b, w2)]
        low = run_boom("reference", *lowin, **kw)
    return oracle, low


def grads_of(backend, x, w, b, w2, grad, **kw):
    ins = [t for t in (x, w, b, w2) if t is not None]
    for t in ins:
        t.grad = None
    y = run_boom(backend, x, w, b, w2, **kw)
    y.backward(grad)
    return y, [t.grad for t in ins]


def check_backend(backend, shape, d_ff, dtype, activation="gelu_sigmoid", shortcut=True, bias=True,
                  backward=True, **kw):
    require_backend(backend.split("-")[0])
    dev = device_for(backend)
    x, w, b, w2 = make_inputs(shape, d_ff, dtype, dev, bias=bias, shortcut=shortcut,
                              requires_grad=backward)
    gen = torch.Generator().manual_seed(1)
    y = run_boom(backend, x, w, b, w2, activation=activation, **kw)
    oracle, low = oracle_and_low(x, w, b, w2, dtype, activation=activation, **kw)
    assert y.dtype == dtype and y.device.type == dev
    assert_parity(y, oracle, low, name=f"{backend} forward")
    if not backward:
        return
    grad = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    _, g_kernel = grads_of(backend, x, w, b, w2, grad.to(dtype=dtype, device=dev),
                           activation=activation, **kw)
    x64, w64, b64, w264 = [None if t is None else t.detach().double().cpu().requires_grad_()
                           for t in (x, w, b, w2)]
    _, g_oracle = grads_of("reference", x64, w64, b64, w264, grad, activation=activation, **kw)
    g_low = [None] * len(g_oracle)
    if dtype in LOW:
        xl, wl, bl, w2l = [None if t is None else t.detach().to(dtype).cpu().requires_grad_()
                           for t in (x, w, b, w2)]
        _, g_low = grads_of("reference", xl, wl, bl, w2l, grad.to(dtype), activation=activation, **kw)
    names = ["grad_x", "grad_weight", "grad_bias", "grad_weight2"]
    present = [n for n, t in zip(names, (x, w, b, w2)) if t is not None]
    for name, gk, go, gl in zip(present, g_kernel, g_oracle, g_low):
        assert_parity(gk, go, gl, name=f"{backend} {name}")


# ---- parity: activations x dtypes x shortcut ---------------------------------------------------

@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_parity_activations(backend, dtype, activation):
    # d_model 24 (not a multiple of 16), d_ff 80 (not a multiple of d_model: 3 chunks + 8 dropped)
    check_backend(backend, (13, 24), 80, dtype, activation=activation)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_parity_no_shortcut(backend, dtype):
    check_backend(backend, (9, 20), 50, dtype, shortcut=False)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_parity_no_bias(backend):
    check_backend(backend, (7, 16), 64, torch.float32, bias=False)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("shape", [(0, 16), (1, 16), (2, 3, 16), (2, 1, 3, 16), (1, 1)],
                         ids=["rows0", "rows1", "3d", "4d", "dmodel1"])
def test_parity_awkward_shapes(backend, shape):
    check_backend(backend, shape, 4 * shape[-1] + 1, torch.float32)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_non_contiguous_input(backend):
    require_backend(backend.split("-")[0])
    dev = device_for(backend)
    x, w, b, _ = make_inputs((24, 11), 48, torch.float32, dev)
    xt = x.t().contiguous().t()  # (11, 24)^T -> non-contiguous (24, 11) strides (1, 24)
    assert not xt.is_contiguous()
    y = run_boom(backend, xt, w, b)
    oracle = attnfast.boom(xt.double().cpu(), w.double().cpu(), b.double().cpu(), backend="reference")
    assert_parity(y, oracle)


@pytest.mark.parametrize("backend", ["cpu"])
def test_sha_rnn_size_slice(backend):
    """A slice of the SHA-RNN shape (d_model 1024 -> 4096) in bf16, forward and backward."""
    check_backend(backend, (33, 1024), 4096, torch.bfloat16)


# ---- dropout: same seed, same mask, in every backend -------------------------------------------

@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("shortcut", [True, False])
def test_dropout_matches_reference_mask(backend, shortcut):
    check_backend(backend, (10, 16), 70, torch.float32, shortcut=shortcut, dropout_p=0.3,
                  training=True, seed=1234567890123)


def test_dropout_statistics():
    p = 0.25
    keep = reference.dropout_keep_mask((256, 1024), p, seed=42)
    frac = keep.float().mean().item()
    # 262144 Bernoulli(0.75) draws: the std of the mean is ~8.5e-4; 5 sigma.
    assert abs(frac - (1 - p)) < 5e-3
    other = reference.dropout_keep_mask((256, 1024), p, seed=43)
    assert (keep != other).float().mean().item() > 0.3  # different seeds, different masks


def test_philox_known_answer():
    """Philox4x32-10 known-answer test (Random123 kat_vectors: counter 0, key 0)."""
    from attnfast.reference.dropout import philox_first_word

    word = philox_first_word(torch.zeros(1, dtype=torch.int64), 0)
    assert int(word) == 0x6627E8D5


def test_dropout_off_in_eval():
    x, w, b, _ = make_inputs((5, 8), 32, torch.float32, "cpu")
    a = attnfast.boom(x, w, b, dropout_p=0.5, training=False)
    c = attnfast.boom(x, w, b, dropout_p=0.0)
    assert torch.equal(a, c)


# ---- gradcheck, opcheck, compile ---------------------------------------------------------------

def test_gradcheck_reference_fp64():
    x, w, b, _ = make_inputs((3, 5), 12, torch.float64, "cpu", requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: attnfast.boom(*a, backend="reference"), (x, w, b))


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_opcheck(backend):
    require_backend(backend)
    dev = device_for(backend)
    fwd = torch.ops.attnfast.boom_forward if backend == "cpu" else torch.ops.attnfast.boom_forward_triton
    bwd = torch.ops.attnfast.boom_backward if backend == "cpu" else torch.ops.attnfast.boom_backward_triton
    x, w, b, _ = make_inputs((6, 16), 40, torch.float32, dev, requires_grad=True)
    for args in [(x, w, b, 0, 16, 0.0, NO_SEED, True), (x, w, None, 3, 40, 0.2, seed_tensor(7), True),
                 (x, w, b, 0, 16, 0.2, seed_tensor(2**64 - 1), True),
                 (x.detach(), w.detach(), b.detach(), 1, 8, 0.0, NO_SEED, False)]:
        torch.library.opcheck(fwd, args)
    out, pre = fwd(x.detach(), w.detach(), b.detach(), 2, 16, 0.1, seed_tensor(3), True)
    g = torch.randn_like(out)
    torch.library.opcheck(bwd, (g, x.detach(), w.detach(), pre, True, 2, 16, 0.1, seed_tensor(3)))


def test_compile_fullgraph_module():
    require_backend("cpu")
    torch._dynamo.reset()
    m = attnfast.nn.Boom(16, 48, backend="cpu")
    x = torch.randn(2, 5, 16, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True)
    y = compiled(x)
    y_eager = m(x)
    assert_parity(y, y_eager.double())
    y.sum().backward()
    gx = x.grad.clone()
    x.grad = None
    y_eager.sum().backward()
    assert_parity(gx, x.grad.double())


# ---- the module --------------------------------------------------------------------------------

class ShaRnnBoom(torch.nn.Module):
    """SHA-RNN's Boom as written in Merity's model.py (GELU = x * sigmoid(1.702 x))."""

    def __init__(self, d_model, dim_feedforward, shortcut):
        super().__init__()
        self.linear1 = torch.nn.Linear(d_model, dim_feedforward)
        if not shortcut:
            self.linear2 = torch.nn.Linear(dim_feedforward, d_model)
        self.shortcut = shortcut

    def forward(self, x_in):
        x = self.linear1(x_in)
        x = x * torch.sigmoid(1.702 * x)
        if self.shortcut:
            ninp = x_in.shape[-1]
            x = torch.narrow(x, -1, 0, x.shape[-1] // ninp * ninp)
            x = x.view(*x.shape[:-1], x.shape[-1] // ninp, ninp)
            return x.sum(dim=-2)
        return self.linear2(x)


@pytest.mark.parametrize("shortcut", [True, False])
def test_module_loads_sha_rnn_state_dict(shortcut):
    theirs = ShaRnnBoom(12, 40, shortcut).double()
    ours = attnfast.nn.Boom(12, 40, shortcut=shortcut).double()
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4, 12, dtype=torch.float64)
    assert_parity(ours(x), theirs(x))


def test_module_default_d_ff_and_repr():
    m = attnfast.nn.Boom(8)
    assert m.linear1.weight.shape == (32, 8) and m.linear2 is None
    assert "d_ff=32" in repr(m)


# ---- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda x, w, b: attnfast.boom(x.int(), w, b), "floating-point"),
    (lambda x, w, b: attnfast.boom(x, w.double(), b), "weight dtype"),
    (lambda x, w, b: attnfast.boom(x[:, :7], w, b), "weight.shape"),
    (lambda x, w, b: attnfast.boom(x, w, b[:5]), "bias must have shape"),
    (lambda x, w, b: attnfast.boom(x, w[:4], b[:4]), "d_ff >= d_model"),
    (lambda x, w, b: attnfast.boom(x, w, b, dropout_p=1.0), "dropout_p"),
    (lambda x, w, b: attnfast.boom(x, w, b, dropout_p=-0.1), "dropout_p"),
    (lambda x, w, b: attnfast.boom(x, w, b, activation="swish"), "activation"),
    (lambda x, w, b: attnfast.boom(x, w, b, shortcut=False), "weight2"),
    (lambda x, w, b: attnfast.boom(x, w, b, backend="tpu"), "backend"),
    (lambda x, w, b: attnfast.boom(x, w.unsqueeze(0), b), "weight must be 2-D"),
])
def test_bad_input_raises_value_error(make, match):
    x, w, b, _ = make_inputs((4, 8), 32, torch.float32, "cpu")
    with pytest.raises(ValueError, match=match):
        make(x, w, b)


def test_op_level_checks():
    """Direct torch.ops calls get TORCH_CHECK errors, not crashes."""
    require_backend("cpu")
    x, w, b, _ = make_inputs((4, 8), 32, torch.float32, "cpu")
    with pytest.raises(RuntimeError, match="chunk_width"):
        torch.ops.attnfast.boom_forward(x, w, b, 0, 33, 0.0, NO_SEED, False)
    with pytest.raises(RuntimeError, match="activation"):
        torch.ops.attnfast.boom_forward(x, w, b, 9, 8, 0.0, NO_SEED, False)
    with pytest.raises(RuntimeError, match="weight must have shape"):
        torch.ops.attnfast.boom_forward(x, w[:, :5].contiguous(), b, 0, 8, 0.0, NO_SEED, False)
    with pytest.raises(RuntimeError, match="preact"):
        torch.ops.attnfast.boom_backward(torch.zeros(4, 8), x, w, torch.zeros(4, 3), True, 0, 8, 0.0,
                                         NO_SEED)
    with pytest.raises(RuntimeError, match="seed must be an int64 tensor"):
        torch.ops.attnfast.boom_forward(x, w, b, 0, 8, 0.1, torch.tensor(1.0), False)


# ---- dispatch ----------------------------------------------------------------------------------

def test_auto_dispatch_and_explain():
    x, w, b, _ = make_inputs((4, 8), 32, torch.float32, "cpu")
    text = attnfast.explain(attnfast.boom, x, w, b)
    status = attnfast.backends()
    chosen = "cpu" if status["cpu"] is None else "reference"
    assert f"{chosen:9s} -> runs" in text
    for name, reason in status.items():
        if reason is not None:
            assert reason in text
    # fp64 is not a kernel dtype: auto falls back to the reference, and says why.
    text64 = attnfast.explain("boom", x.double(), w.double(), b.double())
    assert "reference -> runs" in text64 and "dtype float64" in text64


def test_explicit_backend_refusal_lists_reasons():
    x, w, b, _ = make_inputs((4, 8), 32, torch.float64, "cpu")
    with pytest.raises(attnfast.BackendUnavailable, match="dtype float64"):
        attnfast.boom(x, w, b, backend="cpu" if attnfast.backends()["cpu"] is None else "cuda")
    if attnfast.backends()["cuda"] is not None:
        with pytest.raises(attnfast.BackendUnavailable, match="cuda"):
            attnfast.boom(x.float(), w.float(), b.float(), backend="cuda")


def test_env_default_backend(monkeypatch):
    x, w, b, _ = make_inputs((4, 8), 32, torch.float32, "cpu")
    monkeypatch.setenv("ATTNFAST_BACKEND", "reference")
    assert "reference -> runs" in attnfast.explain(attnfast.boom, x, w, b)
    monkeypatch.setenv("ATTNFAST_BACKEND", "bogus")
    with pytest.raises(ValueError, match="ATTNFAST_BACKEND"):
        attnfast.boom(x, w, b)


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=300)


def test_missing_extension_falls_back_with_warning():
    code = (
        "import sys, warnings; sys.modules['attnfast._C'] = None\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always'); import attnfast, torch\n"
        "assert any('falls back' in str(x.message) for x in w), [str(x.message) for x in w]\n"
        "assert attnfast.backends()['cpu'] is not None\n"
        "y = attnfast.boom(torch.randn(3, 4), torch.randn(8, 4))\n"
        "print('OK', tuple(y.shape))\n"
    )
    r = _run_python(code)
    assert r.returncode == 0 and "OK (3, 4)" in r.stdout, r.stderr


# ---- CPU instruction sets ----------------------------------------------------------------------

@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
def test_cpu_isa_levels_agree(isa):
    require_backend("cpu")
    from attnfast import _extension

    info = attnfast.build_info()
    order = ["base", "avx2", "avx512"]
    if order.index(isa) > order.index(info["cpu_isa_supported"]):
        pytest.skip(f"this CPU supports at most {info['cpu_isa_supported']}, not {isa}")
    try:
        _extension._C.set_cpu_isa(isa)
        assert attnfast.build_info()["cpu_isa"] == isa
        for act in ACTIVATIONS:
            check_backend("cpu", (6, 40), 130, torch.float32, activation=act, dropout_p=0.2,
                          training=True, seed=11)
            check_backend("cpu", (6, 40), 130, torch.bfloat16, activation=act)
    finally:
        _extension._C.set_cpu_isa("")


def test_cpu_isa_env_cap():
    require_backend("cpu")
    r = _run_python("import attnfast; print(attnfast.build_info()['cpu_isa'])", ATTNFAST_CPU_ISA="avx2")
    assert r.returncode == 0, r.stderr
    supported = attnfast.build_info()["cpu_isa_supported"]
    assert r.stdout.strip() == ("avx2" if supported == "avx512" else supported)


def test_build_info_fields():
    info = attnfast.build_info()
    if "error" in info:
        pytest.skip(f"extension not loaded: {info['error']}")
    for key in ("backends", "cuda_archs", "compiler", "torch_version", "openmp", "cpu_isa",
                "cpu_isas_compiled", "debug"):
        assert key in info
    assert "cpu" in info["backends"] and info["debug"] is False
