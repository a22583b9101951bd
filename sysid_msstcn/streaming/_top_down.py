"""The top-down chain of one level, compiled into torch calls.

Mixer, latent and decoder of a level, with their weights composed where the
cost model says so.

Shape legend: ``B`` batch, ``C`` channels, ``W`` width of a row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._affine import Affine, Op, f64, gate_ops, gated, gated_taps, lin, out_weight
from ..layers import UpsampleBlock
from ..model import MSSTCN
from ._buffers import (
    _addmm,
    _baddbmm,
    _bias,
    _dev,
    _fuse,
    _run,
)


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
