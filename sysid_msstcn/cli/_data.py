"""DATA arguments: benchmark names, data folders and record files."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._common import UsageError


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

    from ..data import make_io_dataset, validate_io_dataset

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
    from ..data import load_iam_ondb

    data = load_iam_ondb(root, splits=("train", "valid"), missing="ignore")
    if not data["train"]:
        raise FileNotFoundError(f"no IAM-OnDB training lines found under {root}")
    test = data["valid"] or data["train"][-1:]
    return Data("handwriting", "iam_ondb", data["train"], test, {"scale": data.scale})


def _load_speech(root: Path, args: argparse.Namespace) -> Data:
    from ..data import load_blizzard

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
    from .._paths import default_data_dir
    from ..data import BENCHMARKS, load_benchmark, make_wiener_hammerstein

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
    from ..data import io_arrays

    u, y = io_arrays(rec)
    return u, y, int(rec.attrs.get("n_init", 0))


def _fit_args(data: Data) -> tuple[Any, Any]:
    """``(X, y)`` for ``fit``: lists of per-record arrays (X None if no inputs)."""
    if data.kind != "io":
        return None, data.train
    pairs = [_io(rec)[:2] for rec in data.train]
    return [u for u, _ in pairs], [y for _, y in pairs]
