"""Byte-level corpora for the SHA-RNN language model, and SHA-RNN's batching.

A corpus is a byte string split by position into train / valid / test (90% / 5% / 5%; an
enwik8-sized file of exactly 100,000,000 bytes gets enwik8's 90M / 5M / 5M, the same rule at
that size). With no file, the text every Python install carries is used: the standard library's
sources (``.py``) and text files (``.txt``, ``.rst``) under the running interpreter's
``sysconfig.get_paths()["stdlib"]`` (``site-packages`` and ``__pycache__`` left out), read in
sorted path order, so the corpus is the same on every run of the same Python and needs no
download. ``max_bytes`` stops reading once that many bytes are in hand.

Batching follows SHA-RNN: the split becomes B contiguous streams (``batchify``: (N, B), stream
b is bytes [b N, (b + 1) N)), and a training or evaluation segment of length T is rows
[i, i + T) as inputs and [i + 1, i + T + 1) as targets (``segment``).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import sysconfig

import torch

from attnfast.cli import CLIError

ENWIK8_BYTES = 100_000_000
SPLITS = ("train", "valid", "test")
# Each of valid and test takes 1/20 of the corpus (5%), rounded down; train the rest.
_HELD_OUT_DIVISOR = 20
MIN_CORPUS_BYTES = _HELD_OUT_DIVISOR  # so that valid and test get at least one byte
_TEXT_SUFFIXES = (".py", ".txt", ".rst")
_SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__"}


class CorpusError(CLIError):
    """The corpus cannot be read or is too small."""


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The three splits as 1-D ``torch.uint8`` tensors, and where the text came from."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    source: str

    def split(self, name: str) -> torch.Tensor:
        if name not in SPLITS:
            raise CorpusError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        return getattr(self, name)


def _check_max_bytes(max_bytes) -> None:
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)
                                  or max_bytes < MIN_CORPUS_BYTES):
        raise CorpusError(f"max_bytes must be an int >= {MIN_CORPUS_BYTES} (or None for all), "
                          f"got {max_bytes!r}")


def _read_file(path: str, max_bytes: int | None) -> bytes:
    if not os.path.exists(path):
        raise CorpusError(f"corpus file {path} does not exist")
    if not os.path.isfile(path):
        raise CorpusError(f"corpus file {path} is not a regular file")
    try:
        with open(path, "rb") as f:
            return f.read() if max_bytes is None else f.read(max_bytes)
    except OSError as e:
        raise CorpusError(f"cannot read corpus file {path}: {e.strerror or e}") from None


def stdlib_text_files(root: str | None = None) -> list[str]:
    """The default corpus's files, in the sorted order they are concatenated."""
    root = root or sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(_TEXT_SUFFIXES))
    return files


def _read_stdlib(max_bytes: int | None) -> tuple[bytes, str]:
    root = sysconfig.get_paths()["stdlib"]
    parts, total, used = [], 0, 0
    for path in stdlib_text_files(root):
        if max_bytes is not None and total >= max_bytes:
            break
        try:
            with open(path, "rb") as f:
                chunk = f.read() if max_bytes is None else f.read(max_bytes - total)
        except OSError:
            continue  # an unreadable file is skipped; the order of the rest is unchanged
        parts.append(chunk)
        total += len(chunk)
        used += 1
    version = ".".join(map(str, sys.version_info[:3]))
    return b"".join(parts), f"Python {version} standard library at {root} ({used} files)"


def split_sizes(n: int) -> tuple[int, int, int]:
    """(train, valid, test) sizes of a corpus of ``n`` bytes."""
    held_out = n // _HELD_OUT_DIVISOR  # 5M each for enwik8's 100M
    return n - 2 * held_out, held_out, held_out


def load_corpus(path: str | None = None, max_bytes: int | None = None) -> Corpus:
    """The byte corpus at ``path`` (or the default standard-library corpus), at most
    ``max_bytes`` long, split 90/5/5 by position."""
    _check_max_bytes(max_bytes)
    if path is None:
        data, source = _read_stdlib(max_bytes)
        what = "the default corpus (Python's standard library)"
    else:
        path = os.fspath(path)
        data = _read_file(path, max_bytes)
        full = os.path.getsize(path)
        kind = ", enwik8's 90M/5M/5M split" if full == ENWIK8_BYTES and len(data) == full else ""
        source = f"file {os.path.abspath(path)}{kind}"
        what = f"corpus file {path}"
    if not data:
        raise CorpusError(f"{what} is empty")
    if len(data) < MIN_CORPUS_BYTES:
        raise CorpusError(f"{what} has {len(data)} bytes; at least {MIN_CORPUS_BYTES} are needed "
                          "to split it 90/5/5 into train/valid/test")
    n_train, n_valid, _ = split_sizes(len(data))
    everything = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    train, valid, test = everything.split([n_train, n_valid, len(data) - n_train - n_valid])
    return Corpus(train, valid, test, f"{source}: {len(data)} bytes "
                                      f"(train {n_train}, valid {n_valid}, test {len(test)})")


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """SHA-RNN's batchify: (N, B) with column b the contiguous stream data[b N : (b + 1) N]
    (the tail that does not fill a row is dropped). Kept as uint8; ``segment`` widens."""
    if batch_size < 1:
        raise CorpusError(f"batch_size must be >= 1, got {batch_size}")
    rows = data.numel() // batch_size
    if rows < 2:
        raise CorpusError(f"a split of {data.numel()} bytes is too short for {batch_size} streams "
                          f"(each needs at least 2 bytes: an input and its target)")
    return data[: rows * batch_size].view(batch_size, rows).t().contiguous()


def segment(streams: torch.Tensor, start: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs rows [start, start + T) and targets rows [start + 1, start + T + 1) of the
    (N, B) streams, T = min(seq_len, N - 1 - start), as int64 (T, B)."""
    length = min(seq_len, streams.shape[0] - 1 - start)
    inputs = streams[start: start + length].long()
    targets = streams[start + 1: start + 1 + length].long()
    return inputs, targets
