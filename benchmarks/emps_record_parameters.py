"""The EMPS drive's physical parameters, estimated from each record on its own.

Every model fitted on the EMPS training record errs on the test record in
proportion to the position (``residual_analysis.py``). This script asks the
data directly whether the drive behaved differently in the two experiments.
It fits the rigid-body inverse dynamics of the EMPS benchmark's reference
model (Janot et al.), ``u = M a + Fv v + Fc sign(v) + c``, by least squares
on each record, with velocity ``v`` and acceleration ``a`` from central
differences of the position low-pass filtered forward and backward
(Butterworth, order 4), and on each half and third of each record as a
measure of how much the estimates move within one experiment. ``u`` is the
motor force input ``vir`` filtered the same way; ``M`` is the inertia over
the force gain (the benchmark's ``gtau``), so only ratios are identified.

Usage::

    python benchmarks/emps_record_parameters.py \\
        --output benchmarks/results/emps_record_parameters.json
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np
from scipy.signal import butter, filtfilt

from sysid_msstcn._benchmark_eval import hardware_info
from sysid_msstcn._provenance import git_commit
from sysid_msstcn.benchmarking import load_benchmark
from sysid_msstcn.data.benchmarks import io_arrays

NAMES = ("M", "Fv", "Fc", "offset")


def fit_inverse_dynamics(
    u: np.ndarray, q: np.ndarray, ts: float, cutoff: float, edge: int = 200
) -> dict[str, np.ndarray]:
    """Least-squares ``u = M a + Fv v + Fc sign(v) + c`` on one record.

    Parameters
    ----------
    u, q : ndarray of shape (T,)
        Force input and position.
    ts : float
        Sampling time (s).
    cutoff : float
        Low-pass cut-off (Hz) applied to ``q`` and ``u`` before differencing.
    edge : int, default=200
        Samples dropped at both ends (filter and difference transients).

    Returns
    -------
    dict
        ``"theta"``: ``(M, Fv, Fc, c)``; ``"regressors"`` ``(T - 2 edge, 4)``
        and ``"target"`` ``(T - 2 edge,)``, for fits on parts of the record.
    """
    b, a = butter(4, 2.0 * cutoff * ts)
    qf, uf = filtfilt(b, a, q), filtfilt(b, a, u)
    v = np.gradient(qf, ts)
    acc = np.gradient(v, ts)
    keep = slice(edge, len(q) - edge)
    design = np.column_stack([acc, v, np.sign(v), np.ones_like(v)])[keep]  # (T', 4)
    theta, *_ = np.linalg.lstsq(design, uf[keep], rcond=None)
    return {"theta": theta, "regressors": design, "target": uf[keep]}


def parts(fit: dict[str, np.ndarray], n_parts: int) -> list[list[float]]:
    """The same fit on ``n_parts`` consecutive parts of the record."""
    out = []
    for idx in np.array_split(np.arange(len(fit["target"])), n_parts):
        theta, *_ = np.linalg.lstsq(
            fit["regressors"][idx], fit["target"][idx], rcond=None
        )
        out.append(theta.tolist())
    return out


def main(argv: list[str] | None = None) -> int:
    """Fit each EMPS record; returns 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cutoffs", type=float, nargs="+", default=[10.0, 20.0, 40.0])
    p.add_argument("--output", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    train, test = load_benchmark("emps", data_dir=args.data_dir)
    records = {"train": train[0], "test": test[0]}
    fits: dict = {}
    for cutoff in args.cutoffs:
        per = {}
        for name, ds in records.items():
            u, y = io_arrays(ds)
            ts = float(ds.attrs.get("sampling_time", 1e-3))
            fit = fit_inverse_dynamics(u[:, 0], y[:, 0], ts, cutoff)
            per[name] = {
                "theta": dict(zip(NAMES, fit["theta"].tolist(), strict=True)),
                "halves": parts(fit, 2),
                "thirds": parts(fit, 3),
            }
        change = {
            k: per["test"]["theta"][k] / per["train"]["theta"][k] - 1.0 for k in NAMES
        }
        fits[f"{cutoff:g} Hz"] = {**per, "relative_change_test_vs_train": change}
        print(
            f"{cutoff:g} Hz: "
            + ", ".join(f"{k} {100 * v:+.1f} %" for k, v in change.items())
        )
    out = {
        "benchmark": "emps",
        "description": "inverse-dynamics parameters u = M a + Fv v + Fc sign(v) "
        "+ offset, fitted on each record, its halves and its thirds "
        "(emps_record_parameters.py)",
        "parameters": list(NAMES),
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "hardware": hardware_info("cpu"),
        "fits": fits,
    }
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
