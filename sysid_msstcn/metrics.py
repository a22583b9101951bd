"""Error metrics for simulated sequences, probabilistic scores and ELBO reports.

All deterministic metrics follow scikit-learn's argument order
``(y_true, y_pred)`` and work per output channel along the time axis:

* ``y_true`` and ``y_pred`` have shape ``(T,)`` or ``(T, n_y)`` (time first by
  default, see ``time_axis``), or are lists of such arrays (one per
  experiment). For lists, the first ``n_init`` samples are removed from *each*
  experiment and the rest are concatenated before the metric is computed.
* ``n_init`` is the warm-up (state initialisation) window excluded from the
  score, as in the nonlinear-benchmark protocol.
* ``multioutput="raw_values"`` returns one value per channel (a float for
  one-dimensional ``y_true``), ``"uniform_average"`` the mean over channels,
  and an array of weights a weighted mean.

NRMSE divides the RMSE by the (population) standard deviation of ``y_true``
over the scored samples, as in ``nonlinear_benchmarks.error_metrics`` and
deepSI; it is *not* SysIdentPy's range-normalised NRMSE. ``r2`` equals
``1 - nrmse**2`` computed over the scored samples only (unlike
``nonlinear_benchmarks.error_metrics.R_squared``, which ignores ``n_init``).
A constant ``y_true`` (zero variance) raises a ValueError in ``nrmse``,
``fit_index`` and ``r2``.

Errors are computed with exact power-of-two scaling, so RMSE, MAE and NRMSE
stay accurate from about 1e-300 to 1e300 (no overflow of the squares). The
variance of ``y_true`` is numpy's: a signal whose squared deviations underflow
(every value below about 1e-154) counts as constant. Weights given as
``multioutput`` must be finite, non-negative and not all zero. Every bad
argument raises a ValueError (:class:`~sysid_msstcn.exceptions.ShapeError`
for shapes, ``DataTypeError`` for non-numbers) that names the argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sysid_msstcn.data._validation import DataTypeError, as_experiments
from sysid_msstcn.exceptions import ShapeError

__all__ = [
    "crps_ensemble",
    "crps_gaussian",
    "elbo_report",
    "fit_index",
    "gaussian_nll",
    "interval_coverage",
    "mae",
    "nats_to_bits",
    "nrmse",
    "r2",
    "rmse",
]

_erf = np.frompyfunc(math.erf, 1, 1)


# ----------------------------------------------------------------------------
# argument handling
# ----------------------------------------------------------------------------
def _check_n_init(n_init: Any) -> int:
    if isinstance(n_init, bool) or not isinstance(n_init, (int, np.integer)):
        raise ValueError(f"n_init must be an int, got {type(n_init).__name__}")
    if n_init < 0:
        raise ValueError(f"n_init must be >= 0, got {n_init}")
    return int(n_init)


def _check_scored(length: int, n_init: int, where: str) -> None:
    if n_init >= length:
        raise ValueError(
            f"n_init={n_init} leaves no sample to score: y_true{where} has only "
            f"{length} time steps"
        )


def _check_time_axis(time_axis: Any) -> None:
    if time_axis is None:
        return
    if isinstance(time_axis, bool) or not isinstance(time_axis, (int, np.integer)):
        raise ValueError(
            f"time_axis must be an int (or None), got {type(time_axis).__name__} "
            f"{time_axis!r}"
        )


def _time_first(arr: Any, time_axis: int) -> Any:
    _check_time_axis(time_axis)
    if time_axis in (0, None):
        return arr
    if isinstance(arr, (list, tuple)) and arr and hasattr(arr[0], "ndim"):
        return [_time_first(a, time_axis) for a in arr]
    arr = np.asarray(arr)
    if arr.ndim < 2:
        return arr
    if not -arr.ndim <= time_axis < arr.ndim:
        raise ValueError(f"time_axis={time_axis} is out of range for {arr.ndim}-D data")
    return np.moveaxis(arr, time_axis, 0)


def _stack(
    arrays: dict[str, Any], n_init: int, time_axis: int
) -> tuple[dict[str, np.ndarray], bool]:
    """Validate same-shaped arrays, drop ``n_init`` per experiment, concatenate.

    Returns the concatenated ``(N, n_y)`` arrays keyed like ``arrays`` and
    whether ``y_true`` was one-dimensional.
    """
    n_init = _check_n_init(n_init)
    names = list(arrays)
    ref = as_experiments(
        None, _time_first(arrays[names[0]], time_axis), y_name=names[0]
    )
    out = {names[0]: ref.y}
    for name in names[1:]:
        data = as_experiments(None, _time_first(arrays[name], time_axis), y_name=name)
        if data.n_experiments != ref.n_experiments:
            raise ShapeError(
                f"{names[0]} has {ref.n_experiments} experiment(s) but {name} has "
                f"{data.n_experiments}"
            )
        for i, (a, b) in enumerate(zip(ref.y, data.y, strict=True)):
            if a.shape != b.shape:  # type: ignore[union-attr]
                where = f" (experiment {i})" if ref.n_experiments > 1 else ""
                raise ShapeError(
                    f"{names[0]} and {name} have different shapes{where}: "
                    f"{a.shape} vs {b.shape}"  # type: ignore[union-attr]
                )
        out[name] = data.y
    for i, a in enumerate(ref.y):
        where = f" of experiment {i}" if ref.n_experiments > 1 else ""
        _check_scored(a.shape[0], n_init, where)  # type: ignore[union-attr]
    stacked = {k: np.concatenate([a[n_init:] for a in v]) for k, v in out.items()}
    return stacked, ref.y_1d


def _reduce(values: np.ndarray, multioutput: Any, y_1d: bool) -> float | np.ndarray:
    if isinstance(multioutput, str):
        if multioutput == "raw_values":
            return float(values[0]) if y_1d else values
        if multioutput == "uniform_average":
            return float(np.mean(values))
        raise ValueError(
            "multioutput must be 'raw_values', 'uniform_average' or an array of "
            f"weights, got {multioutput!r}"
        )
    try:
        if multioutput is None:
            raise TypeError("None")
        weights = np.asarray(multioutput, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            "multioutput must be 'raw_values', 'uniform_average' or an array of "
            f"weights, got {multioutput!r}"
        ) from exc
    if weights.shape != values.shape:
        raise ShapeError(
            f"multioutput weights have shape {weights.shape} but there are "
            f"{values.shape[0]} output channels"
        )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(
            "multioutput weights must be finite, >= 0 and not all zero, got "
            f"{weights.tolist()}"
        )
    return float(np.average(values, weights=weights))


def _pow2(magnitude: np.ndarray) -> np.ndarray:
    """Powers of two at least as large as ``magnitude`` (1 where it is 0)."""
    _, exponent = np.frexp(np.where(magnitude > 0, magnitude, 1.0))
    return np.ldexp(1.0, exponent)


def _difference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """``a - b`` as ``(d, f)`` with ``a - b == f * d``; halved on overflow."""
    with np.errstate(over="ignore", invalid="ignore"):
        d = a - b
    if np.all(np.isfinite(d)):
        return d, 1.0
    return a / 2 - b / 2, 2.0


def _rms(a: np.ndarray) -> np.ndarray:
    """Root mean square per column without overflow or underflow.

    Columns are divided by a power of two near their largest magnitude
    (exact), so values from about 1e-300 to 1e300 give accurate results.
    """
    scale = _pow2(np.max(np.abs(a), axis=0))
    return scale * np.sqrt(np.mean((a / scale) ** 2, axis=0))


def _mean_abs(a: np.ndarray) -> np.ndarray:
    """Mean absolute value per column without overflow (see :func:`_rms`)."""
    scale = _pow2(np.max(np.abs(a), axis=0))
    return scale * np.mean(np.abs(a / scale), axis=0)


def _std_true(y_true: np.ndarray) -> np.ndarray:
    magnitude = np.max(np.abs(y_true), axis=0)
    # scaling down by a power of two is exact: it only avoids overflow of the
    # squares of large values (1e200); small values keep numpy's std
    down = np.where(magnitude > 1.0, _pow2(magnitude), 1.0)
    std = down * np.std(y_true / down, axis=0)
    scale = np.maximum(magnitude, np.finfo(float).tiny)
    flat = std <= 1e-10 * scale
    if np.any(flat):
        raise ValueError(
            "y_true has zero variance over the scored samples in channel(s) "
            f"{np.flatnonzero(flat).tolist()}; NRMSE, fit index and R^2 are "
            "undefined for a constant signal"
        )
    return std


# ----------------------------------------------------------------------------
# point metrics
# ----------------------------------------------------------------------------
def rmse(
    y_true: Any,
    y_pred: Any,
    *,
    n_init: int = 0,
    multioutput: str | Sequence[float] = "raw_values",
    time_axis: int = 0,
) -> float | np.ndarray:
    """Root mean squared error per output channel.

    Parameters
    ----------
    y_true : array-like of shape (T,) or (T, n_y), or list of those
        Measured outputs.
    y_pred : array-like, same shape as ``y_true``
        Simulated or predicted outputs.
    n_init : int, default=0
        Number of warm-up samples skipped at the start of every experiment.
    multioutput : {"raw_values", "uniform_average"} or array of weights
        How channels are combined; ``"raw_values"`` gives one value per
        channel (a float for 1-D ``y_true``).
    time_axis : int, default=0
        Time axis of the arrays.

    Returns
    -------
    rmse : float or ndarray of shape (n_y,)
    """
    d, y_1d = _stack({"y_true": y_true, "y_pred": y_pred}, n_init, time_axis)
    diff, factor = _difference(d["y_pred"], d["y_true"])
    values = factor * _rms(diff)
    return _reduce(values, multioutput, y_1d)


def mae(
    y_true: Any,
    y_pred: Any,
    *,
    n_init: int = 0,
    multioutput: str | Sequence[float] = "raw_values",
    time_axis: int = 0,
) -> float | np.ndarray:
    """Mean absolute error per output channel (arguments as :func:`rmse`).

    Returns
    -------
    mae : float or ndarray of shape (n_y,)
    """
    d, y_1d = _stack({"y_true": y_true, "y_pred": y_pred}, n_init, time_axis)
    diff, factor = _difference(d["y_pred"], d["y_true"])
    values = factor * _mean_abs(diff)
    return _reduce(values, multioutput, y_1d)


def _nrmse_raw(y_true: Any, y_pred: Any, n_init: int, time_axis: int) -> tuple:
    d, y_1d = _stack({"y_true": y_true, "y_pred": y_pred}, n_init, time_axis)
    std = _std_true(d["y_true"])
    diff, factor = _difference(d["y_pred"], d["y_true"])
    err = factor * _rms(diff)
    return err / std, y_1d


def nrmse(
    y_true: Any,
    y_pred: Any,
    *,
    n_init: int = 0,
    multioutput: str | Sequence[float] = "raw_values",
    time_axis: int = 0,
) -> float | np.ndarray:
    """RMSE divided by the standard deviation of ``y_true`` (per channel).

    Arguments as :func:`rmse`. The standard deviation is the population one
    (``ddof=0``) over the scored samples (after ``n_init``).

    Returns
    -------
    nrmse : float or ndarray of shape (n_y,)

    Raises
    ------
    ValueError
        If a channel of ``y_true`` is constant over the scored samples.
    """
    values, y_1d = _nrmse_raw(y_true, y_pred, n_init, time_axis)
    return _reduce(values, multioutput, y_1d)


def fit_index(
    y_true: Any,
    y_pred: Any,
    *,
    n_init: int = 0,
    multioutput: str | Sequence[float] = "raw_values",
    time_axis: int = 0,
) -> float | np.ndarray:
    """Fit index (best fit rate) in percent: ``100 * (1 - NRMSE)``.

    Arguments as :func:`rmse`. 100 is a perfect fit, 0 is no better than the
    mean of ``y_true``; it can be negative.

    Returns
    -------
    fit : float or ndarray of shape (n_y,)
    """
    values, y_1d = _nrmse_raw(y_true, y_pred, n_init, time_axis)
    return _reduce(100.0 * (1.0 - values), multioutput, y_1d)


def r2(
    y_true: Any,
    y_pred: Any,
    *,
    n_init: int = 0,
    multioutput: str | Sequence[float] = "raw_values",
    time_axis: int = 0,
) -> float | np.ndarray:
    """Coefficient of determination ``1 - MSE / Var(y_true)`` per channel.

    Arguments as :func:`rmse`. Both the MSE and the variance use only the
    scored samples (after ``n_init``), so ``r2 == 1 - nrmse**2``.

    Returns
    -------
    r2 : float or ndarray of shape (n_y,)
    """
    values, y_1d = _nrmse_raw(y_true, y_pred, n_init, time_axis)
    return _reduce(1.0 - values**2, multioutput, y_1d)


# ----------------------------------------------------------------------------
# probabilistic metrics
# ----------------------------------------------------------------------------
def _positive_std(std: np.ndarray) -> np.ndarray:
    if np.any(std <= 0):
        raise ValueError("std must be > 0 everywhere; found zero or negative values")
    return std


def _broadcast_like(value: Any, like: Any, name: str = "std") -> Any:
    """Broadcast a scalar ``value`` to the shape of ``like`` (lists too)."""
    if np.ndim(value) != 0 or isinstance(value, (list, tuple)):
        return value
    if isinstance(value, (str, bytes)) or value is None:
        raise DataTypeError(f"{name} must be a number or an array, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise DataTypeError(
            f"{name} must be a number or an array, got {value!r}"
        ) from exc
    if isinstance(like, (list, tuple)) and like and hasattr(like[0], "shape"):
        return [np.full(np.shape(a), number) for a in like]
    return np.full(np.shape(like), number)


def gaussian_nll(
    y_true: Any,
    mean: Any,
    std: Any,
    *,
    n_init: int = 0,
    multioutput: str | Sequence[float] = "raw_values",
    time_axis: int = 0,
) -> float | np.ndarray:
    """Mean Gaussian negative log-likelihood per time step, in nats.

    ``0.5 * log(2 pi std^2) + (y - mean)^2 / (2 std^2)`` averaged over the
    scored samples, per channel.

    Parameters
    ----------
    y_true : array-like of shape (T,) or (T, n_y), or list of those
        Measured outputs.
    mean, std : array-like, same shape as ``y_true`` (``std`` may be a scalar)
        Predictive mean and standard deviation (> 0).
    n_init, multioutput, time_axis
        As in :func:`rmse`. ``"uniform_average"`` averages over channels; the
        NLL of the joint (independent) vector per step is the sum over
        channels of the raw values.

    Returns
    -------
    nll : float or ndarray of shape (n_y,)
    """
    std = _broadcast_like(std, y_true)
    arrays = {"y_true": y_true, "mean": mean, "std": std}
    d, y_1d = _stack(arrays, n_init, time_axis)
    sigma = _positive_std(d["std"])
    z = (d["y_true"] - d["mean"]) / sigma
    nll = 0.5 * np.log(2 * np.pi) + np.log(sigma) + 0.5 * z**2
    return _reduce(np.mean(nll, axis=0), multioutput, y_1d)


def crps_gaussian(
    y_true: Any,
    mean: Any,
    std: Any,
    *,
    n_init: int = 0,
    multioutput: str | Sequence[float] = "raw_values",
    time_axis: int = 0,
) -> float | np.ndarray:
    """Continuous ranked probability score of a Gaussian forecast (closed form).

    ``CRPS = std * (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))`` with
    ``z = (y - mean) / std`` (Gneiting & Raftery 2007), averaged over the
    scored samples per channel, in the units of ``y``. Lower is better.

    Parameters
    ----------
    y_true, mean, std, n_init, multioutput, time_axis
        As in :func:`gaussian_nll`.

    Returns
    -------
    crps : float or ndarray of shape (n_y,)
    """
    std = _broadcast_like(std, y_true)
    arrays = {"y_true": y_true, "mean": mean, "std": std}
    d, y_1d = _stack(arrays, n_init, time_axis)
    sigma = _positive_std(d["std"])
    z = (d["y_true"] - d["mean"]) / sigma
    cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)).astype(float))
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    crps = sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))
    return _reduce(np.mean(crps, axis=0), multioutput, y_1d)


def crps_ensemble(
    y_true: Any,
    samples: Any,
    *,
    n_init: int = 0,
    multioutput: str | Sequence[float] = "raw_values",
    fair: bool = False,
) -> float | np.ndarray:
    """CRPS of an ensemble (samples) forecast.

    ``CRPS = E|X - y| - 0.5 E|X - X'|`` with the expectations over the
    empirical distribution of the samples (``fair=True`` uses the unbiased
    ``1 / (m (m - 1))`` normalisation of the second term instead).

    Parameters
    ----------
    y_true : array-like of shape (T,) or (T, n_y), or list of those
        Measured outputs, time first.
    samples : array-like of shape (n_samples, T) or (n_samples, T, n_y)
        Sampled trajectories (or a list of such arrays, one per experiment).
    n_init, multioutput
        As in :func:`rmse`.
    fair : bool, default=False
        Use the fair (unbiased) ensemble CRPS.

    Returns
    -------
    crps : float or ndarray of shape (n_y,)
    """
    n_init = _check_n_init(n_init)
    ref = as_experiments(None, y_true, y_name="y_true")
    sample_list = list(samples) if ref.is_list else [samples]
    if len(sample_list) != ref.n_experiments:
        raise ShapeError(
            f"y_true has {ref.n_experiments} experiment(s) but samples has "
            f"{len(sample_list)}"
        )
    parts = []
    y_list: list[np.ndarray] = ref.y  # type: ignore[assignment]
    for i, (y_i, s) in enumerate(zip(y_list, sample_list, strict=True)):
        where = f" of experiment {i}" if ref.is_list else ""
        try:
            s = np.asarray(s, dtype=float)
        except (TypeError, ValueError) as exc:
            raise DataTypeError(
                f"samples{where} must hold numbers only ({exc})"
            ) from exc
        s = s[..., None] if s.ndim == 2 else s
        shape = np.shape(sample_list[i])
        if s.ndim != 3 or s.shape[0] < 1 or s.shape[1:] != y_i.shape:
            raise ShapeError(
                f"samples{where} must have shape (n_samples, T) or (n_samples, T, "
                f"n_y) matching y_true {y_i.shape}, got {shape}"
            )
        if parts and s.shape[0] != parts[0].shape[-1]:
            raise ShapeError("all experiments need the same number of samples")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"samples{where} contain NaN or inf")
        _check_scored(y_i.shape[0], n_init, where)
        parts.append(np.moveaxis(s, 0, -1)[n_init:])  # (T - n_init, n_y, m)
    m = parts[0].shape[-1]
    if fair and m < 2:
        raise ValueError("fair=True needs at least 2 samples")
    ens = np.concatenate(parts)
    y = np.concatenate([y_i[n_init:] for y_i in y_list])[..., None]
    term1 = np.mean(np.abs(ens - y), axis=-1)
    ens_sorted = np.sort(ens, axis=-1)
    k = np.arange(1, m + 1)
    spread = 2.0 * np.sum((2 * k - m - 1) * ens_sorted, axis=-1) / m**2
    if fair:
        spread *= m / (m - 1)
    crps = term1 - 0.5 * spread
    return _reduce(np.mean(crps, axis=0), multioutput, ref.y_1d)


def interval_coverage(
    y_true: Any,
    lower: Any,
    upper: Any,
    *,
    n_init: int = 0,
    multioutput: str | Sequence[float] = "raw_values",
    time_axis: int = 0,
) -> float | np.ndarray:
    """Fraction of samples of ``y_true`` inside ``[lower, upper]``.

    Parameters
    ----------
    y_true, lower, upper : array-like of the same shape, or lists of those
        Measurements and interval bounds (``lower <= upper``).
    n_init, multioutput, time_axis
        As in :func:`rmse`.

    Returns
    -------
    coverage : float or ndarray of shape (n_y,)
        In ``[0, 1]``; compare with the nominal coverage of the interval.
    """
    arrays = {"y_true": y_true, "lower": lower, "upper": upper}
    d, y_1d = _stack(arrays, n_init, time_axis)
    if np.any(d["lower"] > d["upper"]):
        raise ValueError("lower > upper at some scored samples")
    inside = (d["y_true"] >= d["lower"]) & (d["y_true"] <= d["upper"])
    return _reduce(np.mean(inside, axis=0), multioutput, y_1d)


# ----------------------------------------------------------------------------
# ELBO reporting
# ----------------------------------------------------------------------------
def _numbers(value: Any, name: str) -> np.ndarray:
    """``value`` as a float array; a DataTypeError naming it otherwise."""
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataTypeError(f"{name} must hold numbers only ({exc})") from exc


def _is_count(value: Any) -> bool:
    """Whether ``value`` is a positive whole number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return False
    return bool(np.isfinite(value)) and int(value) == value and value >= 1


