"""Training loop core: steps, schedules, evaluation, history and checkpoints.

The loop is layered: the estimator (or the command line) calls
:meth:`Trainer.train_step` on batches and :meth:`Trainer.evaluate` on
validation batches; each returns a dictionary of floats. The learning rate
and the free-bits threshold are pure functions of the iteration count.

With ``data_parallel=True`` (an initialised :mod:`torch.distributed` process
group) every process passes the same *global* batch to
:meth:`Trainer.train_step`, draws the noise of the whole batch from the same
random stream, and trains on its contiguous slice of it through
:class:`~torch.nn.parallel.DistributedDataParallel`; one step then equals a
one-process step on the global batch.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .config import TrainConfig
from .model import MSSTCN
from .objectives import free_bits_threshold, training_loss
from .rollout import rollout_loss

__all__ = [
    "Batch",
    "History",
    "Trainer",
    "atomic_torch_save",
    "learning_rate_at",
    "load_checkpoint",
    "make_batch",
    "make_optimizer",
]

logger = logging.getLogger(__name__)

# optimiser settings that come from the config, not from a loaded state
_DECAY_KEYS = ("weight_decay", "decoupled_weight_decay")


def make_optimizer(params, config: TrainConfig, **options) -> torch.optim.Optimizer:
    """The optimiser of a training config: Adam, or AdamW with weight decay.

    Parameters
    ----------
    params : iterable of torch.nn.Parameter
    config : TrainConfig
        ``learning_rate`` and ``weight_decay`` (decoupled, AdamW, when
        > 0; 0 gives plain Adam).
    **options
        Further keyword arguments of the optimiser (``fused=True``, say).

    Returns
    -------
    torch.optim.Optimizer
    """
    opt = torch.optim.AdamW if config.weight_decay > 0 else torch.optim.Adam
    return opt(
        params, lr=config.learning_rate, weight_decay=config.weight_decay, **options
    )


@dataclass
class Batch:
    """A training batch in model layout.

    Attributes
    ----------
    y : torch.Tensor of shape (B, C_y, T)
    u : torch.Tensor of shape (B, C_u, T) or None
    lengths : torch.Tensor of shape (B,) or None
    """

    y: torch.Tensor
    u: torch.Tensor | None = None
    lengths: torch.Tensor | None = None

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        """Move the batch to a device."""

        def mv(t):
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(mv(self.y), mv(self.u), mv(self.lengths))


def make_batch(
    windows_y: list[np.ndarray],
    windows_u: list[np.ndarray] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Batch:
    """Stack time-major windows into a zero-padded :class:`Batch`.

    Parameters
    ----------
    windows_y : list of ndarray of shape (T_i, C_y)
    windows_u : list of ndarray of shape (T_i, C_u), optional
    dtype : torch.dtype, default=torch.float32

    Returns
    -------
    Batch
        ``lengths`` is set only when the windows differ in length.
    """
    lengths = [w.shape[0] for w in windows_y]
    T = max(lengths)

    def stack(ws):
        out = np.zeros((len(ws), ws[0].shape[1], T))
        for i, w in enumerate(ws):
            out[i, :, : w.shape[0]] = w.T
        return torch.as_tensor(out, dtype=dtype)

    y = stack(windows_y)
    u = None if windows_u is None else stack(windows_u)
    lens = None if len(set(lengths)) == 1 else torch.as_tensor(lengths)
    return Batch(y, u, lens)


def learning_rate_at(config: TrainConfig, iteration: int, scale: float = 1.0) -> float:
    """Exponentially decayed learning rate after ``iteration`` steps.

    Parameters
    ----------
    config : TrainConfig
    iteration : int
    scale : float, default=1.0
        Extra factor (lowered after a divergence).

    Returns
    -------
    float
        ``scale * lr * lr_decay ** (iteration / lr_decay_steps)``.
    """
    return (
        scale
        * config.learning_rate
        * config.lr_decay ** (iteration / config.lr_decay_steps)
    )


@dataclass
class History:
    """Per-epoch records of a training run (a list of dictionaries)."""

    rows: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)

    def append(self, row: dict) -> None:
        """Add one epoch's row."""
        self.rows.append(dict(row))

    def column(self, key: str) -> list:
        """Values of one key across epochs (None where missing)."""
        return [row.get(key) for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx):
        return self.rows[idx]


