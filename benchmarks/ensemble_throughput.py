"""Wall time of fitting an ensemble with its members one at a time or in parallel.

Fits ``EnsembleRegressor(MSSTCNRegressor(preset, ...), n_members=K)`` on the
training split of a benchmark once for every ``--n-jobs`` value (None: the
members one after the other in this process; J: J worker processes at a
time) on one device, and records the wall time of each fit, its speed-up
over the serial fit, and whether the members came out the same (each
member's free run on the first test record against the serial fit's). On a
GPU the worker processes share the one device; on a CPU each gets its share
of the cores.

Usage::

    python benchmarks/ensemble_throughput.py --device cuda --n-jobs 1 2 4
    python benchmarks/ensemble_throughput.py --quick --output /tmp/e.json  # smoke test
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from sysid_msstcn import EnsembleRegressor, MSSTCNRegressor
from sysid_msstcn.benchmarking import hardware_info
from sysid_msstcn.data import io_arrays, load_benchmark

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; returns 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cascaded_tanks")
    p.add_argument("--preset", default="sysid_small")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument(
        "--n-jobs",
        nargs="+",
        type=int,
        default=[1, 2, 4],
        help="worker processes per fit; 1 fits in this process",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quick", action="store_true", help="tiny fits (smoke test)")
    p.add_argument(
        "--output", default=str(ROOT / "benchmarks/results/ensemble_throughput.json")
    )
    args = p.parse_args(argv)
    train, test = load_benchmark(args.dataset, data_dir=args.data_dir)
    u, y = io_arrays(train[0])
    ut, yt = io_arrays(test[0])
    n0 = int(test[0].attrs.get("n_init", 0))
    net = MSSTCNRegressor(
        preset=args.preset,
        max_iter=1 if args.quick else args.epochs,
        steps_per_epoch=2 if args.quick else args.steps_per_epoch,
        device=args.device,
        early_stopping=False,
    )
    runs, reference = [], None
    for n_jobs in args.n_jobs:
        ens = EnsembleRegressor(
            net,
            n_members=args.members,
            n_jobs=None if n_jobs == 1 else n_jobs,
            random_state=0,
        )
        t0 = time.perf_counter()
        ens.fit(u, y)
        wall = time.perf_counter() - t0
        runs_ = np.stack(ens.member_predictions(ut, yt[:n0]))
        if reference is None:
            reference = (wall, runs_)
        runs.append(
            {
                "n_jobs": n_jobs,
                "wall_s": wall,
                "speedup": reference[0] / wall,
                "members_max_abs_diff": float(np.max(np.abs(runs_ - reference[1]))),
            }
        )
        print(f"n_jobs {n_jobs}: {wall:.1f} s", flush=True)
    out = {
        "benchmark": "ensemble_throughput",
        "measures": "wall time of EnsembleRegressor.fit with the members fitted in "
        "this process (n_jobs 1) or in n_jobs worker processes (joblib, loky) "
        "at a time, on one device; worker start-up and the transfer of the "
        "fitted members included; members_max_abs_diff compares each member's "
        "free run on the first test record with the n_jobs 1 fit",
        "dataset": args.dataset,
        "preset": args.preset,
        "members": args.members,
        "epochs": net.max_iter,
        "steps_per_epoch": net.steps_per_epoch,
        "quick": args.quick,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "hardware": hardware_info(args.device),
        "runs": runs,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
