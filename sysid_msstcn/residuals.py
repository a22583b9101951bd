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
  input) points to output feedback, as in closed-loop data, where the
  independence this test assumes does not hold;
* optionally two of Billings and Voon's (1986) **nonlinear tests**: the
  cross-correlation of the centred squared input ``(u - mean(u))**2`` with
  the residual and with the centred squared residual. A linear model of a
  nonlinear system can pass the two linear tests and fail these. (Their
  third test, of the residual against the product of residual and input, is
  not included.) For a two-level input (a PRBS) the squared deviation is an
  affine map of the input (constant when balanced, NaN then), so these tests
  repeat the linear one: they need an input with more than two levels.

Bounds. The autocorrelation bound assumes white residuals (``z / sqrt(N)``).
Every cross-correlation bound is the bound under independence of the two
signals, which allows for coloured signals: the asymptotic variance of
``sqrt(N) r_ab(tau)`` for independent ``a`` and ``b`` is
``sum_k r_aa(k) r_bb(k)`` (Ljung, 16.6), summed here over all lags of the
sample autocorrelations (their product estimates the product of the spectra
without bias when the signals are independent). For white signals this is
the white bound; for slow ones it is much wider, as it must be.

Arguments follow :mod:`sysid_msstcn.metrics`: ``(y_true, y_pred)``, time
first, one array per experiment or a list of them, and ``n_init`` warm-up
samples dropped from each experiment. Correlations pool the experiments
(lagged products are never formed across two experiments) around the pooled
means; the residual's mean is reported separately (``mean``). Like the
metrics, this module imports neither torch nor the model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from scipy import signal, stats

from sysid_msstcn.data._validation import as_experiments
from sysid_msstcn.exceptions import ShapeError

__all__ = ["ResidualAnalysis", "residual_analysis"]

_LAG_SETS = ("all", "past")


def _plain(value: Any) -> Any:
    """Arrays to nested lists with NaN as None; dicts recursively."""
    if isinstance(value, np.ndarray):
        out = value.astype(object)
        out[np.isnan(value.astype(float))] = None
        return out.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, eq=False)
