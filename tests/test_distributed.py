"""Data-parallel training: 2 Gloo processes equal 1 process on the union batch.

Also checks the pieces the loop is made of against independent references:
the sync-free step against ``Trainer.train_step``, on-device skipping of
non-finite steps, sharding, batching, float32 heads and checkpoint files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sysid_msstcn.config import NetworkConfig, TrainConfig
from sysid_msstcn.distributed import (
    DistributedInfo,
    TrainStep,
    collate_batch,
    fit_distributed,
    float32_heads,
    latest_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
    synthetic_dataset,
)
from sysid_msstcn.distributed._data import _EpochSampler, _mix_seed
from sysid_msstcn.model import MSSTCN
from sysid_msstcn.training import Batch, Trainer, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

# a tiny model with an exogenous input, three levels and a Gaussian output
TINY = {
    "channels": [4, 4, 4],
    "latent_dims": [1, 2, 1],
    "strides": [1, 2, 2],
    "dilations": [[1, 2], [1], [1, 2]],
}
TINY_CONFIG = NetworkConfig(
    n_outputs=1,
    n_inputs=1,
    channels=(4, 4, 4),
    latent_dims=(1, 2, 1),
    strides=(1, 2, 2),
    dilations=((1, 2), (1,), (1, 2)),
)
N_SEQ, LENGTH, STEPS = 8, 16, 2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: more threads only add contention on shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two_ranks(tmp: Path, extra: list[str]) -> None:
    """Start 2 processes with the variables torchrun sets, wait for both."""
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
            PYTHONPATH=str(ROOT),
        )
        cmd = [
            sys.executable,
            "-m",
            "sysid_msstcn.distributed",
            "--preset",
            "sysid_small",
            "--network",
            json.dumps(TINY),
            "--data",
            "synthetic",
            "--n-sequences",
            str(N_SEQ),
            "--length",
            str(LENGTH),
            "--device",
            "cpu",
            "--log-every",
            "1",
            *extra,
        ]
        out = open(tmp / f"rank{rank}.log", "w")
        procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=out))
    for rank, p in enumerate(procs):
        try:
            rc = p.wait(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
        log = (tmp / f"rank{rank}.log").read_text()
        assert rc == 0, f"rank {rank} failed:\n{log[-3000:]}"


def _weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def _assert_same_weights(a: dict, b: dict, tol: float = 1e-10) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol, msg=k)


def _single(tmp: Path, **kw) -> None:
    data = synthetic_dataset(TINY_CONFIG, N_SEQ, LENGTH, seed=0)
    fit_distributed(
        TINY_CONFIG,
        TrainConfig(),
        data,
        max_steps=STEPS,
        checkpoint_dir=tmp,
        checkpoint_every=1,
        keep_checkpoints=0,
        device="cpu",
        sample_noise=True,
        dtype=torch.float64,
        log_every=1,
        **kw,
    )


def test_two_gloo_processes_match_one_process_on_the_union_batch(tmp_path):
    """After 1 (and 2) steps the 2x2 DDP weights equal the 1x4 weights."""
    ddp_dir, one_dir, acc_dir = (tmp_path / n for n in ("ddp", "one", "acc"))
    _launch_two_ranks(
        tmp_path,
        [
            "--batch-size",
            "2",
            "--max-steps",
            str(STEPS),
            "--checkpoint-dir",
            str(ddp_dir),
            "--checkpoint-every",
            "1",
            "--keep-checkpoints",
            "0",
            "--sample-noise",
            "--float64",
        ],
    )
    _single(one_dir, batch_size=4)
    _single(acc_dir, batch_size=2, accumulate=2)
    torch.manual_seed(0)  # the runs build their model from seed 0 as well
    init = MSSTCN(TINY_CONFIG).double().state_dict()
    for step in range(1, STEPS + 1):
        name = f"checkpoint_{step:09d}.pt"
        ddp = load_checkpoint(ddp_dir / name)
        assert ddp["world_size"] == 2 and ddp["global_batch"] == 4
        _assert_same_weights(ddp["model"], _weights(one_dir / name))
        _assert_same_weights(_weights(acc_dir / name), _weights(one_dir / name))
    moved = [not torch.equal(init[k], ddp["model"][k]) for k in init]
    assert sum(moved) > len(init) // 2  # the comparison is not vacuous
    assert len(ddp["rng_per_rank"]) == 2
    rows = [json.loads(x) for x in (ddp_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, STEPS + 1))


@pytest.mark.parametrize(
    ("input_noise", "weight_decay"), [(0.0, 0.0), (0.1, 0.0), (0.0, 0.5)]
)
def test_step_matches_trainer_train_step(input_noise, weight_decay):
    """The sync-free step follows Trainer.train_step (lr, free bits, Adam or
    AdamW)."""
    torch.manual_seed(1)
    ref = MSSTCN(TINY_CONFIG).double()
    ours = MSSTCN(TINY_CONFIG).double()
    ours.load_state_dict(ref.state_dict())
    cfg = TrainConfig(
        learning_rate=1e-2,
        lr_decay=0.5,
        lr_decay_steps=2,
        free_bits=0.3,
        free_bits_half_life=1,
        input_noise=input_noise,
        weight_decay=weight_decay,
    )
    trainer = Trainer(ref, cfg, torch.device("cpu"))
    step = TrainStep(ours, cfg, seed=7)
    items = synthetic_dataset(TINY_CONFIG, 3, LENGTH, seed=2)
    _, y, u, lengths = collate_batch(list(enumerate(items)))
    y, u = y.double(), u.double()
    for k in range(3):
        torch.manual_seed(_mix_seed(7, k, 0))  # the noise TrainStep draws
        trainer.train_step(Batch(y, u, lengths))
        step([(torch.arange(3), y, u, lengths)])
    _assert_same_weights(ref.state_dict(), ours.state_dict(), tol=1e-9)
    assert step.iteration == trainer.iteration == 3
    assert step.pop_stats()["lr"] == pytest.approx(trainer.learning_rate)


def test_non_finite_step_is_skipped_on_device():
    """A NaN batch leaves weights, moments and the schedules untouched."""
    model = MSSTCN(TINY_CONFIG)
    step = TrainStep(model, TrainConfig(), seed=0)
    items = synthetic_dataset(TINY_CONFIG, 2, LENGTH)
    idx, y, u, lengths = collate_batch(list(enumerate(items)))
    step([(idx, y, u, lengths)])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = [s["exp_avg"].clone() for s in step.optimizer.state.values()]
    y_bad = y.clone()
    y_bad[0, 0, 3] = float("nan")
    step([(idx, y_bad, u, lengths)])
    _assert_same_weights(before, model.state_dict(), tol=0)
    for m, s in zip(moments, step.optimizer.state.values(), strict=True):
        assert torch.equal(m, s["exp_avg"]) and int(s["step"]) == 1
    assert (step.step, step.n_skipped, step.iteration) == (2, 1, 1)
    row = step.pop_stats()
    assert row["skipped"] == 1 and all(
        map(torch.isfinite, map(torch.tensor, [row["loss"]]))
    )
    step([(idx, y, u, lengths)])
    assert step.iteration == 2 and not torch.equal(
        before["head.weight"], model.head.weight
    )


def test_result_trainer_keeps_training_after_a_skipped_last_step():
    """The returned Trainer holds no stale skip flag from the sync-free loop."""
    data = synthetic_dataset(TINY_CONFIG, 4, LENGTH)
    data[3] = (data[3][0], torch.full_like(data[3][1], float("nan")))
    res = fit_distributed(
        TINY_CONFIG, TrainConfig(), data, batch_size=2, device="cpu", log_every=1
    )
    assert [r["skipped"] for r in res.history if "loss" in r] == [0, 1]
    before = res.model.head.weight.detach().clone()
    _, y, u, lengths = collate_batch(list(enumerate(data[:2])))
    row = res.trainer.train_step(Batch(y, u, lengths))
    assert not row["skipped"] and not torch.equal(before, res.model.head.weight)


def test_shards_of_two_ranks_form_the_one_rank_batches():
    """Per step, the union of the ranks' items is the single-process batch."""
    data = list(range(13))
    one = list(_EpochSampler(data, DistributedInfo(0, 1), seed=3))
    ranks = [list(_EpochSampler(data, DistributedInfo(r, 2), seed=3)) for r in (0, 1)]
    b = 2  # per-rank batch; the single process uses 4
    for k in range(len(ranks[0]) // b):
        union = set(ranks[0][k * b : (k + 1) * b]) | set(ranks[1][k * b : (k + 1) * b])
        assert union == set(one[k * 2 * b : (k + 1) * 2 * b])
    resumed = _EpochSampler(data, DistributedInfo(1, 2), seed=3)
    resumed.set_epoch(0, skip=4)
    assert list(resumed) == ranks[1][4:] and len(resumed) == len(ranks[1]) - 4


def test_collate_batch_pads_and_reports_lengths():
    items = [(3, torch.ones(2, 5)), (8, torch.ones(2, 3))]
    idx, y, u, lengths = collate_batch(items)
    assert idx.tolist() == [3, 8] and u is None
    assert y.shape == (2, 2, 5) and lengths.tolist() == [5, 3]
    assert y[1, :, 3:].abs().sum() == 0
    idx, y, u, lengths = collate_batch([(0, (torch.zeros(1, 4), torch.ones(2, 4)))] * 2)
    assert u.shape == (2, 1, 4) and y.shape == (2, 2, 4) and lengths is None


def test_float32_heads_under_autocast():
    """The head convolutions compute in float32 under bf16 autocast."""
    torch.manual_seed(0)
    model = MSSTCN(TINY_CONFIG)
    y, u = torch.randn(2, 1, 8), torch.randn(2, 1, 8)
    keys = list(model.state_dict())
    seen = {}

    def hook(module, inputs, output):
        seen["x"], seen["out"] = inputs[0], output

    model.head.register_forward_hook(hook)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(y, u)
        assert seen["out"].dtype == torch.bfloat16  # without: rounded to bf16
        with float32_heads(model):
            out = model(y, u)
            assert list(model.state_dict()) == keys
    w, b = model.head.weight, model.head.bias
    expected = torch.nn.functional.conv1d(seen["x"].float(), w, b)
    assert seen["out"].dtype == torch.float32
    torch.testing.assert_close(seen["out"], expected, rtol=0, atol=0)
    assert all(lt.post_mean.dtype == torch.float32 for lt in out.latents)
    assert type(model.head) is torch.nn.Conv1d  # restored


def test_checkpoint_files_keep_prune_and_skip_damaged(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint({"step": step}, tmp_path, step, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_000000002.pt", "checkpoint_000000003.pt"]
    assert latest_checkpoint(tmp_path).name == "checkpoint_000000003.pt"
    (tmp_path / "checkpoint_000000004.pt").write_bytes(b"torn write")
    with pytest.warns(UserWarning, match="unreadable"):
        state = load_latest_checkpoint(tmp_path)
    assert state["step"] == 3
    assert load_latest_checkpoint(tmp_path / "missing") is None
