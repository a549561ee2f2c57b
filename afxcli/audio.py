"""Audio files in and out: reading, atomic writing, output-path safety, resampling for analysis.

Arrays are NumPy ``float32`` shaped ``(channels, samples)`` (mono ``(1, n)``, stereo ``(2, n)``),
always at the file's own sample rate. Every problem a user can cause (a missing file, a folder, a
file that is not audio, an empty or broken one, too many channels, an output that would overwrite
an input or land in a missing folder) raises :class:`~afxcli.errors.AfxError` with one line that
names the file.

Decoding and encoding go through libsndfile (``soundfile``): WAV, FLAC, OGG Vorbis/Opus, MP3 and
the other formats libsndfile reads; writing is limited to WAV and FLAC.
"""
from __future__ import annotations

import errno
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import soundfile as sf

from .atomic import atomic_open
from .errors import AfxError

PathLike = Union[str, "os.PathLike[str]"]

#: Extensions treated as audio when a folder is expanded into its files (lower case, with dot).
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".w64", ".rf64"}
)

#: Writable containers by extension -> (libsndfile format, default subtype).
WRITE_FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_24"),
    ".wave": ("WAV", "PCM_24"),
    ".flac": ("FLAC", "PCM_24"),
}

#: Frames per block when writing a file (:func:`write_audio`).
WRITE_BLOCK_FRAMES = 1 << 16

