"""Index arithmetic for training windows and validation tails (numpy only).

Experiments are time-major records of different lengths. A *window* is the
pair ``(experiment, start)`` and covers samples ``[start, start + length)`` of
that one experiment: windows never cross experiment boundaries. Validation
data are the contiguous *tail* of every experiment, so a model validated on
them never sees samples that follow its training samples in time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "random_windows",
    "split_validation_tails",
    "strided_windows",
    "validation_tails",
    "window_starts",
]


def _check_lengths(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if (arr < 0).any():
        raise ValueError(f"lengths must be >= 0, got {arr.tolist()}")
    return arr


def _check_window(window_length: int) -> int:
    if int(window_length) != window_length or window_length < 1:
        raise ValueError(f"window_length must be a positive int, got {window_length}")
    return int(window_length)


def window_starts(
    length: int,
    window_length: int,
    stride: int | None = None,
    *,
    cover_end: bool = False,
) -> np.ndarray:
    """Start indices of strided windows inside one record.

    Parameters
    ----------
    length : int
        Number of samples of the record.
    window_length : int
        Samples per window.
    stride : int, optional
        Step between starts; defaults to ``window_length`` (no overlap).
    cover_end : bool, default=False
        Add one last window that ends at the last sample when the strided
        windows do not reach it (it overlaps its predecessor).

    Returns
    -------
    starts : numpy.ndarray of int64
        Empty when the record is shorter than ``window_length``.
    """
    window_length = _check_window(window_length)
    stride = window_length if stride is None else int(stride)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    last = int(length) - window_length
    if last < 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    if cover_end and starts[-1] != last:
        starts = np.append(starts, last)
    return starts


def strided_windows(
    lengths: Sequence[int] | np.ndarray,
    window_length: int,
    stride: int | None = None,
    *,
    cover_end: bool = False,
) -> np.ndarray:
    """Strided windows over several experiments.

    Parameters
    ----------
    lengths : sequence of int
        Length of every experiment.
    window_length : int
        Samples per window.
    stride : int, optional
        Step between starts inside an experiment (default ``window_length``).
    cover_end : bool, default=False
        See :func:`window_starts`.

    Returns
    -------
    windows : numpy.ndarray of shape (n_windows, 2), int64
        Rows ``(experiment, start)``, ordered by experiment then start.
    """
    rows = [
        np.stack([np.full(len(s), e, dtype=np.int64), s], axis=1)
        for e, n in enumerate(_check_lengths(lengths))
        for s in [window_starts(int(n), window_length, stride, cover_end=cover_end)]
    ]
    if not rows:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(rows, axis=0)


def random_windows(
    lengths: Sequence[int] | np.ndarray,
    window_length: int,
    n_windows: int,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Draw windows uniformly over all valid ``(experiment, start)`` pairs.

    Every position where a full window fits is equally likely, so long
    experiments are drawn more often than short ones. Experiments shorter than
    the window are never drawn.

    Parameters
    ----------
    lengths : sequence of int
        Length of every experiment.
    window_length : int
        Samples per window.
    n_windows : int
        Number of windows to draw (with replacement).
    random_state : int, numpy Generator or None
        Seed or generator.

    Returns
    -------
    windows : numpy.ndarray of shape (n_windows, 2), int64
        Rows ``(experiment, start)``.

    Raises
    ------
    ValueError
        If no experiment is at least ``window_length`` long.
    """
    window_length = _check_window(window_length)
    n_valid = np.maximum(_check_lengths(lengths) - window_length + 1, 0)
    total = int(n_valid.sum())
    if total == 0:
        raise ValueError(
            f"no experiment is at least window_length={window_length} samples long "
            f"(lengths {np.asarray(lengths).tolist()})"
        )
    rng = np.random.default_rng(random_state)
    flat = rng.integers(0, total, size=int(n_windows))
    bounds = np.cumsum(n_valid)
    exp = np.searchsorted(bounds, flat, side="right")
    start = flat - (bounds[exp] - n_valid[exp])
    return np.stack([exp, start], axis=1).astype(np.int64)


def validation_tails(
    lengths: Sequence[int] | np.ndarray,
    validation_fraction: float,
    *,
    min_length: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Split every experiment into a training head and a validation tail.

    Parameters
    ----------
    lengths : sequence of int
        Length of every experiment.
    validation_fraction : float
        Fraction in ``[0, 1)`` of every experiment used for validation
        (rounded to whole samples).
    min_length : int, default=1
        Smallest tail when ``validation_fraction > 0``.

    Returns
    -------
    train_bounds, valid_bounds : numpy.ndarray of shape (n_experiments, 2)
        Rows ``(start, stop)``; ``train`` is ``[0, L - n_val)`` and ``valid``
        is ``[L - n_val, L)``. With ``validation_fraction == 0`` every
        validation range is empty.

    Raises
    ------
    ValueError
        If the fraction is outside ``[0, 1)`` or a tail would leave no
        training samples.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction must be in [0, 1), got {validation_fraction}"
        )
    arr = _check_lengths(lengths)
    n_val = np.rint(arr * validation_fraction).astype(np.int64)
    if validation_fraction > 0:
        n_val = np.maximum(n_val, int(min_length))
    if (n_val >= arr).any() and validation_fraction > 0:
        bad = int(np.flatnonzero(n_val >= arr)[0])
        raise ValueError(
            f"experiment {bad} (length {arr[bad]}) is too short for a validation "
            f"tail of {n_val[bad]} samples"
        )
    cut = arr - n_val
    zeros = np.zeros_like(arr)
    return np.stack([zeros, cut], axis=1), np.stack([cut, arr], axis=1)


def split_validation_tails(
    experiments: Sequence[Any], validation_fraction: float, *, min_length: int = 1
) -> tuple[list[Any], list[Any]]:
    """Cut the validation tail off every experiment (time is the first axis).

    Parameters
    ----------
    experiments : sequence of array-like
        Time-major arrays, or tuples of arrays of equal length such as
        ``(u, y)``; tuples are split element-wise.
    validation_fraction : float
        See :func:`validation_tails`.
    min_length : int, default=1
        See :func:`validation_tails`.

    Returns
    -------
    train, valid : list
        Slices (views) of the inputs, in the same structure. Experiments with
        an empty tail are left out of ``valid``.
    """

    def length(exp: Any) -> int:
        return len(exp[0]) if isinstance(exp, tuple) else len(exp)

    def cut(exp: Any, a: int, b: int) -> Any:
        return tuple(x[a:b] for x in exp) if isinstance(exp, tuple) else exp[a:b]

    lengths = [length(e) for e in experiments]
    train_b, valid_b = validation_tails(
        lengths, validation_fraction, min_length=min_length
    )
    train = [cut(e, *map(int, b)) for e, b in zip(experiments, train_b, strict=True)]
    valid = [
        cut(e, *map(int, b))
        for e, b in zip(experiments, valid_b, strict=True)
        if b[1] > b[0]
    ]
    return train, valid
