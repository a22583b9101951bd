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

import argparse
import contextlib
import json
import logging
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torch.utils.data.distributed import DistributedSampler

from ._utils import resolve_device
from .config import NetworkConfig, TrainConfig, config_from_dict
from .model import MSSTCN
from .objectives import elbo_terms
from .training import Trainer, atomic_torch_save, load_checkpoint

__all__ = [
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

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "sysid_msstcn.distributed/1"
_CKPT_RE = re.compile(r"^checkpoint_(\d+)\.pt$")
_TERMS = ("loss", "elbo", "log_lik", "kl")
_N_STATS = 6  # the terms, then sequences and skipped steps


# --------------------------------------------------------------- processes
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


# ------------------------------------------------------ mixed precision
class _Float32Conv1d(nn.Conv1d):
    """A Conv1d that ignores autocast: float32 input, weights and output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


@contextlib.contextmanager
def float32_heads(model: MSSTCN) -> Iterator[MSSTCN]:
    """Run the distribution-parameter convolutions in float32 (context).

    Inside the context the output head and every prior and posterior 1x1
    convolution of ``model`` compute in float32 even under autocast, so the
    log-likelihood and the KL (eq. 5 and A.3) see float32 parameters. The
    parameters and the state dict are unchanged; on exit the modules are
    restored.

    Parameters
    ----------
    model : MSSTCN

    Yields
    ------
    model : MSSTCN
    """
    convs = [model.head]
    for level in model.top_down:
        convs += [
            getattr(level, n) for n in ("prior", "posterior") if hasattr(level, n)
        ]
    swapped = [c for c in convs if type(c) is nn.Conv1d]
    for conv in swapped:
        conv.__class__ = _Float32Conv1d
    try:
        yield model
    finally:
        for conv in swapped:
            conv.__class__ = nn.Conv1d


# ------------------------------------------------------------------- data
def synthetic_dataset(
    config: NetworkConfig, n_sequences: int, length: int, seed: int = 0
) -> list:
    """Random sequences of the right shapes for a configuration.

    Parameters
    ----------
    config : NetworkConfig
    n_sequences, length : int
    seed : int, default=0

    Returns
    -------
    items : list
        ``(u, y)`` tensor pairs of shapes ``(C_u, T)`` and ``(C_y, T)``, or
        ``y`` alone without inputs. A Bernoulli channel holds 0/1 values.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n_sequences, config.n_outputs, length, generator=g)
    if config.likelihood == "bernoulli":
        y = (y > 0).float()
    elif config.likelihood == "gmm_bernoulli":
        y[:, 0] = (y[:, 0] > 0).float()
    if not config.n_inputs:
        return list(y)
    u = torch.randn(n_sequences, config.n_inputs, length, generator=g)
    return list(zip(u, y, strict=True))


class _Indexed(Dataset):
    """Dataset items paired with their index: ``(index, item)``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.dataset[index]


class _ArraySequences(Dataset):
    """Sequences of time-major arrays (N, T, C), e.g. memory-mapped .npy."""

    def __init__(self, y: np.ndarray, u: np.ndarray | None = None):
        self.y, self.u = y, u

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> Any:
        def item(a):
            return torch.from_numpy(np.array(a[index].T, dtype=np.float32))

        return item(self.y) if self.u is None else (item(self.u), item(self.y))


def _stack(items: list[torch.Tensor]) -> torch.Tensor:
    t_max = max(x.shape[-1] for x in items)
    out = items[0].new_zeros((len(items), items[0].shape[0], t_max))
    for i, x in enumerate(items):
        out[i, :, : x.shape[-1]] = x
    return out


def collate_batch(items: Sequence[tuple[int, Any]]) -> tuple:
    """Batch ``(index, item)`` pairs, zero-padding variable lengths.

    Parameters
    ----------
    items : sequence of (int, item)
        An item is ``y`` or ``(u, y)``, channels first: ``(C, T_i)``
        (tensors or arrays), as the datasets of :mod:`sysid_msstcn.loaders`
        return.

    Returns
    -------
    indices : torch.Tensor of shape (B,), int64
    y : torch.Tensor of shape (B, C_y, T)
    u : torch.Tensor of shape (B, C_u, T) or None
    lengths : torch.Tensor of shape (B,) or None
        Set only when the lengths differ.
    """
    indices = torch.tensor([i for i, _ in items], dtype=torch.int64)
    data = [item for _, item in items]
    if isinstance(data[0], tuple | list):
        us = [torch.as_tensor(d[0]) for d in data]
        ys = [torch.as_tensor(d[1]) for d in data]
    else:
        us, ys = None, [torch.as_tensor(d) for d in data]
    if any(y.dim() != 2 for y in ys):
        raise ValueError("items must be channels-first (C, T) tensors")
    lengths = [y.shape[-1] for y in ys]
    lens = None if len(set(lengths)) == 1 else torch.tensor(lengths)
    return indices, _stack(ys), None if us is None else _stack(us), lens


class _EpochSampler(Sampler[int]):
    """One rank's share of an epoch (DistributedSampler), resumable mid-epoch."""

    def __init__(self, dataset: Dataset, info: DistributedInfo, seed: int):
        self.base = DistributedSampler(
            dataset, info.world_size, info.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return len(self.base) - self.skip


def _mix_seed(*parts: int) -> int:
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2)
    return int(state[0]) << 31 ^ int(state[1])


