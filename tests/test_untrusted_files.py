"""Untrusted files: nothing in a file is ever executed, corrupt files say so.

* checkpoints (``training.load_checkpoint``, ``distributed`` resume) are read
  with ``torch.load(weights_only=True)``; a pickle that would import or call
  anything is refused with :class:`UnsafeFileError`;
* saved models (``MSSTCNRegressor.load``) are safetensors with a JSON header:
  no pickle at all; anything else is a :class:`DataFormatError` naming the file;
* handwriting XML is parsed with defusedxml: DTDs, entity expansion (billion
  laughs) and external entities are refused, without expansion;
* truncated or corrupt model, checkpoint, audio, clip-cache and XML files give
  errors that name the file.

Each crafted pickle would ``touch`` a marker file when unpickled; every test
checks that the marker was never created.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import struct
import time
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from _tiny import TINY_FAST
from safetensors import safe_open
from safetensors.torch import save_file

from sysid_msstcn import MSSTCNRegressor, cli
from sysid_msstcn.data._audio import decode_audio
from sysid_msstcn.data.handwriting import load_iam_ondb, read_line_strokes
from sysid_msstcn.data.speech import ClipStore
from sysid_msstcn.distributed import load_latest_checkpoint
from sysid_msstcn.exceptions import DataFormatError, UnsafeFileError
from sysid_msstcn.training import atomic_torch_save, load_checkpoint

torch.set_num_threads(1)

TINY = TINY_FAST
_rng = np.random.default_rng(0)
U = _rng.normal(size=(60, 2))
Y = np.convolve(U[:, 0], [0.5, 0.3])[:60]


class _Touch:
    """Unpickling this object runs ``touch <marker>`` (if anything unpickles it)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a crafted file executed code"


def _path_re(path) -> str:
    return re.escape(str(path))


# ---------------------------------------------------------------- checkpoints
def _plain_pickle(path, marker, protocol=None):
    path.write_bytes(pickle.dumps({"model": _Touch(marker)}, protocol=protocol))


def _torch_pickle(path, marker):
    torch.save({"model": {"w": torch.zeros(2)}, "x": _Touch(marker)}, path)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, 5])
def test_plain_pickle_checkpoint_is_refused(tmp_path, marker, protocol):
    path = tmp_path / "ckpt.pt"
    _plain_pickle(path, marker, protocol)
    with pytest.raises(UnsafeFileError, match=_path_re(path) + r".*system"):
        load_checkpoint(path)


def test_torch_saved_pickle_checkpoint_is_refused(tmp_path, marker):
    path = tmp_path / "ckpt.pt"
    _torch_pickle(path, marker)
    with pytest.raises(UnsafeFileError, match=r"refusing.*it would import.*system"):
        load_checkpoint(path)


def test_checkpoint_with_numpy_objects_is_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"a": np.zeros(3)}, path)
    with pytest.raises(UnsafeFileError, match=r"numpy"):
        load_checkpoint(path)


def test_plain_checkpoint_loads(tmp_path):
    path = tmp_path / "ckpt.pt"
    state = {"w": torch.arange(3.0), "step": 7, "name": "x", "rows": [1.5, None]}
    atomic_torch_save(state, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["w"], state["w"]) and loaded["rows"] == [1.5, None]


@pytest.mark.parametrize(
    "kind", ["truncated", "truncated_tail", "empty", "text", "zip_garbage"]
)
def test_corrupt_checkpoint_is_a_data_format_error(tmp_path, kind):
    good = io.BytesIO()
    torch.save({"w": torch.zeros(100)}, good)
    raw = good.getvalue()
    content = {
        "truncated": raw[: len(raw) // 2],
        "truncated_tail": raw[:-10],
        "empty": b"",
        "text": b"this is not a checkpoint\n",
        "zip_garbage": b"PK\x03\x04" + bytes(100),
    }[kind]
    path = tmp_path / "ckpt.pt"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=_path_re(path) + r": not a readable"):
        load_checkpoint(path)


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_checkpoint_is_refused(tmp_path, marker, seed):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(np.random.default_rng(seed).bytes(2000))
    with pytest.raises((DataFormatError, UnsafeFileError), match=_path_re(path)):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")


