"""Simulated nonlinear systems for the offline demo, examples and tests.

Nothing here downloads anything: the records are generated with numpy and
python-control and follow the same dataset contract as the benchmark loaders
(:func:`sysid_msstcn.data.make_io_dataset`): lists of :class:`xarray.Dataset`
with variables ``u`` ("time", "u_channel") and ``y`` ("time", "y_channel")
and the attributes ``n_init``, ``sampling_time``, ``report_scale`` and
``report_units``.

The system of :func:`make_wiener_hammerstein` is a Wiener-Hammerstein chain,
the structure of the Wiener-Hammerstein 2009 benchmark::

    u --> G1(q) --> f(.) --> G2(q) --> (+ e) --> y

with two discrete-time linear filters (a resonant second-order low-pass
``G1`` and a first-order low-pass ``G2``) around a static nonlinearity with
a saturating odd part and a small even part
(:func:`wiener_hammerstein_nonlinearity`). It is driven by random-phase
multisines (:func:`make_multisine`), so train and test records share the
spectrum but not the phases.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from sysid_msstcn.data.benchmarks import make_io_dataset

__all__ = [
    "make_multisine",
    "make_wiener_hammerstein",
    "simulate_wiener_hammerstein",
    "wiener_hammerstein_nonlinearity",
]

_Split = tuple[list[xr.Dataset], list[xr.Dataset]]


def make_multisine(
    n_samples: int,
    *,
    band: tuple[float, float] = (0.0, 0.3),
    rms: float = 1.0,
    period: int | None = None,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Random-phase multisine with a flat amplitude spectrum.

    Parameters
    ----------
    n_samples : int
        Length of the returned signal (>= 2).
    band : tuple of float, default=(0.0, 0.3)
        Excited band as fractions of the Nyquist frequency, ``0 <= lo < hi
        <= 1``. Every DFT bin of one period inside the band (DC excluded)
        gets the same amplitude and a uniformly random phase.
    rms : float, default=1.0
        Root mean square of the signal.
    period : int or None, default=None
        Period in samples; the signal repeats it until ``n_samples``.
        None: one period of ``n_samples``.
    random_state : int, numpy Generator or None, default=None
        Seed of the phases.

    Returns
    -------
    u : numpy.ndarray of shape (n_samples,)

    Raises
    ------
    ValueError
        If the band is empty or holds no DFT bin of the period.
    """
    n = int(n_samples)
    if n < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples!r}")
    lo, hi = (float(b) for b in band)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"band must satisfy 0 <= lo < hi <= 1, got {band!r}")
    if not rms > 0:
        raise ValueError(f"rms must be positive, got {rms!r}")
    p = n if period is None else int(period)
    if p < 2:
        raise ValueError(f"period must be >= 2, got {period!r}")
    rng = np.random.default_rng(random_state)
    freqs = np.fft.rfftfreq(p) * 2.0  # fraction of Nyquist
    bins = np.flatnonzero((freqs > max(lo, 0.0)) & (freqs <= hi) & (freqs > 0))
    if bins.size == 0:
        raise ValueError(f"band {band!r} holds no frequency bin of a {p}-sample period")
    spectrum = np.zeros(freqs.size, dtype=complex)
    spectrum[bins] = np.exp(2j * np.pi * rng.uniform(size=bins.size))
    one = np.fft.irfft(spectrum, n=p)
    one *= rms / np.sqrt(np.mean(one**2))
    return np.resize(one, n)


def wiener_hammerstein_nonlinearity(x: Any, strength: float = 1.0) -> np.ndarray:
    """Static nonlinearity of the demo system: a soft saturation.

    Parameters
    ----------
    x : array-like
        Output of the first linear block.
    strength : float, default=1.0
        ``s`` in ``f(x) = (1 - s) x + s (tanh(x) + 0.1 x**2)``: 0 gives the
        identity (a linear system), 1 a saturation with an even term.

    Returns
    -------
    f : numpy.ndarray
        Same shape as ``x``.
    """
    x = np.asarray(x, dtype=float)
    s = float(strength)
    return (1.0 - s) * x + s * (np.tanh(x) + 0.1 * x**2)