#: Most channels afx reads (mono and stereo).
MAX_CHANNELS = 2


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says (no samples decoded)."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _check_input_path(path: Path) -> None:
    """Raise a one-line AfxError if ``path`` is not an existing, readable, non-empty file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AfxError(f"{path}: no such file") from None
    except NotADirectoryError:
        raise AfxError(f"{path}: no such file (a parent is not a folder)") from None
    except PermissionError:
        raise AfxError(f"{path}: permission denied") from None
    except OSError as e:
        raise AfxError(f"{path}: cannot access ({e.strerror or e})") from None
    if path.is_dir():
        raise AfxError(f"{path}: is a folder, not an audio file")
    if not path.is_file():
        raise AfxError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise AfxError(f"{path}: permission denied")
    if st.st_size == 0:
        raise AfxError(f"{path}: empty file (0 bytes)")


def audio_info(path: PathLike) -> AudioInfo:
    """Read the header of ``path``: sample rate, channels, frames, container and subtype.

    Raises AfxError (naming the file) for a missing, unreadable, empty or non-audio file.
    """
    p = Path(path)
    _check_input_path(p)
    try:
        info = sf.info(str(p))
    except PermissionError:
        raise AfxError(f"{p}: permission denied") from None
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError):
        raise AfxError(f"{p}: not an audio file afx can read (WAV, FLAC, OGG, MP3, ...)") from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise AfxError(f"{p}: invalid audio header (sample rate {info.samplerate}, {info.channels} channels)")
    return AudioInfo(p, int(info.samplerate), int(info.channels), int(info.frames), str(info.format), str(info.subtype))


def read_audio(path: PathLike) -> tuple[np.ndarray, int]:
    """Decode an audio file at its own sample rate.

    Returns ``(audio, sample_rate)`` with ``audio`` a C-contiguous ``float32`` array of shape
    ``(channels, samples)``, channels 1 or 2, samples > 0, all finite.

    Raises AfxError naming the file for: missing path, folder, unreadable path, not audio,
    zero-length audio, more than :data:`MAX_CHANNELS` channels, NaN or infinite samples.
    """
    info = audio_info(path)
    p = info.path
    if info.channels > MAX_CHANNELS:
        raise AfxError(f"{p}: has {info.channels} channels; afx reads mono and stereo only")
    if info.frames == 0:
        raise AfxError(f"{p}: contains no audio (0 samples)")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except PermissionError:
        raise AfxError(f"{p}: permission denied") from None
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
        raise AfxError(f"{p}: cannot decode audio ({' '.join(str(e).split())})") from None
    if data.shape[0] == 0:
        raise AfxError(f"{p}: contains no audio (0 samples)")
    if not np.isfinite(data).all():
        raise AfxError(f"{p}: contains NaN or infinite samples")
    return np.ascontiguousarray(data.T), int(sr)


def _as_channels_first(audio: np.ndarray, where: Path) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"audio for {where} must be (channels, samples), got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"audio for {where} is empty, shape {a.shape}")
    if a.shape[0] > a.shape[1]:
        raise ValueError(f"audio for {where} looks transposed: shape {a.shape} is not (channels, samples)")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"audio for {where} must be floating point, got {a.dtype}")
    return a


def check_output_path(out: PathLike, inputs: Iterable[PathLike]) -> Path:
    """Refuse an output path that is one of the inputs (same resolved path, or the same file
    through a link). Returns ``Path(out)``. Raises AfxError naming both files."""
    o = Path(out)
    o_res = o.resolve()
    for inp in inputs:
        i = Path(inp)
        same = i.resolve() == o_res
        if not same and o.exists() and i.exists():
            try:
                same = os.path.samefile(o, i)
            except OSError:
                same = False
        if same:
            raise AfxError(f"{o}: output would overwrite the input {i}; choose another output path")
    return o


def write_audio(path: PathLike, audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> Path:
    """Write ``audio`` ``(channels, samples)`` (or 1-D mono) to a WAV or FLAC file, atomically.

    The container follows the extension (``.wav``/``.flac``); ``subtype`` defaults to ``PCM_24``
    (any libsndfile subtype the container accepts, e.g. ``PCM_16``, ``FLOAT`` for WAV). Integer
    subtypes clip samples to [-1, 1] before libsndfile quantizes them; ``FLOAT``/``DOUBLE`` WAV
    keep values beyond full scale.

    The samples go to a temporary file in the destination folder, are flushed to disk, and the
    file is moved over ``path`` with ``os.replace``: readers see either the old file or the
    complete new one, and a failure leaves no partial or temporary file behind.

    Raises AfxError naming the file for: an unsupported extension or subtype, a missing or
    unwritable output folder, an output path that is a folder, NaN/inf samples, or a write error.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in WRITE_FORMATS:
        raise AfxError(f"{p}: cannot write {ext or 'files without an extension'}; use .wav or .flac")
    fmt, default_subtype = WRITE_FORMATS[ext]
    subtype = (subtype or default_subtype).upper()
    if not sf.check_format(fmt, subtype):
        raise AfxError(f"{p}: subtype {subtype} is not valid for {fmt}")
    sr = int(sample_rate)
    if sr != sample_rate or sr <= 0:
        raise AfxError(f"{p}: invalid sample rate {sample_rate!r}")
    a = _as_channels_first(audio, p)

    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise AfxError(f"{p}: output folder {parent} does not exist")
    if not parent.is_dir():
        raise AfxError(f"{p}: {parent} is not a folder")
    if p.is_dir():
        raise AfxError(f"{p}: is a folder; give a file name")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AfxError(f"{p}: output folder {parent} is not writable")

    clip = subtype.startswith("PCM") or subtype in {"ULAW", "ALAW"}
    frames = a.shape[1]
    # Block by block through one small interleaved buffer: a whole-file transposed (and clipped)
    # copy is a fresh 64 MB allocation for a 3-minute stereo song, and on a VM its page faults cost
    # more than the encoding (measured: 0.4 s of a 1.0 s write).
    buf = np.empty((min(frames, WRITE_BLOCK_FRAMES), a.shape[0]),
                   dtype=a.dtype if a.dtype in (np.float32, np.float64) else np.float32)
    try:
        with atomic_open(p, "w+b") as fh:
            with sf.SoundFile(fh, mode="w", samplerate=sr, channels=a.shape[0], format=fmt, subtype=subtype) as f:
                for start in range(0, frames, WRITE_BLOCK_FRAMES):
                    block = buf[:min(WRITE_BLOCK_FRAMES, frames - start)]
                    np.copyto(block, a[:, start:start + block.shape[0]].T)
                    if not np.isfinite(block).all():   # the partial file is removed (atomic_open)
                        raise AfxError(f"{p}: refusing to write NaN or infinite samples")
                    if clip:
                        np.clip(block, -1.0, 1.0, out=block)
                    f.write(block)
    except AfxError:
        raise
    except OSError as e:
        reason = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise AfxError(f"{p}: write failed ({reason})") from None
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise AfxError(f"{p}: write failed ({' '.join(str(e).split())})") from None
    return p


