"""A linear model of the system plus MS-STCN on what the linear model leaves.

For systems whose outputs integrate their inputs (a position driven by a
force, EMPS), a one-step autoregressive network struggles: one sample moves
the output by a tiny fraction of its range, so the network must compute the
velocity from differences of nearly equal fed-back values, and its free run
drifts. A linear model fitted by least squares gets the integration exactly.
:class:`LinearResidualRegressor` simulates the linear model from the inputs
and gives MS-STCN the rest: MS-STCN models the residual
``r = y - y_lin`` with the inputs ``[u, y_lin]``, and the prediction is
``y_lin + r``. Since ``y_lin`` is a free-run simulation from ``u`` (and the
warm-up), it is an exogenous input like ``u``, so the protocol (simulate from
``u`` and ``y[:n_init]``) is unchanged. This is the series form of "model
error modelling" (Ljung, 2003) with a linear nominal model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted

from ._scoring import free_run_r2
from .baselines import ARXRegressor
from .data._validation import as_experiments, check_consistent_channels
from .estimator import MSSTCNRegressor
from .exceptions import ShapeError

__all__ = ["LinearResidualRegressor"]


class LinearResidualRegressor(RegressorMixin, MultiOutputMixin, BaseEstimator):
    """A linear model plus MS-STCN on its simulation residual.

    Fitting: the linear model is fitted on ``(X, y)`` and simulated free-run
    over the training records from their first ``linear_.n_init_`` outputs,
    giving ``y_lin``; the residual model is then fitted on
    ``([X, y_lin], y - y_lin)`` (or ``(X, y - y_lin)`` with
    ``feed_linear=False``). Prediction adds the two free runs.

    Parameters
    ----------
    estimator : MSSTCNRegressor or None, default=None
        The residual model (cloned at the first fit); None uses
        ``MSSTCNRegressor()``. Any scikit-learn estimator with the simulation
        protocol ``fit(X, y)`` / ``predict(X, y_init)`` works;
        :meth:`simulate` and :meth:`predict_interval` need it to have them
        too. Its parameters are reachable as
        ``estimator__<name>``. With ``estimator__warm_start=True`` a second
        fit continues the fitted residual model (fine-tuning stages).
    linear : estimator or None, default=None
        The linear model, any regressor with the simulation protocol
        ``fit(X, y)`` / ``predict(X, y_init)`` and an ``n_init_`` attribute
        (cloned at every fit); None uses ``ARXRegressor(na=2, nb=2, nk=1)``.
    feed_linear : bool, default=True
        Give the linear simulation to the residual model as extra input
        channels (after the columns of ``X``).
    feed_increments : bool, default=False
        Also give the residual model the first differences of the linear
        simulation, ``y_lin[t] - y_lin[t - 1]`` (0 at ``t = 0``), as extra
        input channels after those above. For an integrating output (a
        position) this is the nominal velocity: the residual model
        normalises each input channel, so it sees the velocity on its own
        scale instead of as a difference of nearly equal levels. Like
        ``y_lin`` it is computed from ``u`` and the warm-up only, so the
        simulation protocol is unchanged.
    restart_every : int or None, default=None
        Also train the residual model on runs of the linear model restarted
        every ``restart_every`` samples: each training experiment is cut
        into segments of that length (after the first, which the full run
        covers; a shorter remainder is left out), the linear model is
        simulated over each from its first ``linear_.n_init_`` measured
        outputs, and the segments join the full runs as extra experiments
        of the residual model. Without them the residual model only ever
        sees the linear model's error as it grows along each whole training
        record from its start, and can learn it as a function of where the
        record is. A test record's linear run starts afresh from its
        warm-up, so the residual model's corrections must hold for a run of
        any age; the restarts show it young runs from many states. The
        residual model's training set nearly doubles; its epochs are
        ``max(50, samples / (window * batch_size))`` batches by default, so
        on short records they cost the same. None: the full runs only. On
        EMPS it helped the later starts and hurt the record's start and
        the official test (user guide, "A linear model first").

    Attributes
    ----------
    linear_ : estimator
        The fitted linear model.
    estimator_ : estimator
        The fitted residual model.
    n_init_ : int
        Warm-up length the prediction needs: the larger of the two models'.
    n_features_in_, n_outputs_ : int
        Number of input and output channels.

    Examples
    --------
    >>> import numpy as np
    >>> from sysid_msstcn import LinearResidualRegressor, MSSTCNRegressor
    >>> rng = np.random.default_rng(0)
    >>> u = rng.standard_normal((600, 1))
    >>> y = np.zeros(600)
    >>> for t in range(1, 600):
    ...     y[t] = 0.9 * y[t - 1] + 0.5 * u[t - 1, 0] - 0.1 * y[t - 1] ** 3
    >>> model = LinearResidualRegressor(
    ...     MSSTCNRegressor(preset="sysid_small", max_iter=1, steps_per_epoch=2,
    ...                     window=64, batch_size=4, random_state=0, device="cpu")
    ... ).fit(u, y)
    >>> model.predict(u, y_init=y[:20]).shape
    (600,)
    """

    def __init__(
        self,
        estimator: MSSTCNRegressor | None = None,
        linear: Any = None,
        *,
        feed_linear: bool = True,
        feed_increments: bool = False,
        restart_every: int | None = None,
    ) -> None:
        self.estimator = estimator
        self.linear = linear
        self.feed_linear = feed_linear
        self.feed_increments = feed_increments
        self.restart_every = restart_every

    # -- fitting -----------------------------------------------------------
    def fit(self, X: Any, y: Any) -> LinearResidualRegressor:
        """Fit the linear model, then the residual model on what it leaves.

        Parameters
        ----------
        X : array-like of shape (T, n_u) or (T,), or list of those
            Inputs.
        y : array-like of shape (T,) or (T, n_y), or list of those
            Outputs, aligned with ``X``.

        Returns
        -------
        self : LinearResidualRegressor
        """
        for flag in ("feed_linear", "feed_increments"):
            value = getattr(self, flag)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{flag} must be a bool, got {value!r}")
        every = self.restart_every
        if every is not None and (
            isinstance(every, (bool, np.bool_))
            or not isinstance(every, (int, np.integer))
            or every < 2
        ):
            raise ValueError(
                f"restart_every must be an int >= 2 or None, got {every!r}"
            )
        template = MSSTCNRegressor() if self.estimator is None else self.estimator
        for part, obj in (("estimator", template), ("linear", self.linear)):
            protocol = hasattr(obj, "fit") and hasattr(obj, "predict")
            if obj is not None and not protocol:
                raise TypeError(
                    f"{part} must be an estimator with fit and predict(X, y_init), "
                    f"got {type(obj).__name__}"
                )
        data = as_experiments(X, y, allow_no_input=False, min_length=2)
        if data.y[0] is None:
            raise ValueError(
                "LinearResidualRegressor requires y to be passed, but the target "
                "y is None"
            )
        linear = clone(
            ARXRegressor(na=2, nb=2, nk=1) if self.linear is None else self.linear
        )
        us = [np.asarray(u) for u in data.u]
        ys = [np.asarray(v) for v in data.y]
        linear.fit(us, ys)
        n_lin = int(linear.n_init_)
        lins = linear.predict(us, [v[:n_lin] for v in ys])
        lins = [np.asarray(p).reshape(v.shape) for p, v in zip(lins, ys, strict=True)]
        runs = list(zip(us, ys, lins, strict=True))  # (u, y, y_lin) per experiment
        if every is not None:
            runs += self._restarts(linear, us, ys, int(every), n_lin)
        features = [self._features(u, p) for u, _, p in runs]
        residuals = [v - p for _, v, p in runs]
        if getattr(template, "warm_start", False) and self._is_fitted():
            # continue the fitted residual model with the template's settings
            est = self.estimator_
            est.set_params(**template.get_params(deep=False))
        else:
            est = clone(template)
        if data.is_list or len(runs) > 1:
            est.fit(features, residuals)
        else:
            est.fit(features[0], residuals[0])
        self.linear_ = linear
        self.estimator_ = est
        self.n_features_in_ = data.n_inputs
        self.n_outputs_ = data.n_outputs
        self.n_init_ = max(n_lin, int(getattr(est, "n_init_", 0)))
        self._y_1d = data.y_1d
        return self

    def __setstate__(self, state: dict) -> None:
        # models pickled before these options existed did not use them
        state.setdefault("feed_increments", False)
        state.setdefault("restart_every", None)
        super().__setstate__(state)

    @staticmethod
    def _restarts(
        linear: Any, us: list, ys: list, every: int, n_lin: int
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(u, y, y_lin)`` of the linear runs restarted every ``every`` samples."""
        segments = [
            (u[start : start + every], y[start : start + every])  # (every, .)
            for u, y in zip(us, ys, strict=True)
            for start in range(every, y.shape[0] - every + 1, every)
        ]
        if not segments:
            return []
        seg_us, seg_ys = (list(part) for part in zip(*segments, strict=True))
        lins = linear.predict(seg_us, [v[:n_lin] for v in seg_ys])  # one call
        return [
            (seg_u, seg_y, np.asarray(lin).reshape(seg_y.shape))
            for (seg_u, seg_y), lin in zip(segments, lins, strict=True)
        ]

    def _is_fitted(self) -> bool:
        return hasattr(self, "estimator_")

    def _features(self, u: np.ndarray, y_lin: np.ndarray) -> np.ndarray:
        """Inputs of the residual model: ``u``, then what is fed of ``y_lin``."""
        parts = [u]  # (T, n_u)
        if self.feed_linear:
            parts.append(y_lin)  # (T, n_y)
        if self.feed_increments:
            # (T, n_y): y_lin[t] - y_lin[t - 1], 0 at t = 0
            parts.append(np.diff(y_lin, axis=0, prepend=y_lin[:1]))
        return np.hstack(parts)  # (T, n_u + fed channels)

    # -- prediction --------------------------------------------------------
    def _prepare(self, X: Any, y_init: Any) -> tuple[list, list, list, bool]:
        """Per experiment: residual-model inputs, linear runs and residual warm-ups."""
        check_is_fitted(self, "estimator_")
        name = type(self).__name__
        data = as_experiments(X, y_init, allow_no_input=False, y_prefix=True)
        check_consistent_channels(
            data, self.n_features_in_, self.n_outputs_, estimator_name=name
        )
        n_lin = int(self.linear_.n_init_)
        features, lins, inits = [], [], []
        for i, (u, y0) in enumerate(zip(data.u, data.y, strict=True)):
            if y0 is not None and y0.shape[0] < n_lin:
                where = f" of experiment {i}" if data.is_list else ""
                raise ShapeError(
                    f"y_init{where} has {y0.shape[0]} sample(s) but {name} needs "
                    f"at least {n_lin} to start its linear model"
                )
            lin = np.asarray(self.linear_.predict(u, y0))
            lin = lin.reshape(u.shape[0], self.n_outputs_)  # (T, n_y)
            features.append(self._features(u, lin))
            lins.append(lin)
            inits.append(None if y0 is None else y0 - lin[: y0.shape[0]])
        return features, lins, inits, data.is_list

    def _format(self, arrays: list[np.ndarray], is_list: bool):
        out = [a[..., 0] if self._y_1d else a for a in arrays]
        return out if is_list else out[0]

    def linear_simulation(self, X: Any, y_init: Any = None):
        """The linear model's free run, the first of the two parts.

        Parameters
        ----------
        X, y_init : see :meth:`predict`

        Returns
        -------
        y_lin : ndarray of shape (T,) or (T, n_y), or list of those
        """
        _, lins, _, is_list = self._prepare(X, y_init)
        return self._format(lins, is_list)

    def predict(self, X: Any, y_init: Any = None, return_std: bool = False):
        """Free-run simulation: the linear run plus the residual model's run.

        Parameters
        ----------
        X : array-like of shape (T, n_u) or (T,), or list of those
            Inputs.
        y_init : array-like of shape (n, n_y) or (n,), list of those, or None
            Measured outputs of the warm-up (``n >= linear_.n_init_``),
            returned unchanged at the head. None starts both models from
            their training means.
        return_std : bool, default=False
            Also return the residual model's one-step predictive standard
            deviation along the run (see ``MSSTCNRegressor.predict``).

        Returns
        -------
        y_pred : ndarray of shape (T,) or (T, n_y), or list of those
        y_std : ndarray, same shape, only with ``return_std=True``
        """
        features, lins, inits, is_list = self._prepare(X, y_init)
        means, stds = [], []
        for f, lin, r0 in zip(features, lins, inits, strict=True):
            if return_std:
                r, sd = self.estimator_.predict(f, r0, return_std=True)
                stds.append(np.asarray(sd).reshape(lin.shape))
            else:
                r = self.estimator_.predict(f, r0)
            means.append(lin + np.asarray(r).reshape(lin.shape))
        if return_std:
            return self._format(means, is_list), self._format(stds, is_list)
        return self._format(means, is_list)

    def simulate(
        self, X: Any, y_init: Any = None, n_samples: int = 100, random_state=None
    ):
        """Monte Carlo trajectories: the linear run plus residual samples.

        Parameters
        ----------
        X, y_init : see :meth:`predict`
        n_samples : int, default=100
        random_state : int, Generator or None

        Returns
        -------
        samples : ndarray of shape (n_samples, T, n_y), or list of those
            Always three-dimensional, like ``MSSTCNRegressor.simulate``.
        """
        features, lins, inits, is_list = self._prepare(X, y_init)
        out = []
        for f, lin, r0 in zip(features, lins, inits, strict=True):
            sims = self.estimator_.simulate(
                f, r0, n_samples=n_samples, random_state=random_state
            )
            out.append(lin[None] + np.asarray(sims))  # (n_samples, T, n_y)
        return out if is_list else out[0]

    def predict_interval(
        self,
        X: Any,
        y_init: Any = None,
        coverage: float = 0.9,
        n_samples: int = 200,
        random_state=None,
    ):
        """Central prediction interval of the simulation (Monte Carlo).

        Parameters
        ----------
        X, y_init : see :meth:`predict`
        coverage : float, default=0.9
        n_samples : int, default=200
        random_state : int, Generator or None

        Returns
        -------
        lower, upper : ndarray of the shape of :meth:`predict`'s output
        """
        features, lins, inits, is_list = self._prepare(X, y_init)
        lows, highs = [], []
        for f, lin, r0 in zip(features, lins, inits, strict=True):
            lo, hi = self.estimator_.predict_interval(
                f,
                r0,
                coverage=coverage,
                n_samples=n_samples,
                random_state=random_state,
            )
            lows.append(lin + np.asarray(lo).reshape(lin.shape))
            highs.append(lin + np.asarray(hi).reshape(lin.shape))
        return self._format(lows, is_list), self._format(highs, is_list)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of the free-run simulation after the warm-up of ``n_init_`` samples.

        Parameters
        ----------
        X : array-like of shape (T, n_u), or list of those
        y : array-like of shape (T,) or (T, n_y), or list of those
            Measured outputs; ``y[:n_init_]`` is the warm-up.
        sample_weight : None
            Not supported (must be None).

        Returns
        -------
        score : float
            R² over ``y[n_init_:]``, averaged over output channels.
        """
        return free_run_r2(self, "estimator_", X, y, sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags
