"""Small exact filter designs and IIR filtering in NumPy, so that ``afx master`` needs no
``scipy.signal`` (whose import alone costs ~1–1.5 s).

- :func:`rbj_low_shelf`, :func:`rbj_high_shelf`, :func:`rbj_peak`, :func:`rbj_high_pass`, :func:`rbj_low_pass`: second-order sections from
  R. Bristow-Johnson's *Audio EQ Cookbook* formulas (bilinear transform with the cutoff prewarped).
  The BS.1770-4 K-weighting as pyloudnorm designs it at any rate (:func:`k_weighting_sos`: high
  shelf +4 dB at 1500 Hz, Q 1/√2; high pass 38 Hz, Q 0.5) and a 2nd-order Butterworth lowpass
  (``scipy.signal.butter(2, ·)`` is the cookbook lowpass with Q = 1/√2) are instances; tests
  compare the coefficients with pyloudnorm's and scipy's.
- :class:`BlockIIR`: a linear-recurrence filter ``y[n] = Σ b_i x[n−i] − Σ a_j y[n−j]`` evaluated
  exactly (float64 round-off only, no truncation) with matrix products over blocks of ``L``
  samples: each block's output is ``T·x_k + F_x·x̄_k + F_y·ȳ_k`` (``T`` the ``L×L`` Toeplitz
  matrix of the impulse response, ``F_x``/``F_y`` the responses to the previous ``N`` inputs and
  outputs), and the carried outputs ``ȳ`` obey the ``N``-dimensional recurrence
  ``s_k = c_k + P·s_{k−1}``, solved for all blocks at once by a doubling prefix scan
  (``s ← s + P^d·s[−d]`` for ``d = 1, 2, 4, …``). Equal to ``scipy.signal.sosfilt`` to ~1e-10 of
  the peak at 44.1/48 kHz and ~4e-9 at 192 kHz (float64 round-off amplified by the K-weighting
  high pass's double pole near z = 1; tests): LUFS within 1e-7 LU.
- :func:`sosfiltfilt_odd`: ``scipy.signal.sosfiltfilt`` (odd extension, steady-state initial
  conditions, forward then backward) for one section on short rows (parameter traces).
- :func:`juce_sections_f32`: the float32 coefficients pedalboard's ``PeakFilter`` /
  ``LowShelfFilter`` / ``HighShelfFilter`` compute (JUCE's cookbook arithmetic in float32), in
  NumPy: the same formulas as the numba replica :func:`afxcli.dsp.biquad.juce_coefficients_f32`
  (tests: equal to ≤ 2 float32 ulps) without importing numba or torch.
- :func:`kaiser_lowpass`: ``scipy.signal.firwin(n, cutoff, window=("kaiser", beta))`` (windowed
  sinc, unit gain at DC).
"""
from __future__ import annotations

import functools
import math

import numpy as np


# ----- designs ------------------------------------------------------------------------------------
def _normalized(b: list[float], a: list[float]) -> np.ndarray:
    """One second-order section ``[b0, b1, b2, 1, a1, a2]`` (divided by ``a0``)."""
    a0 = a[0]
    return np.array([b[0] / a0, b[1] / a0, b[2] / a0, 1.0, a[1] / a0, a[2] / a0])


def rbj_high_shelf(sample_rate: float, f0_hz: float, gain_db: float, q: float) -> np.ndarray:
    """Cookbook high shelf: section ``(6,)``."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * f0_hz / sample_rate
    c, alpha = math.cos(w0), math.sin(w0) / (2.0 * q)
    sa = 2.0 * math.sqrt(amp) * alpha
    b = [amp * ((amp + 1) + (amp - 1) * c + sa), -2.0 * amp * ((amp - 1) + (amp + 1) * c),
         amp * ((amp + 1) + (amp - 1) * c - sa)]
    a = [(amp + 1) - (amp - 1) * c + sa, 2.0 * ((amp - 1) - (amp + 1) * c), (amp + 1) - (amp - 1) * c - sa]
    return _normalized(b, a)


def rbj_low_shelf(sample_rate: float, f0_hz: float, gain_db: float, q: float) -> np.ndarray:
    """Cookbook low shelf: section ``(6,)``."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * f0_hz / sample_rate
    c, alpha = math.cos(w0), math.sin(w0) / (2.0 * q)
    sa = 2.0 * math.sqrt(amp) * alpha
    b = [amp * ((amp + 1) - (amp - 1) * c + sa), 2.0 * amp * ((amp - 1) - (amp + 1) * c),
         amp * ((amp + 1) - (amp - 1) * c - sa)]
    a = [(amp + 1) + (amp - 1) * c + sa, -2.0 * ((amp - 1) + (amp + 1) * c), (amp + 1) + (amp - 1) * c - sa]
    return _normalized(b, a)


