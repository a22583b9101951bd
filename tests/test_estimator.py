"""Behaviour of MSSTCNRegressor: shapes, data forms, determinism, training.

Every network here is tiny (two levels of four channels, receptive field 6)
and trained for one to three epochs: the tests check the protocol, not the
quality of the fit (see ``test_estimator_real_data.py`` for that).
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import TINY_ESTIMATOR

from sysid_msstcn import MSSTCNRegressor, _estimator_training
from sysid_msstcn._windows import ChannelScaler, sample_windows, split_tails
from sysid_msstcn.data import make_io_dataset
from sysid_msstcn.training import Trainer

torch.set_num_threads(1)

TINY = TINY_ESTIMATOR
RF = 6  # receptive field of TINY


def tiny(**kwargs) -> MSSTCNRegressor:
    """A tiny seeded estimator; keyword arguments override TINY."""
    params = {**TINY, "random_state": 0, **kwargs}
    return MSSTCNRegressor(**params)


def system(n: int = 200, n_u: int = 1, n_y: int = 1, seed: int = 0):
    """A stable nonlinear MIMO system: u of shape (n, n_u), y of (n, n_y)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, n_u))
    y = np.zeros((n, n_y))
    for t in range(1, n):
        drive = np.tanh(u[t - 1].sum() + 0.5 * np.arange(n_y))
        y[t] = 0.7 * y[t - 1] + 0.5 * drive + 0.01 * rng.normal(size=n_y)
    return u, y


@pytest.fixture(scope="module")
def siso():
    u, y = system(n=200)
    return u, y[:, 0]


@pytest.fixture(scope="module")
def fitted(siso):
    u, y = siso
    return tiny().fit(u, y)


@pytest.fixture
def fitted_copy(fitted):
    return copy.deepcopy(fitted)


# --------------------------------------------------------------------- fit


def test_public_name_and_fitted_attributes(fitted, siso):
    u, y = siso
    assert MSSTCNRegressor.__module__ == "sysid_msstcn.estimator"
    assert fitted.n_features_in_ == 1
    assert fitted.n_outputs_ == 1
    cfg = fitted.network_config_
    assert (cfg.n_inputs, cfg.n_outputs) == (1, 1)
    assert fitted.model_.config == cfg
    assert fitted.receptive_field_ == RF == fitted.n_init_
    assert fitted.n_iter_ == 2
    assert 1 <= fitted.best_epoch_ <= fitted.n_iter_
    assert fitted.window_ == 32
    # normalisation statistics are fitted attributes
    np.testing.assert_allclose(fitted.x_scaler_.mean_, u.mean(0))
    np.testing.assert_allclose(fitted.x_scaler_.scale_, u.std(0))
    np.testing.assert_allclose(fitted.y_scaler_.mean_, [y.mean()])
    np.testing.assert_allclose(fitted.y_scaler_.scale_, [y.std()])


def test_network_is_built_from_data_shapes():
    u, y = system(n=120, n_u=3, n_y=2)
    est = tiny(max_iter=1).fit(u, y)
    assert (est.n_features_in_, est.n_outputs_) == (3, 2)
    assert (est.network_config_.n_inputs, est.network_config_.n_outputs) == (3, 2)


def test_history_records_every_epoch(siso):
    u, y = siso
    est = tiny(max_iter=3, validation_fraction=0.2, n_iter_no_change=10).fit(u, y)
    assert len(est.history_) == est.n_iter_ == 3
    for epoch, row in enumerate(est.history_, start=1):
        assert row["epoch"] == epoch
        for key in ("loss", "elbo", "elbo_per_step", "log_lik", "kl", "lr"):
            assert np.isfinite(row[key]), key
        assert row["threshold"] == pytest.approx(0.5, rel=1e-2)  # free bits
        assert len(row["kl_per_level"]) == 2
        for key in ("val_loss", "val_elbo", "val_elbo_per_step", "val_log_lik"):
            assert np.isfinite(row[key]), key
        assert row["val_loss"] == pytest.approx(-row["val_elbo"])
        assert len(row["val_kl_per_level"]) == 2
    assert est.loss_curve_ == [r["loss"] for r in est.history_]


