r"""Scale-out training: data parallelism, checkpoints, resume, mixed precision.

One process per device, launched with ``torchrun`` (or as a plain single
process). Every process builds the same model, reads its own shard of the
data (:class:`~torch.utils.data.distributed.DistributedSampler`), and the
gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel`. Rank 0 alone writes
checkpoints and the log.

The training step never waits for the device:

* the learning rate and the free-bits threshold are computed on the device
  from a device-side count of skipped steps, so they follow
  :class:`~sysid_msstcn.training.Trainer` exactly (both are functions of the
  number of optimiser steps *taken*);
* a step whose loss or gradient norm is not finite is skipped on the device:
  the fused Adam kernel reads a ``found_inf`` flag (the mechanism
  :class:`torch.amp.GradScaler` uses) and leaves weights, moments and step
  count untouched; with several processes the flag is all-reduced so that
  every rank skips the same steps;
* loss terms are summed on the device and read only every ``log_every``
  steps, at checkpoints and at the end.

Mixed precision is bf16 autocast on CUDA. The 1x1 convolutions that produce
distribution parameters (prior, posterior, output head) run in float32
(:func:`float32_heads`), so the log-likelihood and the KL are computed from
float32 parameters.

Randomness is reproducible and resumable: before every optimiser step the
global generator is reseeded from ``(seed, step, rank)``, so a resumed run
draws the same posterior noise as an uninterrupted one. With
``sample_noise=True`` each sequence's noise is instead drawn from
``(seed, step, sample index)``, which makes a run independent of the number
of processes and of the gradient-accumulation split (used by the tests).

Launch (4 GPUs on one machine)::

    torchrun --nproc_per_node=4 -m sysid_msstcn.distributed \
        --preset blizzard_fw2 --data /path/to/blizzard/audio \
        --cache-dir /path/to/clip-cache --batch-size 32 \
        --checkpoint-dir runs/fw2 --mixed-precision --compile

and ``--resume`` to continue a killed run from its last checkpoint.
"""

from __future__ import annotations

from ._checkpoint import latest_checkpoint, load_latest_checkpoint, save_checkpoint
from ._common import CHECKPOINT_FORMAT
from ._data import collate_batch, synthetic_dataset
from ._entry import main
from ._process import DistributedInfo, init_distributed, is_main_process
from ._run import TrainingResult, TrainingRun, fit_distributed
from ._step import TrainStep, float32_heads

__all__ = [
    "CHECKPOINT_FORMAT",
    "DistributedInfo",
    "TrainStep",
    "TrainingResult",
    "TrainingRun",
    "collate_batch",
    "fit_distributed",
    "float32_heads",
    "init_distributed",
    "is_main_process",
    "latest_checkpoint",
    "load_latest_checkpoint",
    "main",
    "save_checkpoint",
    "synthetic_dataset",
]
