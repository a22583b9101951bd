"""Smoke tests of the benchmark suite and the ablation (tiny budgets)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import TINY_SYSID, tail_free_run_rmse

from sysid_msstcn.baselines import ARXRegressor, deepsi_available
from sysid_msstcn.benchmarking import BUDGETS, PUBLISHED, TARGETS, run_benchmark

ROOT = Path(__file__).resolve().parent.parent


def _load(script: str):
    spec = importlib.util.spec_from_file_location(script, ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_benchmark_tiny_protocol(benchmark_data):
    res = run_benchmark(
        "ced", budget="tiny", data_dir=benchmark_data, device="cpu", n_samples=2
    )
    models = {r["model"] for r in res["results"]}
    expected = {"MS-STCN", "ARX", "polynomial NARX", "MLP NARX"}
    if deepsi_available():  # the optional peer, when installed
        expected.add("SUBNET (deepSI)")
    assert models == expected
    tests = {r["test_set"] for r in res["results"]}
    assert tests == {"test_low_amplitude", "test_high_amplitude"}
    for r in res["results"]:
        assert math.isfinite(r["rmse"]) and r["rmse"] > 0
        assert r["n_init"] == 10
        assert r["units"] == "ticks/s"
    ms = [r for r in res["results"] if r["model"] == "MS-STCN"]
    assert all(0.0 <= r["coverage_90"] <= 1.0 for r in ms)
    assert res["config"]["MS-STCN"]["max_iter"] == BUDGETS["tiny"]["max_iter"]
    # the budget's second fit on the simulation error is recorded
    finetune = BUDGETS["tiny"]["finetune"]
    assert res["config"]["MS-STCN"]["finetune"] == finetune
    assert all(len(r["stage_seconds"]) == 2 for r in ms)
    assert ms[0]["epochs"] == BUDGETS["tiny"]["max_iter"] + finetune["max_iter"]
    assert res["hardware"]["device"] == "cpu"
    json.dumps(res)  # JSON-friendly
    assert set(res["published"]) == set(res["targets"]) == tests


def test_linear_residual_budget_runs_ms_stcn_on_the_arx_residual(
    benchmark_data, tmp_path
):
    from sysid_msstcn.benchmarking import HYBRID_LABEL

    script = _load("run_nonlinear.py")
    args = ["--datasets", "cascaded_tanks", "--budget", "tiny", "--no-baselines"]
    args += ["--params", '{"linear_residual": true}', "--n-samples", "2"]
    args += ["--data-dir", str(benchmark_data), "--output-dir", str(tmp_path)]
    threads = torch.get_num_threads()
    try:
        script.main([*args, "--device", "cpu", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    res = json.loads((tmp_path / "nonlinear_cascaded_tanks.json").read_text())
    assert res["hardware"]["torch_threads"] == 1  # --threads, recorded
    (row,) = res["results"]
    assert row["model"] == HYBRID_LABEL and math.isfinite(row["rmse"])
    assert 0.0 <= row["coverage_90"] <= 1.0 and len(res["plots"]) == 2
    config = res["config"][HYBRID_LABEL]
    # the benchmark's ARX orders, and the first fit's settings of the network
    assert (config["linear"]["na"], config["linear"]["nb"]) == (4, 4)
    assert config["estimator"]["max_iter"] == BUDGETS["tiny"]["max_iter"]
    assert config["estimator"]["warm_start"] is False
    # the fine-tuning stage continued the residual model
    finetune = BUDGETS["tiny"]["finetune"]
    assert row["epochs"] == BUDGETS["tiny"]["max_iter"] + finetune["max_iter"]
    assert len(row["stage_seconds"]) == 2
    assert config["resolved"]["n_inputs"] == 2  # u and the ARX simulation


def test_linear_residual_takes_true_false_or_both():
    from sysid_msstcn.benchmarking import default_models

    with pytest.raises(ValueError, match="linear_residual must be True, False or"):
        default_models("ced", {"linear_residual": "yes"})
    both = default_models("ced", {"linear_residual": "both"}, baselines=False)
    assert list(both) == ["MS-STCN", "MS-STCN + ARX"]


def test_the_grey_box_is_a_baseline_and_a_nominal_model_where_there_is_one():
    from sysid_msstcn.baselines import (
        CascadedTanks,
        EMPSDrive,
        GreyBoxRegressor,
        WienerHammerstein,
    )
    from sysid_msstcn.benchmarking import GREYBOX_HYBRID_LABEL, default_models

    budget = {"linear_residual": "both", "nominal": "greybox"}
    models = default_models("cascaded_tanks", budget, random_state=3)
    assert list(models)[:2] == ["MS-STCN", GREYBOX_HYBRID_LABEL]
    for gb in (models["grey-box"], models[GREYBOX_HYBRID_LABEL].linear):
        assert isinstance(gb, GreyBoxRegressor)
        assert isinstance(gb.model, CascadedTanks)
        assert (gb.n_init, gb.random_state) == (50, 3)  # the benchmark's warm-up
    assert "grey-box" not in default_models("ced", "tiny")
    emps = default_models("emps", "tiny")["grey-box"]
    assert isinstance(emps.model, EMPSDrive) and emps.n_init == 20
    assert emps.train_state == "warmup"
    wh = default_models("wiener_hammerstein", "tiny")["grey-box"]
    assert isinstance(wh.model, WienerHammerstein)
    assert (wh.n_init, wh.n_restarts) == (50, 0)
    with pytest.raises(ValueError, match="no grey-box model for 'ced'"):
        default_models("ced", {"linear_residual": True, "nominal": "greybox"})
    with pytest.raises(ValueError, match="nominal must be 'arx' or 'greybox'"):
        default_models("cascaded_tanks", {"linear_residual": True, "nominal": "x"})
    with pytest.raises(ValueError, match="needs linear_residual"):
        default_models("cascaded_tanks", {"nominal": "greybox"})


def test_feed_increments_reaches_the_hybrids_only():
    from sysid_msstcn.benchmarking import GREYBOX_HYBRID_LABEL, default_models

    budget = {"linear_residual": "both", "feed_increments": True}
    models = default_models("emps", budget, baselines=False)
    assert models["MS-STCN + ARX"].feed_increments is True
    assert "feed_increments" not in models["MS-STCN"].get_params()
    budget["nominal"] = "greybox"
    greybox = default_models("emps", budget, baselines=False)[GREYBOX_HYBRID_LABEL]
    assert greybox.feed_increments is True
    plain = default_models("emps", {"linear_residual": True}, baselines=False)
    assert plain["MS-STCN + ARX"].feed_increments is False
    with pytest.raises(ValueError, match="feed_increments needs linear_residual"):
        default_models("emps", {"feed_increments": True})
    with pytest.raises(ValueError, match="feed_increments must be a bool"):
        default_models("emps", {"linear_residual": True, "feed_increments": 1})


def test_restart_every_reaches_the_hybrids_only():
    from sysid_msstcn.benchmarking import default_models

    budget = {"linear_residual": "both", "restart_every": 2000}
    models = default_models("emps", budget, baselines=False)
    assert models["MS-STCN + ARX"].restart_every == 2000
    assert "restart_every" not in models["MS-STCN"].get_params()
    plain = default_models("emps", {"linear_residual": True}, baselines=False)
    assert plain["MS-STCN + ARX"].restart_every is None
    with pytest.raises(ValueError, match="restart_every needs linear_residual"):
        default_models("emps", {"restart_every": 2000})


def test_the_grey_box_row_records_the_fitted_physical_parameters(benchmark_data):
    from sysid_msstcn.benchmarking import greybox_model

    gb = greybox_model("cascaded_tanks").set_params(n_restarts=0)
    res = run_benchmark(
        "cascaded_tanks", models={"grey-box": gb}, data_dir=benchmark_data
    )
    (row,) = res["results"]
    assert row["rmse"] < 0.5  # the physical structure alone: 0.36-0.42 V
    params = res["config"]["grey-box"]["fitted_params"]
    assert list(params) == list(gb.model.param_names)
    assert 0 < params["k1"] and params["h2"] + params["offset"] == pytest.approx(
        10.0, abs=0.2
    )  # the lower tank overflows at the sensor's 10 V


def test_budget_arx_entry_reaches_the_baseline_and_the_hybrid():
    from sysid_msstcn.benchmarking import default_models

    models = default_models(
        "emps", {"linear_residual": True, "arx": {"integrate": True, "na": 3}}
    )
    for arx in (models["ARX"], models["MS-STCN + ARX"].linear):
        assert arx.get_params() == {
            **ARXRegressor().get_params(),
            **{"na": 3, "nb": 2, "nk": 1, "integrate": True},
        }
    with pytest.raises(ValueError, match="arx must be a dict of na, nb, nk and"):
        default_models("emps", {"arx": {"order": 3}})


def test_both_variants_record_the_validation_choice(benchmark_data):
    budget = {**BUDGETS["tiny"], "linear_residual": "both"}
    res = run_benchmark(
        "ced",
        budget=budget,
        data_dir=benchmark_data,
        device="cpu",
        n_samples=0,
        baselines=False,
    )
    scores = {}
    for r in res["results"]:
        assert r["validation_rmse"] > 0 and len(r["stage_seconds"]) == 2
        assert r["train_rmse"] > 0  # the free run of the training records
        scores.setdefault(r["model"], set()).add(r["validation_rmse"])
    assert set(scores) == {"MS-STCN", "MS-STCN + ARX"}
    assert all(len(v) == 1 for v in scores.values())  # one score per model
    assert res["validation_choice"] == min(scores, key=lambda m: min(scores[m]))


def test_ensemble_budget_runs_every_member_through_both_stages(
    benchmark_data, tmp_path
):
    """--ensemble 2: the hybrid's members get seeds 0 and 1, both fine-tune,
    and the row gives the ensemble's and every member's test RMSE."""
    from sysid_msstcn.benchmarking import HYBRID_LABEL, default_models

    script = _load("run_nonlinear.py")
    args = ["--datasets", "ced", "--budget", "tiny", "--no-baselines", "--no-plots"]
    args += ["--params", '{"linear_residual": true}', "--n-samples", "2"]
    args += ["--data-dir", str(benchmark_data), "--output-dir", str(tmp_path)]
    script.main([*args, "--device", "cpu", "--ensemble", "2", "--seed", "3"])
    res = json.loads((tmp_path / "nonlinear_ced_seed3.json").read_text())
    finetune = BUDGETS["tiny"]["finetune"]
    for row in res["results"]:
        assert row["model"] == HYBRID_LABEL and row["ensemble"] == 2
        assert row["member_seeds"] == [3, 4]
        assert len(row["member_rmse"]) == 2 and math.isfinite(row["rmse"])
        assert row["epochs"] == [BUDGETS["tiny"]["max_iter"] + finetune["max_iter"]] * 2
        vals = row["member_validation_rmse"]
        assert row["validation_rmse"] == pytest.approx(np.mean(vals))
        assert len(row["member_train_rmse"]) == 2
        assert all(v > 0 for v in row["member_train_rmse"])
        assert row["train_rmse"] > 0  # the ensemble's own free run
    config = res["config"][HYBRID_LABEL]
    assert config["ensemble"]["seeds"] == [3, 4]
    assert config["estimator"]["random_state"] == 3  # the first member's
    table = (tmp_path / "nonlinear_table_seed3.md").read_text()
    assert "MS-STCN + ARX (ensemble of 2)" in table
    with pytest.raises(ValueError, match="ensemble must be a number of members"):
        default_models("ced", {"ensemble": "many"})


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_an_ensemble_of_baselines_reports_its_members(benchmark_data):
    from sysid_msstcn.baselines import MLPNARXRegressor
    from sysid_msstcn.ensemble import EnsembleRegressor

    mlp = MLPNARXRegressor(hidden_layer_sizes=(8,), na=2, nb=2, max_iter=50)
    models = {"MLP x2": EnsembleRegressor(mlp, n_members=2, random_state=0)}
    res = run_benchmark("ced", models=models, data_dir=benchmark_data)
    for row in res["results"]:
        assert row["ensemble"] == 2 and len(row["member_rmse"]) == 2
        assert "member_validation_rmse" not in row and "epochs" not in row
        assert "train_rmse" not in row and "member_train_rmse" not in row
    assert res["config"]["MLP x2"]["ensemble"]["seeds"] == [0, 1]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_an_ensemble_keeping_its_best_member_reports_the_choice(benchmark_data, capsys):
    """keep_best=1: the row is the kept member's run, every member is still
    reported, and the choice comes from the training data alone."""
    from sysid_msstcn.baselines import MLPNARXRegressor
    from sysid_msstcn.ensemble import EnsembleRegressor

    mlp = MLPNARXRegressor(hidden_layer_sizes=(8,), na=2, nb=2, max_iter=50)
    ens = EnsembleRegressor(mlp, n_members=2, random_state=0, keep_best=1)
    res = run_benchmark(
        "ced", models={"MLP": ens}, data_dir=benchmark_data, keep_predictions=True
    )
    fitted = res["models"]["MLP"]
    kept = fitted.selected_[0]
    assert kept == int(np.argmin(fitted.member_scores_))
    for row in res["results"]:
        assert row["ensemble"] == 1 and row["ensemble_of"] == 2
        assert row["selected_seeds"] == [kept]
        assert row["member_scores"] == list(fitted.member_scores_)
        assert row["rmse"] == row["member_rmse"][kept]
    assert res["config"]["MLP"]["ensemble"]["keep_best"] == 1
    script = _load("run_nonlinear.py")
    assert script._label(res["results"][0]) == "MLP (best 1 of 2)"
    with pytest.raises(SystemExit):
        script.main(["--datasets", "ced", "--keep-best", "1"])
    assert "--keep-best and --selection need --ensemble" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_greedy_ensemble_reports_its_path_and_the_mean_of_all_members(
    benchmark_data,
):
    """selection="greedy": the row names the rule, the order and path by
    seed, and all_members_rmse is the RMSE of the mean of every member's
    test run, whichever members were kept."""
    from sysid_msstcn.baselines import MLPNARXRegressor
    from sysid_msstcn.data.benchmarks import io_arrays
    from sysid_msstcn.ensemble import EnsembleRegressor
    from sysid_msstcn.metrics import rmse

    mlp = MLPNARXRegressor(hidden_layer_sizes=(8,), na=2, nb=2, max_iter=50)
    ens = EnsembleRegressor(mlp, n_members=3, random_state=5, selection="greedy")
    res = run_benchmark(
        "ced", models={"MLP": ens}, data_dir=benchmark_data, keep_predictions=True
    )
    fitted = res["models"]["MLP"]
    assert len(res["results"]) == len(res["test_records"]) == 2
    for row, record in zip(res["results"], res["test_records"], strict=True):
        assert row["selection"] == "greedy" and row["ensemble_of"] == 3
        assert row["selection_order"] == [
            fitted.seeds_[i] for i in fitted.selection_order_
        ]
        assert row["selection_path"] == list(fitted.selection_path_)
        assert row["ensemble"] == len(fitted.selected_)
        u, y = io_arrays(record)
        n = record.attrs["n_init"]
        runs = [m.predict(u, y_init=y[:n]) for m in fitted.estimators_]
        mean = np.mean(runs, axis=0).reshape(y.shape)
        scale = record.attrs.get("report_scale", 1.0)
        expected = scale * rmse(y, mean, n_init=n, multioutput="uniform_average")
        assert row["all_members_rmse"] == pytest.approx(expected, rel=1e-12)
    assert res["config"]["MLP"]["ensemble"]["selection"] == "greedy"


def test_the_commit_is_read_before_the_models_are_fitted(benchmark_data, monkeypatch):
    """A long run records the commit it started from, not the one checked
    out when it ends."""
    from sysid_msstcn import benchmarking
    from sysid_msstcn.baselines import ARXRegressor

    fitted = []

    class Recorded(ARXRegressor):
        def fit(self, X, y):
            fitted.append(True)
            return super().fit(X, y)

    monkeypatch.setattr(
        benchmarking, "_commit", lambda: "after fit" if fitted else "before fit"
    )
    res = run_benchmark("ced", models={"ARX": Recorded()}, data_dir=benchmark_data)
    assert fitted and res["commit"] == "before fit"


@pytest.mark.parametrize(
    "status, expected", [("", "abc1234"), (" M a.py\n", "abc1234-dirty")]
)
def test_the_commit_says_when_the_package_differs_from_it(
    monkeypatch, status, expected
):
    from types import SimpleNamespace

    from sysid_msstcn import _provenance

    outputs = iter(["abc1234\n", status])
    monkeypatch.setattr(
        _provenance.subprocess,
        "run",
        lambda *a, **k: SimpleNamespace(stdout=next(outputs)),
    )
    assert _provenance.git_commit() == expected


def test_validation_rmse_is_the_kept_epochs_free_run_error_on_the_tail():
    from sysid_msstcn.benchmarking import validation_rmse
    from sysid_msstcn.estimator import MSSTCNRegressor

    rng = np.random.default_rng(0)
    u = rng.standard_normal((500, 1))
    y = 3.0 + 2.0 * np.convolve(u[:, 0], [0.5, 0.3, 0.1], mode="full")[:500]
    est = MSSTCNRegressor(**TINY_SYSID).fit(u, y)
    expected = tail_free_run_rmse(est, u, y)
    assert validation_rmse(est) == pytest.approx(expected, rel=1e-5)


def test_published_and_targets_use_adapter_test_names():
    from sysid_msstcn.data import load_benchmark  # noqa: F401 - names documented

    assert set(TARGETS) <= set(PUBLISHED)
    for name, tests in TARGETS.items():
        assert set(tests) <= set(PUBLISHED[name])


def test_run_nonlinear_script_writes_json_and_table(benchmark_data, tmp_path):
    script = _load("run_nonlinear.py")
    script.main(
        [
            "--datasets",
            "ced",
            "--budget",
            "tiny",
            "--n-samples",
            "2",
            "--data-dir",
            str(benchmark_data),
            "--output-dir",
            str(tmp_path),
            "--device",
            "cpu",
        ]
    )
    first = (tmp_path / "nonlinear_ced.json").read_text()
    data = json.loads(first)
    assert data["benchmark"] == "ced" and data["budget_name"] == "tiny"
    assert len(data["plots"]) == 4
    assert all(Path(p).stat().st_size > 0 for p in data["plots"])
    assert {Path(p).parent for p in data["plots"]} == {tmp_path / "plots"}
    assert "MS-STCN" in (tmp_path / "nonlinear_table.md").read_text()
    # another seed goes beside the first run (tag, then seed), never over it
    script.main(
        ["--datasets", "ced", "--budget", "tiny", "--n-samples", "2"]
        + ["--data-dir", str(benchmark_data), "--output-dir", str(tmp_path)]
        + ["--device", "cpu", "--seed", "1", "--tag", "t", "--no-baselines"]
    )
    again = json.loads((tmp_path / "nonlinear_ced_t_seed1.json").read_text())
    assert again["seed"] == 1 and (tmp_path / "nonlinear_ced.json").read_text() == first
    assert sorted(Path(p).name for p in again["plots"]) == [
        f"ced_{test}_{kind}_t_seed1.png"
        for test in ("test_high_amplitude", "test_low_amplitude")
        for kind in ("error", "simulation")
    ]


@pytest.mark.slow
def test_ablation_quick(shared_data, tmp_path):
    script = _load("ablation.py")
    out = tmp_path / "ablation.json"
    script.main(
        ["--quick", "--data", str(shared_data), "--output", str(out), "--device", "cpu"]
    )
    data = json.loads(out.read_text())
    variants = [r["variant"] for r in data["speech"]["rows"]]
    assert variants == ["multiscale", "flat", "no_latents"]
    no_lat = data["speech"]["rows"][2]
    assert no_lat["test_kl_per_level"] == []
    assert no_lat["test_elbo_per_clip"] == pytest.approx(
        no_lat["test_log_lik_per_clip"]
    )
    assert len(data["speech"]["rows"][0]["test_kl_per_level"]) == 5
    assert [r["variant"] for r in data["sysid"]["rows"]] == variants
    rollout = data["rollout"]["rows"]
    assert [r["variant"] for r in rollout] == ["one_step", "mse_last_64"]
    assert rollout[0]["base_rmse"] == rollout[1]["base_rmse"]  # same start
    assert all(math.isfinite(v) for r in rollout for v in r["rmse"])
    assert rollout[0]["rollout_term"] == [None]
    assert rollout[1]["rollout_term"][0] > 0


class _ExactIncrements:
    """Predicts the increments of a known output exactly (a test double)."""

    def __init__(self, y):
        self.y = y

    def fit(self, X, y):
        self.seen_ = (X, y)
        return self

    def predict(self, X, y_init):
        d = np.diff(self.y, axis=0)
        assert len(X) == len(d) and np.array_equal(y_init, d[: len(y_init)])
        return d


def test_increments_wrapper_trains_on_differences_and_integrates_back():
    script = _load("ablation.py")
    rng = np.random.default_rng(0)
    u, y = rng.normal(size=(50, 1)), np.cumsum(rng.normal(size=(50, 2)), axis=0)
    inner = _ExactIncrements(y)
    model = script.Increments(inner).fit(u, y)
    assert np.array_equal(inner.seen_[0], u[1:])
    assert np.array_equal(inner.seen_[1], np.diff(y, axis=0))
    np.testing.assert_allclose(model.predict(u, y_init=y[:5]), y, atol=1e-12)
    assert model.seen_ is inner.seen_  # fitted attributes are the wrapped model's


@pytest.mark.slow
def test_rollout_study_in_the_increment_domain(shared_data, tmp_path):
    script = _load("ablation.py")
    out = tmp_path / "rollout.json"
    args = ["--quick", "--data", str(shared_data), "--output", str(out)]
    args += ["--device", "cpu", "--skip-speech", "--skip-sysid", "--skip-simulation"]
    script.main([*args, "--increments", "--rollout-variants", "mse_last_64_noise0"])
    study = json.loads(out.read_text())["rollout"]
    assert "partial" not in study  # the rows were saved as they came, then all
    assert [(r["domain"], r["variant"]) for r in study["rows"]] == [
        ("outputs", "mse_last_64_noise0"),
        ("increments", "mse_last_64_noise0"),
    ]
    assert all(math.isfinite(v) for r in study["rows"] for v in r["rmse"])
    refs = study["references"]
    assert [r["domain"] for r in refs] == ["outputs", "increments"]
    assert all(math.isfinite(v) for r in refs for v in r["ARX"])
    assert refs[0]["ARX"] != refs[1]["ARX"]


def _toy_test_record(u, y, **attrs):
    """A test record of a made-up benchmark, as the data adapters give it."""
    from sysid_msstcn.data import make_io_dataset

    return make_io_dataset(
        u, y, sampling_time=1.0, benchmark="toy", split="test", name="test", **attrs
    )


def test_a_diverged_simulation_is_recorded_not_raised():
    from sysid_msstcn.benchmarking import evaluate_records

    class Exploding:
        def predict(self, X, y_init=None):
            return np.full((len(X), 1), np.inf)

    rng = np.random.default_rng(0)
    ds = _toy_test_record(rng.normal(size=(50, 1)), rng.normal(size=(50, 1)), n_init=5)
    rows, preds = evaluate_records(Exploding(), [ds])
    assert rows[0]["diverged"] is True and rows[0]["rmse"] is None
    assert np.isnan(preds[0]).all()


def test_monte_carlo_mean_is_scored_beside_the_deterministic_run():
    from sysid_msstcn.benchmarking import evaluate_records

    rng = np.random.default_rng(1)
    y = rng.normal(size=(40, 1))
    offsets = np.array([0.5, -0.1, 0.2])  # three trajectories, mean offset 0.2

    class Known:
        def predict(self, X, y_init=None):
            return y + 1.0

        def simulate(self, X, y_init=None, n_samples=1, random_state=None):
            return y[None] + offsets[:n_samples, None, None]

    ds = _toy_test_record(rng.normal(size=(40, 1)), y, n_init=4, report_scale=1e3)
    (row,), _ = evaluate_records(Known(), [ds], n_samples=3)
    assert row["rmse"] == pytest.approx(1e3)
    assert row["rmse_mc_mean"] == pytest.approx(200.0)
    assert row["mc_samples"] == 3


def test_run_nonlinear_refuses_a_thread_count_below_one(capsys):
    script = _load("run_nonlinear.py")
    with pytest.raises(SystemExit) as exc:
        script.main(["--datasets", "ced", "--threads", "0"])
    assert exc.value.code == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err


def test_training_rmse_pools_the_records_after_their_warm_up():
    """Errors 1 and 2 on records of 100 and 300 samples, warm-up 10 (whose
    error is ignored): the pooled RMSE is sqrt((90 * 1 + 290 * 4) / 380)."""
    from sysid_msstcn.benchmarking import training_rmse

    class FromInput:  # simulates u: the record's error is u - y
        def predict(self, X, y_init=None):
            assert len(y_init) == 10
            return X[:, :1]

    rng = np.random.default_rng(2)
    records = []
    for n, err in ((100, 1.0), (300, -2.0)):
        y = rng.normal(size=(n, 1))
        u = y + err
        u[:10] += 50.0  # the warm-up does not count
        records.append(_toy_test_record(u, y))
    expected = 1e3 * math.sqrt((90 * 1.0 + 290 * 4.0) / 380)
    got = training_rmse(FromInput(), records, n_init=10, report_scale=1e3)
    assert got == pytest.approx(expected)

    class Exploding:
        def predict(self, X, y_init=None):
            return np.full((len(X), 1), np.nan)

    assert training_rmse(Exploding(), records, n_init=10, report_scale=1.0) is None


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_ensemble_subsets_scores_every_subset_mean(benchmark_data, tmp_path):
    """benchmarks/ensemble_subsets.py: the mean of all members is the
    ensemble's own prediction, the training-chosen subset has the lowest
    training RMSE, and the subset chosen on the test bounds every choice."""
    import joblib

    from sysid_msstcn._benchmark_eval import record_rmse, training_rmse
    from sysid_msstcn.baselines import MLPNARXRegressor
    from sysid_msstcn.data import load_benchmark
    from sysid_msstcn.data.benchmarks import io_arrays
    from sysid_msstcn.ensemble import EnsembleRegressor

    train, test = load_benchmark("ced", data_dir=benchmark_data)
    mlp = MLPNARXRegressor(hidden_layer_sizes=(8,), na=2, nb=2, max_iter=50)
    ens = EnsembleRegressor(mlp, n_members=3, random_state=0, keep_best=1)
    ens.fit(*map(list, zip(*[io_arrays(ds) for ds in train], strict=True)))
    path = tmp_path / "ens.joblib"
    joblib.dump(ens, path)
    out = tmp_path / "subsets.json"
    script = _load("ensemble_subsets.py")
    argv = [str(path), "--dataset", "ced", "--data-dir", str(benchmark_data)]
    assert script.main([*argv, "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n_subsets"] == 7 and res["seeds"] == [0, 1, 2]
    assert set(res["test_sets"]) == {ds.attrs["name"] for ds in test}
    n0 = test[0].attrs["n_init"]
    # the ensemble predicts with its selection (one member): its own figures
    train_rmse = training_rmse(ens, train, n_init=n0, report_scale=1.0)
    for ds in test:
        e = res["test_sets"][ds.attrs["name"]]
        chosen = e["chosen_without_test_data"]
        own = chosen["ensemble_selection"]
        assert own["seeds"] == [ens.seeds_[i] for i in ens.selected_]
        u, y = io_arrays(ds)
        expected = record_rmse(ds, ens.predict(u, y_init=y[:n0]))
        assert own["test_rmse"] == pytest.approx(expected, rel=1e-12)
        assert own["train_rmse"] == pytest.approx(train_rmse, rel=1e-12)
        best = chosen["best_subset_by_training"]
        assert best["train_rmse"] <= min(v["train_rmse"] for v in chosen.values())
        bound = e["bound_chosen_on_test_data"]
        assert bound["best_subset"]["test_rmse"] <= min(
            v["test_rmse"] for v in chosen.values()
        )
        assert bound["by_size"]["3"]["best"] == chosen["all_members"]["test_rmse"]


def test_restart_errors_simulates_every_window_from_its_warm_up(
    benchmark_data, tmp_path
):
    """benchmarks/restart_errors.py: each window's figure is the free run of
    that window from its own first n_init outputs, for the hybrid and for
    its nominal model alone."""
    import joblib

    from sysid_msstcn import LinearResidualRegressor
    from sysid_msstcn.baselines import ARXRegressor
    from sysid_msstcn.data import load_benchmark
    from sysid_msstcn.data.benchmarks import io_arrays
    from sysid_msstcn.metrics import rmse

    train, test = load_benchmark("ced", data_dir=benchmark_data)
    X, Y = map(list, zip(*[io_arrays(ds) for ds in train], strict=True))
    model = LinearResidualRegressor(ARXRegressor(na=1, nb=1), ARXRegressor()).fit(X, Y)
    path = tmp_path / "hybrid.joblib"
    joblib.dump(model, path)
    out = tmp_path / "restarts.json"
    script = _load("restart_errors.py")
    argv = [str(path), "--dataset", "ced", "--data-dir", str(benchmark_data)]
    argv += ["--horizon", "80", "--starts", "3", "--output", str(out)]
    assert script.main(argv) == 0
    res = json.loads(out.read_text())
    n0 = res["n_init"]
    assert n0 == test[0].attrs["n_init"] and res["horizon"] == 80
    splits = [(r["split"], r["record"]) for r in res["records"]]
    assert splits == [("train", 0), ("train", 1), ("test", 0), ("test", 1)]
    for rec in res["records"]:
        ds = (train if rec["split"] == "train" else test)[rec["record"]]
        u, y = io_arrays(ds)
        y = y.reshape(len(y), -1)
        assert rec["starts"][0] == 0 and rec["starts"][-1] == len(y) - 80
        for k, s in enumerate(rec["starts"]):
            uw, yw = u[s : s + 80], y[s : s + 80]
            pred = model.predict(uw, y_init=yw[:n0]).reshape(yw.shape)
            lin = model.linear_simulation(uw, yw[:n0]).reshape(yw.shape)
            got = rec["models"][0]["rmse"][k]
            assert got == pytest.approx(float(rmse(yw[n0:], pred[n0:])[0]))
            nominal = rec["nominal_rmse"][k]
            assert nominal == pytest.approx(float(rmse(yw[n0:], lin[n0:])[0]))
    with pytest.raises(ValueError, match="horizon=500 is longer"):
        script.window_starts(400, 500, 3)


def test_residual_analysis_script_tests_each_free_run(benchmark_data, tmp_path):
    """benchmarks/residual_analysis.py: the tests and the output-level fit of
    each record's free run, for a hybrid and for its nominal model alone."""
    import joblib

    from sysid_msstcn import LinearResidualRegressor
    from sysid_msstcn.baselines import ARXRegressor
    from sysid_msstcn.data import load_benchmark
    from sysid_msstcn.data.benchmarks import io_arrays
    from sysid_msstcn.residuals import residual_analysis

    train, test = load_benchmark("ced", data_dir=benchmark_data)
    X, Y = map(list, zip(*[io_arrays(ds) for ds in train], strict=True))
    model = LinearResidualRegressor(ARXRegressor(na=1, nb=1), ARXRegressor()).fit(X, Y)
    path = tmp_path / "hybrid.joblib"
    joblib.dump(model, path)
    out, png = tmp_path / "resid.json", tmp_path / "resid.png"
    script = _load("residual_analysis.py")
    argv = [str(path), "--dataset", "ced", "--data-dir", str(benchmark_data)]
    argv += ["--max-lag", "5", "--output", str(out), "--plot", str(png)]
    assert script.main([*argv, "--correlations"]) == 0
    assert png.stat().st_size > 0
    res = json.loads(out.read_text())
    n0 = res["n_init"]
    names = ["train_0", "train_1"] + [ds.attrs["name"] for ds in test]
    assert set(res["models"]) == {"model", "nominal"}
    assert script.main(argv) == 0  # without --correlations: the summaries only
    assert "model_correlations" not in json.loads(out.read_text())
    for name, ds in zip(names, list(train) + list(test), strict=True):
        u, y = io_arrays(ds)
        y = y.reshape(len(y), -1)
        for label, simulate in (
            ("model", lambda u, y0: model.predict(u, y_init=y0)),
            ("nominal", model.linear_simulation),
        ):
            pred = np.asarray(simulate(u, y[:n0])).reshape(y.shape)
            e, level = pred[n0:, 0] - y[n0:, 0], res["models"][label][name]
            slope, intercept = np.polyfit(y[n0:, 0], e, 1)
            assert level["output_level"]["slope"] == pytest.approx(slope)
            assert level["output_level"]["intercept"] == pytest.approx(intercept)
            assert level["rmse"] == pytest.approx(float(np.sqrt(np.mean(e**2))))
            if label == "model":
                direct = residual_analysis(y, pred, u=u, n_init=n0, max_lag=5)
                got = res["model_correlations"][name]
                np.testing.assert_allclose(
                    got["autocorrelation"], direct.autocorrelation
                )
                np.testing.assert_allclose(
                    got["cross_correlation"], direct.cross_correlation
                )


