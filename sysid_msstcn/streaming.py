"""Cached streaming inference: free-run simulation linear in the record length.

Every bottom-up causal convolution queues, for each step, the projections of
its input onto the taps that later steps will read (fast Wavenet
generation), and every level updates at its own rate: a level of cumulative
stride D runs its downsampling block when the level below has finished a
block, draws its latent at the first fine step of each of its blocks (from
the prior, which only sees the delayed features) and reuses its upsampled
output for the next D fine steps. The top-down path is made of 1x1
convolutions and needs no cache beyond those upsampled outputs.

A time step of a system-identification model is a few dozen products of
tiny matrices, so the fixed cost of each torch call dominates. The
simulator therefore reads the weights once into matrices laid out for
``addmm``, evaluates each gate with one ``tanh`` (sigmoid(b) = (1 +
tanh(b / 2)) / 2, the halves folded into the weights), reuses per-block
buffers, fuses 1x1 skip projections into the convolution's product and, for
deterministic latents (``"prior_mean"``), folds the prior mean into the
decoder weights. All of this is exact algebra: the tests compare every step
with the parallel forward pass.

A teacher-forced warm-up fills the caches with one parallel pass of the
bottom-up network over the aligned part of ``y_init`` and replays at most
``total_stride - 1`` steps one by one.

Shape legend: ``B`` batch (Monte Carlo samples x experiments), ``C``
channels, ``T`` steps. Step tensors keep a time axis of length 1.
"""

from __future__ import annotations

import contextlib
from collections import deque

import torch
import torch.nn.functional as F
from torch import nn

from .distributions import GaussianLikelihood
from .layers import DownsampleBlock, pool_blocks
from .model import MSSTCN, level_mask

__all__ = ["StreamingSimulator", "simulate"]

# per-step views and outputs are handled in chunks of 2**_CHUNK_BITS steps,
# so that a long simulation keeps no per-step Python objects
_CHUNK_BITS = 10
_CHUNK_MASK = (1 << _CHUNK_BITS) - 1


def _t(w: torch.Tensor) -> torch.Tensor:
    return w.t().contiguous()


def _gate_scale(n: int, dtype, device) -> torch.Tensor:
    """Row scale of a gated pre-activation: 1 for tanh rows, 1/2 for the gate.

    With the gate half scaled by 1/2, tanh(a) * sigmoid(b) =
    (t_a + t_a * t_b) / 2 for t = tanh(scaled pre-activation), so one tanh
    serves both halves; the final 1/2 is folded into the output projection.
    """
    s = torch.ones(n, dtype=dtype, device=device)
    s[n // 2 :] = 0.5
    return s


class _Proj:
    """A 1x1 convolution applied to one step: b + x @ W^T as one addmm."""

    __slots__ = ("b", "wt")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, scale=None):
        w = weight.reshape(weight.shape[0], -1)  # (O, I)
        if scale is not None:
            w, bias = w * scale[:, None], None if bias is None else bias * scale
        self.wt = _t(w)  # (I, O)
        self.b = bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.b is None:
            return x @ self.wt  # (B, O)
        return torch.addmm(self.b, x, self.wt)  # (B, O)


def _skip(module: nn.Module) -> _Proj | None:
    return (
        None if isinstance(module, nn.Identity) else _Proj(module.weight, module.bias)
    )


def _gate_out(pre: torch.Tensor, out_wt: torch.Tensor, base: torch.Tensor):
    """Return base + W_out gate(pre) for a scaled pre-activation (B, 2C)."""
    a, g = torch.tanh(pre).chunk(2, dim=1)
    return torch.addmm(base, torch.addcmul(a, a, g), out_wt)


