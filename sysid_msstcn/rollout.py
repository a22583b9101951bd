"""Differentiable multi-step free run over training windows.

Free-run simulation feeds the model's own predictive means back as outputs.
Trained on the one-step (teacher-forced) ELBO alone, a model never sees its
own errors as inputs, and small one-step errors can grow into a large
simulation error. This module computes the free run of the last ``k`` steps
of each training window *in parallel and with gradients*, so that the
simulation error can be part of the training loss (like the
simulation-error loss of SUBNET and of output-error models).

The free run is the fixed point of the map ``y_hat -> mean(model(y_hat))``
on the free-run positions (measured outputs elsewhere). Because the model
is causal, the prediction at step t only reads outputs before t, so after
``j`` parallel passes the first ``j`` free-run steps are exact: ``k``
passes give exactly the free run over ``k`` steps, the same numbers the
streaming simulator produces (with latents at their prior means), at the
cost of ``k`` forward passes of the window.

Shape legend: ``B`` batch, ``C`` channels, ``T`` steps, ``P`` predictive
parameters per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ROLLOUT_GRADIENTS, ROLLOUT_LOSSES
from .model import MSSTCN
from .streaming import simulate

__all__ = ["free_run_mask", "rollout", "rollout_loss"]


def free_run_mask(lengths: torch.Tensor, n_time: int, n_steps: int) -> torch.Tensor:
    """Positions that run free: the last ``n_steps`` valid steps of each row.

    Parameters
    ----------
    lengths : torch.Tensor of shape (B,)
        Valid lengths of the (padded) windows.
    n_time : int
        T, the padded length.
    n_steps : int
        k >= 1. The first step of a window always stays measured (it is the
        warm-up the free run starts from), so a window of length n runs
        free over its last ``min(k, n - 1)`` steps.

    Returns
    -------
    torch.Tensor of shape (B, T), bool
    """
    t = torch.arange(n_time, device=lengths.device)[None, :]  # (1, T)
    start = (lengths - n_steps).clamp_min(1)[:, None]  # (B, 1)
    return (t >= start) & (t < lengths[:, None])


def rollout(
    model: MSSTCN,
    y: torch.Tensor,
    u: torch.Tensor | None,
    lengths: torch.Tensor | None,
    n_steps: int,
    gradient: str = "full",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictive parameters of a k-step free run at the end of each window.

    Parameters
    ----------
    model : MSSTCN
        The bare network (under data parallelism, not its
        DistributedDataParallel wrapper, which expects one forward pass per
        backward pass: the gradients of these passes reach the same
        parameters and are all-reduced with those of the wrapper's pass).
    y : torch.Tensor of shape (B, C_y, T)
        Measured outputs; the free-run positions only serve as targets.
    u : torch.Tensor of shape (B, C_u, T) or None
        Exogenous inputs (None for a model without inputs).
    lengths : torch.Tensor of shape (B,) or None
        Valid lengths of the (padded) windows (None: all T, as in the
        model's forward pass).
    n_steps : int
        k >= 1: free-run steps, and parallel passes (at most T - 1 passes:
        a window of n steps runs free over at most its last n - 1).
    gradient : {"full", "last"}, default="full"
        ``"full"``: k parallel passes, differentiated through all of them
        (back-propagation through the simulation: how an error propagates
        through the fed-back outputs is trained). ``"last"``: the fed-back
        outputs come from the streaming simulator as constants and one
        differentiable pass predicts from them (the same values up to
        rounding; the model learns to predict from its own outputs, at the
        cost of one pass plus a streaming simulation of the window).

    Returns
    -------
    params : torch.Tensor of shape (B, P, T)
        Predictive parameters of the last pass: at the free-run positions,
        those of the exact free run from the measured outputs before them
        (latents at their prior means, predictive means fed back); zeros
        before the receptive field of the first free-run step, which the
        passes leave out.
    mask : torch.Tensor of shape (B, T), bool
        The free-run positions (:func:`free_run_mask`).
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if gradient not in ROLLOUT_GRADIENTS:
        raise ValueError(
            f"unknown rollout gradient {gradient!r}; choose one of {ROLLOUT_GRADIENTS}"
        )
    B, _, T = y.shape
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.long, device=y.device)
    mask = free_run_mask(lengths, T, n_steps)  # (B, T)
    n_passes = max(1, min(n_steps, T - 1))  # no window runs longer
    # the free run reads at most a receptive field before its first step:
    # drop older samples, at a multiple of the total stride so that every
    # level keeps its block boundaries
    start = (lengths - n_steps).clamp_min(1)  # (B,) first free-run step
    first = int(start.min())
    cfg = model.config
    crop = max(0, first - cfg.receptive_field) // cfg.total_stride * cfg.total_stride
    y_c, lengths_c = y[..., crop:], lengths - crop  # (B, C_y, T - crop)
    u_c = None if u is None else u[..., crop:]
    free = mask[:, None, crop:]  # (B, 1, T - crop)
    if gradient == "last":
        # the fed-back outputs from the streaming simulator, as constants
        with torch.no_grad(), torch.autocast(y.device.type, enabled=False):
            fed, _ = simulate(
                model,
                y_c.shape[-1],
                None if u_c is None else u_c.detach(),
                teacher=y_c.detach(),
                teacher_until=start - crop,
            )
        y_hat = torch.where(free, fed.to(y.dtype), y_c)
        n_passes = 1
    else:
        y_hat = y_c
    for j in range(n_passes):
        out = model(y_c, u_c, lengths_c, latent="prior_mean", y_input=y_hat)
        if j + 1 < n_passes:
            mean = model.likelihood.mean(out.params)  # (B, C_y, T - crop)
            y_hat = torch.where(free, mean.to(y.dtype), y_c)
    params = F.pad(out.params, (crop, 0))  # (B, P, T), zeros before the crop
    return params, mask


def rollout_loss(
    model: MSSTCN,
    y: torch.Tensor,
    u: torch.Tensor | None,
    lengths: torch.Tensor | None,
    n_steps: int,
    kind: str = "mse",
    gradient: str = "full",
) -> torch.Tensor:
    """Simulation-error loss of a k-step free run, per sequence.

    Parameters
    ----------
    model, y, u, lengths, n_steps, gradient
        See :func:`rollout`.
    kind : {"mse", "nll"}, default="mse"
        ``"mse"``: half the squared error of the predictive mean, summed
        over the free-run steps and output channels (the negative
        log-likelihood of a unit-variance Gaussian, up to a constant, in
        the units of ``y``). ``"nll"``: the negative log-likelihood of the
        measured outputs under the model's own predictive distribution at
        the free-run steps (the k-step-ahead predictive likelihood).

    Returns
    -------
    torch.Tensor of shape (B,)
        Loss per sequence (summed over its free-run steps).
    """
    if kind not in ROLLOUT_LOSSES:
        raise ValueError(
            f"unknown rollout loss {kind!r}; choose one of {ROLLOUT_LOSSES}"
        )
    params, mask = rollout(model, y, u, lengths, n_steps, gradient)
    likelihood = model.likelihood
    if kind == "mse":
        err = likelihood.mean(params) - y  # (B, C_y, T)
        per_step = 0.5 * err.square().sum(1)  # (B, T)
    else:
        per_step = -likelihood.log_prob(params, y)  # (B, T)
    return torch.where(mask, per_step, 0.0).sum(-1)  # an inf outside stays out
