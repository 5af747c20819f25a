"""torchrun integration: process group, device, model wrapping (DDP or FSDP2), gathering.

The model code knows nothing of this module; swapping DDP for FSDP2 touches only
:func:`wrap_model`. Under ``torchrun`` the environment gives RANK / WORLD_SIZE / LOCAL_RANK;
without it everything runs as a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


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
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Runtime(rank, world, local, dev)


def shutdown(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
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