class Trainer:
    """Optimises an :class:`MSSTCN` with Adam, linear free bits and safeguards.

    Parameters
    ----------
    model : MSSTCN
        The network, already on its device.
    config : TrainConfig
    device : torch.device
    data_parallel : bool, default=False
        Train data-parallel over the default :mod:`torch.distributed`
        process group (see :meth:`train_step`). The model is wrapped in
        :class:`~torch.nn.parallel.DistributedDataParallel` for the training
        forward pass only; ``model``, :meth:`evaluate`, :meth:`snapshot` and
        the state dicts use the bare network.

    Attributes
    ----------
    rank, world_size : int
        This process's place in the process group (0 and 1 without
        ``data_parallel``).
    iteration : int
        Optimiser steps taken (skipped steps excluded).
    n_skipped : int
        Steps skipped because the loss or the gradients were not finite.
    lr_scale : float
        Extra learning-rate factor, lowered after divergences.
    average : torch.optim.swa_utils.AveragedModel or None
        The exponential moving average of the weights when
        ``config.ema_decay`` > 0 (updated after every step taken, starting
        from the weights of the first one); see :meth:`averaged`.
    """

    def __init__(
        self,
        model: MSSTCN,
        config: TrainConfig,
        device: torch.device,
        *,
        data_parallel: bool = False,
    ):
        self.model = model
        self.config = config
        self.device = device
        self.optimizer = make_optimizer(model.parameters(), config)
        self.iteration = 0
        self.n_skipped = 0
        self.consecutive_bad = 0
        self.lr_scale = 1.0
        self.loss_hook = None  # test seam: callable(loss, iteration) -> loss
        self.average = None
        if config.ema_decay > 0:
            self.average = AveragedModel(
                model,
                multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                use_buffers=True,
            )
        self.rank, self.world_size = 0, 1
        self._forward = model  # what the training step calls
        self._comm_device = device  # where flags and sums are all-reduced
        if data_parallel:
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
            ids = [device.index] if device.type == "cuda" else None
            self._forward = DistributedDataParallel(model, device_ids=ids)
            if dist.get_backend() == "gloo":
                self._comm_device = torch.device("cpu")

    def release(self) -> None:
        """Drop the DistributedDataParallel wrapper (after the last step)."""
        self._forward = self.model

    @property
    def threshold(self) -> float:
        """Current free-bits threshold (nats per latent element)."""
        cfg = self.config
        return free_bits_threshold(
            self.iteration, cfg.free_bits, cfg.free_bits_half_life
        )

    @property
    def learning_rate(self) -> float:
        """Current learning rate."""
        return learning_rate_at(self.config, self.iteration, self.lr_scale)

    def _autocast(self):
        if self.config.mixed_precision and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, batch: Batch) -> dict:
        """One optimiser step on a batch; non-finite steps are skipped.

        Data-parallel, ``batch`` is the global batch, the same on every
        process: the input noise and the posterior noise are drawn for the
        whole batch (the same random numbers as one process would draw), and
        this process computes the loss, the mean over its contiguous slice
        of ``B / world_size`` sequences, whose gradients
        DistributedDataParallel averages. A step is skipped on every process
        when the loss or the gradient norm is not finite on any of them, and
        the returned terms are averaged over the processes.

        Parameters
        ----------
        batch : Batch
            On any device (moved to the trainer's device).

        Returns
        -------
        dict
            ``loss`` (the minimised objective: free-bits ELBO plus the
            weighted rollout term, per sequence), ``elbo``,
            ``log_lik``, ``kl`` (per sequence), ``kl_per_level`` (list),
            ``n_steps`` (valid steps per sequence), ``skipped`` (bool),
            ``lr``, ``threshold``; ``rollout`` (the simulation-error term
            per sequence) when ``config.rollout_steps`` > 0.
        """
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate
        threshold = self.threshold
        if self.world_size > 1:
            batch, y_in, noise = self._shard(batch)
        else:
            batch = batch.to(self.device, non_blocking=True)
            y_in, noise = None, None
            if self.config.input_noise > 0:
                y_in = batch.y + self.config.input_noise * torch.randn_like(batch.y)
        with self._autocast():
            out = self._forward(
                batch.y,
                batch.u,
                batch.lengths,
                latent="posterior",
                noise=noise,
                y_input=y_in,
            )
        loss, terms = training_loss(out, threshold, self.config.objective)
        cfg = self.config
        if cfg.rollout_steps:
            # the bare network: DistributedDataParallel expects one forward
            # per backward; the gradients still meet in the same leaves, so
            # the all-reduce of the wrapper's pass carries them
            with self._autocast():
                sim = rollout_loss(
                    self.model,
                    batch.y,
                    batch.u,
                    batch.lengths,
                    cfg.rollout_steps,
                    cfg.rollout_loss,
                    cfg.rollout_gradient,
                )
            terms["rollout"] = sim
            loss = loss + cfg.rollout_weight * sim.mean()
        if self.loss_hook is not None:
            loss = self.loss_hook(loss, self.iteration)
        self.optimizer.zero_grad(set_to_none=True)
        skipped = self._on_any_rank(not bool(torch.isfinite(loss)))
        if not skipped:
            loss.backward()
            params = [p for p in self.model.parameters() if p.grad is not None]
            clip = self.config.grad_clip if self.config.grad_clip else math.inf
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
            skipped = self._on_any_rank(not bool(torch.isfinite(norm)))
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self.n_skipped += 1
            self.consecutive_bad += 1
        else:
            self.optimizer.step()
            self.iteration += 1
            self.consecutive_bad = 0
            if self.average is not None:
                self.average.update_parameters(self.model)
        row = self._step_terms(loss, terms)
        row.update(
            skipped=skipped,
            lr=self.optimizer.param_groups[0]["lr"],
            threshold=threshold,
        )
        return row

    def _shard(self, batch: Batch) -> tuple:
        """Slice of a global batch for this process, with its input and latent noise.

        The noise is drawn for the global batch in the order the model draws
        it (input noise, then the latent levels top-down), so that every
        process consumes the random stream as a one-process step would.
        """
        B, _, T = batch.y.shape
        if B % self.world_size:
            raise ValueError(
                f"the batch of {B} sequences cannot be split evenly over "
                f"{self.world_size} processes"
            )
        n = B // self.world_size
        rows = slice(self.rank * n, (self.rank + 1) * n)
        dtype = next(self.model.parameters()).dtype
        eps_y = None
        if self.config.input_noise > 0:  # as torch.randn_like(batch.y)
            eps_y = torch.randn(batch.y.shape, dtype=batch.y.dtype, device=self.device)
        shapes = self.model.latent_shapes(B, T)
        noise: list[torch.Tensor | None] = [None] * len(shapes)
        for level in reversed(range(len(shapes))):
            if self.model.top_down[level].use_latents:
                eps = torch.randn(shapes[level], dtype=dtype, device=self.device)
                noise[level] = eps[rows]
        local = Batch(
            batch.y[rows],
            None if batch.u is None else batch.u[rows],
            None if batch.lengths is None else batch.lengths[rows],
        ).to(self.device, non_blocking=True)
        y_in = None
        if eps_y is not None:
            y_in = local.y + self.config.input_noise * eps_y[rows]
        return local, y_in, noise

    def _on_any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process (a collective when parallel)."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([float(flag)], device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _step_terms(self, loss: torch.Tensor, terms: dict) -> dict:
        """Step terms as floats, averaged over the processes when parallel."""
        if self.world_size == 1:
            return {**_summarise(terms), "loss": float(loss.detach())}
        extra = ("rollout",) if "rollout" in terms else ()
        names = ("loss", *_TERMS, "n_steps", *extra)
        parts = [
            loss.detach().reshape(1),
            *(terms[k].detach().mean().reshape(1) for k in _TERMS),
            terms["n_steps"].float().mean().reshape(1),
            *(terms[k].detach().mean().reshape(1) for k in extra),
            terms["kl_per_level"].detach().mean(0),
        ]
        t = torch.cat([p.double() for p in parts]).to(self._comm_device)
        dist.all_reduce(t)
        values = (t / self.world_size).tolist()
        row = dict(zip(names, values[: len(names)], strict=True))
        row["kl_per_level"] = values[len(names) :]
        return row

    @torch.no_grad()
    def evaluate(self, batches: list[Batch]) -> dict:
        """Average ELBO terms per sequence over batches (posterior latents).

        Parameters
        ----------
        batches : list of Batch

        Returns
        -------
        dict
            ``elbo``, ``log_lik``, ``kl`` (nats per sequence, averaged over
            sequences), ``elbo_per_step``, ``kl_per_level`` (list, bottom
            first), ``n_sequences``.
        """
        self.model.eval()
        sums: dict = {}
        n_seq, n_steps = 0, 0.0
        for batch in batches:
            batch = batch.to(self.device)
            with self._autocast():
                out = self.model(batch.y, batch.u, batch.lengths, latent="posterior")
            _, terms = training_loss(out, 0.0, "elbo")
            for key in ("elbo", "log_lik", "kl"):
                sums[key] = sums.get(key, 0.0) + float(terms[key].sum())
            kl_lv = terms["kl_per_level"].sum(0).double().cpu().numpy()
            sums["kl_per_level"] = sums.get("kl_per_level", 0.0) + kl_lv
            n_seq += terms["elbo"].shape[0]
            n_steps += float(terms["n_steps"].sum())
        res = {k: v / max(n_seq, 1) for k, v in sums.items()}
        res["kl_per_level"] = [float(v) for v in np.atleast_1d(res["kl_per_level"])]
        res["elbo_per_step"] = sums.get("elbo", 0.0) / max(n_steps, 1.0)
        res["n_sequences"] = n_seq
        return res

    # -------------------------------------------------------------- state
    @contextlib.contextmanager
    def averaged(self):
        """Run a block with the averaged weights in the model.

        Without weight averaging (or before the first step) the block sees
        the weights as they are. The training weights are put back when the
        block ends, so evaluating or taking a :meth:`snapshot` inside it
        does not disturb training.
        """
        if self.average is None or int(self.average.n_averaged) == 0:
            yield
            return
        live = copy.deepcopy(self.model.state_dict())
        self.model.load_state_dict(self.average.module.state_dict())
        try:
            yield
        finally:
            self.model.load_state_dict(live)

    def snapshot(self) -> dict:
        """Copy of the model and optimiser state (kept in memory)."""
        snap = {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "iteration": self.iteration,
        }
        if self.average is not None:
            snap["average"] = copy.deepcopy(self.average.state_dict())
        return snap

    def load_optimizer_state(self, state: dict) -> None:
        """Load the optimiser's moments, keeping this trainer's weight decay.

        ``torch.optim.Optimizer.load_state_dict`` also restores the saved
        hyperparameters; the weight decay of the state's optimiser (plain
        Adam when it was 0) would then silently override ``weight_decay`` of
        this trainer's config, for example in a warm-started fit with a new
        ``weight_decay``. The learning rate is set at every step anyway.

        Parameters
        ----------
        state : dict
            ``optimizer.state_dict()`` of a trainer of the same model.
        """
        own = [
            {k: g[k] for k in _DECAY_KEYS if k in g}
            for g in self.optimizer.param_groups
        ]
        self.optimizer.load_state_dict(state)
        for group, settings in zip(self.optimizer.param_groups, own, strict=True):
            group.update(settings)

    def restore(self, snap: dict) -> None:
        """Restore a :meth:`snapshot`."""
        self.model.load_state_dict(snap["model"])
        self.load_optimizer_state(snap["optimizer"])
        self.iteration = snap["iteration"]
        self.consecutive_bad = 0
        if self.average is not None and "average" in snap:
            self.average.load_state_dict(snap["average"])

    def state_dict(self) -> dict:
        """Everything needed to resume: weights, optimiser, counters, RNG."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "n_skipped": self.n_skipped,
            "lr_scale": self.lr_scale,
            "threshold": self.threshold,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": _numpy_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.load_optimizer_state(state["optimizer"])
        self.iteration = int(state["iteration"])
        self.n_skipped = int(state.get("n_skipped", 0))
        self.lr_scale = float(state.get("lr_scale", 1.0))
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"].cpu())
        if "numpy_rng" in state:
            _set_numpy_state(state["numpy_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


_TERMS = ("elbo", "log_lik", "kl")


def _summarise(terms: dict) -> dict:
    row = {
        "elbo": float(terms["elbo"].detach().mean()),
        "log_lik": float(terms["log_lik"].detach().mean()),
        "kl": float(terms["kl"].detach().mean()),
        "kl_per_level": [float(v) for v in terms["kl_per_level"].detach().mean(0)],
        "n_steps": float(terms["n_steps"].float().mean()),
    }
    if "rollout" in terms:
        row["rollout"] = float(terms["rollout"].detach().mean())
    return row


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.as_tensor(keys.astype(np.int64)),
        "pos": pos,
        "has_gauss": has_gauss,
        "cached": cached,
    }


def _set_numpy_state(state: dict) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (state["name"], keys, state["pos"], state["has_gauss"], state["cached"])
    )


def atomic_torch_save(obj: dict, path: str | os.PathLike) -> None:
    """Write a checkpoint atomically (temporary file, then rename).

    Parameters
    ----------
    obj : dict
        Tensors, numbers, strings and containers of them only.
    path : str or path-like
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_CODE_OPCODES = frozenset(
    {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}
)


