"""Fitting and evaluating models on records; their plots."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ._common import _MODELS, _NETWORKS, UsageError, _say
from ._data import Data, _fit_args, _io
from ._params import _make_estimator


def evaluate_io(model, records, *, n_samples: int = 0, seed: int = 0, label: str = ""):
    """Simulate each record from u and y[:n_init]; return rows and predictions.

    The warm-up is the record's ``n_init`` (the benchmark protocol), or the
    model's own ``n_init_`` for records without one. With ``n_samples`` > 0
    a model with ``simulate`` also gets a 90% Monte Carlo interval, its
    coverage and the ensemble CRPS.
    """
    from .. import metrics

    rows, preds = [], []
    for rec in records:
        u, y, n0 = _io(rec)
        n0 = n0 or int(getattr(model, "n_init_", 0))
        if n0 >= y.shape[0] - 1:
            raise UsageError(
                f"record {rec.attrs.get('name', '')!r} ({y.shape[0]} samples) is "
                f"not longer than its warm-up ({n0} samples)"
            )
        t0 = time.perf_counter()
        p = np.asarray(model.predict(u, y_init=y[:n0])).reshape(y.shape)
        scale = float(rec.attrs.get("report_scale", 1.0))
        row = {
            "model": label,
            "test_set": rec.attrs.get("name", ""),
            "n_init": n0,
            "rmse": scale * float(np.mean(metrics.rmse(y, p, n_init=n0))),
            "units": rec.attrs.get("report_units", ""),
            "nrmse": float(np.mean(metrics.nrmse(y, p, n_init=n0))),
            "fit_percent": float(np.mean(metrics.fit_index(y, p, n_init=n0))),
            "r2": float(np.mean(metrics.r2(y, p, n_init=n0))),
            "simulate_seconds": time.perf_counter() - t0,
        }
        band = None
        if n_samples and hasattr(model, "simulate"):
            sims = model.simulate(u, y[:n0], n_samples=n_samples, random_state=seed)
            sims = np.asarray(sims).reshape((n_samples, *y.shape))
            band = tuple(np.quantile(sims, [0.05, 0.95], axis=0))
            cover = metrics.interval_coverage(y, *band, n_init=n0)
            row["coverage_90"] = float(np.mean(cover))
            crps = metrics.crps_ensemble(y, sims, n_init=n0)
            row["crps"] = scale * float(np.mean(crps))
        rows.append(row)
        preds.append((p, band))
    return rows, preds


def residual_tests(
    model: Any,
    records: list,
    preds: list,
    rows: list[dict],
    max_lag: int,
    folder: Path | None = None,
) -> None:
    """Add the residual correlation tests of each record to its row.

    ``input_corr_outside``: the largest share, over input and output
    channels, of the lags ``-max_lag..max_lag`` whose cross-correlation of
    the free-run error with the input lies outside its 99 % bound (about 1 %
    when the input explains nothing of the error; feedback shows at negative
    lags). ``ljung_box_p``: the smallest Ljung-Box p-value over the outputs
    of the free-run error (near 0 for any slow system). For a model with
    ``predict_ahead`` (MS-STCN), ``ljung_box_p_one_step``: the same for its
    one-step-ahead errors, the proper whiteness test (a good model passes).
    With ``folder``, one ``residuals[_i].png`` per record (the free run).

    Parameters
    ----------
    model : estimator
        The evaluated model (for its one-step-ahead prediction).
    records : list of xarray.Dataset
        The evaluated records.
    preds : list of (ndarray, band)
        Their free runs, as :func:`evaluate_io` returns them.
    rows : list of dict
        Its rows; the test figures are added in place.
    max_lag : int
        Largest lag tested.
    folder : Path or None
        Where to write the figures.
    """
    from .. import plotting
    from ..residuals import residual_analysis

    for i, (rec, (p, _), row) in enumerate(zip(records, preds, rows, strict=True)):
        u, y, _ = _io(rec)
        res = residual_analysis(
            y, p, u=u if u.shape[1] else None, n_init=row["n_init"], max_lag=max_lag
        )
        row["ljung_box_p"] = float(res.ljung_box_pvalue.min())
        cross = res.fraction_outside()["cross_correlation"]
        row["input_corr_outside"] = float(cross.max()) if cross.size else None
        if hasattr(model, "predict_ahead"):
            ahead = np.asarray(model.predict_ahead(u, y, steps=1)).reshape(y.shape)
            one = residual_analysis(y, ahead, n_init=row["n_init"], max_lag=max_lag)
            row["ljung_box_p_one_step"] = float(one.ljung_box_pvalue.min())
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            suffix = "" if len(records) == 1 else f"_{i}"
            title = f"{rec.attrs.get('name', '')}: free-run residual"
            fig = plotting.plot_residual_analysis(res, title=title)
            plotting.save_figure(fig, folder / f"residuals{suffix}.png")


def _baseline(name: str, data: Data, budget: float, seed: int):
    """One baseline, with the benchmark suite's orders for named benchmarks.

    Other data get the demo's orders (chosen for the simulated system).
    """
    from ..baselines import ARXRegressor, MLPNARXRegressor, PolynomialNARXRegressor
    from ..data import BENCHMARKS

    if name == "greybox":
        from ..benchmarking import greybox_model

        try:
            return greybox_model(data.name, random_state=seed)
        except ValueError as exc:
            raise UsageError(f"greybox: {exc}") from None
    if data.name in BENCHMARKS:
        from ..benchmarking import default_models

        models = default_models(data.name, "tiny", random_state=seed, device="cpu")
        return models[_MODELS[name]]
    if name == "arx":
        return ARXRegressor(na=8, nb=8)
    if name == "narx":
        return PolynomialNARXRegressor(degree=3, ylag=4, xlag=4)
    iters = max(20, int(300 * min(budget, 1.0)))
    return MLPNARXRegressor((32,), na=6, nb=6, max_iter=iters, random_state=seed)


def _parse_models(text: str) -> list[str]:
    models = [m.strip().lower() for m in text.split(",") if m.strip()]
    bad = [m for m in models if m not in _MODELS]
    if bad or not models:
        raise UsageError(
            f"unknown model(s) {', '.join(bad) or '(none)'}; "
            f"choose from {', '.join(_MODELS)}"
        )
    return models


def _compare(data: Data, models, est_params: dict, args, *, budget: float = 1.0):
    """Fit each model on the training records and simulate the test records."""
    from sklearn.exceptions import ConvergenceWarning as SklearnConvergence

    from ..exceptions import ConvergenceWarning

    rows, fitted, preds = [], {}, {}
    for key in models:
        if key == "msstcn":
            model = _make_estimator(est_params)
        elif key in ("msstcn+arx", "msstcn+greybox"):
            from ..hybrid import LinearResidualRegressor

            nominal = _baseline(key.split("+")[1], data, budget, args.seed)
            model = LinearResidualRegressor(_make_estimator(est_params), nominal)
        else:
            model = _baseline(key, data, budget, args.seed)
        _say(f"fitting {_MODELS[key]} ...", args.quiet)
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", SklearnConvergence)
            model.fit(*_fit_args(data))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        n_mc = args.mc_samples if key in _NETWORKS else 0
        r, p = evaluate_io(
            model, data.test, n_samples=n_mc, seed=args.seed, label=_MODELS[key]
        )
        rows += [{**row, "fit_seconds": seconds, "fit_cpu_seconds": cpu} for row in r]
        fitted[key], preds[key] = model, p
    return rows, fitted, preds


def _plot_records(records, preds: dict, folder: Path, history=None) -> list[str]:
    """Simulation and error figures per record (and learning curves)."""
    from .. import plotting

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, rec in enumerate(records):
        _, y, _ = _io(rec)
        sims = {name: p[i][0] for name, p in preds.items()}
        main_name = "MS-STCN" if "MS-STCN" in preds else next(iter(preds))
        _, band, n0 = preds[main_name][i]
        lo, hi = band if band is not None else (None, None)
        ts = float(rec.attrs.get("sampling_time", 1.0))
        suffix = "" if len(records) == 1 else f"_{i}"
        first = {main_name: sims[main_name]}
        figs = {
            f"simulation{suffix}.png": plotting.plot_simulation(
                y,
                first,
                lower=lo,
                upper=hi,
                n_init=n0,
                sampling_time=ts,
                title=f"{rec.attrs.get('name', '')}: measured vs simulated",
            ),
            f"error{suffix}.png": plotting.plot_error(
                y,
                sims,
                n_init=n0,
                sampling_time=ts,
                title="Simulation error and its spectrum",
            ),
        }
        if len(sims) > 1:
            figs[f"comparison{suffix}.png"] = plotting.plot_simulation(
                y,
                sims,
                n_init=n0,
                sampling_time=ts,
                max_points=400,
                title="All models (first 400 samples)",
            )
        for name, fig in figs.items():
            plotting.save_figure(fig, folder / name)
            names.append(name)
    if history:
        fig = plotting.plot_learning_curves(history, title="MS-STCN training")
        plotting.save_figure(fig, folder / "learning_curves.png")
        names.append("learning_curves.png")
    return names


def _by_label(preds: dict, rows: list[dict]) -> dict:
    """Predictions keyed by display name: (prediction, band, warm-up) per record."""
    out = {}
    for key, entries in preds.items():
        n0 = [r["n_init"] for r in rows if r["model"] == _MODELS[key]]
        out[_MODELS[key]] = [(p, b, n) for (p, b), n in zip(entries, n0, strict=True)]
    return out
