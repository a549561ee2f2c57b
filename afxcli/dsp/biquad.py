"""Second-order IIR sections (biquads): JUCE/RBJ coefficients, an exact time-varying filter with an
exact adjoint backward, and frequency sampling for training.

Coefficients
    Differentiable torch versions of JUCE ``dsp::IIR::ArrayCoefficients`` (``makePeakFilter``,
    ``makeLowShelf``, ``makeHighShelf``, ``makeLowPass``, ``makeHighPass``), which implement the
    formulas of R. Bristow-Johnson's "Cookbook formulae for audio EQ biquad filter coefficients"
    (W3C Audio EQ Cookbook). pedalboard's ``PeakFilter`` / ``LowShelfFilter`` / ``HighShelfFilter``
    call exactly these with ``gainFactor = 10**(gain_db/20)`` and the cutoff clamped to
    ``[0.01, sr/2 - 100]`` Hz (pedalboard ``plugins/IIRFilters.h``); they compute and filter in
    float32, so a float64 twin agrees to float32 rounding, not bit for bit.
    Every function returns a0-normalized coefficients ``(b0, b1, b2, a1, a2)`` as a tensor
    ``(..., 5)`` broadcast over its arguments.

Filtering
    :func:`biquad` runs the transposed direct form II recursion of JUCE ``dsp::IIR::Filter``::

        y[n]  = b0 x[n] + s1
        s1    = b1 x[n] - a1 y[n] + s2
        s2    = b2 x[n] - a2 y[n]

    with coefficients held per block (the two state variables persist across coefficient changes,
    as in JUCE when a parameter changes between pedalboard ``reset=False`` chunks). Forward and
    backward are numba kernels; the backward is the exact adjoint (reverse-time recursion), so
    gradients reach both ``x`` and the coefficients.

Frequency sampling (DeepAFx-ST, Steinmetz et al. 2022, Sec. 3.2)
    :func:`freqz` samples ``H(e^{jw}) = (b0 + b1 z^-1 + b2 z^-2) / (1 + a1 z^-1 + a2 z^-2)`` on an
    rFFT grid; :func:`fs_filter` multiplies the zero-padded spectrum of ``x`` by the product of the
    sections' responses. With ``n_fft >= 2 * samples`` the only error is the filter's impulse
    response tail beyond ``n_fft - samples`` samples (time aliasing).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

__all__ = [
    "db_to_gain", "make_peak_filter", "make_low_shelf", "make_high_shelf", "make_low_pass",
    "make_high_pass", "make_allpass", "biquad", "biquad_cascade", "freqz", "fs_filter",
    "fs_n_fft", "BiquadFunction", "juce_coefficients_f32", "SECTION_KINDS",
]


# ------------------------------------------------------------------------------------------------
# coefficients
# ------------------------------------------------------------------------------------------------
def _t(v, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    dtype = like.dtype if like is not None else torch.float64
    device = like.device if like is not None else None
    return torch.as_tensor(v, dtype=dtype, device=device)


def _broadcast(*args):
    like = next((a for a in args if isinstance(a, torch.Tensor)), None)
    ts = [_t(a, like) for a in args]
    dtype = torch.promote_types(ts[0].dtype, ts[0].dtype)
    for t in ts[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.broadcast_tensors(*[t.to(dtype) for t in ts])


def _normalize(b0, b1, b2, a0, a1, a2) -> torch.Tensor:
    """Divide by ``a0`` (JUCE ``Coefficients`` constructor) and stack to ``(..., 5)``."""
    inv = 1.0 / a0
    return torch.stack([b0 * inv, b1 * inv, b2 * inv, a1 * inv, a2 * inv], dim=-1)


def _omega(sample_rate: float, freq_hz: torch.Tensor) -> torch.Tensor:
    """``w0 = 2 pi f / sr`` with JUCE's ``jmax(f, 2)`` and pedalboard's clamp to ``sr/2 - 100``.

    Inside afx's parameter ranges (20 Hz ... 0.45 sr) neither clamp is active."""
    hi = max(2.0, sample_rate / 2.0 - 100.0)
    f = torch.clamp(freq_hz, 2.0, hi)
    return (2.0 * math.pi / float(sample_rate)) * f


def db_to_gain(gain_db):
    """``10 ** (gain_db / 20)`` (JUCE ``Decibels::decibelsToGain``; afx ranges never reach its -100 dB floor)."""
    return torch.pow(10.0, _t(gain_db) / 20.0)


