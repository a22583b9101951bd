"""Divergence: non-finite losses or gradients never leave NaN weights behind.

``Trainer.train_step`` skips a step whose loss or gradient norm is not finite.
After 3 consecutive skipped steps the estimator restores the last good epoch
snapshot, halves the learning rate (``lr_scale``), records a ``rollback``
event in ``history_events_`` and warns with a :class:`DivergenceWarning`;
after more than 5 roll-backs it stops training with a warning. NaN and inf
are injected through the ``Trainer.loss_hook`` test seam.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from sysid_msstcn import MSSTCNRegressor
from sysid_msstcn.config import NetworkConfig, TrainConfig
from sysid_msstcn.exceptions import DivergenceWarning
from sysid_msstcn.model import MSSTCN
from sysid_msstcn.training import Trainer, make_batch

torch.set_num_threads(1)

STEPS = 4
TINY = {
    "channels": (4, 4),
    "latent_dims": (1, 1),
    "strides": (1, 2),
    "dilations": ((1, 2), (1,)),
    "max_iter": 3,
    "steps_per_epoch": STEPS,
    "batch_size": 2,
    "window": 16,
    "device": "cpu",
    "random_state": 0,
}
LR = 1e-3
_rng = np.random.default_rng(0)
U = _rng.normal(size=(80, 2))
Y = np.convolve(U[:, 0], [0.5, 0.3])[:80]


def _poison(loss: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "nan":
        return loss * float("nan")
    if kind == "inf":
        return loss + float("inf")
    # finite loss whose gradient is NaN: d sqrt(x)/dx at 0 is inf, times 0
    return loss + torch.sqrt(0.0 * loss)


def _hook(bad_calls, kind: str = "nan"):
    """A loss hook that poisons the loss at the given call numbers (from 1)."""
    counter = itertools.count(1)
    seen: list[int] = []

    def hook(loss, iteration):
        n = next(counter)
        seen.append(n)
        return _poison(loss, kind) if n in bad_calls else loss

    hook.seen = seen
    return hook


@pytest.fixture
def inject(monkeypatch):
    """Install a loss hook on every Trainer the estimator creates."""

    def install(hook):
        original = Trainer.__init__

        def init(self, *args, **kwargs):
            original(self, *args, **kwargs)
            self.loss_hook = hook

        monkeypatch.setattr(Trainer, "__init__", init)
        return hook

    return install


def _finite_weights(est) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in est.model_.parameters())


def _fit(**params):
    return MSSTCNRegressor(**{**TINY, **params}).fit(U, Y)


class _Forever:
    """Contains every call number after the first ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __contains__(self, call: int) -> bool:
        return call > self.n


# ------------------------------------------------------------- trainer
def test_trainer_skips_a_non_finite_step_without_touching_weights():
    torch.manual_seed(0)
    cfg = NetworkConfig(
        n_outputs=1,
        n_inputs=1,
        channels=(4, 4),
        latent_dims=(1, 1),
        strides=(1, 2),
        dilations=((1, 2), (1,)),
    )
    trainer = Trainer(MSSTCN(cfg), TrainConfig(), torch.device("cpu"))
    batch = make_batch([Y[:16, None]] * 2, [U[:16, :1]] * 2)
    trainer.loss_hook = _hook({1, 2}, "nan")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for expected_bad in (1, 2):
        row = trainer.train_step(batch)
        assert row["skipped"] and math.isnan(row["loss"])
        assert trainer.consecutive_bad == expected_bad
    assert trainer.n_skipped == 2 and trainer.iteration == 0
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in trainer.model.parameters())
    row = trainer.train_step(batch)
    assert not row["skipped"] and math.isfinite(row["loss"])
    assert trainer.consecutive_bad == 0 and trainer.iteration == 1


