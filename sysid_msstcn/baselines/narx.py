"""Polynomial NARX (SysIdentPy FROLS) and MLP NARX (scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.neural_network import MLPRegressor

try:  # optional dependency (the "baselines" extra)
    from sysidentpy.basis_function import Polynomial
except ImportError:  # pragma: no cover
    Polynomial = object  # type: ignore[assignment,misc]

from ._base import _check_int, _lag_matrix, _SimulationBase


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
