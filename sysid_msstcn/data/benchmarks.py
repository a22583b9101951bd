"""Nonlinear system-identification benchmarks as :class:`xarray.Dataset` records.

Every loader is built on the official ``nonlinear-benchmarks`` package (the data
loader of nonlinearbenchmark.org) and returns ``(train, test)``: two lists of
datasets that follow one contract, shared by the estimator, the metrics and the
baselines:

* data variables ``u`` with dims ``("time", "u_channel")`` and ``y`` with dims
  ``("time", "y_channel")``, float64;
* coordinate ``time`` in seconds, starting at 0 for every record;
* attributes ``benchmark``, ``split``, ``name``, ``sampling_time`` (float),
  ``n_init`` (warm-up samples excluded from the official score; 0 on training
  records), ``u_units``, ``y_units``, ``report_scale`` and ``report_units`` (the
  official score is ``report_scale * RMSE(y)`` in ``report_units``).

Offline use
-----------
The package downloads into a cache folder. It returns at once, without network
access, when ``<folder>/<Benchmark>/<archive>`` exists, so a prepared folder (such
as ``../shared/data/nonlinear_benchmarks``) is read offline. The folder is chosen
by the ``data_dir`` argument, else ``$SYSID_MSSTCN_BENCHMARK_DIR``, else
``<default_data_dir()>/nonlinear_benchmarks``. The expected files are checked
before the package is called; a missing file raises :class:`FileNotFoundError`
unless ``download=True`` is passed.

Quirks of ``nonlinear-benchmarks`` 1.0.1 fixed here: the Cascaded Tanks
sampling time is a ``numpy.uint8`` (cast to float), the Silverbox
``test_arrow_full`` record is named "test SB multisine" (records are named by
position instead), slicing an ``Input_output_data`` loses its name and warm-up
length (xarray keeps the attributes), and EMPS's sampling time is ``t[1] - t[0]``
(1.00002 ms) instead of the nominal 1 ms. Silverbox uses the exact hardware
sampling time 2**14 / 1e7 s instead of the package's rounded 1 / 610.35 s.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sysid_msstcn._paths import default_data_dir
from sysid_msstcn.data._validation import as_experiments
from sysid_msstcn.exceptions import DataFormatError, ShapeError

__all__ = [
    "BENCHMARKS",
    "BENCHMARK_DIR_ENV_VAR",
    "benchmark_dir",
    "fetch_bouc_wen",
    "fetch_cascaded_tanks",
    "fetch_ced",
    "fetch_emps",
    "fetch_f16",
    "fetch_silverbox",
    "fetch_wiener_hammerstein",
    "io_arrays",
    "load_benchmark",
    "make_io_dataset",
    "validate_io_dataset",
]

BENCHMARK_DIR_ENV_VAR = "SYSID_MSSTCN_BENCHMARK_DIR"

BENCHMARKS: tuple[str, ...] = (
    "silverbox",
    "wiener_hammerstein",
    "cascaded_tanks",
    "emps",
    "ced",
    "f16",
    "bouc_wen",
)

_ALIASES = {"wh": "wiener_hammerstein"}

_REQUIRED_ATTRS = (
    "benchmark",
    "split",
    "name",
    "sampling_time",
    "n_init",
    "u_units",
    "y_units",
    "report_scale",
    "report_units",
)


@dataclass(frozen=True)
class _Spec:
    """Static facts about one benchmark: files, units and reporting scale."""

    folder: str
    files: tuple[str, ...]
    u_units: str
    y_units: str
    report_scale: float
    report_units: str
    u_labels: tuple[str, ...]
    y_labels: tuple[str, ...]


_BW_DIR = "BoucWenFiles/Test signals/Validation signals"
_SPECS: dict[str, _Spec] = {
    "silverbox": _Spec(
        "Silverbox",
        ("SilverboxFiles.zip", "SilverboxFiles/SNLS80mV.mat"),
        "V", "V", 1000.0, "mV", ("V1",), ("V2",),
    ),
    "wiener_hammerstein": _Spec(
        "WienerHammerBenchMark",
        ("WienerHammerBenchMark.mat",),
        "V", "V", 1000.0, "mV", ("uBenchMark",), ("yBenchMark",),
    ),
    "cascaded_tanks": _Spec(
        "Cascaded_Tanks",
        ("CascadedTanksFiles.zip", "CascadedTanksFiles/dataBenchmark.mat"),
        "V", "V", 1.0, "V", ("u",), ("y",),
    ),
    "emps": _Spec(
        "EMPS",
        ("EMPS.zip", "DATA_EMPS.mat", "DATA_EMPS_PULSES.mat"),
        "N", "m", 1000.0, "mm", ("vir",), ("qm",),
    ),
    "ced": _Spec(
        "CED",
        ("FULLTEXT01.zip", "DATAUNIF.MAT"),
        "V", "ticks/s", 1.0, "ticks/s", ("u",), ("z",),
    ),
    "f16": _Spec(
        "F16",
        ("F16GVT_Files.zip", "F16GVT_Files/BenchmarkData"),
        "N", "m/s^2", 1.0, "m/s^2", ("Force",),
        ("Acceleration1", "Acceleration2", "Acceleration3"),
    ),
    "bouc_wen": _Spec(
        "BoucWen",
        (
            "Hysteretic Benchmark with a Dynamic Nonlinearity_1_all.zip",
            f"{_BW_DIR}/uval_multisine.mat",
            f"{_BW_DIR}/yval_multisine.mat",
            f"{_BW_DIR}/uval_sinesweep.mat",
            f"{_BW_DIR}/yval_sinesweep.mat",
        ),
        "N", "m", 1.0, "m", ("u",), ("y",),
    ),
}  # fmt: skip


# --------------------------------------------------------------------------
# The dataset contract
# --------------------------------------------------------------------------
def _as_2d(x: Any, what: str) -> np.ndarray:
    """A finite float64 (time, channel) array; named errors otherwise."""
    if isinstance(x, (list, tuple)) and len(x) == 0:
        raise ShapeError(f"{what} is empty: 0 time steps")
    data = as_experiments(None, x, y_name=what)
    if data.is_list:
        raise ShapeError(
            f"{what} must be one array of shape (time,) or (time, channel), "
            "not a list of arrays"
        )
    return data.y[0]  # type: ignore[return-value]


def _labels(labels: Sequence[str] | None, n: int, what: str) -> list:
    if labels is None:
        return list(range(n))
    if isinstance(labels, str):
        labels = [labels]
    out = list(labels)
    if len(out) != n:
        raise ShapeError(f"{what} has {len(out)} label(s) but {n} channel(s)")
    return out


def make_io_dataset(
    u: Any,
    y: Any,
    *,
    sampling_time: float,
    benchmark: str = "custom",
    split: str = "train",
    name: str = "",
    n_init: int = 0,
    u_units: str = "",
    y_units: str = "",
    report_scale: float = 1.0,
    report_units: str = "",
    u_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    **extra_attrs: Any,
) -> xr.Dataset:
    """Build an input/output record that follows the package's dataset contract.

    Parameters
    ----------
    u : array-like of shape (n_time,) or (n_time, n_u)
        Input signal, time-major.
    y : array-like of shape (n_time,) or (n_time, n_y)
        Output signal, time-major, same length as ``u``.
    sampling_time : float
        Sampling time in seconds (> 0).
    benchmark, split, name : str
        Benchmark name, split ("train", "test", ...) and record name.
    n_init : int, default=0
        Warm-up samples at the start that the official score skips.
    u_units, y_units, report_units : str
        Physical units of ``u``, ``y`` and of the reported score.
    report_scale : float, default=1.0
        Factor from ``y`` units to ``report_units`` (1000.0 for V → mV).
    u_labels, y_labels : sequence of str, optional
        Channel labels (coordinates ``u_channel`` / ``y_channel``).
    **extra_attrs
        Further attributes stored unchanged.

    Returns
    -------
    dataset : xarray.Dataset
        Variables ``u`` ("time", "u_channel") and ``y`` ("time", "y_channel").

    Raises
    ------
    ShapeError
        If ``u`` and ``y`` differ in length, are empty or not 1-D/2-D, or a
        label list does not match the number of channels.
    ValueError
        If ``u`` or ``y`` holds NaN, infinity or non-numbers (the message names
        the first bad sample), ``sampling_time`` is not a positive number or
        ``n_init`` is not an int >= 0.
    """
    u2, y2 = _as_2d(u, "u"), _as_2d(y, "y")
    if u2.shape[0] != y2.shape[0]:
        raise ShapeError(
            f"u and y must have the same length, got {u2.shape[0]} and {y2.shape[0]}"
        )
    try:
        ts = float(sampling_time)
    except (TypeError, ValueError):
        ts = math.nan
    if isinstance(sampling_time, bool) or not np.isfinite(ts) or ts <= 0:
        raise ValueError(
            f"sampling_time must be a positive number, got {sampling_time!r}"
        )
    try:
        whole = float(n_init).is_integer() and not isinstance(n_init, (bool, str))
    except (TypeError, ValueError):
        whole = False
    if not whole or n_init < 0:
        raise ValueError(f"n_init must be an int >= 0, got {n_init!r}")
    u_labels = _labels(u_labels, u2.shape[1], "u")
    y_labels = _labels(y_labels, y2.shape[1], "y")
    attrs: dict[str, Any] = {
        "benchmark": str(benchmark),
        "split": str(split),
        "name": str(name),
        "sampling_time": ts,
        "n_init": int(n_init),
        "u_units": str(u_units),
        "y_units": str(y_units),
        "report_scale": float(report_scale),
        "report_units": str(report_units),
    }
    attrs.update(extra_attrs)
    return xr.Dataset(
        {"u": (("time", "u_channel"), u2), "y": (("time", "y_channel"), y2)},
        coords={
            "time": ("time", np.arange(u2.shape[0]) * ts, {"units": "s"}),
            "u_channel": u_labels,
            "y_channel": y_labels,
        },
        attrs=attrs,
    )


def validate_io_dataset(dataset: xr.Dataset) -> None:
    """Check that ``dataset`` follows the input/output dataset contract.

    Parameters
    ----------
    dataset : xarray.Dataset
        A record as returned by the ``fetch_*`` functions.

    Raises
    ------
    TypeError
        If ``dataset`` is not an :class:`xarray.Dataset`.
    DataFormatError
        If a variable, dimension or attribute is missing or malformed.
    """
    if not isinstance(dataset, xr.Dataset):
        raise TypeError(f"expected an xarray.Dataset, got {type(dataset).__name__}")
    for var, dims in (("u", ("time", "u_channel")), ("y", ("time", "y_channel"))):
        if var not in dataset.data_vars:
            raise DataFormatError(f"dataset has no variable {var!r}")
        if dataset[var].dims != dims:
            raise DataFormatError(
                f"variable {var!r} must have dims {dims}, got {dataset[var].dims}"
            )
    missing = [key for key in _REQUIRED_ATTRS if key not in dataset.attrs]
    if missing:
        raise DataFormatError(f"dataset lacks attributes {missing}")
    if not dataset.attrs["sampling_time"] > 0:
        raise DataFormatError("attribute sampling_time must be positive")


def io_arrays(dataset: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(u, y)`` of a record as float64 numpy arrays of shape (time, channel).

    Parameters
    ----------
    dataset : xarray.Dataset
        A record that follows the contract (see :func:`make_io_dataset`).

    Returns
    -------
    u : numpy.ndarray of shape (n_time, n_u)
    y : numpy.ndarray of shape (n_time, n_y)
    """
    validate_io_dataset(dataset)
    u = dataset["u"].transpose("time", "u_channel").to_numpy()
    y = dataset["y"].transpose("time", "y_channel").to_numpy()
    return np.asarray(u, dtype=np.float64), np.asarray(y, dtype=np.float64)


