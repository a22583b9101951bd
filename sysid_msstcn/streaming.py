"""Cached streaming inference: free-run simulation linear in the record length.

Every bottom-up causal convolution keeps the few past inputs it still needs
(as in fast Wavenet generation) and every level updates at its own rate: a
level of cumulative stride D runs its downsampling block when the level
below has finished a block, draws its latent at the first fine step of each
of its blocks (from the prior, which only sees the delayed features) and
reuses its upsampled output for the next D fine steps. The top-down path is
made of 1x1 convolutions and needs no cache beyond those upsampled outputs.

A teacher-forced warm-up fills the caches with one parallel pass of the
bottom-up network over the aligned part of ``y_init`` and replays at most
``total_stride - 1`` steps one by one.

Shape legend: ``B`` batch (Monte Carlo samples x experiments), ``C``
channels, ``T`` steps. Step tensors keep a time axis of length 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .layers import DownsampleBlock, GatedBlock, gate, pool_blocks
from .model import MSSTCN, level_mask

__all__ = ["StreamingSimulator", "simulate"]


class StreamingSimulator:
    """Step-by-step evaluation of an :class:`~sysid_msstcn.model.MSSTCN`.

    Parameters
    ----------
    model : MSSTCN
        The network (its weights are used as they are, no copy).
    u : torch.Tensor of shape (B, C_u, T) or None
        Exogenous inputs for the whole horizon (None without inputs).
    latent : {"prior", "prior_mean"}, default="prior_mean"
        Latents drawn from the prior or set to the prior mean.
    noise : list of torch.Tensor of shape (B, Z_l, T_l), optional
        Fixed standard-normal latent noise per level (bottom first), indexed
        by the level's block index; fresh noise from ``generator`` if None.
    generator : torch.Generator, optional
        Source of latent and output noise.
    batch : int, optional
        Batch size when ``u`` is None.
    """

    def __init__(
        self,
        model: MSSTCN,
        u: torch.Tensor | None,
        latent: str = "prior_mean",
        noise: list[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
        batch: int | None = None,
    ) -> None:
        if latent not in ("prior", "prior_mean"):
            raise ValueError(f"latent must be 'prior' or 'prior_mean', got {latent!r}")
        self.model = model
        self.cfg = cfg = model.config
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        if cfg.n_inputs and u is None:
            raise ValueError("the model has inputs: u is required")
        self.u = u if cfg.n_inputs else None
        self.B = u.shape[0] if self.u is not None else int(batch or 1)
        self.latent, self.noise, self.generator = latent, noise, generator
        self.rates = cfg.cumulative_strides
        self.t = 0
        self._reset()

    # ------------------------------------------------------------------ state
    def _zeros(self, c: int, n: int) -> torch.Tensor:
        return torch.zeros(self.B, c, n, device=self.device, dtype=self.dtype)

    def _reset(self) -> None:
        self.bufs: dict[tuple[int, int], torch.Tensor] = {}
        self.acc: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for lv, blocks in enumerate(self.model.bottom_up.levels):
            for i, block in enumerate(blocks):
                pad = getattr(block.conv, "left_pad", 0)
                if pad:
                    self.bufs[(lv, i)] = self._zeros(block.conv.in_channels, pad)
            self.acc[lv] = []
        self.last_d = [self._zeros(c, 1) for c in self.cfg.channels]
        self.g_cache: list[torch.Tensor | None] = [None] * self.cfg.n_levels
        self.out: torch.Tensor | None = None

    def prime(self, y_init: torch.Tensor) -> None:
        """Teacher-force the first n0 = y_init.shape[-1] outputs.

        Parameters
        ----------
        y_init : torch.Tensor of shape (B, C_y, n0)
        """
        self._reset()
        n0 = y_init.shape[-1]
        D = self.cfg.total_stride
        n_a = (n0 // D) * D
        if n_a > 0:
            self._prime_aligned(y_init[..., :n_a])
        self.t = n_a
        for t in range(n_a, n0):
            self.predict_params()
            self.push(y_init[..., t : t + 1])

    @torch.no_grad()
    def _prime_aligned(self, y: torch.Tensor) -> None:
        model, n = self.model, y.shape[-1]
        u = None if self.u is None else self.u[..., : n + 1]
        x = model.bottom_up_input(y, None if u is None else u[..., :n])
        if u is not None and u.shape[-1] > n:
            x[:, self.cfg.n_outputs :, -1] = u[:, :, n]  # u_{t+1} at the last step
        lengths = torch.full((self.B,), n, device=self.device)
        masks = [level_mask(lengths, n // r, r) for r in self.rates]
        d, inputs = model.bottom_up(x, masks)
        for (lv, i), buf in self.bufs.items():
            seq = inputs[lv][i]  # (B, C_in, n_rate) at the block's input rate
            p = buf.shape[-1]
            self.bufs[(lv, i)] = F.pad(seq, (max(p - seq.shape[-1], 0), 0))[..., -p:]
        self.last_d = [dl[..., -1:] for dl in d]

    # ----------------------------------------------------------- bottom-up
    def _conv_step(self, key, conv, x: torch.Tensor) -> torch.Tensor:
        buf = self.bufs.get(key)
        if buf is None:
            return conv(x)
        full = torch.cat([buf, x], dim=-1)  # (B, C_in, pad + 1)
        self.bufs[key] = full[..., 1:]
        return F.conv1d(full, conv.weight, conv.bias, dilation=conv.dilation)

    def _downsample_step(self, lv: int, block: DownsampleBlock, x: torch.Tensor):
        if block.resampling == "fixed":
            pre = self._conv_step((lv, 0), block.conv, x)  # (B, 2C, 1)
            self.acc[lv].append((pre, block.skip(x)))
        else:
            self.acc[lv].append((x, x))
        if len(self.acc[lv]) < block.stride:
            return None
        a, b = zip(*self.acc[lv], strict=True)
        self.acc[lv] = []
        first, second = torch.cat(a, -1), torch.cat(b, -1)  # (B, ., S)
        if block.resampling == "fixed":
            pre = pool_blocks(first, block.stride, "scaled_sum")
            skip = pool_blocks(second, block.stride, "scaled_sum")
        else:
            pre = block.conv(first)
            skip = pool_blocks(block.skip(second), block.stride, "mean")
        return skip + block.out(gate(pre))  # (B, C_l, 1)

    def _push_level(self, lv: int, x: torch.Tensor) -> None:
        blocks = self.model.bottom_up.levels[lv]
        h = x
        for i, block in enumerate(blocks):
            if isinstance(block, DownsampleBlock):
                h = self._downsample_step(lv, block, h)
                if h is None:
                    return
            else:
                assert isinstance(block, GatedBlock)
                pre = self._conv_step((lv, i), block.conv, h)
                h = block.skip(h) + block.out(gate(pre))
        self.last_d[lv] = h
        if lv + 1 < self.cfg.n_levels:
            self._push_level(lv + 1, h)

    @torch.no_grad()
    def push(self, y_t: torch.Tensor) -> None:
        """Feed the output value of the current step and advance.

        Parameters
        ----------
        y_t : torch.Tensor of shape (B, C_y, 1)
        """
        x = y_t
        if self.u is not None:
            T = self.u.shape[-1]
            nxt = self.u[..., self.t + 1 : self.t + 2]
            if self.t + 1 >= T:
                nxt = torch.zeros_like(self.u[..., :1])
            x = torch.cat([y_t, nxt], dim=1)  # (B, C_y + C_u, 1)
        self._push_level(0, x)
        self.t += 1

    # ------------------------------------------------------------ top-down
    def _latent_noise(self, lv: int, j: int, shape) -> torch.Tensor:
        if self.noise is not None:
            return self.noise[lv][..., j : j + 1]
        return torch.randn(
            shape, generator=self.generator, device=self.device, dtype=self.dtype
        )

    @torch.no_grad()
    def predict_params(self) -> torch.Tensor:
        """Raw predictive parameters for the current step: (B, P, 1)."""
        cfg, t = self.cfg, self.t
        for lv in reversed(range(cfg.n_levels)):
            if t % self.rates[lv]:
                continue
            j = t // self.rates[lv]
            td = self.model.top_down[lv]
            parts = []
            if lv < cfg.n_levels - 1:
                k = j % cfg.strides[lv + 1]
                parts.append(self.g_cache[lv][..., k : k + 1])
            parts.append(self.last_d[lv])
            if lv == 0 and self.u is not None:
                parts.append(self.u[..., t : t + 1])
            h = td.mix(parts)  # (B, C_l, 1)
            z = None
            if td.use_latents:
                mp, sp = td.prior_params(h)
                z = mp
                if self.latent == "prior":
                    z = mp + sp * self._latent_noise(lv, j, mp.shape)
            g = td.decode(h, z)  # (B, C_{l-1}, S_l)
            if lv > 0:
                self.g_cache[lv - 1] = g
            else:
                self.out = g
        return self.model.head(self.out)


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
    ys = torch.zeros(sim.B, cfg.n_outputs, n_steps, device=sim.device, dtype=sim.dtype)
    params = torch.zeros(
        sim.B, lik.n_params, n_steps, device=sim.device, dtype=sim.dtype
    )
    if n0:
        ys[..., :n0] = y_init
        sim.prime(y_init)
    for t in range(n0, n_steps):
        p = sim.predict_params()  # (B, P, 1)
        params[..., t : t + 1] = p
        if teacher is not None and teacher_until is None:
            y_t = teacher[..., t : t + 1]
        else:
            y_t = lik.mean(p) if output == "mean" else lik.sample(p, generator)
            if teacher is not None:
                forced = (t < teacher_until).to(y_t.dtype)[:, None, None]
                y_t = forced * teacher[..., t : t + 1] + (1 - forced) * y_t
        ys[..., t : t + 1] = y_t
        sim.push(y_t)
    return ys, params