class _Causal:
    """A causal convolution evaluated one step at a time (fast Wavenet).

    Instead of keeping past inputs, every step projects its input once onto
    the taps that later steps will need and queues the projections: the
    pre-activation of step t is the queued sum for t plus the current tap,
    two matrix products for kernel size 2 and no copies.
    """

    def __init__(self, conv: nn.Conv1d, scale: torch.Tensor) -> None:
        w = conv.weight * scale[:, None, None]  # (O, I, k)
        self.b = conv.bias * scale  # (O,)
        self.k, self.dil = conv.kernel_size[0], conv.dilation[0]
        self.cur = _t(w[..., -1])  # (I, O): tap of x_t
        # past[m - 1] multiplies x_{t - m * dil}, m = 1 .. k - 1
        self.past = [_t(w[..., self.k - 1 - m]) for m in range(1, self.k)]
        self.L = (self.k - 1) * self.dil
        self.queue: deque[torch.Tensor] = deque()

    def reset(self, batch: int) -> None:
        """Zero history: every queued step starts from the bias alone."""
        self.queue.clear()  # the same deque object: step closures hold it
        self.queue.extend([self.b.expand(batch, -1)] * self.L)

    def prime(self, seq: torch.Tensor) -> None:
        """Queue the contributions of a teacher-forced history (B, I, n)."""
        n = seq.shape[-1]
        self.reset(seq.shape[0])
        for i in range(self.L):  # entry i is step n + i
            acc = self.queue[i]
            for m in range(1, self.k):
                tau = n + i - m * self.dil
                if 0 <= tau < n:
                    acc = torch.addmm(acc, seq[..., tau], self.past[m - 1])
            self.queue[i] = acc

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None):
        """Pre-activation (B, O) of the current step for input x (B, I).

        Written into ``out`` when given (a buffer reused every step).
        """
        if not self.L:
            return torch.addmm(self.b, x, self.cur, out=out)
        q = self.queue
        pre = torch.addmm(q.popleft(), x, self.cur, out=out)
        for m in range(1, self.k - 1):  # kernels > 2: add to queued steps
            q[m * self.dil - 1] = torch.addmm(q[m * self.dil - 1], x, self.past[m - 1])
        q.append(torch.addmm(self.b, x, self.past[-1]))  # step t + L
        return pre


