"""IAM-OnDB adapter: VRNN offsets, scale, noise, chunks, splits, unsafe XML."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from sysid_msstcn.data.handwriting import (
    IAM_ONDB_VRNN_SCALE,
    chunk_sequences,
    find_line_files,
    load_iam_ondb,
    read_form_list,
    read_line_strokes,
    strokes_to_offsets,
    vrnn_moments,
    vrnn_scale,
)
from sysid_msstcn.exceptions import DataFormatError, UnsafeFileError

POINT = '<Point x="{x}" y="{y}" time="0.0"/>'


def _xml(strokes, header='<?xml version="1.0" encoding="ISO-8859-1"?>\n', doctype=""):
    body = "".join(
        '<Stroke colour="black">'
        + "".join(POINT.format(x=x, y=y) for x, y in s)
        + "</Stroke>\r\n"
        for s in strokes
    )
    return (
        f"{header}{doctype}<WhiteboardCaptureSession>\n<StrokeSet>\n{body}"
        "</StrokeSet>\n</WhiteboardCaptureSession>\n"
    )


@pytest.fixture(scope="module")
def iam(shared_data):
    return shared_data / "iam_ondb"


@pytest.fixture(scope="module")
def expected(iam):
    with open(iam / "expected_vrnn_offsets.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_offsets_match_expected_table(iam, expected):
    assert len(expected) == 38
    for row in expected:
        strokes = read_line_strokes(iam / row["file"])
        off = strokes_to_offsets(strokes)
        got = {
            "n_points": sum(len(s) for s in strokes),
            "n_strokes": len(strokes),
            "T_offset_rows": len(off),
            "n_pen_up": int(off[:, 0].sum()),
            "sum_dx": int(off[:, 1].sum()),
            "sum_dy_flipped": int(off[:, 2].sum()),
            "max_abs_dx": int(np.abs(off[:, 1]).max()),
            "max_abs_dy": int(np.abs(off[:, 2]).max()),
        }
        want = {k: int(row[k]) for k in got}
        assert got == want, row["file"]
        assert set(np.unique(off[:, 0])) <= {0.0, 1.0}


def test_offsets_convention_on_small_example():
    # stroke A: (0,0) (2,1) (3,5); stroke B: (10,0); stroke C: (11,2) (12,2)
    strokes = [np.array([[0, 0], [2, 1], [3, 5]]), np.array([[10, 0]])]
    strokes.append(np.array([[11, 2], [12, 2]]))
    off = strokes_to_offsets(strokes)
    np.testing.assert_array_equal(
        off,
        [
            [0, 2, -1],
            [1, 1, -4],
            [1, 7, 5],
            [0, 1, -2],
            [1, 1, 0],
        ],
    )
    # a first stroke of one point loses its pen-up with the dropped first row
    assert strokes_to_offsets([[[0, 0]], [[1, 1], [2, 2]]])[:, 0].tolist() == [0, 1]
    assert strokes_to_offsets([[[0, 0]]]).shape == (0, 3)


def test_vrnn_moments_quirk():
    seq = np.array([[0, 1.0, 3.0], [1, 3.0, -1.0]])
    mean, std = vrnn_moments([seq])
    assert mean == pytest.approx((1 + 3 + 3 - 1) / 2)
    assert std == pytest.approx(np.sqrt((1 + 9 + 9 + 1) / 2 - mean**2))
    assert vrnn_scale([seq]) == std
    with pytest.raises(ValueError):
        vrnn_moments([])


def test_load_fixture_splits_and_scale(iam):
    data = load_iam_ondb(iam, iam / "splits" / "fixture", splits=("train", "valid"))
    assert {k: len(v) for k, v in data.sequences.items()} == {"train": 20, "valid": 13}
    assert data.names["train"][:2] == ["a01-000u-01", "a01-000u-02"]
    raw = [
        strokes_to_offsets(read_line_strokes(p))
        for form in read_form_list(iam / "splits" / "fixture" / "train.txt")
        for p in find_line_files(iam / "lineStrokes", form)
    ]
    assert data.scale == pytest.approx(vrnn_scale(raw))
    np.testing.assert_allclose(data["train"][0][:, 1:] * data.scale, raw[0][:, 1:])
    np.testing.assert_array_equal(data["train"][0][:, 0], raw[0][:, 0])
    assert not data.noise


def test_noise_only_on_training_offsets_and_seeded(iam):
    split_dir = iam / "splits" / "fixture"
    clean = load_iam_ondb(iam, split_dir, scale=None)
    noisy = load_iam_ondb(iam, split_dir, scale=None, noise=True, random_state=7)
    again = load_iam_ondb(iam, split_dir, scale=None, noise=True, random_state=7)
    diff = noisy["train"][3] - clean["train"][3]
    assert np.all(diff[:, 0] == 0)
    assert np.all(np.abs(diff[:, 1:]) <= 0.5) and np.abs(diff[:, 1:]).max() > 0.3
    np.testing.assert_array_equal(noisy["train"][3], again["train"][3])
    for a, b in zip(noisy["valid"], clean["valid"], strict=True):
        np.testing.assert_array_equal(a, b)
    fixed = load_iam_ondb(iam, split_dir, scale=IAM_ONDB_VRNN_SCALE, noise=True)
    assert fixed.scale == IAM_ONDB_VRNN_SCALE


def test_split_mapping_and_missing_form(iam):
    data = load_iam_ondb(iam / "lineStrokes", splits={"train": ["d04-081"]})
    assert len(data["train"]) == 5
    with pytest.raises(FileNotFoundError, match="z99-999"):
        load_iam_ondb(iam, splits={"train": ["z99-999"]})
    part = load_iam_ondb(
        iam, splits={"train": ["z99-999", "d04-081"]}, missing="ignore"
    )
    assert len(part["train"]) == 5
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_iam_ondb(iam / "nowhere")
    with pytest.raises(FileNotFoundError, match="train.txt"):
        load_iam_ondb(iam, iam / "splits")
    with pytest.raises(ValueError, match="form id"):
        find_line_files(iam, "not a form")


def test_vrnn_split_list_has_leading_spaces(iam):
    forms = read_form_list(iam / "splits" / "vrnn_graves" / "train.txt")
    assert len(forms) == 1535 and forms[0] == forms[0].strip()
    assert "a01-000u" in forms


def test_chunk_sequences():
    seqs = [np.arange(2090), np.arange(40), np.arange(60), np.arange(1024)]
    chunks = chunk_sequences(seqs, length=1024, min_ratio=0.05)
    assert [len(c) for c in chunks] == [1024, 1024, 60, 1024]
    np.testing.assert_array_equal(chunks[1], np.arange(1024, 2048))
    assert [len(c) for c in chunk_sequences([np.arange(2100)], 1000, 0.1)] == [
        1000,
        1000,
        100,
    ]


def test_read_line_strokes_accepts_mixed_line_ends(tmp_path):
    path = tmp_path / "x-01.xml"
    path.write_bytes(_xml([[(1, 2), (3, 4)], [(5, 6)]]).encode("latin-1"))
    strokes = read_line_strokes(path)
    assert [s.tolist() for s in strokes] == [[[1, 2], [3, 4]], [[5, 6]]]
    assert strokes[0].dtype == np.int64


BOMB = """<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
"""
EXTERNAL = '<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'


@pytest.mark.parametrize(
    "doctype", [BOMB, EXTERNAL, "<!DOCTYPE WhiteboardCaptureSession>\n"]
)
def test_unsafe_xml_is_refused(tmp_path, doctype):
    path = tmp_path / "evil-01.xml"
    text = _xml([[(1, 2), (3, 4)]], doctype=doctype)
    path.write_text(text.replace('x="1"', 'x="1" note="&lol3;"'))
    with pytest.raises(UnsafeFileError, match="evil-01.xml"):
        read_line_strokes(path)


def test_truncated_and_malformed_xml(tmp_path, iam):
    src = (iam / "lineStrokes/a01/a01-000/a01-000u-01.xml").read_bytes()
    cut = tmp_path / "cut-01.xml"
    cut.write_bytes(src[: len(src) // 2])
    with pytest.raises(DataFormatError, match="cut-01.xml"):
        read_line_strokes(cut)
    empty = tmp_path / "empty-01.xml"
    empty.write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty-01.xml"):
        read_line_strokes(empty)
    nostrokes = tmp_path / "other-01.xml"
    nostrokes.write_text("<WhiteboardCaptureSession/>")
    with pytest.raises(DataFormatError, match="StrokeSet"):
        read_line_strokes(nostrokes)
    badpoint = tmp_path / "bad-01.xml"
    badpoint.write_text(_xml([[("a", 1)]]))
    with pytest.raises(DataFormatError, match="bad-01.xml"):
        read_line_strokes(badpoint)
    with pytest.raises(FileNotFoundError):
        read_line_strokes(tmp_path / "none.xml")


def test_loader_names_bad_line_file(tmp_path):
    folder = tmp_path / "lineStrokes" / "a01" / "a01-000"
    folder.mkdir(parents=True)
    (folder / "a01-000u-01.xml").write_text(_xml([[(1, 2), (3, 4), (5, 5)]]))
    (folder / "a01-000u-02.xml").write_text(_xml([[(1, 2)]]))
    with pytest.raises(DataFormatError, match="a01-000u-02.xml"):
        load_iam_ondb(tmp_path, splits={"train": ["a01-000u"]})
    (folder / "a01-000u-02.xml").write_text(_xml([[(1, 2), (2, 2)]])[:-40])
    with pytest.raises(DataFormatError, match="a01-000u-02.xml"):
        load_iam_ondb(tmp_path, splits={"train": ["a01-000u"]})
