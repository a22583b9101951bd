"""Saving, loading and pickling MSSTCNRegressor.

``save``/``load`` write safetensors with the parameters, fitted statistics and
history as JSON in the file's metadata: loading never unpickles anything.
Pickling keeps only CPU tensors and plain data, so a model fitted on a GPU
unpickles on a CPU-only machine.
"""

from __future__ import annotations

import json
import pickle
import struct

import joblib
import numpy as np
import pytest
import torch
from _tiny import TINY_ESTIMATOR
from sklearn.exceptions import NotFittedError

from sysid_msstcn import MSSTCNRegressor
from sysid_msstcn.exceptions import DataFormatError

torch.set_num_threads(1)

TINY = TINY_ESTIMATOR


def _system(n: int = 160, n_u: int = 1, n_y: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, n_u))
    y = np.zeros((n, n_y))
    for t in range(1, n):
        y[t] = 0.7 * y[t - 1] + 0.5 * np.tanh(u[t - 1].sum() + np.arange(n_y))
    return u, y


@pytest.fixture(scope="module")
def data():
    u, y = _system()
    return u, y[:, 0]


@pytest.fixture(scope="module")
def fitted(data):
    u, y = data
    est = MSSTCNRegressor(random_state=0, validation_fraction=0.2, **TINY)
    return est.fit(u, y)


def _outputs(est, u, y):
    """Everything a fitted model computes, deterministically."""
    return {
        "predict": est.predict(u, y_init=y[:10]),
        "std": est.predict(u, y_init=y[:10], return_std=True)[1],
        "free": est.predict(u),
        "simulate": est.simulate(u, y_init=y[:10], n_samples=3, random_state=0),
        "ahead": est.predict_ahead(u, y, steps=2),
        "elbo": est.elbo(u, y)["elbo"],
        "score": est.score(u, y),
        "sample": est.sample(2, 40, X=u[:40], random_state=0),
    }


def _assert_same_model(a, b, u, y):
    out_a, out_b = _outputs(a, u, y), _outputs(b, u, y)
    for key in out_a:
        np.testing.assert_array_equal(out_a[key], out_b[key], err_msg=key)
    for name in (
        "n_features_in_",
        "n_outputs_",
        "n_init_",
        "receptive_field_",
        "n_iter_",
        "best_epoch_",
        "history_",
        "network_config_",
    ):
        assert getattr(a, name) == getattr(b, name), name
    np.testing.assert_array_equal(a.y_scaler_.mean_, b.y_scaler_.mean_)
    np.testing.assert_array_equal(a.x_scaler_.scale_, b.x_scaler_.scale_)


# ----------------------------------------------------------- save / load


def test_save_load_round_trip_gives_identical_predictions(fitted, data, tmp_path):
    u, y = data
    path = tmp_path / "model.safetensors"
    fitted.save(path)
    loaded = MSSTCNRegressor.load(path, device="cpu")
    assert isinstance(loaded, MSSTCNRegressor)
    assert loaded.get_params() == fitted.get_params()
    _assert_same_model(fitted, loaded, u, y)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_saved_file_is_safetensors_with_a_json_header(fitted, tmp_path):
    from safetensors import safe_open

    path = tmp_path / "model.safetensors"
    fitted.save(path)
    raw = path.read_bytes()
    (n_header,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n_header])  # plain JSON, nothing pickled
    meta = json.loads(header["__metadata__"]["sysid_msstcn"])
    assert meta["params"]["channels"] == [4, 4]
    assert meta["fitted"]["n_outputs_"] == 1
    assert meta["network_config"]["channels"] == [4, 4]
    assert len(meta["fitted"]["history_"]) == fitted.n_iter_
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert keys == set(fitted.model_.state_dict())


def test_load_never_unpickles(fitted, data, tmp_path, monkeypatch):
    u, y = data
    path = tmp_path / "model.safetensors"
    fitted.save(path)

    def refuse(*args, **kwargs):
        raise AssertionError("load must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = MSSTCNRegressor.load(path)
    np.testing.assert_array_equal(
        loaded.predict(u, y_init=y[:10]), fitted.predict(u, y_init=y[:10])
    )


def test_round_trip_of_mimo_output_only_and_dataframe_models(tmp_path):
    import pandas as pd

    u, y = _system(n=120, n_u=2, n_y=2)
    cases = {
        "mimo": (u, y),
        "output_only": (None, y[:, 0]),
        "dataframe": (pd.DataFrame(u, columns=["a", "b"]), y),
    }
    for name, (X, Y) in cases.items():
        est = MSSTCNRegressor(random_state=0, **TINY).fit(X, Y)
        est.save(tmp_path / f"{name}.safetensors")
        loaded = MSSTCNRegressor.load(tmp_path / f"{name}.safetensors")
        Xp = np.empty((120, 0)) if X is None else X
        np.testing.assert_array_equal(loaded.predict(Xp), est.predict(Xp), name)
        assert loaded.y_1d_ == est.y_1d_
        if name == "dataframe":
            np.testing.assert_array_equal(loaded.feature_names_in_, ["a", "b"])


def test_loaded_model_can_continue_training(fitted, data, tmp_path):
    u, y = data
    fitted.save(tmp_path / "m.safetensors")
    loaded = MSSTCNRegressor.load(tmp_path / "m.safetensors")
    loaded.partial_fit(u, y)
    assert loaded.n_iter_ == fitted.n_iter_ + fitted.max_iter
    assert np.all(np.isfinite(loaded.predict(u)))


def test_save_unfitted_and_load_bad_files(tmp_path):
    with pytest.raises(NotFittedError):
        MSSTCNRegressor().save(tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError):
        MSSTCNRegressor.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(DataFormatError, match="not a sysid_msstcn model"):
        MSSTCNRegressor.load(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))  # safetensors, not ours
    with pytest.raises(ValueError, match="not a sysid_msstcn model"):
        MSSTCNRegressor.load(other)