def test_validation_is_the_tail_of_each_experiment(monkeypatch):
    lengths = (120, 80)
    data = [system(n=n, seed=i) for i, n in enumerate(lengths)]
    batches = []
    original = MSSTCNRegressor._batch

    def spy(self, us, ys, windows):
        batches.append(list(windows))
        return original(self, us, ys, windows)

    monkeypatch.setattr(MSSTCNRegressor, "_batch", spy)
    est = tiny(max_iter=2, validation_fraction=0.25, batch_size=2)
    est.fit([d[0] for d in data], [d[1] for d in data])
    # the validation batches are built first, from whole contiguous tails
    valid = batches[0]
    assert valid == [(0, 90, 120), (1, 60, 80)]
    for windows in batches[1:]:  # training windows stay in each head
        for i, start, stop in windows:
            assert 0 <= start < stop <= lengths[i] - lengths[i] // 4


def test_training_windows_never_cross_experiments(monkeypatch):
    lengths = [150, 60, 35]
    drawn = []

    def spy(segments, window, n_windows, rng):
        out = sample_windows(segments, window, n_windows, rng)
        drawn.extend(out)
        return out

    monkeypatch.setattr(_estimator_training, "sample_windows", spy)
    data = [system(n=n, seed=i) for i, n in enumerate(lengths)]
    est = tiny(max_iter=3, early_stopping=False, window=30, steps_per_epoch=10)
    est.fit([d[0] for d in data], [d[1][:, 0] for d in data])
    assert len(drawn) == 3 * 10 * 4
    assert {i for i, _, _ in drawn} == {0, 1, 2}
    for i, start, stop in drawn:
        assert 0 <= start < stop <= lengths[i]
        assert stop - start == min(30, lengths[i])


def test_split_tails_and_sample_windows_units():
    train, valid = split_tails([100, 30, 10], 0.2, min_length=7)
    assert train == [(0, 0, 80), (1, 0, 30), (2, 0, 10)]
    assert valid == [(0, 80, 100)]  # 6 samples of the second one are too few
    rng = np.random.default_rng(0)
    wins = sample_windows(train, 16, 500, rng)
    for i, start, stop in wins:
        seg = train[i]
        assert seg[1] <= start < stop <= seg[2]
        assert stop - start == min(16, seg[2] - seg[1])
    counts = np.bincount([w[0] for w in wins], minlength=3)
    assert counts[0] > counts[1] > 0 and counts[2] > 0  # by window positions


def test_channel_scaler_round_trip_and_constant_channel():
    a = np.column_stack([np.arange(10.0), np.full(10, 3.0)])
    with pytest.warns(UserWarning, match="constant"):
        sc = ChannelScaler("input").fit([a[:4], a[4:]])
    np.testing.assert_allclose(sc.scale_[1], 1.0)
    np.testing.assert_allclose(sc.inverse_transform(sc.transform(a)), a)
    back = ChannelScaler.from_dict(sc.to_dict())
    np.testing.assert_array_equal(back.transform(a), sc.transform(a))


def test_early_stopping_restores_the_best_weights(monkeypatch, siso):
    """Scripted validation scores: best at epoch 2, stop after 3 more."""
    u, y = siso
    scores = iter([1.0, 5.0, 2.0, 3.0, 4.0, 9.0, 9.0])
    weights = {}

    def fake_evaluate(self, batches):
        epoch = len(weights) + 1
        weights[epoch] = copy.deepcopy(self.model.state_dict())
        s = next(scores)
        return {
            "elbo": s,
            "elbo_per_step": s,
            "log_lik": s,
            "kl": 0.0,
            "kl_per_level": [0.0, 0.0],
        }

    monkeypatch.setattr(Trainer, "evaluate", fake_evaluate)
    est = tiny(
        max_iter=20,
        validation_fraction=0.3,
        n_iter_no_change=3,
        early_stopping_metric="elbo",
    )
    est.fit(u, y)
    assert est.n_iter_ == 5
    assert est.best_epoch_ == 2
    final = est.model_.state_dict()
    for key, value in weights[2].items():
        torch.testing.assert_close(final[key], value)
    assert any(not torch.equal(final[k], weights[5][k]) for k in final), (
        "weights of the last epoch were kept"
    )


