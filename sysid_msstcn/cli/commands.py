"""The subcommands: one function per ``sysid-msstcn`` command."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from .. import __version__
from .._utils import jsonable
from ._common import _SPEECH_PRESETS, UsageError, _say
from ._compare import (
    _by_label,
    _compare,
    _parse_models,
    _plot_records,
    evaluate_io,
    residual_tests,
)
from ._data import Data, _fit_args, load_data
from ._params import _estimator_params, _make_estimator
from ._report import _ELBO_COLUMNS, _IO_COLUMNS, _table, write_rows


def demo_sizes(budget: float) -> dict[str, int]:
    """Data and training sizes of the demo for a ``--budget`` factor."""
    if not budget > 0:
        raise UsageError(f"--budget must be positive, got {budget}")
    return {
        "n_train": max(400, round(3000 * min(budget, 10.0))),
        "n_test": max(300, round(1500 * min(budget, 4.0))),
        "max_iter": max(1, round(40 * budget)),
        "steps_per_epoch": max(2, round(25 * min(budget, 1.0))),
        "mc_samples": max(10, round(100 * min(budget, 2.0))),
    }


def cmd_demo(args: argparse.Namespace) -> int:
    """Offline demo on a simulated Wiener-Hammerstein system."""
    from ..data import make_wiener_hammerstein

    t_start, cpu_start = time.perf_counter(), time.process_time()
    sizes = demo_sizes(args.budget)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    train, test = make_wiener_hammerstein(
        sizes["n_train"], n_test=sizes["n_test"], random_state=args.seed
    )
    data = Data("io", "synthetic_wiener_hammerstein", train, test)
    _say(
        f"demo: simulated Wiener-Hammerstein system, {sizes['n_train']} training "
        f"and {sizes['n_test']} test samples (budget {args.budget:g})",
        args.quiet,
    )
    params = {
        "max_iter": sizes["max_iter"],
        "steps_per_epoch": sizes["steps_per_epoch"],
        "learning_rate": 3e-3,
        "n_iter_no_change": 10,
    }
    params.update(_estimator_params(args, "sysid_small"))
    args.mc_samples = sizes["mc_samples"]
    models = ["arx", "narx", "mlp", "msstcn"]
    rows, fitted, preds = _compare(data, models, params, args, budget=args.budget)
    est = fitted["msstcn"]
    est.save(out / "msstcn.safetensors")
    names = _plot_records(test, _by_label(preds, rows), out, est.history_)
    total, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    meta = {
        "command": "demo",
        "budget": args.budget,
        "seed": args.seed,
        "sizes": sizes,
        "estimator": est.get_params(deep=False),
        "epochs": est.n_iter_,
        "device": str(est.device_),
        "total_seconds": total,
        "total_cpu_seconds": cpu,
        "torch_threads": _torch_threads(),
        "load_average": _load_average(),
        "version": __version__,
    }
    write_rows(rows, out / "results.json", meta)
    write_rows(rows, out / "results.csv")
    print(_table(rows, _IO_COLUMNS))
    load = meta["load_average"]
    print(
        f"\nMS-STCN: {est.n_iter_} epochs on {est.device_} "
        f"({_plural(meta['torch_threads'], 'torch thread')}). Total demo time "
        f"{total:.0f} s "
        f"wall, {cpu:.0f} s CPU"
        + (f" (load average {load:.1f})" if load is not None else "")
    )
    print(
        f"wrote {out}/: {', '.join(names)}, results.json, results.csv, "
        "msstcn.safetensors"
    )
    return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _load_average() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _sidecar_path(model: str | Path) -> Path:
    return Path(model).with_suffix(".json")


def cmd_fit(args: argparse.Namespace) -> int:
    """Train MS-STCN on DATA and save it (rank 0 only under torchrun)."""
    import torch.distributed as dist

    def joined() -> bool:
        return dist.is_available() and dist.is_initialized()

    had_group = joined()
    try:
        return _fit_and_save(args)
    finally:
        if joined() and not had_group:
            # the estimator joined the group that torchrun described: leave it
            dist.destroy_process_group()


def _fit_and_save(args: argparse.Namespace) -> int:
    from ..distributed import is_main_process

    data = load_data(args.data, args)
    preset = {"handwriting": "iam_ondb"}.get(data.kind)
    if data.kind == "speech":
        preset = _SPEECH_PRESETS.get(args.frame_width)
    est = _make_estimator(_estimator_params(args, preset))
    if args.ensemble:
        est = _ensemble(est, data, args)
    elif args.n_jobs is not None:
        raise UsageError("--n-jobs sets the processes of --ensemble; add --ensemble K")
    elif args.keep_best is not None or args.selection is not None:
        raise UsageError(
            "--keep-best and --selection select members of --ensemble; add --ensemble K"
        )
    main = is_main_process()
    what = f"an ensemble of {args.ensemble} MS-STCN" if args.ensemble else "MS-STCN"
    _say(
        f"fitting {what} on {data.name} ({len(data.train)} record(s))",
        args.quiet or not main,
    )
    t0 = time.perf_counter()
    est.fit(*_fit_args(data))
    seconds = time.perf_counter() - t0
    if not main:  # every process holds the same model; rank 0 writes it
        return 0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    est.save(out)
    members = est.estimators_ if args.ensemble else [est]
    side = {
        "data": args.data,
        "kind": data.kind,
        "fit_seconds": seconds,
        "epochs": [m.n_iter_ for m in members] if args.ensemble else est.n_iter_,
        "best_epoch": (
            [m.best_epoch_ for m in members] if args.ensemble else est.best_epoch_
        ),
        "processes": members[0].world_size_,
        **({"ensemble_seeds": est.seeds_} if args.ensemble else {}),
        **(
            {
                "selected_seeds": [est.seeds_[i] for i in est.selected_],
                "member_scores": [  # None: the member's free run diverged
                    float(v) if np.isfinite(v) else None for v in est.member_scores_
                ],
                "selection": est.selection,
                "selection_order": [est.seeds_[i] for i in est.selection_order_],
                "selection_path": [
                    float(v) if np.isfinite(v) else None for v in est.selection_path_
                ],
            }
            if args.ensemble and est.member_scores_ is not None
            else {}
        ),
        **data.info,
    }
    _sidecar_path(out).write_text(json.dumps(jsonable(side), indent=2) + "\n")
    elbos = [m.history_[-1]["elbo_per_step"] for m in members if m.history_]
    elbo = float(np.mean(elbos)) if elbos else float("nan")
    world = members[0].world_size_
    procs = f" on {world} processes" if world > 1 else ""
    epochs = "+".join(str(m.n_iter_) for m in members)
    mean = "mean " if args.ensemble else ""
    print(
        f"saved {out} ({epochs} epochs in {seconds:.1f} s{procs}; last "
        f"training ELBO per step, {mean}{elbo:.4g} nats)"
    )
    return 0


def _ensemble(est, data: Data, args: argparse.Namespace):
    """``fit --ensemble K``: the estimator as the template of K members."""
    from ..ensemble import EnsembleRegressor

    if args.ensemble < 1:
        raise UsageError(
            f"--ensemble takes a number of members >= 1, got {args.ensemble}"
        )
    if data.kind != "io":
        raise UsageError("--ensemble fits input/output models only")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--ensemble runs in one process; launch it without torchrun")
    k = args.keep_best
    if k is not None and not 1 <= k <= args.ensemble:
        raise UsageError(
            f"--keep-best takes a number of members in [1, {args.ensemble}] "
            f"(--ensemble), got {k}"
        )
    return EnsembleRegressor(
        est,
        n_members=args.ensemble,
        n_jobs=args.n_jobs,
        random_state=args.seed,
        keep_best=k,
        selection=args.selection or "best",
    )


def _load_model(path: str, device: str, *, ensemble: bool = True):
    from .._persistence import is_ensemble_file

    if is_ensemble_file(path):
        if not ensemble:
            raise UsageError(
                f"{path} is an ensemble of models: use evaluate or simulate"
            )
        from ..ensemble import EnsembleRegressor

        return EnsembleRegressor.load(path, device=device)
    from ..estimator import MSSTCNRegressor

    return MSSTCNRegressor.load(path, device=device)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Test metrics of a saved model on DATA."""
    from ..metrics import elbo_report

    est = _load_model(args.model, args.device)
    data = load_data(args.data, args)
    records = getattr(data, args.split)
    if data.kind == "io":
        rows, preds = evaluate_io(
            est, records, n_samples=args.mc_samples, seed=args.seed, label="MS-STCN"
        )
        if args.residual_lags is not None:
            folder = Path(args.plots) if args.plots else None
            residual_tests(est, records, preds, rows, args.residual_lags, folder)
        print(_table(rows, _IO_COLUMNS))
        if args.plots:
            _plot_records(records, _by_label({"msstcn": preds}, rows), Path(args.plots))
    elif args.residual_lags is not None:
        raise UsageError("--residual-lags needs input/output data")
    elif not hasattr(est, "elbo"):
        raise UsageError(f"{args.model} is an ensemble: it evaluates input/output data")
    else:
        res = est.elbo(None, records)
        rep = elbo_report(
            res["elbo_raw"], res["kl_per_level"], res["n_steps"], est.n_outputs_
        )
        rows = [{"model": "MS-STCN", "data": data.name, "split": args.split, **rep}]
        print(_table(rows, _ELBO_COLUMNS))
    if args.output:
        write_rows(rows, args.output, {"model": args.model, "data": args.data})
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Free-run simulation of a saved model on DATA; write the trajectories."""
    import xarray as xr

    est = _load_model(args.model, args.device)
    data = load_data(args.data, args)
    if data.kind != "io":
        raise UsageError(f"{args.data} has no inputs: use `sample` to generate")
    records = getattr(data, args.split)
    rows, preds = evaluate_io(
        est, records, n_samples=args.mc_samples, seed=args.seed, label="MS-STCN"
    )
    print(_table(rows, _IO_COLUMNS))
    sims = []
    for rec, (p, band) in zip(records, preds, strict=True):
        ds = rec.assign(y_sim=(("time", "y_channel"), p))
        if band is not None:
            ds = ds.assign(
                y_lower=(("time", "y_channel"), band[0]),
                y_upper=(("time", "y_channel"), band[1]),
            )
        sims.append(ds)
    out = Path(args.output)
    if out.suffix.lower() == ".nc":
        out.parent.mkdir(parents=True, exist_ok=True)
        merged = sims[0] if len(sims) == 1 else xr.concat(sims, "record")
        merged.attrs = {
            k: v for k, v in merged.attrs.items() if isinstance(v, (str, int, float))
        }
        merged.to_netcdf(out, engine="scipy")
    else:
        table = []
        for i, ds in enumerate(sims):
            frame = ds.to_dataframe().reset_index()
            table += [{"record": i, **r} for r in frame.to_dict("records")]
        write_rows(table, out, {"model": args.model, "data": args.data})
    if args.plots:
        _plot_records(records, _by_label({"msstcn": preds}, rows), Path(args.plots))
    _say(f"wrote {out}", args.quiet)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Fit MS-STCN and the baselines on DATA; print and write a table."""
    models = _parse_models(args.models)
    data = load_data(args.data, args)
    if data.kind != "io":
        raise UsageError("benchmark compares simulation models on input/output data")
    if "file" in data.info:
        rec = data.train[0]
        cut = int(rec.sizes["time"] * 0.7)
        data.train = [rec.isel(time=slice(0, cut))]
        test = rec.isel(time=slice(cut, None)).assign_attrs(name="last 30%")
        data.test = [test.assign_coords(time=test["time"] - test["time"][0])]
        _say(
            f"{args.data}: training on the first 70%, testing on the last 30%",
            args.quiet,
        )
    rows, fitted, preds = _compare(data, models, _estimator_params(args), args)
    print(_table(rows, _IO_COLUMNS))
    if args.output:
        meta = {"command": "benchmark", "data": args.data, "seed": args.seed}
        if "msstcn" in fitted:
            meta["estimator"] = fitted["msstcn"].get_params(deep=False)
        write_rows(rows, args.output, meta)
    if args.plots:
        history = fitted["msstcn"].history_ if "msstcn" in fitted else None
        _plot_records(data.test, _by_label(preds, rows), Path(args.plots), history)
    return 0


