"""Training throughput and peak memory of the paper's models on one device.

For the Blizzard FW=2 and IAM-OnDB presets at the paper's batch size, times
the training step that ``sysid_msstcn.distributed`` runs (forward, linear
free-bits loss, backward, gradient norm, fused Adam with on-device skipping,
no host synchronisation) in four variants: float32 or bf16 autocast, each
eager or compiled with ``torch.compile``.

Shapes (msstcn_reference.md §7, §9.1, §11):

* Blizzard FW=2: 128 clips of 8000 samples framed by 2 -> y of (128, 2, 4000);
* IAM-OnDB: batch 128 (the authors' code default; the paper gives none) of
  1024-step training chunks -> y of (128, 3, 1024) (pen bit, dx, dy).

The data are random (normal values; the pen channel is 0/1), generated once
and kept on the device: the data loader is not part of the measurement.

Usage::

    python benchmarks/gpu_throughput.py --device cuda --output results.json
    python benchmarks/gpu_throughput.py --device cpu --quick --output q.json

``--quick`` shrinks batch and length so that it runs in seconds on a CPU.
On a CPU, bf16 rows are skipped (autocast is CUDA-only in ``TrainConfig``)
and compiled rows too unless ``--compile-on-cpu`` is given. Rows start only
while the elapsed time is under ``--time-budget`` seconds (the remaining
rows are reported as skipped), so that a full run ends in about 8 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

try:
    import sysid_msstcn  # noqa: F401
except ImportError:  # a plain checkout: use the repository's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sysid_msstcn.config import NetworkConfig, TrainConfig  # noqa: E402
from sysid_msstcn.distributed import (  # noqa: E402
    DistributedInfo,
    TrainStep,
    float32_heads,
)
from sysid_msstcn.model import MSSTCN  # noqa: E402
from sysid_msstcn.presets import preset_network_kwargs  # noqa: E402

WORKLOADS = {
    "blizzard_fw2": {
        "batch": 128,
        "length": 4000,
        "quick": (2, 400),
        "note": "128 clips of 8000 samples, frame width 2",
    },
    "iam_ondb": {
        "batch": 128,
        "length": 1024,
        "quick": (2, 64),
        "note": "batch 128 (authors' code default), 1024-step training chunks",
    },
}
VARIANTS = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--output", required=True, help="results JSON file")
    p.add_argument("--quick", action="store_true", help="tiny batch and length")
    p.add_argument("--presets", nargs="+", default=list(WORKLOADS))
    p.add_argument("--steps", type=int, help="timed steps (default 20, quick 3)")
    p.add_argument("--warmup", type=int, help="untimed steps (default 3, quick 1)")
    p.add_argument("--time-budget", type=float, default=420.0)
    p.add_argument("--compile-on-cpu", action="store_true")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=["fp32", "bf16", "fp32-compile", "bf16-compile"],
        help="subset of the four variants (default: all)",
    )
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batch(config: NetworkConfig, batch: int, length: int, device):
    """Random (indices, y, u, lengths) resident on the device."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(batch, config.n_outputs, length, generator=g)
    if config.likelihood == "gmm_bernoulli":
        y[:, 0] = (y[:, 0] > 0).float()
    u = None
    if config.n_inputs:
        u = torch.randn(batch, config.n_inputs, length, generator=g).to(device)
    return torch.arange(batch), y.to(device), u, None