def _pickle_imports(path: str | os.PathLike) -> str | None:
    """What a plain pickle file would import or call (None if it would not).

    The opcodes are only listed with :func:`pickletools.genops`, which never
    executes them. Returns a short description (``"posix.system"``, or the
    opcode name when the target is not spelled out) of the first opcode that
    imports a global or calls an object, provided the file holds a complete
    pickle (up to its STOP opcode); None when it is not a complete pickle
    (torn or random bytes) or holds only plain data.
    """
    import pickletools

    strings: list[str] = []
    found = None
    try:
        with open(path, "rb") as fh:
            for opcode, arg, _ in pickletools.genops(fh):
                if isinstance(arg, str):
                    strings = [*strings[-1:], arg]
                if found is None and opcode.name in _CODE_OPCODES:
                    found = opcode.name
                    if opcode.name in ("GLOBAL", "INST") and arg:
                        found = str(arg).replace(" ", ".")
                    elif opcode.name == "STACK_GLOBAL" and len(strings) == 2:
                        found = ".".join(strings)
    except Exception:  # noqa: BLE001 - not a complete pickle
        return None
    return found


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint without executing pickled code.

    The file is read with ``torch.load(weights_only=True)``: only tensors,
    numbers, strings and containers of them are accepted. Nothing in the file
    is ever executed.

    Parameters
    ----------
    path : str or path-like
    map_location : default="cpu"

    Returns
    -------
    dict

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    sysid_msstcn.exceptions.UnsafeFileError
        When the file holds anything but tensors and plain containers (a
        pickled object whose loading would import a module or call a
        function); the message names the file and, when known, the global.
    sysid_msstcn.exceptions.DataFormatError
        When the file is empty, truncated or not a checkpoint at all; the
        message names the file.
    """
    import pickle
    import re

    from .exceptions import DataFormatError, UnsafeFileError

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds
        msg = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", msg)
        if found or "Unsupported global" in msg:
            what = found.group(1) if found else "a global"
            raise UnsafeFileError(
                f"{path}: refusing to load a checkpoint that needs pickled code "
                f"(it would import {what}); only tensors and plain data are allowed"
            ) from exc
        target = _pickle_imports(path)
        if target is not None:
            raise UnsafeFileError(
                f"{path}: refusing to load a pickle that would execute code "
                f"({target}); only tensors and plain data are allowed"
            ) from exc
        if isinstance(exc, pickle.UnpicklingError) or "weights_only" in msg:
            detail = "not a tensor checkpoint readable without unpickling code"
        else:
            detail = exc.__class__.__name__
            if msg.strip():
                detail += ": " + msg.strip().splitlines()[0][:200]
        raise DataFormatError(
            f"{path}: not a readable checkpoint (empty, truncated or corrupt; {detail})"
        ) from exc
