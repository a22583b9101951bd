"""Torch datasets and batching for the data adapters.

Tensor layout is ``(batch, channels, time)``; the numpy adapters are
time-major ``(time, channels)`` and are transposed here, once per item.

* :class:`WindowDataset`: fixed-length windows of input/output experiments
  (strided, or drawn at random and redrawn per epoch with :meth:`set_epoch`);
  windows never cross experiment boundaries.
* :class:`SequenceDataset`: whole variable-length sequences (handwriting).
* :class:`ClipDataset`: standardised speech clips read lazily from the
  memory-mapped clip cache.
* :func:`pad_collate`: pads variable-length items and returns a mask.
* :func:`make_loader`: a :class:`~torch.utils.data.DataLoader` that accepts a
  sampler, e.g. :class:`~torch.utils.data.distributed.DistributedSampler`
  (every dataset here is map-style and deterministic given its epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, Dataset, Sampler

from sysid_msstcn.data.benchmarks import io_arrays
from sysid_msstcn.data.speech import SpeechClips
from sysid_msstcn.data.windows import random_windows, strided_windows

__all__ = [
    "ClipDataset",
    "SequenceDataset",
    "WindowDataset",
    "make_loader",
    "pad_collate",
]


def _channels_first(x: Any, dtype: torch.dtype) -> torch.Tensor:
    """Time-major array (T,) or (T, C) → tensor (C, T)."""
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"expected a (time, channel) array, got shape {arr.shape}")
    return torch.as_tensor(np.ascontiguousarray(arr.T), dtype=dtype)


class WindowDataset(Dataset):
    """Windows of length ``window_length`` from a list of experiments.

    Parameters
    ----------
    experiments : sequence
        Each item is ``(u, y)`` with time-major arrays of equal length (1-D or
        ``(T, C)``), an :class:`xarray.Dataset` following the benchmark
        contract, or a single array (output-only data).
    window_length : int
        Samples per window.
    stride : int, optional
        Step between strided windows (default ``window_length``). Ignored
        when ``n_windows`` is given.
    n_windows : int, optional
        Draw this many windows uniformly at random over all valid positions
        instead of striding; redrawn by :meth:`set_epoch`.
    cover_end : bool, default=False
        With strided windows, add a last window ending at each experiment's
        last sample.
    random_state : int, optional
        Seed of the random windows; epoch ``e`` uses ``(random_state, e)``, so
        every process of a distributed run draws the same windows.
    dtype : torch.dtype, default=torch.float32

    Notes
    -----
    An item is ``(u, y)`` with tensors of shape ``(C_u, L)`` and ``(C_y, L)``,
    or ``y`` alone for output-only experiments.
    """

    def __init__(
        self,
        experiments: Sequence[Any],
        window_length: int,
        *,
        stride: int | None = None,
        n_windows: int | None = None,
        cover_end: bool = False,
        random_state: int | None = 0,
        dtype: torch.dtype = torch.float32,
    ):
        self.window_length = int(window_length)
        self.stride = stride
        self.n_windows = n_windows
        self.random_state = random_state
        self.output_only = False
        self.u: list[torch.Tensor | None] = []
        self.y: list[torch.Tensor] = []
        for exp in experiments:
            if isinstance(exp, xr.Dataset):
                exp = io_arrays(exp)
            if isinstance(exp, tuple | list) and len(exp) == 2:
                u, y = (_channels_first(a, dtype) for a in exp)
                if u.shape[1] != y.shape[1]:
                    raise ValueError(f"u and y lengths differ: {u.shape}, {y.shape}")
            else:
                u, y = None, _channels_first(exp, dtype)
            self.u.append(u)
            self.y.append(y)
        kinds = {u is None for u in self.u}
        if len(kinds) > 1:
            raise ValueError("mix of (u, y) experiments and output-only arrays")
        self.output_only = kinds == {True}
        self.lengths = np.array([y.shape[1] for y in self.y], dtype=np.int64)
        if n_windows is None:
            self.windows = strided_windows(
                self.lengths, self.window_length, stride, cover_end=cover_end
            )
            if len(self.windows) == 0:
                raise ValueError(
                    f"no experiment is at least {self.window_length} samples long"
                )
        else:
            self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Redraw the random windows for ``epoch`` (no effect when strided).

        Parameters
        ----------
        epoch : int
        """
        if self.n_windows is None:
            return
        seed = None if self.random_state is None else (self.random_state, int(epoch))
        rng = np.random.default_rng(seed)
        self.windows = random_windows(
            self.lengths, self.window_length, self.n_windows, rng
        )

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> Any:
        e, s = (int(v) for v in self.windows[index])
        sl = slice(s, s + self.window_length)
        if self.output_only:
            return self.y[e][:, sl]
        return self.u[e][:, sl], self.y[e][:, sl]


