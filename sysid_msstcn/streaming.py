"""Cached streaming inference: free-run simulation linear in the record length.

Every level updates at its own rate: a level of cumulative stride D runs its
bottom-up blocks when the level below has finished a block, and its top-down
blocks (mixer, latent from the prior, which only sees the delayed features,
and decoder) at the first fine step of each of its blocks; the upsampled
output serves the next D fine steps. A causal convolution keeps, for each
step, the contributions of past inputs to the steps that will read them
(fast Wavenet queues), so no history is recomputed.

A time step of a system-identification model is a few dozen products of
tiny matrices, so the fixed cost of each torch call dominates, and the
simulator is built to make few of them (44 per step for ``sysid_small``):

* The weights are read once and each level's chain of blocks is compiled
  into fixed lists of torch calls on preallocated buffers and views. A
  gated block costs one ``tanh_`` and one ``addcmul_``, both in place
  (sigmoid(b) = (1 + tanh(b / 2)) / 2, the halves folded into the
  weights), and one or two ``addmm``.
* A causal convolution keeps, for each future step, the sum of its past
  taps (fast Wavenet queues); the entry of a step is the bias of the
  ``addmm`` that computes its pre-activation, which also starts the entry
  of a later step.
* Between two gates a chain is affine, so consecutive weights can be
  composed (in float64) when the simulator is made: a block's output
  projection then becomes part of the product that computes the next
  block's pre-activation, and in a top-down chain (1x1 convolutions) the
  ``addmm`` after each gate updates the partial pre-activations of all
  later gates and the chain's output (the output head, and the prior mean
  for deterministic latents). This saves calls but costs multiply-adds, so
  each chain is fused only when a rough cost model (calls against
  multiply-adds times the batch) says it is faster: narrow models and
  small batches; wide models and large batches keep one product per
  block's pre-activation and one per output.
* Fed-back outputs, the features d of each level and the exogenous input
  are kept in per-step rows, read as matrices by the first block of each
  level and by the top-down entries. The output of the level above enters
  a top-down entry as a bias, already multiplied by the weights that read
  it; the terms of the known input u are computed for a chunk of steps at
  a time.

All of this is exact algebra (sums are only reassociated): the tests compare
every step with the parallel forward pass.

A teacher-forced warm-up fills the caches with one parallel pass of the
bottom-up network over the aligned part of ``y_init`` and replays at most
``total_stride - 1`` steps one by one.

Shape legend: ``B`` batch (Monte Carlo samples x experiments), ``C``
channels, ``T`` steps, ``W`` width of a row of a buffer.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._affine import Affine, Op, f64, gate_ops, gated, gated_taps, lin, out_weight
from .distributions import GaussianLikelihood
from .layers import DownsampleBlock, UpsampleBlock
from .model import MSSTCN, level_mask

__all__ = ["StreamingSimulator", "simulate"]

# level-0 rows are handled in chunks of at most 2**_CHUNK_BITS steps (and at
# most _CHUNK_ELEMENTS buffer elements), so that a long simulation keeps no
# per-step Python objects; coarser levels keep _COARSE_ROWS rows per chunk
_CHUNK_BITS = 6
_CHUNK_ELEMENTS = 1 << 22
_COARSE_ROWS = 16
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


class _BottomUp:
    """The bottom-up chain of one level, compiled for single-step evaluation.

    The first block reads a window of ``n_win`` rows of the level's input
    (rows of width ``row_width`` whose columns ``row_offset`` onwards hold
    the input; level 0 adds the exogenous input through a per-step bias,
    see :meth:`u_terms`): one ``addmm`` gives E = [P_1, S_1], its
    pre-activation and skip term. Every later block is a :class:`_Queued`
    with a ring of N = max((k - 1) dil) + 1 slots [P, S, Q, constants]: the
    product of step s writes slot s mod N, whose entry Q is read by step s +
    (k - 1) dil.

    Between two blocks, either a product forms x_{k-1} = S_{k-1} + A_{k-1}
    W_out (A the gate's output) and a second one reads it (as many
    multiply-adds as the network; an identity skip is updated in place), or
    the two are fused: [A_{k-1}, S_{k-1}], adjacent in their slot, times
    [[W_out T], [T]] gives the next [P_k, S_k, Q] at once (one call less,
    more multiply-adds); :func:`_fuse` chooses per level. Only the last
    block's output d leaves the chain.

    Parameters
    ----------
    model : MSSTCN
    lv : int
    batch : int
    row_width, row_offset : int
    like : torch.Tensor
        Gives the dtype and device.
    """

    def __init__(
        self,
        model: MSSTCN,
        lv: int,
        batch: int,
        row_width: int,
        row_offset: int,
        like: torch.Tensor,
    ) -> None:
        cfg = model.config
        blocks = list(model.bottom_up.levels[lv])
        n_y = cfg.n_outputs if lv == 0 else cfg.channels[lv - 1]
        n_u = cfg.n_inputs if lv == 0 else 0
        P, base, self.n_win = self._first(blocks[0], n_y, n_u)
        # entry weights: window rows are [.., x, ..] with x at row_offset
        q = Affine.cat([P, base])
        w_in = torch.zeros(self.n_win, row_width, q.dim, dtype=_F64)
        for tau in range(self.n_win):
            w_in[tau, row_offset : row_offset + n_y] = q.coef(f"y{tau}", n_y)
        self.w_in = _dev(w_in.reshape(-1, q.dim), like)
        self.const = _dev(q.const, like)  # (W,)
        self.bias = _bias(q.const, batch, like)  # (B, W)
        self.w_u = None
        if n_u:  # (n_win C_u, W)
            w_u = [q.coef(f"u{tau}", n_u) for tau in range(self.n_win)]
            self.w_u = _dev(torch.cat(w_u), like)
        self.e = like.new_zeros(batch, q.dim)  # E = [P_1, S_1]
        self.fused = _fuse(*self._extra_macs(blocks), batch, like)
        self.queued = queued = [_Queued(b, self.fused) for b in blocks[1:]]
        self.n_phases = N = max([(qb.k - 1) * qb.dil for qb in queued], default=0) + 1
        self.rings = [  # zeroed by zero()
            like.new_empty(N, batch, qb.n_out + (qb.const.shape[0] if qb.k > 1 else 0))
            for qb in queued
        ]
        self.zero()
        outs = [out_weight(blk) for blk in blocks]
        if self.fused:  # rows [A_{k-1}, S_{k-1}]
            w = [torch.cat([outs[i] @ qb.T, qb.T]) for i, qb in enumerate(queued)]
            acc = [
                [torch.cat([outs[i] @ t, t]) for t in qb.taps[1:-1]]
                for i, qb in enumerate(queued)
            ]
        else:
            w = [qb.T for qb in queued]
            acc = [qb.taps[1:-1] for qb in queued]
        w = [_dev(m, like) for m in w]
        acc = [[_dev(m, like) for m in a] for a in acc]
        outs = [_dev(m, like) for m in outs]
        const = [_bias(qb.const, batch, like) for qb in queued]
        # x_k of the per-block form (an identity skip updates it in place)
        x = None if self.fused else like.new_zeros(batch, cfg.channels[lv])
        p1 = P.dim
        self.body: list[list[Op]] = []
        self.final: list[tuple] = []
        for ph in range(N):
            ops, A = gate_ops(self.e[:, :p1])
            base, AS, w_out = self.e[:, p1:], self.e[:, p1 // 2 :], outs[0]
            for i, (qb, ring) in enumerate(zip(queued, self.rings, strict=True)):
                if self.fused:
                    m1 = AS  # [A, S] of the previous block
                else:
                    ops.append((_addmm, (base, A, w_out), {"out": x}))
                    m1 = x
                q0, n2 = qb.n2 + qb.n_s, qb.n2  # the entry Q in a slot
                for m, w_m in enumerate(acc[i], 1):  # tap m: entry of s + m dil
                    tgt = ring[(ph + (m - qb.k + 1) * qb.dil) % N][:, q0 : q0 + n2]
                    ops.append((_addmm, (tgt, m1, w_m), {"out": tgt}))
                if qb.k > 1:  # [Q(s), b_S, b], from slot s - (k - 1) dil
                    bias = ring[(ph - (qb.k - 1) * qb.dil) % N][:, q0 : q0 + qb.n_out]
                else:
                    bias = const[i]
                slot = ring[ph]
                ops.append((_addmm, (bias, m1, w[i]), {"out": slot[:, : qb.n_out]}))
                gate, A = gate_ops(slot[:, :n2])
                ops += gate
                base = slot[:, n2:q0] if qb.with_skip else x
                AS, w_out = slot[:, n2 // 2 : q0], outs[i + 1]
            self.body.append(ops)
            self.final.append((base, A, w_out))

    @staticmethod
    def _extra_macs(blocks: list[nn.Module]) -> tuple[int, int]:
        """Multiply-adds a fused chain adds per step, and the calls it saves."""
        extra = 0
        for blk in blocks[1:]:
            k, n2 = blk.conv.kernel_size[0], blk.conv.weight.shape[0]
            c, proj = n2 // 2, not isinstance(blk.skip, nn.Identity)
            q = n2 if k > 1 else 0
            fused = 2 * c * (n2 + c + q) + (k - 2) * 2 * c * n2
            split = c * c + c * (n2 + (c if proj else 0) + q) + (k - 2) * c * n2
            extra += fused - split
        return extra, len(blocks) - 1

    @staticmethod
    def _first(block: nn.Module, n_y: int, n_u: int):
        """Pre-activation and skip term of the first block (symbolic).

        Sources ``y{tau}`` (and ``u{tau}``) are the input at window row tau
        (oldest first). Returns (P, skip, window length).
        """

        def x(tau: int) -> Affine:
            parts = [Affine.source(f"y{tau}", n_y)]
            if n_u:
                parts.append(Affine.source(f"u{tau}", n_u))
            return Affine.cat(parts)

        if isinstance(block, DownsampleBlock) and block.resampling == "learned":
            S = block.stride
            w = gated(f64(block.conv.weight))  # (2C, I, S)
            P = x(0) @ w[..., 0].t()
            mean = x(0)
            for k in range(1, S):
                P, mean = P + x(k) @ w[..., k].t(), mean + x(k)
            P = P.shift(gated(f64(block.conv.bias)))
            return P, lin(mean * (1.0 / S), block.skip), S
        taps, b = gated_taps(block.conv)
        dil = block.conv.dilation[0]
        M = (len(taps) - 1) * dil
        S = block.stride if isinstance(block, DownsampleBlock) else 1
        pre, skip = [], []
        for k in range(S):  # fixed downsampling: pre-activations summed
            s = M + k  # window row of step k of the block
            acc = x(s) @ taps[0]
            for m in range(1, len(taps)):
                acc = acc + x(s - m * dil) @ taps[m]
            pre.append(acc.shift(b))
            skip.append(lin(x(s), block.skip))
        if S == 1:
            return pre[0], skip[0], M + 1
        P, base = pre[0], skip[0]
        for k in range(1, S):
            P, base = P + pre[k], base + skip[k]
        return P * (1 / math.sqrt(S)), base * (1 / math.sqrt(S)), M + S

    def u_terms(self, u_win: torch.Tensor, out: torch.Tensor) -> None:
        """Per-step entry bias (B, n, W) from u windows (B, n, n_win C_u), into out."""
        torch.matmul(u_win, self.w_u, out=out).add_(self.const)

    def run(
        self, phase: int, bias: torch.Tensor, window: torch.Tensor, out: torch.Tensor
    ) -> None:
        """One step: the level's features d (B, C) go to ``out``."""
        _addmm(bias, window, self.w_in, out=self.e)
        _run(self.body[phase])
        base, a, w = self.final[phase]
        _addmm(base, a, w, out=out)

    def zero(self) -> None:
        """Empty queues: the entries of steps 0 .. (k - 1) dil - 1 hold b."""
        N = self.n_phases
        for qb, ring in zip(self.queued, self.rings, strict=True):
            ring.zero_()
            if qb.k > 1:
                q0, dil = qb.n2 + qb.n_s, qb.dil
                ring[..., qb.n_out :] = qb.const.to(ring)
                first = [
                    (tau - (qb.k - 1) * dil) % N for tau in range((qb.k - 1) * dil)
                ]
                ring[first, :, q0 : q0 + qb.n2] = qb.b.to(ring)

    def prime(self, inputs: list[torch.Tensor | None], n: int) -> None:
        """Queue a teacher-forced history of n steps.

        Parameters
        ----------
        inputs : list of torch.Tensor of shape (B, C_in, n)
            The input of every block (the first one is not used).
        n : int
        """
        N = self.n_phases
        self.zero()
        for qb, ring, x in zip(self.queued, self.rings, inputs[1:], strict=True):
            if qb.k == 1:
                continue
            q0, dil = qb.n2 + qb.n_s, qb.dil
            taps = [t.to(ring) for t in qb.taps]
            for tau in range(n, n + (qb.k - 1) * dil):  # entries still queued
                entry = qb.b.to(ring).expand(ring.shape[1], -1)
                for m in range(1, qb.k):
                    if 0 <= tau - m * dil < n:
                        entry = entry + x[..., tau - m * dil] @ taps[m]
                slot = ring[(tau - (qb.k - 1) * dil) % N]
                slot[:, q0 : q0 + qb.n2] = entry