def peak_dbfs(audio: np.ndarray) -> float:
    """Sample peak of ``audio`` (any shape) in dBFS: ``20*log10(max|x|)``; ``-inf`` for silence.

    This is the sample peak, not the BS.1770 true peak (dBTP), which oversamples first.
    """
    peak = float(np.max(np.abs(audio))) if np.size(audio) else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def resample(audio: np.ndarray, sr_from: float, sr_to: float) -> np.ndarray:
    """Resample ``audio`` ``(..., samples)`` from ``sr_from`` to ``sr_to`` Hz along the last axis.

    Polyphase FIR resampling (``scipy.signal.resample_poly``, Kaiser window beta 5.0) by the
    rational factor ``sr_to/sr_from`` (limited to a denominator of 1000 for non-integer rates).
    Meant for analysis (feeding an encoder at the model rate); output length is
    ``ceil(samples * up / down)``. Returns the input dtype (float32 stays float32).
    """
    from scipy.signal import resample_poly

    if not (sr_from > 0 and sr_to > 0 and math.isfinite(sr_from) and math.isfinite(sr_to)):
        raise ValueError(f"sample rates must be positive and finite, got {sr_from} -> {sr_to}")
    a = np.asarray(audio)
    if sr_from == sr_to:
        return a.copy()
    ratio = Fraction(sr_to).limit_denominator(1000) / Fraction(sr_from).limit_denominator(1000)
    ratio = ratio.limit_denominator(10000)
    out = resample_poly(a, ratio.numerator, ratio.denominator, axis=-1)
    return out.astype(a.dtype if np.issubdtype(a.dtype, np.floating) else np.float32, copy=False)


def resample_for_analysis(audio: np.ndarray, sr_from: float, sr_to: float) -> np.ndarray:
    """Resample ``audio`` ``(channels, samples)`` from ``sr_from`` to ``sr_to`` Hz for a model's
    analysis with libsoxr (``python-soxr``, its "VHQ" linear-phase setting), so that the mastering
    path does not pay the ~1 s import of ``scipy.signal`` that :func:`resample` needs. Output length ``ceil(samples ·
    sr_to / sr_from)`` like :func:`resample` (soxr's own length is rounded: the last sample is
    repeated or dropped to match). Returns float32 ``(channels, samples)``. The model's
    predictions from this and from :func:`resample` agree within the tolerances the tests state."""
    import soxr

    if not (sr_from > 0 and sr_to > 0 and math.isfinite(sr_from) and math.isfinite(sr_to)):
        raise ValueError(f"sample rates must be positive and finite, got {sr_from} -> {sr_to}")
    a = np.asarray(audio, dtype=np.float32)
    if sr_from == sr_to:
        return a.copy()
    ratio = Fraction(sr_to).limit_denominator(1000) / Fraction(sr_from).limit_denominator(1000)
    ratio = ratio.limit_denominator(10000)
    want = -(-a.shape[-1] * ratio.numerator // ratio.denominator)
    y = soxr.resample(np.ascontiguousarray(a.T), float(sr_from), float(sr_to), quality="VHQ").T
    if y.shape[-1] < want:
        y = np.concatenate([y, np.repeat(y[:, -1:], want - y.shape[-1], axis=1)], axis=1)
    return np.ascontiguousarray(y[:, :want], dtype=np.float32)
