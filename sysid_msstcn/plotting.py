"""Figures for simulations, errors, learning curves and handwriting samples.

Only numpy and matplotlib are used (never torch or the model), so the plots
work on saved results as well. Every function builds a
:class:`matplotlib.figure.Figure` directly, without :mod:`matplotlib.pyplot`:
nothing touches the global backend or the pyplot figure registry, and
:func:`save_figure` renders with the Agg canvas, so the functions run on
machines without a display.

Conventions: time-major arrays of shape ``(n_timesteps,)`` or
``(n_timesteps, n_outputs)``; the first ``n_init`` samples are the warm-up
(measured, not predicted) and are shaded in grey.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "offsets_to_strokes",
    "plot_error",
    "plot_handwriting",
    "plot_learning_curves",
    "plot_residual_analysis",
    "plot_simulation",
    "save_figure",
]

_MEASURED = "0.15"
_COLORS = ("C0", "C1", "C2", "C3", "C4", "C5")


def _new_figure(nrows: int, ncols: int = 1, *, size: tuple[float, float]) -> tuple:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _as_2d(a: Any, what: str) -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 1-D or 2-D (time, channel), got {arr.shape}")
    return arr


def _time_axis(n: int, sampling_time: float | None, time: Any) -> np.ndarray:
    if time is not None:
        t = np.asarray(time, dtype=float).reshape(-1)
        if t.size != n:
            raise ValueError(f"time has {t.size} entries but the data {n} samples")
        return t
    return np.arange(n) * (1.0 if sampling_time is None else float(sampling_time))


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Write a figure to a file (format from the suffix) with the Agg canvas.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        A figure from one of the ``plot_*`` functions.
    path : path-like
        Target file, e.g. ``simulation.png``; parent folders are created.
    dpi : int, default=120
        Resolution of raster formats.

    Returns
    -------
    path : pathlib.Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)
    return path


def plot_simulation(
    y_true: Any,
    y_pred: Any | Mapping[str, Any],
    *,
    lower: Any = None,
    upper: Any = None,
    n_init: int = 0,
    sampling_time: float | None = None,
    time: Any = None,
    band_label: str = "90% interval",
    title: str | None = None,
    y_label: str = "y",
    max_points: int | None = 2000,
) -> Figure:
    """Measured versus simulated output, with an optional uncertainty band.

    Parameters
    ----------
    y_true : array-like of shape (n_timesteps,) or (n_timesteps, n_outputs)
        Measured output.
    y_pred : array-like like ``y_true``, or dict of str to such arrays
        Simulated output; a dict plots several models (name → prediction).
    lower, upper : array-like like ``y_true``, optional
        Bounds of a prediction interval around the first prediction.
    n_init : int, default=0
        Warm-up samples (shaded).
    sampling_time : float, optional
        Seconds per sample for the time axis (default: sample index).
    time : array-like of shape (n_timesteps,), optional
        Explicit time axis (overrides ``sampling_time``).
    band_label : str, default="90% interval"
        Legend entry of the band.
    title : str, optional
        Figure title.
    y_label : str, default="y"
        Label of the output axis (channel number appended for several).
    max_points : int or None, default=2000
        Show only the first ``max_points`` samples (None: all), which keeps
        long records readable.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One row of axes per output channel.
    """
    yt = _as_2d(y_true, "y_true")
    preds = dict(y_pred) if isinstance(y_pred, Mapping) else {"simulated": y_pred}
    preds = {k: _as_2d(v, f"y_pred[{k!r}]") for k, v in preds.items()}
    for name, p in preds.items():
        if p.shape != yt.shape:
            raise ValueError(f"prediction {name!r} has shape {p.shape}, not {yt.shape}")
    n = yt.shape[0] if max_points is None else min(yt.shape[0], int(max_points))
    t = _time_axis(yt.shape[0], sampling_time, time)[:n]
    lo = None if lower is None else _as_2d(lower, "lower")
    hi = None if upper is None else _as_2d(upper, "upper")
    n_ch = yt.shape[1]
    fig, axes = _new_figure(n_ch, size=(9.0, 2.6 * n_ch + 0.6))
    for c in range(n_ch):
        ax = axes[c, 0]
        if lo is not None and hi is not None:
            ax.fill_between(
                t, lo[:n, c], hi[:n, c], color="C0", alpha=0.25, lw=0, label=band_label
            )
        ax.plot(t, yt[:n, c], color=_MEASURED, lw=1.0, label="measured")
        for k, (name, p) in enumerate(preds.items()):
            color = _COLORS[k % len(_COLORS)]
            ax.plot(t, p[:n, c], color=color, lw=0.9, alpha=0.9, label=name)
        if n_init:
            ax.axvspan(t[0], t[min(int(n_init), n) - 1], color="0.85", zorder=0)
        ax.set_ylabel(y_label if n_ch == 1 else f"{y_label}[{c}]")
        ax.margins(x=0)
    axes[0, 0].legend(loc="upper right", fontsize="small", ncols=2)
    axes[-1, 0].set_xlabel(
        "time (s)" if sampling_time or time is not None else "sample"
    )
    if title:
        fig.suptitle(title)
    return fig


def _amplitude_db(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sided amplitude spectrum in dB (Hann window), bins as fractions."""
    n = x.shape[0]
    w = np.hanning(n)
    spec = np.abs(np.fft.rfft((x - x.mean(0)) * w[:, None], axis=0))
    spec /= max(w.sum(), 1e-12) / 2
    return np.fft.rfftfreq(n), 20 * np.log10(np.maximum(spec, 1e-12))


