"""ARX/NARX and SUBNET baselines with the estimator protocol of MS-STCN.

Every class is a scikit-learn regressor with the same protocol as
``MSSTCNRegressor``:

* ``fit(X, y)``: ``X`` of shape ``(T, n_u)`` (inputs) and ``y`` of shape
  ``(T,)`` or ``(T, n_y)``; lists of experiments are accepted. Inputs and
  outputs are standardised internally (``normalize=True``).
* ``predict(X, y_init=None)``: **free-run simulation** from the inputs alone.
  ``y_init`` holds the first ``n`` measured outputs (``n >= n_init_``), which
  are returned unchanged at the head of the output; the model is simulated
  from sample ``n`` on. Without ``y_init`` the first ``n_init_`` outputs are
  set to the training mean of ``y``.
* ``score(X, y)``: R² (averaged over channels) of the free-run simulation over
  ``y[n_init_:]`` with ``y[:n_init_]`` as the warm-up.
* ``n_init_`` is the largest lag of the model.

All input conversion goes through
:func:`sysid_msstcn.data._validation.as_experiments`.

``GreyBoxRegressor`` fits the physical parameters of a ``GreyBoxModel``
(``CascadedTanks``, ``EMPSDrive`` and the block structure
``WienerHammerstein`` for three of the benchmarks) by simulation error and
estimates the initial state from the warm-up.

``SubnetRegressor`` wraps deepSI's SUBNET, which is installed separately
(``pip install --no-deps "deepsi==0.4.4" cloudpickle``; see the README): deepSI
0.4.4 pins ``nonlinear_benchmarks<0.2`` while this package needs ``>=1.0.1``,
so no extra can depend on it.
"""

from __future__ import annotations

from .arx import ARXRegressor
from .greybox import CascadedTanks, EMPSDrive, GreyBoxModel, GreyBoxRegressor
from .narx import MLPNARXRegressor, PolynomialNARXRegressor
from .subnet import SubnetRegressor, deepsi_available
from .wiener_hammerstein import WienerHammerstein

__all__ = [
    "ARXRegressor",
    "CascadedTanks",
    "EMPSDrive",
    "GreyBoxModel",
    "GreyBoxRegressor",
    "MLPNARXRegressor",
    "PolynomialNARXRegressor",
    "SubnetRegressor",
    "WienerHammerstein",
    "deepsi_available",
]
