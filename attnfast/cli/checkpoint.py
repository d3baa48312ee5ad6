"""Checkpoint directories of the SHA-RNN language model.

A checkpoint directory holds:
  model.safetensors  the weights (``safetensors.torch.save_model``: the tied embedding/decoder
                     weight is stored once); its metadata records the step
  trainer.pt         what ``--resume`` needs to continue the same run: optimizer state, step,
                     RNG states, data position, the carried hidden state and memory
  config.json        the model config, the step, the training arguments and the corpus
                     fingerprint; written last, it is the save's commit record

Saving is atomic per file (a temporary file in the same directory, then ``os.replace``): all
temporary files are written first (the slow part), then renamed one after another, config.json
last. A save cut short therefore never leaves a partial file, and the loader checks that the
weights and trainer state carry config.json's step, so a set mixed from two saves is refused.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model as _load_weights_file
from safetensors.torch import safe_open
from safetensors.torch import save_model as _save_weights_file

from attnfast.cli import CLIError
from attnfast.models.sharnn import SHARNN, SHARNNConfig

FORMAT = "attnfast-sharnn/1"
WEIGHTS_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"
CONFIG_FILE = "config.json"


_UMASK = os.umask(0o022)
os.umask(_UMASK)


class CheckpointError(CLIError):
    """A checkpoint directory that is missing, corrupt, or does not fit the model."""


@contextlib.contextmanager
def temporary_beside(final_path: str):
    """A fresh temporary path in ``final_path``'s directory (same filesystem, so the rename
    is atomic); removed if the block fails."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(final_path)}.", suffix=".tmp",
                               dir=os.path.dirname(final_path) or ".")
    os.close(fd)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def commit(tmp: str, final_path: str) -> None:
    """Move a finished temporary file into place (atomically), with the usual file mode
    (mkstemp makes it 0600)."""
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, final_path)


def atomic_write_text(path: str, text: str) -> None:
    with temporary_beside(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        commit(tmp, path)


def save_checkpoint(directory: str, model: SHARNN, meta: dict, trainer_state: dict | None = None) -> None:
    """Write ``model`` (a plain, unwrapped SHARNN on any device), ``meta`` (must hold "step";
    "config" and "format" are filled in) and, for training, ``trainer_state``."""
    os.makedirs(directory, exist_ok=True)
    step = int(meta["step"])
    meta = {**meta, "format": FORMAT, "config": dataclasses.asdict(model.config)}
    paths = {name: os.path.join(directory, name) for name in (WEIGHTS_FILE, TRAINER_FILE, CONFIG_FILE)}
    with contextlib.ExitStack() as stack:
        tmp = {name: stack.enter_context(temporary_beside(path)) for name, path in paths.items()}
        _save_weights_file(model, tmp[WEIGHTS_FILE], metadata={"format": FORMAT, "step": str(step)})
        if trainer_state is not None:
            torch.save({**trainer_state, "step": step}, tmp[TRAINER_FILE])
        with open(tmp[CONFIG_FILE], "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        commit(tmp[WEIGHTS_FILE], paths[WEIGHTS_FILE])
        if trainer_state is not None:
            commit(tmp[TRAINER_FILE], paths[TRAINER_FILE])
        else:
            os.remove(tmp[TRAINER_FILE])
        commit(tmp[CONFIG_FILE], paths[CONFIG_FILE])


def read_meta(checkpoint_dir: str) -> dict:
    """config.json of a checkpoint directory, checked for the fields every command needs."""
    if not os.path.isdir(checkpoint_dir):
        raise CheckpointError(f"checkpoint directory {checkpoint_dir} does not exist")
    path = os.path.join(checkpoint_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {checkpoint_dir} has no {CONFIG_FILE} (not a checkpoint "
                              "directory, or training has not saved one yet)")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is not readable JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an attnfast checkpoint "
                              f"(format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                              f"expected {FORMAT!r})")
    if not isinstance(meta.get("step"), int) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"checkpoint {path} lacks an integer 'step' or a 'config' object")
    return meta


def config_from_meta(meta: dict, where: str = "checkpoint") -> SHARNNConfig:
    try:
        return SHARNNConfig(**meta["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where} has an invalid model config: {e}") from None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def load_weights(model: SHARNN, checkpoint_dir: str, meta: dict, device="cpu") -> None:
    """Load the checkpoint's weights into ``model`` (strict: every parameter, same shapes)."""
    path = os.path.join(checkpoint_dir, WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {checkpoint_dir} has no {WEIGHTS_FILE}")
    try:
        with safe_open(path, framework="pt") as f:
            saved_step = (f.metadata() or {}).get("step")
        _load_weights_file(model, path, strict=True, device=str(device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint weights {path} are corrupt or truncated: {_one_line(e)}") from None
    except RuntimeError as e:  # missing/unexpected keys or shape mismatches from load_state_dict
        raise CheckpointError(f"checkpoint weights {path} do not fit the model of its {CONFIG_FILE} "
                              f"({_one_line(e)[:300]})") from None
    if saved_step != str(meta["step"]):
        raise CheckpointError(f"checkpoint {checkpoint_dir} is inconsistent: {WEIGHTS_FILE} is from "
                              f"step {saved_step}, {CONFIG_FILE} from step {meta['step']}")


def load_model(checkpoint_dir: str, backend: str | None = None, map_location="cpu") -> tuple[SHARNN, dict]:
    """The SHARNN of a checkpoint directory (in eval mode, on ``map_location``) and its
    config.json contents (``meta``: "config", "step", and for trained models "train_args")."""
    meta = read_meta(checkpoint_dir)
    config = config_from_meta(meta, f"checkpoint {checkpoint_dir}")
    model = SHARNN(config, backend=backend).to(map_location)
    load_weights(model, checkpoint_dir, meta, device=map_location)
    return model.eval(), meta


def load_trainer_state(checkpoint_dir: str, meta: dict, map_location="cpu") -> dict:
    """trainer.pt of a checkpoint directory (the state ``--resume`` continues from)."""
    path = os.path.join(checkpoint_dir, TRAINER_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {checkpoint_dir} has no {TRAINER_FILE}, so it cannot be "
                              "resumed")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load raises many kinds (pickle, zip, EOF) on a bad file
        raise CheckpointError(f"trainer state {path} is corrupt or truncated: {_one_line(e)[:300]}") from None
    if not isinstance(state, dict) or state.get("step") != meta["step"]:
        raise CheckpointError(f"checkpoint {checkpoint_dir} is inconsistent: {TRAINER_FILE} is from "
                              f"step {state.get('step') if isinstance(state, dict) else None}, "
                              f"{CONFIG_FILE} from step {meta['step']}")
    return state
