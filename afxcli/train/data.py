"""Training data: audio folders, paired folders and generated signals, as deterministic clip streams.

Every dataset here is a map-style ``torch.utils.data.Dataset`` addressed by a **global item
number** ``k`` (0, 1, 2, … over the whole run, never wrapping). Item ``k`` belongs to epoch
``k // items_per_epoch`` at position ``k % items_per_epoch`` and everything random about it (which
file, where the crop starts, the generated notes) comes from
``np.random.default_rng([seed, epoch, position])``. So:

- a run is deterministic given its seed, whatever the number of DataLoader workers (no state
  lives in a worker; nothing depends on which process builds an item);
- epochs are reseeded (each epoch draws a fresh file order and fresh crops);
- resuming at optimizer step ``s`` just continues at item ``s * batch_size``
  (:class:`StepBatchSampler`), giving the batches an uninterrupted run would have seen.

Validation split is fixed **by file**: a file goes to validation when the hash of its relative
path (SHA-1 of the POSIX path, as a fraction in [0, 1)) is below ``val_fraction`` (DeepAFx-ST §3.1
splits by recording); crops never decide it. Validation items use their own fixed crops (epoch 0)
so every validation pass scores the same clips.

Items are dicts of float32 tensors shaped ``(channels, clip_samples)`` (``"input"``, and
``"target"`` for paired data) plus ``"name"`` (the file's relative path or ``"generated/<k>"``).
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..audio import AUDIO_EXTENSIONS, read_audio, resample
from ..errors import AfxError

#: DeepAFx-ST §3.1 resamples crops whose mean energy (1/N Σ x²) is at or below 1e-3; that suits
#: peak-normalized speech and mastered music. Unmastered stems are quieter, so afx's default is
#: lower; set ``min_energy`` to 1e-3 for the paper's value.
DEFAULT_MIN_ENERGY = 1e-4


def path_fraction(rel_path: str | Path) -> float:
    """Stable hash of a relative path as a fraction in [0, 1) (SHA-1 of its POSIX form)."""
    key = Path(rel_path).as_posix().encode("utf-8")
    return int.from_bytes(hashlib.sha1(key).digest()[:8], "big") / 2.0 ** 64


def split_files(rel_paths: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Split files into (train, val) by the hash of their relative path.

    A file is in validation when ``path_fraction(path) < val_fraction``. With at least two files
    and ``val_fraction > 0``, neither side is left empty: the file with the smallest hash moves to
    validation (or the largest to training) — still a decision by file, stable as files are added.
    """
    if not 0 <= val_fraction < 1:
        raise AfxError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ranked = sorted(rel_paths, key=path_fraction)
    val = [p for p in ranked if path_fraction(p) < val_fraction]
    train = [p for p in ranked if path_fraction(p) >= val_fraction]
    if val_fraction > 0 and len(ranked) >= 2:
        if not val:
            val, train = ranked[:1], ranked[1:]
        elif not train:
            val, train = ranked[:-1], ranked[-1:]
    return sorted(train), sorted(val)


