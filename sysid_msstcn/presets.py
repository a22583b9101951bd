"""Named model configurations as plain data (the paper's Appendix A.1 and more).

Each preset is a dictionary with a ``description``, the data shape it was
defined for (``n_outputs``, ``n_inputs``) and ``params``: estimator
parameters (architecture and, for the paper's models, training settings).
Run ``python -m sysid_msstcn.summary`` (or ``sysid-msstcn presets``) to print
every preset's parameter count and receptive field, both computed.
"""

from __future__ import annotations

import copy

__all__ = ["PRESETS", "get_preset", "preset_names", "preset_network_kwargs"]

_FLAT5 = ((1, 2, 4, 8, 16),) * 5
_ONES5_TOP = ((1, 1, 1, 1, 1),) * 4 + ((1, 2, 4, 8, 16),)
_PAPER_TRAIN = {"batch_size": 128, "learning_rate": 5e-4, "free_bits": 0.5}

PRESETS: dict[str, dict] = {
    "blizzard_fw200": {
        "description": "Blizzard, frame width 200, multiscale (paper A.1)",
        "n_outputs": 200,
        "n_inputs": 0,
        "params": {
            "channels": (256,) * 5,
            "latent_dims": (64,) * 5,
            "strides": (1, 2, 2, 2, 1),
            "dilations": ((1, 1, 1, 1, 1),) * 5,
            "likelihood": "gmm",
            "n_components": 10,
            **_PAPER_TRAIN,
        },
    },
    "blizzard_fw200_flat": {
        "description": "Blizzard, frame width 200, without multiscale (paper A.1)",
        "n_outputs": 200,
        "n_inputs": 0,
        "params": {
            "channels": (256,) * 5,
            "latent_dims": (64,) * 5,
            "strides": (1, 1, 1, 1, 1),
            "dilations": _FLAT5,
            "likelihood": "gmm",
            "n_components": 10,
            **_PAPER_TRAIN,
        },
    },
    "blizzard_fw25": {
        "description": "Blizzard, frame width 25, multiscale (paper A.1)",
        "n_outputs": 25,
        "n_inputs": 0,
        "params": {
            "channels": (96, 128, 192, 256, 256),
            "latent_dims": (24, 32, 48, 64, 64),
            "strides": (1, 2, 2, 2, 1),
            "dilations": _ONES5_TOP,
            "likelihood": "gmm",
            "n_components": 10,
            **_PAPER_TRAIN,
        },
    },
    "blizzard_fw25_flat": {
        "description": "Blizzard, frame width 25, without multiscale (paper A.1)",
        "n_outputs": 25,
        "n_inputs": 0,
        "params": {
            "channels": (96,) * 5,
            "latent_dims": (24,) * 5,
            "strides": (1, 1, 1, 1, 1),
            "dilations": _FLAT5,
            "likelihood": "gmm",
            "n_components": 10,
            **_PAPER_TRAIN,
        },
    },
    "blizzard_fw2": {
        "description": "Blizzard, frame width 2, multiscale (paper A.1)",
        "n_outputs": 2,
        "n_inputs": 0,
        "params": {
            "channels": (26, 58, 128, 256, 256),
            "latent_dims": (1, 5, 25, 64, 64),
            "strides": (1, 5, 5, 4, 1),
            "dilations": _ONES5_TOP,
            "likelihood": "gmm",
            "n_components": 2,
            **_PAPER_TRAIN,
        },
    },
    "blizzard_fw2_flat": {
        "description": "Blizzard, frame width 2, without multiscale (paper A.1)",
        "n_outputs": 2,
        "n_inputs": 0,
        "params": {
            "channels": (26,) * 5,
            "latent_dims": (1,) * 5,
            "strides": (1, 1, 1, 1, 1),
            "dilations": _FLAT5,
            "likelihood": "gmm",
            "n_components": 2,
            **_PAPER_TRAIN,
        },
    },
    "iam_ondb": {
        "description": "IAM-OnDB handwriting: 10-component GMM + Bernoulli pen "
        "(paper A.1)",
        "n_outputs": 3,
        "n_inputs": 0,
        "params": {
            "channels": (64,) * 5,
            "latent_dims": (8, 8, 8, 4, 2),
            "strides": (1, 2, 2, 2, 1),
            "dilations": ((1, 1, 1, 1),) * 4 + ((1, 2, 4, 8),),
            "likelihood": "gmm_bernoulli",
            "n_components": 10,
            "batch_size": 32,
            "window": 1024,
            "learning_rate": 5e-4,
            "free_bits": 0.5,
        },
    },
    "sysid_small": {
        "description": "Small system-identification model (fast on CPU)",
        "n_outputs": 1,
        "n_inputs": 1,
        "params": {
            "channels": (16, 16, 16),
            "latent_dims": (2, 2, 2),
            "strides": (1, 2, 2),
            "dilations": ((1, 2, 4, 8), (1, 2, 4), (1, 2, 4)),
            "likelihood": "gaussian",
        },
    },
    "sysid_default": {
        "description": "System-identification default: 4 levels, width 32",
        "n_outputs": 1,
        "n_inputs": 1,
        "params": {
            "channels": (32, 32, 32, 32),
            "latent_dims": (4, 4, 4, 4),
            "strides": (1, 2, 2, 2),
            "dilations": ((1, 2, 4, 8), (1, 2, 4), (1, 2, 4), (1, 2, 4, 8)),
            "likelihood": "gaussian",
        },
    },
    "sysid_large": {
        "description": "Larger system-identification model (GPU or long CPU runs)",
        "n_outputs": 1,
        "n_inputs": 1,
        "params": {
            "channels": (64, 64, 64, 64, 64),
            "latent_dims": (4, 4, 4, 4, 4),
            "strides": (1, 2, 2, 2, 2),
            "dilations": ((1, 2, 4, 8, 16),) + ((1, 2, 4, 8),) * 4,
            "likelihood": "gaussian",
        },
    },
}