def test_distributed_resume_refuses_a_pickle_checkpoint(tmp_path, marker):
    folder = tmp_path / "run"
    folder.mkdir()
    atomic_torch_save({"step": 1}, folder / "checkpoint_000000001.pt")
    _plain_pickle(folder / "checkpoint_000000002.pt", marker)
    with pytest.raises(UnsafeFileError, match="checkpoint_000000002.pt"):
        load_latest_checkpoint(folder)
    _torch_pickle(folder / "checkpoint_000000002.pt", marker)
    with pytest.raises(UnsafeFileError, match="checkpoint_000000002.pt"):
        load_latest_checkpoint(folder)


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_distributed_resume_skips_a_damaged_newest_checkpoint(tmp_path, damage):
    folder = tmp_path / "run"
    atomic_torch_save({"step": 1}, folder / "checkpoint_000000001.pt")
    newest = folder / "checkpoint_000000002.pt"
    atomic_torch_save({"step": 2, "w": torch.zeros(50)}, newest)
    raw = newest.read_bytes()
    bad = raw[: len(raw) // 2] if damage == "truncated" else bytes(range(256)) * 4
    newest.write_bytes(bad)
    with pytest.warns(
        UserWarning, match=r"skipping unreadable checkpoint.*checkpoint_0+2\.pt"
    ):
        state = load_latest_checkpoint(folder)
    assert state["step"] == 1 and state["path"].endswith("checkpoint_000000001.pt")


def test_atomic_save_failure_leaves_no_partial_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises
        atomic_torch_save({"step": 2, "f": lambda: None}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert load_checkpoint(path) == {"step": 1}


# --------------------------------------------------------------- saved models
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MSSTCNRegressor(**TINY).fit(U, Y)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    est.save(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    return path, est.predict(U), meta, state


def test_saved_model_round_trip_without_pickle(saved, monkeypatch):
    path, pred, _, _ = saved

    def forbidden(*args, **kwargs):
        raise AssertionError("load must not unpickle")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    np.testing.assert_array_equal(MSSTCNRegressor.load(path).predict(U), pred)


def _bad_model_file(kind, path, marker, saved_path):
    raw = saved_path.read_bytes()
    if kind == "plain_pickle":
        path.write_bytes(pickle.dumps(_Touch(marker)))
    elif kind == "torch_pickle":
        _torch_pickle(path, marker)
    elif kind == "truncated_half":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "truncated_header":
        path.write_bytes(raw[:8])
    elif kind == "truncated_tail":
        path.write_bytes(raw[:-4])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "huge_header_length":
        path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    elif kind == "no_metadata":
        save_file({"w": torch.zeros(3)}, str(path))
    elif kind == "foreign_metadata":
        save_file({"w": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    elif kind == "bad_json":
        save_file({"w": torch.zeros(3)}, str(path), metadata={"sysid_msstcn": "{"})
    else:  # pragma: no cover
        raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "plain_pickle",
        "torch_pickle",
        "truncated_half",
        "truncated_header",
        "truncated_tail",
        "empty",
        "random",
        "huge_header_length",
        "no_metadata",
        "foreign_metadata",
        "bad_json",
    ],
)
def test_bad_model_file_is_a_data_format_error(saved, tmp_path, marker, kind):
    path = tmp_path / "model.safetensors"
    _bad_model_file(kind, path, marker, saved[0])
    with pytest.raises(DataFormatError, match=_path_re(path)):
        MSSTCNRegressor.load(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved model"):
        MSSTCNRegressor.load(tmp_path / "none.safetensors")
    with pytest.raises(FileNotFoundError, match="no saved model"):
        MSSTCNRegressor.load(tmp_path)  # a folder


def _edit_payload(meta, edit):
    payload = json.loads(meta["sysid_msstcn"])
    edit(payload)
    return {"sysid_msstcn": json.dumps(payload)}


def _drop_fitted_key(p):
    del p["fitted"]["n_outputs_"]


PAYLOAD_EDITS = {
    "empty_object": lambda meta: {"sysid_msstcn": "{}"},
    "json_list": lambda meta: {"sysid_msstcn": "[1]"},
    "unknown_param": lambda meta: _edit_payload(
        meta, lambda p: p["params"].update(evil=1)
    ),
    "missing_fitted_key": lambda meta: _edit_payload(meta, _drop_fitted_key),
    "bad_network_config": lambda meta: _edit_payload(
        meta, lambda p: p["network_config"].update(channels=[0, 4])
    ),
    "bad_param_value": lambda meta: _edit_payload(
        meta, lambda p: p["params"].update(likelihood="poisson")
    ),
    "unknown_format": lambda meta: _edit_payload(
        meta, lambda p: p.update(format="sysid_msstcn/99")
    ),
    "zero_output_scale": lambda meta: _edit_payload(
        meta, lambda p: p["fitted"]["y_scaler_"].update(scale=[0.0])
    ),
}


@pytest.mark.parametrize("edit", list(PAYLOAD_EDITS))
def test_gap_fixed_malformed_payload_is_a_data_format_error(saved, tmp_path, edit):
    _, _, meta, state = saved
    path = tmp_path / "model.safetensors"
    save_file(state, str(path), metadata=PAYLOAD_EDITS[edit](meta))
    with pytest.raises(DataFormatError, match=_path_re(path)):
        MSSTCNRegressor.load(path)


@pytest.mark.parametrize("damage", ["missing_tensor", "nan_weights"])
def test_gap_fixed_bad_weights_are_a_data_format_error_naming_the_file(
    saved, tmp_path, damage
):
    _, _, meta, state = saved
    state = {k: v.clone() for k, v in state.items()}
    first = next(iter(state))
    if damage == "missing_tensor":
        del state[first]
    else:
        state[first].fill_(float("nan"))
    path = tmp_path / "model.safetensors"
    save_file(state, str(path), metadata=meta)
    with pytest.raises(DataFormatError, match=_path_re(path)):
        MSSTCNRegressor.load(path)


# ------------------------------------------------------------------------ XML
_LOL = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol0 "lol">'
    + _LOL
    + ']>\n<WhiteboardCaptureSession><StrokeSet><Stroke><Point x="1" y="&lol9;"/>'
    "</Stroke></StrokeSet></WhiteboardCaptureSession>"
)
QUADRATIC = (
    '<?xml version="1.0"?>\n<!DOCTYPE q [<!ENTITY a "'
    + "x" * 50_000
    + '">]>\n<WhiteboardCaptureSession><StrokeSet><Stroke><Point x="1" y="'
    + "&a;" * 50_000
    + '"/></Stroke></StrokeSet></WhiteboardCaptureSession>'
)
GOOD_XML = (
    '<?xml version="1.0"?><WhiteboardCaptureSession><StrokeSet>'
    '<Stroke><Point x="10" y="20"/><Point x="11" y="22"/></Stroke>'
    '<Stroke><Point x="15" y="20"/></Stroke></StrokeSet></WhiteboardCaptureSession>'
)


def _unsafe_xml(kind, folder):
    secret = folder / "secret.txt"
    secret.write_text("TOP-SECRET")
    return {
        "billion_laughs": BILLION_LAUGHS,
        "quadratic_blowup": QUADRATIC,
        "external_entity": (
            f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file://{secret}">]>'
            '<WhiteboardCaptureSession><StrokeSet><Stroke><Point x="1" y="&xxe;"/>'
            "</Stroke></StrokeSet></WhiteboardCaptureSession>"
        ),
        "external_dtd": (
            f'<?xml version="1.0"?><!DOCTYPE r SYSTEM "file://{folder}/x.dtd">'
            "<WhiteboardCaptureSession><StrokeSet/></WhiteboardCaptureSession>"
        ),
        "parameter_entity": (
            '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % pe SYSTEM '
            f'"file://{secret}"> %pe;]>'
            "<WhiteboardCaptureSession><StrokeSet/></WhiteboardCaptureSession>"
        ),
        "internal_entity": (
            '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY n "5">]>'
            '<WhiteboardCaptureSession><StrokeSet><Stroke><Point x="&n;" y="1"/>'
            "</Stroke></StrokeSet></WhiteboardCaptureSession>"
        ),
    }[kind]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "kind",
    [
        "billion_laughs",
        "quadratic_blowup",
        "external_entity",
        "external_dtd",
        "parameter_entity",
        "internal_entity",
    ],
)
def test_unsafe_xml_is_refused_without_expansion(tmp_path, kind):
    path = tmp_path / "a01-000u-01.xml"
    path.write_text(_unsafe_xml(kind, tmp_path))
    start = time.perf_counter()
    with pytest.raises(UnsafeFileError, match=_path_re(path)) as info:
        read_line_strokes(path)
    assert time.perf_counter() - start < 2.0  # refused, not expanded
    assert "TOP-SECRET" not in str(info.value)


def test_unsafe_xml_is_refused_by_the_dataset_loader(tmp_path):
    folder = tmp_path / "lineStrokes" / "a01" / "a01-000"
    folder.mkdir(parents=True)
    (folder / "a01-000u-01.xml").write_text(GOOD_XML)
    (folder / "a01-000u-02.xml").write_text(BILLION_LAUGHS)
    with pytest.raises(UnsafeFileError, match=r"a01-000u-02\.xml"):
        load_iam_ondb(tmp_path, splits={"train": ["a01-000u"]}, scale=None)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (GOOD_XML[:70], r"malformed or truncated XML"),
        ("", r"malformed or truncated XML"),
        (b"\x00\xff" * 50, r"malformed or truncated XML"),
        ('<?xml version="1.0" encoding="utf-8"?><W>\udcff</W>', None),
        ("<Other/>", r"no StrokeSet element"),
        (
            '<W><StrokeSet><Stroke><Point x="a" y="2"/></Stroke></StrokeSet></W>',
            "bad x",
        ),
        ('<W><StrokeSet><Stroke><Point x="1"/></Stroke></StrokeSet></W>', "no 'y'"),
        (
            '<W><StrokeSet><Stroke><Point x="nan" y="2"/></Stroke></StrokeSet></W>',
            r"non-finite x value 'nan'",
        ),
        (
            '<W><StrokeSet><Stroke><Point x="1" y="1e400"/></Stroke></StrokeSet></W>',
            r"non-finite y value '1e400'",
        ),
    ],
    ids=[
        "truncated",
        "empty",
        "binary",
        "bad_utf8",
        "no_strokeset",
        "bad_number",
        "missing_y",
        "nan",
        "overflow",
    ],
)
def test_corrupt_xml_is_a_data_format_error(tmp_path, content, pattern):
    path = tmp_path / "line.xml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(DataFormatError, match=_path_re(path)) as info:
        read_line_strokes(path)
    if pattern:
        assert re.search(pattern, str(info.value))


