"""Memory-less clippers and distortion.

Kinds registered here (all: ``x`` ``(batch, channels, samples)``, physical params ``(batch, n)`` or
``(batch, n, blocks)`` held per block -> ``(batch, channels, samples)``; vectorized, differentiable
with respect to the input and every parameter):

``clipper``            BE-AFX (Peladeau & Peeters, ICASSP 2024) §2.1.3 eqs. 1-3, parametric
                       tanh / cubic / hard blend. Params ``gain_db``, ``offset``, ``hardness``. No twin.
``taylor_clipper``     BE-AFX eq. 4, ``y = sum_h g_h x^h``. Option ``order`` (H, default 24);
                       params ``g0 … g{H-1}`` in [-1, 1], default identity (g1 = 1, rest 0). No twin.
``chebyshev_clipper``  BE-AFX eqs. 5-6, ``y = sum_h g_h T_h(x)`` (Chebyshev polynomials of the
                       first kind). Same option and params as ``taylor_clipper``. No twin.
``hard_clip``          ``y = clamp(x, -t, t)``, ``t = 10^(threshold_db/20)``; twin pedalboard ``Clipping``
                       (``juce::FloatVectorOperations::clip`` between the two thresholds).
``distortion``         ``y = tanh(10^(drive_db/20) x)``; twin pedalboard ``Distortion``
                       (JUCE ``dsp::ProcessorChain<dsp::Gain, dsp::WaveShaper>`` with ``std::tanh``).

Notes on the BE-AFX formulas as printed
---------------------------------------
- Eq. 2 prints ``f_cubic(x) = x + 4x^3/27`` on ``[-2/3, 2/3]`` and ``sign(x)`` outside; that curve
  jumps from 0.71 to 1 at 2/3. The continuous cubic soft clipper it names is
  ``x - 4x^3/27`` on ``[-3/2, 3/2]`` (value ±1 and slope 0 at ±3/2), which is what is used here.
- Eq. 5 prints ``T_h(y[n])``; the polynomials are applied to the input ``x[n]``.
- Polynomial clippers and inputs outside [-1, 1]: Chebyshev polynomials are bounded by 1 only on
  [-1, 1] and grow like ``(2|x|)^h / 2`` outside (T_23(2) ~ 1e13), and eq. 4's ``x^23`` likewise.
  Both polynomial clippers therefore evaluate on the input saturated at full scale,
  ``u = clamp(x, -1, 1)`` (the model is a waveshaper defined on full scale; beyond ±1 it holds its
  end value). Consequence: the identity defaults are the identity on [-1, 1] and a hard clip at ±1
  outside. Eq. 4 is evaluated by Horner's rule, eq. 6 by Clenshaw's recurrence (one vectorized
  step per order, no per-sample loop).
"""
from __future__ import annotations

from typing import Mapping

from ..errors import AfxError
from ..lazy import torch
from ..params import ParamSpec
from .base import Effect, expand_blocks, register
from .gain import db_to_gain

#: Knee of the cubic soft clipper: ``x - 4x^3/27`` reaches ±1 with zero slope at ±3/2.
CUBIC_KNEE = 1.5


def f_hard(x: torch.Tensor) -> torch.Tensor:
    """Hard clip at ±1 (BE-AFX eq. 2, ``f_hard``). Any shape."""
    return torch.clamp(x, -1.0, 1.0)


def f_cubic(x: torch.Tensor) -> torch.Tensor:
    """Cubic soft clip ``u - 4u^3/27`` with ``u = clamp(x, -3/2, 3/2)`` (BE-AFX eq. 2, corrected,
    see module notes). Continuous with continuous slope. Any shape."""
    u = torch.clamp(x, -CUBIC_KNEE, CUBIC_KNEE)
    return u - (4.0 / 27.0) * u * u * u


def parametric_shape(x: torch.Tensor, hardness: torch.Tensor) -> torch.Tensor:
    """BE-AFX eq. 1: ``(1-h) tanh + h cubic`` for ``h <= 1``, ``(2-h) cubic + (h-1) hard`` above.

    ``x`` and ``hardness`` broadcast together (e.g. ``(batch, channels, samples)`` and
    ``(batch, 1, samples|1)``). Both branches are finite everywhere, so gradients are finite at
    ``h`` = 0, 1 and 2 (at ``h = 1`` the gradient with respect to ``h`` is the left derivative).
    """
    cubic = f_cubic(x)
    soft = (1.0 - hardness) * torch.tanh(x) + hardness * cubic
    hard = (2.0 - hardness) * cubic + (hardness - 1.0) * f_hard(x)
    return torch.where(hardness <= 1.0, soft, hard)


def _held(effect: Effect, x: torch.Tensor, params: torch.Tensor, block_size: int | None) -> torch.Tensor:
    """All parameters as ``(batch, n_params, samples|1)`` in ``x``'s dtype (held per block)."""
    return expand_blocks(params.to(x.dtype), x.shape[-1], block_size)


@register
class ParametricClipper(Effect):
    """BE-AFX parametric clipper, eq. 3: ``y = (f(g x + o, h) - f(o, h)) / g`` with ``f`` of eq. 1.

    Params: ``gain_db`` (drive ``g = 10^(gain_db/20)``; the output is divided by ``g`` again, so a
    high drive means clipping at about ``-gain_db`` dBFS), ``offset`` ``o`` (asymmetry, even
    harmonics; the ``- f(o, h)`` term removes the resulting DC at silence), ``hardness`` ``h``
    (0 = tanh, 1 = cubic, 2 = hard clip). Shapes: see module docstring.
    """

    kind = "clipper"

    def _make_specs(self):
        return [
            ParamSpec("gain_db", "dB", -12.0, 24.0, 0.0, "lin"),
            ParamSpec("offset", "", -0.5, 0.5, 0.0, "lin"),
            ParamSpec("hardness", "", 0.0, 2.0, 0.0, "lin"),
        ]

    def process(self, x, params, block_size, mode):
        p = _held(self, x, params, block_size)
        g = db_to_gain(p[:, 0:1])
        o = p[:, 1:2]
        h = p[:, 2:3]
        return (parametric_shape(g * x + o, h) - parametric_shape(o, h)) / g


