"""Metrics: known values, agreement with nonlinear_benchmarks, probabilistic scores."""

from __future__ import annotations

import math

import nonlinear_benchmarks.error_metrics as nb_metrics
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import integrate, stats

from sysid_msstcn import metrics
from sysid_msstcn.exceptions import ShapeError

POINT_METRICS = [
    metrics.rmse,
    metrics.nrmse,
    metrics.fit_index,
    metrics.r2,
    metrics.mae,
]
NB_PAIRS = [
    (metrics.rmse, nb_metrics.RMSE),
    (metrics.nrmse, nb_metrics.NRMSE),
    (metrics.fit_index, nb_metrics.fit_index),
    (metrics.mae, nb_metrics.MAE),
]


@pytest.fixture
def pair():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(200, 3)) * [1.0, 2.0, 0.5]
    return y, y + 0.3 * rng.normal(size=y.shape)


# ------------------------------------------------------------------ known values
def test_known_values_single_channel():
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    y_pred = np.array([1.0, 2.0, 3.0, 6.0])
    assert metrics.rmse(y_true, y_pred) == pytest.approx(1.0)
    assert metrics.mae(y_true, y_pred) == pytest.approx(0.5)
    std = math.sqrt(1.25)
    assert metrics.nrmse(y_true, y_pred) == pytest.approx(1 / std)
    assert metrics.fit_index(y_true, y_pred) == pytest.approx(100 * (1 - 1 / std))
    assert metrics.r2(y_true, y_pred) == pytest.approx(1 - 1 / 1.25)
    assert isinstance(metrics.rmse(y_true, y_pred), float)


def test_perfect_prediction():
    y = np.sin(np.arange(50.0))
    assert metrics.rmse(y, y) == 0.0
    assert metrics.r2(y, y) == 1.0
    assert metrics.fit_index(y, y) == 100.0