def rbj_peak(sample_rate: float, f0_hz: float, gain_db: float, q: float) -> np.ndarray:
    """Cookbook peaking EQ: section ``(6,)`` (what pedalboard's ``PeakFilter`` runs, JUCE)."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * f0_hz / sample_rate
    c, alpha = math.cos(w0), math.sin(w0) / (2.0 * q)
    return _normalized([1 + alpha * amp, -2 * c, 1 - alpha * amp], [1 + alpha / amp, -2 * c, 1 - alpha / amp])


def sos_response(sos: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Complex response of sections ``(n, 6)`` ``[b0, b1, b2, a0, a1, a2]`` (cascaded) at ``z`` ``(m,)``
    = ``e^{−jω}`` (``Π_k (b0 + b1 z + b2 z²) / (a0 + a1 z + a2 z²)``) → ``(m,)`` complex128; a pole
    on a point of ``z`` gives a non-finite value there."""
    h = np.ones_like(z, dtype=np.complex128)
    with np.errstate(divide="ignore", invalid="ignore"):
        for b0, b1, b2, a0, a1, a2 in np.atleast_2d(np.asarray(sos, dtype=np.float64)):
            h *= (b0 + z * (b1 + z * b2)) / (a0 + z * (a1 + z * a2))
    return h


def sos_response_db(sos: np.ndarray, sample_rate: float, freqs_hz: np.ndarray) -> np.ndarray:
    """Magnitude response in dB of sections ``(n, 6)`` (cascaded) at ``freqs_hz`` ``(m,)`` → ``(m,)``."""
    z = np.exp(-1j * 2.0 * math.pi * np.asarray(freqs_hz, dtype=np.float64) / sample_rate)
    return 20.0 * np.log10(np.maximum(np.abs(sos_response(sos, z)), 1e-12))


def rbj_high_pass(sample_rate: float, f0_hz: float, q: float) -> np.ndarray:
    """Cookbook high pass: section ``(6,)``."""
    w0 = 2.0 * math.pi * f0_hz / sample_rate
    c, alpha = math.cos(w0), math.sin(w0) / (2.0 * q)
    return _normalized([(1 + c) / 2, -(1 + c), (1 + c) / 2], [1 + alpha, -2 * c, 1 - alpha])


def rbj_low_pass(sample_rate: float, f0_hz: float, q: float = 1.0 / math.sqrt(2.0)) -> np.ndarray:
    """Cookbook low pass (Q = 1/√2: the 2nd-order Butterworth): section ``(6,)``."""
    w0 = 2.0 * math.pi * f0_hz / sample_rate
    c, alpha = math.cos(w0), math.sin(w0) / (2.0 * q)
    return _normalized([(1 - c) / 2, 1 - c, (1 - c) / 2], [1 + alpha, -2 * c, 1 - alpha])


def k_weighting_sos(sample_rate: float) -> np.ndarray:
    """BS.1770-4 K-weighting as pyloudnorm designs it at ``sample_rate``: ``(2, 6)`` sections
    (pre-filter high shelf, then the RLB high pass)."""
    return np.stack([rbj_high_shelf(sample_rate, 1500.0, 4.0, 1.0 / math.sqrt(2.0)),
                     rbj_high_pass(sample_rate, 38.0, 0.5)])


