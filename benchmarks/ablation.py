"""The paper's ablation: multiscale vs. no multiscale vs. no latent variables.

Three variants with the same widths and depths (so nearly the same number
of parameters) are trained with the same budget:

* ``multiscale``: strides (1, 2, 2, 2, 1), bottom-up dilations 1 except the
  top level (1, 2, 4, 8, 16), as the paper's multiscale models;
* ``flat``: all strides 1 and dilations (1, 2, 4, 8, 16) at every level
  (the paper's "without multiscale", essentially STCN);
* ``no_latents``: the multiscale model without latent variables.

Two system-identification studies follow: what closes the gap between the
one-step ELBO and free-run simulation (noise on fed-back outputs, window
length, deterministic vs Monte Carlo simulation), and fine-tuning on the
simulation error itself (``rollout_steps``, :data:`ROLLOUT_VARIANTS`).

They are compared on the speech stand-ins (``blizzard/standin`` in the
shared data folder: ELBO per 0.5 s clip and KL per level on held-out clips,
like the paper's Tables 1 and 2) and on one system-identification benchmark
(Cascaded Tanks: test ELBO and free-run simulation RMSE).

Usage::

    python benchmarks/ablation.py --epochs 20 --output benchmarks/results/ablation.json
    python benchmarks/ablation.py --quick   # seconds, for the smoke test
    python benchmarks/ablation.py --skip-speech --skip-sysid --skip-simulation \\
        --rollout-benchmarks cascaded_tanks silverbox \\
        --output benchmarks/results/rollout_finetune.json
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from sysid_msstcn import MSSTCNRegressor
from sysid_msstcn._paths import default_data_dir
from sysid_msstcn.benchmarking import default_models, evaluate_records, hardware_info
from sysid_msstcn.data import io_arrays, load_benchmark, load_blizzard
from sysid_msstcn.metrics import rmse


def variants(width: int, latent: int, levels: int = 5) -> dict[str, dict]:
    """Estimator parameters of the three ablation variants."""
    top = (1, 2, 4, 8, 1)  # receptive field below one 0.5 s clip at FW=25
    ms = {
        "channels": (width,) * levels,
        "latent_dims": (latent,) * levels,
        "strides": (1,) + (2,) * (levels - 2) + (1,),
        "dilations": ((1,) * 5,) * (levels - 1) + (top,),
    }
    flat = dict(ms, strides=(1,) * levels, dilations=((1, 2, 4, 8, 16),) * levels)
    return {
        "multiscale": ms,
        "flat": flat,
        "no_latents": dict(ms, use_latents=False),
    }


def _n_params(est: MSSTCNRegressor) -> int:
    return int(sum(p.numel() for p in est.model_.parameters()))


def speech_ablation(args) -> dict:
    """Train the three variants on the speech stand-ins; test ELBO per clip."""
    audio = Path(args.data) / "blizzard" / "standin"
    with tempfile.TemporaryDirectory() as cache:
        data = load_blizzard(
            audio, cache, frame_width=args.frame_width, test_fraction=0.2, seed=1
        )
        train = [data.train[i].astype(np.float64) for i in range(len(data.train))]
        test = [data.test[i].astype(np.float64) for i in range(len(data.test))]
    if args.quick:
        train, test = train[:4], test[:2]
    rows = []
    for name, params in variants(args.width, args.latent).items():
        est = MSSTCNRegressor(
            **params,
            likelihood="gmm",
            n_components=args.components,
            normalize=False,  # clips are already standardised (train statistics)
            max_iter=args.epochs,
            steps_per_epoch=args.steps,
            batch_size=args.batch_size,
            window=train[0].shape[0],
            validation_fraction=0.0,
            early_stopping=False,
            random_state=args.seed,
            device=args.device,
        )
        t0 = time.perf_counter()
        est.fit(None, train)
        seconds = time.perf_counter() - t0
        ev = est.elbo(None, test)
        rows.append(
            {
                "variant": name,
                "parameters": _n_params(est),
                "train_seconds": seconds,
                "test_elbo_per_clip": float(ev["elbo"].mean()),
                "test_log_lik_per_clip": float(ev["log_lik"].mean()),
                "test_kl_per_level": ev["kl_per_level"].mean(0).tolist(),
                "test_elbo_per_sample": float(
                    ev["elbo"].mean() / (ev["n_steps"].mean() * args.frame_width)
                ),
                "final_train_elbo": est.history_[-1]["elbo"],
            }
        )
        print(rows[-1], flush=True)
    return {
        "data": str(audio),
        "frame_width": args.frame_width,
        "n_train_clips": len(train),
        "n_test_clips": len(test),
        "units": "nats per 0.5 s clip (8000 samples), standardised amplitude",
        "rows": rows,
    }


def sysid_ablation(args) -> dict:
    """The three variants on Cascaded Tanks: test ELBO and simulation RMSE."""
    train, test = load_benchmark(
        "cascaded_tanks", data_dir=Path(args.data) / "nonlinear_benchmarks"
    )
    u, y = io_arrays(train[0])
    ut, yt = io_arrays(test[0])
    n = int(test[0].attrs["n_init"])
    rows = []
    for name, params in variants(args.sysid_width, 2, levels=4).items():
        params = dict(params, dilations=((1, 2, 4, 8),) * 4)
        if name == "multiscale":
            params["dilations"] = ((1, 2, 4, 8),) * 3 + ((1, 2, 4, 8),)
        est = MSSTCNRegressor(
            **params,
            input_noise=args.input_noise,
            max_iter=args.sysid_epochs,
            steps_per_epoch=args.steps,
            random_state=args.seed,
            device=args.device,
        )
        t0 = time.perf_counter()
        est.fit(u, y)
        seconds = time.perf_counter() - t0
        pred = est.predict(ut, y_init=yt[:n])
        ev = est.elbo(ut, yt)
        rows.append(
            {
                "variant": name,
                "parameters": _n_params(est),
                "receptive_field": est.receptive_field_,
                "train_seconds": seconds,
                "test_rmse_V": float(
                    rmse(yt, pred, n_init=n, multioutput="uniform_average")
                ),
                "test_elbo_per_step": float(ev["elbo_per_step"][0]),
                "test_kl_per_level": ev["kl_per_level"][0].tolist(),
            }
        )
        print(rows[-1], flush=True)
    return {"benchmark": "cascaded_tanks", "rows": rows}


def simulation_ablation(args) -> dict:
    """What closes the gap between the one-step ELBO and free-run simulation.

    On Cascaded Tanks and CED: noise on the fed-back outputs during training
    (``input_noise``), a longer training window, and deterministic
    (prior-mean latents, mean outputs) vs Monte Carlo (sampled latents and
    outputs, averaged) simulation.
    """
    rows = []
    root = Path(args.data) / "nonlinear_benchmarks"
    base = {
        "preset": "sysid_small",
        "max_iter": args.sysid_epochs,
        "steps_per_epoch": args.steps,
        "random_state": args.seed,
        "device": args.device,
    }
    grid = [{"input_noise": v} for v in args.noise_levels]
    grid.append({"input_noise": 0.3, "window": 512})
    for bench in ("cascaded_tanks", "ced"):
        train, test = load_benchmark(bench, data_dir=root)
        us = [io_arrays(d)[0] for d in train]
        ys = [io_arrays(d)[1] for d in train]
        for extra in grid:
            est = MSSTCNRegressor(**base, **extra)
            t0 = time.perf_counter()
            est.fit(us if len(us) > 1 else us[0], ys if len(ys) > 1 else ys[0])
            seconds = time.perf_counter() - t0
            for ds in test:
                ut, yt = io_arrays(ds)
                n = int(ds.attrs["n_init"])
                det = est.predict(ut, y_init=yt[:n]).reshape(yt.shape)
                mc = est.simulate(
                    ut, y_init=yt[:n], n_samples=args.mc_samples, random_state=args.seed
                )
                mc_mean = np.asarray(mc).reshape((-1, *yt.shape)).mean(0)
                one = est.predict_ahead(ut, yt, steps=1).reshape(yt.shape)
                rows.append(
                    {
                        "benchmark": bench,
                        "test_set": ds.attrs["name"],
                        **extra,
                        "window_": int(est.window_),
                        "train_seconds": seconds,
                        "rmse_deterministic": float(
                            rmse(yt, det, n_init=n, multioutput="uniform_average")
                        ),
                        "rmse_mc_mean": float(
                            rmse(yt, mc_mean, n_init=n, multioutput="uniform_average")
                        ),
                        "rmse_one_step": float(
                            rmse(yt, one, n_init=n, multioutput="uniform_average")
                        ),
                    }
                )
                print(rows[-1], flush=True)
    return {"rows": rows, "mc_samples": args.mc_samples}


# fine-tuning variants of the rollout study: estimator parameters
ROLLOUT_VARIANTS = {
    "one_step": {},
    "mse_last_64": {"rollout_steps": 64, "rollout_gradient": "last"},
    "nll_last_64": {
        "rollout_steps": 64,
        "rollout_gradient": "last",
        "rollout_loss": "nll",
    },
    # the fed-back outputs exact during fine-tuning (EMPS: a position, whose
    # per-step change is far below the default noise of 0.3)
    "mse_last_64_noise0": {
        "rollout_steps": 64,
        "rollout_gradient": "last",
        "input_noise": 0.0,
    },
    # the MSE term weighs 1 per normalised unit squared, the one-step NLL
    # 1 / sigma**2: a hundredfold weight puts them on a closer scale
    "mse_last_64_x100": {
        "rollout_steps": 64,
        "rollout_gradient": "last",
        "rollout_weight": 100.0,
    },
    # a long horizon for integrating outputs (EMPS drifts over seconds):
    # 1,000 free-run steps at the end of 1,200-step windows, smaller batches
    "mse_last_1000_x100": {
        "window": 1200,
        "batch_size": 8,
        "rollout_steps": 1000,
        "rollout_gradient": "last",
        "rollout_weight": 100.0,
    },
    # more one-step training at a third of the learning rate (less noise
    # between epochs in the validation score that picks the kept weights)
    "one_step_lr3e-4": {"learning_rate": 3e-4},
    # more one-step training, validating and keeping averaged weights
    # (exponential moving average over about 100 / 200 steps)
    "one_step_ema0.99": {"ema_decay": 0.99},
    "one_step_ema0.995": {"ema_decay": 0.995},
    "mse_full_16": {"rollout_steps": 16},
    "nll_full_16": {"rollout_steps": 16, "rollout_loss": "nll"},
}


class Increments:
    """A model of the output increments y[t] - y[t-1], integrated back.

    For integrating outputs (EMPS: a position): the wrapped estimator is
    trained on ``(u[1:], diff(y))`` and its free run is summed from the last
    measured output. ``set_params`` and fitted attributes are the wrapped
    estimator's.
    """

    def __init__(self, estimator) -> None:
        self.estimator = estimator

    def __getattr__(self, name: str):
        if name.startswith("__") or "estimator" not in self.__dict__:
            raise AttributeError(name)  # copy and pickle probe before __init__
        return getattr(self.estimator, name)

    def set_params(self, **params) -> Increments:
        self.estimator.set_params(**params)
        return self

    def fit(self, X, Y) -> Increments:
        if isinstance(Y, list):  # several experiments
            self.estimator.fit([x[1:] for x in X], [np.diff(y, axis=0) for y in Y])
        else:
            self.estimator.fit(X[1:], np.diff(Y, axis=0))
        return self

    def predict(self, X, y_init):
        y_init = np.asarray(y_init)
        d = np.asarray(self.estimator.predict(X[1:], y_init=np.diff(y_init, axis=0)))
        d = d.reshape(len(X) - 1, -1)
        start = y_init[:1].reshape(1, -1)
        return np.concatenate([start, start + np.cumsum(d, axis=0)]).reshape(
            (len(X), *y_init.shape[1:])
        )


def _test_rmse(est, test) -> list[float | None]:
    """Test RMSE per record in the benchmark's units (None: diverged)."""
    return [row["rmse"] for row in evaluate_records(est, test)[0]]