def _blocks(sampling_time: float):
    """The two linear blocks as discrete-time python-control systems."""
    import control

    # G1: resonant 2nd-order low-pass (continuous design, zero-order hold).
    wn, zeta = 0.6, 0.3  # rad per sample-time unit, damping
    g1c = control.tf([wn**2], [1.0, 2 * zeta * wn, wn**2])
    g1 = control.c2d(g1c, 1.0, method="zoh")
    # G2: first-order low-pass with unit DC gain.
    g2 = control.tf([0.3], [1.0, -0.7], 1.0)
    return g1, g2


def simulate_wiener_hammerstein(
    u: Any, *, strength: float = 1.0, sampling_time: float = 1.0
) -> np.ndarray:
    """Noise-free response of the demo's Wiener-Hammerstein system.

    Parameters
    ----------
    u : array-like of shape (n_samples,)
        Input signal; the system starts at rest.
    strength : float, default=1.0
        Strength of the static nonlinearity (see
        :func:`wiener_hammerstein_nonlinearity`).
    sampling_time : float, default=1.0
        Only stored on the time axis; the dynamics are defined per sample.

    Returns
    -------
    y : numpy.ndarray of shape (n_samples,)
    """
    import control

    u = np.asarray(u, dtype=float).reshape(-1)
    g1, g2 = _blocks(sampling_time)
    t = np.arange(u.size, dtype=float)
    x = control.forced_response(g1, t, u).outputs
    w = wiener_hammerstein_nonlinearity(x, strength)
    return np.asarray(control.forced_response(g2, t, w).outputs, dtype=float)


def make_wiener_hammerstein(
    n_samples: int = 4000,
    *,
    n_test: int | None = None,
    noise_std: float = 0.02,
    strength: float = 1.0,
    band: tuple[float, float] = (0.0, 0.3),
    rms: float = 1.0,
    sampling_time: float = 1.0,
    n_init: int = 100,
    random_state: int | np.random.Generator | None = None,
) -> _Split:
    """Train and test records of a simulated Wiener-Hammerstein system.

    Parameters
    ----------
    n_samples : int, default=4000
        Length of the training record.
    n_test : int or None, default=None
        Length of the test record; None: ``n_samples // 2``.
    noise_std : float, default=0.02
        Standard deviation of white Gaussian output noise (added to the
        training record only, so the test record measures the system).
    strength : float, default=1.0
        Strength of the static nonlinearity (0: linear system).
    band : tuple of float, default=(0.0, 0.3)
        Excited band of the multisines, fractions of the Nyquist frequency.
    rms : float, default=1.0
        RMS of the input multisines.
    sampling_time : float, default=1.0
        Sampling time (s) written to the records.
    n_init : int, default=100
        Warm-up samples of the test record excluded from the score.
    random_state : int, numpy Generator or None, default=None
        Seed of the input phases and of the noise.

    Returns
    -------
    train, test : list of xarray.Dataset
        One record each, in the contract of
        :func:`sysid_msstcn.data.make_io_dataset` (benchmark
        ``"synthetic_wiener_hammerstein"``).

    Examples
    --------
    >>> from sysid_msstcn.data import make_wiener_hammerstein
    >>> train, test = make_wiener_hammerstein(1000, random_state=0)
    >>> train[0]["u"].shape, test[0].attrs["n_init"]
    ((1000, 1), 100)
    """
    n_train = int(n_samples)
    n_tst = n_train // 2 if n_test is None else int(n_test)
    if n_tst <= int(n_init):
        raise ValueError(
            f"the test record ({n_tst} samples) must be longer than n_init={n_init}"
        )
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    rng = np.random.default_rng(random_state)
    records = []
    for split, n, noisy in (("train", n_train, True), ("test", n_tst, False)):
        u = make_multisine(n, band=band, rms=rms, random_state=rng)
        y = simulate_wiener_hammerstein(u, strength=strength)
        if noisy and noise_std > 0:
            y = y + rng.normal(scale=noise_std, size=y.shape)
        records.append(
            make_io_dataset(
                u,
                y,
                sampling_time=sampling_time,
                benchmark="synthetic_wiener_hammerstein",
                split=split,
                name=f"{split} multisine",
                n_init=int(n_init) if split == "test" else 0,
                u_units="V",
                y_units="V",
                report_scale=1.0,
                report_units="V",
                noise_std=float(noise_std),
                strength=float(strength),
            )
        )
    return [records[0]], [records[1]]
