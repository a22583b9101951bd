"""Objectives: linear free bits, threshold schedule, ELBO reporting, units, learning."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from sysid_msstcn.config import NetworkConfig
from sysid_msstcn.model import MSSTCN
from sysid_msstcn.objectives import (
    bits_per_dim,
    elbo_terms,
    free_bits_threshold,
    linear_free_bits,
    per_step,
    training_loss,
)

DT = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _value_and_grad(kappa: float, lam: float) -> tuple[float, float]:
    k = torch.tensor(kappa, dtype=DT, requires_grad=True)
    out = linear_free_bits(k, lam)
    (g,) = torch.autograd.grad(out, k)
    return out.item(), g.item()


def test_linear_free_bits_below_threshold():
    # kappa = 0.045, lambda = 0.5: value kappa^2 / lambda = 0.00405, gradient 0.09
    value, grad = _value_and_grad(0.045, 0.5)
    assert value == pytest.approx(0.00405, rel=1e-12)
    assert grad == pytest.approx(0.09, rel=1e-12)
    value, grad = _value_and_grad(0.2, 0.4)
    assert value == pytest.approx(0.1, rel=1e-12)
    assert grad == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("kappa", [0.5, 0.7, 3.0])
def test_linear_free_bits_at_or_above_threshold_is_unchanged(kappa):
    value, grad = _value_and_grad(kappa, 0.5)
    assert value == pytest.approx(kappa, rel=1e-12)
    assert grad == 1.0


@pytest.mark.parametrize("kappa", [0.0, 0.01, 2.0])
def test_linear_free_bits_zero_threshold_is_identity(kappa):
    value, grad = _value_and_grad(kappa, 0.0)
    assert value == kappa and grad == 1.0


def test_linear_free_bits_is_elementwise():
    kl = torch.tensor([[0.0, 0.1], [0.25, 1.0]], dtype=DT, requires_grad=True)
    out = linear_free_bits(kl, 0.25)
    expected = torch.tensor([[0.0, 0.04], [0.25, 1.0]], dtype=DT)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    torch.testing.assert_close(
        kl.grad, torch.tensor([[0.0, 0.4], [1.0, 1.0]], dtype=DT)
    )


def test_free_bits_threshold_halves_every_half_life():
    assert free_bits_threshold(0) == 0.5
    for n in range(1, 5):
        assert free_bits_threshold(n * 300_000) == pytest.approx(0.5 / 2**n)
    assert free_bits_threshold(1_000_000) == pytest.approx(0.5 * 0.5 ** (10 / 3))
    assert free_bits_threshold(50, initial=2.0, half_life=100) == pytest.approx(
        2.0 / math.sqrt(2)
    )
    # smooth and monotone: a continuous decay, not a staircase
    values = [free_bits_threshold(i, 1.0, 10) for i in range(30)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


@pytest.fixture
def tiny_output():
    torch.manual_seed(0)
    cfg = NetworkConfig(
        n_outputs=1,
        channels=(4, 4),
        latent_dims=(2, 1),
        strides=(1, 2),
        dilations=((1, 2), (1,)),
    )
    model = MSSTCN(cfg).double()
    y = torch.randn(3, 1, 10, dtype=DT)
    noise = [torch.randn(s, dtype=DT) for s in model.latent_shapes(3, 10)]
    return model, y, noise


def test_training_loss_elbo_objective_is_minus_mean_elbo(tiny_output):
    model, y, noise = tiny_output
    out = model(y, noise=noise)
    loss, terms = training_loss(out, threshold=0.5, objective="elbo")
    torch.testing.assert_close(loss, -terms["elbo"].mean())


def test_training_loss_linear_free_bits_and_reported_elbo(tiny_output):
    # the loss uses linear free bits; the reported ELBO never does
    model, y, noise = tiny_output
    out = model(y, noise=noise)
    lam = 0.5
    loss, terms = training_loss(out, threshold=lam)
    kl_eff = sum(
        (torch.clamp(k.detach() / lam, max=1.0) * k).sum((1, 2)) for k in out.kl
    )
    ll = out.log_lik.sum(-1)
    torch.testing.assert_close(loss, -(ll - kl_eff).mean())
    kl = sum(k.sum((1, 2)) for k in out.kl)
    torch.testing.assert_close(terms["elbo"], ll - kl)
    assert not torch.allclose(loss, -terms["elbo"].mean())  # some KL < lambda
    for lam2, objective in [(0.0, "linear_free_bits"), (5.0, "linear_free_bits")]:
        _, t2 = training_loss(out, threshold=lam2, objective=objective)
        torch.testing.assert_close(t2["elbo"], terms["elbo"])
    loss0, _ = training_loss(out, threshold=0.0)
    torch.testing.assert_close(loss0, -terms["elbo"].mean())


def test_training_loss_gradient_scales_small_kl(tiny_output):
    # gradients equal those of the hand-written linear free bits loss
    model, y, noise = tiny_output
    lam = 0.3
    out = model(y, noise=noise)
    loss, _ = training_loss(out, threshold=lam)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    out = model(y, noise=noise)
    kl_eff = sum(
        (torch.minimum(k.detach() / lam, torch.ones_like(k)) * k).sum((1, 2))
        for k in out.kl
    )
    ref = -(out.log_lik.sum(-1) - kl_eff).mean()
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r)


def test_training_loss_rejects_unknown_objective(tiny_output):
    model, y, noise = tiny_output
    with pytest.raises(ValueError, match="unknown objective"):
        training_loss(model(y, noise=noise), objective="iwae")


def test_per_step_and_bits_per_dim_on_known_values():
    elbo = torch.tensor([-100.0, -30.0, 5.0], dtype=DT)
    n = torch.tensor([50.0, 10.0, 0.0], dtype=DT)
    torch.testing.assert_close(
        per_step(elbo, n), torch.tensor([-2.0, -3.0, 5.0], dtype=DT)
    )
    # -ELBO / (steps * dims * ln 2): 20 * 3 * ln 2 nats over 20 steps, 3 dims = 1 bit
    e = torch.tensor([-60 * math.log(2), -120 * math.log(2)], dtype=DT)
    bpd = bits_per_dim(e, torch.tensor([20.0, 20.0], dtype=DT), 3)
    torch.testing.assert_close(bpd, torch.tensor([1.0, 2.0], dtype=DT))


def test_elbo_terms_shapes(tiny_output):
    model, y, noise = tiny_output
    terms = elbo_terms(model(y, noise=noise))
    assert terms["kl_per_level"].shape == (3, 2)
    assert all(terms[k].shape == (3,) for k in ("log_lik", "kl", "elbo", "n_steps"))
    assert torch.all(terms["kl_per_level"] >= 0)


# ------------------------------------------------------------------- learns
def _toy_batch(batch: int, n_steps: int, g: torch.Generator) -> torch.Tensor:
    """Slow square wave (switching every 32 steps) times a fast sinusoid + noise."""
    t = torch.arange(n_steps, dtype=torch.float32)
    shift = torch.randint(0, 64, (batch, 1), generator=g)
    phase = torch.rand(batch, 1, generator=g) * 2 * math.pi
    slow = torch.where(((t + shift) // 32) % 2 == 0, 1.0, -1.0)
    fast = torch.sin(2 * math.pi * t / 8 + phase)
    noise = 0.05 * torch.randn(batch, n_steps, generator=g)
    return (slow * fast + noise)[:, None, :]


def test_small_model_learns_a_toy_sequence():
    # the training loss at least halves within a few hundred Adam steps
    torch.manual_seed(0)
    cfg = NetworkConfig(
        n_outputs=1,
        channels=(8, 8),
        latent_dims=(2, 2),
        strides=(1, 4),
        dilations=((1, 2, 4), (1, 2)),
    )
    model = MSSTCN(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for it in range(300):
        loss, _ = training_loss(
            model(_toy_batch(8, 128, g)), free_bits_threshold(it, 0.1)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    initial = statistics.mean(losses[:10])
    final = statistics.mean(losses[-10:])
    assert initial > 0
    assert final <= initial / 2 or final <= initial - abs(initial) / 2, (initial, final)
