"""GreyBoxRegressor: physical structures fitted by their simulation error."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from sysid_msstcn import LinearResidualRegressor, MSSTCNRegressor
from sysid_msstcn.baselines import (
    CascadedTanks,
    EMPSDrive,
    GreyBoxModel,
    GreyBoxRegressor,
)
from sysid_msstcn.exceptions import ShapeError

THETA = np.array([0.06, 0.04, 0.05, 0.05, 0.8, 9.0, 10.0, 0.3])


def _tanks_data(seed: int = 0, n_steps: int = 20, x0=(4.0, 4.0)):
    """Pump-voltage steps of 20 samples and the tanks' noise-free levels."""
    steps = np.random.default_rng(seed).uniform(1, 6, size=n_steps)
    u = np.repeat(steps, 20)[:, None]  # (20 n_steps, 1)
    return u, CascadedTanks().simulate(np.array(x0), u, THETA)


class FirstOrder(GreyBoxModel):
    """x(t+1) = a x(t) + b u(t), y = x: the default simulate path."""

    param_names = ("a", "b")

    def step(self, x, u, theta):
        return theta[0] * x + theta[1] * u

    def output(self, x, theta):
        return x.copy()

    def initial_params(self):
        return np.array([0.5, 0.5])

    def param_bounds(self):
        return np.array([-0.99, -5.0]), np.array([0.99, 5.0])

    def state_bounds(self):
        return np.array([-100.0]), np.array([100.0])

    def initial_state(self, y0, theta):
        return np.asarray(y0, dtype=float)


def test_the_tanks_fast_simulation_equals_the_step_by_step_one():
    u, _ = _tanks_data()
    tanks = CascadedTanks(sampling_time=4.0, substeps=3)
    x0 = np.array([5.0, 2.0])
    fast = tanks.simulate(x0, u, THETA)
    slow = GreyBoxModel.simulate(tanks, x0, u, THETA)  # step and output
    np.testing.assert_array_equal(fast, slow)
    assert fast.max() <= THETA[6] + THETA[7]  # the lower tank overflows


def test_the_drive_recovers_its_friction_from_a_noise_free_record():
    drive = EMPSDrive()
    theta = np.array([0.36, 2.3, 0.2, -0.03])
    t = np.arange(3000) * drive.sampling_time
    u = (np.sin(2 * np.pi * 0.7 * t) + 0.5 * np.sin(2 * np.pi * 2.3 * t))[:, None]
    y = drive.simulate(np.array([0.1, 0.0]), u, theta)  # (3000, 1) positions
    slow = GreyBoxModel.simulate(drive, np.array([0.1, 0.0]), u, theta)
    np.testing.assert_allclose(y, slow, rtol=0, atol=1e-12)  # the two paths
    model = GreyBoxRegressor(drive, n_init=20, n_restarts=0).fit(u, y)
    np.testing.assert_allclose(model.params_, theta, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.predict(u, y[:20]), y, atol=1e-7)


def test_noise_free_tanks_are_simulated_exactly_from_two_experiments():
    (u1, y1), (u2, y2) = _tanks_data(0), _tanks_data(1, x0=(2.0, 6.0))
    model = GreyBoxRegressor(CascadedTanks(), n_restarts=0, random_state=0)
    model.fit([u1, u2], [y1[:, 0], y2[:, 0]])
    assert model.cost_ < 1e-12 and len(model.initial_states_) == 2
    np.testing.assert_allclose(model.initial_states_[1][1], 6.0, atol=1e-5)
    u3, y3 = _tanks_data(2, x0=(3.0, 3.0))  # a new record, a new state
    pred = model.predict(u3, y3[:10, 0])
    assert pred.shape == (400,)
    np.testing.assert_allclose(pred, y3[:, 0], atol=1e-5)
    np.testing.assert_array_equal(pred[:10], y3[:10, 0])  # the warm-up as given
    assert model.score(u3, y3[:, 0]) > 0.999999


def test_a_structure_of_your_own_recovers_its_parameters():
    rng = np.random.default_rng(0)
    u = rng.standard_normal((200, 1))
    y = np.zeros((200, 1))
    for t in range(199):
        y[t + 1] = 0.8 * y[t] + 0.3 * u[t]
    model = GreyBoxRegressor(FirstOrder(), n_init=1, random_state=0).fit(u, y)
    np.testing.assert_allclose(model.params_, [0.8, 0.3], atol=1e-8)
    np.testing.assert_allclose(model.predict(u, y[:1]), y, atol=1e-8)


def test_restarts_are_seeded_and_keep_the_best_start():
    u, y = _tanks_data()
    noisy = y + 0.05 * np.random.default_rng(3).standard_normal(y.shape)
    one = GreyBoxRegressor(CascadedTanks(), n_restarts=0, random_state=0)
    three = clone(one).set_params(n_restarts=2)
    costs = [m.fit(u, noisy).cost_ for m in (one, three)]
    assert costs[1] <= costs[0]
    again = clone(three).fit(u, noisy)
    np.testing.assert_array_equal(again.params_, three.params_)


