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

from ._data import load_data
from ._parser import build_parser, main
from ._report import write_rows

__all__ = ["build_parser", "load_data", "main", "write_rows"]