class _Block:
    """Weights of one block, prepared for single-step evaluation."""

    def __init__(self, block: nn.Module, batch: int) -> None:
        self.kind = type(block).__name__
        conv = block.conv
        n2 = conv.weight.shape[0]
        self.out_wt = _t(block.out.weight[..., 0] * 0.5)  # (C, C_out), gate's 1/2
        self.skip = _skip(block.skip)
        self.stride = getattr(block, "stride", 1)
        self.resampling = getattr(block, "resampling", None)
        self.causal: _Causal | None = None
        self.conv: _Proj | None = None
        w = conv.weight
        if isinstance(conv, nn.ConvTranspose1d):
            c_in, n2, s = w.shape  # (I, 2C, S)
            scale = _gate_scale(n2, w.dtype, w.device)
            # columns step-major (j * 2C + o), so the output is (B, S, 2C)
            w = (w * scale[None, :, None]).permute(0, 2, 1)  # (I, S, 2C)
            self.wt = w.reshape(c_in, s * n2)
            self.bt = (conv.bias * scale).repeat(s)
            shape = (batch, s, n2)
            self.out_b = self.out_wt.expand(batch, -1, -1)  # (B, C, C_out)
        else:
            scale = _gate_scale(n2, w.dtype, w.device)
            shape = (batch, n2)
            if isinstance(block, DownsampleBlock) and self.resampling == "learned":
                # inputs concatenated step-major: column j * I + c
                self.conv = _Proj(w.permute(0, 2, 1), conv.bias, scale)
            elif getattr(conv, "left_pad", 0):
                self.causal = _Causal(conv, scale)
            else:
                self.conv = _Proj(w, conv.bias, scale)
        self.n2, self.shape = n2, shape
        self.S: torch.Tensor | None = None  # fused skip columns, see fuse_skip
        self._buffers(0)
        # the single-step closure of a plain gated block (None for resampling)
        self.step = self._make_step() if self.kind == "GatedBlock" else None

    def _buffers(self, extra: int) -> torch.Tensor | None:
        """(Re)make the per-step buffers; return the view of ``extra`` columns.

        The pre-activation P (with its two halves as views) is the first part
        of a wider buffer whose other columns hold outputs fused into the same
        matrix product; A holds the gate's output.
        """
        w = self.out_wt
        full = (*self.shape[:-1], self.shape[-1] + extra)
        self.W = torch.empty(full, dtype=w.dtype, device=w.device)
        self.P = self.W[..., : self.n2]
        self.Pa, self.Pg = self.P.chunk(2, dim=-1)
        self.A = torch.empty(self.Pa.shape, dtype=w.dtype, device=w.device)
        return self.W[..., self.n2 :] if extra else None

    def widen(self, wt: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Compute extra outputs (I, E) in this 1x1 block's matrix product.

        Returns the (B, E) view of the buffer that receives them every step.
        """
        self.conv.wt = torch.cat([self.conv.wt, wt], dim=1)
        self.conv.b = torch.cat([self.conv.b, b])
        extra = self.W.shape[-1] - self.n2 + wt.shape[1]
        view = self._buffers(extra)
        if self.S is not None:  # keep the skip columns' view
            self.S = view[..., : self.S.shape[-1]]
        if self.step is not None:
            self.step = self._make_step()
        return view[..., extra - wt.shape[1] :]

    def fuse_skip(self, n_inputs: int) -> None:
        """Fold a 1x1 skip projection into the convolution's matrix product.

        ``n_inputs`` rows of the convolution input are the skip's input (the
        rest, a latent sample, gets zero weight).
        """
        if self.skip is None or self.step is None:
            return
        w = self.skip.wt  # (C_in, C_out)
        c = self.causal
        if c is not None:  # the skip reads x_t: the current tap's product
            zeros = torch.zeros_like(w)
            c.cur = torch.cat([c.cur, w], dim=1)
            c.past = [torch.cat([m, zeros], dim=1) for m in c.past]
            c.b = torch.cat([c.b, self.skip.b])  # queued steps start here
            self.S = self._buffers(w.shape[1])
        else:
            wt = torch.zeros(self.conv.wt.shape[0], w.shape[1], dtype=w.dtype)
            wt = wt.to(w.device)
            wt[:n_inputs] = w
            self.S = self.widen(wt, self.skip.b)
        self.skip = None
        self.step = self._make_step()

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled pre-activation (B, 2C) of a per-step convolution."""
        return self.causal(x) if self.causal is not None else self.conv(x)

    def gated(self, x: torch.Tensor, inp: torch.Tensor | None = None) -> torch.Tensor:
        """A whole gated block at one step: skip(x) + out(gate(conv(inp))).

        The pre-activation and the gate live in the block's buffers, so the
        step allocates only its output (B, C_out). (Plain gated blocks run
        the same computation through the faster closure ``step``.)
        """
        inp = x if inp is None else inp
        if self.causal is not None:
            self.causal(inp, self.W)
        else:
            torch.addmm(self.conv.b, inp, self.conv.wt, out=self.W)
        if self.S is not None:  # skip projection fused into the product
            return self.finish(self.S)
        return self.finish(x if self.skip is None else self.skip(x))

    def _make_step(self):
        """The gated step as a closure over its tensors (no attribute look-ups).

        A time step of a small model is a few dozen tiny matrix products, so
        the Python around them costs as much as the products themselves.
        """
        P, Pa, Pg, A, out_wt = self.P, self.Pa, self.Pg, self.A, self.out_wt
        W, S = self.W, self.S
        addmm, addcmul = torch.addmm, torch.addcmul
        sb, sw = (None, None) if self.skip is None else (self.skip.b, self.skip.wt)
        causal = self.causal
        if causal is None:
            cb, cw = self.conv.b, self.conv.wt

            def pre(inp):
                addmm(cb, inp, cw, out=W)  # P and any fused columns

        elif causal.k == 2:
            q, cur, past, b = causal.queue, causal.cur, causal.past[0], causal.b
            popleft, append = q.popleft, q.append

            def pre(inp):
                addmm(popleft(), inp, cur, out=W)  # P and any fused columns
                append(addmm(b, inp, past))  # x_t's share of step t + dil

        else:

            def pre(inp):
                causal(inp, W)

        if S is not None:  # skip projection computed with the convolution

            def step(x, inp):
                pre(inp)
                P.tanh_()
                addcmul(Pa, Pa, Pg, out=A)
                return addmm(S, A, out_wt)

        elif sw is None:

            def step(x, inp):
                pre(inp)
                P.tanh_()
                addcmul(Pa, Pa, Pg, out=A)  # 2 tanh(a) sigmoid(b)
                return addmm(x, A, out_wt)

        else:

            def step(x, inp):
                pre(inp)
                P.tanh_()
                addcmul(Pa, Pa, Pg, out=A)
                return addmm(addmm(sb, x, sw), A, out_wt)

        return step

    def finish(self, base: torch.Tensor) -> torch.Tensor:
        """Return base + out(gate(P)) for the pre-activation in the buffer P."""
        self.P.tanh_()
        torch.addcmul(self.Pa, self.Pa, self.Pg, out=self.A)  # 2 tanh(a) sigmoid(b)
        if self.P.dim() == 3:  # upsampling: (B, S, C) -> (B, S, C_out)
            return torch.baddbmm(base.unsqueeze(1), self.A, self.out_b)
        return torch.addmm(base, self.A, self.out_wt)


