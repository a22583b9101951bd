"""Pieces of the streaming simulator: fusing costs, buffers and queues.

The cost model that decides whether to compose weights, views of step
buffers, step histories and the queues of causal convolutions.

Shape legend: ``B`` batch, ``R`` rows of a buffer, ``W`` width of a row.
"""

from __future__ import annotations

import torch
from torch import nn

from .._affine import Op, f64, gated_taps

# a fused product saves torch calls but does more multiply-adds; one call
# costs about as much as _CALL_MACS of them (float32, summed over the batch,
# one CPU thread). _FUSE forces one form (tests); None lets the costs decide
_CALL_MACS = 8_000
_FUSE: bool | None = None

_F64 = torch.float64
_addmm, _addcmul, _baddbmm = torch.addmm, torch.addcmul, torch.baddbmm


def _fuse(extra_macs: int, saved_calls: int, batch: int, like: torch.Tensor) -> bool:
    """Whether ``saved_calls`` fewer calls are worth ``extra_macs`` (per sample)."""
    if _FUSE is not None:
        return _FUSE
    if saved_calls <= 0:  # nothing to fuse
        return False
    budget = _CALL_MACS * 4 / like.element_size()  # float64 costs twice
    if like.device.type != "cpu":  # calls cost more there, arithmetic far less
        budget *= 64
    return batch * extra_macs <= saved_calls * budget


def _dev(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A composed weight in the model's dtype and device (contiguous)."""
    return w.to(like).contiguous()


def _bias(c: torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A constant bias (W,) as a (B, W) tensor (faster in ``addmm`` than 1-D)."""
    return c.to(like).expand(batch, -1).contiguous()


def _run(ops: list[Op]) -> None:
    for f, args, kw in ops:
        f(*args, **kw)


def _rows(buf: torch.Tensor, lo: int = 0, hi: int | None = None) -> list:
    """Views (B, hi - lo) of columns lo:hi of every row of a (B, R, W) buffer."""
    return list(buf[..., lo:hi].unbind(1))


def _windows(buf: torch.Tensor, n: int) -> list:
    """Views (B, n W) of n consecutive rows of a (B, R, W) buffer, by last row."""
    B, R, W = buf.shape
    v = buf.as_strided((R - n + 1, B, n * W), (W, R * W, 1), buf.storage_offset())
    return [None] * (n - 1) + list(v.unbind(0))


class _History:
    """Per-step rows (B, W) of one level, time-major per batch element.

    The buffer (B, H + K, W) keeps H rows of history in front of a chunk
    of K rows; when the chunk is full its last H rows move to the front.
    Views of every row and window are made once.

    Parameters
    ----------
    batch, hist, length, width : int
        B, H, K and W.
    window : int
        Rows per window (the input of the next level's first block).
    like : torch.Tensor
        Gives the dtype and device.
    """

    def __init__(
        self,
        batch: int,
        hist: int,
        length: int,
        width: int,
        window: int,
        like: torch.Tensor,
    ) -> None:
        self.H, self.K = hist, length
        self.buf = like.new_zeros(batch, hist + length, width)  # (B, H + K, W)
        self.rows = _rows(self.buf)
        self.windows = _windows(self.buf, window) if window else []
        self.i = hist - 1  # the latest row

    def roll(self) -> None:
        """Move the last H rows to the front."""
        H, K = self.H, self.K
        if H:
            self.buf[:, :H] = self.buf[:, K : K + H].clone()

    def advance(self) -> int:
        """Index of the next row (rolling when the chunk is full)."""
        i = self.i + 1
        if i == self.H + self.K:
            self.roll()
            i = self.H
        self.i = i
        return i


class _Queued:
    """A causal gated block that follows another one, with a queue per step.

    P(s) = x(s) W_0 + Q(s), where the queue entry Q(s) = b + sum_{m >= 1}
    x(s - m dil) W_m collects the past taps (fast Wavenet). The product that
    computes P(s) (and the skip term S(s), when it is needed) also starts
    the entry of step s + (k - 1) dil, x(s) W_{k-1} + b: its output [P, S,
    Q] has the bias [Q(s), b_S, b], i.e. the entry of step s followed by
    constants in the same slot (see :class:`_BottomUp`). Taps 1 .. k - 2
    are added to their entries as they arrive.

    Parameters
    ----------
    block : GatedBlock
    with_skip : bool
        Whether the product computes S even for an identity skip.
    """

    def __init__(self, block: nn.Module, with_skip: bool) -> None:
        self.taps, b = gated_taps(block.conv)
        self.k = k = len(self.taps)
        self.dil = block.conv.dilation[0] if k > 1 else 0
        c_in, self.n2 = self.taps[0].shape
        proj = not isinstance(block.skip, nn.Identity)
        self.with_skip = with_skip or proj
        cols, s_b = [self.taps[0]], []
        if self.with_skip:
            if proj:
                cols.append(f64(block.skip.weight)[..., 0].t())
                s_b.append(f64(block.skip.bias))
            else:
                cols.append(torch.eye(c_in, dtype=_F64))
                s_b.append(torch.zeros(c_in, dtype=_F64))
        self.n_s = self.n2 // 2 if self.with_skip else 0  # width of S
        if k > 1:
            cols.append(self.taps[-1])
        self.T = torch.cat(cols, 1)  # (C_in, [P, S, Q])
        self.n_out = self.T.shape[1]
        # the constants that follow Q in a slot, or the bias of a 1x1 block
        self.const = torch.cat([*s_b, b]) if k > 1 else torch.cat([b, *s_b])
        self.b = b