def measure(config, batch, length, precision, compiled, device, steps, warmup):
    """Time one variant; returns a result row."""
    torch.manual_seed(0)
    model = MSSTCN(config).to(device)
    train = TrainConfig(mixed_precision=precision == "bf16")
    info = DistributedInfo(device=device)
    step = TrainStep(model, train, info, compile=compiled, seed=0)
    data = [make_batch(config, batch, length, device)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with float32_heads(model):
        _sync(device)
        t0 = time.perf_counter()
        step(data)
        _sync(device)
        first = time.perf_counter() - t0
        for _ in range(warmup - 1):
            step(data)
        step.pop_stats()
        _sync(device)
        warmup_peak = _peak_mib(device)
        if device.type == "cuda":  # steady state: without autotuning workspaces
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(data)
        _sync(device)
        elapsed = time.perf_counter() - t0
    stats = step.pop_stats()
    rate = steps / elapsed
    row = {
        "status": "ok",
        "steps_per_s": rate,
        "samples_per_s": rate * batch,
        "timesteps_per_s": rate * batch * length,
        "step_ms": 1000.0 / rate,
        "first_step_s": first,
        "compile_s": max(first - 1.0 / rate, 0.0) if compiled else None,
        "loss": stats["loss"],
        "loss_finite": bool(torch.isfinite(torch.tensor(stats["loss"]))),
        "skipped_steps": stats["skipped"],
    }
    if device.type == "cuda":
        row["peak_memory_mib"] = _peak_mib(device)
        row["warmup_peak_memory_mib"] = warmup_peak
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        row["peak_memory_mib"] = None
        row["process_peak_rss_mib"] = peak_kib / 1024
    return row


def _peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def skip_reason(device, precision, compiled, args, started) -> str | None:
    if compiled and args.no_compile:
        return "--no-compile"
    if device.type != "cuda" and precision == "bf16":
        return "bf16 autocast is CUDA-only (TrainConfig.mixed_precision)"
    if device.type != "cuda" and compiled and not args.compile_on_cpu:
        return "compile on CPU is off (use --compile-on-cpu)"
    if time.perf_counter() - started > args.time_budget:
        return f"time budget of {args.time_budget:g} s used up"
    return None


def environment(device: torch.device) -> dict:
    env = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device_type": device.type,
        "device": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env.update(
            device=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    return env


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes
    steps = args.steps or (3 if args.quick else 20)
    warmup = args.warmup or (1 if args.quick else 3)
    started = time.perf_counter()
    results = []
    # eager rows of every preset first, so that a tight budget drops compiles
    names = {(p, c): p + ("-compile" if c else "") for p, c in VARIANTS}
    variants = [v for v in VARIANTS if not args.variants or names[v] in args.variants]
    plan = [(v, name) for v in variants for name in args.presets]
    for (precision, compiled), name in plan:
        work = WORKLOADS[name]
        batch, length = work["quick"] if args.quick else (work["batch"], work["length"])
        config = NetworkConfig(**preset_network_kwargs(name))
        row = {
            "preset": name,
            "batch": batch,
            "length": length,
            "input_shape": [batch, config.n_outputs, length],
            "precision": precision,
            "compile": compiled,
            "parameters": sum(p.numel() for p in MSSTCN(config).parameters()),
            "workload": work["note"],
        }
        reason = skip_reason(device, precision, compiled, args, started)
        if reason is not None:
            row.update(status="skipped", reason=reason)
        else:
            try:
                row.update(
                    measure(
                        config,
                        batch,
                        length,
                        precision,
                        compiled,
                        device,
                        steps,
                        warmup,
                    )
                )
            except torch.OutOfMemoryError as exc:
                row.update(status="oom", reason=str(exc).splitlines()[0])
            except Exception as exc:  # noqa: BLE001 - report and go on
                row.update(status="error", reason=f"{type(exc).__name__}: {exc}"[:500])
        results.append(row)
        print(json.dumps(row), flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if compiled:
            torch._dynamo.reset()
    out = {
        "benchmark": "gpu_throughput",
        "measures": "training step of sysid_msstcn.distributed.TrainStep: forward, "
        "linear free-bits loss, backward, grad norm, fused Adam (one optimiser "
        "step per step); steps/s over the timed steps after warm-up; "
        "peak_memory_mib = torch.cuda.max_memory_allocated over the timed steps; "
        "warmup_peak_memory_mib also counts the first steps (cuDNN autotuning "
        "workspaces with cudnn.benchmark=True, compilation)",
        "data": "random normal data of the right shapes (IAM pen channel 0/1), "
        "resident on the device; no data loading",
        "quick": args.quick,
        "timed_steps": steps,
        "warmup_steps": warmup,
        "wall_s": time.perf_counter() - started,
        **environment(device),
        "results": results,
    }
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
