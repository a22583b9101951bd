"""Convert and validate time-series inputs (numpy, pandas and xarray only).

This module is the single conversion layer used by the estimator, the metrics
and the baselines. It turns every accepted input form into per-experiment
float arrays with the time axis first, and raises one clear error per problem.

Accepted forms of ``X`` (inputs ``u``) and ``y`` (outputs):

* numpy arrays: ``X`` of shape ``(T, n_u)`` or ``(T,)`` (one input channel),
  ``y`` of shape ``(T, n_y)`` or ``(T,)``;
* nested Python lists of numbers (converted with :func:`numpy.asarray`, as
  scikit-learn does);
* a list or tuple of arrays (several experiments, lengths may differ, channel
  counts must agree): a list is read as a list of experiments when its first
  element is an array-like object (numpy, pandas, xarray), otherwise it is one
  array;
* :class:`pandas.DataFrame` / :class:`pandas.Series` (rows are time steps; the
  index is ignored);
* :class:`xarray.DataArray` (the ``"time"`` dimension, if present, is moved
  first);
* :class:`xarray.Dataset` with data variables ``u`` (dims ``("time",
  "u_channel")``) and ``y`` (dims ``("time", "y_channel")``) and attributes
  such as ``n_init``, ``sampling_time``, ``benchmark``, ``split``; it is passed
  as ``X`` with ``y=None``. A list of such datasets works too. Objects with
  ``u`` and ``y`` attributes (``nonlinear_benchmarks.Input_output_data``) are
  read the same way.

Integer, boolean, float16 and float32 data are converted to ``dtype``
(float64 by default). Object arrays are accepted only when every element is a
number. Complex numbers, strings, dates, NaN and infinity are rejected, and so
are masked arrays with masked entries (missing data) and values that overflow
``dtype`` (a float64 beyond the float32 range with ``dtype=np.float32``, a
Python int beyond the float64 range).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from sysid_msstcn.exceptions import ShapeError

__all__ = [
    "DataTypeError",
    "ExperimentData",
    "as_experiments",
    "check_consistent_channels",
]

_ARRAY_TYPES = (np.ndarray, pd.DataFrame, pd.Series, xr.DataArray, xr.Dataset)


class DataTypeError(ValueError, TypeError):
    """Data of a non-numeric or complex type (both ValueError and TypeError).

    It subclasses :class:`TypeError` as well so that scikit-learn's
    ``check_dtype_object`` (which expects a ``TypeError``) is satisfied.
    """


@dataclass(frozen=True)
class ExperimentData:
    """Validated experiments, time axis first.

    Unpacks like the tuple ``(u, y, y_1d)``::

        u, y, y_1d = as_experiments(X, y)

    Attributes
    ----------
    u : list of ndarray of shape (T_i, n_u) or None
        Inputs per experiment; ``None`` entries when ``X`` is None.
    y : list of ndarray of shape (T_i, n_y) or None
        Outputs per experiment; ``None`` entries when no outputs were given.
    y_1d : bool
        Whether every given ``y`` was one-dimensional ``(T,)``.
    is_list : bool
        Whether the data were given as a list of experiments (so results
        should be returned as a list as well).
    attrs : list of dict
        Metadata per experiment (attributes of xarray objects, the warm-up
        length of ``Input_output_data`` as ``n_init``); empty dicts otherwise.
    input_names, output_names : tuple of str or None
        Channel names from DataFrame columns or xarray channel coordinates.
    """

    u: list[np.ndarray | None]
    y: list[np.ndarray | None]
    y_1d: bool
    is_list: bool = False
    attrs: list[dict[str, Any]] = field(default_factory=list)
    input_names: tuple[str, ...] | None = None
    output_names: tuple[str, ...] | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.u, self.y, self.y_1d))

    @property
    def n_experiments(self) -> int:
        """Number of experiments."""
        return len(self.u)

    @property
    def lengths(self) -> list[int]:
        """Number of time steps of each experiment (of ``u``, else ``y``)."""
        return [
            (u if u is not None else y).shape[0]  # type: ignore[union-attr]
            for u, y in zip(self.u, self.y, strict=True)
        ]

    @property
    def n_inputs(self) -> int | None:
        """Number of input channels (None when ``X`` was None)."""
        return None if self.u[0] is None else self.u[0].shape[1]

    @property
    def n_outputs(self) -> int | None:
        """Number of output channels (None when no ``y`` was given)."""
        return None if self.y[0] is None else self.y[0].shape[1]


def _is_container(obj: Any) -> bool:
    """Whether ``obj`` holds both u and y (xarray Dataset or Input_output_data)."""
    if isinstance(obj, xr.Dataset):
        return True
    return (
        not isinstance(obj, _ARRAY_TYPES)
        and hasattr(obj, "u")
        and hasattr(obj, "y")
        and hasattr(obj, "sampling_time")
    )


def _split_experiments(obj: Any) -> tuple[list[Any], bool]:
    """Return the list of per-experiment objects and whether it was a list."""
    if isinstance(obj, (list, tuple)):
        if len(obj) == 0:
            raise ShapeError("empty list of experiments: at least one is needed")
        first = obj[0]
        if isinstance(first, _ARRAY_TYPES) or _is_container(first):
            return list(obj), True
        return [obj], False
    return [obj], False


def _names(values: Any) -> tuple[str, ...] | None:
    names = tuple(str(v) for v in values)
    return names if names else None


def _from_dataframe(df: pd.DataFrame, name: str) -> tuple[np.ndarray, Any]:
    for col in df.columns:
        dt = df[col].dtype
        if not (pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt)):
            raise DataTypeError(
                f"{name} column {col!r} has non-numeric dtype {dt}; "
                "only numeric (int, float, bool) data are accepted"
            )
        if pd.api.types.is_complex_dtype(dt):
            raise DataTypeError(
                f"{name} column {col!r} holds complex numbers; "
                "Complex data not supported"
            )
    return df.to_numpy(dtype=np.float64, na_value=np.nan), _names(df.columns)


def _raw_array(obj: Any, name: str) -> tuple[Any, Any]:
    """Turn one experiment's array-like into a numpy array and channel names."""
    if isinstance(obj, pd.DataFrame):
        return _from_dataframe(obj, name)
    if isinstance(obj, pd.Series):
        return _from_dataframe(obj.to_frame(), name)[0][:, 0], None
    if isinstance(obj, xr.DataArray):
        if "time" in obj.dims:
            obj = obj.transpose("time", ...)
        names = None
        if obj.ndim == 2 and obj.dims[1] in obj.coords:
            names = _names(obj.coords[obj.dims[1]].values)
        return obj.values, names
    if isinstance(obj, np.ma.MaskedArray):
        n_masked = int(np.ma.count_masked(obj))
        if n_masked:
            raise ValueError(
                f"{name} is a masked array with {n_masked} masked value(s): missing "
                "data are not supported; fill or drop them first"
            )
        return np.ma.getdata(obj), None
    if type(obj).__module__.startswith("scipy.sparse"):
        raise DataTypeError(
            f"{name} is a sparse {type(obj).__name__}: sparse input is not "
            "supported; convert it with .toarray()"
        )
    try:
        return np.asarray(obj), None
    except (TypeError, ValueError) as exc:  # ragged nested lists and the like
        raise DataTypeError(f"{name} cannot be converted to an array: {exc}") from exc


