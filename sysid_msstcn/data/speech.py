"""Raw speech (Blizzard 2013 style): decode, cut, cache, split, standardise, frame.

Pipeline (MS-STCN, Andersson et al. 2021, as described in the project notes):

1. every audio file under a folder (mp3, wav, flac; sorted by relative path)
   is decoded to mono 16 kHz int16 (see :func:`decode_audio`);
2. samples that are exactly zero are trimmed at both ends (decoder padding);
3. the rest is cut into non-overlapping clips of 8000 samples (0.5 s), the
   remainder is dropped; no clip spans two files;
4. the clips are written once to a cache folder (``clips.npy``, int16, read
   later through a memory map, plus ``meta.json``): :class:`ClipStore`;
5. files are split into train/test (the authors' seeded 90/10 file split, or
   file lists), the last 5 % of the training clips are validation:
   :func:`split_by_file`, :func:`split_from_lists`;
6. clips are standardised with scalar statistics of the training clips in
   float units ``x / 2**15``: :class:`SpeechStatistics`;
7. clips are framed with frame width FW: :func:`frame_clips`.

Nothing beyond the cache folder is written, and training reads only the clips
it asks for: a 300-hour corpus needs about 35 GB of disk, not of memory.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sysid_msstcn.data._audio import (
    AUDIO_EXTENSIONS,
    NpyAppender,
    decode_audio,
    trim_zeros,
)
from sysid_msstcn.exceptions import DataFormatError, ShapeError

__all__ = [
    "AUDIO_EXTENSIONS",
    "BlizzardData",
    "ClipStore",
    "SpeechClips",
    "SpeechSplit",
    "SpeechStatistics",
    "decode_audio",
    "find_audio_files",
    "frame_clips",
    "load_blizzard",
    "load_speech_clips",
    "read_file_list",
    "split_by_file",
    "split_from_lists",
    "trim_zeros",
    "unframe_clips",
]

CLIP_LENGTH = 8000
SAMPLE_RATE = 16000
_CACHE_VERSION = 1
_PathLike = str | os.PathLike[str]
Framing = Literal["contiguous", "strided"]


# --------------------------------------------------------------------------
# Files and the clip cache
# --------------------------------------------------------------------------
def find_audio_files(
    audio_dir: _PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS
) -> list[Path]:
    """List audio files under a folder, recursively, sorted by relative path.

    Parameters
    ----------
    audio_dir : path-like
        Folder to walk (e.g. ``<Blizzard root>/train/unsegmented``).
    extensions : sequence of str, default=(".mp3", ".wav", ".flac")
        Accepted suffixes (case-insensitive).

    Returns
    -------
    files : list of pathlib.Path
        Paths relative to ``audio_dir``.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist or holds no audio file.
    """
    root = Path(audio_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder not found: {root}")
    exts = {e.lower() for e in extensions}
    files = sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.suffix.lower() in exts and p.is_file()
    )
    if not files:
        raise FileNotFoundError(f"no audio files ({', '.join(sorted(exts))}) in {root}")
    return files


class ClipStore:
    """Decoded int16 clips on disk, read lazily through a memory map.

    Rows are clips of ``clip_length`` samples, grouped by source file in
    sorted file order. Nothing is read until a clip is requested; pickling
    (e.g. into DataLoader workers) sends only the path.

    Parameters
    ----------
    cache_dir : path-like
        A folder written by :func:`load_speech_clips`.

    Attributes
    ----------
    files : list of dict
        One entry per source file: ``path`` (relative), ``start`` and
        ``count`` (its rows), ``n_samples``, ``n_leading``, ``n_trailing``.
    """

    def __init__(self, cache_dir: _PathLike):
        self.cache_dir = Path(cache_dir)
        meta_path = self.cache_dir / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no clip cache in {self.cache_dir} (meta.json)")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
            self.files: list[dict[str, Any]] = self.meta["files"]
            self.clip_length = int(self.meta["clip_length"])
            self.sample_rate = int(self.meta["sample_rate"])
            self.n_clips = int(self.meta["n_clips"])
            if not isinstance(self.files, list) or not all(
                isinstance(f, dict) for f in self.files
            ):
                raise TypeError("'files' must be a list of objects")
        except (ValueError, KeyError, TypeError) as exc:
            raise DataFormatError(f"corrupt cache index {meta_path}: {exc}") from exc
        self._clips: np.ndarray | None = None

    @property
    def clips(self) -> np.ndarray:
        """The memory-mapped int16 array of shape (n_clips, clip_length)."""
        if self._clips is None:
            path = self.cache_dir / "clips.npy"
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise DataFormatError(f"corrupt clip cache {path}: {exc}") from exc
            if arr.dtype != np.int16:
                raise DataFormatError(
                    f"clip cache {path} holds {arr.dtype} samples, not int16"
                )
            if arr.shape != (self.n_clips, self.clip_length):
                raise DataFormatError(
                    f"clip cache {path} has shape {arr.shape}, index says "
                    f"{(self.n_clips, self.clip_length)}"
                )
            self._clips = arr
        return self._clips

    def __len__(self) -> int:
        return self.n_clips

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self.clips[index])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_clips"] = None
        return state

    def file_rows(self, files: Iterable[dict[str, Any]] | None = None) -> np.ndarray:
        """Row indices of the clips of ``files`` (all files by default), in order.

        Parameters
        ----------
        files : iterable of dict, optional
            Entries of :attr:`files`.

        Returns
        -------
        rows : numpy.ndarray of int64
        """
        entries = self.files if files is None else list(files)
        parts = [np.arange(f["start"], f["start"] + f["count"]) for f in entries]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, int)


def _fingerprint(root: Path, rel: Path) -> dict[str, Any]:
    st = (root / rel).stat()
    return {"path": rel.as_posix(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _cache_is_current(cache: Path, params: dict[str, Any], prints: list) -> bool:
    try:
        meta = json.loads((cache / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    if any(meta.get(k) != v for k, v in params.items()):
        return False
    old = [{k: f[k] for k in ("path", "size", "mtime_ns")} for f in meta["files"]]
    old += meta.get("skipped_fingerprints", [])

    def key(f: dict[str, Any]) -> str:
        return f["path"]

    return sorted(old, key=key) == sorted(prints, key=key) and (
        (cache / "clips.npy").is_file()
    )


def load_speech_clips(
    audio_dir: _PathLike,
    cache_dir: _PathLike,
    *,
    sample_rate: int = SAMPLE_RATE,
    clip_length: int = CLIP_LENGTH,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    errors: Literal["raise", "skip"] = "raise",
    rebuild: bool = False,
) -> ClipStore:
    """Decode a folder of audio into cached clips (once) and open the cache.

    Parameters
    ----------
    audio_dir : path-like
        Folder of audio files, searched recursively.
    cache_dir : path-like
        Folder for ``clips.npy`` and ``meta.json``; created if needed. An
        existing cache is reused when its parameters and the files' sizes and
        modification times match; otherwise it is rebuilt.
    sample_rate : int, default=16000
        Rate of the decoded audio.
    clip_length : int, default=8000
        Samples per clip (0.5 s at 16 kHz).
    extensions : sequence of str, default=(".mp3", ".wav", ".flac")
        Audio suffixes to include.
    errors : {"raise", "skip"}, default="raise"
        What to do with an unreadable file: raise, or warn and leave it out.
    rebuild : bool, default=False
        Decode again even if the cache is current.

    Notes
    -----
    Build the cache from one process (e.g. rank 0 of a distributed run) and
    let the others open it with :class:`ClipStore` afterwards.

    Returns
    -------
    store : ClipStore

    Raises
    ------
    FileNotFoundError
        If ``audio_dir`` is missing or holds no audio file.
    DataFormatError
        If a file is empty, truncated or corrupt (with ``errors="raise"``).
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    root = Path(audio_dir)
    rel_files = find_audio_files(root, extensions)
    prints = [_fingerprint(root, rel) for rel in rel_files]
    params = {
        "version": _CACHE_VERSION,
        "sample_rate": int(sample_rate),
        "clip_length": int(clip_length),
    }
    cache = Path(cache_dir)
    if not rebuild and _cache_is_current(cache, params, prints):
        return ClipStore(cache)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "meta.json").unlink(missing_ok=True)
    writer = NpyAppender(cache / "clips.npy.partial", clip_length)
    entries, skipped = [], []
    try:
        for rel, fp in zip(rel_files, prints, strict=True):
            try:
                x = decode_audio(root / rel, sample_rate)
            except DataFormatError as exc:
                if errors == "raise":
                    raise
                warnings.warn(f"skipping {root / rel}: {exc}", stacklevel=2)
                skipped.append(fp)
                continue
            trimmed, lead, trail = trim_zeros(x)
            n = trimmed.size // clip_length
            writer.append(trimmed[: n * clip_length].reshape(n, clip_length))
            entries.append(
                {**fp, "start": writer.n_rows - n, "count": n, "n_samples": x.size}
                | {"n_leading": lead, "n_trailing": trail}
            )
    except BaseException:
        writer.discard()
        raise
    writer.close()
    os.replace(writer.path, cache / "clips.npy")
    meta = {**params, "n_clips": writer.n_rows, "files": entries}
    meta["skipped_fingerprints"] = skipped
    tmp = cache / "meta.json.partial"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, cache / "meta.json")
    return ClipStore(cache)


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeechSplit:
    """Row indices of a :class:`ClipStore` per split, and the files behind them.

    Attributes
    ----------
    train, valid, test : numpy.ndarray of int64
        Rows of the clip store.
    train_files, test_files : tuple of str
        Relative paths of the files in each part (validation clips come from
        the tail of the training files, or from ``valid_files``).
    valid_files : tuple of str
        Files of an explicit validation list (empty for the tail split).
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    train_files: tuple[str, ...] = ()
    valid_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()


def _tail_split(rows: np.ndarray, validation_fraction: float) -> tuple[Any, Any]:
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction must be in [0, 1), got {validation_fraction}"
        )
    cut = int(len(rows) * (1.0 - validation_fraction))
    return rows[:cut], rows[cut:]


def split_by_file(
    store: ClipStore,
    *,
    test_fraction: float = 0.1,
    validation_fraction: float = 0.05,
    seed: int = 1,
) -> SpeechSplit:
    """The MS-STCN authors' split: seeded file shuffle, 90/10, validation tail.

    The sorted file list is shuffled with ``numpy.random.RandomState(seed)``;
    the first ``int(n * (1 - test_fraction))`` files are training files, the
    rest test files. The training clips, in shuffled file order, lose their
    last ``validation_fraction`` to validation (``int(n * 0.95)`` cut).

    Parameters
    ----------
    store : ClipStore
    test_fraction : float, default=0.1
    validation_fraction : float, default=0.05
    seed : int, default=1
        The authors use 1. (Their file order was the file system's, so the
        exact sets cannot be reproduced; the procedure is the same.)

    Returns
    -------
    split : SpeechSplit
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    files = list(store.files)
    order = np.arange(len(files))
    np.random.RandomState(seed).shuffle(order)
    n_train = int(len(files) * (1.0 - test_fraction))
    if n_train == 0 or n_train == len(files):
        raise ValueError(
            f"cannot split {len(files)} file(s) with test_fraction={test_fraction}"
        )
    train_f = [files[i] for i in order[:n_train]]
    test_f = [files[i] for i in order[n_train:]]
    train, valid = _tail_split(store.file_rows(train_f), validation_fraction)
    return SpeechSplit(
        train=train,
        valid=valid,
        test=store.file_rows(test_f),
        train_files=tuple(f["path"] for f in train_f),
        test_files=tuple(f["path"] for f in test_f),
    )