def _sample_noise(
    model: MSSTCN, indices: torch.Tensor, n_steps: int, seed: int, step: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Noise keyed by (seed, step, sample index).

    Returns the posterior noise per level, (B, Z_l, T_l) each, and the
    output noise for ``TrainConfig.input_noise``, (B, C_y, n_steps).
    """
    shapes = model.latent_shapes(len(indices), n_steps)
    noise = [torch.empty(s) for s in shapes]
    y_noise = torch.empty(len(indices), model.config.n_outputs, n_steps)
    for b, index in enumerate(indices.tolist()):
        g = torch.Generator().manual_seed(_mix_seed(seed, step, index, 1))
        # drawn time-major so that a value does not depend on the padding
        y_noise[b] = torch.randn(n_steps, y_noise.shape[1], generator=g).T
        for level, (_, z, t) in enumerate(shapes):
            noise[level][b] = torch.randn(t, z, generator=g).T
    return noise, y_noise


# ------------------------------------------------------------------- step
def _linear_free_bits(kl: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Eq. A.3 with a tensor threshold (> 0): no host synchronisation."""
    return kl * torch.clamp(kl.detach() / threshold, max=1.0)


class _Objective(nn.Module):
    """The model plus its loss, so that DDP and torch.compile see one forward."""

    def __init__(
        self, model: MSSTCN, free_bits: bool, autocast: bool, input_noise: float
    ):
        super().__init__()
        self.model = model
        self.free_bits = free_bits
        self.autocast = autocast
        self.input_noise = input_noise

    def forward(self, y, u, lengths, noise, y_noise, threshold):
        """Return the loss and the summed terms (loss, elbo, log_lik, kl, B)."""
        y_in = None
        if self.input_noise > 0:  # drawn before the latents, as Trainer does
            eps = torch.randn_like(y) if y_noise is None else y_noise
            y_in = y + self.input_noise * eps
        with torch.autocast(y.device.type, torch.bfloat16, enabled=self.autocast):
            out = self.model(
                y, u, lengths, latent="posterior", noise=noise, y_input=y_in
            )
        terms = {k: _atleast32(v) for k, v in elbo_terms(out).items()}
        kl_eff = terms["kl"]
        if self.free_bits and out.latents:
            kl_eff = sum(
                _linear_free_bits(_atleast32(k), threshold).sum((1, 2)) for k in out.kl
            )
        loss = -(terms["log_lik"] - kl_eff).mean()  # nats per sequence
        B = y.shape[0]
        parts = [
            loss * B,
            terms["elbo"].sum(),
            terms["log_lik"].sum(),
            terms["kl"].sum(),
        ]
        sums = torch.stack([p.detach().double() for p in parts])
        return loss, sums


def _atleast32(t: torch.Tensor) -> torch.Tensor:
    """Promote a half-precision tensor to float32 (float64 stays)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class TrainStep:
    """A training step that never synchronises with the device.

    Parameters
    ----------
    model : MSSTCN
        On ``info.device``.
    config : TrainConfig
        ``mixed_precision`` turns on bf16 autocast (CUDA only).
    info : DistributedInfo, optional
        With ``world_size > 1`` the model is wrapped in
        DistributedDataParallel.
    compile : bool, default=False
        Compile the forward and loss with :func:`torch.compile`.
    seed : int, default=0
    sample_noise : bool, default=False
        Draw each sequence's posterior noise from (seed, step, sample index)
        on the host instead of the device generator.

    Attributes
    ----------
    step : int
        Optimiser steps attempted (host counter).
    optimizer : torch.optim.Adam
        Fused Adam with a tensor learning rate.
    """

    def __init__(
        self,
        model: MSSTCN,
        config: TrainConfig,
        info: DistributedInfo | None = None,
        *,
        compile: bool = False,
        seed: int = 0,
        sample_noise: bool = False,
    ):
        if config.rollout_steps:
            raise ValueError(
                "TrainStep trains the one-step objective only; "
                "rollout_steps > 0 (the simulation-error term) is trained by "
                "MSSTCNRegressor(rollout_steps=..., distributed=True)"
            )
        self.model = model
        self.config = config
        self.info = info or DistributedInfo(device=next(model.parameters()).device)
        self.device = self.info.device
        self.seed = int(seed)
        self.sample_noise = sample_noise
        self.autocast = bool(config.mixed_precision and self.device.type == "cuda")
        free_bits = config.objective == "linear_free_bits" and config.free_bits > 0
        module: nn.Module = _Objective(
            model, free_bits, self.autocast, config.input_noise
        )
        if self.info.is_distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids)
        self.ddp = module if self.info.is_distributed else None
        self._objective = torch.compile(module) if compile else module
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=config.learning_rate, fused=True
        )
        dtype = next(model.parameters()).dtype
        self._lr = torch.tensor(config.learning_rate, dtype=dtype, device=self.device)
        self.optimizer.param_groups[0]["lr"] = self._lr
        self._skipped = torch.zeros((), dtype=torch.int64, device=self.device)
        self._sums = torch.zeros(_N_STATS, dtype=torch.float64, device=self.device)
        self.step = 0
        self.lr_scale = 1.0

    # ------------------------------------------------------------ counters
    def set_counters(self, step: int, n_skipped: int, lr_scale: float) -> None:
        """Set the attempted steps, skipped steps and learning-rate factor."""
        self.step = int(step)
        self._skipped.fill_(int(n_skipped))
        self.lr_scale = float(lr_scale)

    @property
    def n_skipped(self) -> int:
        """Steps skipped so far (synchronises)."""
        return int(self._skipped)

    def _schedules(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        it = (self.step - self._skipped).double()  # optimiser steps taken
        lr = (
            self.lr_scale
            * cfg.learning_rate
            * cfg.lr_decay ** (it / cfg.lr_decay_steps)
        )
        thr = cfg.free_bits * 0.5 ** (it / cfg.free_bits_half_life)
        return lr, thr.to(self._lr.dtype)

    # ---------------------------------------------------------------- step
    def __call__(self, batches: Sequence[tuple]) -> None:
        """One optimiser step over micro-batches (gradient accumulation).

        Parameters
        ----------
        batches : sequence of tuple
            ``(indices, y, u, lengths)`` as :func:`collate_batch` returns,
            on any device; equal sizes, so that the mean of the micro-batch
            losses is the loss of their union.
        """
        if not self.sample_noise:
            torch.manual_seed(_mix_seed(self.seed, self.step, self.info.rank))
        lr, thr = self._schedules()
        self._lr.copy_(lr)
        self.optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(5, dtype=torch.float64, device=self.device)
        for i, (indices, y, u, lengths) in enumerate(batches):
            sync = self.ddp is None or i == len(batches) - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                inputs = self._inputs(indices, y, u, lengths)
                loss, part = self._objective(*inputs, thr)
                (loss / len(batches)).backward()
            sums[:4] += part
            sums[4] += y.shape[0]
        clip = self.config.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        bad = ~(torch.isfinite(norm) & torch.isfinite(sums[0]))
        if self.info.is_distributed:
            bad = bad.float()
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
            bad = bad > 0
        self.optimizer.found_inf = bad.float()
        self.optimizer.step()
        self._skipped += bad
        self._sums[:5] += torch.where(bad, torch.zeros_like(sums), sums)
        self._sums[5] += bad
        self.step += 1

    def _inputs(self, indices, y, u, lengths) -> tuple:
        dev = self.device
        dtype = next(self.model.parameters()).dtype
        noise = y_noise = None
        if self.sample_noise:
            raw, y_noise = _sample_noise(
                self.model, indices, y.shape[-1], self.seed, self.step
            )
            noise = [n.to(dev, dtype, non_blocking=True) for n in raw]
            y_noise = y_noise.to(dev, dtype, non_blocking=True)
        y = y.to(dev, dtype, non_blocking=True)
        u = None if u is None else u.to(dev, dtype, non_blocking=True)
        lengths = None if lengths is None else lengths.to(dev, non_blocking=True)
        return y, u, lengths, noise, y_noise

    def pop_stats(self) -> dict:
        """Mean terms since the last call, over all processes (synchronises).

        Returns
        -------
        dict
            ``loss``, ``elbo``, ``log_lik``, ``kl`` (nats per sequence over
            the steps that were not skipped), ``skipped`` (steps skipped),
            ``lr``, ``threshold``, ``iteration``.
        """
        sums = self._sums.clone()
        self._sums.zero_()
        if self.info.is_distributed:
            dist.all_reduce(sums)
        n_seq = max(float(sums[4]), 1.0)
        row = {k: float(sums[i]) / n_seq for i, k in enumerate(_TERMS)}
        row["skipped"] = int(round(float(sums[5]) / self.info.world_size))
        lr, thr = self._schedules()
        row.update(lr=float(lr), threshold=float(thr), iteration=self.iteration)
        return row

    @property
    def iteration(self) -> int:
        """Optimiser steps taken (synchronises)."""
        return self.step - self.n_skipped


# ------------------------------------------------------------ checkpoints
def save_checkpoint(
    state: dict, directory: str | os.PathLike, step: int, keep: int = 2
) -> Path:
    """Write ``checkpoint_<step>.pt`` atomically and prune older ones.

    Parameters
    ----------
    state : dict
        Tensors, numbers, strings and containers of them only.
    directory : str or path-like
    step : int
    keep : int, default=2
        Checkpoints kept (the newest); 0 keeps all.

    Returns
    -------
    path : pathlib.Path
    """
    directory = Path(directory)
    path = directory / f"checkpoint_{int(step):09d}.pt"
    atomic_torch_save(state, path)
    if keep > 0:
        for old in _checkpoints(directory)[keep:]:
            old.unlink(missing_ok=True)
    return path


def _checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files of a folder, newest step first."""
    if not directory.is_dir():
        return []
    found = [
        (int(m[1]), p) for p in directory.iterdir() if (m := _CKPT_RE.match(p.name))
    ]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """Path of the newest ``checkpoint_<step>.pt`` in a folder, or None."""
    found = _checkpoints(Path(directory))
    return found[0] if found else None


def load_latest_checkpoint(directory: str | os.PathLike) -> dict | None:
    """Load the newest readable checkpoint of a folder (None when none).

    A file that cannot be read is reported and the next older one is tried
    (writes are atomic, so this only happens after outside damage).

    Parameters
    ----------
    directory : str or path-like

    Returns
    -------
    state : dict or None
        As written by :class:`TrainingRun`; ``state["path"]`` is the file.
    """
    from .exceptions import DataFormatError

    for path in _checkpoints(Path(directory)):
        try:
            state = load_checkpoint(path)
        except DataFormatError as exc:
            warnings.warn(f"skipping unreadable checkpoint: {exc}", stacklevel=2)
            continue
        state["path"] = str(path)
        return state
    return None


def _rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.as_tensor(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": torch.tensor(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


# -------------------------------------------------------------------- run
@dataclass
class TrainingResult:
    """What :func:`fit_distributed` returns.

    Attributes
    ----------
    model : MSSTCN
        The trained network (unwrapped, on the training device).
    trainer : Trainer
        Holds the optimiser and counters, ready for
        :meth:`~sysid_msstcn.training.Trainer.train_step` or its
        ``state_dict``.
    history : list of dict
        Rows logged by this process (rank 0: every ``log_every`` steps and
        at each epoch's end).
    checkpoint : pathlib.Path or None
        The last checkpoint written.
    best_valid_elbo : float or None
        Best validation ELBO per sequence.
    """

    model: MSSTCN
    trainer: Trainer
    history: list[dict]
    checkpoint: Path | None = None
    best_valid_elbo: float | None = None


class TrainingRun:
    """Epoch loop with sharded data, periodic checkpoints and resume.

    Parameters
    ----------
    network : NetworkConfig or MSSTCN
        A configuration (weights initialised from ``seed``) or a model to
        continue training (moved to the device).
    train_config : TrainConfig
    train_dataset : torch.utils.data.Dataset
        Map-style; an item is ``y`` or ``(u, y)`` channels first
        (``(C, T)``), as :class:`~sysid_msstcn.loaders.WindowDataset`,
        :class:`~sysid_msstcn.loaders.ClipDataset` (lazy, memory-mapped) or
        :class:`~sysid_msstcn.loaders.SequenceDataset` return. A dataset
        with ``set_epoch`` is told each epoch.
    valid_dataset : torch.utils.data.Dataset, optional
        Evaluated (sharded) at the end of every epoch; the best weights go
        to ``checkpoint_dir/best.pt``.
    batch_size : int
        Sequences per micro-batch **per process**; one optimiser step sees
        ``batch_size * accumulate * world_size`` sequences.
    epochs : int, default=1
    max_steps : int, optional
        Stop after this many optimiser steps (attempted, skipped included).
    accumulate : int, default=1
        Micro-batches per optimiser step (gradient accumulation).
    checkpoint_dir : str or path-like, optional
        Where rank 0 writes ``checkpoint_<step>.pt``, ``best.pt`` and
        ``log.jsonl``.
    checkpoint_every : int or None, default=1000
        Optimiser steps between checkpoints; one is also written at the end.
    keep_checkpoints : int, default=2
        Newest checkpoints kept (0: all).
    resume : bool, default=False
        Continue from the newest checkpoint in ``checkpoint_dir`` (a fresh
        start when there is none).
    device : str or torch.device, default="auto"
        ``"auto"``: ``cuda:LOCAL_RANK`` when available, else the CPU.
    compile : bool, default=False
        :func:`torch.compile` the forward and loss.
    num_workers : int, default=0
        DataLoader worker processes (memory is pinned on CUDA).
    seed : int, default=0
        Weights, shuffling and noise.
    sample_noise : bool, default=False
        Noise keyed by sample index: results independent of the number of
        processes and of ``accumulate`` (slower; for checks).
    dtype : torch.dtype, default=torch.float32
        Parameter dtype (float64 for exactness checks).
    log_every : int, default=50
        Steps between log rows (the only regular host synchronisation).
    callback : callable, optional
        Called with each log row on rank 0.

    Attributes
    ----------
    info : DistributedInfo
    model : MSSTCN
    step_fn : TrainStep
    epoch, step_in_epoch : int
    history : list of dict
    """

    def __init__(
        self,
        network: NetworkConfig | MSSTCN,
        train_config: TrainConfig,
        train_dataset: Dataset,
        valid_dataset: Dataset | None = None,
        *,
        batch_size: int,
        epochs: int = 1,
        max_steps: int | None = None,
        accumulate: int = 1,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = 1000,
        keep_checkpoints: int = 2,
        resume: bool = False,
        device: str | torch.device | None = "auto",
        compile: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        sample_noise: bool = False,
        dtype: torch.dtype = torch.float32,
        log_every: int = 50,
        callback: Callable[[dict], None] | None = None,
    ):
        if batch_size < 1 or accumulate < 1:
            raise ValueError("batch_size and accumulate must be >= 1")
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs a checkpoint_dir")
        self.info = init_distributed(device)
        self.train_config = train_config
        self.batch_size, self.accumulate = int(batch_size), int(accumulate)
        self.epochs, self.max_steps = int(epochs), max_steps
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.resume = resume
        self.seed = int(seed)
        self.log_every = max(int(log_every), 1)
        self.callback = callback
        torch.manual_seed(self.seed)
        if isinstance(network, MSSTCN):
            model = network
        else:
            model = MSSTCN(network)
        self.model = model.to(self.info.device, dtype)
        self.network_config = model.config
        self.trainer = Trainer(self.model, train_config, self.info.device)
        self.step_fn = TrainStep(
            self.model,
            train_config,
            self.info,
            compile=compile,
            seed=self.seed,
            sample_noise=sample_noise,
        )
        self.trainer.optimizer = self.step_fn.optimizer
        self.sampler = _EpochSampler(train_dataset, self.info, self.seed)
        self.train_dataset = train_dataset
        pin = self.info.device.type == "cuda"
        self.loader = DataLoader(
            _Indexed(train_dataset),
            batch_size=self.batch_size,
            sampler=self.sampler,
            collate_fn=collate_batch,
            num_workers=num_workers,
            pin_memory=pin,
            drop_last=True,
        )
        self.steps_per_epoch = len(self.sampler) // self.batch_size // self.accumulate
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"an epoch needs batch_size * accumulate * world_size = "
                f"{self.global_batch} sequences, the dataset has {len(train_dataset)}"
            )
        self.valid_loader = None
        if valid_dataset is not None:
            shard = range(self.info.rank, len(valid_dataset), self.info.world_size)
            self.valid_loader = DataLoader(
                _Indexed(valid_dataset),
                batch_size=self.batch_size,
                sampler=list(shard),
                collate_fn=collate_batch,
                num_workers=num_workers,
                pin_memory=pin,
            )
        self.epoch, self.step_in_epoch = 0, 0
        self.best_valid_elbo: float | None = None
        self.history: list[dict] = []
        self.last_checkpoint: Path | None = None
        self._t0 = time.perf_counter()
        self._window_start = (0, self._t0)

    @property
    def global_batch(self) -> int:
        """Sequences per optimiser step over all processes."""
        return self.batch_size * self.accumulate * self.info.world_size

    @property
    def step(self) -> int:
        """Optimiser steps attempted."""
        return self.step_fn.step

    def _done(self) -> bool:
        if self.max_steps is not None and self.step >= self.max_steps:
            return True
        return self.epoch >= self.epochs

    # ----------------------------------------------------------------- run
    def run(self) -> TrainingResult:
        """Train until ``max_steps`` or ``epochs``; checkpoint at the end."""
        if self.resume:
            self._restore()
        logger.info(
            "training on %d process(es), %s; %d sequences per step, %d steps per epoch",
            self.info.world_size,
            self.info.device,
            self.global_batch,
            self.steps_per_epoch,
        )
        heads = float32_heads if self.step_fn.autocast else contextlib.nullcontext
        with heads(self.model):
            while not self._done():
                self._run_epoch()
        self._checkpoint()
        self._sync_trainer()
        return TrainingResult(
            self.model,
            self.trainer,
            self.history,
            self.last_checkpoint,
            self.best_valid_elbo,
        )

    def _run_epoch(self) -> None:
        consumed = self.step_in_epoch * self.accumulate * self.batch_size
        self.sampler.set_epoch(self.epoch, skip=consumed)
        if hasattr(self.train_dataset, "set_epoch"):
            self.train_dataset.set_epoch(self.epoch)
        micro: list[tuple] = []
        for batch in self.loader:
            micro.append(batch)
            if len(micro) < self.accumulate:
                continue
            self.step_fn(micro)
            micro = []
            self.step_in_epoch += 1
            end = self.step_in_epoch >= self.steps_per_epoch
            if self.step % self.log_every == 0:
                self._log()
            if end:
                self._end_epoch()
            every = self.checkpoint_every
            if every and self.step % every == 0 and not self._done():
                self._checkpoint()
            if end or self._done():
                return
        self._end_epoch()  # the loader ran dry (a dataset that shrank)

    def _end_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        row = {"epoch": self.epoch, "step": self.step}
        if self.valid_loader is not None:
            val = self.evaluate()
            row.update({f"valid_{k}": v for k, v in val.items()})
            if self.best_valid_elbo is None or val["elbo"] > self.best_valid_elbo:
                self.best_valid_elbo = val["elbo"]
                if self.info.is_main and self.checkpoint_dir is not None:
                    atomic_torch_save(
                        self._model_payload(), self.checkpoint_dir / "best.pt"
                    )
        self._emit(row)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Validation ELBO terms per sequence, over every process's shard.

        Returns
        -------
        dict
            ``elbo``, ``log_lik``, ``kl`` (nats per sequence) and
            ``elbo_per_step``.
        """
        self.model.eval()
        torch.manual_seed(_mix_seed(self.seed, self.step, self.info.rank, 2))
        dev, dtype = self.info.device, next(self.model.parameters()).dtype
        sums = torch.zeros(5, dtype=torch.float64, device=dev)
        for _, y, u, lengths in self.valid_loader:
            y = y.to(dev, dtype, non_blocking=True)
            u = None if u is None else u.to(dev, dtype, non_blocking=True)
            lengths = None if lengths is None else lengths.to(dev, non_blocking=True)
            with torch.autocast(
                dev.type, torch.bfloat16, enabled=self.step_fn.autocast
            ):
                out = self.model(y, u, lengths, latent="posterior")
            t = elbo_terms(out)
            parts = [t["elbo"], t["log_lik"], t["kl"], t["n_steps"]]
            sums[:4] += torch.stack([p.double().sum() for p in parts])
            sums[4] += y.shape[0]
        self.model.train()
        if self.info.is_distributed:
            dist.all_reduce(sums)
        n = max(float(sums[4]), 1.0)
        res = {k: float(sums[i]) / n for i, k in enumerate(("elbo", "log_lik", "kl"))}
        res["elbo_per_step"] = float(sums[0]) / max(float(sums[3]), 1.0)
        return res

    # ------------------------------------------------------------- logging
    def _log(self) -> None:
        row = self.step_fn.pop_stats()
        steps0, t0 = self._window_start
        now = time.perf_counter()
        rate = (self.step - steps0) / max(now - t0, 1e-9)
        self._window_start = (self.step, now)
        row.update(
            step=self.step,
            epoch=self.epoch,
            steps_per_s=rate,
            sequences_per_s=rate * self.global_batch,
            elapsed_s=now - self._t0,
        )
        if row["skipped"] >= max(3, (self.step - steps0 + 1) // 2):
            self.step_fn.lr_scale *= 0.5
            row["lr_scale"] = self.step_fn.lr_scale
            warnings.warn(
                f"{row['skipped']} of the last {self.step - steps0} steps had a "
                f"non-finite loss or gradient: learning rate factor lowered to "
                f"{self.step_fn.lr_scale:g}",
                RuntimeWarning,
                stacklevel=2,
            )
        self._emit(row)

    def _emit(self, row: dict) -> None:
        if not self.info.is_main:
            return
        self.history.append(row)
        logger.info("%s", json.dumps(row))
        if self.checkpoint_dir is not None:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            with open(self.checkpoint_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
        if self.callback is not None:
            self.callback(row)

    # --------------------------------------------------------- checkpoints
    def _sync_trainer(self) -> None:
        # a stale skip flag would make later Trainer.train_step calls no-ops
        self.step_fn.optimizer.found_inf = None
        self.trainer.iteration = self.step_fn.iteration
        self.trainer.n_skipped = self.step_fn.n_skipped
        self.trainer.lr_scale = self.step_fn.lr_scale
        self.trainer.optimizer = self.step_fn.optimizer

    def _model_payload(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "network_config": self.network_config.to_dict(),
            "model": self.model.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "best_valid_elbo": self.best_valid_elbo,
        }

    def state_dict(self) -> dict:
        """Everything needed to resume (readable by ``Trainer.load_state_dict``).

        Returns
        -------
        dict
            The :meth:`~sysid_msstcn.training.Trainer.state_dict` keys
            (weights, optimiser, iteration, skipped steps, learning-rate
            factor, free-bits threshold, RNG) plus ``network_config``,
            ``train_config``, ``step``, ``epoch``, ``step_in_epoch``,
            ``sampler_epoch``, ``scheduler``, ``rng_per_rank``,
            ``world_size``, ``global_batch``, ``seed``.
        """
        self._sync_trainer()
        state = self.trainer.state_dict()
        state["optimizer"]["param_groups"] = [
            {**g, "lr": float(g["lr"])} for g in state["optimizer"]["param_groups"]
        ]
        train = asdict(self.train_config)
        state.update(
            self._model_payload(),
            train_config=train,
            step_in_epoch=self.step_in_epoch,
            sampler_epoch=self.epoch,
            scheduler={
                "learning_rate": self.trainer.learning_rate,
                "lr_scale": self.step_fn.lr_scale,
                "iteration": self.trainer.iteration,
            },
            rng_per_rank=self._gather_rng(),
            world_size=self.info.world_size,
            global_batch=self.global_batch,
            seed=self.seed,
        )
        return state

    def _gather_rng(self) -> list[dict]:
        mine = _rng_state()
        if not self.info.is_distributed:
            return [mine]
        out: list = [None] * self.info.world_size
        dist.all_gather_object(out, mine)
        return out

    def _checkpoint(self) -> None:
        if self.checkpoint_dir is None:
            return
        state = self.state_dict()  # collective: every rank takes part
        if self.info.is_main:
            self.last_checkpoint = save_checkpoint(
                state, self.checkpoint_dir, self.step, self.keep_checkpoints
            )
            logger.info("checkpoint %s", self.last_checkpoint)

    def _restore(self) -> None:
        state = load_latest_checkpoint(self.checkpoint_dir)
        if state is None:
            logger.info("no checkpoint in %s: starting afresh", self.checkpoint_dir)
            return
        saved = config_from_dict(state["network_config"])
        if saved != self.network_config:
            raise ValueError(
                f"{state['path']} holds another network configuration: {saved}"
            )
        self.trainer.load_state_dict(state)
        self.step_fn.optimizer.param_groups[0]["lr"] = self.step_fn._lr
        self.step_fn.set_counters(state["step"], state["n_skipped"], state["lr_scale"])
        self.epoch = int(state["epoch"])
        self.best_valid_elbo = state.get("best_valid_elbo")
        consumed = int(state["step_in_epoch"]) * int(state["global_batch"])
        self.step_in_epoch = consumed // self.global_batch
        ranks = state["rng_per_rank"]
        if len(ranks) == self.info.world_size:
            _set_rng_state(ranks[self.info.rank])
        else:
            warnings.warn(
                f"resuming {len(ranks)}-process checkpoint with "
                f"{self.info.world_size} processes: random streams differ",
                RuntimeWarning,
                stacklevel=3,
            )
        self.last_checkpoint = Path(state["path"])
        self._window_start = (self.step, time.perf_counter())
        if self.info.is_main:
            _truncate_log(self.checkpoint_dir / "log.jsonl", self.step)
        logger.info("resumed from %s at step %d", state["path"], self.step)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint a run resumes from."""
    if not path.exists():
        return
    rows = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in rows if json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in kept))