# -------------------------------------------------------------- pickling


def test_pickle_round_trip(fitted, data):
    u, y = data
    clone = pickle.loads(pickle.dumps(fitted))
    _assert_same_model(fitted, clone, u, y)
    clone.partial_fit(u, y)  # training state survives pickling
    assert clone.n_iter_ == fitted.n_iter_ + fitted.max_iter


def test_pickle_from_before_a_new_parameter_takes_its_default(fitted, data):
    """A pickle written before ``rollout_gradient`` existed still loads."""
    u, y = data
    state = fitted.__getstate__()
    del state["rollout_gradient"], state["rollout_steps"]
    old = MSSTCNRegressor.__new__(MSSTCNRegressor)
    old.__setstate__(state)
    assert old.get_params()["rollout_gradient"] == "full"
    assert old.get_params()["rollout_steps"] == 0
    _assert_same_model(fitted, old, u, y)


def test_joblib_round_trip(fitted, data, tmp_path):
    u, y = data
    joblib.dump(fitted, tmp_path / "m.joblib")
    _assert_same_model(fitted, joblib.load(tmp_path / "m.joblib"), u, y)


def test_unfitted_estimator_pickles():
    est = MSSTCNRegressor(channels=(4, 4))
    assert pickle.loads(pickle.dumps(est)).get_params() == est.get_params()


def _walk(obj, path="state"):
    """Yield (path, leaf) for every leaf of nested dicts, lists and tuples."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


def test_pickled_state_holds_only_cpu_tensors_and_plain_data(fitted):
    state = fitted.__getstate__()
    for path, leaf in _walk(state):
        assert not isinstance(leaf, (torch.nn.Module, torch.device)), path
        if isinstance(leaf, torch.Tensor):
            assert leaf.device.type == "cpu", path
    assert isinstance(state["model_"], dict)  # weights as a state dict
    assert isinstance(state["device_"], str)


def test_model_fitted_on_cuda_unpickles_on_a_cpu_only_machine(
    fitted, data, monkeypatch
):
    """Simulate a GPU-fitted model: its pickled state names a CUDA device."""
    u, y = data
    state = fitted.__getstate__()
    state["device_"] = "cuda:0"
    state["device"] = "cuda"
    payload = pickle.dumps(state)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restored = MSSTCNRegressor.__new__(MSSTCNRegressor)
    restored.__setstate__(pickle.loads(payload))
    assert restored.device_ == torch.device("cpu")
    assert next(restored.model_.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(
        restored.predict(u, y_init=y[:10]), fitted.predict(u, y_init=y[:10])
    )
    restored.partial_fit(u, y)  # continues on the CPU
    assert restored.n_iter_ == fitted.n_iter_ + fitted.max_iter


def test_saved_cuda_model_loads_on_a_cpu_only_machine(
    fitted, data, tmp_path, monkeypatch
):
    u, y = data
    fitted.save(tmp_path / "m.safetensors")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # a file written by a model whose device parameter was "cuda"
    monkeypatch.setattr(fitted, "device", "cuda")
    fitted.save(tmp_path / "cuda.safetensors")
    loaded = MSSTCNRegressor.load(tmp_path / "cuda.safetensors")
    assert loaded.device == "cuda"  # the parameter is kept ...
    assert loaded.device_ == torch.device("cpu")  # ... the network is on the CPU
    np.testing.assert_array_equal(loaded.predict(u), fitted.predict(u))
    assert MSSTCNRegressor.load(tmp_path / "m.safetensors", device="cpu").device == (
        "cpu"
    )
    with pytest.raises(ValueError, match="CUDA is not available"):
        MSSTCNRegressor.load(tmp_path / "m.safetensors", device="cuda:0")


@pytest.mark.gpu
def test_gpu_fitted_model_loads_on_cpu_in_a_fresh_process(data, tmp_path):
    """A real CUDA fit, unpickled and loaded where CUDA is hidden."""
    import os
    import subprocess
    import sys

    u, y = data
    est = MSSTCNRegressor(random_state=0, **{**TINY, "device": "cuda"}).fit(u, y)
    assert est.device_.type == "cuda"
    ref = est.predict(u, y_init=y[:10])
    joblib.dump(est, tmp_path / "m.joblib")
    est.save(tmp_path / "m.safetensors")
    np.save(tmp_path / "u.npy", u)
    np.save(tmp_path / "y.npy", y)
    script = f"""
import joblib, numpy as np, torch
from sysid_msstcn import MSSTCNRegressor
assert not torch.cuda.is_available()
u = np.load({str(tmp_path / "u.npy")!r}); y = np.load({str(tmp_path / "y.npy")!r})
a = joblib.load({str(tmp_path / "m.joblib")!r})
b = MSSTCNRegressor.load({str(tmp_path / "m.safetensors")!r})
assert a.device_.type == "cpu" and b.device_.type == "cpu"
np.save({str(tmp_path / "a.npy")!r}, a.predict(u, y_init=y[:10]))
np.save({str(tmp_path / "b.npy")!r}, b.predict(u, y_init=y[:10]))
"""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    for name in ("a", "b"):
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), ref, atol=1e-3)
