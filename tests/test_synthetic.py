"""The demo's simulated Wiener-Hammerstein system and multisine generator."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from sysid_msstcn.data import (
    io_arrays,
    make_multisine,
    make_wiener_hammerstein,
    simulate_wiener_hammerstein,
    synthetic,
    validate_io_dataset,
    wiener_hammerstein_nonlinearity,
)


def test_records_follow_the_dataset_contract():
    train, test = make_wiener_hammerstein(600, random_state=0)
    assert len(train) == len(test) == 1
    for rec in train + test:
        validate_io_dataset(rec)
    assert train[0].sizes["time"] == 600
    assert test[0].sizes["time"] == 300
    assert train[0].attrs["n_init"] == 0
    assert test[0].attrs["n_init"] == 100
    assert test[0].attrs["split"] == "test"
    assert test[0].attrs["report_scale"] == 1.0


def test_same_seed_same_data_other_seed_other_phases():
    a = io_arrays(make_wiener_hammerstein(400, random_state=1)[0][0])
    b = io_arrays(make_wiener_hammerstein(400, random_state=1)[0][0])
    c = io_arrays(make_wiener_hammerstein(400, random_state=2)[0][0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])


def test_noise_only_on_training_record():
    kw = {"n_test": 300, "random_state": 3}
    clean_tr, clean_te = make_wiener_hammerstein(500, noise_std=0.0, **kw)
    noisy_tr, noisy_te = make_wiener_hammerstein(500, noise_std=0.1, **kw)
    u, y_clean = io_arrays(clean_tr[0])
    _, y_noisy = io_arrays(noisy_tr[0])
    np.testing.assert_allclose(y_clean[:, 0], simulate_wiener_hammerstein(u[:, 0]))
    assert 0.07 < np.std(y_noisy - y_clean) < 0.13
    ut, yt = io_arrays(noisy_te[0])
    np.testing.assert_allclose(yt[:, 0], simulate_wiener_hammerstein(ut[:, 0]))


def test_linear_when_strength_is_zero():
    u = make_multisine(500, random_state=0)
    y1 = simulate_wiener_hammerstein(u, strength=0.0)
    y2 = simulate_wiener_hammerstein(2 * u, strength=0.0)
    np.testing.assert_allclose(y2, 2 * y1, atol=1e-12)
    y_nl = simulate_wiener_hammerstein(2 * u)
    assert not np.allclose(y_nl, 2 * simulate_wiener_hammerstein(u))


def test_nonlinearity_values():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(wiener_hammerstein_nonlinearity(x, 0.0), x)
    expected = np.tanh(x) + 0.1 * x**2
    np.testing.assert_allclose(wiener_hammerstein_nonlinearity(x), expected)


def test_multisine_rms_band_and_period():
    u = make_multisine(1024, band=(0.1, 0.2), rms=0.5, random_state=0)
    assert u.shape == (1024,)
    assert np.sqrt(np.mean(u**2)) == pytest.approx(0.5)
    freqs = np.fft.rfftfreq(1024) * 2
    power = np.abs(np.fft.rfft(u)) ** 2
    outside = (freqs < 0.1) | (freqs > 0.2)
    assert power[outside].sum() < 1e-20 * power.sum()
    periodic = make_multisine(300, period=100, random_state=0)
    np.testing.assert_allclose(periodic[:100], periodic[200:])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"band": (0.3, 0.2)}, "band"),
        ({"band": (0.0, 0.001)}, "no frequency bin"),
        ({"rms": 0.0}, "rms"),
        ({"period": 1}, "period"),
    ],
)
def test_multisine_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_multisine(64, **kwargs)


def test_wiener_hammerstein_rejects_bad_arguments():
    with pytest.raises(ValueError, match="longer than n_init"):
        make_wiener_hammerstein(100, n_test=50)
    with pytest.raises(ValueError, match="noise_std"):
        make_wiener_hammerstein(400, noise_std=-1.0)


def test_module_imports_no_torch():
    tree = ast.parse(Path(synthetic.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    assert "torch" not in names
    assert not any("estimator" in n or "model" in n for n in names)