class _TopDown:
    """The top-down chain of one level: mixer, latent, decoder and output.

    It starts with one product that reads a row [d_{j-1}, u] (u on level 0
    only) with, as bias, the output of the level above already multiplied by
    the weights that read it (see :meth:`link`; a constant at the top).
    Two forms, chosen by :func:`_fuse`:

    * per block: a product gives a block's pre-activation (and the terms
      that its output needs as a bias), a second one its output (in place
      on the residual for an identity skip). The residual g follows the
      latent z in a buffer X = [(prior pre-activation), z, g], so that a
      decoder block reads [z, g] as one matrix: the last mixer block writes
      [prior, h] there.
    * fused: the chain is affine between its stages (gates, the latent
      draw), so with the stage outputs A_k as sources the buffer Z_k holds
      [P_{k+1}, .., P_n, output] with everything known after stage k added
      in: Z_0 = bias + [d, u] F and Z_k = tail(Z_{k-1}) + A_k W_k, one product
      per stage (every A_k reaches all later stages: more multiply-adds).

    Parameters
    ----------
    model : MSSTCN
    lv : int
    latent : {"prior", "prior_mean"}
    batch : int
    sample : callable
        ``sample(lv, mean, pre, z)`` draws the latent into z.
    like : torch.Tensor
    head_y : bool
        Level 0: whether the output row is [params, y] (y, the Gaussian
        mean, repeated) or the parameters only.
    """

    def __init__(
        self,
        model: MSSTCN,
        lv: int,
        latent: str,
        batch: int,
        sample: Callable,
        like: torch.Tensor,
        head_y: bool = False,
    ) -> None:
        cfg = model.config
        td = model.top_down[lv]
        self.lv, self.batch, self.like, self.sample = lv, batch, like, sample
        self.head_y = head_y
        C = cfg.channels[lv]
        self.has_above = lv < cfg.n_levels - 1
        parts = [Affine.source("g", C)] if self.has_above else []
        parts.append(Affine.source("d", C))
        n_u = cfg.n_inputs if lv == 0 else 0
        if n_u:
            parts.append(Affine.source("u", n_u))
        self.parts = parts
        self.n_z = td.prior.weight.shape[0] // 2 if td.use_latents else 0
        self.sampled = td.use_latents and latent == "prior"
        self.ops: list[Op] = []
        self.last: tuple | None = None  # level 0: (bias, A, W) of the output row
        self.g: torch.Tensor | None = None  # level > 0: output, (B, [S,] C_out)
        self.fused = _fuse(*self._extra_macs(model), batch, like)
        entry = self._fused(model) if self.fused else self._per_block(model)
        self.F_g = entry.coef("g", C) if self.has_above else None
        self.const = entry.const
        names = ("d", "u")[: len(parts) - self.has_above]
        inputs = parts[self.has_above :]  # a d row is [d, u]
        w_in = [entry.coef(s, p.dim) for s, p in zip(names, inputs, strict=True)]
        self.w_in = _dev(torch.cat(w_in), like)
        self.bias = [_bias(self.const, batch, like)]  # link() sets it below the top

    def _extra_macs(self, model: MSSTCN) -> tuple[int, int]:
        """Multiply-adds the fused form adds per step, and the calls it saves."""
        cfg, td, lv = model.config, model.top_down[self.lv], self.lv
        C, n_z = cfg.channels[lv], self.n_z
        n_in = sum(p.dim for p in self.parts)
        widths, dims, per_block, w_in = [], [], 0, n_in
        for _ in td.mixer:
            widths.append(2 * C)
            dims.append(C)
            per_block += w_in * 3 * C + C * C
            w_in = C
        per_block += C * 2 * n_z  # the prior, with the last mixer block
        if self.sampled:
            widths.append(2 * n_z)
            dims.append(n_z)
        for blk in td.decoder:
            transposed = isinstance(blk.conv, nn.ConvTranspose1d)
            n2 = blk.conv.weight.shape[1 if transposed else 0]
            S = blk.conv.weight.shape[-1] if transposed else 1
            widths.append(S * n2)
            dims.append(n2 // 2)
            per_block += (n_z + w_in) * (S * n2 + n2 // 2) + S * n2 // 2 * n2 // 2
            w_in = n2 // 2
        out = w_in
        if lv == 0:
            out = model.likelihood.n_params + (cfg.n_outputs if self.head_y else 0)
        per_block += w_in * out
        fused = n_in * (sum(widths) + out)
        for k in range(1, len(widths)):
            fused += dims[k - 1] * (sum(widths[k:]) + out)
        fused += dims[-1] * out * (widths[-1] // (2 * dims[-1]))
        if self.has_above:  # the level above projects its output onto Z_0
            fused += C * (sum(widths) + out)
            per_block += C * 3 * C
        n_blocks = len(td.mixer) + len(td.decoder)
        return fused - per_block, n_blocks - 1 - self.sampled

    def _head(self, model: MSSTCN, g: Affine) -> Affine:
        """The level-0 output row of the top-down output g: [params(, y)]."""
        params = lin(g, model.head)
        if not self.head_y:
            return params
        return Affine.cat([params, params.cols(model.config.n_outputs)])

    # ---------------------------------------------------------- per block
    def _per_block(self, model: MSSTCN) -> Affine:
        """Compile the per-block form; returns the entry (block 0's product)."""
        cfg, td, lv = model.config, model.top_down[self.lv], self.lv
        B, like = self.batch, self.like
        n_z, sampled = self.n_z, self.sampled
        z_w = 2 * n_z if sampled else n_z  # X = [(pre), z, g]
        c_out = cfg.channels[max(lv - 1, 0)]
        X = like.new_zeros(B, z_w + max(cfg.channels[lv], c_out))
        blocks = list(td.mixer) + list(td.decoder)
        n_mix = len(td.mixer)
        width, entry = cfg.channels[lv], None
        for i, blk in enumerate(blocks):
            dec, last = i >= n_mix, i == len(blocks) - 1
            x = Affine.cat(self.parts) if i == 0 else Affine.source("x", width)
            # the model's order [g, z] (X holds [z, g]: rows are picked by name)
            inp = Affine.cat([x, Affine.source("z", n_z)]) if dec and n_z else x
            up = isinstance(blk, UpsampleBlock) and blk.resampling == "learned"
            if up:  # transposed convolution: S pre-activations, step-major
                wt = gated(f64(blk.conv.weight), 1)  # (I, 2C, S)
                c_in, n2, S = wt.shape
                wt = wt.permute(0, 2, 1).reshape(c_in, -1)
                P = (inp @ wt).shift(gated(f64(blk.conv.bias)).repeat(S))
            else:
                taps, b = gated_taps(blk.conv)
                P, n2 = (inp @ taps[0]).shift(b), taps[0].shape[1]
            c_o = n2 // 2
            # the block's output y = base + A W_out, as the columns it writes:
            # the output head or the prior folded in when that is cheaper
            # than a product of their own (their bias columns cost
            # multiply-adds in the block's first product)
            a = Affine.source("a", c_o)
            y = lin(x, blk.skip) + a @ out_weight(blk)
            head = last and lv == 0
            prior = i == n_mix - 1 and n_z > 0
            n_head = model.likelihood.n_params + (cfg.n_outputs if self.head_y else 0)
            extra = n_head if head else z_w if prior else 0
            fold = extra > 0 and _fuse(inp.dim * extra, 1, B, like)
            if head and fold:
                y = self._head(model, y)
            elif prior and fold:  # [pre, mean, h] or [z, h]
                y = Affine.cat([*self._prior(td, y), y])
            w_a = _dev(y.coef("a", c_o), like)
            base = Affine({k: m for k, m in y.terms.items() if k != "a"}, y.const)
            # y = x + A W_out: the residual is updated in place, no bias columns
            plain = i > 0 and not fold and isinstance(blk.skip, nn.Identity)
            q = P if plain else Affine.cat([P, base])
            Z = like.new_zeros(B, q.dim)
            if i == 0:
                entry, self.z0 = q, Z
            else:
                srcs = [("z", n_z)] if dec and n_z else []
                w = torch.cat([q.coef(s, n) for s, n in [*srcs, ("x", width)]])
                lo = z_w - n_z if dec and n_z else z_w
                m1 = X[:, lo : z_w + width]  # [z, g] or g
                b = _bias(q.const, B, like)
                self.ops.append((_addmm, (b, m1, _dev(w, like)), {"out": Z}))
            x_region = X[:, z_w : z_w + width]
            bias = x_region if plain else Z[:, P.dim :]
            if up:
                gate, A = gate_ops(Z[:, : P.dim].view(B, S, n2))  # (B, S, C_out)
                self.ops += gate
                self.g = like.new_zeros(B, S, c_o)
                w3 = w_a.expand(B, -1, -1)
                self.ops.append((_baddbmm, (bias.unsqueeze(1), A, w3), {"out": self.g}))
                break
            gate, A = gate_ops(Z[:, : P.dim])
            self.ops += gate
            if head and fold:
                self.last = (bias, A, w_a)
            elif last and lv > 0:
                self.g = like.new_zeros(B, c_o)
                self.ops.append((_addmm, (bias, A, w_a), {"out": self.g}))
            else:  # [(pre), z, h] or g, in X
                out = bias if plain else X[:, z_w + c_o - y.dim : z_w + c_o]
                self.ops.append((_addmm, (bias, A, w_a), {"out": out}))
                h, g = X[:, z_w : z_w + c_o], Affine.source("h", c_o)
                if head:  # the output head on its own
                    q = self._head(model, g)
                    w = _dev(q.coef("h", c_o), like)
                    self.last = (_bias(q.const, B, like), h, w)
                elif prior and not fold:  # the prior on its own
                    q = Affine.cat(self._prior(td, g))
                    w = _dev(q.coef("h", c_o), like)
                    b = _bias(q.const, B, like)
                    self.ops.append((_addmm, (b, h, w), {"out": X[:, :z_w]}))
                if prior and sampled:
                    mean, pre = X[:, n_z:z_w], X[:, :n_z]
                    self.ops.append((self.sample, (lv, mean, pre, mean), {}))
            width = c_o
        return entry

    def _prior(self, td: nn.Module, h: Affine) -> list[Affine]:
        """The prior's columns as stored in X: [pre, mean] (sampled) or [mean]."""
        n_z = self.n_z
        w, b = f64(td.prior.weight)[..., 0], f64(td.prior.bias)
        mean = (h @ w[:n_z].t()).shift(b[:n_z])
        if not self.sampled:
            return [mean]
        return [(h @ w[n_z:].t()).shift(b[n_z:]), mean]

    # --------------------------------------------------------------- fused
    def _fused(self, model: MSSTCN) -> Affine:
        """Compile the fused form; returns the entry (Z_0)."""
        td, lv = model.top_down[self.lv], self.lv
        self.stages: list[tuple[str, Affine, int]] = []  # (kind, P_k, dim of A_k)
        x = Affine.cat(self.parts)
        for blk in td.mixer:
            x = self._gated_stage(blk, x, None)
        z = None
        if td.use_latents:
            w, b = f64(td.prior.weight)[..., 0], f64(td.prior.bias)
            n_z = self.n_z
            if self.sampled:
                z = self._stage("sample", (x @ w.t()).shift(b), n_z)
            else:
                z = (x @ w[:n_z].t()).shift(b[:n_z])
        g, up = x, None
        for blk in td.decoder:
            if isinstance(blk, UpsampleBlock) and blk.resampling == "learned":
                inp = g if z is None else Affine.cat([g, z])
                wt = gated(f64(blk.conv.weight), 1)  # (I, 2C, S)
                c_in, n2, S = wt.shape
                wt = wt.permute(0, 2, 1).reshape(c_in, -1)  # step-major
                bt = gated(f64(blk.conv.bias)).repeat(S)
                self._stage("gate3d", (inp @ wt).shift(bt), n2 // 2)
                g, up = lin(g, blk.skip), (S, out_weight(blk))
            else:  # a 1x1 gated block (fixed upsampling repeats its output)
                g = self._gated_stage(blk, g, z)
        if lv == 0:
            g = self._head(model, g)
        return self._compile(g, up)

    def _stage(self, kind: str, P: Affine, dim: int) -> Affine:
        name = f"a{len(self.stages)}"
        self.stages.append((kind, P, dim))
        return Affine.source(name, dim)

    def _gated_stage(self, blk: nn.Module, x: Affine, cond: Affine | None) -> Affine:
        inp = x if cond is None else Affine.cat([x, cond])
        taps, b = gated_taps(blk.conv)
        a = self._stage("gate", (inp @ taps[0]).shift(b), taps[0].shape[1] // 2)
        return lin(x, blk.skip) + a @ out_weight(blk)

    def _compile(self, out: Affine, up: tuple[int, torch.Tensor] | None) -> Affine:
        """Buffers and calls of the fused form; ``out`` is the chain's output."""
        B, like, lv = self.batch, self.like, self.lv
        qs = [P for _, P, _ in self.stages] + [out]
        n = len(self.stages)
        for k in range(n):  # causality: P_j does not read A_k for j <= k
            assert all(f"a{k}" not in q.terms for q in qs[: k + 1]), "not causal"
        z0 = Affine.cat(qs)
        self.z0 = Z = like.new_zeros(B, z0.dim)
        for k, (kind, P, dim) in enumerate(self.stages):
            w_p = P.dim
            if kind == "gate3d":
                gate, A = gate_ops(Z[:, :w_p].view(B, up[0], -1))  # (B, S, C)
                self.ops += gate
            elif kind == "gate":
                gate, A = gate_ops(Z[:, :w_p])
                self.ops += gate
            else:
                A = like.new_zeros(B, dim)
                self.ops.append((self.sample, (lv, Z[:, :dim], Z[:, dim:w_p], A), {}))
            tail = Z[:, w_p:]
            if k == n - 1 and up is not None:  # (B, S, C_out) from the base
                self.g = like.new_zeros(B, up[0], up[1].shape[1])
                w = _dev(up[1], like).expand(B, -1, -1)
                self.ops.append((_baddbmm, (tail.unsqueeze(1), A, w), {"out": self.g}))
                break
            w = torch.cat([q.coef(f"a{k}", dim) for q in qs[k + 1 :]], 1)
            w = _dev(w, like)
            if k == n - 1 and lv == 0:
                self.last = (tail, A, w)
                break
            Z = like.new_zeros(B, w.shape[1])
            self.ops.append((_addmm, (tail, A, w), {"out": Z}))
        if lv > 0 and up is None:
            self.g = Z  # (B, C_out), the same for every fine step
        return z0

    def link(self, below: _TopDown, like: torch.Tensor) -> None:
        """Project this level's output g onto the input of the level below.

        One ``addmm`` per step of this level computes G_k = const + g_k F_g
        for its S outputs; G_k is the bias of the level below's entry.
        """
        F_g, g = _dev(below.F_g, like), self.g
        if g.dim() == 3:  # learned upsampling: S outputs
            B, S, _ = g.shape
            G = like.new_zeros(B, S, F_g.shape[1])
            const = _bias(below.const, B * S, like)
            self.ops.append(
                (_addmm, (const, g.view(B * S, -1), F_g), {"out": G.view(B * S, -1)})
            )
            below.bias = list(G.unbind(1))
        else:
            G = like.new_zeros(g.shape[0], F_g.shape[1])
            const = _bias(below.const, g.shape[0], like)
            self.ops.append((_addmm, (const, g, F_g), {"out": G}))
            below.bias = [G]

    def run(self, j: int, d_row: torch.Tensor, out: torch.Tensor | None) -> None:
        """Step j of the level: d_row holds [d_{j-1}, u]; level 0 writes to out."""
        _addmm(self.bias[j % len(self.bias)], d_row, self.w_in, out=self.z0)
        _run(self.ops)
        if self.last is not None:
            _addmm(*self.last, out=out)


class StreamingSimulator:
    """Step-by-step evaluation of an :class:`~sysid_msstcn.model.MSSTCN`.

    The weights are read once and composed into a few matrices per block,
    so that a time step costs a few small matrix products per block.

    Parameters
    ----------
    model : MSSTCN
        The network (its weights are read once, when the simulator is made).
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

    @torch.no_grad()
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
        self.u = u.to(self.device, self.dtype) if cfg.n_inputs else None
        self.B = B = u.shape[0] if self.u is not None else int(batch or 1)
        self.latent, self.noise, self.generator = latent, noise, generator
        self.rates = cfg.cumulative_strides
        self.strides = cfg.strides
        self.n_levels = L = cfg.n_levels
        self.levels_down = list(reversed(range(L)))
        like = torch.empty(0, device=self.device, dtype=self.dtype)
        c_y, n_u = cfg.n_outputs, cfg.n_inputs
        n_p = model.likelihood.n_params
        self._n_p = n_p
        # level 0 reads the fed-back y from rows [params, y] written by the head
        # (no copy when y is the Gaussian mean) or, when the zero-weight
        # params columns would cost more than that copy, from rows [y]
        first = model.bottom_up.levels[0][0].conv
        n_win0 = (first.kernel_size[0] - 1) * first.dilation[0] + 1
        extra = n_win0 * n_p * first.weight.shape[0] * 3 // 2
        self._head_y = hy = isinstance(model.likelihood, GaussianLikelihood) and _fuse(
            extra, 1, B, like
        )
        bu = [_BottomUp(model, 0, B, n_p + c_y if hy else c_y, n_p if hy else 0, like)]
        for lv in range(1, L):
            width = cfg.channels[lv - 1] + (n_u if lv == 1 else 0)
            bu.append(_BottomUp(model, lv, B, width, 0, like))
        self._bu = bu
        td = [
            _TopDown(model, lv, latent, B, self._sample, like, hy and lv == 0)
            for lv in range(L)
        ]
        for lv in range(1, L):
            td[lv].link(td[lv - 1], like)
        self._td = td
        # level 0: rows of [params, y] and of [d, u_{t+1}], in chunks
        win0, win1 = bu[0].n_win, bu[1].n_win if L > 1 else 1
        self._h0 = h0 = max(win0 - 1, win1 - 1, 1)
        c0 = cfg.channels[0]
        per_row = n_p + c_y + c0 + n_u + (bu[0].const.shape[0] if n_u else 0)
        k0 = min(1 << _CHUNK_BITS, _CHUNK_ELEMENTS // (B * per_row))
        self._k0 = k0 = max(16, h0, k0)
        self._pb = _History(
            B, h0, k0, n_p + c_y if hy else n_p, win0 if hy else 0, like
        )
        self._yb = self._pb if hy else _History(B, h0, k0, c_y, win0, like)
        self._db0 = _History(B, h0, k0, c0 + n_u, win1 if L > 1 else 0, like)
        self._pb_params = _rows(self._pb.buf, 0, n_p)
        self._pb_mean = _rows(self._pb.buf, 0, c_y)
        self._y = _rows(self._yb.buf, n_p if hy else 0)
        self._db0_d = _rows(self._db0.buf, 0, c0)
        # coarser levels: rows of d_l
        self._db: list[_History | None] = [None]
        for lv in range(1, L):
            win = bu[lv + 1].n_win if lv + 1 < L else 0
            h = max(win - 1, 1)
            rows = max(_COARSE_ROWS, h)
            self._db.append(_History(B, h, rows, cfg.channels[lv], win, like))
        D = cfg.total_stride
        self._td_due = [
            [lv for lv in self.levels_down if p % self.rates[lv] == 0] for p in range(D)
        ]
        self._u_next = self._u_rows = None
        if self.u is not None:
            # x_u(t) = u_{t+1} (zero at t = T - 1), as in the bottom-up input
            self._u_next = F.pad(self.u[..., 1:], (0, 1))
            # level-0 entry bias of each step of a chunk (rows made once: new
            # tensors per chunk would wake the garbage collector)
            self._u_buf = like.new_zeros(B, k0, bu[0].const.shape[0])
            self._u_rows = _rows(self._u_buf)
        self.t = 0
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self, t0: int = 0) -> None:
        """Zero every cache; the next step is t0."""
        self._pb.buf.zero_()
        self._yb.buf.zero_()
        self._db0.buf.zero_()
        for h in self._db[1:]:
            h.buf.zero_()
            h.i = h.H - 1
        for chain in self._bu:
            chain.zero()
        self.t = t0
        self._start_chunk(t0)
        self.last_d = [self._db0_d[self._r - 1]] + [h.rows[h.i] for h in self._db[1:]]

    def _start_chunk(self, t0: int) -> None:
        """Point level 0 at row H for step t0 and fill the chunk's input terms."""
        H, K = self._h0, self._k0
        self._r, self._r_end = H, H + K
        if self.u is None:
            return
        # the u column of row i is u_{t+1} for its step t = t0 - H + i
        self._db0.buf[..., self._db0.buf.shape[-1] - self.cfg.n_inputs :] = _u_slice(
            self.u, t0 - H + 1, H + K
        ).transpose(1, 2)
        # entry bias of BU level 0 for steps t0 .. t0 + K - 1 (zero for t < 0)
        chain = self._bu[0]
        n_win = chain.n_win
        seg = _u_slice(self._u_next, t0 - n_win + 1, K + n_win - 1)  # (B, C_u, ..)
        win = seg.unfold(-1, n_win, 1)  # (B, C_u, K, n_win)
        win = win.permute(0, 2, 3, 1).reshape(self.B, K, -1)  # (B, K, n_win C_u)
        chain.u_terms(win, self._u_buf)

    def _next_chunk(self) -> None:
        """Roll the level-0 rows: the chunk is full."""
        self._pb.roll()
        if self._yb is not self._pb:
            self._yb.roll()
        self._db0.roll()
        self._start_chunk(self.t)

    def _chunk_full(self) -> bool:
        """Whether the level-0 rows are full (copy them out before the next step)."""
        return self._r == self._r_end

    def _recent(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Params (B, P, n) and fed-back outputs (B, C_y, n) of the last n steps."""
        params = self._pb.buf[:, self._r - n : self._r, : self._n_p]
        y = self._yb.buf[:, self._r - n : self._r, -self.cfg.n_outputs :]
        return params.transpose(1, 2), y.transpose(1, 2)

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
        for _ in range(n_a, n0):
            self.predict_params()
            self.push(y_init[..., self.t : self.t + 1])

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
        self._reset(n)
        H = self._h0
        for h in range(1, min(H, n) + 1):  # history rows of steps n - h
            self._y[H - h].copy_(y[..., n - h])
            self._db0_d[H - h].copy_(d[0][..., n - h])
        for lv in range(1, self.n_levels):
            hist, J = self._db[lv], n // self.rates[lv]
            for h in range(1, min(hist.H, J) + 1):
                hist.rows[hist.H - h].copy_(d[lv][..., J - h])
        for lv, chain in enumerate(self._bu):
            chain.prime(inputs[lv], n // self.rates[lv])  # (B, C_in, n_l) per block
        self.last_d = [self._db0_d[self._r - 1]] + [h.rows[h.i] for h in self._db[1:]]

    # ----------------------------------------------------------- bottom-up
    def _push_level(self, lv: int, x: torch.Tensor | None) -> None:
        """Feed one input step to level lv's bottom-up network.

        The input x (B, C_in) is already in place in the rows the level
        reads; the level runs when it completes one of its blocks, writes
        its features d into its rows (``last_d[lv]``) and feeds them on.
        """
        t1 = self.t + 1
        rate = self.rates[lv]
        if t1 % rate:
            return
        chain = self._bu[lv]
        phase = (t1 // rate - 1) % chain.n_phases
        if lv == 0:
            r = self._r
            bias = chain.bias if self._u_rows is None else self._u_rows[r - self._h0]
            d = self._db0_d[r]
            chain.run(phase, bias, self._yb.windows[r], d)
        else:
            below = self._db0.windows[self._r] if lv == 1 else None
            if below is None:
                hist = self._db[lv - 1]
                below = hist.windows[hist.i]
            hist = self._db[lv]
            d = hist.rows[hist.advance()]
            chain.run(phase, chain.bias, below, d)
        self.last_d[lv] = d
        if lv + 1 < self.n_levels:
            self._push_level(lv + 1, d)

    @torch.no_grad()
    def push(self, y_t: torch.Tensor) -> None:
        """Feed the output value of the current step and advance.

        Parameters
        ----------
        y_t : torch.Tensor of shape (B, C_y, 1)
        """
        self._push(y_t[..., 0])

    def _push(self, x: torch.Tensor | None) -> None:
        """:meth:`push` for a step without its time axis: (B, C_y).

        ``None`` feeds back the predicted mean of a Gaussian likelihood (the
        head may write it next to the parameters).
        """
        if self._r == self._r_end:  # no predict_params() since the last roll
            self._next_chunk()
        y_row = self._y[self._r]
        if x is not None:
            y_row.copy_(x)
        elif not self._head_y:
            y_row.copy_(self._pb_mean[self._r])
        self._push_level(0, y_row)
        self.t += 1
        self._r += 1

    # ------------------------------------------------------------ top-down
    def _latent_noise(self, lv: int, j: int, shape) -> torch.Tensor:
        if self.noise is not None:
            return self.noise[lv][..., j]
        return torch.randn(
            shape, generator=self.generator, device=self.device, dtype=self.dtype
        )

    def _sample(
        self, lv: int, mean: torch.Tensor, pre: torch.Tensor, z: torch.Tensor
    ) -> None:
        """Draw the latent z = mean + softplus(pre) eps of level lv into z."""
        cfg = self.cfg
        std = F.softplus(pre).clamp_(cfg.std_min, cfg.std_max)
        eps = self._latent_noise(lv, self.t // self.rates[lv], mean.shape)
        _addcmul(mean, std, eps, out=z)

    def _decode(self, lv: int, h: torch.Tensor | None, z: torch.Tensor | None) -> None:
        """The top-down step of level lv: mixer, latent and decoder.

        They run as one compiled chain, so the mixer output h and the latent
        z stay in its buffers (the arguments are accepted and ignored). The
        output goes to the level below's entry bias (level 0: to the row of
        predictive parameters).
        """
        j = self.t // self.rates[lv]
        if lv == 0:
            self._td[0].run(j, self._db0.rows[self._r - 1], self._pb.rows[self._r])
        else:
            hist = self._db[lv]
            self._td[lv].run(j, hist.rows[hist.i], None)

    @torch.no_grad()
    def predict_params(self) -> torch.Tensor:
        """Raw predictive parameters for the current step: (B, P, 1)."""
        return self._params()[..., None].clone()

    def _params(self) -> torch.Tensor:
        """:meth:`predict_params` without the time axis: (B, P).

        A view of the simulator's rows, valid until the chunk is rolled.
        """
        if self._r == self._r_end:
            self._next_chunk()
        for lv in self._td_due[self.t % len(self._td_due)]:
            self._decode(lv, None, None)
        return self._pb_params[self._r]


def _u_slice(u: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """u[..., start:start + n] with zeros outside the record: (B, C_u, n)."""
    T = u.shape[-1]
    lo, hi = max(start, 0), min(start + n, T)
    seg = u[..., lo:hi] if hi > lo else u[..., :0]
    return F.pad(seg, (lo - start, start + n - max(hi, lo)))


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
