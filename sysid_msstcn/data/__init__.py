"""Data adapters: nonlinear benchmarks, speech and handwriting (no torch)."""

from __future__ import annotations

from sysid_msstcn.data.benchmarks import (
    BENCHMARK_DIR_ENV_VAR,
    BENCHMARKS,
    benchmark_dir,
    fetch_bouc_wen,
    fetch_cascaded_tanks,
    fetch_ced,
    fetch_emps,
    fetch_f16,
    fetch_silverbox,
    fetch_wiener_hammerstein,
    io_arrays,
    load_benchmark,
    make_io_dataset,
    validate_io_dataset,
)

__all__ = [
    "BENCHMARKS",
    "BENCHMARK_DIR_ENV_VAR",
    "benchmark_dir",
    "fetch_bouc_wen",
    "fetch_cascaded_tanks",
    "fetch_ced",
    "fetch_emps",
    "fetch_f16",
    "fetch_silverbox",
    "fetch_wiener_hammerstein",
    "io_arrays",
    "load_benchmark",
    "make_io_dataset",
    "validate_io_dataset",
]
