"""Presets: every one builds, is plain data, and is listed in the summary."""

from __future__ import annotations

import json

import pytest
import torch

from sysid_msstcn.config import NetworkConfig, config_from_dict
from sysid_msstcn.model import MSSTCN
from sysid_msstcn.presets import (
    PRESETS,
    get_preset,
    preset_names,
    preset_network_kwargs,
)
from sysid_msstcn.summary import count_parameters, preset_summary, preset_table

NAMES = list(PRESETS)
PLAIN = (dict, list, tuple, str, int, float, bool, type(None))


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _lists(obj):
    """Tuples to lists, recursively (JSON has no tuples)."""
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return obj


def _assert_plain(obj, path="preset"):
    assert isinstance(obj, PLAIN), f"{path} is a {type(obj).__name__}"
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, str), f"{path} has a non-string key {k!r}"
            _assert_plain(v, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _assert_plain(v, f"{path}[{i}]")


def test_preset_names_are_the_preset_keys():
    assert preset_names() == tuple(PRESETS)
    assert {"blizzard_fw2_code", "iam_ondb", "sysid_small"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_builds_and_runs(name):
    # the full-size model is built and evaluated on a short sequence
    cfg = NetworkConfig(**preset_network_kwargs(name))
    preset = get_preset(name)
    assert cfg.n_outputs == preset["n_outputs"] and cfg.n_inputs == preset["n_inputs"]
    model = MSSTCN(cfg).eval()
    assert count_parameters(model) > 0
    T = cfg.total_stride + 3
    y = torch.randn(1, cfg.n_outputs, T)
    if cfg.likelihood == "gmm_bernoulli":
        y[:, 0] = (y[:, 0] > 0).float()
    u = torch.randn(1, cfg.n_inputs, T) if cfg.n_inputs else None
    with torch.no_grad():
        out = model(y, u)
    assert out.params.shape == (1, model.likelihood.n_params, T)
    assert torch.isfinite(out.log_lik).all()
    assert len(out.latents) == cfg.n_levels


@pytest.mark.parametrize("name", NAMES)
def test_presets_are_plain_json_data(name):
    # plain dicts/lists/numbers/strings, JSON round trip after tuples -> lists
    preset = get_preset(name)
    _assert_plain(preset)
    assert set(preset) >= {"description", "n_outputs", "n_inputs", "params"}
    assert json.loads(json.dumps(_lists(preset))) == _lists(preset)
    cfg = NetworkConfig(**preset_network_kwargs(name))
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_get_preset_returns_a_copy():
    a = get_preset("sysid_small")
    a["params"]["channels"] = (1,)
    a["params"]["new"] = 1
    a["description"] = "changed"
    b = get_preset("sysid_small")
    assert b == PRESETS["sysid_small"] and b is not PRESETS["sysid_small"]
    assert b["params"] is not PRESETS["sysid_small"]["params"]
    assert "new" not in PRESETS["sysid_small"]["params"]
    kw = preset_network_kwargs("sysid_small")
    kw["channels"] = (2,)
    assert PRESETS["sysid_small"]["params"]["channels"] == (16, 16, 16)


@pytest.mark.parametrize("func", [get_preset, preset_network_kwargs, preset_summary])
def test_unknown_preset_names_the_available_ones(func):
    with pytest.raises(ValueError, match="unknown preset") as err:
        func("no_such_preset")
    for name in NAMES:
        assert name in str(err.value)


def test_preset_table_lists_every_preset():
    table = preset_table()
    rows = table.splitlines()
    assert len(rows) == 2 + len(NAMES)
    for name in NAMES:
        assert sum(f"`{name}`" in r for r in rows) == 1, name
    (row,) = [r for r in rows if "`blizzard_fw2_code`" in r]
    assert "5,845,802" in row


@pytest.mark.parametrize("name", ["sysid_small", "iam_ondb"])
def test_preset_summary_is_computed(name):
    s = preset_summary(name)
    cfg = NetworkConfig(**preset_network_kwargs(name))
    assert s["receptive_field"] == cfg.receptive_field
    assert s["total_stride"] == cfg.total_stride
    assert s["parameters"] == count_parameters(MSSTCN(cfg))