def fit_distributed(
    network: NetworkConfig | MSSTCN,
    train_config: TrainConfig,
    train_dataset: Dataset,
    valid_dataset: Dataset | None = None,
    **options: Any,
) -> TrainingResult:
    """Train an MS-STCN, data-parallel when launched by ``torchrun``.

    Every process calls this function with the same arguments; each reads
    its shard of ``train_dataset``. A single process (no ``torchrun``) runs
    the same loop without DistributedDataParallel.

    Parameters
    ----------
    network : NetworkConfig or MSSTCN
        A configuration or a model to continue training.
    train_config : TrainConfig
    train_dataset : torch.utils.data.Dataset
    valid_dataset : torch.utils.data.Dataset, optional
    **options
        Keyword arguments of :class:`TrainingRun`: ``batch_size``
        (required, per process), ``epochs``, ``max_steps``, ``accumulate``,
        ``checkpoint_dir``, ``checkpoint_every``, ``keep_checkpoints``,
        ``resume``, ``device``, ``compile``, ``num_workers``, ``seed``,
        ``sample_noise``, ``dtype``, ``log_every``, ``callback``.

    Returns
    -------
    TrainingResult

    Examples
    --------
    >>> from sysid_msstcn.config import NetworkConfig, TrainConfig
    >>> cfg = NetworkConfig(n_outputs=1, channels=(4, 4), latent_dims=(1, 1),
    ...                     strides=(1, 2), dilations=((1,), (1,)))
    >>> data = synthetic_dataset(cfg, n_sequences=8, length=16)
    >>> res = fit_distributed(cfg, TrainConfig(), data, batch_size=4,
    ...                       device="cpu")
    >>> res.trainer.iteration
    2
    """
    run = TrainingRun(network, train_config, train_dataset, valid_dataset, **options)
    return run.run()


