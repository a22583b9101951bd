"""WienerHammerstein: two linear filters around a spline, fitted as a grey box."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from _tiny import TINY_ESTIMATOR
from scipy.signal import lfilter

from sysid_msstcn import LinearResidualRegressor, MSSTCNRegressor
from sysid_msstcn.baselines import GreyBoxModel, GreyBoxRegressor, WienerHammerstein
from sysid_msstcn.exceptions import ShapeError


def _theta(wh: WienerHammerstein, values=None, gain=0.5) -> np.ndarray:
    """Stable filters with zeros, and the given spline values (default tanh)."""
    knots = np.linspace(-1.0, 1.0, wh.n_knots)
    values = 2.0 * np.tanh(1.5 * knots) + 0.1 if values is None else values
    g1 = [0.3, 0.2, 0.6][: wh.order1] + [0.1] * max(wh.order1 - 3, 0)
    g2 = [-0.4, 0.5, 0.7][: wh.order2] + [0.1] * max(wh.order2 - 3, 0)
    return np.concatenate(
        [
            g1,
            1.0 + 0.3 * np.arange(wh.order1 + 1),
            [gain],
            values,
            g2,
            1.0 - 0.2 * np.arange(wh.order2 + 1),
        ]
    )


def _data(wh, theta, n=1500, seed=0, scale=1.0):
    u = scale * np.random.default_rng(seed).normal(size=(n, 1))
    return u, wh.simulate(np.zeros(wh.n_states), u, theta)


def test_a_straight_nonlinearity_gives_the_cascade_of_the_two_filters():
    wh = WienerHammerstein(order1=3, order2=2, n_knots=7)
    theta = _theta(wh, values=3.0 * np.linspace(-1.0, 1.0, 7), gain=0.8)
    u, y = _data(wh, theta, n=400, scale=3.0)  # |gain * v| exceeds 1 too
    blocks = wh.blocks(theta)
    b = np.convolve(blocks["b1"], blocks["b2"]) * 3.0 * 0.8
    a = np.convolve(blocks["a1"], blocks["a2"])
    np.testing.assert_allclose(y[:, 0], lfilter(b, a, u[:, 0]), rtol=0, atol=1e-10)
    # both filters have unit static gain
    for part in ("1", "2"):
        gain = blocks["b" + part].sum() / blocks["a" + part].sum()
        assert gain == pytest.approx(1.0, abs=1e-12)


def test_the_spline_passes_its_knots_and_continues_linearly():
    wh = WienerHammerstein(order1=1, order2=1, n_knots=9)
    theta = _theta(wh)
    knots, values = np.linspace(-1.0, 1.0, 9), wh.blocks(theta)["values"]
    np.testing.assert_allclose(wh.nonlinearity(knots, theta), values, atol=1e-12)
    for edge, side in ((1.0, 1.0), (-1.0, -1.0)):
        s = edge + side * np.array([0.5, 1.0, 1.5, 2.0])
        f = wh.nonlinearity(s, theta)
        np.testing.assert_allclose(np.diff(f, 2), 0.0, atol=1e-12)
        # the continuation joins the spline with its slope at the edge
        near = wh.nonlinearity(np.array([edge - side * 1e-6, edge]), theta)
        slope = side * (near[1] - near[0]) / 1e-6
        assert (f[1] - f[0]) / (s[1] - s[0]) == pytest.approx(slope, rel=1e-4)


def test_every_parameter_vector_within_the_bounds_gives_stable_filters():
    wh = WienerHammerstein(order1=3, order2=4, n_knots=5)
    lower, upper = wh.param_bounds()
    rng = np.random.default_rng(0)
    finite = np.isfinite(lower)
    assert finite.sum() == 7  # the pole coordinates
    for _ in range(200):
        theta = rng.normal(size=lower.size)
        theta[finite] = rng.uniform(lower[finite], upper[finite])
        blocks = wh.blocks(theta)
        for a in (blocks["a1"], blocks["a2"]):
            assert np.abs(np.roots(a)).max() < 1.0


def test_names_bounds_and_starts_have_the_parameter_vector_size():
    wh = WienerHammerstein(order1=2, order2=3, n_knots=6)
    size = 2 + 3 + 1 + 6 + 3 + 4
    assert len(wh.param_names) == size and wh.n_states == 5
    assert wh.param_names[:6] == ("G1.a0", "G1.a1", "G1.b0", "G1.b1", "G1.b2", "gain")
    assert wh.initial_params().size == size
    assert all(bound.size == size for bound in wh.param_bounds())
    u, y = _data(wh, _theta(wh), n=600)
    starts = wh.starts([u], [y], 3, np.random.default_rng(0))
    assert starts and all(start.size == size for start in starts)


def test_the_linear_approximation_of_a_linear_system_is_exact():
    wh = WienerHammerstein(order1=2, order2=1, n_knots=5)
    b, a = np.array([0.5, -0.2, 0.1, 0.05]), np.poly([0.8, 0.5 + 0.3j, 0.5 - 0.3j])
    u = np.random.default_rng(1).normal(size=(800, 1))
    y = lfilter(b, a, u[:, 0])[:, None]
    b_hat, a_hat = wh.best_linear_approximation([u], [y])
    np.testing.assert_allclose(a_hat, a.real, atol=1e-8)
    np.testing.assert_allclose(b_hat, b, atol=1e-8)


def test_starts_are_the_distinct_splits_of_the_poles():
    # poles 0.8, 0.3 (real) and 0.5 +- 0.3j: G1 of order 2 takes both real
    # poles or the pair; G1 of order 1 takes either real pole
    b, a = (
        np.array([0.5, -0.2, 0.1, 0.05, 0.0]),
        np.poly([0.8, 0.3, 0.5 + 0.3j, 0.5 - 0.3j]),
    )
    u = np.random.default_rng(2).normal(size=(800, 1))
    y = lfilter(b, a.real, u[:, 0])[:, None]
    rng = np.random.default_rng(0)
    two = WienerHammerstein(order1=2, order2=2, n_knots=5)
    assert len(two.starts([u], [y], 5, rng)) == 2
    assert len(two.starts([u], [y], 0, rng)) == 1
    one = WienerHammerstein(order1=1, order2=3, n_knots=5)
    starts = one.starts([u], [y], 5, rng)
    assert len(starts) == 2
    g1_poles = sorted(float(np.roots(one.blocks(s)["a1"])[0].real) for s in starts)
    np.testing.assert_allclose(g1_poles, [0.3, 0.8], atol=1e-6)
    for start in starts:  # each start simulates the linear approximation closely
        sim = one.simulate(np.zeros(4), u, start)
        assert np.sqrt(np.mean((sim - y) ** 2)) < 0.05 * y.std()


def test_a_complex_pair_that_cannot_be_split_becomes_two_real_poles():
    b, a = np.array([0.3, 0.2, 0.1]), np.poly([0.6 + 0.4j, 0.6 - 0.4j]).real
    u = np.random.default_rng(3).normal(size=(500, 1))
    y = lfilter(b, a, u[:, 0])[:, None]
    wh = WienerHammerstein(order1=1, order2=1, n_knots=5)
    (start,) = wh.starts([u], [y], 3, np.random.default_rng(0))
    blocks = wh.blocks(start)
    for den in (blocks["a1"], blocks["a2"]):
        np.testing.assert_allclose(den, [1.0, -0.6], atol=1e-6)


def test_the_regressor_recovers_a_wiener_hammerstein_system():
    wh = WienerHammerstein(order1=2, order2=2, n_knots=8)
    theta = _theta(wh)
    u, y = _data(wh, theta, n=1500)
    model = GreyBoxRegressor(wh, n_init=20, n_restarts=1, random_state=0).fit(u, y)
    u_new, y_new = _data(wh, theta, n=600, seed=5)
    pred = model.predict(u_new, y_new[:20])
    rmse = np.sqrt(np.mean((pred[20:] - y_new[20:]) ** 2))
    assert rmse < 1e-3 * y_new.std()
    np.testing.assert_array_equal(pred[:20], y_new[:20])
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(u_new, y_new[:20]), pred)


def test_a_fitted_structure_is_a_nominal_model_for_the_hybrid():
    wh = WienerHammerstein(order1=1, order2=1, n_knots=5)
    u, y = _data(wh, _theta(wh), n=300)
    nominal = GreyBoxRegressor(wh, n_init=10, n_restarts=0)
    net = MSSTCNRegressor(**TINY_ESTIMATOR, random_state=0)
    hybrid = LinearResidualRegressor(net, nominal).fit(u, y)
    assert isinstance(hybrid.linear_.model, WienerHammerstein)
    assert hybrid.predict(u, y[:20]).shape == y.shape


def test_bad_structures_and_data_get_named_errors():
    u, y = np.zeros((100, 1)), np.zeros((100, 1))
    with pytest.raises(ValueError, match="order1"):
        _ = WienerHammerstein(order1=0).param_names
    with pytest.raises(ValueError, match="n_knots"):
        GreyBoxRegressor(WienerHammerstein(n_knots=3)).fit(u, y)
    with pytest.raises(ShapeError, match="1 input"):
        GreyBoxRegressor(WienerHammerstein()).fit(np.zeros((100, 2)), y)
    assert "order2=3" in repr(WienerHammerstein())
    assert isinstance(WienerHammerstein(), GreyBoxModel)
