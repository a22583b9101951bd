"""MS-STCN against NARX baselines on the nonlinear system-identification benchmarks.

For each benchmark every model is fitted on the official training split and
simulates each test split from u and y[:n_init]; the test RMSE is reported
in the benchmark's units together with fit %, training time and hardware.
One JSON file per dataset goes to ``--output-dir`` (default
``benchmarks/results``), ``nonlinear_<dataset>[_<tag>][_seed<N>].json`` (the
seed suffix for seeds other than 0, so that reruns with other seeds sit
beside the first one; ``seed_statistics.py`` summarises them), with plots in
its ``plots/`` folder (measured vs simulated with the MS-STCN 90% band,
error spectrum; same suffix) and a Markdown table beside the published
figures.

Usage::

    python benchmarks/run_nonlinear.py --budget small
    python benchmarks/run_nonlinear.py --datasets cascaded_tanks ced --budget tiny
    python benchmarks/run_nonlinear.py --datasets emps --threads 1 &  # runs side
    python benchmarks/run_nonlinear.py --datasets ced --threads 1 &   # by side
    sysid-msstcn benchmark cascaded_tanks --budget small   # one dataset
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import joblib
import numpy as np

from sysid_msstcn._utils import set_cpu_threads
from sysid_msstcn.benchmarking import BUDGETS, run_benchmark

DATASETS = ("silverbox", "wiener_hammerstein", "emps", "cascaded_tanks", "ced")


def _plots(res: dict, out: Path, suffix: str) -> list[str]:
    from sysid_msstcn.data import io_arrays
    from sysid_msstcn.plotting import plot_error, plot_simulation, save_figure

    files = []
    est = next(iter(res["models"].values()))  # MS-STCN (or on the ARX residual)
    for k, ds in enumerate(res["test_records"]):
        u, y = io_arrays(ds)
        n = int(ds.attrs["n_init"])
        name = ds.attrs["name"]
        preds = {
            m: np.asarray(p[k]).reshape(y.shape)
            for m, p in res["predictions"].items()
            if np.all(np.isfinite(p[k]))  # diverged simulations are not drawn
        }
        lo, hi = est.predict_interval(
            u, y_init=y[:n], coverage=0.9, n_samples=20, random_state=0
        )
        fig = plot_simulation(
            y,
            preds,
            lower=np.asarray(lo).reshape(y.shape),
            upper=np.asarray(hi).reshape(y.shape),
            n_init=n,
            sampling_time=float(ds.attrs["sampling_time"]),
            title=f"{res['benchmark']} {name}",
            max_points=3000,
        )
        path = out / "plots" / f"{res['benchmark']}_{name}_simulation{suffix}.png"
        save_figure(fig, path)
        files.append(str(path))
        fig = plot_error(
            y,
            preds,
            n_init=n,
            sampling_time=float(ds.attrs["sampling_time"]),
            title=f"{res['benchmark']} {name}: simulation error",
        )
        path = out / "plots" / f"{res['benchmark']}_{name}_error{suffix}.png"
        save_figure(fig, path)
        files.append(str(path))
    return files


def markdown_table(results: list[dict]) -> str:
    """Markdown table of all datasets: ours, baselines, published, target."""
    lines = [
        "| benchmark | test set | model | RMSE | unit | fit % | train s "
        "| 90% coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["results"]:
            cov = r.get("coverage_90")
            if r.get("diverged"):
                lines.append(
                    f"| {res['benchmark']} | {r['test_set']} | {_label(r)} | "
                    f"diverged | {r['units']} | | {r['train_seconds']:.0f} | |"
                )
                continue
            lines.append(
                f"| {res['benchmark']} | {r['test_set']} | {_label(r)} | "
                f"{r['rmse']:.4g} | {r['units']} | {r['fit_percent']:.1f} | "
                f"{r['train_seconds']:.0f} | "
                f"{'' if cov is None else f'{cov:.2f}'} |"
            )
    lines += ["", "Published (same splits and units; see docs/benchmarks.rst):", ""]
    lines += ["| benchmark | test set | method | RMSE |", "|---|---|---|---|"]
    for res in results:
        for test, methods in res["published"].items():
            for method, value in methods.items():
                lines.append(f"| {res['benchmark']} | {test} | {method} | {value} |")
    return "\n".join(lines) + "\n"


def _as_dict(budget: str | dict) -> dict:
    return dict(BUDGETS[budget]) if isinstance(budget, str) else dict(budget)


def _label(row: dict) -> str:
    k = row.get("ensemble")
    if k and row.get("ensemble_of"):
        rule = "greedy" if row.get("selection") == "greedy" else "best"
        return f"{row['model']} ({rule} {k} of {row['ensemble_of']})"
    return f"{row['model']} (ensemble of {k})" if k else row["model"]


def main(argv=None) -> int:
    """Run the suite; returns 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS)
    )
    p.add_argument("--budget", default="small", choices=list(BUDGETS))
    p.add_argument(
        "--params",
        default=None,
        help="JSON of MS-STCN estimator parameters overriding the budget",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--n-samples",
        type=int,
        default=20,
        help="Monte Carlo trajectories for coverage/CRPS",
    )
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output-dir", default="benchmarks/results")
    p.add_argument("--tag", default="", help="suffix of the result file names")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument(
        "--ensemble",
        type=int,
        default=0,
        metavar="K",
        help="make each MS-STCN model an ensemble of K members (seeds seed, "
        "seed + 1, ...); the results also give every member's test RMSE",
    )
    p.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        help="ensemble members fitted at once, in separate processes",
    )
    p.add_argument(
        "--keep-best",
        type=int,
        default=None,
        metavar="K",
        help="with --ensemble: predict with the K members whose free runs of "
        "the training records are best (no test data in the choice)",
    )
    p.add_argument(
        "--selection",
        choices=("best", "greedy"),
        default=None,
        help="with --ensemble: how members are kept; 'greedy' adds members "
        "while the mean of their training free runs improves (at most "
        "--keep-best of them)",
    )
    p.add_argument(
        "--save-models",
        action="store_true",
        help="also pickle every fitted model (joblib) to OUTPUT_DIR/models/, "
        "for later study without refitting (not for the results folder)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of PyTorch and of numpy's BLAS (default: theirs, one "
        "per core; give 1 to each of several runs sharing a machine)",
    )
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads must be >= 1, got {args.threads}")
        set_cpu_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    budget: str | dict = args.budget
    if args.params:
        budget = {**BUDGETS[args.budget], **json.loads(args.params)}
    if args.ensemble:
        budget = {**_as_dict(budget), "ensemble": {"n_members": args.ensemble}}
        if args.n_jobs is not None:
            budget["ensemble"]["n_jobs"] = args.n_jobs
        if args.keep_best is not None:
            budget["ensemble"]["keep_best"] = args.keep_best
        if args.selection is not None:
            budget["ensemble"]["selection"] = args.selection
    elif args.keep_best is not None or args.selection is not None:
        p.error("--keep-best and --selection need --ensemble")
    # a rerun with another seed never overwrites the seed-0 files
    suffix = (f"_{args.tag}" if args.tag else "") + (
        f"_seed{args.seed}" if args.seed else ""
    )
    all_results = []
    for name in args.datasets:
        res = run_benchmark(
            name,
            budget=budget,
            data_dir=args.data_dir,
            random_state=args.seed,
            device=args.device,
            n_samples=args.n_samples,
            baselines=not args.no_baselines,
            keep_predictions=not args.no_plots or args.save_models,
        )
        res["budget_name"] = args.budget
        if not args.no_plots:
            res["plots"] = _plots(res, out, suffix)
        if args.save_models:
            (out / "models").mkdir(exist_ok=True)
            for label, model in res["models"].items():
                slug = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")
                joblib.dump(model, out / "models" / f"{name}_{slug}{suffix}.joblib")
        for key in ("predictions", "models", "test_records"):
            res.pop(key, None)
        (out / f"nonlinear_{name}{suffix}.json").write_text(json.dumps(res, indent=2))
        for r in res["results"]:
            if r.get("diverged"):
                print(f"{name:20s} {r['test_set']:28s} {r['model']:16s} diverged")
                continue
            print(
                f"{name:20s} {r['test_set']:28s} {r['model']:16s} "
                f"RMSE {r['rmse']:.4g} {r['units']}  fit {r['fit_percent']:.1f}%"
                + (
                    f"  members {[round(v, 4) for v in r['member_rmse'] if v]}"
                    if r.get("ensemble")
                    else ""
                ),
                flush=True,
            )
        all_results.append(res)
    (out / f"nonlinear_table{suffix}.md").write_text(markdown_table(all_results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
