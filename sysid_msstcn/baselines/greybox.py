"""Grey-box models: a physical structure whose parameters are fitted to data.

A :class:`GreyBoxModel` says how the state moves (``step``) and what is
measured (``output``), with bounds on its physical parameters.
:class:`GreyBoxRegressor` fits the parameters, and the initial state of
every training experiment, by minimising the free-run simulation error
(``scipy.optimize.least_squares`` from several starts). To predict it
estimates the initial state from the warm-up ``y_init`` and simulates from
the inputs, with the protocol of the other baselines. As the nominal model
of :class:`~sysid_msstcn.LinearResidualRegressor` it gives MS-STCN a
physically structured simulation to correct.

:class:`CascadedTanks` is the two-tank structure of the Cascaded Tanks
benchmark (Schoukens and Noël, 2017): Torricelli outflows, a pump, and
overflow of both tanks. :class:`EMPSDrive` is the rigid-body model with
friction of the EMPS benchmark.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import least_squares
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from sysid_msstcn._scoring import free_run_r2
from sysid_msstcn._utils import check_random_state_seed
from sysid_msstcn.data._validation import as_experiments, check_consistent_channels
from sysid_msstcn.exceptions import ShapeError

from ._base import _check_int

__all__ = ["CascadedTanks", "EMPSDrive", "GreyBoxModel", "GreyBoxRegressor"]

# residual of a diverged simulation sample, in output units
_DIVERGED = 1e3


class GreyBoxModel:
    """Structure of a discrete-time state-space model with physical parameters.

    Subclass it and set ``n_states``, ``n_inputs``, ``n_outputs`` and
    ``param_names``, and define :meth:`step`, :meth:`output`,
    :meth:`initial_params`, :meth:`param_bounds`, :meth:`state_bounds` and
    :meth:`initial_state`. Override :meth:`simulate` for speed (or instead
    of :meth:`step` and :meth:`output`), and :meth:`starts` to start the fit
    from the data.
    """

    n_states: int = 1
    n_inputs: int = 1
    n_outputs: int = 1
    param_names: tuple[str, ...] = ()

    def step(self, x: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """State after one sample: ``x`` (n_states,), ``u`` (n_inputs,)."""
        raise NotImplementedError

    def output(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Measured outputs (n_outputs,) of the state ``x``."""
        raise NotImplementedError

    def initial_params(self) -> np.ndarray:
        """A physically plausible parameter vector to start from."""
        raise NotImplementedError

    def param_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of the parameters."""
        raise NotImplementedError

    def state_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of an initial state."""
        raise NotImplementedError

    def initial_state(self, y0: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """A guess of the state from the first measured output ``y0``."""
        raise NotImplementedError

    def starts(
        self,
        u: list[np.ndarray],
        y: list[np.ndarray],
        n_restarts: int,
        rng: np.random.Generator,
    ) -> list[np.ndarray]:
        """Parameter vectors the fit starts from.

        The default is :meth:`initial_params` and ``n_restarts`` random
        perturbations of it, each parameter multiplied by ``exp(U(-1, 1))``.
        Override it to start from the data (as :class:`WienerHammerstein`
        does from the best linear approximation).

        Parameters
        ----------
        u, y : list of ndarray of shape (T, n_u) and (T, n_y)
            The training experiments.
        n_restarts : int
            Starts wanted besides the first.
        rng : numpy.random.Generator
            The regressor's seeded generator.

        Returns
        -------
        list of ndarray of shape (n_params,)
            At least one start; they are clipped to :meth:`param_bounds`.
        """
        theta0 = np.asarray(self.initial_params(), dtype=float)
        return [theta0] + [
            theta0 * np.exp(rng.uniform(-1.0, 1.0, size=theta0.size))
            for _ in range(n_restarts)
        ]

    def simulate(self, x0: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Outputs (T, n_outputs) from state ``x0`` under inputs ``u`` (T, n_u).

        The output of sample ``t`` is that of the state before ``u[t]``
        acts (a strictly proper model). A structure that overrides it need
        not define :meth:`step` and :meth:`output`.
        """
        x = np.asarray(x0, dtype=float)
        y = np.empty((u.shape[0], self.n_outputs))
        for t in range(u.shape[0]):
            y[t] = self.output(x, theta)
            x = self.step(x, u[t], theta)
        return y

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CascadedTanks(GreyBoxModel):
    """Two cascaded tanks fed by a pump, with overflow (Cascaded Tanks benchmark).

    With water levels ``x1`` (upper tank) and ``x2`` (lower tank) and pump
    voltage ``u``::

        dx1/dt = -k1 sqrt(x1) + k4 u
        dx2/dt =  k2 sqrt(x1) - k3 sqrt(x2)

    integrated by explicit Euler over ``substeps`` sub-steps of a sample.
    Water above the upper tank's height ``h1`` overflows; the share ``k5``
    of it falls into the lower tank. The lower tank overflows at ``h2``.
    The sensor reads ``y = x2 + offset``, with ``x2`` at most ``h2``.
    Parameters, in this order: ``k1, k2, k3, k4, k5, h1, h2, offset``
    (rates per second, levels in sensor volts).

    Parameters
    ----------
    sampling_time : float, default=4.0
        Seconds between samples (the benchmark's ``Ts``).
    substeps : int, default=4
        Euler steps per sample.
    """

    n_states = 2
    param_names = ("k1", "k2", "k3", "k4", "k5", "h1", "h2", "offset")

    def __init__(self, sampling_time: float = 4.0, substeps: int = 4) -> None:
        self.sampling_time = sampling_time
        self.substeps = substeps

    def initial_params(self) -> np.ndarray:
        """Equal rates of 0.05 per second, overflow at the sensor's 10 V."""
        # equal rates, overflow above the 10 V range of the sensor
        return np.array([0.05, 0.05, 0.05, 0.05, 0.5, 10.0, 10.0, 0.0])

    def param_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Nonnegative rates up to 5 per second, heights 1-50, offset +-5."""
        lower = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, -5.0])
        upper = np.array([5.0, 5.0, 5.0, 5.0, 1.0, 50.0, 50.0, 5.0])
        return lower, upper

    def state_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Levels from 0 to 50."""
        return np.zeros(2), np.full(2, 50.0)

    def initial_state(self, y0: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Both tanks at the level the first measurement reads."""
        level = max(float(y0[0]) - float(theta[7]), 0.0)
        return np.array([level, level])

    def step(self, x: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Levels after one sample of pump voltage ``u[0]``."""
        x1, x2 = self._step(float(x[0]), float(x[1]), float(u[0]), theta)
        return np.array([x1, x2])

    def output(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """The sensor: the lower level (at most ``h2``) plus ``offset``."""
        return np.array([min(float(x[1]), float(theta[6])) + float(theta[7])])

    def _step(self, x1: float, x2: float, u: float, theta) -> tuple[float, float]:
        k1, k2, k3, k4, k5, h1, h2, _ = (float(v) for v in theta)
        dt = float(self.sampling_time) / int(self.substeps)
        for _ in range(int(self.substeps)):
            s1 = math.sqrt(x1) if x1 > 0 else 0.0
            s2 = math.sqrt(x2) if x2 > 0 else 0.0
            x1_next = x1 + dt * (k4 * u - k1 * s1)
            inflow = k2 * s1 - k3 * s2
            if x1_next > h1:  # the upper tank overflows, partly into the lower
                inflow += k5 * (x1_next - h1) / dt
                x1_next = h1
            x1, x2 = x1_next, min(x2 + dt * inflow, h2)
        return x1, x2

    def simulate(self, x0: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """:meth:`GreyBoxModel.simulate` on Python floats (about 10x faster)."""
        x1, x2 = float(x0[0]), float(x0[1])
        h2, offset = float(theta[6]), float(theta[7])
        y = np.empty((u.shape[0], 1))
        for t, ut in enumerate(u[:, 0].tolist()):
            y[t, 0] = min(x2, h2) + offset
            x1, x2 = self._step(x1, x2, ut, theta)
        return y

    def __repr__(self) -> str:
        return (
            f"CascadedTanks(sampling_time={self.sampling_time}, "
            f"substeps={self.substeps})"
        )


class EMPSDrive(GreyBoxModel):
    """A prismatic drive with viscous and Coulomb friction (EMPS benchmark).

    With position ``q``, velocity ``v`` and motor force reference ``u``::

        dv/dt = a u - b v - c tanh(v / velocity_scale) - d
        dq/dt = v

    (the rigid-body model of Janot et al., 2019, divided by the mass: ``a``
    is the drive gain, ``b`` the viscous and ``c`` the Coulomb friction,
    ``d`` an offset, each per unit mass; the sign of the velocity is
    smoothed by ``tanh``), integrated by semi-implicit Euler at the sample
    time. The sensor reads ``q``. Parameters, in this order: ``a, b, c, d``.

    Parameters
    ----------
    sampling_time : float, default=1e-3
        Seconds between samples.
    velocity_scale : float, default=1e-3
        Velocity (m/s) over which the Coulomb friction changes sign.
    """

    n_states = 2
    param_names = ("a", "b", "c", "d")

    def __init__(self, sampling_time: float = 1e-3, velocity_scale: float = 1e-3):
        self.sampling_time = sampling_time
        self.velocity_scale = velocity_scale

    def initial_params(self) -> np.ndarray:
        """Unit gain and viscous friction, a tenth of Coulomb friction."""
        return np.array([1.0, 1.0, 0.1, 0.0])

    def param_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Nonnegative gain and friction up to 100, offset within +-10."""
        return np.array([0.0, 0.0, 0.0, -10.0]), np.array([100.0, 100.0, 100.0, 10.0])

    def state_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions and velocities within +-1 (m, m/s)."""
        return np.full(2, -1.0), np.full(2, 1.0)

    def initial_state(self, y0: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """At the measured position, at rest."""
        return np.array([float(y0[0]), 0.0])

    def step(self, x: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Position and velocity after one sample of force ``u[0]``."""
        a, b, c, d = (float(v) for v in theta)
        q, v = float(x[0]), float(x[1])
        dt, scale = float(self.sampling_time), float(self.velocity_scale)
        v += dt * (a * float(u[0]) - b * v - c * math.tanh(v / scale) - d)
        return np.array([q + dt * v, v])

    def output(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """The position."""
        return np.array([float(x[0])])

    def simulate(self, x0: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """:meth:`GreyBoxModel.simulate` on Python floats."""
        a, b, c, d = (float(v) for v in theta)
        q, v = float(x0[0]), float(x0[1])
        dt, scale = float(self.sampling_time), float(self.velocity_scale)
        tanh = math.tanh
        y = np.empty((u.shape[0], 1))
        for t, ut in enumerate(u[:, 0].tolist()):
            y[t, 0] = q
            v += dt * (a * ut - b * v - c * tanh(v / scale) - d)
            q += dt * v
        return y

    def __repr__(self) -> str:
        return (
            f"EMPSDrive(sampling_time={self.sampling_time}, "
            f"velocity_scale={self.velocity_scale})"
        )


class GreyBoxRegressor(RegressorMixin, MultiOutputMixin, BaseEstimator):
    """A grey-box state-space model fitted by its free-run simulation error.

    Parameters
    ----------
    model : GreyBoxModel
        The structure (:class:`CascadedTanks`, or a subclass of
        :class:`GreyBoxModel` of your own).
    n_init : int, default=10
        Warm-up samples needed to estimate the initial state (``n_init_``);
        :meth:`predict` uses all of ``y_init``.
    n_restarts : int, default=3
        Starts besides the first, from ``model.starts``: by default the
        first is ``model.initial_params()`` and each restart multiplies it
        by ``exp(U(-1, 1))`` per parameter, clipped to the bounds. The fit
        with the lowest cost is kept.
    max_nfev : int or None, default=200
        Simulations per start and parameter (``least_squares``'s
        ``max_nfev`` is this times the number of unknowns).
    train_state : {"fit", "warmup"}, default="fit"
        The initial state of each training experiment. "fit": unknowns
        fitted with the parameters. "warmup": for every parameter vector
        tried, the state whose simulation fits the experiment's first
        ``n_init`` outputs best, as :meth:`predict` estimates it. On a long
        record of a drifting system (EMPS), "fit" can offset the drift with
        a state that the warm-up does not support, and parameters fitted
        that way simulate worse from the warm-up's state.
    random_state : int, Generator or None, default=None
        Seeds the restarts.

    Notes
    -----
    Parameters that the outputs cannot tell apart are not unique: in
    :class:`CascadedTanks` the upper level is not measured, so scaling it
    (with ``k1``, ``k2``, ``k4`` and ``h1``) gives the same outputs, and
    ``h1`` is free when the training data never overflow the upper tank.
    The simulation is what is fitted; read the parameters with care.

    Attributes
    ----------
    params_ : ndarray of shape (n_params,)
        Fitted parameters, in ``model.param_names`` order.
    initial_states_ : list of ndarray of shape (n_states,)
        The initial state of every training experiment (fitted, or from
        its warm-up; see ``train_state``).
    cost_ : float
        Half the sum of squared simulation errors of the kept fit.
    n_init_ : int
    n_features_in_, n_outputs_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sysid_msstcn.baselines import CascadedTanks, GreyBoxRegressor
    >>> tanks = CascadedTanks()
    >>> theta = np.array([0.06, 0.04, 0.05, 0.05, 0.8, 9.0, 10.0, 0.0])
    >>> steps = np.random.default_rng(0).uniform(1, 6, size=20)
    >>> u = np.repeat(steps, 20)[:, None]  # 400 samples of pump voltage steps
    >>> y = tanks.simulate(np.array([4.0, 4.0]), u, theta)
    >>> model = GreyBoxRegressor(tanks, n_restarts=0, random_state=0).fit(u, y)
    >>> bool(np.sqrt(np.mean((model.predict(u, y[:10]) - y) ** 2)) < 1e-6)
    True
    """

    def __init__(
        self,
        model: GreyBoxModel | None = None,
        *,
        n_init: int = 10,
        n_restarts: int = 3,
        max_nfev: int | None = 200,
        train_state: str = "fit",
        random_state=None,
    ) -> None:
        self.model = model
        self.n_init = n_init
        self.n_restarts = n_restarts
        self.max_nfev = max_nfev
        self.train_state = train_state
        self.random_state = random_state

    def _model(self) -> GreyBoxModel:
        if not isinstance(self.model, GreyBoxModel):
            raise TypeError(
                "model must be a GreyBoxModel (e.g. CascadedTanks()), got "
                f"{type(self.model).__name__}"
            )
        return self.model

    def _check_channels(self, data: Any, model: GreyBoxModel) -> None:
        if data.n_inputs != model.n_inputs or data.n_outputs != model.n_outputs:
            raise ShapeError(
                f"{model!r} has {model.n_inputs} input(s) and "
                f"{model.n_outputs} output(s), got {data.n_inputs} and "
                f"{data.n_outputs}"
            )

    def _errors(self, model, theta, x0, u, y) -> np.ndarray:
        e = (model.simulate(x0, u, theta) - y).ravel()
        return np.where(np.isfinite(e), e, _DIVERGED)

    def fit(self, X: Any, y: Any) -> GreyBoxRegressor:
        """Fit the parameters and the training initial states.

        Parameters
        ----------
        X : array-like of shape (T, n_u) or (T,), or list of those
        y : array-like of shape (T,) or (T, n_y), or list of those

        Returns
        -------
        self : GreyBoxRegressor
        """
        model = self._model()
        n_init = _check_int("n_init", self.n_init, 1)
        restarts = _check_int("n_restarts", self.n_restarts, 0)
        train_state = self.train_state
        if train_state not in ("fit", "warmup"):
            raise ValueError(
                f"train_state must be 'fit' or 'warmup', got {train_state!r}"
            )
        if self.max_nfev is not None:
            _check_int("max_nfev", self.max_nfev, 1)
        data = as_experiments(
            X,
            y,
            allow_no_input=False,
            min_length=n_init + 1,
            min_length_reason=f"the warm-up of n_init={n_init} samples",
        )
        if data.y[0] is None:
            raise ValueError(
                "GreyBoxRegressor requires y to be passed, but the target y is None"
            )
        self._check_channels(data, model)
        rng = np.random.default_rng(check_random_state_seed(self.random_state))
        starts = model.starts(data.u, data.y, restarts, rng)
        p_lo, p_hi = (np.asarray(b, dtype=float) for b in model.param_bounds())
        s_lo, s_hi = (np.asarray(b, dtype=float) for b in model.state_bounds())
        n_p, n_x, n_e = p_lo.size, model.n_states, len(data.u)
        # "fit": the initial states are unknowns beside the parameters;
        # "warmup": each follows from its record's warm-up, as in predict
        free = train_state == "fit"
        lower = np.concatenate([p_lo, np.tile(s_lo, n_e if free else 0)])
        upper = np.concatenate([p_hi, np.tile(s_hi, n_e if free else 0)])

        def initial_states(p: np.ndarray) -> list[np.ndarray]:
            if free:
                return list(p[n_p:].reshape(n_e, n_x))
            return [
                self._warmup_state(model, p[:n_p], u[:n_init], v[:n_init])
                for u, v in zip(data.u, data.y, strict=True)
            ]

        def residuals(p: np.ndarray) -> np.ndarray:
            theta = p[:n_p]
            return np.concatenate(
                [
                    self._errors(model, theta, x0, u, v)
                    for x0, u, v in zip(initial_states(p), data.u, data.y, strict=True)
                ]
            )

        starts = [np.asarray(theta, dtype=float) for theta in starts]
        if not starts or any(theta.shape != (n_p,) for theta in starts):
            raise ValueError(
                f"{model!r}.starts must return at least one parameter vector of "
                f"shape ({n_p},), got shapes {[theta.shape for theta in starts]}"
            )
        best = None
        for theta in starts:
            p0 = theta = np.clip(theta, p_lo, p_hi)
            if free:  # the structure's guess of each record's state
                states = [model.initial_state(v[0], theta) for v in data.y]
                p0 = np.concatenate([theta, *np.clip(states, s_lo, s_hi)])
            nfev = None if self.max_nfev is None else self.max_nfev * p0.size
            fit = least_squares(
                residuals, p0, bounds=(lower, upper), x_scale="jac", max_nfev=nfev
            )
            if best is None or fit.cost < best.cost:
                best = fit
        self.params_ = best.x[:n_p].copy()
        self.initial_states_ = [x.copy() for x in initial_states(best.x)]
        self.cost_ = float(best.cost)
        self.n_init_ = n_init
        self.n_features_in_ = data.n_inputs
        self.n_outputs_ = data.n_outputs
        self.y_mean_ = np.concatenate(data.y).mean(axis=0)
        self._y_1d = data.y_1d
        return self

    def estimate_state(self, u: np.ndarray, y_head: np.ndarray) -> np.ndarray:
        """The initial state whose simulation fits the measured warm-up best.

        Parameters
        ----------
        u : ndarray of shape (n, n_u)
            Inputs of the warm-up.
        y_head : ndarray of shape (n, n_y)
            Measured outputs of the warm-up.

        Returns
        -------
        ndarray of shape (n_states,)
        """
        check_is_fitted(self, "params_")
        return self._warmup_state(self._model(), self.params_, u, y_head)

    def _warmup_state(
        self, model: GreyBoxModel, theta: np.ndarray, u: np.ndarray, y_head: np.ndarray
    ) -> np.ndarray:
        s_lo, s_hi = (np.asarray(b, dtype=float) for b in model.state_bounds())
        x0 = np.clip(model.initial_state(y_head[0], theta), s_lo, s_hi)
        fit = least_squares(
            lambda x: self._errors(model, theta, x, u, y_head), x0, bounds=(s_lo, s_hi)
        )
        return fit.x

    def predict(self, X: Any, y_init: Any = None) -> np.ndarray | list[np.ndarray]:
        """Simulate from the inputs and the state the warm-up gives.

        Parameters
        ----------
        X : array-like of shape (T, n_u) or (T,), or list of those
        y_init : array-like of shape (n, n_y) or (n,), list of those, or None
            Measured outputs of the first ``n >= n_init_`` samples: the
            initial state is the one whose simulation fits them best, and
            they are returned unchanged at the head. None starts from the
            state the model guesses from the training mean of ``y``.

        Returns
        -------
        y_pred : ndarray of shape (T,) or (T, n_y), or list of those
        """
        check_is_fitted(self, "params_")
        model = self._model()
        data = as_experiments(X, y_init, allow_no_input=False, y_prefix=True)
        check_consistent_channels(
            data,
            self.n_features_in_,
            self.n_outputs_,
            estimator_name="GreyBoxRegressor",
        )
        preds = []
        for i, (u, y0) in enumerate(zip(data.u, data.y, strict=True)):
            if y0 is None:
                x0 = model.initial_state(self.y_mean_, self.params_)
            else:
                if y0.shape[0] < self.n_init_:
                    where = f" of experiment {i}" if data.is_list else ""
                    raise ShapeError(
                        f"y_init{where} has {y0.shape[0]} sample(s) but "
                        f"GreyBoxRegressor needs at least n_init_={self.n_init_} "
                        "to estimate the initial state"
                    )
                x0 = self.estimate_state(u[: y0.shape[0]], y0)
            sim = model.simulate(x0, u, self.params_)
            if y0 is not None:
                sim[: y0.shape[0]] = y0
            preds.append(sim[:, 0] if self._y_1d else sim)
        return preds if data.is_list else preds[0]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of the free run after the warm-up of ``n_init_`` samples.

        Parameters
        ----------
        X : array-like of shape (T, n_u), or list of those
        y : array-like of shape (T,) or (T, n_y), or list of those
        sample_weight : None
            Not supported (must be None).

        Returns
        -------
        float
        """
        return free_run_r2(self, "params_", X, y, sample_weight)