def _to_float(arr: Any, name: str, dtype: Any) -> np.ndarray:
    """Check the dtype of ``arr`` and convert it to ``dtype``."""
    kind = arr.dtype.kind
    if kind == "c":
        raise DataTypeError(f"{name} holds complex numbers; Complex data not supported")
    if kind in "USMmV":
        raise DataTypeError(
            f"{name} has non-numeric dtype {arr.dtype}; "
            "only numeric (int, float, bool) data are accepted"
        )
    if kind == "O":
        for value in arr.flat:
            if isinstance(value, (str, bytes)):
                raise DataTypeError(
                    f"{name} has dtype object and contains the string {value!r}; "
                    "only numeric data are accepted"
                )
            if isinstance(value, complex):
                raise DataTypeError(
                    f"{name} holds complex numbers; Complex data not supported"
                )
        try:
            return arr.astype(dtype)
        except OverflowError as exc:
            raise ValueError(
                f"{name} holds a number too large for {np.dtype(dtype).name} "
                f"(overflow: {exc})"
            ) from exc
        except (TypeError, ValueError) as exc:
            raise DataTypeError(
                f"{name} has dtype object with non-numeric elements: {exc}"
            ) from exc
    with np.errstate(over="ignore"):
        out = np.asarray(arr, dtype=dtype)
    narrowed = out.dtype.kind == "f" and out.dtype.itemsize < arr.dtype.itemsize
    if kind == "f" and narrowed:
        overflow = np.isinf(out) & np.isfinite(arr)
        if overflow.any():
            idx = np.unravel_index(int(np.argmax(overflow)), arr.shape)
            raise ValueError(
                f"{name} holds values too large for {out.dtype.name} (overflow to "
                f"inf); the first is {float(arr[idx])!r} at index "
                f"{tuple(int(k) for k in idx)}"
            )
    return out


