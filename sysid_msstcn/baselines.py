"""ARX/NARX and SUBNET baselines with the estimator protocol of MS-STCN.

Every class is a scikit-learn regressor with the same protocol as
``MSSTCNRegressor``:

* ``fit(X, y)``: ``X`` of shape ``(T, n_u)`` (inputs) and ``y`` of shape
  ``(T,)`` or ``(T, n_y)``; lists of experiments are accepted. Inputs and
  outputs are standardised internally (``normalize=True``).
* ``predict(X, y_init=None)``: **free-run simulation** from the inputs alone.
  ``y_init`` holds the first ``n`` measured outputs (``n >= n_init_``), which
  are returned unchanged at the head of the output; the model is simulated
  from sample ``n`` on. Without ``y_init`` the first ``n_init_`` outputs are
  set to the training mean of ``y``.
* ``score(X, y)``: R² (averaged over channels) of the free-run simulation over
  ``y[n_init_:]`` with ``y[:n_init_]`` as the warm-up.
* ``n_init_`` is the largest lag of the model.

All input conversion goes through
:func:`sysid_msstcn.data._validation.as_experiments`.

``SubnetRegressor`` wraps deepSI's SUBNET, which is installed separately
(``pip install --no-deps "deepsi==0.4.4" cloudpickle``; see the README): deepSI
0.4.4 pins ``nonlinear_benchmarks<0.2`` while this package needs ``>=1.0.1``,
so no extra can depend on it.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any

import control
import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.neural_network import MLPRegressor
from sklearn.utils.validation import check_is_fitted

from sysid_msstcn import metrics
from sysid_msstcn.data._validation import (
    ExperimentData,
    as_experiments,
    check_consistent_channels,
)
from sysid_msstcn.exceptions import DivergenceWarning, ShapeError

try:  # optional dependency (the "baselines" extra)
    from sysidentpy.basis_function import Polynomial
except ImportError:  # pragma: no cover
    Polynomial = object  # type: ignore[assignment,misc]

__all__ = [
    "ARXRegressor",
    "MLPNARXRegressor",
    "PolynomialNARXRegressor",
    "SubnetRegressor",
    "deepsi_available",
]

_DEEPSI_INSTALL = 'pip install --no-deps "deepsi==0.4.4" cloudpickle'


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _lag_matrix(u: np.ndarray, y: np.ndarray, na: int, nb: int, nk: int) -> tuple:
    """Regressors ``[y(t-1..t-na), u(t-nk..t-nk-nb+1)]`` and targets ``y(t)``.

    Rows start at ``t0 = max(na, nk + nb - 1)``; each lag block holds all
    channels.
    """
    t0, T = max(na, nk + nb - 1), y.shape[0]
    cols = [y[t0 - i : T - i] for i in range(1, na + 1)]
    cols += [u[t0 - lag : T - lag] for lag in range(nk, nk + nb)]
    return np.hstack(cols), y[t0:]


class _SimulationBase(RegressorMixin, MultiOutputMixin, BaseEstimator):
    """Shared fit/predict/score plumbing (normalisation, warm-up, lists)."""

    def _max_lag(self) -> int:
        raise NotImplementedError

    def _fit_normalized(self, us: list[np.ndarray], ys: list[np.ndarray]) -> None:
        raise NotImplementedError

    def _simulate(self, u: np.ndarray, y_head: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- data handling ---------------------------------------------------------
    def _set_scaling(self, data: ExperimentData) -> None:
        u_all = np.concatenate(data.u)  # type: ignore[arg-type]
        y_all = np.concatenate(data.y)  # type: ignore[arg-type]
        if self.normalize:
            self.x_mean_, self.y_mean_ = u_all.mean(axis=0), y_all.mean(axis=0)
            x_std, y_std = u_all.std(axis=0), y_all.std(axis=0)
            self.x_scale_ = np.where(x_std > 0, x_std, 1.0)
            self.y_scale_ = np.where(y_std > 0, y_std, 1.0)
        else:
            self.x_mean_ = np.zeros(u_all.shape[1])
            self.y_mean_ = np.zeros(y_all.shape[1])
            self.x_scale_ = np.ones(u_all.shape[1])
            self.y_scale_ = np.ones(y_all.shape[1])

    def fit(self, X: Any, y: Any) -> _SimulationBase:
        """Fit the model on one or several experiments.

        Parameters
        ----------
        X : array-like of shape (T, n_u) or (T,), or list of those
            Inputs.
        y : array-like of shape (T,) or (T, n_y), or list of those
            Outputs, aligned with ``X``.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        n_init = self._max_lag()
        data = as_experiments(
            X,
            y,
            allow_no_input=False,
            min_length=n_init + 2,
            min_length_reason=f"the model needs more than its largest lag ({n_init})",
        )
        if data.y[0] is None:
            name = type(self).__name__
            raise ValueError(
                f"{name} requires y to be passed, but the target y is None"
            )
        self.n_features_in_ = data.n_inputs
        self.n_outputs_ = data.n_outputs
        self.n_init_ = n_init
        self._y_1d = data.y_1d
        self._set_scaling(data)
        us = [(u - self.x_mean_) / self.x_scale_ for u in data.u]  # type: ignore
        ys = [(v - self.y_mean_) / self.y_scale_ for v in data.y]  # type: ignore
        self._fit_normalized(us, ys)
        return self

    def predict(self, X: Any, y_init: Any = None) -> np.ndarray | list[np.ndarray]:
        """Simulate the model free-run from the inputs.

        Parameters
        ----------
        X : array-like of shape (T, n_u) or (T,), or list of those
            Inputs of the experiment(s) to simulate.
        y_init : array-like of shape (n, n_y) or (n,), list of those, or None
            Measured outputs of the first ``n >= n_init_`` samples (warm-up).
            They are returned unchanged at the head of the prediction. None
            uses the training mean of ``y`` for the first ``n_init_`` samples.

        Returns
        -------
        y_pred : ndarray of shape (T,) or (T, n_y), or list of those
            Simulated outputs, shaped like ``y`` in ``fit``; a list if ``X``
            is a list.
        """
        check_is_fitted(self, "n_init_")
        data = as_experiments(X, y_init, allow_no_input=False, y_prefix=True)
        name = type(self).__name__
        check_consistent_channels(
            data, self.n_features_in_, self.n_outputs_, estimator_name=name
        )
        preds = []
        for i, (u, y0) in enumerate(zip(data.u, data.y, strict=True)):
            if y0 is None:  # warm-up at the training mean
                n_head = min(self.n_init_, u.shape[0])  # type: ignore[union-attr]
                y0 = np.tile(self.y_mean_, (n_head, 1))
            elif y0.shape[0] < self.n_init_:
                where = f" of experiment {i}" if data.is_list else ""
                raise ShapeError(
                    f"y_init{where} has {y0.shape[0]} sample(s) but {name} needs "
                    f"at least n_init_={self.n_init_} to start the simulation"
                )
            un = (u - self.x_mean_) / self.x_scale_  # type: ignore[operator]
            yn = (y0 - self.y_mean_) / self.y_scale_
            sim = self._simulate(un, yn) * self.y_scale_ + self.y_mean_
            sim[: y0.shape[0]] = y0  # the warm-up is returned unchanged
            preds.append(sim[:, 0] if self._y_1d else sim)
        return preds if data.is_list else preds[0]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of the free-run simulation after the warm-up window.

        Parameters
        ----------
        X : array-like of shape (T, n_u), or list of those
            Inputs.
        y : array-like of shape (T,) or (T, n_y), or list of those
            Measured outputs; ``y[:n_init_]`` is used as ``y_init``.
        sample_weight : None
            Not supported (must be None).

        Returns
        -------
        score : float
            R² over ``y[n_init_:]``, averaged over output channels.
        """
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported")
        check_is_fitted(self, "n_init_")
        data = as_experiments(X, y, allow_no_input=False)
        y_init = None
        if self.n_init_ > 0:
            y_init = [v[: self.n_init_] for v in data.y]  # type: ignore[index]
        y_pred = self.predict(data.u, y_init)
        return float(
            metrics.r2(
                data.y, y_pred, n_init=self.n_init_, multioutput="uniform_average"
            )
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags


class ARXRegressor(_SimulationBase):
    """Linear (MIMO) ARX model fitted by least squares, simulated with python-control.

    The model, in the original units, is ::

        y(t) = sum_{i=1..na} A_i y(t-i) + sum_{j=0..nb-1} B_j u(t-nk-j) + c

    with every output regressed on the past of all outputs and inputs.

    Parameters
    ----------
    na : int, default=2
        Number of past outputs (>= 1).
    nb : int, default=2
        Number of input terms (>= 1).
    nk : int, default=0
        Input delay; ``nk=0`` includes a direct feed-through ``u(t)``.
    fit_intercept : bool, default=True
        Whether to fit the constant ``c``.
    normalize : bool, default=True
        Standardise inputs and outputs before the least-squares fit (the
        coefficients are reported in the original units).

    Attributes
    ----------
    ar_coef_ : ndarray of shape (na, n_y, n_y)
        ``A_i`` (regression sign convention: ``y(t) = A_1 y(t-1) + ...``).
    x_coef_ : ndarray of shape (nb, n_y, n_u)
        ``B_j``, the coefficient of ``u(t - nk - j)``.
    intercept_ : ndarray of shape (n_y,)
        The constant ``c``.
    system_ : control.StateSpace
        Discrete-time state-space realisation used by :meth:`predict`; its
        inputs are ``[u, 1]`` (the constant input carries the intercept), its
        state is ``[y(t-1..t-na), u(t-1..t-nk-nb+1)]``. A property built from
        ``ss_matrices_`` (python-control systems cannot be pickled).
    ss_matrices_ : tuple of ndarray
        The matrices ``(A, B, C, D)`` of ``system_``.
    n_init_ : int
        Largest lag ``max(na, nk + nb - 1)``: the warm-up length.
    n_features_in_, n_outputs_ : int
        Number of input and output channels.
    x_mean_, x_scale_, y_mean_, y_scale_ : ndarray
        Normalisation statistics.

    Notes
    -----
    The free-run simulation starts at sample ``n = len(y_init)`` from the state
    built from ``y_init[n-na:n]`` and ``X[n-nk-nb+1:n]`` and runs
    ``control.forced_response`` on the remaining inputs.
    """

    def __init__(
        self,
        na: int = 2,
        nb: int = 2,
        nk: int = 0,
        *,
        fit_intercept: bool = True,
        normalize: bool = True,
    ) -> None:
        self.na = na
        self.nb = nb
        self.nk = nk
        self.fit_intercept = fit_intercept
        self.normalize = normalize

    def _max_lag(self) -> int:
        na = _check_int("na", self.na, 1)
        nb = _check_int("nb", self.nb, 1)
        nk = _check_int("nk", self.nk, 0)
        return max(na, nk + nb - 1)

    def _fit_normalized(self, us: list[np.ndarray], ys: list[np.ndarray]) -> None:
        na, nb, nk = self.na, self.nb, self.nk
        parts = [_lag_matrix(u, y, na, nb, nk) for u, y in zip(us, ys, strict=True)]
        phi = np.vstack([p[0] for p in parts])
        target = np.vstack([p[1] for p in parts])
        if self.fit_intercept:
            phi = np.hstack([phi, np.ones((phi.shape[0], 1))])
        theta, *_ = np.linalg.lstsq(phi, target, rcond=None)  # (n_reg, n_y)
        n_y, n_u = ys[0].shape[1], us[0].shape[1]
        sy, su = self.y_scale_, self.x_scale_
        a_n = theta[: na * n_y].T.reshape(n_y, na, n_y).transpose(1, 0, 2)
        b_n = theta[na * n_y : na * n_y + nb * n_u].T.reshape(n_y, nb, n_u)
        b_n = b_n.transpose(1, 0, 2)
        c_n = theta[-1] if self.fit_intercept else np.zeros(n_y)
        # back to original units: y = my + Sy y_n, u = mu + Su u_n
        self.ar_coef_ = sy[None, :, None] * a_n / sy[None, None, :]
        self.x_coef_ = sy[None, :, None] * b_n / su[None, None, :]
        self.intercept_ = (
            self.y_mean_
            + sy * c_n
            - self.ar_coef_.sum(axis=0) @ self.y_mean_
            - self.x_coef_.sum(axis=0) @ self.x_mean_
        )
        self.ss_matrices_ = self._state_space()

    @property
    def system_(self) -> control.StateSpace:
        """Discrete-time :class:`control.StateSpace` realisation (``dt=True``).

        Built on access from ``ss_matrices_`` because python-control systems
        cannot be pickled.
        """
        check_is_fitted(self, "ss_matrices_")
        return control.ss(*self.ss_matrices_, True)

    def _state_space(self) -> tuple[np.ndarray, ...]:
        na, nb, nk = self.na, self.nb, self.nk
        n_y, n_u = self.n_outputs_, self.n_features_in_
        d = nk + nb - 1  # largest input lag; lags 1..d are states
        n_x = na * n_y + d * n_u
        b_lag = np.zeros((d + 1, n_y, n_u))  # coefficient of u(t - lag)
        b_lag[nk : nk + nb] = self.x_coef_
        C = np.hstack([*self.ar_coef_, *b_lag[1:]])  # (n_y, n_x)
        D = np.hstack([b_lag[0], self.intercept_[:, None]])
        A = np.zeros((n_x, n_x))
        B = np.zeros((n_x, n_u + 1))
        A[:n_y], B[:n_y] = C, D
        A[n_y : na * n_y, : (na - 1) * n_y] = np.eye((na - 1) * n_y)
        if d > 0:
            off = na * n_y
            B[off : off + n_u, :n_u] = np.eye(n_u)
            A[off + n_u :, off : off + (d - 1) * n_u] = np.eye((d - 1) * n_u)
        return A, B, C, D

    def _simulate(self, u: np.ndarray, y_head: np.ndarray) -> np.ndarray:
        # simulate in original units with the state-space model
        u = u * self.x_scale_ + self.x_mean_
        y_head = y_head * self.y_scale_ + self.y_mean_
        T, n = u.shape[0], y_head.shape[0]
        out = np.zeros((T, self.n_outputs_))
        out[:n] = y_head
        if n < T:
            d = self.nk + self.nb - 1
            x0 = np.concatenate(
                [y_head[n - i] for i in range(1, self.na + 1)]
                + [u[n - i] for i in range(1, d + 1)]
            )
            v = np.hstack([u[n:], np.ones((T - n, 1))]).T
            resp = control.forced_response(self.system_, inputs=v, initial_state=x0)
            out[n:] = np.atleast_2d(resp.outputs).reshape(self.n_outputs_, -1).T
        return (out - self.y_mean_) / self.y_scale_


class _PrecomputedPolynomial(Polynomial):
    """Polynomial basis whose ``fit`` returns a given regressor matrix.

    It lets SysIdentPy's FROLS run on regressors stacked from several
    experiments (SysIdentPy itself accepts only one record): lagged
    regressors are built per experiment, so no lag crosses a boundary.
    """

    def __init__(self, degree: int, psi: np.ndarray) -> None:
        super().__init__(degree=degree)
        self.psi = psi

    def fit(
        self,
        data,
        max_lag=1,
        ylag=1,
        xlag=1,
        model_type="NARMAX",
        predefined_regressors=None,
    ):
        """Return the precomputed matrix (or its selected columns)."""
        if predefined_regressors is None:
            return self.psi
        return self.psi[:, predefined_regressors]


class PolynomialNARXRegressor(_SimulationBase):
    """Polynomial NARX model with SysIdentPy FROLS structure selection.

    One multiple-input single-output model is selected per output channel
    with forward regression orthogonal least squares (FROLS, SysIdentPy 0.9)
    on the normalised data and simulated free-run with SysIdentPy.

    Parameters
    ----------
    degree : int, default=2
        Polynomial degree of the candidate regressors.
    ylag : int, default=2
        Output lags ``1..ylag``.
    xlag : int, default=2
        Input lags ``1..xlag`` (for every input channel; no feed-through).
    n_terms : int or None, default=None
        Number of terms kept; None selects it with ``info_criteria``.
    info_criteria : {"aic", "aicc", "bic", "fpe", "lilc"}, default="aic"
        Information criterion used when ``n_terms`` is None.
    n_info_values : int, default=15
        Largest model size examined by the information criterion.
    normalize : bool, default=True
        Standardise inputs and outputs before the fit.

    Attributes
    ----------
    models_ : list of sysidentpy.model_structure_selection.FROLS
        One fitted model per output channel.
    n_init_ : int
        ``max(ylag, xlag)``.
    n_features_in_, n_outputs_ : int
        Number of input and output channels.
    x_mean_, x_scale_, y_mean_, y_scale_ : ndarray
        Normalisation statistics.

    Notes
    -----
    SysIdentPy is MISO only, so with several outputs each output is a separate
    model that feeds back only its own past (the outputs are decoupled).
    Several experiments are supported by stacking per-experiment regressor
    matrices before the structure selection.
    """

    def __init__(
        self,
        degree: int = 2,
        ylag: int = 2,
        xlag: int = 2,
        n_terms: int | None = None,
        *,
        info_criteria: str = "aic",
        n_info_values: int = 15,
        normalize: bool = True,
    ) -> None:
        self.degree = degree
        self.ylag = ylag
        self.xlag = xlag
        self.n_terms = n_terms
        self.info_criteria = info_criteria
        self.n_info_values = n_info_values
        self.normalize = normalize

    def _max_lag(self) -> int:
        _check_int("degree", self.degree, 1)
        return max(_check_int("ylag", self.ylag, 1), _check_int("xlag", self.xlag, 1))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # no feed-through term (lags start at 1): i.i.d. data cannot be fitted
        tags.regressor_tags.poor_score = True
        return tags

    def _xlag(self, n_u: int) -> int | list[list[int]]:
        if n_u == 1:
            return self.xlag
        return [list(range(1, self.xlag + 1)) for _ in range(n_u)]

    def _fit_normalized(self, us: list[np.ndarray], ys: list[np.ndarray]) -> None:
        try:
            from sysidentpy.model_structure_selection import FROLS
            from sysidentpy.parameter_estimation import LeastSquares
            from sysidentpy.utils.information_matrix import build_lagged_matrix
        except ImportError as exc:  # pragma: no cover
            raise ImportError(
                "PolynomialNARXRegressor needs SysIdentPy: "
                "pip install 'sysid_msstcn[baselines]'"
            ) from exc

        xlag, max_lag = self._xlag(us[0].shape[1]), self.n_init_
        self.models_ = []
        for j in range(ys[0].shape[1]):
            psis, targets = [], []
            for u, y in zip(us, ys, strict=True):
                lagged = build_lagged_matrix(
                    u, y[:, j : j + 1], xlag, self.ylag, "NARMAX"
                )
                basis = Polynomial(degree=self.degree)
                psis.append(basis.fit(lagged, max_lag, self.ylag, xlag, "NARMAX"))
                targets.append(y[max_lag:, j : j + 1])
            psi, target = np.vstack(psis), np.vstack(targets)
            n_regressors = psi.shape[1]
            n_terms = self.n_terms
            if n_terms is not None:
                n_terms = min(_check_int("n_terms", n_terms, 1), n_regressors)
            model = FROLS(
                ylag=self.ylag,
                xlag=xlag,
                order_selection=self.n_terms is None,
                n_terms=None
                if self.n_terms is None
                else min(self.n_terms, n_regressors),
                info_criteria=self.info_criteria,
                n_info_values=min(self.n_info_values, n_regressors),
                estimator=LeastSquares(),
                basis_function=_PrecomputedPolynomial(self.degree, psi),
                model_type="NARMAX",
            )
            # y[max_lag:] is the stacked target; the first rows are ignored
            y_fake = np.vstack([np.zeros((max_lag, 1)), target])
            model.fit(X=np.zeros((y_fake.shape[0], us[0].shape[1])), y=y_fake)
            model.basis_function = Polynomial(degree=self.degree)
            self.models_.append(model)

    def _simulate(self, u: np.ndarray, y_head: np.ndarray) -> np.ndarray:
        T, n, lag = u.shape[0], y_head.shape[0], self.n_init_
        out = np.zeros((T, self.n_outputs_))
        out[:n] = y_head
        if n >= T:
            return out
        for j, model in enumerate(self.models_):
            sim = model.predict(X=u[n - lag :], y=y_head[n - lag :, j : j + 1])
            out[n:, j] = np.asarray(sim).reshape(-1)[lag:]
        return out


_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "logistic": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "identity": lambda z: z,
}


class MLPNARXRegressor(_SimulationBase):
    """NARX model with a multilayer perceptron, simulated by output feedback.

    An :class:`sklearn.neural_network.MLPRegressor` is trained one step ahead
    on the regressors ``[y(t-1..t-na), u(t-nk..t-nk-nb+1)]`` (all channels,
    normalised) and simulated free-run by feeding back its own outputs.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(64,)
        Hidden layer widths.
    na : int, default=2
        Number of past outputs (>= 1).
    nb : int, default=2
        Number of input terms (>= 1).
    nk : int, default=0
        Input delay (``0`` includes ``u(t)``).
    activation : {"relu", "tanh", "logistic", "identity"}, default="tanh"
        Hidden activation.
    solver : {"lbfgs", "adam", "sgd"}, default="lbfgs"
        Optimiser of the MLP (L-BFGS suits the small data sets of sysid).
    alpha : float, default=1e-4
        L2 penalty.
    max_iter : int, default=500
        Maximum number of iterations.
    random_state : int, RandomState instance or None, default=None
        Seed of the weight initialisation.
    normalize : bool, default=True
        Standardise inputs and outputs.

    Attributes
    ----------
    mlp_ : sklearn.neural_network.MLPRegressor
        The fitted one-step-ahead network.
    n_iter_ : int
        Number of iterations run by the MLP solver.
    n_init_ : int
        ``max(na, nk + nb - 1)``.
    n_features_in_, n_outputs_ : int
        Number of input and output channels.
    x_mean_, x_scale_, y_mean_, y_scale_ : ndarray
        Normalisation statistics.
    """

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (64,),
        na: int = 2,
        nb: int = 2,
        nk: int = 0,
        *,
        activation: str = "tanh",
        solver: str = "lbfgs",
        alpha: float = 1e-4,
        max_iter: int = 500,
        random_state: Any = None,
        normalize: bool = True,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.na = na
        self.nb = nb
        self.nk = nk
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.max_iter = max_iter
        self.random_state = random_state
        self.normalize = normalize

    def _max_lag(self) -> int:
        na = _check_int("na", self.na, 1)
        nb = _check_int("nb", self.nb, 1)
        nk = _check_int("nk", self.nk, 0)
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, "
                f"got {self.activation!r}"
            )
        return max(na, nk + nb - 1)

    def _fit_normalized(self, us: list[np.ndarray], ys: list[np.ndarray]) -> None:
        parts = [
            _lag_matrix(u, y, self.na, self.nb, self.nk)
            for u, y in zip(us, ys, strict=True)
        ]
        phi = np.vstack([p[0] for p in parts])
        target = np.vstack([p[1] for p in parts])
        self.mlp_ = MLPRegressor(
            hidden_layer_sizes=self.hidden_layer_sizes,
            activation=self.activation,
            solver=self.solver,
            alpha=self.alpha,
            max_iter=self.max_iter,
            random_state=self.random_state,
        )
        self.mlp_.fit(phi, target if target.shape[1] > 1 else target[:, 0])
        self.n_iter_ = self.mlp_.n_iter_

    def _simulate(self, u: np.ndarray, y_head: np.ndarray) -> np.ndarray:
        # a hand-written forward pass: MLPRegressor.predict per step is slow
        T, n, n_y = u.shape[0], y_head.shape[0], self.n_outputs_
        act = _ACTIVATIONS[self.activation]
        weights, biases = self.mlp_.coefs_, self.mlp_.intercepts_
        out = np.zeros((T, n_y))
        out[:n] = y_head
        u_lags = range(self.nk, self.nk + self.nb)
        for t in range(n, T):
            h = np.concatenate(
                [out[t - i] for i in range(1, self.na + 1)] + [u[t - k] for k in u_lags]
            )
            for w, b in zip(weights[:-1], biases[:-1], strict=True):
                h = act(h @ w + b)
            out[t] = h @ weights[-1] + biases[-1]
        return out


# --------------------------------------------------------------------- SUBNET
def _import_deepsi():
    try:
        import deepSI
        import deepSI.fitting
    except ImportError as exc:
        raise ImportError(
            f"SubnetRegressor needs deepSI, which is not installed or does not "
            f"import ({exc}). Install it with: {_DEEPSI_INSTALL} (see the README, "
            f"'Install': deepSI 0.4.4 pins nonlinear_benchmarks<0.2 in its "
            f"metadata, hence --no-deps)"
        ) from exc
    return deepSI


def deepsi_available() -> bool:
    """Whether deepSI (needed by :class:`SubnetRegressor`) can be imported.

    Returns
    -------
    available : bool
    """
    try:
        _import_deepsi()
    except ImportError:
        return False
    return True


class SubnetRegressor(_SimulationBase):
    """SUBNET: deepSI's encoder state-space network, fitted on truncated simulations.

    The model of Beintema, Toth and Schoukens (L4DC 2021; Automatica 2023)
    as implemented by ``deepSI.SUBNET`` (deepSI 0.4.4)::

        x(n) = encoder(u[n-nb:n], y[n-na:n])
        x(t+1) = f(x(t), u(t))
        y(t) = h(x(t))            (h(x(t), u(t)) with feedthrough)

    ``f``, ``h`` and the encoder are deepSI's ``MLP_res_net`` (an MLP plus a
    linear bypass). Training minimises deepSI's ``compute_NMSE`` over windows
    of ``horizon`` samples simulated from the encoded state (the truncated
    multi-step simulation loss), with Adam, on the normalised data.

    Parameters
    ----------
    nx : int, default=10
        State dimension.
    na : int, default=20
        Past outputs read by the encoder.
    nb : int, default=20
        Past inputs read by the encoder.
    horizon : int, default=50
        Simulation length of the training windows (deepSI's ``T``).
    n_hidden_layers : int, default=2
        Hidden layers of ``f``, ``h`` and the encoder.
    n_hidden_nodes : int, default=64
        Width of those hidden layers.
    feedthrough : bool, default=False
        Let ``h`` see ``u(t)``.
    max_iter : int, default=100
        Epochs; one epoch visits every training window once.
    max_time : float or None, default=None
        Wall-clock budget of ``fit`` in seconds: training stops after the
        optimiser step that uses it up. None: no limit.
    batch_size : int, default=256
        Windows per optimiser step (deepSI's default).
    learning_rate : float, default=1e-3
        Adam step size (deepSI's default).
    stride : int, default=1
        Offset between consecutive training windows.
    validation_fraction : float, default=0.2
        Tail of each experiment simulated after every epoch to keep the best
        weights (deepSI keeps the best model on its validation set too); 0
        keeps the last epoch.
    device : str, default="auto"
        Training device: "auto" (CUDA when available), "cpu", "cuda" or
        "cuda:N". Prediction runs on the CPU.
    random_state : int, numpy Generator or None, default=None
        Seed of the weight initialisation and the window order.
    verbose : int, default=0
        1 prints one line per epoch.
    normalize : bool, default=True
        Standardise inputs and outputs (deepSI's ``Norm`` is then the
        identity).

    Attributes
    ----------
    model_ : deepSI.models.SUBNET
        The network with the kept weights, on the CPU.
    n_init_ : int
        ``max(na, nb)``: the warm-up the encoder reads.
    n_iter_ : int
        Epochs run (the last one may be cut short by ``max_time``).
    loss_curve_ : list of float
        Training NRMS (root of the mean NMSE) of every epoch.
    validation_scores_ : list of float
        Validation simulation RMSE (normalised units) after every epoch;
        empty without a validation tail.
    best_epoch_ : int
        Epoch whose weights were kept (1-based; 0: the initial weights).
    device_ : torch.device
        Device used for training.
    n_features_in_, n_outputs_ : int
        Number of input and output channels.
    x_mean_, x_scale_, y_mean_, y_scale_ : ndarray
        Normalisation statistics.

    Notes
    -----
    deepSI is not a dependency of this package: deepSI 0.4.4 pins
    ``nonlinear_benchmarks<0.2`` in its metadata but imports only
    ``Input_output_data``, which ``nonlinear_benchmarks`` 1.0.1 has as well.
    Install it with ``pip install --no-deps "deepsi==0.4.4" cloudpickle``.

    The model and the loss are deepSI's; the loop is this class's, not
    ``deepSI.fit``, because ``deepSI.fit`` counts iterations and has no
    time budget or seed for the window order, prints and writes a checkpoint
    to ``~/.deepSI-checkpoints`` at every validation, and validates several
    experiments only when they have equal lengths.

    Experiments shorter than ``max(na, nb) + horizon`` (after the validation
    tail) give no training windows; at least one must be long enough.
    """

    def __init__(
        self,
        nx: int = 10,
        na: int = 20,
        nb: int = 20,
        horizon: int = 50,
        *,
        n_hidden_layers: int = 2,
        n_hidden_nodes: int = 64,
        feedthrough: bool = False,
        max_iter: int = 100,
        max_time: float | None = None,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        stride: int = 1,
        validation_fraction: float = 0.2,
        device: str = "auto",
        random_state: Any = None,
        verbose: int = 0,
        normalize: bool = True,
    ) -> None:
        self.nx = nx
        self.na = na
        self.nb = nb
        self.horizon = horizon
        self.n_hidden_layers = n_hidden_layers
        self.n_hidden_nodes = n_hidden_nodes
        self.feedthrough = feedthrough
        self.max_iter = max_iter
        self.max_time = max_time
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.stride = stride
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.normalize = normalize

    def _max_lag(self) -> int:
        for name in ("nx", "horizon", "n_hidden_layers", "n_hidden_nodes"):
            _check_int(name, getattr(self, name), 1)
        for name in ("max_iter", "batch_size", "stride"):
            _check_int(name, getattr(self, name), 1)
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                "validation_fraction must be in [0, 1), "
                f"got {self.validation_fraction!r}"
            )
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"max_time must be > 0 or None, got {self.max_time!r}")
        return max(_check_int("na", self.na, 1), _check_int("nb", self.nb, 1))

    def _build(self, deepSI, n_u: int, n_y: int):
        mlp = deepSI.networks.MLP_res_net
        kw = {
            "n_hidden_layers": self.n_hidden_layers,
            "n_hidden_nodes": self.n_hidden_nodes,
        }
        nx, na, nb = self.nx, self.na, self.nb
        # the data are normalised (or used raw): deepSI's Norm is the identity
        norm = deepSI.Norm(np.zeros(n_u), np.ones(n_u), np.zeros(n_y), np.ones(n_y))
        h_in = [nx, n_u] if self.feedthrough else nx
        return deepSI.SUBNET(
            n_u,
            n_y,
            norm,
            nx=nx,
            nb=nb,
            na=na,
            f=norm.f(mlp(input_size=[nx, n_u], output_size=nx, **kw)),
            h=norm.h(mlp(input_size=h_in, output_size=n_y, **kw)),
            encoder=norm.encoder(
                mlp(input_size=[(nb, n_u), (na, n_y)], output_size=nx, **kw)
            ),
            feedthrough=self.feedthrough,
        )

    def _fit_normalized(self, us: list[np.ndarray], ys: list[np.ndarray]) -> None:
        import torch
        from nonlinear_benchmarks import Input_output_data

        from sysid_msstcn._utils import check_random_state_seed, resolve_device

        deepSI = _import_deepsi()
        n_past, horizon = self.n_init_, self.horizon
        heads, tails = [], []
        for u, y in zip(us, ys, strict=True):
            n_val = int(round(self.validation_fraction * u.shape[0]))
            if n_val > n_past:  # a tail the encoder can start on
                tails.append((u[-n_val:], y[-n_val:]))
            else:
                n_val = 0
            if u.shape[0] - n_val >= n_past + horizon:
                head = slice(0, u.shape[0] - n_val)
                heads.append(Input_output_data(u[head], y[head]))
        if not heads:
            raise ValueError(
                f"SubnetRegressor needs an experiment with at least max(na, nb) "
                f"+ horizon = {n_past + horizon} training samples (after the "
                f"validation tail of {self.validation_fraction:g}); lower na, nb "
                f"or horizon"
            )
        seed = check_random_state_seed(self.random_state)
        self.device_ = resolve_device(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._build(deepSI, us[0].shape[1], ys[0].shape[1])
        model.to(self.device_)
        arrays, ids = model.create_arrays(heads, T=horizon, stride=self.stride)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        rng = np.random.default_rng(seed)
        batch = min(self.batch_size, len(ids))
        self.loss_curve_, self.validation_scores_ = [], []
        best = (self._validation_rmse(model, tails), copy.deepcopy(model.state_dict()))
        self.best_epoch_, self.n_iter_ = 0, 0
        t_start = time.perf_counter()
        out_of_time = False
        while self.n_iter_ < self.max_iter and not out_of_time:
            model.train()
            perm, losses = rng.permutation(ids), []
            for start in range(0, len(perm) - batch + 1, batch):
                idx = torch.as_tensor(perm[start : start + batch])
                tensors = [a[idx].to(self.device_) for a in arrays]
                loss = deepSI.fitting.compute_NMSE(model, *tensors)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                if not np.isfinite(losses[-1]):
                    break
                elapsed = time.perf_counter() - t_start
                if self.max_time is not None and elapsed >= self.max_time:
                    out_of_time = True
                    break
            self.n_iter_ += 1
            self.loss_curve_.append(float(np.sqrt(np.mean(losses))))
            if not np.isfinite(self.loss_curve_[-1]):
                warnings.warn(
                    f"SUBNET training diverged in epoch {self.n_iter_}; keeping "
                    f"the weights of epoch {self.best_epoch_}",
                    DivergenceWarning,
                    stacklevel=3,
                )
                break
            score = self._validation_rmse(model, tails)
            if tails:
                self.validation_scores_.append(score)
            if not tails or score <= best[0]:
                best = (score, copy.deepcopy(model.state_dict()))
                self.best_epoch_ = self.n_iter_
            if self.verbose:
                print(
                    f"SUBNET epoch {self.n_iter_}: train NRMS "
                    f"{self.loss_curve_[-1]:.5f}, validation RMSE {score:.5f}"
                )
        model.load_state_dict(best[1])
        self.model_ = model.cpu().eval()

    def _validation_rmse(self, model, tails) -> float:
        """Free-run simulation RMSE of the validation tails.

        nan without tails; inf when a simulation diverges.
        """
        if not tails:
            return float("nan")
        n = self.n_init_
        errors = [
            self._run(model, u, y[:n])[n:] - y[n:] for u, y in tails
        ]  # (T_i - n, n_y) each
        with np.errstate(over="ignore", invalid="ignore"):
            score = float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
        return score if np.isfinite(score) else float("inf")

    def _run(self, model, u: np.ndarray, y_head: np.ndarray) -> np.ndarray:
        import torch

        T, n = u.shape[0], y_head.shape[0]
        out = np.zeros((T, self.n_outputs_))
        out[:n] = y_head
        if n >= T:
            return out
        dev = next(model.parameters()).device

        def tensor(a: np.ndarray):
            return torch.as_tensor(a[None], dtype=torch.float32, device=dev)

        model.eval()
        with torch.no_grad():
            y_sim = model(  # (1, T - n, n_y)
                tensor(u[n - self.nb : n]),
                tensor(y_head[n - self.na : n]),
                tensor(u[n:]),
            )
        out[n:] = y_sim[0].cpu().numpy()
        return out

    def _simulate(self, u: np.ndarray, y_head: np.ndarray) -> np.ndarray:
        return self._run(self.model_, u, y_head)
