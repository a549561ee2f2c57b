"""Rule-based DSP baseline of DeepAFx-ST (Steinmetz et al. 2022, §3.3): matched FIR EQ from smoothed
average spectra, then a compressor whose threshold is lowered until the loudness matches.

Flow: input and reference → average power spectra (Welch: Hann frames, mean over frames, mono mix,
each at its own rate) → 1/3-octave smoothing (in place of the paper's Savitzky–Golay filter) →
desired magnitude ``|H(f)| = sqrt(P_ref,sm(f) / P_in,sm(f))`` with its mean level removed (loudness is
the compressor's and the loudness stage's job) and clamped to ± ``max_gain_db`` → linear-phase FIR
by the window method (``scipy.signal.firwin2``; the paper uses 63 taps, here about 46 ms of
taps at the file's rate so that low-frequency corrections are resolvable) applied by FFT convolution
with its delay removed → compressor (ratio, attack, release fixed; automatic make-up
``−threshold·(1 − 1/ratio)``, i.e. 0 dBFS stays at 0 dBFS) whose threshold goes down from 0 dB on a 0.5 dB grid until the output
loudness is within ``tolerance_lu`` of the reference (the paper's linear search, done here by
bisection on the same grid: loudness rises monotonically as the threshold falls) or −60 dB (the
compressor's range; the paper goes to −80 dB). When the EQ'd input is already louder than the
reference no threshold can help (make-up only adds level) and a final gain matches it.

Works at any rate, mono or stereo, on the whole file. The search runs on a copy at half the rate
when the rate is above 32 kHz (loudness and the compressor's envelope barely change; the final
render is at the file's own rate), and for files over 90 s on twelve evenly spread 5 s excerpts.
The average spectra of long files use at most 384 evenly spread analysis frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import AfxError

#: Fixed compressor settings of the baseline (all but the threshold).
RB_COMPRESSOR = {"ratio": 4.0, "attack_ms": 10.0, "release_ms": 100.0}
#: Centers of the 1/3-octave bands reported for the FIR response (ISO 266 nominal, 25 Hz–16 kHz).
THIRD_OCTAVE_HZ = 1000.0 * 2.0 ** (np.arange(-16, 13) / 3.0)


def mono(audio: np.ndarray) -> np.ndarray:
    """``(channels, samples)`` → ``(samples,)`` channel mean, float64."""
    return np.asarray(audio, dtype=np.float64).mean(axis=0)


#: Long recordings: the average spectrum uses at most this many analysis frames, evenly spread
#: over the whole file (about 70 s of audio at 44.1 kHz; shorter files use every frame).
MAX_SPECTRUM_FRAMES = 384


def average_spectrum(audio: np.ndarray, sample_rate: float, frame_seconds: float = 0.186,
                     max_frames: int | None = MAX_SPECTRUM_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Mean power spectrum (Welch, Hann, 50 % overlap, density scaling) of the mono mix of ``audio``
    ``(channels, samples)``. Returns ``(freqs_hz (bins,), power (bins,))``.

    Equal to ``scipy.signal.welch`` of the channel mean (tests) when the file has at most
    ``max_frames`` frames; longer files average ``max_frames`` of Welch's frames evenly spread over
    the whole file (the mono mix is formed only for those frames, no whole-file copy)."""
    a = np.asarray(audio)
    if a.ndim == 1:
        a = a[None]
    length = a.shape[-1]
    n = int(2 ** round(math.log2(max(256.0, frame_seconds * sample_rate))))
    n = min(n, max(256, 2 ** int(math.log2(max(2, length)))))
    if length < n:  # shorter than one frame: one segment of the whole signal (as scipy shortens it)
        from scipy.signal import welch

        return welch(mono(a), fs=sample_rate, window="hann", nperseg=length, noverlap=length // 2, detrend=False)
    step = n - n // 2
    n_seg = (length - n) // step + 1
    seg = np.arange(n_seg)
    if max_frames is not None and n_seg > max_frames:
        seg = np.unique(np.round(np.linspace(0, n_seg - 1, int(max_frames))).astype(np.int64))
    win = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)   # scipy's get_window("hann", n): periodic
    frames = np.lib.stride_tricks.sliding_window_view(a, n, axis=-1)[:, seg * step]   # (c, frames, n)
    power = np.zeros(n // 2 + 1)
    for k in range(0, seg.size, 64):
        m = frames[:, k:k + 64].mean(axis=0, dtype=np.float64) * win                  # (frames, n)
        power += np.sum(np.abs(np.fft.rfft(m, axis=-1)) ** 2, axis=0)
    power /= seg.size * sample_rate * np.sum(win * win)
    power[1:-1 if n % 2 == 0 else None] *= 2.0       # one-sided density (Welch's doubling)
    return np.fft.rfftfreq(n, 1.0 / sample_rate), power


def smooth_fractional_octave(freqs_hz: np.ndarray, power: np.ndarray, fraction: float = 3.0) -> np.ndarray:
    """Fractional-octave smoothing: each bin becomes the mean power over
    ``[f·2^(−1/(2·fraction)), f·2^(1/(2·fraction))]`` (at least its own bin). Vectorized with a
    cumulative sum; ``freqs_hz`` must be the uniform grid of ``power``."""
    half = 2.0 ** (1.0 / (2.0 * fraction))
    cs = np.concatenate([[0.0], np.cumsum(power)])
    lo = np.searchsorted(freqs_hz, freqs_hz / half, side="left")
    hi = np.searchsorted(freqs_hz, freqs_hz * half, side="right")
    hi = np.maximum(hi, lo + 1)
    return (cs[hi] - cs[lo]) / (hi - lo)


@dataclass
class MatchedEQ:
    """Linear-phase FIR matching EQ designed at ``sample_rate``; ``taps`` ``(numtaps,)``."""

    sample_rate: float
    taps: np.ndarray
    freqs_hz: np.ndarray          # design grid
    gain_db: np.ndarray           # desired response on the grid (after clamp)

    def apply(self, audio: np.ndarray) -> np.ndarray:
        """``(channels, samples)`` → same shape, float32, delay of the linear-phase filter removed
        (:func:`fir_filter_centered`)."""
        return fir_filter_centered(audio, self.taps)

    def band_gains_db(self, centers_hz: np.ndarray = THIRD_OCTAVE_HZ) -> dict[str, float]:
        """The FIR's designed gain at 1/3-octave centers below Nyquist, ``{"<f>Hz": dB}``."""
        nyq = self.sample_rate / 2
        c = centers_hz[centers_hz < 0.95 * nyq]
        g = np.interp(c, self.freqs_hz, self.gain_db)
        return {f"{fc:.0f}Hz": round(float(v), 2) for fc, v in zip(c, g)}


def fir_filter_centered(audio: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """``y[c, i] = Σ_k taps[k] · x[c, i + d − k]`` with ``d = (len(taps) − 1) // 2`` (the full
    convolution with a linear-phase filter's delay removed, zeros outside the input), by float32
    overlap-save FFT convolution (``scipy.fft`` on all cores; the input spectrum of each frame is
    computed once for all channels, no padded float64 copy). ``audio`` ``(channels, samples)`` →
    float32, same shape."""
    import os

    from scipy import fft as sfft

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    h = np.asarray(taps, dtype=np.float32)
    c, n = x.shape
    m = h.size
    d = (m - 1) // 2
    nfft = 1 << max(12, min(17, int(4 * m).bit_length(), (n + m).bit_length()))
    hop = nfft - m + 1
    # full-convolution index j = i + d; frame f of x padded with m − 1 zeros yields j ∈ [f·hop, (f+1)·hop)
    f0, f1 = d // hop, -(-(d + n) // hop)
    xp = np.zeros((c, f1 * hop + m - 1), np.float32)
    xp[:, m - 1:m - 1 + n] = x
    frames = np.lib.stride_tricks.sliding_window_view(xp, nfft, axis=1)[:, ::hop]
    hf = sfft.rfft(h, nfft)
    out = np.empty((c, (f1 - f0) * hop), np.float32)
    workers = os.cpu_count() or 1
    group = max(1, (1 << 21) // nfft)
    for f in range(f0, f1, group):
        g = min(group, f1 - f)
        spec = sfft.rfft(frames[:, f:f + g], axis=-1, workers=workers)
        y = sfft.irfft(spec * hf, nfft, axis=-1, workers=workers)[..., m - 1:]   # (c, g, hop)
        out[:, (f - f0) * hop:(f - f0 + g) * hop] = y.reshape(c, g * hop)
    lo = d - f0 * hop
    return np.ascontiguousarray(out[:, lo:lo + n])


def smoothed_spectrum(audio: np.ndarray, sample_rate: float, fraction: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """``(freqs_hz, power)``: :func:`average_spectrum` of ``audio`` ``(channels, samples)`` after
    :func:`smooth_fractional_octave` (1/``fraction`` octave)."""
    f, p = average_spectrum(audio, sample_rate)
    return f, smooth_fractional_octave(f, p, fraction)


def matched_response_db(audio: np.ndarray, sample_rate: float, ref_audio: np.ndarray | None, ref_rate: float,
                        fraction: float = 3.0, f_low_hz: float = 30.0, f_max_hz: float = 16000.0,
                        ref_spectrum: tuple[np.ndarray, np.ndarray] | None = None
                        ) -> tuple[np.ndarray, np.ndarray, float]:
    """The matching EQ's desired response (DeepAFx-ST §3.3): ``10·log10(P_ref,sm(f) / P_in,sm(f))``
    of the fractional-octave smoothed average spectra (each file at its own rate), with its level
    removed (the mean over log-spaced frequency, each octave counting the same, between ``f_low_hz``
    and ``f_top``), held constant below ``f_low_hz`` and flat (0 dB) above ``f_top = min(0.95·lower
    Nyquist, f_max_hz)``. Returns ``(freqs_hz (bins,), response_db (bins,), f_known)`` on the input's
    Welch grid (not clamped), ``f_known = 0.95·lower Nyquist`` the top of what the response knows. ``ref_spectrum``: the reference's :func:`smoothed_spectrum` (at
    ``ref_rate``) in place of ``ref_audio`` (a stored one, e.g. an adaptive preset's)."""
    f_in, s_in = smoothed_spectrum(audio, sample_rate, fraction)
    f_rf, s_rf = ref_spectrum if ref_spectrum is not None else smoothed_spectrum(ref_audio, ref_rate, fraction)
    floor = 1e-12
    s_in = s_in + floor
    s_rf = np.interp(f_in, f_rf, s_rf) + floor
    ratio_db = 10.0 * np.log10(s_rf / s_in)
    f_known = 0.95 * min(sample_rate, ref_rate) / 2
    f_top = min(f_known, float(f_max_hz))
    band = (f_in >= f_low_hz) & (f_in <= f_top)
    if not np.any(band):
        raise AfxError("audio too short or rate too low for a matched EQ")
    w = np.where(band, 1.0 / np.maximum(f_in, 1.0), 0.0)
    ratio_db = ratio_db - float(np.sum(w * ratio_db) / np.sum(w))
    lo_val = ratio_db[np.argmax(f_in >= f_low_hz)]
    ratio_db = np.where(f_in < f_low_hz, lo_val, ratio_db)
    # above the reference's Nyquist nothing is known: fade to flat
    ratio_db = np.where(f_in > f_known, 0.0, ratio_db)
    return f_in, ratio_db, f_known


def design_matched_eq(audio: np.ndarray, sample_rate: float, ref_audio: np.ndarray, ref_rate: float,
                      max_gain_db: float = 12.0, fraction: float = 3.0, taps_seconds: float = 0.046,
                      f_low_hz: float = 30.0) -> MatchedEQ:
    """FIR EQ moving the smoothed average spectrum of ``audio`` toward ``ref_audio``'s (DeepAFx-ST
    §3.3). Both ``(channels, samples)``, each at its own rate. The desired response
    (:func:`matched_response_db`) is held flat above the lower of the two Nyquist frequencies (×0.95)
    and constant below ``f_low_hz``."""
    from scipy.signal import firwin2

    f_in, ratio_db, _ = matched_response_db(audio, sample_rate, ref_audio, ref_rate, fraction, f_low_hz)
    gain_db = np.clip(ratio_db, -max_gain_db, max_gain_db)
    numtaps = int(taps_seconds * sample_rate) | 1
    freqs = f_in / (sample_rate / 2)
    freqs[-1] = 1.0
    taps = firwin2(numtaps, freqs, 10.0 ** (gain_db / 20.0), window="hann")
    return MatchedEQ(float(sample_rate), taps, f_in, gain_db)


def auto_makeup_db(threshold_db: float, ratio: float) -> float:
    """Make-up that keeps 0 dBFS at 0 dBFS: ``−threshold·(1 − 1/ratio)`` (clamped to 0–24 dB), so a
    lower threshold raises (never lowers) the level of material above it."""
    return float(np.clip(-threshold_db * (1.0 - 1.0 / ratio), 0.0, 24.0))


def compressor_values(threshold_db: float) -> dict[str, float]:
    v = dict(RB_COMPRESSOR)
    v["threshold_db"] = float(threshold_db)
    v["makeup_db"] = auto_makeup_db(threshold_db, v["ratio"])
    return v


@dataclass
class CompressorSearch:
    threshold_db: float
    values: dict[str, float]
    lufs: float                   # loudness of the compressor's output (search copy)
    evaluations: int
    history: list[tuple[float, float]] = field(default_factory=list)  # (threshold dB, LUFS)


#: Files longer than SEARCH_MIN_SECONDS search the compressor threshold on SEARCH_EXCERPTS evenly
#: spread excerpts of SEARCH_EXCERPT_SECONDS (a third of a 3-minute song) instead of the whole file.
SEARCH_MIN_SECONDS = 90.0
SEARCH_EXCERPTS = 12
SEARCH_EXCERPT_SECONDS = 5.0


def search_excerpts(audio: np.ndarray, sample_rate: float) -> np.ndarray:
    """``audio`` ``(channels, samples)`` itself, or for files over :data:`SEARCH_MIN_SECONDS` the
    concatenation of :data:`SEARCH_EXCERPTS` evenly spread excerpts of :data:`SEARCH_EXCERPT_SECONDS`
    (first and last included): the search's loudness measurements then cost a fraction of the file.
    The compressor restarts at each excerpt joint (100 ms release: its envelope settles within the
    excerpt) and the gated loudness of spread excerpts tracks the whole file's; the loudness stage
    matches the final loudness on the whole file anyway."""
    n = audio.shape[-1]
    w = int(SEARCH_EXCERPT_SECONDS * sample_rate)
    if n <= SEARCH_MIN_SECONDS * sample_rate:
        return audio
    starts = np.linspace(0, n - w, SEARCH_EXCERPTS).astype(np.int64)
    return np.concatenate([audio[:, s:s + w] for s in starts], axis=-1)


def search_threshold(audio: np.ndarray, sample_rate: float, target_lufs: float, tolerance_lu: float = 0.5,
                     step_db: float = 0.5, lowest_db: float = -60.0) -> CompressorSearch:
    """DeepAFx-ST §3.3: the highest threshold on the ``step_db`` grid from 0 dB down to ``lowest_db``
    whose output loudness is within ``tolerance_lu`` of ``target_lufs`` (or, failing that, the grid
    point closest to it). Bisection over the grid (loudness is monotonic in the threshold here)."""
    from ..effects import create
    from ..render import render_effect
    from .loudness import fast_lufs as lufs

    x = np.asarray(audio, dtype=np.float32)
    sr = float(sample_rate)
    x = search_excerpts(x, sr)
    if sr > 32000:
        from ..audio import resample

        x, sr = resample(x, sr, sr / 2), sr / 2
    comp = create("compressor", sr)
    cache: dict[int, float] = {}
    history: list[tuple[float, float]] = []

    def loud(k: int) -> float:
        if k not in cache:
            thr = -k * step_db
            y = render_effect(comp, x, compressor_values(thr)) if k else x
            cache[k] = lufs(y, sr)
            history.append((thr, cache[k]))
        return cache[k]

    k_max = int(round(-lowest_db / step_db))
    if loud(0) >= target_lufs - tolerance_lu:
        k = 0
    elif loud(k_max) < target_lufs - tolerance_lu:
        k = k_max
    else:  # smallest k with loud(k) >= target - tol
        lo, hi = 0, k_max
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if loud(mid) >= target_lufs - tolerance_lu:
                hi = mid
            else:
                lo = mid
        k = hi
    thr = -k * step_db
    return CompressorSearch(thr, compressor_values(thr), loud(k), len(cache), history)


@dataclass
class RuleBasedSetting:
    """The baseline's whole setting for one input: FIR EQ, compressor values, final gain (dB)."""

    eq: MatchedEQ
    compressor: dict[str, float]
    gain_db: float
    target_lufs: float
    search: CompressorSearch

    def describe(self) -> dict:
        return {"method": "rule-based (DeepAFx-ST §3.3)",
                "fir_eq": {"taps": int(self.eq.taps.size), "band_gains_db": self.eq.band_gains_db()},
                "compressor": {k: round(v, 3) for k, v in self.compressor.items()},
                "gain_db": round(self.gain_db, 3),
                "compressor_search": {"evaluations": self.search.evaluations,
                                      "output_lufs": round(self.search.lufs, 3)}}

    def apply(self, audio: np.ndarray, sample_rate: float, with_gain: bool = True) -> np.ndarray:
        """Render EQ → compressor (→ gain) on the whole ``(channels, samples)`` file."""
        from ..effects import create
        from ..render import render_effect

        y = self.eq.apply(audio)
        if self.compressor["threshold_db"] < 0:
            y = render_effect(create("compressor", sample_rate), y, self.compressor)
        if with_gain and self.gain_db != 0.0:
            y = y * np.float32(10.0 ** (self.gain_db / 20.0))
        return y


def rule_based(audio: np.ndarray, sample_rate: float, ref_audio: np.ndarray, ref_rate: float,
               target_lufs: float | None = None, tolerance_lu: float = 0.5,
               max_gain_db: float = 12.0) -> RuleBasedSetting:
    """Design the baseline for ``audio`` ``(channels, samples)`` against ``ref_audio``: matched FIR EQ,
    compressor threshold search to the reference's loudness (or ``target_lufs``), and the gain that
    remains (when the EQ'd input is already louder than the target)."""
    from .loudness import fast_lufs as lufs

    if target_lufs is None:
        target_lufs = lufs(ref_audio, ref_rate)
    if not math.isfinite(target_lufs):
        raise AfxError("reference is silent or shorter than 0.4 s: no loudness to match")
    eq = design_matched_eq(audio, sample_rate, ref_audio, ref_rate, max_gain_db=max_gain_db)
    y = eq.apply(audio)
    if not math.isfinite(lufs(y, sample_rate)):
        raise AfxError("input is silent or shorter than 0.4 s: no loudness to match")
    search = search_threshold(y, sample_rate, target_lufs, tolerance_lu)
    gain = 0.0
    if abs(search.lufs - target_lufs) > tolerance_lu:
        gain = float(np.clip(target_lufs - search.lufs, -24.0, 24.0))
    return RuleBasedSetting(eq, search.values, gain, float(target_lufs), search)
