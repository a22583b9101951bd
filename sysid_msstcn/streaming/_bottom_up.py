"""The bottom-up chain of one level, compiled into torch calls on step rows.

Shape legend: ``B`` batch, ``C`` channels, ``W`` width of a row.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._affine import Affine, Op, f64, gate_ops, gated, gated_taps, lin, out_weight
from ..layers import DownsampleBlock
from ..model import MSSTCN
from ._buffers import (
    _F64,
    _addmm,
    _bias,
    _dev,
    _fuse,
    _Queued,
    _run,
)


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