def read_file_list(path: _PathLike) -> list[str]:
    """Read a split list: one name per line, blank lines and ``#`` comments skipped.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    names : list of str
        Stripped names.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"split list {path} is not UTF-8 text") from exc
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


_STRIP_SUFFIXES = {".t7", ".wav", ".mp3", ".flac", ".npy", ".ogg"}


def _file_key(name: str) -> str:
    """Base name without audio suffixes (``x.wav.t7`` and ``dir/x.mp3`` -> ``x``)."""
    stem = Path(name).name
    while Path(stem).suffix.lower() in _STRIP_SUFFIXES:
        stem = Path(stem).stem
    return stem


def _resolve(
    store: ClipStore, names: Sequence[str], missing: str, label: str
) -> list[dict[str, Any]]:
    by_path = {f["path"]: f for f in store.files}
    by_key: dict[str, list[dict[str, Any]]] = {}
    for f in store.files:
        by_key.setdefault(_file_key(f["path"]), []).append(f)
    found, absent = [], []
    for name in names:
        if name in by_path:
            found.append(by_path[name])
            continue
        hits = by_key.get(_file_key(name), [])
        if len(hits) > 1:
            paths = [h["path"] for h in hits]
            raise DataFormatError(f"{label} list entry {name!r} is ambiguous: {paths}")
        (found if hits else absent).append(hits[0] if hits else name)
    if absent and missing == "raise":
        raise DataFormatError(
            f"{len(absent)} {label} file(s) not in the audio folder, e.g. {absent[:5]}"
        )
    return found


def split_from_lists(
    store: ClipStore,
    train: Sequence[str] | _PathLike,
    valid: Sequence[str] | _PathLike | None = None,
    test: Sequence[str] | _PathLike | None = None,
    *,
    validation_fraction: float = 0.05,
    missing: Literal["raise", "ignore"] = "raise",
) -> SpeechSplit:
    """Split the clips by file lists (names or list files).

    Entries match a file by relative path or by base name without audio
    suffixes, so Dai et al.'s ``washington_square_ch32.wav.t7`` selects
    ``.../washington_square_ch32.mp3``.

    Parameters
    ----------
    store : ClipStore
    train, valid, test : sequence of str or path-like
        Names, or a path to a list file (:func:`read_file_list`). Without
        ``valid``, the last ``validation_fraction`` of the training clips is
        used; without ``test`` the test split is empty.
    validation_fraction : float, default=0.05
    missing : {"raise", "ignore"}, default="raise"
        What to do with names that match no file.

    Returns
    -------
    split : SpeechSplit
    """

    def names(obj: Any) -> list[str]:
        if obj is None:
            return []
        if isinstance(obj, str | os.PathLike):
            return read_file_list(obj)
        return [str(n) for n in obj]

    train_f = _resolve(store, names(train), missing, "train")
    valid_f = _resolve(store, names(valid), missing, "valid")
    test_f = _resolve(store, names(test), missing, "test")
    train_rows = store.file_rows(train_f)
    if valid is None:
        train_rows, valid_rows = _tail_split(train_rows, validation_fraction)
    else:
        valid_rows = store.file_rows(valid_f)
    return SpeechSplit(
        train=train_rows,
        valid=valid_rows,
        test=store.file_rows(test_f),
        train_files=tuple(f["path"] for f in train_f),
        valid_files=tuple(f["path"] for f in valid_f),
        test_files=tuple(f["path"] for f in test_f),
    )


# --------------------------------------------------------------------------
# Standardisation and framing
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeechStatistics:
    """Scalar mean and standard deviation in float units ``x / 2**15``.

    Attributes
    ----------
    mean, std : float
        ``transform(x) = (x / 2**15 - mean) / std`` for int16 ``x``.
    """

    mean: float
    std: float

    @classmethod
    def fit(
        cls, store: ClipStore | np.ndarray, rows: Any = None, *, block: int = 512
    ) -> SpeechStatistics:
        """Mean and population std over clips, streamed in blocks (float64).

        Parameters
        ----------
        store : ClipStore or numpy.ndarray of int16, shape (n_clips, clip_length)
        rows : array-like of int, optional
            Clips to use (the training rows); all by default.
        block : int, default=512
            Clips read at a time.

        Returns
        -------
        statistics : SpeechStatistics
        """
        rows = np.arange(len(store)) if rows is None else np.sort(np.asarray(rows))
        if rows.size == 0:
            raise ValueError("cannot compute statistics from zero clips")
        n, mean, m2 = 0, 0.0, 0.0
        for i in range(0, rows.size, block):
            x = np.asarray(store[rows[i : i + block]], dtype=np.float64) / 32768.0
            k, mu = x.size, float(x.mean())
            delta = mu - mean
            m2 += float(((x - mu) ** 2).sum()) + delta**2 * n * k / (n + k)
            mean += delta * k / (n + k)
            n += k
        return cls(mean=mean, std=float(np.sqrt(m2 / n)))

    @classmethod
    def literature(cls) -> SpeechStatistics:
        """VRNN/Z-forcing Blizzard constants (int16 mean -0.35828, std 3117.59)."""
        return cls(mean=-0.35828 / 32768.0, std=3117.59 / 32768.0)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardise; integer input is divided by 2**15 first.

        Parameters
        ----------
        x : numpy.ndarray
            int16 samples, or floats already in ``x / 2**15`` units.

        Returns
        -------
        z : numpy.ndarray of float32
        """
        x = np.asarray(x)
        xf = x / 32768.0 if np.issubdtype(x.dtype, np.integer) else x
        return ((xf - self.mean) / self.std).astype(np.float32)

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        """Map standardised values back to float units ``x / 2**15`` (float64).

        Parameters
        ----------
        z : numpy.ndarray

        Returns
        -------
        x : numpy.ndarray of float64
        """
        return np.asarray(z, dtype=np.float64) * self.std + self.mean


