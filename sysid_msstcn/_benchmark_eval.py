"""Scores of the benchmark protocol: test records, training records, validation.

Free-run simulation of records from u and the first ``n_init`` measured
outputs, scored in the benchmark's reporting units; the validation score that
early stopping kept; the machine facts recorded with every result.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from .data.benchmarks import io_arrays
from .estimator import MSSTCNRegressor
from .metrics import crps_ensemble, fit_index, interval_coverage, nrmse, r2, rmse

__all__ = [
    "evaluate_records",
    "hardware_info",
    "record_rmse",
    "training_rmse",
    "validation_rmse",
]


def record_rmse(record, prediction) -> float | None:
    """Test RMSE of a simulated record in the benchmark's reporting units.

    Parameters
    ----------
    record : xarray.Dataset
        A test record of the data adapters (attrs ``n_init`` and
        ``report_scale``).
    prediction : array-like
        Its simulated outputs (original units), any shape with the
        record's number of values.

    Returns
    -------
    float or None
        The RMSE after ``n_init`` (averaged over output channels), None
        for a prediction that is not finite.
    """
    y = io_arrays(record)[1]
    p = np.asarray(prediction, dtype=float).reshape(y.shape)
    if not np.all(np.isfinite(p)):
        return None
    n = int(record.attrs.get("n_init", 0))
    scale = float(record.attrs.get("report_scale", 1.0))
    return float(scale * rmse(y, p, n_init=n, multioutput="uniform_average"))


def evaluate_records(model, records, *, n_samples: int = 0, random_state: int = 0):
    """Simulate every test record from u and y[:n_init]; compute the metrics.

    Parameters
    ----------
    model : fitted estimator with ``predict(X, y_init)``
    records : list of xarray.Dataset
        Test records of the data adapters (attrs ``n_init``,
        ``report_scale``, ``report_units``, ``name``).
    n_samples : int, default=0
        Monte Carlo trajectories for probabilistic metrics (MS-STCN only;
        0 skips them).
    random_state : int, default=0

    Returns
    -------
    rows : list of dict
        One per record: ``test_set``, ``rmse`` (reporting units), ``units``,
        ``nrmse``, ``fit_percent``, ``r2``, ``simulate_seconds`` and, with
        samples, ``coverage_90``, ``crps`` and ``rmse_mc_mean`` (the RMSE of
        the mean of the Monte Carlo trajectories, sampled latents and
        outputs fed back; reporting units).
    predictions : list of ndarray
        Simulated outputs per record (original units).
    """
    rows, preds = [], []
    for ds in records:
        u, y = io_arrays(ds)
        n = int(ds.attrs.get("n_init", 0))
        scale = float(ds.attrs.get("report_scale", 1.0))
        t0 = time.perf_counter()
        p = np.asarray(model.predict(u, y_init=y[:n])).reshape(y.shape)
        if not np.all(np.isfinite(p)):  # a diverged simulation is a result too
            rows.append(
                {
                    "test_set": ds.attrs.get("name", "test"),
                    "n_samples": int(y.shape[0]),
                    "n_init": n,
                    "rmse": None,
                    "units": ds.attrs.get("report_units", ""),
                    "diverged": True,
                    "simulate_seconds": time.perf_counter() - t0,
                }
            )
            preds.append(np.where(np.isfinite(p), p, np.nan))
            continue
        row = {
            "test_set": ds.attrs.get("name", "test"),
            "n_samples": int(y.shape[0]),
            "n_init": n,
            "rmse": record_rmse(ds, p),
            "units": ds.attrs.get("report_units", ""),
            "nrmse": float(nrmse(y, p, n_init=n, multioutput="uniform_average")),
            "fit_percent": float(
                fit_index(y, p, n_init=n, multioutput="uniform_average")
            ),
            "r2": float(r2(y, p, n_init=n, multioutput="uniform_average")),
            "simulate_seconds": time.perf_counter() - t0,
        }
        if n_samples and hasattr(model, "simulate"):
            sims = np.asarray(
                model.simulate(
                    u, y_init=y[:n], n_samples=n_samples, random_state=random_state
                )
            ).reshape((n_samples, *y.shape))
            lo, hi = np.quantile(sims, [0.05, 0.95], axis=0)
            row["coverage_90"] = float(
                interval_coverage(y, lo, hi, n_init=n, multioutput="uniform_average")
            )
            row["crps"] = float(
                scale * crps_ensemble(y, sims, n_init=n, multioutput="uniform_average")
            )
            # Sampled latents and outputs against the deterministic run above.
            row["rmse_mc_mean"] = float(
                scale
                * rmse(y, sims.mean(axis=0), n_init=n, multioutput="uniform_average")
            )
            row["mc_samples"] = n_samples
        rows.append(row)
        preds.append(p)
    return rows, preds


def hardware_info(device: str | None = None) -> dict:
    """Machine facts recorded with every result."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device or "cpu",
    }
    if device and str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def validation_rmse(model: MSSTCNRegressor) -> float | None:
    """Free-run RMSE of the kept epoch on the validation tails, output units.

    The score early stopping selected the weights by
    (``early_stopping_metric="simulation"``), converted from normalised to
    output units (for several outputs, with the root mean square of their
    scales). None when it was not recorded (no validation tail, or the ELBO
    as the metric).

    Parameters
    ----------
    model : MSSTCNRegressor
        A fitted estimator.

    Returns
    -------
    float or None
    """
    for row in model.history_:
        if row.get("epoch") == model.best_epoch_ and "val_sim_rmse" in row:
            scale = np.asarray(model.y_scaler_.scale_) if model.normalize else 1.0
            return float(row["val_sim_rmse"] * np.sqrt(np.mean(np.square(scale))))
    return None


def training_rmse(model, records, *, n_init: int, report_scale: float) -> float | None:
    """Free-run RMSE of a fitted model on its training records, reporting units.

    Each training record is simulated like a test record, from u and its
    first ``n_init`` measured outputs, and the errors after ``n_init`` of all
    records are pooled (the root of the mean square over their samples and
    output channels). It uses no test data, so it may rank seeds or variants
    where the validation tails are short.

    Parameters
    ----------
    model : fitted estimator with ``predict(X, y_init)``
    records : list of xarray.Dataset
        Training records of the data adapters.
    n_init : int
        Warm-up samples, usually the benchmark's test ``n_init``.
    report_scale : float
        Factor from output units to the benchmark's reporting units.

    Returns
    -------
    float or None
        None when a simulation diverges (non-finite outputs).
    """
    measured, simulated = [], []
    for ds in records:
        u, y = io_arrays(ds)
        p = np.asarray(model.predict(u, y_init=y[:n_init])).reshape(y.shape)
        if not np.all(np.isfinite(p)):
            return None
        measured.append(y[n_init:])
        simulated.append(p[n_init:])
    per_channel = rmse(np.concatenate(measured), np.concatenate(simulated))
    return float(report_scale * np.sqrt(np.mean(np.square(per_channel))))
