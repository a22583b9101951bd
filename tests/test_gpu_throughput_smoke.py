"""The GPU throughput benchmark runs at tiny size on the CPU (--quick)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_quick_cpu_run_writes_results(bench, tmp_path):
    out = tmp_path / "res" / "quick.json"
    argv = ["--device", "cpu", "--quick", "--steps", "2", "--output", str(out)]
    bench.main(argv)
    res = json.loads(out.read_text())
    assert res["quick"] and res["device_type"] == "cpu" and res["torch"]
    assert "random" in res["data"]
    rows = res["results"]
    assert {(r["preset"], r["precision"], r["compile"]) for r in rows} == {
        (p, prec, c)
        for p in ("blizzard_fw2", "iam_ondb")
        for prec in ("fp32", "bf16")
        for c in (False, True)
    }
    done = [r for r in rows if r["status"] == "ok"]
    assert {r["preset"] for r in done} == {"blizzard_fw2", "iam_ondb"}
    for r in done:
        assert r["steps_per_s"] > 0 and r["loss_finite"] and r["skipped_steps"] == 0
        assert r["samples_per_s"] == pytest.approx(r["steps_per_s"] * r["batch"])
        assert r["input_shape"][0] == 2
    for r in rows:
        assert r["status"] == "ok" or r["reason"]


def test_paper_shapes(bench):
    """Full-size workloads: Blizzard (128, 2, 4000) and IAM-OnDB (128, 3, 1024)."""
    assert bench.WORKLOADS["blizzard_fw2"]["batch"] == 128
    assert bench.WORKLOADS["blizzard_fw2"]["length"] * 2 == 8000
    assert bench.WORKLOADS["iam_ondb"]["length"] == 1024
