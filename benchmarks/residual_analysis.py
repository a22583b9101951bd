"""Residual correlation tests of a saved model on a benchmark's records.

Simulates the model (and each member of an ensemble, and a hybrid's nominal
model alone) on the benchmark's training and test records from u and the
first ``n_init`` outputs, as the suite does, and runs
:func:`sysid_msstcn.residuals.residual_analysis` on each free-run error: the
residual's autocorrelation (Ljung-Box) and its cross-correlation with the
input (bound allowing for coloured signals), optionally Billings and Voon's
tests with the squared input. It also regresses the error on the measured
output (``e = a + b * y``): a slope or offset that the test record shows
and the training record does not, for every model, points to a difference
between the records that a model fitted on the training record cannot
learn.

Billings and Voon's tests (``--nonlinear``) are meant for one-step errors;
on free runs they mostly repeat what the error's slowness already says.

Usage::

    python benchmarks/residual_analysis.py MODEL.joblib --dataset emps \\
        --output benchmarks/results/residual_analysis_<tag>.json \\
        [--plot benchmarks/results/plots/residual_analysis_<tag>.png]

``MODEL.joblib`` is a model pickled by ``run_nonlinear.py --save-models``.
Per model and record the file holds the RMSE, the Ljung-Box p-values, the
share of lags outside the bounds, the largest cross-correlation with past
inputs and the output-level fit; ``--correlations`` adds the model's
correlations at every lag.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import joblib
import numpy as np

from sysid_msstcn._benchmark_eval import hardware_info
from sysid_msstcn._provenance import git_commit
from sysid_msstcn._utils import set_cpu_threads
from sysid_msstcn.benchmarking import load_benchmark
from sysid_msstcn.data.benchmarks import io_arrays
from sysid_msstcn.ensemble import EnsembleRegressor
from sysid_msstcn.hybrid import LinearResidualRegressor
from sysid_msstcn.metrics import rmse
from sysid_msstcn.plotting import plot_residual_analysis, save_figure
from sysid_msstcn.residuals import residual_analysis


def output_level(y: np.ndarray, pred: np.ndarray, scale: float) -> dict:
    """Least-squares ``e = a + b * y`` per record (first output), reporting units.

    Here ``e`` is simulated minus measured (the residual tests use measured
    minus simulated): a positive slope means the simulation overshoots the
    measured output where it is high.
    """
    e, x = scale * (pred[:, 0] - y[:, 0]), scale * y[:, 0]
    design = np.column_stack([np.ones_like(x), x])  # (T, 2)
    coef, *_ = np.linalg.lstsq(design, e, rcond=None)
    rest = e - design @ coef
    return {
        "intercept": float(coef[0]),
        "slope": float(coef[1]),
        "rmse": float(np.sqrt(np.mean(e**2))),
        "rmse_without_the_fit": float(np.sqrt(np.mean(rest**2))),
        "min_error": float(e.min()),
        "max_error": float(e.max()),
    }


def analyse(
    simulate, records: list, n_init: int, scale: float, max_lag: int, nonlinear: bool
) -> tuple[dict, dict]:
    """Per record: RMSE, the correlation tests and the output-level fit."""
    out, results = {}, {}
    for name, ds in records:
        u, y = io_arrays(ds)
        pred = np.asarray(simulate(u, y[:n_init]), dtype=float).reshape(y.shape)
        res = residual_analysis(
            y, pred, u=u, n_init=n_init, max_lag=max_lag, nonlinear=nonlinear
        )
        summary = res.to_dict()
        positive = res.cross_lags > 0
        peak = np.abs(res.cross_correlation[positive]).max(axis=0)  # (n_u, n_y)
        out[name] = {
            "rmse": scale * float(np.mean(rmse(y[n_init:], pred[n_init:]))),
            **{
                k: summary[k]
                for k in (
                    "mean",
                    "ljung_box_pvalue",
                    "cross_correlation_bound",
                    "nonlinear_bound",
                    "fraction_outside",
                    "fraction_outside_past",
                )
            },
            "max_abs_cross_correlation_past_inputs": peak.tolist(),
            "output_level": output_level(y[n_init:], pred[n_init:], scale),
        }
        results[name] = res
    return out, results


def main(argv: list[str] | None = None) -> int:
    """Analyse a pickled model; returns 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a model pickled by run_nonlinear.py --save-models")
    p.add_argument("--dataset", default="emps")
    p.add_argument("--max-lag", type=int, default=25)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", required=True, help="JSON file to write")
    p.add_argument("--plot", default=None, help="PNG of the model's test analysis")
    p.add_argument(
        "--nonlinear",
        action="store_true",
        help="also Billings and Voon's tests with the squared input",
    )
    p.add_argument(
        "--correlations",
        action="store_true",
        help="also store the model's correlations at every lag (large files)",
    )
    args = p.parse_args(argv)
    set_cpu_threads(args.threads)
    model = joblib.load(args.model)
    train, test = load_benchmark(args.dataset, data_dir=args.data_dir)
    n_init = int(test[0].attrs.get("n_init", 0))
    scale = float(test[0].attrs.get("report_scale", 1.0))
    records = [(f"train_{i}", ds) for i, ds in enumerate(train)]
    records += [
        (str(ds.attrs.get("name", f"test_{i}")), ds) for i, ds in enumerate(test)
    ]

    candidates = [("model", model)]
    if isinstance(model, EnsembleRegressor):
        candidates += [
            (f"member_seed{s}", m)
            for s, m in zip(model.seeds_, model.estimators_, strict=True)
        ]
    hybrids = [m for _, m in candidates if isinstance(m, LinearResidualRegressor)]
    models = {}
    main_results = {}
    for label, m in candidates:
        models[label], res = analyse(
            m.predict, records, n_init, scale, args.max_lag, args.nonlinear
        )
        if label == "model":
            main_results = res
    if hybrids:
        models["nominal"], _ = analyse(
            hybrids[0].linear_simulation,
            records,
            n_init,
            scale,
            args.max_lag,
            args.nonlinear,
        )
    out = {
        "benchmark": args.dataset,
        "description": "residual correlation tests of free-run errors "
        "(residual_analysis.py)",
        "model_file": Path(args.model).name,
        "max_lag": args.max_lag,
        "nonlinear": args.nonlinear,
        "error_sign": "output_level: simulated - measured; the correlation "
        "tests and 'mean': measured - simulated",
        "confidence": 0.99,
        "n_init": n_init,
        "units": test[0].attrs.get("report_units", ""),
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "hardware": hardware_info("cpu"),
        "models": models,
    }
    if args.correlations:
        out["model_correlations"] = {k: r.to_dict() for k, r in main_results.items()}
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    if args.plot:
        name = records[-1][0]
        fig = plot_residual_analysis(
            main_results[name], title=f"{args.dataset}: free-run residual, {name}"
        )
        save_figure(fig, args.plot)
    for label, per in models.items():
        print(
            label,
            "; ".join(
                f"{rec}: {v['rmse']:.4g}, e = {v['output_level']['intercept']:.3g} "
                f"+ {v['output_level']['slope']:.3g} y"
                for rec, v in per.items()
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
