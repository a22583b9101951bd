"""Smoke tests of the benchmark scripts (simulation speed --quick, seed statistics)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "simulation_speed.py"


def test_simulation_speed_quick_writes_the_result_json(tmp_path):
    out = tmp_path / "simulation_speed.json"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--threads",
        "1",
        "--output",
        str(out),
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=120, capture_output=True)
    res = json.loads(out.read_text())
    assert {"benchmark", "git", "hardware", "memory_method", "runs", "summary"} <= set(
        res
    )
    assert {"cpu_model", "torch_version", "torch_threads"} <= set(res["hardware"])
    assert res["quick"] is True
    methods = {(r["method"], r["n_steps"]) for r in res["runs"]}
    assert {("streaming", 32), ("recompute", 32), ("streaming", 64)} <= methods
    for r in res["runs"]:
        assert r["wall_s"] > 0 and r["s_per_step"] > 0
        assert {"peak_rss_mib", "peak_rss_delta_mib", "extrapolated"} <= set(r)
    summ = res["summary"]["sysid_small"]
    assert summ["speedup"]["64"]["value"] > 0
    assert "streaming_time_exponent" in summ
    # streaming and full recompute simulate the same trajectory
    assert summ["agreement_max_abs_diff"] < 1e-4


def _result(
    seed: int, rmse: list[float], valid: float, max_time=None, train=None
) -> dict:
    rows = [
        {"model": "MS-STCN", "test_set": f"test_{i}", "rmse": r, "units": "V"}
        | {"validation_rmse": valid, "train_rmse": train}
        for i, r in enumerate(rmse)
    ]
    rows.append({"model": "ARX", "test_set": "test_0", "rmse": 9.0})
    return {
        "benchmark": "toy",
        "seed": seed,
        "hardware": {"cpu": "some CPU"},
        "config": {"MS-STCN": {"random_state": seed, "max_time": max_time}},
        "results": rows,
    }


def test_seed_statistics_groups_seed_files_and_reports_their_spread(tmp_path):
    files = {
        "nonlinear_toy_a.json": _result(0, [1.0, 10.0], valid=0.5, train=0.3),
        "nonlinear_toy_a_seed1.json": _result(1, [2.0, 20.0], valid=0.2, train=0.4),
        "nonlinear_toy_a_seed2.json": _result(
            2, [6.0, 30.0], valid=0.9, max_time=60, train=0.1
        ),
        "nonlinear_toy_b.json": _result(0, [5.0], valid=0.1),  # no seeds: no family
    }
    for name, doc in files.items():
        (tmp_path / name).write_text(json.dumps(doc))
    out = tmp_path / "seeds.json"
    script = ROOT / "benchmarks" / "seed_statistics.py"
    cmd = [sys.executable, str(script), "--results-dir", str(tmp_path)]
    subprocess.run([*cmd, "--output", str(out)], check=True, timeout=60)
    res = json.loads(out.read_text())
    assert list(res["families"]) == ["toy_a"]
    fam = res["families"]["toy_a"]
    assert fam["seeds"] == [0, 1, 2] and fam["config_differences"] == [
        "MS-STCN.max_time"
    ]
    first = fam["models"]["MS-STCN"]["test_0"]
    assert first["rmse"] == [1.0, 2.0, 6.0] and first["mean"] == 3.0
    assert first["median"] == 2.0 and abs(first["std"] - 7**0.5) < 1e-12
    # the lowest validation score is seed 1's, whatever its test RMSE
    assert first["chosen_by_validation"] == {"seed": 1, "rmse": 2.0}
    # and the training records' free run picks seed 2
    assert first["chosen_by_training"] == {"seed": 2, "rmse": 6.0}
    assert fam["models"]["MS-STCN"]["test_1"]["mean"] == 20.0
    assert "ARX" not in fam["models"]
    markdown = out.with_suffix(".md").read_text()
    assert "| `toy_a` | MS-STCN | test_0 | 3 |" in markdown
    assert "| seed 1: 2 | seed 2: 6 |" in markdown
    # two files with one seed are refused, naming the seeds
    (tmp_path / "nonlinear_toy_a_seed3.json").write_text(
        json.dumps(_result(1, [0, 0], 1))
    )
    bad = subprocess.run([*cmd, "--output", str(out)], capture_output=True, text=True)
    assert bad.returncode != 0 and "share a seed" in bad.stderr


def _seed_statistics(folder: Path) -> tuple[dict, str]:
    """Run seed_statistics.py on ``folder``: its JSON and its Markdown."""
    out = folder / "seeds.json"
    script = ROOT / "benchmarks" / "seed_statistics.py"
    cmd = [sys.executable, str(script), "--results-dir", str(folder)]
    subprocess.run([*cmd, "--output", str(out)], check=True, timeout=60)
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


def test_seed_statistics_sets_ensembles_beside_their_members(tmp_path):
    doc = _result(0, [1.0], valid=0.5)
    doc["results"][0].update(
        ensemble=3,
        member_seeds=[0, 1, 2],
        member_rmse=[1.5, 0.9, None],
        member_validation_rmse=[0.2, 0.3, 0.1],
        crps=0.4,
    )
    (tmp_path / "nonlinear_toy_ens3.json").write_text(json.dumps(doc))
    res, markdown = _seed_statistics(tmp_path)
    assert res["families"] == {}
    e = res["ensembles"]["toy_ens3"]["MS-STCN"]["test_0"]
    assert e["rmse"] == 1.0 and e["member_mean"] == 1.2
    assert (e["member_best"], e["member_worst"]) == (0.9, 1.5)
    assert e["members_beaten"] == 1 and e["members_diverged"] == 1
    # the lowest validation score is seed 0's; seed 2 diverged on the test
    assert e["chosen_by_validation"] == {"seed": 0, "rmse": 1.5}
    assert e["validation_rho"] is None  # two members scored on both
    assert (
        "| `toy_ens3` | MS-STCN | test_0 | 3 | 1 | 1.2 (0.9-1.5) | 1 of 3 | "
        "1.5 (seed 0) | – |"
    ) in markdown


def test_seed_statistics_ranks_ensemble_members_by_validation(tmp_path):
    doc = _result(0, [1.0], valid=0.5)
    doc["results"][0].update(
        ensemble=4,
        member_seeds=[3, 4, 5, 6],
        member_rmse=[4.0, 2.0, 3.0, 1.0],
        member_validation_rmse=[0.3, 0.4, 0.1, 0.2],
        member_train_rmse=[0.9, 0.5, 0.7, 0.1],
    )
    (tmp_path / "nonlinear_toy_ens4.json").write_text(json.dumps(doc))
    res, markdown = _seed_statistics(tmp_path)
    e = res["ensembles"]["toy_ens4"]["MS-STCN"]["test_0"]
    assert e["chosen_by_validation"] == {"seed": 5, "rmse": 3.0}
    # validation ranks 3, 4, 1, 2 against test ranks 4, 2, 3, 1: rho = 0
    assert e["validation_rho"] == pytest.approx(0.0, abs=1e-12)
    # the training free run ranks them as the test does
    assert e["chosen_by_training"] == {"seed": 6, "rmse": 1.0}
    assert e["training_rho"] == pytest.approx(1.0)
    assert "| 3 (seed 5) | 0.00 | 1 (seed 6) | 1.00 |" in markdown
    # members that all score alike have no rank correlation
    doc["results"][0]["member_validation_rmse"] = [0.5] * 4
    (tmp_path / "nonlinear_toy_ens4.json").write_text(json.dumps(doc))
    e = _seed_statistics(tmp_path)[0]["ensembles"]["toy_ens4"]["MS-STCN"]["test_0"]
    assert e["validation_rho"] is None and e["chosen_by_validation"]["seed"] == 3


def test_seed_statistics_counts_every_member_of_a_kept_best_ensemble(tmp_path):
    doc = _result(0, [1.0], valid=0.5)
    doc["results"][0].update(
        ensemble=2,
        ensemble_of=4,
        selected_seeds=[4, 6],
        member_seeds=[3, 4, 5, 6],
        member_rmse=[4.0, 2.0, 3.0, 1.0],
        member_train_rmse=[0.9, 0.5, 0.7, 0.1],
    )
    (tmp_path / "nonlinear_toy_best2.json").write_text(json.dumps(doc))
    res, markdown = _seed_statistics(tmp_path)
    e = res["ensembles"]["toy_best2"]["MS-STCN"]["test_0"]
    assert (e["n_members"], e["kept"], e["members_beaten"]) == (4, 2, 3)
    assert "| test_0 | 2 best of 4 | 1 | 2.5 (1-4) | 3 of 4 |" in markdown


def test_ensemble_throughput_quick(benchmark_data, tmp_path):
    out = tmp_path / "ens.json"
    script = ROOT / "benchmarks" / "ensemble_throughput.py"
    cmd = [sys.executable, str(script), "--quick", "--members", "2"]
    cmd += ["--n-jobs", "1", "2", "--data-dir", str(benchmark_data)]
    subprocess.run([*cmd, "--output", str(out)], check=True, timeout=300)
    res = json.loads(out.read_text())
    assert [r["n_jobs"] for r in res["runs"]] == [1, 2]
    assert res["runs"][0]["speedup"] == 1.0 and res["runs"][0]["wall_s"] > 0
    # the members fitted in worker processes are the serial fit's members
    assert res["runs"][1]["members_max_abs_diff"] < 1e-3