def test_emps_record_parameters_recovers_a_simulated_drive(benchmark_data, tmp_path):
    """benchmarks/emps_record_parameters.py: the inverse-dynamics fit recovers
    the parameters of a drive simulated with them, and the file's relative
    changes are those of its own per-record fits."""
    from scipy.signal import lfilter

    script = _load("emps_record_parameters.py")
    rng = np.random.default_rng(0)
    n, ts = 20000, 1e-3
    u = 0.3 * lfilter([1.0], [1.0, -0.995], rng.standard_normal(n))
    mass, fv, fc, c = 2.7, 6.0, 0.57, -0.09
    q, v = np.zeros(n), 0.0
    for t in range(1, n):  # explicit Euler at 1 kHz
        v += ts * (u[t - 1] - fv * v - fc * np.sign(v) - c) / mass
        q[t] = q[t - 1] + ts * v
    theta = script.fit_inverse_dynamics(u, q, ts, cutoff=20.0)["theta"]
    error = np.abs(theta / np.array([mass, fv, fc, c]) - 1.0)
    assert np.all(error < [0.01, 0.03, 0.08, 0.05]), error
    out = tmp_path / "emps_params.json"
    argv = ["--data-dir", str(benchmark_data), "--cutoffs", "20", "--output", str(out)]
    assert script.main(argv) == 0
    fit = json.loads(out.read_text())["fits"]["20 Hz"]
    assert len(fit["train"]["halves"]) == 2 and len(fit["test"]["thirds"]) == 3
    for k in script.NAMES:
        ratio = fit["test"]["theta"][k] / fit["train"]["theta"][k] - 1.0
        assert fit["relative_change_test_vs_train"][k] == pytest.approx(ratio)
