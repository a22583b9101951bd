"""The MS-STCN model: bottom-up Wavenets, top-down latent levels, output head.

Notation follows the paper (Section 3): ``d`` bottom-up features (eq. 8),
``h`` top-down features (eq. 9), ``z`` latents with prior (eq. 11) and
posterior (eq. 13), ``g`` top-down output passed to the level below
(eq. 12). Levels are indexed bottom-up from 0 (the paper's level 1).

Shape legend: ``B`` batch, ``C_y`` output channels, ``C_u`` input channels,
``T`` time steps at the data rate, ``T_l`` time steps at level l's rate,
``C_l`` filters of level l, ``Z_l`` latent dimensions of level l.

Exogenous inputs: the model is p(y_t | y_<t, u_<=t, z). The bottom-up input
at step t is [y_t, u_{t+1}], so after the Delay the top-down features at
step t have seen y up to t-1 and u up to t; u_t also enters the lowest
top-down level directly (feedthrough).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import NetworkConfig
from .distributions import gaussian_kl, make_likelihood, split_gaussian
from .layers import DownsampleBlock, GatedBlock, UpsampleBlock, delay

__all__ = ["MSSTCN", "BottomUp", "LatentTerms", "ModelOutput", "TopDownLevel"]

LATENT_MODES = ("posterior", "prior", "prior_mean")


@dataclass
class LatentTerms:
    """Latent quantities of one level, each of shape (B, Z_l, T_l)."""

    kl: torch.Tensor
    z: torch.Tensor
    prior_mean: torch.Tensor
    prior_std: torch.Tensor
    post_mean: torch.Tensor
    post_std: torch.Tensor
    mask: torch.Tensor  # (B, T_l)


@dataclass
class ModelOutput:
    """Named terms returned by :meth:`MSSTCN.forward`.

    Attributes
    ----------
    params : torch.Tensor of shape (B, P, T)
        Raw parameters of the predictive distribution at every step.
    log_lik : torch.Tensor of shape (B, T)
        log p(y_t | ...) summed over channels, zero at masked steps.
    latents : list of LatentTerms
        One per level, bottom level first (empty without latents).
    mask : torch.Tensor of shape (B, T)
        Valid steps as float.
    """

    params: torch.Tensor
    log_lik: torch.Tensor
    latents: list[LatentTerms]
    mask: torch.Tensor

    @property
    def kl(self) -> list[torch.Tensor]:
        """Masked KL per level, each (B, Z_l, T_l), bottom level first."""
        return [lt.kl for lt in self.latents]


def _full_precision(x: torch.Tensor) -> torch.Tensor:
    """Distribution parameters stay in float32 under bf16/fp16 autocast."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def level_mask(lengths: torch.Tensor, n_steps: int, rate: int) -> torch.Tensor:
    """Valid steps at a level of cumulative stride ``rate``.

    Parameters
    ----------
    lengths : torch.Tensor of shape (B,)
        Valid lengths at the data rate.
    n_steps : int
        Steps T_l at the level's rate.
    rate : int
        Cumulative stride of the level.

    Returns
    -------
    torch.Tensor of shape (B, T_l), float
        1 where ``j * rate < length``.
    """
    idx = torch.arange(n_steps, device=lengths.device) * rate
    return (idx[None, :] < lengths[:, None]).float()


