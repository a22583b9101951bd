"""Network and training configurations (frozen dataclasses, no torch).

The estimator turns its flat parameters into a :class:`NetworkConfig` and a
:class:`TrainConfig`; the model is built from the first, the training loop
from the second, and both travel with saved weights as plain dictionaries.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

__all__ = [
    "LIKELIHOODS",
    "OBJECTIVES",
    "RESAMPLING",
    "ROLLOUT_GRADIENTS",
    "ROLLOUT_LOSSES",
    "NetworkConfig",
    "TrainConfig",
    "config_from_dict",
]

LIKELIHOODS = ("gaussian", "gmm", "bernoulli", "gmm_bernoulli")
RESAMPLING = ("learned", "fixed")
OBJECTIVES = ("linear_free_bits", "elbo")
ROLLOUT_LOSSES = ("mse", "nll")
ROLLOUT_GRADIENTS = ("full", "last")


def _as_tuple(value, name: str) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise ValueError(f"{name} must be a tuple, got {type(value).__name__}")


def _positive_ints(values: tuple, name: str) -> None:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must hold positive integers, got {values!r}")


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of an MS-STCN model.

    Levels are listed bottom-up: index 0 is the level closest to the data
    (the paper's level 1), the last index is the top level.

    Parameters
    ----------
    n_outputs : int
        Number of output channels of y (for framed speech: the frame width).
    n_inputs : int, default=0
        Number of exogenous input channels u (0: the paper's unconditional
        model).
    channels : tuple of int, default=(32, 32, 32, 32, 32)
        Filters of every convolution in each level.
    latent_dims : tuple of int, default=(4, 4, 4, 4, 4)
        Latent variables per level and time step.
    strides : tuple of int, default=(1, 2, 2, 2, 1)
        Downsampling factor of each level relative to the level below; the
        first must be 1 (the lowest level runs at the data rate).
    dilations : tuple of tuple of int
        Dilation of each bottom-up Wavenet block, per level; the number of
        entries is the number of bottom-up blocks of that level.
    kernel_size : int, default=2
        Kernel size of the bottom-up dilated convolutions.
    n_topdown_blocks : int, default=2
        Blocks of each top-down 1x1 Wavenet (both the input mixer and the
        conditional output Wavenet).
    likelihood : {"gaussian", "gmm", "bernoulli", "gmm_bernoulli"}
        Predictive distribution. ``"gmm_bernoulli"`` models the first output
        channel as Bernoulli (a pen-up flag) and the others as a Gaussian
        mixture.
    n_components : int, default=1
        Mixture components for ``"gmm"`` and ``"gmm_bernoulli"``.
    resampling : {"learned", "fixed"}, default="learned"
        ``"learned"`` is the paper: strided convolution down, strided
        transposed convolution up (identity paths: mean and nearest
        neighbour). ``"fixed"`` is the authors' code: a sum over the block
        scaled by 1/sqrt(stride) and plain repetition.
    use_latents : bool, default=True
        False removes every latent variable (the paper's deterministic
        control model).
    std_min, std_max : float, default=1e-3, 5.0
        Clamp of every predicted standard deviation (Appendix A.2).
    """

    n_outputs: int
    n_inputs: int = 0
    channels: tuple[int, ...] = (32, 32, 32, 32, 32)
    latent_dims: tuple[int, ...] = (4, 4, 4, 4, 4)
    strides: tuple[int, ...] = (1, 2, 2, 2, 1)
    dilations: tuple[tuple[int, ...], ...] = (
        (1, 1, 1, 1),
        (1, 1, 1, 1),
        (1, 1, 1, 1),
        (1, 1, 1, 1),
        (1, 2, 4, 8),
    )
    kernel_size: int = 2
    n_topdown_blocks: int = 2
    likelihood: str = "gaussian"
    n_components: int = 1
    resampling: str = "learned"
    use_latents: bool = True
    std_min: float = 1e-3
    std_max: float = 5.0

    def __post_init__(self) -> None:
        for name in ("channels", "latent_dims", "strides"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name), name))
            _positive_ints(getattr(self, name), name)
        dil = tuple(
            _as_tuple(d, "dilations[level]")
            for d in _as_tuple(self.dilations, "dilations")
        )
        object.__setattr__(self, "dilations", dil)
        n = len(self.channels)
        if n == 0:
            raise ValueError("a model needs at least one level")
        lengths = {
            "channels": len(self.channels),
            "latent_dims": len(self.latent_dims),
            "strides": len(self.strides),
            "dilations": len(self.dilations),
        }
        if len(set(lengths.values())) != 1:
            raise ValueError(
                f"per-level tuples must have the same length (one entry per "
                f"level), got {lengths}"
            )
        for d in self.dilations:
            if len(d) == 0:
                raise ValueError("every level needs at least one bottom-up block")
            _positive_ints(d, "dilations")
        if self.strides[0] != 1:
            raise ValueError(
                f"strides[0] must be 1 (the lowest level runs at the data rate), "
                f"got {self.strides[0]}"
            )
        _positive_ints(
            (self.n_outputs, self.kernel_size, self.n_topdown_blocks),
            "n_outputs, kernel_size and n_topdown_blocks",
        )
        _positive_ints((self.n_components,), "n_components")
        if (
            isinstance(self.n_inputs, bool)
            or not isinstance(self.n_inputs, int)
            or (self.n_inputs < 0)
        ):
            raise ValueError(f"n_inputs must be an int >= 0, got {self.n_inputs!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(
                f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}"
            )
        if self.likelihood == "gaussian" and self.n_components != 1:
            raise ValueError("likelihood='gaussian' has one component; use 'gmm'")
        if self.likelihood == "gmm_bernoulli" and self.n_outputs < 2:
            raise ValueError(
                "likelihood='gmm_bernoulli' needs a binary channel and at least "
                "one real channel (n_outputs >= 2)"
            )
        if self.resampling not in RESAMPLING:
            raise ValueError(
                f"unknown resampling {self.resampling!r}; choose one of {RESAMPLING}"
            )
        if not 0 < self.std_min < self.std_max:
            raise ValueError("need 0 < std_min < std_max")

    @property
    def n_levels(self) -> int:
        """Number of levels L."""
        return len(self.channels)

    @property
    def cumulative_strides(self) -> tuple[int, ...]:
        """Total downsampling factor of each level relative to the data."""
        out, acc = [], 1
        for s in self.strides:
            acc *= s
            out.append(acc)
        return tuple(out)

    @property
    def total_stride(self) -> int:
        """Downsampling factor of the top level."""
        return self.cumulative_strides[-1]

    @property
    def receptive_field(self) -> int:
        """Number of past output samples that a prediction depends on.

        Computed from the structure (strides, dilations, kernel size and the
        resampling variant) with latents drawn from the prior: the
        prediction of y_t depends on y_{t-r} ... y_{t-1} with r the returned
        value, for the worst-placed t.
        """
        return receptive_field(self)

    def to_dict(self) -> dict:
        """Return the configuration as a JSON-friendly dictionary."""
        out = asdict(self)
        out["dilations"] = [list(d) for d in self.dilations]
        for name in ("channels", "latent_dims", "strides"):
            out[name] = list(out[name])
        return out


