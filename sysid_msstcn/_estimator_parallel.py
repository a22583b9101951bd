"""Data-parallel training of the estimator: joining the process group.

Used by :class:`~sysid_msstcn.MSSTCNRegressor` through its private
``_ParallelMixin``; see the ``distributed`` parameter.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist

from .distributed import DistributedInfo, init_distributed

# set by torchrun for every worker; together they describe the process group
_TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class _ParallelMixin:
    """The process group of a data-parallel fit (a mixin of the estimator).

    Relies on the ``distributed``, ``device`` and batch size parameters.
    """

    def _data_parallel(self, reset: bool) -> DistributedInfo | None:
        """The process group to train over (joined if needed), or None.

        ``distributed="auto"`` and True use an initialised process group of
        several processes, else the torchrun variables (joining the group
        they describe); True raises when there is neither. A group or a
        torchrun launch of one process trains as a single process.
        """
        if not isinstance(self.distributed, str) and not self.distributed:
            return None
        group = dist.is_available() and dist.is_initialized()
        env = all(k in os.environ for k in _TORCHRUN_VARIABLES)
        if not (group or env):
            if self.distributed == "auto":
                return None
            missing = [k for k in _TORCHRUN_VARIABLES if k not in os.environ]
            raise ValueError(
                "distributed=True, but torch.distributed has no process group "
                f"and the torchrun variables {missing} are not set: launch the "
                "script with `torchrun --nproc_per_node=N`, call "
                "torch.distributed.init_process_group() before fit, or pass "
                "distributed='auto' or False"
            )
        if group:
            world = dist.get_world_size()
        else:
            try:
                world = int(os.environ["WORLD_SIZE"])
            except ValueError as exc:
                raise ValueError(
                    f"WORLD_SIZE must be an int, got {os.environ['WORLD_SIZE']!r}"
                ) from exc
        if world <= 1:
            return None
        bs = int(self._resolved()["batch_size"])
        if bs % world:
            raise ValueError(
                f"batch_size={bs} must be divisible by the number of processes "
                f"({world}) for data-parallel training: batch_size is the global "
                f"batch, and each process trains on batch_size / {world} windows"
            )
        device = self.device if reset else self.device_
        return init_distributed(device)

    def _check_same_on_all_ranks(self, data, info: DistributedInfo, seed: int) -> int:
        """Rank 0's seed, after checking that every process has the same data.

        A collective: every process of the group must call it. Raises the
        same error on every process when the data differ, so none is left
        waiting in a later collective.
        """
        mine = (
            tuple(data.lengths),
            data.n_inputs or 0,
            data.n_outputs,
            float(sum(np.sum(v, dtype=np.float64) for v in data.y)),
            float(sum(np.sum(v, dtype=np.float64) for v in data.u if v is not None)),
            seed,
        )
        everyone: list = [None] * info.world_size
        dist.all_gather_object(everyone, mine)
        key = repr(mine[:-1])  # repr: NaN sums compare equal
        differ = [r for r, theirs in enumerate(everyone) if repr(theirs[:-1]) != key]
        if differ:
            raise ValueError(
                f"data-parallel fit: process {info.rank} and process {differ[0]} "
                "were given different data (lengths, channels or values); every "
                "process must call fit with the same X and y"
            )
        return everyone[0][-1]


def _broadcast(obj, info: DistributedInfo):
    """Rank 0's ``obj`` on every process (a collective)."""
    box = [obj]
    device = info.device if dist.get_backend() == "nccl" else None
    dist.broadcast_object_list(box, src=0, device=device)
    return box[0]


def _cuda_index(dev: torch.device) -> int:
    return torch.cuda.current_device() if dev.index is None else dev.index
