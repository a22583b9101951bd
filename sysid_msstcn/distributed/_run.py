"""A training run: epochs, logging, checkpoints and resume."""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from ..config import NetworkConfig, TrainConfig, config_from_dict
from ..model import MSSTCN
from ..objectives import elbo_terms
from ..training import Trainer, atomic_torch_save
from ._checkpoint import (
    _rng_state,
    _set_rng_state,
    load_latest_checkpoint,
    save_checkpoint,
)
from ._common import CHECKPOINT_FORMAT, logger
from ._data import _EpochSampler, _Indexed, _mix_seed, collate_batch
from ._process import init_distributed
from ._step import TrainStep, float32_heads


@dataclass
class TrainingResult:
    """What :func:`fit_distributed` returns.

    Attributes
    ----------
    model : MSSTCN
        The trained network (unwrapped, on the training device).
    trainer : Trainer
        Holds the optimiser and counters, ready for
        :meth:`~sysid_msstcn.training.Trainer.train_step` or its
        ``state_dict``.
    history : list of dict
        Rows logged by this process (rank 0: every ``log_every`` steps and
        at each epoch's end).
    checkpoint : pathlib.Path or None
        The last checkpoint written.
    best_valid_elbo : float or None
        Best validation ELBO per sequence.
    """

    model: MSSTCN
    trainer: Trainer
    history: list[dict]
    checkpoint: Path | None = None
    best_valid_elbo: float | None = None