def rollout_ablation(args, save=None) -> dict:
    """Fine-tuning on the simulation error (``rollout_steps``) vs the ELBO alone.

    One model is trained with the one-step objective (``sysid_small``,
    ``--sysid-epochs`` epochs of ``--steps`` steps); every variant of
    :data:`ROLLOUT_VARIANTS` then continues from the same weights for
    ``--rollout-epochs`` epochs (``warm_start``), so the variants differ
    only in the fine-tuning loss. Test RMSE in the benchmark's units. With
    ``--increments`` the study runs a second time on the output increments
    (:class:`Increments`); the rows name their ``domain`` and the ARX of the
    benchmark suite is fitted in both domains as a reference. ``save``, if
    given, is called with the result so far after every row (a long study
    that is stopped keeps what it measured).
    """
    rows, references = [], []
    result = {
        "rows": rows,
        "references": references,
        "rollout_epochs": args.rollout_epochs,
    }
    domains = ["outputs", "increments"] if args.increments else ["outputs"]
    root = Path(args.data) / "nonlinear_benchmarks"
    names = args.rollout_variants or list(ROLLOUT_VARIANTS)
    for bench, domain in itertools.product(args.rollout_benchmarks, domains):
        wrap = Increments if domain == "increments" else (lambda est: est)
        train, test = load_benchmark(bench, data_dir=root)
        us = [io_arrays(d)[0] for d in train]
        ys = [io_arrays(d)[1] for d in train]
        X = us if len(us) > 1 else us[0]
        Y = ys if len(ys) > 1 else ys[0]
        arx = wrap(default_models(bench, device=args.device)["ARX"]).fit(X, Y)
        references.append(
            {"benchmark": bench, "domain": domain, "ARX": _test_rmse(arx, test)}
        )
        base = wrap(
            MSSTCNRegressor(
                preset="sysid_small",
                max_iter=args.sysid_epochs,
                steps_per_epoch=args.steps,
                input_noise=args.input_noise,
                random_state=args.seed,
                device=args.device,
            )
        )
        t0 = time.perf_counter()
        base.fit(X, Y)
        base_seconds = time.perf_counter() - t0
        base_rmse = _test_rmse(base, test)
        print(
            {"benchmark": bench, "domain": domain, "base_rmse": base_rmse}, flush=True
        )
        for name in names:
            est = copy.deepcopy(base)
            est.set_params(
                warm_start=True, max_iter=args.rollout_epochs, **ROLLOUT_VARIANTS[name]
            )
            t0 = time.perf_counter()
            est.fit(X, Y)
            seconds = time.perf_counter() - t0
            new = est.history_[len(base.history_) :]
            rows.append(
                {
                    "benchmark": bench,
                    "domain": domain,
                    "variant": name,
                    "params": ROLLOUT_VARIANTS[name],
                    "test_sets": [ds.attrs["name"] for ds in test],
                    "units": test[0].attrs.get("report_units", ""),
                    "base_rmse": base_rmse,
                    "base_train_seconds": base_seconds,
                    "base_best_epoch": base.best_epoch_,
                    "rmse": _test_rmse(est, test),
                    "finetune_seconds": seconds,
                    "best_epoch": est.best_epoch_,
                    "val_sim_rmse": [r.get("val_sim_rmse") for r in new],
                    "rollout_term": [r.get("rollout") for r in new],
                }
            )
            print(rows[-1], flush=True)
            if save is not None:
                save(result)
    return result


