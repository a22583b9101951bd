"""Processes: the distributed context of one training process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .._utils import resolve_device


@dataclass(frozen=True)
class DistributedInfo:
    """Where this process stands in a (possibly single-process) run.

    Attributes
    ----------
    rank, world_size, local_rank : int
    device : torch.device
        The device this process trains on.
    backend : str or None
        ``"nccl"``/``"gloo"`` when a process group is initialised.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_distributed(self) -> bool:
        """Whether gradients are averaged over several processes."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the process that writes files)."""
        return self.rank == 0


def init_distributed(
    device: str | torch.device | None = "auto", backend: str | None = None
) -> DistributedInfo:
    """Join the process group described by the ``torchrun`` variables.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (defaults 0, 1, 0).
    With more than one process it initialises the default process group
    (unless already done), with NCCL on CUDA and Gloo otherwise.

    Parameters
    ----------
    device : str, torch.device or None, default="auto"
        ``"auto"`` picks ``cuda:LOCAL_RANK`` when CUDA is available, else the
        CPU; ``"cuda"`` without an index also means ``cuda:LOCAL_RANK``.
    backend : str, optional
        Overrides the backend choice.

    Returns
    -------
    info : DistributedInfo
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank = int(os.environ.get("RANK", 0))
        world = int(os.environ.get("WORLD_SIZE", 1))
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    used = None
    if world > 1:
        if not dist.is_initialized():
            used = backend or ("nccl" if dev.type == "cuda" else "gloo")
            dist.init_process_group(used, rank=rank, world_size=world)
        used = dist.get_backend()
    return DistributedInfo(rank, world, local_rank, dev, used)


def is_main_process() -> bool:
    """True unless this is a process of rank > 0 in a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", 0)) == 0
