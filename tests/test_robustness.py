"""Bad input across the public API: one specific error, and nothing changes.

Every rejected call must raise a specific error whose message names the
problem, and must leave a fitted estimator exactly as it was: same
``get_params()``, same weights, same fitted attributes, same random streams
and the same predictions. Metrics and adapters must leave their arguments
untouched. Accepted-but-unusual input (integers, float16, booleans, extreme
scales, constant signals, records shorter than the receptive field) gets its
documented handling, checked here as well.

The ``test_gap_fixed_*`` cases were first written as strict xfails against
the estimator and the command line, and now pass.
"""

from __future__ import annotations

import copy
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from _tiny import TINY_CLI_NETWORK, TINY_FAST

from sysid_msstcn import MSSTCNRegressor, metrics
from sysid_msstcn.data import make_io_dataset
from sysid_msstcn.data._validation import DataTypeError, as_experiments
from sysid_msstcn.data.handwriting import chunk_sequences
from sysid_msstcn.data.speech import frame_clips
from sysid_msstcn.exceptions import ShapeError

torch.set_num_threads(1)

TINY = TINY_FAST
N = 60
_rng = np.random.default_rng(0)
U = _rng.normal(size=(N, 2))
Y = np.convolve(U[:, 0], [0.5, 0.3])[:N]
U.setflags(write=False)
Y.setflags(write=False)


def _with(arr, index, value):
    out = np.array(arr, dtype=float)
    out[index] = value
    return out