def test_clone_and_pickle_keep_the_structure():
    u, y = _tanks_data()
    model = GreyBoxRegressor(CascadedTanks(substeps=2), n_restarts=0).fit(u, y)
    twin = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(twin.predict(u, y[:10]), model.predict(u, y[:10]))
    assert clone(model).get_params()["model"].substeps == 2
    assert "CascadedTanks(sampling_time=4.0, substeps=2)" in repr(model)


def test_as_the_nominal_model_of_a_hybrid():
    u, y = _tanks_data()
    y = y + 0.05 * np.random.default_rng(0).standard_normal(y.shape)
    gb = GreyBoxRegressor(CascadedTanks(), n_restarts=0, random_state=0)
    net = MSSTCNRegressor(
        preset="sysid_small",
        max_iter=1,
        steps_per_epoch=2,
        window=64,
        batch_size=4,
        random_state=0,
        device="cpu",
    )
    hybrid = LinearResidualRegressor(net, gb).fit(u, y[:, 0])
    alone = clone(gb).fit(u, y[:, 0])
    np.testing.assert_array_equal(
        hybrid.linear_simulation(u, y[:60, 0]), alone.predict(u, y[:60, 0])
    )
    assert np.all(np.isfinite(hybrid.predict(u, y[:60, 0])))


def test_bad_input_is_named():
    u, y = _tanks_data()
    with pytest.raises(TypeError, match="model must be a GreyBoxModel"):
        GreyBoxRegressor().fit(u, y)
    with pytest.raises(ShapeError, match="has 1 input"):
        GreyBoxRegressor(CascadedTanks()).fit(np.hstack([u, u]), y)
    with pytest.raises(ValueError, match="n_init must be >= 1"):
        GreyBoxRegressor(CascadedTanks(), n_init=0).fit(u, y)
    with pytest.raises(ValueError, match="n_restarts must be an int"):
        GreyBoxRegressor(CascadedTanks(), n_restarts=1.5).fit(u, y)
    bad = y.copy()
    bad[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GreyBoxRegressor(CascadedTanks()).fit(u, bad)
    with pytest.raises(NotFittedError):
        GreyBoxRegressor(CascadedTanks()).predict(u, y[:10])
    model = GreyBoxRegressor(CascadedTanks(), n_restarts=0).fit(u, y)
    with pytest.raises(ShapeError, match="needs at least n_init_=10"):
        model.predict(u, y[:5])
    with pytest.raises(ShapeError, match="X has 2 input channel"):
        model.predict(np.hstack([u, u]), y[:10])
    assert model.predict(u).shape == y.shape  # no warm-up: the training mean


class BadStarts(FirstOrder):
    """Returns what ``starts`` is given as ``result``."""

    def __init__(self, result):
        self.result = result

    def starts(self, u, y, n_restarts, rng):
        return self.result


def test_starts_of_the_wrong_size_or_none_get_a_named_error():
    u = np.ones((50, 1))
    y = FirstOrder().simulate(np.zeros(1), u, np.array([0.5, 0.5]))
    for result in ([], [np.ones(3)]):
        with pytest.raises(ValueError, match=r"starts must return .* shape \(2,\)"):
            GreyBoxRegressor(BadStarts(result)).fit(u, y)
    fitted = GreyBoxRegressor(BadStarts([np.array([0.2, 1.0])])).fit(u, y)
    np.testing.assert_allclose(fitted.params_, [0.5, 0.5], atol=1e-6)


def test_warmup_training_states_are_the_warmup_estimates_of_the_fitted_model():
    u, y = _tanks_data(seed=4)
    model = GreyBoxRegressor(
        CascadedTanks(), n_init=30, n_restarts=0, train_state="warmup"
    ).fit([u[:200], u[200:]], [y[:200], y[200:]])
    for (ue, ye), x0 in zip(
        [(u[:200], y[:200]), (u[200:], y[200:])], model.initial_states_, strict=True
    ):
        np.testing.assert_array_equal(x0, model.estimate_state(ue[:30], ye[:30]))
    # noise-free data: the simulation from the warm-up's state is exact
    pred = model.predict(u, y[:30])
    assert np.sqrt(np.mean((pred - y) ** 2)) < 1e-4
    with pytest.raises(ValueError, match="train_state must be 'fit' or 'warmup'"):
        clone(model).set_params(train_state="free").fit(u, y)


def test_warmup_training_states_simulate_emps_better_from_the_warmup(benchmark_data):
    from sysid_msstcn.data import load_benchmark

    train, test = load_benchmark("emps", benchmark_data)
    u, y = np.asarray(train[0].u), np.asarray(train[0].y)
    ut, yt = np.asarray(test[0].u), np.asarray(test[0].y)
    rmse = {}
    for mode in ("fit", "warmup"):
        model = GreyBoxRegressor(
            EMPSDrive(), n_init=20, n_restarts=0, train_state=mode
        ).fit(u, y)
        rmse[mode] = np.sqrt(np.mean((model.predict(ut, yt[:20]) - yt)[20:] ** 2))
    # fitted states offset the training drift (9.1 mm on the test record);
    # states from the warm-up fit the parameters as predict uses them (6.9)
    assert rmse["warmup"] < 0.8 * rmse["fit"]