# --------------------------------------------------------------------------
# Locating and checking the offline folder
# --------------------------------------------------------------------------
def benchmark_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the folder that holds the ``nonlinear-benchmarks`` cache layout.

    Parameters
    ----------
    data_dir : path-like, optional
        Explicit folder. Without it ``$SYSID_MSSTCN_BENCHMARK_DIR`` is used, else
        ``<default_data_dir()>/nonlinear_benchmarks``.

    Returns
    -------
    path : pathlib.Path
        The folder (it is not required to exist).
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(BENCHMARK_DIR_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return default_data_dir() / "nonlinear_benchmarks"


def _prepare(key: str, data_dir: Any, download: bool) -> Path:
    """Return the folder for the package, after checking the expected files."""
    root = benchmark_dir(data_dir)
    spec = _SPECS[key]
    folder = root / spec.folder
    missing = [folder / rel for rel in spec.files if not (folder / rel).exists()]
    if not missing:
        return root
    if download:
        root.mkdir(parents=True, exist_ok=True)
        return root
    if not root.is_dir():
        raise FileNotFoundError(
            f"benchmark folder {root} does not exist; pass data_dir, set "
            f"{BENCHMARK_DIR_ENV_VAR}, or use download=True"
        )
    raise FileNotFoundError(
        f"{key}: expected file(s) missing in {folder}: "
        + ", ".join(str(p) for p in missing)
        + " (pass download=True to let nonlinear-benchmarks download them)"
    )


def _call(key: str, root: Path, func: Callable[..., Any], **kwargs: Any) -> Any:
    """Call a package loader, turning read failures into errors that name files."""
    try:
        return func(dir_placement=str(root), **kwargs)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        folder = root / _SPECS[key].folder
        bad = _find_unreadable(folder)
        where = f"file {bad}" if bad else f"folder {folder}"
        raise DataFormatError(f"{key}: could not read {where}: {exc}") from exc


def _find_unreadable(folder: Path) -> Path | None:
    """Return the first ``.mat`` file under ``folder`` that scipy cannot load."""
    from scipy.io import loadmat

    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() != ".mat":
            continue
        try:
            loadmat(path)
        except Exception:  # noqa: BLE001 - any failure means "unreadable"
            return path
    return None


def _record(key: str, data: Any, split: str, name: str, **over: Any) -> xr.Dataset:
    """Convert one ``Input_output_data`` into a contract dataset."""
    spec = _SPECS[key]
    n_init = data.state_initialization_window_length if split != "train" else 0
    attrs = {
        "sampling_time": data.sampling_time,
        "n_init": n_init or 0,
        "u_labels": spec.u_labels,
        "y_labels": spec.y_labels,
    }
    attrs.update(over)
    u, y = np.asarray(data.u), np.asarray(data.y)
    if len(u) == 0:
        raise DataFormatError(f"{key}: record {name!r} is empty")
    return make_io_dataset(
        u,
        y,
        benchmark=key,
        split=split,
        name=name,
        u_units=spec.u_units,
        y_units=spec.y_units,
        report_scale=spec.report_scale,
        report_units=spec.report_units,
        source=f"nonlinear_benchmarks {_package_version()}",
        **attrs,
    )


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nonlinear-benchmarks")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


# --------------------------------------------------------------------------
# The loaders
# --------------------------------------------------------------------------
_Split = tuple[list[xr.Dataset], list[xr.Dataset]]
_DataDir = str | os.PathLike[str] | None


def fetch_silverbox(data_dir: _DataDir = None, *, download: bool = False) -> _Split:
    """Load the Silverbox benchmark (electronic Duffing oscillator).

    Train is the first 75 % of the multisine part (65062 samples). Test holds
    three records, in this order: ``test_multisine`` (21688), ``test_arrow_full``
    (40475) and ``test_arrow_no_extrapolation`` (32000, the first part of
    ``test_arrow_full``), each with ``n_init = 50``. Scores are reported in mV.

    Parameters
    ----------
    data_dir : path-like, optional
        Folder in the ``nonlinear-benchmarks`` cache layout (``dir_placement``);
        see :func:`benchmark_dir` for the default.
    download : bool, default=False
        Let the package download missing files into ``data_dir``. Without it a
        missing file raises :class:`FileNotFoundError` and nothing is written.

    Returns
    -------
    train, test : list of xarray.Dataset
        Records that follow the contract of :func:`make_io_dataset`.

    Raises
    ------
    FileNotFoundError
        If the folder or an expected file is missing (and ``download`` is False).
    DataFormatError
        If a data file is truncated or malformed; the message names the file.
    """
    import nonlinear_benchmarks as nlb

    root = _prepare("silverbox", data_dir, download)
    train, tests = _call("silverbox", root, nlb.Silverbox)
    names = ("test_multisine", "test_arrow_full", "test_arrow_no_extrapolation")
    ts = 2.0**14 / 1e7  # exact: 10 MHz clock / 2**14
    return (
        [_record("silverbox", train, "train", "train_multisine", sampling_time=ts)],
        [
            _record("silverbox", d, "test", n, sampling_time=ts)
            for d, n in zip(tests, names, strict=True)
        ],
    )


def fetch_wiener_hammerstein(
    data_dir: _DataDir = None, *, download: bool = False
) -> _Split:
    """Load the Wiener-Hammerstein 2009 benchmark.

    Train has 100000 samples, test 78800 with ``n_init = 50``; fs = 51.2 kHz.
    Scores are reported in mV.

    Parameters
    ----------
    data_dir : path-like, optional
        Folder in the ``nonlinear-benchmarks`` cache layout (``dir_placement``);
        see :func:`benchmark_dir` for the default.
    download : bool, default=False
        Let the package download missing files into ``data_dir``. Without it a
        missing file raises :class:`FileNotFoundError` and nothing is written.

    Returns
    -------
    train, test : list of xarray.Dataset
        Records that follow the contract of :func:`make_io_dataset`.

    Raises
    ------
    FileNotFoundError
        If the folder or an expected file is missing (and ``download`` is False).
    DataFormatError
        If a data file is truncated or malformed; the message names the file.
    """
    import nonlinear_benchmarks as nlb

    root = _prepare("wiener_hammerstein", data_dir, download)
    train, test = _call("wiener_hammerstein", root, nlb.WienerHammerBenchMark)
    return (
        [_record("wiener_hammerstein", train, "train", "train")],
        [_record("wiener_hammerstein", test, "test", "test")],
    )


def fetch_cascaded_tanks(
    data_dir: _DataDir = None, *, download: bool = False
) -> _Split:
    """Load the Cascaded Tanks benchmark.

    Train and test have 1024 samples each (``n_init = 50`` on test), sampling
    time 4 s (a ``uint8`` in the package, returned here as float). Scores are
    reported raw, in V.

    Parameters
    ----------
    data_dir : path-like, optional
        Folder in the ``nonlinear-benchmarks`` cache layout (``dir_placement``);
        see :func:`benchmark_dir` for the default.
    download : bool, default=False
        Let the package download missing files into ``data_dir``. Without it a
        missing file raises :class:`FileNotFoundError` and nothing is written.

    Returns
    -------
    train, test : list of xarray.Dataset
        Records that follow the contract of :func:`make_io_dataset`.

    Raises
    ------
    FileNotFoundError
        If the folder or an expected file is missing (and ``download`` is False).
    DataFormatError
        If a data file is truncated or malformed; the message names the file.
    """
    import nonlinear_benchmarks as nlb

    root = _prepare("cascaded_tanks", data_dir, download)
    train, test = _call("cascaded_tanks", root, nlb.Cascaded_Tanks)
    ts = float(train.sampling_time)
    return (
        [_record("cascaded_tanks", train, "train", "train", sampling_time=ts)],
        [_record("cascaded_tanks", test, "test", "test", sampling_time=ts)],
    )


def fetch_emps(data_dir: _DataDir = None, *, download: bool = False) -> _Split:
    """Load the EMPS benchmark (electro-mechanical positioning system).

    Train (DATA_EMPS) and test (DATA_EMPS_PULSES) have 24841 samples each,
    ``n_init = 20`` on test. Input is the motor force (N), output the position
    (m); scores are reported in mm. The sampling time is the nominal 1 ms (the
    package's ``t[1] - t[0]`` is 1.00002 ms; the mean step of ``t`` is 1 ms).

    Parameters
    ----------
    data_dir : path-like, optional
        Folder in the ``nonlinear-benchmarks`` cache layout (``dir_placement``);
        see :func:`benchmark_dir` for the default.
    download : bool, default=False
        Let the package download missing files into ``data_dir``. Without it a
        missing file raises :class:`FileNotFoundError` and nothing is written.

    Returns
    -------
    train, test : list of xarray.Dataset
        Records that follow the contract of :func:`make_io_dataset`.

    Raises
    ------
    FileNotFoundError
        If the folder or an expected file is missing (and ``download`` is False).
    DataFormatError
        If a data file is truncated or malformed; the message names the file.
    """
    import nonlinear_benchmarks as nlb

    root = _prepare("emps", data_dir, download)
    train, test = _call("emps", root, nlb.EMPS)
    return (
        [_record("emps", train, "train", "train", sampling_time=1e-3)],
        [_record("emps", test, "test", "test", sampling_time=1e-3)],
    )


def fetch_ced(data_dir: _DataDir = None, *, download: bool = False) -> _Split:
    """Load the Coupled Electric Drives benchmark (uniform-input data set).

    Two experiments, low and high input amplitude: train = first 400 samples
    of each, test = last 100 (``n_init = 10``); sampling time 0.02 s. Scores are
    reported raw (pulse-counter units).

    Parameters
    ----------
    data_dir : path-like, optional
        Folder in the ``nonlinear-benchmarks`` cache layout (``dir_placement``);
        see :func:`benchmark_dir` for the default.
    download : bool, default=False
        Let the package download missing files into ``data_dir``. Without it a
        missing file raises :class:`FileNotFoundError` and nothing is written.

    Returns
    -------
    train, test : list of xarray.Dataset
        Records that follow the contract of :func:`make_io_dataset`.

    Raises
    ------
    FileNotFoundError
        If the folder or an expected file is missing (and ``download`` is False).
    DataFormatError
        If a data file is truncated or malformed; the message names the file.
    """
    import nonlinear_benchmarks as nlb

    root = _prepare("ced", data_dir, download)
    train, test = _call("ced", root, nlb.CED)
    amps = ("low_amplitude", "high_amplitude")
    return (
        [
            _record("ced", d, "train", f"train_{a}", sampling_time=0.02)
            for d, a in zip(train, amps, strict=True)
        ],
        [
            _record("ced", d, "test", f"test_{a}", sampling_time=0.02)
            for d, a in zip(test, amps, strict=True)
        ],
    )


@dataclass
class _Loaded:
    """A minimal stand-in for ``Input_output_data``."""

    u: Any
    y: Any
    sampling_time: float
    state_initialization_window_length: int | None


def fetch_f16(
    data_dir: _DataDir = None,
    *,
    output_index: int | Sequence[int] = (0, 1, 2),
    download: bool = False,
) -> _Split:
    """Load the F-16 ground vibration test benchmark.

    The input is the shaker force; the outputs are the accelerations selected
    by ``output_index`` (all three by default, as ``y_channel`` columns). Train
    holds 8 records (multisine and sine-sweep levels 1, 3, 5, 7), test the 6
    ``*_Validation`` records (levels 2, 4, 6); ``n_init = 50`` on test records;
    fs = 400 Hz. Records are named after their file (``FullMSine_Level1``).

    Parameters
    ----------
    data_dir : path-like, optional
        Folder in the ``nonlinear-benchmarks`` cache layout (``dir_placement``);
        see :func:`benchmark_dir` for the default.
    output_index : int or sequence of int, default=(0, 1, 2)
        Which of the three accelerometers become ``y`` channels.
    download : bool, default=False
        Let the package download missing files into ``data_dir``. Without it a
        missing file raises :class:`FileNotFoundError` and nothing is written.

    Returns
    -------
    train, test : list of xarray.Dataset
        Records that follow the contract of :func:`make_io_dataset`.

    Raises
    ------
    FileNotFoundError
        If the folder or an expected file is missing (and ``download`` is False).
    DataFormatError
        If a data file is truncated or malformed; the message names the file.
    """
    import nonlinear_benchmarks as nlb

    indices = [output_index] if isinstance(output_index, int) else list(output_index)
    if not indices or any(i not in (0, 1, 2) for i in indices):
        raise ValueError(f"output_index must be in {{0, 1, 2}}, got {output_index!r}")
    root = _prepare("f16", data_dir, download)
    loaded = [_call("f16", root, nlb.F16, output_index=i) for i in indices]
    labels = tuple(_SPECS["f16"].y_labels[i] for i in indices)
    result: _Split = ([], [])
    for part, split in ((0, "train"), (1, "test")):
        for records in zip(*(load[part] for load in loaded), strict=True):
            first = records[0]
            name = first.name.removeprefix("F16Data_").removesuffix(".mat")
            y = np.stack([np.asarray(r.y) for r in records], axis=1)
            data = _Loaded(first.u, y, float(first.sampling_time), 50)
            result[part].append(_record("f16", data, split, name, y_labels=labels))
    if not result[0] or not result[1]:
        folder = root / "F16" / "F16GVT_Files" / "BenchmarkData"
        raise DataFormatError(f"f16: no train or no validation .mat files in {folder}")
    return result


def fetch_bouc_wen(
    data_dir: _DataDir = None, *, n_init: int = 0, download: bool = False
) -> _Split:
    """Load the Bouc-Wen hysteresis benchmark's validation records.

    The benchmark ships no measured training data (it must be simulated), so
    train is empty and test holds ``test_multisine`` (8192 samples) and
    ``test_sinesweep`` (153000); fs = 750 Hz. The package defines no warm-up
    window, hence ``n_init = 0`` unless given.

    Parameters
    ----------
    data_dir : path-like, optional
        Folder in the ``nonlinear-benchmarks`` cache layout (``dir_placement``);
        see :func:`benchmark_dir` for the default.
    n_init : int, default=0
        Warm-up length stored on the test records.
    download : bool, default=False
        Let the package download missing files into ``data_dir``. Without it a
        missing file raises :class:`FileNotFoundError` and nothing is written.

    Returns
    -------
    train, test : list of xarray.Dataset
        Records that follow the contract of :func:`make_io_dataset`.

    Raises
    ------
    FileNotFoundError
        If the folder or an expected file is missing (and ``download`` is False).
    DataFormatError
        If a data file is truncated or malformed; the message names the file.
    """
    from nonlinear_benchmarks.not_splitted_benchmarks import BoucWen

    root = _prepare("bouc_wen", data_dir, download)
    records = _call("bouc_wen", root, BoucWen, train_test_split=False)
    names = ("test_multisine", "test_sinesweep")
    return [], [
        _record("bouc_wen", _Loaded(d.u, d.y, 1 / 750, None), "test", n, n_init=n_init)
        for d, n in zip(records, names, strict=True)
    ]


_LOADERS: dict[str, Callable[..., _Split]] = {
    "silverbox": fetch_silverbox,
    "wiener_hammerstein": fetch_wiener_hammerstein,
    "cascaded_tanks": fetch_cascaded_tanks,
    "emps": fetch_emps,
    "ced": fetch_ced,
    "f16": fetch_f16,
    "bouc_wen": fetch_bouc_wen,
}


def load_benchmark(name: str, data_dir: _DataDir = None, **kwargs: Any) -> _Split:
    """Load a benchmark by name.

    Parameters
    ----------
    name : str
        Case-insensitive name, one of :data:`BENCHMARKS` (``"wh"`` is an alias
        of ``"wiener_hammerstein"``; "-" and spaces count as "_").
    data_dir : path-like, optional
        Passed to the ``fetch_*`` function.
    **kwargs
        Further keyword arguments of the ``fetch_*`` function.

    Returns
    -------
    train, test : list of xarray.Dataset

    Raises
    ------
    ValueError
        If ``name`` is not a known benchmark; the message lists the valid names.
    """
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in _LOADERS:
        raise ValueError(
            f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARKS)} "
            "(alias: wh)"
        )
    return _LOADERS[key](data_dir, **kwargs)
