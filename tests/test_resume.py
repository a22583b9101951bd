"""A run killed with SIGKILL and resumed ends where an uninterrupted run ends.

The killed run is a real subprocess that kills itself (SIGKILL, no clean-up)
one step after a checkpoint, in the middle of an epoch; the resumed run must
reproduce the uninterrupted run bit for bit: weights, optimiser moments,
counters, validation scores and every logged loss.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sysid_msstcn.config import NetworkConfig, TrainConfig
from sysid_msstcn.distributed import (
    fit_distributed,
    latest_checkpoint,
    synthetic_dataset,
)
from sysid_msstcn.training import Trainer, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

CONFIG = NetworkConfig(
    n_outputs=2,
    channels=(4, 4),
    latent_dims=(1, 2),
    strides=(1, 2),
    dilations=((1, 2), (1,)),
    likelihood="gmm",
    n_components=2,
)
TRAIN = TrainConfig(learning_rate=1e-2, input_noise=0.05, grad_clip=5.0)
# 12 sequences, 4 per step: 3 steps per epoch; checkpoints at 2, 4, 6 and 8
OPTIONS = {
    "batch_size": 4,
    "max_steps": 8,
    "epochs": 100,
    "checkpoint_every": 2,
    "keep_checkpoints": 2,
    "device": "cpu",
    "seed": 3,
    "log_every": 1,
}
KILL_AT = 5  # one step after the checkpoint of step 4 (mid-epoch 2)


def datasets() -> tuple[list, list]:
    """Training and validation sequences."""
    data = synthetic_dataset(CONFIG, 16, 16, seed=11)
    return data[:12], data[12:]


@pytest.fixture(autouse=True, scope="module")
def _deterministic():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(n)


def _fit(directory: Path, **kw):
    train, valid = datasets()
    return fit_distributed(
        CONFIG, TRAIN, train, valid, checkpoint_dir=directory, **{**OPTIONS, **kw}
    )


def _run_and_kill(directory: Path) -> subprocess.CompletedProcess:
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import torch
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from test_resume import KILL_AT, _fit

        def kill(row):
            if row.get("step") == KILL_AT and "loss" in row:
                os.kill(os.getpid(), signal.SIGKILL)

        _fit(sys.argv[1], callback=kill)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script, str(directory)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )


def _rows(directory: Path) -> list[dict]:
    lines = (directory / "log.jsonl").read_text().splitlines()
    drop = {"steps_per_s", "sequences_per_s", "elapsed_s"}
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in lines]


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    proc = _run_and_kill(killed_dir)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert latest_checkpoint(killed_dir).name == "checkpoint_000000004.pt"
    cut = load_checkpoint(latest_checkpoint(killed_dir))
    assert (cut["step"], cut["epoch"], cut["step_in_epoch"]) == (4, 1, 1)

    full = _fit(full_dir)
    resumed = _fit(killed_dir, resume=True)

    a = load_checkpoint(full_dir / "checkpoint_000000008.pt")
    b = load_checkpoint(killed_dir / "checkpoint_000000008.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[k], sb[k]), k
    for k in ("iteration", "epoch", "step_in_epoch", "threshold", "lr_scale"):
        assert a[k] == b[k], k
    assert a["epoch"] == 2 and a["iteration"] == 8
    assert full.best_valid_elbo == resumed.best_valid_elbo is not None
    # the log of the resumed run is the uninterrupted log, step 5 not doubled
    assert _rows(killed_dir) == _rows(full_dir)
    assert [r["step"] for r in _rows(full_dir) if "loss" in r] == list(range(1, 9))
    # a checkpoint is a Trainer state as well
    trainer = Trainer(resumed.model, TRAIN, torch.device("cpu"))
    trainer.load_state_dict(b)
    assert trainer.iteration == 8 and (killed_dir / "best.pt").exists()


def test_resume_without_checkpoint_starts_afresh(tmp_path):
    fresh = _fit(tmp_path / "a", max_steps=2)
    resumed = _fit(tmp_path / "b", max_steps=2, resume=True)
    for k, v in fresh.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    again = _fit(tmp_path / "b", max_steps=2, resume=True)  # already finished
    assert again.trainer.iteration == 2


def test_resume_refuses_another_network(tmp_path):
    _fit(tmp_path, max_steps=1)
    other = NetworkConfig(**{**CONFIG.__dict__, "channels": (6, 6)})
    train, _ = datasets()
    with pytest.raises(ValueError, match="another network"):
        fit_distributed(
            other, TRAIN, train, checkpoint_dir=tmp_path, resume=True, **OPTIONS
        )
