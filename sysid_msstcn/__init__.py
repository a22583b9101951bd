"""MS-STCN for system identification: a multiscale stochastic TCN estimator."""

from __future__ import annotations

__version__ = "0.1.0"

from .estimator import MSSTCNRegressor

__all__ = ["MSSTCNRegressor", "__version__"]
