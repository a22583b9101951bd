"""Audio decoding and an appendable ``.npy`` writer (numpy, scipy, soundfile).

Decoding goes through :mod:`soundfile` (libsndfile), which reads WAV, FLAC,
OGG and, from libsndfile 1.1 on, MP3. The result imitates the reference
pipelines' ``ffmpeg -acodec pcm_s16le -ac 1 -ar 16000``: mono, resampled with
:func:`scipy.signal.resample_poly` when the file's rate differs, and quantised
to int16.
"""

from __future__ import annotations

import os
import struct
from math import gcd
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sysid_msstcn.exceptions import DataFormatError

__all__ = ["AUDIO_EXTENSIONS", "NpyAppender", "decode_audio", "trim_zeros"]

AUDIO_EXTENSIONS: tuple[str, ...] = (".mp3", ".wav", ".flac")

_HEADER_BYTES = 128  # fixed .npy header size, so the shape can be rewritten


def _check_riff(path: Path) -> None:
    """Raise if a RIFF/WAVE file is shorter than its header declares."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    declared = struct.unpack("<I", head[4:8])[0] + 8
    if declared in (8, 0xFFFFFFFF + 8):  # streaming writers leave it unset
        return
    actual = path.stat().st_size
    if actual < declared:
        raise DataFormatError(
            f"truncated audio file {path}: header declares {declared} bytes, "
            f"file has {actual}"
        )


def decode_audio(path: str | os.PathLike[str], sample_rate: int = 16000) -> np.ndarray:
    """Decode an audio file to mono int16 samples at ``sample_rate``.

    Parameters
    ----------
    path : path-like
        A WAV, FLAC or MP3 file (any format libsndfile reads).
    sample_rate : int, default=16000
        Target rate in Hz. Other rates are converted with
        :func:`scipy.signal.resample_poly`.

    Returns
    -------
    samples : numpy.ndarray of int16, shape (n_samples,)
        Multi-channel audio is mixed down to the mean of its channels.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If ``sample_rate`` is not a positive whole number.
    DataFormatError
        If the file is empty, truncated, corrupt (including NaN or infinite
        floating-point samples) or in an unknown format; the message names the
        file.
    """
    import soundfile as sf
    from scipy.signal import resample_poly

    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, (int, float, np.integer, np.floating))
        or not float(sample_rate).is_integer()
        or sample_rate < 1
    ):
        raise ValueError(
            f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}"
        )
    sample_rate = int(sample_rate)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise DataFormatError(f"empty audio file (0 bytes): {path}")
    _check_riff(path)
    try:
        with sf.SoundFile(str(path)) as snd:
            declared, rate = snd.frames, snd.samplerate
            data = snd.read(dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError) as exc:
        raise DataFormatError(f"cannot decode audio file {path}: {exc}") from exc
    n = data.shape[0]
    if n == 0:
        raise DataFormatError(f"empty audio file (no samples): {path}")
    if rate < 1:
        raise DataFormatError(f"audio file {path} declares a sample rate of {rate} Hz")
    finite = np.isfinite(data)
    if not finite.all():
        first = int(np.argmin(finite.all(axis=1)))
        raise DataFormatError(
            f"corrupt audio file {path}: NaN or infinite samples (first at frame "
            f"{first})"
        )
    # compressed formats estimate their length from the header: a file cut
    # short decodes to far fewer frames than announced (the margin allows for
    # inexact estimates of VBR MP3 files without a Xing/LAME header)
    if declared > 0 and n < 0.9 * declared:
        raise DataFormatError(
            f"truncated audio file {path}: decoded {n} of {declared} frames"
        )
    x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        g = gcd(int(rate), int(sample_rate))
        x = resample_poly(x, int(sample_rate) // g, int(rate) // g)
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def trim_zeros(x: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Remove samples that are exactly zero at both ends.

    Parameters
    ----------
    x : numpy.ndarray of shape (n_samples,)

    Returns
    -------
    trimmed : numpy.ndarray
        A view of ``x`` (empty when every sample is zero).
    n_leading, n_trailing : int
        Number of samples removed at the start and at the end.
    """
    nonzero = np.flatnonzero(x)
    if nonzero.size == 0:
        return x[:0], int(x.size), 0
    first, last = int(nonzero[0]), int(nonzero[-1])
    return x[first : last + 1], first, int(x.size) - last - 1


def _npy_header(n_rows: int, n_cols: int, descr: str) -> bytes:
    shape = f"({n_rows}, {n_cols})"
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    body = text.ljust(_HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


class NpyAppender:
    """Write a 2-D ``.npy`` file row block by row block, without holding it.

    The header has a fixed size; :meth:`close` rewrites it with the final
    number of rows. The result loads with ``numpy.load(path, mmap_mode="r")``.

    Parameters
    ----------
    path : path-like
        File to create (overwritten).
    n_cols : int
        Row length.
    dtype : numpy dtype, default=int16
        Little-endian element type.
    """

    def __init__(self, path: str | os.PathLike[str], n_cols: int, dtype=np.int16):
        self.path = Path(path)
        self.n_cols = int(n_cols)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.n_rows = 0
        self._fh: BinaryIO | None = open(self.path, "wb")
        self._fh.write(_npy_header(0, self.n_cols, self.dtype.str))

    def append(self, rows: np.ndarray) -> None:
        """Append rows of shape ``(k, n_cols)``.

        Parameters
        ----------
        rows : numpy.ndarray of shape (k, n_cols)
        """
        if self._fh is None:
            raise ValueError(f"{self.path} is already closed")
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != self.n_cols:
            raise ValueError(
                f"rows must have shape (k, {self.n_cols}), got {rows.shape}"
            )
        self._fh.write(rows.tobytes())
        self.n_rows += rows.shape[0]

    def close(self) -> None:
        """Write the final header and close the file."""
        if self._fh is None:
            return
        self._fh.seek(0)
        self._fh.write(_npy_header(self.n_rows, self.n_cols, self.dtype.str))
        self._fh.close()
        self._fh = None

    def discard(self) -> None:
        """Close and delete the partial file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.path.unlink(missing_ok=True)