def frame_clips(
    clips: np.ndarray, frame_width: int, mode: Framing = "contiguous"
) -> np.ndarray:
    """Frame clips into ``(..., T, FW)`` with ``T = clip_length / FW``.

    Parameters
    ----------
    clips : numpy.ndarray of shape (..., clip_length)
    frame_width : int
        FW; must divide the clip length.
    mode : {"contiguous", "strided"}, default="contiguous"
        ``"contiguous"``: frame ``t`` holds samples ``[t*FW, (t+1)*FW)``, as in
        VRNN/STCN (``out[t, c] = x[t*FW + c]``). ``"strided"``: the MS-STCN
        reference code's reshape to ``(FW, T)`` read as (channels, time), here
        transposed to time-major: ``out[t, c] = x[c*T + t]``, i.e. one step
        holds FW samples spaced T apart. Use it only to reproduce that code.

    Returns
    -------
    frames : numpy.ndarray of shape (..., T, FW)
    """
    x = np.asarray(clips)
    n = x.shape[-1]
    if frame_width < 1 or n % frame_width:
        raise ShapeError(f"frame_width {frame_width} does not divide clip length {n}")
    t = n // frame_width
    if mode == "contiguous":
        return x.reshape(*x.shape[:-1], t, frame_width)
    if mode == "strided":
        return np.swapaxes(x.reshape(*x.shape[:-1], frame_width, t), -1, -2)
    raise ValueError(f"mode must be 'contiguous' or 'strided', got {mode!r}")