def nats_to_bits(x: Any) -> Any:
    """Convert nats to bits (divide by ``ln 2``).

    Parameters
    ----------
    x : float or array-like
        A quantity in nats.

    Returns
    -------
    bits : float or ndarray
    """
    try:
        out = np.asarray(x, dtype=float) / math.log(2.0)
    except (TypeError, ValueError) as exc:
        raise DataTypeError(
            f"x must be a number or an array of numbers ({exc})"
        ) from exc
    return float(out) if out.ndim == 0 else out


def elbo_report(
    elbo_per_sequence: Any,
    kl_per_level: Any,
    n_steps: Any,
    n_dims: int,
) -> dict[str, Any]:
    """Summarise ELBO values the way the MS-STCN paper reports them.

    Parameters
    ----------
    elbo_per_sequence : array-like of shape (n_sequences,)
        ELBO of each sequence in nats (higher is better; no free bits).
    kl_per_level : array-like of shape (n_levels,) or (n_sequences, n_levels)
        KL divergence per latent level in nats per sequence, level 0 first =
        the level closest to the data (the paper's KL1). A 1-D array is taken
        as already averaged over sequences.
    n_steps : int or array-like of shape (n_sequences,)
        Number of time steps of each sequence.
    n_dims : int
        Number of output dimensions per time step.

    Returns
    -------
    report : dict
        ``n_sequences``; ``elbo_per_sequence`` (mean, nats);
        ``elbo_per_step`` and ``elbo_per_dim`` (total ELBO divided by the total
        number of steps, and of steps times dims, nats);
        ``bits_per_dim`` (negative ELBO per dimension in bits: an upper bound
        on the NLL, lower is better); ``kl_per_level`` (ndarray, nats per
        sequence, KL1 first); ``kl_total``; and ``"KL1"``, ``"KL2"``, ... as
        floats (Table 2 of the paper).
    """
    elbo = np.atleast_1d(_numbers(elbo_per_sequence, "elbo_per_sequence"))
    if elbo.ndim != 1 or elbo.size == 0 or not np.all(np.isfinite(elbo)):
        raise ValueError("elbo_per_sequence must be a non-empty 1-D finite array")
    steps = _numbers(n_steps, "n_steps")
    try:
        steps = np.broadcast_to(steps, elbo.shape)
    except ValueError as exc:
        raise ShapeError(
            f"n_steps has shape {steps.shape} but there are {elbo.size} sequences"
        ) from exc
    if not np.all(np.isfinite(steps)) or np.any(steps < 1):
        raise ValueError(f"n_steps must be finite and >= 1, got {steps.tolist()}")
    if not _is_count(n_dims):
        raise ValueError(f"n_dims must be a positive int, got {n_dims!r}")
    kl = _numbers(kl_per_level, "kl_per_level")
    if kl.ndim == 2:
        if kl.shape[0] != elbo.size:
            raise ShapeError(
                f"kl_per_level has {kl.shape[0]} rows but there are {elbo.size} "
                "sequences"
            )
        kl = kl.mean(axis=0)
    if kl.ndim != 1 or not np.all(np.isfinite(kl)):
        raise ValueError("kl_per_level must be a finite 1-D or 2-D array")
    total_steps = float(steps.sum())
    report: dict[str, Any] = {
        "n_sequences": int(elbo.size),
        "elbo_per_sequence": float(elbo.mean()),
        "elbo_per_step": float(elbo.sum() / total_steps),
        "elbo_per_dim": float(elbo.sum() / (total_steps * n_dims)),
        "bits_per_dim": nats_to_bits(-elbo.sum() / (total_steps * n_dims)),
        "kl_per_level": kl,
        "kl_total": float(kl.sum()),
    }
    for level, value in enumerate(kl, start=1):
        report[f"KL{level}"] = float(value)
    return report