def _check_finite(arr: np.ndarray, name: str) -> None:
    finite = np.isfinite(arr)
    if finite.all():
        return
    flat = int(np.argmin(finite.reshape(-1)))
    t, c = divmod(flat, arr.shape[1])
    value = arr[t, c]
    what = "NaN" if np.isnan(value) else "inf (infinity)"
    n_bad = int(finite.size - np.count_nonzero(finite))
    raise ValueError(
        f"{name} contains {what}: first non-finite value at time index {t}, "
        f"channel {c} ({n_bad} non-finite value(s) in total)"
    )


def _convert(obj: Any, name: str, dtype: Any) -> tuple[Any, ...]:
    """Validate one array; return (2-D array, was_1d, channel names)."""
    raw, names = _raw_array(obj, name)
    arr = _to_float(raw, name, dtype)
    if arr.ndim == 0:
        raise ShapeError(
            f"{name} is a scalar (0-D); expected shape (T,) or (T, n_channels)"
        )
    if arr.ndim > 2:
        raise ShapeError(
            f"{name} is {arr.ndim}-D with shape {arr.shape}; expected (T,) or "
            "(T, n_channels). Pass several experiments as a list of 2-D arrays"
        )
    was_1d = arr.ndim == 1
    if was_1d:
        arr = arr[:, None]
    if arr.shape[0] == 0:
        raise ShapeError(
            f"{name} is empty: 0 time steps (shape {arr.shape}); "
            "0 sample(s) while a minimum of 1 is required"
        )
    if arr.shape[1] == 0:
        raise ShapeError(
            f"{name} is empty: 0 feature(s) (shape={arr.shape}) while a minimum "
            "of 1 is required (0 channels)"
        )
    _check_finite(arr, name)
    return arr, was_1d, names


def _unpack_container(obj: Any, idx: str) -> tuple[Any, Any, dict[str, Any]]:
    """Return (u, y, attrs) of an xarray Dataset or Input_output_data."""
    if isinstance(obj, xr.Dataset):
        attrs = dict(obj.attrs)
        parts = []
        for var, chan in (("u", "u_channel"), ("y", "y_channel")):
            if var not in obj.data_vars:
                parts.append(None)
                continue
            da = obj[var]
            unknown = set(da.dims) - {"time", chan}
            if "time" not in da.dims or unknown:
                raise ShapeError(
                    f"Dataset{idx} variable {var!r} has dims {da.dims}; "
                    f"expected ('time', '{chan}') or ('time',)"
                )
            parts.append(da)
        if parts[0] is None and parts[1] is None:
            raise ValueError(
                f"Dataset{idx} has neither a 'u' nor a 'y' data variable; "
                f"found {sorted(map(str, obj.data_vars))}"
            )
        return parts[0], parts[1], attrs
    attrs = {"sampling_time": getattr(obj, "sampling_time", None)}
    n_init = getattr(obj, "state_initialization_window_length", None)
    if n_init is not None:
        attrs["n_init"] = int(n_init)
    if getattr(obj, "name", None) is not None:
        attrs["name"] = obj.name
    return obj.u, obj.y, attrs


def _count(items: list[Any], is_list: bool) -> str:
    return f"a list of {len(items)} experiment(s)" if is_list else "a single array"


def _consistent_names(names: list[Any]) -> tuple[str, ...] | None:
    return names[0] if names and all(n == names[0] for n in names) else None


