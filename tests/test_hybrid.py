"""LinearResidualRegressor: a linear model plus MS-STCN on its residual."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from _tiny import TINY_SYSID, duffing_system
from sklearn.base import BaseEstimator, clone

from sysid_msstcn import LinearResidualRegressor, MSSTCNRegressor
from sysid_msstcn.baselines import ARXRegressor
from sysid_msstcn.exceptions import ShapeError


class _Recorder(BaseEstimator):
    """A residual model that records its training data and predicts zero."""

    def __init__(self, warm_start: bool = False) -> None:
        self.warm_start = warm_start

    def fit(self, X, y):
        self.fits_ = getattr(self, "fits_", 0) + 1
        self.seen_ = (np.asarray(X), np.asarray(y))
        return self

    def predict(self, X, y_init=None):
        out = np.zeros((len(X), self.seen_[1].shape[1]))
        if y_init is not None:
            out[: len(y_init)] = y_init
        return out


def test_residual_model_sees_the_linear_simulation_and_what_it_leaves():
    u, y = duffing_system()
    model = LinearResidualRegressor(_Recorder(), ARXRegressor(na=2, nb=2, nk=1))
    model.fit(u, y)
    arx = ARXRegressor(na=2, nb=2, nk=1).fit(u, y)
    y_lin = arx.predict(u, y_init=y[:2])
    X_seen, r_seen = model.estimator_.seen_
    np.testing.assert_array_equal(X_seen, np.column_stack([u, y_lin]))
    np.testing.assert_array_equal(r_seen[:, 0], y - y_lin)
    assert np.all(r_seen[:2] == 0)  # the warm-up is the measured output
    # a zero residual gives back the linear simulation exactly, 1-D like y
    pred = model.predict(u, y_init=y[:20])
    assert pred.shape == y.shape
    np.testing.assert_array_equal(pred[20:], arx.predict(u, y_init=y[:20])[20:])
    np.testing.assert_array_equal(pred[:20], y[:20])


def test_feed_linear_false_gives_the_residual_model_only_the_inputs():
    u, y = duffing_system()
    model = LinearResidualRegressor(_Recorder(), feed_linear=False).fit(u, y)
    np.testing.assert_array_equal(model.estimator_.seen_[0], u)
    assert model.linear_.get_params()["na"] == 2  # the default linear model


class _InputRecorder(_Recorder):
    """A zero residual model that also records the inputs of its predictions."""

    def predict(self, X, y_init=None):
        self.predicted_ = np.asarray(X)
        return super().predict(X, y_init)


def test_feed_increments_adds_the_velocity_of_the_linear_run():
    u, y = duffing_system()
    arx = ARXRegressor(na=2, nb=2, nk=1)
    model = LinearResidualRegressor(_InputRecorder(), arx, feed_increments=True)
    model.fit(u, y)
    y_lin = arx.fit(u, y).predict(u, y_init=y[:2])
    velocity = np.concatenate([[0.0], y_lin[1:] - y_lin[:-1]])  # 0 at t = 0
    X_seen = model.estimator_.seen_[0]
    np.testing.assert_array_equal(X_seen, np.column_stack([u, y_lin, velocity]))
    # the prediction computes them the same way, from u and the warm-up only
    ut, n = u[100:], 20
    model.predict(ut, y_init=y[100 : 100 + n])
    lin = model.linear_simulation(ut, y[100 : 100 + n])
    expected = np.column_stack([ut, lin, np.diff(lin, prepend=lin[:1])])
    np.testing.assert_array_equal(model.estimator_.predicted_, expected)
    # without the level: the inputs and the increments only
    alone = LinearResidualRegressor(
        _Recorder(), arx, feed_linear=False, feed_increments=True
    ).fit(u, y)
    np.testing.assert_array_equal(
        alone.estimator_.seen_[0], np.column_stack([u, velocity])
    )
    with pytest.raises(ValueError, match="feed_increments must be a bool"):
        LinearResidualRegressor(_Recorder(), feed_increments="yes").fit(u, y)
    # a model pickled before the parameter existed loads as one without it
    old = LinearResidualRegressor(_Recorder(), arx).fit(u, y)
    expected = old.predict(ut, y[100 : 100 + n])
    del old.__dict__["feed_increments"]
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded.get_params()["feed_increments"] is False
    np.testing.assert_array_equal(loaded.predict(ut, y[100 : 100 + n]), expected)


class _ListRecorder(_Recorder):
    """A zero residual model that records a list of training experiments."""

    def fit(self, X, y):
        self.seen_ = (list(X), list(y))
        return self

    def predict(self, X, y_init=None):
        out = np.zeros((len(X), self.seen_[1][0].shape[1]))
        if y_init is not None:
            out[: len(y_init)] = y_init
        return out


def test_restart_every_adds_the_restarted_linear_runs():
    u, y = duffing_system()  # 600 samples
    arx = ARXRegressor(na=2, nb=2, nk=1)
    model = LinearResidualRegressor(_ListRecorder(), arx, restart_every=150)
    model.fit(u, y)
    X_seen, r_seen = model.estimator_.seen_
    arx.fit(u, y)
    # the full run first, then the runs restarted at 150, 300 and 450
    starts = [0, 150, 300, 450]
    assert len(X_seen) == len(r_seen) == len(starts)
    for k, start in enumerate(starts):
        stop = len(y) if k == 0 else start + 150
        seg_u, seg_y = u[start:stop], y[start:stop]
        y_lin = arx.predict(seg_u, y_init=seg_y[:2])
        np.testing.assert_array_equal(X_seen[k], np.column_stack([seg_u, y_lin]))
        np.testing.assert_array_equal(r_seen[k][:, 0], seg_y - y_lin)
        assert np.all(r_seen[k][:2] == 0)  # each restart is warmed up
    # two experiments: the remainder shorter than a segment is left out
    both = LinearResidualRegressor(_ListRecorder(), arx, restart_every=150)
    both.fit([u, u[:400]], [y, y[:400]])
    lengths = [len(x) for x in both.estimator_.seen_[0]]
    assert lengths == [600, 400, 150, 150, 150, 150]
    # the prediction does not change: the linear run plus the residual run
    ut, n = u[100:], 20
    np.testing.assert_array_equal(
        model.predict(ut, y_init=y[100 : 100 + n])[n:],
        arx.predict(ut, y_init=y[100 : 100 + n])[n:],
    )
    for bad in (1, True, 2.5, "150"):
        with pytest.raises(ValueError, match="restart_every must be an int >= 2"):
            LinearResidualRegressor(_Recorder(), restart_every=bad).fit(u, y)
    # a model pickled before the parameter existed loads as one without it
    old = LinearResidualRegressor(_Recorder(), arx).fit(u, y)
    del old.__dict__["restart_every"]
    assert pickle.loads(pickle.dumps(old)).get_params()["restart_every"] is None


def test_restart_every_trains_an_msstcn_residual_model():
    u, y = duffing_system()
    net = MSSTCNRegressor(**TINY_SYSID)
    model = LinearResidualRegressor(net, restart_every=200).fit(u, y)
    assert model.n_init_ == model.estimator_.n_init_
    pred = model.predict(u, y_init=y[: model.n_init_])
    assert pred.shape == y.shape and np.all(np.isfinite(pred))


def test_prediction_is_the_sum_of_the_two_free_runs():
    u, y = duffing_system()
    model = LinearResidualRegressor(MSSTCNRegressor(**TINY_SYSID)).fit(u[:400], y[:400])
    ut, yt = u[400:], y[400:]
    n = 20
    y_lin = model.linear_.predict(ut, y_init=yt[:n, None])[:, 0]  # fitted 2-D
    np.testing.assert_array_equal(model.linear_simulation(ut, yt[:n]), y_lin)
    r = model.estimator_.predict(
        np.column_stack([ut, y_lin]), (yt[:n] - y_lin[:n])[:, None]
    )[:, 0]
    pred, std = model.predict(ut, y_init=yt[:n], return_std=True)
    np.testing.assert_allclose(pred, y_lin + r, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(pred[:n], yt[:n])
    assert std.shape == pred.shape and np.all(std[:n] == 0) and np.all(std[n:] > 0)
    sims = model.simulate(ut, yt[:n], n_samples=3, random_state=1)
    assert sims.shape == (3, len(ut), 1)
    np.testing.assert_allclose(sims[:, :n, 0], np.tile(yt[:n], (3, 1)), atol=1e-12)
    lo, hi = model.predict_interval(ut, yt[:n], n_samples=20, random_state=0)
    assert lo.shape == hi.shape == pred.shape and np.all(lo[n:] <= hi[n:])
    assert np.isfinite(model.score(ut, yt))


def test_lists_of_experiments_and_pickling():
    u, y = duffing_system(seed=1)
    us, ys = [u[:300], u[300:]], [y[:300], y[300:]]
    model = LinearResidualRegressor(MSSTCNRegressor(**TINY_SYSID)).fit(us, ys)
    preds = model.predict(us, [v[:10] for v in ys])
    assert isinstance(preds, list) and [p.shape for p in preds] == [(300,), (300,)]
    again = pickle.loads(pickle.dumps(model))
    for a, b in zip(preds, again.predict(us, [v[:10] for v in ys]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_warm_start_continues_the_residual_model():
    u, y = duffing_system()
    model = LinearResidualRegressor(MSSTCNRegressor(**TINY_SYSID)).fit(u, y)
    first = model.estimator_
    epochs = first.n_iter_
    model.set_params(estimator__warm_start=True, estimator__max_iter=1).fit(u, y)
    assert model.estimator_ is first and first.n_iter_ == epochs + 1
    # without warm start a new residual model is trained
    model.set_params(estimator__warm_start=False).fit(u, y)
    assert model.estimator_ is not first


def test_clone_keeps_nested_parameters_and_fits_nothing():
    model = LinearResidualRegressor(MSSTCNRegressor(max_iter=3), feed_linear=False)
    twin = clone(model)
    assert twin.get_params()["estimator__max_iter"] == 3
    assert twin.feed_linear is False and not hasattr(twin, "estimator_")


def test_bad_input_is_named():
    u, y = duffing_system()
    with pytest.raises(TypeError, match="estimator must be an estimator"):
        LinearResidualRegressor("nope").fit(u, y)
    with pytest.raises(ValueError, match="feed_linear must be a bool"):
        LinearResidualRegressor(_Recorder(), feed_linear="yes").fit(u, y)
    with pytest.raises(ValueError, match="requires y"):
        LinearResidualRegressor(_Recorder()).fit(u, None)
    model = LinearResidualRegressor(_Recorder(), ARXRegressor(na=4, nb=2, nk=1)).fit(
        u, y
    )
    with pytest.raises(ShapeError, match="at least 4"):
        model.predict(u, y_init=y[:3])
    with pytest.raises(ValueError, match="channel"):
        model.predict(np.hstack([u, u]), y_init=y[:5])
    bad = y.copy()
    bad[5] = np.nan
    with pytest.raises(ValueError, match="NaN|finite"):
        LinearResidualRegressor(_Recorder()).fit(u, bad)


@pytest.mark.slow
def test_residual_model_improves_on_the_linear_model():
    u, y = duffing_system(n=3000)
    ut, yt = u[2000:], y[2000:]
    u, y = u[:2000], y[:2000]
    est = MSSTCNRegressor(
        preset="sysid_small", max_iter=15, random_state=0, device="cpu"
    )
    model = LinearResidualRegressor(est, ARXRegressor(na=2, nb=2, nk=1)).fit(u, y)
    arx_r2 = model.linear_.score(ut, yt)
    assert model.score(ut, yt) > arx_r2
