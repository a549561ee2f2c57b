"""Self-supervised production-style training (DeepAFx-ST, Steinmetz et al., JAES 2022, §2.1, §3).

Pieces, all used by the ``style`` training task (``afx train style --config configs/style_music.json``):

- :data:`STYLE_CHAIN` — the style/mastering chain: 6-band parametric EQ (low shelf, 4 peaks, high
  shelf; DeepAFx-ST Fig. 3) → hard-knee compressor (JUCE twin, makeup gain included) → output gain.
  Every effect has a torch twin, so the chain is differentiable (AD through the twins; exact numba
  path on CPU). The four peaks live in **disjoint** frequency bands so they can never swap roles
  (a permutation symmetry that would otherwise make the controller's targets ambiguous).
- :data:`STYLE_DISTRIBUTIONS` and :func:`random_style` — the random production-style generator.
- :class:`StylePairDataset` — DeepAFx-ST §2.1 pairs: one clip ``x``, two random styles rendered on the
  whole clip (``x_i`` the input, ``x_r`` the style reference), both peak-normalized to −12 dBFS
  (§3.2), split into halves a/b; the model sees ``x_i`` of one half and ``x_r`` of the **other**
  half (chosen at random), and the loss compares its output with ``x_r`` of the input's half, so
  the reference never shares content with the target.
- :class:`StyleTask` — shared-weight analyzer on input and reference (:class:`afxcli.nn.StyleModel`)
  → controller → normalized chain parameters → chain (gradient strategy, default AD) on the input →
  MR-STFT + α·MAE loss (§3.4, α = 100) against the target.

The recipe, checked against the paper (§2.1, Fig. 2): the *input* is not the raw clip — both branches
are styled ("Two versions of this augmented recording are created, x_i and x_r, each with a different
production style … applying a set of audio effects to both recordings, with each set of effects having
a different random configuration"); the two halves are swapped at random ("we randomly select either
the a or b section to be passed as input and use the other section as the style reference … we use
the style reference corresponding to the same section as the input" as ground truth). Inputs and
style recordings are peak-normalized to −12 dBFS (§3.2); the raw clip is also peak-normalized to
−12 dBFS before styling so the effects see a known headroom. Crops whose mean energy
``1/N Σ x²`` is at or below ``min_energy`` are redrawn (§3.2; both halves must pass). Pitch/time
augmentation (§2.1) is not done (costly on 2 CPU cores; the corpora are varied enough to start).

Data sources (``data`` section): built corpora by name (:func:`afxcli.datasets.files`, their fixed
train/validation split by track or speaker), any audio folder (split by path hash,
:func:`afxcli.train.data.split_files`) or generated music-like signals (tests). Files are read by
segment (only the crop, :func:`read_segment`) and resampled to the model rate; a file shorter than
the clip is continued with further random files of the same group — the same speaker or track, as
DeepAFx-ST's segments come from one recording — when the corpus gives groups (speech utterances are
~3 s; continuing with *any* file mixed speakers and recording levels within one clip, so the two
halves differed in loudness by more than any style could explain), else of the same split.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import AfxError
from .config import BOOL, DICT, FLOAT, INT, OPT_FLOAT, OPT_STR, STR, Field, fraction, non_negative, one_of, optional, positive
from .data import DEFAULT_MIN_ENERGY, ClipDataset, list_audio_files, music_like, split_files
from .tasks import ChainTask, _strategy_fields, register_task

# =============================================================================================
# The chain
# =============================================================================================
#: Disjoint bands of the four EQ peaks (Hz): low, low-mid, high-mid, high.
PEAK_BANDS_HZ = ((40.0, 250.0), (250.0, 1000.0), (1000.0, 4000.0), (4000.0, 7000.0))

#: Highest frequency (Hz) any EQ band may take: the chain renders at the *file's* rate at inference
#: and the EQ's frequencies must stay below 0.45·rate (``afxcli.params.max_freq_hz``), so 7 kHz
#: keeps :data:`STYLE_CHAIN` valid from 16 kHz (speech) up; a high shelf at 7 kHz still shapes "air".
MAX_EQ_FREQ_HZ = 7000.0

#: The style/mastering chain (22 free parameters). Ranges are wider than the generator's draws
#: (:data:`STYLE_DISTRIBUTIONS`): the model must undo the input's style *and* apply the
#: reference's, e.g. a +12 dB input shelf to a −6 dB reference one needs −18 dB.
STYLE_CHAIN: dict = {"effects": [
    {"type": "peq", "label": "eq", "options": {"n_peaks": 4},
     "fixed": {"low_shelf_q": 0.7071067811865476, "high_shelf_q": 0.7071067811865476},
     "free": {
         "low_shelf_freq_hz": {"min": 30.0, "max": 400.0},
         "low_shelf_gain_db": {"min": -18.0, "max": 18.0},
         **{k: v for i, (lo, hi) in enumerate(PEAK_BANDS_HZ, start=1) for k, v in (
             (f"peak{i}_freq_hz", {"min": lo, "max": hi}),
             (f"peak{i}_gain_db", {"min": -18.0, "max": 18.0}),
             (f"peak{i}_q", {"min": 0.3, "max": 5.0}))},
         "high_shelf_freq_hz": {"min": 2000.0, "max": MAX_EQ_FREQ_HZ},
         "high_shelf_gain_db": {"min": -18.0, "max": 18.0},
     }},
    {"type": "compressor", "label": "comp",
     "free": {"threshold_db": {"min": -48.0, "max": 0.0}, "ratio": {"min": 1.0, "max": 20.0},
              "attack_ms": {"min": 0.3, "max": 100.0}, "release_ms": {"min": 10.0, "max": 1000.0},
              "makeup_db": {"min": 0.0, "max": 24.0}}},
    {"type": "gain", "label": "out", "free": {"gain_db": {"min": -24.0, "max": 24.0}}},
]}

# =============================================================================================
# Random production styles
# =============================================================================================
#: The generator's distributions, per free key: ``(law, low, high)`` with law ``"uniform"`` or
#: ``"log"`` (log-uniform). Chosen to cover real productions: EQ moves of ±12 dB (mastering
#: rarely exceeds ±6, creative/telephone speech EQ reaches ±12), shelves 40–300 Hz and
#: 3–7 kHz, peak Q 0.5–3, compression from none (ratio 1) to heavy (threshold −40 dB, 10:1),
#: attack 1–50 ms and release 30–500 ms log-uniform (the range of mix/mastering compressors),
#: makeup 0–12 dB, output gain ±6 dB. The styled clips are peak-normalized afterwards (§3.2), so
#: a pure gain (makeup, output gain) does not change a style's level; it is drawn anyway so the
#: chain's full parameter space is exercised.
STYLE_DISTRIBUTIONS: dict[str, tuple[str, float, float]] = {
    "eq.low_shelf_freq_hz": ("log", 40.0, 300.0),
    "eq.low_shelf_gain_db": ("uniform", -12.0, 12.0),
    **{k: v for i, (lo, hi) in enumerate(PEAK_BANDS_HZ, start=1) for k, v in (
        (f"eq.peak{i}_freq_hz", ("log", lo, hi)),
        (f"eq.peak{i}_gain_db", ("uniform", -12.0, 12.0)),
        (f"eq.peak{i}_q", ("log", 0.5, 3.0)))},
    "eq.high_shelf_freq_hz": ("log", 3000.0, MAX_EQ_FREQ_HZ),
    "eq.high_shelf_gain_db": ("uniform", -12.0, 12.0),
    "comp.threshold_db": ("uniform", -40.0, 0.0),
    "comp.ratio": ("log", 1.0, 10.0),
    "comp.attack_ms": ("log", 1.0, 50.0),
    "comp.release_ms": ("log", 30.0, 500.0),
    "comp.makeup_db": ("uniform", 0.0, 12.0),
    "out.gain_db": ("uniform", -6.0, 6.0),
}

#: "Bypass-like" settings, drawn per effect with probability ``bypass_probability``: EQ gains
#: within ±1 dB, compressor threshold −6…0 dB with ratio 1…1.5 (barely touching), output gain 0.
BYPASS_DISTRIBUTIONS: dict[str, tuple[str, float, float]] = {
    **{k: ("uniform", -1.0, 1.0) for k in STYLE_DISTRIBUTIONS if k.startswith("eq.") and k.endswith("_gain_db")},
    "comp.threshold_db": ("uniform", -6.0, 0.0),
    "comp.ratio": ("log", 1.0, 1.5),
    "out.gain_db": ("uniform", 0.0, 0.0),
}


def _draw(rng: np.random.Generator, law: str, lo: float, hi: float, n: int) -> np.ndarray:
    if law == "log":
        return np.exp(rng.uniform(math.log(lo), math.log(hi), n))
    return rng.uniform(lo, hi, n)


def random_style(rng: np.random.Generator, keys: Sequence[str], n: int = 1,
                 bypass_probability: float = 0.1) -> dict[str, np.ndarray]:
    """``n`` random production styles: ``{key: physical values (n,)}`` for every key in ``keys``.

    Keys are chain free keys (``"eq.peak1_gain_db"`` …) drawn from :data:`STYLE_DISTRIBUTIONS`;
    with probability ``bypass_probability`` per style and effect (label before the dot) the keys
    in :data:`BYPASS_DISTRIBUTIONS` are drawn from there instead (a mild, almost-bypass setting).
    """
    missing = [k for k in keys if k not in STYLE_DISTRIBUTIONS]
    if missing:
        raise AfxError(f"style generator: no distribution for {', '.join(missing)}")
    out = {k: _draw(rng, *STYLE_DISTRIBUTIONS[k], n) for k in keys}
    labels = sorted({k.split(".", 1)[0] for k in keys})
    mild = {lab: rng.random(n) < bypass_probability for lab in labels}
    for k in keys:
        if k in BYPASS_DISTRIBUTIONS:
            m = mild[k.split(".", 1)[0]]
            out[k] = np.where(m, _draw(rng, *BYPASS_DISTRIBUTIONS[k], n), out[k])
    return out


#: The "neutral" setting a fresh controller starts from (``init_neutral``): flat EQ, a gently
#: *engaged* compressor (threshold −24 dB, ratio 1.3), no makeup or output gain; frequencies, Qs and
#: times at their range's log-midpoint. The compressor must start engaged: the clips peak at
#: −12 dBFS, and a hard-knee compressor whose threshold sits above the signal passes no gradient to
#: its threshold, ratio, attack or release (measured: with the earlier threshold 0 dB / ratio 1.05
#: start, the speech model still left the compressor there after 1000 steps).
NEUTRAL_STYLE: dict[str, float] = {
    **{k: 0.0 for k in STYLE_DISTRIBUTIONS if k.endswith("_gain_db")},
    "comp.threshold_db": -24.0, "comp.ratio": 1.3, "comp.makeup_db": 0.0,
}


def neutral_q(chain, margin: float = 0.02) -> torch.Tensor:
    """Normalized ``(n_free,)`` of :data:`NEUTRAL_STYLE` (others at 0.5), kept in
    ``[margin, 1 − margin]`` so a sigmoid can reach it with a finite logit."""
    q = [float(f.spec.normalize(NEUTRAL_STYLE[f.key])) if f.key in NEUTRAL_STYLE else 0.5 for f in chain.free]
    return torch.tensor(q).clamp(margin, 1.0 - margin)


def init_controller_neutral(model: torch.nn.Module, chain, weight_scale: float = 0.1) -> None:
    """Make a fresh :class:`~afxcli.nn.StyleModel` start near :func:`neutral_q` for every input: the
    controller's output bias is ``logit(q_neutral)`` and its output weights are scaled by
    ``weight_scale`` (the prediction then starts close to a transparent chain instead of the
    range midpoints: −24 dB threshold, 4.5:1, +12 dB makeup)."""
    q = neutral_q(chain)
    out = model.controller.out
    with torch.no_grad():
        out.weight.mul_(weight_scale)
        out.bias.copy_(torch.log(q / (1 - q)))


def style_to_q(chain, style: dict[str, np.ndarray]) -> torch.Tensor:
    """Physical style values (:func:`random_style`) → normalized chain parameters ``(n, n_free)``
    (BE-AFX eq. 7 via each free :class:`~afxcli.params.ParamSpec`)."""
    cols = [np.asarray(f.spec.normalize(np.asarray(style[f.key], dtype=np.float64)), dtype=np.float64)
            for f in chain.free]
    return torch.from_numpy(np.stack(cols, axis=1)).float()


# =============================================================================================
# Pair data
# =============================================================================================
def peak_normalize(x: np.ndarray, peak_db: float | None) -> np.ndarray:
    """Scale ``x`` (any shape) so its absolute peak is ``peak_db`` dBFS (unchanged if silent or None)."""
    if peak_db is None:
        return x
    peak = float(np.max(np.abs(x)))
    return x * np.float32(10.0 ** (peak_db / 20.0) / peak) if peak > 0 else x


def read_segment(path: Path, start_s: float, duration_s: float, sample_rate: int,
                 channels: int) -> np.ndarray:
    """Decode ``duration_s`` seconds from ``start_s`` of ``path`` (only that part), resampled to
    ``sample_rate`` and converted to ``channels``: float32 ``(channels, round(duration_s·rate))``
    (zero-padded at the end if the file is shorter)."""
    import soundfile as sf

    from ..audio import resample
    from .data import to_channels

    want = int(round(duration_s * sample_rate))
    try:
        with sf.SoundFile(str(path)) as f:
            sr = int(f.samplerate)
            first = max(0, int(start_s * sr))
            f.seek(min(first, max(0, f.frames - 1)))
            data = f.read(int(math.ceil(duration_s * sr)) + 64, dtype="float32", always_2d=True).T
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as e:
        raise AfxError(f"{path}: cannot decode audio ({' '.join(str(e).split())})") from None
    if data.shape[1] == 0:
        return np.zeros((channels, want), np.float32)
    if sr != sample_rate:
        data = resample(data, sr, sample_rate)
    data = np.nan_to_num(to_channels(data, channels)[:, :want])
    if data.shape[1] < want:
        data = np.pad(data, ((0, 0), (0, want - data.shape[1])))
    return np.ascontiguousarray(data, dtype=np.float32)


#: Allowed tape-speed augmentation factors ``(lowest, highest)`` (``data.speed_range``).
SPEED_LIMITS = (0.25, 4.0)


def check_speed_range(v) -> str | None:
    """None when ``v`` is None or ``[low, high]`` within :data:`SPEED_LIMITS`, else the problem."""
    lo_lim, hi_lim = SPEED_LIMITS
    if v is None or (len(v) == 2 and all(isinstance(a, (int, float)) for a in v) and lo_lim <= v[0] <= v[1] <= hi_lim):
        return None
    return f"must be [low, high] with {lo_lim:g} <= low <= high <= {hi_lim:g}"


def change_speed(x: np.ndarray, factor: float, samples: int) -> np.ndarray:
    """Play ``x`` ``(channels, n)`` ``factor`` times faster (a tape-speed change: pitch and formants
    move by ``factor``, duration by ``1/factor``), band-limited (:func:`afxcli.audio.resample`
    from ``factor``·1000 to 1000 Hz, i.e. by the ratio ``1/factor``), cut or zero-padded to
    ``samples``: float32 ``(channels, samples)``."""
    from ..audio import resample

    y = resample(np.asarray(x, dtype=np.float32), 1000.0 * float(factor), 1000.0)[:, :samples]
    if y.shape[1] < samples:
        y = np.pad(y, ((0, 0), (0, samples - y.shape[1])))
    return np.ascontiguousarray(y, dtype=np.float32)


class _Durations:
    """File durations in seconds (headers read once per process)."""

    def __init__(self) -> None:
        self._d: dict[str, float] = {}

    def __call__(self, path: Path) -> float:
        key = str(path)
        if key not in self._d:
            from ..audio import audio_info

            info = audio_info(path)
            self._d[key] = info.frames / float(info.sample_rate)
        return self._d[key]


def make_pair(x_input: np.ndarray, x_reference: np.ndarray, input_half: int) -> dict:
    """Split the two styled whole clips ``(channels, 2·H)`` into halves and build one item:
    ``input`` = input style of half ``input_half`` (0 = a, 1 = b), ``reference`` = reference style
    of the **other** half, ``target`` = reference style of half ``input_half`` (DeepAFx-ST §2.1)."""
    h = x_input.shape[-1] // 2
    sl = [slice(0, h), slice(h, 2 * h)]
    i, o = sl[input_half], sl[1 - input_half]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return {"input": t(x_input[:, i]), "reference": t(x_reference[:, o]), "target": t(x_reference[:, i]),
            "input_half": input_half}


class StylePairDataset(ClipDataset):
    """Self-supervised style pairs (DeepAFx-ST §2.1) from audio files or generated signals.

    Item ``k`` (see :class:`~afxcli.train.data.ClipDataset` for the deterministic addressing):
    a crop ``x`` of ``clip_samples`` (both halves, at ``sample_rate``), peak-normalized to
    ``peak_db``; two random styles (:func:`random_style`) rendered on the whole crop by the chain's
    torch twins in exact mode (no grad), each peak-normalized to ``peak_db``; then :func:`make_pair`
    with a random half. Returns float32 tensors ``input``, ``reference``, ``target``
    ``(channels, clip_samples // 2)``, ``input_half`` (0/1), the styles' normalized parameters
    ``q_input``, ``q_reference`` ``(n_free,)``, ``name`` (the clip's files joined by ``+``) and
    ``group`` (the group of its first file; its ``name`` without ``groups``).

    ``files``: audio paths (None: generated :func:`~afxcli.train.data.music_like` clips).
    ``match_eq``: ``"third"``/``"octave"`` — the ``input`` is returned *after* the matched graphic
    EQ (:mod:`afxcli.tasks.eqmatch`) designed from the input and reference halves, the DSP first
    stage of a ``match_eq`` style model (the target is unchanged), and the input before it as
    ``unmatched_input``; ``match_eq_smoothness``: its fit's neighbouring-gain penalty (None: the
    module default, :data:`afxcli.tasks.eqmatch.SMOOTHNESS`).
    ``speed_range``: ``(low, high)`` — the crop is read ``f`` times longer (``f`` log-uniform in the
    range) and resampled back to ``clip_samples``, which plays it ``f`` times faster: pitch *and*
    formants move by ``f`` (DeepAFx-ST §2.1's pitch/time augmentation in one step, as a change of
    tape speed): for speech a new, plausible voice. None: no augmentation (and no extra draw, so
    the items are those of a run without it).
    """

    def __init__(self, files: Sequence[str | Path] | None, chain_spec: dict, sample_rate: int,
                 clip_samples: int, channels: int = 1, items_per_epoch: int = 1000, seed: int = 0,
                 peak_db: float | None = -12.0, bypass_probability: float = 0.1,
                 min_energy: float = DEFAULT_MIN_ENERGY, max_tries: int = 10, store=None,
                 groups: Sequence[str] | None = None, match_eq: str | None = None,
                 speed_range: Sequence[float] | None = None, match_eq_smoothness: float | None = None) -> None:
        from ..effects.chain import Chain

        super().__init__(items_per_epoch, seed)
        if clip_samples < 4 or clip_samples % 2:
            raise AfxError(f"clip_samples must be even and >= 4 (two halves), got {clip_samples}")
        self.files = [Path(f) for f in files] if files is not None else None
        if self.files is not None and not self.files:
            raise AfxError("style data: no audio files")
        self.chain = Chain(chain_spec, sample_rate)
        self.keys = self.chain.free_keys
        self.sample_rate, self.clip_samples, self.channels = int(sample_rate), int(clip_samples), int(channels)
        self.peak_db, self.bypass_probability = peak_db, float(bypass_probability)
        self.min_energy, self.max_tries = float(min_energy), int(max_tries)
        self.match_eq = match_eq
        self.match_eq_smoothness = match_eq_smoothness
        problem = check_speed_range(None if speed_range is None else list(speed_range))
        if problem:
            raise AfxError(f"style data: speed_range {problem}, got {speed_range}")
        self.speed_range = None if speed_range is None else tuple(float(v) for v in speed_range)
        self._durations = _Durations()
        self.store = store
        # files of the same group (speaker, track): a short file is continued within its group
        self._same_group: list[np.ndarray] | None = None
        self._groups: list[str] | None = None if groups is None else [str(g) for g in groups]
        if groups is not None:
            if self.files is None or len(groups) != len(self.files):
                raise AfxError("style data: one group per file is needed")
            members: dict[str, list[int]] = {}
            for i, g in enumerate(groups):
                members.setdefault(str(g), []).append(i)
            self._same_group = [np.asarray(members[str(g)]) for g in groups]
        if store is not None:
            if self.files is None or [str(f) for f in store.files] != [str(f) for f in self.files]:
                raise AfxError("style data: the decoded-audio store holds other files")
            if store.sample_rate != self.sample_rate or store.channels != self.channels:
                raise AfxError(f"style data: the decoded-audio store is at {store.sample_rate} Hz, "
                               f"{store.channels} ch, not {self.sample_rate} Hz, {self.channels} ch")

    def _file_clip(self, epoch: int, position: int, rng: np.random.Generator,
                   clip: int | None = None) -> tuple[np.ndarray, str, int]:
        """``(clip, names of its files joined by +, index of its first file)``."""
        order = self.epoch_order(epoch, len(self.files))
        idx = int(order[position % len(self.files)])
        clip = self.clip_samples if clip is None else int(clip)
        x = None
        for _ in range(max(1, self.max_tries)):
            parts, names, need, j = [], [], clip, idx
            while need > 0:  # short files (speech utterances): continue with further random files
                path = self.files[j]
                if self.store is not None:  # decoded once at the model rate: a slice, no decoding
                    length = self.store.length(j)
                    take = min(need, length)
                    start = int(rng.integers(0, length - take + 1))
                    seg = self.store.segment(j, start, take)
                else:
                    dur = self._durations(path)
                    take_s = min(need / self.sample_rate, dur)
                    start_s = rng.uniform(0.0, max(0.0, dur - take_s))
                    seg = read_segment(path, start_s, take_s, self.sample_rate, self.channels)
                seg = seg[:, :need] if seg.shape[1] else np.zeros((self.channels, need), np.float32)
                parts.append(seg)
                names.append(path.name)
                need -= seg.shape[1]
                pool = self._same_group[idx] if self._same_group is not None else None
                j = int(pool[rng.integers(len(pool))]) if pool is not None else int(rng.integers(len(self.files)))
            x = np.concatenate(parts, axis=1)[:, :clip]
            h = clip // 2
            e = [float(np.mean(x[:, s].astype(np.float64) ** 2)) for s in (slice(0, h), slice(h, None))]
            if min(e) > self.min_energy:
                break
        return x, "+".join(names), idx

    def make_item(self, epoch: int, position: int, rng: np.random.Generator) -> dict:
        first = None
        if self.files is None:
            x, name = music_like(rng, self.sample_rate, self.clip_samples, self.channels), f"generated/{epoch}/{position}"
        elif self.speed_range is not None:
            f = float(np.exp(rng.uniform(math.log(self.speed_range[0]), math.log(self.speed_range[1]))))
            f = round(f * 200.0) / 200.0   # a ratio of small integers keeps the polyphase filter short
            x, name, first = self._file_clip(epoch, position, rng, int(math.ceil(self.clip_samples * f)))
            x = change_speed(x, f, self.clip_samples)
            name = f"{name}@x{f:.3f}"
        else:
            x, name, first = self._file_clip(epoch, position, rng)
        # the group (speaker, track) of the clip's first file; the clip's name without groups
        group = self._groups[first] if self._groups is not None and first is not None else name
        x = peak_normalize(x.astype(np.float32), self.peak_db)
        q = style_to_q(self.chain, random_style(rng, self.keys, 2, self.bypass_probability))
        with torch.no_grad():
            y = self.chain(torch.from_numpy(np.ascontiguousarray(x))[None].expand(2, -1, -1).contiguous(), q,
                           mode="exact").numpy()
        y = np.nan_to_num(y)
        x_i, x_r = peak_normalize(y[0], self.peak_db), peak_normalize(y[1], self.peak_db)
        item = make_pair(x_i, x_r, int(rng.integers(2)))
        if self.match_eq:   # the DSP first stage: the model sees (and its chain processes) the matched input
            from ..tasks.eqmatch import apply_matched_geq, design_matched_geq

            xi, xr = item["input"].numpy(), item["reference"].numpy()
            gains = design_matched_geq(xi, self.sample_rate, xr, self.sample_rate, self.match_eq,
                                       smoothness=self.match_eq_smoothness)
            item["unmatched_input"] = item["input"]
            item["input"] = torch.from_numpy(apply_matched_geq(xi, self.sample_rate, gains, self.match_eq))
        item.update({"q_input": q[0], "q_reference": q[1], "name": name, "group": group})
        return item


# =============================================================================================
# The task
# =============================================================================================
def style_split_files(config: dict, split: str) -> list[Path] | None:
    """Audio files of ``split`` ("train"/"val"), or None for generated signals."""
    d = config["data"]
    if d["corpus"]:
        from .. import datasets

        names = [d["corpus"]] if isinstance(d["corpus"], str) else d["corpus"]
        out: list[Path] = []
        for n in names:
            out += datasets.files(n, split, added=d["added_sources"])
        if not out:
            raise AfxError(f"corpus {', '.join(names)}: the {split} split is empty")
        return out
    if d["audio_dir"]:
        rel = list_audio_files(d["audio_dir"])
        train, val = split_files(rel, d["val_fraction"])
        chosen = train if split == "train" else val
        if not chosen:
            raise AfxError(f"{d['audio_dir']}: the {split} split is empty ({len(rel)} file(s))")
        return [Path(d["audio_dir"]) / r for r in chosen]
    return None


def style_dataset(config: dict, chain_spec: dict, split: str) -> StylePairDataset:
    """The train or validation pair dataset of a validated style config (validation: its own seed,
    so the pairs — crops, styles, halves — are fixed)."""
    d = config["data"]
    items = d["items_per_epoch"] if split == "train" else d["val_items"]
    seed = config["seed"] if split == "train" else config["seed"] + 7919  # fixed val pairs
    files = style_split_files(config, split)
    groups = None
    if d["corpus"]:  # continue short files (speech utterances) with the same speaker/track
        from .. import datasets

        names = [d["corpus"]] if isinstance(d["corpus"], str) else d["corpus"]
        groups = [f"{n}/{g}" for n in names for g in datasets.groups(n, split, added=d["added_sources"])]
    store = None
    if files is not None and d["decoded_cache"]:
        from .pcm import PCMStore

        store = PCMStore.open_or_build(files, d["sample_rate"], d["channels"])
    return StylePairDataset(files, chain_spec, d["sample_rate"], d["clip_samples"], d["channels"], items, seed,
                            d["peak_db"], d["bypass_probability"], d["min_energy"], store=store, groups=groups,
                            match_eq=d["match_eq"], speed_range=d["speed_range"] if split == "train" else None,
                            match_eq_smoothness=d["match_eq_smoothness"])


def style_val_batches(config: dict, chain_spec: dict) -> list[dict]:
    """The fixed validation batches (``data.val_items`` pairs of the validation split)."""
    from .data import fixed_batches

    b = config["batch_size"]
    return fixed_batches(style_dataset(config, chain_spec, "val"), b, math.ceil(config["data"]["val_items"] / b))


CORPUS_CHOICES = ("music_mastered", "music_multitrack", "speech")


def _corpus_check(v: Any) -> str | None:
    names = [v] if isinstance(v, str) else v
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return "must be a corpus name or a non-empty list of names"
    bad = [n for n in names if n not in CORPUS_CHOICES]
    return f"unknown corpus {bad[0]!r} (known: {', '.join(CORPUS_CHOICES)})" if bad else None


@register_task
class StyleTask(ChainTask):
    """Production style transfer, trained self-supervised (DeepAFx-ST §2): see the module docstring.

    Batch: ``input``, ``reference``, ``target`` ``(batch, channels, clip_samples // 2)`` at the model
    rate. ``loss``: ``L(chain(input, model(input, reference)), target)`` through the gradient
    strategy; ``val_loss``: the same with the real chain (torch twins, exact mode) on fixed
    validation pairs (the corpus's validation split, seed-fixed styles and crops).
    """

    name = "style"
    default_chain = STYLE_CHAIN
    data_fields = {
        "sample_rate": Field(24000, INT, positive, "model rate in Hz (corpora are resampled to it)"),
        "clip_samples": Field(131072, INT, lambda v: None if v >= 512 and v % 2 == 0 else "must be even and >= 512",
                              "whole crop (both halves)"),
        "channels": Field(1, INT, one_of(1, 2)),
        "corpus": Field(None, (str, list, type(None)), optional(_corpus_check), "built corpus name(s)"),
        "audio_dir": Field(None, OPT_STR, doc="any audio folder (split by path hash); else generated signals"),
        "val_fraction": Field(0.1, FLOAT, fraction, "audio_dir only: share of files for validation"),
        "items_per_epoch": Field(2000, INT, positive),
        "val_items": Field(32, INT, positive, "fixed validation pairs"),
        "peak_db": Field(-12.0, OPT_FLOAT, doc="peak normalization of clip and styles (DeepAFx-ST: -12)"),
        "bypass_probability": Field(0.1, FLOAT, fraction, "per style and effect: a mild, almost-bypass setting"),
        "min_energy": Field(DEFAULT_MIN_ENERGY, FLOAT, non_negative, "redraw crops with a half at or below this mean x²"),
        "match_eq": Field(None, OPT_STR, optional(one_of("third", "octave")),
                          "DSP first stage: the input is matched to the reference by a graphic EQ "
                          "(afxcli.tasks.eqmatch) before the model sees and processes it"),
        "match_eq_smoothness": Field(None, OPT_FLOAT, optional(non_negative),
                                     "the matched EQ fit's penalty on neighbouring band-gain differences "
                                     "(afxcli.tasks.eqmatch.fit_graphic_eq); null: its SMOOTHNESS (3), 0: none "
                                     "(the stage as models were trained with it before 2026-12-03, sixth session)"),
        "speed_range": Field(None, (list, type(None)), check_speed_range,
                             "training crops only: tape-speed augmentation, factor log-uniform in [low, high] "
                             "(pitch and formants move; StylePairDataset)"),
        "added_sources": Field(False, BOOL, doc="also train on the sources added to a corpus after its first "
                               "build (manifest items marked train_only, scripts/data/README.md); false: "
                               "the first build's data, what every model shipped before 2026-12-04 saw"),
        "decoded_cache": Field(False, BOOL, doc="decode the files once into a float16 store in the user cache "
                               "(afxcli.train.pcm); crops are then slices, not decodes"),
    }
    option_fields = {
        **_strategy_fields(),
        "frontend": Field("logmel", STR, doc="afxcli.nn front end: logmel, stft, cqt"),
        "encoder": Field("tfe", STR, doc="afxcli.nn encoder: mobilenet, tfe"),
        "frontend_options": Field({}, DICT),
        "encoder_options": Field({}, DICT, doc="e.g. {\"embed_dim\": 128, \"l2_normalize\": true}"),
        "hidden": Field([256, 256], (list,), lambda v: None if v and all(isinstance(h, int) and h > 0 for h in v)
                        else "must be a list of positive integers", "controller MLP widths"),
        "init_neutral": Field(True, BOOL, doc="start the controller near NEUTRAL_STYLE (init_controller_neutral)"),
        "loudness_weight": Field(0.0, FLOAT, non_negative,
                                 "training only: adds this × |ΔLUFS| (afxcli.losses.LoudnessL1Loss, ungated "
                                 "BS.1770-4) to the training loss, so the network's own output gain aims at the "
                                 "target's loudness; the validation loss stays the audio loss alone"),
        "train_only": Field(None, (list, type(None)), None,
                            "fine-tuning: train only the controller's output for these chain free keys "
                            "(e.g. [\"out.gain_db\"]); everything else, and the other keys' outputs, stay frozen"),
        "level_own_gain_weight": Field(0.0, FLOAT, fraction,
                                       "inference only: the output level (dB) is this share of the network's own "
                                       "output gain and the rest of the reference's loudness "
                                       "(afxcli.tasks.style.match_output_loudness)"),
    }

    @classmethod
    def check_config(cls, config: dict) -> None:
        d = config["data"]
        if d["corpus"] and d["audio_dir"]:
            raise AfxError("config data: give corpus or audio_dir, not both")

    @classmethod
    def build_model(cls, config: dict, chain_spec: dict | None) -> torch.nn.Module:
        from ..nn import StyleModel
        from .tasks import analyzer_from_config

        analyzer, n = analyzer_from_config(config, chain_spec)
        return StyleModel(analyzer, n, tuple(config["task_options"]["hidden"]))

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self._setup_chain(config, "style")
        if config["task_options"]["init_neutral"]:  # a resumed run loads its weights over this
            init_controller_neutral(self.model, self.chain)
        if config["task_options"]["train_only"] is not None:
            self._train_only(config, list(config["task_options"]["train_only"]))
        self.loudness_weight = float(config["task_options"]["loudness_weight"])
        if self.loudness_weight:
            from ..losses import LoudnessL1Loss

            self.loudness_loss = LoudnessL1Loss(config["data"]["sample_rate"])

    def _train_only(self, config: dict, keys: list) -> None:
        """Freeze everything but the controller's output rows of ``keys`` (a linear probe on the
        frozen network's last hidden layer): the other parameters' predictions stay exactly as they
        were. Plain Adam only: its update of a row whose gradient is always zero is zero, AdamW's
        weight decay would still move it."""
        free = list(self.chain.free_keys)
        unknown = [k for k in keys if k not in free]
        if not keys or unknown:
            raise AfxError(f"task_options.train_only: {', '.join(map(str, unknown)) or 'empty'} not among the "
                           f"chain's free keys ({', '.join(free)})")
        if config["weight_decay"]:
            raise AfxError("task_options.train_only needs weight_decay 0 (decay would move the frozen rows)")
        out = self.model.controller.out
        for p in self.model.parameters():
            p.requires_grad_(False)
        mask = torch.zeros(len(free))
        mask[[free.index(k) for k in keys]] = 1.0
        out.weight.requires_grad_(True)
        out.bias.requires_grad_(True)
        out.weight.register_hook(lambda g: g * mask[:, None].to(g))
        out.bias.register_hook(lambda g: g * mask.to(g))

    def split_files(self, split: str) -> list[Path] | None:
        """Audio files of ``split`` ("train"/"val"), or None for generated signals."""
        return style_split_files(self.config, split)

    def dataset(self, split: str) -> StylePairDataset:
        return style_dataset(self.config, self.chain_spec, split)

    def train_dataset(self):
        return self.dataset("train")

    def val_batches(self) -> list[dict]:
        return style_val_batches(self.config, self.chain_spec)

    def predict(self, batch: dict) -> torch.Tensor:
        """Normalized chain parameters ``(batch, n_free)`` for the batch's input and reference."""
        return self.model(batch["input"], batch["reference"])

    def loss(self, batch: dict, step: int) -> torch.Tensor:
        y = self.render.render(batch["input"], self.predict(batch))
        loss = self.loss_fn(y, batch["target"])
        if self.loudness_weight:
            loss = loss + self.loudness_weight * self.loudness_loss(y, batch["target"])
        return loss

    def val_loss(self, batch: dict) -> float:
        return float(self.loss_fn(self.render.inference(batch["input"], self.predict(batch)), batch["target"]))



def evaluate(model: torch.nn.Module, chain, batches: list[dict]) -> dict[str, float]:
    """MR-STFT error (DeepAFx-ST §4.1's "STFT" metric: log + linear L1 over W ∈ {32 … 32768}, no
    time term) of the input and of the model's output against the targets, averaged over items
    (the input *before* a matched EQ stage, ``unmatched_input``, where the batches have one)."""
    from ..losses import MultiResolutionSTFTLoss

    metric = MultiResolutionSTFTLoss(time_weight=0.0, reduction="none")
    e_in, e_out = [], []
    model.eval()
    with torch.no_grad():
        for b in batches:
            y = chain(b["input"], model(b["input"], b["reference"]), mode="exact")
            e_in.append(metric.spectral_terms(b.get("unmatched_input", b["input"]), b["target"]))
            e_out.append(metric.spectral_terms(y, b["target"]))
    e_in_t, e_out_t = torch.cat(e_in), torch.cat(e_out)
    mi, mo = float(e_in_t.mean()), float(e_out_t.mean())
    return {"mrstft_input": mi, "mrstft_model": mo, "reduction_pct": 100.0 * (1.0 - mo / mi) if mi > 0 else float("nan")}