def make_peak_filter(sample_rate: float, freq_hz, q, gain_factor) -> torch.Tensor:
    """RBJ peaking EQ (JUCE ``makePeakFilter``): ``A = sqrt(gainFactor)``, ``alpha = sin(w0)/(2Q)``,
    ``b = [1 + alpha A, -2 cos w0, 1 - alpha A]``, ``a = [1 + alpha/A, -2 cos w0, 1 - alpha/A]``.

    Args: ``freq_hz``, ``q``, ``gain_factor`` (linear) broadcastable tensors of shape ``(...)``.
    Returns ``(..., 5)``."""
    freq_hz, q, gain_factor = _broadcast(freq_hz, q, gain_factor)
    A = torch.sqrt(gain_factor)
    w0 = _omega(sample_rate, freq_hz)
    alpha = torch.sin(w0) / (2.0 * q)
    c2 = -2.0 * torch.cos(w0)
    one = torch.ones_like(A)
    return _normalize(one + alpha * A, c2, one - alpha * A, one + alpha / A, c2, one - alpha / A)


def make_low_shelf(sample_rate: float, freq_hz, q, gain_factor) -> torch.Tensor:
    """RBJ low shelf (JUCE ``makeLowShelf``), ``A = sqrt(gainFactor)``, ``beta = sin(w0) sqrt(A) / Q``:
    ``b = A [(A+1) - (A-1)cos + beta, 2((A-1) - (A+1)cos), (A+1) - (A-1)cos - beta]``,
    ``a = [(A+1) + (A-1)cos + beta, -2((A-1) + (A+1)cos), (A+1) + (A-1)cos - beta]``.
    Returns ``(..., 5)``."""
    freq_hz, q, gain_factor = _broadcast(freq_hz, q, gain_factor)
    A = torch.sqrt(gain_factor)
    w0 = _omega(sample_rate, freq_hz)
    cw = torch.cos(w0)
    beta = torch.sin(w0) * torch.sqrt(A) / q
    am1, ap1 = A - 1.0, A + 1.0
    am1c = am1 * cw
    return _normalize(A * (ap1 - am1c + beta), A * 2.0 * (am1 - ap1 * cw), A * (ap1 - am1c - beta),
                      ap1 + am1c + beta, -2.0 * (am1 + ap1 * cw), ap1 + am1c - beta)


def make_high_shelf(sample_rate: float, freq_hz, q, gain_factor) -> torch.Tensor:
    """RBJ high shelf (JUCE ``makeHighShelf``), same ``A``, ``beta`` as :func:`make_low_shelf`:
    ``b = A [(A+1) + (A-1)cos + beta, -2((A-1) + (A+1)cos), (A+1) + (A-1)cos - beta]``,
    ``a = [(A+1) - (A-1)cos + beta, 2((A-1) - (A+1)cos), (A+1) - (A-1)cos - beta]``.
    Returns ``(..., 5)``."""
    freq_hz, q, gain_factor = _broadcast(freq_hz, q, gain_factor)
    A = torch.sqrt(gain_factor)
    w0 = _omega(sample_rate, freq_hz)
    cw = torch.cos(w0)
    beta = torch.sin(w0) * torch.sqrt(A) / q
    am1, ap1 = A - 1.0, A + 1.0
    am1c = am1 * cw
    return _normalize(A * (ap1 + am1c + beta), A * -2.0 * (am1 + ap1 * cw), A * (ap1 + am1c - beta),
                      ap1 - am1c + beta, 2.0 * (am1 - ap1 * cw), ap1 - am1c - beta)


def make_low_pass(sample_rate: float, freq_hz, q=1.0 / math.sqrt(2.0)) -> torch.Tensor:
    """2nd-order low-pass by the bilinear transform with prewarping (JUCE ``makeLowPass``):
    ``n = 1/tan(pi f/sr)``, ``c1 = 1/(1 + n/Q + n^2)``, ``b = c1 [1, 2, 1]``,
    ``a = [1, 2 c1 (1 - n^2), c1 (1 - n/Q + n^2)]``. ``q = 1/sqrt(2)`` is Butterworth.
    Returns ``(..., 5)``."""
    freq_hz, q = _broadcast(freq_hz, q)
    n = 1.0 / torch.tan(math.pi * freq_hz / float(sample_rate))
    n2 = n * n
    c1 = 1.0 / (1.0 + n / q + n2)
    return torch.stack([c1, 2.0 * c1, c1, 2.0 * c1 * (1.0 - n2), c1 * (1.0 - n / q + n2)], dim=-1)


