"""Free-run simulation of a whole record with the streaming simulator."""

from __future__ import annotations

import contextlib

import torch

from ..distributions import GaussianLikelihood
from ..model import MSSTCN
from ._simulator import StreamingSimulator


@contextlib.contextmanager
def _one_thread(device: torch.device):
    """Run the step loop on one CPU thread (restored afterwards).

    A step is a few dozen products of tiny matrices: intra-op threads cannot
    speed them up, and on a busy machine their synchronisation made a step
    up to 15 times slower (measured with 2 threads under load).
    """
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@torch.no_grad()
def simulate(
    model: MSSTCN,
    n_steps: int,
    u: torch.Tensor | None = None,
    y_init: torch.Tensor | None = None,
    latent: str = "prior_mean",
    output: str = "mean",
    noise: list[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    batch: int | None = None,
    teacher: torch.Tensor | None = None,
    teacher_until: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Free-run simulation (or ancestral sampling) with cached streaming.

    Parameters
    ----------
    model : MSSTCN
    n_steps : int
        Total length T, warm-up included.
    u : torch.Tensor of shape (B, C_u, T), optional
    y_init : torch.Tensor of shape (B, C_y, n0), optional
        Measured outputs of the warm-up, returned unchanged.
    latent : {"prior", "prior_mean"}, default="prior_mean"
    output : {"mean", "sample"}, default="mean"
        Value fed back and returned: the predictive mean (deterministic) or
        a draw from the predictive distribution.
    noise : list of torch.Tensor, optional
        Fixed latent noise per level (see :class:`StreamingSimulator`).
    generator : torch.Generator, optional
    batch : int, optional
        Batch size when neither u nor y_init is given.
    teacher : torch.Tensor of shape (B, C_y, T), optional
        Feed these outputs instead of the model's own (for exactness
        checks against the parallel forward pass).
    teacher_until : torch.Tensor of shape (B,), optional
        With ``teacher``: element b is teacher-forced only for steps
        ``t < teacher_until[b]`` and runs free afterwards (k-step-ahead
        prediction from several origins in one batch).

    Returns
    -------
    y : torch.Tensor of shape (B, C_y, T)
    params : torch.Tensor of shape (B, P, T)
        Predictive parameters (zeros over the warm-up).
    """
    if output not in ("mean", "sample"):
        raise ValueError(f"output must be 'mean' or 'sample', got {output!r}")
    if y_init is not None and batch is None:
        batch = y_init.shape[0]
    sim = StreamingSimulator(model, u, latent, noise, generator, batch)
    cfg, lik = model.config, model.likelihood
    n0 = 0 if y_init is None else y_init.shape[-1]
    if n0 > n_steps:
        raise ValueError(f"y_init has {n0} steps but only {n_steps} are simulated")
    if n0:
        sim.prime(y_init)
    # the Gaussian mean is the first half of the parameters: slice, no softplus
    gauss_mean = output == "mean" and isinstance(lik, GaussianLikelihood)
    # ... and the head already writes it where the fed-back value goes
    feed_mean = gauss_mean and teacher is None
    c_y = cfg.n_outputs
    forced = None
    if teacher is not None:
        steps = teacher.unbind(-1)  # (B, C_y) views
        if teacher_until is not None:
            forced = torch.arange(n_steps, device=sim.device) < teacher_until[:, None]
            forced = forced.to(sim.dtype)[:, None, :]  # (B, 1, T)
    ys = torch.zeros(sim.B, c_y, n_steps, device=sim.device, dtype=sim.dtype)
    params = torch.zeros(
        sim.B, lik.n_params, n_steps, device=sim.device, dtype=sim.dtype
    )
    if n0:
        ys[..., :n0] = y_init
    start = n0
    with _one_thread(sim.device):
        for t in range(n0, n_steps):
            p = sim._params()  # (B, P)
            if feed_mean:
                y_t = None
            elif teacher is not None and forced is None:
                y_t = steps[t]
            else:
                if gauss_mean:
                    y_t = p[:, :c_y]
                else:
                    p3 = p[..., None]
                    y_t = (
                        lik.mean(p3) if output == "mean" else lik.sample(p3, generator)
                    )
                    y_t = y_t[..., 0]
                if forced is not None:
                    y_t = torch.lerp(y_t, steps[t], forced[..., t])
            sim._push(y_t)
            if sim._chunk_full() or t == n_steps - 1:  # copy out a chunk
                p_c, y_c = sim._recent(t + 1 - start)
                params[..., start : t + 1] = p_c
                ys[..., start : t + 1] = y_c
                start = t + 1
    return ys, params
