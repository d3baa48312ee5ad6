"""``torchrun --nproc_per_node=2 -m attnfast train``: DDP and FSDP2 (gloo on the CPU) against
one process, and their checkpoints loaded, evaluated and resumed in one process.

Each rank takes half of the B streams of every batch, so with dropout 0 the two-process run
computes the one-process step up to the order of fp32 sums (gradient all-reduce, loss mean over
ranks). Measured here: per-step losses within ~1e-7 relative of one process for both DDP and
FSDP2; asserted at 1e-5. Models are tiny (d_model 32) and runs short (4 steps).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from attnfast.__main__ import main
from attnfast.cli import checkpoint as ckpt
from attnfast.cli.data import load_corpus
from attnfast.cli.evaluate import evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = ["--d-model", "32", "--d-ff", "64", "--max-memory", "40", "--batch-size", "4", "--bptt", "16",
       "--warmup", "2", "--eval-batch-size", "2", "--eval-every", "2", "--backend", "cpu", "--no-progress",
       "--dropout", "0", "--dropouth", "0", "--dropouti", "0"]
REL_TOL = 1e-5

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="torch.distributed with the gloo backend is not available"),
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module")
def one_process(corpus_file, tmp_path_factory):
    """The baseline: 6 steps in one process (the 2-process runs do 4, then resume to 6)."""
    out = str(tmp_path_factory.mktemp("single") / "run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--data", corpus_file, "--steps", "6", "--out", out, *RUN]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def torchrun(*args, timeout=400):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "attnfast", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def log(out: str) -> list[dict]:
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def losses(out: str) -> list[float]:
    return [r["loss"] for r in log(out) if "loss" in r]


def assert_close_rel(actual: list[float], expected: list[float], what: str):
    assert len(actual) == len(expected), what
    worst = max(abs(a - e) / abs(e) for a, e in zip(actual, expected))
    assert worst <= REL_TOL, f"{what}: worst relative difference {worst:.2e} > {REL_TOL:.0e}"


@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_two_processes_match_one_and_their_checkpoint_works_in_one(mode, corpus_file, one_process, tmp_path):
    out = str(tmp_path / mode)
    done = torchrun("train", "--data", corpus_file, "--steps", "4", "--out", out, *RUN,
                    *(["--fsdp"] if mode == "fsdp2" else []))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"2 processes ({'FSDP2' if mode == 'fsdp2' else 'DDP'})" in done.stdout
    assert done.stdout.count("done: step 4") == 1  # only rank 0 prints

    # Per-step losses (mean over ranks) = one process's, and they decrease (the smoke test).
    two = losses(out)
    assert all(math.isfinite(x) for x in two) and two[-1] < two[0]
    assert_close_rel(two, losses(one_process)[:4], f"{mode} vs one process, per-step loss")
    valid = [r["valid_bpc"] for r in log(out) if "valid_bpc" in r]
    assert_close_rel(valid, [r["valid_bpc"] for r in log(one_process) if "valid_bpc" in r][:2],
                     f"{mode} vs one process, valid bpc")

    # The checkpoint (written by rank 0 alone) loads and evaluates in one process ...
    meta = ckpt.read_meta(out)
    assert meta["step"] == 4 and meta["world_size"] == 2 and meta["parallel"] == mode
    model, _ = ckpt.load_model(out, backend="cpu")
    result = evaluate(model, load_corpus(corpus_file).valid, batch_size=2, bptt=16)
    assert result.bpc == pytest.approx(valid[-1], rel=REL_TOL)
    # ... and resumes there: steps 5 and 6 as the one-process run made them.
    assert main(["train", "--steps", "6", "--out", out, "--resume"]) == 0
    assert_close_rel(losses(out), losses(one_process), f"{mode} checkpoint resumed in one process")


def test_batch_must_split_over_the_processes(corpus_file, tmp_path):
    done = torchrun("train", "--data", corpus_file, "--steps", "2", "--out", str(tmp_path / "o"),
                    *RUN, "--batch-size", "3")
    assert done.returncode != 0
    assert "attnfast train: error: --batch-size 3 must be a multiple of the 2 processes" in done.stderr
