"""Online handwriting (IAM-OnDB): stroke XML → ``(pen, dx, dy)`` sequences.

Conventions (VRNN, Chung et al. 2015; MS-STCN's loader is a modified copy):

* one XML file of ``lineStrokes/<writer>/<form base>/<form>-<NN>.xml`` is one
  sequence; the points of all strokes are read in document order;
* y is flipped (``y ← -y``, the sensor's y grows downward);
* the pen bit of a point is 1 when it is the last point of its stroke (or of
  the line), else 0;
* row ``t`` (for points ``t = 1 … N-1``) is ``(pen_t, x_t - x_{t-1},
  y_t - y_{t-1})``: the first point gives no row, so ``T = N - 1``;
* the offsets are divided by the scalar "VRNN scale" ``std_q`` of the training
  offsets (see :func:`vrnn_moments`); the pen column is left alone;
* optionally (MS-STCN) U(-0.5, 0.5) noise is added to the training dx, dy
  before scaling, drawn once from a seed.

The XML is untrusted input and is parsed with :mod:`defusedxml`: documents
with a DTD, entity declarations or external references are refused with
:class:`~sysid_msstcn.exceptions.UnsafeFileError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sysid_msstcn.exceptions import DataFormatError, UnsafeFileError

__all__ = [
    "IAM_ONDB_VRNN_SCALE",
    "HandwritingData",
    "chunk_sequences",
    "find_line_files",
    "load_iam_ondb",
    "read_form_list",
    "read_line_strokes",
    "strokes_to_offsets",
    "vrnn_moments",
    "vrnn_scale",
]

#: ``std_q`` of the VRNN/Graves training split (10,741 lines), from the notes.
IAM_ONDB_VRNN_SCALE = 56.04

_PathLike = str | os.PathLike[str]


def _number(value: str | None, what: str, path: Path) -> float:
    if value is None:
        raise DataFormatError(f"{path}: a Point has no {what!r} attribute")
    try:
        number = float(value)
    except ValueError:
        raise DataFormatError(f"{path}: bad {what} value {value!r}") from None
    if not np.isfinite(number):
        raise DataFormatError(
            f"{path}: non-finite {what} value {value!r} (NaN or infinity)"
        )
    return number


def read_line_strokes(xml_path: _PathLike) -> list[np.ndarray]:
    """Read the strokes of one IAM-OnDB line file.

    Parameters
    ----------
    xml_path : path-like
        A ``lineStrokes`` XML file.

    Returns
    -------
    strokes : list of numpy.ndarray of shape (n_points, 2)
        ``(x, y)`` per point in sensor units, as stored (y grows downward),
        one array per ``Stroke`` in document order; strokes without points
        are left out. Integer coordinates give int64 arrays.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    UnsafeFileError
        If the XML has a DTD, entity declarations or external references.
    DataFormatError
        If the file is truncated, malformed, has no ``StrokeSet``, or a point
        lacks a coordinate or has one that is not a finite number.
    """
    from xml.etree.ElementTree import ParseError

    import defusedxml
    import defusedxml.ElementTree as safe_et

    path = Path(xml_path)
    if not path.is_file():
        raise FileNotFoundError(f"line stroke file not found: {path}")
    try:
        root = safe_et.parse(
            str(path), forbid_dtd=True, forbid_entities=True, forbid_external=True
        ).getroot()
    except defusedxml.DefusedXmlException as exc:
        raise UnsafeFileError(
            f"refusing unsafe XML in {path} ({type(exc).__name__}: DTDs, entities "
            "and external references are not allowed)"
        ) from exc
    except ParseError as exc:
        raise DataFormatError(f"malformed or truncated XML in {path}: {exc}") from exc
    stroke_set = root.find("StrokeSet")
    if stroke_set is None:
        raise DataFormatError(f"{path}: no StrokeSet element (root <{root.tag}>)")
    strokes = []
    for stroke in stroke_set.iter("Stroke"):
        pts = [
            (_number(p.get("x"), "x", path), _number(p.get("y"), "y", path))
            for p in stroke.iter("Point")
        ]
        if pts:
            arr = np.asarray(pts, dtype=np.float64)
            if np.all(arr == np.rint(arr)):
                arr = arr.astype(np.int64)
            strokes.append(arr)
    return strokes


def strokes_to_offsets(strokes: Sequence[np.ndarray]) -> np.ndarray:
    """Convert strokes to VRNN rows ``(pen, dx, dy)`` with y flipped.

    Parameters
    ----------
    strokes : sequence of array-like of shape (n_points, 2)
        ``(x, y)`` per point, y growing downward (as in the XML).

    Returns
    -------
    offsets : numpy.ndarray of shape (n_points_total - 1, 3), float64
        Column 0 is the pen bit of the point (1 = last point of its stroke),
        columns 1-2 the offsets from the previous point with y flipped. Empty
        (shape (0, 3)) for fewer than two points.
    """
    arrays = [np.asarray(s, dtype=np.float64).reshape(-1, 2) for s in strokes]
    arrays = [a for a in arrays if len(a)]
    if sum(len(a) for a in arrays) < 2:
        return np.zeros((0, 3))
    xy = np.concatenate(arrays, axis=0)
    xy[:, 1] = -xy[:, 1]
    pen = np.concatenate([np.r_[np.zeros(len(a) - 1), 1.0] for a in arrays])
    return np.column_stack([pen[1:], np.diff(xy, axis=0)])


def vrnn_moments(sequences: Iterable[np.ndarray]) -> tuple[float, float]:
    """The VRNN scalar mean and std of the offsets (with its quirk).

    Sums run over both offset columns but are divided by the number of rows,
    so ``mean_q = E[dx] + E[dy]`` and ``std_q**2 = E[dx**2] + E[dy**2] -
    mean_q**2`` (on the VRNN train split: mean_q ≈ 8.067, std_q ≈ 56.04).

    Parameters
    ----------
    sequences : iterable of numpy.ndarray of shape (T, 3)
        ``(pen, dx, dy)`` rows.

    Returns
    -------
    mean_q, std_q : float
    """
    n, s1, s2 = 0, 0.0, 0.0
    for seq in sequences:
        d = np.asarray(seq, dtype=np.float64)[:, 1:3]
        n += d.shape[0]
        s1 += float(d.sum())
        s2 += float((d**2).sum())
    if n == 0:
        raise ValueError("cannot compute the VRNN scale from zero rows")
    mean = s1 / n
    return mean, float(np.sqrt(s2 / n - mean**2))


def vrnn_scale(sequences: Iterable[np.ndarray]) -> float:
    """The scalar ``std_q`` that MS-STCN divides dx and dy by.

    Parameters
    ----------
    sequences : iterable of numpy.ndarray of shape (T, 3)
        Noise-free training rows ``(pen, dx, dy)``.

    Returns
    -------
    std_q : float
        See :func:`vrnn_moments`.
    """
    return vrnn_moments(sequences)[1]


def chunk_sequences(
    sequences: Iterable[np.ndarray], length: int = 1024, min_ratio: float = 0.05
) -> list[np.ndarray]:
    """Cut sequences into consecutive chunks for training (MS-STCN).

    Parameters
    ----------
    sequences : iterable of numpy.ndarray of shape (T, ...)
    length : int, default=1024
        Chunk length (``seq_len_train``).
    min_ratio : float, default=0.05
        A last, shorter chunk (or a whole sequence shorter than ``length``)
        is kept only if it has at least ``min_ratio * length`` steps.

    Returns
    -------
    chunks : list of numpy.ndarray
        Views of the inputs, in order.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    out = []
    for seq in sequences:
        for start in range(0, len(seq), length):
            chunk = seq[start : start + length]
            if len(chunk) == length or len(chunk) >= min_ratio * length:
                out.append(chunk)
    return out


