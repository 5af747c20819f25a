"""torchrun integration: process group, device, model wrapping (DDP or FSDP2), gathering.

The model code knows nothing of this module; swapping DDP for FSDP2 touches only
:func:`wrap_model`. Under ``torchrun`` the environment gives RANK / WORLD_SIZE / LOCAL_RANK;
without it everything runs as a single process.

Checkpoints hold full tensors whatever the parallelism: :func:`gather_model` and
:func:`gather_optimizer_state` (called by every rank) hand the main process a plain CPU model
and an optimiser state keyed by parameter name, and :func:`load_optimizer_state` shards such a
state back over the ranks, so a run saved under FSDP resumes under DDP, or on one process, and
the other way round.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..devices import resolve_device
from ..errors import CheckpointError
from ..models import ViViT


@dataclass
class Runtime:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_runtime(device: str | None = None) -> Runtime:
    """Join the process group when launched by torchrun (nccl on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, default=f"cuda:{local}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Runtime(rank, world, local, dev)


def shutdown(rt: Runtime) -> None:
    """Leave the process group together: a rank that destroys its gloo group while another is still
    talking to it aborts the process ("terminate called without an active exception")."""
    if rt.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap_model(model: nn.Module, rt: Runtime, parallel: str = "ddp") -> nn.Module:
    """DDP replicates the model; FSDP2 shards every transformer block and the rest (for L/H)."""
    if not rt.distributed:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        from ..models.blocks import Block, FactorisedSelfAttentionBlock
        for m in model.modules():
            if isinstance(m, (Block, FactorisedSelfAttentionBlock)):
                fully_shard(m)
        return fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def is_sharded(wrapped: nn.Module) -> bool:
    """Whether ``wrapped`` is sharded by FSDP2 (its parameters are DTensor shards)."""
    from torch.distributed.fsdp import FSDPModule
    return isinstance(wrapped, FSDPModule)


# torch.distributed.checkpoint is imported where used: it adds seconds to every `tubelet` command.
def _full_on_main():
    """Full tensors, offloaded to the CPU of the main process only (the other ranks get nothing)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _full_everywhere():
    """A full state given on every rank, each keeping its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True)


def gather_model(wrapped: nn.Module, model: ViViT, rt: Runtime) -> ViViT | None:
    """The whole model as a plain CPU :class:`ViViT` on the main process, None on the others.

    Collective: every rank calls it. Under FSDP the shards are all-gathered into a new model
    (same config, ``model.info`` kept); under DDP or on one process ``model`` itself is returned
    when it is on the CPU, a CPU copy otherwise.
    """
    if is_sharded(wrapped):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict
        full = get_model_state_dict(wrapped, options=_full_on_main())
    elif not rt.is_main:
        return None
    elif all(t.device.type == "cpu" for t in model.state_dict().values()):
        return model
    else:
        full = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if not rt.is_main:
        return None
    with torch.device("meta"):  # no weights drawn (nor the RNG touched) only to be overwritten
        gathered = ViViT(model.config)
    gathered.load_state_dict(full, assign=True)
    gathered.info = model.info
    return gathered.train(model.training)


def load_model_state(wrapped: nn.Module, state: dict[str, torch.Tensor], rt: Runtime) -> None:
    """Load full weights (given on every rank) into a plain, DDP or FSDP-sharded model, each rank
    keeping its shard: e.g. the EMA copy of a run resumed under FSDP."""
    if is_sharded(wrapped):
        from torch.distributed.checkpoint.state_dict import set_model_state_dict
        set_model_state_dict(wrapped, state, options=_full_everywhere())
    else:
        unwrap(wrapped).load_state_dict(state)


def gather_optimizer_state(wrapped: nn.Module, optimizer: torch.optim.Optimizer,
                           rt: Runtime) -> dict[str, Any] | None:
    """The optimiser's full state on the main process (CPU tensors), None on the others.

    Collective. The state is keyed by parameter name (``blocks.0.mlp.fc1.weight``), not by
    position, with full (unsharded) momentum / moment tensors, so :func:`load_optimizer_state`
    restores it under any parallelism and process count.
    """
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    state = get_optimizer_state_dict(wrapped, optimizer, options=_full_on_main())
    return state if rt.is_main else None


def load_optimizer_state(wrapped: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                         rt: Runtime) -> None:
    """Restore a state of :func:`gather_optimizer_state` (given on every rank), each rank keeping
    its shard. A state keyed by position (``optimizer.state_dict()``, older runs) loads too,
    except into a sharded model."""
    by_position = all(isinstance(k, int) for k in state.get("state", {}))
    if not by_position:
        _check_names(unwrap(wrapped), optimizer, state)
    if not is_sharded(wrapped) or not state.get("state"):
        # the optimiser maps the saved groups' parameter keys (names or positions) onto its own, in order
        optimizer.load_state_dict(state)
    elif by_position:
        raise CheckpointError(
            "this checkpoint's optimiser state was saved by parameter position, not name, and cannot "
            "be sharded: resume it with --parallel ddp (or on one process), then FSDP from there")
    else:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
        set_optimizer_state_dict(wrapped, optimizer, state, options=_full_everywhere())


def _check_names(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """The saved groups name the optimiser's parameters, in its order (they are matched by position)."""
    names = {p: n for n, p in model.named_parameters()}
    ours = [[names.get(p) for p in g["params"]] for g in optimizer.param_groups]
    saved = [list(g["params"]) for g in state.get("param_groups", [])]
    if ours != saved:
        diff = next(((a, b) for x, y in zip(ours, saved) for a, b in zip(x, y) if a != b),
                    (sum(map(len, ours)), sum(map(len, saved))))
        raise CheckpointError(f"the checkpoint's optimiser state does not fit this model's parameters (first "
                              f"difference: {diff[0]!r} here, {diff[1]!r} saved): resume with the run's own "
                              "model config, or start a new run with --init")


def gather_objects(obj, rt: Runtime) -> list:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not rt.distributed:
        return [obj]
    out = [None] * rt.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(value: float, rt: Runtime) -> float:
    if not rt.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=rt.device if rt.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.item() / rt.world_size


def barrier(rt: Runtime) -> None:
    if rt.distributed:
        dist.barrier()
