"""The conversion/validation layer accepts every documented form, rejects bad data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import sparse

from sysid_msstcn.data._validation import (
    DataTypeError,
    ExperimentData,
    as_experiments,
    check_consistent_channels,
)
from sysid_msstcn.exceptions import ShapeError

RNG = np.random.default_rng(0)
U2 = RNG.normal(size=(20, 2))
Y1 = RNG.normal(size=20)


def _dataset(T=20, n_u=2, n_y=1, **attrs):
    return xr.Dataset(
        {
            "u": (("time", "u_channel"), RNG.normal(size=(T, n_u))),
            "y": (("time", "y_channel"), RNG.normal(size=(T, n_y))),
        },
        coords={"u_channel": [f"u{i}" for i in range(n_u)]},
        attrs={"n_init": 5, "sampling_time": 0.1, "benchmark": "toy", "split": "train"}
        | attrs,
    )


# ---------------------------------------------------------------- accepted forms
def test_numpy_arrays_are_made_2d_time_first():
    data = as_experiments(U2, Y1)
    assert isinstance(data, ExperimentData)
    u, y, y_1d = data
    assert u[0].shape == (20, 2) and y[0].shape == (20, 1)
    assert y_1d and not data.is_list
    assert data.n_inputs == 2 and data.n_outputs == 1 and data.lengths == [20]
    np.testing.assert_array_equal(y[0][:, 0], Y1)


def test_one_dimensional_x_means_one_input():
    u, y, y_1d = as_experiments(np.arange(5.0), np.ones((5, 3)))
    assert u[0].shape == (5, 1) and y[0].shape == (5, 3) and not y_1d


def test_nested_lists_are_one_array():
    u, y, y_1d = as_experiments([[1, 2], [3, 4], [5, 6]], [1, 2, 3])
    assert u[0].shape == (3, 2) and y[0].shape == (3, 1) and y_1d


def test_list_of_experiments_with_different_lengths():
    X = [RNG.normal(size=(30, 2)), RNG.normal(size=(12, 2))]
    y = [RNG.normal(size=30), RNG.normal(size=12)]
    data = as_experiments(X, y)
    assert data.is_list and data.n_experiments == 2
    assert data.lengths == [30, 12]
    assert [a.shape for a in data.y] == [(30, 1), (12, 1)]


def test_tuple_of_experiments():
    data = as_experiments((U2, U2[:10]), (Y1, Y1[:10]))
    assert data.is_list and data.lengths == [20, 10]


def test_pandas_dataframe_and_series():
    df = pd.DataFrame(U2, columns=["force", "voltage"])
    data = as_experiments(df, pd.Series(Y1, name="pos"))
    assert data.input_names == ("force", "voltage")
    assert data.y_1d and data.y[0].shape == (20, 1)


def test_pandas_nullable_and_bool_columns_become_float():
    df = pd.DataFrame(
        {"a": pd.array([1, 2, 3], dtype="Int64"), "b": [True, False, True]}
    )
    u, _, _ = as_experiments(df, np.ones(3))
    assert u[0].dtype == np.float64
    np.testing.assert_array_equal(u[0], [[1, 1], [2, 0], [3, 1]])


def test_xarray_dataarray_time_moved_first():
    da = xr.DataArray(
        U2.T, dims=("u_channel", "time"), coords={"u_channel": ["a", "b"]}
    )
    u, _, _ = as_experiments(da, Y1)
    np.testing.assert_array_equal(u[0], U2)
    assert as_experiments(da, Y1).input_names == ("a", "b")


def test_xarray_dataset_holds_u_y_and_attrs():
    ds = _dataset()
    data = as_experiments(ds)
    assert data.u[0].shape == (20, 2) and data.y[0].shape == (20, 1)
    assert data.attrs[0]["n_init"] == 5 and data.attrs[0]["benchmark"] == "toy"
    assert data.input_names == ("u0", "u1")
    assert not data.y_1d and not data.is_list


def test_list_of_datasets():
    data = as_experiments([_dataset(T=20), _dataset(T=15, split="test")])
    assert data.is_list and data.lengths == [20, 15]
    assert data.attrs[1]["split"] == "test"


def test_dataset_without_y_is_predict_input():
    ds = _dataset().drop_vars("y")
    data = as_experiments(ds)
    assert data.y == [None] and data.n_outputs is None


def test_output_only_data():
    data = as_experiments(None, Y1)
    assert data.u == [None] and data.n_inputs is None and data.y_1d


def test_input_only_data_for_prediction():
    data = as_experiments(U2)
    assert data.y == [None] and not data.y_1d


def test_input_output_data_duck_type():
    class IOData:  # the attributes of nonlinear_benchmarks.Input_output_data
        u, y = np.arange(10.0), np.arange(10.0) ** 2
        sampling_time, name, state_initialization_window_length = 0.5, "t", 3

    data = as_experiments(IOData())
    assert data.attrs[0]["n_init"] == 3 and data.attrs[0]["sampling_time"] == 0.5
    assert data.u[0].shape == (10, 1) and data.y_1d


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.float32, bool])
def test_numeric_dtypes_converted_to_float64(dtype):
    u, y, _ = as_experiments(np.ones((4, 2), dtype=dtype), np.ones(4, dtype=dtype))
    assert u[0].dtype == np.float64 and y[0].dtype == np.float64


def test_dtype_argument_float32():
    u, _, _ = as_experiments(U2, Y1, dtype=np.float32)
    assert u[0].dtype == np.float32


def test_object_array_of_numbers_accepted():
    u, _, _ = as_experiments(U2.astype(object), Y1)
    np.testing.assert_array_equal(u[0], U2)


def test_y_prefix_allows_shorter_y_init():
    data = as_experiments(U2, Y1[:5], y_prefix=True)
    assert data.y[0].shape == (5, 1)


# ---------------------------------------------------------------- bad inputs
BAD_CASES = {
    "nan_in_y": (
        lambda: as_experiments(U2, np.r_[Y1[:7], np.nan, Y1[8:]]),
        ValueError,
        r"y contains NaN: first non-finite value at time index 7",
    ),
    "inf_in_x_second_experiment": (
        lambda: as_experiments(
            [U2, np.where(np.arange(20)[:, None] == 3, np.inf, U2)], [Y1, Y1]
        ),
        ValueError,
        r"X of experiment 1 contains inf.*time index 3",
    ),
    "empty_array": (
        lambda: as_experiments(np.zeros((0, 2)), np.zeros(0)),
        ShapeError,
        r"X is empty: 0 time steps",
    ),
    "zero_channels": (
        lambda: as_experiments(np.zeros((5, 0)), np.zeros(5)),
        ShapeError,
        r"0 feature\(s\)",
    ),
    "three_d_input": (
        lambda: as_experiments(np.zeros((4, 5, 2)), None),
        ShapeError,
        r"X is 3-D.*list of 2-D arrays",
    ),
    "scalar": (lambda: as_experiments(np.float64(3.0), None), ShapeError, r"scalar"),
    "length_mismatch": (
        lambda: as_experiments(U2, Y1[:-1]),
        ShapeError,
        r"different lengths: 20 vs 19",
    ),
    "y_init_longer_than_x": (
        lambda: as_experiments(U2[:5], Y1, y_prefix=True),
        ShapeError,
        r"at most as many",
    ),
    "channel_mismatch_between_experiments": (
        lambda: as_experiments([U2, U2[:, :1]], [Y1, Y1]),
        ShapeError,
        r"experiment 1 of X has 1 channel\(s\) but experiment 0 has 2",
    ),
    "output_channel_mismatch": (
        lambda: as_experiments([U2, U2], [Y1, np.ones((20, 2))]),
        ShapeError,
        r"experiment 1 of y has 2 channel",
    ),
    "strings": (
        lambda: as_experiments(np.array(["a", "b"]), None),
        DataTypeError,
        r"non-numeric dtype",
    ),
    "object_strings": (
        lambda: as_experiments(np.array([1.0, "x"], dtype=object)),
        DataTypeError,
        r"contains the string 'x'",
    ),
    "object_dict": (
        lambda: as_experiments(np.array([{"a": 1}, 1.0], dtype=object)),
        DataTypeError,
        r"argument must be a string or a real number",
    ),
    "complex": (
        lambda: as_experiments(U2 + 1j, Y1),
        DataTypeError,
        r"Complex data not supported",
    ),
    "dataframe_string_column": (
        lambda: as_experiments(pd.DataFrame({"a": ["x", "y"]}), None),
        DataTypeError,
        r"column 'a' has non-numeric dtype",
    ),
    "datetime": (
        lambda: as_experiments(np.array(["2020-01-01"], dtype="M8[D]")),
        DataTypeError,
        r"non-numeric dtype datetime64",
    ),
    "too_short": (
        lambda: as_experiments(
            U2[:3],
            Y1[:3],
            min_length=10,
            min_length_reason="shorter than the receptive field (10)",
        ),
        ShapeError,
        r"3 sample\(s\), fewer than min_length=10: shorter than the "
        r"receptive field",
    ),
    "both_none": (lambda: as_experiments(None, None), ValueError, r"both None"),
    "no_input_not_allowed": (
        lambda: as_experiments(None, Y1, allow_no_input=False),
        ValueError,
        r"X is None, but inputs are required",
    ),
    "list_vs_single": (
        lambda: as_experiments([U2, U2], Y1),
        ShapeError,
        r"a list of 2 experiment\(s\) but y is a single",
    ),
    "experiment_count": (
        lambda: as_experiments([U2, U2], [Y1]),
        ShapeError,
        r"X has 2 experiments but y has 1",
    ),
    "dataset_with_y": (
        lambda: as_experiments(_dataset(), Y1),
        ValueError,
        r"y must be None when X is an xarray Dataset",
    ),
    "dataset_bad_dims": (
        lambda: as_experiments(xr.Dataset({"u": (("t", "c"), U2), "y": (("t",), Y1)})),
        ShapeError,
        r"variable 'u' has dims \('t', 'c'\)",
    ),
    "dataset_empty": (
        lambda: as_experiments(xr.Dataset({"w": (("time",), Y1)})),
        ValueError,
        r"neither a 'u' nor a 'y'",
    ),
    "empty_list": (
        lambda: as_experiments([], None),
        ShapeError,
        r"empty list of experiments",
    ),
    "ragged_nested_list": (
        lambda: as_experiments([[1.0, 2.0], [3.0]], None),
        DataTypeError,
        r"cannot be converted",
    ),
    "sparse": (
        lambda: as_experiments(sparse.csr_matrix(U2), Y1),
        DataTypeError,
        r"sparse input is not supported",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_raises_named_error(case):
    func, error, pattern = BAD_CASES[case]
    with pytest.raises(error, match=pattern):
        func()


def test_all_errors_are_value_errors():
    for func, _, _ in BAD_CASES.values():
        with pytest.raises(ValueError):
            func()


def test_custom_names_in_messages():
    with pytest.raises(ShapeError, match="y_true and y_pred"):
        as_experiments(np.ones(3), np.ones(4), x_name="y_true", y_name="y_pred")


# ------------------------------------------------------------ predict-time checks
def test_check_consistent_channels_accepts_matching():
    check_consistent_channels(as_experiments(U2, Y1), 2, 1)
    check_consistent_channels(as_experiments(None, Y1), None, 1)


@pytest.mark.parametrize(
    "X, y, n_u, n_y, pattern",
    [
        (
            np.ones((5, 3)),
            None,
            2,
            1,
            r"X has 3 features, but Est is expecting 2 features as input \(X has 3 "
            r"input channels but the estimator was fitted with 2\)",
        ),
        (None, np.ones(5), 2, 1, r"X is None but Est was fitted with 2 input"),
        (np.ones(5), None, 2, 1, r"1 features.*Reshape your data"),
        (np.ones((5, 2)), None, None, 1, r"fitted without inputs"),
        (
            np.ones((5, 2)),
            np.ones((5, 3)),
            2,
            1,
            r"y has 3 output channels but the estimator was fitted with 1",
        ),
    ],
)
def test_check_consistent_channels_rejects(X, y, n_u, n_y, pattern):
    data = as_experiments(X, y)
    with pytest.raises(ShapeError, match=pattern):
        check_consistent_channels(data, n_u, n_y, estimator_name="Est")