# ------------------------------------------------------------ entry point
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sysid_msstcn.distributed",
        description="Train an MS-STCN preset (data-parallel under torchrun).",
    )
    p.add_argument("--preset", required=True)
    p.add_argument("--network", default="{}", help="JSON NetworkConfig overrides")
    p.add_argument(
        "--data",
        default="synthetic",
        help="'synthetic', an .npz/.npy of sequences (N, T, C) ('y', optional "
        "'u'), or a Blizzard audio folder (needs --cache-dir)",
    )
    p.add_argument("--cache-dir", help="clip cache folder for speech audio")
    p.add_argument("--length", type=int, default=1024, help="synthetic length")
    p.add_argument("--n-sequences", type=int, default=256, help="synthetic count")
    p.add_argument("--valid-fraction", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--accumulate", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--checkpoint-dir")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-noise", action="store_true")
    p.add_argument("--float64", action="store_true")
    p.add_argument("--log-every", type=int, default=50)
    return p


def _datasets(args: argparse.Namespace, config: NetworkConfig) -> tuple:
    if args.data == "synthetic":
        items = synthetic_dataset(config, args.n_sequences, args.length, args.seed)
    elif args.data.endswith((".npz", ".npy")):
        arrays = np.load(args.data, mmap_mode="r")
        if args.data.endswith(".npy"):
            items = _ArraySequences(arrays)
        else:
            items = _ArraySequences(arrays["y"], arrays["u"] if "u" in arrays else None)
    else:
        from .data.speech import load_blizzard
        from .loaders import ClipDataset

        if args.cache_dir is None:
            raise SystemExit("--cache-dir is needed with an audio folder")
        data = load_blizzard(args.data, args.cache_dir, frame_width=config.n_outputs)
        return ClipDataset(data.train), ClipDataset(data.valid)
    n = len(items)
    n_valid = int(round(args.valid_fraction * n))
    if n_valid == 0:
        return items, None
    return Subset(items, range(n - n_valid)), Subset(items, range(n - n_valid, n))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring).

    Parameters
    ----------
    argv : sequence of str, optional

    Returns
    -------
    int
        Exit status.
    """
    from .presets import preset_network_kwargs

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    kw = preset_network_kwargs(args.preset)
    kw.update(json.loads(args.network))
    config = config_from_dict(kw)
    train = TrainConfig(
        learning_rate=args.learning_rate, mixed_precision=args.mixed_precision
    )
    train_set, valid_set = _datasets(args, config)
    result = fit_distributed(
        config,
        train,
        train_set,
        valid_set,
        batch_size=args.batch_size,
        epochs=args.epochs,
        max_steps=args.max_steps,
        accumulate=args.accumulate,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        resume=args.resume,
        device=args.device,
        compile=args.compile,
        num_workers=args.num_workers,
        seed=args.seed,
        sample_noise=args.sample_noise,
        dtype=torch.float64 if args.float64 else torch.float32,
        log_every=args.log_every,
    )
    if is_main_process() and result.checkpoint is not None:
        logger.info("final checkpoint: %s", result.checkpoint)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
