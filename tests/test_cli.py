"""Every ``sysid-msstcn`` subcommand end to end at tiny size, and user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from _tiny import TINY_CLI_NETWORK

from sysid_msstcn import cli
from sysid_msstcn.data import make_io_dataset, make_wiener_hammerstein

TINY = [
    *TINY_CLI_NETWORK,
    "--max-iter",
    "1",
    "--steps-per-epoch",
    "2",
    "--batch-size",
    "4",
    "--window",
    "64",
    "--device",
    "cpu",
    "-q",
]
SYNTH = ["synthetic", "--n-samples", "400"]


def run(argv, capsys):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def io_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    assert cli.main(["fit", *SYNTH, *TINY, "--output", str(path)]) == 0
    return path


def test_presets_prints_the_table(capsys):
    status, out, _ = run(["presets"], capsys)
    assert status == 0
    assert "| `sysid_small` |" in out and "receptive field" in out


def test_demo_writes_table_plots_and_results(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    argv = ["demo", "--budget", "0.02", "--output", out_dir, "--device", "cpu", "-q"]
    argv += ["--threads", "1"]
    status, out, _ = run(argv, capsys)
    assert status == 0
    for model in ("ARX", "polynomial NARX", "MLP NARX", "MS-STCN"):
        assert model in out
    assert "test RMSE" in out and "fit %" in out and "train time (s)" in out
    for name in (
        "simulation.png",
        "error.png",
        "comparison.png",
        "learning_curves.png",
        "results.csv",
        "msstcn.safetensors",
    ):
        assert (out_dir / name).stat().st_size > 0, name
    doc = json.loads((out_dir / "results.json").read_text())
    assert [r["model"] for r in doc["results"]][-1] == "MS-STCN"
    assert all(np.isfinite(r["rmse"]) for r in doc["results"])
    assert doc["meta"]["sizes"]["max_iter"] == 1


def test_fit_saves_model_and_sidecar(io_model):
    from sysid_msstcn import MSSTCNRegressor

    est = MSSTCNRegressor.load(io_model, device="cpu")
    assert est.network_config_.channels == (4, 4)
    assert est.n_iter_ == 1
    side = json.loads(io_model.with_suffix(".json").read_text())
    assert side["kind"] == "io"


@pytest.mark.parametrize("suffix", [".json", ".csv", ".nc"])
def test_evaluate_writes_results(io_model, tmp_path, capsys, suffix):
    out = tmp_path / f"results{suffix}"
    argv = [
        "evaluate",
        io_model,
        *SYNTH,
        "--device",
        "cpu",
        "--output",
        out,
        "--mc-samples",
        "5",
        "--plots",
        tmp_path / "plots",
    ]
    status, stdout, _ = run(argv, capsys)
    assert status == 0 and "MS-STCN" in stdout
    assert out.stat().st_size > 0
    if suffix == ".json":
        row = json.loads(out.read_text())["results"][0]
        assert {"rmse", "fit_percent", "coverage_90", "crps"} <= set(row)
    if suffix == ".nc":
        assert "rmse" in xr.load_dataset(out).data_vars
    assert (tmp_path / "plots" / "simulation.png").stat().st_size > 0


def test_evaluate_runs_the_residual_tests(io_model, tmp_path, capsys):
    """--residual-lags: the row's figures are those of residual_analysis on
    the same free run, and --plots adds the residual figure."""
    from sysid_msstcn import MSSTCNRegressor
    from sysid_msstcn.cli._data import _io, load_data
    from sysid_msstcn.residuals import residual_analysis

    out = tmp_path / "results.json"
    argv = ["evaluate", io_model, *SYNTH, "--device", "cpu", "--output", out]
    argv += ["--residual-lags", "10", "--plots", tmp_path / "plots"]
    status, stdout, _ = run(argv, capsys)
    assert status == 0
    assert "Ljung-Box p" in stdout and "input corr. outside" in stdout
    row = json.loads(out.read_text())["results"][0]
    est = MSSTCNRegressor.load(io_model, device="cpu")
    parser = cli._parser.build_parser()
    rec = load_data("synthetic", parser.parse_args(["evaluate", "m", *SYNTH])).test[0]
    u, y, n0 = _io(rec)
    assert row["n_init"] == n0
    res = residual_analysis(
        y, est.predict(u, y_init=y[:n0]), u=u, n_init=n0, max_lag=10
    )
    assert row["ljung_box_p"] == pytest.approx(float(res.ljung_box_pvalue.min()))
    frac = res.fraction_outside()["cross_correlation"]
    assert row["input_corr_outside"] == pytest.approx(float(frac.max()))
    one = residual_analysis(y, est.predict_ahead(u, y, steps=1), n_init=n0, max_lag=10)
    assert row["ljung_box_p_one_step"] == pytest.approx(
        float(one.ljung_box_pvalue.min())
    )
    assert "Ljung-Box p (1 step)" in stdout
    assert (tmp_path / "plots" / "residuals.png").stat().st_size > 0
    argv = ["evaluate", io_model, *SYNTH, "--device", "cpu", "--residual-lags"]
    status, _, err = run([*argv, "100000"], capsys)
    assert status != 0 and "max_lag" in err
    with pytest.raises(SystemExit):
        cli.main([str(a) for a in [*argv, "0"]])
    assert "must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".nc", ".csv"])
def test_simulate_writes_trajectories(io_model, tmp_path, capsys, suffix):
    out = tmp_path / f"sim{suffix}"
    argv = [
        "simulate",
        io_model,
        *SYNTH,
        "--device",
        "cpu",
        "--output",
        out,
        "--mc-samples",
        "4",
        "-q",
    ]
    status, _, _ = run(argv, capsys)
    assert status == 0
    if suffix == ".nc":
        ds = xr.load_dataset(out)
        assert ds["y_sim"].shape == ds["y"].shape == (200, 1)
        assert bool((ds["y_lower"] <= ds["y_upper"]).all())
    else:
        assert "y_sim" in out.read_text().splitlines()[0]


def test_benchmark_on_synthetic(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    argv = [
        "benchmark",
        *SYNTH,
        "--models",
        "arx,msstcn",
        *TINY,
        "--output",
        out,
        "--mc-samples",
        "3",
        "--plots",
        tmp_path / "plots",
    ]
    status, stdout, _ = run(argv, capsys)
    assert status == 0
    assert "ARX" in stdout and "MS-STCN" in stdout
    assert len(out.read_text().splitlines()) == 3
    assert (tmp_path / "plots" / "learning_curves.png").is_file()


def test_benchmark_msstcn_on_the_arx_residual(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["benchmark", *SYNTH, "--models", "arx,msstcn+arx", *TINY]
    status, stdout, _ = run([*argv, "--output", out, "--mc-samples", "3"], capsys)
    assert status == 0 and "MS-STCN + ARX" in stdout
    rows = json.loads(out.read_text())["results"]
    assert [r["model"] for r in rows] == ["ARX", "MS-STCN + ARX"]
    assert 0 <= rows[1]["coverage_90"] <= 1  # its Monte Carlo band
    assert "coverage_90" not in rows[0]


def _record_files(tmp_path):
    train, _ = make_wiener_hammerstein(500, random_state=4)
    rec = train[0]
    u, y = rec["u"].values, rec["y"].values
    paths = {
        "nc": tmp_path / "rec.nc",
        "csv": tmp_path / "rec.csv",
        "npz": tmp_path / "rec.npz",
    }
    make_io_dataset(u, y, sampling_time=0.5).to_netcdf(paths["nc"], engine="scipy")
    np.savetxt(
        paths["csv"],
        np.column_stack([np.arange(500) * 0.5, u, y]),
        delimiter=",",
        header="time,u0,y0",
        comments="",
    )
    np.savez(paths["npz"], u=u, y=y, sampling_time=0.5)
    return paths


@pytest.mark.parametrize("kind", ["nc", "csv", "npz"])
def test_fit_and_evaluate_on_files(tmp_path, capsys, kind):
    data = _record_files(tmp_path)[kind]
    model = tmp_path / "m.safetensors"
    assert run(["fit", data, *TINY, "--output", model], capsys)[0] == 0
    status, out, _ = run(["evaluate", model, data, "--device", "cpu"], capsys)
    assert status == 0 and "rec" in out


def test_benchmark_on_a_file_splits_it(tmp_path, capsys):
    data = _record_files(tmp_path)["csv"]
    argv = ["benchmark", data, "--models", "arx", "--warmup", "20"]
    status, out, err = run(argv, capsys)
    assert status == 0 and "last 30%" in out and "first 70%" in err


def test_config_file_and_preset(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(
            {
                "channels": [4, 4],
                "latent_dims": [1, 1],
                "strides": [1, 2],
                "dilations": [[1], [1]],
            }
        )
    )
    model = tmp_path / "m.safetensors"
    argv = [
        "fit",
        *SYNTH,
        "--config",
        cfg,
        "--max-iter",
        "1",
        "--steps-per-epoch",
        "1",
        "--device",
        "cpu",
        "-q",
        "--output",
        model,
    ]
    assert run(argv, capsys)[0] == 0
    argv = [
        "fit",
        *SYNTH,
        "--config",
        "sysid_small",
        "--channels",
        "[4,4,4]",
        "--latent-dims",
        "[1,1,1]",
        "--max-iter",
        "1",
        "--steps-per-epoch",
        "1",
        "--device",
        "cpu",
        "-q",
        "--output",
        model,
    ]
    assert run(argv, capsys)[0] == 0
    from sysid_msstcn import MSSTCNRegressor

    est = MSSTCNRegressor.load(model, device="cpu")
    assert est.preset == "sysid_small" and est.network_config_.strides == (1, 2, 2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "no_such_benchmark"], "unknown benchmark"),
        (["fit", "missing.csv"], "does not exist"),
        (["fit", *SYNTH, "--config", "no_such_preset"], "neither a file nor a preset"),
        (["demo", "--budget", "0"], "--budget must be positive"),
        (["evaluate", "missing.safetensors", *SYNTH], "no saved model"),
        (["benchmark", *SYNTH, "--models", "arx,foo"], "unknown model"),
        (["fit", *SYNTH, "--max-iter", "-3", "--device", "cpu"], "max_iter"),
        (["fit", "data.xyz"], "does not exist"),
        (["fit", *SYNTH, "--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_user_errors_are_one_line(argv, message, capsys):
    status, out, err = run(argv, capsys)
    assert status == 2
    last = err.splitlines()[-1]
    assert last.startswith("sysid-msstcn: error: ") and message in last
    assert "Traceback" not in err and err.count("error") == 1


def test_unknown_config_key_and_bad_file(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"chanels": [4]}')
    status, _, err = run(["fit", *SYNTH, "--config", cfg], capsys)
    assert status == 2 and "unknown estimator parameter(s) chanels" in err
    bad = tmp_path / "data.txt"
    bad.write_text("1,2\n")
    status, _, err = run(["fit", bad], capsys)
    assert status == 2 and "unknown file type" in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["fit"])
    assert info.value.code == 2
    assert "sysid-msstcn fit: error:" in capsys.readouterr().err


def test_sample_refuses_input_models(io_model, tmp_path, capsys):
    status, _, err = run(["sample", io_model, "--output", tmp_path], capsys)
    assert status == 2 and "simulate" in err


def test_fit_an_ensemble_then_evaluate_and_simulate_it(tmp_path, capsys):
    """fit --ensemble 2 saves one ensemble file; evaluate and simulate read it,
    sample refuses it; the first member is the single fit with seed 5 (the
    seed also draws the synthetic data, so only seed 5 has the same data)."""
    from sysid_msstcn import EnsembleRegressor, MSSTCNRegressor

    path = tmp_path / "ens.safetensors"
    argv = ["fit", *SYNTH, *TINY, "--seed", "5", "--ensemble", "2", "--output", path]
    status, out, _ = run(argv, capsys)
    assert status == 0 and "1+1 epochs" in out
    ens = EnsembleRegressor.load(path)
    assert ens.seeds_ == [5, 6]
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["ensemble_seeds"] == [5, 6] and side["epochs"] == [1, 1]
    single = tmp_path / "one.safetensors"
    assert (
        run(["fit", *SYNTH, *TINY, "--seed", "5", "--output", single], capsys)[0] == 0
    )
    u = np.random.default_rng(0).normal(size=(100, 1))
    np.testing.assert_array_equal(
        ens.estimators_[0].predict(u), MSSTCNRegressor.load(single).predict(u)
    )
    out = tmp_path / "res.json"
    argv = ["evaluate", path, *SYNTH, "--device", "cpu", "--output", out]
    status, stdout, _ = run([*argv, "--mc-samples", "4"], capsys)
    assert status == 0 and "MS-STCN" in stdout
    assert 0 <= json.loads(out.read_text())["results"][0]["coverage_90"] <= 1
    sim = tmp_path / "sim.nc"
    argv = ["simulate", path, *SYNTH, "--device", "cpu", "--output", sim, "-q"]
    assert run([*argv, "--mc-samples", "4"], capsys)[0] == 0
    assert xr.load_dataset(sim)["y_sim"].shape == (200, 1)
    status, _, err = run(["sample", path, "--output", tmp_path], capsys)
    assert status == 2 and "is an ensemble of models" in err
    status, _, err = run(["fit", *SYNTH, *TINY, "--ensemble", "-1"], capsys)
    assert status == 2 and "number of members >= 1" in err
    status, _, err = run(["fit", *SYNTH, *TINY, "--n-jobs", "2"], capsys)
    assert status == 2 and "add --ensemble K" in err
    status, _, err = run(["fit", *SYNTH, *TINY, "--keep-best", "1"], capsys)
    assert status == 2 and "add --ensemble K" in err
    status, _, err = run(["fit", *SYNTH, *TINY, "--selection", "greedy"], capsys)
    assert status == 2 and "add --ensemble K" in err
    argv = ["fit", *SYNTH, *TINY, "--ensemble", "2", "--keep-best", "3"]
    status, _, err = run([*argv, "--output", tmp_path / "no.safetensors"], capsys)
    assert status == 2 and "--keep-best takes a number of members in [1, 2]" in err
    assert not (tmp_path / "no.safetensors").exists()


def test_fit_an_ensemble_keeping_its_best_member(tmp_path, capsys):
    """fit --ensemble 2 --keep-best 1: the file predicts with the member
    whose training free run scored best; the side file names the choice."""
    from sysid_msstcn import EnsembleRegressor

    path = tmp_path / "ens.safetensors"
    argv = ["fit", *SYNTH, *TINY, "--ensemble", "2", "--keep-best", "1"]
    assert run([*argv, "--output", path], capsys)[0] == 0
    ens = EnsembleRegressor.load(path)
    best = int(np.argmin(ens.member_scores_))
    assert ens.selected_ == [best] and ens.keep_best == 1
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["selected_seeds"] == [ens.seeds_[best]]
    assert side["member_scores"] == list(ens.member_scores_)
    u = np.random.default_rng(0).normal(size=(100, 1))
    np.testing.assert_array_equal(ens.predict(u), ens.estimators_[best].predict(u))


def test_fit_an_ensemble_by_greedy_selection(tmp_path, capsys):
    """fit --ensemble 3 --selection greedy: the file keeps the rule, its order
    and path, and the side file names them by seed."""
    from sysid_msstcn import EnsembleRegressor

    path = tmp_path / "ens.safetensors"
    argv = ["fit", *SYNTH, *TINY, "--ensemble", "3", "--selection", "greedy"]
    assert run([*argv, "--output", path], capsys)[0] == 0
    ens = EnsembleRegressor.load(path)
    assert ens.selection == "greedy" and ens.keep_best is None
    assert ens.selection_order_[0] == int(np.argmin(ens.member_scores_))
    assert ens.selected_ == sorted(ens.selection_order_)
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["selection"] == "greedy"
    assert side["selection_order"] == [ens.seeds_[i] for i in ens.selection_order_]
    assert side["selection_path"] == list(ens.selection_path_)


def test_handwriting_fit_evaluate_and_sample(shared_data, tmp_path, capsys):
    model = tmp_path / "hw.safetensors"
    argv = [
        "fit",
        "iam_ondb",
        "--data-dir",
        shared_data / "iam_ondb",
        *TINY,
        "--max-records",
        "3",
        "--max-length",
        "200",
        "--n-components",
        "2",
        "--output",
        model,
    ]
    status, _, err = run([*argv, "--ensemble", "2"], capsys)
    assert status == 2 and "--ensemble fits input/output models only" in err
    assert run(argv, capsys)[0] == 0
    argv = [
        "evaluate",
        model,
        "iam_ondb",
        "--data-dir",
        shared_data / "iam_ondb",
        "--max-records",
        "2",
        "--max-length",
        "200",
        "--device",
        "cpu",
    ]
    status, out, _ = run(argv, capsys)
    assert status == 0 and "bits per dim" in out
    argv = [
        "sample",
        model,
        "--n",
        "2",
        "--length",
        "50",
        "--device",
        "cpu",
        "--output",
        tmp_path / "hw",
    ]
    assert run(argv, capsys)[0] == 0
    assert (tmp_path / "hw" / "handwriting.png").stat().st_size > 1000
    assert np.load(tmp_path / "hw" / "samples.npy").shape == (2, 50, 3)


def test_speech_fit_evaluate_and_sample(shared_data, tmp_path, capsys):
    import soundfile as sf

    model = tmp_path / "speech.safetensors"
    data = [
        "blizzard",
        "--data-dir",
        shared_data / "blizzard" / "standin",
        "--cache-dir",
        tmp_path / "cache",
        "--frame-width",
        "25",
        "--max-records",
        "4",
    ]
    argv = ["fit", *data, *TINY, "--n-components", "2", "--output", model]
    assert run(argv, capsys)[0] == 0
    status, out, _ = run(["evaluate", model, *data, "--device", "cpu"], capsys)
    assert status == 0 and "blizzard" in out
    argv = [
        "sample",
        model,
        "--n",
        "2",
        "--length",
        "40",
        "--device",
        "cpu",
        "--output",
        tmp_path / "wav",
    ]
    assert run(argv, capsys)[0] == 0
    audio, rate = sf.read(tmp_path / "wav" / "sample_0.wav")
    assert rate == 16000 and audio.shape == (40 * 25,)
    assert 0 < np.max(np.abs(audio)) <= 1


@pytest.mark.data
def test_benchmark_on_cascaded_tanks(benchmark_data, tmp_path, capsys):
    argv = [
        "benchmark",
        "cascaded_tanks",
        "--data-dir",
        benchmark_data,
        "--models",
        "arx,msstcn",
        *TINY,
        "--output",
        tmp_path / "ct.json",
    ]
    status, out, _ = run(argv, capsys)
    assert status == 0 and "V" in out
    rows = json.loads((tmp_path / "ct.json").read_text())["results"]
    assert {r["model"] for r in rows} == {"ARX", "MS-STCN"}


@pytest.mark.data
def test_benchmark_ms_stcn_on_the_grey_box_residual(benchmark_data, tmp_path, capsys):
    argv = ["benchmark", "cascaded_tanks", "--data-dir", benchmark_data, *TINY]
    argv += ["--models", "msstcn+greybox", "--mc-samples", "2"]
    status, _, _ = run([*argv, "--output", tmp_path / "ct.json"], capsys)
    assert status == 0
    (row,) = json.loads((tmp_path / "ct.json").read_text())["results"]
    assert row["model"] == "MS-STCN + grey-box" and row["rmse"] < 1.0
    assert 0 <= row["coverage_90"] <= 1
    argv = ["benchmark", "ced", "--data-dir", benchmark_data, *TINY]
    status, _, err = run([*argv, "--models", "greybox"], capsys)
    assert status == 2 and "no grey-box model for 'ced'" in err


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "sysid_msstcn", "--version"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("sysid-msstcn ")
