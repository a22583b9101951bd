"""Parameter defaults and checks of :class:`~sysid_msstcn.MSSTCNRegressor`."""

from __future__ import annotations

import math

import numpy as np

from .config import ROLLOUT_GRADIENTS, ROLLOUT_LOSSES

__all__ = ["DEFAULTS", "PARAM_CHECKS", "is_int", "is_real"]

# network and training settings a preset may fill (None in the estimator)
DEFAULTS = {
    "channels": (32, 32, 32, 32),
    "latent_dims": (4, 4, 4, 4),
    "strides": (1, 2, 2, 2),
    "dilations": ((1, 2, 4, 8), (1, 2, 4), (1, 2, 4), (1, 2, 4, 8)),
    "likelihood": "gaussian",
    "n_components": 1,
    "resampling": "learned",
    "batch_size": 32,
    "window": None,
    "learning_rate": 1e-3,
    "free_bits": 0.5,
}


def is_int(value) -> bool:
    """Whether ``value`` is an integer (bool excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value) -> bool:
    """Whether ``value`` is a real number (bool excluded)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )


# estimator-level parameters: name -> (predicate, description for the error)
PARAM_CHECKS = {
    "max_iter": (lambda v: is_int(v) and v >= 0, "an int >= 0"),
    "validation_fraction": (
        lambda v: is_real(v) and 0 <= v < 1,
        "a float in [0, 1)",
    ),
    "n_iter_no_change": (lambda v: is_int(v) and v >= 1, "an int >= 1"),
    "max_time": (
        lambda v: v is None or (is_real(v) and 0 < v < math.inf),
        "None or a finite number of seconds > 0",
    ),
    "tol": (lambda v: is_real(v) and v >= 0, "a float >= 0"),
    "n_init": (lambda v: v is None or (is_int(v) and v >= 0), "None or an int >= 0"),
    "steps_per_epoch": (
        lambda v: v is None or (is_int(v) and v >= 1),
        "None or an int >= 1",
    ),
    "input_noise": (
        lambda v: (
            (isinstance(v, str) and v == "auto") or (is_real(v) and 0 <= v < math.inf)
        ),
        "'auto' or a finite float >= 0",
    ),
    "rollout_steps": (lambda v: is_int(v) and v >= 0, "an int >= 0"),
    "rollout_weight": (
        lambda v: is_real(v) and 0 <= v < math.inf,
        "a finite float >= 0",
    ),
    "rollout_loss": (
        lambda v: isinstance(v, str) and v in ROLLOUT_LOSSES,
        f"one of {ROLLOUT_LOSSES}",
    ),
    "rollout_gradient": (
        lambda v: isinstance(v, str) and v in ROLLOUT_GRADIENTS,
        f"one of {ROLLOUT_GRADIENTS}",
    ),
    "learning_rate": (
        lambda v: v is None or (is_real(v) and 0 < v <= 1e6),
        "None or a float in (0, 1e6]",
    ),
    "free_bits": (
        lambda v: v is None or (is_real(v) and 0 <= v < math.inf),
        "None or a finite float >= 0",
    ),
    "lr_decay": (lambda v: is_real(v) and 0 < v <= 1, "a float in (0, 1]"),
    "lr_decay_steps": (lambda v: is_int(v) and v >= 1, "an int >= 1"),
    "free_bits_half_life": (lambda v: is_int(v) and v >= 1, "an int >= 1"),
    "grad_clip": (
        lambda v: v is None or (is_real(v) and 0 < v < math.inf),
        "None or a finite float > 0",
    ),
    "ema_decay": (lambda v: is_real(v) and 0 <= v < 1, "a float in [0, 1)"),
    "weight_decay": (
        lambda v: is_real(v) and 0 <= v < math.inf,
        "a finite float >= 0",
    ),
    "use_latents": (lambda v: isinstance(v, (bool, np.bool_)), "a bool"),
    "mixed_precision": (lambda v: isinstance(v, (bool, np.bool_)), "a bool"),
    "early_stopping_metric": (
        lambda v: v in ("auto", "elbo", "simulation", "record_simulation"),
        "'auto', 'elbo', 'simulation' or 'record_simulation'",
    ),
    "early_stopping": (lambda v: isinstance(v, (bool, np.bool_)), "a bool"),
    "normalize": (lambda v: isinstance(v, (bool, np.bool_)), "a bool"),
    "warm_start": (lambda v: isinstance(v, (bool, np.bool_)), "a bool"),
    "verbose": (lambda v: isinstance(v, (int, bool, np.integer)), "an int or bool"),
    "distributed": (
        lambda v: (
            isinstance(v, (bool, np.bool_)) or (isinstance(v, str) and v == "auto")
        ),
        "'auto', True or False",
    ),
}
