"""Data-parallel ``MSSTCNRegressor.fit`` (torch.distributed, Gloo on the CPU).

Two processes are started with the variables ``torchrun`` sets (or by
``torchrun`` itself for the command line); each trains a tiny model and
writes what it ended with. The reference is a one-process fit with the same
parameters and the same global ``batch_size``: data parallelism must only
split the work, not change the result.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import TINY_CLI_NETWORK, TINY_ESTIMATOR, stable_system

from sysid_msstcn import MSSTCNRegressor
from sysid_msstcn.training import Trainer

ROOT = Path(__file__).resolve().parents[1]

# TINY of test_estimator.py, two epochs of three steps; input noise "auto"
# (0.3: the data have an input) and a validation tail simulated every epoch
PARAMS = {**TINY_ESTIMATOR, "steps_per_epoch": 3, "random_state": 0}
NAN_CALL = 1  # training step whose loss is made NaN in the second fit
TIMEOUT_S = 180  # a hang fails the test instead of blocking the run

# Run by every rank: (1) a batch the ranks cannot share, (2) the compared fit
# and a partial_fit after it, (3) a fit with the simulation-error term, (4) a
# fit whose loss is NaN on rank 1 alone at one step.
WORKER = """
import json, os, pickle, sys
import numpy as np, torch
torch.set_num_threads(1)
import torch.distributed as dist
from sysid_msstcn import MSSTCNRegressor
from sysid_msstcn.training import Trainer

folder = sys.argv[1]
params = json.loads(open(os.path.join(folder, "params.json")).read())
params = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
          if isinstance(v, list) else v for k, v in params.items()}
data = np.load(os.path.join(folder, "data.npz"))
u, y = data["u"], data["y"]
rank = int(os.environ["RANK"])
out = {}
try:
    MSSTCNRegressor(**{**params, "batch_size": 3}).fit(u, y)
except ValueError as exc:
    out["indivisible"] = str(exc)
est = MSSTCNRegressor(**params).fit(u, y)
torch.save(est.model_.state_dict(), os.path.join(folder, f"weights{rank}.pt"))
out["world_size"] = est.world_size_
out["history"] = list(est.history_)
out["group_alive"] = dist.is_initialized()
if rank == 0:
    with open(os.path.join(folder, "estimator.pkl"), "wb") as fh:
        pickle.dump(est, fh)
est.set_params(max_iter=1).partial_fit(u, y)  # a second DDP on the same network
torch.save(est.model_.state_dict(), os.path.join(folder, f"warm{rank}.pt"))
est = MSSTCNRegressor(**{**params, "rollout_steps": 4}).fit(u, y)
torch.save(est.model_.state_dict(), os.path.join(folder, f"rollout{rank}.pt"))
original = Trainer.__init__

def init(self, *args, **kwargs):
    original(self, *args, **kwargs)
    calls = iter(range(10**6))
    bad = int(os.environ["NAN_CALL"])
    self.loss_hook = lambda loss, it: (
        loss * float("nan") if next(calls) == bad and rank == 1 else loss
    )

Trainer.__init__ = init
est = MSSTCNRegressor(**params).fit(u, y)
torch.save(est.model_.state_dict(), os.path.join(folder, f"nan{rank}.pt"))
out["n_skipped"] = est.history_[-1]["n_skipped"]
with open(os.path.join(folder, f"rank{rank}.json"), "w") as fh:
    json.dump(out, fh)
dist.destroy_process_group()
"""


def _system(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stable nonlinear system (as in test_estimator.py): u, y of (n, 1)."""
    return stable_system(n, seed, pole=0.7)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)


def _no_torchrun_env(monkeypatch) -> None:
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """Run WORKER on 2 Gloo processes; the folder of what they wrote."""
    folder = tmp_path_factory.mktemp("two_ranks")
    u, y = _system()
    np.savez(folder / "data.npz", u=u, y=y)
    (folder / "params.json").write_text(json.dumps(PARAMS))
    (folder / "worker.py").write_text(WORKER)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = _env(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            NAN_CALL=str(NAN_CALL),
        )
        log = open(folder / f"rank{rank}.log", "w")  # noqa: SIM115
        cmd = [sys.executable, str(folder / "worker.py"), str(folder)]
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=log), log))
    try:
        for rank, (proc, log) in enumerate(procs):
            try:
                rc = proc.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                rc = "timeout"
            log.close()
            text = (folder / f"rank{rank}.log").read_text()
            assert rc == 0, f"rank {rank} ended with {rc}:\n{text[-3000:]}"
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
    return folder


def _one_process(**params) -> MSSTCNRegressor:
    u, y = _system()
    return MSSTCNRegressor(**{**PARAMS, "distributed": False, **params}).fit(u, y)


