"""Correlation tests of a model's residuals: whiteness and independence of the input.

The classical validation of an identified model (Ljung, *System
Identification*, 2nd ed., section 16.6; MATLAB's ``resid``) looks at the
residuals ``e = y_true - y_pred``:

* their **autocorrelation**: a model that has captured the dynamics leaves
  one-step-ahead prediction errors that are white; the Ljung-Box statistic
  sums the squared autocorrelations into one test;
* their **cross-correlation with the input**: a model that has captured how
  the input drives the output leaves residuals that no past input explains,
  whatever its noise model. This is the test that applies to *simulation*
  errors (an output-error model, a free run), whose autocorrelation is not
  expected to vanish. Correlation at negative lags (the residual leading the
  input) points to output feedback, as in closed-loop data;
* optionally Billings and Voon's (1986) **nonlinear tests**: the
  cross-correlation of the centred squared input ``u**2 - mean(u**2)`` with
  the residual and with the centred squared residual. A linear model of a
  nonlinear system can pass the two linear tests and fail these.

The bounds are confidence bounds under the hypothesis tested. The
autocorrelation bound assumes white residuals (``z / sqrt(N)``). The
cross-correlation bound allows for coloured residuals and inputs: the
asymptotic variance of ``sqrt(N) r_ue(tau)`` when ``u`` and ``e`` are
independent is ``sum_k r_ee(k) r_uu(k)`` (Ljung, 16.6), estimated over
``|k| <= max_lag`` with Bartlett weights ``1 - |k| / (max_lag + 1)``, which
keep it non-negative. The nonlinear tests use the white bound, as Billings
and Voon do: they are meant for one-step-ahead errors.

Arguments follow :mod:`sysid_msstcn.metrics`: ``(y_true, y_pred)``, time
first, one array per experiment or a list of them, and ``n_init`` warm-up
samples dropped from each experiment. Correlations pool the experiments
(lagged products are never formed across two experiments). Like the metrics,
this module imports neither torch nor the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from scipy import signal, stats

from sysid_msstcn.data._validation import as_experiments
from sysid_msstcn.exceptions import ShapeError

__all__ = ["ResidualAnalysis", "residual_analysis"]


@dataclass(frozen=True)
class ResidualAnalysis:
    """Result of :func:`residual_analysis` (all correlations are normalised).

    Attributes
    ----------
    lags : ndarray of shape (max_lag + 1,)
        ``0, 1, ..., max_lag``: the lags of ``autocorrelation``.
    cross_lags : ndarray of shape (2 * max_lag + 1,)
        ``-max_lag, ..., max_lag``: the lags of the cross-correlations. Lag
        ``tau`` correlates ``u(t - tau)`` with ``e(t)``: positive lags are past
        inputs, negative lags future ones.
    autocorrelation : ndarray of shape (max_lag + 1, n_outputs)
        ``r_ee(tau)`` per output channel; ``r_ee(0) = 1``.
    autocorrelation_bound : float
        ``z / sqrt(n_samples)``, the bound for white residuals.
    ljung_box : ndarray of shape (n_outputs,)
        ``N (N + 2) sum_{k=1..max_lag} r_ee(k)**2 / (N - k)``.
    ljung_box_pvalue : ndarray of shape (n_outputs,)
        Its p-value, chi-squared with ``max_lag`` degrees of freedom: small
        values reject white residuals.
    cross_correlation : ndarray of shape (2 * max_lag + 1, n_inputs, n_outputs)
        ``r_ue(tau)`` for every input and output channel (empty inputs axis
        when no input is given).
    cross_correlation_bound : ndarray of shape (n_inputs, n_outputs)
        The bound under independence, allowing for coloured signals.
    nonlinear : dict of str to ndarray
        With ``nonlinear=True``: ``"u2_e"`` and ``"u2_e2"``, each of shape
        ``(2 * max_lag + 1, n_inputs, n_outputs)`` (bound:
        ``autocorrelation_bound``); otherwise empty.
    n_samples : int
        Scored samples, all experiments together.
    confidence : float
        Level of the bounds.
    """

    lags: np.ndarray
    cross_lags: np.ndarray
    autocorrelation: np.ndarray
    autocorrelation_bound: float
    ljung_box: np.ndarray
    ljung_box_pvalue: np.ndarray
    cross_correlation: np.ndarray
    cross_correlation_bound: np.ndarray
    n_samples: int
    confidence: float
    nonlinear: dict[str, np.ndarray] = field(default_factory=dict)

    def fraction_outside(self) -> dict[str, np.ndarray]:
        """Share of the tested lags whose correlation lies outside its bound.

        Returns
        -------
        fractions : dict of str to ndarray
            ``"autocorrelation"`` (lags 1 to ``max_lag``, shape
            ``(n_outputs,)``), ``"cross_correlation"`` (all lags, shape
            ``(n_inputs, n_outputs)``) and, with the nonlinear tests, one
            entry each. Under the hypotheses about ``1 - confidence`` of the
            lags fall outside.
        """
        out = {
            "autocorrelation": np.mean(
                np.abs(self.autocorrelation[1:]) > self.autocorrelation_bound, axis=0
            ),
            "cross_correlation": np.mean(
                np.abs(self.cross_correlation) > self.cross_correlation_bound, axis=0
            ),
        }
        for name, values in self.nonlinear.items():
            out[name] = np.mean(np.abs(values) > self.autocorrelation_bound, axis=0)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: every array as nested lists, plus the fractions."""

        def plain(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return value.tolist()
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        out = {f.name: plain(getattr(self, f.name)) for f in fields(self)}
        out["fraction_outside"] = plain(self.fraction_outside())
        return out


def _check_options(max_lag: Any, confidence: Any, n_init: Any) -> None:
    for name, value, low in (("max_lag", max_lag, 1), ("n_init", n_init, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if isinstance(confidence, bool) or not isinstance(
        confidence, (int, float, np.floating)
    ):
        raise ValueError(f"confidence must be a float, got {type(confidence).__name__}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(
            f"confidence must lie strictly between 0 and 1, got {confidence}"
        )


def _records(
    y_true: Any, y_pred: Any, u: Any, n_init: int, max_lag: int
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per-experiment residuals ``(T_i - n_init, n_y)`` and inputs, validated."""
    truth = as_experiments(None, y_true, y_name="y_true")
    pred = as_experiments(None, y_pred, y_name="y_pred")
    if truth.n_experiments != pred.n_experiments:
        raise ShapeError(
            f"y_true has {truth.n_experiments} experiment(s) but y_pred has "
            f"{pred.n_experiments}"
        )
    inputs = None
    if u is not None:
        data = as_experiments(u, y_true, x_name="u", y_name="y_true")
        inputs = [a[n_init:] for a in data.u]  # type: ignore[index]
    errors = []
    for i, (a, b) in enumerate(zip(truth.y, pred.y, strict=True)):
        where = f" (experiment {i})" if truth.n_experiments > 1 else ""
        if a.shape != b.shape:  # type: ignore[union-attr]
            raise ShapeError(
                f"y_true and y_pred have different shapes{where}: "
                f"{a.shape} vs {b.shape}"  # type: ignore[union-attr]
            )
        if a.shape[0] - n_init <= max_lag:  # type: ignore[union-attr]
            raise ShapeError(
                f"y_true{where} has {a.shape[0]} time steps: after n_init={n_init} "  # type: ignore[union-attr]
                f"they must exceed max_lag={max_lag}"
            )
        errors.append((a - b)[n_init:])  # type: ignore[operator]
    return errors, inputs


def _centred(parts: list[np.ndarray], what: str) -> list[np.ndarray]:
    """Remove the pooled mean and divide by the pooled (population) std."""
    pooled = np.concatenate(parts)
    std = pooled.std(axis=0)
    flat = np.flatnonzero(~(std > 0))
    if flat.size:
        raise ValueError(
            f"{what} channel {int(flat[0])} is constant over the scored samples; "
            "its correlation is undefined"
        )
    mean = pooled.mean(axis=0)
    return [(p - mean) / std for p in parts]


def _lagged(a: np.ndarray, b: np.ndarray, max_lag: int) -> np.ndarray:
    """``sum_t b(t) a(t - tau)`` of two 1-D signals for ``|tau| <= max_lag``."""
    mid = len(a) - 1  # index of lag 0 in the "full" correlation
    full = signal.correlate(b, a, mode="full")
    return full[mid - max_lag : mid + max_lag + 1]


def _cross(a: list[np.ndarray], b: list[np.ndarray], max_lag: int) -> np.ndarray:
    """``sum_t b_j(t) a_i(t - tau) / N`` for ``|tau| <= max_lag``: (2L+1, n_a, n_b)."""
    n = sum(len(p) for p in a)
    out = np.zeros((2 * max_lag + 1, a[0].shape[1], b[0].shape[1]))
    for a_exp, b_exp in zip(a, b, strict=True):
        for i in range(a_exp.shape[1]):
            for j in range(b_exp.shape[1]):
                out[:, i, j] += _lagged(a_exp[:, i], b_exp[:, j], max_lag)
    return out / n


def _auto(a: list[np.ndarray], max_lag: int) -> np.ndarray:
    """Each channel's ``sum_t a(t) a(t - tau) / N`` for ``|tau| <= max_lag``."""
    n = sum(len(p) for p in a)
    out = np.zeros((2 * max_lag + 1, a[0].shape[1]))
    for a_exp in a:
        for i in range(a_exp.shape[1]):
            out[:, i] += _lagged(a_exp[:, i], a_exp[:, i], max_lag)
    return out / n


def residual_analysis(
    y_true: Any,
    y_pred: Any,
    u: Any = None,
    *,
    max_lag: int = 25,
    n_init: int = 0,
    confidence: float = 0.99,
    nonlinear: bool = False,
) -> ResidualAnalysis:
    """Autocorrelation of the residuals and their cross-correlation with the input.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (T, n_outputs) or (T,), or lists of them
        Measured and predicted (simulated) outputs, time first, one array per
        experiment.
    u : array-like of shape (T, n_inputs) or (T,), list of them, or None
        The inputs of the same experiments; None skips the input tests.
    max_lag : int, default=25
        Largest lag tested (MATLAB's ``resid`` default). Every experiment needs
        more than ``max_lag`` samples after ``n_init``.
    n_init : int, default=0
        Warm-up samples dropped from each experiment, as in the metrics.
    confidence : float, default=0.99
        Level of the bounds (MATLAB's ``resid`` default).
    nonlinear : bool, default=False
        Also run Billings and Voon's tests with the squared input (needs ``u``).

    Returns
    -------
    ResidualAnalysis
        Correlations, bounds and the Ljung-Box test.

    Raises
    ------
    ShapeError
        Mismatched shapes or numbers of experiments, or records too short for
        ``max_lag``.
    ValueError
        NaN or infinity, a constant signal (a residual that is exactly zero,
        a constant input), bad options.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> u = rng.standard_normal(2000)
    >>> y = np.convolve(u, [0.0, 1.0, 0.5])[:2000]
    >>> res = residual_analysis(y, y - 0.1 * rng.standard_normal(2000), u)
    >>> bool(res.ljung_box_pvalue[0] > 0.01)
    True
    >>> res = residual_analysis(y, np.roll(y, 1), u)  # a wrong delay
    >>> bool(res.fraction_outside()["cross_correlation"][0, 0] > 0)
    True
    """
    _check_options(max_lag, confidence, n_init)
    if nonlinear and u is None:
        raise ValueError("nonlinear=True needs the input u")
    errors, inputs = _records(y_true, y_pred, u, int(n_init), int(max_lag))
    e = _centred(errors, "the residual")
    n = sum(len(p) for p in e)
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    white = z / np.sqrt(n)
    r_ee = _auto(e, max_lag)  # (2L+1, n_y), symmetric in the lag
    auto = r_ee[max_lag:]  # lags 0..L
    k = np.arange(1, max_lag + 1)[:, None]
    q = n * (n + 2) * np.sum(auto[1:] ** 2 / (n - k), axis=0)
    n_y = auto.shape[1]
    n_u = 0 if inputs is None else inputs[0].shape[1]
    cross = np.zeros((2 * max_lag + 1, n_u, n_y))
    cross_bound = np.zeros((n_u, n_y))
    extra: dict[str, np.ndarray] = {}
    if inputs is not None:
        x = _centred(inputs, "the input")
        cross = _cross(x, e, max_lag)
        # Bartlett-weighted sum_k r_ee(k) r_uu(k), k = -L..L: (n_u, n_y)
        weights = 1.0 - np.abs(np.arange(-max_lag, max_lag + 1)) / (max_lag + 1)
        r_uu = _auto(x, max_lag)  # (2L+1, n_u)
        var = np.einsum("k,ki,kj->ij", weights, r_uu, r_ee)
        cross_bound = z * np.sqrt(np.maximum(var, 0.0) / n)
        if nonlinear:
            u2 = _centred([p**2 for p in inputs], "the squared input")
            e2 = _centred([p**2 for p in errors], "the squared residual")
            extra = {"u2_e": _cross(u2, e, max_lag), "u2_e2": _cross(u2, e2, max_lag)}
    return ResidualAnalysis(
        lags=np.arange(max_lag + 1),
        cross_lags=np.arange(-max_lag, max_lag + 1),
        autocorrelation=auto,
        autocorrelation_bound=float(white),
        ljung_box=q,
        ljung_box_pvalue=stats.chi2.sf(q, df=max_lag),
        cross_correlation=cross,
        cross_correlation_bound=cross_bound,
        n_samples=int(n),
        confidence=float(confidence),
        nonlinear=extra,
    )