class BottomUp(nn.Module):
    """Bottom-up Wavenets of all levels (eq. 8).

    Level 0 is a Wavenet of gated blocks with dilated causal convolutions on
    the data; every higher level downsamples in its first block.

    Parameters
    ----------
    config : NetworkConfig
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        c_in = config.n_outputs + config.n_inputs
        for c, s, dils in zip(
            config.channels, config.strides, config.dilations, strict=True
        ):
            blocks = nn.ModuleList()
            for i, dil in enumerate(dils):
                if i == 0 and s > 1:
                    blocks.append(
                        DownsampleBlock(
                            c_in, c, s, config.kernel_size, dil, config.resampling
                        )
                    )
                else:
                    blocks.append(GatedBlock(c_in, c, config.kernel_size, dil))
                c_in = c
            self.levels.append(blocks)

    def forward(
        self, x: torch.Tensor, masks: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """Compute the features d of every level.

        Parameters
        ----------
        x : torch.Tensor of shape (B, C_y + C_u, T)
            T is a multiple of the total stride.
        masks : list of torch.Tensor of shape (B, T_l)
            Valid steps per level; features beyond them are zeroed before
            they enter the next level (as for a shorter sequence).

        Returns
        -------
        d : list of torch.Tensor of shape (B, C_l, T_l)
        inputs : list of list of torch.Tensor
            The input of every block (used to prime streaming caches).
        """
        d, inputs = [], []
        h = x
        for blocks, mask in zip(self.levels, masks, strict=True):
            level_inputs = []
            for block in blocks:
                level_inputs.append(h)
                h = block(h)
            h = h * mask[:, None, :]  # (B, C_l, T_l)
            d.append(h)
            inputs.append(level_inputs)
        return d, inputs


class TopDownLevel(nn.Module):
    """One top-down level: input mixer, prior, posterior and output Wavenet.

    Parameters
    ----------
    channels : int
        Filters C_l of this level.
    latent_dim : int
        Latent dimensions Z_l.
    out_channels : int
        Channels of the output g passed to the level below.
    stride : int
        Upsampling factor of the output (this level's stride).
    n_blocks : int
        Blocks of the 1x1 Wavenets.
    has_above : bool
        Whether a level above feeds g into this one (eq. 9a vs 9b).
    n_inputs : int
        Exogenous channels concatenated to the mixer input (level 0 only).
    use_latents : bool
    resampling : {"learned", "fixed"}
    std_min, std_max : float
    """

    def __init__(
        self,
        channels: int,
        latent_dim: int,
        out_channels: int,
        stride: int,
        n_blocks: int,
        has_above: bool,
        n_inputs: int = 0,
        use_latents: bool = True,
        resampling: str = "learned",
        std_min: float = 1e-3,
        std_max: float = 5.0,
    ) -> None:
        super().__init__()
        c_mix = channels * (2 if has_above else 1) + n_inputs
        self.mixer = nn.ModuleList(
            GatedBlock(c_mix if i == 0 else channels, channels) for i in range(n_blocks)
        )
        self.use_latents = use_latents
        self.std_min, self.std_max = std_min, std_max
        cond = latent_dim if use_latents else 0
        if use_latents:
            self.prior = nn.Conv1d(channels, 2 * latent_dim, 1)
            self.posterior = nn.Conv1d(2 * channels, 2 * latent_dim, 1)
        self.decoder = nn.ModuleList()
        for i in range(n_blocks):
            c_in = channels if i == 0 else out_channels
            if i == n_blocks - 1 and stride > 1:
                self.decoder.append(
                    UpsampleBlock(c_in, out_channels, stride, cond, resampling)
                )
            else:
                self.decoder.append(GatedBlock(c_in, out_channels, 1, 1, cond))

    def mix(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """H = Wavenet1x1([g, Delay(d), u]) (eq. 9): (B, C_l, T_l)."""
        h = torch.cat(parts, dim=1)
        for block in self.mixer:
            h = block(h)
        return h

    def prior_params(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior mean and std from h (eq. 11): two (B, Z_l, T_l) tensors."""
        raw = _full_precision(self.prior(h))
        return split_gaussian(raw, self.std_min, self.std_max)

    def posterior_params(
        self, h: torch.Tensor, d: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and std from [h, d] (eq. 13): (B, Z_l, T_l) each."""
        raw = _full_precision(self.posterior(torch.cat([h, d], dim=1)))
        return split_gaussian(raw, self.std_min, self.std_max)

    def decode(self, h: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """G = CondWavenet1x1(h, z), upsampled (eq. 12): (B, C_out, T_l * S)."""
        g = h
        for block in self.decoder:
            g = block(g, z)
        return g


class MSSTCN(nn.Module):
    """Multiscale stochastic temporal convolutional network.

    Parameters
    ----------
    config : NetworkConfig
        The architecture.

    Examples
    --------
    >>> import torch
    >>> from sysid_msstcn.config import NetworkConfig
    >>> cfg = NetworkConfig(n_outputs=1, channels=(8, 8), latent_dims=(2, 2),
    ...                     strides=(1, 2), dilations=((1, 2), (1, 2)))
    >>> out = MSSTCN(cfg)(torch.zeros(3, 1, 10))
    >>> tuple(out.params.shape), tuple(out.log_lik.shape)
    ((3, 2, 10), (3, 10))
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.bottom_up = BottomUp(config)
        L = config.n_levels
        self.top_down = nn.ModuleList(
            TopDownLevel(
                channels=config.channels[level],
                latent_dim=config.latent_dims[level],
                out_channels=config.channels[max(level - 1, 0)],
                stride=config.strides[level],
                n_blocks=config.n_topdown_blocks,
                has_above=level < L - 1,
                n_inputs=config.n_inputs if level == 0 else 0,
                use_latents=config.use_latents,
                resampling=config.resampling,
                std_min=config.std_min,
                std_max=config.std_max,
            )
            for level in range(L)
        )
        self.likelihood = make_likelihood(
            config.likelihood,
            config.n_outputs,
            config.n_components,
            config.std_min,
            config.std_max,
        )
        self.head = nn.Conv1d(config.channels[0], self.likelihood.n_params, 1)

    @property
    def receptive_field(self) -> int:
        """Receptive field in data steps (see NetworkConfig.receptive_field)."""
        return self.config.receptive_field

    def bottom_up_input(self, y: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        """Bottom-up input [y_t, u_{t+1}]: (B, C_y + C_u, T)."""
        if self.config.n_inputs == 0:
            return y
        u_next = F.pad(u[..., 1:], (0, 1))  # (B, C_u, T): u_{t+1}, 0 at the end
        return torch.cat([y, u_next], dim=1)

    def _check(self, y: torch.Tensor, u: torch.Tensor | None) -> None:
        cfg = self.config
        if y.dim() != 3 or y.shape[1] != cfg.n_outputs:
            raise ValueError(
                f"y must have shape (batch, {cfg.n_outputs}, time), "
                f"got {tuple(y.shape)}"
            )
        if cfg.n_inputs == 0:
            if u is not None and u.shape[1] != 0:
                raise ValueError("this model has no inputs but u was given")
        elif u is None or u.shape != (y.shape[0], cfg.n_inputs, y.shape[2]):
            got = None if u is None else tuple(u.shape)
            raise ValueError(
                f"u must have shape ({y.shape[0]}, {cfg.n_inputs}, {y.shape[2]}), "
                f"got {got}"
            )

    def forward(
        self,
        y: torch.Tensor,
        u: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        latent: str = "posterior",
        noise: list[torch.Tensor] | None = None,
        y_input: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Evaluate the predictive distribution and latent terms of y.

        Parameters
        ----------
        y : torch.Tensor of shape (B, C_y, T)
            Outputs (teacher forcing: y_<t conditions step t).
        u : torch.Tensor of shape (B, C_u, T), optional
            Exogenous inputs; required when the model has inputs.
        lengths : torch.Tensor of shape (B,), optional
            Valid lengths of padded sequences (default: all T).
        latent : {"posterior", "prior", "prior_mean"}, default="posterior"
            Where z is drawn from: the posterior (training, ELBO), the prior
            (generation, causal), or the prior mean (deterministic).
        noise : list of torch.Tensor of shape (B, Z_l, T_l), optional
            Standard normal noise per level (bottom first) used for the
            reparameterised draw; fresh noise when omitted. T_l is the
            level's length after right-padding T to a multiple of the total
            stride.
        y_input : torch.Tensor of shape (B, C_y, T), optional
            Outputs fed to the bottom-up network instead of ``y`` (e.g. ``y``
            plus noise, to make a model robust to its own fed-back errors);
            the likelihood is always evaluated on ``y``.

        Returns
        -------
        ModelOutput
        """
        if latent not in LATENT_MODES:
            raise ValueError(f"unknown latent mode {latent!r}; use {LATENT_MODES}")
        self._check(y, u)
        cfg = self.config
        B, _, T = y.shape
        D = cfg.total_stride
        Tp = -(-T // D) * D
        if lengths is None:
            lengths = torch.full((B,), T, device=y.device, dtype=torch.long)
        y_in = y if y_input is None else y_input
        x = self.bottom_up_input(y_in, u)  # (B, C_y + C_u, T)
        if cfg.n_inputs:
            # u_{t+1} exists only for t + 1 < length: never read padding
            nxt = torch.arange(T, device=y.device)[None, :] + 1 < lengths[:, None]
            x = torch.cat(
                [x[:, : cfg.n_outputs], x[:, cfg.n_outputs :] * nxt[:, None]], 1
            )
        x = F.pad(x, (0, Tp - T))  # (B, C_y + C_u, Tp)
        rates = cfg.cumulative_strides
        masks = [level_mask(lengths, Tp // r, r) for r in rates]
        d, _ = self.bottom_up(x, masks)
        u_pad = None if u is None or cfg.n_inputs == 0 else F.pad(u, (0, Tp - T))
        g, latents = self._top_down(d, u_pad, masks, latent, noise)
        params = _full_precision(self.head(g)[..., :T])  # (B, P, T)
        mask0 = masks[0][:, :T]
        log_lik = self.likelihood.log_prob(params, y) * mask0  # (B, T)
        return ModelOutput(params, log_lik, latents, mask0)

    def _top_down(self, d, u_pad, masks, latent, noise):
        g, latents = None, []
        for level in reversed(range(self.config.n_levels)):
            td = self.top_down[level]
            parts = [] if g is None else [g]
            parts.append(delay(d[level]))  # (B, C_l, T_l)
            if level == 0 and u_pad is not None:
                parts.append(u_pad)
            h = td.mix(parts)  # (B, C_l, T_l)
            z = None
            if td.use_latents:
                mp, sp = td.prior_params(h)
                mq, sq = td.posterior_params(h, d[level])
                eps = None if noise is None else noise[level]
                if eps is None and latent != "prior_mean":
                    eps = torch.randn_like(mp)
                if latent == "posterior":
                    z = mq + sq * eps
                elif latent == "prior":
                    z = mp + sp * eps
                else:  # deterministic: draws no noise
                    z = mp
                kl = gaussian_kl(mq, sq, mp, sp) * masks[level][:, None, :]
                latents.append(LatentTerms(kl, z, mp, sp, mq, sq, masks[level]))
            g = td.decode(h, z)  # (B, C_{l-1}, T_{l-1})
        latents.reverse()
        return g, latents

    def latent_shapes(self, batch: int, n_steps: int) -> list[tuple[int, int, int]]:
        """Shapes of the per-level noise tensors for a sequence of n_steps."""
        cfg = self.config
        Tp = -(-n_steps // cfg.total_stride) * cfg.total_stride
        return [
            (batch, z, Tp // r)
            for z, r in zip(cfg.latent_dims, cfg.cumulative_strides, strict=True)
        ]
