"""Scaling and window sampling for the estimator (numpy only).

The estimator's windows live in *segments* ``(experiment, start, stop)``:
the training heads left after the validation tails are cut off. A segment
shorter than the window is drawn whole, so short experiments still train.
:mod:`sysid_msstcn.data.windows` is the public, DataLoader-side counterpart
on whole experiments, where only full-length windows are drawn and a tail
too long for its experiment is an error; the two keep their own rules
because a fitted estimator's random stream must not change.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["ChannelScaler", "sample_windows", "split_tails"]


class ChannelScaler:
    """Per-channel standardisation fitted on all experiments together.

    A constant channel (zero variance) keeps scale 1 so that it is centred
    but not blown up; a warning names it.

    Parameters
    ----------
    name : str
        Used in warnings ("input", "output").
    """

    def __init__(self, name: str = "signal") -> None:
        self.name = name

    def fit(self, arrays: list[np.ndarray]) -> ChannelScaler:
        """Fit the mean and standard deviation per channel.

        Parameters
        ----------
        arrays : list of ndarray of shape (T_i, C)
            All experiments; the statistics pool their samples.

        Returns
        -------
        self : ChannelScaler
        """
        data = np.concatenate(arrays, axis=0)
        self.mean_ = data.mean(axis=0)
        std = data.std(axis=0)
        tiny = ~(std > 1e-12 * np.maximum(1.0, np.abs(self.mean_)))
        if np.any(tiny):
            warnings.warn(
                f"{self.name} channel(s) {np.flatnonzero(tiny).tolist()} are "
                "constant; they are centred but not scaled",
                UserWarning,
                stacklevel=3,
            )
        self.scale_ = np.where(tiny, 1.0, std)
        return self

    def transform(self, a: np.ndarray) -> np.ndarray:
        """Standardise an array whose last axis is the channel axis."""
        return (a - self.mean_) / self.scale_

    def inverse_transform(self, a: np.ndarray) -> np.ndarray:
        """Undo :meth:`transform` (broadcasts over leading axes)."""
        return a * self.scale_ + self.mean_

    def to_dict(self) -> dict:
        """JSON-friendly statistics."""
        return {"mean": self.mean_.tolist(), "scale": self.scale_.tolist()}

    @classmethod
    def from_dict(cls, data: dict, name: str = "signal") -> ChannelScaler:
        """Rebuild from :meth:`to_dict`."""
        obj = cls(name)
        obj.mean_ = np.asarray(data["mean"], dtype=np.float64)
        obj.scale_ = np.asarray(data["scale"], dtype=np.float64)
        return obj


def split_tails(
    lengths: list[int], fraction: float, min_length: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Split each experiment into a training head and a validation tail.

    Parameters
    ----------
    lengths : list of int
        Length of every experiment.
    fraction : float
        Share of each experiment kept for validation (its last samples).
    min_length : int
        Neither part may be shorter; an experiment too short to split is
        used for training only.

    Returns
    -------
    train, valid : list of (experiment index, start, stop) tuples
        ``train`` has one segment per experiment (its head, or all of it);
        ``valid`` has the contiguous tails of the experiments long enough to
        split, in experiment order. Nothing is shuffled.
    """
    train, valid = [], []
    for i, n in enumerate(lengths):
        n_val = int(round(n * fraction)) if fraction > 0 else 0
        if n_val >= min_length and n - n_val >= min_length:
            train.append((i, 0, n - n_val))
            valid.append((i, n - n_val, n))
        else:
            train.append((i, 0, n))
    return train, valid


def sample_windows(
    segments: list[tuple[int, int, int]],
    window: int,
    n_windows: int,
    rng: np.random.Generator,
) -> list[tuple[int, int, int]]:
    """Draw random windows inside segments, never crossing experiments.

    Segments are chosen with probability proportional to the number of
    window positions they offer (shorter segments give one whole-segment
    window).

    Parameters
    ----------
    segments : list of (experiment, start, stop)
    window : int
    n_windows : int
    rng : numpy.random.Generator

    Returns
    -------
    list of (experiment, start, stop)
    """
    counts = np.array(
        [max(stop - start - window + 1, 1) for _, start, stop in segments]
    )
    probs = counts / counts.sum()
    picks = rng.choice(len(segments), size=n_windows, p=probs)
    out = []
    for k in picks:
        i, start, stop = segments[k]
        if stop - start <= window:
            out.append((i, start, stop))
        else:
            s = start + int(rng.integers(0, stop - start - window + 1))
            out.append((i, s, s + window))
    return out