def _fit_tiny(X=U, y=Y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MSSTCNRegressor(**{**TINY, **params}).fit(X, y)


@pytest.fixture(scope="module")
def fitted():
    est = _fit_tiny()
    assert est.receptive_field_ == 6 and est.n_init_ == 6  # the cases rely on it
    return est


# ---------------------------------------------------------------- state
def _snapshot(est) -> dict:
    attrs = (
        "n_features_in_",
        "n_outputs_",
        "y_1d_",
        "receptive_field_",
        "n_init_",
        "n_iter_",
        "best_epoch_",
        "history_",
        "history_events_",
        "loss_curve_",
        "window_",
        "network_config_",
        "train_config_",
    )
    torch_rng = est._torch_rng_state
    return {
        "params": copy.deepcopy(est.get_params(deep=False)),
        "weights": {k: v.clone() for k, v in est.model_.state_dict().items()},
        "attrs": {k: copy.deepcopy(getattr(est, k)) for k in attrs},
        "scalers": (
            est.x_scaler_.to_dict(),
            est.y_scaler_.to_dict(),
        ),
        "rng": copy.deepcopy(est._rng.bit_generator.state),
        "torch_rng": None if torch_rng is None else torch_rng["cpu"].clone(),
        "pred": est.predict(U[:40]),
    }


def _assert_unchanged(before: dict, est) -> None:
    after = _snapshot(est)
    assert after["params"] == before["params"]
    assert after["weights"].keys() == before["weights"].keys()
    for k, v in before["weights"].items():
        assert torch.equal(after["weights"][k], v), f"weight {k} changed"
    assert after["attrs"] == before["attrs"]
    assert after["scalers"] == before["scalers"]
    assert after["rng"] == before["rng"]
    if before["torch_rng"] is None:
        assert after["torch_rng"] is None
    else:
        assert torch.equal(after["torch_rng"], before["torch_rng"])
    np.testing.assert_array_equal(after["pred"], before["pred"])


def _fit_with(**params):
    """A call that fits the shared estimator with ``params``, then restores them."""

    def call(est):
        old = est.get_params(deep=False)
        est.set_params(**params)
        try:
            est.fit(U, Y)
        finally:
            est.set_params(**{k: old[k] for k in params})

    return call


# ------------------------------------------------ estimator: bad calls
# id -> (call(est), error type, regex the message must match)
ESTIMATOR_CASES = {
    # predict: values, shapes, dtypes
    "predict_nan": (
        lambda e: e.predict(_with(U, (3, 1), np.nan)),
        ValueError,
        r"X contains NaN: first non-finite value at time index 3, channel 1",
    ),
    "predict_inf": (
        lambda e: e.predict(_with(U, (7, 0), -np.inf)),
        ValueError,
        r"X contains inf \(infinity\).*time index 7, channel 0",
    ),
    "predict_empty": (
        lambda e: e.predict(np.zeros((0, 2))),
        ShapeError,
        r"X is empty: 0 time steps",
    ),
    "predict_1d": (
        lambda e: e.predict(U[:, 0]),
        ValueError,
        r"Expected a 2D array for X, got a 1D array",
    ),
    "predict_3d": (
        lambda e: e.predict(U[None]),
        ShapeError,
        r"X is 3-D with shape \(1, 60, 2\)",
    ),
    "predict_scalar": (lambda e: e.predict(np.float64(1.0)), ShapeError, r"scalar"),
    "predict_wrong_channels": (
        lambda e: e.predict(np.zeros((N, 3))),
        ShapeError,
        r"X has 3 features, but MSSTCNRegressor is expecting 2",
    ),
    "predict_strings": (
        lambda e: e.predict(np.full((N, 2), "a")),
        DataTypeError,
        r"X has non-numeric dtype",
    ),
    "predict_object_string": (
        lambda e: e.predict(np.array([[1.0, "x"]] * 5, dtype=object)),
        DataTypeError,
        r"contains the string 'x'",
    ),
    "predict_complex": (
        lambda e: e.predict(U + 1j),
        DataTypeError,
        r"Complex data not supported",
    ),
    "predict_datetime": (
        lambda e: e.predict(np.zeros((N, 2), dtype="M8[s]")),
        DataTypeError,
        r"non-numeric dtype datetime64",
    ),
    "predict_dataframe_text_column": (
        lambda e: e.predict(pd.DataFrame({"a": ["x"] * 5, "b": [1.0] * 5})),
        DataTypeError,
        r"column 'a' has non-numeric dtype",
    ),
    "predict_masked": (
        lambda e: e.predict(np.ma.masked_array(U, mask=U > 2)),
        ValueError,
        r"masked array with \d+ masked value\(s\)",
    ),
    "predict_huge_int": (
        lambda e: e.predict(np.array([[10**400, 1]] * 8, dtype=object)),
        ValueError,
        r"too large for float64",
    ),
    "predict_x_none": (lambda e: e.predict(None), ValueError, r"X is None"),
    "predict_list_channel_mismatch": (
        lambda e: e.predict([U, U[:, :1]]),
        ShapeError,
        r"experiment 1 of X has 1 channel\(s\) but experiment 0 has 2",
    ),
    "predict_ragged_list": (
        lambda e: e.predict([[1.0, 2.0], [3.0]]),
        DataTypeError,
        r"cannot be converted",
    ),
    # predict: y_init
    "y_init_nan": (
        lambda e: e.predict(U, y_init=np.array([0.0, np.nan])),
        ValueError,
        r"y_init contains NaN.*time index 1",
    ),
    "y_init_longer_than_record": (
        lambda e: e.predict(U[:3], y_init=Y[:5]),
        ValueError,
        r"y_init of experiment 0 has 5 samples, longer than the record \(3",
    ),
    "y_init_wrong_channels": (
        lambda e: e.predict(U, y_init=np.ones((3, 2))),
        ValueError,
        r"y_init has 2 output channels but MSSTCNRegressor was fitted with 1",
    ),
    "y_init_empty": (
        lambda e: e.predict(U, y_init=np.zeros(0)),
        ShapeError,
        r"y_init is empty",
    ),
    "y_init_3d": (
        lambda e: e.predict(U, y_init=np.zeros((3, 1, 1))),
        ShapeError,
        r"y_init is 3-D",
    ),
    "y_init_not_a_list_for_list_x": (
        lambda e: e.predict([U, U], y_init=Y[:3]),
        ValueError,
        r"y_init must be a list exactly when X is a list",
    ),
    "y_init_strings": (
        lambda e: e.predict(U, y_init=np.array(["a", "b"])),
        DataTypeError,
        r"y_init has non-numeric dtype",
    ),
    # score / predict_ahead / elbo
    "score_record_shorter_than_warm_up": (
        lambda e: e.score(U[:6], Y[:6]),
        ValueError,
        r"record of 6 samples is not longer than the warm-up n_init_=6",
    ),
    "score_length_mismatch": (
        lambda e: e.score(U, Y[:-1]),
        ShapeError,
        r"X and y have different lengths: 60 vs 59",
    ),
    "score_nan_y": (
        lambda e: e.score(U, _with(Y, 10, np.nan)),
        ValueError,
        r"y contains NaN.*time index 10",
    ),
    "score_sample_weight": (
        lambda e: e.score(U, Y, sample_weight=np.ones(N)),
        ValueError,
        r"sample_weight is not supported",
    ),
    "score_x_none": (
        lambda e: e.score(None, Y),
        ShapeError,
        r"X is None but MSSTCNRegressor was fitted with 2 input channels",
    ),
    "score_wrong_output_channels": (
        lambda e: e.score(U, np.ones((N, 2))),
        ShapeError,
        r"y has 2 output channels but the estimator was fitted with 1",
    ),
    "predict_ahead_steps_zero": (
        lambda e: e.predict_ahead(U, Y, steps=0),
        ValueError,
        r"steps must be a positive int, got 0",
    ),
    "predict_ahead_steps_float": (
        lambda e: e.predict_ahead(U, Y, steps=1.5),
        ValueError,
        r"steps must be a positive int, got 1.5",
    ),
    "predict_ahead_inf_y": (
        lambda e: e.predict_ahead(U, _with(Y, 4, np.inf)),
        ValueError,
        r"y contains inf.*time index 4",
    ),
    "elbo_length_mismatch": (
        lambda e: e.elbo(U[:10], Y[:12]),
        ShapeError,
        r"different lengths: 10 vs 12",
    ),
    # simulate / intervals / quantiles / sample
    "simulate_n_samples_zero": (
        lambda e: e.simulate(U, n_samples=0),
        ValueError,
        r"n_samples must be a positive int, got 0",
    ),
    "simulate_n_samples_float": (
        lambda e: e.simulate(U, n_samples=2.5),
        ValueError,
        r"n_samples must be a positive int, got 2.5",
    ),
    "simulate_bad_random_state": (
        lambda e: e.simulate(U, n_samples=2, random_state="seed"),
        ValueError,
        r"random_state must be None, an int or a numpy Generator, got str",
    ),
    "simulate_negative_random_state": (
        lambda e: e.simulate(U, n_samples=2, random_state=-1),
        ValueError,
        r"random_state must be >= 0",
    ),
    "interval_coverage_one": (
        lambda e: e.predict_interval(U, coverage=1.0, n_samples=2),
        ValueError,
        r"coverage must be in \(0, 1\), got 1.0",
    ),
    "interval_coverage_nan": (
        lambda e: e.predict_interval(U, coverage=float("nan"), n_samples=2),
        ValueError,
        r"coverage must be in \(0, 1\), got nan",
    ),
    "quantiles_alpha_out_of_range": (
        lambda e: e.predict_quantiles(U, alpha=(0.5, 1.5), n_samples=2),
        ValueError,
        r"alpha values must be in \(0, 1\), got \[0.5, 1.5\]",
    ),
    "sample_zero_sequences": (
        lambda e: e.sample(0, 10, U[:10]),
        ValueError,
        r"n_sequences must be a positive int, got 0",
    ),
    "sample_float_length": (
        lambda e: e.sample(1, 10.0, U[:10]),
        ValueError,
        r"length must be a positive int, got 10.0",
    ),
    "sample_missing_inputs": (
        lambda e: e.sample(1, 10),
        ValueError,
        r"this model has inputs: pass X of shape \(10, 2\)",
    ),
    "sample_input_length_mismatch": (
        lambda e: e.sample(1, 10, U[:12]),
        ValueError,
        r"X has 12 rows but length=10",
    ),
    "sample_nan_input": (
        lambda e: e.sample(1, 10, _with(U[:10], (2, 0), np.nan)),
        ValueError,
        r"X contains NaN.*time index 2",
    ),
    # fit / partial_fit: data
    "fit_nan_y": (
        lambda e: e.fit(U, _with(Y, 5, np.nan)),
        ValueError,
        r"y contains NaN: first non-finite value at time index 5, channel 0",
    ),
    "fit_inf_x": (
        lambda e: e.fit(_with(U, (9, 1), np.inf), Y),
        ValueError,
        r"X contains inf.*time index 9, channel 1",
    ),
    "fit_y_none": (
        lambda e: e.fit(U),
        ValueError,
        r"requires y to be passed, but the target y is None",
    ),
    "fit_shorter_than_receptive_field": (
        lambda e: e.fit(U[:6], Y[:6]),
        ValueError,
        r"experiment 0 has 6 samples, shorter than the receptive field of the "
        r"model plus one \(7\)",
    ),
    "fit_one_experiment_too_short": (
        lambda e: e.fit([U, U[:4]], [Y, Y[:4]]),
        ValueError,
        r"experiment 1 has 4 samples, shorter than the receptive field",
    ),
    "fit_length_mismatch": (
        lambda e: e.fit(U, Y[:-3]),
        ShapeError,
        r"X and y have different lengths: 60 vs 57",
    ),
    "fit_experiment_channel_mismatch": (
        lambda e: e.fit([U, U[:, :1]], [Y, Y]),
        ShapeError,
        r"experiment 1 of X has 1 channel\(s\) but experiment 0 has 2",
    ),
    "fit_output_channel_mismatch": (
        lambda e: e.fit([U, U], [Y, np.c_[Y, Y]]),
        ShapeError,
        r"experiment 1 of y has 2 channel\(s\) but experiment 0 has 1",
    ),
    "fit_list_vs_array": (
        lambda e: e.fit([U, U], Y),
        ShapeError,
        r"X is a list of 2 experiment\(s\) but y is a single array",
    ),
    "fit_experiment_count": (
        lambda e: e.fit([U, U], [Y]),
        ShapeError,
        r"X has 2 experiments but y has 1",
    ),
    "fit_complex_y": (
        lambda e: e.fit(U, Y + 1j),
        DataTypeError,
        r"y holds complex numbers",
    ),
    "fit_string_y": (
        lambda e: e.fit(U, np.array(["1.0"] * N)),
        DataTypeError,
        r"y has non-numeric dtype",
    ),
    "fit_zero_channels": (
        lambda e: e.fit(np.zeros((N, 0)), Y),
        ValueError,
        r"0 feature\(s\).*For output-only data pass X=None",
    ),
    "fit_nullable_missing": (
        lambda e: e.fit(U, pd.Series(pd.array([1, None] * 30, dtype="Int64"))),
        ValueError,
        r"y contains NaN.*time index 1",
    ),
    "partial_fit_wrong_channels": (
        lambda e: e.partial_fit(np.zeros((N, 3)), Y),
        ShapeError,
        r"X has 3 features, but MSSTCNRegressor is expecting 2",
    ),
    "partial_fit_wrong_outputs": (
        lambda e: e.partial_fit(U, np.c_[Y, Y]),
        ShapeError,
        r"y has 2 output channels but the estimator was fitted with 1",
    ),
    "partial_fit_too_short": (
        lambda e: e.partial_fit(U[:5], Y[:5]),
        ValueError,
        r"experiment 0 has 5 samples, shorter than the receptive field",
    ),
    "partial_fit_inputs_for_output_only": (
        lambda e: e.partial_fit(None, Y),
        ShapeError,
        r"X is None but MSSTCNRegressor was fitted with 2 input channels",
    ),
    # fit: unknown or invalid parameter values
    "param_likelihood": (
        _fit_with(likelihood="poisson"),
        ValueError,
        r"unknown likelihood 'poisson'; choose one of",
    ),
    "param_resampling": (
        _fit_with(resampling="nearest"),
        ValueError,
        r"unknown resampling 'nearest'",
    ),
    "param_objective": (
        _fit_with(objective="mse"),
        ValueError,
        r"unknown objective 'mse'",
    ),
    "param_device": (
        _fit_with(device="tpu"),
        ValueError,
        r"unknown device 'tpu'",
    ),
    "param_preset": (
        _fit_with(preset="no_such_preset"),
        ValueError,
        r"unknown preset 'no_such_preset'; available presets:",
    ),
    "param_max_iter": (
        _fit_with(max_iter=-1),
        ValueError,
        r"max_iter must be an int >= 0, got -1",
    ),
    "param_learning_rate_nan": (
        _fit_with(learning_rate=float("nan")),
        ValueError,
        r"learning_rate must be None or a float in \(0, 1e6\], got nan",
    ),
    "param_learning_rate_negative": (
        _fit_with(learning_rate=-1e-3),
        ValueError,
        r"learning_rate must be None or a float in \(0, 1e6\]",
    ),
    "param_batch_size": (
        _fit_with(batch_size=0),
        ValueError,
        r"batch_size must be a positive int, got 0",
    ),
    "param_window": (
        _fit_with(window=1),
        ValueError,
        r"window must be an int >= 2 or None, got 1",
    ),
    "param_tol_nan": (
        _fit_with(tol=float("nan")),
        ValueError,
        r"tol must be a float >= 0, got nan",
    ),
    "param_validation_fraction": (
        _fit_with(validation_fraction=1.0),
        ValueError,
        r"validation_fraction must be a float in \[0, 1\)",
    ),
    "param_n_init": (
        _fit_with(n_init=-1),
        ValueError,
        r"n_init must be None or an int >= 0",
    ),
    "param_input_noise_nan": (
        _fit_with(input_noise=float("nan")),
        ValueError,
        r"input_noise must be .*a finite float >= 0, got nan",
    ),
    "param_input_noise_text": (
        _fit_with(input_noise="high"),
        ValueError,
        r"input_noise must be .*got 'high'",
    ),
    "param_early_stopping_metric": (
        _fit_with(early_stopping_metric="rmse"),
        ValueError,
        r"early_stopping_metric must be .*got 'rmse'",
    ),
    "param_steps_per_epoch": (
        _fit_with(steps_per_epoch=0),
        ValueError,
        r"steps_per_epoch must be None or an int >= 1",
    ),
    "param_channels_zero": (
        _fit_with(channels=(0, 4)),
        ValueError,
        r"channels must hold positive integers, got \(0, 4\)",
    ),
    "param_strides_zero": (
        _fit_with(strides=(1, 0)),
        ValueError,
        r"strides must hold positive integers",
    ),
    "param_level_count_mismatch": (
        _fit_with(channels=(4,)),
        ValueError,
        r"per-level tuples must have the same length",
    ),
    "param_grad_clip": (
        _fit_with(grad_clip=-1.0),
        ValueError,
        r"grad_clip must be None or a finite float > 0",
    ),
    "param_lr_decay": (
        _fit_with(lr_decay=0.0),
        ValueError,
        r"lr_decay must be a float in \(0, 1\]",
    ),
    "param_random_state": (
        _fit_with(random_state="abc"),
        ValueError,
        r"random_state must be None, an int or a numpy Generator",
    ),
    "param_verbose": (
        _fit_with(verbose="loud"),
        ValueError,
        r"verbose must be an int or bool",
    ),
}


@pytest.mark.parametrize("case", list(ESTIMATOR_CASES))
def test_rejected_call_names_the_problem_and_changes_nothing(fitted, case):
    call, error, pattern = ESTIMATOR_CASES[case]
    before = _snapshot(fitted)
    with pytest.raises(error, match=pattern):
        call(fitted)
    _assert_unchanged(before, fitted)


def test_estimator_works_after_all_rejections(fitted):
    before = _snapshot(fitted)
    for call, error, _ in ESTIMATOR_CASES.values():
        with pytest.raises(error):
            call(fitted)
    _assert_unchanged(before, fitted)
    assert fitted.score(U, Y) <= 1.0
    assert np.all(np.isfinite(fitted.simulate(U, n_samples=2, random_state=0)))


def test_every_error_is_a_value_error():
    """Callers catching ValueError see every rejection (sklearn convention)."""
    assert all(issubclass(err, ValueError) for _, err, _ in ESTIMATOR_CASES.values())


# ------------------------------------ estimator: documented handling
def test_integer_float16_bool_and_object_inputs_are_converted(fitted):
    ints = np.round(U * 3).astype(np.int32)
    np.testing.assert_array_equal(fitted.predict(ints), fitted.predict(ints * 1.0))
    half = U.astype(np.float16)
    np.testing.assert_array_equal(
        fitted.predict(half), fitted.predict(half.astype(np.float64))
    )
    flags = U > 0
    np.testing.assert_array_equal(fitted.predict(flags), fitted.predict(flags * 1.0))
    objs = np.array(U, dtype=object)
    np.testing.assert_array_equal(fitted.predict(objs), fitted.predict(U))
    frame = pd.DataFrame(U, columns=["a", "b"])
    np.testing.assert_array_equal(fitted.predict(frame.to_numpy()), fitted.predict(U))


def test_integer_and_float16_training_data():
    ints = np.round(U * 4).astype(np.int16)
    y_int = np.round(Y * 4).astype(np.int64)
    a = _fit_tiny(ints, y_int)
    b = _fit_tiny(ints.astype(float), y_int.astype(float))
    np.testing.assert_array_equal(a.predict(ints), b.predict(ints))
    c = _fit_tiny(U.astype(np.float16), Y.astype(np.float16))
    assert np.all(np.isfinite(c.predict(U)))


@pytest.mark.parametrize("scale", [1e-9, 1e9])
def test_extreme_scales_are_normalised_away(fitted, scale):
    """With normalize=True, fitting on scaled data scales the predictions."""
    est = _fit_tiny(U * scale, Y * scale)
    pred = est.predict(U * scale, y_init=Y[:6] * scale)
    np.testing.assert_allclose(
        pred / scale, fitted.predict(U, y_init=Y[:6]), rtol=1e-9, atol=1e-12
    )
    assert est.score(U * scale, Y * scale) == pytest.approx(fitted.score(U, Y))


def test_extreme_scales_without_normalisation_stay_finite():
    for scale in (1e-9, 1e9):
        est = _fit_tiny(U * scale, Y * scale, normalize=False)
        assert all(bool(torch.isfinite(p).all()) for p in est.model_.parameters())
        assert np.all(np.isfinite(est.predict(U * scale)))


def test_constant_signals_warn_and_stay_finite(fitted):
    with pytest.warns(UserWarning, match=r"output channel\(s\) \[0\] are constant"):
        est = MSSTCNRegressor(**TINY).fit(U, np.full(N, 2.5))
    assert est.y_scaler_.scale_[0] == 1.0
    assert np.all(np.isfinite(est.predict(U)))
    with pytest.warns(UserWarning, match=r"input channel\(s\) \[1\] are constant"):
        est = MSSTCNRegressor(**TINY).fit(np.c_[U[:, 0], np.zeros(N)], Y)
    assert np.all(np.isfinite(est.predict(np.c_[U[:, 0], np.zeros(N)])))
    # score on a constant target follows sklearn's r2_score: 1 if exact, else 0
    assert fitted.score(U, np.full(N, 7.0)) == 0.0


def test_records_shorter_than_the_receptive_field_can_be_predicted(fitted):
    """Prediction needs no warm-up: the network's past is zero padding."""
    assert fitted.predict(U[:1]).shape == (1,)
    assert fitted.predict(U[:3], y_init=Y[:3]).tolist() == Y[:3].tolist()
    np.testing.assert_allclose(fitted.predict(U[:20])[:5], fitted.predict(U[:5]))


def test_huge_inputs_within_float32_range_give_finite_predictions(fitted):
    assert np.all(np.isfinite(fitted.predict(U * 1e30)))


# ------------------------------------------------------------------ metrics
YT = np.linspace(-1.0, 1.0, 20)
YP = YT + 0.1
YT.setflags(write=False)
YP.setflags(write=False)
METRIC_CASES = {
    "nan_true": (
        lambda: metrics.rmse(_with(YT, 4, np.nan), YP),
        ValueError,
        r"y_true contains NaN: first non-finite value at time index 4",
    ),
    "inf_pred": (
        lambda: metrics.mae(YT, _with(YP, 2, np.inf)),
        ValueError,
        r"y_pred contains inf",
    ),
    "shape_mismatch": (
        lambda: metrics.nrmse(YT, YP[:-1]),
        ShapeError,
        r"y_true and y_pred have different shapes: \(20, 1\) vs \(19, 1\)",
    ),
    "empty": (
        lambda: metrics.rmse(np.zeros(0), np.zeros(0)),
        ShapeError,
        r"y_true is empty",
    ),
    "three_d": (
        lambda: metrics.rmse(np.zeros((2, 3, 4)), np.zeros((2, 3, 4))),
        ShapeError,
        r"y_true is 3-D",
    ),
    "strings": (
        lambda: metrics.rmse(np.array(["a"] * 20), YP),
        DataTypeError,
        r"y_true has non-numeric dtype",
    ),
    "constant_true": (
        lambda: metrics.r2(np.full(20, 3.0), YP),
        ValueError,
        r"y_true has zero variance over the scored samples in channel\(s\) \[0\]",
    ),
    "n_init_too_large": (
        lambda: metrics.fit_index(YT, YP, n_init=20),
        ValueError,
        r"n_init=20 leaves no sample to score: y_true has only 20 time steps",
    ),
    "n_init_float": (
        lambda: metrics.rmse(YT, YP, n_init=2.0),
        ValueError,
        r"n_init must be an int, got float",
    ),
    "n_init_negative": (
        lambda: metrics.rmse(YT, YP, n_init=-1),
        ValueError,
        r"n_init must be >= 0",
    ),
    "multioutput_unknown": (
        lambda: metrics.rmse(YT, YP, multioutput="variance_weighted"),
        ValueError,
        r"multioutput must be 'raw_values', 'uniform_average' or an array",
    ),
    "multioutput_negative_weights": (
        lambda: metrics.rmse(np.c_[YT, YT], np.c_[YP, YP], multioutput=[1.0, -1.0]),
        ValueError,
        r"multioutput weights must be finite, >= 0 and not all zero",
    ),
    "multioutput_zero_weights": (
        lambda: metrics.rmse(np.c_[YT, YT], np.c_[YP, YP], multioutput=[0, 0]),
        ValueError,
        r"multioutput weights must be finite, >= 0 and not all zero",
    ),
    "multioutput_nan_weights": (
        lambda: metrics.mae(np.c_[YT, YT], np.c_[YP, YP], multioutput=[np.nan, 1]),
        ValueError,
        r"multioutput weights must be finite",
    ),
    "multioutput_text_weights": (
        lambda: metrics.mae(np.c_[YT, YT], np.c_[YP, YP], multioutput=["a", "b"]),
        ValueError,
        r"multioutput must be",
    ),
    "time_axis_text": (
        lambda: metrics.rmse(YT, YP, time_axis="0"),
        ValueError,
        r"time_axis must be an int",
    ),
    "time_axis_out_of_range": (
        lambda: metrics.rmse(np.c_[YT, YT], np.c_[YP, YP], time_axis=3),
        ValueError,
        r"time_axis=3 is out of range for 2-D data",
    ),
    "std_zero": (
        lambda: metrics.gaussian_nll(YT, YP, 0.0),
        ValueError,
        r"std must be > 0 everywhere",
    ),
    "std_text": (
        lambda: metrics.crps_gaussian(YT, YP, "wide"),
        DataTypeError,
        r"std must be a number or an array, got 'wide'",
    ),
    "std_nan": (
        lambda: metrics.gaussian_nll(YT, YP, np.nan),
        ValueError,
        r"std contains NaN",
    ),
    "samples_shape": (
        lambda: metrics.crps_ensemble(YT, np.zeros((3, 19))),
        ShapeError,
        r"samples must have shape \(n_samples, T\)",
    ),
    "samples_text": (
        lambda: metrics.crps_ensemble(YT, np.full((2, 20), "x")),
        DataTypeError,
        r"samples must hold numbers only",
    ),
    "samples_nan": (
        lambda: metrics.crps_ensemble(YT, np.full((2, 20), np.nan)),
        ValueError,
        r"samples contain NaN or inf",
    ),
    "fair_one_sample": (
        lambda: metrics.crps_ensemble(YT, np.zeros((1, 20)), fair=True),
        ValueError,
        r"fair=True needs at least 2 samples",
    ),
    "interval_crossed": (
        lambda: metrics.interval_coverage(YT, YP + 1, YP - 1),
        ValueError,
        r"lower > upper",
    ),
    "experiment_count": (
        lambda: metrics.rmse([YT, YT], [YP]),
        ShapeError,
        r"y_true has 2 experiment\(s\) but y_pred has 1",
    ),
    "elbo_nan": (
        lambda: metrics.elbo_report([np.nan], [1.0], 10, 1),
        ValueError,
        r"elbo_per_sequence must be a non-empty 1-D finite array",
    ),
    "elbo_n_steps_nan": (
        lambda: metrics.elbo_report([-1.0], [1.0], np.nan, 1),
        ValueError,
        r"n_steps must be finite and >= 1",
    ),
    "elbo_n_steps_shape": (
        lambda: metrics.elbo_report([-1.0, -2.0], [1.0], [10, 10, 10], 1),
        ShapeError,
        r"n_steps has shape \(3,\) but there are 2 sequences",
    ),
    "elbo_n_dims_text": (
        lambda: metrics.elbo_report([-1.0], [1.0], 10, "3"),
        ValueError,
        r"n_dims must be a positive int, got '3'",
    ),
    "elbo_kl_rows": (
        lambda: metrics.elbo_report([-1.0], np.ones((2, 3)), 10, 1),
        ShapeError,
        r"kl_per_level has 2 rows but there are 1 sequences",
    ),
    "nats_text": (
        lambda: metrics.nats_to_bits("one"),
        DataTypeError,
        r"x must be a number or an array of numbers",
    ),
}


@pytest.mark.parametrize("case", list(METRIC_CASES))
def test_metric_rejects_bad_input_by_name(case):
    call, error, pattern = METRIC_CASES[case]
    with pytest.raises(error, match=pattern):
        call()
    # read-only module arrays: a metric that wrote into its input would fail
    assert YT[0] == -1.0 and YP[0] == pytest.approx(-0.9)


@pytest.mark.parametrize("scale", [1e-300, 1e-9, 1e9, 1e300])
def test_metrics_at_extreme_scales(scale):
    rmse, mae = metrics.rmse(YT, YP), metrics.mae(YT, YP)
    assert metrics.rmse(YT * scale, YP * scale) == pytest.approx(rmse * scale)
    assert metrics.mae(YT * scale, YP * scale) == pytest.approx(mae * scale)
    if scale > 1e-150:  # variance of tinier signals underflows: "constant"
        assert metrics.nrmse(YT * scale, YP * scale) == pytest.approx(
            metrics.nrmse(YT, YP)
        )


# ----------------------------------------------------------------- adapters
ADAPTER_CASES = {
    "io_dataset_nan": (
        lambda: make_io_dataset(_with(U, (3, 0), np.nan), Y, sampling_time=0.1),
        ValueError,
        r"u contains NaN: first non-finite value at time index 3",
    ),
    "io_dataset_length": (
        lambda: make_io_dataset(U, Y[:-1], sampling_time=0.1),
        ShapeError,
        r"u and y must have the same length, got 60 and 59",
    ),
    "io_dataset_text": (
        lambda: make_io_dataset(np.array(["a"] * 3), [1.0, 2.0, 3.0], sampling_time=1),
        DataTypeError,
        r"u has non-numeric dtype",
    ),
    "io_dataset_empty": (
        lambda: make_io_dataset([], [], sampling_time=0.1),
        ShapeError,
        r"u is empty",
    ),
    "io_dataset_sampling_time": (
        lambda: make_io_dataset(U, Y, sampling_time=0.0),
        ValueError,
        r"sampling_time must be a positive number, got 0.0",
    ),
    "io_dataset_n_init": (
        lambda: make_io_dataset(U, Y, sampling_time=0.1, n_init=-2),
        ValueError,
        r"n_init must be an int >= 0, got -2",
    ),
    "io_dataset_labels": (
        lambda: make_io_dataset(U, Y, sampling_time=0.1, u_labels=["a"]),
        ShapeError,
        r"u has 1 label\(s\) but 2 channel\(s\)",
    ),
    "validation_overflow_float32": (
        lambda: as_experiments(np.array([[1e300]]), dtype=np.float32),
        ValueError,
        r"X holds values too large for float32 \(overflow to inf\)",
    ),
    "validation_dataset_mismatch": (
        lambda: as_experiments(
            [xr.Dataset({"u": (("time",), U[:, 0]), "y": (("time",), Y)}), U]
        ),
        ValueError,
        r"do not mix the two forms",
    ),
    "chunk_length_zero": (
        lambda: chunk_sequences([np.zeros((5, 3))], length=0),
        ValueError,
        r"length must be >= 1, got 0",
    ),
    "frame_width_not_divisor": (
        lambda: frame_clips(np.zeros((2, 10)), 3),
        ShapeError,
        r"frame_width 3 does not divide clip length 10",
    ),
    "frame_mode": (
        lambda: frame_clips(np.zeros((2, 10)), 5, mode="zigzag"),
        ValueError,
        r"mode must be 'contiguous' or 'strided', got 'zigzag'",
    ),
}


@pytest.mark.parametrize("case", list(ADAPTER_CASES))
def test_adapter_rejects_bad_input_by_name(case):
    call, error, pattern = ADAPTER_CASES[case]
    with pytest.raises(error, match=pattern):
        call()


def test_case_count():
    """The issue asks for at least 30 distinct bad-input cases."""
    assert len(ESTIMATOR_CASES) + len(METRIC_CASES) + len(ADAPTER_CASES) >= 30


# ----------------------------------------- former gaps (estimator, cli)
def _fresh(**params):
    """An estimator fitted with max_iter=0 (statistics and network, no steps)."""
    return _fit_tiny(**{"max_iter": 0, **params})


def test_gap_fixed_y_init_list_length_is_named(fitted):
    with pytest.raises(ValueError, match=r"y_init.*1 experiment.*X.*2|X has 2"):
        fitted.predict([U, U], y_init=[Y[:3]])


@pytest.mark.parametrize("method", ["fit", "predict"])
def test_gap_fixed_empty_lists_say_empty(fitted, method):
    args = ([], []) if method == "fit" else ([],)
    with pytest.raises(ValueError, match=r"empty"):
        getattr(fitted, method)(*args)


def test_gap_fixed_text_learning_rate_is_named(fitted):
    with pytest.raises(ValueError, match=r"learning_rate"):
        _fit_with(learning_rate="fast")(fitted)


def test_gap_fixed_infinite_input_noise_is_rejected():
    with pytest.raises(ValueError, match=r"input_noise"):
        _fresh(input_noise=float("inf"))


@pytest.mark.parametrize("param", ["use_latents", "mixed_precision"])
def test_gap_fixed_non_bool_flags_are_rejected(param):
    with pytest.raises(ValueError, match=param):
        _fresh(**{param: "no"})


def test_gap_fixed_text_coverage_is_named(fitted):
    with pytest.raises(ValueError, match=r"coverage"):
        fitted.predict_interval(U, coverage="90%", n_samples=2)


def test_gap_fixed_nan_alpha_is_named(fitted):
    with pytest.raises(ValueError, match=r"alpha"):
        fitted.predict_quantiles(U, alpha=float("nan"), n_samples=2)


def test_gap_fixed_empty_alpha_is_rejected(fitted):
    with pytest.raises(ValueError, match=r"alpha"):
        fitted.predict_quantiles(U, alpha=[], n_samples=2)


def test_gap_fixed_bool_counts_are_rejected(fitted):
    with pytest.raises(ValueError, match=r"n_samples"):
        fitted.simulate(U, n_samples=True)


def test_gap_fixed_inputs_beyond_float32_are_rejected(fitted):
    with pytest.raises(ValueError, match=r"float32|too large|overflow"):
        fitted.predict(U * 1e300)


def test_gap_fixed_partial_fit_validates_parameters():
    est = _fresh()
    est.set_params(likelihood="poisson")
    with pytest.raises(ValueError, match=r"likelihood"):
        est.partial_fit(U, Y)


# ------------------------------------------------------------- command line
CLI_TINY = [
    *TINY_CLI_NETWORK,
    "--max-iter",
    "1",
    "--steps-per-epoch",
    "1",
    "--device",
    "cpu",
    "-q",
]


@pytest.mark.parametrize(
    ("rows", "flags", "pattern"),
    [
        ({"u": U[:, 0], "y": _with(Y, 4, np.nan)}, [], r"y contains NaN.*index 4"),
        ({"u": U[:5, 0], "y": Y[:5]}, [], r"shorter than the receptive field"),
        ({"u": U[:, 0], "y": Y}, ["--likelihood", "poisson"], r"unknown likelihood"),
        ({"u": U[:, 0], "y": Y}, ["--max-iter", "-1"], r"max_iter must be"),
        ({"u": U[:, 0], "y": Y}, ["--channels", "[0,4]"], r"channels must hold"),
        ({"x": U[:, 0], "y": Y}, [], r"needs input columns named u\*"),
    ],
    ids=["nan", "too_short", "likelihood", "max_iter", "channels", "no_inputs"],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(
    tmp_path, capsys, rows, flags, pattern
):
    from sysid_msstcn import cli

    data = tmp_path / "rec.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    model = tmp_path / "model.safetensors"
    argv = ["fit", data, *CLI_TINY, *flags, "--output", model]
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith("sysid-msstcn: error: ")
    assert re.search(pattern, err[0]), err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.csv"]
