"""Affine maps of named sources, composed in float64 (for the simulator).

Between two gates a chain of blocks is affine; :class:`Affine` composes
the linear parts of such chains once, when a
:class:`~sysid_msstcn.streaming.StreamingSimulator` is made, and the helpers
read the weights of the model's blocks in the layout the simulator's compiled
calls use (a gated pre-activation as [b / 2, a], see :func:`gated`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "Affine",
    "Op",
    "f64",
    "gate_ops",
    "gated",
    "gated_taps",
    "lin",
    "out_weight",
]

_F64 = torch.float64
_tanh_, _addcmul_ = torch.Tensor.tanh_, torch.Tensor.addcmul_

# one torch call of a compiled chain: (function, positional args, keywords)
Op = tuple[Callable, tuple, dict]


def f64(w: torch.Tensor) -> torch.Tensor:
    """A weight as a float64 CPU tensor (weights are composed in float64)."""
    return w.detach().to("cpu", _F64)


def gated(w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Rows [a, b] of a gated pre-activation, reordered as [b / 2, a].

    With t = tanh of the reordered pre-activation, tanh(a) sigmoid(b) =
    (t_a + t_a t_b) / 2 since sigmoid(b) = (1 + tanh(b / 2)) / 2: one tanh
    serves both halves (see :func:`gate_ops`); the final 1/2 is folded into the
    output projection (see :func:`out_weight`).
    """
    a, b = w.chunk(2, dim)
    return torch.cat([b * 0.5, a], dim)


def gate_ops(P: torch.Tensor) -> tuple[list[Op], torch.Tensor]:
    """Calls that turn P = [b / 2, a] into [t_b, t_a + t_a t_b], in place.

    Returns them and A = t_a + t_a t_b = 2 tanh(a) sigmoid(b), the view of
    the second half: a product can read A together with what follows P in
    memory (and in-place calls are the cheapest).
    """
    Pg, Pa = P.chunk(2, dim=-1)
    return [(_tanh_, (P,), {}), (_addcmul_, (Pa, Pa, Pg), {})], Pa


class Affine:
    """An affine map of named sources, sum_s x_s @ M_s + c (float64, CPU).

    The linear parts of a chain of blocks are composed with it once, so
    that products such as W_out @ W_conv are formed when the simulator is
    made instead of at every step.

    Parameters
    ----------
    terms : dict of str to torch.Tensor of shape (dim_s, dim) or tuple
        A tuple (offset, dim_s) stands for a source copied to the output
        columns offset .. offset + dim_s - 1 (its product with a matrix is
        a slice of the matrix's rows).
    const : torch.Tensor of shape (dim,)
    """

    __slots__ = ("const", "terms")

    def __init__(self, terms: dict, const: torch.Tensor) -> None:
        self.terms, self.const = terms, const

    @classmethod
    def source(cls, name: str, dim: int) -> Affine:
        """The identity map of a source of ``dim`` channels."""
        return cls({name: (0, dim)}, torch.zeros(dim, dtype=_F64))

    @property
    def dim(self) -> int:
        return self.const.shape[0]

    def _m(self, name: str) -> torch.Tensor:
        """The matrix of a term."""
        m = self.terms[name]
        if isinstance(m, tuple):
            (o, n), m = m, torch.zeros(m[1], self.dim, dtype=_F64)
            m[:, o : o + n] = torch.eye(n, dtype=_F64)
        return m

    def __matmul__(self, w: torch.Tensor) -> Affine:  # w: (dim, n)
        terms = {
            k: w[m[0] : m[0] + m[1]] if isinstance(m, tuple) else m @ w
            for k, m in self.terms.items()
        }
        return Affine(terms, self.const @ w)

    def __mul__(self, c: float) -> Affine:
        return Affine({k: self._m(k) * c for k in self.terms}, self.const * c)

    def __add__(self, other: Affine) -> Affine:
        terms = dict(self.terms)
        for k in other.terms:
            terms[k] = self._m(k) + other._m(k) if k in terms else other.terms[k]
        return Affine(terms, self.const + other.const)

    def shift(self, c: torch.Tensor) -> Affine:
        """The map plus a constant c (dim,)."""
        return Affine(self.terms, self.const + c)

    def cols(self, n: int) -> Affine:
        """The first n output channels."""
        return Affine({k: self._m(k)[:, :n] for k in self.terms}, self.const[:n])

    def coef(self, name: str, dim_s: int) -> torch.Tensor:
        """The matrix (dim_s, dim) that multiplies source ``name`` (0 if absent)."""
        if name not in self.terms:
            return torch.zeros(dim_s, self.dim, dtype=_F64)
        return self._m(name)

    @staticmethod
    def cat(parts: list[Affine]) -> Affine:
        """Concatenate the outputs of several maps."""
        offsets = [0]
        for p in parts:
            offsets.append(offsets[-1] + p.dim)
        terms = {}
        for k in dict.fromkeys(k for p in parts for k in p.terms):
            own = [
                (p, o) for p, o in zip(parts, offsets[:-1], strict=True) if k in p.terms
            ]
            m = own[0][0].terms[k]
            if len(own) == 1 and isinstance(m, tuple):  # still a copy
                terms[k] = (own[0][1] + m[0], m[1])
            else:
                n = m[1] if isinstance(m, tuple) else m.shape[0]
                terms[k] = torch.cat([p.coef(k, n) for p in parts], 1)
        return Affine(terms, torch.cat([p.const for p in parts]))


def gated_taps(conv: nn.Conv1d) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Taps (I, 2C) by lag (0 = current) of a gated convolution, and its bias."""
    w = gated(f64(conv.weight))  # (2C, I, k), rows as in _gated
    k = w.shape[-1]
    return [w[..., k - 1 - m].t() for m in range(k)], gated(f64(conv.bias))


def lin(x: Affine, module: nn.Module) -> Affine:
    """A 1x1 convolution (or identity) applied to x."""
    if isinstance(module, nn.Identity):
        return x
    out = x @ f64(module.weight)[..., 0].t()
    return out if module.bias is None else out.shift(f64(module.bias))


def out_weight(block: nn.Module) -> torch.Tensor:
    """Output projection (C, C_out) of a gated block, with the gate's 1/2."""
    return f64(block.out.weight)[..., 0].t() * 0.5
