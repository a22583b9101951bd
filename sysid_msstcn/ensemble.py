"""An ensemble of independently trained simulation models (a deep ensemble).

Trained from different seeds, networks of the same configuration end in
different minima, and their free runs err in partly independent ways. The
average of their simulations is usually better than a typical member, and
pooling their Monte Carlo trajectories gives a band that also spans the
disagreement between members (the "epistemic" part that one network's
latent and output noise ignores; Lakshminarayanan et al., 2017, "Simple and
scalable predictive uncertainty estimation using deep ensembles").
:class:`EnsembleRegressor` fits ``n_members`` clones of an estimator with
the simulation protocol (``fit(X, y)`` / ``predict(X, y_init)``), each with
its own seed, optionally in parallel processes, and averages them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin, clone
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted

from . import _persistence
from ._scoring import free_run_r2
from ._utils import check_random_state_seed
from .data._validation import as_experiments
from .estimator import MSSTCNRegressor

__all__ = ["EnsembleRegressor"]


def _seed_keys(estimator: Any) -> list[str]:
    """Names of every ``random_state`` parameter, nested ones included."""
    return [
        k
        for k in estimator.get_params(deep=True)
        if k == "random_state" or k.endswith("__random_state")
    ]


def _wants_warm_start(estimator: Any) -> bool:
    """Whether any (nested) ``warm_start`` parameter of the template is set."""
    return any(
        bool(v)
        for k, v in estimator.get_params(deep=True).items()
        if k == "warm_start" or k.endswith("__warm_start")
    )


def _fit_member(member: Any, X: Any, y: Any) -> Any:
    return member.fit(X, y)


def _training_runs(member: Any, us: list, ys: list, n_init: int) -> np.ndarray | None:
    """Free run of a fitted member on its training experiments.

    Each experiment is simulated from its inputs and its first ``n_init``
    measured outputs; the simulated outputs after ``n_init`` of all
    experiments are concatenated, shape (sum of (T - n_init), n_y). None for
    a run that is not finite.
    """
    simulated = []
    for u, y in zip(us, ys, strict=True):
        p = np.asarray(member.predict(u, y_init=y[:n_init]), dtype=float)
        p = p.reshape(y.shape)
        if not np.all(np.isfinite(p)):
            return None
        simulated.append(p[n_init:])
    return np.concatenate(simulated)


def _run_nrmse(measured: np.ndarray, simulated: np.ndarray | None) -> float:
    """NRMSE of a pooled free run: each channel's RMSE over its std, averaged.

    ``measured`` and ``simulated`` have shape (n, n_y); a channel whose
    measured values are constant is scaled by 1. ``simulated=None`` (a
    diverged run) scores ``inf``.
    """
    if simulated is None:
        return float("inf")
    err = np.sqrt(np.mean(np.square(measured - simulated), axis=0))
    scale = np.std(measured, axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return float(np.mean(err / scale))


def _greedy_selection(
    runs: list, measured: np.ndarray, scores: np.ndarray, cap: int
) -> tuple[list[int], list[float]]:
    """Forward selection of members whose mean free run is best (no replacement).

    Starts from the best member by its own score and adds, one at a time,
    the member that lowers the NRMSE of the selected members' mean run the
    most (ties: the lower index), until none lowers it or ``cap`` members
    are selected. Diverged members (``runs[i] is None``) are never added.
    Returns the members in the order they were added and the NRMSE of the
    mean after each addition.
    """
    order = [int(np.argmin(scores))]  # all inf: the first member
    path = [float(scores[order[0]])]
    if runs[order[0]] is None:
        return order, path
    total = runs[order[0]].copy()  # (n, n_y) sum of the selected runs
    while len(order) < cap:
        best, best_score = None, path[-1]
        for i, run in enumerate(runs):
            if i in order or run is None:
                continue
            score = _run_nrmse(measured, (total + run) / (len(order) + 1))
            if score < best_score:
                best, best_score = i, score
        if best is None:
            break
        order.append(best)
        path.append(best_score)
        total += runs[best]
    return order, path


class EnsembleRegressor(RegressorMixin, MultiOutputMixin, BaseEstimator):
    """Average of ``n_members`` simulation models trained from different seeds.

    Every member is a clone of ``estimator`` whose ``random_state``
    parameters (nested ones too, e.g. ``estimator__random_state`` of a
    :class:`~sysid_msstcn.LinearResidualRegressor`) are set to the member's
    seed; with an integer ``random_state`` member ``i`` gets seed
    ``random_state + i``, so it is the model a single fit with that seed
    gives. :meth:`predict` averages the members' free runs; :meth:`simulate`
    pools their Monte Carlo trajectories, so the bands of
    :meth:`predict_interval` also span the disagreement between members.

    Parameters
    ----------
    estimator : estimator or None, default=None
        The member template (cloned for every member); None uses
        ``MSSTCNRegressor()``. Any scikit-learn estimator with the
        simulation protocol ``fit(X, y)`` / ``predict(X, y_init)`` and an
        ``n_init_`` attribute after fitting works; :meth:`simulate` and
        :meth:`predict_interval` need ``simulate`` too. Its parameters are
        reachable as ``estimator__<name>``. When a (nested) ``warm_start``
        of the template is True and the ensemble is fitted, a second fit
        continues every member with the template's other settings (a
        fine-tuning stage), keeping each member's seed.
    n_members : int, default=5
        Number of members (at least 1).
    n_jobs : int or None, default=None
        Members fitted at once, in separate processes (joblib; -1 uses
        every core, None one at a time in this process). Each process
        limits its math libraries to its share of the cores. Members on a
        GPU share it.
    random_state : int, Generator or None, default=None
        Seeds of the members: ``random_state + i`` for an int, otherwise
        drawn once at the first fit and kept in ``seeds_``.
    keep_best : int or None, default=None
        When set, :meth:`fit` scores every fitted member by its free run
        of the training data (each experiment simulated from its inputs
        and its first ``n_init_`` outputs, as a test record is; the NRMSE
        after the warm-up, see ``member_scores_``) and the ensemble
        predicts with the ``keep_best`` best members only. No data beyond
        the training data is used. Seeds whose networks settled in a poor
        minimum simulate their training record worse too, so this drops
        them (on EMPS the training free run ranked eight seeds by their
        test error with Spearman's rho 0.98). Dropping members can still
        make the mean worse where the kept ones share an error (on EMPS
        the 4 best gave 3.41 mm, all 8 gave 2.75 mm), so ``keep_best=1``,
        one well-chosen model, is the safer use. None uses every member
        (with ``selection="greedy"``: caps the selection at ``n_members``).
    selection : {"best", "greedy"}, default="best"
        How ``keep_best`` chooses. ``"best"``: the ``keep_best`` members
        with the best scores of their own. ``"greedy"``: forward selection
        for the mean (Caruana et al., 2004, "Ensemble selection from
        libraries of models", without replacement): start from the best
        member, then add, one at a time, the member that lowers the
        training free-run NRMSE of the selected members' mean run the most,
        until no member lowers it or ``keep_best`` members (every member
        when ``keep_best`` is None) are selected. It keeps members whose
        errors cancel (drifts of opposite sign), which ranking by their
        own scores cannot see, and it never keeps a member that makes the
        mean worse on the training data. Every member is scored with
        ``"greedy"``, also when ``keep_best`` is None.

    Attributes
    ----------
    estimators_ : list of estimator
        Every fitted member, in seed order (selected or not).
    seeds_ : list of int
        The members' seeds.
    selected_ : list of int
        Indices (into ``estimators_``) of the members the ensemble
        predicts with, ascending: all of them unless ``keep_best`` is set
        or ``selection="greedy"``.
    member_scores_ : ndarray of shape (n_members,) or None
        With ``keep_best`` or ``selection="greedy"``: each member's
        training free-run NRMSE (the RMSE of each output channel over the
        standard deviation of its measured values, averaged over channels;
        ``inf`` for a run that diverged). None otherwise.
    selection_order_ : list of int or None
        With scores: the selected members in the order the rule took them
        (by their own score for ``"best"``, by addition for ``"greedy"``).
    selection_path_ : ndarray of shape (len(selected_),) or None
        With scores: the training free-run NRMSE of the mean of the first
        ``j + 1`` members of ``selection_order_``, for every ``j``; its last
        entry scores the ensemble that predicts.
    n_init_ : int
        Warm-up length the prediction needs: the largest of the members'.
    n_features_in_, n_outputs_ : int
        Number of input and output channels.

    Examples
    --------
    >>> import numpy as np
    >>> from sysid_msstcn import MSSTCNRegressor
    >>> from sysid_msstcn.ensemble import EnsembleRegressor
    >>> rng = np.random.default_rng(0)
    >>> u = rng.standard_normal((400, 1))
    >>> y = np.convolve(u[:, 0], [0.0, 0.5, 0.3], mode="full")[:400]
    >>> net = MSSTCNRegressor(preset="sysid_small", max_iter=1, steps_per_epoch=2,
    ...                       window=64, batch_size=4, device="cpu")
    >>> ens = EnsembleRegressor(net, n_members=2, random_state=0).fit(u, y)
    >>> ens.seeds_
    [0, 1]
    >>> ens.predict(u, y_init=y[:20]).shape
    (400,)
    """

    def __init__(
        self,
        estimator: Any = None,
        n_members: int = 5,
        *,
        n_jobs: int | None = None,
        random_state=None,
        keep_best: int | None = None,
        selection: str = "best",
    ) -> None:
        self.estimator = estimator
        self.n_members = n_members
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.keep_best = keep_best
        self.selection = selection

    # -- fitting -----------------------------------------------------------
    def _template(self) -> Any:
        template = MSSTCNRegressor() if self.estimator is None else self.estimator
        if not (hasattr(template, "fit") and hasattr(template, "predict")):
            raise TypeError(
                "estimator must be an estimator with fit and predict(X, y_init), "
                f"got {type(template).__name__}"
            )
        return template

    def _member_seeds(self) -> list[int]:
        n = self.n_members
        if isinstance(self.random_state, (int, np.integer)) and not isinstance(
            self.random_state, bool
        ):
            base = check_random_state_seed(self.random_state)
            return [(base + i) % 2**31 for i in range(n)]
        rng = (
            self.random_state
            if isinstance(self.random_state, np.random.Generator)
            else np.random.default_rng(check_random_state_seed(self.random_state))
        )
        return [int(s) for s in rng.integers(0, 2**31, size=n)]

    def fit(self, X: Any, y: Any) -> EnsembleRegressor:
        """Fit (or, with a warm-start template, continue) every member.

        With ``keep_best`` or ``selection="greedy"``, every member is then
        scored on the training data and the members are selected (after a
        continuation too, on the continued members).

        Parameters
        ----------
        X : array-like of shape (T, n_u) or (T,), or list of those
            Inputs.
        y : array-like of shape (T,) or (T, n_y), or list of those
            Outputs, aligned with ``X``.

        Returns
        -------
        self : EnsembleRegressor
        """
        n = self.n_members
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n_members must be a positive int, got {n!r}")
        if self.n_jobs is not None and (
            not isinstance(self.n_jobs, (int, np.integer)) or self.n_jobs == 0
        ):
            raise ValueError(
                f"n_jobs must be None or a nonzero int, got {self.n_jobs!r}"
            )
        k = self.keep_best
        if k is not None and (
            not isinstance(k, (int, np.integer))
            or isinstance(k, bool)
            or not 1 <= k <= n
        ):
            raise ValueError(
                f"keep_best must be None or an int in [1, n_members={n}], got {k!r}"
            )
        if self.selection not in ("best", "greedy"):
            raise ValueError(
                f"selection must be 'best' or 'greedy', got {self.selection!r}"
            )
        template = self._template()
        data = as_experiments(X, y, allow_no_input=False, min_length=2)
        if data.y[0] is None:
            raise ValueError(
                "EnsembleRegressor requires y to be passed, but the target y is None"
            )
        keys = _seed_keys(template)
        if not keys:
            raise ValueError(
                f"{type(template).__name__} has no random_state parameter: its "
                "members would all be the same model"
            )
        cont = _wants_warm_start(template) and hasattr(self, "estimators_")
        if cont and len(self.estimators_) != n:
            raise ValueError(
                f"cannot continue {len(self.estimators_)} fitted members as "
                f"n_members={n}; refit without warm_start"
            )
        seeds = list(self.seeds_) if cont else self._member_seeds()
        members = []
        for i, seed in enumerate(seeds):
            if cont:  # the member's own state, the template's new settings
                member = self.estimators_[i]
                member.set_params(**clone(template).get_params(deep=False))
            else:
                member = clone(template)
            member.set_params(**{k: seed for k in keys})
            members.append(member)
        fitted = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_member)(m, X, y) for m in members
        )
        n_init = max(int(getattr(m, "n_init_", 0)) for m in fitted)
        scores, order, path = self._select(fitted, data, n_init)
        # every attribute at once: a failed fit leaves the earlier state
        self.estimators_ = list(fitted)
        self.seeds_ = seeds
        self.member_scores_ = scores
        self.selected_ = list(range(n)) if order is None else sorted(order)
        self.selection_order_ = order
        self.selection_path_ = path
        self.n_features_in_ = data.n_inputs
        self.n_outputs_ = data.n_outputs
        self.n_init_ = n_init
        self._y_1d = data.y_1d
        return self

    def _select(
        self, fitted: list, data: Any, n_init: int
    ) -> tuple[np.ndarray | None, list[int] | None, np.ndarray | None]:
        """Members' training free-run scores, the selection order and its path.

        All three are None when nothing is selected (``keep_best`` None with
        ``selection="best"``).
        """
        greedy = self.selection == "greedy"
        if self.keep_best is None and not greedy:
            return None, None, None
        keep = [i for i, y in enumerate(data.y) if len(y) > n_init]
        if not keep:
            raise ValueError(
                "selecting members scores their free runs after their warm-up of "
                f"n_init_={n_init} samples, but no training experiment is longer "
                f"(lengths {[len(y) for y in data.y]})"
            )
        us, ys = [data.u[i] for i in keep], [data.y[i] for i in keep]
        measured = np.concatenate([y[n_init:] for y in ys])  # (n, n_y)
        runs = [_training_runs(m, us, ys, n_init) for m in fitted]
        scores = np.array([_run_nrmse(measured, r) for r in runs])
        cap = len(fitted) if self.keep_best is None else int(self.keep_best)
        if greedy:
            order, path = _greedy_selection(runs, measured, scores, cap)
        else:
            # ties: the lower seed index
            order = [int(i) for i in np.argsort(scores, kind="stable")[:cap]]
            path = []
            for j in range(1, len(order) + 1):
                chosen = [runs[i] for i in order[:j]]
                ok = all(r is not None for r in chosen)
                mean = np.mean(chosen, axis=0) if ok else None
                path.append(_run_nrmse(measured, mean))
        return scores, order, np.array(path)

    def _members(self) -> list:
        """The members the ensemble predicts with (``selected_``)."""
        check_is_fitted(self, "estimators_")
        selected = getattr(self, "selected_", None)
        if selected is None:
            return list(self.estimators_)
        return [self.estimators_[i] for i in selected]

    # -- prediction --------------------------------------------------------
    def _shape(self, p: Any, n_steps: int) -> np.ndarray:
        return np.asarray(p, dtype=float).reshape(n_steps, self.n_outputs_)

    def _format(self, arrays: list[np.ndarray], is_list: bool):
        out = [a[..., 0] if self._y_1d else a for a in arrays]
        return out if is_list else out[0]

    def _records(self, X: Any, y_init: Any) -> tuple[list, list, bool]:
        """Per experiment (inputs, warm-up) as the members take them."""
        check_is_fitted(self, "estimators_")
        is_list = isinstance(X, (list, tuple))
        xs = list(X) if is_list else [X]
        if y_init is None:
            inits = [None] * len(xs)
        elif isinstance(y_init, (list, tuple)) != is_list:
            raise ValueError("y_init must be a list exactly when X is a list")
        else:
            inits = list(y_init) if is_list else [y_init]
        if len(inits) != len(xs):
            raise ValueError(
                f"y_init has {len(inits)} experiment(s) but X has {len(xs)}; "
                "give one warm-up per experiment"
            )
        return xs, inits, is_list

    def member_predictions(self, X: Any, y_init: Any = None) -> list:
        """Every selected member's free run (the terms of :meth:`predict`'s mean).

        Parameters
        ----------
        X, y_init : see :meth:`predict`

        Returns
        -------
        list
            One entry per member in ``selected_``, shaped like
            :meth:`predict`'s output.
        """
        return [m.predict(X, y_init) for m in self._members()]

    def predict(self, X: Any, y_init: Any = None, return_std: bool = False):
        """Mean of the (selected) members' free-run simulations.

        Parameters
        ----------
        X : array-like of shape (T, n_u) or (T,), or list of those
            Inputs.
        y_init : array-like of shape (n, n_y) or (n,), list of those, or None
            Measured outputs of the warm-up (``n >= n_init_``), passed to
            every member.
        return_std : bool, default=False
            Also return the standard deviation of the members' mixture:
            the root of the mean of their one-step predictive variances
            (each member's ``predict(..., return_std=True)``) plus the
            variance of their free runs.

        Returns
        -------
        y_pred : ndarray of shape (T,) or (T, n_y), or list of those
        y_std : ndarray, same shape, only with ``return_std=True``
        """
        xs, inits, is_list = self._records(X, y_init)
        means, stds = [], []
        for x, y0 in zip(xs, inits, strict=True):
            n_steps = int(np.asarray(x).shape[0])
            runs, variances = [], []
            for m in self._members():
                if return_std:
                    p, sd = m.predict(x, y0, return_std=True)
                    variances.append(self._shape(sd, n_steps) ** 2)
                else:
                    p = m.predict(x, y0)
                runs.append(self._shape(p, n_steps))
            stack = np.stack(runs)  # (n_members, T, n_y)
            means.append(stack.mean(axis=0))
            if return_std:
                var = np.mean(variances, axis=0) + stack.var(axis=0)
                stds.append(np.sqrt(var))
        if return_std:
            return self._format(means, is_list), self._format(stds, is_list)
        return self._format(means, is_list)

    def simulate(
        self, X: Any, y_init: Any = None, n_samples: int = 100, random_state=None
    ):
        """Monte Carlo trajectories pooled over the (selected) members.

        The ``n_samples`` trajectories are shared out as evenly as possible
        over the members in ``selected_`` (the first ``n_samples % k`` of
        the ``k`` members give one more), member by member in order.

        Parameters
        ----------
        X, y_init : see :meth:`predict`
        n_samples : int, default=100
        random_state : int, Generator or None
            The ``i``-th selected member simulates with the seed drawn from
            it plus ``i``.

        Returns
        -------
        samples : ndarray of shape (n_samples, T, n_y), or list of those
        """
        if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        xs, inits, is_list = self._records(X, y_init)
        members = self._members()
        k = len(members)
        counts = [n_samples // k + (i < n_samples % k) for i in range(k)]
        base = check_random_state_seed(random_state)
        out = []
        for x, y0 in zip(xs, inits, strict=True):
            n_steps = int(np.asarray(x).shape[0])
            parts = [
                np.asarray(
                    m.simulate(x, y0, n_samples=c, random_state=(base + i) % 2**31),
                    dtype=float,
                ).reshape(c, n_steps, self.n_outputs_)
                for i, (m, c) in enumerate(zip(members, counts, strict=True))
                if c
            ]
            out.append(np.concatenate(parts))  # (n_samples, T, n_y)
        return out if is_list else out[0]

    def predict_interval(
        self,
        X: Any,
        y_init: Any = None,
        coverage: float = 0.9,
        n_samples: int = 200,
        random_state=None,
    ):
        """Central prediction interval of the pooled Monte Carlo trajectories.

        Parameters
        ----------
        X, y_init : see :meth:`predict`
        coverage : float, default=0.9
        n_samples : int, default=200
            Trajectories in all, shared out over the members.
        random_state : int, Generator or None

        Returns
        -------
        lower, upper : ndarray of the shape of :meth:`predict`'s output
        """
        if not isinstance(coverage, (float, int)) or not 0 < coverage < 1:
            raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
        sims = self.simulate(X, y_init, n_samples=n_samples, random_state=random_state)
        is_list = isinstance(sims, list)
        a = (1 - coverage) / 2
        qs = [np.quantile(s, (a, 1 - a), axis=0) for s in (sims if is_list else [sims])]
        lows = self._format([q[0] for q in qs], is_list)
        highs = self._format([q[1] for q in qs], is_list)
        return lows, highs

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of the mean free run after the warm-up of ``n_init_`` samples.

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
        return free_run_r2(self, "estimators_", X, y, sample_weight)

    # -- persistence -------------------------------------------------------
    def save(self, path) -> None:
        """Save an ensemble of ``MSSTCNRegressor`` members to one safetensors file.

        The members' weights and a JSON header (the ensemble's and the
        template's parameters, the seeds, every member's parameters and
        fitted statistics); written atomically. Other members (a
        :class:`~sysid_msstcn.LinearResidualRegressor`, say) are pickled
        instead.

        Parameters
        ----------
        path : str or path-like
            Target file, conventionally ``*.safetensors``.
        """
        check_is_fitted(self, "estimators_")
        others = {
            type(m).__name__ for m in self.estimators_ if type(m) is not MSSTCNRegressor
        }
        if others or not (
            self.estimator is None or type(self.estimator) is MSSTCNRegressor
        ):
            raise TypeError(
                "save writes ensembles of MSSTCNRegressor members only, got "
                f"{sorted(others) or type(self.estimator).__name__}; pickle "
                "(joblib.dump) saves any ensemble"
            )
        _persistence.save_ensemble(self, path)

    @classmethod
    def load(cls, path, device: str | None = None) -> EnsembleRegressor:
        """Load an ensemble saved with :meth:`save` (no code is executed).

        Parameters
        ----------
        path : str or path-like
        device : str or None, default=None
            Device for every member (see ``MSSTCNRegressor.load``).

        Returns
        -------
        EnsembleRegressor
        """
        return _persistence.load_ensemble(cls, MSSTCNRegressor, path, device)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        member = get_tags(
            MSSTCNRegressor() if self.estimator is None else self.estimator
        )
        tags.regressor_tags.poor_score = member.regressor_tags.poor_score
        tags.non_deterministic = member.non_deterministic
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags
