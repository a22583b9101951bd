"""Command line ``sysid-msstcn`` (also ``python -m sysid_msstcn``): wiring only.

Subcommands:

``demo``
    Offline demo: a simulated Wiener-Hammerstein system, MS-STCN against
    ARX, polynomial NARX and MLP NARX; a results table, plots and JSON.
``fit DATA``
    Train MS-STCN and save it (safetensors, ``MSSTCNRegressor.save``);
    data-parallel under ``torchrun`` (rank 0 writes the files).
``evaluate MODEL DATA``
    Test metrics of a saved model (simulation errors, or the ELBO for
    output-only data such as handwriting and speech).
``simulate MODEL DATA``
    Free-run simulation and Monte Carlo intervals of the test records.
``benchmark DATA``
    Fit MS-STCN and the baselines on DATA; one table row per model.
``sample MODEL``
    Generate sequences: PNG for handwriting, WAV for speech.
``presets``
    Print the preset table.

``DATA`` is a benchmark name (``silverbox``, ``cascaded_tanks``, ...),
``synthetic`` (the demo's system), ``iam_ondb`` or ``blizzard`` (folders in
the shared data folder, or ``--data-dir``), or a file: ``.nc`` (a record in
the dataset contract), ``.csv`` (columns ``u*`` and ``y*``, optional
``time``) or ``.npz`` (arrays ``u`` and ``y``). Estimator flags are
generated from ``MSSTCNRegressor().get_params()``, so every default lives
in one place. User mistakes end with ``sysid-msstcn: error: <message>`` on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._utils import jsonable

__all__ = ["build_parser", "load_data", "main", "write_rows"]

PROG = "sysid-msstcn"
_NOT_FLAGS = {"preset", "device", "random_state", "verbose", "warm_start"}
_MODELS = {
    "arx": "ARX",
    "narx": "polynomial NARX",
    "mlp": "MLP NARX",
    "msstcn": "MS-STCN",
    "msstcn+arx": "MS-STCN + ARX",  # LinearResidualRegressor on the ARX
}
_DEFAULT_MODELS = ("arx", "narx", "mlp", "msstcn")
_NETWORKS = ("msstcn", "msstcn+arx")  # the models with a Monte Carlo band
_SPEECH_PRESETS = {200: "blizzard_fw200", 25: "blizzard_fw25", 2: "blizzard_fw2"}


class UsageError(ValueError):
    """A bad command-line argument (reported without a traceback)."""


def _say(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Estimator parameters: generated flags and --config
# --------------------------------------------------------------------------
def _estimator_defaults() -> dict[str, Any]:
    from .estimator import MSSTCNRegressor

    return MSSTCNRegressor().get_params(deep=False)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _parse_value(text: str) -> Any:
    """A flag value: JSON (lists become tuples), none/true/false, else a str."""
    lowered = text.strip().lower()
    if lowered in ("none", "null", "true", "false"):
        return {"true": True, "false": False}.get(lowered)
    try:
        return _tuples(json.loads(text))
    except json.JSONDecodeError:
        return text


def _add_estimator_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "estimator parameters",
        "MSSTCNRegressor parameters as JSON values (e.g. --channels [16,16,16]); "
        "they override --config",
    )
    group.add_argument(
        "--config",
        metavar="FILE|PRESET",
        help="JSON file of estimator parameters, or a preset name "
        "(see `sysid-msstcn presets`)",
    )
    docs = _parameter_docs()
    for name, default in sorted(_estimator_defaults().items()):
        if name not in _NOT_FLAGS:
            text = docs.get(name, "").replace("%", "%%")
            group.add_argument(
                "--" + name.replace("_", "-"),
                dest="est_" + name,
                type=_parse_value,
                default=argparse.SUPPRESS,
                metavar="VALUE",
                help=f"{text} (default: {default!r})".strip(),
            )


def _parameter_docs() -> dict[str, str]:
    """First sentence of each parameter in the estimator's numpydoc docstring."""
    from .estimator import MSSTCNRegressor

    lines = (MSSTCNRegressor.__doc__ or "").splitlines()
    docs: dict[str, str] = {}
    names: list[str] = []
    section = ""
    for prev, line in zip([""] + lines, lines, strict=False):
        text = line.strip()
        if set(text) == {"-"}:
            section = prev.strip()
            continue
        if section != "Parameters" or not text:
            continue
        if line.startswith("    ") and not line.startswith("        "):
            names = [n.strip() for n in text.split(" : ")[0].split(",")]
        elif names:
            for n in names:
                docs[n] = (docs.get(n, "") + " " + text).strip()
    plain = {k: re.sub(r":\w+:`~?([^`]+)`", r"\1", v).replace("``", "")
             for k, v in docs.items()}  # fmt: skip
    return {k: v.split(". ")[0].rstrip(".") for k, v in plain.items()}


def _read_config(spec: str | None) -> dict[str, Any]:
    from .presets import preset_names

    if spec is None:
        return {}
    path = Path(spec)
    if path.is_file():
        try:
            params = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(params, dict):
            raise UsageError(f"{path}: expected a JSON object of estimator parameters")
        unknown = sorted(set(params) - set(_estimator_defaults()))
        if unknown:
            raise UsageError(
                f"{path}: unknown estimator parameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(_estimator_defaults()))}"
            )
        return {k: _tuples(v) for k, v in params.items()}
    if spec in preset_names():
        return {"preset": spec}
    raise UsageError(
        f"--config {spec!r} is neither a file nor a preset name "
        f"(presets: {', '.join(preset_names())})"
    )


def _estimator_params(args: argparse.Namespace, preset: str | None = None) -> dict:
    params: dict[str, Any] = {} if preset is None else {"preset": preset}
    params.update(_read_config(args.config))
    params.update({k[4:]: v for k, v in vars(args).items() if k.startswith("est_")})
    params.update(device=args.device, random_state=args.seed)
    params["verbose"] = 0 if args.quiet else 1
    return params


def _make_estimator(params: dict):
    from .estimator import MSSTCNRegressor

    est = MSSTCNRegressor(**params)
    est._resolved()  # a bad preset name fails here, before any training
    return est


# --------------------------------------------------------------------------
# Data: names, folders and files
# --------------------------------------------------------------------------
@dataclass
class Data:
    """Train and test records of one data source."""

    kind: str  # "io" (xarray records), "handwriting" or "speech" (arrays)
    name: str
    train: list = field(default_factory=list)
    test: list = field(default_factory=list)
    info: dict = field(default_factory=dict)


def _read_file(path: Path):
    import zipfile

    try:
        return _read_file_unchecked(path)
    except UsageError:
        raise
    except (
        OSError,
        ValueError,
        KeyError,
        zipfile.BadZipFile,
        UnicodeDecodeError,
    ) as exc:
        raise UsageError(f"{path}: cannot read the data file ({exc})") from exc


def _read_file_unchecked(path: Path):
    import xarray as xr

    from .data import make_io_dataset, validate_io_dataset

    suffix = path.suffix.lower()
    if suffix == ".nc":
        ds = xr.load_dataset(path)
        validate_io_dataset(ds)
        return ds.assign_attrs(name=ds.attrs.get("name") or path.stem)
    if suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(path)
        cols = {
            c: [k for k in frame.columns if str(k).lower().startswith(c)] for c in "uy"
        }
        if not cols["u"] or not cols["y"]:
            raise UsageError(
                f"{path}: a CSV file needs input columns named u* and output "
                f"columns named y*; found {', '.join(map(str, frame.columns))}"
            )
        ts = 1.0
        if "time" in frame.columns and len(frame) > 1:
            ts = float(frame["time"].iloc[1] - frame["time"].iloc[0])
        return make_io_dataset(
            frame[cols["u"]].to_numpy(float),
            frame[cols["y"]].to_numpy(float),
            sampling_time=ts,
            name=path.stem,
            u_labels=[str(c) for c in cols["u"]],
            y_labels=[str(c) for c in cols["y"]],
        )
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "u" not in z or "y" not in z:
                raise UsageError(f"{path}: an .npz file needs arrays 'u' and 'y'")
            ts = float(z["sampling_time"]) if "sampling_time" in z else 1.0
            return make_io_dataset(z["u"], z["y"], sampling_time=ts, name=path.stem)
    raise UsageError(f"{path}: unknown file type {suffix!r} (use .nc, .csv or .npz)")


def _load_handwriting(root: Path) -> Data:
    from .data import load_iam_ondb

    data = load_iam_ondb(root, splits=("train", "valid"), missing="ignore")
    if not data["train"]:
        raise FileNotFoundError(f"no IAM-OnDB training lines found under {root}")
    test = data["valid"] or data["train"][-1:]
    return Data("handwriting", "iam_ondb", data["train"], test, {"scale": data.scale})


def _load_speech(root: Path, args: argparse.Namespace) -> Data:
    from .data import load_blizzard

    cache = Path(args.cache_dir or Path.home() / ".cache" / "sysid_msstcn" / "blizzard")
    data = load_blizzard(root, cache, frame_width=args.frame_width)

    def take(clips) -> list[np.ndarray]:
        n = len(clips) if not args.max_records else min(args.max_records, len(clips))
        return [np.asarray(a, dtype=float) for a in clips.take(np.arange(n))]

    train = take(data.train)
    info = {"frame_width": args.frame_width, "mode": "contiguous"}
    return Data("speech", "blizzard", train, take(data.test) or train[-1:], info)


def load_data(spec: str, args: argparse.Namespace) -> Data:
    """Resolve DATA (a name or a file) into train and test records.

    Parameters
    ----------
    spec : str
        A benchmark name, ``synthetic``, ``iam_ondb``, ``blizzard`` or a
        file path (``.nc``, ``.csv``, ``.npz``).
    args : argparse.Namespace
        The data options (``data_dir``, ``max_records``, ``max_length``,
        ``warmup``, ``n_samples``, ``frame_width``, ``cache_dir``, ``seed``).

    Returns
    -------
    Data
        ``kind`` is ``"io"`` for input/output records (xarray Datasets),
        ``"handwriting"`` or ``"speech"`` for output-only arrays. A single
        file is both the training and the test record.
    """
    from ._paths import default_data_dir
    from .data import BENCHMARKS, load_benchmark, make_wiener_hammerstein

    path, key = Path(spec), spec.strip().lower().replace("-", "_")
    data_dir = Path(args.data_dir) if args.data_dir else None
    if path.suffix and (path.exists() or key not in BENCHMARKS):
        if not path.is_file():
            raise FileNotFoundError(f"data file {path} does not exist")
        rec = _read_file(path)
        data = Data("io", path.name, [rec], [rec], {"file": str(path)})
    elif key in ("synthetic", "synthetic_wh"):
        tr, te = make_wiener_hammerstein(args.n_samples, random_state=args.seed)
        data = Data("io", "synthetic_wiener_hammerstein", tr, te)
    elif key in ("iam_ondb", "handwriting"):
        data = _load_handwriting(data_dir or default_data_dir() / "iam_ondb")
    elif key in ("blizzard", "speech"):
        root = data_dir or default_data_dir() / "blizzard" / "standin"
        data = _load_speech(root, args)
    else:
        tr, te = load_benchmark(spec, data_dir)
        data = Data("io", key, tr, te)
    n, t = args.max_records, args.max_length
    for split in ("train", "test"):
        recs = getattr(data, split)[:n] if n else getattr(data, split)
        if t:
            recs = [
                r.isel(time=slice(0, t)) if hasattr(r, "isel") else r[:t] for r in recs
            ]
        setattr(data, split, recs)
    if data.kind == "io" and args.warmup is not None:
        data.test = [r.assign_attrs(n_init=int(args.warmup)) for r in data.test]
    return data


def _io(rec) -> tuple[np.ndarray, np.ndarray, int]:
    from .data import io_arrays

    u, y = io_arrays(rec)
    return u, y, int(rec.attrs.get("n_init", 0))


def _fit_args(data: Data) -> tuple[Any, Any]:
    """``(X, y)`` for ``fit``: lists of per-record arrays (X None if no inputs)."""
    if data.kind != "io":
        return None, data.train
    pairs = [_io(rec)[:2] for rec in data.train]
    return [u for u, _ in pairs], [y for _, y in pairs]


# --------------------------------------------------------------------------
# Output files and tables
# --------------------------------------------------------------------------
def write_rows(rows: list[dict], path: str | Path, meta: dict | None = None) -> Path:
    """Write result rows as JSON (with ``meta``), CSV or netCDF by the suffix.

    Parameters
    ----------
    rows : list of dict
        One dict per result row (same keys).
    path : str or path-like
        ``*.json``, ``*.csv`` or ``*.nc`` (netCDF3, one variable per key).
    meta : dict, optional
        Run facts: a ``meta`` object in JSON, global attributes in netCDF.

    Returns
    -------
    path : pathlib.Path
    """
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv", ".nc"):
        raise UsageError(f"{path}: output must end in .json, .csv or .nc")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        doc = {"meta": meta or {}, "results": rows}
        path.write_text(json.dumps(jsonable(doc), indent=2) + "\n")
        return path
    flat = [
        {
            k: json.dumps(jsonable(v)) if isinstance(v, (list, tuple, dict)) else v
            for k, v in row.items()
        }
        for row in rows
    ]
    frame = pd.DataFrame(flat)
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        ds = frame.to_xarray().rename({"index": "row"})
        ds.attrs = {k: json.dumps(jsonable(v)) for k, v in (meta or {}).items()}
        ds.to_netcdf(path, engine="scipy")
    return path


def _table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table; ``columns`` holds (key, header, format)."""
    cols = [c for c in columns if any(r.get(c[0]) is not None for r in rows)]
    cells = [[h for _, h, _ in cols]]
    for row in rows:
        cells.append(
            ["-" if row.get(k) is None else format(row[k], f) for k, _, f in cols]
        )
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_IO_COLUMNS = [
    ("model", "model", ""),
    ("test_set", "test set", ""),
    ("rmse", "test RMSE", ".4g"),
    ("units", "units", ""),
    ("fit_percent", "fit %", ".1f"),
    ("coverage_90", "90% coverage", ".2f"),
    ("fit_seconds", "train time (s)", ".1f"),
    ("fit_cpu_seconds", "train CPU (s)", ".1f"),
]
_ELBO_COLUMNS = [
    ("data", "data", ""),
    ("split", "split", ""),
    ("n_sequences", "sequences", "d"),
    ("elbo_per_step", "ELBO per step (nats)", ".4g"),
    ("bits_per_dim", "bits per dim", ".4g"),
    ("kl_total", "KL (nats per sequence)", ".4g"),
]


# --------------------------------------------------------------------------
# Models and their evaluation on input/output records
# --------------------------------------------------------------------------
def evaluate_io(model, records, *, n_samples: int = 0, seed: int = 0, label: str = ""):
    """Simulate each record from u and y[:n_init]; return rows and predictions.

    The warm-up is the record's ``n_init`` (the benchmark protocol), or the
    model's own ``n_init_`` for records without one. With ``n_samples`` > 0
    a model with ``simulate`` also gets a 90% Monte Carlo interval, its
    coverage and the ensemble CRPS.
    """
    from . import metrics

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


def _baseline(name: str, data: Data, budget: float, seed: int):
    """One baseline, with the benchmark suite's orders for named benchmarks.

    Other data get the demo's orders (chosen for the simulated system).
    """
    from .baselines import ARXRegressor, MLPNARXRegressor, PolynomialNARXRegressor
    from .data import BENCHMARKS

    if data.name in BENCHMARKS:
        from .benchmarking import default_models

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

    from .exceptions import ConvergenceWarning

    rows, fitted, preds = [], {}, {}
    for key in models:
        if key == "msstcn":
            model = _make_estimator(est_params)
        elif key == "msstcn+arx":
            from .hybrid import LinearResidualRegressor

            arx = _baseline("arx", data, budget, args.seed)
            model = LinearResidualRegressor(_make_estimator(est_params), arx)
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
    from . import plotting

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


# --------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------
def demo_sizes(budget: float) -> dict[str, int]:
    """Data and training sizes of the demo for a ``--budget`` factor."""
    if not budget > 0:
        raise UsageError(f"--budget must be positive, got {budget}")
    return {
        "n_train": max(400, round(3000 * min(budget, 10.0))),
        "n_test": max(300, round(1500 * min(budget, 4.0))),
        "max_iter": max(1, round(40 * budget)),
        "steps_per_epoch": max(2, round(25 * min(budget, 1.0))),
        "mc_samples": max(10, round(100 * min(budget, 2.0))),
    }


def cmd_demo(args: argparse.Namespace) -> int:
    """Offline demo on a simulated Wiener-Hammerstein system."""
    from .data import make_wiener_hammerstein

    t_start, cpu_start = time.perf_counter(), time.process_time()
    sizes = demo_sizes(args.budget)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    train, test = make_wiener_hammerstein(
        sizes["n_train"], n_test=sizes["n_test"], random_state=args.seed
    )
    data = Data("io", "synthetic_wiener_hammerstein", train, test)
    _say(
        f"demo: simulated Wiener-Hammerstein system, {sizes['n_train']} training "
        f"and {sizes['n_test']} test samples (budget {args.budget:g})",
        args.quiet,
    )
    params = {
        "max_iter": sizes["max_iter"],
        "steps_per_epoch": sizes["steps_per_epoch"],
        "learning_rate": 3e-3,
        "n_iter_no_change": 10,
    }
    params.update(_estimator_params(args, "sysid_small"))
    args.mc_samples = sizes["mc_samples"]
    models = ["arx", "narx", "mlp", "msstcn"]
    rows, fitted, preds = _compare(data, models, params, args, budget=args.budget)
    est = fitted["msstcn"]
    est.save(out / "msstcn.safetensors")
    names = _plot_records(test, _by_label(preds, rows), out, est.history_)
    total, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    meta = {
        "command": "demo",
        "budget": args.budget,
        "seed": args.seed,
        "sizes": sizes,
        "estimator": est.get_params(deep=False),
        "epochs": est.n_iter_,
        "device": str(est.device_),
        "total_seconds": total,
        "total_cpu_seconds": cpu,
        "torch_threads": _torch_threads(),
        "load_average": _load_average(),
        "version": __version__,
    }
    write_rows(rows, out / "results.json", meta)
    write_rows(rows, out / "results.csv")
    print(_table(rows, _IO_COLUMNS))
    load = meta["load_average"]
    print(
        f"\nMS-STCN: {est.n_iter_} epochs on {est.device_} "
        f"({_plural(meta['torch_threads'], 'torch thread')}). Total demo time "
        f"{total:.0f} s "
        f"wall, {cpu:.0f} s CPU"
        + (f" (load average {load:.1f})" if load is not None else "")
    )
    print(
        f"wrote {out}/: {', '.join(names)}, results.json, results.csv, "
        "msstcn.safetensors"
    )
    return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _load_average() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _sidecar_path(model: str | Path) -> Path:
    return Path(model).with_suffix(".json")


def cmd_fit(args: argparse.Namespace) -> int:
    """Train MS-STCN on DATA and save it (rank 0 only under torchrun)."""
    import torch.distributed as dist

    def joined() -> bool:
        return dist.is_available() and dist.is_initialized()

    had_group = joined()
    try:
        return _fit_and_save(args)
    finally:
        if joined() and not had_group:
            # the estimator joined the group that torchrun described: leave it
            dist.destroy_process_group()


def _fit_and_save(args: argparse.Namespace) -> int:
    from .distributed import is_main_process

    data = load_data(args.data, args)
    preset = {"handwriting": "iam_ondb"}.get(data.kind)
    if data.kind == "speech":
        preset = _SPEECH_PRESETS.get(args.frame_width)
    est = _make_estimator(_estimator_params(args, preset))
    main = is_main_process()
    _say(
        f"fitting MS-STCN on {data.name} ({len(data.train)} record(s))",
        args.quiet or not main,
    )
    t0 = time.perf_counter()
    est.fit(*_fit_args(data))
    seconds = time.perf_counter() - t0
    if not main:  # every process holds the same model; rank 0 writes it
        return 0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    est.save(out)
    side = {
        "data": args.data,
        "kind": data.kind,
        "fit_seconds": seconds,
        "epochs": est.n_iter_,
        "best_epoch": est.best_epoch_,
        "processes": est.world_size_,
        **data.info,
    }
    _sidecar_path(out).write_text(json.dumps(jsonable(side), indent=2) + "\n")
    elbo = est.history_[-1]["elbo_per_step"] if est.history_ else float("nan")
    procs = f" on {est.world_size_} processes" if est.world_size_ > 1 else ""
    print(
        f"saved {out} ({est.n_iter_} epochs in {seconds:.1f} s{procs}; last "
        f"training ELBO per step {elbo:.4g} nats)"
    )
    return 0


def _load_model(path: str, device: str):
    from .estimator import MSSTCNRegressor

    return MSSTCNRegressor.load(path, device=device)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Test metrics of a saved model on DATA."""
    from .metrics import elbo_report

    est = _load_model(args.model, args.device)
    data = load_data(args.data, args)
    records = getattr(data, args.split)
    if data.kind == "io":
        rows, preds = evaluate_io(
            est, records, n_samples=args.mc_samples, seed=args.seed, label="MS-STCN"
        )
        print(_table(rows, _IO_COLUMNS))
        if args.plots:
            _plot_records(records, _by_label({"msstcn": preds}, rows), Path(args.plots))
    else:
        res = est.elbo(None, records)
        rep = elbo_report(
            res["elbo_raw"], res["kl_per_level"], res["n_steps"], est.n_outputs_
        )
        rows = [{"model": "MS-STCN", "data": data.name, "split": args.split, **rep}]
        print(_table(rows, _ELBO_COLUMNS))
    if args.output:
        write_rows(rows, args.output, {"model": args.model, "data": args.data})
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Free-run simulation of a saved model on DATA; write the trajectories."""
    import xarray as xr

    est = _load_model(args.model, args.device)
    data = load_data(args.data, args)
    if data.kind != "io":
        raise UsageError(f"{args.data} has no inputs: use `sample` to generate")
    records = getattr(data, args.split)
    rows, preds = evaluate_io(
        est, records, n_samples=args.mc_samples, seed=args.seed, label="MS-STCN"
    )
    print(_table(rows, _IO_COLUMNS))
    sims = []
    for rec, (p, band) in zip(records, preds, strict=True):
        ds = rec.assign(y_sim=(("time", "y_channel"), p))
        if band is not None:
            ds = ds.assign(
                y_lower=(("time", "y_channel"), band[0]),
                y_upper=(("time", "y_channel"), band[1]),
            )
        sims.append(ds)
    out = Path(args.output)
    if out.suffix.lower() == ".nc":
        out.parent.mkdir(parents=True, exist_ok=True)
        merged = sims[0] if len(sims) == 1 else xr.concat(sims, "record")
        merged.attrs = {
            k: v for k, v in merged.attrs.items() if isinstance(v, (str, int, float))
        }
        merged.to_netcdf(out, engine="scipy")
    else:
        table = []
        for i, ds in enumerate(sims):
            frame = ds.to_dataframe().reset_index()
            table += [{"record": i, **r} for r in frame.to_dict("records")]
        write_rows(table, out, {"model": args.model, "data": args.data})
    if args.plots:
        _plot_records(records, _by_label({"msstcn": preds}, rows), Path(args.plots))
    _say(f"wrote {out}", args.quiet)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Fit MS-STCN and the baselines on DATA; print and write a table."""
    models = _parse_models(args.models)
    data = load_data(args.data, args)
    if data.kind != "io":
        raise UsageError("benchmark compares simulation models on input/output data")
    if "file" in data.info:
        rec = data.train[0]
        cut = int(rec.sizes["time"] * 0.7)
        data.train = [rec.isel(time=slice(0, cut))]
        test = rec.isel(time=slice(cut, None)).assign_attrs(name="last 30%")
        data.test = [test.assign_coords(time=test["time"] - test["time"][0])]
        _say(
            f"{args.data}: training on the first 70%, testing on the last 30%",
            args.quiet,
        )
    rows, fitted, preds = _compare(data, models, _estimator_params(args), args)
    print(_table(rows, _IO_COLUMNS))
    if args.output:
        meta = {"command": "benchmark", "data": args.data, "seed": args.seed}
        if "msstcn" in fitted:
            meta["estimator"] = fitted["msstcn"].get_params(deep=False)
        write_rows(rows, args.output, meta)
    if args.plots:
        history = fitted["msstcn"].history_ if "msstcn" in fitted else None
        _plot_records(data.test, _by_label(preds, rows), Path(args.plots), history)
    return 0


def _model_kind(est, side: dict) -> str:
    if side.get("kind"):
        return side["kind"]
    if est.n_features_in_:
        return "io"
    cfg = est.network_config_
    handwriting = cfg.likelihood == "gmm_bernoulli" and cfg.n_outputs == 3
    return "handwriting" if handwriting else "speech"


def cmd_sample(args: argparse.Namespace) -> int:
    """Generate handwriting (PNG) or speech (WAV) from a saved model."""
    from . import plotting

    est = _load_model(args.model, args.device)
    side = _sidecar_path(args.model)
    side = json.loads(side.read_text()) if side.is_file() else {}
    kind = _model_kind(est, side) if args.kind == "auto" else args.kind
    if kind == "io" or est.n_features_in_:
        raise UsageError("this model has inputs: use `simulate` for its outputs")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    samples = np.asarray(est.sample(args.n, args.length, random_state=args.seed))
    np.save(out / "samples.npy", samples)
    written = ["samples.npy"]
    if kind == "handwriting":
        titles = [f"sample {i + 1}" for i in range(len(samples))]
        fig = plotting.plot_handwriting(list(samples), titles=titles)
        plotting.save_figure(fig, out / "handwriting.png")
        written.append("handwriting.png")
    else:
        import soundfile as sf

        from .data import unframe_clips

        waves = unframe_clips(samples, side.get("mode", "contiguous"))
        for i, w in enumerate(waves):
            w = w - w.mean()  # peak-normalised: the level of the model is not kept
            w = 0.9 * w / max(float(np.max(np.abs(w))), 1e-9)
            sf.write(out / f"sample_{i}.wav", w, args.sample_rate, subtype="PCM_16")
            written.append(f"sample_{i}.wav")
    print(f"wrote {len(samples)} {kind} sample(s) to {out}/: {', '.join(written)}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    """Print the preset table (parameter counts and receptive fields)."""
    from .summary import preset_table

    print(preset_table())
    return 0


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------
_RUN_OPTIONS = [
    (
        "--device",
        {
            "default": "auto",
            "help": "auto (CUDA when available), cpu, cuda or cuda:N (default: auto)",
        },
    ),
    ("--seed", {"type": int, "default": 0, "help": "random seed (default: 0)"}),
    ("-q", "--quiet", {"action": "store_true", "help": "no progress output"}),
    (
        "--threads",
        {
            "type": int,
            "help": "CPU threads of PyTorch and of numpy's BLAS (default: their "
            "own choice; 1 is often faster on a busy machine)",
        },
    ),
]
_DATA_OPTIONS = [
    (
        "--data-dir",
        {
            "help": "folder of a named data set (default: in the shared "
            "data folder, $SYSID_MSSTCN_DATA)"
        },
    ),
    ("--max-records", {"type": int, "help": "use at most N records per split"}),
    ("--max-length", {"type": int, "help": "crop every record to N time steps"}),
    (
        "--warmup",
        {
            "type": int,
            "help": "warm-up samples of the test records (default: their n_init)",
        },
    ),
    (
        "--n-samples",
        {
            "type": int,
            "default": 3000,
            "help": "training samples of `synthetic` (default: 3000)",
        },
    ),
    (
        "--frame-width",
        {"type": int, "default": 200, "help": "speech frame width (default: 200)"},
    ),
    (
        "--cache-dir",
        {"help": "speech clip cache (default: ~/.cache/sysid_msstcn/blizzard)"},
    ),
]
_OUTPUT_HELP = "results file: .json, .csv or .nc"
_MC_HELP = (
    "Monte Carlo trajectories for the 90%% interval and CRPS (default: %(default)s)"
)


def _parent(data: bool = True, estimator: bool = False) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    groups = [("run options", _RUN_OPTIONS)]
    if data:
        groups.append(("data options", _DATA_OPTIONS))
    for title, specs in groups:
        group = parent.add_argument_group(title)
        for *flags, kwargs in specs:
            group.add_argument(*flags, **kwargs)
    if estimator:
        _add_estimator_flags(parent)
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sysid-msstcn`` with all subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="MS-STCN for system identification: demo, training, "
        "evaluation, simulation, benchmarks and sampling.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    plain, with_est = _parent(), _parent(estimator=True)

    def add(func, help_, *parents, model=False, data=False):
        name = func.__name__[4:]
        p = sub.add_parser(name, help=help_, description=help_, parents=parents)
        p.set_defaults(func=func)
        if model:
            p.add_argument("model", metavar="MODEL", help="a saved .safetensors model")
        if data:
            p.add_argument("data", metavar="DATA", help="data set name or file")
        return p

    p = add(
        cmd_demo,
        "offline demo on a simulated nonlinear system",
        _parent(data=False, estimator=True),
    )
    p.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="scales data and training (default: 1, a few minutes on 2 CPU cores)",
    )
    p.add_argument(
        "--output", default="demo_output", help="folder (default: %(default)s)"
    )

    p = add(cmd_fit, "train MS-STCN on DATA and save it", with_est, data=True)
    p.add_argument(
        "--output",
        default="model.safetensors",
        help="model file (default: %(default)s)",
    )

    p = add(cmd_evaluate, "test metrics of a saved model", plain, model=True, data=True)
    p.add_argument("--mc-samples", type=int, default=0, help=_MC_HELP)
    p.add_argument("--output", help=_OUTPUT_HELP)

    p = add(
        cmd_simulate,
        "free-run simulation of a saved model",
        plain,
        model=True,
        data=True,
    )
    p.add_argument("--mc-samples", type=int, default=100, help=_MC_HELP)
    p.add_argument("--output", required=True, help=_OUTPUT_HELP)

    p = add(cmd_benchmark, "fit MS-STCN and the baselines on DATA", with_est, data=True)
    p.add_argument(
        "--models",
        default=",".join(_DEFAULT_MODELS),
        help=f"comma-separated, from {', '.join(_MODELS)} (msstcn+arx: MS-STCN "
        "on the residual of the ARX); default %(default)s",
    )
    p.add_argument("--mc-samples", type=int, default=20, help=_MC_HELP)
    p.add_argument("--output", help=_OUTPUT_HELP)

    for p in (sub.choices["evaluate"], sub.choices["simulate"]):
        p.add_argument("--split", choices=("test", "train"), default="test")
    for p in (
        sub.choices["evaluate"],
        sub.choices["simulate"],
        sub.choices["benchmark"],
    ):
        p.add_argument("--plots", metavar="DIR", help="also write figures to DIR")

    p = add(
        cmd_sample,
        "generate handwriting (PNG) or speech (WAV)",
        _parent(data=False),
        model=True,
    )
    p.add_argument("--n", type=int, default=4, help="samples (default: 4)")
    p.add_argument("--length", type=int, default=400, help="time steps (default: 400)")
    p.add_argument("--kind", choices=("auto", "handwriting", "speech"), default="auto")
    p.add_argument("--sample-rate", type=int, default=16000, help="WAV rate (Hz)")
    p.add_argument("--output", default="samples", help="folder (default: samples)")

    add(cmd_presets, "print the preset table")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success, 2 for a usage or data error (printed as one line
        ``sysid-msstcn: error: ...`` on stderr), 130 on Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        # data-parallel training on large data sets (launch with torchrun);
        # its flags are those of ``python -m sysid_msstcn.distributed``
        from .distributed import main as train_main

        try:
            return int(train_main(argv[1:]) or 0)
        except (ValueError, OSError, KeyError, ImportError) as exc:
            print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "threads", None) is not None:
            if args.threads < 1:
                raise UsageError(f"--threads must be >= 1, got {args.threads}")
            import torch
            from threadpoolctl import threadpool_limits

            torch.set_num_threads(args.threads)
            threadpool_limits(args.threads)  # numpy's BLAS (the baselines)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError, ImportError) as exc:
        message = str(exc).strip().strip("'\"") or type(exc).__name__
        print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
