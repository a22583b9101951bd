"""Smoke test of the simulation-speed benchmark script (--quick)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
