"""Where the shared data folder lives (standard library only).

The benchmarks, examples and tests find real data through one setting: the
environment variable ``SYSID_MSSTCN_DATA``. Without it the folder
``../shared/data`` relative to the project root is used.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV_VAR", "default_data_dir", "project_root"]

DATA_ENV_VAR = "SYSID_MSSTCN_DATA"


def project_root() -> Path:
    """Return the root of the source checkout (the folder above the package)."""
    return Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """Return the shared data folder.

    Returns
    -------
    path : pathlib.Path
        ``$SYSID_MSSTCN_DATA`` if set, else ``<project root>/../shared/data``.
        The folder is not required to exist.
    """
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return (project_root().parent / "shared" / "data").resolve()
