"""The device-side training step (data parallel, mixed precision)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import TrainConfig
from ..model import MSSTCN
from ..objectives import elbo_terms
from ..training import make_optimizer
from ._common import _N_STATS, _TERMS
from ._data import _mix_seed, _sample_noise
from ._process import DistributedInfo


# ------------------------------------------------------ mixed precision
class _Float32Conv1d(nn.Conv1d):
    """A Conv1d that ignores autocast: float32 input, weights and output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


@contextlib.contextmanager
def float32_heads(model: MSSTCN) -> Iterator[MSSTCN]:
    """Run the distribution-parameter convolutions in float32 (context).

    Inside the context the output head and every prior and posterior 1x1
    convolution of ``model`` compute in float32 even under autocast, so the
    log-likelihood and the KL (eq. 5 and A.3) see float32 parameters. The
    parameters and the state dict are unchanged; on exit the modules are
    restored.

    Parameters
    ----------
    model : MSSTCN

    Yields
    ------
    model : MSSTCN
    """
    convs = [model.head]
    for level in model.top_down:
        convs += [
            getattr(level, n) for n in ("prior", "posterior") if hasattr(level, n)
        ]
    swapped = [c for c in convs if type(c) is nn.Conv1d]
    for conv in swapped:
        conv.__class__ = _Float32Conv1d
    try:
        yield model
    finally:
        for conv in swapped:
            conv.__class__ = nn.Conv1d