def _model_kind(est, side: dict) -> str:
    if side.get("kind"):
        return side["kind"]
    if est.n_features_in_:
        return "io"
    cfg = est.network_config_
    handwriting = cfg.likelihood == "gmm_bernoulli" and cfg.n_outputs == 3
    return "handwriting" if handwriting else "speech"


def cmd_sample(args: argparse.Namespace) -> int:
    """Generate handwriting (PNG) or speech (WAV) from a saved model."""
    from .. import plotting

    est = _load_model(args.model, args.device, ensemble=False)
    side = _sidecar_path(args.model)
    side = json.loads(side.read_text()) if side.is_file() else {}
    kind = _model_kind(est, side) if args.kind == "auto" else args.kind
    if kind == "io" or est.n_features_in_:
        raise UsageError("this model has inputs: use `simulate` for its outputs")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    samples = np.asarray(est.sample(args.n, args.length, random_state=args.seed))
    np.save(out / "samples.npy", samples)
    written = ["samples.npy"]
    if kind == "handwriting":
        titles = [f"sample {i + 1}" for i in range(len(samples))]
        fig = plotting.plot_handwriting(list(samples), titles=titles)
        plotting.save_figure(fig, out / "handwriting.png")
        written.append("handwriting.png")
    else:
        import soundfile as sf

        from ..data import unframe_clips

        waves = unframe_clips(samples, side.get("mode", "contiguous"))
        for i, w in enumerate(waves):
            w = w - w.mean()  # peak-normalised: the level of the model is not kept
            w = 0.9 * w / max(float(np.max(np.abs(w))), 1e-9)
            sf.write(out / f"sample_{i}.wav", w, args.sample_rate, subtype="PCM_16")
            written.append(f"sample_{i}.wav")
    print(f"wrote {len(samples)} {kind} sample(s) to {out}/: {', '.join(written)}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    """Print the preset table (parameter counts and receptive fields)."""
    from ..summary import preset_table

    print(preset_table())
    return 0