class _PolynomialClipper(Effect):
    """Shared parts of the Taylor and Chebyshev clippers: option ``order`` = H (number of
    coefficients ``g0 … g{H-1}``, 2..64, default 24 as in BE-AFX), coefficients in [-1, 1] on a
    linear scale, defaults g1 = 1 and all others 0 (identity on [-1, 1])."""

    DEFAULT_ORDER = 24
    MAX_ORDER = 64

    def __init__(self, sample_rate: float, order: int = DEFAULT_ORDER, **options) -> None:
        if isinstance(order, bool) or not isinstance(order, (int, float)) or int(order) != order:
            raise AfxError(f"{self.kind}: order must be an integer, got {order!r}")
        order = int(order)
        if not 2 <= order <= self.MAX_ORDER:
            raise AfxError(f"{self.kind}: order must be in [2, {self.MAX_ORDER}], got {order}")
        super().__init__(sample_rate, order=order, **options)
        self.order = order

    def _make_specs(self):
        order = int(self.options["order"])
        return [ParamSpec(f"g{h}", "", -1.0, 1.0, 1.0 if h == 1 else 0.0, "lin") for h in range(order)]


@register
class TaylorClipper(_PolynomialClipper):
    """BE-AFX eq. 4: ``y = sum_{h=0}^{H-1} g_h u^h`` with ``u = clamp(x, -1, 1)`` (Horner's rule).
    Shapes: see module docstring."""

    kind = "taylor_clipper"

    def process(self, x, params, block_size, mode):
        p = _held(self, x, params, block_size)  # (batch, H, samples|1)
        u = torch.clamp(x, -1.0, 1.0)
        y = p[:, self.order - 1:self.order]  # broadcasts to u's shape at the first step
        for h in range(self.order - 2, -1, -1):
            y = y * u + p[:, h:h + 1]
        return y


@register
class ChebyshevClipper(_PolynomialClipper):
    """BE-AFX eqs. 5-6: ``y = sum_{h=0}^{H-1} g_h T_h(u)``, ``u = clamp(x, -1, 1)``, evaluated by
    Clenshaw's recurrence ``b_k = g_k + 2u b_{k+1} - b_{k+2}``, ``y = g_0 + u b_1 - b_2``
    (equivalent to the recurrence of eq. 6). Shapes: see module docstring."""

    kind = "chebyshev_clipper"

    def process(self, x, params, block_size, mode):
        p = _held(self, x, params, block_size)  # (batch, H, samples|1)
        u = torch.clamp(x, -1.0, 1.0)
        two_u = 2.0 * u
        b1 = torch.zeros_like(u)  # b_{k+1}
        b2 = torch.zeros_like(u)  # b_{k+2}
        for k in range(self.order - 1, 0, -1):
            b1, b2 = p[:, k:k + 1] + two_u * b1 - b2, b1
        return p[:, 0:1] + u * b1 - b2


@register
class HardClip(Effect):
    """Hard clipper ``y = clamp(x, -t, t)``, ``t = 10^(threshold_db/20)`` (JUCE
    ``Decibels::decibelsToGain``). Twin: pedalboard ``Clipping(threshold_db)``. Params:
    ``threshold_db`` (dB, -24..0, default -6 as pedalboard). Shapes: see module docstring."""

    kind = "hard_clip"
    has_twin = True
    channels_independent = True  # memoryless

    def _make_specs(self):
        return [ParamSpec("threshold_db", "dB", -24.0, 0.0, -6.0, "lin")]

    def process(self, x, params, block_size, mode):
        t = db_to_gain(_held(self, x, params, block_size))  # (batch, 1, samples|1)
        return torch.maximum(torch.minimum(x, t), -t)

    def to_pedalboard(self, values: Mapping[str, float]) -> list:
        import pedalboard

        return [pedalboard.Clipping(threshold_db=self.check_values(values)["threshold_db"])]

    def apply_pedalboard(self, plugins: list, checked: Mapping[str, float]) -> None:
        plugins[0].threshold_db = checked["threshold_db"]


@register
class Distortion(Effect):
    """tanh distortion ``y = tanh(g x)``, ``g = 10^(drive_db/20)``: pedalboard ``Distortion`` is a
    JUCE ``dsp::Gain`` (``setGainDecibels(drive_db)``, no ramp) followed by a ``dsp::WaveShaper``
    with ``std::tanh``; no output compensation. Params: ``drive_db`` (dB, 0..48, default 12).
    Shapes: see module docstring."""

    kind = "distortion"
    has_twin = True
    channels_independent = True  # memoryless

    def _make_specs(self):
        return [ParamSpec("drive_db", "dB", 0.0, 48.0, 12.0, "lin")]

    def process(self, x, params, block_size, mode):
        g = db_to_gain(_held(self, x, params, block_size))  # (batch, 1, samples|1)
        return torch.tanh(g * x)

    def to_pedalboard(self, values: Mapping[str, float]) -> list:
        import pedalboard

        return [pedalboard.Distortion(drive_db=self.check_values(values)["drive_db"])]

    def apply_pedalboard(self, plugins: list, checked: Mapping[str, float]) -> None:
        plugins[0].drive_db = checked["drive_db"]
