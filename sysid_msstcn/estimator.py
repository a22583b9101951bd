"""MSSTCNRegressor: the scikit-learn estimator around the MS-STCN model.

``fit`` trains data-parallel when launched on several processes (``torchrun``
or an initialised :mod:`torch.distributed` process group, see the
``distributed`` parameter): every process draws the same global batch of
windows and the same noise, trains on its slice of it through
DistributedDataParallel, and takes the end-of-epoch decisions (validation,
early stopping, roll-backs, ``max_time``) from rank 0.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from . import _persistence
from ._estimator_params import DEFAULTS, PARAM_CHECKS, is_int, is_real
from ._inputs import empty_columns, feature_names, holds_outputs, ndim, x_items
from ._progress import epoch_row, progress
from ._utils import check_random_state_seed, resolve_device
from ._windows import ChannelScaler, sample_windows, split_tails
from .config import (
    NetworkConfig,
    TrainConfig,
)
from .data._validation import as_experiments, check_consistent_channels
from .distributed import DistributedInfo, init_distributed
from .exceptions import ConvergenceWarning, DivergenceWarning
from .model import MSSTCN
from .objectives import elbo_terms
from .presets import get_preset
from .streaming import simulate as stream_simulate
from .training import Batch, Trainer, make_batch

__all__ = ["MSSTCNRegressor"]

_MAX_ROLLBACKS = 5
# set by torchrun for every worker; together they describe the process group
_TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class MSSTCNRegressor(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """MS-STCN system-identification model with a scikit-learn interface.

    A multiscale stochastic temporal convolutional network (Andersson,
    Wahlström and Schön, 2021) that models p(y_t | y_<t, u_<=t, z) with a
    hierarchy of latent variables, each level at a slower time scale. Rows
    of ``X`` and ``y`` are time steps.

    Parameters
    ----------
    preset : str or None, default=None
        Named configuration (see :mod:`sysid_msstcn.presets`). Parameters
        left at None take the preset's value, then the built-in default.
    channels, latent_dims, strides : tuple of int or None
        Per-level filters, latent dimensions and downsampling factors
        (bottom level first); default (32,)*4, (4,)*4, (1, 2, 2, 2).
    dilations : tuple of tuple of int or None
        Bottom-up dilations per level.
    kernel_size : int, default=2
        Kernel size of the bottom-up convolutions.
    n_topdown_blocks : int, default=2
        Blocks of each top-down 1x1 Wavenet.
    likelihood : {"gaussian", "gmm", "bernoulli", "gmm_bernoulli"} or None
        Predictive distribution (default "gaussian").
    n_components : int or None
        Mixture components (default 1).
    resampling : {"learned", "fixed"} or None
        The paper's learned resampling (default) or the authors' code's.
    use_latents : bool, default=True
        False gives the deterministic autoregressive control model.
    window : int or None, default=None
        Training window length; None: four receptive fields, at least 128,
        at most 2048 and at most the longest training segment.
    batch_size : int or None, default=None
        Windows per step (default 32).
    max_iter : int, default=40
        Epochs. One epoch draws windows covering about the training data.
    max_time : float or None, default=None
        Wall-clock budget of one ``fit`` in seconds: training stops after
        the epoch in which it is used up (the best epoch's weights are kept,
        as with early stopping) and ``history_events_`` records it. None:
        no limit.
    learning_rate : float or None, default=None
        Adam step size (default 1e-3).
    lr_decay, lr_decay_steps : float, int, default=0.98, 6000
        Exponential learning-rate decay: lr_decay every lr_decay_steps.
    objective : {"linear_free_bits", "elbo"}, default="linear_free_bits"
    free_bits : float or None, default=None
        Initial linear free-bits threshold in nats (default 0.5).
    free_bits_half_life : int, default=300000
    grad_clip : float or None, default=10.0
        Global gradient-norm clipping (None disables it).
    early_stopping : bool, default=True
        Stop when the validation score has not improved for
        ``n_iter_no_change`` epochs and restore the best weights.
    early_stopping_metric : {"auto", "elbo", "simulation"}, default="auto"
        Validation score: the ELBO per step, or minus the RMSE of a free-run
        simulation of each validation tail (warmed up on the measured
        samples before it). "auto" uses the simulation error for models with
        inputs (system identification) and the ELBO otherwise.
    validation_fraction : float, default=0.1
        Tail of each experiment held out for validation (never shuffled).
    n_iter_no_change : int, default=20
    tol : float, default=0.0
        Minimum improvement of the validation ELBO per step (nats).
    n_init : int or None, default=None
        Warm-up length used by :meth:`score`; None: the receptive field.
    normalize : bool, default=True
        Standardise inputs and outputs per channel inside the estimator.
    steps_per_epoch : int or None, default=None
        Optimiser steps per epoch; None: enough windows to cover the
        training data once, and at least 50 steps.
    input_noise : float or "auto", default="auto"
        Standard deviation (normalised units) of Gaussian noise added to the
        outputs fed back into the network during training, which makes free
        simulation robust to the model's own errors (the likelihood still
        scores the clean outputs). "auto": 0.3 for models with inputs
        (system identification, where free-run simulation is the goal) and 0
        for output-only data (density modelling, as in the paper).
    rollout_steps : int, default=0
        k > 0 adds the simulation error to the training loss: the last k
        steps of every training window run free (latents at their prior
        means, predictive means fed back, as in :meth:`predict`) and
        ``rollout_weight`` times ``rollout_loss`` over them is added to the
        one-step objective (see :mod:`sysid_msstcn.rollout`). Keep
        ``window - k`` at least the receptive field, so that the free run
        starts from measured samples like :meth:`predict` after its warm-up
        (a warning says when it does not). 0: the one-step objective alone
        (the paper's training).
    rollout_weight : float, default=1.0
        Weight of the simulation term (the ELBO is in nats per window).
    rollout_loss : {"mse", "nll"}, default="mse"
        Half the squared simulation error in normalised units, or the
        negative log-likelihood of the measured outputs under the free
        run's predictive distribution.
    rollout_gradient : {"full", "last"}, default="full"
        "full" back-propagates through k parallel passes of the simulation
        (about k + 1 forward and backward passes a step, and k graphs in
        memory; keep ``grad_clip`` on); "last" takes the fed-back outputs
        from the streaming simulator as constants and differentiates one
        pass (on one CPU core about 1.5-3 one-step costs for k = 64; the
        model learns to predict from its own outputs, not how its errors
        propagate).
    ema_decay : float, default=0.0
        Average the weights over training: an exponential moving average
        with this decay, updated after every optimiser step (0.99 averages
        over roughly the last 100 steps; 0 turns it off). The averaged
        weights are the ones validated, kept by early stopping and returned;
        a warm-started fit starts a new average from the fitted weights.
    mixed_precision : bool, default=False
        bf16 autocast on CUDA.
    device : str, default="auto"
        "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
    distributed : bool or "auto", default="auto"
        Data-parallel training over several processes (DistributedDataParallel).
        "auto": when a :mod:`torch.distributed` process group of several
        processes is initialised, or when the ``torchrun`` variables
        (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` > 1, ``MASTER_ADDR``,
        ``MASTER_PORT``) are set, in which case the estimator initialises the
        process group itself (NCCL on CUDA, Gloo on the CPU; ``device``
        "auto" or "cuda" then means ``cuda:LOCAL_RANK``). True: the same, but
        an error without a process group or ``torchrun``. False: one
        process. Every process calls ``fit`` with the same data and
        parameters; ``batch_size`` is the global batch and must be divisible
        by the number of processes (see Notes).
    random_state : int, numpy Generator or None, default=None
    warm_start : bool, default=False
        Continue training the fitted network on the next ``fit``. The
        network (architecture, weights, scalers) is kept; the training
        settings are the current ones, so a second ``fit`` after
        ``set_params(rollout_steps=k)`` fine-tunes on the simulation error.
    verbose : int, default=0
        1 shows a progress bar with loss, ELBO and validation ELBO.

    Attributes
    ----------
    model_ : MSSTCN
        The trained network.
    network_config_ : NetworkConfig
    n_features_in_ : int
        Number of input channels (0 for output-only data).
    n_outputs_ : int
    receptive_field_ : int
        Past output samples that a prediction depends on.
    n_init_ : int
        Warm-up length used by :meth:`score`.
    window_ : int
        Training window length used.
    history_ : list of dict
        One row per epoch (nats per sequence unless ``_per_step``):
        ``epoch``, ``loss`` (the minimised objective: free-bits ELBO plus
        ``rollout_weight`` times ``rollout``), ``elbo``,
        ``elbo_per_step``, ``log_lik``, ``kl``, ``kl_per_level``, ``lr``,
        ``threshold`` (free bits), ``n_skipped``, ``seconds``, ``rollout``
        (the simulation-error term, with ``rollout_steps``) and, with a
        validation split, ``val_loss`` (negative validation ELBO),
        ``val_elbo``, ``val_elbo_per_step``, ``val_log_lik``, ``val_kl``,
        ``val_kl_per_level``.
    history_events_ : list of dict
        Divergence roll-backs and interruptions.
    loss_curve_ : list of float
        ``loss`` of every epoch.
    n_iter_ : int
        Epochs run (over all calls of ``fit``/``partial_fit`` since the last
        cold start).
    best_epoch_ : int
        Epoch whose weights were kept (best validation ELBO, or best
        training ELBO without a validation split).
    x_scaler_, y_scaler_ : ChannelScaler
        Per-channel means ``mean_`` and scales ``scale_`` of the inputs and
        outputs (used when ``normalize=True``).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names of ``X`` when it was a DataFrame with string columns.
    output_names_ : tuple of str or None
        Output channel names (DataFrame columns, xarray coordinates).
    device_ : torch.device
    world_size_ : int
        Number of processes that trained in the last ``fit`` or
        ``partial_fit`` call (1 without data parallelism).

    Notes
    -----
    Training draws random windows (``window`` samples, never crossing two
    experiments) and maximises the ELBO of the one-step predictive model,
    with the outputs teacher-forced; the last ``validation_fraction`` of each
    experiment (when long enough) is a contiguous validation tail, never
    shuffled. ``predict`` is free-run simulation from the inputs alone (the standard
    of the nonlinear system-identification benchmarks): the model's own
    predictive means are fed back, latents at their prior means. The first
    ``len(y_init)`` outputs are measured values, returned unchanged.
    ``score`` is the R^2 of that simulation after a warm-up of ``n_init_``
    measured samples taken from the head of ``y``.

    Data-parallel training (``distributed``, e.g. a script calling ``fit``
    launched with ``torchrun --nproc_per_node=N``): every process draws the
    same global batch of ``batch_size`` windows and the same input and
    posterior noise from the same random stream (``random_state`` is taken
    from rank 0 when it is None), and computes the loss on its contiguous
    slice of ``batch_size / N`` windows; DistributedDataParallel averages
    the gradients, so a step equals a one-process step on the global batch.
    Skipped steps, roll-backs, validation, early stopping and ``max_time``
    are decided identically on every process (rank 0's values are
    broadcast), and after ``fit`` every process holds the same fitted
    estimator. Only rank 0 shows the progress bar and warnings; save the
    model from rank 0 alone. A process group that the estimator initialised
    is left initialised for the rest of the script (destroy it with
    :func:`torch.distributed.destroy_process_group` when done).

    Examples
    --------
    >>> import numpy as np
    >>> from sysid_msstcn import MSSTCNRegressor
    >>> rng = np.random.default_rng(0)
    >>> u = rng.normal(size=(300, 1))
    >>> y = np.convolve(u[:, 0], [0.5, 0.3, 0.1])[:300]
    >>> est = MSSTCNRegressor(channels=(8, 8), latent_dims=(2, 2),
    ...                       strides=(1, 2), dilations=((1, 2), (1, 2)),
    ...                       batch_size=8, max_iter=2, steps_per_epoch=5,
    ...                       random_state=0, device="cpu")
    >>> est.fit(u, y).predict(u, y_init=y[:10]).shape
    (300,)
    """

    def __init__(
        self,
        preset: str | None = None,
        *,
        channels: tuple | None = None,
        latent_dims: tuple | None = None,
        strides: tuple | None = None,
        dilations: tuple | None = None,
        kernel_size: int = 2,
        n_topdown_blocks: int = 2,
        likelihood: str | None = None,
        n_components: int | None = None,
        resampling: str | None = None,
        use_latents: bool = True,
        window: int | None = None,
        batch_size: int | None = None,
        max_iter: int = 40,
        max_time: float | None = None,
        learning_rate: float | None = None,
        lr_decay: float = 0.98,
        lr_decay_steps: int = 6000,
        objective: str = "linear_free_bits",
        free_bits: float | None = None,
        free_bits_half_life: int = 300_000,
        grad_clip: float | None = 10.0,
        early_stopping: bool = True,
        early_stopping_metric: str = "auto",
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 20,
        tol: float = 0.0,
        n_init: int | None = None,
        normalize: bool = True,
        steps_per_epoch: int | None = None,
        input_noise: float | str = "auto",
        rollout_steps: int = 0,
        rollout_weight: float = 1.0,
        rollout_loss: str = "mse",
        rollout_gradient: str = "full",
        ema_decay: float = 0.0,
        mixed_precision: bool = False,
        device: str = "auto",
        distributed: bool | str = "auto",
        random_state=None,
        warm_start: bool = False,
        verbose: int = 0,
    ) -> None:
        self.preset = preset
        self.channels = channels
        self.latent_dims = latent_dims
        self.strides = strides
        self.dilations = dilations
        self.kernel_size = kernel_size
        self.n_topdown_blocks = n_topdown_blocks
        self.likelihood = likelihood
        self.n_components = n_components
        self.resampling = resampling
        self.use_latents = use_latents
        self.window = window
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.max_time = max_time
        self.learning_rate = learning_rate
        self.lr_decay = lr_decay
        self.lr_decay_steps = lr_decay_steps
        self.objective = objective
        self.free_bits = free_bits
        self.free_bits_half_life = free_bits_half_life
        self.grad_clip = grad_clip
        self.early_stopping = early_stopping
        self.early_stopping_metric = early_stopping_metric
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.n_init = n_init
        self.normalize = normalize
        self.steps_per_epoch = steps_per_epoch
        self.input_noise = input_noise
        self.rollout_steps = rollout_steps
        self.rollout_weight = rollout_weight
        self.rollout_loss = rollout_loss
        self.rollout_gradient = rollout_gradient
        self.ema_decay = ema_decay
        self.mixed_precision = mixed_precision
        self.device = device
        self.distributed = distributed
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose

    # ------------------------------------------------------------ params
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True
        tags.non_deterministic = False
        return tags

    def _resolved(self) -> dict:
        """Architecture and training values after preset and defaults."""
        out = dict(DEFAULTS)
        if self.preset is not None:
            if not isinstance(self.preset, str):
                raise ValueError(f"preset must be a name, got {self.preset!r}")
            out.update(get_preset(self.preset)["params"])
        for key in DEFAULTS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        for key in ("kernel_size", "n_topdown_blocks", "use_latents"):
            out[key] = getattr(self, key)
        return out

    def _check_params(self) -> None:
        """Check the estimator-level parameters (the configs check the rest)."""
        for name, (ok, what) in PARAM_CHECKS.items():
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"{name} must be {what}, got {value!r}")
        window = self._resolved()["window"]
        if window is not None and not (is_int(window) and window >= 2):
            raise ValueError(f"window must be an int >= 2 or None, got {window!r}")

    def _build_configs(
        self, n_in: int, n_out: int
    ) -> tuple[NetworkConfig, TrainConfig]:
        r = self._resolved()
        net = NetworkConfig(
            n_outputs=n_out,
            n_inputs=n_in,
            channels=tuple(r["channels"]),
            latent_dims=tuple(r["latent_dims"]),
            strides=tuple(r["strides"]),
            dilations=tuple(tuple(d) for d in r["dilations"]),
            kernel_size=r["kernel_size"],
            n_topdown_blocks=r["n_topdown_blocks"],
            likelihood=r["likelihood"],
            n_components=r["n_components"],
            resampling=r["resampling"],
            use_latents=r["use_latents"],
        )
        train = TrainConfig(
            learning_rate=float(r["learning_rate"]),
            lr_decay=self.lr_decay,
            lr_decay_steps=self.lr_decay_steps,
            objective=self.objective,
            free_bits=float(r["free_bits"]),
            free_bits_half_life=self.free_bits_half_life,
            grad_clip=self.grad_clip,
            mixed_precision=self.mixed_precision,
            input_noise=self._input_noise(n_in),
            rollout_steps=self.rollout_steps,
            rollout_weight=float(self.rollout_weight),
            rollout_loss=self.rollout_loss,
            rollout_gradient=self.rollout_gradient,
            ema_decay=float(self.ema_decay),
        )
        bs = r["batch_size"]
        if isinstance(bs, bool) or not isinstance(bs, (int, np.integer)) or bs < 1:
            raise ValueError(f"batch_size must be a positive int, got {bs!r}")
        return net, train

    # -------------------------------------------------------------- data
    def _experiments(self, X, y, *, fitting: bool, y_prefix: bool = False):
        """Validate (X, y) into experiments; X must be 2-D per experiment."""
        for name, obj in (("X", X), ("y", y)):
            if isinstance(obj, (list, tuple)) and len(obj) == 0:
                raise ValueError(f"{name} is an empty list of experiments")
        items = x_items(X)
        if any(ndim(a) == 1 for a in items):
            raise ValueError(
                "Expected a 2D array for X, got a 1D array instead. Reshape your "
                "data with X.reshape(-1, 1) if it has a single input channel "
                "(rows are time steps)"
            )
        if fitting and y is None and not holds_outputs(X):
            raise ValueError(
                "MSSTCNRegressor requires y to be passed, but the target y is None"
            )
        for a in items:
            shape = getattr(a, "shape", None)
            if shape is not None and len(shape) == 2 and shape[1] == 0:
                raise ValueError(
                    f"Found array with 0 feature(s) (shape=({shape[0]}, 0)) while a "
                    "minimum of 1 is required. For output-only data pass X=None"
                    + ("" if fitting else " (or X of shape (n_timesteps, 0))")
                )
        return as_experiments(X, y, min_length=1, y_prefix=y_prefix)

    def _eval_data(self, X, y):
        """Validated (X, y) for scoring methods; output-only models take X=None.

        A model fitted without inputs accepts ``X=None`` or ``X`` of shape
        (n_timesteps, 0) (or a list of those).
        """
        check_is_fitted(self)
        if not self.n_features_in_ and (X is None or empty_columns(X)):
            if y is None:
                raise ValueError("y is required")
            data = as_experiments(None, y)
            if X is not None and len(x_items(X)) != data.n_experiments:
                raise ValueError(
                    f"X has {len(x_items(X))} experiments but y has "
                    f"{data.n_experiments}"
                )
            lengths = [a.shape[0] for a in x_items(X)] if X is not None else None
            if lengths is not None and lengths != data.lengths:
                raise ValueError(
                    f"X and y have different lengths: {lengths} vs {data.lengths}"
                )
        else:
            self._check_feature_names(X)
            data = self._experiments(X, y, fitting=False)
        check_consistent_channels(
            data,
            self.n_features_in_ or None,
            self.n_outputs_,
            estimator_name=type(self).__name__,
        )
        return data

    def _check_feature_names(self, X) -> None:
        names = feature_names(X)
        fitted = getattr(self, "feature_names_in_", None)
        if names is not None and fitted is not None:
            if len(names) != len(fitted) or np.any(names != fitted):
                raise ValueError(
                    "The feature names should match those that were passed during "
                    f"fit: expected {list(fitted)}, got {list(names)}"
                )

    def _scale_in(self, u: np.ndarray | None) -> np.ndarray | None:
        if u is None:
            return None
        return self.x_scaler_.transform(u) if self.normalize else u

    def _scale_out(self, y: np.ndarray) -> np.ndarray:
        return self.y_scaler_.transform(y) if self.normalize else y

    def _unscale_out(self, y: np.ndarray) -> np.ndarray:
        return self.y_scaler_.inverse_transform(y) if self.normalize else y

    def _unscale_std(self, s: np.ndarray) -> np.ndarray:
        return s * self.y_scaler_.scale_ if self.normalize else s

    # --------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Fit the model on one or several experiments.

        Parameters
        ----------
        X : array-like of shape (n_timesteps, n_inputs), list, Dataset or None
            Inputs u (rows are time). A list gives several experiments;
            an xarray Dataset (or list) from :mod:`sysid_msstcn.data`
            carries both u and y. None for output-only data.
        y : array-like of shape (n_timesteps,) or (n_timesteps, n_outputs)
            Outputs (a list for several experiments).

        Returns
        -------
        self : MSSTCNRegressor
        """
        return self._fit(X, y, reset=not (self.warm_start and self._is_fitted()))

    def partial_fit(self, X, y=None):
        """Continue training (``max_iter`` more epochs) or fit if unfitted.

        Parameters
        ----------
        X, y : see :meth:`fit`

        Returns
        -------
        self : MSSTCNRegressor
        """
        return self._fit(X, y, reset=not self._is_fitted())

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

    def _data_parallel(self, reset: bool) -> DistributedInfo | None:
        """The process group to train over (joined if needed), or None.

        ``distributed="auto"`` and True use an initialised process group of
        several processes, else the torchrun variables (joining the group
        they describe); True raises when there is neither. A group or a
        torchrun launch of one process trains as a single process.
        """
        if not isinstance(self.distributed, str) and not self.distributed:
            return None
        group = dist.is_available() and dist.is_initialized()
        env = all(k in os.environ for k in _TORCHRUN_VARIABLES)
        if not (group or env):
            if self.distributed == "auto":
                return None
            missing = [k for k in _TORCHRUN_VARIABLES if k not in os.environ]
            raise ValueError(
                "distributed=True, but torch.distributed has no process group "
                f"and the torchrun variables {missing} are not set: launch the "
                "script with `torchrun --nproc_per_node=N`, call "
                "torch.distributed.init_process_group() before fit, or pass "
                "distributed='auto' or False"
            )
        if group:
            world = dist.get_world_size()
        else:
            try:
                world = int(os.environ["WORLD_SIZE"])
            except ValueError as exc:
                raise ValueError(
                    f"WORLD_SIZE must be an int, got {os.environ['WORLD_SIZE']!r}"
                ) from exc
        if world <= 1:
            return None
        bs = int(self._resolved()["batch_size"])
        if bs % world:
            raise ValueError(
                f"batch_size={bs} must be divisible by the number of processes "
                f"({world}) for data-parallel training: batch_size is the global "
                f"batch, and each process trains on batch_size / {world} windows"
            )
        device = self.device if reset else self.device_
        return init_distributed(device)

    def _check_same_on_all_ranks(self, data, info: DistributedInfo, seed: int) -> int:
        """Rank 0's seed, after checking that every process has the same data.

        A collective: every process of the group must call it. Raises the
        same error on every process when the data differ, so none is left
        waiting in a later collective.
        """
        mine = (
            tuple(data.lengths),
            data.n_inputs or 0,
            data.n_outputs,
            float(sum(np.sum(v, dtype=np.float64) for v in data.y)),
            float(sum(np.sum(v, dtype=np.float64) for v in data.u if v is not None)),
            seed,
        )
        everyone: list = [None] * info.world_size
        dist.all_gather_object(everyone, mine)
        key = repr(mine[:-1])  # repr: NaN sums compare equal
        differ = [r for r, theirs in enumerate(everyone) if repr(theirs[:-1]) != key]
        if differ:
            raise ValueError(
                f"data-parallel fit: process {info.rank} and process {differ[0]} "
                "were given different data (lengths, channels or values); every "
                "process must call fit with the same X and y"
            )
        return everyone[0][-1]

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

    def _validation_score(self, trainer, us, ys, valid_seg, valid_batches) -> float:
        """The early-stopping score of the current weights (higher is better)."""
        if self._stopping_metric() == "simulation":
            sim_rmse = self._validation_rmse(us, ys, valid_seg)
            return -sim_rmse if math.isfinite(sim_rmse) else -math.inf
        return trainer.evaluate(valid_batches)["elbo_per_step"]

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
            trainer.optimizer.load_state_dict(self._trainer_state["optimizer"])
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
                best = (entry, best[1], self.n_iter_)
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
                        if metric == "simulation":
                            sim_rmse = self._validation_rmse(us, ys, valid_seg)
                            row["val_sim_rmse"] = sim_rmse
                            score = -sim_rmse if math.isfinite(sim_rmse) else -math.inf
                    else:
                        score = row["elbo_per_step"]
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

    # ------------------------------------------------------------ predict
    def _predict_data(self, X, y_init):
        """Validated (inputs, lengths, warm-ups, is_list) for prediction."""
        check_is_fitted(self)
        name = type(self).__name__
        if isinstance(X, (list, tuple)) and len(X) == 0:
            raise ValueError("X is an empty list of experiments")
        if X is None:
            raise ValueError(
                "X is None: pass the inputs (or, for a model without inputs, an "
                "array of shape (n_timesteps, 0) giving the length; see also "
                "sample())"
            )
        if not self.n_features_in_ and empty_columns(X):
            items = X if isinstance(X, (list, tuple)) else [X]
            us = [None] * len(items)
            lengths = [int(np.asarray(a).shape[0]) for a in items]
            is_list = isinstance(X, (list, tuple))
        else:
            self._check_feature_names(X)
            data = self._experiments(X, None, fitting=False)
            check_consistent_channels(
                data, self.n_features_in_ or None, None, estimator_name=name
            )
            us, lengths, is_list = data.u, data.lengths, data.is_list
        inits: list[np.ndarray | None] = [None] * len(us)
        if y_init is not None:
            if isinstance(y_init, (list, tuple)) != is_list:
                raise ValueError("y_init must be a list exactly when X is a list")
            items = list(y_init) if is_list else [y_init]
            if len(items) != len(lengths):
                raise ValueError(
                    f"y_init has {len(items)} experiment(s) but X has "
                    f"{len(lengths)}; give one warm-up per experiment"
                )
            inits = []
            for i, (item, n) in enumerate(zip(items, lengths, strict=True)):
                yi = as_experiments(None, item, y_name="y_init").y[0]
                if yi.shape[1] != self.n_outputs_:
                    raise ValueError(
                        f"y_init has {yi.shape[1]} output channels but {name} was "
                        f"fitted with {self.n_outputs_}"
                    )
                if yi.shape[0] > n:
                    raise ValueError(
                        f"y_init of experiment {i} has {yi.shape[0]} samples, longer "
                        f"than the record ({n} samples)"
                    )
                inits.append(yi)
        return us, lengths, inits, is_list

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        if not np.all(np.abs(a) < 3e38):
            raise ValueError(
                "the (normalised) data are too large for float32 computation: "
                "values overflow; check the units and scaling of X and y"
            )
        return torch.as_tensor(a.T[None], dtype=torch.float32, device=self.device_)

    def _run(self, u, y0, n_steps, n_samples, latent, output, generator):
        """Simulate one experiment: returns (y, std) in model units."""
        model = self.model_
        model.eval()
        ut = None if u is None else self._tensor(u).expand(n_samples, -1, -1)
        yt = None
        if y0 is not None and y0.shape[0] > 0:
            yt = self._tensor(y0).expand(n_samples, -1, -1)
        ys, params = stream_simulate(
            model,
            n_steps,
            ut,
            yt,
            latent=latent,
            output=output,
            generator=generator,
            batch=n_samples,
        )
        std = model.likelihood.std(params)
        return (
            ys.permute(0, 2, 1).double().cpu().numpy(),
            std.permute(0, 2, 1).double().cpu().numpy(),
        )

    def _format(self, arrays: list[np.ndarray], is_list: bool):
        out = [a[..., 0] if self.y_1d_ else a for a in arrays]
        return out if is_list else out[0]

    def predict(self, X, y_init=None, return_std: bool = False):
        """Free-run simulation from the inputs (deterministic).

        Parameters
        ----------
        X : array-like of shape (n_timesteps, n_inputs) or list
        y_init : array-like of shape (n_init, n_outputs), optional
            Measured outputs of the warm-up, returned unchanged at the head.
        return_std : bool, default=False
            Also return the one-step predictive standard deviation along the
            simulated trajectory (0 over the warm-up). For uncertainty that
            propagates through the simulation use :meth:`simulate` or
            :meth:`predict_interval`.

        Returns
        -------
        y_pred : ndarray of shape (n_timesteps,) or (n_timesteps, n_outputs)
        y_std : ndarray, same shape, only with ``return_std=True``
        """
        us, lengths, inits, is_list = self._predict_data(X, y_init)
        means, stds = [], []
        for u, n, y0 in zip(us, lengths, inits, strict=True):
            mean, sd = self._free_run(u, n, y0)
            means.append(mean)
            stds.append(sd)
        if return_std:
            return self._format(means, is_list), self._format(stds, is_list)
        return self._format(means, is_list)

    def _free_run(self, u, n: int, y0) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic free run of one experiment in raw units: (mean, std)."""
        y0s = None if y0 is None or y0.shape[0] == 0 else self._scale_out(y0)
        with torch.no_grad():
            ys, sd = self._run(self._scale_in(u), y0s, n, 1, "prior_mean", "mean", None)
        mean = self._unscale_out(ys[0])
        n0 = 0 if y0s is None else y0.shape[0]
        if n0:
            mean[:n0] = y0
        sd = self._unscale_std(sd[0])
        sd[:n0] = 0.0
        return mean, sd

    def simulate(self, X, y_init=None, n_samples: int = 100, random_state=None):
        """Monte Carlo trajectories through the latent hierarchy.

        Latents are drawn from the prior and outputs from the predictive
        distribution at every step, then fed back.

        Parameters
        ----------
        X : array-like of shape (n_timesteps, n_inputs) or list
        y_init : array-like of shape (n_init, n_outputs), optional
        n_samples : int, default=100
        random_state : int, Generator or None

        Returns
        -------
        samples : ndarray of shape (n_samples, n_timesteps, n_outputs)
            Always three-dimensional (also for a 1-D ``y`` in ``fit``); a
            list of such arrays when ``X`` is a list. The warm-up rows hold
            ``y_init`` in every sample.
        """
        if not is_int(n_samples) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        us, lengths, inits, is_list = self._predict_data(X, y_init)
        gen = self._generator(random_state)
        out = []
        for u, n, y0 in zip(us, lengths, inits, strict=True):
            y0s = None if y0 is None else self._scale_out(y0)
            ys, _ = self._run(
                self._scale_in(u), y0s, n, int(n_samples), "prior", "sample", gen
            )
            ys = self._unscale_out(ys)
            if y0 is not None:
                ys[:, : y0.shape[0]] = y0
            out.append(ys)
        return out if is_list else out[0]

    def _generator(self, random_state) -> torch.Generator:
        seed = check_random_state_seed(random_state)
        gen = torch.Generator(device=self.device_)
        gen.manual_seed(seed)
        return gen

    def predict_interval(
        self,
        X,
        y_init=None,
        coverage: float = 0.9,
        n_samples: int = 200,
        random_state=None,
    ):
        """Central prediction interval from Monte Carlo simulation.

        Parameters
        ----------
        X, y_init : see :meth:`simulate`
        coverage : float, default=0.9
        n_samples : int, default=200
        random_state : int, Generator or None

        Returns
        -------
        lower, upper : ndarray of the shape of :meth:`predict`'s output
        """
        if not is_real(coverage) or not 0 < coverage < 1:
            raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
        a = (1 - coverage) / 2
        q = self.predict_quantiles(
            X, y_init, alpha=(a, 1 - a), n_samples=n_samples, random_state=random_state
        )
        if isinstance(q, list):
            return [x[0] for x in q], [x[1] for x in q]
        return q[0], q[1]

    def predict_quantiles(
        self,
        X,
        y_init=None,
        alpha=(0.05, 0.5, 0.95),
        n_samples: int = 200,
        random_state=None,
    ):
        """Quantiles of the simulated output distribution.

        Parameters
        ----------
        X, y_init : see :meth:`simulate`
        alpha : float or sequence of float, default=(0.05, 0.5, 0.95)
        n_samples : int, default=200
        random_state : int, Generator or None

        Returns
        -------
        quantiles : ndarray of shape (n_alpha, n_timesteps[, n_outputs])
            The output axis is dropped when ``y`` was 1-D in ``fit``; a list
            when ``X`` is a list.
        """
        try:
            alpha = np.atleast_1d(np.asarray(alpha, dtype=float))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"alpha must be numbers in (0, 1), got {alpha!r}") from exc
        if alpha.size == 0 or alpha.ndim != 1:
            raise ValueError(f"alpha must be a non-empty 1-D sequence, got {alpha!r}")
        if not np.all((alpha > 0) & (alpha < 1)):
            raise ValueError(f"alpha values must be in (0, 1), got {alpha.tolist()}")
        sims = self.simulate(X, y_init, n_samples=n_samples, random_state=random_state)
        is_list = isinstance(sims, list)
        qs = [np.quantile(s, alpha, axis=0) for s in (sims if is_list else [sims])]
        return self._format(qs, is_list)

    def predict_ahead(self, X, y, steps: int = 1):
        """k-step-ahead prediction from measured outputs up to t - k.

        Parameters
        ----------
        X : array-like of shape (n_timesteps, n_inputs) or list
        y : array-like of shape (n_timesteps[, n_outputs]) or list
            Measured outputs.
        steps : int, default=1
            k. With k=1 one parallel pass gives the one-step-ahead
            prediction; larger k runs batched rollouts from every origin.

        Returns
        -------
        y_pred : ndarray like ``y``
            Element t predicts y_t from the inputs up to t and the measured
            outputs y_<=t-k, running the model free for the last k steps
            (latents at their prior means, means fed back). The first k
            elements have no measured output old enough and equal the free
            run from the start of the record (the :meth:`predict` of ``X``
            without ``y_init``).
        """
        data = self._eval_data(X, y)
        if not is_int(steps) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        out = []
        for u, yy in zip(data.u, data.y, strict=True):
            us, ys = self._scale_in(u), self._scale_out(yy)
            pred = self._ahead(us, ys, int(steps))
            out.append(self._unscale_out(pred))
        return self._format(out, data.is_list)

    @torch.no_grad()
    def _ahead(self, u, y, k: int) -> np.ndarray:
        model = self.model_.eval()
        T = y.shape[0]
        yt = self._tensor(y)
        ut = None if u is None else self._tensor(u)
        if k == 1:
            out = model(yt, ut, latent="prior_mean")
            return model.likelihood.mean(out.params)[0].T.double().cpu().numpy()
        D = self.network_config_.total_stride
        ctx = -(-(self.receptive_field_ + D) // D) * D
        pred = np.zeros_like(y)
        chunk = 256
        for o in range(0, T, chunk):  # origins o .. o+chunk-1 predict t = o+k-1
            origins = np.arange(o, min(o + chunk, T))
            start = (o // D) * D
            ws = max(0, start - ctx)
            stop = min(T, origins[-1] + k)
            n = stop - ws
            B = len(origins)
            teach = yt[..., ws:stop].expand(B, -1, -1)
            u_seg = None if ut is None else ut[..., ws:stop].expand(B, -1, -1)
            until = torch.as_tensor(origins - ws, device=self.device_)
            ys, _ = stream_simulate(
                model,
                n,
                u_seg,
                teach[..., : start - ws] if start > ws else None,
                latent="prior_mean",
                output="mean",
                batch=B,
                teacher=teach,
                teacher_until=until,
            )
            ys = ys.double().cpu().numpy()
            for b, org in enumerate(origins):
                t = org + k - 1
                if t < T:
                    pred[t] = ys[b, :, t - ws]
        head = min(k - 1, T)
        if head:  # no measured output is old enough: free run from the start
            ys, _ = self._run(
                None if u is None else u[:head],
                None,
                head,
                1,
                "prior_mean",
                "mean",
                None,
            )
            pred[:head] = ys[0]
        return pred

    def score(self, X, y, sample_weight=None):
        """R^2 of free-run simulation after a warm-up of ``n_init_`` samples.

        Parameters
        ----------
        X : array-like of shape (n_timesteps, n_inputs) or list
        y : array-like of shape (n_timesteps[, n_outputs]) or list
        sample_weight : None
            Not supported (must be None).

        Returns
        -------
        score : float
            Uniform average over output channels of R^2 computed on the
            samples after the warm-up of every experiment.
        """
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported")
        data = self._eval_data(X, y)
        n0 = self.n_init_
        trues, preds = [], []
        for u, yy in zip(data.u, data.y, strict=True):
            if yy.shape[0] <= n0:
                raise ValueError(
                    f"a record of {yy.shape[0]} samples is not longer than the "
                    f"warm-up n_init_={n0}"
                )
            p, _ = self._free_run(u, yy.shape[0], yy[:n0])
            trues.append(yy[n0:])
            preds.append(p[n0:])
        yt, yp = np.concatenate(trues), np.concatenate(preds)
        ss_res = ((yt - yp) ** 2).sum(0)
        ss_tot = ((yt - yt.mean(0)) ** 2).sum(0)
        # sklearn's r2_score convention for a constant target: 1 if exact, else 0
        r2 = np.where(
            ss_tot > 0,
            1 - ss_res / np.where(ss_tot > 0, ss_tot, 1),
            np.where(ss_res == 0, 1.0, 0.0),
        )
        return float(np.mean(r2))

    def elbo(self, X, y=None, random_state=0) -> dict:
        """ELBO of records under the model (posterior latents), in nats.

        Parameters
        ----------
        X, y : see :meth:`fit`
        random_state : int, Generator or None, default=0
            Seed of the single reparameterised posterior draw (the ELBO is a
            one-sample Monte Carlo estimate of its expectation over q(z)).
            The default makes the result reproducible.

        Returns
        -------
        dict
            ``elbo`` (per sequence, array of n_experiments), ``elbo_per_step``,
            ``log_lik``, ``kl``, ``kl_per_level`` (n_experiments, n_levels; bottom
            level first), ``n_steps``. The likelihood is evaluated on the
            normalised outputs when ``normalize=True``; ``log_lik_raw`` and
            ``elbo_raw`` add the Jacobian of the scaling (raw units).
        """
        data = self._eval_data(X, y)
        gen = self._generator(random_state)
        model = self.model_.eval()
        param = next(model.parameters())
        rows = []
        with torch.no_grad():
            for u, yy in zip(data.u, data.y, strict=True):
                noise = [
                    torch.randn(
                        shape, generator=gen, device=param.device, dtype=param.dtype
                    )
                    for shape in model.latent_shapes(1, yy.shape[0])
                ]
                out = model(
                    self._tensor(self._scale_out(yy)),
                    None if u is None else self._tensor(self._scale_in(u)),
                    latent="posterior",
                    noise=noise if self.network_config_.use_latents else None,
                )
                rows.append(
                    {k: v.double().cpu().numpy()[0] for k, v in elbo_terms(out).items()}
                )
        res = {k: np.array([r[k] for r in rows]) for k in rows[0]}
        res["elbo_per_step"] = res["elbo"] / res["n_steps"]
        jac = np.sum(np.log(self.y_scaler_.scale_)) if self.normalize else 0.0
        res["log_lik_raw"] = res["log_lik"] - res["n_steps"] * jac
        res["elbo_raw"] = res["elbo"] - res["n_steps"] * jac
        return res

    def sample(self, n_sequences: int, length: int, X=None, random_state=None):
        """Generate sequences (unconditional, or driven by inputs X).

        Parameters
        ----------
        n_sequences : int
        length : int
        X : array-like of shape (length, n_inputs), optional
            Required when the model has inputs.
        random_state : int, Generator or None

        Returns
        -------
        samples : ndarray of shape (n_sequences, length, n_outputs)
        """
        check_is_fitted(self)
        for name, v in (("n_sequences", n_sequences), ("length", length)):
            if not is_int(v) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        u = None
        if self.n_features_in_:
            if X is None:
                raise ValueError(
                    "this model has inputs: pass X of shape "
                    f"({length}, {self.n_features_in_})"
                )
            self._check_feature_names(X)
            data = self._experiments(X, None, fitting=False)
            check_consistent_channels(
                data, self.n_features_in_, None, estimator_name=type(self).__name__
            )
            if data.n_experiments != 1:
                raise ValueError("X must hold a single experiment in sample()")
            u = self._scale_in(data.u[0])
            if u.shape[0] != length:
                raise ValueError(f"X has {u.shape[0]} rows but length={length}")
        ys, _ = self._run(
            u,
            None,
            int(length),
            int(n_sequences),
            "prior",
            "sample",
            self._generator(random_state),
        )
        return self._unscale_out(ys)

    # ---------------------------------------------------------- persist
    def save(self, path) -> None:
        """Save weights (safetensors) with a JSON header of params and stats.

        Parameters
        ----------
        path : str or path-like
            Target file, conventionally ``*.safetensors``; written atomically.
        """
        check_is_fitted(self)
        _persistence.save(self, path)

    @classmethod
    def load(cls, path, device: str | None = None) -> MSSTCNRegressor:
        """Load an estimator saved with :meth:`save` (no code is executed).

        Parameters
        ----------
        path : str or path-like
        device : str or None, default=None
            Device to put the network on; also replaces the ``device``
            parameter. None keeps the saved parameter and falls back to the
            CPU when it names CUDA on a machine without CUDA.

        Returns
        -------
        MSSTCNRegressor
        """
        return _persistence.load(cls, path, device)

    def __getstate__(self) -> dict:
        return _persistence.getstate(self)

    def __setstate__(self, state: dict) -> None:
        _persistence.setstate(self, state)


def _broadcast(obj, info: DistributedInfo):
    """Rank 0's ``obj`` on every process (a collective)."""
    box = [obj]
    device = info.device if dist.get_backend() == "nccl" else None
    dist.broadcast_object_list(box, src=0, device=device)
    return box[0]


def _cuda_index(dev: torch.device) -> int:
    return torch.cuda.current_device() if dev.index is None else dev.index
