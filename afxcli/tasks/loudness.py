"""Loudness stage of ``afx master``: gain to a target integrated loudness, then a true-peak
brickwall limiter at the ceiling, iterated until the loudness lands and the true peak holds.

Flow: audio ``(channels, samples)`` → integrated loudness (ITU-R BS.1770-4, pyloudnorm's algorithm
and filters, vectorized: :func:`fast_lufs`, whole file) → gain ``g = target − L`` → pedalboard
``BrickwallLimiter(true_peak=True)`` (the ``limiter`` effect) at the ceiling → measure loudness and
true peak (BS.1770-4 Annex 2, :func:`fast_true_peak_dbtp` = :func:`afxcli.metrics.true_peak_dbtp`
evaluated only where it can exceed the sample peak). When gain alone keeps the true peak under the
ceiling its result is exact and derived (no render). Otherwise the gain into the limiter is searched
(:mod:`afxcli.tasks.loudness_search`: secant steps on the measured output loudness, regula falsi
once bracketed, detection of the limiter's saturation, where more gain gives a quieter output and
the target is unreachable) to ``tolerance_lu`` (0.01 LU by default); only the best render's true
peak is measured, and when the limiter lets an inter-sample peak over the ceiling its own ceiling
is lowered by the overshoot and the search goes on. The output's true peak never exceeds the
ceiling: if the limiter cannot hold it, a plain gain reduction takes the peak under the ceiling
(the loudness then misses; the result says so). Files over a minute first run the same search
on eight 4 s excerpts and start the whole-file search from its gain, slope and limiter ceiling
(usually one whole-file render: ``benchmarks/loudness_rounds.py``) — unless the excerpts reach
the target by plain gain under the ceiling (the file's loudest peaks lie between them): they then
say nothing about the limiter, and the whole file searches from the plain gain alone. Each render
is measured while it runs (:func:`_limit_and_measure`: a render thread streams the limiter, this
one K-weights and takes the true peak of each part as it arrives).

Presets (``presets/loudness/*.json``, ``"format": "afx-loudness-preset"``) name targets such as
``streaming`` (−14 LUFS, −1 dBTP) or ``broadcast`` (EBU R128: −23 LUFS, −1 dBTP).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AfxError

#: Format tag of a loudness preset file.
LOUDNESS_PRESET_FORMAT = "afx-loudness-preset"
#: Folder of the shipped loudness presets.
LOUDNESS_PRESET_DIR = Path(__file__).resolve().parents[2] / "presets" / "loudness"
#: Target when nothing else gives one (streaming services' common −14 LUFS).
DEFAULT_TARGET_LUFS = -14.0
DEFAULT_CEILING_DBTP = -1.0
#: More loudness lost in the limiter than this (LU) counts as excessive limiting.
DEFAULT_MAX_LIMITING_DB = 8.0
#: Margin (dB) under the ceiling that the loudness stage aims for, covering the float32 rounding of
#: :func:`fast_true_peak_dbtp` against :func:`afxcli.metrics.true_peak_dbtp`.
TRUE_PEAK_GUARD_DB = 1e-4
#: The limiter's own ceiling starts this far under the target ceiling (its measured overshoot).
LIMITER_MARGIN_DB = 0.1
#: Files longer than this search gain and limiter ceiling on PROXY_CHUNKS excerpts of
#: PROXY_CHUNK_SECONDS first, then confirm on the whole file. The excerpts' search takes about
#: four renders, so their length sets its cost: on 30 music mixes over 65 s mastered to
#: −9/−11/−13 LUFS (``benchmarks/loudness_rounds.py --split train --min-seconds 65 --n 30
#: --lufs=-9,-11,-13 --proxy-chunk-seconds 4,2``, 2026-12-04), 8 × 2 s excerpts needed the same
#: renders as 8 × 4 s (3.82 excerpt and 1.12 whole-file renders per limited file) and the limiter's
#: time went 19.8 → 14.9 s (3811 → 2772 s of audio rendered).
PROXY_MIN_SECONDS = 60.0
PROXY_CHUNKS = 8
PROXY_CHUNK_SECONDS = 2.0
#: Most limiter renders of the excerpts' search.
PROXY_MAX_EVALS = 8
#: The whole file's first secant step uses the excerpts' last slope times this: that slope comes
#: from points under the target on a concave curve (too steep), and the whole file usually needs a
#: little more gain, where the curve is flatter still (measured on a 180 s master: 0.41 on the
#: excerpts, 0.28 on the file); a longer first step lands in the search's acceptance window
#: (target … target + 0.1 LU) more often, and one past it brackets the target.
PROXY_SLOPE_FACTOR = 0.75
#: When the excerpts' loudness puts the plain-gain output's sample peak more than this many dB over
#: the ceiling, the whole file surely needs the limiter: its proxy search then starts while the
#: whole file's loudness is measured in a side thread (:func:`match_loudness`).
PROXY_SPECULATE_DB = 3.0
#: The whole-file search's acceptance window: a render whose reach (the loudness it gives once
#: trimmed until its true peak sits on the ceiling) is SEARCH_AIM_LU ± SEARCH_ACCEPT_LU above the
#: target is kept, and the trim onto the target then leaves its true peak at most
#: SEARCH_AIM_LU + SEARCH_ACCEPT_LU dB under the ceiling (limiting that much more than the least
#: possible). Measured on the 7 of 10 validation masters that reach the limiter
#: (``benchmarks/loudness_rounds.py --n 10``): the excerpts' prediction of the first whole-file
#: reach misses its aim by −0.08 … +0.08 LU; the former 0.1 LU window (aim 0.05) took 1.57
#: whole-file renders per file (at most 0.085 dB left under the ceiling), a 0.2 LU window (aim
#: 0.1) 1.29 (every file with excerpts in one render; at most 0.184 dB left under the ceiling).
#: With the sixth session's music model the excerpts missed by up to −0.11 LU (the 180 s file of
#: ``benchmarks/master_speed.py``: 0.013 LU under the window, a second whole-file render), and the
#: 0.2 LU window took 1.38 renders per file; a 0.3 LU window (aim 0.15) took 1.25, every file
#: with excerpts in one, at most 0.268 dB left under the ceiling. On the full corpus build (tenth
#: session, ``loudness_rounds.py --split val|train --n 30 --min-seconds 65 --lufs=-9,-11,-13``,
#: 16 + 30 limited files) the excerpts missed by up to −0.18 LU (the 180 s file of
#: ``master_speed.py`` again): the 0.3 LU window took 1.44 / 1.17 renders per file, this 0.4 LU
#: window (aim 0.2) 1.12 / 1.13 (0.5 LU: 1.12 on validation too), at most 0.39 / 0.40 dB left
#: under the ceiling instead of 0.29.
SEARCH_AIM_LU = 0.2
SEARCH_ACCEPT_LU = 0.2
#: The excerpts' search: the same aim, a narrower window (its renders are cheap).
PROXY_ACCEPT_LU = 0.02
#: BS.1770-4 gating block (s) and overlap (pyloudnorm's defaults).
GATE_BLOCK_SECONDS = 0.4
GATE_OVERLAP = 0.75
#: Block of the exact K-weighting recursion (samples) and chunk the filter state is carried over.
K_WEIGHTING_BLOCK = 32
K_WEIGHTING_CHUNK = 1 << 15


def fast_lufs(audio: np.ndarray, sample_rate: float) -> float:
    """Integrated loudness (LUFS), the same computation as pyloudnorm's ``Meter.integrated_loudness``
    (ITU-R BS.1770-4: its K-weighting biquads, 400 ms blocks with 75 % overlap at its block bounds,
    −70 LUFS absolute and −10 LU relative gates, channel weights 1.0 for L/R) with the per-block
    Python loop replaced by one pass of block sums — agrees with :func:`afxcli.metrics.lufs` to
    ~1e-9 LU (tests) at a fraction of its time on long files. ``audio`` ``(channels, samples)``; ``nan`` when
    shorter than one block, ``-inf`` for silence."""
    return gated_lufs(block_energies(audio, sample_rate))


def gated_lufs(z: np.ndarray | None, gain_db: float = 0.0) -> float:
    """BS.1770-4 integrated loudness from the weighted block energies ``z`` (``Σ_i G_i z_ij``,
    :func:`block_energies`) of a signal, or of that signal times a gain of ``gain_db`` (the energies
    scale by ``10^(gain_db/10)``, the gates are applied after scaling): ``nan`` for ``None``
    (shorter than one block), ``-inf`` when every block is gated out."""
    if z is None:
        return float("nan")
    zsum = z * (10.0 ** (gain_db / 10.0)) if gain_db else z
    with np.errstate(divide="ignore", invalid="ignore"):
        l_blocks = -0.691 + 10.0 * np.log10(zsum)
        abs_gate = l_blocks >= -70.0
        if not np.any(abs_gate):
            return float("-inf")
        rel = -0.691 + 10.0 * np.log10(zsum[abs_gate].mean()) - 10.0
        keep = (l_blocks > rel) & (l_blocks > -70.0)
        if not np.any(keep):
            return float("-inf")
        return float(-0.691 + 10.0 * np.log10(zsum[keep].mean()))


def block_energies(audio: np.ndarray, sample_rate: float) -> np.ndarray | None:
    """K-weighted, channel-weighted mean square per 400 ms gating block (75 % overlap) of ``audio``
    ``(channels, samples)``: ``(blocks,)`` float64 (``Σ_i G_i z_ij`` of BS.1770-4 eq. 2), or ``None``
    when shorter than one block. :func:`gated_lufs` turns it into integrated loudness."""
    a = np.asarray(audio)
    if a.ndim == 1:
        a = a[None]
    acc = KWeightedEnergy(sample_rate, a.shape[0], a.shape[1])
    acc.feed(a, a.shape[1])
    return acc.blocks()


def _gating_bounds(sample_rate: float, n: int):
    """``(lo, hi, cuts)`` of the BS.1770-4 gating blocks of an ``n``-sample signal (pyloudnorm's
    bounds: 400 ms blocks, 75 % overlap): each block's first and end sample, and every distinct
    bound under ``n`` in order (``cuts[0]`` is 0); ``(None, None, empty)`` when shorter than one block."""
    t_g = GATE_BLOCK_SECONDS
    if n < int(round(t_g * sample_rate)) + 1:
        return None, None, np.zeros(0, np.int64)
    step = 1.0 - GATE_OVERLAP
    n_blocks = int(np.round(((n / sample_rate - t_g) / (t_g * step)))) + 1
    j = np.arange(n_blocks)
    lo = (t_g * (j * step) * sample_rate).astype(np.int64)
    hi = np.minimum((t_g * (j * step + 1) * sample_rate).astype(np.int64), n)
    cuts = np.unique(np.concatenate([lo, hi]))
    return lo, hi, cuts[cuts < n]


class KWeightedEnergy:
    """:func:`block_energies` of a signal that arrives in parts: :meth:`feed` it the samples
    available so far (any count; they are filtered in whole :data:`K_WEIGHTING_CHUNK` s, the rest
    waits for more), :meth:`blocks` at the end. The chunks are the same as for the whole signal at
    once, so the result is identical."""

    def __init__(self, sample_rate: float, channels: int, n_samples: int) -> None:
        from ..filters import BlockIIR, k_weighting_sos

        if channels > 5:
            raise AfxError(f"loudness: at most 5 channels, got {channels}")
        self.sr = float(sample_rate)
        self.n = int(n_samples)
        # the two K-weighting biquads (pre-filter shelf, RLB high pass; pyloudnorm's design at this
        # rate, :func:`afxcli.filters.k_weighting_sos`) one after the other in float64, exact block
        # recursions (:class:`afxcli.filters.BlockIIR`, = scipy's sosfilt to ≤ 1e-8 of the peak) over
        # chunks with the state carried across them so that each chunk's float64 copy and its
        # squares stay in cache; channel weights G = 1.0 (L, R, C), 1.41 (surrounds): every later
        # step uses only the weighted energy Σ_i G_i y_i²
        self.sections = [BlockIIR(s[:3], s[3:], K_WEIGHTING_BLOCK) for s in k_weighting_sos(self.sr)]
        self.states = [f.zero_state(channels) for f in self.sections]
        self.weights = np.array([1.0, 1.0, 1.0, 1.41, 1.41])[:channels]
        self.done = 0
        # the gating blocks' bounds: only the sums of Σ_i G_i y_i² between consecutive bounds are
        # kept (the 100 ms steps of the 75 % overlap), never a whole-length energy signal
        self.lo, self.hi, self.cuts = _gating_bounds(self.sr, self.n)
        self.seg = np.zeros(self.cuts.size, np.float64)
        self.e = np.empty(0, np.float64)   # one chunk's Σ_i G_i y_i²

    def feed(self, audio: np.ndarray, available: int) -> None:
        """Filter ``audio[:, done:available]`` (``audio``: the whole signal's array, ``(channels,
        n_samples)``, filled up to ``available``) in whole chunks, or to the end when ``available``
        is ``n_samples``."""
        chunk = K_WEIGHTING_CHUNK
        available = min(int(available), self.n)
        while self.done < self.n and (available - self.done >= chunk or available == self.n):
            s = self.done
            yc = audio[:, s:s + chunk].astype(np.float64)
            m = yc.shape[1]
            if m % K_WEIGHTING_BLOCK:  # the last chunk: zeros to a whole block (their outputs are dropped)
                yc = np.pad(yc, ((0, 0), (0, -m % K_WEIGHTING_BLOCK)))
            for i, f in enumerate(self.sections):
                yc, self.states[i] = f.process(yc, self.states[i])
            yc = yc[:, :m]
            np.square(yc, out=yc)
            if self.e.size < m:
                self.e = np.empty(m, np.float64)
            e = self.e[:m]
            np.dot(self.weights, yc, out=e)
            if self.cuts.size:   # this chunk's share of each segment between gating-block bounds
                k0 = int(np.searchsorted(self.cuts, s, side="right")) - 1
                k1 = int(np.searchsorted(self.cuts, s + m, side="left"))
                starts = np.concatenate([[0], self.cuts[k0 + 1:k1] - s])
                self.seg[k0:k0 + starts.size] += np.add.reduceat(e, starts)
            self.done = s + m

    def blocks(self) -> np.ndarray | None:
        """The gating blocks' energies (``None`` when shorter than one block); needs every sample fed."""
        if self.lo is None:
            return None
        if self.done < self.n:
            raise AfxError("internal: loudness blocks before every sample was filtered")
        cs = np.concatenate([[0.0], np.cumsum(self.seg)])          # cs[k]: Σ up to bound k (cuts, then n)
        bounds = np.append(self.cuts, self.n)
        at = lambda v: np.searchsorted(bounds, v)                   # noqa: E731 - every lo/hi is a bound
        return (cs[at(self.hi)] - cs[at(self.lo)]) / (GATE_BLOCK_SECONDS * self.sr)   # Σ_i G_i z_ij


