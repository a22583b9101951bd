"""Saving, loading and pickling a fitted ``MSSTCNRegressor``.

A saved model is one safetensors file: the network's weights, and a JSON
header (``"sysid_msstcn"``) with the constructor parameters, the network
configuration and the fitted statistics. A saved ensemble of such models is
one file too: member ``i``'s weights under ``member<i>.``, and a header
(``"sysid_msstcn_ensemble"``) with the ensemble's parameters, the seeds and
every member's header. Loading executes no code. Pickles keep the weights as
CPU tensors and put the network back on its device (the CPU when CUDA is
gone).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from ._utils import check_random_state_seed, jsonable, resolve_device
from ._windows import ChannelScaler
from .config import config_from_dict
from .exceptions import DataFormatError
from .model import MSSTCN

__all__ = [
    "getstate",
    "is_ensemble_file",
    "load",
    "load_ensemble",
    "save",
    "save_ensemble",
    "setstate",
]

FORMAT = "sysid_msstcn/1"
# /2 adds the selection (keep_best): "selected" and "member_scores";
# /3 adds its order and path (greedy selection): "selection_order" and
# "selection_path"
ENSEMBLE_FORMAT = "sysid_msstcn.ensemble/3"
_ENSEMBLE_FORMATS = (
    "sysid_msstcn.ensemble/1",
    "sysid_msstcn.ensemble/2",
    ENSEMBLE_FORMAT,
)
# fitted attributes stored as they are
_FITTED = (
    "n_features_in_",
    "n_outputs_",
    "y_1d_",
    "receptive_field_",
    "n_init_",
    "n_iter_",
    "best_epoch_",
    "history_",
    "history_events_",
)


def _cpu_if_no_cuda(device) -> torch.device:
    """Resolve a device, mapping CUDA to the CPU when CUDA is unavailable."""
    try:
        return resolve_device(device)
    except ValueError:
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            return torch.device("cpu")
        raise


def _payload(est) -> dict:
    """The JSON header of a saved estimator."""
    fitted = {key: jsonable(getattr(est, key)) for key in _FITTED}
    fitted.update(
        window_=getattr(est, "window_", None),
        world_size_=getattr(est, "world_size_", 1),
        x_scaler_=est.x_scaler_.to_dict() if est.n_features_in_ else None,
        y_scaler_=est.y_scaler_.to_dict(),
        output_names_=jsonable(getattr(est, "output_names_", None)),
        feature_names_in_=jsonable(getattr(est, "feature_names_in_", None)),
    )
    return {
        "format": FORMAT,
        "version": __version__,
        "params": jsonable(est.get_params(deep=False)),
        "network_config": est.network_config_.to_dict(),
        "fitted": fitted,
    }


def _write(state: dict, key: str, header: dict, path) -> None:
    """Write weights and a JSON header to ``path`` atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={key: json.dumps(header)})
    tmp.replace(path)


def _weights(est) -> dict:
    return {
        k: v.detach().cpu().contiguous() for k, v in est.model_.state_dict().items()
    }


def save(est, path) -> None:
    """Write a fitted estimator to ``path`` atomically (see the module)."""
    _write(_weights(est), "sysid_msstcn", _payload(est), path)


