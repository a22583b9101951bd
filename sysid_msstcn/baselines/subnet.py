"""deepSI's SUBNET behind the baselines' protocol (optional dependency)."""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any

import numpy as np

from sysid_msstcn.exceptions import DivergenceWarning

from ._base import _check_int, _SimulationBase

_DEEPSI_INSTALL = 'pip install --no-deps "deepsi==0.4.4" cloudpickle'


def _import_deepsi():
    try:
        import deepSI
        import deepSI.fitting
    except ImportError as exc:
        raise ImportError(
            f"SubnetRegressor needs deepSI, which is not installed or does not "
            f"import ({exc}). Install it with: {_DEEPSI_INSTALL} (see the README, "
            f"'Install': deepSI 0.4.4 pins nonlinear_benchmarks<0.2 in its "
            f"metadata, hence --no-deps)"
        ) from exc
    return deepSI


def deepsi_available() -> bool:
    """Whether deepSI (needed by :class:`SubnetRegressor`) can be imported.

    Returns
    -------
    available : bool
    """
    try:
        _import_deepsi()
    except ImportError:
        return False
    return True


class SubnetRegressor(_SimulationBase):
    """SUBNET: deepSI's encoder state-space network, fitted on truncated simulations.

    The model of Beintema, Toth and Schoukens (L4DC 2021; Automatica 2023)
    as implemented by ``deepSI.SUBNET`` (deepSI 0.4.4)::

        x(n) = encoder(u[n-nb:n], y[n-na:n])
        x(t+1) = f(x(t), u(t))
        y(t) = h(x(t))            (h(x(t), u(t)) with feedthrough)

    ``f``, ``h`` and the encoder are deepSI's ``MLP_res_net`` (an MLP plus a
    linear bypass). Training minimises deepSI's ``compute_NMSE`` over windows
    of ``horizon`` samples simulated from the encoded state (the truncated
    multi-step simulation loss), with Adam, on the normalised data.

    Parameters
    ----------
    nx : int, default=10
        State dimension.
    na : int, default=20
        Past outputs read by the encoder.
    nb : int, default=20
        Past inputs read by the encoder.
    horizon : int, default=50
        Simulation length of the training windows (deepSI's ``T``).
    n_hidden_layers : int, default=2
        Hidden layers of ``f``, ``h`` and the encoder.
    n_hidden_nodes : int, default=64
        Width of those hidden layers.
    feedthrough : bool, default=False
        Let ``h`` see ``u(t)``.
    max_iter : int, default=100
        Epochs; one epoch visits every training window once.
    max_time : float or None, default=None
        Wall-clock budget of ``fit`` in seconds: training stops after the
        optimiser step that uses it up. None: no limit.
    batch_size : int, default=256
        Windows per optimiser step (deepSI's default).
    learning_rate : float, default=1e-3
        Adam step size (deepSI's default).
    stride : int, default=1
        Offset between consecutive training windows.
    validation_fraction : float, default=0.2
        Tail of each experiment simulated after every epoch to keep the best
        weights (deepSI keeps the best model on its validation set too); 0
        keeps the last epoch.
    device : str, default="auto"
        Training device: "auto" (CUDA when available), "cpu", "cuda" or
        "cuda:N". Prediction runs on the CPU.
    random_state : int, numpy Generator or None, default=None
        Seed of the weight initialisation and the window order.
    verbose : int, default=0
        1 prints one line per epoch.
    normalize : bool, default=True
        Standardise inputs and outputs (deepSI's ``Norm`` is then the
        identity).

    Attributes
    ----------
    model_ : deepSI.models.SUBNET
        The network with the kept weights, on the CPU.
    n_init_ : int
        ``max(na, nb)``: the warm-up the encoder reads.
    n_iter_ : int
        Epochs run (the last one may be cut short by ``max_time``).
    loss_curve_ : list of float
        Training NRMS (root of the mean NMSE) of every epoch.
    validation_scores_ : list of float
        Validation simulation RMSE (normalised units) after every epoch;
        empty without a validation tail.
    best_epoch_ : int
        Epoch whose weights were kept (1-based; 0: the initial weights).
    device_ : torch.device
        Device used for training.
    n_features_in_, n_outputs_ : int
        Number of input and output channels.
    x_mean_, x_scale_, y_mean_, y_scale_ : ndarray
        Normalisation statistics.

    Notes
    -----
    deepSI is not a dependency of this package: deepSI 0.4.4 pins
    ``nonlinear_benchmarks<0.2`` in its metadata but imports only
    ``Input_output_data``, which ``nonlinear_benchmarks`` 1.0.1 has as well.
    Install it with ``pip install --no-deps "deepsi==0.4.4" cloudpickle``.

    The model and the loss are deepSI's; the loop is this class's, not
    ``deepSI.fit``, because ``deepSI.fit`` counts iterations and has no
    time budget or seed for the window order, prints and writes a checkpoint
    to ``~/.deepSI-checkpoints`` at every validation, and validates several
    experiments only when they have equal lengths.

    Experiments shorter than ``max(na, nb) + horizon`` (after the validation
    tail) give no training windows; at least one must be long enough.
    """

    def __init__(
        self,
        nx: int = 10,
        na: int = 20,
        nb: int = 20,
        horizon: int = 50,
        *,
        n_hidden_layers: int = 2,
        n_hidden_nodes: int = 64,
        feedthrough: bool = False,
        max_iter: int = 100,
        max_time: float | None = None,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        stride: int = 1,
        validation_fraction: float = 0.2,
        device: str = "auto",
        random_state: Any = None,
        verbose: int = 0,
        normalize: bool = True,
    ) -> None:
        self.nx = nx
        self.na = na
        self.nb = nb
        self.horizon = horizon
        self.n_hidden_layers = n_hidden_layers
        self.n_hidden_nodes = n_hidden_nodes
        self.feedthrough = feedthrough
        self.max_iter = max_iter
        self.max_time = max_time
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.stride = stride
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.normalize = normalize

    def _max_lag(self) -> int:
        for name in ("nx", "horizon", "n_hidden_layers", "n_hidden_nodes"):
            _check_int(name, getattr(self, name), 1)
        for name in ("max_iter", "batch_size", "stride"):
            _check_int(name, getattr(self, name), 1)
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                "validation_fraction must be in [0, 1), "
                f"got {self.validation_fraction!r}"
            )
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"max_time must be > 0 or None, got {self.max_time!r}")
        return max(_check_int("na", self.na, 1), _check_int("nb", self.nb, 1))

    def _build(self, deepSI, n_u: int, n_y: int):
        mlp = deepSI.networks.MLP_res_net
        kw = {
            "n_hidden_layers": self.n_hidden_layers,
            "n_hidden_nodes": self.n_hidden_nodes,
        }
        nx, na, nb = self.nx, self.na, self.nb
        # the data are normalised (or used raw): deepSI's Norm is the identity
        norm = deepSI.Norm(np.zeros(n_u), np.ones(n_u), np.zeros(n_y), np.ones(n_y))
        h_in = [nx, n_u] if self.feedthrough else nx
        return deepSI.SUBNET(
            n_u,
            n_y,
            norm,
            nx=nx,
            nb=nb,
            na=na,
            f=norm.f(mlp(input_size=[nx, n_u], output_size=nx, **kw)),
            h=norm.h(mlp(input_size=h_in, output_size=n_y, **kw)),
            encoder=norm.encoder(
                mlp(input_size=[(nb, n_u), (na, n_y)], output_size=nx, **kw)
            ),
            feedthrough=self.feedthrough,
        )

    def _fit_normalized(self, us: list[np.ndarray], ys: list[np.ndarray]) -> None:
        import torch
        from nonlinear_benchmarks import Input_output_data

        from sysid_msstcn._utils import check_random_state_seed, resolve_device

        deepSI = _import_deepsi()
        n_past, horizon = self.n_init_, self.horizon
        heads, tails = [], []
        for u, y in zip(us, ys, strict=True):
            n_val = int(round(self.validation_fraction * u.shape[0]))
            if n_val > n_past:  # a tail the encoder can start on
                tails.append((u[-n_val:], y[-n_val:]))
            else:
                n_val = 0
            if u.shape[0] - n_val >= n_past + horizon:
                head = slice(0, u.shape[0] - n_val)
                heads.append(Input_output_data(u[head], y[head]))
        if not heads:
            raise ValueError(
                f"SubnetRegressor needs an experiment with at least max(na, nb) "
                f"+ horizon = {n_past + horizon} training samples (after the "
                f"validation tail of {self.validation_fraction:g}); lower na, nb "
                f"or horizon"
            )
        seed = check_random_state_seed(self.random_state)
        self.device_ = resolve_device(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._build(deepSI, us[0].shape[1], ys[0].shape[1])
        model.to(self.device_)
        arrays, ids = model.create_arrays(heads, T=horizon, stride=self.stride)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        rng = np.random.default_rng(seed)
        batch = min(self.batch_size, len(ids))
        self.loss_curve_, self.validation_scores_ = [], []
        best = (self._validation_rmse(model, tails), copy.deepcopy(model.state_dict()))
        self.best_epoch_, self.n_iter_ = 0, 0
        t_start = time.perf_counter()
        out_of_time = False
        while self.n_iter_ < self.max_iter and not out_of_time:
            model.train()
            perm, losses = rng.permutation(ids), []
            for start in range(0, len(perm) - batch + 1, batch):
                idx = torch.as_tensor(perm[start : start + batch])
                tensors = [a[idx].to(self.device_) for a in arrays]
                loss = deepSI.fitting.compute_NMSE(model, *tensors)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                if not np.isfinite(losses[-1]):
                    break
                elapsed = time.perf_counter() - t_start
                if self.max_time is not None and elapsed >= self.max_time:
                    out_of_time = True
                    break
            self.n_iter_ += 1
            self.loss_curve_.append(float(np.sqrt(np.mean(losses))))
            if not np.isfinite(self.loss_curve_[-1]):
                warnings.warn(
                    f"SUBNET training diverged in epoch {self.n_iter_}; keeping "
                    f"the weights of epoch {self.best_epoch_}",
                    DivergenceWarning,
                    stacklevel=3,
                )
                break
            score = self._validation_rmse(model, tails)
            if tails:
                self.validation_scores_.append(score)
            if not tails or score <= best[0]:
                best = (score, copy.deepcopy(model.state_dict()))
                self.best_epoch_ = self.n_iter_
            if self.verbose:
                print(
                    f"SUBNET epoch {self.n_iter_}: train NRMS "
                    f"{self.loss_curve_[-1]:.5f}, validation RMSE {score:.5f}"
                )
        model.load_state_dict(best[1])
        self.model_ = model.cpu().eval()

    def _validation_rmse(self, model, tails) -> float:
        """Free-run simulation RMSE of the validation tails.

        nan without tails; inf when a simulation diverges.
        """
        if not tails:
            return float("nan")
        n = self.n_init_
        errors = [
            self._run(model, u, y[:n])[n:] - y[n:] for u, y in tails
        ]  # (T_i - n, n_y) each
        with np.errstate(over="ignore", invalid="ignore"):
            score = float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
        return score if np.isfinite(score) else float("inf")

    def _run(self, model, u: np.ndarray, y_head: np.ndarray) -> np.ndarray:
        import torch

        T, n = u.shape[0], y_head.shape[0]
        out = np.zeros((T, self.n_outputs_))
        out[:n] = y_head
        if n >= T:
            return out
        dev = next(model.parameters()).device

        def tensor(a: np.ndarray):
            return torch.as_tensor(a[None], dtype=torch.float32, device=dev)

        model.eval()
        with torch.no_grad():
            y_sim = model(  # (1, T - n, n_y)
                tensor(u[n - self.nb : n]),
                tensor(y_head[n - self.na : n]),
                tensor(u[n:]),
            )
        out[n:] = y_sim[0].cpu().numpy()
        return out

    def _simulate(self, u: np.ndarray, y_head: np.ndarray) -> np.ndarray:
        return self._run(self.model_, u, y_head)
