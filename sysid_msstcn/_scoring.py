"""The ``score`` of the composite simulation models (hybrid, ensemble)."""

from __future__ import annotations

from typing import Any

from sklearn.utils.validation import check_is_fitted

from . import metrics
from .data._validation import as_experiments


def free_run_r2(est: Any, fitted: str, X: Any, y: Any, sample_weight: Any) -> float:
    """R² of ``est``'s free run after its warm-up of ``n_init_`` samples.

    Parameters
    ----------
    est : estimator
        A model with ``predict(X, y_init)`` and ``n_init_``.
    fitted : str
        The attribute that marks ``est`` as fitted.
    X, y : array-like or lists of those
        Inputs and measured outputs; ``y[:n_init_]`` is the warm-up.
    sample_weight : None
        Not supported (must be None).

    Returns
    -------
    float
        R² over ``y[n_init_:]``, averaged over output channels.
    """
    if sample_weight is not None:
        raise ValueError("sample_weight is not supported")
    check_is_fitted(est, fitted)
    data = as_experiments(X, y, allow_no_input=False)
    n0 = est.n_init_
    y_pred = est.predict(data.u, [v[:n0] for v in data.y])
    return float(metrics.r2(data.y, y_pred, n_init=n0, multioutput="uniform_average"))