def test_plain_xml_is_read(tmp_path):
    path = tmp_path / "line.xml"
    path.write_text(GOOD_XML)
    strokes = read_line_strokes(path)
    assert [s.tolist() for s in strokes] == [[[10, 20], [11, 22]], [[15, 20]]]


# ---------------------------------------------------------------------- audio
@pytest.fixture(scope="module")
def wav_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    sf.write(path, 0.3 * np.sin(np.arange(8000) / 7.0), 16000, subtype="PCM_16")
    return path.read_bytes()


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("truncated", r"truncated audio file"),
        ("header_only", r"truncated audio file"),
        ("empty", r"empty audio file"),
        ("random", r"cannot decode audio file"),
        ("text", r"cannot decode audio file"),
        ("truncated_flac", r"cannot decode audio file|truncated audio file"),
        ("nan_float", r"NaN or infinite samples"),
    ],
)
def test_corrupt_audio_is_a_data_format_error(tmp_path, wav_bytes, kind, pattern):
    path = tmp_path / ("a.flac" if kind == "truncated_flac" else "a.wav")
    if kind == "truncated":
        path.write_bytes(wav_bytes[: len(wav_bytes) // 3])
    elif kind == "header_only":
        path.write_bytes(wav_bytes[:44])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "text":
        path.write_text("RIFF? no, just text")
    elif kind == "truncated_flac":
        sf.write(path, 0.3 * np.sin(np.arange(16000) / 7.0), 16000)
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 3])
    else:
        sf.write(path, np.r_[0.1, np.nan, 0.2], 16000, subtype="FLOAT")
    with pytest.raises(DataFormatError, match=_path_re(path)) as info:
        decode_audio(path)
    assert re.search(pattern, str(info.value))


