"""A Wiener-Hammerstein block structure for :class:`GreyBoxRegressor`.

``u -> G1 -> f -> G2 -> y``: two discrete-time linear filters around a
static nonlinearity, the structure of the Wiener-Hammerstein benchmark
(Schoukens, Suykens and Ljung, 2009). The fit starts from the best linear
approximation (an ARX estimate refined by its output error), whose poles are
split between the two filters (Sjöberg et al., 2012); the nonlinearity starts
as a straight line.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.optimize import least_squares
from scipy.signal import lfilter

from ._base import _check_int, _lag_matrix
from .greybox import GreyBoxModel

__all__ = ["WienerHammerstein"]

# poles stay this far inside the stability triangle of each section
_STABLE = 0.9999
# a static gain below this makes a filter's normalisation undefined
_TINY = 1e-12
# a root with a smaller imaginary part is real
_IMAG = 1e-9


def _real(q: complex) -> bool:
    return abs(q.imag) <= _IMAG


def _denominator(p: np.ndarray, order: int) -> np.ndarray:
    """Denominator in powers of z^-1 from the stable-triangle coordinates.

    A second-order section ``(a2, t)`` is ``1 + t (1 + a2) z^-1 + a2 z^-2``:
    with ``|a2| < 1`` and ``|t| < 1`` its poles lie inside the unit circle.
    An odd order adds one real pole ``1 - p z^-1``.
    """
    a = np.ones(1)
    for i in range(order // 2):
        a2, t = p[2 * i], p[2 * i + 1]
        a = np.convolve(a, [1.0, t * (1.0 + a2), a2])
    if order % 2:
        a = np.convolve(a, [1.0, -p[order - 1]])
    return a


def _coordinates(poles: list[complex], order: int) -> np.ndarray:
    """Stable-triangle coordinates of ``order`` poles closed under conjugation."""
    reals = sorted(float(q.real) for q in poles if _real(q))
    sections = [(q, np.conj(q)) for q in poles if not _real(q) and q.imag > 0]
    lone = [reals.pop(0)] if order % 2 else []
    sections += list(zip(reals[0::2], reals[1::2], strict=True))
    p: list[float] = []
    for q1, q2 in sections:
        a1, a2 = -float(np.real(q1 + q2)), float(np.real(q1 * q2))
        a2 = float(np.clip(a2, -_STABLE, _STABLE))
        p += [a2, float(np.clip(a1 / (1.0 + a2), -_STABLE, _STABLE))]
    return np.array(p + [float(np.clip(q, -_STABLE, _STABLE)) for q in lone])


def _splits(poles: list[complex], k: int) -> list[tuple[list, list]]:
    """Splits of ``poles`` into ``k`` and the rest, both closed under conjugation."""
    out, seen = [], set()
    for idx in itertools.combinations(range(len(poles)), k):
        part = [poles[i] for i in idx]
        if not all(any(abs(np.conj(q) - r) <= _IMAG for r in part) for q in part):
            continue
        key = tuple(sorted((round(q.real, 9), round(abs(q.imag), 9)) for q in part))
        if key not in seen:
            seen.add(key)
            rest = [poles[i] for i in range(len(poles)) if i not in idx]
            out.append((part, rest))
    return out


def _spline(s: np.ndarray, knots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Natural cubic spline through ``values`` at ``knots``, linear outside."""
    spline = CubicSpline(knots, values, bc_type="natural")
    out = spline(np.clip(s, knots[0], knots[-1]))
    below, above = s < knots[0], s > knots[-1]
    out[below] += spline(knots[0], 1) * (s[below] - knots[0])
    out[above] += spline(knots[-1], 1) * (s[above] - knots[-1])
    return out


