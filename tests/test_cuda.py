"""CUDA checks (skipped without a GPU): training steps, resume, streaming, estimator.

Run on a GPU machine with ``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from _tiny import TINY_SYSID, duffing_system, tail_free_run_rmse

from sysid_msstcn import EnsembleRegressor, LinearResidualRegressor, MSSTCNRegressor
from sysid_msstcn.benchmarking import validation_rmse
from sysid_msstcn.config import NetworkConfig, TrainConfig
from sysid_msstcn.distributed import (
    DistributedInfo,
    TrainStep,
    collate_batch,
    fit_distributed,
    float32_heads,
    init_distributed,
    synthetic_dataset,
)
from sysid_msstcn.model import MSSTCN
from sysid_msstcn.presets import preset_network_kwargs
from sysid_msstcn.rollout import rollout_loss
from sysid_msstcn.streaming import simulate

pytestmark = pytest.mark.gpu

SMALL = NetworkConfig(
    n_outputs=1,
    n_inputs=1,
    channels=(8, 8, 8),
    latent_dims=(2, 2, 2),
    strides=(1, 2, 2),
    dilations=((1, 2), (1, 2), (1, 2, 4)),
)


def _batch(config: NetworkConfig, n: int, length: int) -> tuple:
    return collate_batch(list(enumerate(synthetic_dataset(config, n, length))))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("preset", ["blizzard_fw2", "iam_ondb"])
def test_training_step_on_cuda_gives_finite_loss(preset, precision):
    """A few steps of a paper preset (small batch) in fp32 and bf16 autocast."""
    config = NetworkConfig(**preset_network_kwargs(preset))
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = MSSTCN(config).to(dev)
    train = TrainConfig(mixed_precision=precision == "bf16")
    step = TrainStep(model, train, DistributedInfo(device=dev))
    batch = _batch(config, 4, 800)
    with float32_heads(model):
        for _ in range(3):
            step([batch])
    row = step.pop_stats()
    assert np.isfinite(row["loss"]) and row["skipped"] == 0
    assert step.iteration == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bf16_loss_is_close_to_fp32():
    """Autocast changes the ELBO by well under a percent at initialisation."""
    dev = torch.device("cuda")
    config = NetworkConfig(**preset_network_kwargs("iam_ondb"))
    torch.manual_seed(0)
    model = MSSTCN(config).to(dev)
    _, y, _, _ = _batch(config, 8, 256)
    y = y.to(dev)
    noise = [torch.randn(s, device=dev) for s in model.latent_shapes(8, 256)]
    with torch.no_grad():
        ref = model(y, noise=noise).log_lik.sum()
        with torch.autocast("cuda", torch.bfloat16), float32_heads(model):
            low = model(y, noise=noise).log_lik.sum()
    assert abs(float(low - ref)) < 1e-2 * abs(float(ref))


def test_compiled_step_matches_eager_step():
    """Same loss and gradients (Adam's first steps would magnify rounding)."""
    dev = torch.device("cuda")
    steps = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = MSSTCN(SMALL).to(dev)
        # explicit noise: Inductor draws randn with its own generator
        step = TrainStep(model, TrainConfig(), compile=compiled, sample_noise=True)
        steps.append(step)
    batch = _batch(SMALL, 4, 64)
    for step in steps:
        step([batch])
    losses = [s.pop_stats()["loss"] for s in steps]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    grads = [[p.grad for p in s.model.parameters()] for s in steps]
    scale = max(float(g.abs().max()) for g in grads[0])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * scale)


def test_fit_distributed_on_cuda_resumes(tmp_path):
    assert init_distributed("auto").device == torch.device("cuda", 0)
    data = synthetic_dataset(SMALL, 16, 64)
    kw = {
        "batch_size": 4,
        "epochs": 10,
        "checkpoint_every": 2,
        "device": "cuda",
        "seed": 2,
        "log_every": 1,
        "num_workers": 1,
    }
    train = TrainConfig(mixed_precision=True)
    full = fit_distributed(SMALL, train, data, max_steps=6, **kw)
    fit_distributed(SMALL, train, data, max_steps=3, checkpoint_dir=tmp_path, **kw)
    resumed = fit_distributed(
        SMALL, train, data, max_steps=6, checkpoint_dir=tmp_path, resume=True, **kw
    )
    assert resumed.trainer.iteration == 6
    assert all(np.isfinite(r["loss"]) for r in resumed.history if "loss" in r)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-3)])
def test_streaming_simulation_on_cuda_equals_cpu(dtype, tol):
    torch.manual_seed(0)
    model = MSSTCN(SMALL).to(dtype).eval()
    g = torch.Generator().manual_seed(1)
    u = torch.randn(3, 1, 96, generator=g, dtype=dtype)
    y0 = torch.randn(3, 1, 20, generator=g, dtype=dtype)
    with torch.no_grad():
        y_cpu, p_cpu = simulate(model, 96, u=u, y_init=y0)
        model.cuda()
        y_gpu, p_gpu = simulate(model, 96, u=u.cuda(), y_init=y0.cuda())
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=tol, atol=tol)
    torch.testing.assert_close(p_gpu.cpu(), p_cpu, rtol=tol, atol=tol)