class ResidualAnalysis:
    """Result of :func:`residual_analysis` (all correlations are normalised).

    A channel that is constant over the scored samples (an output reproduced
    exactly, an unused input) has NaN correlations.

    Attributes
    ----------
    lags : ndarray of shape (max_lag + 1,)
        ``0, 1, ..., max_lag``: the lags of ``autocorrelation``.
    cross_lags : ndarray of shape (2 * max_lag + 1,)
        ``-max_lag, ..., max_lag``: the lags of the cross-correlations. Lag
        ``tau`` correlates ``u(t - tau)`` with ``e(t)``: positive lags are past
        inputs, negative lags future ones.
    mean : ndarray of shape (n_outputs,)
        The residual's mean (the correlations are taken around it).
    autocorrelation : ndarray of shape (max_lag + 1, n_outputs)
        ``r_ee(tau)`` per output channel; ``r_ee(0) = 1``.
    autocorrelation_bound : float
        ``z / sqrt(n_samples)``, the bound for white residuals.
    ljung_box : ndarray of shape (n_outputs,)
        ``N (N + 2) sum_{k=1..max_lag} r_ee(k)**2 / (N - k)``.
    ljung_box_pvalue : ndarray of shape (n_outputs,)
        Its p-value, chi-squared with ``max_lag`` degrees of freedom (no
        correction for fitted parameters, which makes it somewhat too large):
        small values reject white residuals.
    cross_correlation : ndarray of shape (2 * max_lag + 1, n_inputs, n_outputs)
        ``r_ue(tau)`` for every input and output channel (an empty inputs
        axis when no input is given).
    cross_correlation_bound : ndarray of shape (n_inputs, n_outputs)
        The bound under independence of input and residual.
    nonlinear_correlation : dict of str to ndarray
        With ``nonlinear=True``: ``"u2_e"`` (squared input, residual) and
        ``"u2_e2"`` (squared input, squared residual), each of shape
        ``(2 * max_lag + 1, n_inputs, n_outputs)``; otherwise empty.
    nonlinear_bound : dict of str to ndarray
        Their bounds under independence, shape ``(n_inputs, n_outputs)``.
    n_samples : int
        Scored samples, all experiments together.
    confidence : float
        Level of the bounds.
    """

    lags: np.ndarray
    cross_lags: np.ndarray
    mean: np.ndarray
    autocorrelation: np.ndarray
    autocorrelation_bound: float
    ljung_box: np.ndarray
    ljung_box_pvalue: np.ndarray
    cross_correlation: np.ndarray
    cross_correlation_bound: np.ndarray
    n_samples: int
    confidence: float
    nonlinear_correlation: dict[str, np.ndarray] = field(default_factory=dict)
    nonlinear_bound: dict[str, np.ndarray] = field(default_factory=dict)

    def fraction_outside(self, lags: str = "all") -> dict[str, np.ndarray]:
        """Share of the tested lags whose correlation lies outside its bound.

        Parameters
        ----------
        lags : {"all", "past"}, default="all"
            Cross-correlation lags counted: ``"all"`` (``-max_lag`` to
            ``max_lag``) or ``"past"`` (1 to ``max_lag``: past inputs only,
            leaving out the feedback side of closed-loop data). The
            autocorrelation always counts lags 1 to ``max_lag``.

        Returns
        -------
        fractions : dict of str to ndarray
            ``"autocorrelation"`` (shape ``(n_outputs,)``),
            ``"cross_correlation"`` (shape ``(n_inputs, n_outputs)``) and,
            with the nonlinear tests, ``"u2_e"`` and ``"u2_e2"``. Under the
            hypotheses about ``1 - confidence`` of the lags fall outside (lags
            of slow signals fall outside together, so a single analysis
            scatters widely around that share). NaN for constant channels.
        """
        if lags not in _LAG_SETS:
            raise ValueError(f"lags must be one of {_LAG_SETS}, got {lags!r}")
        if lags == "past":
            keep = self.cross_lags >= 1
        else:
            keep = np.ones(len(self.cross_lags), dtype=bool)

        def share(values: np.ndarray, bound: Any) -> np.ndarray:
            outside = np.mean(np.abs(values) > bound, axis=0).astype(float)
            return np.where(np.isnan(values).any(axis=0), np.nan, outside)

        out = {
            "autocorrelation": share(
                self.autocorrelation[1:], self.autocorrelation_bound
            ),
            "cross_correlation": share(
                self.cross_correlation[keep], self.cross_correlation_bound
            ),
        }
        for name, values in self.nonlinear_correlation.items():
            out[name] = share(values[keep], self.nonlinear_bound[name])
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary.

        Returns
        -------
        summary : dict
            Every attribute, arrays as nested lists with NaN as None, and
            ``"fraction_outside"`` (all lags) and ``"fraction_outside_past"``
            (past inputs only).
        """
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        out["fraction_outside"] = _plain(self.fraction_outside())
        out["fraction_outside_past"] = _plain(self.fraction_outside("past"))
        return out


def _check_options(max_lag: Any, confidence: Any, n_init: Any, nonlinear: Any) -> None:
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
    if not isinstance(nonlinear, (bool, np.bool_)):
        raise ValueError(f"nonlinear must be True or False, got {nonlinear!r}")


def _records(
    y_true: Any, y_pred: Any, u: Any, n_init: int, max_lag: int
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per-experiment residuals ``(T_i - n_init, n_y)`` and inputs, validated."""
    # u and y_true in one pass (u None: outputs only)
    truth = as_experiments(u, y_true, x_name="u", y_name="y_true")
    pred = as_experiments(None, y_pred, y_name="y_pred")
    if truth.n_experiments != pred.n_experiments:
        raise ShapeError(
            f"y_true has {truth.n_experiments} experiment(s) but y_pred has "
            f"{pred.n_experiments}"
        )
    inputs = None if u is None else [a[n_init:] for a in truth.u]  # type: ignore[index]
    errors = []
    for i, (a, b) in enumerate(zip(truth.y, pred.y, strict=True)):
        where = f" (experiment {i})" if truth.n_experiments > 1 else ""
        assert a is not None and b is not None
        if a.shape != b.shape:
            raise ShapeError(
                f"y_true and y_pred have different shapes{where}: "
                f"{a.shape} vs {b.shape}"
            )
        if a.shape[0] - n_init <= max_lag:
            raise ShapeError(
                f"y_true{where} has {a.shape[0]} time steps: after "
                f"n_init={n_init} they must exceed max_lag={max_lag}"
            )
        with np.errstate(over="ignore"):
            e = (a - b)[n_init:]
        if not np.all(np.isfinite(e)):
            raise ValueError(
                f"y_true - y_pred overflows{where}: the values are too large "
                "to subtract; rescale them"
            )
        errors.append(e)
    return errors, inputs


def _centred(parts: list[np.ndarray], what: str) -> list[np.ndarray]:
    """Pooled mean removed, divided by the pooled std; constant channels NaN."""
    peak = np.max([np.max(np.abs(p), axis=0) for p in parts], axis=0)
    peak = np.where(peak > 0, peak, 1.0)  # scaling first: no overflow
    pooled = np.concatenate(parts) / peak
    mean, std = pooled.mean(axis=0), pooled.std(axis=0)
    flat = ~(std > 0)
    if flat.any():
        warnings.warn(
            f"{what} channel(s) {np.flatnonzero(flat).tolist()} are constant over "
            "the scored samples: their correlations are NaN",
            RuntimeWarning,
            stacklevel=3,
        )
    std = np.where(flat, np.nan, std)
    return [(p / peak - mean) / std for p in parts]


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


