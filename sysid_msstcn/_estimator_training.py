"""Training of the estimator: the epoch loop, validation and early stopping.

Used by :class:`~sysid_msstcn.MSSTCNRegressor` through its private
``_TrainingMixin``.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

import numpy as np
import torch

from ._estimator_parallel import _broadcast, _cuda_index
from ._inputs import feature_names
from ._progress import epoch_row, progress
from ._utils import check_random_state_seed, resolve_device
from ._windows import ChannelScaler, sample_windows, split_tails
from .data._validation import check_consistent_channels
from .distributed import DistributedInfo
from .exceptions import ConvergenceWarning, DivergenceWarning
from .model import MSSTCN
from .training import Batch, Trainer, make_batch

_MAX_ROLLBACKS = 5


class _TrainingMixin:
    """Fitting machinery of the estimator (a mixin of the estimator).

    Relies on the estimator's parameters and on its ``_resolved``,
    ``_check_params``, ``_build_configs``, ``_experiments`` and scaling
    methods, and on the prediction mixin's ``_run`` (validation free runs).
    """

    def _is_fitted(self) -> bool:
        return hasattr(self, "model_")

    def _fit(self, X, y, reset: bool):
        # Everything that can reject the call runs before any fitted
        # attribute changes, so a failed call leaves a fitted model usable.
        self._check_params()
        data = self._experiments(X, y, fitting=True)
        n_in = data.n_inputs or 0
        n_out = data.n_outputs
        if reset:
            net, train = self._build_configs(n_in, n_out)
            resolve_device(self.device)  # a bad device fails before any collective
            seed = check_random_state_seed(self.random_state)
            rf = net.receptive_field
        else:
            # the network stays; training settings changed since (learning
            # rate, rollout_steps, ...) apply to the continued training
            _, train = self._build_configs(n_in, n_out)
            self._check_feature_names(X)
            check_consistent_channels(
                data,
                self.n_features_in_ or None,
                self.n_outputs_,
                estimator_name=type(self).__name__,
            )
            rf = self.receptive_field_
        short = [i for i, n in enumerate(data.lengths) if n <= rf]
        if short:
            raise ValueError(
                f"experiment {short[0]} has {data.lengths[short[0]]} samples, "
                f"shorter than the receptive field of the model plus one "
                f"({rf + 1})"
            )
        parallel = self._data_parallel(reset)
        if parallel is not None:
            seed = self._check_same_on_all_ranks(data, parallel, seed if reset else 0)
        if reset:
            device = resolve_device(self.device)
            if parallel is not None:  # cuda:LOCAL_RANK for 'auto' and 'cuda'
                device = parallel.device
            self._initialize(data, net, train, device, seed)
            self.feature_names_in_ = feature_names(X)
            if self.feature_names_in_ is None:
                del self.feature_names_in_
        else:
            previous_train_config, n_iter_before = self.train_config_, self.n_iter_
            self.train_config_ = train
            if parallel is not None:  # continue from rank 0's random streams
                self._rng.bit_generator.state, self._torch_rng_state = _broadcast(
                    (self._rng.bit_generator.state, self._torch_rng_state), parallel
                )
        with self._torch_rng():
            if reset:
                self.model_ = MSSTCN(net).to(self.device_)
            us = [self._scale_in(u) for u in data.u]
            ys = [self._scale_out(v) for v in data.y]
            try:
                self._train(us, ys, parallel)
            except BaseException:
                if not reset and not self.n_iter_ > n_iter_before:
                    # nothing trained with the new settings: keep the old ones
                    self.train_config_ = previous_train_config
                raise
        self.world_size_ = 1 if parallel is None else parallel.world_size
        return self

    @contextlib.contextmanager
    def _torch_rng(self):
        """Run with the estimator's own torch RNG stream.

        The global torch RNG (used for weight initialisation and posterior
        sampling) is forked, set to the state where the previous training
        call of this estimator left it (or seeded from ``random_state``), and
        restored afterwards: fitting neither depends on nor changes the
        caller's random state.
        """
        dev = self.device_
        devices = [] if dev.type != "cuda" else [_cuda_index(dev)]
        with torch.random.fork_rng(devices=devices):
            state = self._torch_rng_state
            if state is None:
                torch.random.default_generator.manual_seed(self._seed)
                for d in devices:
                    with torch.cuda.device(d):
                        torch.cuda.manual_seed(self._seed)
            else:
                torch.set_rng_state(state["cpu"])
                if devices and state.get("cuda") is not None:
                    torch.cuda.set_rng_state(state["cuda"], devices[0])
            try:
                yield
            finally:
                self._torch_rng_state = {
                    "cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(devices[0]).cpu()
                    if devices
                    else None,
                }

    def _initialize(self, data, net, train, device, seed: int) -> None:
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._torch_rng_state = None
        self.device_ = device
        self.network_config_ = net
        self.train_config_ = train
        self.n_features_in_ = data.n_inputs or 0
        self.n_outputs_ = data.n_outputs
        self.y_1d_ = bool(data.y_1d)
        self.receptive_field_ = net.receptive_field
        self.n_init_ = (
            self.receptive_field_ if self.n_init is None else int(self.n_init)
        )
        self.x_scaler_ = ChannelScaler("input")
        self.y_scaler_ = ChannelScaler("output")
        if self.n_features_in_:
            self.x_scaler_.fit(data.u)
        self.y_scaler_.fit(data.y)
        self.history_ = []
        self.history_events_ = []
        self.n_iter_ = 0
        self.best_epoch_ = 0
        self._trainer_state = None
        self.output_names_ = (
            None if data.output_names is None else tuple(data.output_names)
        )

    def _window_length(self, segments) -> int:
        r = self._resolved()
        longest = max(stop - start for _, start, stop in segments)
        if r["window"] is not None:
            w = int(r["window"])
            if w < 2:
                raise ValueError(f"window must be >= 2, got {w}")
            return min(w, longest)
        return int(min(max(4 * self.receptive_field_, 128), 2048, longest))

    def _batch(self, us, ys, windows) -> Batch:
        wy = [ys[i][a:b] for i, a, b in windows]
        wu = None if us[0] is None else [us[i][a:b] for i, a, b in windows]
        return make_batch(wy, wu)

    def _input_noise(self, n_in: int) -> float:
        if isinstance(self.input_noise, str):
            return 0.3 if n_in else 0.0
        return float(self.input_noise)

    def _stopping_metric(self) -> str:
        if self.early_stopping_metric == "auto":
            return "simulation" if self.n_features_in_ else "elbo"
        return self.early_stopping_metric

    def _split(self, lengths: list[int]):
        frac = self.validation_fraction if self.early_stopping else 0.0
        if self._stopping_metric() == "elbo":
            return split_tails(lengths, frac, self.receptive_field_ + 1)
        # simulation: the tail is warmed up on the measured samples before it
        train_seg, valid_seg = split_tails(lengths, frac, 2)
        short = {i for i, a, b in train_seg if b - a <= self.receptive_field_}
        if short:
            return [(i, 0, n) for i, n in enumerate(lengths)], []
        return train_seg, valid_seg

    @torch.no_grad()
    def _probe_finite(self, batch: Batch) -> bool:
        """Whether the current weights give a finite likelihood on a batch."""
        b = batch.to(self.device_)
        out = self.model_.eval()(b.y, b.u, b.lengths, latent="prior_mean")
        return bool(torch.isfinite(out.log_lik).all())

    @torch.no_grad()
    def _validation_rmse(self, us, ys, valid_seg) -> float:
        """RMSE (normalised units) of free-run simulations of the tails."""
        D = self.network_config_.total_stride
        ctx = -(-(self.receptive_field_ + D) // D) * D
        se, count = 0.0, 0
        for i, a, b in valid_seg:
            s0 = max(0, a - ctx)
            u = None if us[i] is None else us[i][s0:b]
            y0 = ys[i][s0:a]
            sim, _ = self._run(
                u, y0 if len(y0) else None, b - s0, 1, "prior_mean", "mean", None
            )
            err = sim[0][a - s0 :] - ys[i][a:b]
            se += float((err**2).sum())
            count += err.size
        return math.sqrt(se / max(count, 1))

    @torch.no_grad()
    def _record_rmse(self, us, ys) -> float:
        """RMSE (normalised units) of free runs of every whole experiment.

        Each experiment is simulated from its inputs and its first
        ``n_init_`` outputs, as a test record is (training part and
        validation tail alike); the errors after the warm-up are pooled.
        NaN when no experiment is longer than ``n_init_``.
        """
        n0 = int(self.n_init_)
        se, count = 0.0, 0
        for u, y in zip(us, ys, strict=True):
            if y.shape[0] <= n0:
                continue
            sim, _ = self._run(
                u, y[:n0] if n0 else None, y.shape[0], 1, "prior_mean", "mean", None
            )
            err = sim[0][n0:] - y[n0:]  # (T - n0, n_y)
            se += float((err**2).sum())
            count += err.size
        return math.sqrt(se / count) if count else math.nan

    def _validation_score(self, trainer, us, ys, valid_seg, valid_batches) -> float:
        """The early-stopping score of the current weights (higher is better)."""
        metric = self._stopping_metric()
        if metric in ("simulation", "record_simulation"):
            if metric == "simulation":
                sim_rmse = self._validation_rmse(us, ys, valid_seg)
            else:
                sim_rmse = self._record_rmse(us, ys)
            return -sim_rmse if math.isfinite(sim_rmse) else -math.inf
        return trainer.evaluate(valid_batches)["elbo_per_step"]

    def _warn_slow_average(self, steps_per_epoch: int) -> None:
        """Warn when the weight average spans more steps than the patience.

        The average of ``ema_decay`` spans about ``1 / (1 - ema_decay)``
        steps; when that is longer than ``n_iter_no_change`` epochs, early
        stopping judges an average that still carries the first weights
        (on EMPS, 0.999 with a patience of 15 epochs of 50 steps stopped
        every seed at epoch 16).
        """
        decay = float(self.ema_decay)
        if not (self.early_stopping and decay > 0):
            return
        span = 1.0 / (1.0 - decay)
        patience = self.n_iter_no_change * steps_per_epoch
        if span > patience:
            warnings.warn(
                f"ema_decay={decay} averages over about {span:.0f} steps, more "
                f"than the early-stopping patience of n_iter_no_change="
                f"{self.n_iter_no_change} epochs of {steps_per_epoch} steps "
                f"({patience} steps): early stopping may stop before the "
                "average has moved; lower ema_decay or raise n_iter_no_change",
                UserWarning,
                stacklevel=5,
            )

    def _train(self, us, ys, parallel: DistributedInfo | None = None) -> None:
        main = parallel is None or parallel.is_main  # shows progress and warns
        lengths = [v.shape[0] for v in ys]
        train_seg, valid_seg = self._split(lengths)
        metric = self._stopping_metric()
        self.window_ = self._window_length(train_seg)
        k = self.train_config_.rollout_steps
        measured = self.window_ - min(k, self.window_ - 1)  # before the free run
        if k and main and measured < self.receptive_field_:
            warnings.warn(
                f"rollout_steps={k} leaves {measured} "
                f"measured samples of each {self.window_}-sample window before the "
                f"free run, fewer than the receptive field ({self.receptive_field_}):"
                " the free run starts partly from zero padding, unlike predict() "
                "with a warm-up of a receptive field; use a longer window or "
                "fewer rollout_steps",
                UserWarning,
                stacklevel=4,
            )
        bs = int(self._resolved()["batch_size"])
        total = sum(stop - start for _, start, stop in train_seg)
        n_batches = max(50, math.ceil(total / (self.window_ * bs)))
        if self.steps_per_epoch is not None:
            n_batches = int(self.steps_per_epoch)
        if main and valid_seg:
            self._warn_slow_average(n_batches)
        valid_batches = [
            self._batch(us, ys, valid_seg[k : k + bs])
            for k in range(0, len(valid_seg), bs)
        ]
        trainer = Trainer(
            self.model_,
            self.train_config_,
            self.device_,
            data_parallel=parallel is not None,
        )
        if self._trainer_state is not None:
            trainer.load_optimizer_state(self._trainer_state["optimizer"])
            trainer.iteration = self._trainer_state["iteration"]
            trainer.lr_scale = self._trainer_state["lr_scale"]
        best = (-math.inf, trainer.snapshot(), self.n_iter_)
        if self.n_iter_ > 0 and valid_batches:
            # continued training: the entry weights stay a candidate, so a
            # fine-tuning stage that only hurts the validation score is undone
            entry = self._validation_score(trainer, us, ys, valid_seg, valid_batches)
            if parallel is not None:
                entry = _broadcast(entry, parallel)
            if math.isfinite(entry):
                # the entry weights are those the previous fit kept
                best = (entry, best[1], self.best_epoch_)
        good = trainer.snapshot()
        no_improve, rollbacks = 0, 0
        bar = progress(self.max_iter, self.verbose if main else 0)
        stopped_early = False
        t_start = time.perf_counter()
        try:
            for _ in range(self.max_iter):
                t0 = time.perf_counter()
                rows = []
                for _ in range(n_batches):
                    wins = sample_windows(train_seg, self.window_, bs, self._rng)
                    rows.append(trainer.train_step(self._batch(us, ys, wins)))
                    if trainer.consecutive_bad >= 3:
                        rollbacks += 1
                        trainer.restore(good)
                        trainer.lr_scale *= 0.5
                        event = {
                            "epoch": self.n_iter_ + 1,
                            "event": "rollback",
                            "lr_scale": trainer.lr_scale,
                            "skipped_steps": trainer.n_skipped,
                        }
                        self.history_events_.append(event)
                        if main:
                            warnings.warn(
                                "non-finite loss or gradients in 3 consecutive "
                                "steps: weights rolled back to the last good epoch "
                                "and the learning rate halved (factor "
                                f"{trainer.lr_scale:g})",
                                DivergenceWarning,
                                stacklevel=3,
                            )
                        if rollbacks > _MAX_ROLLBACKS:
                            break
                self.n_iter_ += 1
                row = epoch_row(
                    rows, self.n_iter_, trainer.n_skipped, time.perf_counter() - t0
                )
                # validated and kept: the averaged weights (ema_decay > 0)
                with trainer.averaged():
                    if valid_batches:
                        val = trainer.evaluate(valid_batches)
                        row.update(
                            val_loss=-val["elbo"],
                            val_elbo=val["elbo"],
                            val_elbo_per_step=val["elbo_per_step"],
                            val_log_lik=val["log_lik"],
                            val_kl=val["kl"],
                            val_kl_per_level=val["kl_per_level"],
                        )
                        score = val["elbo_per_step"]
                        if metric in ("simulation", "record_simulation"):
                            sim_rmse = self._validation_rmse(us, ys, valid_seg)
                            row["val_sim_rmse"] = sim_rmse
                            score = -sim_rmse if math.isfinite(sim_rmse) else -math.inf
                    else:
                        score = row["elbo_per_step"]
                    if metric == "record_simulation":
                        rec_rmse = self._record_rmse(us, ys)
                        row["record_sim_rmse"] = rec_rmse
                        score = -rec_rmse if math.isfinite(rec_rmse) else -math.inf
                    kept = None if trainer.average is None else trainer.snapshot()
                finite = math.isfinite(score) and all(
                    bool(torch.isfinite(p).all()) for p in self.model_.parameters()
                )
                if finite:  # the state the epoch ends in must evaluate finitely
                    finite = self._probe_finite(self._batch(us, ys, wins))
                elapsed = time.perf_counter() - t_start
                if parallel is not None:
                    # every rank computed the same values (same weights and
                    # random stream); rank 0's are taken so that rounding on
                    # different devices and clocks cannot split the decisions
                    row, score, finite, elapsed = _broadcast(
                        (row, score, finite, elapsed), parallel
                    )
                self.history_.append(row)
                if finite:
                    good = trainer.snapshot()
                else:
                    rollbacks += 1
                    trainer.restore(good)
                    trainer.lr_scale *= 0.5
                    self.history_events_.append(
                        {
                            "epoch": self.n_iter_,
                            "event": "rollback",
                            "reason": "non-finite state at the end of the epoch",
                            "lr_scale": trainer.lr_scale,
                            "skipped_steps": trainer.n_skipped,
                        }
                    )
                    if main:
                        warnings.warn(
                            "the epoch ended in a non-finite state (weights or "
                            "loss): weights rolled back to the last good epoch "
                            "and the learning rate halved (factor "
                            f"{trainer.lr_scale:g})",
                            DivergenceWarning,
                            stacklevel=3,
                        )
                if finite and score > best[0] + self.tol:
                    best = (score, kept or trainer.snapshot(), self.n_iter_)
                    no_improve = 0
                else:
                    no_improve += 1
                bar.update(row)
                if rollbacks > _MAX_ROLLBACKS:
                    if main:
                        warnings.warn(
                            "training stopped: it kept diverging after "
                            f"{_MAX_ROLLBACKS} roll-backs",
                            DivergenceWarning,
                            stacklevel=2,
                        )
                    break
                if (
                    self.early_stopping
                    and valid_batches
                    and (no_improve >= self.n_iter_no_change)
                ):
                    stopped_early = True
                    break
                if self.max_time is not None and elapsed >= self.max_time:
                    self.history_events_.append(
                        {"epoch": self.n_iter_, "event": "max_time", "seconds": elapsed}
                    )
                    stopped_early = True
                    break
        except KeyboardInterrupt:
            self.history_events_.append({"epoch": self.n_iter_, "event": "interrupted"})
            if main:
                warnings.warn(
                    "training interrupted; keeping the best weights so far",
                    UserWarning,
                    stacklevel=2,
                )
        finally:
            bar.close()
            trainer.release()
        if best[2] > 0 or best[0] > -math.inf:
            trainer.restore(best[1])
            self.best_epoch_ = best[2]
        self._trainer_state = {
            "optimizer": trainer.optimizer.state_dict(),
            "iteration": trainer.iteration,
            "lr_scale": trainer.lr_scale,
        }
        self.loss_curve_ = [r["loss"] for r in self.history_]
        if (
            self.max_iter > 0
            and not stopped_early
            and self.early_stopping
            and valid_batches
            and self.verbose
            and main
        ):
            warnings.warn(
                f"stopped at max_iter={self.max_iter} before early stopping",
                ConvergenceWarning,
                stacklevel=3,
            )
