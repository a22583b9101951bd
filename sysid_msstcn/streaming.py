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
  weights), and one ``addmm``.
* Between two gates a chain is affine, so consecutive weights are composed
  (in float64) when the simulator is made, and a block's output projection
  is part of the product that computes the next block's pre-activation. In
  a top-down chain (1x1 convolutions) the ``addmm`` after each gate updates
  the partial pre-activations of all later gates and the chain's output
  (the output head on level 0; deterministic latents, the prior mean, are
  folded in as well).
* A causal convolution queues, for each step, the contributions of its
  input to the steps that will read them (fast Wavenet) as carries: the
  product after a gate reads [pre-activation, skip term, carries due now]
  as one matrix and writes the next block's [carries, pre-activation, skip
  term], in slots laid out so that the operands are adjacent.
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

from .distributions import GaussianLikelihood
from .layers import DownsampleBlock, UpsampleBlock
from .model import MSSTCN, level_mask

__all__ = ["StreamingSimulator", "simulate"]

# level-0 rows are handled in chunks of at most 2**_CHUNK_BITS steps (and at
# most _CHUNK_ELEMENTS buffer elements), so that a long simulation keeps no
# per-step Python objects; coarser levels keep _COARSE_ROWS rows per chunk
_CHUNK_BITS = 10
_CHUNK_ELEMENTS = 1 << 22
_COARSE_ROWS = 64

_F64 = torch.float64
_addmm, _addcmul, _baddbmm = torch.addmm, torch.addcmul, torch.baddbmm
_tanh_, _addcmul_ = torch.Tensor.tanh_, torch.Tensor.addcmul_

# one torch call of a compiled chain: (function, positional args, keywords)
_Op = tuple[Callable, tuple, dict]


def _f64(w: torch.Tensor) -> torch.Tensor:
    """A weight as a float64 CPU tensor (weights are composed in float64)."""
    return w.detach().to("cpu", _F64)


