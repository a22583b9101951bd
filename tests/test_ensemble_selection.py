"""EnsembleRegressor(keep_best=K): members chosen by their training free run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tiny import TINY_SYSID, duffing_system
from sklearn.base import BaseEstimator, RegressorMixin

from sysid_msstcn import EnsembleRegressor, MSSTCNRegressor
from sysid_msstcn.ensemble import _run_nrmse, _training_runs
from sysid_msstcn.exceptions import DataFormatError


def _net(**kw) -> MSSTCNRegressor:
    return MSSTCNRegressor(**{**TINY_SYSID, **kw})


@pytest.fixture(scope="module")
def selected():
    u, y = duffing_system()
    ens = EnsembleRegressor(_net(), n_members=3, random_state=0, keep_best=2)
    return u, y, ens.fit(u, y)


def _nrmse(y, p, n0):
    return np.sqrt(np.mean((y[n0:] - p[n0:]) ** 2)) / np.std(y[n0:])


def test_members_are_scored_by_their_training_free_run_and_the_best_kept(selected):
    u, y, ens = selected
    n0 = ens.n_init_
    runs = [m.predict(u, y_init=y[:n0]) for m in ens.estimators_]
    expected = [_nrmse(y, p, n0) for p in runs]
    np.testing.assert_allclose(ens.member_scores_, expected, rtol=1e-12)
    assert ens.selected_ == sorted(np.argsort(expected)[:2].tolist())
    assert len(ens.estimators_) == 3 and ens.seeds_ == [0, 1, 2]
    # prediction is the mean of the kept members only, exactly
    kept = [runs[i] for i in ens.selected_]
    np.testing.assert_array_equal(ens.predict(u, y[:n0]), np.mean(kept, axis=0))
    assert len(ens.member_predictions(u, y[:n0])) == 2
    sims = ens.simulate(u, y[:n0], n_samples=3, random_state=7)
    first = ens.estimators_[ens.selected_[0]]
    np.testing.assert_array_equal(
        sims[:2], first.simulate(u, y[:n0], n_samples=2, random_state=7)
    )


def test_without_keep_best_every_member_is_used_and_none_scored():
    u, y = duffing_system()
    plain = EnsembleRegressor(_net(), n_members=2, random_state=0).fit(u, y)
    assert plain.selected_ == [0, 1] and plain.member_scores_ is None
    every = EnsembleRegressor(_net(), n_members=2, random_state=0, keep_best=2)
    every.fit(u, y)
    assert every.selected_ == [0, 1] and every.member_scores_.shape == (2,)
    np.testing.assert_array_equal(every.predict(u, y[:20]), plain.predict(u, y[:20]))


class _Diverging(RegressorMixin, BaseEstimator):
    """A member whose free run is NaN after the warm-up."""

    def __init__(self, random_state=None):
        self.random_state = random_state

    def fit(self, X, y):
        self.n_init_ = 2
        return self

    def predict(self, X, y_init=None):
        out = np.full(len(X), np.nan)
        out[:2] = 0.0
        return out


def test_a_diverging_member_scores_inf():
    u, y = duffing_system()
    member = _Diverging().fit(u, y)
    run = _training_runs(member, [u], [y.reshape(-1, 1)], 2)
    assert run is None and _run_nrmse(y.reshape(-1, 1)[2:], run) == np.inf


def test_continuation_rescores_and_reselects():
    u, y = duffing_system()
    ens = EnsembleRegressor(_net(), n_members=2, random_state=0, keep_best=1)
    ens.fit(u, y)
    before = ens.member_scores_.copy()
    ens.set_params(estimator__warm_start=True, estimator__max_iter=1).fit(u, y)
    assert len(ens.estimators_) == 2 and not np.array_equal(ens.member_scores_, before)
    assert ens.selected_ == [int(np.argmin(ens.member_scores_))]


@pytest.mark.parametrize("k", [0, 4, 1.5, True, "2"])
def test_bad_keep_best_is_named(k):
    u, y = duffing_system()
    with pytest.raises(ValueError, match=r"keep_best must be None or an int in \[1"):
        EnsembleRegressor(_net(), n_members=3, keep_best=k).fit(u, y)


def test_training_data_too_short_to_score_is_named():
    u, y = duffing_system()
    ens = EnsembleRegressor(_Diverging(), n_members=2, random_state=0, keep_best=1)
    assert ens.fit(u[:3], y[:3]).selected_ == [0]  # both inf: the first kept
    before = ens.estimators_
    with pytest.raises(ValueError, match="no training experiment is longer"):
        ens.fit(u[:2], y[:2])
    assert ens.estimators_ is before and ens.selected_ == [0]  # left as it was


def _header(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["sysid_msstcn_ensemble"])
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    return header, state


def _rewrite(path, header, state):
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"sysid_msstcn_ensemble": json.dumps(header)})


def test_the_selection_is_saved_and_a_first_format_file_uses_every_member(
    selected, tmp_path
):
    u, y, ens = selected
    path = tmp_path / "ens.safetensors"
    ens.save(path)
    again = EnsembleRegressor.load(path)
    assert again.selected_ == ens.selected_ and again.keep_best == 2
    np.testing.assert_array_equal(again.member_scores_, ens.member_scores_)
    assert again.selection_order_ == ens.selection_order_
    np.testing.assert_array_equal(again.selection_path_, ens.selection_path_)
    np.testing.assert_array_equal(again.predict(u, y[:20]), ens.predict(u, y[:20]))
    # a file of the first format (no selection) predicts with every member
    header, state = _header(path)
    header["format"] = "sysid_msstcn.ensemble/1"
    del header["selected"], header["member_scores"]
    del header["selection_order"], header["selection_path"]
    del header["params"]["keep_best"], header["params"]["selection"]
    _rewrite(path, header, state)
    old = EnsembleRegressor.load(path)
    assert old.selected_ == [0, 1, 2] and old.member_scores_ is None
    # a diverged member's inf is written as null and read back as inf
    header["format"], header["selected"] = "sysid_msstcn.ensemble/2", [0, 1]
    header["member_scores"] = [0.5, 0.25, None]
    _rewrite(path, header, state)
    second = EnsembleRegressor.load(path)
    assert second.member_scores_.tolist() == [0.5, 0.25, np.inf]
    assert second.selection_order_ is None and second.selection_path_ is None
    runs = [m.predict(u, y[:20]) for m in ens.estimators_]
    np.testing.assert_array_equal(old.predict(u, y[:20]), np.mean(runs, axis=0))


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h.update(selected=[]),
        lambda h: h.update(selected=[0, 3]),
        lambda h: h.update(selected=[1, 0]),
        lambda h: h.update(member_scores=[0.1]),
        lambda h: h.update(selection_order=[h["selected"][0]]),
        lambda h: h.update(selection_path=[0.5]),
        lambda h: h.update(selection_path=None),
    ],
    ids=["none", "out of range", "unsorted", "scores", "order", "path", "no path"],
)
def test_a_malformed_selection_is_named(selected, tmp_path, edit):
    _, _, ens = selected
    path = tmp_path / "ens.safetensors"
    ens.save(path)
    header, state = _header(path)
    edit(header)
    _rewrite(path, header, state)
    with pytest.raises(DataFormatError, match="malformed sysid_msstcn ensemble"):
        EnsembleRegressor.load(path)


# -- greedy selection ---------------------------------------------------------
class _Biased(_Diverging):  # its random_state and fit
    """A member whose free run is its input plus a constant bias per seed.

    With X equal to the measured y, its error is exactly that bias; NaN
    makes the run diverge.
    """

    BIASES = (1.0, -1.0, 2.0, 0.5, np.nan)

    def predict(self, X, y_init=None):
        return np.asarray(X, dtype=float)[:, 0] + self.BIASES[self.random_state]


def _biased_data():
    y = np.sin(np.linspace(0.0, 20.0, 300))
    return y[:, None], y


def test_greedy_selection_keeps_members_whose_errors_cancel():
    """Biases +1, -1, +2, +0.5 (NRMSE |b| / std): greedy takes +0.5, then -1
    (mean -0.25), then +1 (mean 1/6), and stops, since +2 would make the
    mean 0.625; ranking by own score keeps +0.5 and +1 (mean 0.75)."""
    u, y = _biased_data()
    s = np.std(y[2:])
    ens = EnsembleRegressor(_Biased(), n_members=4, random_state=0, selection="greedy")
    ens.fit(u, y)
    np.testing.assert_allclose(ens.member_scores_, np.array([1, 1, 2, 0.5]) / s)
    assert ens.selection_order_ == [3, 1, 0] and ens.selected_ == [0, 1, 3]
    np.testing.assert_allclose(ens.selection_path_, np.array([0.5, 0.25, 1 / 6]) / s)
    np.testing.assert_allclose(ens.predict(u), y + 1 / 6, rtol=0, atol=1e-12)
    capped = EnsembleRegressor(
        _Biased(), n_members=4, random_state=0, selection="greedy", keep_best=2
    ).fit(u, y)
    assert capped.selection_order_ == [3, 1]
    best = EnsembleRegressor(_Biased(), n_members=4, random_state=0, keep_best=2)
    best.fit(u, y)
    assert best.selection_order_ == [3, 0] and best.selected_ == [0, 3]
    np.testing.assert_allclose(best.selection_path_, np.array([0.5, 0.75]) / s)


def test_greedy_selection_never_adds_a_diverged_member():
    u, y = _biased_data()
    ens = EnsembleRegressor(
        _Biased(), n_members=2, random_state=3, selection="greedy"
    ).fit(u, y)  # seeds 3 (bias 0.5) and 4 (NaN)
    assert ens.member_scores_[1] == np.inf
    assert ens.selection_order_ == [0] and ens.selected_ == [0]
    # a "best" path through a diverged member scores inf
    best = EnsembleRegressor(_Biased(), n_members=2, random_state=3, keep_best=2)
    assert best.fit(u, y).selection_path_[1] == np.inf


def test_greedy_path_scores_the_ensemble_that_predicts():
    """The last entry of selection_path_ is the training free-run NRMSE of
    predict(), computed independently; the path falls at every step."""
    u, y = duffing_system()
    ens = EnsembleRegressor(_net(), n_members=5, random_state=0, selection="greedy")
    ens.fit(u, y)
    n0 = ens.n_init_
    assert ens.selection_order_[0] == int(np.argmin(ens.member_scores_))
    assert len(ens.selection_order_) >= 2  # these seeds: 1, then 4
    assert np.all(np.diff(ens.selection_path_) < 0)
    np.testing.assert_allclose(
        ens.selection_path_[-1], _nrmse(y, ens.predict(u, y[:n0]), n0), rtol=1e-10
    )


def test_an_unknown_selection_is_named():
    u, y = _biased_data()
    with pytest.raises(ValueError, match="selection must be 'best' or 'greedy'"):
        EnsembleRegressor(_Biased(), n_members=2, selection="top").fit(u, y)
