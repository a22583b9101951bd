"""Shared plumbing of the baselines: lags, normalisation, warm-up, lists."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from sysid_msstcn import metrics
from sysid_msstcn.data._validation import (
    ExperimentData,
    as_experiments,
    check_consistent_channels,
)
from sysid_msstcn.exceptions import ShapeError


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
