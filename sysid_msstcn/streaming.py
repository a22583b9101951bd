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
from torch import nn

from .layers import pool_blocks
from .model import MSSTCN, level_mask

__all__ = ["StreamingSimulator", "simulate"]


class _Lin:
    """A convolution applied to one time step as a matrix product."""

    __slots__ = ("b", "w")

    def __init__(self, conv: nn.Conv1d) -> None:
        out_c = conv.weight.shape[0]
        self.w = conv.weight.reshape(out_c, -1)  # (O, I * k), index c * k + j
        self.b = conv.bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w, self.b)  # (B, I * k) -> (B, O)


def _skip(module: nn.Module) -> _Lin | None:
    return None if isinstance(module, nn.Identity) else _Lin(module)


def _gated(pre: torch.Tensor, out: _Lin, skip: _Lin | None, x: torch.Tensor):
    a, b = pre.chunk(2, dim=1)
    res = out(torch.tanh(a) * torch.sigmoid(b))  # (B, C_out)
    return res + (x if skip is None else skip(x))


class _Block:
    """Weights of one block, prepared for single-step evaluation."""

    def __init__(self, block: nn.Module) -> None:
        self.kind = type(block).__name__
        self.out = _Lin(block.out)
        self.skip = _skip(block.skip)
        conv = block.conv
        self.k = conv.kernel_size[0]
        self.dil = conv.dilation[0]
        self.pad = getattr(conv, "left_pad", 0)
        self.stride = getattr(block, "stride", 1)
        self.resampling = getattr(block, "resampling", None)
        if isinstance(conv, nn.ConvTranspose1d):
            c_in, c_out, s = conv.weight.shape
            self.conv = None
            self.wt = conv.weight.reshape(c_in, c_out * s).t().contiguous()
            self.bt = conv.bias.repeat_interleave(s)
            self.c2 = c_out
        else:
            self.conv = _Lin(conv)


