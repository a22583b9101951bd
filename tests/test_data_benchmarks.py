"""Nonlinear benchmark loaders: official lengths, warm-up, attributes, bad input."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import xarray as xr

from sysid_msstcn.data import benchmarks as bm
from sysid_msstcn.data.benchmarks import (
    BENCHMARKS,
    fetch_silverbox,
    fetch_wiener_hammerstein,
    io_arrays,
    load_benchmark,
    make_io_dataset,
    validate_io_dataset,
)
from sysid_msstcn.exceptions import DataFormatError, ShapeError

# benchmark -> (train lengths, test lengths, test n_init, sampling time, scale, units)
EXPECTED = {
    "silverbox": ([65062], [21688, 40475, 32000], 50, 2**14 / 1e7, 1000.0, "mV"),
    "wiener_hammerstein": ([100000], [78800], 50, 1 / 51200, 1000.0, "mV"),
    "cascaded_tanks": ([1024], [1024], 50, 4.0, 1.0, "V"),
    "emps": ([24841], [24841], 20, 1e-3, 1000.0, "mm"),
    "ced": ([400, 400], [100, 100], 10, 0.02, 1.0, "ticks/s"),
    "f16": (
        [73728] * 4 + [108477] * 4,
        [73728] * 3 + [108477, 116736, 108477],
        50,
        1 / 400,
        1.0,
        "m/s^2",
    ),
    "bouc_wen": ([], [8192, 153000], 0, 1 / 750, 1.0, "m"),
}


@pytest.fixture(scope="module")
def loaded(benchmark_data):
    """Every benchmark, loaded once with the network blocked."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", refuse)
    try:
        return {name: load_benchmark(name, benchmark_data) for name in BENCHMARKS}
    finally:
        mp.undo()


@pytest.mark.data
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_official_lengths_and_attrs(loaded, name):
    train, test = loaded[name]
    n_train, n_test, n_init, ts, scale, units = EXPECTED[name]
    assert isinstance(train, list) and isinstance(test, list)
    assert [d.sizes["time"] for d in train] == n_train
    assert [d.sizes["time"] for d in test] == n_test
    for ds in train + test:
        validate_io_dataset(ds)
        assert ds["u"].dims == ("time", "u_channel")
        assert ds["y"].dims == ("time", "y_channel")
        assert ds["u"].dtype == np.float64 and ds["y"].dtype == np.float64
        assert ds.attrs["benchmark"] == name
        assert type(ds.attrs["sampling_time"]) is float
        assert ds.attrs["sampling_time"] == pytest.approx(ts, rel=1e-12)
        assert type(ds.attrs["n_init"]) is int
        assert ds.attrs["report_scale"] == scale
        assert ds.attrs["report_units"] == units
        assert ds.attrs["u_units"] and ds.attrs["y_units"]
        t = ds["time"].to_numpy()
        assert t[0] == 0.0
        np.testing.assert_allclose(np.diff(t[:3]), ts, rtol=1e-12)
        assert np.isfinite(ds["u"]).all() and np.isfinite(ds["y"]).all()
    assert all(d.attrs["split"] == "train" and d.attrs["n_init"] == 0 for d in train)
    assert all(d.attrs["split"] == "test" and d.attrs["n_init"] == n_init for d in test)
    names = [d.attrs["name"] for d in train + test]
    assert len(set(names)) == len(names)


@pytest.mark.data
def test_silverbox_test_names_fixed(loaded):
    _, test = loaded["silverbox"]
    assert [d.attrs["name"] for d in test] == [
        "test_multisine",
        "test_arrow_full",
        "test_arrow_no_extrapolation",
    ]
    full, noextra = test[1], test[2]
    np.testing.assert_array_equal(full["y"][:32000], noextra["y"])


@pytest.mark.data
def test_values_match_package(loaded, benchmark_data):
    import nonlinear_benchmarks as nlb

    train, test = nlb.EMPS(dir_placement=str(benchmark_data))
    ours_train, ours_test = loaded["emps"]
    u, y = io_arrays(ours_test[0])
    np.testing.assert_array_equal(u[:, 0], test.u)
    np.testing.assert_array_equal(y[:, 0], test.y)
    np.testing.assert_array_equal(io_arrays(ours_train[0])[1][:, 0], train.y)
    (_, _), (_, hi) = nlb.CED(dir_placement=str(benchmark_data))
    np.testing.assert_array_equal(loaded["ced"][1][1]["y"][:, 0], hi.y)