class SequenceDataset(Dataset):
    """Whole variable-length sequences, e.g. handwriting lines or chunks.

    Parameters
    ----------
    sequences : sequence of array-like of shape (T, C)
        Time-major arrays.
    dtype : torch.dtype, default=torch.float32

    Notes
    -----
    An item is a tensor of shape ``(C, T)``; batch them with
    :func:`pad_collate`.
    """

    def __init__(self, sequences: Sequence[Any], dtype: torch.dtype = torch.float32):
        self.sequences = [_channels_first(s, dtype) for s in sequences]
        if self.sequences and len({s.shape[0] for s in self.sequences}) > 1:
            raise ValueError("all sequences must have the same number of channels")

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.sequences[index]


class ClipDataset(Dataset):
    """Standardised, framed speech clips, read lazily from the clip cache.

    Parameters
    ----------
    clips : SpeechClips
        A split of :func:`sysid_msstcn.data.load_blizzard` (or any
        :class:`~sysid_msstcn.data.SpeechClips`).

    Notes
    -----
    An item is a float32 tensor of shape ``(FW, T)`` (frame width as
    channels). Only the requested clip is read from disk; pickling into
    DataLoader workers sends the cache path, not the data.
    """

    def __init__(self, clips: SpeechClips):
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> torch.Tensor:
        frames = self.clips[index]  # (T, FW)
        return torch.from_numpy(np.ascontiguousarray(frames.T))


def pad_collate(
    batch: Sequence[torch.Tensor | np.ndarray], padding_value: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad items of shape ``(C, T_i)`` to a batch ``(B, C, T_max)`` with a mask.

    Parameters
    ----------
    batch : sequence of tensor or numpy.ndarray of shape (C, T_i)
        Channels-first items with equal ``C`` (as :class:`SequenceDataset`
        returns).
    padding_value : float, default=0.0

    Returns
    -------
    y : torch.Tensor of shape (B, C, T_max)
    mask : torch.Tensor of shape (B, T_max), bool
        True on real time steps, False on padding.
    lengths : torch.Tensor of shape (B,), int64
    """
    if len(batch) == 0:
        raise ValueError("empty batch")
    items = [torch.as_tensor(b) for b in batch]
    if any(x.ndim != 2 for x in items) or len({x.shape[0] for x in items}) > 1:
        raise ValueError(
            f"items must be (C, T) with equal C, got {[tuple(x.shape) for x in items]}"
        )
    lengths = torch.tensor([x.shape[1] for x in items], dtype=torch.int64)
    t_max = int(lengths.max())
    out = items[0].new_full((len(items), items[0].shape[0], t_max), padding_value)
    for i, x in enumerate(items):
        out[i, :, : x.shape[1]] = x
    mask = torch.arange(t_max)[None, :] < lengths[:, None]
    return out, mask, lengths


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    sampler: Sampler | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """Build a DataLoader; a given sampler (e.g. DistributedSampler) wins.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
    batch_size : int
    shuffle : bool, default=False
        Ignored when ``sampler`` is given (shuffling is then the sampler's).
    sampler : torch.utils.data.Sampler, optional
        E.g. ``DistributedSampler(dataset, num_replicas, rank)``; call its
        ``set_epoch`` (and the dataset's, for random windows) every epoch.
    collate_fn : callable, optional
        E.g. :func:`pad_collate` for variable-length items.
    num_workers : int, default=0
    drop_last : bool, default=False
    seed : int, optional
        Seeds the shuffling generator and the workers' numpy state.
    pin_memory : bool, default=False

    Returns
    -------
    loader : torch.utils.data.DataLoader
    """
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers else None,
        pin_memory=pin_memory,
    )
