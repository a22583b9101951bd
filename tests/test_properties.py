"""Property-based tests (hypothesis) of input handling, metrics and parsers.

Every test runs a bounded number of derandomized examples (the same ones on
every run, so CI is reproducible) with a per-example deadline, and the module
has a wall-clock timeout.
"""

from __future__ import annotations

import tempfile
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import TINY_FAST
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sysid_msstcn import MSSTCNRegressor, metrics
from sysid_msstcn.data import io_arrays, make_io_dataset
from sysid_msstcn.data._audio import decode_audio
from sysid_msstcn.data._validation import as_experiments
from sysid_msstcn.data.handwriting import (
    read_form_list,
    read_line_strokes,
    strokes_to_offsets,
)
from sysid_msstcn.data.speech import read_file_list
from sysid_msstcn.exceptions import DataFormatError, ShapeError, UnsafeFileError

torch.set_num_threads(1)
pytestmark = pytest.mark.timeout(300)


def bounded(n: int):
    """Reproducible, bounded hypothesis settings."""
    return settings(
        max_examples=n,
        deadline=timedelta(seconds=10),
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


NUMERIC_DTYPES = [
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.float16,
    np.float32,
    np.float64,
    np.bool_,
]
moderate = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
# magnitudes away from the subnormal range, so exact power scaling stays exact
normal = st.one_of(st.just(0.0), st.floats(1e-3, 1e3), st.floats(-1e3, -1e-3))


# ----------------------------------------------------------- as_experiments
@st.composite
def numeric_arrays(draw, min_t=1, max_t=30, max_c=4):
    dtype = np.dtype(draw(st.sampled_from(NUMERIC_DTYPES)))
    shape = draw(
        st.one_of(
            st.tuples(st.integers(min_t, max_t)),
            st.tuples(st.integers(min_t, max_t), st.integers(1, max_c)),
        )
    )
    elements = None
    if dtype.kind == "f":
        elements = st.floats(
            -1e4, 1e4, allow_nan=False, allow_infinity=False, width=dtype.itemsize * 8
        )
    return draw(hnp.arrays(dtype, shape, elements=elements))


@bounded(60)
@given(numeric_arrays())
def test_numeric_arrays_become_2d_float64_with_equal_values(arr):
    data = as_experiments(arr, arr)
    (u,), (y,) = data.u, data.y
    assert u.dtype == np.float64 and u.ndim == 2
    assert u.shape == (arr.shape[0], 1 if arr.ndim == 1 else arr.shape[1])
    np.testing.assert_array_equal(u, arr.astype(np.float64).reshape(u.shape))
    np.testing.assert_array_equal(u, y)
    assert data.y_1d == (arr.ndim == 1)


@bounded(60)
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 20), st.integers(1, 4)),
        elements=moderate,
    ),
    st.sampled_from([np.nan, np.inf, -np.inf]),
    st.data(),
)
def test_the_first_non_finite_value_is_located(arr, bad, data):
    t = data.draw(st.integers(0, arr.shape[0] - 1), label="t")
    c = data.draw(st.integers(0, arr.shape[1] - 1), label="c")
    arr = arr.copy()
    arr[t, c] = bad
    what = "NaN" if np.isnan(bad) else "inf"
    with pytest.raises(ValueError, match=f"y contains {what}") as info:
        as_experiments(None, arr)
    assert f"first non-finite value at time index {t}, channel {c}" in str(info.value)


@bounded(40)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 3))
def test_length_mismatch_names_both_lengths(n_u, n_y, n_c):
    assume(n_u != n_y)
    with pytest.raises(ShapeError, match=f"{n_u} vs {n_y} time steps"):
        as_experiments(np.zeros((n_u, n_c)), np.zeros(n_y))


@bounded(40)
@given(
    st.lists(st.integers(1, 15), min_size=1, max_size=4),
    st.integers(1, 3),
    st.data(),
)
def test_experiment_lists_keep_lengths_and_check_channels(lengths, n_c, data):
    xs = [np.ones((n, n_c)) for n in lengths]
    ys = [np.zeros(n) for n in lengths]
    out = as_experiments(xs, ys)
    assert out.lengths == lengths and out.n_inputs == n_c and out.is_list
    if len(lengths) > 1:
        i = data.draw(st.integers(1, len(lengths) - 1), label="odd one")
        xs[i] = np.ones((lengths[i], n_c + 1))
        with pytest.raises(ShapeError, match=f"experiment {i} of X has {n_c + 1}"):
            as_experiments(xs, ys)


# -------------------------------------------------------- estimator input
TINY = TINY_FAST
_rng = np.random.default_rng(0)
U = _rng.normal(size=(60, 2))
Y = np.convolve(U[:, 0], [0.5, 0.3])[:60]


@pytest.fixture(scope="module")
def fitted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MSSTCNRegressor(**TINY).fit(U, Y)
    return est, est.predict(U)


inputs = hnp.arrays(
    np.float64, st.tuples(st.integers(1, 40), st.just(2)), elements=moderate
)