class TrainingRun:
    """Epoch loop with sharded data, periodic checkpoints and resume.

    Parameters
    ----------
    network : NetworkConfig or MSSTCN
        A configuration (weights initialised from ``seed``) or a model to
        continue training (moved to the device).
    train_config : TrainConfig
    train_dataset : torch.utils.data.Dataset
        Map-style; an item is ``y`` or ``(u, y)`` channels first
        (``(C, T)``), as :class:`~sysid_msstcn.loaders.WindowDataset`,
        :class:`~sysid_msstcn.loaders.ClipDataset` (lazy, memory-mapped) or
        :class:`~sysid_msstcn.loaders.SequenceDataset` return. A dataset
        with ``set_epoch`` is told each epoch.
    valid_dataset : torch.utils.data.Dataset, optional
        Evaluated (sharded) at the end of every epoch; the best weights go
        to ``checkpoint_dir/best.pt``.
    batch_size : int
        Sequences per micro-batch **per process**; one optimiser step sees
        ``batch_size * accumulate * world_size`` sequences.
    epochs : int, default=1
    max_steps : int, optional
        Stop after this many optimiser steps (attempted, skipped included).
    accumulate : int, default=1
        Micro-batches per optimiser step (gradient accumulation).
    checkpoint_dir : str or path-like, optional
        Where rank 0 writes ``checkpoint_<step>.pt``, ``best.pt`` and
        ``log.jsonl``.
    checkpoint_every : int or None, default=1000
        Optimiser steps between checkpoints; one is also written at the end.
    keep_checkpoints : int, default=2
        Newest checkpoints kept (0: all).
    resume : bool, default=False
        Continue from the newest checkpoint in ``checkpoint_dir`` (a fresh
        start when there is none).
    device : str or torch.device, default="auto"
        ``"auto"``: ``cuda:LOCAL_RANK`` when available, else the CPU.
    compile : bool, default=False
        :func:`torch.compile` the forward and loss.
    num_workers : int, default=0
        DataLoader worker processes (memory is pinned on CUDA).
    seed : int, default=0
        Weights, shuffling and noise.
    sample_noise : bool, default=False
        Noise keyed by sample index: results independent of the number of
        processes and of ``accumulate`` (slower; for checks).
    dtype : torch.dtype, default=torch.float32
        Parameter dtype (float64 for exactness checks).
    log_every : int, default=50
        Steps between log rows (the only regular host synchronisation).
    callback : callable, optional
        Called with each log row on rank 0.

    Attributes
    ----------
    info : DistributedInfo
    model : MSSTCN
    step_fn : TrainStep
    epoch, step_in_epoch : int
    history : list of dict
    """

    def __init__(
        self,
        network: NetworkConfig | MSSTCN,
        train_config: TrainConfig,
        train_dataset: Dataset,
        valid_dataset: Dataset | None = None,
        *,
        batch_size: int,
        epochs: int = 1,
        max_steps: int | None = None,
        accumulate: int = 1,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = 1000,
        keep_checkpoints: int = 2,
        resume: bool = False,
        device: str | torch.device | None = "auto",
        compile: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        sample_noise: bool = False,
        dtype: torch.dtype = torch.float32,
        log_every: int = 50,
        callback: Callable[[dict], None] | None = None,
    ):
        if batch_size < 1 or accumulate < 1:
            raise ValueError("batch_size and accumulate must be >= 1")
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs a checkpoint_dir")
        self.info = init_distributed(device)
        self.train_config = train_config
        self.batch_size, self.accumulate = int(batch_size), int(accumulate)
        self.epochs, self.max_steps = int(epochs), max_steps
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.resume = resume
        self.seed = int(seed)
        self.log_every = max(int(log_every), 1)
        self.callback = callback
        torch.manual_seed(self.seed)
        if isinstance(network, MSSTCN):
            model = network
        else:
            model = MSSTCN(network)
        self.model = model.to(self.info.device, dtype)
        self.network_config = model.config
        self.trainer = Trainer(self.model, train_config, self.info.device)
        self.step_fn = TrainStep(
            self.model,
            train_config,
            self.info,
            compile=compile,
            seed=self.seed,
            sample_noise=sample_noise,
        )
        self.trainer.optimizer = self.step_fn.optimizer
        self.sampler = _EpochSampler(train_dataset, self.info, self.seed)
        self.train_dataset = train_dataset
        pin = self.info.device.type == "cuda"
        self.loader = DataLoader(
            _Indexed(train_dataset),
            batch_size=self.batch_size,
            sampler=self.sampler,
            collate_fn=collate_batch,
            num_workers=num_workers,
            pin_memory=pin,
            drop_last=True,
        )
        self.steps_per_epoch = len(self.sampler) // self.batch_size // self.accumulate
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"an epoch needs batch_size * accumulate * world_size = "
                f"{self.global_batch} sequences, the dataset has {len(train_dataset)}"
            )
        self.valid_loader = None
        if valid_dataset is not None:
            shard = range(self.info.rank, len(valid_dataset), self.info.world_size)
            self.valid_loader = DataLoader(
                _Indexed(valid_dataset),
                batch_size=self.batch_size,
                sampler=list(shard),
                collate_fn=collate_batch,
                num_workers=num_workers,
                pin_memory=pin,
            )
        self.epoch, self.step_in_epoch = 0, 0
        self.best_valid_elbo: float | None = None
        self.history: list[dict] = []
        self.last_checkpoint: Path | None = None
        self._t0 = time.perf_counter()
        self._window_start = (0, self._t0)

    @property
    def global_batch(self) -> int:
        """Sequences per optimiser step over all processes."""
        return self.batch_size * self.accumulate * self.info.world_size

    @property
    def step(self) -> int:
        """Optimiser steps attempted."""
        return self.step_fn.step

    def _done(self) -> bool:
        if self.max_steps is not None and self.step >= self.max_steps:
            return True
        return self.epoch >= self.epochs

    # ----------------------------------------------------------------- run
    def run(self) -> TrainingResult:
        """Train until ``max_steps`` or ``epochs``; checkpoint at the end."""
        if self.resume:
            self._restore()
        logger.info(
            "training on %d process(es), %s; %d sequences per step, %d steps per epoch",
            self.info.world_size,
            self.info.device,
            self.global_batch,
            self.steps_per_epoch,
        )
        heads = float32_heads if self.step_fn.autocast else contextlib.nullcontext
        with heads(self.model):
            while not self._done():
                self._run_epoch()
        self._checkpoint()
        self._sync_trainer()
        return TrainingResult(
            self.model,
            self.trainer,
            self.history,
            self.last_checkpoint,
            self.best_valid_elbo,
        )

    def _run_epoch(self) -> None:
        consumed = self.step_in_epoch * self.accumulate * self.batch_size
        self.sampler.set_epoch(self.epoch, skip=consumed)
        if hasattr(self.train_dataset, "set_epoch"):
            self.train_dataset.set_epoch(self.epoch)
        micro: list[tuple] = []
        for batch in self.loader:
            micro.append(batch)
            if len(micro) < self.accumulate:
                continue
            self.step_fn(micro)
            micro = []
            self.step_in_epoch += 1
            end = self.step_in_epoch >= self.steps_per_epoch
            if self.step % self.log_every == 0:
                self._log()
            if end:
                self._end_epoch()
            every = self.checkpoint_every
            if every and self.step % every == 0 and not self._done():
                self._checkpoint()
            if end or self._done():
                return
        self._end_epoch()  # the loader ran dry (a dataset that shrank)

    def _end_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0
        row = {"epoch": self.epoch, "step": self.step}
        if self.valid_loader is not None:
            val = self.evaluate()
            row.update({f"valid_{k}": v for k, v in val.items()})
            if self.best_valid_elbo is None or val["elbo"] > self.best_valid_elbo:
                self.best_valid_elbo = val["elbo"]
                if self.info.is_main and self.checkpoint_dir is not None:
                    atomic_torch_save(
                        self._model_payload(), self.checkpoint_dir / "best.pt"
                    )
        self._emit(row)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Validation ELBO terms per sequence, over every process's shard.

        Returns
        -------
        dict
            ``elbo``, ``log_lik``, ``kl`` (nats per sequence) and
            ``elbo_per_step``.
        """
        self.model.eval()
        torch.manual_seed(_mix_seed(self.seed, self.step, self.info.rank, 2))
        dev, dtype = self.info.device, next(self.model.parameters()).dtype
        sums = torch.zeros(5, dtype=torch.float64, device=dev)
        for _, y, u, lengths in self.valid_loader:
            y = y.to(dev, dtype, non_blocking=True)
            u = None if u is None else u.to(dev, dtype, non_blocking=True)
            lengths = None if lengths is None else lengths.to(dev, non_blocking=True)
            with torch.autocast(
                dev.type, torch.bfloat16, enabled=self.step_fn.autocast
            ):
                out = self.model(y, u, lengths, latent="posterior")
            t = elbo_terms(out)
            parts = [t["elbo"], t["log_lik"], t["kl"], t["n_steps"]]
            sums[:4] += torch.stack([p.double().sum() for p in parts])
            sums[4] += y.shape[0]
        self.model.train()
        if self.info.is_distributed:
            dist.all_reduce(sums)
        n = max(float(sums[4]), 1.0)
        res = {k: float(sums[i]) / n for i, k in enumerate(("elbo", "log_lik", "kl"))}
        res["elbo_per_step"] = float(sums[0]) / max(float(sums[3]), 1.0)
        return res

    # ------------------------------------------------------------- logging
    def _log(self) -> None:
        row = self.step_fn.pop_stats()
        steps0, t0 = self._window_start
        now = time.perf_counter()
        rate = (self.step - steps0) / max(now - t0, 1e-9)
        self._window_start = (self.step, now)
        row.update(
            step=self.step,
            epoch=self.epoch,
            steps_per_s=rate,
            sequences_per_s=rate * self.global_batch,
            elapsed_s=now - self._t0,
        )
        if row["skipped"] >= max(3, (self.step - steps0 + 1) // 2):
            self.step_fn.lr_scale *= 0.5
            row["lr_scale"] = self.step_fn.lr_scale
            warnings.warn(
                f"{row['skipped']} of the last {self.step - steps0} steps had a "
                f"non-finite loss or gradient: learning rate factor lowered to "
                f"{self.step_fn.lr_scale:g}",
                RuntimeWarning,
                stacklevel=2,
            )
        self._emit(row)

    def _emit(self, row: dict) -> None:
        if not self.info.is_main:
            return
        self.history.append(row)
        logger.info("%s", json.dumps(row))
        if self.checkpoint_dir is not None:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            with open(self.checkpoint_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
        if self.callback is not None:
            self.callback(row)

    # --------------------------------------------------------- checkpoints
    def _sync_trainer(self) -> None:
        # a stale skip flag would make later Trainer.train_step calls no-ops
        self.step_fn.optimizer.found_inf = None
        self.trainer.iteration = self.step_fn.iteration
        self.trainer.n_skipped = self.step_fn.n_skipped
        self.trainer.lr_scale = self.step_fn.lr_scale
        self.trainer.optimizer = self.step_fn.optimizer

    def _model_payload(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "network_config": self.network_config.to_dict(),
            "model": self.model.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "best_valid_elbo": self.best_valid_elbo,
        }

    def state_dict(self) -> dict:
        """Everything needed to resume (readable by ``Trainer.load_state_dict``).

        Returns
        -------
        dict
            The :meth:`~sysid_msstcn.training.Trainer.state_dict` keys
            (weights, optimiser, iteration, skipped steps, learning-rate
            factor, free-bits threshold, RNG) plus ``network_config``,
            ``train_config``, ``step``, ``epoch``, ``step_in_epoch``,
            ``sampler_epoch``, ``scheduler``, ``rng_per_rank``,
            ``world_size``, ``global_batch``, ``seed``.
        """
        self._sync_trainer()
        state = self.trainer.state_dict()
        state["optimizer"]["param_groups"] = [
            {**g, "lr": float(g["lr"])} for g in state["optimizer"]["param_groups"]
        ]
        train = asdict(self.train_config)
        state.update(
            self._model_payload(),
            train_config=train,
            step_in_epoch=self.step_in_epoch,
            sampler_epoch=self.epoch,
            scheduler={
                "learning_rate": self.trainer.learning_rate,
                "lr_scale": self.step_fn.lr_scale,
                "iteration": self.trainer.iteration,
            },
            rng_per_rank=self._gather_rng(),
            world_size=self.info.world_size,
            global_batch=self.global_batch,
            seed=self.seed,
        )
        return state

    def _gather_rng(self) -> list[dict]:
        mine = _rng_state()
        if not self.info.is_distributed:
            return [mine]
        out: list = [None] * self.info.world_size
        dist.all_gather_object(out, mine)
        return out

    def _checkpoint(self) -> None:
        if self.checkpoint_dir is None:
            return
        state = self.state_dict()  # collective: every rank takes part
        if self.info.is_main:
            self.last_checkpoint = save_checkpoint(
                state, self.checkpoint_dir, self.step, self.keep_checkpoints
            )
            logger.info("checkpoint %s", self.last_checkpoint)

    def _restore(self) -> None:
        state = load_latest_checkpoint(self.checkpoint_dir)
        if state is None:
            logger.info("no checkpoint in %s: starting afresh", self.checkpoint_dir)
            return
        saved = config_from_dict(state["network_config"])
        if saved != self.network_config:
            raise ValueError(
                f"{state['path']} holds another network configuration: {saved}"
            )
        self.trainer.load_state_dict(state)
        self.step_fn.optimizer.param_groups[0]["lr"] = self.step_fn._lr
        self.step_fn.set_counters(state["step"], state["n_skipped"], state["lr_scale"])
        self.epoch = int(state["epoch"])
        self.best_valid_elbo = state.get("best_valid_elbo")
        consumed = int(state["step_in_epoch"]) * int(state["global_batch"])
        self.step_in_epoch = consumed // self.global_batch
        ranks = state["rng_per_rank"]
        if len(ranks) == self.info.world_size:
            _set_rng_state(ranks[self.info.rank])
        else:
            warnings.warn(
                f"resuming {len(ranks)}-process checkpoint with "
                f"{self.info.world_size} processes: random streams differ",
                RuntimeWarning,
                stacklevel=3,
            )
        self.last_checkpoint = Path(state["path"])
        self._window_start = (self.step, time.perf_counter())
        if self.info.is_main:
            _truncate_log(self.checkpoint_dir / "log.jsonl", self.step)
        logger.info("resumed from %s at step %d", state["path"], self.step)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint a run resumes from."""
    if not path.exists():
        return
    rows = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in rows if json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in kept))


