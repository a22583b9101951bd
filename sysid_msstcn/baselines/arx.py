"""Linear ARX by least squares, simulated with python-control."""

from __future__ import annotations

import control
import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._base import _check_int, _lag_matrix, _SimulationBase


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
    integrate : bool, default=False
        Fix a pole at 1 (an ARIX model): the ARX of orders ``(na, nb, nk)``
        is fitted to the increments ``y(t) - y(t-1)`` and the outputs are
        their sum, ``y(t) = y(t-1) + dy(t)``. For outputs that integrate
        their inputs (a position driven by a force, EMPS), where a least
        squares fit on the outputs themselves misplaces the integrator. The
        fitted model is reported in the output domain: ``ar_coef_`` then has
        ``na + 1`` lags, the polynomial ``A(q)`` times ``1 - q^-1``.

    Attributes
    ----------
    ar_coef_ : ndarray of shape (na, n_y, n_y), or (na + 1, n_y, n_y) with ``integrate``
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
        Largest lag ``max(na, nk + nb - 1)`` (``na + 1`` in place of ``na``
        with ``integrate``): the warm-up length.
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
        integrate: bool = False,
    ) -> None:
        self.na = na
        self.nb = nb
        self.nk = nk
        self.fit_intercept = fit_intercept
        self.normalize = normalize
        self.integrate = integrate

    def _max_lag(self) -> int:
        na = _check_int("na", self.na, 1)
        nb = _check_int("nb", self.nb, 1)
        nk = _check_int("nk", self.nk, 0)
        if not isinstance(self.integrate, (bool, np.bool_)):
            raise ValueError(f"integrate must be a bool, got {self.integrate!r}")
        return max(na + bool(self.integrate), nk + nb - 1)

    def _fit_normalized(self, us: list[np.ndarray], ys: list[np.ndarray]) -> None:
        na, nb, nk = self.na, self.nb, self.nk
        if self.integrate:  # the ARX of the increments dy(t) = y(t) - y(t-1)
            us = [u[1:] for u in us]
            ys = [np.diff(y, axis=0) for y in ys]
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
        if self.integrate:  # A(q) (1 - q^-1): the output-domain lags, na + 1
            a_n = np.concatenate([a_n, np.zeros((1, n_y, n_y))])
            a_n[1:] -= a_n[:-1].copy()
            a_n[0] += np.eye(n_y)
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
        na, nb, nk = self.ar_coef_.shape[0], self.nb, self.nk
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
                [y_head[n - i] for i in range(1, self.ar_coef_.shape[0] + 1)]
                + [u[n - i] for i in range(1, d + 1)]
            )
            v = np.hstack([u[n:], np.ones((T - n, 1))]).T
            resp = control.forced_response(self.system_, inputs=v, initial_state=x0)
            out[n:] = np.atleast_2d(resp.outputs).reshape(self.n_outputs_, -1).T
        return (out - self.y_mean_) / self.y_scale_