def read_form_list(path: _PathLike) -> list[str]:
    """Read a list of form ids (one per line; spaces, blanks, ``#`` lines skipped).

    Parameters
    ----------
    path : path-like
        E.g. VRNN's ``train.txt`` (whose lines start with a space).

    Returns
    -------
    forms : list of str

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    DataFormatError
        If the file is not UTF-8 text.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"form list not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"form list {path} is not UTF-8 text") from exc
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _strokes_dir(root: Path) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"IAM-OnDB folder not found: {root}")
    return root / "lineStrokes" if (root / "lineStrokes").is_dir() else root


_FORM_RE = re.compile(r"^([a-z]\d\d)-(\d\d\d)[a-z]?$")


def find_line_files(line_strokes_dir: _PathLike, form: str) -> list[Path]:
    """The line XML files of one form, in line order.

    Parameters
    ----------
    line_strokes_dir : path-like
        The unpacked ``lineStrokes`` folder.
    form : str
        Form id such as ``a01-000u`` or ``d04-081``.

    Returns
    -------
    files : list of pathlib.Path
        ``<writer>/<form base>/<form>-NN.xml``; empty if the form is absent.
    """
    match = _FORM_RE.match(form)
    if match is None:
        raise ValueError(f"not an IAM-OnDB form id: {form!r}")
    folder = Path(line_strokes_dir) / match.group(1) / form[:7]
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^{re.escape(form)}-(\d+)\.xml$")
    hits = [(m, p) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return [p for m, p in sorted(hits, key=lambda h: int(h[0].group(1)))]


@dataclass
class HandwritingData:
    """IAM-OnDB sequences per split.

    Attributes
    ----------
    sequences : dict of str to list of numpy.ndarray
        Per split, one float64 array ``(T, 3)`` = ``(pen, dx, dy)`` per line,
        offsets divided by ``scale``.
    names : dict of str to list of str
        Line ids (file stems such as ``a01-000u-01``), aligned with
        ``sequences``.
    scale : float
        Divisor applied to dx and dy (1.0 when unscaled).
    noise : bool
        Whether U(-0.5, 0.5) noise was added to the training offsets.
    """

    sequences: dict[str, list[np.ndarray]]
    names: dict[str, list[str]]
    scale: float
    noise: bool

    def __getitem__(self, split: str) -> list[np.ndarray]:
        return self.sequences[split]

    def chunks(
        self, split: str = "train", length: int = 1024, min_ratio: float = 0.05
    ) -> list[np.ndarray]:
        """Training chunks of a split (see :func:`chunk_sequences`).

        Parameters
        ----------
        split : str, default="train"
        length : int, default=1024
        min_ratio : float, default=0.05

        Returns
        -------
        chunks : list of numpy.ndarray
        """
        return chunk_sequences(self.sequences[split], length, min_ratio)


def load_iam_ondb(
    root: _PathLike,
    split_dir: _PathLike | None = None,
    *,
    splits: Sequence[str] | Mapping[str, Any] = ("train", "valid"),
    scale: Literal["vrnn"] | float | None = "vrnn",
    noise: bool = False,
    random_state: int | np.random.Generator | None = 0,
    missing: Literal["raise", "ignore"] = "raise",
) -> HandwritingData:
    """Load IAM-OnDB lines per split as VRNN ``(pen, dx, dy)`` sequences.

    Parameters
    ----------
    root : path-like
        Folder holding ``lineStrokes/`` (or the ``lineStrokes`` folder itself).
    split_dir : path-like, optional
        Folder with ``<split>.txt`` form lists; default
        ``<root>/splits/vrnn_graves`` (VRNN/Graves train and valid lists).
    splits : sequence of str or mapping, default=("train", "valid")
        Split names read from ``split_dir``, or a mapping from split name to a
        list of form ids or a list file.
    scale : "vrnn", float or None, default="vrnn"
        ``"vrnn"``: ``std_q`` of the noise-free "train" split; a float: that
        divisor (e.g. :data:`IAM_ONDB_VRNN_SCALE`); None: no scaling.
    noise : bool, default=False
        Add U(-0.5, 0.5) to the raw dx, dy of the "train" split (MS-STCN
        dequantisation), once, before scaling.
    random_state : int, numpy Generator or None, default=0
        Seed of the noise.
    missing : {"raise", "ignore"}, default="raise"
        What to do with a listed form that has no line files.

    Returns
    -------
    data : HandwritingData

    Raises
    ------
    FileNotFoundError
        If a folder or list file is missing.
    DataFormatError, UnsafeFileError
        If a line file is malformed, empty or unsafe; the message names it.
    """
    strokes_dir = _strokes_dir(Path(root))
    if isinstance(splits, Mapping):
        lists = {
            k: read_form_list(v) if isinstance(v, str | os.PathLike) else list(v)
            for k, v in splits.items()
        }
    else:
        sdir = Path(split_dir) if split_dir else Path(root) / "splits" / "vrnn_graves"
        lists = {name: read_form_list(sdir / f"{name}.txt") for name in splits}
    sequences: dict[str, list[np.ndarray]] = {}
    names: dict[str, list[str]] = {}
    for split, forms in lists.items():
        sequences[split], names[split] = [], []
        for form in forms:
            files = find_line_files(strokes_dir, form)
            if not files and missing == "raise":
                raise FileNotFoundError(
                    f"{split}: no line files for form {form!r} under {strokes_dir}"
                )
            for path in files:
                seq = strokes_to_offsets(read_line_strokes(path))
                if len(seq) == 0:
                    raise DataFormatError(f"{path}: fewer than two points")
                sequences[split].append(seq)
                names[split].append(path.stem)
    if scale == "vrnn":
        if not sequences.get("train"):
            raise ValueError("scale='vrnn' needs a non-empty 'train' split")
        divisor = vrnn_scale(sequences["train"])
    else:
        divisor = 1.0 if scale is None else float(scale)
    if not divisor > 0:
        raise ValueError(f"scale must be positive, got {divisor}")
    if noise and "train" in sequences:
        rng = np.random.default_rng(random_state)
        for seq in sequences["train"]:
            seq[:, 1:3] += rng.uniform(-0.5, 0.5, size=(len(seq), 2))
    for seqs in sequences.values():
        for seq in seqs:
            seq[:, 1:3] /= divisor
    return HandwritingData(sequences, names, divisor, bool(noise))
