"""Data-parallel training for ``python -m attnfast train``: DDP or FSDP2 under ``torchrun``.

``torchrun --nproc_per_node=N -m attnfast train ...`` sets WORLD_SIZE / RANK / LOCAL_RANK;
:func:`setup` then joins the process group (gloo on CPU, nccl on CUDA). Every rank reads the
same corpus and draws the same sequence lengths; rank r takes streams [r B/N, (r + 1) B/N) of
every (T, B) batch, so the global batch is one process's with the same ``--batch-size``. Each
rank's loss is the mean over its equal share of tokens, and DDP / FSDP2 average gradients
over ranks, so the gradient is the one-process gradient up to the order of the fp32 sums.

Checkpoints stay independent of the world size: weights and optimizer state are gathered as
full (unsharded) state dicts keyed by parameter name, and the carried hidden state and memory
are gathered along the batch dimension, so a run saved by N ranks loads, evaluates and resumes
in one process and vice versa. Only rank 0 writes.
"""
from __future__ import annotations

import dataclasses
import os
import warnings

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict,
                                                     set_optimizer_state_dict)

from attnfast.cli import CLIError

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
# strict=False: parameters SHA-RNN keeps but never uses (lnout, the attention's qkvs and r_gate)
# get no gradient, hence no optimizer state in the saved dict.
_FULL_LOAD = StateDictOptions(full_state_dict=True, strict=False)


@dataclasses.dataclass(frozen=True)
class Distributed:
    """Where this process stands: ``world_size`` 1 and ``rank`` 0 when not under torchrun."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_streams(self, batch_size: int) -> slice:
        """This rank's columns of a (T, batch_size) batch."""
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise CLIError(f"environment variable {name} must be an integer, got {value!r}") from None


def setup(requested_device: str | None) -> tuple[Distributed, torch.device]:
    """This process's place and device; joins the process group (gloo on CPU, nccl on CUDA)
    when launched by torchrun with more than one process. The device is ``requested_device``
    (cpu / cuda; by default cuda when present), under torchrun on CUDA the rank's local GPU."""
    kind = requested_device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind not in ("cpu", "cuda"):
        raise CLIError(f"--device must be cpu or cuda, got {requested_device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is available")
    world = _env_int("WORLD_SIZE", 1)
    ctx = Distributed(world, _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)) if world > 1 else Distributed()
    if kind == "cpu":
        device = torch.device("cpu")
    else:
        device = torch.device("cuda", ctx.local_rank if ctx.enabled else torch.cuda.current_device())
        torch.cuda.set_device(device)
    if ctx.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo",
                                device_id=device if kind == "cuda" else None)
    return ctx, device


def teardown(ctx: Distributed) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ctx: Distributed, fsdp: bool) -> torch.nn.Module:
    """The module that runs the training forward: ``model`` itself (one process), DDP around
    it, or ``model`` sharded in place by FSDP2 (each block, then the root: embedding/decoder)."""
    if not ctx.enabled:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        # FSDP2 warns that a block returns views (the LSTM's (h, c) slices); the model never
        # modifies them in place.
        warnings.filterwarnings("ignore", message=".*returned a view tensor.*")
        return model
    from torch.nn.parallel import DistributedDataParallel
    device_ids = [model.encoder.weight.device.index] if model.encoder.weight.is_cuda else None
    # find_unused_parameters: SHA-RNN's lnout, qkvs and r_gate never receive a gradient.
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def full_model_state(model: torch.nn.Module) -> dict:
    """Every parameter and buffer, unsharded, on the CPU (a collective under FSDP2)."""
    return get_model_state_dict(model, options=_FULL)


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed by parameter name, unsharded, on the CPU (collective)."""
    return get_optimizer_state_dict(model, optimizer, options=_FULL)


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a :func:`full_optimizer_state` into a fresh optimizer (sharding it under FSDP2)."""
    set_optimizer_state_dict(model, optimizer, state, options=_FULL_LOAD)


def mean_over_ranks(values: torch.Tensor, ctx: Distributed) -> torch.Tensor:
    """Element-wise mean of a small float64 tensor over ranks."""
    if not ctx.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / ctx.world_size


def sum_over_ranks(values: torch.Tensor, ctx: Distributed) -> torch.Tensor:
    if not ctx.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values


def gather_streams(t: torch.Tensor, ctx: Distributed, dim: int = 1) -> torch.Tensor:
    """Concatenate every rank's share of the streams along ``dim`` (rank order)."""
    if not ctx.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(ctx.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=dim)


def barrier(ctx: Distributed) -> None:
    if ctx.enabled:
        dist.barrier()
