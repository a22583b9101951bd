"""ELBO assembly, linear free bits and unit conversions (pure functions).

The model returns named terms (:class:`~sysid_msstcn.model.ModelOutput`);
this module turns them into the reported ELBO (never changed by free bits)
and the minimised training loss.
"""

from __future__ import annotations

import math

import torch

from .model import ModelOutput

__all__ = [
    "bits_per_dim",
    "elbo_terms",
    "free_bits_threshold",
    "linear_free_bits",
    "per_step",
    "training_loss",
]


def linear_free_bits(kl: torch.Tensor, threshold: float) -> torch.Tensor:
    """Linear free bits (Appendix A.3, eq. A.3), elementwise.

    Each KL element is weighted by ``min(stopgrad(kl) / threshold, 1)``:
    below the threshold its value is kl**2 / threshold and its gradient is
    scaled by kl / threshold; above it, it is unchanged.

    Parameters
    ----------
    kl : torch.Tensor
        Elementwise KL values (nats), any shape.
    threshold : float
        lambda >= 0; 0 returns ``kl`` unchanged.

    Returns
    -------
    torch.Tensor
        Same shape as ``kl``.
    """
    if threshold <= 0:
        return kl
    weight = torch.clamp(kl.detach() / threshold, max=1.0)
    return weight * kl


def free_bits_threshold(
    iteration: int, initial: float = 0.5, half_life: int = 300_000
) -> float:
    """Exponentially decayed free-bits threshold: initial * 0.5**(it/half_life).

    Parameters
    ----------
    iteration : int
        Training iterations done so far.
    initial : float, default=0.5
        Threshold at iteration 0 (nats per latent element).
    half_life : int, default=300000
        Iterations per halving (the paper's value).

    Returns
    -------
    float
    """
    return float(initial) * 0.5 ** (iteration / half_life)


def elbo_terms(output: ModelOutput) -> dict[str, torch.Tensor]:
    """Per-sequence ELBO and its parts in nats.

    Parameters
    ----------
    output : ModelOutput

    Returns
    -------
    dict
        ``log_lik`` (B,), ``kl`` (B,) total, ``kl_per_level`` (B, L) bottom
        level first, ``elbo`` (B,) = log_lik - kl, ``n_steps`` (B,) valid
        steps per sequence.
    """
    log_lik = output.log_lik.sum(-1)  # (B,)
    if output.latents:
        kl_levels = torch.stack([k.sum((1, 2)) for k in output.kl], dim=1)  # (B, L)
    else:
        kl_levels = log_lik.new_zeros(log_lik.shape[0], 0)
    kl = kl_levels.sum(1)
    return {
        "log_lik": log_lik,
        "kl": kl,
        "kl_per_level": kl_levels,
        "elbo": log_lik - kl,
        "n_steps": output.mask.sum(-1),
    }


def training_loss(
    output: ModelOutput,
    threshold: float = 0.0,
    objective: str = "linear_free_bits",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Minimised loss: mean over sequences of -(log-lik - weighted KL).

    Parameters
    ----------
    output : ModelOutput
    threshold : float, default=0.0
        Free-bits threshold (ignored for ``objective="elbo"``).
    objective : {"linear_free_bits", "elbo"}

    Returns
    -------
    loss : torch.Tensor, scalar
        Nats per sequence, averaged over the batch.
    terms : dict
        :func:`elbo_terms` of the output (the true ELBO, no free bits).
    """
    terms = elbo_terms(output)
    if objective == "elbo" or not output.latents:
        kl_eff = terms["kl"]
    elif objective == "linear_free_bits":
        kl_eff = sum(linear_free_bits(k, threshold).sum((1, 2)) for k in output.kl)
    else:
        raise ValueError(f"unknown objective {objective!r}")
    loss = -(terms["log_lik"] - kl_eff).mean()
    return loss, terms


def per_step(value_per_sequence: torch.Tensor, n_steps: torch.Tensor) -> torch.Tensor:
    """Convert a per-sequence quantity (nats) to nats per time step."""
    return value_per_sequence / n_steps.clamp_min(1)


def bits_per_dim(
    elbo_per_sequence: torch.Tensor, n_steps: torch.Tensor, n_dims: int
) -> torch.Tensor:
    """Negative ELBO in bits per data dimension (lower is better)."""
    return -elbo_per_sequence / (n_steps.clamp_min(1) * n_dims * math.log(2))