def make_high_pass(sample_rate: float, freq_hz, q=1.0 / math.sqrt(2.0)) -> torch.Tensor:
    """2nd-order high-pass (JUCE ``makeHighPass``): ``n = tan(pi f/sr)``, ``c1 = 1/(1 + n/Q + n^2)``,
    ``b = c1 [1, -2, 1]``, ``a = [1, 2 c1 (n^2 - 1), c1 (1 - n/Q + n^2)]``. Returns ``(..., 5)``."""
    freq_hz, q = _broadcast(freq_hz, q)
    n = torch.tan(math.pi * freq_hz / float(sample_rate))
    n2 = n * n
    c1 = 1.0 / (1.0 + n / q + n2)
    return torch.stack([c1, -2.0 * c1, c1, 2.0 * c1 * (n2 - 1.0), c1 * (1.0 - n / q + n2)], dim=-1)


def make_allpass(sample_rate: float, freq_hz, q=1.0 / math.sqrt(2.0)) -> torch.Tensor:
    """2nd-order allpass with the poles of :func:`make_low_pass` (numerator = reversed denominator:
    ``b = [a2, a1, 1]``). This is the bilinear transform of ``(s^2 - s/Q + 1)/(s^2 + s/Q + 1)`` with
    the same prewarping, so ``LP^2 + HP^2`` equals it exactly for ``Q = 1/sqrt(2)`` (Linkwitz-Riley).
    Returns ``(..., 5)``."""
    lp = make_low_pass(sample_rate, freq_hz, q)
    a1, a2 = lp[..., 3], lp[..., 4]
    return torch.stack([a2, a1, torch.ones_like(a1), a1, a2], dim=-1)


# ------------------------------------------------------------------------------------------------
# pedalboard's float32 coefficient arithmetic
# ------------------------------------------------------------------------------------------------
#: Section kinds understood by :func:`juce_coefficients_f32`.
KIND_PEAK, KIND_LOW_SHELF, KIND_HIGH_SHELF = 0, 1, 2
SECTION_KINDS = {"peak": KIND_PEAK, "low_shelf": KIND_LOW_SHELF, "high_shelf": KIND_HIGH_SHELF}


@njit(cache=True)
def _juce_coefficients_f32_kernel(kind, sample_rate, freq_hz, q, gain_db, out):
    """float32 replica of pedalboard ``IIRFilter<float>`` + JUCE ``ArrayCoefficients<float>``,
    operation by operation (libm ``powf``/``sinf``/``cosf``/``sqrtf`` through LLVM intrinsics)."""
    f32 = np.float32
    sr = f32(sample_rate)
    hi = sr / f32(2) - f32(100.0)
    for i in range(freq_hz.shape[0]):
        f = min(max(f32(freq_hz[i]), f32(0.01)), hi)      # clampCutoffFrequency
        f = max(f, f32(2.0))                                # jmax(frequency, 2)
        Q = f32(q[i])
        db = f32(gain_db[i])
        gf = math.pow(f32(10.0), db * f32(0.05)) if db > f32(-100.0) else f32(0.0)  # decibelsToGain
        A = max(f32(0.0), math.sqrt(gf))
        w = (f32(2) * f32(math.pi) * f) / sr
        k = kind[i]
        if k == 0:
            alpha = math.sin(w) / (Q * f32(2))
            c2 = f32(-2) * math.cos(w)
            b0 = f32(1) + alpha * A
            b1 = c2
            b2 = f32(1) - alpha * A
            a0 = f32(1) + alpha / A
            a1 = c2
            a2 = f32(1) - alpha / A
        else:
            am1 = A - f32(1)
            ap1 = A + f32(1)
            cw = math.cos(w)
            beta = math.sin(w) * math.sqrt(A) / Q
            am1c = am1 * cw
            if k == 1:
                b0 = A * (ap1 - am1c + beta)
                b1 = A * f32(2) * (am1 - ap1 * cw)
                b2 = A * (ap1 - am1c - beta)
                a0 = ap1 + am1c + beta
                a1 = f32(-2) * (am1 + ap1 * cw)
                a2 = ap1 + am1c - beta
            else:
                b0 = A * (ap1 + am1c + beta)
                b1 = A * f32(-2) * (am1 + ap1 * cw)
                b2 = A * (ap1 + am1c - beta)
                a0 = ap1 - am1c + beta
                a1 = f32(2) * (am1 - ap1 * cw)
                a2 = ap1 - am1c - beta
        inv = f32(1) / a0
        out[i, 0] = b0 * inv
        out[i, 1] = b1 * inv
        out[i, 2] = b2 * inv
        out[i, 3] = a1 * inv
        out[i, 4] = a2 * inv