def unframe_clips(frames: np.ndarray, mode: Framing = "contiguous") -> np.ndarray:
    """Invert :func:`frame_clips`: ``(..., T, FW)`` → ``(..., T * FW)``.

    Parameters
    ----------
    frames : numpy.ndarray of shape (..., T, FW)
    mode : {"contiguous", "strided"}, default="contiguous"
        The mode used for framing.

    Returns
    -------
    clips : numpy.ndarray of shape (..., T * FW)
    """
    f = np.asarray(frames)
    t, fw = f.shape[-2], f.shape[-1]
    if mode == "contiguous":
        return f.reshape(*f.shape[:-2], t * fw)
    if mode == "strided":
        return np.swapaxes(f, -1, -2).reshape(*f.shape[:-2], t * fw)
    raise ValueError(f"mode must be 'contiguous' or 'strided', got {mode!r}")


class SpeechClips:
    """Standardised, framed clips of one split, read lazily from a ClipStore.

    Parameters
    ----------
    store : ClipStore
    rows : array-like of int
        Rows of the store in this split.
    statistics : SpeechStatistics
    frame_width : int, default=200
    mode : {"contiguous", "strided"}, default="contiguous"
        See :func:`frame_clips`.
    """

    def __init__(
        self,
        store: ClipStore,
        rows: Any,
        statistics: SpeechStatistics,
        frame_width: int = 200,
        mode: Framing = "contiguous",
    ):
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        self.statistics = statistics
        self.frame_width = int(frame_width)
        self.mode = mode
        frame_clips(np.zeros(store.clip_length), self.frame_width, mode)  # check

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitem__(self, index: int) -> np.ndarray:
        """Return clip ``index`` as float32 frames of shape (T, FW)."""
        raw = self.store[int(self.rows[index])]
        return frame_clips(self.statistics.transform(raw), self.frame_width, self.mode)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def take(self, indices: Any) -> np.ndarray:
        """Return several clips as float32 frames of shape (n, T, FW).

        Parameters
        ----------
        indices : array-like of int
            Positions in this split.

        Returns
        -------
        frames : numpy.ndarray
        """
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        order = np.argsort(rows)
        raw = np.empty((rows.size, self.store.clip_length), dtype=np.int16)
        raw[order] = self.store[rows[order]]
        return frame_clips(self.statistics.transform(raw), self.frame_width, self.mode)