@pytest.mark.parametrize("rate", [0, -16000, 8000.5, float("nan"), "16000", True])
def test_bad_sample_rate_is_named(tmp_path, wav_bytes, rate):
    path = tmp_path / "a.wav"
    path.write_bytes(wav_bytes)
    with pytest.raises(ValueError, match=r"sample_rate must be a positive"):
        decode_audio(path, sample_rate=rate)


def _clip_cache(folder, clips, meta=None):
    folder.mkdir(parents=True, exist_ok=True)
    meta = meta or {
        "files": [],
        "clip_length": 4,
        "sample_rate": 16000,
        "n_clips": len(clips),
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    np.save(folder / "clips.npy", clips, allow_pickle=True)
    return folder


def test_clip_cache_with_pickled_objects_is_refused(tmp_path, marker):
    clips = np.array([[_Touch(marker)] * 4] * 2, dtype=object)
    store = ClipStore(_clip_cache(tmp_path / "cache", clips))
    with pytest.raises(DataFormatError, match=r"corrupt clip cache.*clips\.npy"):
        store.clips  # noqa: B018


def test_clip_cache_with_wrong_dtype_or_index_is_refused(tmp_path):
    store = ClipStore(_clip_cache(tmp_path / "a", np.zeros((2, 4))))
    with pytest.raises(DataFormatError, match=r"holds float64 samples, not int16"):
        store.clips  # noqa: B018
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "meta.json").write_text('{"files": 3, "clip_length": 4}')
    with pytest.raises(DataFormatError, match=r"corrupt cache index.*meta\.json"):
        ClipStore(folder)
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(DataFormatError, match=r"corrupt cache index"):
        ClipStore(folder)