def _gate_scale(n: int) -> torch.Tensor:
    """Row scale of a gated pre-activation: 1 for tanh rows, 1/2 for the gate.

    With the gate half scaled by 1/2, tanh(a) * sigmoid(b) =
    (t_a + t_a * t_b) / 2 for t = tanh(scaled pre-activation), so one tanh
    serves both halves; the final 1/2 is folded into the output projection.
    """
    s = torch.ones(n, dtype=_F64)
    s[n // 2 :] = 0.5
    return s


def _gate(P: torch.Tensor) -> tuple[list[_Op], torch.Tensor]:
    """Calls that turn P = [a, b / 2] into [2 tanh(a) sigmoid(b), tanh(b / 2)].

    Both run in place (cheaper than writing elsewhere); returns them and A,
    the view of the first half. A product that reads all of P gives the
    second half zero weights (its values are finite).
    """
    Pa, Pg = P.chunk(2, dim=-1)
    return [(_tanh_, (P,), {}), (_addcmul_, (Pa, Pa, Pg), {})], Pa


def _bias(c: torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A constant bias (W,) as a (B, W) tensor (faster in ``addmm`` than 1-D)."""
    return c.to(like).expand(batch, -1).contiguous()


def _run(ops: list[_Op]) -> None:
    for f, args, kw in ops:
        f(*args, **kw)


class _Affine:
    """An affine map of named sources, sum_s x_s @ M_s + c (float64, CPU).

    The linear parts of a chain of blocks are composed with it once, so
    that products such as W_out @ W_conv are formed when the simulator is
    made instead of at every step.

    Parameters
    ----------
    terms : dict of str to torch.Tensor of shape (dim_s, dim)
    const : torch.Tensor of shape (dim,)
    """

    __slots__ = ("const", "terms")

    def __init__(self, terms: dict[str, torch.Tensor], const: torch.Tensor) -> None:
        self.terms, self.const = terms, const

    @classmethod
    def source(cls, name: str, dim: int) -> _Affine:
        """The identity map of a source of ``dim`` channels."""
        return cls({name: torch.eye(dim, dtype=_F64)}, torch.zeros(dim, dtype=_F64))

    @property
    def dim(self) -> int:
        return self.const.shape[0]

    def __matmul__(self, w: torch.Tensor) -> _Affine:  # w: (dim, n)
        return _Affine({k: m @ w for k, m in self.terms.items()}, self.const @ w)

    def __mul__(self, c: float) -> _Affine:
        return _Affine({k: m * c for k, m in self.terms.items()}, self.const * c)

    def __add__(self, other: _Affine) -> _Affine:
        terms = dict(self.terms)
        for k, m in other.terms.items():
            terms[k] = terms[k] + m if k in terms else m
        return _Affine(terms, self.const + other.const)

    def shift(self, c: torch.Tensor) -> _Affine:
        """The map plus a constant c (dim,)."""
        return _Affine(self.terms, self.const + c)

    def cols(self, n: int) -> _Affine:
        """The first n output channels."""
        return _Affine({k: m[:, :n] for k, m in self.terms.items()}, self.const[:n])

    def coef(self, name: str, dim_s: int) -> torch.Tensor:
        """The matrix (dim_s, dim) that multiplies source ``name`` (0 if absent)."""
        m = self.terms.get(name)
        return torch.zeros(dim_s, self.dim, dtype=_F64) if m is None else m

    @staticmethod
    def cat(parts: list[_Affine]) -> _Affine:
        """Concatenate the outputs of several maps."""
        dims = {k: m.shape[0] for p in parts for k, m in p.terms.items()}
        terms = {
            k: torch.cat([p.coef(k, n) for p in parts], 1) for k, n in dims.items()
        }
        return _Affine(terms, torch.cat([p.const for p in parts]))


def _taps(
    conv: nn.Conv1d, scale: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Taps of a convolution as (I, O) matrices by lag (0 = current), and the bias."""
    w = _f64(conv.weight) * scale[:, None, None]  # (O, I, k)
    k = w.shape[-1]
    return [w[..., k - 1 - m].t() for m in range(k)], _f64(conv.bias) * scale


def _lin(x: _Affine, module: nn.Module) -> _Affine:
    """A 1x1 convolution (or identity) applied to x."""
    if isinstance(module, nn.Identity):
        return x
    out = x @ _f64(module.weight)[..., 0].t()
    return out if module.bias is None else out.shift(_f64(module.bias))


def _out_weight(block: nn.Module) -> torch.Tensor:
    """Output projection (C, C_out) of a gated block, with the gate's 1/2."""
    return _f64(block.out.weight)[..., 0].t() * 0.5


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
        self.buf = like.new_zeros(batch, hist + length, width)
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
    """Weights of a causal gated block that follows another block.

    With carries c_m(s) = sum_{i >= m} x(s - (i - m) dil) W_i (tap i has
    lag i dil), the pre-activation is P(s) = b + x(s) W_0 + c_1(s - dil) and
    c_m(s) = x(s) W_m + c_{m+1}(s - dil): the queue of a step is its carries
    (fast Wavenet), and [c(s), P(s), skip(s)] = [x(s), c(s - dil)] @
    [[T], [shift]] + bias with T = [W_1 .. W_{k-1}, W_0, W_skip].

    Parameters
    ----------
    block : GatedBlock
    """

    def __init__(self, block: nn.Module) -> None:
        self.n2 = n2 = block.conv.weight.shape[0]
        self.taps, b = _taps(block.conv, _gate_scale(n2))
        self.k = k = len(self.taps)
        self.dil = block.conv.dilation[0] if k > 1 else 0
        self.n_c = n_c = (k - 1) * n2  # carries
        skip = [] if isinstance(block.skip, nn.Identity) else [block.skip]
        self.T = torch.cat(
            self.taps[1:]
            + self.taps[:1]
            + [_f64(m.weight)[..., 0].t() for m in skip]
            + ([] if skip else [torch.eye(self.taps[0].shape[0], dtype=_F64)]),
            dim=1,
        )  # (C_in, n_z)
        self.n_z = n_z = self.T.shape[1]
        self.shift = torch.zeros(n_c, n_z, dtype=_F64)  # carries of s - dil
        for m in range(1, k):  # c_1 -> P, c_m -> c_{m-1}
            dst = n_c if m == 1 else (m - 2) * n2
            self.shift[(m - 1) * n2 : m * n2, dst : dst + n2] = torch.eye(n2)
        self.b = torch.cat(
            [torch.zeros(n_c, dtype=_F64), b]
            + [_f64(m.bias) for m in skip]
            + ([] if skip else [torch.zeros(self.T.shape[0], dtype=_F64)])
        )


class _BottomUp:
    """The bottom-up chain of one level, compiled for single-step evaluation.

    The first block reads a window of ``n_win`` rows of the level's input
    (rows of width ``row_width`` whose columns ``row_offset`` onwards hold
    the input; level 0 adds the exogenous input through a per-step bias,
    see :meth:`u_terms`): one ``addmm`` gives E = [P_1, S_1], its scaled
    pre-activation and skip term. Block k's output x_k = S_k + A_k W_out
    (A_k its gate) is never formed: one ``addmm`` of [S_k, A_k, c_{k+1}(s -
    dil)] gives Z_k = [c_{k+1}(s), P_{k+1}(s), S_{k+1}(s)] for the next
    block (see :class:`_Queued`); only the last block's output d is formed.
    The gate of block k works in place on P_k, so the product reads [P_k,
    S_k, c_{k+1}(s - dil)] (see :func:`_gate`).

    The operands must be adjacent, so the buffers live in N = max(dil) + 1
    segments laid out as [E, Z_1, Z_2, ..]: at step s, E goes to segment s
    mod N and Z_k to segment (s + delta_k) mod N with delta_k = dil_2 + ..
    + dil_{k+1}, so that Z_k(s - dil_{k+1}), whose carries step s reads,
    sits right after Z_{k-1}(s) (or E(s)). A region lives at most dil < N
    steps, and the calls of each phase s mod N are listed once.

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
        q = _Affine.cat([P, base])
        w_in = torch.zeros(self.n_win, row_width, q.dim, dtype=_F64)
        for tau in range(self.n_win):
            w_in[tau, row_offset : row_offset + n_y] = q.coef(f"y{tau}", n_y)
        to = {"device": like.device, "dtype": like.dtype}
        self.w_in = w_in.reshape(-1, q.dim).to(**to)
        self.const = q.const.to(**to)  # (W,)
        self.bias = _bias(q.const, batch, like)  # (B, W)
        self.w_u = None
        if n_u:  # (n_win C_u, W)
            w_u = [q.coef(f"u{tau}", n_u) for tau in range(self.n_win)]
            self.w_u = torch.cat(w_u).to(**to)
        self.queued = queued = [_Queued(b) for b in blocks[1:]]
        self.n_phases = N = max([qb.dil for qb in queued], default=0) + 1
        # segment columns: E, Z_1, Z_2, ..; Z_k starts at z_col[k - 1]
        z_col, col = [], q.dim
        for qb in queued:
            z_col.append(col)
            col += qb.n_z
        self.segments = seg = like.new_zeros(N, batch, col)
        self.z_col = z_col
        self.delta = delta = [0]
        for qb in queued:
            delta.append(delta[-1] + qb.dil)
        outs = [_out_weight(blk) for blk in blocks]
        w = [  # rows [A_k, tanh(b / 2), S_k, carries of Z_k(s - dil)]
            torch.cat([outs[k] @ qb.T, torch.zeros_like(qb.T), qb.T, qb.shift]).to(**to)
            for k, qb in enumerate(queued)
        ]
        bias = [_bias(qb.b, batch, like) for qb in queued]
        w_last = outs[-1].to(**to)
        n = len(blocks)
        # P and S of block k + 1: P_k at p0[k], then S_k up to ends[k]
        p0 = [0] + [z + qb.n_c for z, qb in zip(z_col, queued, strict=True)]
        ends = [q.dim] + [z + qb.n_z for z, qb in zip(z_col, queued, strict=True)]
        n2 = [P.dim] + [qb.n2 for qb in queued]
        self.e_out, self.body, self.final = [], [], []
        for ph in range(N):
            slot = [seg[(ph + d) % N] for d in delta]  # segment of Z_k (E: k = 0)
            self.e_out.append(slot[0][:, : q.dim])
            ops = []
            for k in range(n):
                gate, A = _gate(slot[k][:, p0[k] : p0[k] + n2[k]])
                ops += gate
                if k < n - 1:  # Z_{k+1} from [P_k, S_k, carries of s - dil]
                    m1 = slot[k][:, p0[k] : z_col[k] + queued[k].n_c]
                    out = slot[k + 1][:, z_col[k] : ends[k + 1]]
                    ops.append((_addmm, (bias[k], m1, w[k]), {"out": out}))
            self.body.append(ops)
            base_n = slot[n - 1][:, p0[n - 1] + n2[n - 1] : ends[n - 1]]
            self.final.append((base_n, A, w_last))

    @staticmethod
    def _first(block: nn.Module, n_y: int, n_u: int):
        """Scaled pre-activation and skip term of the first block (symbolic).

        Sources ``y{tau}`` (and ``u{tau}``) are the input at window row tau
        (oldest first). Returns (P, skip, window length).
        """

        def x(tau: int) -> _Affine:
            parts = [_Affine.source(f"y{tau}", n_y)]
            if n_u:
                parts.append(_Affine.source(f"u{tau}", n_u))
            return _Affine.cat(parts)

        n2 = block.conv.weight.shape[0]
        scale = _gate_scale(n2)
        if isinstance(block, DownsampleBlock) and block.resampling == "learned":
            S = block.stride
            w = _f64(block.conv.weight) * scale[:, None, None]  # (2C, I, S)
            P = x(0) @ w[..., 0].t()
            mean = x(0)
            for k in range(1, S):
                P, mean = P + x(k) @ w[..., k].t(), mean + x(k)
            P = P.shift(_f64(block.conv.bias) * scale)
            return P, _lin(mean * (1.0 / S), block.skip), S
        taps, b = _taps(block.conv, scale)
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
            skip.append(_lin(x(s), block.skip))
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
        _addmm(bias, window, self.w_in, out=self.e_out[phase])
        _run(self.body[phase])
        base, a, w = self.final[phase]
        _addmm(base, a, w, out=out)

    def zero(self) -> None:
        """Empty queues."""
        self.segments.zero_()

    def prime(self, inputs: list[torch.Tensor]) -> None:
        """Queue a teacher-forced history: block inputs (B, C_in, n) at step n."""
        self.segments.zero_()
        N = self.n_phases
        for k, (qb, x) in enumerate(zip(self.queued, inputs[1:], strict=True)):
            taps = [t.to(x) for t in qb.taps]
            n, dil, n2 = x.shape[-1], qb.dil, qb.n2
            for s in range(n - dil, n):  # carries of the steps still queued
                for m in range(1, qb.k):  # c_m(s)
                    acc = None
                    for i in range(m, qb.k):
                        tau = s - (i - m) * dil
                        if 0 <= tau < n:
                            term = x[..., tau] @ taps[i]
                            acc = term if acc is None else acc + term
                    if acc is not None:
                        col = self.z_col[k] + (m - 1) * n2
                        seg = self.segments[(s + self.delta[k + 1]) % N]
                        seg[:, col : col + n2] = acc


class _TopDown:
    """The top-down chain of one level, composed into one affine map per gate.

    Stage k applies a nonlinearity (a gate, or a latent draw) to its
    pre-activation P_k; all the pre-activations and the chain's output are
    affine in the chain's inputs (g from the level above, the delayed
    features d, u on level 0) and the outputs A_1 .. A_n of the stages. The
    buffer Z_k holds [P_{k+1}, .., P_n, output] with everything known after
    stage k added in: Z_0 = bias + [d, u] F and Z_k = tail(Z_{k-1}) + A_k
    W_k. The bias is the level above's output projected by F_g (see
    :meth:`link`), or the constant term at the top.

    Parameters
    ----------
    model : MSSTCN
    lv : int
    latent : {"prior", "prior_mean"}
    batch : int
    sample : callable
        ``sample(lv, mean, pre, z)`` draws the latent into z.
    like : torch.Tensor
    """

    def __init__(
        self,
        model: MSSTCN,
        lv: int,
        latent: str,
        batch: int,
        sample: Callable,
        like: torch.Tensor,
    ) -> None:
        cfg = model.config
        td = model.top_down[lv]
        C = cfg.channels[lv]
        self.has_above = lv < cfg.n_levels - 1
        parts = [_Affine.source("g", C)] if self.has_above else []
        parts.append(_Affine.source("d", C))
        n_u = cfg.n_inputs if lv == 0 else 0
        if n_u:
            parts.append(_Affine.source("u", n_u))
        self.stages: list[tuple[str, _Affine, int]] = []  # (kind, P_k, dim of A_k)
        x = _Affine.cat(parts)
        for blk in td.mixer:
            x = self._gated(blk, x, None)
        z = None
        if td.use_latents:
            w, b = _f64(td.prior.weight)[..., 0], _f64(td.prior.bias)
            n_z = w.shape[0] // 2
            if latent == "prior_mean":
                z = (x @ w[:n_z].t()).shift(b[:n_z])
            else:
                z = self._stage("sample", (x @ w.t()).shift(b), n_z)
        g, up = x, None
        for blk in td.decoder:
            if isinstance(blk, UpsampleBlock) and blk.resampling == "learned":
                inp = g if z is None else _Affine.cat([g, z])
                wt = _f64(blk.conv.weight)  # (I, 2C, S)
                c_in, n2, S = wt.shape
                scale = _gate_scale(n2)
                wt = (wt * scale[None, :, None]).permute(0, 2, 1).reshape(c_in, -1)
                bt = (_f64(blk.conv.bias) * scale).repeat(S)  # step-major
                self._stage("gate3d", (inp @ wt).shift(bt), n2 // 2)
                g, up = _lin(g, blk.skip), (S, _out_weight(blk))
            else:  # a 1x1 gated block (fixed upsampling repeats its output)
                g = self._gated(blk, g, z)
        if lv == 0:  # output head; y (the Gaussian mean) repeated after it
            params = _lin(g, model.head)
            g = _Affine.cat([params, params.cols(cfg.n_outputs)])
        self._compile(parts, g, up, batch, sample, lv, like)

    def _stage(self, kind: str, P: _Affine, dim: int) -> _Affine:
        name = f"a{len(self.stages)}"
        self.stages.append((kind, P, dim))
        return _Affine.source(name, dim)

    def _gated(self, blk: nn.Module, x: _Affine, cond: _Affine | None) -> _Affine:
        inp = x if cond is None else _Affine.cat([x, cond])
        taps, b = _taps(blk.conv, _gate_scale(blk.conv.weight.shape[0]))
        a = self._stage("gate", (inp @ taps[0]).shift(b), taps[0].shape[1] // 2)
        return _lin(x, blk.skip) + a @ _out_weight(blk)

    def _compile(
        self,
        parts: list[_Affine],
        out: _Affine,
        up: tuple[int, torch.Tensor] | None,
        batch: int,
        sample: Callable,
        lv: int,
        like: torch.Tensor,
    ) -> None:
        """Weights, buffers and calls of the chain; ``out`` is its output."""
        to = {"device": like.device, "dtype": like.dtype}
        qs = [P for _, P, _ in self.stages] + [out]
        n = len(self.stages)
        for k in range(n):  # causality: P_j does not read A_k for j <= k
            assert all(f"a{k}" not in q.terms for q in qs[: k + 1]), "not causal"
        z0 = _Affine.cat(qs)
        self.F_g = z0.coef("g", parts[0].dim) if self.has_above else None
        self.const = z0.const
        names = ("d", "u")[: len(parts) - self.has_above]
        inputs = parts[self.has_above :]  # a d row is [d, u]
        self.w_in = torch.cat(
            [z0.coef(s, p.dim) for s, p in zip(names, inputs, strict=True)]
        ).to(**to)
        self.bias = [_bias(self.const, batch, like)]  # link() sets it below the top
        self.z0 = like.new_zeros(batch, z0.dim)
        self.ops: list[_Op] = []
        self.last: tuple | None = None  # level 0: the output row is per step
        Z = self.z0
        for k, (kind, P, dim) in enumerate(self.stages):
            w_p = P.dim
            if kind == "gate3d":
                gate, A = _gate(Z[:, :w_p].view(batch, up[0], -1))  # (B, S, C)
                self.ops += gate
            elif kind == "gate":
                gate, A = _gate(Z[:, :w_p])
                self.ops += gate
            else:
                A = like.new_zeros(batch, dim)
                self.ops.append((sample, (lv, Z[:, :dim], Z[:, dim:w_p], A), {}))
            tail = Z[:, w_p:]
            if k == n - 1 and up is not None:  # (B, S, C_out) from the base
                self.g = like.new_zeros(batch, up[0], up[1].shape[1])
                w = up[1].to(**to).expand(batch, -1, -1)
                self.ops.append((_baddbmm, (tail.unsqueeze(1), A, w), {"out": self.g}))
                break
            w = torch.cat([q.coef(f"a{k}", dim) for q in qs[k + 1 :]], 1).to(**to)
            if k == n - 1 and lv == 0:
                self.last = (tail, A, w)
                break
            Z = like.new_zeros(batch, w.shape[1])
            self.ops.append((_addmm, (tail, A, w), {"out": Z}))
        if lv > 0 and up is None:
            self.g = Z  # (B, C_out), the same for every fine step

    def link(self, below: _TopDown, like: torch.Tensor) -> None:
        """Project this level's output g onto the input of the level below.

        One ``addmm`` per step of this level computes G_k = const + g_k F_g
        for its S outputs; G_k is the bias of the level below's entry.
        """
        F_g, g = below.F_g.to(like), self.g
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
        self.u = u if cfg.n_inputs else None
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
        # the chains; level 0 reads rows [params, y], level l > 0 rows of d_{l-1}
        bu = [_BottomUp(model, 0, B, n_p + c_y, n_p, like)]
        for lv in range(1, L):
            width = cfg.channels[lv - 1] + (n_u if lv == 1 else 0)
            bu.append(_BottomUp(model, lv, B, width, 0, like))
        self._bu = bu
        td = [_TopDown(model, lv, latent, B, self._sample, like) for lv in range(L)]
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
        self._pb = _History(B, h0, k0, n_p + c_y, win0, like)
        self._db0 = _History(B, h0, k0, c0 + n_u, win1 if L > 1 else 0, like)
        self._pb_params = _rows(self._pb.buf, 0, n_p)
        self._pb_y = _rows(self._pb.buf, n_p)
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
        self._db0.roll()
        self._start_chunk(self.t)

    def _chunk_full(self) -> bool:
        """Whether the level-0 rows are full (copy them out before the next step)."""
        return self._r == self._r_end

    def _recent(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Params (B, P, n) and fed-back outputs (B, C_y, n) of the last n steps."""
        rows = self._pb.buf[:, self._r - n : self._r].transpose(1, 2)  # (B, W, n)
        return rows[:, : self._n_p], rows[:, self._n_p :]

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
            self._pb_y[H - h].copy_(y[..., n - h])
            self._db0_d[H - h].copy_(d[0][..., n - h])
        for lv in range(1, self.n_levels):
            hist, J = self._db[lv], n // self.rates[lv]
            for h in range(1, min(hist.H, J) + 1):
                hist.rows[hist.H - h].copy_(d[lv][..., J - h])
        for lv, chain in enumerate(self._bu):
            chain.prime(inputs[lv])  # (B, C_in, n_rate) per block
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
            chain.run(phase, bias, self._pb.windows[r], d)
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
        head writes it next to the parameters).
        """
        if self._r == self._r_end:  # no predict_params() since the last roll
            self._next_chunk()
        y_row = self._pb_y[self._r]
        if x is not None:
            y_row.copy_(x)
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
