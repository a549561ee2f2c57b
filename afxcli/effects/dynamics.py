"""Dynamics effects: compressor (JUCE twin), soft-knee linked compressor, noise gate (JUCE twin)
and brickwall / true-peak limiter (pedalboard ``BrickwallLimiter`` twin).

All torch forms take ``x`` ``(batch, channels, samples)`` and physical parameters ``(batch, n)``
or ``(batch, n, blocks)`` (held per block, like a pedalboard render whose parameters are updated
between ``reset=False`` chunks) and return ``(batch, channels, samples)``. Recursions run in the
numba kernels of :mod:`afxcli.dsp.ballistics` (exact backward); everything else is vectorized torch.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ..errors import AfxError
from ..lazy import lazy_module, torch
from ..params import ParamSpec
from .base import Effect, register

F = lazy_module("torch.nn.functional")
#: The ballistics kernels (numba, torch), imported on first use.
_ballistics = lazy_module("afxcli.dsp.ballistics")

# ------------------------------------------------------------------------------------------------
# shared parameter ranges (one place per effect; the multiband effects reuse these)
# ------------------------------------------------------------------------------------------------


def compressor_specs(prefix: str = "") -> list[ParamSpec]:
    """Specs of the JUCE-style compressor: threshold, ratio, attack, release, makeup."""
    return [
        ParamSpec(f"{prefix}threshold_db", "dB", -60.0, 0.0, -20.0),
        ParamSpec(f"{prefix}ratio", ":1", 1.0, 20.0, 4.0, "log"),
        ParamSpec(f"{prefix}attack_ms", "ms", 0.1, 100.0, 5.0, "log"),
        ParamSpec(f"{prefix}release_ms", "ms", 10.0, 1000.0, 100.0, "log"),
        ParamSpec(f"{prefix}makeup_db", "dB", 0.0, 24.0, 0.0),
    ]


def gate_specs(prefix: str = "") -> list[ParamSpec]:
    """Specs of the JUCE-style noise gate: threshold, ratio (expansion), attack, release."""
    return [
        ParamSpec(f"{prefix}threshold_db", "dB", -80.0, 0.0, -50.0),
        ParamSpec(f"{prefix}ratio", ":1", 1.0, 20.0, 10.0, "log"),
        ParamSpec(f"{prefix}attack_ms", "ms", 0.1, 100.0, 1.0, "log"),
        ParamSpec(f"{prefix}release_ms", "ms", 10.0, 1000.0, 100.0, "log"),
    ]


def _db_to_gain(db: torch.Tensor) -> torch.Tensor:
    return torch.pow(torch.as_tensor(10.0, dtype=db.dtype, device=db.device), db / 20.0)


# ------------------------------------------------------------------------------------------------
# functional cores (used by the effects here and by afxcli.effects.multiband)
# ------------------------------------------------------------------------------------------------
def juce_compressor(x: torch.Tensor, threshold_db: torch.Tensor, ratio: torch.Tensor,
                    attack_ms: torch.Tensor, release_ms: torch.Tensor, sample_rate: float) -> torch.Tensor:
    """JUCE ``dsp::Compressor`` (juce_Compressor.cpp, ``processSample``), per channel.

    ``env = BallisticsFilter_peak(|x|)``; ``gain = 1`` if ``env < thr`` else
    ``(env / thr) ** (1/ratio - 1)``; ``y = gain * x``, with ``thr = 10 ** (threshold_db / 20)``.
    Written as ``exp((1/ratio - 1) * log(max(env, thr) / thr))`` (identical values, finite gradients).

    Args:
        x: ``(batch, channels, samples)``.
        threshold_db, ratio, attack_ms, release_ms: ``(batch, 1)`` static or ``(batch, samples)``.
    Returns:
        ``(batch, channels, samples)``.
    """
    thr = _db_to_gain(threshold_db).unsqueeze(1)
    c_att = _ballistics.juce_coefficient(attack_ms, sample_rate).unsqueeze(1)
    c_rel = _ballistics.juce_coefficient(release_ms, sample_rate).unsqueeze(1)
    env = _ballistics.ballistics(x.abs(), c_att, c_rel)
    expo = (1.0 / ratio - 1.0).unsqueeze(1)
    gain = torch.exp(expo * torch.log(torch.maximum(env, thr) / thr))
    return gain * x


#: Fixed RMS pre-filter times of JUCE ``dsp::NoiseGate`` (constructor): attack 0 ms, release 50 ms.
GATE_RMS_ATTACK_MS = 0.0
GATE_RMS_RELEASE_MS = 50.0


def juce_noise_gate(x: torch.Tensor, threshold_db: torch.Tensor, ratio: torch.Tensor,
                    attack_ms: torch.Tensor, release_ms: torch.Tensor, sample_rate: float) -> torch.Tensor:
    """JUCE ``dsp::NoiseGate`` (juce_NoiseGate.cpp, ``processSample``), per channel.

    ``env = BallisticsFilter_peak(BallisticsFilter_RMS(x; 0 ms, 50 ms))``; ``gain = 1`` if
    ``env > thr`` else ``(env / thr) ** (ratio - 1)``; ``y = gain * x``.
    Shapes as :func:`juce_compressor`.
    """
    dtype = x.dtype
    thr = _db_to_gain(threshold_db).unsqueeze(1)
    rms_c = _ballistics.juce_coefficient(torch.tensor([GATE_RMS_ATTACK_MS, GATE_RMS_RELEASE_MS], dtype=dtype,
                                          device=x.device), sample_rate)
    env = _ballistics.rms_ballistics(x, rms_c[0].view(1, 1, 1), rms_c[1].view(1, 1, 1))
    c_att = _ballistics.juce_coefficient(attack_ms, sample_rate).unsqueeze(1)
    c_rel = _ballistics.juce_coefficient(release_ms, sample_rate).unsqueeze(1)
    env = _ballistics.ballistics(env, c_att, c_rel)
    expo = (ratio - 1.0).unsqueeze(1)
    safe = torch.clamp(torch.minimum(env, thr), min=1e-30)
    gain = torch.where(env > 0, torch.exp(expo * torch.log(safe / thr)), torch.zeros_like(env))
    return gain * x


def soft_knee_gain_reduction_db(level_db: torch.Tensor, threshold_db: torch.Tensor, ratio: torch.Tensor,
                                knee_db: torch.Tensor) -> torch.Tensor:
    """Static gain reduction (dB, >= 0) of the soft-knee gain computer of Giannoulis, Massberg &
    Reiss, JAES 2012 (eq. 4; also DeepAFx-ST's differentiable compressor):

    ``gr = (1 - 1/R) * d``  for ``d = x - T > W/2``;  ``(1 - 1/R) * (d + W/2)**2 / (2W)`` for
    ``|d| <= W/2``;  ``0`` below. The knee term is evaluated at ``clamp(d + W/2, 0, W)`` so that every
    branch is bounded and gradients stay finite at ``W = 0`` and ``R = 1``. All arguments broadcast.
    """
    d = level_db - threshold_db
    w = torch.clamp(knee_db, min=0.0)
    z = torch.minimum(torch.clamp(d + w / 2.0, min=0.0), w)
    knee = z * z / (2.0 * torch.clamp(w, min=1e-6))
    return (1.0 - 1.0 / ratio) * torch.where(d > w / 2.0, d, knee)


def soft_knee_compressor(x: torch.Tensor, threshold_db: torch.Tensor, ratio: torch.Tensor,
                         knee_db: torch.Tensor, attack_ms: torch.Tensor, release_ms: torch.Tensor,
                         makeup_db: torch.Tensor, sample_rate: float) -> torch.Tensor:
    """Linked soft-knee feed-forward compressor (Giannoulis et al. 2012: level detection in dB,
    eq. 4 gain computer, branching attack/release smoothing of the gain reduction, makeup).

    The detector is linked: ``level = max_c |x_c|`` in dB (floor -120 dB); the smoothed gain
    reduction ``gr_s = ballistics(gr; exp(-1000/(sr*t_att)), exp(-1000/(sr*t_rel)))`` (attack while
    it rises) is applied to every channel: ``y = x * 10 ** ((makeup - gr_s) / 20)``.

    Args:
        x: ``(batch, channels, samples)``; parameters ``(batch, 1)`` or ``(batch, samples)``.
    Returns:
        ``(batch, channels, samples)``.
    """
    level = x.abs().amax(dim=1, keepdim=True)  # (batch, 1, samples)
    level_db = 20.0 * torch.log10(torch.clamp(level, min=1e-6))
    gr = soft_knee_gain_reduction_db(level_db, threshold_db.unsqueeze(1), ratio.unsqueeze(1),
                                     knee_db.unsqueeze(1))
    c_att = _ballistics.time_constant_coefficient(attack_ms, sample_rate).unsqueeze(1)
    c_rel = _ballistics.time_constant_coefficient(release_ms, sample_rate).unsqueeze(1)
    gr_s = _ballistics.ballistics(gr, c_att, c_rel)
    return x * _db_to_gain(makeup_db.unsqueeze(1) - gr_s)


# ------------------------------------------------------------------------------------------------
# effects
# ------------------------------------------------------------------------------------------------
class _DynamicsBase(Effect):
    def _p(self, params: torch.Tensor, name: str, n: int, block_size: int | None) -> torch.Tensor:
        """``(batch, 1)`` static or ``(batch, n)`` held per block."""
        return self.param(params, name, n, block_size)


@register
class Compressor(_DynamicsBase):
    """Hard-knee compressor, twin of pedalboard ``Compressor`` (JUCE ``dsp::Compressor``: peak
    ballistics, per channel, unlinked) followed by ``Gain(makeup_db)``.

    Parameters: ``threshold_db``, ``ratio``, ``attack_ms``, ``release_ms``, ``makeup_db``."""

    kind = "compressor"
    has_twin = True
    channels_independent = True  # JUCE dsp::Compressor: one envelope per channel

    def _make_specs(self):
        return compressor_specs()

    def process(self, x, params, block_size, mode):
        n = x.shape[-1]
        p = {k: self._p(params, k, n, block_size).to(x.dtype) for k in self.param_names}
        y = juce_compressor(x, p["threshold_db"], p["ratio"], p["attack_ms"], p["release_ms"],
                            self.sample_rate)
        return y * _db_to_gain(p["makeup_db"]).unsqueeze(1)

    def to_pedalboard(self, values: Mapping[str, float]) -> list:
        import pedalboard

        v = self.check_values(values)
        return [pedalboard.Compressor(threshold_db=v["threshold_db"], ratio=v["ratio"],
                                      attack_ms=v["attack_ms"], release_ms=v["release_ms"]),
                pedalboard.Gain(gain_db=v["makeup_db"])]

    def apply_pedalboard(self, plugins: list, v: Mapping[str, float]) -> None:
        comp, gain = plugins
        comp.threshold_db = v["threshold_db"]
        comp.ratio = v["ratio"]
        comp.attack_ms = v["attack_ms"]
        comp.release_ms = v["release_ms"]
        gain.gain_db = v["makeup_db"]


@register
class SoftKneeCompressor(_DynamicsBase):
    """Linked soft-knee compressor (Giannoulis et al. 2012; DeepAFx-ST). No pedalboard twin.

    Parameters: ``threshold_db``, ``ratio``, ``knee_db``, ``attack_ms``, ``release_ms``,
    ``makeup_db``."""

    kind = "compressor_soft"

    def _make_specs(self):
        base = compressor_specs()
        return base[:2] + [ParamSpec("knee_db", "dB", 0.0, 24.0, 6.0)] + base[2:]

    def process(self, x, params, block_size, mode):
        n = x.shape[-1]
        p = {k: self._p(params, k, n, block_size).to(x.dtype) for k in self.param_names}
        return soft_knee_compressor(x, p["threshold_db"], p["ratio"], p["knee_db"], p["attack_ms"],
                                    p["release_ms"], p["makeup_db"], self.sample_rate)


@register
class NoiseGate(_DynamicsBase):
    """Noise gate / downward expander, twin of pedalboard ``NoiseGate`` (JUCE ``dsp::NoiseGate``).

    Parameters: ``threshold_db``, ``ratio``, ``attack_ms``, ``release_ms``."""

    kind = "gate"
    has_twin = True

    def _make_specs(self):
        return gate_specs()

    def process(self, x, params, block_size, mode):
        n = x.shape[-1]
        p = {k: self._p(params, k, n, block_size).to(x.dtype) for k in self.param_names}
        return juce_noise_gate(x, p["threshold_db"], p["ratio"], p["attack_ms"], p["release_ms"],
                               self.sample_rate)

    def to_pedalboard(self, values: Mapping[str, float]) -> list:
        import pedalboard

        v = self.check_values(values)
        return [pedalboard.NoiseGate(threshold_db=v["threshold_db"], ratio=v["ratio"],
                                     attack_ms=v["attack_ms"], release_ms=v["release_ms"])]

    def apply_pedalboard(self, plugins: list, v: Mapping[str, float]) -> None:
        (gate,) = plugins
        gate.threshold_db = v["threshold_db"]
        gate.ratio = v["ratio"]
        gate.attack_ms = v["attack_ms"]
        gate.release_ms = v["release_ms"]


#: Delay, in input samples, of the true-peak sidechain of pedalboard's BrickwallLimiter relative to
#: its input, and the extra lookahead it adds (``ceil`` of JUCE's 2-stage half-band equiripple
#: ``dsp::Oversampling`` round-trip latency). Both measured on pedalboard 0.9.26 (sample-rate
#: independent: the oversampling filters are designed in normalized frequency); see the tests.
TRUE_PEAK_SIDECHAIN_DELAY = 36
TRUE_PEAK_EXTRA_LOOKAHEAD = 60
#: Half length (taps per side) of the Kaiser-windowed sinc 4x interpolator of the torch true peak.
_TP_HALF_TAPS = 32
_TP_KAISER_BETA = 10.0


def _true_peak_kernels(dtype: torch.dtype, device) -> torch.Tensor:
    """``(3, 1, 2K)`` conv1d kernels giving ``x(n + k/4)`` for k = 1, 2, 3 (Kaiser-windowed
    sinc interpolation, normalized to unit DC gain). The 4th phase is the sample itself."""
    K = _TP_HALF_TAPS
    taps = np.arange(-K + 1, K + 1)
    win = np.kaiser(2 * K, _TP_KAISER_BETA)
    rows = []
    for k in (1, 2, 3):
        frac = -k / 4.0  # delay of the interpolated point behind sample n
        h = np.sinc(taps - frac) * win  # y[n] = sum_t h[t] x[n - t] ~ x(n - frac)
        h = h / h.sum()
        rows.append(h[::-1].copy())  # conv1d correlates
    return torch.tensor(np.stack(rows)[:, None, :], dtype=dtype, device=device)


def true_peak_level(x: torch.Tensor) -> torch.Tensor:
    """4x-oversampled peak level, linked over channels: ``(batch, channels, samples)`` ->
    ``(batch, samples)`` = ``max_c max(|x[n]|, |x(n+1/4)|, |x(n+1/2)|, |x(n+3/4)|)`` with the
    fractional samples from a 64-tap Kaiser-windowed sinc interpolator (ITU-R BS.1770-4 Annex 2
    style true-peak metering); time-aligned with ``x`` (zero-phase interpolator)."""
    b, c, n = x.shape
    K = _TP_HALF_TAPS
    kern = _true_peak_kernels(x.dtype, x.device)
    xp = F.pad(x.reshape(b * c, 1, n), (K, K))
    # conv1d: out[j] = sum_m h[K - m] x[j + m - K] = sum_t h[t] x[j - t]  (length n + 1)
    phases = F.conv1d(xp, kern)[..., :n]
    peak = torch.maximum(x.reshape(b * c, 1, n).abs(), phases.abs().amax(dim=1, keepdim=True))
    return peak.reshape(b, c, n).amax(dim=1)


def _release_coefficient_samples(release_ms: torch.Tensor, sample_rate: float) -> torch.Tensor:
    """pedalboard BrickwallLimiter release pole ``exp(-1 / max(1, int(sr * t_ms / 1000)))``.

    The integer truncation is kept in value; its gradient is passed straight through (the
    continuous ``sr * t / 1000``), so the release time stays trainable."""
    cont = float(sample_rate) * release_ms / 1000.0
    quant = cont + (torch.floor(cont) - cont).detach()
    return torch.exp(-1.0 / torch.clamp(quant, min=1.0))


@register
class Limiter(_DynamicsBase):
    """Lookahead brickwall limiter; inference twin = pedalboard ``BrickwallLimiter``.

    Parameters ``ceiling_db``, ``release_ms``; options ``lookahead_ms`` (default 5) and
    ``true_peak`` (default True). Torch form (time-aligned, linked over channels):

    ``peak[n] = max_c |x_c[n]|`` (or :func:`true_peak_level` delayed by
    :data:`TRUE_PEAK_SIDECHAIN_DELAY`), ``target = ceiling / peak`` where ``peak > ceiling`` else 1,
    ``g = hold_release_gain(target, r, L)`` (instant attack, hold of ``L`` lookahead samples,
    release pole ``r``), ``y[m] = clip(x[m] * g[m + L], ±ceiling)`` — pedalboard/plugins/
    BrickwallLimiter.h ``process``. With ``true_peak=False`` this equals pedalboard to float
    precision; with ``true_peak=True`` the sidechain interpolator differs from JUCE's half-band
    equiripple oversampler, so it is an approximation: on 1 s of stereo test music peaking at
    +0.1 / +0.4 dBFS with ceilings -1, -6, -12 dB, max abs difference 5.3e-3 (44.1 kHz) /
    9.5e-3 (48 kHz), 99th percentile of the gain error 0.015 / 0.005 dB
    (``tests/test_dynamics.py::test_true_peak_limiter_approximation``).
    """

    kind = "limiter"
    has_twin = True

    def __init__(self, sample_rate: float, lookahead_ms: float = 5.0, true_peak: bool = True, **options):
        la = float(lookahead_ms)
        if not (math.isfinite(la) and 0.0 < la <= 100.0):
            raise AfxError(f"limiter: lookahead_ms={lookahead_ms} must be in (0, 100]")
        if options:
            raise AfxError(f"limiter: unknown option(s) {', '.join(sorted(options))} "
                           "(it has: lookahead_ms, true_peak)")
        super().__init__(sample_rate, lookahead_ms=la, true_peak=bool(true_peak))

    def _make_specs(self):
        return [ParamSpec("ceiling_db", "dB", -24.0, 0.0, -1.0),
                ParamSpec("release_ms", "ms", 1.0, 1000.0, 100.0, "log")]

    @property
    def true_peak(self) -> bool:
        return bool(self.options["true_peak"])

    @property
    def lookahead_samples(self) -> int:
        """Gain-envelope lookahead/hold ``L`` (BrickwallLimiter ``activeLookaheadSamples_``)."""
        # pedalboard: max(1, (int)(sampleRate * lookaheadMs(float32) / 1000)) + upsampleDelay
        base = max(1, int(self.sample_rate * float(np.float32(self.options["lookahead_ms"])) / 1000.0))
        return base + (TRUE_PEAK_EXTRA_LOOKAHEAD if self.true_peak else 0)

    @property
    def latency_samples(self) -> int:
        return self.lookahead_samples

    def process(self, x, params, block_size, mode):
        b, c, n = x.shape
        L = self.lookahead_samples
        if params.dim() == 3 and block_size is None:
            block_size = max(1, math.ceil(n / params.shape[-1]))
        # parameters at processing time n' = m + L (the padded tail keeps the last block's value)
        ceil_db = self.param(params, "ceiling_db", n + L, block_size).to(x.dtype)
        rel_ms = self.param(params, "release_ms", n + L, block_size).to(x.dtype)
        ceiling = _db_to_gain(ceil_db)  # (b, 1) or (b, n + L)
        if self.true_peak:
            d = TRUE_PEAK_SIDECHAIN_DELAY
            peak = F.pad(true_peak_level(x), (d, L - d))
        else:
            peak = F.pad(x.abs().amax(dim=1), (0, L))
        target = torch.where(peak > ceiling, ceiling / torch.clamp(peak, min=1e-30), torch.ones_like(peak))
        rel = _release_coefficient_samples(rel_ms, self.sample_rate)
        g = _ballistics.hold_release_gain(target, rel, L)[:, L:].unsqueeze(1)
        ceil_out = ceiling[:, L:] if ceiling.shape[-1] > 1 else ceiling
        ceil_out = ceil_out.unsqueeze(1)
        y = x * g
        return torch.minimum(torch.maximum(y, -ceil_out), ceil_out)

    def to_pedalboard(self, values: Mapping[str, float]) -> list:
        import pedalboard

        v = self.check_values(values)
        return [pedalboard.BrickwallLimiter(ceiling_db=v["ceiling_db"], release_ms=v["release_ms"],
                                            lookahead_ms=self.options["lookahead_ms"],
                                            true_peak=self.true_peak)]

    def apply_pedalboard(self, plugins: list, v: Mapping[str, float]) -> None:
        (lim,) = plugins
        lim.ceiling_db = v["ceiling_db"]
        lim.release_ms = v["release_ms"]