@bounded(20)
@given(X=inputs, data=st.data())
def test_predict_is_finite_causal_and_keeps_y_init(fitted, X, data):
    est, _ = fitted
    pred = est.predict(X)
    assert pred.shape == (X.shape[0],) and np.all(np.isfinite(pred))
    cut = data.draw(st.integers(1, X.shape[0]), label="prefix")
    np.testing.assert_allclose(est.predict(X[:cut]), pred[:cut], rtol=1e-6, atol=1e-9)
    y0 = data.draw(
        hnp.arrays(np.float64, st.integers(1, X.shape[0]), elements=moderate),
        label="y_init",
    )
    with_init = est.predict(X, y_init=y0)
    np.testing.assert_array_equal(with_init[: len(y0)], y0)


@bounded(20)
@given(
    X=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 30), st.integers(1, 5).filter(lambda c: c != 2)),
        elements=moderate,
    )
)
def test_predict_rejects_other_channel_counts(fitted, X):
    est, reference = fitted
    n = X.shape[1]
    with pytest.raises(ShapeError, match=f"X has {n} features, but MSSTCNRegressor"):
        est.predict(X)
    np.testing.assert_array_equal(est.predict(U), reference)


@bounded(20)
@given(X=inputs, bad=st.sampled_from([np.nan, np.inf]), data=st.data())
def test_non_finite_input_is_located_and_changes_nothing(fitted, X, bad, data):
    est, reference = fitted
    t = data.draw(st.integers(0, X.shape[0] - 1), label="t")
    c = data.draw(st.integers(0, 1), label="c")
    X = X.copy()
    X[t, c] = bad
    method = data.draw(st.sampled_from(["predict", "score", "fit"]), label="method")
    args = (X,) if method == "predict" else (X, np.zeros(X.shape[0]))
    with pytest.raises(ValueError, match=f"time index {t}, channel {c}"):
        getattr(est, method)(*args)
    np.testing.assert_array_equal(est.predict(U), reference)


# ------------------------------------------------------------------ metrics
@st.composite
def pairs(draw, elements=moderate, min_t=2):
    t = draw(st.integers(min_t, 40))
    c = draw(st.integers(1, 3))
    y = draw(hnp.arrays(np.float64, (t, c), elements=elements))
    p = draw(hnp.arrays(np.float64, (t, c), elements=elements))
    return y, p


def _varies(y) -> bool:
    std = y.std(axis=0)
    return bool(np.all(std > 1e-6 * np.maximum(np.abs(y).max(axis=0), 1e-300)))


