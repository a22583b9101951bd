"""Datasets, batching, sampling and per-step noise for scale-out training."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from ..config import NetworkConfig
from ..model import MSSTCN
from ._process import DistributedInfo


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
