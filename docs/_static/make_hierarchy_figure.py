"""Draw the MS-STCN hierarchy figure of the model page (docs/model.rst).

Run from the repository root: ``python docs/_static/make_hierarchy_figure.py``.
It writes ``docs/_static/msstcn_hierarchy.png`` (committed with the docs).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).with_name("msstcn_hierarchy.png")

BOTTOM_UP = "#d9d9d9"
TOP_DOWN = "#c6dbef"
LATENT = "#fdd0a2"
DATA = "#ffffff"


def box(ax, x, y, text, color, w=2.3, h=0.62, fs=9.5):
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.04,rounding_size=0.12",
            fc=color,
            ec="0.25",
            lw=1.0,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=fs)


def arrow(
    ax,
    a,
    b,
    text="",
    style="-|>",
    ls="-",
    color="0.2",
    rad=0.0,
    fs=8,
    offset=(0.0, 0.12),
):
    ax.add_patch(
        FancyArrowPatch(
            a,
            b,
            arrowstyle=style,
            mutation_scale=11,
            lw=1.1,
            ls=ls,
            color=color,
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=2,
            shrinkB=2,
        )
    )
    if text:
        mx, my = (a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1]
        ax.text(mx, my, text, ha="center", va="bottom", fontsize=fs, color=color)


def hierarchy(ax):
    """Block diagram: bottom-up d, top-down h, latents z, outputs g."""
    ax.set_xlim(-0.3, 13.3)
    ax.set_ylim(-1.35, 8.2)
    ax.set_axis_off()
    levels = [
        (1.6, "1", "S$^{(1)}$=1"),
        (4.3, "2", "S$^{(2)}$=2"),
        (7.0, "3", "S$^{(3)}$=4"),
    ]
    box(ax, 1.2, -0.75, "data  $y_{t}$ (and inputs $u_{t+1}$)", DATA, w=2.8)
    box(ax, 11.6, -0.75, r"$p(y_t \mid$ Conv$_{1\times1}(g^{(1)}))$", DATA, w=2.8)
    for i, (y, lvl, rate) in enumerate(levels):
        d = f"$d^{{({lvl})}}$ = Wavenet" + ("$^D$" if i else "")
        box(ax, 1.2, y, d, BOTTOM_UP)
        ax.text(-0.25, y + 0.52, f"level {lvl} ({rate})", fontsize=8.5, color="0.3")
        arg = f"[$g^{{({int(lvl) + 1})}}$, Delay]" if i < 2 else "Delay"
        h = rf"$h^{{({lvl})}}$ = Wavenet$_{{1\times1}}$({arg})"
        box(ax, 5.0, y, h, TOP_DOWN, w=3.9, fs=9)
        box(
            ax,
            8.25,
            y + 0.36,
            rf"prior $p(z^{{({lvl})}} \mid h^{{({lvl})}})$",
            LATENT,
            w=2.2,
            h=0.4,
            fs=8.5,
        )
        box(
            ax,
            8.25,
            y - 0.36,
            rf"posterior $q(z^{{({lvl})}} \mid h^{{({lvl})}}, d^{{({lvl})}})$",
            LATENT,
            w=2.6,
            h=0.4,
            fs=8.5,
        )
        g = rf"$g^{{({lvl})}}$ = CondWavenet" + ("$^U$" if i else "")
        box(ax, 11.6, y, g + rf"$(h^{{({lvl})}}, z^{{({lvl})}})$", TOP_DOWN, w=3.1)
        arrow(ax, (2.35, y), (3.05, y), "Delay", offset=(0, 0.08))
        arrow(ax, (6.95, y + 0.1), (7.15, y + 0.3))
        arrow(ax, (6.95, y - 0.1), (6.95, y - 0.3))
        arrow(
            ax,
            (9.35, y + 0.36),
            (10.05, y + 0.15),
            "sample",
            fs=7.5,
            offset=(0.1, 0.12),
        )
        arrow(
            ax,
            (9.55, y - 0.36),
            (10.05, y - 0.15),
            "train",
            fs=7.5,
            offset=(0.1, -0.4),
        )
        arrow(ax, (1.2, y - 0.33), (6.95, y - 0.45), ls=":", color="0.45", rad=0.12)
        if i < 2:
            up = levels[i + 1][0]
            arrow(
                ax, (1.2, y + 0.33), (1.2, up - 0.33), "downsample", offset=(0.75, -0.1)
            )
            arrow(
                ax,
                (10.4, up - 0.33),
                (6.6, y + 0.33),
                "upsample $g$",
                color="#08519c",
                rad=0.0,
                offset=(-0.75, 0.0),
            )
    arrow(ax, (1.2, -0.42), (1.2, 1.27))
    arrow(ax, (11.6, 1.27), (11.6, -0.42))
    ax.text(
        6.5,
        7.95,
        "bottom-up (grey): features of the measured past; top-down (blue): "
        "one latent level at a time, slowest first",
        ha="center",
        fontsize=9,
    )


def timeline(ax):
    """When each level's latent variable is updated (strides 1, 2, 2)."""
    ax.set_xlim(0.2, 8.8)
    ax.set_ylim(-1.2, 4.4)
    ax.set_axis_off()
    rows = [(3.0, "$z^{(3)}$", 4), (2.0, "$z^{(2)}$", 2), (1.0, "$z^{(1)}$", 1)]
    for y, name, step in rows:
        ax.text(0.3, y, name, va="center", fontsize=10)
        for t in range(1, 9):
            if (t - 1) % step == 0:
                corner = (t + 0.28, y - 0.15)
                ax.add_patch(
                    FancyBboxPatch(
                        corner,
                        step - 0.56,
                        0.3,
                        boxstyle="round,pad=0.02",
                        fc=LATENT,
                        ec="0.3",
                        lw=0.8,
                    )
                )
    for t in range(1, 9):
        ax.text(t + 0.4 + 0.15, 0.05, f"$y_{t}$", ha="center", fontsize=9)
    ax.text(4.6, 3.7, "latent updates per level (S = 1, 2, 4)", ha="center", fontsize=9)


def main() -> None:
    fig = Figure(figsize=(13.5, 6.6), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 2, width_ratios=[4.2, 1.0])
    hierarchy(fig.add_subplot(grid[0]))
    timeline(fig.add_subplot(grid[1]))
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
