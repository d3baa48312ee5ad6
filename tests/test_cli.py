"""``python -m attnfast train / eval / sample``: corpora, the training recipe, resumable
checkpoints, evaluation with carried memory, sampling, Ctrl-C, and every user error.

Models are the tiny preset shrunk further (d_model 32) on a few KB of text, one CPU thread
(a 2-core machine shared by several jobs makes multi-threaded tiny ops slow and noisy). Fast
cases call the Python functions or ``attnfast.__main__.main`` in this process; end-to-end cases
run ``python -m attnfast`` in a subprocess.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from attnfast.__main__ import main
from attnfast.cli import checkpoint as ckpt
from attnfast.cli.data import (ENWIK8_BYTES, MIN_CORPUS_BYTES, batchify, load_corpus, segment,
                               split_sizes, stdlib_text_files)
from attnfast.cli.evaluate import evaluate
from attnfast.cli.sample import generate
from attnfast.cli.train import draw_seq_len, lr_at
from attnfast.models.sharnn import SHARNNState

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--d-model", "32", "--d-ff", "64", "--max-memory", "40", "--batch-size", "4", "--bptt", "16",
         "--warmup", "2", "--eval-batch-size", "2", "--backend", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def trained(corpus_file, tmp_path_factory):
    """A checkpoint after 4 steps (dropout on)."""
    out = str(tmp_path_factory.mktemp("run") / "ckpt")
    torch.set_num_threads(1)
    assert main(["train", "--data", corpus_file, "--steps", "4", "--out", out, "--eval-every", "2", *SMALL]) == 0
    return out


def read_log(out: str) -> list[dict]:
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def step_losses(out: str) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_log(out) if "loss" in r]


def cli(*args, timeout=300, **kwargs):
    """``python -m attnfast ...`` in a subprocess, one thread, outside any torchrun."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "attnfast", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


# ----------------------------------------------------------------------------- data

def test_file_corpus_split_by_position(corpus_file):
    corpus = load_corpus(corpus_file)
    data = open(corpus_file, "rb").read()
    assert (corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()) == (10800, 600, 600)
    assert corpus.train.dtype == torch.uint8
    assert bytes(torch.cat([corpus.train, corpus.valid, corpus.test]).tolist()) == data
    assert corpus_file in corpus.source and "12000 bytes" in corpus.source
    capped = load_corpus(corpus_file, max_bytes=1000)
    assert bytes(torch.cat([capped.train, capped.valid, capped.test]).tolist()) == data[:1000]
    assert (capped.valid.numel(), capped.test.numel()) == (50, 50)


def test_enwik8_split_sizes():
    assert split_sizes(ENWIK8_BYTES) == (90_000_000, 5_000_000, 5_000_000)
    assert split_sizes(1003) == (903, 50, 50)
    assert split_sizes(MIN_CORPUS_BYTES) == (18, 1, 1)


def test_default_corpus_is_the_standard_library_in_sorted_order():
    files = stdlib_text_files()
    assert files and not any("site-packages" in f or "__pycache__" in f for f in files)
    corpus = load_corpus(max_bytes=30000)
    expected = b"".join(open(f, "rb").read() for f in files[:40])[:30000]
    assert bytes(torch.cat([corpus.train, corpus.valid, corpus.test]).tolist()) == expected
    assert "standard library" in corpus.source
    again = load_corpus(max_bytes=30000)
    assert torch.equal(again.train, corpus.train) and torch.equal(again.test, corpus.test)


def test_batchify_and_segment_follow_sharnn():
    data = torch.arange(23, dtype=torch.uint8)
    streams = batchify(data, 4)  # 5 rows: stream b is data[5b : 5b + 5], the tail 20..22 dropped
    assert streams.shape == (5, 4)
    assert streams[:, 1].tolist() == [5, 6, 7, 8, 9]
    inputs, targets = segment(streams, 1, 10)  # clipped to the 3 rows that have a target
    assert inputs.dtype == torch.int64 and inputs.shape == (3, 4)
    assert inputs[:, 0].tolist() == [1, 2, 3] and targets[:, 0].tolist() == [2, 3, 4]