def fit_distributed(
    network: NetworkConfig | MSSTCN,
    train_config: TrainConfig,
    train_dataset: Dataset,
    valid_dataset: Dataset | None = None,
    **options: Any,
) -> TrainingResult:
    """Train an MS-STCN, data-parallel when launched by ``torchrun``.

    Every process calls this function with the same arguments; each reads
    its shard of ``train_dataset``. A single process (no ``torchrun``) runs
    the same loop without DistributedDataParallel.

    Parameters
    ----------
    network : NetworkConfig or MSSTCN
        A configuration or a model to continue training.
    train_config : TrainConfig
    train_dataset : torch.utils.data.Dataset
    valid_dataset : torch.utils.data.Dataset, optional
    **options
        Keyword arguments of :class:`TrainingRun`: ``batch_size``
        (required, per process), ``epochs``, ``max_steps``, ``accumulate``,
        ``checkpoint_dir``, ``checkpoint_every``, ``keep_checkpoints``,
        ``resume``, ``device``, ``compile``, ``num_workers``, ``seed``,
        ``sample_noise``, ``dtype``, ``log_every``, ``callback``.

    Returns
    -------
    TrainingResult

    Examples
    --------
    >>> from sysid_msstcn.config import NetworkConfig, TrainConfig
    >>> cfg = NetworkConfig(n_outputs=1, channels=(4, 4), latent_dims=(1, 1),
    ...                     strides=(1, 2), dilations=((1,), (1,)))
    >>> data = synthetic_dataset(cfg, n_sequences=8, length=16)
    >>> res = fit_distributed(cfg, TrainConfig(), data, batch_size=4,
    ...                       device="cpu")
    >>> res.trainer.iteration
    2
    """
    if train_config.ema_decay:
        raise ValueError(
            "ema_decay is not supported by fit_distributed (its checkpoints hold "
            "no averaged weights); MSSTCNRegressor(ema_decay=...) averages"
        )
    run = TrainingRun(network, train_config, train_dataset, valid_dataset, **options)
    return run.run()