@dataclass(frozen=True)
class BlizzardData:
    """The splits of a speech corpus, ready for training.

    Attributes
    ----------
    train, valid, test : SpeechClips
    statistics : SpeechStatistics
    split : SpeechSplit
    store : ClipStore
    """

    train: SpeechClips
    valid: SpeechClips
    test: SpeechClips
    statistics: SpeechStatistics
    split: SpeechSplit
    store: ClipStore


def load_blizzard(
    audio_dir: _PathLike,
    cache_dir: _PathLike,
    *,
    frame_width: int = 200,
    mode: Framing = "contiguous",
    split_lists: Mapping[str, Any] | None = None,
    statistics: SpeechStatistics | Literal["train", "literature"] = "train",
    test_fraction: float = 0.1,
    validation_fraction: float = 0.05,
    seed: int = 1,
    **clip_kwargs: Any,
) -> BlizzardData:
    """Decode (once), split, standardise and frame a Blizzard-style corpus.

    Parameters
    ----------
    audio_dir : path-like
        Folder of audio files, e.g. ``<root>/train/unsegmented``.
    cache_dir : path-like
        Clip cache folder (see :func:`load_speech_clips`).
    frame_width : int, default=200
        FW (MS-STCN uses 200, 25 and 2).
    mode : {"contiguous", "strided"}, default="contiguous"
        See :func:`frame_clips`.
    split_lists : mapping, optional
        ``{"train": ..., "valid": ..., "test": ...}`` passed to
        :func:`split_from_lists`; without it :func:`split_by_file` is used.
    statistics : SpeechStatistics, "train" or "literature", default="train"
        Fit on the training clips, the VRNN/Z-forcing constants, or given.
    test_fraction, validation_fraction : float
        See :func:`split_by_file`.
    seed : int, default=1
        Seed of the file shuffle.
    **clip_kwargs
        Passed to :func:`load_speech_clips`.

    Returns
    -------
    data : BlizzardData
    """
    store = load_speech_clips(audio_dir, cache_dir, **clip_kwargs)
    if split_lists is None:
        split = split_by_file(
            store,
            test_fraction=test_fraction,
            validation_fraction=validation_fraction,
            seed=seed,
        )
    else:
        lists = dict(split_lists)
        split = split_from_lists(
            store,
            lists.pop("train"),
            lists.pop("valid", None),
            lists.pop("test", None),
            validation_fraction=validation_fraction,
            **lists,
        )
    if isinstance(statistics, SpeechStatistics):
        stats = statistics
    elif statistics == "train":
        stats = SpeechStatistics.fit(store, split.train)
    elif statistics == "literature":
        stats = SpeechStatistics.literature()
    else:
        raise ValueError(f"unknown statistics {statistics!r}")

    def view(rows: np.ndarray) -> SpeechClips:
        return SpeechClips(store, rows, stats, frame_width, mode)

    return BlizzardData(
        view(split.train), view(split.valid), view(split.test), stats, split, store
    )
