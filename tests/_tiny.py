"""Shrunken versions of the presets for fast structural tests.

Widths and latent sizes are replaced by tiny values; everything that shapes
the time structure (strides, dilations, kernel size, resampling) and the
likelihood are kept.
"""

from __future__ import annotations

import numpy as np
import torch

from sysid_msstcn.config import NetworkConfig
from sysid_msstcn.model import MSSTCN
from sysid_msstcn.presets import PRESETS, preset_network_kwargs

PRESET_NAMES = tuple(PRESETS)

# a tiny estimator (two levels of four channels, receptive field 6) trained
# for two epochs of two steps on the CPU: checks of the protocol, not of fit
TINY_ESTIMATOR = {
    "channels": (4, 4),
    "latent_dims": (1, 1),
    "strides": (1, 2),
    "dilations": ((1, 2), (1,)),
    "window": 32,
    "batch_size": 4,
    "max_iter": 2,
    "steps_per_epoch": 2,
    "device": "cpu",
}
# one epoch of two steps on batches of two short windows, seeded: the
# robustness, property and untrusted-file tests
TINY_FAST = {
    **TINY_ESTIMATOR,
    "max_iter": 1,
    "batch_size": 2,
    "window": 16,
    "random_state": 0,
}
# the small system-identification preset, a few steps on the CPU, seeded:
# the hybrid, weight-averaging and validation-score tests
TINY_SYSID = {
    "preset": "sysid_small",
    "max_iter": 2,
    "steps_per_epoch": 3,
    "window": 64,
    "batch_size": 4,
    "random_state": 0,
    "device": "cpu",
}
# the tiny network as command-line options of `sysid-msstcn fit`
TINY_CLI_NETWORK = [
    "--channels",
    "[4,4]",
    "--latent-dims",
    "[1,1]",
    "--strides",
    "[1,2]",
    "--dilations",
    "[[1,2],[1]]",
]


def tiny_kwargs(
    name: str,
    channels: int = 4,
    latent: int = 2,
    n_inputs: int | None = None,
    resampling: str | None = None,
    max_outputs: int | None = 3,
) -> dict:
    """NetworkConfig keyword arguments of a preset with tiny widths."""
    kw = preset_network_kwargs(name)
    n_levels = len(kw["channels"])
    kw["channels"] = (channels,) * n_levels
    kw["latent_dims"] = tuple(1 + (i % 2) * (latent - 1) for i in range(n_levels))
    if n_inputs is not None:
        kw["n_inputs"] = n_inputs
    if resampling is not None:
        kw["resampling"] = resampling
    if max_outputs is not None:
        kw["n_outputs"] = min(kw["n_outputs"], max_outputs)
    return kw


def tiny_config(name: str, **kwargs) -> NetworkConfig:
    """A NetworkConfig of a preset with tiny widths (see :func:`tiny_kwargs`)."""
    return NetworkConfig(**tiny_kwargs(name, **kwargs))


def build(config: NetworkConfig, dtype=torch.float64, seed: int = 0) -> MSSTCN:
    """Build a model with seeded weights in eval mode."""
    torch.manual_seed(seed)
    return MSSTCN(config).to(dtype).eval()


def random_data(model: MSSTCN, batch: int, n_steps: int, dtype=torch.float64):
    """Random (y, u) of the right shapes; binary channels get 0/1 values."""
    cfg = model.config
    y = torch.randn(batch, cfg.n_outputs, n_steps, dtype=dtype)
    if cfg.likelihood == "bernoulli":
        y = (y > 0).to(dtype)
    elif cfg.likelihood == "gmm_bernoulli":
        y[:, :1] = (y[:, :1] > 0).to(dtype)
    u = None
    if cfg.n_inputs:
        u = torch.randn(batch, cfg.n_inputs, n_steps, dtype=dtype)
    return y, u


def fixed_noise(model: MSSTCN, batch: int, n_steps: int, dtype=torch.float64):
    """Standard normal latent noise of the model's per-level shapes."""
    return [torch.randn(s, dtype=dtype) for s in model.latent_shapes(batch, n_steps)]


