"""SUBNET baseline (deepSI): free-run protocol, training, missing-package error."""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from sysid_msstcn import metrics
from sysid_msstcn.baselines import SubnetRegressor, deepsi_available
from sysid_msstcn.exceptions import ShapeError

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="module")
def deepsi():
    """deepSI is optional; CI installs it (README 'Install'), so it must be there."""
    if not deepsi_available():
        msg = "deepSI is not installed (see the README, 'Install')"
        if IN_CI:
            pytest.fail(f"CI=true and {msg}")
        pytest.skip(msg)


def make_system(T: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A second-order Wiener-type system with a squared input term."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=T)
    y, x1, x2 = np.zeros(T), 0.0, 0.0
    for t in range(T):
        y[t] = np.tanh(x1)
        x1, x2 = (
            0.7 * x1 + 0.2 * x2 + 0.5 * u[t],
            -0.3 * x1 + 0.5 * x2 + 0.3 * u[t] ** 2,
        )
    return u, y


def small(**params) -> SubnetRegressor:
    base = {
        "nx": 4,
        "na": 5,
        "nb": 5,
        "horizon": 20,
        "n_hidden_nodes": 16,
        "max_iter": 8,
        "batch_size": 64,
        "learning_rate": 5e-3,
        "device": "cpu",
        "random_state": 0,
    }
    return SubnetRegressor(**{**base, **params})


@pytest.fixture(scope="module")
def fitted(deepsi):
    u, y = make_system(800)
    return small().fit(u[:600], y[:600]), u, y


def test_subnet_missing_deepsi_names_package_and_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepSI", None)  # import deepSI -> ImportError
    monkeypatch.setitem(sys.modules, "deepSI.fitting", None)
    assert not deepsi_available()
    u, y = make_system(200)
    with pytest.raises(ImportError, match="needs deepSI") as info:
        small().fit(u, y)
    assert 'pip install --no-deps "deepsi==0.4.4" cloudpickle' in str(info.value)


def test_subnet_learns_and_beats_the_mean_predictor(fitted):
    model, u, y = fitted
    assert model.n_init_ == 5 and model.n_iter_ == 8
    assert len(model.loss_curve_) == len(model.validation_scores_) == 8
    assert model.loss_curve_[-1] < 0.7 * model.loss_curve_[0]
    assert 1 <= model.best_epoch_ <= 8
    pred = model.predict(u[600:], y[600:605])
    trivial = metrics.rmse(y[600:], np.full(200, y[:600].mean()), n_init=5)
    assert metrics.rmse(y[600:], pred, n_init=5) < 0.6 * trivial


def test_subnet_free_run_protocol(fitted):
    model, u, y = fitted
    y_init = y[:17] + 100.0  # any content, longer than n_init_
    pred = model.predict(u, y_init)
    assert pred.shape == (800,) and np.all(np.isfinite(pred))
    np.testing.assert_array_equal(pred[:17], y_init)
    # the encoder reads only the last na outputs and nb inputs before sample n
    shifted = model.predict(u, np.r_[np.zeros(12), y[12:17]])
    np.testing.assert_allclose(shifted[17:], model.predict(u, y[:17])[17:])
    # y_init=None: warm-up = training mean
    np.testing.assert_allclose(model.predict(u)[:5], y[:600].mean())
    np.testing.assert_array_equal(model.predict(u[:30], y[:30]), y[:30])
    with pytest.raises(ShapeError, match="needs at least n_init_=5"):
        model.predict(u, y[:4])
    with pytest.raises(ShapeError, match="X has 2 features, but"):
        model.predict(np.ones((50, 2)), y[:5])
    # pickling keeps the network (on the CPU)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(u, y[:5]), model.predict(u, y[:5]))


def test_subnet_seed_determinism_and_clone(fitted):
    model, u, y = fitted
    twin = clone(model)
    assert not hasattr(twin, "model_") and twin.get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        twin.predict(u)
    twin.fit(u[:600], y[:600])
    np.testing.assert_array_equal(twin.predict(u, y[:5]), model.predict(u, y[:5]))
    other = small(random_state=1, max_iter=1).fit(u[:600], y[:600])
    assert not np.array_equal(other.predict(u, y[:5]), model.predict(u, y[:5]))


def test_subnet_mimo_experiments_and_time_budget(deepsi):
    rng = np.random.default_rng(3)
    us = [rng.normal(size=(120, 2)), rng.normal(size=(90, 2))]
    ys = [np.c_[np.cumsum(u[:, 0]) * 0.1, np.tanh(u[:, 1])] for u in us]
    model = small(max_iter=50, max_time=1e-9, validation_fraction=0.0)
    model.fit(us, ys)
    # the budget is used up by the first optimiser step
    assert model.n_iter_ == 1 and model.best_epoch_ == 1
    assert model.validation_scores_ == []
    preds = model.predict(us, [y[:5] for y in ys])
    assert [p.shape for p in preds] == [(120, 2), (90, 2)]
    assert model.n_features_in_ == 2 and model.n_outputs_ == 2


def test_subnet_invalid_settings(deepsi):
    u, y = make_system(60)
    with pytest.raises(ValueError, match="needs an experiment with at least"):
        small(horizon=50).fit(u, y)  # 48 training samples < 5 + 50
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        small(validation_fraction=1.0).fit(u, y)
    with pytest.raises(ValueError, match="na must be >= 1"):
        small(na=0).fit(u, y)
    with pytest.raises(ValueError, match="max_time must be > 0"):
        small(max_time=0).fit(u, y)


def test_default_models_include_subnet_only_with_deepsi(monkeypatch):
    from sysid_msstcn import benchmarking

    models = benchmarking.default_models("ced", "tiny", device="cpu")
    if deepsi_available():
        subnet = models["SUBNET (deepSI)"]
        assert (subnet.na, subnet.nb, subnet.max_iter) == (10, 10, 1)
    monkeypatch.setattr(benchmarking, "deepsi_available", lambda: False)
    models = benchmarking.default_models("ced", "tiny", device="cpu")
    assert "SUBNET (deepSI)" not in models
    assert "SUBNET (deepSI)" not in benchmarking.default_models(
        "ced", "tiny", baselines=False
    )