def main(argv=None) -> None:
    """Run the ablation and write the JSON result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(default_data_dir()))
    p.add_argument("--device", default="auto")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--sysid-epochs", type=int, default=20)
    p.add_argument("--steps", type=int, default=50, help="steps per epoch")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--frame-width", type=int, default=25)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--sysid-width", type=int, default=32)
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--components", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    p.add_argument("--output", default="benchmarks/results/ablation.json")
    p.add_argument("--skip-speech", action="store_true")
    p.add_argument("--skip-sysid", action="store_true")
    p.add_argument("--skip-simulation", action="store_true")
    p.add_argument("--skip-rollout", action="store_true")
    p.add_argument("--rollout-epochs", type=int, default=10)
    p.add_argument("--rollout-benchmarks", nargs="+", default=["cascaded_tanks"])
    p.add_argument(
        "--increments",
        action="store_true",
        help="repeat the rollout study on the output increments (integrators)",
    )
    p.add_argument(
        "--rollout-variants", nargs="+", choices=list(ROLLOUT_VARIANTS), default=None
    )
    p.add_argument(
        "--noise-levels", type=float, nargs="+", default=[0.0, 0.1, 0.3, 0.5]
    )
    p.add_argument("--mc-samples", type=int, default=20)
    p.add_argument(
        "--input-noise",
        type=float,
        default=0.3,
        help="noise on fed-back outputs in the sysid ablation",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = args.sysid_epochs = 1
        args.steps, args.batch_size, args.width, args.sysid_width = 2, 2, 8, 8
        args.latent, args.components = 2, 2
        args.noise_levels, args.mc_samples = [0.0], 2
        args.rollout_epochs = 1
        args.rollout_variants = args.rollout_variants or ["one_step", "mse_last_64"]
    out = {
        "hardware": hardware_info(args.device),
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
    }
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)

    def save(**parts) -> None:  # after every section (and rollout row)
        out.update(parts)
        path.write_text(json.dumps(out, indent=2))

    if not args.skip_speech:
        save(speech=speech_ablation(args))
    if not args.skip_sysid:
        save(sysid=sysid_ablation(args))
    if not args.skip_simulation:
        save(simulation=simulation_ablation(args))
    if not args.skip_rollout:

        def partial(result: dict) -> None:
            save(rollout={**result, "partial": True})

        save(rollout=rollout_ablation(args, save=partial))
    save()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