def test_simulation_early_stopping_scores_free_run_tails(siso):
    """With inputs, "auto" selects the epoch by validation simulation error."""
    u, y = siso
    est = tiny(max_iter=3, validation_fraction=0.2, n_iter_no_change=5)
    est.fit(u, y)
    sims = [row["val_sim_rmse"] for row in est.history_]
    assert all(np.isfinite(sims))
    assert est.best_epoch_ == int(np.argmin(sims)) + 1
    assert est._input_noise(1) == 0.3 and est._input_noise(0) == 0.0
    elbo = tiny(max_iter=1, early_stopping_metric="elbo").fit(u, y)
    assert "val_sim_rmse" not in elbo.history_[-1]


def test_record_simulation_early_stopping_scores_free_runs_of_whole_records(siso):
    """ "record_simulation" keeps the epoch whose free run of the whole
    training record (from its first n_init_ outputs) is best, and the score
    recorded for it is exactly the error of predict() on that record."""
    u, y = siso
    est = tiny(
        max_iter=4,
        validation_fraction=0.2,
        n_iter_no_change=5,
        early_stopping_metric="record_simulation",
    )
    est.fit(u, y)
    recs = [row["record_sim_rmse"] for row in est.history_]
    assert all(np.isfinite(recs)) and len(set(recs)) == len(recs)
    assert all(np.isfinite([row["val_sim_rmse"] for row in est.history_]))
    assert est.best_epoch_ == int(np.argmin(recs)) + 1
    n0 = est.n_init_
    p = np.asarray(est.predict(u, y_init=y[:n0])).reshape(len(y), -1)
    err = (p[n0:] - np.asarray(y).reshape(len(y), -1)[n0:]) / est.y_scaler_.scale_
    np.testing.assert_allclose(
        np.sqrt(np.mean(err**2)), recs[est.best_epoch_ - 1], rtol=1e-5
    )


@pytest.mark.filterwarnings("ignore::sysid_msstcn.exceptions.ConvergenceWarning")
def test_verbose_shows_a_progress_bar_and_is_silent_otherwise(siso, capfd):
    u, y = siso
    tiny(max_iter=1).fit(u, y)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    tiny(max_iter=1, verbose=1).fit(u, y)
    out, err = capfd.readouterr()
    assert "MS-STCN" in err and "epoch" in err


def test_warm_start_and_partial_fit_continue_training(siso, fitted):
    u, y = siso
    est = tiny(max_iter=1, warm_start=True).fit(u, y)
    first = copy.deepcopy(est.model_.state_dict())
    est.fit(u, y)
    assert est.n_iter_ == 2 and len(est.history_) == 2
    assert any(not torch.equal(first[k], v) for k, v in est.model_.state_dict().items())
    est.set_params(warm_start=False).fit(u, y)
    assert est.n_iter_ == 1  # a cold fit starts over

    est = copy.deepcopy(fitted)
    est.partial_fit(u, y)
    assert est.n_iter_ == fitted.n_iter_ + fitted.max_iter
    assert est.history_[: fitted.n_iter_] == fitted.history_
    assert tiny(max_iter=1).partial_fit(u, y).n_iter_ == 1  # unfitted: a fit


def test_partial_fit_is_reproducible(siso, fitted):
    u, y = siso
    a = copy.deepcopy(fitted).partial_fit(u, y)
    torch.manual_seed(123)  # the global RNG does not matter
    b = copy.deepcopy(fitted).partial_fit(u, y)
    np.testing.assert_array_equal(a.predict(u), b.predict(u))


# ---------------------------------------------------------- determinism


def test_same_seed_gives_identical_predictions(siso, fitted):
    u, y = siso
    torch.manual_seed(99)  # the estimator does not depend on global state
    np.random.seed(99)
    twin = tiny().fit(u, y)
    p1 = fitted.predict(u, y_init=y[:10])
    np.testing.assert_array_equal(twin.predict(u, y_init=y[:10]), p1)
    np.testing.assert_array_equal(fitted.predict(u, y_init=y[:10]), p1)
    other = tiny(random_state=1).fit(u, y)
    assert not np.array_equal(other.predict(u, y_init=y[:10]), p1)


def test_fit_leaves_the_global_torch_rng_alone(siso):
    u, y = siso
    torch.manual_seed(5)
    state = torch.get_rng_state()
    tiny(max_iter=1).fit(u, y)
    assert torch.equal(torch.get_rng_state(), state)


# -------------------------------------------------------------- predict