def _read(path, key: str, what: str) -> tuple[Any, dict]:
    """The JSON header under ``key`` and the weights of a safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved {what} at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        return json.loads(meta[key]), state
    except Exception as exc:  # noqa: BLE001
        raise DataFormatError(
            f"{path}: not a sysid_msstcn {what} file ({exc.__class__.__name__}: {exc})"
        ) from exc


def load(cls, path, device: str | None = None):
    """Read an estimator of class ``cls`` written by :func:`save`.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    DataFormatError
        The file is not a sysid_msstcn model, or its header or weights are
        malformed.
    """
    payload, state = _read(path, "sysid_msstcn", "model")
    if device is not None:
        resolve_device(device)  # an explicit request must be satisfiable
    try:
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError("unknown or missing format tag")
        est = _member(cls, payload, state, device)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataFormatError(
            f"{path}: malformed sysid_msstcn model ({exc.__class__.__name__}: {exc})"
        ) from exc
    return est


def _member(cls, payload: dict, state: dict, device: str | None):
    est = cls(**_tuples(payload["params"]))
    if device is not None:
        est.device = device
    _restore(est, payload, state)
    return est


def save_ensemble(ens, path) -> None:
    """Write a fitted ensemble of estimators to ``path`` (see the module)."""
    state, members = {}, []
    for i, member in enumerate(ens.estimators_):
        for k, v in _weights(member).items():
            state[f"member{i}.{k}"] = v
        members.append(_payload(member))
    params = ens.get_params(deep=False)
    template = params.pop("estimator")
    header = {
        "format": ENSEMBLE_FORMAT,
        "version": __version__,
        "params": jsonable(params),
        "estimator_params": (
            None if template is None else jsonable(template.get_params(deep=False))
        ),
        "seeds": jsonable(ens.seeds_),
        "selected": [int(i) for i in ens.selected_],
        "member_scores": (
            None
            if ens.member_scores_ is None
            # a diverged member's inf is written as null (strict JSON)
            else [float(v) if np.isfinite(v) else None for v in ens.member_scores_]
        ),
        "selection_order": (
            None if ens.selection_order_ is None else list(ens.selection_order_)
        ),
        "selection_path": (
            None
            if ens.selection_path_ is None
            else [float(v) if np.isfinite(v) else None for v in ens.selection_path_]
        ),
        "y_1d": bool(ens._y_1d),
        "members": members,
    }
    _write(state, "sysid_msstcn_ensemble", header, path)


def is_ensemble_file(path) -> bool:
    """Whether ``path`` is a safetensors file written by :func:`save_ensemble`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return "sysid_msstcn_ensemble" in (f.metadata() or {})
    except Exception:  # noqa: BLE001 - not a readable safetensors file
        return False


