"""Weight averaging (ema_decay): the trainer's average and what the estimator keeps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _tiny import (
    TINY_SYSID,
    TRAINER_NETWORK,
    fir_tanh_system,
    integrator_batch,
    tail_free_run_rmse,
)

from sysid_msstcn import MSSTCNRegressor
from sysid_msstcn.config import TrainConfig
from sysid_msstcn.distributed import fit_distributed, synthetic_dataset
from sysid_msstcn.model import MSSTCN
from sysid_msstcn.training import Trainer


def _weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_trainer_average_is_the_exponential_moving_average_of_the_steps():
    torch.manual_seed(0)
    model = MSSTCN(TRAINER_NETWORK)
    decay = 0.7
    trainer = Trainer(model, TrainConfig(ema_decay=decay), torch.device("cpu"))
    expected = None
    for k in range(4):
        assert not trainer.train_step(integrator_batch(k))["skipped"]
        w = _weights(model)
        expected = (
            w
            if expected is None
            else [decay * e + (1 - decay) * x for e, x in zip(expected, w, strict=True)]
        )
    live = _weights(model)
    with trainer.averaged():
        for p, e in zip(model.parameters(), expected, strict=True):
            torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-7)
        inside = trainer.snapshot()
    # the training weights are back, untouched
    for p, w in zip(model.parameters(), live, strict=True):
        assert torch.equal(p.detach(), w)
    assert not all(
        torch.equal(inside["model"][k], v) for k, v in model.state_dict().items()
    )


def test_without_averaging_the_block_sees_the_training_weights():
    torch.manual_seed(0)
    model = MSSTCN(TRAINER_NETWORK)
    trainer = Trainer(model, TrainConfig(), torch.device("cpu"))
    trainer.train_step(integrator_batch(0))
    before = _weights(model)
    with trainer.averaged():
        assert all(
            torch.equal(p.detach(), w)
            for p, w in zip(model.parameters(), before, strict=True)
        )
    assert trainer.average is None


TINY = {**TINY_SYSID, "max_iter": 3, "steps_per_epoch": 4}


def test_estimator_keeps_the_averaged_weights_it_validated():
    from sysid_msstcn.benchmarking import validation_rmse

    u, y = fir_tanh_system()
    plain = MSSTCNRegressor(**TINY).fit(u, y)
    est = MSSTCNRegressor(**TINY, ema_decay=0.9).fit(u, y)
    # the kept weights are the ones whose validation free run was recorded:
    # recomputing that free run with the fitted model gives the same RMSE
    expected = tail_free_run_rmse(est, u, y)
    assert validation_rmse(est) == pytest.approx(expected, rel=1e-5)
    # averaging changed the weights (same seed, same batches)
    assert not np.array_equal(plain.predict(u, y[:40]), est.predict(u, y[:40]))
    # a warm-started fit averages again from the fitted weights
    est.set_params(warm_start=True, max_iter=1).fit(u, y)
    assert est.n_iter_ == 4


def test_ema_decay_is_checked():
    u, y = fir_tanh_system(200)
    with pytest.raises(ValueError, match="ema_decay"):
        MSSTCNRegressor(**TINY, ema_decay=1.0).fit(u, y)
    with pytest.raises(ValueError, match="ema_decay must be in"):
        TrainConfig(ema_decay=-0.1)
    data = synthetic_dataset(TRAINER_NETWORK, n_sequences=4, length=16)
    with pytest.raises(ValueError, match="not supported by fit_distributed"):
        fit_distributed(TRAINER_NETWORK, TrainConfig(ema_decay=0.9), data, batch_size=4)


def test_an_average_longer_than_the_patience_is_warned_about():
    u, y = fir_tanh_system()
    params = {**TINY, "max_iter": 1, "n_iter_no_change": 2}  # 2 x 4 = 8 steps
    with pytest.warns(UserWarning, match=r"averages over about 10 steps"):
        MSSTCNRegressor(**params, ema_decay=0.9).fit(u, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        MSSTCNRegressor(**params, ema_decay=0.8).fit(u, y)  # 5 steps
        MSSTCNRegressor(**params, ema_decay=0.9, early_stopping=False).fit(u, y)