def test_predict_is_a_free_run_with_y_init_at_the_head(fitted, siso):
    u, y = siso
    pred = fitted.predict(u, y_init=y[:20])
    assert pred.shape == y.shape
    np.testing.assert_array_equal(pred[:20], y[:20])
    assert np.all(np.isfinite(pred))
    # free run: the measured outputs after the warm-up are never used
    np.testing.assert_array_equal(pred, fitted.predict(u, y_init=y[:20] + 0))
    free = fitted.predict(u)
    assert free.shape == y.shape and not np.array_equal(free[:20], y[:20])
    # the input drives the simulation
    assert not np.allclose(fitted.predict(-u, y_init=y[:20])[20:], pred[20:])


def test_predict_return_std(fitted, siso):
    u, y = siso
    mean, std = fitted.predict(u, y_init=y[:10], return_std=True)
    np.testing.assert_array_equal(mean, fitted.predict(u, y_init=y[:10]))
    assert std.shape == y.shape
    np.testing.assert_array_equal(std[:10], 0.0)
    assert np.all(std[10:] > 0)


def test_output_shape_follows_y_in_fit(siso):
    u, y = siso
    est = tiny(max_iter=1).fit(u, y[:, None])
    assert est.predict(u).shape == (len(u), 1)
    assert est.predict(u, y_init=y[:5, None]).shape == (len(u), 1)


def test_simulate_sampling_and_intervals(fitted, siso):
    u, y = siso
    sims = fitted.simulate(u, y_init=y[:10], n_samples=7, random_state=0)
    assert sims.shape == (7, len(u), 1)
    np.testing.assert_array_equal(sims[:, :10, 0], np.broadcast_to(y[:10], (7, 10)))
    again = fitted.simulate(u, y_init=y[:10], n_samples=7, random_state=0)
    np.testing.assert_array_equal(sims, again)
    other = fitted.simulate(u, y_init=y[:10], n_samples=7, random_state=1)
    assert not np.array_equal(sims, other)
    assert sims[:, 10:].std(axis=0).min() > 0

    lower, upper = fitted.predict_interval(
        u, y_init=y[:10], coverage=0.8, n_samples=30, random_state=0
    )
    assert lower.shape == upper.shape == y.shape
    assert np.all(lower <= upper) and np.all(upper[10:] > lower[10:])
    q = fitted.predict_quantiles(
        u, y_init=y[:10], alpha=[0.1, 0.5, 0.9], n_samples=30, random_state=0
    )
    assert q.shape == (3, len(u))
    assert np.all(np.diff(q, axis=0) >= 0)
    np.testing.assert_allclose(q[0], lower)
    np.testing.assert_allclose(q[2], upper)


def test_predict_ahead_matches_free_runs_from_each_origin(fitted, siso):
    """predict_ahead(k)[t] is the free run of k steps after y[:t-k+1]."""
    u, y = siso
    u, y = u[:60], y[:60]
    one = fitted.predict_ahead(u, y, steps=1)  # one parallel pass
    three = fitted.predict_ahead(u, y, steps=3)  # batched rollouts
    assert one.shape == three.shape == y.shape
    free = fitted.predict(u)
    for t in (0, 1, 2, 7, 20, 33, 59):
        if t >= 1:
            ref1 = fitted.predict(u[: t + 1], y_init=y[:t])[t]
        else:
            ref1 = free[0]
        assert one[t] == pytest.approx(ref1, abs=1e-4), t
        if t >= 3:
            ref3 = fitted.predict(u[: t + 1], y_init=y[: t - 2])[t]
        else:
            ref3 = free[t]
        assert three[t] == pytest.approx(ref3, abs=1e-4), t
    # k larger than the record: every element is the plain free run
    np.testing.assert_allclose(fitted.predict_ahead(u, y, steps=100), free, atol=1e-6)


def test_score_is_r2_of_the_simulation_after_the_warm_up(fitted, siso):
    u, y = siso
    n0 = fitted.n_init_
    pred = fitted.predict(u, y_init=y[:n0])
    resid = ((y[n0:] - pred[n0:]) ** 2).sum()
    total = ((y[n0:] - y[n0:].mean()) ** 2).sum()
    assert fitted.score(u, y) == pytest.approx(1 - resid / total)
    est = copy.deepcopy(fitted).set_params(n_init=30)
    est.n_init_ = 30  # as a refit with n_init=30 would set it
    pred = est.predict(u, y_init=y[:30])
    resid = ((y[30:] - pred[30:]) ** 2).sum()
    total = ((y[30:] - y[30:].mean()) ** 2).sum()
    assert est.score(u, y) == pytest.approx(1 - resid / total)