def as_experiments(
    X: Any,
    y: Any = None,
    *,
    allow_no_input: bool = True,
    min_length: int = 1,
    min_length_reason: str | None = None,
    y_prefix: bool = False,
    dtype: Any = np.float64,
    x_name: str = "X",
    y_name: str = "y",
) -> ExperimentData:
    """Validate inputs and outputs and split them into experiments.

    Parameters
    ----------
    X : array-like, DataFrame, DataArray, Dataset, list of those, or None
        Inputs ``u``: ``(T, n_u)`` or ``(T,)`` per experiment. An xarray
        Dataset (or a list of them) carries both ``u`` and ``y``; ``y`` must
        then be None. None means output-only data (see ``allow_no_input``).
    y : array-like, DataFrame, Series, DataArray, list of those, or None
        Outputs: ``(T, n_y)`` or ``(T,)`` per experiment. If ``X`` is a list,
        ``y`` must be a list of the same number of experiments.
    allow_no_input : bool, default=True
        Whether ``X=None`` is accepted.
    min_length : int, default=1
        Minimum number of time steps of every experiment.
    min_length_reason : str or None, default=None
        Appended to the error message for records shorter than ``min_length``,
        e.g. ``"shorter than the receptive field of the model"``.
    y_prefix : bool, default=False
        If True, ``y`` holds only the first rows of each experiment (a warm-up
        window ``y_init``) and may be shorter than ``X`` but not longer.
    dtype : numpy dtype, default=np.float64
        Floating dtype of the returned arrays (integers, booleans and other
        floats are converted to it).
    x_name, y_name : str, default="X", "y"
        Names of the two arguments used in error messages.

    Returns
    -------
    data : ExperimentData
        Per-experiment arrays (time axis first, always 2-D), ``y_1d``,
        ``is_list`` and metadata. Unpacks as ``u, y, y_1d``. Arrays may share
        memory with the given data when no conversion was needed.

    Raises
    ------
    ShapeError
        Wrong number of dimensions, empty arrays, mismatched lengths or
        channel counts, records shorter than ``min_length``.
    DataTypeError
        Strings, objects that are not numbers, complex numbers, dates.
    ValueError
        NaN or infinity, missing data (also masked entries of a masked
        array), values that overflow ``dtype``, inconsistent arguments.
    """
    if X is None and y is None:
        raise ValueError(f"{x_name} and {y_name} are both None; no data were given")
    if X is None and not allow_no_input:
        raise ValueError(f"{x_name} is None, but inputs are required here")
    x_items, x_list = _split_experiments(X) if X is not None else ([None], False)
    y_items, y_list = _split_experiments(y) if y is not None else ([None], False)
    attrs: list[dict[str, Any]] = [{} for _ in x_items]
    if X is not None and any(_is_container(item) for item in x_items):
        if y is not None:
            raise ValueError(
                f"{y_name} must be None when {x_name} is an xarray Dataset (or an "
                "Input_output_data) that already holds the outputs"
            )
        y_items = []
        for i, item in enumerate(x_items):
            if not _is_container(item):
                raise ValueError(
                    f"experiment {i} of {x_name} is a {type(item).__name__} but "
                    "another is a Dataset; do not mix the two forms"
                )
            tag = f" {i}" if x_list else ""
            x_items[i], y_i, attrs[i] = _unpack_container(item, tag)
            y_items.append(y_i)
    elif X is None:
        x_items, x_list = [None] * len(y_items), y_list
        attrs = [{} for _ in y_items]
    elif y is None:
        y_items = [None] * len(x_items)
    elif x_list != y_list:
        raise ShapeError(
            f"{x_name} is {_count(x_items, x_list)} but {y_name} is "
            f"{_count(y_items, y_list)}; give both as lists of the same length "
            "or both as single arrays"
        )
    if len(x_items) != len(y_items):
        raise ShapeError(
            f"{x_name} has {len(x_items)} experiments but {y_name} has "
            f"{len(y_items)}; they must match"
        )
    many = len(x_items) > 1 or x_list
    us: list[np.ndarray | None] = []
    ys: list[np.ndarray | None] = []
    y_flags: list[bool] = []
    u_names: list[Any] = []
    y_names: list[Any] = []
    for i, (x_i, y_i) in enumerate(zip(x_items, y_items, strict=True)):
        where = f" of experiment {i}" if many else ""
        u_arr = y_arr = None
        if x_i is not None:
            u_arr, _, names = _convert(x_i, f"{x_name}{where}", dtype)
            u_names.append(names)
        elif X is not None and not allow_no_input:
            raise ValueError(f"{x_name}{where} has no inputs ('u' is missing)")
        if y_i is not None:
            y_arr, flag, names = _convert(y_i, f"{y_name}{where}", dtype)
            y_flags.append(flag)
            y_names.append(names)
        if u_arr is not None and y_arr is not None:
            n_u, n_y = u_arr.shape[0], y_arr.shape[0]
            if (n_y > n_u) if y_prefix else (n_y != n_u):
                rel = "at most as many" if y_prefix else "the same number of"
                raise ShapeError(
                    f"{x_name} and {y_name}{where} have different lengths: "
                    f"{n_u} vs {n_y} time steps; they need {rel} time steps"
                )
        length = (u_arr if u_arr is not None else y_arr).shape[0]  # type: ignore
        if length < min_length:
            reason = f": {min_length_reason}" if min_length_reason else ""
            raise ShapeError(
                f"experiment {i} has {length} sample(s), fewer than "
                f"min_length={min_length}{reason}"
            )
        us.append(u_arr)
        ys.append(y_arr)
    _check_channels(us, x_name)
    _check_channels(ys, y_name)
    return ExperimentData(
        u=us,
        y=ys,
        y_1d=bool(y_flags) and all(y_flags),
        is_list=bool(x_list),
        attrs=attrs,
        input_names=_consistent_names(u_names),
        output_names=_consistent_names(y_names),
    )