def test_sequence_lengths_and_warmup():
    gen = torch.Generator().manual_seed(0)
    lengths = [draw_seq_len(gen, 64) for _ in range(2000)]
    assert min(lengths) >= 5 and max(lengths) <= 64
    halves = sum(1 for n in lengths if n < 48)  # bptt / 2 = 32 +- a few sigma of 5
    assert 40 < halves < 170, halves  # ~5% of 2000
    assert [draw_seq_len(torch.Generator().manual_seed(0), 64) for _ in range(3)] == \
        [draw_seq_len(torch.Generator().manual_seed(0), 64)] * 3
    assert lengths[:5] == [draw_seq_len(g, 64) for g in [torch.Generator().manual_seed(0)] for _ in range(5)]
    assert draw_seq_len(gen, 3) == 3  # bptt below the floor of 5
    assert [lr_at(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_at(0, 2e-3, 0) == 2e-3


# ----------------------------------------------------------------------------- train

def test_train_writes_log_plot_and_checkpoint(trained, capsys):
    records = read_log(trained)
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for r in steps:
        assert math.isfinite(r["loss"]) and r["bpc"] == pytest.approx(r["loss"] / math.log(2))
        assert r["tokens_per_s"] > 0 and 5 <= r["seq_len"] <= 16 and r["lr"] > 0
    assert [r["lr"] for r in steps] == [1e-3, 2e-3, 2e-3, 2e-3]
    assert [r["step"] for r in records if "valid_bpc" in r] == [2, 4]
    with open(os.path.join(trained, "bpc.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    model, meta = ckpt.load_model(trained, backend="cpu")
    assert meta["step"] == 4 and meta["config"]["d_model"] == 32 and meta["train_args"]["bptt"] == 16
    assert model.decoder.weight is model.encoder.weight and not model.training
    assert not [f for f in os.listdir(trained) if f.endswith(".tmp")]


def test_a_new_epoch_starts_over_at_the_first_row(corpus_file, tmp_path):
    """900 training bytes in 4 streams = 225 rows: the walk wraps to row 0 (and drops the
    carried state) once fewer than two rows are left, as SHA-RNN's epoch loop does."""
    out = str(tmp_path / "epochs")
    assert main(["train", "--data", corpus_file, "--max-bytes", "1000", "--steps", "20", "--out", out,
                 "--eval-every", "0", *SMALL]) == 0
    steps = [r for r in read_log(out) if "loss" in r]
    epochs = [r["epoch"] for r in steps]
    assert epochs[0] == 0 and epochs[-1] == 1 and epochs == sorted(epochs)
    first = sum(r["seq_len"] for r in steps if r["epoch"] == 0)
    assert 225 - 2 <= first <= 225 - 1  # the first epoch ended with fewer than 2 rows left
    rows = sum(r["seq_len"] for r in steps if r["epoch"] == 1)
    trainer = ckpt.load_trainer_state(out, ckpt.read_meta(out))
    assert (trainer["epoch"], trainer["row"]) == (1, rows)


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_resume_continues_the_same_run_bitwise(corpus_file, tmp_path, optimizer):
    """N + M steps in one go == N steps, then --resume for M more: every per-step loss equal
    in fp32 (dropout on, so the RNG, data position, optimizer and carried memory all count)."""
    args = ["--data", corpus_file, "--optimizer", optimizer, "--eval-every", "3", *SMALL]
    assert main(["train", "--steps", "7", "--out", str(tmp_path / "once"), *args]) == 0
    assert main(["train", "--steps", "3", "--out", str(tmp_path / "split"), *args]) == 0
    trainer = ckpt.load_trainer_state(str(tmp_path / "split"), ckpt.read_meta(str(tmp_path / "split")))
    assert trainer["carried"]["mems"][0].shape[1] == 4  # the memory of all 4 streams is saved
    assert main(["train", "--steps", "7", "--out", str(tmp_path / "split"), "--resume", "--no-progress"]) == 0
    once, split = step_losses(str(tmp_path / "once")), step_losses(str(tmp_path / "split"))
    assert [s for s, _ in split] == list(range(1, 8))
    assert split == once
    a, _ = ckpt.load_model(str(tmp_path / "once"))
    b, _ = ckpt.load_model(str(tmp_path / "split"))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_bf16_autocast_trains_close_to_fp32(corpus_file, tmp_path, trained):
    assert main(["train", "--data", corpus_file, "--steps", "2", "--out", str(tmp_path / "bf16"), "--bf16",
                 "--eval-every", "2", *SMALL]) == 0
    bf16, fp32 = step_losses(str(tmp_path / "bf16")), step_losses(trained)[:2]
    assert all(math.isfinite(x) for _, x in bf16) and bf16 != fp32
    for (_, low), (_, full) in zip(bf16, fp32):  # same init, data and dropout draws
        assert low == pytest.approx(full, rel=2e-2)
    assert ckpt.read_meta(str(tmp_path / "bf16"))["train_args"]["bf16"] is True


def test_train_on_the_default_corpus_then_eval_and_sample_end_to_end(tmp_path):
    out = str(tmp_path / "run")
    small = [a for a in SMALL if a != "--no-progress"]
    done = cli("train", "--max-bytes", "30000", "--steps", "3", "--out", out, "--eval-bytes", "400", *small)
    assert done.returncode == 0, done.stderr
    assert "standard library" in done.stdout
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("done: step 3") and "valid bpc" in summary
    evaluated = cli("eval", "--checkpoint", out, "--split", "test", "--max-bytes", "300", "--backend", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr
    line = evaluated.stdout.strip()
    assert line.startswith("test bpc ") and "nats" in line and "(" in line
    bpc, loss = float(line.split()[2]), float(line.split("loss ")[1].split()[0])
    assert bpc == pytest.approx(loss / math.log(2), abs=2e-4) and 0 < bpc < 9
    sampled = cli("sample", "--checkpoint", out, "--prompt", "def ", "--length", "40", "--seed", "3",
                  "--backend", "cpu")
    assert sampled.returncode == 0, sampled.stderr
    again = cli("sample", "--checkpoint", out, "--prompt", "def ", "--length", "40", "--seed", "3",
                "--backend", "cpu")
    assert sampled.stdout == again.stdout and sampled.stdout.endswith("\n")


def test_ctrl_c_saves_a_checkpoint_that_resumes(corpus_file, tmp_path):
    out = str(tmp_path / "interrupted")
    args = ["--data", corpus_file, "--eval-every", "0", *SMALL]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "attnfast", "train", "--steps", "100000", "--out", out, *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = os.path.join(out, "log.jsonl")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(log) and sum(1 for _ in open(log)) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stderr and "Traceback" not in stderr
    stopped = ckpt.read_meta(out)["step"]
    assert stopped >= 3 and [s for s, _ in step_losses(out)] == list(range(1, stopped + 1))
    assert main(["train", "--steps", str(stopped + 2), "--out", out, "--resume"]) == 0
    assert main(["train", "--steps", str(stopped + 2), "--out", str(tmp_path / "straight"), *args]) == 0
    assert step_losses(out) == step_losses(str(tmp_path / "straight"))


# ----------------------------------------------------------------------------- eval

def test_eval_prints_bpc_and_is_deterministic(trained, capsys):
    assert main(["eval", "--checkpoint", trained, "--backend", "cpu", "--no-progress", "--batch-size", "2"]) == 0
    first = capsys.readouterr().out.strip()
    assert first.startswith("valid bpc ") and "nats" in first and "598 bytes" in first  # 299 rows x 2
    assert main(["eval", "--checkpoint", trained, "--backend", "cpu", "--no-progress", "--batch-size", "2"]) == 0
    assert capsys.readouterr().out.strip() == first
    # the training log's final valid record is the same evaluation (valid split, 2 streams, bptt 16)
    assert float(first.split()[2]) == pytest.approx(read_log(trained)[-1]["valid_bpc"], abs=1e-4)


def test_eval_carries_memory_and_hidden_state(trained, corpus_file):
    model, _ = ckpt.load_model(trained, backend="cpu")
    data = load_corpus(corpus_file).valid
    carried = evaluate(model, data, batch_size=2, bptt=8)
    reset = evaluate(model, data, batch_size=2, bptt=8, carry=False)
    assert carried.bytes == reset.bytes == 598
    assert abs(carried.loss - reset.loss) > 1e-4
    # The same walk by hand: with the state carried it is what evaluate computes; dropping only
    # the attention memory between segments changes the result, so the memory is carried too.
    streams = batchify(data, 2)

    def walk(keep_memory: bool) -> float:
        total, state = 0.0, None
        with torch.no_grad():
            for start in range(0, streams.shape[0] - 1, 8):
                inputs, targets = segment(streams, start, 8)
                logits, state = model(inputs, state)
                total += torch.nn.functional.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1),
                                                           reduction="sum").double().item()
                if not keep_memory:
                    state = SHARNNState(state.hidden, [None] * len(state.mems))
        return total / carried.bytes

    assert walk(True) == pytest.approx(carried.loss, rel=1e-12)
    assert abs(walk(False) - carried.loss) > 1e-5
    assert model.config.uses_attention(0) and not model.training


# ----------------------------------------------------------------------------- sample

def test_sample_length_seed_and_carried_state(trained):
    model, _ = ckpt.load_model(trained, backend="cpu")
    a = generate(model, b"def ", 25, seed=1)
    assert isinstance(a, bytes) and len(a) == 25
    assert generate(model, b"def ", 25, seed=1) == a
    assert generate(model, b"def ", 25, seed=2) != a
    assert len(generate(model, b"", 3, seed=0)) == 3
    greedy = generate(model, b"def ", 12, temperature=0)
    assert generate(model, b"def ", 12, top_k=1, seed=5) == greedy  # top-1 sampling is greedy
    # Incremental decoding with the carried state = the whole text run as one segment.
    text = b"def " + greedy
    with torch.no_grad():
        logits, _ = model(torch.tensor(list(text[:-1])).view(-1, 1))
    assert bytes(logits[3:, 0].argmax(-1).tolist()) == greedy


def test_sample_cli_prints_the_text(trained, capsysbinary):
    assert main(["sample", "--checkpoint", trained, "--length", "30", "--seed", "4", "--backend", "cpu",
                 "--prompt", "import", "--echo-prompt"]) == 0
    out = capsysbinary.readouterr().out.decode("utf-8")
    model, _ = ckpt.load_model(trained, backend="cpu")
    expected = (b"import" + generate(model, b"import", 30, seed=4)).decode("utf-8", errors="replace")
    assert out == expected + "\n"


# ----------------------------------------------------------------------------- errors

def _fails(argv, capsys, *phrases):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("attnfast "), err
    for phrase in phrases:
        assert phrase in err, err
    return err


@pytest.mark.parametrize("extra, phrase", [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--bptt", "-3"], "--bptt must be >= 1"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--clip", "-0.5"], "--clip must be >= 0"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--eval-bytes", "0"], "--eval-bytes must be >= 1"),
    (["--max-bytes", "5"], "--max-bytes must be >= 20"),
    (["--d-ff", "16"], "d_ff must be >= d_model"),
    (["--dropout", "1.5"], "dropout must be in [0, 1)"),
    (["--batch-size", "6000"], "too short for 6000 streams"),
    (["--eval-batch-size", "500"], "too short for --eval-batch-size 500"),
    (["--backend", "foo"], "--backend must be auto or one of reference, cpu"),
])
def test_train_rejects_bad_arguments(corpus_file, tmp_path, capsys, extra, phrase):
    argv = ["train", "--data", corpus_file, "--steps", "2", "--out", str(tmp_path / "o"), *SMALL, *extra]
    _fails(argv, capsys, phrase)
    assert not os.path.exists(tmp_path / "o" / "config.json")


def test_missing_and_empty_corpus(tmp_path, capsys):
    _fails(["train", "--data", str(tmp_path / "nope.txt"), "--steps", "1", "--out", str(tmp_path / "o")],
           capsys, "nope.txt does not exist")
    (tmp_path / "empty.txt").write_bytes(b"")
    _fails(["train", "--data", str(tmp_path / "empty.txt"), "--steps", "1", "--out", str(tmp_path / "o")],
           capsys, "empty.txt is empty")
    (tmp_path / "short.txt").write_bytes(b"0123456789")
    _fails(["train", "--data", str(tmp_path / "short.txt"), "--steps", "1", "--out", str(tmp_path / "o")],
           capsys, "has 10 bytes; at least 20")
    _fails(["train", "--data", str(tmp_path), "--steps", "1", "--out", str(tmp_path / "o")],
           capsys, "is not a regular file")


def _copy(src: str, dst) -> str:
    os.makedirs(dst)
    for name in os.listdir(src):
        with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
            g.write(f.read())
    return str(dst)


def test_corrupt_checkpoints(trained, tmp_path, capsys):
    _fails(["eval", "--checkpoint", str(tmp_path / "none")], capsys, "does not exist")
    no_config = _copy(trained, tmp_path / "no_config")
    os.remove(os.path.join(no_config, "config.json"))
    _fails(["eval", "--checkpoint", no_config], capsys, "has no config.json")
    _fails(["sample", "--checkpoint", no_config], capsys, "has no config.json")
    bad_json = _copy(trained, tmp_path / "bad_json")
    with open(os.path.join(bad_json, "config.json"), "w") as f:
        f.write('{"step": 4, "conf')
    _fails(["eval", "--checkpoint", bad_json], capsys, "not readable JSON")
    truncated = _copy(trained, tmp_path / "truncated")
    weights = os.path.join(truncated, "model.safetensors")
    os.truncate(weights, os.path.getsize(weights) // 2)
    _fails(["eval", "--checkpoint", truncated], capsys, "corrupt or truncated")
    no_weights = _copy(trained, tmp_path / "no_weights")
    os.remove(os.path.join(no_weights, "model.safetensors"))
    _fails(["eval", "--checkpoint", no_weights], capsys, "has no model.safetensors")
    other = _copy(trained, tmp_path / "other_config")  # weights of d_model 32, config of 48
    meta = json.load(open(os.path.join(other, "config.json")))
    meta["config"]["d_model"] = 48
    json.dump(meta, open(os.path.join(other, "config.json"), "w"))
    _fails(["eval", "--checkpoint", other], capsys, "do not fit the model", "size mismatch")
    mixed = _copy(trained, tmp_path / "mixed")  # config.json of another step than the weights
    meta = json.load(open(os.path.join(mixed, "config.json")))
    meta["step"] = 9
    json.dump(meta, open(os.path.join(mixed, "config.json"), "w"))
    _fails(["eval", "--checkpoint", mixed], capsys, "inconsistent", "step 4", "step 9")


def test_resume_errors(trained, corpus_file, tmp_path, capsys):
    _fails(["train", "--steps", "9", "--out", str(tmp_path / "fresh"), "--resume"], capsys, "holds no checkpoint")
    _fails(["train", "--data", corpus_file, "--steps", "9", "--out", trained, *SMALL], capsys,
           "already holds a checkpoint", "--resume")
    _fails(["train", "--steps", "4", "--out", trained, "--resume"], capsys, "already at step 4")
    _fails(["train", "--steps", "9", "--out", trained, "--resume", "--lr", "0.5"], capsys,
           "--lr 0.5 differs from the checkpoint's 0.002")
    broken = _copy(trained, tmp_path / "broken_trainer")
    os.truncate(os.path.join(broken, "trainer.pt"), 100)
    _fails(["train", "--steps", "9", "--out", broken, "--resume"], capsys, "trainer.pt", "corrupt or truncated")
    other_data = _copy(trained, tmp_path / "other_data")
    (tmp_path / "other.txt").write_bytes(b"x" * 5000)
    _fails(["train", "--steps", "9", "--out", other_data, "--resume", "--data", str(tmp_path / "other.txt")],
           capsys, "--data", "differs from the checkpoint's")


def test_unavailable_backend(trained, capsys):
    from attnfast import dispatch
    missing = [name for name, reason in dispatch.backend_status().items() if reason is not None]
    if not missing:
        pytest.skip("every attnfast backend is available on this machine")
    _fails(["eval", "--checkpoint", trained, "--backend", missing[0]], capsys,
           f"--backend {missing[0]} is unavailable here")


def test_sample_and_eval_argument_errors(trained, capsys):
    _fails(["sample", "--checkpoint", trained, "--top-k", "0"], capsys, "--top-k must be in [1, 256]")
    _fails(["sample", "--checkpoint", trained, "--temperature", "-1"], capsys, "--temperature must be")
    _fails(["sample", "--checkpoint", trained, "--length", "-2"], capsys, "--length must be >= 0")
    _fails(["eval", "--checkpoint", trained, "--max-bytes", "0"], capsys, "--max-bytes must be >= 1")
    _fails(["eval", "--checkpoint", trained, "--batch-size", "1000"], capsys, "too short for 1000 streams")


def test_error_in_a_subprocess_is_one_line_without_traceback(tmp_path):
    done = cli("train", "--data", str(tmp_path / "missing.txt"), "--steps", "1", "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"attnfast train: error: corpus file {tmp_path / 'missing.txt'} does not exist"


def test_inspect_is_registered_lazily(monkeypatch, capsys):
    import attnfast.__main__ as entry
    monkeypatch.setitem(entry.COMMANDS, "inspect", ("attnfast.cli.not_there", "look inside a checkpoint"))
    _fails(["inspect", "--help"], capsys, "'inspect' command is not available", "attnfast.cli.not_there")


def test_inspect_help_when_the_module_exists(capsys):
    import importlib.util
    if importlib.util.find_spec("attnfast.cli.inspect") is None:
        pytest.skip("attnfast/cli/inspect.py is not in this checkout")
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m attnfast inspect" in capsys.readouterr().out