def test_n_init_parameter_sets_the_warm_up(siso):
    u, y = siso
    assert tiny(max_iter=1, n_init=25).fit(u, y).n_init_ == 25


def test_elbo_terms_in_nats(fitted, siso):
    u, y = siso
    res = fitted.elbo(u, y)
    for key in ("elbo", "elbo_per_step", "log_lik", "kl", "n_steps"):
        assert res[key].shape == (1,), key
    assert res["kl_per_level"].shape == (1, 2)
    assert res["n_steps"][0] == len(y)
    np.testing.assert_allclose(res["elbo"], res["log_lik"] - res["kl"], rtol=1e-5)
    np.testing.assert_allclose(res["kl"], res["kl_per_level"].sum(1), rtol=1e-5)
    np.testing.assert_allclose(res["elbo_per_step"], res["elbo"] / len(y))
    assert np.all(res["kl_per_level"] >= 0)
    # raw units: the log-likelihood of y changes by the scaling's Jacobian
    jac = len(y) * np.log(fitted.y_scaler_.scale_[0])
    np.testing.assert_allclose(res["log_lik_raw"], res["log_lik"] - jac)
    many = fitted.elbo([u[:100], u[100:]], [y[:100], y[100:]])
    assert many["elbo"].shape == (2,) and many["kl_per_level"].shape == (2, 2)


def test_elbo_is_reproducible_and_leaves_the_global_rng_alone(fitted, siso):
    u, y = siso
    state = torch.get_rng_state()
    first = fitted.elbo(u, y)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(fitted.elbo(u, y)["elbo"], first["elbo"])
    other = fitted.elbo(u, y, random_state=1)
    assert other["elbo"][0] != first["elbo"][0]  # a different posterior draw


def test_sample_generates_input_driven_sequences(fitted, siso):
    u, _ = siso
    s = fitted.sample(3, 50, X=u[:50], random_state=0)
    assert s.shape == (3, 50, 1)
    np.testing.assert_array_equal(s, fitted.sample(3, 50, X=u[:50], random_state=0))
    with pytest.raises(ValueError, match="has inputs"):
        fitted.sample(3, 50)
    with pytest.raises(ValueError, match="rows but length"):
        fitted.sample(3, 40, X=u[:50])


# ----------------------------------------------------------- data forms


def test_mimo_two_inputs_two_outputs():
    u, y = system(n=160, n_u=2, n_y=2)
    est = tiny().fit(u, y)
    assert (est.n_features_in_, est.n_outputs_) == (2, 2)
    pred = est.predict(u, y_init=y[:10])
    assert pred.shape == (160, 2)
    np.testing.assert_array_equal(pred[:10], y[:10])
    assert est.simulate(u, y_init=y[:10], n_samples=4, random_state=0).shape == (
        4,
        160,
        2,
    )
    lower, upper = est.predict_interval(u, y_init=y[:10], n_samples=10)
    assert lower.shape == upper.shape == (160, 2)
    assert est.predict_quantiles(u, alpha=0.5, n_samples=5).shape == (1, 160, 2)
    assert est.predict_ahead(u, y, steps=2).shape == (160, 2)
    assert np.isfinite(est.score(u, y))
    assert est.sample(2, 30, X=u[:30]).shape == (2, 30, 2)
    with pytest.raises(ValueError, match="output channels"):
        est.predict(u, y_init=y[:10, :1])


def test_several_experiments_of_different_lengths():
    lengths = (150, 70, 40)
    data = [system(n=n, seed=i) for i, n in enumerate(lengths)]
    us, ys = [d[0] for d in data], [d[1][:, 0] for d in data]
    est = tiny().fit(us, ys)
    np.testing.assert_allclose(
        est.y_scaler_.mean_, [np.concatenate(ys).mean()]
    )  # statistics over all experiments
    preds = est.predict(us, y_init=[y[:8] for y in ys])
    assert isinstance(preds, list)
    assert [p.shape for p in preds] == [(n,) for n in lengths]
    for p, y in zip(preds, ys, strict=True):
        np.testing.assert_array_equal(p[:8], y[:8])
    # each experiment is simulated on its own
    np.testing.assert_array_equal(preds[1], est.predict(us[1], y_init=ys[1][:8]))
    sims = est.simulate(us, n_samples=2, random_state=0)
    assert [s.shape for s in sims] == [(2, n, 1) for n in lengths]
    assert np.isfinite(est.score(us, ys))
    assert [a.shape for a in est.predict_ahead(us, ys, steps=2)] == [
        (n,) for n in lengths
    ]
    with pytest.raises(ValueError, match="list"):
        est.predict(us, y_init=ys[0][:8])