def juce_coefficients_f32(kind, sample_rate: float, freq_hz, q, gain_db) -> np.ndarray:
    """The float32 coefficients pedalboard's ``PeakFilter`` / ``LowShelfFilter`` / ``HighShelfFilter``
    compute (not differentiable). ``kind``: int codes (:data:`SECTION_KINDS`) and the three
    parameters as arrays broadcast to one shape ``(...)``. Returns float32 ``(..., 5)``.

    With these coefficients the float32 path of :func:`biquad` reproduces pedalboard's output
    bit for bit (tested); float64 filtering differs from it by pedalboard's float32 round-off,
    which for a low, narrow boost (20 Hz, Q 10, +18 dB) reaches ~2e-3 on full-scale music."""
    kind, freq_hz, q, gain_db = np.broadcast_arrays(np.asarray(kind, np.int64), np.asarray(freq_hz, np.float64),
                                                    np.asarray(q, np.float64), np.asarray(gain_db, np.float64))
    shape = freq_hz.shape
    out = np.empty((int(np.prod(shape)), 5), np.float32)
    _juce_coefficients_f32_kernel(np.ascontiguousarray(kind.reshape(-1)), float(sample_rate),
                                  np.ascontiguousarray(freq_hz.reshape(-1)), np.ascontiguousarray(q.reshape(-1)),
                                  np.ascontiguousarray(gain_db.reshape(-1)), out)
    return out.reshape(*shape, 5)


# JUCE spellings, for readers comparing with dsp::IIR::Coefficients.
makePeakFilter = make_peak_filter
makeLowShelf = make_low_shelf
makeHighShelf = make_high_shelf
makeLowPass = make_low_pass
makeHighPass = make_high_pass


# ------------------------------------------------------------------------------------------------
# exact time-varying filter: numba kernels
# ------------------------------------------------------------------------------------------------
@njit(cache=True)
def _biquad_forward_kernel(x, c, block_size, y, zero):
    """TDF-II biquad. x, y: (B, C, T); c: (B, 5, K), block k covers samples
    [k*block_size, (k+1)*block_size), the last block extends to the end. All arrays and ``zero``
    share one float type (float32 reproduces JUCE ``IIR::Filter<float>`` operation by operation:
    ``out = b0*in + s1; s1 = (b1*in - a1*out) + s2; s2 = b2*in - a2*out``)."""
    B, C, T = x.shape
    K = c.shape[2]
    for b in range(B):
        for ch in range(C):
            s1 = zero
            s2 = zero
            for k in range(K):
                start = k * block_size
                stop = T if k == K - 1 else min(T, start + block_size)
                if start >= T:
                    break
                b0 = c[b, 0, k]
                b1 = c[b, 1, k]
                b2 = c[b, 2, k]
                a1 = c[b, 3, k]
                a2 = c[b, 4, k]
                for t in range(start, stop):
                    xt = x[b, ch, t]
                    yt = b0 * xt + s1
                    s1 = b1 * xt - a1 * yt + s2
                    s2 = b2 * xt - a2 * yt
                    y[b, ch, t] = yt


