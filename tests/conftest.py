"""Shared fixtures: seeding, the data folder and device markers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sysid_msstcn._paths import DATA_ENV_VAR, default_data_dir

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

try:  # one intra-op thread: tiny tensors, and CI has only 2 cores
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


def _require(path: Path, what: str) -> Path:
    if path.exists():
        return path
    msg = f"{what} not found at {path}; set {DATA_ENV_VAR} to the shared data folder"
    if IN_CI:
        pytest.fail(f"CI=true and {msg}")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; a failure under CI=true when it is missing."""
    return _require(default_data_dir(), "shared data folder")


@pytest.fixture(scope="session")
def benchmark_data(shared_data: Path) -> Path:
    """The nonlinear-benchmarks cache folder."""
    return _require(shared_data / "nonlinear_benchmarks", "nonlinear benchmark data")


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover
        pass


def pytest_collection_modifyitems(config, items):  # noqa: D103
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