# ------------------------------------------------------------------- step
def _linear_free_bits(kl: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Eq. A.3 with a tensor threshold (> 0): no host synchronisation."""
    return kl * torch.clamp(kl.detach() / threshold, max=1.0)


class _Objective(nn.Module):
    """The model plus its loss, so that DDP and torch.compile see one forward."""

    def __init__(
        self, model: MSSTCN, free_bits: bool, autocast: bool, input_noise: float
    ):
        super().__init__()
        self.model = model
        self.free_bits = free_bits
        self.autocast = autocast
        self.input_noise = input_noise

    def forward(self, y, u, lengths, noise, y_noise, threshold):
        """Return the loss and the summed terms (loss, elbo, log_lik, kl, B)."""
        y_in = None
        if self.input_noise > 0:  # drawn before the latents, as Trainer does
            eps = torch.randn_like(y) if y_noise is None else y_noise
            y_in = y + self.input_noise * eps
        with torch.autocast(y.device.type, torch.bfloat16, enabled=self.autocast):
            out = self.model(
                y, u, lengths, latent="posterior", noise=noise, y_input=y_in
            )
        terms = {k: _atleast32(v) for k, v in elbo_terms(out).items()}
        kl_eff = terms["kl"]
        if self.free_bits and out.latents:
            kl_eff = sum(
                _linear_free_bits(_atleast32(k), threshold).sum((1, 2)) for k in out.kl
            )
        loss = -(terms["log_lik"] - kl_eff).mean()  # nats per sequence
        B = y.shape[0]
        parts = [
            loss * B,
            terms["elbo"].sum(),
            terms["log_lik"].sum(),
            terms["kl"].sum(),
        ]
        sums = torch.stack([p.detach().double() for p in parts])
        return loss, sums


def _atleast32(t: torch.Tensor) -> torch.Tensor:
    """Promote a half-precision tensor to float32 (float64 stays)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class TrainStep:
    """A training step that never synchronises with the device.

    Parameters
    ----------
    model : MSSTCN
        On ``info.device``.
    config : TrainConfig
        ``mixed_precision`` turns on bf16 autocast (CUDA only).
    info : DistributedInfo, optional
        With ``world_size > 1`` the model is wrapped in
        DistributedDataParallel.
    compile : bool, default=False
        Compile the forward and loss with :func:`torch.compile`.
    seed : int, default=0
    sample_noise : bool, default=False
        Draw each sequence's posterior noise from (seed, step, sample index)
        on the host instead of the device generator.

    Attributes
    ----------
    step : int
        Optimiser steps attempted (host counter).
    optimizer : torch.optim.Adam
        Fused Adam with a tensor learning rate.
    """

    def __init__(
        self,
        model: MSSTCN,
        config: TrainConfig,
        info: DistributedInfo | None = None,
        *,
        compile: bool = False,
        seed: int = 0,
        sample_noise: bool = False,
    ):
        if config.rollout_steps:
            raise ValueError(
                "TrainStep trains the one-step objective only; "
                "rollout_steps > 0 (the simulation-error term) is trained by "
                "MSSTCNRegressor(rollout_steps=..., distributed=True)"
            )
        self.model = model
        self.config = config
        self.info = info or DistributedInfo(device=next(model.parameters()).device)
        self.device = self.info.device
        self.seed = int(seed)
        self.sample_noise = sample_noise
        self.autocast = bool(config.mixed_precision and self.device.type == "cuda")
        free_bits = config.objective == "linear_free_bits" and config.free_bits > 0
        module: nn.Module = _Objective(
            model, free_bits, self.autocast, config.input_noise
        )
        if self.info.is_distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids)
        self.ddp = module if self.info.is_distributed else None
        self._objective = torch.compile(module) if compile else module
        self.optimizer = make_optimizer(model.parameters(), config, fused=True)
        dtype = next(model.parameters()).dtype
        self._lr = torch.tensor(config.learning_rate, dtype=dtype, device=self.device)
        self.optimizer.param_groups[0]["lr"] = self._lr
        self._skipped = torch.zeros((), dtype=torch.int64, device=self.device)
        self._sums = torch.zeros(_N_STATS, dtype=torch.float64, device=self.device)
        self.step = 0
        self.lr_scale = 1.0

    # ------------------------------------------------------------ counters
    def set_counters(self, step: int, n_skipped: int, lr_scale: float) -> None:
        """Set the attempted steps, skipped steps and learning-rate factor."""
        self.step = int(step)
        self._skipped.fill_(int(n_skipped))
        self.lr_scale = float(lr_scale)

    @property
    def n_skipped(self) -> int:
        """Steps skipped so far (synchronises)."""
        return int(self._skipped)

    def _schedules(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        it = (self.step - self._skipped).double()  # optimiser steps taken
        lr = (
            self.lr_scale
            * cfg.learning_rate
            * cfg.lr_decay ** (it / cfg.lr_decay_steps)
        )
        thr = cfg.free_bits * 0.5 ** (it / cfg.free_bits_half_life)
        return lr, thr.to(self._lr.dtype)

    # ---------------------------------------------------------------- step
    def __call__(self, batches: Sequence[tuple]) -> None:
        """One optimiser step over micro-batches (gradient accumulation).

        Parameters
        ----------
        batches : sequence of tuple
            ``(indices, y, u, lengths)`` as :func:`collate_batch` returns,
            on any device; equal sizes, so that the mean of the micro-batch
            losses is the loss of their union.
        """
        if not self.sample_noise:
            torch.manual_seed(_mix_seed(self.seed, self.step, self.info.rank))
        lr, thr = self._schedules()
        self._lr.copy_(lr)
        self.optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(5, dtype=torch.float64, device=self.device)
        for i, (indices, y, u, lengths) in enumerate(batches):
            sync = self.ddp is None or i == len(batches) - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                inputs = self._inputs(indices, y, u, lengths)
                loss, part = self._objective(*inputs, thr)
                (loss / len(batches)).backward()
            sums[:4] += part
            sums[4] += y.shape[0]
        clip = self.config.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        bad = ~(torch.isfinite(norm) & torch.isfinite(sums[0]))
        if self.info.is_distributed:
            bad = bad.float()
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
            bad = bad > 0
        self.optimizer.found_inf = bad.float()
        self.optimizer.step()
        self._skipped += bad
        self._sums[:5] += torch.where(bad, torch.zeros_like(sums), sums)
        self._sums[5] += bad
        self.step += 1

    def _inputs(self, indices, y, u, lengths) -> tuple:
        dev = self.device
        dtype = next(self.model.parameters()).dtype
        noise = y_noise = None
        if self.sample_noise:
            raw, y_noise = _sample_noise(
                self.model, indices, y.shape[-1], self.seed, self.step
            )
            noise = [n.to(dev, dtype, non_blocking=True) for n in raw]
            y_noise = y_noise.to(dev, dtype, non_blocking=True)
        y = y.to(dev, dtype, non_blocking=True)
        u = None if u is None else u.to(dev, dtype, non_blocking=True)
        lengths = None if lengths is None else lengths.to(dev, non_blocking=True)
        return y, u, lengths, noise, y_noise

    def pop_stats(self) -> dict:
        """Mean terms since the last call, over all processes (synchronises).

        Returns
        -------
        dict
            ``loss``, ``elbo``, ``log_lik``, ``kl`` (nats per sequence over
            the steps that were not skipped), ``skipped`` (steps skipped),
            ``lr``, ``threshold``, ``iteration``.
        """
        sums = self._sums.clone()
        self._sums.zero_()
        if self.info.is_distributed:
            dist.all_reduce(sums)
        n_seq = max(float(sums[4]), 1.0)
        row = {k: float(sums[i]) / n_seq for i, k in enumerate(_TERMS)}
        row["skipped"] = int(round(float(sums[5]) / self.info.world_size))
        lr, thr = self._schedules()
        row.update(lr=float(lr), threshold=float(thr), iteration=self.iteration)
        return row

    @property
    def iteration(self) -> int:
        """Optimiser steps taken (synchronises)."""
        return self.step - self.n_skipped