def _level_span(config: NetworkConfig, level: int) -> tuple[int, int]:
    """Earliest input index (level-below rate) needed by d_level[j], as (a, b).

    The block j of ``level`` depends on level-below indices from
    ``a * j + b`` onwards (``a`` = stride), to the end of its block.
    """
    s = config.strides[level]
    k = config.kernel_size
    dil = config.dilations[level]
    if s > 1:
        # first block: consumes [j*s, j*s + s - 1] at the level below
        back = (k - 1) * dil[0] if config.resampling == "fixed" else 0
        rest = sum((k - 1) * d for d in dil[1:])
        # d[j] depends on coarse j - rest, whose block starts at (j - rest) * s
        return s, -rest * s - back
    rest = sum((k - 1) * d for d in dil)
    return 1, -rest


def receptive_field(config: NetworkConfig) -> int:
    """Compute the receptive field of a configuration (see NetworkConfig)."""
    cum = (1, *config.cumulative_strides)
    worst = 1
    period = config.total_stride
    for t in range(period, 2 * period):
        earliest = t
        for level in range(config.n_levels):
            rate = cum[level + 1]
            j = t // rate - 1  # Delay: the prior of block t // rate sees d[j - 1]
            if j < 0:
                continue
            # map the earliest dependence of d_level[j] down to the data rate
            idx = j
            for lv in range(level, -1, -1):
                a, b = _level_span(config, lv)
                idx = a * idx + b
            earliest = min(earliest, idx)
        worst = max(worst, t - earliest)
    return worst


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of the training loop.

    Parameters
    ----------
    learning_rate : float, default=5e-4
        Adam step size (the paper's value).
    lr_decay : float, default=0.98
        Multiplicative learning-rate decay applied smoothly per iteration so
        that it amounts to ``lr_decay`` every ``lr_decay_steps`` iterations.
    lr_decay_steps : int, default=6000
        See ``lr_decay`` (the authors' code: 0.98 per 6000 iterations).
    objective : {"linear_free_bits", "elbo"}, default="linear_free_bits"
        Training objective (Appendix A.3) or the plain ELBO.
    free_bits : float, default=0.5
        Initial free-bits threshold lambda in nats per latent element.
    free_bits_half_life : int, default=300000
        Iterations after which the threshold has halved (the paper: 300000).
    grad_clip : float or None, default=None
        Global gradient-norm clipping threshold (None: no clipping).
    mixed_precision : bool, default=False
        bf16 autocast on CUDA (ignored on CPU).
    input_noise : float, default=0.0
        Standard deviation of Gaussian noise added to the outputs fed to the
        bottom-up network during training (in normalised units); the
        likelihood still scores the clean outputs.
    rollout_steps : int, default=0
        k > 0 adds a simulation-error term to the loss: the last k steps of
        every training window run free (latents at their prior means,
        predictive means fed back; computed exactly with k parallel passes,
        see :mod:`sysid_msstcn.rollout`). 0: the one-step objective alone.
    rollout_weight : float, default=1.0
        Weight of that term (per sequence, like the ELBO's nats).
    rollout_loss : {"mse", "nll"}, default="mse"
        The term: half the squared simulation error in normalised units, or
        the negative log-likelihood of the outputs under the free run's
        predictive distribution.
    rollout_gradient : {"full", "last"}, default="full"
        Differentiate through all k passes, or only through the last pass
        with the fed-back outputs as constants (see
        :func:`sysid_msstcn.rollout.rollout`).
    ema_decay : float, default=0.0
        Keep an exponential moving average of the weights, updated after
        every optimiser step with this decay (0: no averaging); see
        :meth:`sysid_msstcn.training.Trainer.averaged`.
    weight_decay : float, default=0.0
        Decoupled weight decay (AdamW): every step shrinks each weight by
        the factor ``1 - lr * weight_decay`` besides the Adam update, lr
        being the step's (decayed) learning rate. 0: plain Adam.
    """

    learning_rate: float = 5e-4
    lr_decay: float = 0.98
    lr_decay_steps: int = 6000
    objective: str = "linear_free_bits"
    free_bits: float = 0.5
    free_bits_half_life: int = 300_000
    grad_clip: float | None = None
    mixed_precision: bool = False
    input_noise: float = 0.0
    rollout_steps: int = 0
    rollout_weight: float = 1.0
    rollout_loss: str = "mse"
    rollout_gradient: str = "full"
    ema_decay: float = 0.0
    weight_decay: float = 0.0
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.lr_decay_steps < 1 or self.free_bits_half_life < 1:
            raise ValueError("lr_decay_steps and free_bits_half_life must be >= 1")
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"unknown objective {self.objective!r}; choose one of {OBJECTIVES}"
            )
        if self.free_bits < 0:
            raise ValueError(f"free_bits must be >= 0, got {self.free_bits}")
        if not self.input_noise >= 0:
            raise ValueError(f"input_noise must be >= 0, got {self.input_noise}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(
                f"weight_decay must be a finite float >= 0, got {self.weight_decay}"
            )
        if (
            isinstance(self.rollout_steps, bool)
            or not isinstance(self.rollout_steps, int)
            or self.rollout_steps < 0
        ):
            raise ValueError(
                f"rollout_steps must be an int >= 0, got {self.rollout_steps!r}"
            )
        if not (self.rollout_weight >= 0 and math.isfinite(self.rollout_weight)):
            raise ValueError(
                f"rollout_weight must be a finite float >= 0, got {self.rollout_weight}"
            )
        if self.rollout_gradient not in ROLLOUT_GRADIENTS:
            raise ValueError(
                f"unknown rollout_gradient {self.rollout_gradient!r}; "
                f"choose one of {ROLLOUT_GRADIENTS}"
            )
        if self.rollout_loss not in ROLLOUT_LOSSES:
            raise ValueError(
                f"unknown rollout_loss {self.rollout_loss!r}; "
                f"choose one of {ROLLOUT_LOSSES}"
            )


def config_from_dict(data: dict) -> NetworkConfig:
    """Rebuild a :class:`NetworkConfig` from :meth:`NetworkConfig.to_dict`.

    Parameters
    ----------
    data : dict
        The dictionary; unknown keys are an error.

    Returns
    -------
    config : NetworkConfig
    """
    known = {f.name for f in fields(NetworkConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown network configuration keys: {sorted(unknown)}")
    kw = dict(data)
    if "dilations" in kw:
        kw["dilations"] = tuple(tuple(d) for d in kw["dilations"])
    for name in ("channels", "latent_dims", "strides"):
        if name in kw:
            kw[name] = tuple(kw[name])
    return NetworkConfig(**kw)
