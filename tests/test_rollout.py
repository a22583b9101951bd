"""Differentiable multi-step free run (``sysid_msstcn.rollout``).

The k parallel passes must give exactly the streaming simulator's free run
over the last k steps of each window, with gradients, and the estimator's
``rollout_steps`` must train on it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny import TINY_ESTIMATOR, build, stable_system, tiny_config

from sysid_msstcn import MSSTCNRegressor
from sysid_msstcn.config import TrainConfig
from sysid_msstcn.rollout import free_run_mask, rollout, rollout_loss
from sysid_msstcn.streaming import simulate
from sysid_msstcn.training import Trainer, make_batch


def _data(B: int, T: int, n_in: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(B, 1, T, generator=g, dtype=torch.float64)
    u = torch.randn(B, n_in, T, generator=g, dtype=torch.float64)
    return y, u


def _batch(B: int, T: int):
    """A float32 training batch of _data's rows."""
    y, u = _data(B, T)
    return make_batch(
        [y[b, 0, :, None].float().numpy() for b in range(B)],
        [u[b, 0, :, None].float().numpy() for b in range(B)],
    )


def test_free_run_mask_known_values():
    mask = free_run_mask(torch.tensor([6, 4, 2]), 6, 3)
    expected = torch.tensor(
        [
            [0, 0, 0, 1, 1, 1],
            [0, 1, 1, 1, 0, 0],  # a short row keeps its first step measured
            [0, 1, 0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


@pytest.mark.parametrize(
    "preset, resampling",
    [("sysid_small", None), ("sysid_default", "fixed"), ("blizzard_fw2", None)],
)
@pytest.mark.parametrize("gradient", ["full", "last"])
def test_rollout_equals_the_streaming_free_run(preset, resampling, gradient):
    """k passes = the streaming simulator run free from t = n - k, per row."""
    model = build(tiny_config(preset, n_inputs=1, resampling=resampling, max_outputs=1))
    # longer than k + receptive field (the passes drop the older samples)
    # for sysid_small; the last row is shorter than k + 1
    T, k = 200, 13
    y, u = _data(3, T)
    for lengths in (torch.tensor([200, 190, 151]), torch.tensor([200, 151, 10])):
        _check_against_streaming(model, y, u, lengths, k, gradient)


def _check_against_streaming(model, y, u, lengths, k, gradient):
    with torch.no_grad():
        params, mask = rollout(model, y, u, lengths, k, gradient)
    cfg = model.config
    first = int(lengths.min()) - k
    if first - cfg.receptive_field >= cfg.total_stride:
        # the passes dropped the samples the free run cannot read
        assert torch.equal(
            params[..., : cfg.total_stride],
            torch.zeros_like(params[..., : cfg.total_stride]),
        )
    for b, n in enumerate(lengths.tolist()):
        start = max(n - k, 1)
        assert mask[b].nonzero().flatten().tolist() == list(range(start, n))
        _, ref = simulate(
            model,
            n,
            u[b : b + 1, :, :n],
            teacher=y[b : b + 1, :, :n],
            teacher_until=torch.tensor([start]),
        )
        torch.testing.assert_close(
            params[b, :, start:n], ref[0, :, start:n], rtol=0, atol=1e-10
        )


def test_last_pass_gradient_reaches_only_through_one_pass():
    """ "last": same loss value as "full", a different (one-pass) gradient."""
    model = build(tiny_config("sysid_small"))
    y, u = _data(2, 90, seed=2)
    lengths = torch.tensor([90, 90])
    grads = {}
    for gradient in ("full", "last"):
        model.zero_grad()
        loss = rollout_loss(model, y, u, lengths, 12, "mse", gradient).sum()
        loss.backward()
        grads[gradient] = (
            loss.detach(),
            [
                torch.zeros_like(p) if p.grad is None else p.grad.clone()
                for p in model.parameters()
            ],
        )
    torch.testing.assert_close(grads["full"][0], grads["last"][0], rtol=0, atol=1e-10)
    diff = sum(
        float((a - b).abs().sum())
        for a, b in zip(grads["full"][1], grads["last"][1], strict=True)
    )
    assert diff > 1e-6


def test_rollout_loss_values_and_gradients():
    model = build(tiny_config("sysid_small"))
    y, u = _data(2, 40)
    lengths = torch.tensor([40, 31])
    params, mask = rollout(model, y, u, lengths, 9)
    mse = rollout_loss(model, y, u, lengths, 9, "mse")
    lik = model.likelihood
    ref_mse = (0.5 * (lik.mean(params) - y).square().sum(1) * mask).sum(-1)
    torch.testing.assert_close(mse, ref_mse)
    nll = rollout_loss(model, y, u, lengths, 9, "nll")
    ref_nll = (-lik.log_prob(params, y) * mask).sum(-1)
    torch.testing.assert_close(nll, ref_nll)
    nll.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_rollout_loss_rejects_unknown_kind_and_bad_steps():
    model = build(tiny_config("sysid_small"), dtype=torch.float32)
    y, u = _data(1, 20)
    y, u = y.float(), u.float()
    with pytest.raises(ValueError, match="unknown rollout loss 'mae'"):
        rollout_loss(model, y, u, torch.tensor([20]), 3, "mae")
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        rollout(model, y, u, torch.tensor([20]), 0)
    with pytest.raises(ValueError, match="unknown rollout gradient 'some'"):
        rollout(model, y, u, torch.tensor([20]), 3, "some")


def test_crop_is_exercised_by_the_streaming_comparison():
    """sysid_small's receptive field (58) is shorter than 190 - 13 samples."""
    cfg = tiny_config("sysid_small", n_inputs=1, max_outputs=1)
    assert 151 - 13 - cfg.receptive_field >= cfg.total_stride


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("rollout_steps", -1, "rollout_steps must be an int >= 0"),
        ("rollout_steps", 2.5, "rollout_steps must be an int >= 0"),
        ("rollout_steps", True, "rollout_steps must be an int >= 0"),
        ("rollout_weight", float("nan"), "rollout_weight must be"),
        ("rollout_loss", "mae", "unknown rollout_loss 'mae'"),
        ("rollout_gradient", "none", "unknown rollout_gradient 'none'"),
    ],
)
def test_train_config_checks_the_rollout_settings(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_trainer_adds_the_weighted_rollout_term():
    """loss = one-step objective + weight * mean rollout term, same batch."""
    batch = _batch(4, 36)
    rows = {}
    for name, cfg in {
        "plain": TrainConfig(),
        "rollout": TrainConfig(rollout_steps=6, rollout_weight=2.5),
    }.items():
        model = build(tiny_config("sysid_small"), dtype=torch.float32, seed=3)
        rows[name] = Trainer(model, cfg, torch.device("cpu")).train_step(batch)
    plain, roll = rows["plain"], rows["rollout"]
    assert "rollout" not in plain and roll["rollout"] > 0
    assert roll["elbo"] == pytest.approx(plain["elbo"], rel=1e-6)
    assert roll["loss"] == pytest.approx(
        plain["loss"] + 2.5 * roll["rollout"], rel=1e-5
    )


def test_the_rollout_term_reaches_the_gradients():
    """Same batch and weights: weight 0 and weight 5 give other updates."""
    batch = _batch(4, 36)
    grads = {}
    for weight in (0.0, 5.0):
        model = build(tiny_config("sysid_small"), dtype=torch.float32, seed=3)
        cfg = TrainConfig(rollout_steps=6, rollout_weight=weight, grad_clip=None)
        trainer = Trainer(model, cfg, torch.device("cpu"))
        trainer.optimizer.step = lambda: None  # keep the gradients, not the step
        torch.manual_seed(0)
        trainer.train_step(batch)
        grads[weight] = torch.cat(
            [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        )
    assert not torch.allclose(grads[0.0], grads[5.0])


def test_distributed_trainer_refuses_the_rollout_term():
    from sysid_msstcn.distributed import TrainStep

    model = build(tiny_config("sysid_small"), dtype=torch.float32)
    with pytest.raises(ValueError, match="one-step objective only"):
        TrainStep(model, TrainConfig(rollout_steps=4))


def _system(n: int = 400, seed: int = 0):
    return stable_system(n, seed, pole=0.8)


@pytest.mark.parametrize("kind, gradient", [("mse", "full"), ("nll", "last")])
def test_estimator_rollout_training_curve_drops(kind, gradient):
    """The simulation term of the training loss falls over the epochs."""
    u, y = _system()
    est = MSSTCNRegressor(
        **{
            **TINY_ESTIMATOR,
            "max_iter": 6,
            "steps_per_epoch": 8,
            "learning_rate": 3e-3,
            "early_stopping": False,
        },
        rollout_steps=10,
        rollout_loss=kind,
        rollout_gradient=gradient,
        random_state=0,
    ).fit(u, y)
    curve = [row["rollout"] for row in est.history_]
    assert len(curve) == 6
    assert np.mean(curve[-2:]) < np.mean(curve[:2])
    assert est.get_params()["rollout_steps"] == 10


@pytest.mark.parametrize(
    "params, match",
    [
        ({"rollout_steps": -2}, "rollout_steps must be an int >= 0"),
        ({"rollout_steps": 2.5}, "rollout_steps must be an int >= 0"),
        ({"rollout_weight": -1.0}, "rollout_weight must be a finite float >= 0"),
        ({"rollout_loss": "mae"}, "rollout_loss must be one of"),
        ({"rollout_gradient": "all"}, "rollout_gradient must be one of"),
    ],
)
def test_estimator_rejects_bad_rollout_parameters(params, match):
    u, y = _system(100)
    with pytest.raises(ValueError, match=match):
        MSSTCNRegressor(**TINY_ESTIMATOR, **params).fit(u, y)


def test_warm_start_fine_tunes_with_the_rollout_term():
    """A warm-started fit uses the current training settings."""
    u, y = _system()
    est = MSSTCNRegressor(
        **{**TINY_ESTIMATOR, "early_stopping": False}, random_state=0
    ).fit(u, y)
    assert all("rollout" not in row for row in est.history_)
    weights = {k: v.clone() for k, v in est.model_.state_dict().items()}
    est.set_params(warm_start=True, rollout_steps=5, learning_rate=2e-3).fit(u, y)
    new = est.history_[-TINY_ESTIMATOR["max_iter"] :]
    assert all(row["rollout"] > 0 for row in new)
    assert est.train_config_.rollout_steps == 5
    assert est.train_config_.learning_rate == 2e-3
    moved = est.model_.state_dict()
    assert any(not torch.equal(weights[k], moved[k]) for k in weights)


def test_a_free_run_shorter_than_the_receptive_field_warns():
    u, y = _system()
    est = MSSTCNRegressor(**{**TINY_ESTIMATOR, "window": 16}, rollout_steps=12)
    with pytest.warns(UserWarning, match="fewer than the receptive field"):
        est.fit(u, y)


def test_fine_tuning_that_only_hurts_keeps_the_entry_weights():
    """Continued training: the entry weights are a candidate for the best."""
    u, y = _system()
    est = MSSTCNRegressor(**TINY_ESTIMATOR, random_state=0).fit(u, y)
    entry = {k: v.clone() for k, v in est.model_.state_dict().items()}
    n_before, kept_before = est.n_iter_, est.best_epoch_
    # a learning rate that makes the simulation worse in one epoch
    est.set_params(warm_start=True, learning_rate=0.05, max_iter=1).fit(u, y)
    assert est.n_iter_ == n_before + 1 and not est.history_events_
    assert est.history_[-1]["val_sim_rmse"] > est.history_[-2]["val_sim_rmse"]
    # the kept epoch is the one the first fit kept, not the last one it ran
    assert est.best_epoch_ == kept_before
    for key, value in est.model_.state_dict().items():
        torch.testing.assert_close(value, entry[key], rtol=0, atol=0)


def test_fine_tuning_twice_names_the_epoch_whose_weights_are_kept():
    """Two continued fits that only hurt: both keep the first fit's weights,
    and ``best_epoch_`` names that fit's kept epoch (not the epoch count at
    the entry of the second), so the validation score read for it is the
    kept weights' own."""
    from sysid_msstcn.benchmarking import validation_rmse

    u, y = _system()
    est = MSSTCNRegressor(**TINY_ESTIMATOR, random_state=0).fit(u, y)
    kept, n_first = est.best_epoch_, est.n_iter_
    score = validation_rmse(est)
    entry = {k: v.clone() for k, v in est.model_.state_dict().items()}
    for _ in range(2):
        est.set_params(warm_start=True, learning_rate=0.05, max_iter=1).fit(u, y)
    assert est.n_iter_ == n_first + 2
    assert all(
        row["val_sim_rmse"] > est.history_[kept - 1]["val_sim_rmse"]
        for row in est.history_[n_first:]
    )
    assert est.best_epoch_ == kept
    assert validation_rmse(est) == score
    for key, value in est.model_.state_dict().items():
        torch.testing.assert_close(value, entry[key], rtol=0, atol=0)


def test_a_failed_continued_fit_keeps_the_training_settings(monkeypatch):
    u, y = _system()
    est = MSSTCNRegressor(**TINY_ESTIMATOR, random_state=0).fit(u, y)
    before = est.train_config_

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Trainer, "train_step", boom)
    with pytest.raises(RuntimeError, match="out of memory"):
        est.set_params(warm_start=True, rollout_steps=5).fit(u, y)
    assert est.train_config_ is before
