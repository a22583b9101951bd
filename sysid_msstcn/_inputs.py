"""What the estimator's ``X`` holds: experiments, feature names, outputs.

The containers are the ones :func:`sysid_msstcn.data._validation.as_experiments`
accepts (arrays, pandas and xarray objects, lists of them, u/y records); these
helpers only look at them and never convert.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "ARRAY_TYPES",
    "empty_columns",
    "feature_names",
    "has_uy",
    "holds_outputs",
    "ndim",
    "x_items",
]

ARRAY_TYPES = (np.ndarray, pd.DataFrame, pd.Series, xr.DataArray, xr.Dataset)


def x_items(X) -> list:
    """The experiments of ``X`` (the list rule of ``as_experiments``)."""
    if X is None:
        return []
    if isinstance(X, (list, tuple)):
        if X and (isinstance(X[0], ARRAY_TYPES) or has_uy(X[0])):
            return list(X)
    return [X]


def ndim(obj) -> int | None:
    """Number of dimensions of an array-like (None for u/y containers)."""
    if isinstance(obj, xr.Dataset) or has_uy(obj):
        return None
    if isinstance(obj, ARRAY_TYPES):
        return obj.ndim
    try:
        return np.ndim(obj)
    except (TypeError, ValueError):  # ragged lists: as_experiments reports them
        return None


def empty_columns(X) -> bool:
    """Whether every experiment of ``X`` is a 2-D array with no column."""
    items = x_items(X)
    return bool(items) and all(
        len(getattr(a, "shape", ())) == 2 and a.shape[1] == 0 for a in items
    )


def feature_names(X) -> np.ndarray | None:
    """Column names when every experiment is a DataFrame with string columns."""
    items = x_items(X)
    if not items or not all(isinstance(a, pd.DataFrame) for a in items):
        return None
    cols = [list(a.columns) for a in items]
    if not all(isinstance(c, str) for c in cols[0]) or any(c != cols[0] for c in cols):
        return None
    return np.asarray(cols[0], dtype=object)


def holds_outputs(X) -> bool:
    """Whether every experiment of ``X`` carries its own outputs (u/y records)."""
    items = x_items(X)
    return bool(items) and all(has_uy(i) for i in items)


def has_uy(obj) -> bool:
    """Whether ``obj`` is a u/y record (a Dataset with ``y``, or ``.u``/``.y``)."""
    if isinstance(obj, xr.Dataset):
        return "y" in obj.data_vars
    return hasattr(obj, "u") and hasattr(obj, "y") and not isinstance(obj, ARRAY_TYPES)