def test_output_only_data():
    _, y = system(n=160)
    est = tiny().fit(None, y)
    assert est.n_features_in_ == 0
    assert est.network_config_.n_inputs == 0
    empty = np.empty((90, 0))
    pred = est.predict(empty, y_init=y[:12])
    assert pred.shape == (90, 1)
    np.testing.assert_array_equal(pred[:12], y[:12])
    np.testing.assert_array_equal(est.predict(empty), est.predict(np.empty((90, 0))))
    s = est.sample(4, 50, random_state=0)
    assert s.shape == (4, 50, 1) and np.all(np.isfinite(s))
    assert est.simulate(empty, n_samples=3, random_state=0).shape == (3, 90, 1)
    assert np.isfinite(est.score(None, y))
    assert est.score(np.empty((160, 0)), y) == est.score(None, y)
    assert est.elbo(None, y)["elbo"].shape == (1,)
    assert est.predict_ahead(None, y, steps=2).shape == y.shape
    preds = est.predict([np.empty((30, 0)), np.empty((20, 0))])
    assert [p.shape for p in preds] == [(30, 1), (20, 1)]
    with pytest.raises(ValueError, match=r"shape \(n_timesteps, 0\)"):
        est.predict(None)
    with pytest.raises(ValueError, match="without inputs"):
        est.predict(np.ones((30, 1)))


def test_pandas_inputs_and_feature_names(siso):
    u, y = siso
    X = pd.DataFrame({"valve": u[:, 0]})
    est = tiny(max_iter=1).fit(X, pd.Series(y, name="level"))
    np.testing.assert_array_equal(est.feature_names_in_, ["valve"])
    assert est.feature_names_in_.dtype == object
    pred = est.predict(X, y_init=y[:10])
    assert pred.shape == y.shape
    np.testing.assert_array_equal(pred, est.predict(u, y_init=y[:10]))
    with pytest.raises(ValueError, match="feature names"):
        est.predict(X.rename(columns={"valve": "pump"}))
    # a DataFrame y keeps its 2-D shape; a refit on arrays drops the names
    est.fit(u, pd.DataFrame({"level": y}))
    assert est.predict(u).shape == (len(y), 1)
    assert not hasattr(est, "feature_names_in_")
    assert est.output_names_ == ("level",)


def test_xarray_datasets_from_the_data_adapters():
    records = []
    for i, n in enumerate((140, 90)):
        u, y = system(n=n, seed=i)
        records.append(
            make_io_dataset(u, y[:, 0], sampling_time=0.1, name=f"r{i}", n_init=10)
        )
    est = tiny().fit(records)
    assert (est.n_features_in_, est.n_outputs_) == (1, 1)
    u0, y0 = records[0]["u"].values, records[0]["y"].values
    pred = est.predict(records[0]["u"], y_init=records[0]["y"][:10])
    np.testing.assert_array_equal(
        pred.reshape(-1), est.predict(u0.reshape(-1, 1), y_init=y0[:10]).reshape(-1)
    )
    assert np.isfinite(est.score(records, None))
    assert est.elbo(records)["elbo"].shape == (2,)


# ------------------------------------------------------------ bad input