def _auto(a: list[np.ndarray]) -> np.ndarray:
    """Pooled autocorrelation at every lag, lag 0 in the middle: (2 T_max - 1, n)."""
    n = sum(len(p) for p in a)
    longest = max(len(p) for p in a)
    out = np.zeros((2 * longest - 1, a[0].shape[1]))
    for a_exp in a:
        pad = longest - len(a_exp)
        for i in range(a_exp.shape[1]):
            full = _lagged(a_exp[:, i], a_exp[:, i], len(a_exp) - 1)
            out[pad : len(out) - pad, i] += full
    return out / n


def _bound(r_aa: np.ndarray, r_bb: np.ndarray, z: float, n: int) -> np.ndarray:
    """``z sqrt(sum_k r_aa(k) r_bb(k) / N)`` for every pair: (n_a, n_b)."""
    var = np.einsum("ki,kj->ij", r_aa, r_bb)
    return z * np.sqrt(np.maximum(var, 0.0) / n)


def residual_analysis(
    y_true: Any,
    y_pred: Any,
    *,
    u: Any = None,
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
        experiment. The residual is ``y_true - y_pred``.
    u : array-like of shape (T, n_inputs) or (T,), list of them, or None
        The inputs of the same experiments; None skips the input tests.
    max_lag : int, default=25
        Largest lag tested (MATLAB's ``resid`` default). Choose it for the
        system's time scale; every experiment needs more than ``max_lag``
        samples after ``n_init``.
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
        NaN or infinity, a residual too large to compute, bad options.

    Warns
    -----
    RuntimeWarning
        A channel constant over the scored samples (its correlations are NaN).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> u = rng.standard_normal(2000)
    >>> y = np.convolve(u, [0.0, 1.0, 0.5])[:2000]
    >>> res = residual_analysis(y, y - 0.1 * rng.standard_normal(2000), u=u)
    >>> bool(res.ljung_box_pvalue[0] > 0.01)
    True
    >>> res = residual_analysis(y, np.roll(y, 1), u=u)  # a wrong delay
    >>> bool(res.fraction_outside("past")["cross_correlation"][0, 0] > 0)
    True
    """
    _check_options(max_lag, confidence, n_init, nonlinear)
    if nonlinear and u is None:
        raise ValueError("nonlinear=True needs the input u")
    errors, inputs = _records(y_true, y_pred, u, int(n_init), int(max_lag))
    e = _centred(errors, "the residual")
    e_mean = np.concatenate(errors).mean(axis=0)
    n = sum(len(p) for p in e)
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    r_ee = _auto(e)  # (2 T_max - 1, n_y), every lag
    mid = r_ee.shape[0] // 2
    auto = r_ee[mid : mid + max_lag + 1]  # lags 0..L
    k = np.arange(1, max_lag + 1)[:, None]
    q = n * (n + 2) * np.sum(auto[1:] ** 2 / (n - k), axis=0)
    n_y = auto.shape[1]
    n_u = 0 if inputs is None else inputs[0].shape[1]
    cross = np.zeros((2 * max_lag + 1, n_u, n_y))
    cross_bound = np.zeros((n_u, n_y))
    extra: dict[str, np.ndarray] = {}
    extra_bound: dict[str, np.ndarray] = {}
    if inputs is not None:
        x = _centred(inputs, "the input")
        cross = _cross(x, e, max_lag)
        cross_bound = _bound(_auto(x), r_ee, z, n)
        if nonlinear:
            u_mean = np.concatenate(inputs).mean(axis=0)
            u2 = _centred([(p - u_mean) ** 2 for p in inputs], "the squared input")
            e2 = _centred([(p - e_mean) ** 2 for p in errors], "the squared residual")
            r_u2 = _auto(u2)
            extra = {"u2_e": _cross(u2, e, max_lag), "u2_e2": _cross(u2, e2, max_lag)}
            extra_bound = {
                "u2_e": _bound(r_u2, r_ee, z, n),
                "u2_e2": _bound(r_u2, _auto(e2), z, n),
            }
    return ResidualAnalysis(
        lags=np.arange(max_lag + 1),
        cross_lags=np.arange(-max_lag, max_lag + 1),
        mean=e_mean,
        autocorrelation=auto,
        autocorrelation_bound=float(z / np.sqrt(n)),
        ljung_box=q,
        ljung_box_pvalue=stats.chi2.sf(q, df=max_lag),
        cross_correlation=cross,
        cross_correlation_bound=cross_bound,
        n_samples=int(n),
        confidence=float(confidence),
        nonlinear_correlation=extra,
        nonlinear_bound=extra_bound,
    )