class WienerHammerstein(GreyBoxModel):
    """Linear filter, static nonlinearity, linear filter (``u -> G1 -> f -> G2``).

    ``G1`` and ``G2`` are discrete-time filters of orders ``order1`` and
    ``order2`` with as many zeros (direct feedthrough included). Their poles
    are parameterised by second-order sections in the stability triangle
    (and one real pole for an odd order), bounded so that both filters stay
    stable. ``G1`` and ``G2`` have unit static gain; the gain lives in the
    nonlinearity ``f(s)``, a natural cubic spline through ``n_knots`` values
    at knots evenly spaced on [-1, 1], continued linearly outside, of
    ``s = gain * G1(u)``. The state is the two filters' transposed
    direct-form states (``scipy.signal.lfilter``'s ``zi``).

    Parameters, in this order: ``G1.a*`` (pole coordinates), ``G1.b*``
    (numerator, z^-1 powers), ``gain``, ``f*`` (spline values), ``G2.a*``,
    ``G2.b*``.

    Parameters
    ----------
    order1, order2 : int, default=3
        Orders of the filters before and after the nonlinearity.
    n_knots : int, default=25
        Knots of the spline (at least 4).

    Notes
    -----
    A filter that blocks DC cannot be normalised to unit static gain; this
    structure suits low-pass and band-pass blocks like the benchmark's.
    :meth:`step` and :meth:`output` are not defined: the output has direct
    feedthrough, which the strictly proper step/output protocol cannot
    hold; :meth:`simulate` is the model.

    Examples
    --------
    >>> import numpy as np
    >>> from sysid_msstcn.baselines import GreyBoxRegressor, WienerHammerstein
    >>> u = np.random.default_rng(0).normal(size=(600, 1))
    >>> v = np.convolve(u[:, 0], [0.5, 0.3, 0.2])[:600]
    >>> y = np.tanh(np.convolve(v, [0.6, 0.4])[:600])[:, None]
    >>> wh = WienerHammerstein(order1=2, order2=1, n_knots=12)
    >>> model = GreyBoxRegressor(wh, n_init=20, n_restarts=0).fit(u, y)
    >>> bool(model.score(u, y) > 0.999)
    True
    """

    n_inputs = 1
    n_outputs = 1

    def __init__(self, order1: int = 3, order2: int = 3, n_knots: int = 25) -> None:
        self.order1 = order1
        self.order2 = order2
        self.n_knots = n_knots

    def _sizes(self) -> tuple[int, int, int]:
        return (
            _check_int("order1", self.order1, 1),
            _check_int("order2", self.order2, 1),
            _check_int("n_knots", self.n_knots, 4),
        )

    @property
    def n_states(self) -> int:  # type: ignore[override]
        """The two filters' states, ``order1 + order2``."""
        n1, n2, _ = self._sizes()
        return n1 + n2

    @property
    def param_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """Names of the parameters, in the order of the parameter vector."""
        n1, n2, k = self._sizes()
        return (
            *(f"G1.a{i}" for i in range(n1)),
            *(f"G1.b{i}" for i in range(n1 + 1)),
            "gain",
            *(f"f{i}" for i in range(k)),
            *(f"G2.a{i}" for i in range(n2)),
            *(f"G2.b{i}" for i in range(n2 + 1)),
        )

    def blocks(self, theta: np.ndarray) -> dict[str, np.ndarray | float]:
        """The blocks of a parameter vector.

        Returns
        -------
        dict
            ``b1, a1`` and ``b2, a2`` (numerators and denominators of ``G1``
            and ``G2`` in powers of z^-1, unit static gain), ``gain`` and
            ``values`` (the spline's values at ``knots``), ``knots``.
        """
        n1, n2, k = self._sizes()
        theta = np.asarray(theta, dtype=float)
        cut = np.cumsum([n1, n1 + 1, 1, k, n2])
        pa1, b1, gain, values, pa2, b2 = np.split(theta, cut)
        a1, a2 = _denominator(pa1, n1), _denominator(pa2, n2)
        with np.errstate(divide="ignore", invalid="ignore"):
            b1 = b1 * (a1.sum() / b1.sum() if abs(b1.sum()) > _TINY else np.nan)
            b2 = b2 * (a2.sum() / b2.sum() if abs(b2.sum()) > _TINY else np.nan)
        return {
            "b1": b1,
            "a1": a1,
            "gain": float(gain[0]),
            "values": values,
            "knots": np.linspace(-1.0, 1.0, k),
            "b2": b2,
            "a2": a2,
        }

    def nonlinearity(self, s: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``f(s)``: the spline, continued linearly outside [-1, 1]."""
        blocks = self.blocks(theta)
        return _spline(s, blocks["knots"], blocks["values"])

    def simulate(self, x0: np.ndarray, u: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Outputs (T, 1) from the filter states ``x0`` under inputs ``u`` (T, 1)."""
        n1 = self._sizes()[0]
        blocks = self.blocks(theta)
        if not np.all(np.isfinite(blocks["b1"])) or not np.all(
            np.isfinite(blocks["b2"])
        ):
            return np.full((u.shape[0], 1), np.nan)
        x0 = np.asarray(x0, dtype=float)
        # v, w, y: (T,)
        v, _ = lfilter(blocks["b1"], blocks["a1"], u[:, 0], zi=x0[:n1])
        w = _spline(blocks["gain"] * v, blocks["knots"], blocks["values"])
        y, _ = lfilter(blocks["b2"], blocks["a2"], w, zi=x0[n1:])
        return y[:, None]

    def initial_params(self) -> np.ndarray:
        """Data-free start: real poles at 0.5, all-pole filters, ``f(s) = s``."""
        n1, n2, k = self._sizes()
        return np.concatenate(
            [
                _coordinates([0.5] * n1, n1),
                np.eye(n1 + 1)[0],
                [1.0],
                np.linspace(-1.0, 1.0, k),
                _coordinates([0.5] * n2, n2),
                np.eye(n2 + 1)[0],
            ]
        )

    def param_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Pole coordinates within +-0.9999; the rest unbounded."""
        n1, n2, k = self._sizes()
        upper = np.concatenate(
            [
                np.full(n1, _STABLE),
                np.full(n1 + 2 + k, np.inf),
                np.full(n2, _STABLE),
                np.full(n2 + 1, np.inf),
            ]
        )
        lower = -upper
        return lower, upper

    def state_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Unbounded filter states."""
        return np.full(self.n_states, -np.inf), np.full(self.n_states, np.inf)

    def initial_state(self, y0: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Filters at rest."""
        return np.zeros(self.n_states)

    def best_linear_approximation(
        self, u: list[np.ndarray], y: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """A linear model of order ``order1 + order2``: ARX, then output error.

        Parameters
        ----------
        u, y : list of ndarray of shape (T, 1)

        Returns
        -------
        b, a : ndarray of shape (n + 1,)
            Numerator and denominator in powers of z^-1 (``a[0] = 1``).
        """
        n = sum(self._sizes()[:2])
        # regressors y(t-1..t-n), u(t..t-n): coef = [-a[1:], b]
        rows, targets = zip(
            *(_lag_matrix(ue, ye, n, n + 1, 0) for ue, ye in zip(u, y, strict=True)),
            strict=True,
        )
        coef = np.linalg.lstsq(np.concatenate(rows), np.concatenate(targets)[:, 0])[0]
        poles = list(np.roots(np.concatenate([[1.0], -coef[:n]])))
        p0 = np.concatenate([_coordinates(poles, n), coef[n:]])

        def errors(p: np.ndarray) -> np.ndarray:
            a = _denominator(p[:n], n)
            pairs = zip(u, y, strict=True)
            errs = [lfilter(p[n:], a, e[:, 0]) - o[:, 0] for e, o in pairs]
            return np.concatenate(errs)

        bound = np.concatenate([np.full(n, _STABLE), np.full(n + 1, np.inf)])
        fit = least_squares(errors, p0, bounds=(-bound, bound), x_scale="jac")
        return fit.x[n:], _denominator(fit.x[:n], n)

    def starts(
        self,
        u: list[np.ndarray],
        y: list[np.ndarray],
        n_restarts: int,
        rng: np.random.Generator,
    ) -> list[np.ndarray]:
        """One start per split of the linear approximation's poles.

        ``G1`` takes ``order1`` of the poles of
        :meth:`best_linear_approximation` (complex pairs together) and no
        zeros, ``G2`` the other poles and the numerator that fits the
        approximation's output best (least squares), and ``f`` is the
        straight line through the static gain. ``gain`` maps the largest
        ``G1`` output on the training data to the last knot. The first
        ``n_restarts + 1`` distinct splits are returned (``rng`` is unused).
        """
        n1, n2, k = self._sizes()
        _, a = self.best_linear_approximation(u, y)
        poles = list(np.roots(a))
        splits = _splits(poles, n1)
        while not splits:  # no conjugation-closed split: make a pair real
            i = min(
                (i for i, q in enumerate(poles) if q.imag > _IMAG),
                key=lambda i: poles[i].imag,
            )
            j = min(range(len(poles)), key=lambda j: abs(poles[j] - np.conj(poles[i])))
            real = complex(poles[i].real)
            poles = [q for m, q in enumerate(poles) if m not in (i, j)] + [real, real]
            splits = _splits(poles, n1)
        out = []
        for part, rest in splits[: n_restarts + 1]:
            pa1, pa2 = _coordinates(part, n1), _coordinates(rest, n2)
            a1, a2 = _denominator(pa1, n1), _denominator(pa2, n2)
            b1 = np.eye(n1 + 1)[0]
            # v: the unit-gain all-pole G1's output; columns: G2's numerator taps
            vs = [lfilter(b1 * a1.sum(), a1, ue[:, 0]) for ue in u]
            cols = np.concatenate(
                [
                    np.stack(
                        [lfilter(np.eye(n2 + 1)[j], a2, v) for j in range(n2 + 1)], 1
                    )
                    for v in vs
                ]
            )
            b2 = np.linalg.lstsq(cols, np.concatenate([ye[:, 0] for ye in y]))[0]
            static = b2.sum() / a2.sum()
            static = static if abs(static) > _TINY else 1.0
            gain = 1.0 / max(max(np.abs(v).max() for v in vs), _TINY)
            values = np.linspace(-1.0, 1.0, k) * static / gain
            out.append(np.concatenate([pa1, b1, [gain], values, pa2, b2 / static]))
        return out

    def __repr__(self) -> str:
        return (
            f"WienerHammerstein(order1={self.order1}, order2={self.order2}, "
            f"n_knots={self.n_knots})"
        )
