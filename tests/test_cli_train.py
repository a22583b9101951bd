"""`sysid-msstcn train`: the command-line data-parallel training entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sysid_msstcn.cli import main

ARGS = [
    "--preset",
    "sysid_small",
    "--data",
    "synthetic",
    "--n-sequences",
    "4",
    "--length",
    "64",
    "--batch-size",
    "2",
    "--device",
    "cpu",
]


def _steps(folder):
    rows = [
        json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()
    ]
    return max(r.get("step", 0) for r in rows)


def test_train_writes_checkpoints_and_resumes(tmp_path):
    ckpt = tmp_path / "run"
    assert (
        main(["train", *ARGS, "--max-steps", "2", "--checkpoint-dir", str(ckpt)]) == 0
    )
    assert sorted(p.name for p in ckpt.glob("checkpoint_*.pt"))
    status = main(
        ["train", *ARGS, "--epochs", "2", "--checkpoint-dir", str(ckpt), "--resume"]
    )
    assert status == 0
    assert _steps(ckpt) == 4  # resumed after step 2 and finished epoch 2


def test_train_weight_decay_reaches_the_optimiser(tmp_path, capsys):
    from sysid_msstcn.distributed import load_latest_checkpoint

    ckpt = tmp_path / "wd"
    argv = ["train", *ARGS, "--max-steps", "1", "--checkpoint-dir", str(ckpt)]
    assert main([*argv, "--weight-decay", "0.25"]) == 0
    group = load_latest_checkpoint(ckpt)["optimizer"]["param_groups"][0]
    assert group["weight_decay"] == 0.25
    assert group["decoupled_weight_decay"] is True
    assert main([*argv, "--weight-decay", "-1"]) == 2
    err = capsys.readouterr().err
    assert "weight_decay must be a finite float >= 0" in err
    assert "Traceback" not in err


def test_train_bad_argument_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--preset", "sysid_small", "--data", "synthetic", "--bogus"])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_train_under_torchrun_two_processes(tmp_path):
    ckpt = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        "-m",
        "sysid_msstcn",
        "train",
        *ARGS,
        "--max-steps",
        "2",
        "--checkpoint-dir",
        str(ckpt),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 process(es)" in out.stderr + out.stdout
    assert list(ckpt.glob("checkpoint_*.pt"))
