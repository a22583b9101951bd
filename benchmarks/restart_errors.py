"""Free-run error from fresh starts: does a model's correction hold anywhere?

A test record is simulated from its first ``n_init`` outputs, so a model
must simulate well from a fresh start. A residual model on a nominal
model's run (:class:`~sysid_msstcn.hybrid.LinearResidualRegressor`) may
instead learn the nominal model's error as it grows along its one training
run from the record's start; restarted elsewhere, the nominal run is young
and the learnt correction no longer fits it. This script measures that: it
cuts the benchmark's training and test records into windows of
``--horizon`` samples at ``--starts`` evenly spaced points (the first at
the record's start), simulates every window from its first ``n_init``
measured outputs, and reports the RMSE after the warm-up of each window in
the benchmark's units, for every model in the file (each member of an
ensemble) and, for a hybrid, its nominal model alone (``linear_simulation``).

Usage::

    python benchmarks/restart_errors.py MODEL.joblib --dataset emps \\
        --output benchmarks/results/restart_errors_<tag>.json

``MODEL.joblib`` is a model pickled by ``run_nonlinear.py --save-models``.
"""

from __future__ import annotations

import argparse
import datetime
import json
from functools import partial
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


def window_starts(length: int, horizon: int, n_starts: int) -> list[int]:
    """``n_starts`` evenly spaced starts of ``horizon``-sample windows, from 0."""
    if horizon > length:
        raise ValueError(f"horizon={horizon} is longer than the record ({length})")
    last = length - horizon
    return sorted({int(round(s)) for s in np.linspace(0, last, n_starts)})


def window_errors(simulate, u, y, starts, horizon, n_init, scale) -> list[float]:
    """RMSE after the warm-up of each window's free run, in reporting units."""
    out = []
    for s in starts:
        uw, yw = u[s : s + horizon], y[s : s + horizon]  # (horizon, .)
        pred = np.asarray(simulate(uw, yw[:n_init]), dtype=float).reshape(yw.shape)
        out.append(scale * float(np.mean(rmse(yw[n_init:], pred[n_init:]))))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a model pickled by run_nonlinear.py --save-models")
    p.add_argument("--dataset", default="emps")
    p.add_argument("--horizon", type=int, default=2000, help="samples per window")
    p.add_argument("--starts", type=int, default=8, help="windows per record")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    set_cpu_threads(args.threads)
    model = joblib.load(args.model)
    members = (
        list(zip(model.seeds_, model.estimators_, strict=True))
        if isinstance(model, EnsembleRegressor)
        else [(None, model)]
    )
    train, test = load_benchmark(args.dataset, data_dir=args.data_dir)
    n_init = int(test[0].attrs.get("n_init", 0))
    scale = float(test[0].attrs.get("report_scale", 1.0))
    records = []
    for split, dss in (("train", train), ("test", test)):
        for k, ds in enumerate(dss):
            u, y = io_arrays(ds)
            y = y.reshape(len(y), -1)
            starts = window_starts(len(y), args.horizon, args.starts)
            # errors(simulate): one RMSE per window of this record
            errors = partial(
                window_errors,
                u=u,
                y=y,
                starts=starts,
                horizon=args.horizon,
                n_init=n_init,
                scale=scale,
            )

            rows = [{"seed": seed, "rmse": errors(m.predict)} for seed, m in members]
            hybrid = members[0][1]
            nominal = None
            if isinstance(hybrid, LinearResidualRegressor):
                nominal = errors(hybrid.linear_simulation)
            records.append(
                {
                    "split": split,
                    "record": k,
                    "starts": starts,
                    "models": rows,
                    "nominal_rmse": nominal,
                }
            )
            for row in rows:
                print(split, k, row["seed"], np.round(row["rmse"], 3), flush=True)
            if nominal is not None:
                print(split, k, "nominal", np.round(nominal, 3), flush=True)
    out = {
        "model_file": Path(args.model).name,
        "dataset": args.dataset,
        "horizon": args.horizon,
        "n_init": n_init,
        "report_scale": scale,
        "records": records,
        "commit": git_commit(),
        "hardware": hardware_info("cpu"),
        "date": datetime.date.today().isoformat(),
    }
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
