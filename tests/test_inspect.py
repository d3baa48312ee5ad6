"""``python -m attnfast inspect``: the sequential Jacobian against a plain autograd loop,
causality, the attention maps' rows, the files written, bad input, and the command end to end."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import attnfast
from attnfast.cli import CLIError
from attnfast.cli import inspect as insp
from attnfast.models.sharnn import SHARNN, SHARNNConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small enough for a 2-core CI machine. max_memory 24 with a 10-byte passage: the warmed memory
# (24 positions) is longer than the 14 the attention keeps, so the trimming rule is exercised.
CONFIG = SHARNNConfig(d_model=16, d_ff=32, n_layers=2, attention="all", max_memory=24)
T = 10


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: intra-op threads add only synchronisation, and on a busy 2-core
    machine the waiting threads spin (measured: 4x the CPU time of one thread)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def make_model(backend="reference", seed=0, **overrides) -> SHARNN:
    torch.manual_seed(seed)
    model = SHARNN(CONFIG, backend=backend, **overrides)
    # SHA-RNN's init puts every LayerNorm at (1, 0) and the attention gates at 0. Perturb them
    # all, so the test does not rest on symmetric parameter values.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def tokens_of(text: bytes) -> torch.Tensor:
    return torch.tensor(list(text), dtype=torch.long)


CONTEXT = tokens_of(b"The quick brown fox jumps over the lazy dog. ")
PASSAGE = tokens_of(b"Sphinx of ")
assert PASSAGE.numel() == T


def autograd_loop_norms(model, tokens, state, positions, output="hidden"):
    """The oracle: one torch.autograd.grad call per output element. The embeddings are a leaf,
    and the blocks run by hand (not through inspect's encoder hook, not through torch.func, and
    over the whole passage, not a prefix)."""
    emb = model.encoder(tokens.view(-1, 1)).detach().requires_grad_(True)
    h = emb
    for i, block in enumerate(model.blocks):
        h, _, _ = block(h, None if state is None else state.mems[i],
                        None if state is None else state.hidden[i])
    y = F.log_softmax(model.decoder(h), dim=-1) if output == "logprobs" else h
    norms = torch.zeros(len(positions), tokens.numel())
    for r, t in enumerate(positions):
        sq = torch.zeros(tokens.numel())
        for i in range(y.shape[-1]):
            (g,) = torch.autograd.grad(y[t, 0, i], emb, retain_graph=True)
            sq += g[:, 0].pow(2).sum(-1)
        norms[r] = sq.sqrt()
    return norms


def warmed(model):
    with torch.no_grad():
        return insp.warm_state(model, CONTEXT, T)


# ---- the sequential Jacobian -----------------------------------------------------------------

@pytest.mark.parametrize("output", insp.JACOBIAN_OUTPUTS)
def test_jacobian_matches_autograd_loop(output):
    model = make_model()
    state = warmed(model)
    assert state.mems[0].shape[0] == CONFIG.max_memory  # more memory than a 10-byte passage keeps
    positions = [0, 4, T - 1]
    jac = insp.sequential_jacobian(model, PASSAGE, positions, state, output=output)
    expected = autograd_loop_norms(model, PASSAGE, state, positions, output)
    assert jac.backend == "reference" and jac.note is None and jac.output == output
    assert jac.norms.shape == (len(positions), T)
    torch.testing.assert_close(jac.norms, expected, rtol=2e-4, atol=1e-6)
    assert (expected[:, 0] > 0).all()  # the oracle is not trivially zero


def test_jacobian_causal_exactly():
    """Over the whole passage (no prefix cut), d y_t / d x_s is exactly 0 for s > t and nonzero
    for s <= t; the prefix cut of the default mode gives the same norms."""
    model = make_model()
    state = warmed(model)
    positions = list(range(T))
    full = insp.sequential_jacobian(model, PASSAGE, positions, state, causal_prefix=False)
    for r, t in enumerate(positions):
        assert torch.equal(full.norms[r, t + 1:], torch.zeros(T - t - 1)), f"t={t}: {full.norms[r]}"
        assert (full.norms[r, : t + 1] > 0).all(), f"t={t}: {full.norms[r]}"
    prefix = insp.sequential_jacobian(model, PASSAGE, positions, state)
    torch.testing.assert_close(prefix.norms, full.norms, rtol=2e-4, atol=1e-6)


def test_jacobian_cold_state_and_restores_model():
    model = make_model().train()
    jac = insp.sequential_jacobian(model, PASSAGE, [T - 1], None)
    torch.testing.assert_close(jac.norms, autograd_loop_norms(model.eval(), PASSAGE, None, [T - 1]),
                               rtol=2e-4, atol=1e-6)
    model.train()
    insp.sequential_jacobian(model, PASSAGE, [2], None)
    assert model.training  # the mode it had
    assert all(m.backend == "reference" for m in model.modules() if hasattr(m, "backend"))


@pytest.mark.skipif(attnfast.backends()["cpu"] is not None,
                    reason=f"the cpu backend is unavailable: {attnfast.backends()['cpu']}")
def test_jacobian_falls_back_to_reference_from_compiled_backend():
    """attnfast's compiled ops have no vmap rule. The Jacobian falls back to the reference and
    says why. It still matches an autograd loop run through the cpu kernels, and the model's
    layers are back on their own backend afterwards."""
    model = make_model(backend="cpu")
    state = warmed(model)
    jac = insp.sequential_jacobian(model, PASSAGE, [3, T - 1], state)
    assert jac.backend == "reference"
    assert "'cpu' cannot run under torch.func" in jac.note
    torch.testing.assert_close(jac.norms, autograd_loop_norms(model, PASSAGE, state, [3, T - 1]),
                               rtol=2e-4, atol=1e-6)
    assert model.blocks[0].attn.backend == "cpu" and model.blocks[0].ff.backend == "cpu"


def test_outputs_from_embeddings_is_the_model():
    model = make_model()
    state = warmed(model)
    toks = PASSAGE.view(-1, 1)
    with torch.no_grad():
        hidden = insp.outputs_from_embeddings(model, toks, model.encoder(toks), state, "hidden")
        logp = insp.outputs_from_embeddings(model, toks, model.encoder(toks), state, "logprobs")
        torch.testing.assert_close(hidden, model.hidden_states(toks, state)[0], rtol=0, atol=0)
        torch.testing.assert_close(logp, F.log_softmax(model(toks, state)[0], -1), rtol=1e-6, atol=1e-6)
    assert not model.encoder._forward_hooks


def test_jacobian_rejects_bad_input():
    model = make_model()
    with pytest.raises(ValueError, match=r"positions must be .* in \[0, 9\]"):
        insp.sequential_jacobian(model, PASSAGE, [T], None)
    with pytest.raises(ValueError, match="output must be one of"):
        insp.sequential_jacobian(model, PASSAGE, [1], None, output="logits")
    with pytest.raises(ValueError, match="computed in fp32; the model is torch.float64"):
        insp.sequential_jacobian(make_model().double(), PASSAGE, [1], None)


def test_look_back():
    row = torch.tensor([0.0, 1.0, 1.0, 8.0, 0.0])
    assert insp.look_back(row, 3) == 2     # byte 3 holds 80% of the sum up to 3; bytes 2-3 hold 90%
    assert insp.look_back(row, 3, share=0.8) == 1
    assert insp.look_back(row, 2) == 2     # row[:3] = 0, 1, 1: the last two hold 100%
    assert insp.look_back(torch.zeros(4), 3) == 0


# ---- attention maps ---------------------------------------------------------------------------

def test_attention_rows_sum_to_one_over_visible_keys():
    model = make_model()
    state = warmed(model)
    with torch.no_grad():
        expected_logits = model(PASSAGE.view(-1, 1), state)[0][:, 0]
    maps, logits = insp.attention_maps(model, PASSAGE, state)
    assert sorted(maps) == [0, 1]  # attention="all"
    memory = CONFIG.max_memory - T  # what the attention keeps of the 24 warmed positions
    for w in maps.values():
        assert w.shape == (1, T, memory + T)
        visible = torch.arange(memory + T).unsqueeze(0) <= torch.arange(T).unsqueeze(1) + memory
        torch.testing.assert_close(w.sum(-1), torch.ones(1, T), rtol=0, atol=1e-5)
        assert torch.equal(w.masked_fill(visible, 0.0), torch.zeros_like(w))  # masked keys: 0
        assert (w[visible.unsqueeze(0)] > 0).all()
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=0)  # the hooks change nothing
    for block in model.blocks:
        assert not block.attn._forward_hooks and not block.attn._forward_pre_hooks


def test_attention_maps_cold_state_has_no_memory_keys():
    maps, _ = insp.attention_maps(make_model(), PASSAGE, None)
    assert all(w.shape == (1, T, T) for w in maps.values())


# ---- passages, positions, files ---------------------------------------------------------------

def test_passage_from_split():
    data = torch.arange(100, dtype=torch.uint8)
    p = insp.passage_from_split(data, "valid", 10, None, 30)
    assert p.tokens.tolist() == list(range(30, 40)) and p.context.tolist() == list(range(30))
    p = insp.passage_from_split(data, "valid", 10, 95 - 5, 4)  # the last possible offset
    assert p.tokens.tolist() == list(range(90, 100)) and p.context.tolist() == [86, 87, 88, 89]
    p = insp.passage_from_split(data, "valid", 10, None, 500)  # the split is shorter than warmup
    assert p.tokens.tolist() == list(range(90, 100)) and p.context.numel() == 90
    with pytest.raises(CLIError, match=r"--length 101 is longer than the valid split \(100 bytes\)"):
        insp.passage_from_split(data, "valid", 101, None, 0)
    with pytest.raises(CLIError, match=r"--offset must be in \[0, 90\]"):
        insp.passage_from_split(data, "valid", 10, 91, 0)


def test_positions():
    assert insp.default_positions(128) == [15, 31, 47, 63, 79, 95, 111, 127]
    assert insp.default_positions(3) == [0, 1, 2]
    assert insp.parse_positions("5, 2,5", 10) == [2, 5]
    assert insp.parse_positions("all", 4) == [0, 1, 2, 3]
    with pytest.raises(CLIError, match=r"in \[0, 9\] for a 10-byte passage.*\(10, -1 out of range\)"):
        insp.parse_positions("3,10,-1", 10)
    with pytest.raises(CLIError, match="comma-separated integers"):
        insp.parse_positions("3,x", 10)
    with pytest.raises(CLIError, match=r"--positions must be in"):
        insp.parse_positions(",", 10)


def test_passage_errors():
    with pytest.raises(CLIError, match="--text is empty"):
        insp.passage_from_text(b"")
    small_vocab = make_model(vocab_size=64)
    with pytest.raises(CLIError, match="byte values >= the model's vocabulary of 64"):
        insp.inspect_passage(small_vocab, insp.passage_from_text(b"ABC~"), [1])


def test_write_report(tmp_path):
    import matplotlib.image

    model = make_model()
    passage = insp.Passage(PASSAGE, CONTEXT, "test passage")
    report = insp.inspect_passage(model, passage, [2, T - 1])
    files = insp.write_report(report, str(tmp_path / "out"))
    names = sorted(os.path.basename(f) for f in files)
    assert names == ["attention_block0.npy", "attention_block0.png", "attention_block1.npy",
                     "attention_block1.png", "jacobian.npy", "jacobian.png", "summary.json"]
    for f in files:
        if f.endswith(".png"):
            image = matplotlib.image.imread(f)
            assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    memory = CONFIG.max_memory - T
    assert np.load(tmp_path / "out" / "attention_block1.npy").shape == (1, T, memory + T)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "jacobian.npy"), report.jacobian.norms.numpy())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["passage"] == "Sphinx of "
    assert summary["jacobian"]["positions"] == [2, T - 1]
    assert summary["jacobian"]["output"] == "hidden"
    assert summary["attention"]["0"]["memory_keys"] == memory
    assert "warmed on the 45 bytes" in summary["state"]
    text = insp.summary_text(report, files)
    assert "attention block 1: 14 memory + 10 passage keys" in text
    assert f"t={T - 1}" in text


# ---- the command ------------------------------------------------------------------------------

def save_tiny_checkpoint(directory):
    from attnfast.cli.checkpoint import save_checkpoint

    save_checkpoint(str(directory), make_model(backend=None), {"step": 3})


def command_args(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    insp.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_run_with_text(tmp_path, capsys):
    save_tiny_checkpoint(tmp_path / "ck")
    rc = insp.run(command_args("--checkpoint", str(tmp_path / "ck"), "--out", str(tmp_path / "out"),
                               "--text", "hello, world", "--positions", "3,11", "--device", "cpu"))
    assert rc == 0
    out = capsys.readouterr().out
    assert "cold start" in out and "t=11" in out
    assert np.load(tmp_path / "out" / "jacobian.npy").shape == (2, 12)


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "{tmp}/missing", "--text", "abc"], "checkpoint directory .*missing does not exist"),
    (["--checkpoint", "{tmp}/ck", "--text", ""], "--text is empty"),
    (["--checkpoint", "{tmp}/ck", "--text", "abc", "--positions", "3"], r"--positions must be in \[0, 2\]"),
    (["--checkpoint", "{tmp}/ck", "--length", "0"], "--length must be >= 1"),
    (["--checkpoint", "{tmp}/ck", "--warmup", "-1"], "--warmup must be >= 0"),
    (["--checkpoint", "{tmp}/ck", "--text", "abc", "--offset", "3"],
     "--offset only apply to a passage from --split, not --text"),
    (["--checkpoint", "{tmp}/ck", "--text", "abc", "--backend", "fast"], "--backend must be auto or one of"),
    (["--checkpoint", "{tmp}/ck", "--text", "abc", "--backend", "cuda"], "backend 'cuda' cannot take this input"),
])
def test_run_errors(tmp_path, argv, message):
    save_tiny_checkpoint(tmp_path / "ck")
    args = command_args(*[a.format(tmp=tmp_path) for a in argv], "--out", str(tmp_path / "out"),
                        "--device", "cpu")
    with pytest.raises(CLIError, match=message) as info:
        insp.run(args)
    assert "\n" not in str(info.value)


def test_command_end_to_end(tmp_path):
    """``python -m attnfast inspect`` on a saved checkpoint and a small corpus file, then a
    missing checkpoint: one error line and exit status 2."""
    save_tiny_checkpoint(tmp_path / "ck")
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"def inspect(model):\n    return model.attention  # look inside\n" * 40)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "attnfast", "inspect", "--device", "cpu", "--out", str(tmp_path / "out")]
    done = subprocess.run(base + ["--checkpoint", str(tmp_path / "ck"), "--split", "valid",
                                  "--data", str(corpus), "--length", "16", "--warmup", "40"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "warmed on the 40 bytes" in done.stdout
    assert "valid split, bytes [40, 56)" in done.stdout
    assert np.load(tmp_path / "out" / "jacobian.npy").shape == (8, 16)
    # The attention keeps max_memory - 16 = 8 of the warmed memory positions, then the 16 bytes.
    assert np.load(tmp_path / "out" / "attention_block0.npy").shape == (1, 16, 24)
    failed = subprocess.run(base + ["--checkpoint", str(tmp_path / "nowhere")],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert failed.returncode == 2
    assert failed.stderr.strip().count("\n") == 0
    assert "attnfast inspect: error: checkpoint directory" in failed.stderr
