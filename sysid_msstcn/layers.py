"""Deterministic building blocks: causal convolutions, gated blocks, resampling.

Shape legend used in the comments: ``B`` batch, ``C`` channels, ``T`` time
steps at the block's input rate, ``S`` stride of a resampling block.
All tensors are laid out as (B, C, T).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CausalConv1d",
    "DownsampleBlock",
    "GatedBlock",
    "UpsampleBlock",
    "delay",
    "gate",
    "pool_blocks",
    "repeat_blocks",
]


def gate(x: torch.Tensor) -> torch.Tensor:
    """Gated activation tanh(a) * sigmoid(b) of the two channel halves (eq. 3).

    Parameters
    ----------
    x : torch.Tensor of shape (B, 2C, T)

    Returns
    -------
    torch.Tensor of shape (B, C, T)
    """
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def delay(x: torch.Tensor) -> torch.Tensor:
    """Delay a sequence by one step at its own rate, prepending zeros (eq. 10).

    Parameters
    ----------
    x : torch.Tensor of shape (B, C, T)

    Returns
    -------
    torch.Tensor of shape (B, C, T)
        ``out[..., 0] = 0`` and ``out[..., j] = x[..., j - 1]``.
    """
    return F.pad(x, (1, 0))[..., :-1]


def pool_blocks(x: torch.Tensor, stride: int, mode: str) -> torch.Tensor:
    """Reduce non-overlapping blocks of ``stride`` steps to one step.

    Parameters
    ----------
    x : torch.Tensor of shape (B, C, T)
    stride : int
        Block length S. The time axis is right-padded with zeros to a
        multiple of S (blocks are aligned to the start of the sequence).
    mode : {"mean", "scaled_sum"}
        ``"mean"`` averages the block (the paper's identity path);
        ``"scaled_sum"`` sums it and divides by sqrt(S) (the authors' code).

    Returns
    -------
    torch.Tensor of shape (B, C, ceil(T / S))
    """
    if stride == 1:
        return x
    B, C, T = x.shape
    n = -(-T // stride)
    x = F.pad(x, (0, n * stride - T))  # (B, C, n*S)
    s = x.reshape(B, C, n, stride).sum(-1)  # (B, C, n)
    scale = stride if mode == "mean" else math.sqrt(stride)
    return s / scale


def repeat_blocks(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Nearest-neighbour upsampling: repeat every step ``stride`` times.

    Parameters
    ----------
    x : torch.Tensor of shape (B, C, T)
    stride : int

    Returns
    -------
    torch.Tensor of shape (B, C, T * stride)
    """
    if stride == 1:
        return x
    return x.repeat_interleave(stride, dim=-1)


class CausalConv1d(nn.Conv1d):
    """A 1-D convolution that only looks at the present and the past.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int, default=1
    dilation : int, default=1
    bias : bool, default=True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, dilation=dilation, bias=bias
        )
        self.left_pad = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the convolution; the output has the input's length."""
        return super().forward(F.pad(x, (self.left_pad, 0)))


def _projection(c_in: int, c_out: int) -> nn.Module:
    return nn.Identity() if c_in == c_out else nn.Conv1d(c_in, c_out, 1)


class GatedBlock(nn.Module):
    """Wavenet block: x + Conv1x1(gate(CausalConv([x, cond]))) (eqs. 3-4).

    Parameters
    ----------
    in_channels, out_channels : int
        The identity path projects with a 1x1 convolution when they differ.
    kernel_size : int, default=1
        1 gives the top-down 1x1 Wavenet block.
    dilation : int, default=1
    cond_channels : int, default=0
        Channels of a conditioning sequence concatenated to the residual
        branch's input (the identity path sees only ``x``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        dilation: int = 1,
        cond_channels: int = 0,
    ) -> None:
        super().__init__()
        self.conv = CausalConv1d(
            in_channels + cond_channels, 2 * out_channels, kernel_size, dilation
        )
        self.out = nn.Conv1d(out_channels, out_channels, 1, bias=False)
        self.skip = _projection(in_channels, out_channels)
        self.cond_channels = cond_channels

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Apply the block to x (B, C_in, T) and cond (B, C_cond, T)."""
        inp = x if cond is None else torch.cat([x, cond], dim=1)
        return self.skip(x) + self.out(gate(self.conv(inp)))  # (B, C_out, T)


class DownsampleBlock(nn.Module):
    """First block of a bottom-up Wavenet that downsamples by ``stride``.

    Parameters
    ----------
    in_channels, out_channels : int
    stride : int
        Downsampling factor S (> 1).
    kernel_size, dilation : int
        Used by the ``"fixed"`` variant's causal convolution at the input
        rate.
    resampling : {"learned", "fixed"}
        ``"learned"`` (the paper): the residual branch is a strided
        convolution with kernel S over each block, the identity branch the
        block mean. ``"fixed"`` (the authors' code): causal convolution at
        the input rate, then the pre-activations are summed over the block
        and scaled by 1/sqrt(S); the identity branch likewise.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        kernel_size: int = 2,
        dilation: int = 1,
        resampling: str = "learned",
    ) -> None:
        super().__init__()
        self.stride = stride
        self.resampling = resampling
        if resampling == "learned":
            self.conv = nn.Conv1d(in_channels, 2 * out_channels, stride, stride=stride)
        else:
            self.conv = CausalConv1d(
                in_channels, 2 * out_channels, kernel_size, dilation
            )
        self.out = nn.Conv1d(out_channels, out_channels, 1, bias=False)
        self.skip = _projection(in_channels, out_channels)
        self.pool_mode = "mean" if resampling == "learned" else "scaled_sum"

    def residual_preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation of the residual branch at the output rate.

        Parameters
        ----------
        x : torch.Tensor of shape (B, C_in, T)

        Returns
        -------
        torch.Tensor of shape (B, 2 C_out, ceil(T / S))
        """
        S = self.stride
        if self.resampling == "learned":
            n = -(-x.shape[-1] // S)
            x = F.pad(x, (0, n * S - x.shape[-1]))  # (B, C_in, n*S)
            return self.conv(x)
        return pool_blocks(self.conv(x), S, "scaled_sum")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Downsample x (B, C_in, T) to (B, C_out, ceil(T / S))."""
        skip = pool_blocks(self.skip(x), self.stride, self.pool_mode)
        return skip + self.out(gate(self.residual_preactivation(x)))


class UpsampleBlock(nn.Module):
    """Last block of a top-down conditional 1x1 Wavenet that upsamples.

    Parameters
    ----------
    in_channels, out_channels : int
    stride : int
        Upsampling factor S (> 1).
    cond_channels : int, default=0
        Channels of the latent sample concatenated to the residual input.
    resampling : {"learned", "fixed"}
        ``"learned"`` (the paper): a strided transposed convolution with
        kernel S in the residual branch, nearest neighbour in the identity
        branch. ``"fixed"`` (the authors' code): 1x1 convolution, then
        repetition, in both branches.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        cond_channels: int = 0,
        resampling: str = "learned",
    ) -> None:
        super().__init__()
        self.stride = stride
        self.resampling = resampling
        c_in = in_channels + cond_channels
        if resampling == "learned":
            self.conv = nn.ConvTranspose1d(c_in, 2 * out_channels, stride, stride)
        else:
            self.conv = nn.Conv1d(c_in, 2 * out_channels, 1)
        self.out = nn.Conv1d(out_channels, out_channels, 1, bias=False)
        self.skip = _projection(in_channels, out_channels)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Upsample x (B, C_in, T) with cond (B, C_cond, T) to (B, C_out, T*S)."""
        inp = x if cond is None else torch.cat([x, cond], dim=1)
        if self.resampling == "learned":
            pre = self.conv(inp)  # (B, 2 C_out, T*S)
        else:
            pre = repeat_blocks(self.conv(inp), self.stride)
        return repeat_blocks(self.skip(x), self.stride) + self.out(gate(pre))