# The authors' code builds the FW=2 model with fixed resampling (block sums
# and repetition); everything else equals the paper's FW=2 configuration.
PRESETS["blizzard_fw2_code"] = {
    "description": "Blizzard FW=2 as the authors' code builds it "
    "(fixed resampling; 5,845,802 parameters)",
    "n_outputs": 2,
    "n_inputs": 0,
    "params": {**PRESETS["blizzard_fw2"]["params"], "resampling": "fixed"},
}

_NETWORK_KEYS = (
    "channels",
    "latent_dims",
    "strides",
    "dilations",
    "kernel_size",
    "n_topdown_blocks",
    "likelihood",
    "n_components",
    "resampling",
    "use_latents",
)


def preset_names() -> tuple[str, ...]:
    """Names of all presets."""
    return tuple(PRESETS)


def get_preset(name: str) -> dict:
    """Return a deep copy of a preset.

    Parameters
    ----------
    name : str
        One of :func:`preset_names`.

    Returns
    -------
    preset : dict
        Keys ``description``, ``n_outputs``, ``n_inputs`` and ``params``.
    """
    if name not in PRESETS:
        raise ValueError(
            f"unknown preset {name!r}; available presets: {', '.join(PRESETS)}"
        )
    return copy.deepcopy(PRESETS[name])


def preset_network_kwargs(name: str) -> dict:
    """Keyword arguments of ``NetworkConfig`` for a preset (data shape included).

    Parameters
    ----------
    name : str

    Returns
    -------
    kwargs : dict
    """
    preset = get_preset(name)
    kw = {k: v for k, v in preset["params"].items() if k in _NETWORK_KEYS}
    kw["n_outputs"] = preset["n_outputs"]
    kw["n_inputs"] = preset["n_inputs"]
    return kw
