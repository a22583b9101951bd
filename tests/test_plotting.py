"""Figures: files are written, shapes are checked, no torch is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from sysid_msstcn import plotting
from sysid_msstcn.data import strokes_to_offsets


@pytest.fixture
def signals():
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.normal(size=(300, 2)), axis=0)
    pred = y + rng.normal(scale=0.5, size=y.shape)
    return y, pred


def _check_png(path: Path) -> None:
    assert path.is_file()
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulation_with_band(tmp_path, signals):
    y, pred = signals
    fig = plotting.plot_simulation(
        y, pred, lower=pred - 1, upper=pred + 1, n_init=20, sampling_time=0.01
    )
    assert len(fig.axes) == 2
    _check_png(plotting.save_figure(fig, tmp_path / "sim.png"))


def test_simulation_of_several_models_and_1d(tmp_path, signals):
    y, pred = signals
    fig = plotting.plot_simulation(
        y[:, 0], {"a": pred[:, 0], "b": pred[:, 0] * 0.9}, max_points=100
    )
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["measured", "a", "b"]
    _check_png(plotting.save_figure(fig, tmp_path / "sub" / "multi.png"))


def test_simulation_rejects_shape_mismatch(signals):
    y, pred = signals
    with pytest.raises(ValueError, match="shape"):
        plotting.plot_simulation(y, pred[:-1])


def test_error_and_spectrum(tmp_path, signals):
    y, pred = signals
    fig = plotting.plot_error(y, {"model": pred}, n_init=10, sampling_time=0.5)
    assert len(fig.axes) == 4
    _check_png(plotting.save_figure(fig, tmp_path / "err.png"))
    with pytest.raises(ValueError, match="n_init"):
        plotting.plot_error(y, pred, n_init=299)


def _history(n_epochs=5, levels=3, validation=True):
    rows = []
    for e in range(1, n_epochs + 1):
        row = {
            "epoch": e,
            "loss": 10.0 / e,
            "elbo": -10.0 / e,
            "elbo_per_step": -1.0 / e,
            "kl_per_level": [1.0 * e] * levels,
            "lr": 1e-3 * 0.98**e,
            "threshold": 0.5,
        }
        if validation:
            row.update(
                val_elbo=-11.0 / e,
                val_elbo_per_step=-1.1 / e,
                val_kl_per_level=[0.9 * e] * levels,
            )
        rows.append(row)
    return rows


@pytest.mark.parametrize("validation", [True, False])
def test_learning_curves(tmp_path, validation):
    fig = plotting.plot_learning_curves(_history(validation=validation))
    kl_lines = fig.axes[1].get_lines()
    assert len(kl_lines) == (6 if validation else 3)
    _check_png(plotting.save_figure(fig, tmp_path / "lc.png"))


def test_learning_curves_need_history():
    with pytest.raises(ValueError, match="empty"):
        plotting.plot_learning_curves([])


def test_offsets_round_trip_to_strokes():
    strokes = [
        np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 1.0]]),
        np.array([[5.0, 5.0], [6.0, 5.0]]),
    ]
    offsets = strokes_to_offsets(strokes)  # y is flipped by the converter
    out = plotting.offsets_to_strokes(offsets)
    assert len(out) == 2
    for got, want in zip(out, strokes, strict=True):
        want = want * [1, -1]
        np.testing.assert_allclose(got, want - strokes[0][0] * [1, -1])


def test_handwriting_panels(tmp_path):
    rng = np.random.default_rng(0)
    samples = np.concatenate(
        [(rng.random((3, 200, 1)) < 0.05), rng.normal(size=(3, 200, 2))], axis=2
    )
    fig = plotting.plot_handwriting(samples, titles=["a", "b", "c"], ncols=2)
    assert len(fig.axes) == 4
    _check_png(plotting.save_figure(fig, tmp_path / "hw.png"))
    with pytest.raises(ValueError, match="shape"):
        plotting.offsets_to_strokes(np.zeros((5, 2)))


def test_plotting_imports_only_numpy_and_matplotlib():
    tree = ast.parse(Path(plotting.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0] if node.level == 0 else ".")
    assert roots <= {
        "__future__",
        "os",
        "collections",
        "pathlib",
        "typing",
        "numpy",
        "matplotlib",
    }


def test_residual_analysis_panels(tmp_path):
    from sysid_msstcn.residuals import residual_analysis

    rng = np.random.default_rng(0)
    u = rng.standard_normal((400, 2))
    y = rng.standard_normal((400, 2))
    pred = y - 0.1 * rng.standard_normal((400, 2)) - 0.3 * np.roll(u[:, :1], 2, axis=0)
    res = residual_analysis(y, pred, u=u, max_lag=10)
    fig = plotting.plot_residual_analysis(res, title="check")
    assert len(fig.axes) == 6  # two outputs x (autocorrelation + two inputs)
    red = [
        line
        for line in fig.axes[1].get_lines()
        if line.get_color() == "C3" and len(line.get_xdata())
    ]
    assert [int(x) for x in red[0].get_xdata()] == [2]  # the lag-2 term
    _check_png(plotting.save_figure(fig, tmp_path / "resid.png"))
    fig = plotting.plot_residual_analysis(residual_analysis(y, pred, max_lag=10))
    assert len(fig.axes) == 2
