"""Decoupled weight decay (weight_decay): the optimiser step and the estimator."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from _tiny import (
    TINY_SYSID,
    TRAINER_NETWORK,
    fir_tanh_system,
    integrator_batch,
)

from sysid_msstcn import MSSTCNRegressor
from sysid_msstcn.config import TrainConfig
from sysid_msstcn.model import MSSTCN
from sysid_msstcn.training import Trainer


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_a_step_without_gradient_shrinks_every_weight_by_one_minus_lr_decay(
    weight_decay,
):
    """With a zero loss Adam moves nothing; AdamW multiplies each weight by
    exactly 1 - lr * weight_decay (the decay is decoupled from the gradient)."""
    torch.manual_seed(0)
    model = MSSTCN(TRAINER_NETWORK)
    config = TrainConfig(learning_rate=1e-2, weight_decay=weight_decay)
    trainer = Trainer(model, config, torch.device("cpu"))
    trainer.loss_hook = lambda loss, iteration: loss * 0.0
    before = [p.detach().clone() for p in model.parameters()]
    assert not trainer.train_step(integrator_batch(0))["skipped"]
    factor = 1.0 - 1e-2 * weight_decay
    for p, b in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), b * factor, rtol=1e-6, atol=0)


def _norm(est: MSSTCNRegressor) -> float:
    sq = sum(float((p.detach() ** 2).sum()) for p in est.model_.parameters())
    return math.sqrt(sq)


def test_estimator_weight_decay_shrinks_the_fitted_weights():
    u, y = fir_tanh_system()
    params = {**TINY_SYSID, "max_iter": 3, "steps_per_epoch": 4}
    plain = MSSTCNRegressor(**params).fit(u, y)
    zero = MSSTCNRegressor(**params, weight_decay=0.0).fit(u, y)
    decayed = MSSTCNRegressor(**params, weight_decay=20.0).fit(u, y)
    # 0 is plain Adam: the same fit to the last bit
    np.testing.assert_array_equal(plain.predict(u, y[:40]), zero.predict(u, y[:40]))
    assert _norm(decayed) < 0.9 * _norm(plain)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "1e-4", True])
def test_bad_weight_decay_is_named(bad):
    u, y = fir_tanh_system(200)
    with pytest.raises(ValueError, match="weight_decay must be a finite float >= 0"):
        MSSTCNRegressor(**TINY_SYSID, weight_decay=bad).fit(u, y)


def test_train_config_checks_weight_decay():
    with pytest.raises(ValueError, match="weight_decay"):
        TrainConfig(weight_decay=-1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        TrainConfig(weight_decay=float("nan"))


def test_a_warm_started_fit_uses_its_own_weight_decay():
    """The optimiser state carried into a warm-started fit brings its moments,
    not its hyperparameters: a new weight_decay takes effect (loading the
    first fit's Adam state would otherwise switch the decay off)."""
    u, y = fir_tanh_system()
    params = {**TINY_SYSID, "max_iter": 2, "steps_per_epoch": 4}
    first = MSSTCNRegressor(**params).fit(u, y)
    again = copy.deepcopy(first).set_params(warm_start=True, max_iter=4)
    again.fit(u, y)
    decayed = copy.deepcopy(first).set_params(
        warm_start=True, max_iter=4, weight_decay=20.0
    )
    decayed.fit(u, y)
    assert _norm(decayed) < 0.9 * _norm(again)


@pytest.mark.parametrize(("saved", "own"), [(0.0, 0.3), (0.3, 0.0), (0.3, 0.1)])
def test_trainer_loading_a_state_keeps_its_config_weight_decay(saved, own):
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    source = Trainer(MSSTCN(TRAINER_NETWORK), TrainConfig(weight_decay=saved), cpu)
    source.train_step(integrator_batch(0))
    target = Trainer(MSSTCN(TRAINER_NETWORK), TrainConfig(weight_decay=own), cpu)
    target.load_state_dict(source.state_dict())
    group = target.optimizer.param_groups[0]
    assert group["weight_decay"] == own
    assert group["decoupled_weight_decay"] is (own > 0)
    # the moments did come over
    for p_source, p_target in zip(
        source.model.parameters(), target.model.parameters(), strict=True
    ):
        torch.testing.assert_close(
            target.optimizer.state[p_target]["exp_avg"],
            source.optimizer.state[p_source]["exp_avg"],
        )
