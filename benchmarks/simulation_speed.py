"""Free-run simulation speed: cached streaming against full recompute.

Streaming is :func:`sysid_msstcn.streaming.simulate` (every layer keeps the
past it needs and every level updates at its own rate). The baseline
recomputes the whole forward pass over the growing prefix at every step (in
``latent="prior_mean"`` mode) and feeds back the last step's predictive mean,
which is what the authors' sampler does (cost quadratic in T).

Every (preset, method, T) case runs in a fresh worker process, so that its
peak memory is its own: ``peak_rss_mib`` is the worker's ``ru_maxrss`` (the
resident-set high-water mark, Python and torch included) and
``peak_rss_delta_mib`` its growth during the timed simulation.

Usage::

    python benchmarks/simulation_speed.py                 # full run, minutes
    python benchmarks/simulation_speed.py --quick --output /tmp/s.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "simulation_speed.json"
FULL_LENGTHS = (1_000, 10_000, 100_000)
QUICK_LENGTHS = (32, 64)
FULL_PRESETS = ("sysid_small", "sysid_default")
QUICK_PRESETS = ("sysid_small",)


def _maxrss_mib() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build(preset: str, device: str):
    import torch

    from sysid_msstcn.config import NetworkConfig
    from sysid_msstcn.model import MSSTCN
    from sysid_msstcn.presets import preset_network_kwargs

    kw = preset_network_kwargs(preset)
    kw.update(n_inputs=1, n_outputs=1)
    torch.manual_seed(0)
    model = MSSTCN(NetworkConfig(**kw)).to(device=device, dtype=torch.float32)
    return model.eval()


def full_recompute(model, n_steps: int, u):
    """Simulate by re-running the full forward pass over the prefix each step.

    Parameters
    ----------
    model : MSSTCN
    n_steps : int
    u : torch.Tensor of shape (B, C_u, n_steps)

    Returns
    -------
    y, params : torch.Tensor
        Simulated outputs (B, C_y, T) and predictive parameters (B, P, T).
    """
    import torch

    cfg, lik = model.config, model.likelihood
    B = u.shape[0]
    y = torch.zeros(B, cfg.n_outputs, n_steps, device=u.device, dtype=u.dtype)
    params = torch.zeros(B, lik.n_params, n_steps, device=u.device, dtype=u.dtype)
    with torch.no_grad():
        for t in range(n_steps):
            # y_t is still a placeholder: the params of step t do not use it
            out = model(y[..., : t + 1], u[..., : t + 1], latent="prior_mean")
            p = out.params[..., t : t + 1]
            params[..., t : t + 1] = p
            y[..., t : t + 1] = lik.mean(p)
    return y, params


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run_case(preset: str, method: str, n_steps: int, device: str, threads: int):
    """Time one simulation in this process; return a result dictionary."""
    import torch

    from sysid_msstcn.streaming import simulate

    torch.set_num_threads(threads)
    model = _build(preset, device)
    g = torch.Generator().manual_seed(1)
    u = torch.randn(1, 1, n_steps, generator=g).to(device)
    sim = (
        (lambda T: simulate(model, T, u[..., :T], latent="prior_mean", output="mean"))
        if method == "streaming"
        else (lambda T: full_recompute(model, T, u[..., :T]))
    )
    sim(min(n_steps, 32))  # warm-up: allocator, kernels, lazy init
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss0 = _maxrss_mib()
    # short streaming runs are repeated (median); recompute runs are long
    repeats = 3 if method == "streaming" and n_steps <= 10_000 else 1
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        y, _ = sim(n_steps)
        _sync(device)
        walls.append(time.perf_counter() - t0)
    wall = statistics.median(walls)
    out = {
        "preset": preset,
        "method": method,
        "n_steps": n_steps,
        "wall_s": wall,
        "wall_s_repeats": walls,
        "s_per_step": wall / n_steps,
        "steps_per_s": n_steps / wall,
        "peak_rss_mib": _maxrss_mib(),
        "peak_rss_delta_mib": _maxrss_mib() - rss0,
        "extrapolated": False,
        "y_checksum": float(y.double().abs().sum()),
        "y_head": [float(v) for v in y[0, 0, :5].cpu()],
    }
    if device.startswith("cuda"):
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _agreement(preset: str, n_steps: int, device: str, threads: int) -> float:
    """Max |y_streaming - y_recompute| on a short run (both methods agree)."""
    import torch

    from sysid_msstcn.streaming import simulate

    torch.set_num_threads(threads)
    model = _build(preset, device)
    u = torch.randn(1, 1, n_steps, generator=torch.Generator().manual_seed(2))
    u = u.to(device)
    ys, _ = simulate(model, n_steps, u, latent="prior_mean", output="mean")
    yr, _ = full_recompute(model, n_steps, u)
    return float((ys - yr).abs().max())


def _worker(args) -> dict:
    if args.worker == "agreement":
        return {
            "max_abs_diff": _agreement(
                args.preset, args.n_steps, args.device, args.threads
            )
        }
    return run_case(args.preset, args.worker, args.n_steps, args.device, args.threads)


def _spawn(args, method: str, preset: str, n_steps: int) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        method,
        "--preset",
        preset,
        "--n-steps",
        str(n_steps),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"worker {cmd} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _in_process(args, method: str, preset: str, n_steps: int) -> dict:
    ns = argparse.Namespace(**vars(args))
    ns.worker, ns.preset, ns.n_steps = method, preset, n_steps
    return _worker(ns)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> dict:
    def git(*a):
        r = subprocess.run(
            ["git", *a], cwd=ROOT, capture_output=True, text=True, check=False
        )
        return r.stdout.strip() if r.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status)}


def _hardware(args) -> dict:
    import torch

    info = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": args.device,
        "loadavg_start": list(os.getloadavg()),
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _loglog_slope(xs, ys) -> float:
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    num = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
    den = sum((a - mx) ** 2 for a in lx)
    return num / den


def _extrapolate_recompute(runner, args, preset, n_steps, n_measured) -> dict:
    """Time the first n_measured steps of recompute and extrapolate to n_steps.

    The cost of step t is a + b * t (a forward pass over t steps), so the
    total is fitted from two prefix lengths and integrated.
    """
    half = runner(args, "recompute", preset, n_measured // 2)
    full = runner(args, "recompute", preset, n_measured)
    n1, t1 = half["n_steps"], half["wall_s"]
    n2, t2 = full["n_steps"], full["wall_s"]
    # t(n) = a n + b n^2 / 2  ->  solve from (n1, t1), (n2, t2)
    b = 2 * (t2 / n2 - t1 / n1) / (n2 - n1)
    a = t2 / n2 - b * n2 / 2
    wall = a * n_steps + b * n_steps**2 / 2
    return {
        **full,
        "n_steps": n_steps,
        "wall_s": wall,
        "s_per_step": wall / n_steps,
        "steps_per_s": n_steps / wall,
        "extrapolated": True,
        "extrapolated_from_steps": [n1, n2],
        "peak_rss_mib": None,
        "peak_rss_delta_mib": None,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and write the JSON result; return it."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke-test run")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--recompute-max-steps",
        type=int,
        default=10_000,
        help="longest record simulated by full recompute (longer: extrapolated)",
    )
    p.add_argument(
        "--recompute-measure-steps",
        type=int,
        default=2_000,
        help="prefix length timed when recompute is extrapolated",
    )
    p.add_argument(
        "--presets",
        nargs="+",
        default=None,
        help="presets (default: sysid_small and sysid_default; --quick: sysid_small)",
    )
    p.add_argument(
        "--lengths",
        nargs="+",
        type=int,
        default=None,
        help="record lengths T (default: 1000 10000 100000; --quick: 32 64)",
    )
    p.add_argument(
        "--extrapolate-max-steps",
        type=int,
        default=100_000,
        help="longest record whose recompute time is extrapolated (labelled)",
    )
    p.add_argument(
        "--git-commit", default=None, help="commit to record when not in a checkout"
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--preset", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n-steps", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(_worker(args)))
        return {}

    lengths = args.lengths or (QUICK_LENGTHS if args.quick else FULL_LENGTHS)
    presets = args.presets or (QUICK_PRESETS if args.quick else FULL_PRESETS)
    # --quick runs in this process (fast); the full run isolates every case
    runner = _in_process if args.quick else _spawn
    result = {
        "benchmark": "simulation_speed",
        "description": "free-run simulation (latent=prior_mean, output=mean, "
        "batch 1, float32, n_inputs=1, n_outputs=1): cached streaming vs full "
        "recompute of the forward pass over the prefix at every step",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "git": _git_commit()
        if args.git_commit is None
        else {"commit": args.git_commit, "dirty": None},
        "hardware": _hardware(args),
        "memory_method": "resource.getrusage(RUSAGE_SELF).ru_maxrss of a fresh "
        "worker process per case (peak_rss_mib, Python+torch included) and its "
        "growth during the timed run (peak_rss_delta_mib)"
        if not args.quick
        else "ru_maxrss in-process (--quick: not isolated, indicative only)",
        "runs": [],
        "summary": {},
    }
    for preset in presets:
        rows = {}
        for n in lengths:
            r = runner(args, "streaming", preset, n)
            print(f"{preset} streaming T={n}: {r['wall_s']:.2f} s", flush=True)
            result["runs"].append(r)
            rows[("streaming", n)] = r
            if n <= args.recompute_max_steps:
                r = runner(args, "recompute", preset, n)
            elif n <= args.extrapolate_max_steps:
                m = min(args.recompute_measure_steps, n)
                r = _extrapolate_recompute(runner, args, preset, n, m)
            else:
                continue
            tag = " (extrapolated)" if r["extrapolated"] else ""
            print(f"{preset} recompute T={n}: {r['wall_s']:.2f} s{tag}", flush=True)
            result["runs"].append(r)
            rows[("recompute", n)] = r
        stream_ns = [n for n in lengths if ("streaming", n) in rows]
        summ = {
            "streaming_time_exponent": _loglog_slope(
                stream_ns, [rows[("streaming", n)]["wall_s"] for n in stream_ns]
            ),
            "speedup": {},
            "agreement_max_abs_diff": runner(
                args, "agreement", preset, min(lengths[0], 200)
            )["max_abs_diff"],
        }
        rec_ns = [n for n in lengths if ("recompute", n) in rows]
        if len(rec_ns) >= 2:
            summ["recompute_time_exponent"] = _loglog_slope(
                rec_ns, [rows[("recompute", n)]["wall_s"] for n in rec_ns]
            )
        for n in rec_ns:
            summ["speedup"][str(n)] = {
                "value": rows[("recompute", n)]["wall_s"]
                / rows[("streaming", n)]["wall_s"],
                "recompute_extrapolated": rows[("recompute", n)]["extrapolated"],
            }
        result["summary"][preset] = summ
    result["hardware"]["loadavg_end"] = list(os.getloadavg())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return result


def markdown_table(result: dict) -> str:
    """The result as a Markdown table (rendered in the documentation).

    Parameters
    ----------
    result : dict
        A result of :func:`main` or :func:`merge`.

    Returns
    -------
    str
    """
    hw = result.get("hardware", {})
    lines = [
        "# Free-run simulation speed: cached streaming vs full recompute",
        "",
        f"{result.get('description', '')}. Hardware: {hw.get('cpu_model', '?')}, "
        f"{hw.get('torch_threads', '?')} torch threads, torch "
        f"{hw.get('torch_version', '?')}; date {result.get('date', '?')}; "
        f"commit `{result.get('git', {}).get('commit', '?')}`. "
        "Recompute times marked * are extrapolated from a shorter prefix "
        "with the fitted quadratic law.",
        "",
        "| preset | T | streaming (s) | per step (ms) | recompute (s) | speed-up "
        "| streaming peak RSS growth (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    runs = {(r["preset"], r["method"], r["n_steps"]): r for r in result["runs"]}
    for preset, summ in result["summary"].items():
        ns = sorted(n for p, m, n in runs if p == preset and m == "streaming")
        for n in ns:
            st = runs[(preset, "streaming", n)]
            rc = runs.get((preset, "recompute", n))
            sp = summ["speedup"].get(str(n))
            rc_txt = "–" if rc is None else f"{rc['wall_s']:.4g}"
            if rc is not None and rc["extrapolated"]:
                rc_txt += "*"
            sp_txt = "–" if sp is None else f"{sp['value']:.0f}x"
            lines.append(
                f"| `{preset}` | {n:,} | {st['wall_s']:.3g} | "
                f"{1e3 * st['s_per_step']:.3f} | {rc_txt} | {sp_txt} | "
                f"{st.get('peak_rss_delta_mib', 0):.0f} |"
            )
    lines.append("")
    for preset, summ in result["summary"].items():
        exp = summ["streaming_time_exponent"]
        rexp = summ.get("recompute_time_exponent")
        lines.append(
            f"- `{preset}`: streaming time grows as T^{exp:.2f}"
            + ("" if rexp is None else f" (recompute: T^{rexp:.2f})")
            + f"; streaming equals the parallel forward pass to "
            f"{summ['agreement_max_abs_diff']:.1e} (float32)."
        )
    return "\n".join(lines) + "\n"


def merge(paths: list[Path]) -> dict:
    """Merge the results of several invocations (e.g. one per preset).

    Parameters
    ----------
    paths : list of Path

    Returns
    -------
    dict
        The first file's metadata with every file's runs and summaries, and
        each file's hardware record under ``hardware_per_file``.
    """
    docs = [json.loads(Path(p).read_text()) for p in paths]
    out = dict(docs[0])
    out["runs"] = [r for d in docs for r in d["runs"]]
    out["summary"] = {k: v for d in docs for k, v in d["summary"].items()}
    out["hardware_per_file"] = {
        Path(p).name: d["hardware"] for p, d in zip(paths, docs, strict=True)
    }
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "merge":
        # python benchmarks/simulation_speed.py merge OUT.json A.json B.json
        merged = merge([Path(p) for p in sys.argv[3:]])
        Path(sys.argv[2]).write_text(json.dumps(merged, indent=2) + "\n")
        Path(sys.argv[2]).with_suffix(".md").write_text(markdown_table(merged))
    else:
        main()
