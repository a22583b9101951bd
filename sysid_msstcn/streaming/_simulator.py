"""The step-by-step simulator of a fitted MS-STCN.

Per-level schedules, chunked step buffers, the warm-up and the predict /
push step API.

Shape legend: ``B`` batch, ``C`` channels, ``T`` steps, ``W`` width of a row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distributions import GaussianLikelihood
from ..model import MSSTCN, level_mask
from ._bottom_up import _BottomUp
from ._buffers import (
    _addcmul,
    _fuse,
    _History,
    _rows,
)
from ._top_down import _TopDown

# level-0 rows are handled in chunks of at most 2**_CHUNK_BITS steps (and at
# most _CHUNK_ELEMENTS buffer elements), so that a long simulation keeps no
# per-step Python objects; coarser levels keep _COARSE_ROWS rows per chunk
_CHUNK_BITS = 6
_CHUNK_ELEMENTS = 1 << 22
_COARSE_ROWS = 16


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
