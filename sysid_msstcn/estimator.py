"""MSSTCNRegressor: the scikit-learn estimator around the MS-STCN model.

``fit`` trains data-parallel when launched on several processes (``torchrun``
or an initialised :mod:`torch.distributed` process group, see the
``distributed`` parameter): every process draws the same global batch of
windows and the same noise, trains on its slice of it through
DistributedDataParallel, and takes the end-of-epoch decisions (validation,
early stopping, roll-backs, ``max_time``) from rank 0.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from . import _persistence
from ._estimator_parallel import _ParallelMixin
from ._estimator_params import DEFAULTS, PARAM_CHECKS, is_int
from ._estimator_prediction import _PredictionMixin
from ._estimator_training import _TrainingMixin
from ._inputs import empty_columns, feature_names, holds_outputs, ndim, x_items
from .config import (
    NetworkConfig,
    TrainConfig,
)
from .data._validation import as_experiments, check_consistent_channels
from .presets import get_preset

__all__ = ["MSSTCNRegressor"]


class MSSTCNRegressor(
    _TrainingMixin,
    _ParallelMixin,
    _PredictionMixin,
    MultiOutputMixin,
    RegressorMixin,
    BaseEstimator,
):
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
    weight_decay : float, default=0.0
        Decoupled weight decay (AdamW; 0 keeps Adam): each step also shrinks
        every weight by the factor ``1 - lr * weight_decay``. A regulariser
        for short records that the network can otherwise learn by heart.
    objective : {"linear_free_bits", "elbo"}, default="linear_free_bits"
    free_bits : float or None, default=None
        Initial linear free-bits threshold in nats (default 0.5).
    free_bits_half_life : int, default=300000
    grad_clip : float or None, default=10.0
        Global gradient-norm clipping (None disables it).
    early_stopping : bool, default=True
        Stop when the validation score has not improved for
        ``n_iter_no_change`` epochs and restore the best weights.
    early_stopping_metric : str, default="auto"
        One of "auto", "elbo", "simulation", "record_simulation". The
        validation score: the ELBO per step, or minus the RMSE of a free-run
        simulation of each validation tail (warmed up on the measured
        samples before it). "auto" uses the simulation error for models with
        inputs (system identification) and the ELBO otherwise.
        "record_simulation": minus the RMSE of a free run of every whole
        experiment from its first ``n_init_`` outputs, as a test record is
        simulated (the training part and the held-out tail together; the
        tails' own free-run error is still recorded). Slow drifts that a
        short tail cannot show count in it (on EMPS the training records'
        free run ranked eight seeds by their test error with Spearman's rho
        0.98, the tails' score with -0.14); it costs one simulation of the
        data per epoch, and it scores data the network trained on.
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
        Keep the span ``1 / (1 - ema_decay)`` steps shorter than the
        early-stopping patience (``n_iter_no_change`` epochs; a warning says
        when it is not).
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
        weight_decay: float = 0.0,
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
        self.weight_decay = weight_decay
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
            weight_decay=float(self.weight_decay),
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
