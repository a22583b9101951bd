"""Seeding, devices and CPU threads, and conversion to JSON-friendly values."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "check_random_state_seed",
    "jsonable",
    "resolve_device",
    "seed_everything",
    "set_cpu_threads",
]


def set_cpu_threads(n: int) -> None:
    """Use ``n`` CPU threads in PyTorch and in numpy's BLAS (the baselines).

    Parameters
    ----------
    n : int
        Threads, at least 1 (the caller checks and words the error).
    """
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(n)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a device specification into a :class:`torch.device`.

    Parameters
    ----------
    device : str, torch.device or None, default="auto"
        ``"auto"`` (or None) picks CUDA when available, else CPU. Any string
        accepted by :class:`torch.device` is also accepted.

    Returns
    -------
    device : torch.device
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available")
    return dev


def check_random_state_seed(random_state: int | np.random.Generator | None) -> int:
    """Draw an integer seed from ``random_state``.

    Parameters
    ----------
    random_state : int, numpy Generator or None
        None draws fresh entropy; an int is returned unchanged.

    Returns
    -------
    seed : int
        A seed in ``[0, 2**31)``.
    """
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0] % (2**31))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31))
    if isinstance(random_state, (int, np.integer)) and not isinstance(
        random_state, bool
    ):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        return int(random_state) % (2**31)
    raise ValueError(
        f"random_state must be None, an int or a numpy Generator, "
        f"got {type(random_state).__name__}"
    )


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch and return a CPU torch generator.

    Parameters
    ----------
    seed : int
        The seed.

    Returns
    -------
    generator : torch.Generator
        A CPU generator seeded with ``seed``.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def jsonable(obj: Any) -> Any:
    """A copy of ``obj`` that :func:`json.dumps` accepts.

    Dicts get string keys, tuples and arrays become lists, NumPy scalars
    Python numbers, paths strings; a NumPy ``Generator`` (a ``random_state``
    that cannot be written down) becomes None.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.random.Generator):
        return None
    return str(obj) if isinstance(obj, Path) else obj