def list_audio_files(root: str | Path) -> list[str]:
    """Relative POSIX paths of the audio files under ``root`` (recursive, by extension, sorted)."""
    r = Path(root)
    if not r.is_dir():
        raise AfxError(f"{r}: no such folder")
    files = sorted(p.relative_to(r).as_posix() for p in r.rglob("*")
                   if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise AfxError(f"{r}: folder contains no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})")
    return files


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """``(c, n)`` -> ``(channels, n)``: mono by averaging, stereo by duplicating a mono file."""
    if channels == 1:
        return audio.mean(axis=0, keepdims=True) if audio.shape[0] > 1 else audio
    if channels == 2:
        return np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio[:2]
    raise AfxError(f"channels must be 1 or 2, got {channels}")


def item_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The generator behind item ``position`` of ``epoch`` (independent of process and worker)."""
    return np.random.default_rng([int(seed), int(epoch), int(position)])


class _AudioCache:
    """Decoded, resampled, channel-converted files kept in memory (least recently used dropped
    beyond ``max_bytes``). One per process: DataLoader workers each hold their own."""

    def __init__(self, sample_rate: int, channels: int, max_bytes: int) -> None:
        self.sample_rate, self.channels, self.max_bytes = sample_rate, channels, max_bytes
        self._store: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0

    def get(self, path: Path) -> np.ndarray:
        key = str(path)
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        audio, sr = read_audio(path)
        if sr != self.sample_rate:
            audio = resample(audio, sr, self.sample_rate)
        audio = np.ascontiguousarray(to_channels(audio, self.channels), dtype=np.float32)
        self._store[key] = audio
        self._bytes += audio.nbytes
        while self._bytes > self.max_bytes and len(self._store) > 1:
            _, old = self._store.popitem(last=False)
            self._bytes -= old.nbytes
        return audio


class ClipDataset(torch.utils.data.Dataset):
    """Base class: global item number ``k`` -> (epoch, position, rng); subclasses build items."""

    def __init__(self, items_per_epoch: int, seed: int) -> None:
        if items_per_epoch < 1:
            raise AfxError(f"items_per_epoch must be at least 1, got {items_per_epoch}")
        self.items_per_epoch = int(items_per_epoch)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.items_per_epoch

    def __getitem__(self, k: int) -> dict:
        if k < 0:
            raise IndexError(k)
        epoch, position = divmod(int(k), self.items_per_epoch)
        return self.make_item(epoch, position, item_rng(self.seed, epoch, position))

    def make_item(self, epoch: int, position: int, rng: np.random.Generator) -> dict:
        raise TypeError(f"{type(self).__name__} must define make_item")  # pragma: no cover

    def epoch_order(self, epoch: int, n: int) -> np.ndarray:
        """A permutation of ``range(n)`` for ``epoch`` (each epoch visits files in a new order)."""
        return np.random.default_rng([self.seed, int(epoch), 0x5EED]).permutation(n)


def _crop_start(length: int, clip_samples: int, rng: np.random.Generator) -> int:
    return int(rng.integers(0, length - clip_samples + 1)) if length > clip_samples else 0


def _cut(audio: np.ndarray, start: int, clip_samples: int) -> np.ndarray:
    seg = audio[:, start:start + clip_samples]
    if seg.shape[1] < clip_samples:  # short file: zero-pad at the end
        seg = np.pad(seg, ((0, 0), (0, clip_samples - seg.shape[1])))
    return seg


def _peak_normalize(seg: np.ndarray, peak_db: float | None) -> np.ndarray:
    if peak_db is None:
        return seg
    peak = float(np.max(np.abs(seg)))
    return seg * (10.0 ** (peak_db / 20.0) / peak) if peak > 0 else seg


class AudioFolderDataset(ClipDataset):
    """Random crops of ``clip_samples`` from the audio files under one or more folders.

    Files (WAV/FLAC/OGG/MP3 … read with :func:`afxcli.audio.read_audio`) are resampled to
    ``sample_rate`` (:func:`afxcli.audio.resample`) and converted to ``channels`` (1: average,
    2: duplicate mono). Each epoch visits the split's files in a fresh order, cycling until
    ``items_per_epoch`` items (default: one per file). A crop whose mean energy is at or below
    ``min_energy`` is redrawn (up to ``max_tries``, DeepAFx-ST §3.1). ``peak_db`` peak-normalizes
    each crop (DeepAFx-ST uses −12 dBFS). ``split`` is ``"train"``, ``"val"`` or ``"all"``.
    """

    def __init__(self, roots: str | Path | Sequence[str | Path], sample_rate: int, clip_samples: int,
                 channels: int = 1, split: str = "train", val_fraction: float = 0.1, seed: int = 0,
                 items_per_epoch: int | None = None, min_energy: float = DEFAULT_MIN_ENERGY,
                 max_tries: int = 10, peak_db: float | None = None, cache_mb: float = 512.0) -> None:
        roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
        if not roots:
            raise AfxError("no data folders given")
        self.files: list[Path] = []
        self.names: list[str] = []
        for i, root in enumerate(roots):
            rel = list_audio_files(root)
            chosen = _choose_split(rel, split, val_fraction, root)
            prefix = f"{i}/" if len(roots) > 1 else ""
            self.files += [Path(root) / r for r in chosen]
            self.names += [prefix + r for r in chosen]
        if clip_samples < 1:
            raise AfxError(f"clip_samples must be at least 1, got {clip_samples}")
        super().__init__(items_per_epoch or len(self.files), seed)
        self.sample_rate, self.clip_samples, self.channels = int(sample_rate), int(clip_samples), int(channels)
        self.min_energy, self.max_tries, self.peak_db = float(min_energy), int(max_tries), peak_db
        self._cache = _AudioCache(self.sample_rate, self.channels, int(cache_mb * 2 ** 20))
        to_channels(np.zeros((1, 1), np.float32), self.channels)  # validates channels

    def make_item(self, epoch: int, position: int, rng: np.random.Generator) -> dict:
        order = self.epoch_order(epoch, len(self.files))
        idx = int(order[position % len(self.files)])
        audio = self._cache.get(self.files[idx])
        seg = None
        for _ in range(max(1, self.max_tries)):
            seg = _cut(audio, _crop_start(audio.shape[1], self.clip_samples, rng), self.clip_samples)
            if float(np.mean(seg.astype(np.float64) ** 2)) > self.min_energy:
                break
        seg = _peak_normalize(seg, self.peak_db)
        return {"input": torch.from_numpy(np.ascontiguousarray(seg, dtype=np.float32)), "name": self.names[idx]}


def _choose_split(rel: list[str], split: str, val_fraction: float, root: str | Path) -> list[str]:
    if split == "all":
        return rel
    if split not in ("train", "val"):
        raise AfxError(f"split must be train, val or all, got {split!r}")
    train, val = split_files(rel, val_fraction)
    chosen = train if split == "train" else val
    if not chosen:
        raise AfxError(f"{root}: the {split} split is empty ({len(rel)} file(s), val_fraction {val_fraction})")
    return chosen


class PairedFolderDataset(ClipDataset):
    """Input/target pairs: files in ``input_dir`` and ``target_dir`` matched by relative path
    without extension (``a/song.wav`` ↔ ``a/song.flac``), cropped at the **same** position.

    Both files are resampled to ``sample_rate`` and converted to ``channels``; the crop is drawn
    within the shorter of the two. Unmatched files are an error when ``strict`` (default), else
    ignored. No loudness normalization: scaling the input would change what a nonlinear chain
    does to it. Split by the hash of the input's relative path.
    """

    def __init__(self, input_dir: str | Path, target_dir: str | Path, sample_rate: int, clip_samples: int,
                 channels: int = 1, split: str = "train", val_fraction: float = 0.1, seed: int = 0,
                 items_per_epoch: int | None = None, min_energy: float = DEFAULT_MIN_ENERGY,
                 max_tries: int = 10, strict: bool = True, cache_mb: float = 512.0) -> None:
        ins = {str(Path(r).with_suffix("")): r for r in list_audio_files(input_dir)}
        outs = {str(Path(r).with_suffix("")): r for r in list_audio_files(target_dir)}
        common = sorted(set(ins) & set(outs))
        missing = sorted(set(ins) ^ set(outs))
        if missing and strict:
            side = "target" if missing[0] in ins else "input"
            raise AfxError(f"{input_dir} / {target_dir}: {len(missing)} file(s) without a partner "
                           f"(e.g. {missing[0]!r} has no {side} file)")
        if not common:
            raise AfxError(f"{input_dir} / {target_dir}: no input/target files share a name")
        chosen = _choose_split(common, split, val_fraction, input_dir)
        self.pairs = [(Path(input_dir) / ins[s], Path(target_dir) / outs[s]) for s in chosen]
        self.names = chosen
        super().__init__(items_per_epoch or len(self.pairs), seed)
        self.sample_rate, self.clip_samples, self.channels = int(sample_rate), int(clip_samples), int(channels)
        self.min_energy, self.max_tries = float(min_energy), int(max_tries)
        self._cache = _AudioCache(self.sample_rate, self.channels, int(cache_mb * 2 ** 20))

    def make_item(self, epoch: int, position: int, rng: np.random.Generator) -> dict:
        order = self.epoch_order(epoch, len(self.pairs))
        idx = int(order[position % len(self.pairs)])
        x = self._cache.get(self.pairs[idx][0])
        y = self._cache.get(self.pairs[idx][1])
        length = min(x.shape[1], y.shape[1])
        for _ in range(max(1, self.max_tries)):
            start = _crop_start(length, self.clip_samples, rng)
            xs, ys = _cut(x[:, :length], start, self.clip_samples), _cut(y[:, :length], start, self.clip_samples)
            if float(np.mean(xs.astype(np.float64) ** 2)) > self.min_energy:
                break
        return {"input": torch.from_numpy(np.ascontiguousarray(xs, dtype=np.float32)),
                "target": torch.from_numpy(np.ascontiguousarray(ys, dtype=np.float32)),
                "name": self.names[idx]}


def music_like(rng: np.random.Generator, sample_rate: int, n_samples: int, channels: int = 1,
               peak_db: float = -12.0) -> np.ndarray:
    """A generated music-like clip ``(channels, n_samples)`` float32: a bass line, chords of
    harmonic tones with attack/decay envelopes and noise-burst percussion, at a random tempo,
    peak-normalized to ``peak_db`` (DeepAFx-ST's −12 dBFS headroom). Vectorized over notes."""
    sr = float(sample_rate)
    t = np.arange(n_samples) / sr
    out = np.zeros(n_samples)
    beat_s = 60.0 / rng.uniform(80, 160)
    n_beats = int(math.ceil(n_samples / sr / beat_s)) + 1
    onsets = np.arange(n_beats) * beat_s
    # tonal parts: per beat one bass note and a 3-note chord, 4 harmonics each
    root = rng.uniform(40, 52)  # MIDI
    steps = rng.choice([0, 3, 4, 5, 7, 9, 10, 12], size=(n_beats, 3))
    midi = np.concatenate([np.full((n_beats, 1), root - 12) + rng.choice([0, 5, 7], (n_beats, 1)),
                           root + 12 + steps], axis=1)  # (beats, 4 voices)
    f0 = 440.0 * 2.0 ** ((midi - 69) / 12)
    amps = np.array([0.5, 0.25, 0.2, 0.2]) * rng.uniform(0.5, 1.0, size=(n_beats, 4))
    decay_s = rng.uniform(0.08, 0.6, size=(n_beats, 4))
    harm = np.arange(1, 5)
    harm_amp = 1.0 / harm ** rng.uniform(0.8, 2.0)
    for b in range(n_beats):  # per beat (a few per clip), vectorized over voices, harmonics, samples
        dt = t - onsets[b]
        active = (dt >= 0) & (dt < beat_s * 2)
        if not active.any():
            continue
        d = dt[active]
        env = (1 - np.exp(-d / 0.005))[None, :] * np.exp(-d[None, :] / decay_s[b][:, None])  # (4, n)
        ph = 2 * np.pi * f0[b][:, None, None] * harm[None, :, None] * d[None, None, :]  # (4, 4, n)
        f_ok = (f0[b][:, None] * harm[None, :]) < 0.45 * sr
        tone = (np.sin(ph) * (harm_amp[None, :, None] * f_ok[:, :, None])).sum(axis=1)  # (4, n)
        out[active] += (amps[b][:, None] * env * tone).sum(axis=0)
        # percussion: filtered noise burst on every beat, louder on downbeats
        burst = rng.standard_normal(d.size) * np.exp(-d / rng.uniform(0.01, 0.06))
        if rng.random() < 0.5:
            burst = np.diff(burst, prepend=0.0)  # brighter (hi-hat-like)
        out[active] += (0.6 if b % 4 == 0 else 0.3) * burst
    out += 1e-3 * rng.standard_normal(n_samples)  # noise floor
    stereo = np.stack([out, out]) if channels == 2 else out[None]
    if channels == 2:  # a little width: different noise floors
        stereo = stereo + 1e-3 * rng.standard_normal(stereo.shape)
    peak = np.max(np.abs(stereo))
    return (stereo * (10 ** (peak_db / 20) / peak)).astype(np.float32)


class GeneratedDataset(ClipDataset):
    """Generated clips for tests and toy tasks (no files): ``kind`` ``"music"`` (:func:`music_like`),
    ``"noise"`` (white, peak −12 dBFS) or ``"sine"`` (random frequency 50–5000 Hz, −12 dBFS)."""

    def __init__(self, sample_rate: int, clip_samples: int, channels: int = 1, items_per_epoch: int = 64,
                 seed: int = 0, kind: str = "music") -> None:
        if kind not in ("music", "noise", "sine"):
            raise AfxError(f"generated data kind must be music, noise or sine, got {kind!r}")
        super().__init__(items_per_epoch, seed)
        self.sample_rate, self.clip_samples, self.channels, self.kind = (
            int(sample_rate), int(clip_samples), int(channels), kind)
        to_channels(np.zeros((1, 1), np.float32), self.channels)

    def make_item(self, epoch: int, position: int, rng: np.random.Generator) -> dict:
        n, c = self.clip_samples, self.channels
        if self.kind == "music":
            x = music_like(rng, self.sample_rate, n, c)
        elif self.kind == "noise":
            x = rng.standard_normal((c, n))
            x = (x * (0.25 / np.max(np.abs(x)))).astype(np.float32)
        else:
            f = rng.uniform(50, 5000)
            x = np.repeat((0.25 * np.sin(2 * np.pi * f * np.arange(n) / self.sample_rate + rng.uniform(0, 6.3)))[None],
                          c, axis=0).astype(np.float32)
        return {"input": torch.from_numpy(np.ascontiguousarray(x)), "name": f"generated/{epoch}/{position}"}


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches of consecutive global item numbers starting at batch ``start_step``:
    step ``s`` gets items ``[s*batch_size, (s+1)*batch_size)``; ``steps`` batches in all (None: endless)."""

    def __init__(self, batch_size: int, start_step: int = 0, steps: int | None = None) -> None:
        self.batch_size, self.start_step, self.steps = int(batch_size), int(start_step), steps

    def __iter__(self) -> Iterator[list[int]]:
        s = self.start_step
        while self.steps is None or s < self.start_step + self.steps:
            yield list(range(s * self.batch_size, (s + 1) * self.batch_size))
            s += 1

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("endless sampler has no length")
        return self.steps


def _seed_worker(worker_id: int) -> None:
    # Items draw from their own generators; this only keeps torch's and NumPy's global state
    # distinct per worker in case an effect or library uses it.
    info = torch.utils.data.get_worker_info()
    np.random.seed(info.seed % 2 ** 32)


def make_loader(dataset: ClipDataset, batch_size: int, start_step: int = 0, steps: int | None = None,
                workers: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader yielding batch ``start_step``, ``start_step + 1``, … (dict of stacked tensors:
    ``"input"`` ``(batch, channels, clip_samples)`` …, ``"name"`` a list)."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=StepBatchSampler(batch_size, start_step, steps), num_workers=workers,
        worker_init_fn=_seed_worker if workers else None, persistent_workers=False,
    )


def fixed_batches(dataset: ClipDataset, batch_size: int, n_batches: int) -> list[dict]:
    """The first ``n_batches`` batches of epoch 0 (for validation: the same clips every time).
    Stops early when the dataset's epoch has fewer items."""
    n = min(dataset.items_per_epoch, batch_size * n_batches)
    collate = torch.utils.data.default_collate
    return [collate([dataset[k] for k in range(i, min(i + batch_size, n))]) for i in range(0, n, batch_size)]