def _bad_calls(u, y):
    """(description, call, message pattern) of rejected calls."""
    u_nan = u.copy()
    u_nan[5, 0] = np.nan
    y_inf = y.copy()
    y_inf[7] = np.inf
    return [
        ("nan in X (fit)", lambda e: e.fit(u_nan, y), "NaN"),
        ("inf in y (fit)", lambda e: e.fit(u, y_inf), "inf"),
        ("nan in X (predict)", lambda e: e.predict(u_nan), "NaN"),
        ("inf in y_init", lambda e: e.predict(u, y_init=y_inf[:10]), "inf"),
        ("nan in y (score)", lambda e: e.score(u, np.where(y > 9, 0, np.nan)), "NaN"),
        ("length mismatch", lambda e: e.fit(u, y[:-3]), "different lengths"),
        ("length mismatch (score)", lambda e: e.score(u[:-1], y), "lengths"),
        ("shorter than RF", lambda e: e.fit(u[:RF], y[:RF]), "receptive field"),
        (
            "shorter than RF (partial_fit)",
            lambda e: e.partial_fit(u[:RF], y[:RF]),
            "receptive field",
        ),
        (
            "one short experiment",
            lambda e: e.fit([u, u[:4]], [y, y[:4]]),
            "receptive field",
        ),
        ("wrong input channels", lambda e: e.predict(np.hstack([u, u])), "features"),
        (
            "wrong input channels (partial_fit)",
            lambda e: e.partial_fit(np.hstack([u, u]), y),
            "features",
        ),
        ("1-D X", lambda e: e.predict(u[:, 0]), "Reshape your data"),
        ("1-D X (Series)", lambda e: e.fit(pd.Series(u[:, 0]), y), "Reshape"),
        ("y_init too long", lambda e: e.predict(u[:20], y_init=y[:21]), "longer"),
        ("unknown preset", lambda e: e.set_params(preset="nope").fit(u, y), "nope"),
        ("bad max_iter", lambda e: e.set_params(max_iter=-1).fit(u, y), "max_iter"),
        ("bad window", lambda e: e.set_params(window=1).fit(u, y), "window"),
        (
            "bad steps_per_epoch",
            lambda e: e.set_params(steps_per_epoch=0).fit(u, y),
            "steps_per_epoch",
        ),
        ("bad steps", lambda e: e.predict_ahead(u, y, steps=0), "steps"),
        ("bad coverage", lambda e: e.predict_interval(u, coverage=1.5), "coverage"),
        ("bad n_samples", lambda e: e.simulate(u, n_samples=0), "n_samples"),
        (
            "y_init wrong channels",
            lambda e: e.predict(u, y_init=np.ones((5, 2))),
            "output channels",
        ),
    ]


BAD_CASES = [case[0] for case in _bad_calls(np.zeros((10, 1)), np.zeros(10))]


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_raises_and_keeps_the_model_usable(name, fitted_copy, siso):
    u, y = siso
    est = fitted_copy
    before = est.predict(u, y_init=y[:10])
    n_iter, history = est.n_iter_, list(est.history_)
    call, match = {c[0]: c[1:] for c in _bad_calls(u, y)}[name]
    with pytest.raises(ValueError, match=match):
        call(est)
    est.set_params(preset=None, max_iter=2, window=32, steps_per_epoch=2)
    np.testing.assert_array_equal(est.predict(u, y_init=y[:10]), before, err_msg=name)
    assert est.n_iter_ == n_iter and est.history_ == history, name


def test_unfitted_estimator_raises_not_fitted():
    from sklearn.exceptions import NotFittedError

    est = tiny()
    u, y = system(n=30)
    for call in (
        lambda: est.predict(u),
        lambda: est.simulate(u),
        lambda: est.score(u, y),
        lambda: est.elbo(u, y),
        lambda: est.predict_ahead(u, y),
        lambda: est.sample(1, 10, X=u[:10]),
    ):
        with pytest.raises(NotFittedError):
            call()


def test_max_time_stops_after_the_epoch_that_uses_up_the_budget(siso, monkeypatch):
    """A wall-clock budget ends training at an epoch boundary, recorded."""
    u, y = siso
    clock = iter(np.arange(0.0, 1e6, 10.0))  # every perf_counter call: +10 s
    monkeypatch.setattr(_estimator_training.time, "perf_counter", lambda: next(clock))
    est = tiny(max_iter=50, max_time=1.0, validation_fraction=0.2).fit(u, y)
    assert est.n_iter_ == 1
    (event,) = [e for e in est.history_events_ if e["event"] == "max_time"]
    assert event["epoch"] == 1 and event["seconds"] >= 1.0
    unlimited = tiny(max_iter=2, validation_fraction=0.2).fit(u, y)
    assert unlimited.n_iter_ == 2
    assert not [e for e in unlimited.history_events_ if e["event"] == "max_time"]
    with pytest.raises(ValueError, match=r"max_time must be None or a finite"):
        tiny(max_time=0).fit(u, y)