@bounded(60)
@given(pairs())
def test_point_metric_identities(pair):
    y, p = pair
    rmse = metrics.rmse(y, p)
    assert np.all(rmse >= 0) and np.all(metrics.mae(y, p) <= rmse * (1 + 1e-12))
    assert np.all(metrics.rmse(y, y) == 0)
    assume(_varies(y))
    nrmse = metrics.nrmse(y, p)
    np.testing.assert_allclose(metrics.r2(y, p), 1 - nrmse**2, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(metrics.fit_index(y, p), 100 * (1 - nrmse), atol=1e-7)
    weights = np.arange(1.0, y.shape[1] + 1)
    weighted = metrics.rmse(y, p, multioutput=weights)
    assert rmse.min() * (1 - 1e-12) <= weighted <= rmse.max() * (1 + 1e-12)


@bounded(60)
@given(pairs(elements=normal), st.integers(-250, 250))
def test_rmse_and_mae_scale_with_the_data(pair, exponent):
    y, p = pair
    a = 10.0**exponent
    np.testing.assert_allclose(
        metrics.rmse(y * a, p * a), metrics.rmse(y, p) * a, rtol=1e-9
    )
    np.testing.assert_allclose(
        metrics.mae(y * a, p * a), metrics.mae(y, p) * a, rtol=1e-9
    )


@bounded(60)
@given(pairs(elements=normal), st.integers(-100, 250))
def test_nrmse_is_scale_free(pair, exponent):
    y, p = pair
    assume(_varies(y))
    a = 10.0**exponent
    np.testing.assert_allclose(
        metrics.nrmse(y * a, p * a), metrics.nrmse(y, p), rtol=1e-7
    )


@bounded(40)
@given(
    st.lists(pairs(min_t=3), min_size=1, max_size=3),
    st.integers(0, 2),
)
def test_lists_equal_concatenated_tails(parts, n_init):
    c = parts[0][0].shape[1]
    parts = [(y[:, :1].repeat(c, 1), p[:, :1].repeat(c, 1)) for y, p in parts]
    ys, ps = [y for y, _ in parts], [p for _, p in parts]
    tail_y = np.concatenate([y[n_init:] for y in ys])
    tail_p = np.concatenate([p[n_init:] for p in ps])
    np.testing.assert_allclose(
        metrics.rmse(ys, ps, n_init=n_init), metrics.rmse(tail_y, tail_p), rtol=1e-12
    )


@bounded(40)
@given(pairs(), st.floats(1e-3, 1e3))
def test_probabilistic_metric_identities(pair, sigma):
    y, p = pair
    np.testing.assert_allclose(
        metrics.crps_ensemble(y, p[None]), metrics.mae(y, p), rtol=1e-9, atol=1e-12
    )
    assert np.all(metrics.crps_gaussian(y, p, sigma) >= -1e-9)
    lower, upper = np.minimum(y, p) - 1, np.maximum(y, p) + 1
    assert np.all(metrics.interval_coverage(y, lower, upper) == 1.0)
    cover = metrics.interval_coverage(y, np.minimum(p, p + 1), p + 1)
    assert np.all((cover >= 0) & (cover <= 1))


# ------------------------------------------------------------------ parsers
@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


coords = st.integers(-(10**6), 10**6)
strokes_st = st.lists(
    st.lists(st.tuples(coords, coords), min_size=1, max_size=6),
    min_size=1,
    max_size=4,
)


def _stroke_xml(strokes) -> str:
    body = "".join(
        "<Stroke>"
        + "".join(f'<Point x="{x}" y="{y}" time="0.1"/>' for x, y in stroke)
        + "</Stroke>"
        for stroke in strokes
    )
    return (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<WhiteboardCaptureSession>'
        f"<StrokeSet>{body}</StrokeSet></WhiteboardCaptureSession>"
    )


@bounded(40)
@given(strokes_st)
def test_stroke_xml_round_trip_and_offsets(scratch, strokes):
    path = scratch / "line.xml"
    path.write_text(_stroke_xml(strokes))
    read = read_line_strokes(path)
    assert [s.tolist() for s in read] == [[list(pt) for pt in s] for s in strokes]
    rows = strokes_to_offsets(read)
    points = np.array([pt for s in strokes for pt in s], dtype=float)
    assert rows.shape == (max(len(points) - 1, 0), 3)
    if len(points) > 1:
        np.testing.assert_array_equal(
            np.cumsum(rows[:, 1]), points[1:, 0] - points[0, 0]
        )
        np.testing.assert_array_equal(
            np.cumsum(rows[:, 2]), -(points[1:, 1] - points[0, 1])
        )
        ends = np.cumsum([len(s) for s in strokes]) - 1  # last point of each
        assert rows[:, 0].sum() == np.count_nonzero(ends >= 1)
        assert set(np.unique(rows[:, 0])) <= {0.0, 1.0}


xml_noise = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    st.builds(
        lambda s, cut: s[:cut],
        strokes_st.map(_stroke_xml),
        st.integers(0, 400),
    ),
    st.builds(
        lambda decl, s: s.replace("<WhiteboardCaptureSession>", decl, 1),
        st.sampled_from(
            [
                '<!DOCTYPE a [<!ENTITY e "x">]><WhiteboardCaptureSession>',
                '<!DOCTYPE a SYSTEM "http://example.invalid/a.dtd">'
                "<WhiteboardCaptureSession>",
                '<!DOCTYPE a [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
                "<WhiteboardCaptureSession>",
            ]
        ),
        strokes_st.map(_stroke_xml),
    ),
)


@bounded(80)
@given(xml_noise)
def test_xml_parser_raises_only_its_own_errors(scratch, content):
    path = scratch / "noise.xml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    try:
        strokes = read_line_strokes(path)
    except (DataFormatError, UnsafeFileError) as exc:
        assert str(path) in str(exc)
    else:
        assert all(s.ndim == 2 and s.shape[1] == 2 for s in strokes)


@bounded(40)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_list_parsers_return_clean_names_or_name_the_file(scratch, content):
    path = scratch / "list.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8", "surrogatepass"))
    for parse in (read_form_list, read_file_list):
        try:
            names = parse(path)
        except DataFormatError as exc:
            assert str(path) in str(exc) and "UTF-8" in str(exc)
        else:
            assert all(n == n.strip() and n and not n.startswith("#") for n in names)


@bounded(30)
@given(st.binary(min_size=1, max_size=2000), st.sampled_from([".wav", ".flac"]))
def test_audio_decoder_raises_only_data_format_errors(scratch, content, suffix):
    path = scratch / f"noise{suffix}"
    path.write_bytes(content)
    try:
        samples = decode_audio(path)
    except DataFormatError as exc:
        assert str(path) in str(exc)
    else:
        assert samples.dtype == np.int16


@bounded(40)
@given(
    hnp.arrays(
        np.float64, st.tuples(st.integers(1, 30), st.integers(1, 3)), elements=moderate
    ),
    st.integers(1, 3),
    st.floats(1e-6, 1e3),
)
def test_io_dataset_round_trip(u, n_y, ts):
    y = np.repeat(u[:, :1], n_y, axis=1)
    ds = make_io_dataset(u, y, sampling_time=ts)
    u2, y2 = io_arrays(ds)
    np.testing.assert_array_equal(u2, u)
    np.testing.assert_array_equal(y2, y)
    assert ds.attrs["sampling_time"] == ts