# ------------------------------------------------------ estimator: recovery
@pytest.mark.parametrize("kind", ["nan", "inf", "nan_grad"])
def test_transient_non_finite_steps_roll_back_and_training_continues(inject, kind):
    # calls 6-9 are bad: the last three of epoch 2 trigger one roll-back, and
    # the fourth (first of epoch 3) is skipped without another
    hook = inject(_hook({6, 7, 8, 9}, kind))
    with pytest.warns(DivergenceWarning, match=r"rolled back.*halved") as rec:
        est = _fit()
    assert len([w for w in rec if w.category is DivergenceWarning]) == 1
    assert len(hook.seen) == TINY["max_iter"] * STEPS  # training went on
    assert est.n_iter_ == TINY["max_iter"]
    (event,) = est.history_events_
    assert event["event"] == "rollback" and event["epoch"] == 2
    assert event["lr_scale"] == 0.5 and event["skipped_steps"] == 3
    assert [row["n_skipped"] for row in est.history_] == [0, 3, 4]
    assert math.isfinite(est.history_[-1]["loss"])
    assert est.history_[-1]["lr"] <= 0.5 * LR  # the lowered rate is kept
    assert _finite_weights(est)
    assert np.all(np.isfinite(est.predict(U)))
    assert np.all(np.isfinite(est.simulate(U, n_samples=2, random_state=0)))


def test_persistent_nan_stops_with_a_warning_on_the_last_good_weights(inject):
    reference = _fit(max_iter=1)  # the same first epoch, without poison
    inject(_hook(_Forever(STEPS)))  # every step after epoch 1 is NaN
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        est = _fit(max_iter=50)
    messages = [str(w.message) for w in rec if w.category is DivergenceWarning]
    assert "kept diverging after 5 roll-backs" in messages[-1]
    assert len(messages) == 6 + 1  # six roll-backs, then the stop
    rollbacks = [e for e in est.history_events_ if e["event"] == "rollback"]
    assert [e["lr_scale"] for e in rollbacks] == [0.5**k for k in range(1, 7)]
    assert est.n_iter_ < 50  # stopped early
    assert _finite_weights(est)
    ref_state = reference.model_.state_dict()
    for key, value in est.model_.state_dict().items():
        assert torch.equal(value, ref_state[key]), key  # the last good state
    np.testing.assert_array_equal(est.predict(U), reference.predict(U))


def test_nan_from_the_first_step_keeps_the_initial_weights(inject):
    inject(_hook(_Forever(0)))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        est = _fit(max_iter=20)
    assert "kept diverging" in str(rec[-1].message)
    assert rec[-1].category is DivergenceWarning
    untrained = _fit(max_iter=0)
    for key, value in est.model_.state_dict().items():
        assert torch.equal(value, untrained.model_.state_dict()[key]), key
    assert _finite_weights(est) and np.all(np.isfinite(est.predict(U)))


def test_divergence_history_survives_save_load_and_partial_fit(inject, tmp_path):
    inject(_hook({2, 3, 4}))
    with pytest.warns(DivergenceWarning):
        est = _fit(max_iter=2)
    events = list(est.history_events_)
    assert len(events) == 1
    path = tmp_path / "diverged.safetensors"
    est.save(path)
    assert MSSTCNRegressor.load(path).history_events_ == events
    est.partial_fit(U, Y)  # the hook is clean after call 4
    assert est.history_events_ == events
    assert all(row["lr"] <= 0.5 * LR for row in est.history_[-TINY["max_iter"] :])
    assert _finite_weights(est)


def test_isolated_non_finite_steps_are_skipped_silently(inject):
    """Fewer than 3 bad steps in a row: skipped, counted, no roll-back."""
    inject(_hook({2, 5}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        est = _fit(max_iter=2)
    assert est.history_events_ == []
    assert est.history_[-1]["n_skipped"] == 2
    assert _finite_weights(est)


# ------------------------------------------------ former gaps (estimator)
def test_gap_fixed_exploding_weights_are_rolled_back_or_reported():
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        est = _fit(learning_rate=1e5, grad_clip=None, max_iter=1, steps_per_epoch=2)
    warned = any(w.category is DivergenceWarning for w in rec)
    assert warned or np.all(np.isfinite(est.predict(U)))


def test_gap_fixed_learning_rate_beyond_float32_is_handled():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = _fit(learning_rate=1e38, max_iter=1, steps_per_epoch=2)
    except ValueError as exc:
        assert "learning_rate" in str(exc)
    else:
        assert _finite_weights(est)