class StreamingSimulator:
    """Step-by-step evaluation of an :class:`~sysid_msstcn.model.MSSTCN`.

    The convolution weights are read once into matrices, so that a time step
    costs a few small matrix products per block.

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
        self.B = u.shape[0] if self.u is not None else int(batch or 1)
        self.latent, self.noise, self.generator = latent, noise, generator
        self.rates = cfg.cumulative_strides
        self.strides = cfg.strides
        self.n_levels = cfg.n_levels
        self.levels_down = list(reversed(range(cfg.n_levels)))
        B = self.B
        self.bottom = [[_Block(b, B) for b in lvl] for lvl in model.bottom_up.levels]
        self.mixers = [[_Block(b, B) for b in td.mixer] for td in model.top_down]
        self.decoders = [[_Block(b, B) for b in td.decoder] for td in model.top_down]
        self.priors = []
        for td in model.top_down:
            if not td.use_latents:
                self.priors.append(None)
            elif latent == "prior_mean":  # only the mean rows are needed
                z = td.prior.weight.shape[0] // 2
                self.priors.append(_Proj(td.prior.weight[:z], td.prior.bias[:z]))
            else:
                self.priors.append(_Proj(td.prior.weight, td.prior.bias))
        self.head = _Proj(model.head.weight, model.head.bias)
        for blocks in self.mixers + self.bottom:  # the input is the skip's input
            for blk in blocks:
                if blk.step is not None:
                    rows = (blk.causal.cur if blk.causal else blk.conv.wt).shape[0]
                    blk.fuse_skip(rows)
        if latent == "prior_mean":
            for lv in range(cfg.n_levels):
                if self.priors[lv] is not None:
                    self._fold_prior_mean(lv)
        if self.u is not None:
            # (T + 1, B, C_u) view with a zero step after the end (u_{T} = 0);
            # per-step views are made a chunk at a time (bounded memory)
            self._u_steps = F.pad(self.u, (0, 1)).permute(2, 0, 1)
            self._u_chunk: tuple = ()
            self._u_chunk_id = -1
        self.t = 0
        self._reset()

    def _fold_prior_mean(self, lv: int) -> None:
        """Fold z = prior mean (affine in h) into the level's decoder weights.

        The decoder blocks read [g, z] with z = h P + p: block 0 (g = h) gets
        the weight W_g + P W_z, and block i > 0 the bias b_i + (h P + p) W_z,
        an extra output of block 0's matrix product. The prior and the
        concatenations then cost nothing per step.
        """
        prior, blocks = self.priors[lv], self.decoders[lv]
        n_z = prior.wt.shape[1]
        for i, blk in enumerate(blocks):
            learned_up = blk.kind == "UpsampleBlock" and blk.resampling == "learned"
            wt, b = (blk.wt, blk.bt) if learned_up else (blk.conv.wt, blk.conv.b)
            w_g, w_z = wt[:-n_z], wt[-n_z:]
            h_term, b_term = prior.wt @ w_z, b + prior.b @ w_z
            if i == 0:
                wt, b = w_g + h_term, b_term
            else:  # block 0 is a 1x1 gated block: it computes the bias
                wt, b = w_g, blocks[0].widen(h_term, b_term)
            if learned_up:
                blk.wt, blk.bt = wt, b
            else:
                blk.conv.wt, blk.conv.b = wt, b
                if blk.step is not None:
                    blk.step = blk._make_step()
        self.priors[lv] = None

    def _u_at(self, t: int) -> torch.Tensor:
        """Input of step t (zero at t = T): a (B, C_u) view."""
        c = t >> _CHUNK_BITS
        if c != self._u_chunk_id:
            self._u_chunk = self._u_steps[c << _CHUNK_BITS : (c + 1) << _CHUNK_BITS]
            self._u_chunk = self._u_chunk.unbind(0)
            self._u_chunk_id = c
        return self._u_chunk[t & _CHUNK_MASK]

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self.acc: list[list[torch.Tensor]] = [[] for _ in self.bottom]
        for blocks in self.bottom:
            for blk in blocks:
                if blk.causal is not None:
                    blk.causal.reset(self.B)
        self.last_d = [
            torch.zeros(self.B, c, device=self.device, dtype=self.dtype)
            for c in self.cfg.channels
        ]
        self.g_cache: list = [None] * self.cfg.n_levels
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
        for lv, blocks in enumerate(self.bottom):
            for i, blk in enumerate(blocks):
                if blk.causal is not None:
                    blk.causal.prime(inputs[lv][i])  # (B, C_in, n_rate)
        self.last_d = [dl[..., -1] for dl in d]

    # ----------------------------------------------------------- bottom-up
    def _downsample(self, lv: int, blk: _Block, x: torch.Tensor):
        acc = self.acc[lv]
        if blk.resampling == "fixed":
            acc.append((blk.pre(x), x if blk.skip is None else blk.skip(x)))
        else:
            acc.append(x)
        if len(acc) < blk.stride:
            return None
        self.acc[lv] = []
        if blk.resampling == "fixed":
            first = torch.stack([a for a, _ in acc], dim=-1)  # (B, 2C, S)
            second = torch.stack([b for _, b in acc], dim=-1)  # (B, C, S)
            pre = pool_blocks(first, blk.stride, "scaled_sum")[..., 0]
            skip = pool_blocks(second, blk.stride, "scaled_sum")[..., 0]
            return _gate_out(pre, blk.out_wt, skip)  # (B, C_l)
        X = torch.cat(acc, dim=1)  # (B, S * C_in), step-major
        torch.addmm(blk.conv.b, X, blk.conv.wt, out=blk.W)
        skip = X.view(X.shape[0], blk.stride, -1).mean(1)  # (B, C_in)
        # a 1x1 projection commutes with the block mean
        return blk.finish(skip if blk.skip is None else blk.skip(skip))

    def _push_level(self, lv: int, x: torch.Tensor) -> None:
        h = x
        for blk in self.bottom[lv]:
            if blk.step is not None:
                h = blk.step(h, h)
            else:  # the level's first block downsamples
                h = self._downsample(lv, blk, h)
                if h is None:
                    return
        self.last_d[lv] = h
        if lv + 1 < self.n_levels:
            self._push_level(lv + 1, h)

    @torch.no_grad()
    def push(self, y_t: torch.Tensor) -> None:
        """Feed the output value of the current step and advance.

        Parameters
        ----------
        y_t : torch.Tensor of shape (B, C_y, 1)
        """
        self._push(y_t[..., 0])

    def _push(self, x: torch.Tensor) -> None:
        """:meth:`push` for a step without its time axis: (B, C_y)."""
        if self.u is not None:
            x = torch.cat([x, self._u_at(self.t + 1)], dim=1)  # (B, C_y + C_u)
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
        """Top-down output of one coarse step: S_l tensors of shape (B, C_out)."""
        g = h
        for blk in self.decoders[lv]:
            inp = g if z is None else torch.cat([g, z], dim=1)
            if blk.kind != "UpsampleBlock":
                g = blk.step(g, inp)
                continue
            skip = g if blk.skip is None else blk.skip(g)  # (B, C_out)
            if blk.resampling == "learned":
                torch.addmm(blk.bt, inp, blk.wt, out=blk.W.view(g.shape[0], -1))
                return blk.finish(skip).unbind(1)  # S x (B, C_out)
            g = blk.gated(g, inp)
            return [g] * blk.stride  # nearest-neighbour repeat
        return [g]

    @torch.no_grad()
    def predict_params(self) -> torch.Tensor:
        """Raw predictive parameters for the current step: (B, P, 1)."""
        return self._params()[..., None]

    def _params(self) -> torch.Tensor:
        """:meth:`predict_params` without the time axis: (B, P)."""
        t, rates, top = self.t, self.rates, self.n_levels - 1
        for lv in self.levels_down:
            if t % rates[lv]:
                continue
            j = t // rates[lv]
            if lv < top:
                parts = [self.g_cache[lv][j % self.strides[lv + 1]], self.last_d[lv]]
            else:
                parts = [self.last_d[lv]]
            if lv == 0 and self.u is not None:
                parts.append(self._u_at(t))
            h = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            for blk in self.mixers[lv]:
                h = blk.step(h, h)  # (B, C_l)
            z = None
            prior = self.priors[lv]
            if prior is not None:
                if self.latent == "prior_mean":
                    z = prior(h)
                else:
                    mean, pre = prior(h).chunk(2, dim=1)
                    cfg = self.cfg
                    std = F.softplus(pre).clamp(cfg.std_min, cfg.std_max)
                    z = mean + std * self._latent_noise(lv, j, mean.shape)
            g = self._decode(lv, h, z)  # S_l x (B, C_{l-1})
            if lv > 0:
                self.g_cache[lv - 1] = g
            else:
                self.out = g[0]
        return self.head(self.out)


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
    ps, outs, start = [], [], n0
    with _one_thread(sim.device):
        for t in range(n0, n_steps):
            p = sim._params()  # (B, P)
            ps.append(p)
            if teacher is not None and forced is None:
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
            outs.append(y_t)
            sim._push(y_t)
            if len(ps) > _CHUNK_MASK or t == n_steps - 1:  # flush a chunk
                ys[..., start : t + 1] = torch.stack(outs, dim=-1)
                params[..., start : t + 1] = torch.stack(ps, dim=-1)
                ps, outs, start = [], [], t + 1
    return ys, params