@pytest.mark.data
def test_f16_outputs_stack_and_select(loaded, benchmark_data):
    train, _ = loaded["f16"]
    assert train[0].sizes["y_channel"] == 3 and train[0].sizes["u_channel"] == 1
    one_train, one_test = bm.fetch_f16(benchmark_data, output_index=1)
    assert one_train[0].sizes["y_channel"] == 1
    np.testing.assert_array_equal(
        one_train[0]["y"][:, 0].to_numpy(), train[0]["y"][:, 1].to_numpy()
    )
    assert len(one_test) == 6
    with pytest.raises(ValueError, match="output_index"):
        bm.fetch_f16(benchmark_data, output_index=3)


@pytest.mark.data
def test_attributes_survive_slicing(loaded):
    ds = loaded["wiener_hammerstein"][1][0]
    part = ds.isel(time=slice(100, 200))
    assert part.attrs == ds.attrs
    assert part.sizes["time"] == 100


@pytest.mark.data
def test_load_benchmark_names_case_insensitive(benchmark_data, loaded):
    train, test = load_benchmark("WH", benchmark_data)
    assert test[0].attrs["benchmark"] == "wiener_hammerstein"
    train, _ = load_benchmark("Cascaded-Tanks", data_dir=benchmark_data)
    assert train[0].sizes["time"] == 1024


def test_load_benchmark_unknown_name_lists_valid():
    with pytest.raises(ValueError, match="silverbox") as info:
        load_benchmark("narendra_li")
    assert "narendra_li" in str(info.value)
    assert "bouc_wen" in str(info.value)


def test_missing_folder_names_path_and_writes_nothing(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        fetch_silverbox(missing)
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == []


def test_missing_file_names_it(tmp_path):
    (tmp_path / "Silverbox").mkdir()
    (tmp_path / "Silverbox" / "SilverboxFiles.zip").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="SNLS80mV.mat"):
        fetch_silverbox(tmp_path)
    assert sorted(p.name for p in (tmp_path / "Silverbox").iterdir()) == [
        "SilverboxFiles.zip"
    ]


def test_env_var_selects_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(bm.BENCHMARK_DIR_ENV_VAR, str(tmp_path / "envdir"))
    assert bm.benchmark_dir() == tmp_path / "envdir"
    with pytest.raises(FileNotFoundError, match="envdir"):
        load_benchmark("emps")
    assert bm.benchmark_dir(tmp_path) == tmp_path


def test_truncated_mat_file_names_it(tmp_path, benchmark_data):
    src = benchmark_data / "WienerHammerBenchMark" / "WienerHammerBenchMark.mat"
    if not src.exists():
        pytest.skip("WH data missing")
    folder = tmp_path / "WienerHammerBenchMark"
    folder.mkdir()
    bad = folder / "WienerHammerBenchMark.mat"
    bad.write_bytes(src.read_bytes()[:3000])
    with pytest.raises(DataFormatError, match="WienerHammerBenchMark.mat"):
        fetch_wiener_hammerstein(tmp_path)


def test_garbage_mat_file_names_it(tmp_path):
    folder = tmp_path / "WienerHammerBenchMark"
    folder.mkdir()
    (folder / "WienerHammerBenchMark.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DataFormatError, match="WienerHammerBenchMark.mat"):
        fetch_wiener_hammerstein(tmp_path)


def test_make_io_dataset_contract():
    u = np.arange(10.0)
    y = np.stack([u, -u], axis=1)
    ds = make_io_dataset(u, y, sampling_time=0.5, split="test", n_init=2)
    validate_io_dataset(ds)
    assert ds["u"].shape == (10, 1) and ds["y"].shape == (10, 2)
    np.testing.assert_allclose(ds["time"], 0.5 * np.arange(10))
    uu, yy = io_arrays(ds)
    np.testing.assert_array_equal(uu[:, 0], u)
    np.testing.assert_array_equal(yy, y)
    with pytest.raises(ShapeError):
        make_io_dataset(u, y[:5], sampling_time=1.0)
    with pytest.raises(ValueError, match="sampling_time"):
        make_io_dataset(u, u, sampling_time=0)
    with pytest.raises(DataFormatError, match="'y'"):
        validate_io_dataset(xr.Dataset({"u": (("time", "u_channel"), y)}))
    bare = xr.Dataset(
        {"u": (("time", "u_channel"), y), "y": (("time", "y_channel"), y)}
    )
    with pytest.raises(DataFormatError, match="n_init"):
        validate_io_dataset(bare)
