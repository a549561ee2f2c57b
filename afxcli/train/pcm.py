"""Decoded-audio store for training: every file of a list decoded once, resampled to the model
rate, converted to the wanted channel count and kept as one float16 memory-mapped array in the
user cache.

Why: cropping a few seconds out of a compressed file (Ogg/FLAC seek + decode + polyphase resampling)
costs ~0.2 s per training item on this project's 2-core machines — four times the model's whole
optimizer step. Reading a crop from the store is a slice of a memory map (no decoding), and the
store is shared between DataLoader workers through the page cache.

Layout, under ``<afx cache>/pcm/`` (``afxcli.datasets.cache_dir``): ``<key>.f16`` (float16,
``(channels, total_samples)`` flattened per file: file ``i`` occupies ``[offset_i, offset_i +
channels·length_i)``, channel-major) and ``<key>.json`` (files, offsets, lengths, rate, channels).
``key`` is a SHA-1 of the rate, the channel count and every file's path, size and modification time,
so a changed corpus gets a new store. Both files are written to temporaries and renamed.
float16 keeps 11 significant bits: quantization noise ≈ −66 dB below each sample's magnitude
(relative, not absolute, so quiet passages keep their detail) — below what the style losses resolve.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import AfxError


def store_key(files: Sequence[Path], sample_rate: int, channels: int) -> str:
    """SHA-1 (first 16 hex digits) of rate, channels and each file's path, size and mtime."""
    h = hashlib.sha1(f"pcm1|{int(sample_rate)}|{int(channels)}".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"|{Path(f).resolve()}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


class PCMStore:
    """Read-only view of a built store: ``segment(i, start, n)`` → float32 ``(channels, n)``."""

    def __init__(self, data_path: Path, index: dict) -> None:
        self.files = [Path(f) for f in index["files"]]
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.lengths = np.asarray(index["lengths"], dtype=np.int64)
        self.sample_rate = int(index["sample_rate"])
        self.channels = int(index["channels"])
        total = int(index["total"])
        self._data = np.memmap(data_path, dtype=np.float16, mode="r", shape=(total,)) if total else np.zeros(0, np.float16)

    def __len__(self) -> int:
        return len(self.files)

    def length(self, i: int) -> int:
        """Samples of file ``i`` at the store's rate."""
        return int(self.lengths[i])

    def segment(self, i: int, start: int, n: int) -> np.ndarray:
        """``n`` samples of file ``i`` from ``start`` (clipped to the file; zero-padded at the end):
        float32 ``(channels, n)``."""
        length = int(self.lengths[i])
        start = max(0, min(int(start), length))
        take = max(0, min(int(n), length - start))
        base = int(self.offsets[i])
        a = np.asarray(self._data[base:base + self.channels * length]).reshape(self.channels, length)
        out = np.zeros((self.channels, int(n)), np.float32)
        out[:, :take] = a[:, start:start + take]
        return out

    @classmethod
    def open_or_build(cls, files: Sequence[str | Path], sample_rate: int, channels: int,
                      directory: str | Path | None = None, progress: bool = True) -> "PCMStore":
        """The store of ``files`` at ``sample_rate``/``channels``: opened if built, else built first
        (decoding every file once; a progress line goes to stderr)."""
        from ..audio import read_audio, resample
        from .data import to_channels

        files = [Path(f) for f in files]
        if not files:
            raise AfxError("decoded-audio store: no files")
        if directory is None:
            from ..datasets import cache_dir

            directory = cache_dir() / "pcm"
        directory = Path(directory)
        key = store_key(files, sample_rate, channels)
        data_path, index_path = directory / f"{key}.f16", directory / f"{key}.json"
        if index_path.is_file() and data_path.is_file():
            return cls(data_path, json.loads(index_path.read_text()))
        from ..atomic import atomic_open, write_json_atomic

        offsets, lengths, pos, t0 = [], [], 0, time.monotonic()
        with atomic_open(data_path, "wb", make_parents=True) as fh:
            for k, f in enumerate(files):
                audio, sr = read_audio(f)
                if sr != sample_rate:
                    audio = resample(audio, sr, sample_rate)
                audio = np.nan_to_num(to_channels(np.asarray(audio, np.float32), channels))
                a16 = np.clip(audio, -65504.0, 65504.0).astype(np.float16)
                fh.write(np.ascontiguousarray(a16).tobytes())
                offsets.append(pos)
                lengths.append(int(a16.shape[1]))
                pos += a16.size
                if progress and ((k + 1) % 50 == 0 or k + 1 == len(files)):
                    print(f"decoded-audio store {key}: {k + 1}/{len(files)} files "
                          f"({pos / channels / sample_rate / 3600:.2f} h, {time.monotonic() - t0:.0f} s)",
                          file=sys.stderr, flush=True)
        index = {"files": [str(f) for f in files], "offsets": offsets, "lengths": lengths,
                 "sample_rate": int(sample_rate), "channels": int(channels), "total": int(pos)}
        write_json_atomic(index_path, index)
        return cls(data_path, index)