def preset_variants(with_resampling: bool = True) -> list:
    """(name, n_inputs, resampling) triples covering every preset.

    Each preset appears with its own resampling variant, without inputs and
    with one input when it has none; with ``with_resampling`` multiscale
    presets also get the other variant unless an identical tiny model is
    already listed (``blizzard_fw2`` "fixed" is ``blizzard_fw2_code``).
    """
    own, seen = [], set()
    for name in PRESET_NAMES:
        kw = preset_network_kwargs(name)
        for n_in in [kw["n_inputs"]] if kw["n_inputs"] else [0, 1]:
            r = kw.get("resampling", "learned")
            seen.add(tiny_config(name, n_inputs=n_in, resampling=r))
            own.append((name, n_in, r))
    out = []
    for name, n_in, r in own:
        out.append((name, n_in, r))
        multiscale = any(s > 1 for s in preset_network_kwargs(name)["strides"])
        if with_resampling and multiscale:
            other = "fixed" if r == "learned" else "learned"
            cfg = tiny_config(name, n_inputs=n_in, resampling=other)
            if cfg not in seen:
                seen.add(cfg)
                out.append((name, n_in, other))
    return out


def variant_id(v) -> str:
    """Readable pytest id of a preset variant."""
    name, n_in, res = v
    return f"{name}-u{n_in}-{res}"


def stable_system(
    n: int, seed: int = 0, pole: float = 0.7
) -> tuple[np.ndarray, np.ndarray]:
    """A stable first-order nonlinear system: u, y of shape (n, 1).

    y_t = pole * y_{t-1} + 0.5 * tanh(u_{t-1}) + 0.01 * noise.
    """
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, 1))
    y = np.zeros((n, 1))
    for t in range(1, n):
        y[t] = pole * y[t - 1] + 0.5 * np.tanh(u[t - 1, 0]) + 0.01 * rng.normal()
    return u, y


def tail_free_run_rmse(est, u: np.ndarray, y: np.ndarray) -> float:
    """Free-run RMSE on the estimator's validation tail, through ``predict``.

    The same warm-up as the estimator's own validation score (whole
    strides covering the receptive field before the tail), so the two must
    agree for a fitted single-record estimator.
    """
    _, [(_, a, b)] = est._split([len(y)])
    D = est.network_config_.total_stride
    s0 = max(0, a - -(-(est.receptive_field_ + D) // D) * D)
    sim = est.predict(u[s0:b], y_init=y[s0:a])
    return float(np.sqrt(np.mean((sim[a - s0 :] - y[a:b]) ** 2)))


def duffing_system(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stable second-order system with a cubic stiffness (Duffing-like).

    u of shape (n, 1), y of shape (n,): the hybrid's test system, whose
    linear part an ARX(2, 2, 1) model can fit.
    """
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n, 1))
    y = np.zeros(n)
    for t in range(2, n):
        y[t] = 1.5 * y[t - 1] - 0.7 * y[t - 2] + 0.3 * u[t - 1, 0] - 0.2 * y[t - 1] ** 3
    return u, y


# two levels of four channels and one latent each: the optimiser-step tests
# of the trainer (weight averaging, weight decay)
TRAINER_NETWORK = NetworkConfig(
    n_outputs=1,
    n_inputs=1,
    channels=(4, 4),
    latent_dims=(1, 1),
    strides=(1, 2),
    dilations=((1,), (1,)),
)


def integrator_batch(seed: int):
    """Four 32-step windows of a scaled integrator (u: white noise), a Batch."""
    from sysid_msstcn.training import make_batch

    rng = np.random.default_rng(seed)
    u = rng.standard_normal((4, 32, 1)).astype(np.float32)
    y = np.cumsum(u, axis=1) * 0.1
    return make_batch(list(y), list(u))


def fir_tanh_system(n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """A short FIR filter of white noise through tanh: (u, y) of n samples."""
    rng = np.random.default_rng(0)
    u = rng.standard_normal((n, 1))
    y = np.convolve(u[:, 0], [0.5, 0.3, 0.2, 0.1], mode="full")[:n]
    return u, np.tanh(y)
