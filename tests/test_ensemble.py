"""EnsembleRegressor: members trained from different seeds, averaged."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from _tiny import TINY_ESTIMATOR, TINY_SYSID, duffing_system
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from sysid_msstcn import EnsembleRegressor, LinearResidualRegressor, MSSTCNRegressor
from sysid_msstcn.baselines import ARXRegressor
from sysid_msstcn.exceptions import DataFormatError

EXPECTED_FAILED_CHECKS = {  # as for MSSTCNRegressor (test_sklearn_api)
    "check_methods_sample_order_invariance": (
        "rows are time steps: reordering them changes the dynamic response"
    ),
    "check_methods_subset_invariance": (
        "rows are time steps: a subset of rows is a different experiment"
    ),
}


@parametrize_with_checks(
    [
        EnsembleRegressor(
            MSSTCNRegressor(**TINY_ESTIMATOR), n_members=2, random_state=0
        ),
        EnsembleRegressor(
            MSSTCNRegressor(**TINY_ESTIMATOR), n_members=2, random_state=0, keep_best=1
        ),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _net(**kw) -> MSSTCNRegressor:
    return MSSTCNRegressor(**{**TINY_SYSID, **kw})


def test_members_are_the_single_fits_with_consecutive_seeds():
    u, y = duffing_system()
    ens = EnsembleRegressor(_net(), n_members=3, random_state=5).fit(u, y)
    assert ens.seeds_ == [5, 6, 7]
    runs = []
    for seed, member in zip(ens.seeds_, ens.estimators_, strict=True):
        single = _net(random_state=seed).fit(u, y)
        run = single.predict(u, y_init=y[:20])
        np.testing.assert_array_equal(member.predict(u, y_init=y[:20]), run)
        runs.append(run)
    # the ensemble's run is the mean of the single runs, exactly
    np.testing.assert_array_equal(ens.predict(u, y_init=y[:20]), np.mean(runs, axis=0))
    members = ens.member_predictions(u, y[:20])
    np.testing.assert_array_equal(np.mean(members, axis=0), np.mean(runs, axis=0))
    # members differ: they are different models
    assert not np.array_equal(runs[0], runs[1])
    assert ens.n_init_ == ens.estimators_[0].n_init_


def test_return_std_is_the_mixture_standard_deviation():
    u, y = duffing_system()
    ens = EnsembleRegressor(_net(), n_members=2, random_state=0).fit(u, y)
    mean, std = ens.predict(u, y_init=y[:20], return_std=True)
    pairs = [m.predict(u, y[:20], return_std=True) for m in ens.estimators_]
    runs, sds = [p[0] for p in pairs], [p[1] for p in pairs]
    var = np.mean(np.square(sds), axis=0) + np.var(runs, axis=0)
    np.testing.assert_allclose(std, np.sqrt(var), rtol=1e-12)
    np.testing.assert_array_equal(mean, np.mean(runs, axis=0))
    assert np.all(std[:20] == 0)  # the warm-up is measured and the same for all


def test_simulate_pools_the_members_trajectories_in_order():
    u, y = duffing_system()
    ens = EnsembleRegressor(_net(), n_members=3, random_state=0).fit(u, y)
    sims = ens.simulate(u, y[:20], n_samples=7, random_state=11)
    assert sims.shape == (7, len(y), 1)
    # shares 3, 2, 2; member i simulates with seed 11 + i
    first = ens.estimators_[0].simulate(u, y[:20], n_samples=3, random_state=11)
    last = ens.estimators_[2].simulate(u, y[:20], n_samples=2, random_state=13)
    np.testing.assert_array_equal(sims[:3], first)
    np.testing.assert_array_equal(sims[5:], last)
    lo, hi = ens.predict_interval(u, y[:20], coverage=0.8, n_samples=7, random_state=11)
    np.testing.assert_allclose(lo, np.quantile(sims, 0.1, axis=0)[:, 0])
    np.testing.assert_allclose(hi, np.quantile(sims, 0.9, axis=0)[:, 0])
    assert lo.shape == y.shape
    # fewer samples than members: only the first members simulate
    assert ens.simulate(u, y[:20], n_samples=2, random_state=0).shape == (2, len(y), 1)


def test_nested_seeds_of_a_hybrid_member_are_set():
    u, y = duffing_system()
    hybrid = LinearResidualRegressor(_net(random_state=99), ARXRegressor(na=2, nb=2))
    ens = EnsembleRegressor(hybrid, n_members=2, random_state=3).fit(u, y)
    seeds = [m.estimator_.random_state for m in ens.estimators_]
    assert seeds == [3, 4]
    assert hybrid.estimator.random_state == 99  # the template is untouched
    single = clone(hybrid).set_params(estimator__random_state=4).fit(u, y)
    np.testing.assert_array_equal(
        ens.estimators_[1].predict(u, y[:20]), single.predict(u, y[:20])
    )


def test_warm_start_continues_every_member_with_its_own_seed():
    u, y = duffing_system()
    ens = EnsembleRegressor(_net(), n_members=2, random_state=0).fit(u, y)
    firsts = [m.model_ for m in ens.estimators_]
    ens.set_params(estimator__warm_start=True, estimator__max_iter=1).fit(u, y)
    assert ens.seeds_ == [0, 1]
    assert [m.random_state for m in ens.estimators_] == [0, 1]
    assert [m.max_iter for m in ens.estimators_] == [1, 1]
    # the continued member is the single model fitted, then continued
    single = _net(random_state=1).fit(u, y)
    single.set_params(warm_start=True, max_iter=1).fit(u, y)
    np.testing.assert_array_equal(
        ens.estimators_[1].predict(u, y[:20]), single.predict(u, y[:20])
    )
    assert ens.estimators_[0].model_ is firsts[0]  # continued in place
    with pytest.raises(ValueError, match="cannot continue 2 fitted members"):
        ens.set_params(n_members=3).fit(u, y)


def test_members_fitted_in_parallel_processes_match_the_serial_fit():
    u, y = duffing_system()
    serial = EnsembleRegressor(_net(), n_members=2, random_state=0).fit(u, y)
    parallel = clone(serial).set_params(n_jobs=2).fit(u, y)
    # other processes may use other thread counts: equal to float32 rounding
    np.testing.assert_allclose(
        parallel.predict(u, y[:20]), serial.predict(u, y[:20]), rtol=1e-4, atol=1e-5
    )


def test_pickle_round_trip_predicts_the_same():
    u, y = duffing_system()
    ens = EnsembleRegressor(_net(), n_members=2, random_state=0).fit(u, y)
    twin = pickle.loads(pickle.dumps(ens))
    np.testing.assert_array_equal(twin.predict(u, y[:20]), ens.predict(u, y[:20]))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_members": 0}, "n_members must be a positive int"),
        ({"n_members": 2.0}, "n_members must be a positive int"),
        ({"n_jobs": 0}, "n_jobs must be None or a nonzero int"),
    ],
)
def test_bad_parameters_are_named(params, match):
    u, y = duffing_system()
    with pytest.raises(ValueError, match=match):
        EnsembleRegressor(_net(), **params).fit(u, y)


def test_estimator_without_the_protocol_or_a_seed_is_refused():
    u, y = duffing_system()
    with pytest.raises(TypeError, match="estimator must be an estimator"):
        EnsembleRegressor(object()).fit(u, y)
    with pytest.raises(ValueError, match="no random_state parameter"):
        EnsembleRegressor(ARXRegressor()).fit(u, y)


def test_unfitted_and_bad_arguments():
    u, y = duffing_system()
    with pytest.raises(NotFittedError):
        EnsembleRegressor(_net()).predict(u)
    ens = EnsembleRegressor(_net(), n_members=1, random_state=0).fit(u, y)
    with pytest.raises(ValueError, match="n_samples must be a positive int"):
        ens.simulate(u, y[:20], n_samples=0)
    with pytest.raises(ValueError, match="coverage must be in"):
        ens.predict_interval(u, y[:20], coverage=1.5)
    with pytest.raises(ValueError, match="y_init must be a list exactly"):
        ens.predict([u], y[:20])
    with pytest.raises(ValueError, match="y_init has 1 experiment"):
        ens.predict([u, u], [y[:20]])
    two = ens.predict([u, u[:300]], [y[:20], y[:20]])
    np.testing.assert_array_equal(two[1], ens.predict(u[:300], y[:20]))
    assert np.isfinite(ens.score(u, y))


def test_save_and_load_round_trip_without_pickle(tmp_path):
    u, y = duffing_system()
    ens = EnsembleRegressor(_net(), n_members=2, random_state=4).fit(u, y)
    path = tmp_path / "ens.safetensors"
    ens.save(path)
    again = EnsembleRegressor.load(path)
    assert again.seeds_ == [4, 5] and again.get_params()["n_members"] == 2
    assert again.estimator.get_params() == ens.estimator.get_params()
    np.testing.assert_array_equal(again.predict(u, y[:20]), ens.predict(u, y[:20]))
    np.testing.assert_array_equal(
        again.simulate(u, y[:20], n_samples=3, random_state=0),
        ens.simulate(u, y[:20], n_samples=3, random_state=0),
    )
    assert again.predict(u, y[:20]).shape == y.shape  # 1-D like the fitted y
    # a single model's file is not an ensemble's, and the other way round
    ens.estimators_[0].save(tmp_path / "one.safetensors")
    with pytest.raises(DataFormatError, match="not a sysid_msstcn ensemble file"):
        EnsembleRegressor.load(tmp_path / "one.safetensors")
    with pytest.raises(DataFormatError, match="not a sysid_msstcn model file"):
        MSSTCNRegressor.load(path)
    with pytest.raises(FileNotFoundError, match="no saved ensemble"):
        EnsembleRegressor.load(tmp_path / "missing.safetensors")


def test_save_refuses_members_it_cannot_write_and_leaves_no_file(tmp_path):
    u, y = duffing_system()
    hybrid = LinearResidualRegressor(_net(), ARXRegressor(na=2, nb=2))
    ens = EnsembleRegressor(hybrid, n_members=1, random_state=0).fit(u, y)
    path = tmp_path / "ens.safetensors"
    with pytest.raises(TypeError, match="pickle"):
        ens.save(path)
    assert not path.exists()
    with pytest.raises(NotFittedError):
        EnsembleRegressor(_net()).save(path)


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h.update(format="other/1"),
        lambda h: h.update(seeds=[1, 2, 3]),
        lambda h: h["members"][1].update(network_config={"channels": "x"}),
        lambda h: h.update(members=[]),
    ],
    ids=["format", "seeds", "member config", "no members"],
)
def test_a_malformed_ensemble_file_is_named(tmp_path, edit):
    from safetensors import safe_open
    from safetensors.torch import save_file

    u, y = duffing_system()
    ens = EnsembleRegressor(_net(), n_members=2, random_state=0).fit(u, y)
    path = tmp_path / "ens.safetensors"
    ens.save(path)
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["sysid_msstcn_ensemble"])
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    edit(header)
    save_file(state, str(path), metadata={"sysid_msstcn_ensemble": json.dumps(header)})
    with pytest.raises(DataFormatError, match="malformed sysid_msstcn ensemble"):
        EnsembleRegressor.load(path)