def _check_channels(arrays: Sequence[np.ndarray | None], name: str) -> None:
    present = [(i, a.shape[1]) for i, a in enumerate(arrays) if a is not None]
    if present and len(present) != len(arrays):
        missing = next(i for i, a in enumerate(arrays) if a is None)
        raise ValueError(f"{name} is missing for experiment {missing} only")
    for i, n in present[1:]:
        if n != present[0][1]:
            raise ShapeError(
                f"experiment {i} of {name} has {n} channel(s) but experiment 0 "
                f"has {present[0][1]}; all experiments need the same channels"
            )


def check_consistent_channels(
    experiments: ExperimentData,
    n_features_expected: int | None,
    n_outputs_expected: int | None = None,
    *,
    estimator_name: str = "estimator",
) -> None:
    """Check predict-time channel counts against those seen in ``fit``.

    Parameters
    ----------
    experiments : ExperimentData
        Output of :func:`as_experiments`.
    n_features_expected : int or None
        Number of input channels at fit time (None: fitted without inputs).
    n_outputs_expected : int or None, default=None
        Number of output channels at fit time; checked only when
        ``experiments`` holds outputs (e.g. ``y_init``). None skips the check.
    estimator_name : str, default="estimator"
        Name used in the messages (one word, scikit-learn style).

    Raises
    ------
    ShapeError
        When a channel count differs, or inputs are given to a model fitted
        without them (or the reverse).
    """
    n_in = experiments.n_inputs
    if n_features_expected is None and n_in is not None:
        raise ShapeError(
            f"X has {n_in} input channels but {estimator_name} was fitted "
            "without inputs (X=None); pass X=None"
        )
    if n_features_expected is not None and n_in is None:
        raise ShapeError(
            f"X is None but {estimator_name} was fitted with "
            f"{n_features_expected} input channels"
        )
    if n_in is not None and n_in != n_features_expected:
        hint = ""
        if n_in == 1:
            hint = ". Reshape your data: a 1-D X is read as one input channel"
        raise ShapeError(
            f"X has {n_in} features, but {estimator_name} is expecting "
            f"{n_features_expected} features as input (X has {n_in} input "
            f"channels but the estimator was fitted with {n_features_expected})" + hint
        )
    n_out = experiments.n_outputs
    if n_outputs_expected is not None and n_out is not None:
        if n_out != n_outputs_expected:
            raise ShapeError(
                f"y has {n_out} output channels but the estimator was fitted "
                f"with {n_outputs_expected}"
            )