@njit(cache=True)
def _biquad_backward_kernel(x, y, c, block_size, gy, gx, gc):
    """Exact adjoint of :func:`_biquad_forward_kernel`.

    With l1, l2 the adjoints of the states s1, s2 after sample t (zero after the last sample),
    going backwards in time: g = gy[t] - a1 l1 - a2 l2 (total derivative w.r.t. y[t]);
    gx[t] = b0 g + b1 l1 + b2 l2; db0 += g x, db1 += l1 x, db2 += l2 x, da1 -= l1 y, da2 -= l2 y;
    then (l1, l2) <- (g, l1). gc (B, 5, K) is accumulated (summed over channels and block samples)."""
    B, C, T = x.shape
    K = c.shape[2]
    for b in range(B):
        for ch in range(C):
            l1 = 0.0
            l2 = 0.0
            for k in range(K - 1, -1, -1):
                start = k * block_size
                stop = T if k == K - 1 else min(T, start + block_size)
                if start >= T:
                    continue
                b0 = c[b, 0, k]
                b1 = c[b, 1, k]
                b2 = c[b, 2, k]
                a1 = c[b, 3, k]
                a2 = c[b, 4, k]
                g0 = 0.0
                g1 = 0.0
                g2 = 0.0
                g3 = 0.0
                g4 = 0.0
                for t in range(stop - 1, start - 1, -1):
                    xt = x[b, ch, t]
                    yt = y[b, ch, t]
                    g = gy[b, ch, t] - a1 * l1 - a2 * l2
                    gx[b, ch, t] = b0 * g + b1 * l1 + b2 * l2
                    g0 += g * xt
                    g1 += l1 * xt
                    g2 += l2 * xt
                    g3 -= l1 * yt
                    g4 -= l2 * yt
                    l2 = l1
                    l1 = g
                gc[b, 0, k] += g0
                gc[b, 1, k] += g1
                gc[b, 2, k] += g2
                gc[b, 3, k] += g3
                gc[b, 4, k] += g4


def _np(t: torch.Tensor, dtype: torch.dtype = torch.float64) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", dtype).numpy())


