"""Errors and warnings raised by :mod:`sysid_msstcn`.

Every class subclasses a built-in so that callers can catch the usual
``ValueError`` or ``RuntimeWarning`` without importing this module.
"""

from __future__ import annotations

__all__ = [
    "ConvergenceWarning",
    "DataFormatError",
    "DivergenceWarning",
    "NotFittedError",
    "ShapeError",
    "UnsafeFileError",
]


class ShapeError(ValueError):
    """An array has the wrong number of dimensions, channels or samples."""


class DataFormatError(ValueError):
    """A file or record is malformed, truncated or of an unknown format."""


class UnsafeFileError(ValueError):
    """A file would need unsafe operations (pickle, XML entities) to load."""


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted estimator was called before ``fit``."""


class ConvergenceWarning(UserWarning):
    """Training stopped at ``max_iter`` before the early-stopping criterion."""


class DivergenceWarning(RuntimeWarning):
    """Training met non-finite losses or gradients and rolled back."""