def _assert_same(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


def _rank_json(folder: Path, rank: int) -> dict:
    return json.loads((folder / f"rank{rank}.json").read_text())


def test_fit_on_two_processes_equals_one_process_fit(two_ranks):
    """Both ranks end with the same weights, those of one process."""
    w0 = torch.load(two_ranks / "weights0.pt")
    w1 = torch.load(two_ranks / "weights1.pt")
    _assert_same(w0, w1, atol=0.0)
    one = _one_process()
    _assert_same(w0, one.model_.state_dict(), atol=1e-6)
    init = _one_process(max_iter=0).model_.state_dict()
    moved = [not torch.allclose(init[k], w0[k], atol=1e-4) for k in init]
    assert sum(moved) > len(init) // 2  # the comparison is not vacuous
    r0, r1 = _rank_json(two_ranks, 0), _rank_json(two_ranks, 1)
    assert r0["world_size"] == r1["world_size"] == 2 and one.world_size_ == 1
    assert r0["history"] == r1["history"]  # rank 0's epoch rows everywhere
    assert len(r0["history"]) == len(one.history_) == PARAMS["max_iter"]
    for mine, ref in zip(r0["history"], one.history_, strict=True):
        for key in ("loss", "elbo", "val_elbo", "val_sim_rmse"):
            assert mine[key] == pytest.approx(ref[key], rel=1e-5), key


def test_partial_fit_continues_data_parallel_as_one_process(two_ranks):
    w0 = torch.load(two_ranks / "warm0.pt")
    _assert_same(w0, torch.load(two_ranks / "warm1.pt"), atol=0.0)
    one = _one_process()
    u, y = _system()
    one.set_params(max_iter=1).partial_fit(u, y)
    _assert_same(w0, one.model_.state_dict(), atol=1e-6)


def test_rollout_training_on_two_processes_equals_one_process(two_ranks):
    """The k-step free-run term (bare-network passes) is all-reduced too."""
    w0 = torch.load(two_ranks / "rollout0.pt")
    _assert_same(w0, torch.load(two_ranks / "rollout1.pt"), atol=0.0)
    one = _one_process(rollout_steps=4)
    _assert_same(w0, one.model_.state_dict(), atol=1e-6)
    plain = torch.load(two_ranks / "weights0.pt")
    assert not all(torch.allclose(plain[k], w0[k], atol=1e-6) for k in w0)


def test_non_finite_loss_on_one_rank_skips_the_step_on_every_rank(
    two_ranks, monkeypatch
):
    """A NaN loss on rank 1 alone: both ranks skip, as one process would."""
    w0 = torch.load(two_ranks / "nan0.pt")
    w1 = torch.load(two_ranks / "nan1.pt")
    _assert_same(w0, w1, atol=0.0)
    assert _rank_json(two_ranks, 0)["n_skipped"] == 1
    assert _rank_json(two_ranks, 1)["n_skipped"] == 1
    original = Trainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls = iter(range(10**6))
        self.loss_hook = lambda loss, it: (
            loss * float("nan") if next(calls) == NAN_CALL else loss
        )

    monkeypatch.setattr(Trainer, "__init__", init)
    one = _one_process()
    assert one.history_[-1]["n_skipped"] == 1
    _assert_same(w0, one.model_.state_dict(), atol=1e-6)


def test_batch_size_not_divisible_by_the_world_size_is_a_clear_error(two_ranks):
    for rank in range(2):
        msg = _rank_json(two_ranks, rank)["indivisible"]
        assert "batch_size=3 must be divisible by the number of processes (2)" in msg


def test_fitted_estimator_pickles_and_keeps_the_group_alive(two_ranks):
    """Rank 0's estimator pickles (bare network) and predicts elsewhere."""
    assert _rank_json(two_ranks, 0)["group_alive"]
    with open(two_ranks / "estimator.pkl", "rb") as fh:
        est = pickle.load(fh)  # noqa: S301 - written by this test
    assert est.world_size_ == 2
    assert type(est.model_).__name__ == "MSSTCN"
    u, y = _system()
    assert np.isfinite(est.predict(u, y_init=y[:10])).all()


def test_distributed_true_without_a_process_group_is_a_clear_error(monkeypatch):
    _no_torchrun_env(monkeypatch)
    u, y = _system()
    with pytest.raises(ValueError, match="distributed=True, but torch.distributed"):
        MSSTCNRegressor(**{**PARAMS, "distributed": True}).fit(u, y)


@pytest.mark.parametrize("value", ["yes", None, 2])
def test_distributed_parameter_is_checked(value):
    u, y = _system()
    with pytest.raises(ValueError, match="distributed must be 'auto', True or"):
        MSSTCNRegressor(**{**PARAMS, "distributed": value}).fit(u, y)


def test_torchrun_with_one_process_trains_alone(monkeypatch):
    """WORLD_SIZE=1: no process group is created, even with True."""
    _no_torchrun_env(monkeypatch)
    for key, value in dict(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1"
    ).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    u, y = _system()
    est = MSSTCNRegressor(**{**PARAMS, "distributed": True, "max_iter": 1})
    assert est.fit(u, y).world_size_ == 1
    assert not torch.distributed.is_initialized()


@pytest.mark.slow
def test_cli_fit_under_torchrun_writes_one_model_from_rank_0(tmp_path):
    u, y = _system(200)
    np.savez(tmp_path / "data.npz", u=u, y=y)
    model = tmp_path / "model.safetensors"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "-m",
        "sysid_msstcn",
        "fit",
        str(tmp_path / "data.npz"),
        *TINY_CLI_NETWORK,
        "--max-iter",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "4",
        "--window",
        "32",
        "--device",
        "cpu",
        "--output",
        str(model),
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=_env()
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("saved ") == 1  # rank 1 wrote nothing
    assert "on 2 processes" in out.stdout
    assert out.stderr.count("fitting MS-STCN") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data.npz",
        "model.json",
        "model.safetensors",
    ]
    est = MSSTCNRegressor.load(model, device="cpu")
    assert est.world_size_ == 2 and est.n_iter_ == 1
    assert json.loads(model.with_suffix(".json").read_text())["processes"] == 2
