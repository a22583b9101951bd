"""MS-STCN for system identification: a multiscale stochastic TCN estimator."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