@pytest.mark.parametrize("gradient", ["full", "last"])
def test_rollout_on_cuda_equals_cpu(gradient):
    """The simulation-error term and its gradients, CUDA against the CPU."""
    torch.manual_seed(0)
    model = MSSTCN(SMALL).double()
    g = torch.Generator().manual_seed(2)
    y = torch.randn(3, 1, 120, generator=g, dtype=torch.float64)
    u = torch.randn(3, 1, 120, generator=g, dtype=torch.float64)
    lengths = torch.tensor([120, 110, 100])
    results = []
    for dev in ("cpu", "cuda"):
        model.to(dev).zero_grad()
        loss = rollout_loss(
            model, y.to(dev), u.to(dev), lengths.to(dev), 12, "nll", gradient
        )
        loss.sum().backward()
        # a copy: model.to() below moves the CPU run's gradient tensors too
        grads = [
            p.grad.to("cpu", copy=True)
            for p in model.parameters()
            if p.grad is not None
        ]
        results.append((loss.detach().cpu(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-9, atol=1e-9)
    for a, b in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("mixed_precision", [False, True])
def test_estimator_fitted_on_cuda_predicts_and_pickles(mixed_precision):
    rng = np.random.default_rng(0)
    u = rng.normal(size=(400, 1))
    y = np.convolve(u[:, 0], [0.5, 0.3, 0.1])[:400]
    est = MSSTCNRegressor(
        channels=(8, 8),
        latent_dims=(2, 2),
        strides=(1, 2),
        dilations=((1, 2), (1, 2)),
        max_iter=2,
        random_state=0,
        device="cuda",
        mixed_precision=mixed_precision,
    ).fit(u, y)
    assert est.device_.type == "cuda"
    assert all(np.isfinite(est.loss_curve_))
    pred = est.predict(u, y_init=y[:10])
    assert pred.shape == (400,) and np.isfinite(pred).all()
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.predict(u, y_init=y[:10]), pred, rtol=1e-5)


def test_weight_averaging_on_cuda_keeps_the_validated_weights():
    """ema_decay on CUDA: the averaged weights live on the GPU and are the
    ones whose validation free run was recorded."""
    u, y = duffing_system()
    params = {**TINY_SYSID, "max_iter": 3, "steps_per_epoch": 4, "device": "cuda"}
    est = MSSTCNRegressor(**params, ema_decay=0.9).fit(u, y)
    assert est.device_.type == "cuda"
    assert all(p.is_cuda for p in est.model_.parameters())
    assert validation_rmse(est) == pytest.approx(
        tail_free_run_rmse(est, u, y), rel=1e-4
    )


def test_linear_residual_on_cuda_is_the_sum_of_the_two_free_runs():
    """The hybrid with its residual model on CUDA: prediction = linear free
    run + residual free run, and a pickled copy predicts the same."""
    u, y = duffing_system()
    residual = MSSTCNRegressor(**{**TINY_SYSID, "device": "cuda"})
    model = LinearResidualRegressor(residual).fit(u[:400], y[:400])
    assert model.estimator_.device_.type == "cuda"
    ut, yt, n = u[400:], y[400:], 20
    y_lin = model.linear_simulation(ut, yt[:n])
    r = model.estimator_.predict(
        np.column_stack([ut, y_lin]), (yt[:n] - y_lin[:n])[:, None]
    )[:, 0]
    pred = model.predict(ut, y_init=yt[:n])
    np.testing.assert_allclose(pred, y_lin + r, rtol=0, atol=1e-12)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(again.predict(ut, y_init=yt[:n]), pred, rtol=1e-5)


def test_rollout_finetune_on_cuda_continues_and_stays_finite():
    """The benchmarks' second stage (warm start on the simulation error) on CUDA."""
    u, y = duffing_system()
    est = MSSTCNRegressor(**{**TINY_SYSID, "device": "cuda"}).fit(u, y)
    est.set_params(warm_start=True, max_iter=1, rollout_steps=4, rollout_loss="mse")
    est.fit(u, y)
    assert est.n_iter_ == 3 and np.isfinite(est.loss_curve_[-1])
    assert np.isfinite(est.predict(u, y_init=y[:40])).all()


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_ensemble_on_cuda_averages_its_members(n_jobs):
    """Members on CUDA, fitted here or in two worker processes sharing the
    GPU: the prediction is the mean of the members' free runs, and the
    pooled trajectories come from the members in order."""
    u, y = duffing_system()
    net = MSSTCNRegressor(**{**TINY_SYSID, "device": "cuda"})
    ens = EnsembleRegressor(net, n_members=2, n_jobs=n_jobs, random_state=0)
    ens.fit(u, y)
    assert all(m.device_.type == "cuda" for m in ens.estimators_)
    runs = [m.predict(u, y_init=y[:20]) for m in ens.estimators_]
    np.testing.assert_array_equal(ens.predict(u, y_init=y[:20]), np.mean(runs, 0))
    sims = ens.simulate(u, y[:20], n_samples=4, random_state=3)
    first = ens.estimators_[0].simulate(u, y[:20], n_samples=2, random_state=3)
    np.testing.assert_array_equal(sims[:2], first)
    assert np.isfinite(sims).all()
