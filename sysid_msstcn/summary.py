"""Computed summary of the presets: parameter counts and receptive fields.

Run ``python -m sysid_msstcn.summary`` to print the table (Markdown).
"""

from __future__ import annotations

from .config import NetworkConfig
from .model import MSSTCN
from .presets import get_preset, preset_names, preset_network_kwargs

__all__ = ["count_parameters", "main", "preset_summary", "preset_table"]


def count_parameters(model: MSSTCN) -> int:
    """Number of trainable parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def preset_summary(name: str) -> dict:
    """Parameter count, receptive field and shape facts of one preset.

    Parameters
    ----------
    name : str

    Returns
    -------
    dict
        ``name``, ``description``, ``parameters``, ``receptive_field``
        (data steps), ``total_stride``, ``levels``, ``latent_per_step``
        (latent dimensions per data step, summed over levels).
    """
    cfg = NetworkConfig(**preset_network_kwargs(name))
    model = MSSTCN(cfg)
    latent_rate = sum(
        z / r for z, r in zip(cfg.latent_dims, cfg.cumulative_strides, strict=True)
    )
    return {
        "name": name,
        "description": get_preset(name)["description"],
        "n_outputs": cfg.n_outputs,
        "parameters": count_parameters(model),
        "receptive_field": cfg.receptive_field,
        "total_stride": cfg.total_stride,
        "levels": cfg.n_levels,
        "latent_per_step": latent_rate,
    }


def preset_table() -> str:
    """Markdown table of :func:`preset_summary` for every preset."""
    rows = [
        "| preset | C_y | parameters | receptive field (steps) | total stride "
        "| latent dims per step | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in preset_names():
        s = preset_summary(name)
        rows.append(
            f"| `{name}` | {s['n_outputs']} | {s['parameters']:,} | "
            f"{s['receptive_field']:,} | {s['total_stride']} | "
            f"{s['latent_per_step']:.3g} | {s['description']} |"
        )
    return "\n".join(rows)


def main() -> None:
    """Print the preset table."""
    print(preset_table())


if __name__ == "__main__":
    main()