def load_ensemble(cls, member_cls, path, device: str | None = None):
    """Read an ensemble of class ``cls`` written by :func:`save_ensemble`.

    Its members are of class ``member_cls``; errors as in :func:`load`.
    """
    payload, state = _read(path, "sysid_msstcn_ensemble", "ensemble")
    if device is not None:
        resolve_device(device)
    try:
        if (
            not isinstance(payload, dict)
            or payload.get("format") not in _ENSEMBLE_FORMATS
        ):
            raise ValueError("unknown or missing format tag")
        est_params = payload["estimator_params"]
        template = None if est_params is None else member_cls(**_tuples(est_params))
        ens = cls(template, **payload["params"])
        members = []
        for i, member in enumerate(payload["members"]):
            prefix = f"member{i}."
            weights = {
                k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)
            }
            members.append(_member(member_cls, member, weights, device))
        if not members or len(payload["seeds"]) != len(members):
            raise ValueError("the seeds do not match the members")
        ens.estimators_ = members
        ens.seeds_ = [int(s) for s in payload["seeds"]]
        selected = payload.get("selected", list(range(len(members))))
        if (
            not selected
            or sorted(set(selected)) != selected
            or not all(isinstance(i, int) and 0 <= i < len(members) for i in selected)
        ):
            raise ValueError(f"bad selected members {selected!r}")
        ens.selected_ = selected
        scores = payload.get("member_scores")
        if scores is not None and len(scores) != len(members):
            raise ValueError("the member scores do not match the members")
        ens.member_scores_ = (
            None
            if scores is None
            else np.array([np.inf if v is None else float(v) for v in scores])
        )
        order = payload.get("selection_order")
        sel_path = payload.get("selection_path")
        if (order is None) != (sel_path is None) or (
            order is not None
            and (sorted(order) != selected or len(sel_path) != len(order))
        ):
            raise ValueError("the selection order does not match the selected members")
        ens.selection_order_ = None if order is None else [int(i) for i in order]
        ens.selection_path_ = (
            None
            if sel_path is None
            else np.array([np.inf if v is None else float(v) for v in sel_path])
        )
        ens.n_features_in_ = members[0].n_features_in_
        ens.n_outputs_ = members[0].n_outputs_
        ens.n_init_ = max(int(m.n_init_) for m in members)
        ens._y_1d = bool(payload["y_1d"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataFormatError(
            f"{path}: malformed sysid_msstcn ensemble ({exc.__class__.__name__}: {exc})"
        ) from exc
    return ens


def _restore(est, payload: dict, state: dict) -> None:
    """Set the fitted attributes of ``est`` from a saved header and weights."""
    fitted = payload["fitted"]
    est.network_config_ = config_from_dict(payload["network_config"])
    est.train_config_ = est._build_configs(
        est.network_config_.n_inputs, est.network_config_.n_outputs
    )[1]
    est.device_ = _cpu_if_no_cuda(est.device)
    model = MSSTCN(est.network_config_)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataFormatError(f"weights do not match the configuration: {exc}") from exc
    if not all(bool(torch.isfinite(t).all()) for t in state.values()):
        raise DataFormatError("weights contain NaN or infinity")
    est.model_ = model.to(est.device_)
    for key in _FITTED:
        setattr(est, key, fitted[key])
    if fitted.get("window_") is not None:
        est.window_ = fitted["window_"]
    est.world_size_ = int(fitted.get("world_size_", 1))
    names = fitted.get("output_names_")
    est.output_names_ = None if names is None else tuple(names)
    if fitted.get("feature_names_in_") is not None:
        est.feature_names_in_ = np.asarray(fitted["feature_names_in_"], object)
    est.x_scaler_ = ChannelScaler("input")
    if fitted["x_scaler_"] is not None:
        est.x_scaler_ = ChannelScaler.from_dict(fitted["x_scaler_"], "input")
    est.y_scaler_ = ChannelScaler.from_dict(fitted["y_scaler_"], "output")
    for scaler in (est.x_scaler_, est.y_scaler_):
        scale = getattr(scaler, "scale_", None)
        if scale is not None and not np.all(np.isfinite(scale) & (scale > 0)):
            raise ValueError("scaling statistics must be finite and positive")
    est.loss_curve_ = [r.get("loss") for r in est.history_]
    est._seed = check_random_state_seed(est.random_state)
    est._rng = np.random.default_rng(est._seed)
    est._trainer_state = None
    est._torch_rng_state = None


def getstate(est) -> dict:
    """``__getstate__``: the weights and the optimizer state as CPU tensors."""
    state = est.__dict__.copy()
    if "model_" in state:
        state["model_"] = {
            k: v.detach().cpu() for k, v in est.model_.state_dict().items()
        }
        state["device_"] = str(est.device_)
    ts = state.get("_trainer_state")
    if ts is not None:
        state["_trainer_state"] = _to_cpu(ts)
    return state


def setstate(est, state: dict) -> None:
    """``__setstate__``: rebuild the network on its device (or the CPU)."""
    weights = state.get("model_")
    # parameters added after the pickle was written take their defaults
    for name, param in inspect.signature(type(est).__init__).parameters.items():
        if param.default is not inspect.Parameter.empty:
            est.__dict__.setdefault(name, param.default)
    est.__dict__.update(state)
    if weights is not None:
        dev = _cpu_if_no_cuda(state["device_"])
        est.device_ = dev
        model = MSSTCN(est.network_config_)
        model.load_state_dict(weights)
        est.model_ = model.to(dev)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def _tuples(params: dict) -> dict:
    """Constructor parameters with JSON lists turned back into tuples."""
    out = {}
    for k, v in params.items():
        if isinstance(v, list):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        out[k] = v
    return out