class BiquadFunction(torch.autograd.Function):
    """Autograd wrapper of the numba kernels. ``forward(x (B, C, T), coeffs (B, 5, K), block_size)``.

    The recursion runs in float32 when both ``x`` and ``coeffs`` are float32 (the arithmetic of
    pedalboard/JUCE, which filter in float32: bit-identical output for identical coefficients),
    otherwise in float64. Returns ``x.dtype``. Backward is the exact adjoint of the recursion,
    computed in float64 (first order only)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coeffs: torch.Tensor, block_size: int) -> torch.Tensor:
        work = torch.float32 if (x.dtype == torch.float32 and coeffs.dtype == torch.float32) else torch.float64
        xn = _np(x, work)
        cn = _np(coeffs, work)
        y = np.empty_like(xn)
        zero = np.float32(0.0) if work == torch.float32 else np.float64(0.0)
        _biquad_forward_kernel(xn, cn, int(block_size), y, zero)
        out = torch.from_numpy(y)
        ctx.save_for_backward(x, coeffs, out)
        ctx.block_size = int(block_size)
        return out.to(device=x.device, dtype=x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        x, coeffs, y = ctx.saved_tensors
        xn = _np(x)
        cn = _np(coeffs)
        gy = _np(grad_y)
        gx = np.empty_like(xn)
        gc = np.zeros_like(cn)
        _biquad_backward_kernel(xn, _np(y), cn, ctx.block_size, gy, gx, gc)
        grad_x = torch.from_numpy(gx).to(device=x.device, dtype=x.dtype) if ctx.needs_input_grad[0] else None
        grad_c = torch.from_numpy(gc).to(device=coeffs.device, dtype=coeffs.dtype) if ctx.needs_input_grad[1] else None
        return grad_x, grad_c, None


def biquad(x: torch.Tensor, coeffs: torch.Tensor, block_size: int | None = None) -> torch.Tensor:
    """Filter ``x`` ``(batch, channels, samples)`` with one biquad per batch item (same for all channels).

    ``coeffs``: ``(batch, 5)`` static or ``(batch, 5, blocks)`` held per block of ``block_size``
    samples (``None``: ``ceil(samples / blocks)``, like :func:`afxcli.effects.base.expand_blocks`);
    batch 1 broadcasts. Order ``(b0, b1, b2, a1, a2)``, ``a0 = 1``. Exact recursion, in float32
    when ``x`` and ``coeffs`` are both float32 (as pedalboard), else float64; differentiable w.r.t. ``x`` and ``coeffs``. Returns ``(batch, channels, samples)`` in ``x.dtype``."""
    if x.dim() != 3:
        raise ValueError(f"biquad: x must be (batch, channels, samples), got {tuple(x.shape)}")
    if coeffs.dim() == 2:
        coeffs = coeffs.unsqueeze(-1)
    if coeffs.dim() != 3 or coeffs.shape[1] != 5:
        raise ValueError(f"biquad: coeffs must be (batch, 5[, blocks]), got {tuple(coeffs.shape)}")
    B, _, T = x.shape
    if coeffs.shape[0] != B:
        if coeffs.shape[0] != 1:
            raise ValueError(f"biquad: coeffs batch {coeffs.shape[0]} does not match x batch {B}")
        coeffs = coeffs.expand(B, -1, -1)
    K = coeffs.shape[-1]
    if K == 1:
        block_size = max(T, 1)
    elif block_size is None:
        block_size = max(1, math.ceil(T / K))
    if block_size < 1:
        raise ValueError(f"biquad: block_size must be >= 1, got {block_size}")
    if T == 0:
        return x.clone()
    return BiquadFunction.apply(x, coeffs, int(block_size))


def biquad_cascade(x: torch.Tensor, sections: torch.Tensor, block_size: int | None = None) -> torch.Tensor:
    """Apply sections in order. ``sections``: ``(batch, n_sections, 5)`` or
    ``(batch, n_sections, 5, blocks)``. Returns ``(batch, channels, samples)``."""
    if sections.dim() not in (3, 4) or sections.shape[2] != 5:
        raise ValueError(f"biquad_cascade: sections must be (batch, n, 5[, blocks]), got {tuple(sections.shape)}")
    y = x
    for i in range(sections.shape[1]):
        y = biquad(y, sections[:, i], block_size)
    return y


# ------------------------------------------------------------------------------------------------
# frequency sampling
# ------------------------------------------------------------------------------------------------
def freqz(sections: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Product of the sections' frequency responses on the rFFT grid ``w_k = 2 pi k / n_fft``.

    ``sections``: ``(..., n_sections, 5)`` (or ``(..., 5)`` for one section).
    Returns complex ``(..., n_fft // 2 + 1)`` (complex128 for float64 input)."""
    if sections.shape[-1] != 5:
        raise ValueError(f"freqz: last axis must hold 5 coefficients, got {tuple(sections.shape)}")
    if sections.dim() == 1:
        sections = sections.unsqueeze(0)
    real = sections.dtype if sections.dtype in (torch.float32, torch.float64) else torch.float64
    w = torch.arange(n_fft // 2 + 1, device=sections.device, dtype=torch.float64) * (2.0 * math.pi / n_fft)
    cw, sw, c2w, s2w = (v.to(real) for v in (torch.cos(w), torch.sin(w), torch.cos(2 * w), torch.sin(2 * w)))
    s = sections.to(real).unsqueeze(-1)  # (..., S, 5, 1)
    H = None
    for i in range(s.shape[-3]):  # running product: memory (..., F) per section, not (..., S, F)
        b0, b1, b2, a1, a2 = s[..., i, :, :].unbind(-2)
        num = torch.complex(b0 + b1 * cw + b2 * c2w, -(b1 * sw + b2 * s2w))
        den = torch.complex(1.0 + a1 * cw + a2 * c2w, -(a1 * sw + a2 * s2w))
        h = num / den
        H = h if H is None else H * h
    return H


def fs_n_fft(n_samples: int) -> int:
    """Default FFT size for :func:`fs_filter`: the power of two ``>= 4 * n_samples``, so the
    circularly wrapped impulse-response tail starts ``>= 3 * n_samples`` lags out."""
    return 1 << max(1, int(math.ceil(math.log2(max(2, 4 * n_samples)))))


def fs_filter(x: torch.Tensor, sections: torch.Tensor, n_fft: int | None = None) -> torch.Tensor:
    """Frequency-sampled filtering (DeepAFx-ST): ``irfft(rfft(x, N) * prod_s H_s, N)[:samples]``.

    ``x``: ``(batch, channels, samples)``; ``sections``: ``(batch, n_sections, 5)`` static
    coefficients (batch 1 broadcasts). ``n_fft`` defaults to :func:`fs_n_fft`. Differentiable
    by torch autograd. Returns ``(batch, channels, samples)`` in ``x.dtype``."""
    if sections.dim() == 2:
        sections = sections.unsqueeze(1)
    if sections.dim() != 3:
        raise ValueError(f"fs_filter: sections must be static (batch, n, 5), got {tuple(sections.shape)}")
    T = x.shape[-1]
    N = fs_n_fft(T) if n_fft is None else int(n_fft)
    if N < T:
        raise ValueError(f"fs_filter: n_fft={N} is shorter than the signal ({T} samples)")
    H = freqz(sections, N)  # (batch, F)
    X = torch.fft.rfft(x.to(H.real.dtype), n=N)
    y = torch.fft.irfft(X * H.unsqueeze(1), n=N)[..., :T]
    return y.to(x.dtype)