def test_r2_matches_sklearn_definition(pair):
    y, p = pair
    ss_res = ((y - p) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    np.testing.assert_allclose(metrics.r2(y, p), 1 - ss_res / ss_tot)


def test_multioutput_modes(pair):
    y, p = pair
    raw = metrics.rmse(y, p)
    assert raw.shape == (3,)
    assert metrics.rmse(y, p, multioutput="uniform_average") == pytest.approx(
        raw.mean()
    )
    w = [1.0, 0.0, 3.0]
    assert metrics.rmse(y, p, multioutput=w) == pytest.approx(
        np.average(raw, weights=w)
    )
    with pytest.raises(ValueError, match="multioutput must be"):
        metrics.rmse(y, p, multioutput="variance_weighted")
    with pytest.raises(ShapeError, match="weights have shape"):
        metrics.rmse(y, p, multioutput=[1.0, 2.0])


def test_time_axis_one(pair):
    y, p = pair
    np.testing.assert_allclose(
        metrics.nrmse(y.T, p.T, time_axis=1), metrics.nrmse(y, p)
    )
    np.testing.assert_allclose(
        metrics.rmse(y.T, p.T, time_axis=-1, n_init=10), metrics.rmse(y, p, n_init=10)
    )


# ----------------------------------------------------- agreement with the package
@pytest.mark.parametrize("ours, theirs", NB_PAIRS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n_init", [0, 17])
def test_agrees_with_nonlinear_benchmarks(pair, ours, theirs, n_init):
    y, p = pair
    np.testing.assert_allclose(ours(y, p, n_init=n_init), theirs(y, p, n_init=n_init))
    np.testing.assert_allclose(
        ours(y[:, 0], p[:, 0], n_init=n_init), theirs(y[:, 0], p[:, 0], n_init=n_init)
    )


def test_r2_agrees_without_n_init(pair):
    y, p = pair
    np.testing.assert_allclose(metrics.r2(y, p), nb_metrics.R_squared(y, p))


def test_r2_quirk_avoided():
    """nonlinear_benchmarks' R_squared ignores n_init; ours scores after it."""
    rng = np.random.default_rng(2)
    y = rng.normal(size=300)
    p = y + 0.2 * rng.normal(size=300)
    p[:50] = 10.0  # a terrible warm-up segment that must not count
    ours = metrics.r2(y, p, n_init=50)
    expected = 1 - metrics.nrmse(y, p, n_init=50) ** 2
    assert ours == pytest.approx(expected)
    assert ours == pytest.approx(1 - np.mean((y[50:] - p[50:]) ** 2) / np.var(y[50:]))
    theirs = float(nb_metrics.R_squared(y, p, n_init=50))
    assert theirs < 0 < 0.9 < ours  # the quirk makes theirs meaningless here


def test_agrees_on_cascaded_tanks_test_set(benchmark_data):
    import nonlinear_benchmarks as nlb

    _, test = nlb.Cascaded_Tanks(dir_placement=str(benchmark_data))
    n = test.state_initialization_window_length
    y_model = np.convolve(test.u, np.ones(5) / 5, mode="same") * 0.5 + test.y.mean()
    assert metrics.rmse(test.y, y_model, n_init=n) == pytest.approx(
        float(nb_metrics.RMSE(test.y, y_model, n_init=n))
    )
    assert metrics.fit_index(test.y, y_model, n_init=n) == pytest.approx(
        float(nb_metrics.fit_index(test, y_model))  # n from the data object
    )


# ----------------------------------------------------------- n_init and lists
def test_list_of_experiments_drops_n_init_from_each():
    rng = np.random.default_rng(3)
    ys = [rng.normal(size=(40, 2)), rng.normal(size=(25, 2))]
    ps = [y + rng.normal(size=y.shape) for y in ys]
    cat_y = np.concatenate([ys[0][5:], ys[1][5:]])
    cat_p = np.concatenate([ps[0][5:], ps[1][5:]])
    for f in POINT_METRICS:
        np.testing.assert_allclose(f(ys, ps, n_init=5), f(cat_y, cat_p))


@pytest.mark.parametrize("f", POINT_METRICS, ids=lambda f: f.__name__)
def test_argument_validation(f):
    y = np.arange(10.0)
    with pytest.raises(ValueError, match="n_init must be >= 0"):
        f(y, y, n_init=-1)
    with pytest.raises(ValueError, match="n_init=10 leaves no sample"):
        f(y, y, n_init=10)
    with pytest.raises(ValueError, match="n_init must be an int"):
        f(y, y, n_init=1.5)
    with pytest.raises(ShapeError, match="different shapes"):
        f(y, y[:-1])
    with pytest.raises(ShapeError, match="different shapes"):
        f(np.ones((10, 2)), np.ones((10, 3)))
    with pytest.raises(ValueError, match="y_pred contains NaN.*index 3"):
        f(y, np.where(np.arange(10) == 3, np.nan, y))
    with pytest.raises(ValueError, match="y_true contains inf"):
        f(np.where(np.arange(10) == 0, np.inf, y), y)
    with pytest.raises(ShapeError, match="y_true has 2 experiment"):
        f([y, y], [y])


@pytest.mark.parametrize("f", [metrics.nrmse, metrics.fit_index, metrics.r2])
def test_zero_variance_raises(f):
    y = np.c_[np.ones(20), np.arange(20.0)]
    with pytest.raises(ValueError, match=r"zero variance.*channel\(s\) \[0\]"):
        f(y, y + 0.1)
    # a constant segment after n_init is also caught
    z = np.r_[np.arange(5.0), np.full(15, 2.0)]
    with pytest.raises(ValueError, match="zero variance"):
        f(z, z, n_init=5)


# ------------------------------------------------------- hypothesis properties
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@st.composite
def pairs(draw):
    T = draw(st.integers(3, 40))
    n_y = draw(st.integers(1, 3))
    y = draw(hnp.arrays(np.float64, (T, n_y), elements=finite))
    p = draw(hnp.arrays(np.float64, (T, n_y), elements=finite))
    return y, p


@settings(max_examples=40, deadline=None)
@given(pairs())
def test_property_rmse_nonnegative_and_bounds(data):
    y, p = data
    r = metrics.rmse(y, p)
    assert np.all(r >= 0)
    assert np.all(metrics.mae(y, p) <= r + 1e-9)


@settings(max_examples=40, deadline=None)
@given(pairs())
def test_property_r2_is_one_minus_nrmse_squared(data):
    y, p = data
    std = y.std(axis=0)
    scale = np.maximum(np.abs(y).max(axis=0), 1e-300)
    if np.any(std <= 1e-10 * scale):
        with pytest.raises(ValueError, match="zero variance"):
            metrics.r2(y, p)
        return
    if np.any(std <= 1e-6 * scale):  # nearly constant: ill-conditioned, skip
        return
    n = metrics.nrmse(y, p)
    np.testing.assert_allclose(metrics.r2(y, p), 1 - n**2, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(metrics.fit_index(y, p), 100 * (1 - n), atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(pairs(), st.integers(0, 2), finite)
def test_property_prefix_content_is_ignored(data, n_init, junk):
    y, p = data
    p2 = p.copy()
    p2[:n_init] = junk
    y2 = y.copy()
    y2[:n_init] = -junk
    np.testing.assert_allclose(
        metrics.rmse(y, p, n_init=n_init), metrics.rmse(y2, p2, n_init=n_init)
    )
    np.testing.assert_allclose(
        metrics.mae(y, p, n_init=n_init), metrics.mae(y2, p2, n_init=n_init)
    )


# ----------------------------------------------------------- probabilistic
def test_gaussian_nll_matches_scipy():
    rng = np.random.default_rng(4)
    y = rng.normal(size=(100, 2))
    mu = rng.normal(size=(100, 2))
    sd = rng.uniform(0.5, 2.0, size=(100, 2))
    expected = -stats.norm.logpdf(y, mu, sd)[10:].mean(axis=0)
    np.testing.assert_allclose(metrics.gaussian_nll(y, mu, sd, n_init=10), expected)
    # scalar std broadcasts
    np.testing.assert_allclose(
        metrics.gaussian_nll(y, mu, 1.5), -stats.norm.logpdf(y, mu, 1.5).mean(axis=0)
    )


def test_crps_gaussian_matches_numerical_integral():
    # CRPS = integral of (F(x) - 1{x >= y})^2 dx
    mu, sd, y = 0.3, 1.7, -0.4
    left = integrate.quad(lambda x: stats.norm.cdf(x, mu, sd) ** 2, -np.inf, y)[0]
    right = integrate.quad(lambda x: stats.norm.sf(x, mu, sd) ** 2, y, np.inf)[0]
    expected = left + right
    got = metrics.crps_gaussian(np.array([y]), np.array([mu]), np.array([sd]))
    assert got == pytest.approx(expected, rel=1e-9)


def test_crps_gaussian_agrees_with_ensemble_monte_carlo():
    rng = np.random.default_rng(5)
    T = 30
    y = rng.normal(size=(T, 2))
    mu = rng.normal(size=(T, 2))
    sd = rng.uniform(0.5, 1.5, size=(T, 2))
    samples = mu + sd * rng.standard_normal(size=(4000, T, 2))
    closed = metrics.crps_gaussian(y, mu, sd)
    mc = metrics.crps_ensemble(y, samples, fair=True)
    np.testing.assert_allclose(mc, closed, rtol=0.02)


def test_crps_ensemble_known_values():
    # a single sample: CRPS is the absolute error
    y = np.array([1.0, 2.0, 3.0])
    s = np.array([[1.5, 2.0, 0.0]])
    assert metrics.crps_ensemble(y, s) == pytest.approx(np.mean([0.5, 0.0, 3.0]))
    # two samples {0, 2}, y = 1: E|X-y| = 1, E|X-X'| = 1 (biased) -> 0.5
    assert metrics.crps_ensemble(np.array([1.0]), np.array([[0.0], [2.0]])) == 0.5
    # fair: E|X-X'| = 2 -> 0
    got = metrics.crps_ensemble(np.array([1.0]), np.array([[0.0], [2.0]]), fair=True)
    assert got == pytest.approx(0.0)


def test_crps_ensemble_lists_and_validation():
    rng = np.random.default_rng(6)
    ys = [rng.normal(size=(20, 1)), rng.normal(size=(10, 1))]
    ss = [rng.normal(size=(50, 20, 1)), rng.normal(size=(50, 10, 1))]
    got = metrics.crps_ensemble(ys, ss, n_init=2)
    cat = metrics.crps_ensemble(
        np.concatenate([ys[0][2:], ys[1][2:]]),
        np.concatenate([ss[0][:, 2:], ss[1][:, 2:]], axis=1),
    )
    np.testing.assert_allclose(got, cat)
    with pytest.raises(ShapeError, match="samples must have shape"):
        metrics.crps_ensemble(ys[0], rng.normal(size=(50, 19, 1)))
    with pytest.raises(ValueError, match="samples contain NaN"):
        metrics.crps_ensemble(ys[0], np.full((5, 20, 1), np.nan))


def test_interval_coverage():
    y = np.arange(10.0)
    lower, upper = y - 1, y + 1
    upper[:3] = y[:3] - 2  # lower > upper is rejected
    with pytest.raises(ValueError, match="lower > upper"):
        metrics.interval_coverage(y, lower, upper)
    upper[:3] = y[:3] + 1
    lower[:4] = y[:4] + 0.5  # these 4 miss
    assert metrics.interval_coverage(y, lower, upper) == pytest.approx(0.6)
    assert metrics.interval_coverage(y, lower, upper, n_init=4) == 1.0


def test_gaussian_interval_coverage_is_nominal():
    rng = np.random.default_rng(7)
    y = rng.normal(size=20000)
    z = stats.norm.ppf(0.95)
    cov = metrics.interval_coverage(y, np.full_like(y, -z), np.full_like(y, z))
    assert cov == pytest.approx(0.9, abs=0.01)


def test_probabilistic_validation():
    y = np.zeros(5)
    with pytest.raises(ValueError, match="std must be > 0"):
        metrics.gaussian_nll(y, y, np.zeros(5))
    with pytest.raises(ValueError, match="std must be > 0"):
        metrics.crps_gaussian(y, y, -1.0)
    with pytest.raises(ShapeError, match="different shapes"):
        metrics.crps_gaussian(y, y, np.ones(4))


# ---------------------------------------------------------------- ELBO report
def test_nats_to_bits():
    assert metrics.nats_to_bits(math.log(2)) == pytest.approx(1.0)
    np.testing.assert_allclose(metrics.nats_to_bits([0.0, math.log(8)]), [0.0, 3.0])


def test_elbo_report_values():
    elbo = np.array([-1000.0, -1200.0])
    kl = np.array([[10.0, 4.0, 1.0], [20.0, 6.0, 3.0]])
    rep = metrics.elbo_report(elbo, kl, n_steps=[100, 150], n_dims=2)
    assert rep["n_sequences"] == 2
    assert rep["elbo_per_sequence"] == pytest.approx(-1100.0)
    assert rep["elbo_per_step"] == pytest.approx(-2200.0 / 250)
    assert rep["elbo_per_dim"] == pytest.approx(-2200.0 / 500)
    assert rep["bits_per_dim"] == pytest.approx(2200.0 / 500 / math.log(2))
    np.testing.assert_allclose(rep["kl_per_level"], [15.0, 5.0, 2.0])
    assert rep["KL1"] == 15.0 and rep["KL3"] == 2.0  # KL1 = level closest to data
    assert rep["kl_total"] == pytest.approx(22.0)


def test_elbo_report_validation():
    with pytest.raises(ValueError, match="n_steps"):
        metrics.elbo_report([1.0], [1.0], n_steps=0, n_dims=1)
    with pytest.raises(ValueError, match="n_dims"):
        metrics.elbo_report([1.0], [1.0], n_steps=10, n_dims=0)
    with pytest.raises(ShapeError, match="kl_per_level has 3 rows"):
        metrics.elbo_report([1.0, 2.0], np.ones((3, 2)), n_steps=10, n_dims=1)
    with pytest.raises(ValueError, match="elbo_per_sequence"):
        metrics.elbo_report([np.nan], [1.0], n_steps=10, n_dims=1)


def test_metrics_module_imports_only_numpy():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(metrics.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= {
        "__future__",
        "math",
        "collections",
        "typing",
        "numpy",
        "sysid_msstcn",
    }