def plot_error(
    y_true: Any,
    y_pred: Any | Mapping[str, Any],
    *,
    n_init: int = 0,
    sampling_time: float | None = None,
    title: str | None = None,
) -> Figure:
    """Simulation error over time and its amplitude spectrum.

    The spectrum of the measured output is drawn for reference; the errors
    are computed after the warm-up only.

    Parameters
    ----------
    y_true : array-like of shape (n_timesteps,) or (n_timesteps, n_outputs)
        Measured output.
    y_pred : array-like like ``y_true``, or dict of str to such arrays
        Simulated output(s).
    n_init : int, default=0
        Warm-up samples excluded from the error.
    sampling_time : float, optional
        Seconds per sample (time in s and frequency in Hz); default: sample
        index and cycles per sample.
    title : str, optional
        Figure title.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Two columns (error, spectrum), one row per output channel.
    """
    yt = _as_2d(y_true, "y_true")
    preds = dict(y_pred) if isinstance(y_pred, Mapping) else {"simulated": y_pred}
    n0 = int(n_init)
    if n0 >= yt.shape[0] - 1:
        raise ValueError(f"n_init={n0} leaves fewer than 2 samples to plot")
    ts = 1.0 if sampling_time is None else float(sampling_time)
    t = np.arange(yt.shape[0])[n0:] * ts
    f_true, s_true = _amplitude_db(yt[n0:])
    n_ch = yt.shape[1]
    fig, axes = _new_figure(n_ch, 2, size=(10.0, 2.6 * n_ch + 0.6))
    for c in range(n_ch):
        axes[c, 1].plot(f_true / ts, s_true[:, c], color=_MEASURED, lw=0.8, label="y")
    for k, (name, p) in enumerate(preds.items()):
        err = _as_2d(p, f"y_pred[{name!r}]")[n0:] - yt[n0:]
        color = _COLORS[k % len(_COLORS)]
        f, s = _amplitude_db(err)
        for c in range(n_ch):
            axes[c, 0].plot(t, err[:, c], color=color, lw=0.7, label=name)
            axes[c, 1].plot(f / ts, s[:, c], color=color, lw=0.8, label=f"error {name}")
    for c in range(n_ch):
        axes[c, 0].set_ylabel("error" if n_ch == 1 else f"error[{c}]")
        axes[c, 1].set_ylabel("amplitude (dB)")
        axes[c, 0].margins(x=0)
    axes[0, 0].legend(loc="upper right", fontsize="small")
    axes[0, 1].legend(loc="upper right", fontsize="small")
    axes[-1, 0].set_xlabel("time (s)" if sampling_time else "sample")
    axes[-1, 1].set_xlabel("frequency (Hz)" if sampling_time else "cycles per sample")
    if title:
        fig.suptitle(title)
    return fig


