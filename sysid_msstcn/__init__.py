"""MS-STCN for system identification: a multiscale stochastic TCN estimator."""

from __future__ import annotations

__version__ = "0.1.0"

from .ensemble import EnsembleRegressor
from .estimator import MSSTCNRegressor

__all__ = [
    "EnsembleRegressor",
    "LinearResidualRegressor",
    "MSSTCNRegressor",
    "__version__",
]


def __getattr__(name: str):
    # imported on first use: the hybrid pulls in the baselines (python-control)
    if name == "LinearResidualRegressor":
        from .hybrid import LinearResidualRegressor

        return LinearResidualRegressor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
