"""Checkpoints: atomic saves, the latest one, random-generator state."""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from ..training import atomic_torch_save, load_checkpoint
from ._common import _CKPT_RE


def save_checkpoint(
    state: dict, directory: str | os.PathLike, step: int, keep: int = 2
) -> Path:
    """Write ``checkpoint_<step>.pt`` atomically and prune older ones.

    Parameters
    ----------
    state : dict
        Tensors, numbers, strings and containers of them only.
    directory : str or path-like
    step : int
    keep : int, default=2
        Checkpoints kept (the newest); 0 keeps all.

    Returns
    -------
    path : pathlib.Path
    """
    directory = Path(directory)
    path = directory / f"checkpoint_{int(step):09d}.pt"
    atomic_torch_save(state, path)
    if keep > 0:
        for old in _checkpoints(directory)[keep:]:
            old.unlink(missing_ok=True)
    return path


def _checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files of a folder, newest step first."""
    if not directory.is_dir():
        return []
    found = [
        (int(m[1]), p) for p in directory.iterdir() if (m := _CKPT_RE.match(p.name))
    ]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """Path of the newest ``checkpoint_<step>.pt`` in a folder, or None."""
    found = _checkpoints(Path(directory))
    return found[0] if found else None


def load_latest_checkpoint(directory: str | os.PathLike) -> dict | None:
    """Load the newest readable checkpoint of a folder (None when none).

    A file that cannot be read is reported and the next older one is tried
    (writes are atomic, so this only happens after outside damage).

    Parameters
    ----------
    directory : str or path-like

    Returns
    -------
    state : dict or None
        As written by :class:`TrainingRun`; ``state["path"]`` is the file.
    """
    from ..exceptions import DataFormatError

    for path in _checkpoints(Path(directory)):
        try:
            state = load_checkpoint(path)
        except DataFormatError as exc:
            warnings.warn(f"skipping unreadable checkpoint: {exc}", stacklevel=2)
            continue
        state["path"] = str(path)
        return state
    return None


def _rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.as_tensor(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": torch.tensor(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())
