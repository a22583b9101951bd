"""Result files (JSON, CSV, netCDF) and console tables."""

from __future__ import annotations

import json
from pathlib import Path

from .._utils import jsonable
from ._common import UsageError


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
    ("ljung_box_p", "Ljung-Box p", ".2g"),
    ("ljung_box_p_one_step", "Ljung-Box p (1 step)", ".2g"),
    ("input_corr_outside", "input corr. outside", ".0%"),
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