class StreamingSimulator:
    """Step-by-step evaluation of an :class:`~sysid_msstcn.model.MSSTCN`.

    The convolution weights are read once into matrices, so that a time step
    costs a few small matrix products per block.

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
        self.bottom = [[_Block(b) for b in blocks] for blocks in model.bottom_up.levels]
        self.mixers = [[_Block(b) for b in td.mixer] for td in model.top_down]
        self.decoders = [[_Block(b) for b in td.decoder] for td in model.top_down]
        self.priors = [
            _Lin(td.prior) if td.use_latents else None for td in model.top_down
        ]
        self.head = _Lin(model.head)
        self.t = 0
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self.bufs: dict[tuple[int, int], torch.Tensor] = {}
        self.acc: list[list[torch.Tensor]] = [[] for _ in self.bottom]
        for lv, blocks in enumerate(self.bottom):
            for i, blk in enumerate(blocks):
                if blk.pad:
                    c_in = blk.conv.w.shape[1] // blk.k
                    self.bufs[(lv, i)] = torch.zeros(
                        self.B, c_in, blk.pad, device=self.device, dtype=self.dtype
                    )
        self.last_d = [
            torch.zeros(self.B, c, device=self.device, dtype=self.dtype)
            for c in self.cfg.channels
        ]
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
        self.last_d = [dl[..., -1] for dl in d]

    # ----------------------------------------------------------- bottom-up
    def _taps(self, key, blk: _Block, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation of a causal conv at one step; x is (B, C_in)."""
        if not blk.pad:
            return blk.conv(x)
        full = torch.cat([self.bufs[key], x.unsqueeze(-1)], dim=-1)  # (B, C, p+1)
        self.bufs[key] = full[..., 1:]
        return blk.conv(full[..., :: blk.dil].reshape(x.shape[0], -1))

    def _downsample(self, lv: int, blk: _Block, x: torch.Tensor):
        acc = self.acc[lv]
        if blk.resampling == "fixed":
            pre = self._taps((lv, 0), blk, x)  # (B, 2C)
            acc.append((pre, x if blk.skip is None else blk.skip(x)))
        else:
            acc.append((x, x))
        if len(acc) < blk.stride:
            return None
        first = torch.stack([a for a, _ in acc], dim=-1)  # (B, ., S)
        second = torch.stack([b for _, b in acc], dim=-1)
        self.acc[lv] = []
        if blk.resampling == "fixed":
            pre = pool_blocks(first, blk.stride, "scaled_sum")[..., 0]
            skip = pool_blocks(second, blk.stride, "scaled_sum")[..., 0]
        else:
            pre = blk.conv(first.reshape(x.shape[0], -1))
            if blk.skip is not None:
                second = _proj_seq(blk.skip, second)
            skip = pool_blocks(second, blk.stride, "mean")[..., 0]
        a, b = pre.chunk(2, dim=1)
        return skip + blk.out(torch.tanh(a) * torch.sigmoid(b))  # (B, C_l)

    def _push_level(self, lv: int, x: torch.Tensor) -> None:
        h = x
        for i, blk in enumerate(self.bottom[lv]):
            if blk.kind == "DownsampleBlock":
                h = self._downsample(lv, blk, h)
                if h is None:
                    return
            else:
                h = _gated(self._taps((lv, i), blk, h), blk.out, blk.skip, h)
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
        x = y_t[..., 0]
        if self.u is not None:
            T = self.u.shape[-1]
            if self.t + 1 < T:
                nxt = self.u[..., self.t + 1]
            else:
                nxt = torch.zeros_like(self.u[..., 0])
            x = torch.cat([x, nxt], dim=1)  # (B, C_y + C_u)
        self._push_level(0, x)
        self.t += 1

    # ------------------------------------------------------------ top-down
    def _latent_noise(self, lv: int, j: int, shape) -> torch.Tensor:
        if self.noise is not None:
            return self.noise[lv][..., j]
        return torch.randn(
            shape, generator=self.generator, device=self.device, dtype=self.dtype
        )

    def _decode(self, lv: int, h: torch.Tensor, z: torch.Tensor | None):
        """Top-down output of one coarse step: (B, C_out, S)."""
        g = h
        for blk in self.decoders[lv]:
            inp = g if z is None else torch.cat([g, z], dim=1)
            if blk.kind != "UpsampleBlock":
                g = _gated(blk.conv(inp), blk.out, blk.skip, g)
                continue
            s = blk.stride
            skip = g if blk.skip is None else blk.skip(g)  # (B, C_out)
            if blk.resampling == "learned":
                pre = F.linear(inp, blk.wt, blk.bt).reshape(g.shape[0], -1, s)
                a, b = pre.chunk(2, dim=1)  # (B, C_out, S) each
                act = (torch.tanh(a) * torch.sigmoid(b)).transpose(1, 2)
                res = blk.out(act).transpose(1, 2)  # (B, C_out, S)
            else:
                a, b = blk.conv(inp).chunk(2, dim=1)
                res = blk.out(torch.tanh(a) * torch.sigmoid(b))[..., None]
            g = skip[..., None] + res  # broadcast = nearest-neighbour repeat
            g = g.expand(-1, -1, s)
        return g if g.dim() == 3 else g[..., None]

    @torch.no_grad()
    def predict_params(self) -> torch.Tensor:
        """Raw predictive parameters for the current step: (B, P, 1)."""
        cfg, t = self.cfg, self.t
        for lv in reversed(range(cfg.n_levels)):
            if t % self.rates[lv]:
                continue
            j = t // self.rates[lv]
            parts = []
            if lv < cfg.n_levels - 1:
                parts.append(self.g_cache[lv][..., j % cfg.strides[lv + 1]])
            parts.append(self.last_d[lv])
            if lv == 0 and self.u is not None:
                parts.append(self.u[..., t])
            h = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            for blk in self.mixers[lv]:
                h = _gated(blk.conv(h), blk.out, blk.skip, h)  # (B, C_l)
            z = None
            if self.priors[lv] is not None:
                mean, pre = self.priors[lv](h).chunk(2, dim=1)
                z = mean
                if self.latent == "prior":
                    std = F.softplus(pre).clamp(cfg.std_min, cfg.std_max)
                    z = mean + std * self._latent_noise(lv, j, mean.shape)
            g = self._decode(lv, h, z)  # (B, C_{l-1}, S_l)
            if lv > 0:
                self.g_cache[lv - 1] = g
            else:
                self.out = g[..., 0]
        return self.head(self.out)[..., None]


def _proj_seq(lin: _Lin, x: torch.Tensor) -> torch.Tensor:
    """Apply a 1x1 projection to every step of x (B, C_in, S)."""
    return torch.einsum("oc,bcs->bos", lin.w, x) + lin.b[None, :, None]


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
