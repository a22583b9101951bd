"""Classical NARX/ARX baselines with the estimator protocol of MS-STCN.

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
"""

from __future__ import annotations

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
from sysid_msstcn.exceptions import ShapeError

try:  # optional dependency (the "baselines" extra)
    from sysidentpy.basis_function import Polynomial
except ImportError:  # pragma: no cover
    Polynomial = object  # type: ignore[assignment,misc]

__all__ = ["ARXRegressor", "MLPNARXRegressor", "PolynomialNARXRegressor"]


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
