"""MSSTCNRegressor as a scikit-learn estimator.

``parametrize_with_checks`` runs sklearn's estimator checks with a tiny
network. Only the two checks that assume i.i.d. rows fail, by design: rows
are time steps of a causal dynamic model, so permuting or sub-setting the
rows changes every prediction after the first changed row.
"""

from __future__ import annotations

import numpy as np
import torch
from _tiny import TINY_ESTIMATOR
from sklearn.base import clone, is_regressor
from sklearn.compose import TransformedTargetRegressor
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from sysid_msstcn import MSSTCNRegressor

torch.set_num_threads(1)

TINY = TINY_ESTIMATOR

EXPECTED_FAILED_CHECKS = {
    "check_methods_sample_order_invariance": (
        "rows are time steps: reordering them changes the dynamic response"
    ),
    "check_methods_subset_invariance": (
        "rows are time steps: a subset of rows is a different experiment, so "
        "the free-run prediction of the remaining rows changes"
    ),
}


def _system(n: int = 240, n_u: int = 1, seed: int = 0):
    """Inputs and outputs of a small stable nonlinear system."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, n_u))
    y = np.zeros(n)
    for t in range(1, n):
        y[t] = 0.7 * y[t - 1] + 0.5 * np.tanh(u[t - 1].sum()) + 0.01 * rng.normal()
    return u, y


@parametrize_with_checks(
    [MSSTCNRegressor(random_state=0, **TINY)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_is_a_regressor_with_expected_mixins():
    est = MSSTCNRegressor()
    assert is_regressor(est)
    tags = est.__sklearn_tags__()
    assert tags.target_tags.multi_output
    assert not tags.non_deterministic


def test_init_only_stores_parameters():
    est = MSSTCNRegressor(preset="sysid_small", max_iter=3, random_state=1)
    assert vars(est) == est.get_params(deep=False)
    assert not [k for k in vars(est) if k.endswith("_")]
    # an unknown preset is only detected in fit
    MSSTCNRegressor(preset="no_such_preset")


def test_clone_unfitted_and_fitted():
    u, y = _system()
    est = MSSTCNRegressor(random_state=0, **TINY).fit(u, y)
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    assert not hasattr(twin, "model_")
    np.testing.assert_array_equal(
        twin.fit(u, y).predict(u, y_init=y[:10]), est.predict(u, y_init=y[:10])
    )


def test_pipeline_with_standard_scaler_forwards_y_init():
    u, y = _system()
    u = 3.0 + 10.0 * u  # a scale StandardScaler is needed for
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("msstcn", MSSTCNRegressor(random_state=0, **TINY)),
        ]
    )
    pipe.fit(u[:180], y[:180])
    pred = pipe.predict(u[180:], y_init=y[180:190])
    assert pred.shape == (60,)
    np.testing.assert_array_equal(pred[:10], y[180:190])
    assert np.all(np.isfinite(pred))
    direct = pipe[-1].predict(pipe[0].transform(u[180:]), y_init=y[180:190])
    np.testing.assert_array_equal(pred, direct)
    assert np.isfinite(pipe.score(u[180:], y[180:]))


def test_grid_search_with_time_series_split():
    u, y = _system(n=240)
    grid = GridSearchCV(
        MSSTCNRegressor(random_state=0, **TINY),
        {"learning_rate": [1e-3, 1e-2]},
        cv=TimeSeriesSplit(n_splits=3),
        error_score="raise",
    )
    grid.fit(u, y)
    assert grid.best_params_["learning_rate"] in (1e-3, 1e-2)
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.best_estimator_.predict(u[:50], y_init=y[:8]).shape == (50,)


def test_cross_val_score_uses_warm_up_from_y():
    u, y = _system(n=200)
    est = MSSTCNRegressor(random_state=0, **TINY)
    scores = cross_val_score(est, u, y, cv=TimeSeriesSplit(n_splits=2))
    assert scores.shape == (2,)
    assert np.all(np.isfinite(scores))


def test_transformed_target_regressor():
    u, y = _system()
    y = 100.0 + 50.0 * y
    ttr = TransformedTargetRegressor(
        regressor=MSSTCNRegressor(random_state=0, **TINY),
        transformer=StandardScaler(),
    )
    ttr.fit(u, y)
    pred = ttr.predict(u)
    assert pred.shape == y.shape
    assert np.all(np.isfinite(pred))
    # predictions come back in the units of y
    assert abs(pred.mean() - y.mean()) < 5 * y.std()
    assert np.isfinite(ttr.score(u, y))


def test_set_params_then_fit_uses_new_values():
    u, y = _system()
    est = MSSTCNRegressor(random_state=0, **TINY)
    est.set_params(channels=(6, 6), max_iter=1).fit(u, y)
    assert est.network_config_.channels == (6, 6)
    assert est.n_iter_ == 1