def _stems(ax: Any, lags: np.ndarray, values: np.ndarray, bound: float) -> None:
    ax.axhspan(-bound, bound, color="C0", alpha=0.15, lw=0)
    outside = np.abs(values) > bound
    if len(lags) > 80:  # too many for stems: a line, the lags outside in red
        ax.plot(lags, values, color=_MEASURED, lw=1.0)
        ax.plot(lags[outside], values[outside], ".", color="C3", ms=2.0)
    else:
        ax.vlines(lags, 0.0, values, color=_MEASURED, lw=1.0)
        ax.plot(lags[~outside], values[~outside], "o", color=_MEASURED, ms=2.5)
        ax.plot(lags[outside], values[outside], "o", color="C3", ms=3.5)
    ax.axhline(0.0, color=_MEASURED, lw=0.5)


def plot_residual_analysis(result: Any, *, title: str | None = None) -> Figure:
    """Residual autocorrelation and input cross-correlations with their bounds.

    Parameters
    ----------
    result : ResidualAnalysis
        From :func:`sysid_msstcn.residuals.residual_analysis` (typed ``Any``
        here, since this module imports nothing from the package; any object
        with the same attributes will do).
    title : str, optional
        Figure title.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One row per output channel: the autocorrelation (lags 1 to
        ``max_lag``; its bound assumes white residuals), then one panel per
        input (lags ``-max_lag`` to ``max_lag``; the bound allows for
        coloured signals). The confidence band is shaded; lags outside it are
        red.
    """
    auto = np.asarray(result.autocorrelation, dtype=float)
    cross = np.asarray(result.cross_correlation, dtype=float)
    n_y, n_u = auto.shape[1], cross.shape[1]
    fig, axes = _new_figure(n_y, 1 + n_u, size=(3.6 * (1 + n_u), 2.4 * n_y + 0.6))
    lags, cross_lags = np.asarray(result.lags), np.asarray(result.cross_lags)
    for j in range(n_y):
        _stems(axes[j, 0], lags[1:], auto[1:, j], result.autocorrelation_bound)
        axes[j, 0].set_ylabel(f"r_ee (y{j})" if n_y > 1 else "r_ee")
        for i in range(n_u):
            bound = float(result.cross_correlation_bound[i, j])
            _stems(axes[j, i + 1], cross_lags, cross[:, i, j], bound)
            axes[j, i + 1].set_ylabel(f"r_ue (u{i}, y{j})")
    axes[-1, 0].set_xlabel("lag")
    for i in range(n_u):
        axes[-1, i + 1].set_xlabel("lag (u leads e for lag > 0)")
    axes[0, 0].set_title(f"autocorrelation ({100 * result.confidence:g} % bound)")
    if n_u:
        axes[0, 1].set_title("cross-correlation with the input")
    if title:
        fig.suptitle(title)
    return fig


def _column(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray | None:
    values = [row.get(key) for row in history]
    if all(v is None for v in values):
        return None
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _levels(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray | None:
    rows = [row.get(key) for row in history]
    if not rows or any(r is None or len(r) == 0 for r in rows):
        return None
    return np.array([list(r) for r in rows], dtype=float)


def plot_learning_curves(
    history: Sequence[Mapping[str, Any]], *, title: str | None = None
) -> Figure:
    """ELBO per step and KL per latent level over the training epochs.

    Parameters
    ----------
    history : sequence of dict
        ``MSSTCNRegressor.history_`` (or its JSON copy): one row per epoch
        with keys ``epoch``, ``elbo_per_step``, ``kl_per_level`` and,
        when a validation tail was used, ``val_elbo_per_step`` and
        ``val_kl_per_level``; ``lr`` and ``threshold`` (free bits) are
        drawn when present.

    title : str, optional
        Figure title.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Three panels: ELBO per step (nats, higher is better), KL per level
        (nats per sequence; level 1 is the finest), and learning rate with
        free-bits threshold.
    """
    if len(history) == 0:
        raise ValueError("history is empty: fit the estimator first")
    epochs = _column(history, "epoch")
    if epochs is None:
        epochs = np.arange(1, len(history) + 1, dtype=float)
    fig, axes = _new_figure(1, 3, size=(12.0, 3.4))
    ax_elbo, ax_kl, ax_lr = axes[0]
    for key, label, style in (
        ("elbo_per_step", "train", "-"),
        ("val_elbo_per_step", "validation", "--"),
    ):
        col = _column(history, key)
        if col is not None:
            ax_elbo.plot(epochs, col, style, color="C0", label=label)
    ax_elbo.set_ylabel("ELBO per step (nats)")
    ax_elbo.legend(fontsize="small")
    for key, style, suffix in (
        ("kl_per_level", "-", ""),
        ("val_kl_per_level", "--", " (val)"),
    ):
        kl = _levels(history, key)
        if kl is None:
            continue
        for level in range(kl.shape[1]):
            ax_kl.plot(
                epochs,
                kl[:, level],
                style,
                color=_COLORS[level % len(_COLORS)],
                label=f"KL{level + 1}{suffix}",
            )
    ax_kl.set_ylabel("KL per sequence (nats)")
    if ax_kl.lines:
        ax_kl.legend(fontsize="x-small", ncols=2)
    lr = _column(history, "lr")
    if lr is not None:
        ax_lr.plot(epochs, lr, color="C2", label="learning rate")
        ax_lr.set_ylabel("learning rate")
    thr = _column(history, "threshold")
    if thr is not None:
        twin = ax_lr.twinx()
        twin.plot(epochs, thr, color="C3", ls=":", label="free-bits threshold")
        twin.set_ylabel("free bits (nats)")
    for ax in fig.axes:
        ax.set_xlabel("epoch")
        ax.ticklabel_format(axis="y", useOffset=False)
    if title:
        fig.suptitle(title)
    return fig


def offsets_to_strokes(offsets: Any) -> list[np.ndarray]:
    """Turn ``(pen, dx, dy)`` rows into pen-down strokes of absolute points.

    Parameters
    ----------
    offsets : array-like of shape (T, 3)
        Rows ``(pen, dx, dy)``: the offset from the previous point and the
        pen bit of the point reached (1 = last point of its stroke), the
        convention of :func:`sysid_msstcn.data.strokes_to_offsets`. Pen
        values are thresholded at 0.5.

    Returns
    -------
    strokes : list of numpy.ndarray of shape (n_points, 2)
        Positions (cumulative sums, starting at the origin), split after
        every point whose pen bit is 1.
    """
    rows = np.asarray(offsets, dtype=float)
    if rows.ndim != 2 or rows.shape[1] != 3:
        raise ValueError(f"offsets must have shape (T, 3), got {rows.shape}")
    points = np.vstack([np.zeros((1, 2)), np.cumsum(rows[:, 1:3], axis=0)])
    ends = np.r_[False, rows[:, 0] > 0.5]
    cuts = np.flatnonzero(ends) + 1
    return [s for s in np.split(points, cuts) if len(s)]


def plot_handwriting(
    samples: Any,
    *,
    titles: Sequence[str] | None = None,
    ncols: int = 1,
    linewidth: float = 1.2,
) -> Figure:
    """Draw handwriting sequences, one panel each.

    Parameters
    ----------
    samples : array-like of shape (T, 3), (n, T, 3) or list of (T_i, 3)
        Rows ``(pen, dx, dy)`` (see :func:`offsets_to_strokes`), e.g. the
        output of ``MSSTCNRegressor.sample`` on a handwriting model.
    titles : sequence of str, optional
        One title per sample.
    ncols : int, default=1
        Panels per row.
    linewidth : float, default=1.2
        Stroke width.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    if isinstance(samples, np.ndarray) and samples.ndim == 2:
        seqs = [samples]
    else:
        seqs = [np.asarray(s, dtype=float) for s in samples]
    if not seqs:
        raise ValueError("no samples to draw")
    n = len(seqs)
    ncols = max(1, min(int(ncols), n))
    nrows = -(-n // ncols)
    fig, axes = _new_figure(nrows, ncols, size=(6.0 * ncols, 1.8 * nrows + 0.3))
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i >= n:
            continue
        for stroke in offsets_to_strokes(seqs[i]):
            ax.plot(stroke[:, 0], stroke[:, 1], color="k", lw=linewidth)
        ax.set_aspect("equal", adjustable="datalim")
        if titles is not None and i < len(titles):
            ax.set_title(titles[i], fontsize="small")
    return fig
