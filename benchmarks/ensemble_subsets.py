"""Every subset of a fitted ensemble: how far can member selection go?

An ensemble run of the suite (``run_nonlinear.py --ensemble K
--save-models``) pickles its fitted :class:`~sysid_msstcn.EnsembleRegressor`.
This script simulates every member once on the benchmark's training and
test records (from u and the first ``n_init`` outputs, as the suite does)
and scores the mean of every non-empty subset of members on both. It
reports:

- the rank correlation (Spearman) over all subsets between the training
  free-run RMSE of a subset's mean and its test RMSE: whether the training
  records can tell good means from bad ones at all;
- the test RMSE of the subsets chosen from the training records alone: the
  ensemble's own selection (``selected_``), the best single member, every
  member, and the subset whose mean simulates the training records best
  (exhaustive search, no test data);
- the best and median test RMSE over the subsets of each size, and the
  best subset overall. These use the test data to choose and are a bound
  on what any selection rule can reach with these members, not a result.

Usage::

    python benchmarks/ensemble_subsets.py MODEL.joblib --dataset emps \\
        --output benchmarks/results/ensemble_subsets_<tag>.json

At most 12 members (4,095 subsets).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
from pathlib import Path

import joblib
import numpy as np
from scipy.stats import spearmanr

from sysid_msstcn._benchmark_eval import hardware_info
from sysid_msstcn._provenance import git_commit
from sysid_msstcn._utils import set_cpu_threads
from sysid_msstcn.benchmarking import load_benchmark
from sysid_msstcn.data.benchmarks import io_arrays
from sysid_msstcn.ensemble import EnsembleRegressor
from sysid_msstcn.metrics import rmse

MAX_MEMBERS = 12


def member_runs(ens: EnsembleRegressor, records: list, n_init: int) -> list:
    """Per record: (measured y, one free run per member), original units."""
    out = []
    for ds in records:
        u, y = io_arrays(ds)
        runs = [
            np.asarray(m.predict(u, y_init=y[:n_init]), dtype=float).reshape(y.shape)
            for m in ens.estimators_
        ]
        out.append((y, runs))
    return out


def subset_rmse(runs: list, subset: tuple, n_init: int, scale: float) -> float:
    """RMSE of the mean run of ``subset``, errors of all records pooled."""
    measured = np.concatenate([y[n_init:] for y, _ in runs])
    mean = np.concatenate(
        [np.mean([ps[i] for i in subset], axis=0)[n_init:] for _, ps in runs]
    )
    if not np.all(np.isfinite(mean)):
        return float("inf")
    per_channel = rmse(measured, mean)
    return float(scale * np.sqrt(np.mean(np.square(per_channel))))


def analyse(ens: EnsembleRegressor, train: list, test: list) -> dict:
    """Training and test RMSE of every subset's mean, and the choices."""
    n = len(ens.estimators_)
    if n > MAX_MEMBERS:
        raise ValueError(f"at most {MAX_MEMBERS} members, the ensemble has {n}")
    n_init = int(test[0].attrs.get("n_init", 0))
    scale = float(test[0].attrs.get("report_scale", 1.0))
    tr = member_runs(ens, train, n_init)
    subsets = [s for k in range(1, n + 1) for s in itertools.combinations(range(n), k)]
    train_rmse = np.array([subset_rmse(tr, s, n_init, scale) for s in subsets])
    seeds = list(ens.seeds_)

    def named(s: tuple) -> list[int]:
        return [seeds[i] for i in s]

    out: dict = {
        "n_members": n,
        "seeds": seeds,
        "n_init": n_init,
        "units": test[0].attrs.get("report_units", ""),
        "n_subsets": len(subsets),
        "test_sets": {},
    }
    by_train = subsets[int(np.argmin(train_rmse))]
    single = min(range(n), key=lambda i: train_rmse[subsets.index((i,))])
    chosen = {
        "ensemble_selection": tuple(ens.selected_),
        "best_member_by_training": (single,),
        "all_members": tuple(range(n)),
        "best_subset_by_training": by_train,
    }
    for ds in test:
        te = member_runs(ens, [ds], n_init)
        test_rmse = np.array([subset_rmse(te, s, n_init, scale) for s in subsets])
        finite = np.isfinite(train_rmse) & np.isfinite(test_rmse)
        rho = spearmanr(train_rmse[finite], test_rmse[finite]).statistic
        entry = {
            "spearman_train_vs_test": float(rho),
            "chosen_without_test_data": {
                name: {
                    "seeds": named(s),
                    "train_rmse": float(train_rmse[subsets.index(s)]),
                    "test_rmse": float(test_rmse[subsets.index(s)]),
                }
                for name, s in chosen.items()
            },
            "bound_chosen_on_test_data": {
                "best_subset": {
                    "seeds": named(subsets[int(np.argmin(test_rmse))]),
                    "train_rmse": float(train_rmse[int(np.argmin(test_rmse))]),
                    "test_rmse": float(test_rmse.min()),
                },
                "by_size": {
                    str(k): {
                        "best": float(test_rmse[idx].min()),
                        "median": float(np.median(test_rmse[idx])),
                    }
                    for k in range(1, n + 1)
                    for idx in [[j for j, s in enumerate(subsets) if len(s) == k]]
                },
            },
        }
        out["test_sets"][str(ds.attrs.get("name", "test"))] = entry
    return out


def main(argv=None) -> int:
    """Analyse a pickled ensemble; returns 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="joblib pickle of a fitted EnsembleRegressor")
    p.add_argument("--dataset", required=True, help="benchmark name, e.g. emps")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", required=True, help="JSON file to write")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    set_cpu_threads(args.threads)
    ens = joblib.load(args.model)
    if not isinstance(ens, EnsembleRegressor):
        p.error(f"{args.model} holds a {type(ens).__name__}, not an EnsembleRegressor")
    train, test = load_benchmark(args.dataset, data_dir=args.data_dir)
    res = {
        "benchmark": args.dataset,
        "description": "test and training RMSE of the mean of every subset of "
        "an ensemble's members (ensemble_subsets.py)",
        "model_file": Path(args.model).name,
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "hardware": hardware_info("cpu"),
    }
    res.update(analyse(ens, train, test))
    Path(args.output).write_text(json.dumps(res, indent=2) + "\n")
    for name, e in res["test_sets"].items():
        c = e["chosen_without_test_data"]
        b = e["bound_chosen_on_test_data"]["best_subset"]
        print(
            f"{name}: rho {e['spearman_train_vs_test']:.2f}; "
            + "; ".join(f"{k} {v['seeds']} {v['test_rmse']:.4g}" for k, v in c.items())
            + f"; best subset on the test {b['seeds']} {b['test_rmse']:.4g}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