@functools.lru_cache(maxsize=16)
def k_weighting_power(sample_rate: float, n_fft: int) -> np.ndarray:
    """``|H_K(f)|²`` of :func:`k_weighting_sos` on the ``n_fft``-point rfft bins ``(n_fft // 2 + 1,)``
    (cached: callers must not modify it)."""
    k = np.arange(int(n_fft) // 2 + 1)
    h2 = np.abs(sos_response(k_weighting_sos(sample_rate), np.exp(-2j * math.pi * k / int(n_fft)))) ** 2
    return h2


def juce_sections_f32(settings, sample_rate: float) -> np.ndarray:
    """Sections ``(n, 6)`` float64 ``[b0, b1, b2, 1, a1, a2]`` holding the float32 coefficients that
    pedalboard's ``PeakFilter``/``LowShelfFilter``/``HighShelfFilter`` compute for ``settings``:
    ``(kind, freq_hz, gain_db, q)`` per section, kind ``"peak"``, ``"low_shelf"`` or
    ``"high_shelf"`` (JUCE ``IIRCoefficients`` cookbook formulas, operation by operation in float32,
    as :func:`afxcli.dsp.biquad.juce_coefficients_f32`)."""
    f32 = np.float32
    kinds = np.array([{"peak": 0, "low_shelf": 1, "high_shelf": 2}[k] for k, *_ in settings])
    freq = np.array([s[1] for s in settings], np.float32)
    gain_db = np.array([s[2] for s in settings], np.float32)
    q = np.array([s[3] for s in settings], np.float32)
    sr = f32(sample_rate)
    f = np.maximum(np.minimum(np.maximum(freq, f32(0.01)), sr / f32(2) - f32(100.0)), f32(2.0))
    # powf/sinf/cosf as float64 results rounded to float32 (glibc's are correctly rounded in
    # practice; NumPy's own float32 SIMD versions are not, and differ by an ulp)
    x = (gain_db * f32(0.05)).astype(np.float64)
    gf = np.where(gain_db > f32(-100.0), np.power(10.0, x).astype(np.float32), f32(0.0)).astype(np.float32)
    amp = np.maximum(f32(0.0), np.sqrt(gf))
    w = (f32(2) * f32(math.pi) * f) / sr
    sw, cw = np.sin(w.astype(np.float64)).astype(np.float32), np.cos(w.astype(np.float64)).astype(np.float32)
    # peaks
    alpha = sw / (q * f32(2))
    c2 = f32(-2) * cw
    peak = [f32(1) + alpha * amp, c2, f32(1) - alpha * amp, f32(1) + alpha / amp, c2, f32(1) - alpha / amp]
    # shelves
    am1, ap1 = amp - f32(1), amp + f32(1)
    beta = sw * np.sqrt(amp) / q
    am1c = am1 * cw
    low = [amp * (ap1 - am1c + beta), amp * f32(2) * (am1 - ap1 * cw), amp * (ap1 - am1c - beta),
           ap1 + am1c + beta, f32(-2) * (am1 + ap1 * cw), ap1 + am1c - beta]
    high = [amp * (ap1 + am1c + beta), amp * f32(-2) * (am1 + ap1 * cw), amp * (ap1 + am1c - beta),
            ap1 - am1c + beta, f32(2) * (am1 - ap1 * cw), ap1 - am1c - beta]
    c = np.where(kinds[None] == 0, np.array(peak, np.float32),
                 np.where(kinds[None] == 1, np.array(low, np.float32), np.array(high, np.float32)))
    inv = f32(1) / c[3]
    out = np.ones((len(settings), 6))
    for j, i in ((0, 0), (1, 1), (2, 2), (4, 4), (5, 5)):
        out[:, j] = (c[i] * inv).astype(np.float32)
    return out


def kaiser_lowpass(numtaps: int, cutoff: float, beta: float) -> np.ndarray:
    """Windowed-sinc lowpass ``(numtaps,)``, ``cutoff`` relative to Nyquist, Kaiser window
    ``beta``, scaled to unit gain at DC (what ``scipy.signal.firwin`` returns for these)."""
    m = np.arange(numtaps) - 0.5 * (numtaps - 1)
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, beta)
    return h / h.sum()


# ----- exact block IIR ------------------------------------------------------------------------------
#: Powers of the block transition below this (max |entry|) end the prefix scan (module docstring).
SCAN_FLOOR = 1e-20


