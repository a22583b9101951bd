"""Residual correlation tests: known values, pooling, and the tests' power."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from scipy import signal

from sysid_msstcn import residuals
from sysid_msstcn.exceptions import ShapeError
from sysid_msstcn.residuals import residual_analysis


def _ar1(rng: np.random.Generator, n: int, pole: float) -> np.ndarray:
    return signal.lfilter([1.0], [1.0, -pole], rng.standard_normal(n))


def _corr_by_loops(a: list, b: list, tau: int) -> float:
    """sum_t b(t) a(t - tau) over the experiments, by hand, normalised."""
    pa, pb = np.concatenate(a), np.concatenate(b)
    ma, mb, sa, sb = pa.mean(), pb.mean(), pa.std(), pb.std()
    total = 0.0
    for x, y in zip(a, b, strict=True):
        for t in range(len(x)):
            if 0 <= t - tau < len(x):
                total += (y[t] - mb) * (x[t - tau] - ma)
    return total / (len(pa) * sa * sb)


def test_correlations_equal_the_sums_written_out():
    rng = np.random.default_rng(1)
    lengths = (60, 45)
    u = [rng.standard_normal((n, 2)) for n in lengths]
    y = [rng.standard_normal((n, 1)) for n in lengths]
    pred = [rng.standard_normal((n, 1)) for n in lengths]
    res = residual_analysis(y, pred, u=u, max_lag=4, n_init=3)
    e = [(a - b)[3:, 0] for a, b in zip(y, pred, strict=True)]
    for tau in range(5):
        assert res.autocorrelation[tau, 0] == pytest.approx(
            _corr_by_loops(e, e, tau), abs=1e-12
        )
    for i in range(2):
        x = [a[3:, i] for a in u]
        for k, tau in enumerate(res.cross_lags):
            assert res.cross_correlation[k, i, 0] == pytest.approx(
                _corr_by_loops(x, e, int(tau)), abs=1e-12
            )
    assert res.autocorrelation[0, 0] == pytest.approx(1.0)
    assert res.n_samples == sum(lengths) - 2 * 3
    assert list(res.lags) == [0, 1, 2, 3, 4]
    assert list(res.cross_lags) == [-4, -3, -2, -1, 0, 1, 2, 3, 4]


def test_ljung_box_and_bounds_equal_their_formulas():
    rng = np.random.default_rng(2)
    e = rng.standard_normal(500)
    res = residual_analysis(e, np.zeros(500), max_lag=10, confidence=0.95)
    n = 500
    r = res.autocorrelation[:, 0]
    q = n * (n + 2) * sum(r[k] ** 2 / (n - k) for k in range(1, 11))
    assert res.ljung_box[0] == pytest.approx(q)
    assert res.autocorrelation_bound == pytest.approx(1.959964 / np.sqrt(n), rel=1e-6)
    assert res.cross_correlation.shape == (21, 0, 1)


def test_experiments_are_not_joined_end_to_start():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(200), rng.standard_normal(200)
    split = residual_analysis([a, b], [np.zeros(200), np.zeros(200)], max_lag=3)
    joined = residual_analysis(np.r_[a, b], np.zeros(400), max_lag=3)
    e = [a, b]
    assert split.autocorrelation[1, 0] == pytest.approx(_corr_by_loops(e, e, 1))
    assert split.autocorrelation[1, 0] != pytest.approx(joined.autocorrelation[1, 0])


def test_n_init_equals_slicing():
    rng = np.random.default_rng(4)
    u, y, p = rng.standard_normal((3, 300, 1))
    with_init = residual_analysis(y, p, u=u, n_init=20, max_lag=5)
    sliced = residual_analysis(y[20:], p[20:], u=u[20:], max_lag=5)
    np.testing.assert_array_equal(with_init.autocorrelation, sliced.autocorrelation)
    np.testing.assert_array_equal(with_init.cross_correlation, sliced.cross_correlation)


def test_white_residuals_pass_and_coloured_ones_fail_ljung_box():
    # Ljung-Box at the 5 % level: white draws are rejected about one time in
    # twenty, AR(1) draws every time
    rng = np.random.default_rng(5)
    white = [
        residual_analysis(rng.standard_normal(3000), np.zeros(3000)) for _ in range(40)
    ]
    rejected = [r.ljung_box_pvalue[0] < 0.05 for r in white]
    assert sum(rejected) <= 6
    assert np.mean([r.fraction_outside()["autocorrelation"][0] for r in white]) < 0.03
    for _ in range(5):
        coloured = residual_analysis(_ar1(rng, 3000, 0.5), np.zeros(3000))
        assert coloured.ljung_box_pvalue[0] < 1e-6
        assert coloured.fraction_outside()["autocorrelation"][0] > 0.1


def test_cross_correlation_finds_the_missing_term_at_its_lag():
    rng = np.random.default_rng(6)
    u = rng.standard_normal(4000)
    y = signal.lfilter([0.0, 1.0, 0.0, 0.4], [1.0], u) + 0.05 * rng.standard_normal(
        4000
    )
    right = signal.lfilter([0.0, 1.0, 0.0, 0.4], [1.0], u)
    wrong = signal.lfilter([0.0, 1.0], [1.0], u)  # misses the lag-3 term
    ok = residual_analysis(y, right, u=u)
    bad = residual_analysis(y, wrong, u=u)
    assert ok.fraction_outside()["cross_correlation"][0, 0] <= 0.06
    k = int(np.flatnonzero(bad.cross_lags == 3)[0])
    assert bad.cross_correlation[k, 0, 0] > 10 * bad.cross_correlation_bound[0, 0]
    outside = np.abs(bad.cross_correlation[:, 0, 0]) > bad.cross_correlation_bound[0, 0]
    assert list(bad.cross_lags[outside]) == [3]


def test_bound_variance_matches_the_spread_of_the_correlation():
    # independent AR(0.97) signals: the variance of sqrt(N) r_ue(0) over many
    # draws is (1 + a**2) / (1 - a**2) = 32.5; the bound's variance, estimated
    # from each draw alone, agrees on average. A window of 25 lags would not.
    rng = np.random.default_rng(11)
    n, pole, z = 3000, 0.97, 2.5758293035489004
    r0, var = [], []
    for _ in range(150):
        u, e = _ar1(rng, n, pole), _ar1(rng, n, pole)
        res = residual_analysis(e, np.zeros(n), u=u, max_lag=1)
        r0.append(res.cross_correlation[1, 0, 0])
        var.append(n * (res.cross_correlation_bound[0, 0] / z) ** 2)
    theory = (1 + pole**2) / (1 - pole**2)
    assert np.var(np.sqrt(n) * np.array(r0)) == pytest.approx(theory, rel=0.25)
    assert np.mean(var) == pytest.approx(theory, rel=0.15)


def test_bound_sums_over_every_lag_of_every_experiment():
    rng = np.random.default_rng(12)
    u = [rng.standard_normal(30), rng.standard_normal(22)]
    e = [_ar1(rng, 30, 0.6), _ar1(rng, 22, 0.6)]
    res = residual_analysis(e, [np.zeros(30), np.zeros(22)], u=u, max_lag=2)
    var = sum(_corr_by_loops(u, u, k) * _corr_by_loops(e, e, k) for k in range(-29, 30))
    z = 2.5758293035489004
    assert res.cross_correlation_bound[0, 0] == pytest.approx(z * np.sqrt(var / 52))


def test_bound_allows_for_coloured_independent_signals():
    # independent AR(0.9) input and residual: the white bound rejects far too
    # often, the bound under independence about as often as its level says
    rng = np.random.default_rng(7)
    white_out, ljung_out = [], []
    for _ in range(20):
        u, e = _ar1(rng, 4000, 0.9), _ar1(rng, 4000, 0.9)
        res = residual_analysis(e, np.zeros(4000), u=u, confidence=0.95)
        r = np.abs(res.cross_correlation[:, 0, 0])
        white_out.append(np.mean(r > res.autocorrelation_bound))
        ljung_out.append(np.mean(r > res.cross_correlation_bound[0, 0]))
        assert res.cross_correlation_bound[0, 0] > 2 * res.autocorrelation_bound
    assert np.mean(white_out) > 0.3
    assert np.mean(ljung_out) < 0.12


def test_nonlinear_tests_see_what_the_linear_ones_miss():
    # a linear model of y = u + 0.5 u**2: with a symmetric input the residual
    # 0.5 (u**2 - 1) is uncorrelated with u but not with u**2
    rng = np.random.default_rng(8)
    u = rng.standard_normal(4000)
    y = u + 0.5 * u**2 + 0.05 * rng.standard_normal(4000)
    res = residual_analysis(y, u + 0.5, u=u, nonlinear=True)
    frac = res.fraction_outside()
    assert frac["cross_correlation"][0, 0] <= 0.06
    k = int(np.flatnonzero(res.cross_lags == 0)[0])
    assert res.nonlinear_correlation["u2_e"][k, 0, 0] > 0.9
    assert frac["u2_e"][0, 0] > 0 and frac["u2_e2"][0, 0] > 0
    clean = residual_analysis(y, u + 0.5 * u**2, u=u, nonlinear=True)
    bound = clean.nonlinear_bound["u2_e"][0, 0]
    assert abs(clean.nonlinear_correlation["u2_e"][k, 0, 0]) < bound


def test_nonlinear_tests_centre_the_input_first():
    # a missed linear term with an input of mean 5 is not a nonlinearity
    rng = np.random.default_rng(13)
    u = 5.0 + rng.standard_normal(4000)
    y = 0.3 * np.r_[0.0, u[:-1] - 5.0] + 0.05 * rng.standard_normal(4000)
    res = residual_analysis(y, np.zeros(4000), u=u, nonlinear=True)
    k = int(np.flatnonzero(res.cross_lags == 1)[0])
    assert res.cross_correlation[k, 0, 0] > 0.9
    assert abs(res.nonlinear_correlation["u2_e"][k, 0, 0]) < 0.1


def test_past_lags_leave_out_the_feedback_side():
    # e leads u by two samples (u(t) = e(t - 2)): feedback, not a missed effect
    rng = np.random.default_rng(14)
    e = rng.standard_normal(3000)
    u = np.r_[0.0, 0.0, e[:-2]] + 0.1 * rng.standard_normal(3000)
    res = residual_analysis(e, np.zeros(3000), u=u, max_lag=10)
    assert res.fraction_outside()["cross_correlation"][0, 0] == pytest.approx(1 / 21)
    assert res.fraction_outside("past")["cross_correlation"][0, 0] == 0.0
    with pytest.raises(ValueError, match="lags must be one of"):
        res.fraction_outside("future")


def test_the_mean_is_reported_apart_from_the_correlations():
    rng = np.random.default_rng(15)
    e = 5.0 + rng.standard_normal(2000)
    res = residual_analysis(e, np.zeros(2000))
    assert res.mean[0] == pytest.approx(np.mean(e))
    assert res.ljung_box_pvalue[0] > 0.01


def test_multichannel_shapes_and_json():
    rng = np.random.default_rng(9)
    u, y, p = rng.standard_normal((300, 2)), *rng.standard_normal((2, 300, 3))
    res = residual_analysis(y, p, u=u, max_lag=7, nonlinear=True)
    assert res.autocorrelation.shape == (8, 3)
    assert res.cross_correlation.shape == (15, 2, 3)
    assert res.cross_correlation_bound.shape == (2, 3)
    assert res.ljung_box_pvalue.shape == (3,)
    assert res.nonlinear_correlation["u2_e2"].shape == (15, 2, 3)
    assert res.nonlinear_bound["u2_e2"].shape == (2, 3)
    data = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert (
        data["fraction_outside"]["cross_correlation"]
        == np.asarray(res.fraction_outside()["cross_correlation"]).tolist()
    )
    assert data["n_samples"] == 300
    assert res != residual_analysis(y, p, u=u, max_lag=7)  # identity, no crash


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"y_pred": np.zeros(99)}, ShapeError, "different shapes"),
        ({"y_pred": [np.zeros(100)] * 2}, ShapeError, "experiment"),
        ({"max_lag": 100}, ShapeError, "must exceed max_lag"),
        ({"n_init": 80, "max_lag": 20}, ShapeError, "n_init=80"),
        ({"max_lag": 0}, ValueError, "max_lag must be >= 1"),
        ({"max_lag": 2.0}, ValueError, "max_lag must be an int"),
        ({"n_init": -1}, ValueError, "n_init must be >= 0"),
        ({"confidence": 1.0}, ValueError, "strictly between"),
        ({"confidence": "high"}, ValueError, "confidence must be a float"),
        ({"u": None, "nonlinear": True}, ValueError, "needs the input u"),
        ({"nonlinear": "no"}, ValueError, "nonlinear must be True or False"),
        (
            {"y_true": np.full(100, 1e308), "y_pred": np.full(100, -1e308)},
            ValueError,
            "overflows",
        ),
        ({"u": np.zeros(90)}, ShapeError, "different lengths"),
        ({"y_pred": np.full(100, np.nan)}, ValueError, "NaN"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    rng = np.random.default_rng(10)
    args = {
        "y_true": rng.standard_normal(100),
        "y_pred": rng.standard_normal(100),
        "u": rng.standard_normal(100),
    }
    args.update(kwargs)
    y_true, y_pred = args.pop("y_true"), args.pop("y_pred")
    with pytest.raises(error, match=match):
        residual_analysis(y_true, y_pred, **args)


def test_constant_channels_give_nan_and_a_warning():
    rng = np.random.default_rng(16)
    y = rng.standard_normal((100, 2))
    pred = y.copy()
    pred[:, 1] += 0.1 * rng.standard_normal(100)  # output 0 reproduced exactly
    u = np.column_stack([np.ones(100), rng.standard_normal(100)])  # input 0 unused
    with pytest.warns(RuntimeWarning, match="constant") as record:
        res = residual_analysis(y, pred, u=u, max_lag=3)
    messages = " ".join(str(w.message) for w in record)
    assert "the residual channel(s) [0]" in messages
    assert "the input channel(s) [0]" in messages
    assert np.isnan(res.autocorrelation[:, 0]).all()
    assert np.isfinite(res.autocorrelation[:, 1]).all()
    frac = res.fraction_outside()["cross_correlation"]
    assert np.isnan(frac[0]).all() and np.isnan(frac[:, 0]).all()
    assert np.isfinite(frac[1, 1])
    data = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert data["ljung_box_pvalue"][0] is None


def test_a_binary_input_still_gets_the_linear_tests():
    # a balanced +-1 input: (u - mean u)**2 is constant, so the squared-input
    # tests are NaN and the linear ones stand
    rng = np.random.default_rng(17)
    u = rng.permutation(np.r_[np.ones(250), -np.ones(250)])
    y = np.r_[0.0, u[:-1]] + 0.1 * rng.standard_normal(500)
    with pytest.warns(RuntimeWarning, match="squared input"):
        res = residual_analysis(y, np.zeros(500), u=u, nonlinear=True, max_lag=3)
    assert np.isfinite(res.cross_correlation).all()
    assert np.isnan(res.nonlinear_correlation["u2_e"]).all()
    # unbalanced, the squared deviation is an affine map of u: the test
    # repeats the linear one (up to sign) and says nothing new
    u = rng.choice([-1.0, 1.0], 500)
    res = residual_analysis(y, np.zeros(500), u=u, nonlinear=True, max_lag=3)
    np.testing.assert_allclose(
        np.abs(res.nonlinear_correlation["u2_e"]), np.abs(res.cross_correlation)
    )


def test_docstring_examples_run():
    result = doctest.testmod(residuals, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0