def fast_true_peak_dbtp(audio: np.ndarray, sample_rate: float, valid: tuple[int, int] | None = None) -> float:
    """True peak (dBTP) with the oversampling factor and interpolation filter of
    :func:`afxcli.metrics.true_peak_dbtp` (BS.1770-4 Annex 2), computed per polyphase branch by FFT
    (overlap-save) convolution instead of direct polyphase filtering. For ``resample_poly(x, L, 1,
    window=h)`` output ``y[L·i + p] = (x ∗ g_p)[i + D]`` with ``g_p = L·h[p::L]`` and
    ``D = (len(h) − 1) / (2L)``; branch 0 is the input itself (the windowed sinc is zero at the
    other multiples of ``L``: skipped). Each frame of the input is transformed once and shared by all
    branches and channels (``scipy.fft``, float32, all cores). Frames that cannot hold the peak are
    skipped: ``|y_p| ≤ ‖g_p‖₁ · max|x|`` over the frame, so a frame whose sample peak times the
    largest branch ℓ1 norm is not above the peak found so far is never filtered (loudest frames
    first). Within ~1e-5 dB of the float64 reference (tests); :func:`match_loudness` keeps a 1e-4 dB
    guard. ``audio`` ``(channels, samples)``.

    ``valid=(lo, hi)``: only the interpolated signal at samples ``lo … hi − 1`` of ``audio`` counts
    (the samples around them are context): the true peak of a segment of a longer signal, equal to
    the whole signal's at those samples when ``audio`` holds :func:`true_peak_context` samples of
    it on each side of the segment (or the signal's own end)."""
    import os

    from scipy import fft as sfft

    from ..filters import kaiser_lowpass
    from ..metrics import TRUE_PEAK_KAISER_BETA, TRUE_PEAK_TAPS_PER_PHASE, true_peak_oversampling

    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    lo, hi = (0, a.shape[1]) if valid is None else (max(int(valid[0]), 0), min(int(valid[1]), a.shape[1]))
    sp = float(np.max(np.abs(a[:, lo:hi]))) if a.shape[0] and hi > lo else 0.0
    factor = true_peak_oversampling(sample_rate)
    if factor == 1 or sp == 0.0:
        return 20.0 * math.log10(sp) if sp > 0 else float("-inf")
    # the interpolation filter of afxcli.metrics._true_peak_filter (scipy's firwin; equal, tests)
    h = kaiser_lowpass(2 * TRUE_PEAK_TAPS_PER_PHASE * factor + 1, 1.0 / factor, TRUE_PEAK_KAISER_BETA) * factor
    if (h.size - 1) % (2 * factor):
        raise AfxError("internal: true-peak filter length does not fit the polyphase split")
    delay = (h.size - 1) // (2 * factor)
    m = -(-h.size // factor)                                   # taps per branch (longest)
    branches = []
    for p in range(factor):
        g = h[p::factor]
        if p == 0 and abs(g[delay] - 1.0) < 1e-9 and np.max(np.abs(np.delete(g, delay))) < 1e-9:
            continue  # branch 0 is the input itself: the sample peak already covers it
        branches.append(np.pad(g, (0, m - g.size)))
    g = np.stack(branches)                                     # (branches, m)
    l1 = float(np.max(np.sum(np.abs(g), axis=1)))
    c, n = a.shape
    nfft = 1 << max(12, min(16, (n + m).bit_length()))
    hop = nfft - m + 1
    # full convolution index j = i + D for output sample i; j ∈ [D, D + n); overlap-save frames
    # on x padded with m − 1 zeros on the left: frame f yields j ∈ [f·hop, (f + 1)·hop)
    n_frames = -(-(delay + n) // hop)
    xp = np.zeros((c, n_frames * hop + m - 1), np.float32)
    xp[:, m - 1:m - 1 + n] = a
    frames = np.lib.stride_tricks.sliding_window_view(xp, nfft, axis=1)[:, ::hop][:, :n_frames]  # (c, F, nfft)
    fmax = np.abs(frames).max(axis=(0, 2))                     # (F,) sample peak per frame window
    gf = sfft.rfft(g.astype(np.float32), nfft, axis=1)         # (branches, bins)
    workers = os.cpu_count() or 1
    peak = sp
    order = np.argsort(-fmax, kind="stable")
    group = max(1, (1 << 20) // nfft)
    for k in range(0, order.size, group):
        idx = order[k:k + group]
        idx = idx[fmax[idx] * l1 > peak]
        if idx.size == 0:
            break  # frames come loudest first: none after this can exceed the peak either
        spec = sfft.rfft(frames[:, idx], axis=-1, workers=workers)            # (c, f, bins)
        y = sfft.irfft(spec[:, :, None, :] * gf[None, None], nfft, axis=-1, workers=workers)[..., m - 1:]
        ya = np.abs(y).max(axis=(0, 2))                                       # (f, hop)
        j = idx[:, None] * hop + np.arange(hop)[None, :]
        ya = np.where((j >= delay + lo) & (j < delay + hi), ya, 0.0)
        peak = max(peak, float(ya.max()))
    return 20.0 * math.log10(peak)


def true_peak_context(sample_rate: float) -> int:
    """Samples on each side of a segment that :func:`fast_true_peak_dbtp` (``valid=``) needs to
    give the segment's true peak as part of a longer signal: the interpolation filter's half
    length in input samples, plus one."""
    from ..metrics import TRUE_PEAK_TAPS_PER_PHASE, true_peak_oversampling

    return 0 if true_peak_oversampling(sample_rate) == 1 else TRUE_PEAK_TAPS_PER_PHASE + 2


@dataclass
class LoudnessPreset:
    name: str
    target_lufs: float
    ceiling_dbtp: float
    description: str = ""
    path: Path | None = None


def list_loudness_presets() -> list[str]:
    return sorted(p.stem for p in LOUDNESS_PRESET_DIR.glob("*.json"))


def load_loudness_preset(name_or_path: str | Path) -> LoudnessPreset:
    """A loudness preset by name (``streaming``, ``podcast``, ...) or path to its JSON."""
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        p = LOUDNESS_PRESET_DIR / f"{name_or_path}.json"
        if not p.is_file():
            raise AfxError(f"unknown loudness preset {str(name_or_path)!r} "
                           f"(shipped: {', '.join(list_loudness_presets())})")
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise AfxError(f"{p}: cannot read loudness preset ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != LOUDNESS_PRESET_FORMAT:
        raise AfxError(f"{p}: not an afx loudness preset (format {LOUDNESS_PRESET_FORMAT!r})")
    try:
        target, ceiling = float(data["target_lufs"]), float(data["ceiling_dbtp"])
    except (KeyError, TypeError, ValueError):
        raise AfxError(f"{p}: loudness preset needs numeric target_lufs and ceiling_dbtp") from None
    check_target(target, ceiling)
    return LoudnessPreset(str(data.get("name", p.stem)), target, ceiling, str(data.get("description", "")), p)


def is_loudness_preset(name_or_path: str | Path) -> bool:
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        return (LOUDNESS_PRESET_DIR / f"{name_or_path}.json").is_file()
    try:
        return json.loads(p.read_text()).get("format") == LOUDNESS_PRESET_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_target(target_lufs: float, ceiling_dbtp: float) -> None:
    if not (math.isfinite(target_lufs) and -70.0 <= target_lufs <= 0.0):
        raise AfxError(f"loudness target must be between -70 and 0 LUFS, got {target_lufs}")
    if not (math.isfinite(ceiling_dbtp) and -24.0 <= ceiling_dbtp <= 0.0):
        raise AfxError(f"true-peak ceiling must be between -24 and 0 dBTP, got {ceiling_dbtp}")


@dataclass
class LoudnessResult:
    """Outcome of :func:`match_loudness`. ``audio`` is ``(channels, samples)`` float32."""

    audio: np.ndarray
    input_lufs: float
    target_lufs: float
    output_lufs: float
    true_peak_dbtp: float
    ceiling_dbtp: float
    gain_db: float
    limiter_ceiling_db: float
    limiting_db: float          # loudness lost in the limiter: gain − (output − input) LU
    rounds: int
    reached: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("input_lufs", "target_lufs", "output_lufs", "true_peak_dbtp",
                                                "ceiling_dbtp", "gain_db", "limiter_ceiling_db", "limiting_db",
                                                "rounds", "reached", "notes")}


def _limiter(sr: float, ceiling_db: float, release_ms: float, lookahead_ms: float):
    """The true-peak ``limiter`` effect and its values (clipped into its ranges)."""
    from ..effects import create

    lim = create("limiter", sr, true_peak=True, lookahead_ms=lookahead_ms)
    return lim, {"ceiling_db": float(np.clip(ceiling_db, -24.0, 0.0)),
                 "release_ms": float(np.clip(release_ms, 1.0, 1000.0))}


def _limit(audio: np.ndarray, sr: float, gain_db: float, ceiling_db: float, release_ms: float,
           lookahead_ms: float) -> np.ndarray:
    from ..render import render_effect

    lim, values = _limiter(sr, ceiling_db, release_ms, lookahead_ms)
    return render_effect(lim, audio * np.float32(10.0 ** (gain_db / 20.0)), values)


#: Input samples per limiter call of :func:`_limit_and_measure` (pedalboard's chunked stream
#: equals its one-call render bit for bit: tests).
LIMITER_STREAM_CHUNK = 1 << 17
#: Output samples per true-peak segment of :func:`_limit_and_measure`.
TRUE_PEAK_SEGMENT = 1 << 19


def _limit_and_measure(audio: np.ndarray, sr: float, gain_db: float, ceiling_db: float, release_ms: float,
                       lookahead_ms: float) -> tuple[np.ndarray, np.ndarray | None, float]:
    """``(y, z, tp)``: :func:`_limit`'s output ``y`` (the same samples), its :func:`block_energies`
    ``z`` and its :func:`fast_true_peak_dbtp` ``tp``, measured while it renders.

    A render thread feeds the limiter :data:`LIMITER_STREAM_CHUNK` samples at a time and writes its
    output into ``y``; this thread K-weights each part of ``y`` as it arrives
    (:class:`KWeightedEnergy`, the same chunks, so ``z`` is identical) and takes the true peak of
    each :data:`TRUE_PEAK_SEGMENT` once its context has arrived (``fast_true_peak_dbtp(valid=…)``).
    pedalboard releases the GIL while it renders, so the measurements (about 40 % of the work:
    0.6 s of 1.6 s on 180 s of stereo) overlap the render instead of following it."""
    import queue
    import threading

    from ..effects.base import make_renderer
    from ..render import stream_aligned

    a = np.ascontiguousarray(audio, dtype=np.float32)
    c, n = a.shape
    g = np.float32(10.0 ** (gain_db / 20.0))
    renderer = make_renderer(*_limiter(sr, ceiling_db, release_ms, lookahead_ms))
    y = np.empty((c, n), np.float32)
    progress: queue.SimpleQueue = queue.SimpleQueue()
    chunk = max(1, min(LIMITER_STREAM_CHUNK, n))

    def produce() -> None:
        try:
            feeds = (a[:, s:s + chunk] * g for s in range(0, n, chunk))
            for s0, piece in stream_aligned(renderer, feeds, n, c, chunk):
                y[:, s0:s0 + piece.shape[-1]] = piece
                progress.put(s0 + piece.shape[-1])
        except BaseException as e:  # noqa: BLE001 - raised again in the measuring thread
            progress.put(e)
        finally:
            progress.put(None)

    worker = threading.Thread(target=produce, name="afx-limiter", daemon=True)
    worker.start()
    energy = KWeightedEnergy(sr, c, n)
    ctx, tp, tp_done, avail, error = true_peak_context(sr), float("-inf"), 0, 0, None

    def true_peaks(available: int) -> None:
        nonlocal tp, tp_done
        while tp_done < n:
            s1 = min(tp_done + TRUE_PEAK_SEGMENT, n)
            if available < min(s1 + ctx, n):
                return
            s0 = max(tp_done - ctx, 0)
            tp = max(tp, fast_true_peak_dbtp(y[:, s0:min(s1 + ctx, n)], sr, valid=(tp_done - s0, s1 - s0)))
            tp_done = s1

    try:
        done = False
        while not done:
            items = [progress.get()]
            while True:   # everything already queued: measure up to the latest
                try:
                    items.append(progress.get_nowait())
                except queue.Empty:
                    break
            for it in items:
                if it is None:
                    done = True
                elif isinstance(it, BaseException):
                    error = it
                else:
                    avail = max(avail, it)
            if error is not None:
                continue   # drain until the worker ends
            energy.feed(y, avail)
            true_peaks(avail)
    finally:
        worker.join()
    if error is not None:
        raise error
    return y, energy.blocks(), tp


@dataclass
class _Limited:
    """Outcome of :func:`_search_limited`: the output (limiter render times the trim) and its
    figures; ``gain_db`` and ``limiter_ceiling_db`` already include the trim."""

    audio: np.ndarray
    gain_db: float
    lufs: float
    true_peak_dbtp: float
    limiter_ceiling_db: float
    reached: bool
    search: "GainSearch"
    renders: int


def _search_limited(x: np.ndarray, sr: float, target: float, ceiling_check: float, lim_ceiling: float,
                    start_db: float, slope: float, max_evals: int, release_ms: float, lookahead_ms: float,
                    max_limiting_db: float, l_in: float, aim_lu: float = SEARCH_AIM_LU,
                    accept_lu: float = SEARCH_ACCEPT_LU) -> _Limited:
    """The limiter's input gain for ``x`` (limiter ceiling ``lim_ceiling``) and the trim after it.

    pedalboard's limiter is homogeneous (tests: rendering ``g − δ`` dB into a ceiling ``c − δ``
    equals the ``(g, c)`` render times ``−δ`` dB to float32 round-off), so a render followed by a
    plain gain ``−t`` dB is the render at gain ``g − t`` and ceiling ``c − t``: the trim is exact and
    free (its loudness from the block energies, its true peak the render's minus ``t``). A render at
    gain ``g`` with loudness ``L`` and true peak ``P`` can therefore reach at most
    ``A(g) = L − P + ceiling`` (trimmed until the true peak sits on the ceiling); the search
    (:func:`~afxcli.tasks.loudness_search.search_gain`) looks for ``target ≤ A(g) ≤ target + aim +
    accept`` (a little more limiting than the least possible, at most ``aim + accept`` dB) and the
    trim ``t = L − target`` then lands on the target exactly with the true peak under the ceiling.
    When no gain gets there (saturation, too much limiting, renders run out), the render with the
    largest ``A`` is trimmed onto the ceiling (the loudness then misses)."""
    from .loudness_search import search_gain

    renders = 0
    seen: dict[float, tuple] = {}   # gain → (reach, z, level, tp)
    kept: dict = {}                 # the only render kept: the one the choice below would take so far

    def better(g: float, than: float) -> bool:
        """The choice's order: renders that reach the target before those that do not; among them
        the least reach (least limiting), else the largest reach (the earlier render on ties)."""
        a, b = seen[g][0], seen[than][0]
        if (a >= target) != (b >= target):
            return a >= target
        return a < b if a >= target else a > b

    def measure(g: float) -> float:
        nonlocal renders
        y, z, tp = _limit_and_measure(x, sr, g, lim_ceiling, release_ms, lookahead_ms)
        renders += 1
        level = gated_lufs(z)
        reach = level - tp + ceiling_check
        seen[g] = (reach, z, level, tp)
        if not kept or better(g, kept["g"]):   # one whole-length render alive between evaluations
            kept.clear()
            kept.update(g=g, y=y)
        return reach

    def stop(g: float, reach: float) -> bool:
        return g - (seen[g][2] - l_in) > max_limiting_db

    res = search_gain(measure, target + aim_lu, accept_lu, start_db, slope, max_evals, stop=stop)
    g, y = kept["g"], kept.pop("y")
    reach, z, level, tp = seen[g]
    fits = reach >= target
    trim = level - target if fits else tp - ceiling_check       # dB taken off after the limiter
    trim = max(trim, lim_ceiling)                               # the limiter's ceiling stays ≤ 0 dBFS
    y *= np.float32(10.0 ** (-trim / 20.0))                     # in place: the render is ours
    return _Limited(y, g - trim, gated_lufs(z, -trim), tp - trim, lim_ceiling - trim, fits, res, renders)


def match_loudness(audio: np.ndarray, sample_rate: float, target_lufs: float,
                   ceiling_dbtp: float = DEFAULT_CEILING_DBTP, tolerance_lu: float = 0.01,
                   max_rounds: int = 6, release_ms: float = 100.0, lookahead_ms: float = 5.0,
                   max_limiting_db: float = DEFAULT_MAX_LIMITING_DB,
                   input_lufs: float | None = None, use_proxy: bool = True) -> LoudnessResult:
    """Gain + true-peak limiter so that the integrated loudness is ``target_lufs`` (± ``tolerance_lu``)
    and the true peak is ≤ ``ceiling_dbtp``. ``audio`` ``(channels, samples)`` at ``sample_rate``.

    Gain alone is used when it already keeps the true peak under the ceiling (exact, no limiter).
    Otherwise the limiter's input gain is searched (:func:`_search_limited`; at most ``max_rounds``
    whole-file limiter renders, counted in the result's ``rounds``) and the render is trimmed onto
    the target; ``gain_db`` and ``limiter_ceiling_db`` of the result include the trim, so the chain
    (gain → limiter at that ceiling) renders the same output. Raises AfxError for silent audio or
    audio shorter than one 400 ms loudness block.
    """
    lufs, true_peak_dbtp = fast_lufs, fast_true_peak_dbtp
    check_target(target_lufs, ceiling_dbtp)
    x = np.ascontiguousarray(audio, dtype=np.float32)
    sample_peak_db = 20.0 * math.log10(max(float(np.max(np.abs(x))), 1e-30))
    guard = TRUE_PEAK_GUARD_DB
    ceiling_check = ceiling_dbtp - guard
    lim_ceiling = ceiling_dbtp - LIMITER_MARGIN_DB
    long_file = use_proxy and x.shape[1] > PROXY_MIN_SECONDS * sample_rate
    excerpts = l_proxy = proxy = None
    if long_file:  # evenly spread excerpts for the proxy search (below)
        w = int(PROXY_CHUNK_SECONDS * sample_rate)
        starts = np.linspace(0, x.shape[1] - w, PROXY_CHUNKS).astype(int)
        excerpts = np.concatenate([x[:, s:s + w] for s in starts], axis=1)
        l_proxy = lufs(excerpts, sample_rate)

    def proxy_search() -> "_Limited | None":
        # excerpts that reach the target by plain gain under the ceiling (the file's peaks lie
        # elsewhere) say nothing about the limiter: no proxy then (the whole file searches alone)
        if l_proxy - true_peak_dbtp(excerpts, sample_rate) + ceiling_check >= target_lufs:
            return None
        return _search_limited(excerpts, sample_rate, target_lufs, ceiling_check, lim_ceiling,
                               target_lufs - l_proxy, 1.0, PROXY_MAX_EVALS, release_ms, lookahead_ms,
                               max_limiting_db, l_proxy, aim_lu=SEARCH_AIM_LU, accept_lu=PROXY_ACCEPT_LU)

    z_in = None
    proxy_done = False
    if input_lufs is None:
        if (long_file and math.isfinite(l_proxy)
                and sample_peak_db + (target_lufs - l_proxy) > ceiling_check + PROXY_SPECULATE_DB):
            # Clearly a limiting case: the proxy search (which does not need the whole file's
            # loudness) runs while a side thread K-weights the whole file. Its result is the same;
            # should the whole file turn out not to need the limiter after all, it is unused.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="afx-loudness") as side:
                energies = side.submit(block_energies, x, sample_rate)
                proxy, proxy_done = proxy_search(), True
                z_in = energies.result()
        else:
            z_in = block_energies(x, sample_rate)
    l_in = gated_lufs(z_in) if input_lufs is None else float(input_lufs)
    if math.isnan(l_in):
        raise AfxError("audio too short to measure loudness (needs at least 0.4 s)")
    if not math.isfinite(l_in):
        raise AfxError("audio is silent: no loudness to match")
    notes: list[str] = []
    gain = target_lufs - l_in
    # Fast exact path: plain gain already meets both constraints (the true peak is ≥ the sample peak).
    # A gain scales the interpolated signal and the block energies: the output's true peak and
    # loudness are the input's plus the gain, up to float32 rounding of the scaled samples
    # (~1e-6 dB; TRUE_PEAK_GUARD_DB covers it), so neither is measured again.
    tp_in = true_peak_dbtp(x, sample_rate) if sample_peak_db + gain <= ceiling_check else math.inf
    if tp_in + gain <= ceiling_check:
        y = x * np.float32(10.0 ** (gain / 20.0))
        l_out = gated_lufs(z_in, gain) if z_in is not None else lufs(y, sample_rate)
        tp = tp_in + gain
        return LoudnessResult(y, l_in, target_lufs, l_out, tp, ceiling_dbtp, gain, ceiling_dbtp, 0.0, 1,
                              abs(l_out - target_lufs) <= tolerance_lu, notes)
    start, slope, evals = gain, 1.0, max_rounds
    if long_file and math.isfinite(l_proxy):
        # Long file: the same search on evenly spread excerpts first (a fraction of the work per
        # evaluation) gives the whole-file search its start and slope
        if not proxy_done:
            proxy, proxy_done = proxy_search(), True
    if proxy is not None and not proxy.search.flat:
        # its gain into the limiter: where its search landed (the point nearest the aim) when it
        # reached, else the render it kept
        untrimmed = (proxy.search.best[0] if proxy.search.reached else
                     proxy.gain_db + (lim_ceiling - proxy.limiter_ceiling_db))
        start, slope = untrimmed + (l_proxy - l_in), PROXY_SLOPE_FACTOR * proxy.search.slope
        if not proxy.reached:  # the excerpts could not get there: render their best once
            evals = 1
    r = _search_limited(x, sample_rate, target_lufs, ceiling_check, lim_ceiling, start, slope, evals,
                        release_ms, lookahead_ms, max_limiting_db, l_in)
    y, gain, l_out, tp, lim_ceiling, rounds = r.audio, r.gain_db, r.lufs, r.true_peak_dbtp, r.limiter_ceiling_db, r.renders
    limiting = gain - (l_out - l_in)
    reached = abs(l_out - target_lufs) <= tolerance_lu
    saturated = r.search.saturated or (proxy is not None and proxy.search.saturated and not proxy.reached)
    stopped = r.search.stopped or (proxy is not None and proxy.search.stopped and not proxy.reached)
    if not reached and saturated:
        notes.append(f"target {target_lufs:.1f} LUFS not reached ({l_out:.2f} LUFS): the limiter saturates "
                     f"(about {l_out:.2f} LUFS is the loudest it gives under a {ceiling_dbtp:.1f} dBTP "
                     "ceiling; more gain makes it quieter)")
    elif not reached:
        notes.append(f"target {target_lufs:.1f} LUFS not reached ({l_out:.2f} LUFS): it would need more "
                     f"than {max_limiting_db:.0f} dB of limiting at a {ceiling_dbtp:.1f} dBTP ceiling"
                     if stopped or limiting > max_limiting_db else
                     f"target {target_lufs:.1f} LUFS not reached ({l_out:.2f} LUFS) in {rounds} limiter renders")
    elif limiting > max_limiting_db:
        notes.append(f"target reached with {limiting:.1f} dB of limiting (excessive; consider a lower target)")
    if lim_ceiling < -24.0:
        notes.append(f"the limiter's ceiling {lim_ceiling:.1f} dB is under the limiter effect's -24 dB: "
                     "the trace does not reproduce it exactly")
    return LoudnessResult(np.ascontiguousarray(y, dtype=np.float32), l_in, target_lufs, l_out, tp,
                          ceiling_dbtp, gain, lim_ceiling, limiting, rounds, reached, notes)