class BlockIIR:
    """The filter ``b(z)/a(z)`` (``a[0] = 1`` after normalization) over rows of a signal, in
    blocks of ``block`` samples (module docstring). :meth:`process` takes ``(rows, n)`` with ``n``
    a multiple of ``block`` and a state from the previous call; :meth:`filter` does a whole row set."""

    def __init__(self, b: np.ndarray, a: np.ndarray, block: int = 32) -> None:
        b, a = np.asarray(b, np.float64), np.asarray(a, np.float64)
        b, a = b / a[0], a / a[0]
        n = max(b.size, a.size) - 1
        if block < n:
            raise ValueError("block must be at least the filter order")
        self.order, self.block = n, int(block)
        self.b = np.pad(b, (0, n + 1 - b.size))
        self.a = np.pad(a, (0, n + 1 - a.size))
        L = self.block
        eye_l, eye_n = np.eye(L), np.eye(n)
        self.T = self._run(eye_l, np.zeros((n, L)), np.zeros((n, L)))        # (L, L)
        self.Fx = self._run(np.zeros((L, n)), eye_n, np.zeros((n, n)))       # (L, N)
        self.Fy = self._run(np.zeros((L, n)), np.zeros((n, n)), eye_n)       # (L, N)
        self.P = self.Fy[::-1][:n]                                           # (N, N)

    @classmethod
    def from_sos(cls, sos: np.ndarray, block: int = 32) -> "BlockIIR":
        """The cascade of second-order sections ``sos`` ``(sections, 6)`` as one filter."""
        b, a = np.array([1.0]), np.array([1.0])
        for s in np.atleast_2d(sos):
            b, a = np.convolve(b, s[:3]), np.convolve(a, s[3:])
        return cls(b, a, block)

    def _run(self, x: np.ndarray, xp: np.ndarray, yp: np.ndarray) -> np.ndarray:
        """The recursion on ``x`` ``(L, m)`` columns with past inputs ``xp`` and outputs ``yp``
        ``(N, m)`` (row ``i`` = sample ``−1 − i``) → ``(L, m)``."""
        n = self.order
        xs = np.concatenate([xp[::-1], x])                                   # sample t at row t + N
        ys = np.concatenate([yp[::-1], np.zeros_like(x)])
        for t in range(x.shape[0]):
            r = t + n
            ys[r] = self.b @ xs[r - np.arange(n + 1)] - self.a[1:] @ ys[r - 1 - np.arange(n)]
        return ys[n:]

    def zero_state(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """``(past inputs, past outputs)``, each ``(rows, N)``, of a filter at rest."""
        return np.zeros((rows, self.order)), np.zeros((rows, self.order))

    def process(self, x: np.ndarray, state: tuple[np.ndarray, np.ndarray]):
        """Filter ``x`` ``(rows, n)`` (``n`` a multiple of the block) from ``state``; returns
        ``(y (rows, n) float64, state after x)``."""
        L, n = self.block, self.order
        rows, total = x.shape
        k = total // L
        if k * L != total:
            raise ValueError("internal: BlockIIR.process needs whole blocks")
        xb = np.asarray(x, np.float64).reshape(rows, k, L)
        xprev, yprev = state
        xp = np.concatenate([xprev[:, None, :], xb[:, :-1, L - n:][..., ::-1]], axis=1)   # (rows, k, N)
        z = xb @ self.T.T + xp @ self.Fx.T                                   # zero-output-state response
        s = z[..., ::-1][..., :n].copy()                                     # c_k: (rows, k, N)
        s[:, 0] += yprev @ self.P.T
        q, d = self.P, 1
        # doubling prefix scan of s_k = c_k + P s_{k-1}; once P^d is below 1e-20 (the filter's
        # memory has decayed: P is stable) the remaining terms are far under float64 round-off
        # and are skipped, which also keeps the powers out of subnormal numbers (slow arithmetic)
        while d < k and np.max(np.abs(q)) > SCAN_FLOOR:
            s[:, d:] += s[:, :-d] @ q.T
            q, d = q @ q, 2 * d
        yp = np.concatenate([yprev[:, None, :], s[:, :-1]], axis=1)
        z += yp @ self.Fy.T
        return z.reshape(rows, total), (xb[:, -1, L - n:][:, ::-1].copy(), s[:, -1].copy())

    def filter(self, x: np.ndarray) -> np.ndarray:
        """The whole signal ``x`` ``(rows, n)`` from rest → ``(rows, n)`` float64."""
        x = np.atleast_2d(np.asarray(x, np.float64))
        n = x.shape[1]
        pad = -n % self.block
        y, _ = self.process(np.pad(x, ((0, 0), (0, pad))) if pad else x, self.zero_state(x.shape[0]))
        return y[:, :n]


# ----- zero-phase filtering of short rows -----------------------------------------------------------
def _df2t(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> np.ndarray:
    """One section in transposed direct form II over rows ``x`` ``(rows, n)`` from state ``zi``
    ``(rows, 2)`` (the arithmetic of ``scipy.signal.sosfilt``)."""
    b0, b1, b2, _, a1, a2 = sos
    y = np.empty_like(x)
    z0, z1 = zi[:, 0].copy(), zi[:, 1].copy()
    for t in range(x.shape[1]):
        xt = x[:, t]
        yt = b0 * xt + z0
        z0 = b1 * xt - a1 * yt + z1
        z1 = b2 * xt - a2 * yt
        y[:, t] = yt
    return y


def sosfiltfilt_odd(sos: np.ndarray, x: np.ndarray, padlen: int) -> np.ndarray:
    """``scipy.signal.sosfiltfilt(sos, x, padlen=padlen)`` for one section ``sos`` ``(6,)`` on rows
    ``x`` ``(rows, n)`` (``padlen < n``): odd extension by ``padlen`` at both ends, forward pass
    from the step-response steady state times the first sample, backward pass likewise."""
    x = np.atleast_2d(np.asarray(x, np.float64))
    b0, b1, b2, _, a1, a2 = sos
    y_ss = (b0 + b1 + b2) / (1.0 + a1 + a2)
    zi = np.array([b1 + b2 - (a1 + a2) * y_ss, b2 - a2 * y_ss])          # steady state for input 1
    p = int(padlen)
    if p > 0:
        ext = np.concatenate([2 * x[:, :1] - x[:, p:0:-1], x, 2 * x[:, -1:] - x[:, -2:-(p + 2):-1]], axis=1)
    else:
        ext = x
    y = _df2t(sos, ext, zi[None] * ext[:, :1])
    y = _df2t(sos, y[:, ::-1], zi[None] * y[:, -1:])[:, ::-1]
    return y[:, p:y.shape[1] - p] if p > 0 else y