# ------------------------------------------------------------- command line
def _cli(argv, capsys):
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return status, err


def test_cli_refuses_a_pickle_model(tmp_path, marker, capsys):
    model = tmp_path / "model.safetensors"
    model.write_bytes(pickle.dumps(_Touch(marker)))
    data = tmp_path / "d.npz"
    np.savez(data, u=U[:, 0], y=Y)
    status, err = _cli(["evaluate", model, data, "--device", "cpu"], capsys)
    assert status == 2
    assert err.startswith("sysid-msstcn: error: ") and str(model) in err
    assert "Traceback" not in err


def test_cli_refuses_pickled_arrays_in_npz(tmp_path, marker, capsys):
    data = tmp_path / "d.npz"
    np.savez(data, u=np.array([_Touch(marker)] * 3, dtype=object), y=np.zeros(3))
    status, err = _cli(["fit", data, "--device", "cpu", "-q"], capsys)
    assert status == 2 and "allow_pickle=False" in err


@pytest.mark.parametrize("kind", ["npz", "nc", "csv_text", "csv_binary", "csv_nan"])
def test_cli_corrupt_data_file_names_the_file(tmp_path, capsys, kind):
    path = tmp_path / {"npz": "d.npz", "nc": "d.nc"}.get(kind, "d.csv")
    if kind == "npz":
        path.write_bytes(b"PK\x03\x04" + bytes(60))
    elif kind == "nc":
        path.write_bytes(np.random.default_rng(0).bytes(300))
    elif kind == "csv_text":
        path.write_text("u,y\na,1\nb,2\n")
    elif kind == "csv_nan":
        path.write_text("u,y\n1,nan\n2,3\n")
    else:
        path.write_bytes(np.random.default_rng(0).bytes(300))
    status, err = _cli(["fit", path, "--device", "cpu", "-q"], capsys)
    assert status == 2 and str(path) in err and "Traceback" not in err


def test_cli_malformed_model_header(saved, tmp_path, capsys):
    _, _, _, state = saved
    model = tmp_path / "model.safetensors"
    save_file(state, str(model), metadata={"sysid_msstcn": "[1]"})
    data = tmp_path / "d.npz"
    np.savez(data, u=U[:, 0], y=Y)
    status, err = _cli(["evaluate", model, data, "--device", "cpu"], capsys)
    assert status == 2 and str(model) in err
